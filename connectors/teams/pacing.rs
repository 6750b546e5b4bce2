//! Exact sliding windows per conversation (7 per 1 s, 8 per 2 s, 60 per 30 s) and per tenant (50 per 1 s), with a held tenant slot for each streaming conversation: send logs that answer "wait this long" before Teams would answer 429.

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
/// How long a streaming conversation's held tenant slot outlives the moment
/// its own windows let it send again: long enough for its next delivery to be
/// claimed and come back, short enough that a conversation whose backlog ended
/// gives the slot back soon.
const HOLD_GRACE: Duration = Duration::from_millis(1_500);

/// Sliding windows per conversation and per tenant: at most `burst` sends in
/// any `per` interval, for every window at once — what Microsoft's
/// per-bot-per-thread limits and the 50 RPS per app per tenant say, which a
/// token bucket (GCRA) can only approximate by sending slower. Per process:
/// several instances share only the engine's pacer.
///
/// The tenant budget is shared fairly with conversations that have a backlog:
/// a conversation that sent twice within its shortest window is *streaming*
/// (a channel with posts queued behind each other), and holds as many tenant
/// places as its own windows will let it send at its next opportunity, until
/// shortly after that opportunity. Without
/// that, a burst of one-off sends (100 DMs) takes the whole tenant budget each
/// second while the streaming conversation — the one whose own windows decide
/// when everything is done — waits behind them. At most half the tenant
/// budget is held this way.
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
    /// Per tenant: the streaming conversations holding places, how many and
    /// until when.
    held: HashMap<String, HashMap<String, (usize, Instant)>>,
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

    /// How long until one more send fits every window, with `held` of each
    /// window's places held for others (`until`: when the first hold lapses).
    fn wait(
        &self,
        sends: Option<&VecDeque<Instant>>,
        now: Instant,
        guard: Duration,
        held: usize,
        until: Option<Instant>,
    ) -> Duration {
        let empty = VecDeque::new();
        let sends = sends.unwrap_or(&empty);
        let mut wait = Duration::ZERO;
        for l in &self.limits {
            let n = l.burst as usize;
            let Some(room) = n.checked_sub(held).filter(|r| *r > 0) else {
                // Every place is held: wait for the first hold to lapse.
                let lapse = until.map_or(l.per, |u| u.saturating_duration_since(now));
                wait = wait.max(lapse.max(Duration::from_millis(1)));
                continue;
            };
            if sends.len() >= room {
                let free_at = sends[sends.len() - room] + l.per + guard;
                wait = wait.max(free_at.saturating_duration_since(now));
            }
        }
        wait
    }

    /// Whether the last two sends fall within the shortest window (the
    /// conversation has a backlog being sent).
    fn streaming(&self, sends: &VecDeque<Instant>) -> bool {
        let Some(shortest) = self.limits.iter().map(|l| l.per).min() else {
            return false;
        };
        let n = sends.len();
        n >= 2 && sends[n - 1].saturating_duration_since(sends[n - 2]) < shortest
    }

    /// How many sends every window allows at `at`.
    fn room_at(&self, sends: &VecDeque<Instant>, at: Instant) -> usize {
        self.limits
            .iter()
            .map(|l| {
                let start = at.checked_sub(l.per);
                let used = sends
                    .iter()
                    .filter(|t| start.is_none_or(|s| **t > s))
                    .count();
                (l.burst as usize).saturating_sub(used)
            })
            .min()
            .unwrap_or(0)
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
        let Logs {
            conversations,
            tenants,
            held,
        } = &mut *log;
        // Holds of other streaming conversations of this tenant (lapsed ones go).
        let holds = held.entry(tenant.to_owned()).or_default();
        holds.retain(|_, (_, until)| *until > now);
        let others = holds.iter().filter(|(c, _)| c.as_str() != conversation);
        let (held_by_others, first_lapse) = others
            .fold((0, None::<Instant>), |(n, first), (_, (k, u))| {
                (n + k, Some(first.map_or(*u, |f| f.min(*u))))
            });
        let wait = self
            .conversation
            .wait(conversations.get(conversation), now, self.guard, 0, None)
            .max(self.tenant.wait(
                tenants.get(tenant),
                now,
                self.guard,
                held_by_others,
                first_lapse,
            ));
        if !wait.is_zero() {
            return Err(wait);
        }
        self.conversation
            .record(conversations, conversation, now, self.guard);
        self.tenant.record(tenants, tenant, now, self.guard);
        holds.remove(conversation);
        if let Some(sends) = conversations.get(conversation) {
            if self.conversation.streaming(sends) {
                let next = now
                    + self
                        .conversation
                        .wait(Some(sends), now, self.guard, 0, None);
                let room = self.conversation.room_at(sends, next);
                let already: usize = holds.values().map(|(k, _)| *k).sum();
                let count = room.min((self.tenant.keep / 2).saturating_sub(already));
                if count > 0 {
                    holds.insert(conversation.to_owned(), (count, next + HOLD_GRACE));
                }
            }
        }
        if held.len() >= PRUNE_AT {
            held.retain(|_, h| !h.is_empty());
        }
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

    /// A streaming channel and a burst of 100 one-off DMs share the tenant's
    /// 50 per second: the channel, whose own windows decide when all is done,
    /// still sends at its own pace, and the DMs take the rest.
    #[test]
    fn a_streaming_conversation_keeps_its_pace_against_a_burst() {
        let w = teams();
        let start = Instant::now();
        let mut now = start;
        let mut channel = Vec::new();
        let mut dms_left = 100;
        let mut tenant_sends = Vec::new();
        // The channel's first two posts go out before the DMs arrive.
        for _ in 0..2 {
            w.try_acquire("t", "ch", now).unwrap();
            channel.push(now);
            tenant_sends.push(now);
        }
        while channel.len() < 30 || dms_left > 0 {
            let mut next = Duration::from_secs(60);
            // Every waiting DM tries first, then the channel's next post.
            while dms_left > 0 {
                match w.try_acquire("t", &format!("dm{dms_left}"), now) {
                    Ok(()) => {
                        dms_left -= 1;
                        tenant_sends.push(now);
                    }
                    Err(wait) => {
                        next = next.min(wait);
                        break;
                    }
                }
            }
            while channel.len() < 30 {
                match w.try_acquire("t", "ch", now) {
                    Ok(()) => {
                        channel.push(now);
                        tenant_sends.push(now);
                    }
                    Err(wait) => {
                        next = next.min(wait);
                        break;
                    }
                }
            }
            if channel.len() < 30 || dms_left > 0 {
                now += next.max(Duration::from_millis(1));
            }
        }
        // Without held places the DMs take the first two seconds' budget and
        // the channel ends after 7 s; with them, at the minimum its windows allow.
        let last = *channel.last().unwrap() - start;
        assert!(
            last <= Duration::from_millis(6_100),
            "channel ended at {last:?}"
        );
        for (i, t) in tenant_sends.iter().enumerate() {
            let in_window = tenant_sends[i..]
                .iter()
                .filter(|s| **s - *t < Duration::from_secs(1))
                .count();
            assert!(in_window <= 50, "{in_window} tenant sends within 1 s");
        }
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
