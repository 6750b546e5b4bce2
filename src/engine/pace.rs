//! Pacing: GCRA rate limits (governor) per destination and per target key, on the engine's clock.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::clock::EngineClock;
use crate::destination::RateLimit;

type Direct = RateLimiter<NotKeyed, InMemoryState, EngineClock, NoOpMiddleware<Duration>>;
type Keyed = RateLimiter<String, DashMapStateStore<String>, EngineClock, NoOpMiddleware<Duration>>;

fn quota(limit: &RateLimit) -> Option<Quota> {
    let burst = NonZeroU32::new(limit.burst.max(1))?;
    let period = limit.per / limit.burst.max(1);
    Some(Quota::with_period(period.max(Duration::from_nanos(1)))?.allow_burst(burst))
}

/// The limiters of one destination.
pub(crate) struct Pacer {
    clock: EngineClock,
    global: Vec<Direct>,
    per_target: Vec<Keyed>,
}

impl Pacer {
    pub(crate) fn new(clock: EngineClock, global: &[RateLimit], per_target: &[RateLimit]) -> Self {
        Pacer {
            global: global
                .iter()
                .filter_map(quota)
                .map(|q| RateLimiter::direct_with_clock(q, clock))
                .collect(),
            per_target: per_target
                .iter()
                .filter_map(quota)
                .map(|q| RateLimiter::dashmap_with_clock(q, clock))
                .collect(),
            clock,
        }
    }

    /// Takes a send slot for `key` now, or says how long until one is free.
    /// The per-target limiters are checked first (they are the tightest), then the
    /// destination-wide ones.
    pub(crate) fn try_acquire(&self, key: &str) -> Result<(), Duration> {
        let key = key.to_owned();
        for l in &self.per_target {
            if let Err(not_until) = l.check_key(&key) {
                return Err(not_until.wait_time_from(Clock::now(&self.clock)));
            }
        }
        for l in &self.global {
            if let Err(not_until) = l.check() {
                return Err(not_until.wait_time_from(Clock::now(&self.clock)));
            }
        }
        Ok(())
    }
}
