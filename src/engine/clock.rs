//! The engine's clock: wall time that follows tokio's (pausable) monotonic clock.

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
        self.base_wall + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
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
