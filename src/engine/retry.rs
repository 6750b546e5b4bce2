//! Retry policy: exponential backoff with full jitter, a maximum attempt count, and `Retry-After` first.

use std::time::Duration;

use rand::Rng;

use crate::destination::DeliveryError;

/// How failed deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first backoff ceiling; doubles with every attempt.
    pub base: Duration,
    /// The largest backoff ceiling.
    pub max_delay: Duration,
    /// Attempts before a delivery becomes a dead letter (including the first).
    pub max_attempts: u32,
    /// The longest `Retry-After` honoured; longer ones are capped to this (and
    /// logged), so an absurd answer cannot hold a delivery for days.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(10 * 60),
            max_attempts: 8,
            max_retry_after: Duration::from_secs(3600),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after this delay.
    RetryAfter(Duration),
    /// The platform throttled the request with a `Retry-After`: try again after
    /// this delay without counting an attempt.
    Snooze(Duration),
    /// Give up: dead-letter it.
    GiveUp,
}

impl RetryPolicy {
    /// The backoff ceiling after `attempt` failed attempts (1-based): `base * 2^(attempt-1)`, capped.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// Full jitter: a uniformly random delay in `[0, ceiling(attempt)]`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }

    /// Decides the next step after attempt number `attempt` (1-based) failed with
    /// `error`. The platform's `Retry-After` always wins over computed backoff.
    pub fn decide(&self, attempt: u32, error: &DeliveryError) -> RetryDecision {
        match error {
            DeliveryError::Permanent { .. } | DeliveryError::RecipientUnknown { .. } => {
                RetryDecision::GiveUp
            }
            // Parked by the engine before it gets here; never burns attempts.
            DeliveryError::Disconnected { .. } => RetryDecision::GiveUp,
            DeliveryError::RateLimited {
                retry_after: Some(after),
                ..
            } => {
                if *after > self.max_retry_after {
                    tracing::warn!(
                        retry_after_secs = after.as_secs(),
                        cap_secs = self.max_retry_after.as_secs(),
                        "Retry-After longer than the cap; capping it"
                    );
                }
                RetryDecision::Snooze((*after).min(self.max_retry_after))
            }
            _ if attempt >= self.max_attempts => RetryDecision::GiveUp,
            DeliveryError::RateLimited { .. } | DeliveryError::Temporary { .. } => {
                RetryDecision::RetryAfter(self.backoff(attempt))
            }
        }
    }
}
