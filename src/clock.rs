//! The clock of the engine and the scheduler: wall time that follows tokio's (pausable) monotonic clock.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Wall-clock time anchored at construction and advanced by `tokio::time`, so a
/// paused tokio clock (tests) pauses the engine too.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EngineClock {
    base_wall: DateTime<Utc>,
    base: tokio::time::Instant,
}

impl EngineClock {
    pub(crate) fn new() -> Self {
        EngineClock {
            base_wall: Utc::now(),
            base: tokio::time::Instant::now(),
        }
    }

    /// Current wall time.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.base);
        later(self.base_wall, elapsed)
    }

    /// How long from now until `at` (zero if past).
    pub(crate) fn until(&self, at: DateTime<Utc>) -> Duration {
        (at - self.now()).to_std().unwrap_or(Duration::ZERO)
    }
}

impl governor::clock::Clock for EngineClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self.base)
    }
}

/// `at + d`, saturating at the latest representable time instead of panicking
/// (a platform may send an absurd `Retry-After`).
pub(crate) fn later(at: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_saturates() {
        let now = Utc::now();
        assert_eq!(later(now, Duration::MAX), DateTime::<Utc>::MAX_UTC);
        assert_eq!(
            later(now, Duration::from_secs(1)),
            now + chrono::Duration::seconds(1)
        );
    }
}
