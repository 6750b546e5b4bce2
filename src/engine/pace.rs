//! Pacing: GCRA rate limits (governor) per connection (destination-wide budgets) and per target key, on the engine's clock, with a safety margin and idle-key eviction.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::clock::EngineClock;
use crate::destination::RateLimit;

type Keyed = RateLimiter<String, DashMapStateStore<String>, EngineClock, NoOpMiddleware<Duration>>;

/// The quota of `limit`, each interval stretched by `margin` (0.1 = 10 % slower
/// than the platform's limit) so network jitter cannot make arrivals closer
/// than the platform allows.
fn quota(limit: &RateLimit, margin: f64) -> Option<Quota> {
    let burst = NonZeroU32::new(limit.burst.max(1))?;
    let period = (limit.per / limit.burst.max(1)).mul_f64(1.0 + margin.clamp(0.0, 10.0));
    Some(Quota::with_period(period.max(Duration::from_nanos(1)))?.allow_burst(burst))
}

/// The limiters of one destination: budgets per connection (keyed by tenant),
/// and limits per target key.
pub(crate) struct Pacer {
    clock: EngineClock,
    per_connection: Vec<Keyed>,
    per_target: Vec<Keyed>,
}

impl Pacer {
    pub(crate) fn new(
        clock: EngineClock,
        global: &[RateLimit],
        per_target: &[RateLimit],
        margin: f64,
    ) -> Self {
        let build = |limits: &[RateLimit]| {
            limits
                .iter()
                .filter_map(|l| quota(l, margin))
                .map(|q| RateLimiter::dashmap_with_clock(q, clock))
                .collect()
        };
        Pacer {
            per_connection: build(global),
            per_target: build(per_target),
            clock,
        }
    }

    /// Takes a send slot for `key` within `connection` now, or says how long
    /// until one is free. The per-target limiters are checked first (they are
    /// the tightest), then the connection-wide ones.
    pub(crate) fn try_acquire(&self, connection: &str, key: &str) -> Result<(), Duration> {
        if !self.per_target.is_empty() {
            let key = key.to_owned();
            for l in &self.per_target {
                if let Err(not_until) = l.check_key(&key) {
                    return Err(not_until.wait_time_from(Clock::now(&self.clock)));
                }
            }
        }
        if !self.per_connection.is_empty() {
            let connection = connection.to_owned();
            for l in &self.per_connection {
                if let Err(not_until) = l.check_key(&connection) {
                    return Err(not_until.wait_time_from(Clock::now(&self.clock)));
                }
            }
        }
        Ok(())
    }

    /// Forgets keys whose limiter state is back to full capacity (idle keys), so
    /// the maps do not grow with every target ever seen.
    pub(crate) fn evict_idle(&self) {
        for l in self.per_target.iter().chain(&self.per_connection) {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Keys currently tracked (for tests of eviction).
    pub(crate) fn tracked_keys(&self) -> usize {
        self.per_target
            .iter()
            .chain(&self.per_connection)
            .map(|l| l.len())
            .sum()
    }
}

/// Rate limiting shared by every instance on one store (e.g.
/// `PostgresStore::pacer()`), so a platform's limits hold for the sum of all
/// replicas. The engine consults it after its in-process pacer, with the same
/// keys and limits (margin included).
#[async_trait::async_trait]
pub trait SharedPacing: Send + Sync {
    /// Takes one slot of `limit` for `key` now (`Ok(None)`), or says how long
    /// until one is free (`Ok(Some(wait))`, nothing taken).
    async fn try_acquire(&self, key: &str, limit: RateLimit) -> crate::Result<Option<Duration>>;
}

/// `limit` with the engine's margin applied (each interval `1 + margin` longer).
pub(crate) fn with_margin(limit: RateLimit, margin: f64) -> RateLimit {
    RateLimit {
        burst: limit.burst,
        per: limit.per.mul_f64(1.0 + margin.clamp(0.0, 10.0)),
    }
}
