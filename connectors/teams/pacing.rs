//! Exact sliding windows per conversation (7 per 1 s, 8 per 2 s, 60 per 30 s) and per tenant (50 per 1 s): send logs that answer "wait this long" before Teams would answer 429.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::destination::RateLimit;

/// Windows up to this long are enforced exactly by the send log; longer ones
/// (1,800 per hour) are left to the engine's pacer, so the log holds at most a
/// few dozen timestamps per conversation.
pub const EXACT_WINDOW_MAX: Duration = Duration::from_secs(30);
/// Extra time added after a window closes, so network jitter cannot make two
/// arrivals closer than the platform allows.
pub const DEFAULT_WINDOW_GUARD: Duration = Duration::from_millis(40);
/// Keys tracked before idle ones are pruned.
const PRUNE_AT: usize = 4_096;

/// Sliding windows per conversation and per tenant: at most `burst` sends in
/// any `per` interval, for every window at once — what Microsoft's
/// per-bot-per-thread limits and the 50 RPS per app per tenant say, which a
/// token bucket (GCRA) can only approximate by sending slower. Per process:
/// several instances share only the engine's pacer.
#[derive(Debug)]
pub struct ConversationWindows {
    conversation: Windows,
    tenant: Windows,
    guard: Duration,
    log: Mutex<Logs>,
}

#[derive(Debug)]
struct Windows {
    limits: Vec<RateLimit>,
    keep: usize,
    longest: Duration,
}

#[derive(Debug, Default)]
struct Logs {
    conversations: HashMap<String, VecDeque<Instant>>,
    tenants: HashMap<String, VecDeque<Instant>>,
}

impl Windows {
    fn new(limits: &[RateLimit]) -> Self {
        let limits: Vec<RateLimit> = limits
            .iter()
            .copied()
            .filter(|l| l.per <= EXACT_WINDOW_MAX && l.burst > 0)
            .collect();
        Windows {
            keep: limits.iter().map(|l| l.burst as usize).max().unwrap_or(0),
            longest: limits.iter().map(|l| l.per).max().unwrap_or_default(),
            limits,
        }
    }

    fn wait(&self, sends: Option<&VecDeque<Instant>>, now: Instant, guard: Duration) -> Duration {
        let Some(sends) = sends else {
            return Duration::ZERO;
        };
        let mut wait = Duration::ZERO;
        for l in &self.limits {
            let n = l.burst as usize;
            if sends.len() >= n {
                let free_at = sends[sends.len() - n] + l.per + guard;
                wait = wait.max(free_at.saturating_duration_since(now));
            }
        }
        wait
    }

    fn record(
        &self,
        map: &mut HashMap<String, VecDeque<Instant>>,
        key: &str,
        now: Instant,
        guard: Duration,
    ) {
        if self.limits.is_empty() {
            return;
        }
        if map.len() >= PRUNE_AT {
            let horizon = self.longest + guard;
            map.retain(|_, sends| {
                sends
                    .back()
                    .is_some_and(|last| now.saturating_duration_since(*last) < horizon)
            });
        }
        let sends = map.entry(key.to_owned()).or_default();
        sends.push_back(now);
        while sends.len() > self.keep {
            sends.pop_front();
        }
    }
}

impl ConversationWindows {
    /// The windows of `conversation` and `tenant` limits no longer than
    /// [`EXACT_WINDOW_MAX`] (longer ones are left to the engine).
    pub fn new(conversation: &[RateLimit], tenant: &[RateLimit], guard: Duration) -> Self {
        ConversationWindows {
            conversation: Windows::new(conversation),
            tenant: Windows::new(tenant),
            guard,
            log: Mutex::new(Logs::default()),
        }
    }

    /// The per-conversation windows enforced.
    pub fn limits(&self) -> &[RateLimit] {
        &self.conversation.limits
    }

    /// Takes a send slot for `conversation` within `tenant` at `now`, or says
    /// how long until every window of both has room (nothing is taken then).
    pub fn try_acquire(
        &self,
        tenant: &str,
        conversation: &str,
        now: Instant,
    ) -> Result<(), Duration> {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let wait = self
            .conversation
            .wait(log.conversations.get(conversation), now, self.guard)
            .max(self.tenant.wait(log.tenants.get(tenant), now, self.guard));
        if !wait.is_zero() {
            return Err(wait);
        }
        let Logs {
            conversations,
            tenants,
        } = &mut *log;
        self.conversation
            .record(conversations, conversation, now, self.guard);
        self.tenant.record(tenants, tenant, now, self.guard);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn teams() -> ConversationWindows {
        ConversationWindows::new(
            &[
                RateLimit::per_second(7),
                RateLimit {
                    burst: 8,
                    per: Duration::from_secs(2),
                },
                RateLimit {
                    burst: 60,
                    per: Duration::from_secs(30),
                },
                RateLimit::per_hour(1_800),
            ],
            &[RateLimit::per_second(50)],
            Duration::ZERO,
        )
    }

    #[test]
    fn thirty_sends_take_six_seconds_and_no_window_is_exceeded() {
        let w = teams();
        assert_eq!(w.limits().len(), 3, "the hour is left to the engine");
        let start = Instant::now();
        let mut now = start;
        let mut sent = Vec::new();
        while sent.len() < 30 {
            match w.try_acquire("t", "c", now) {
                Ok(()) => sent.push(now),
                Err(wait) => now += wait,
            }
        }
        assert_eq!(*sent.last().unwrap() - start, Duration::from_secs(6));
        for (n, per) in [(7, 1), (8, 2)] {
            for (i, t) in sent.iter().enumerate() {
                let in_window = sent[i..]
                    .iter()
                    .filter(|s| **s - *t < Duration::from_secs(per))
                    .count();
                assert!(in_window <= n, "{in_window} sends within {per} s");
            }
        }
        // Another conversation is not affected.
        assert!(w.try_acquire("t", "d", now).is_ok());
    }

    #[test]
    fn the_tenant_window_caps_sends_across_conversations() {
        let w = teams();
        let now = Instant::now();
        for i in 0..50 {
            assert!(w.try_acquire("t", &format!("c{i}"), now).is_ok());
        }
        let wait = w.try_acquire("t", "c-next", now).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        // A refused send takes nothing: its conversation is still empty.
        assert!(w.try_acquire("other-tenant", "c-next", now).is_ok());
        assert!(
            w.try_acquire("t", "c0", now + Duration::from_secs(1))
                .is_ok()
        );
    }
}
