//! The store behaviour suite: every test runs against every `Store` implementation.
//!
//! Each `async fn` below takes a [`Backend`] and asserts one behaviour; the
//! `suite!` macro at the bottom instantiates it as a `#[tokio::test]` once per
//! backend (`memory::…`, `sqlite::…` on a file in a temporary directory, and
//! `sqlite_in_memory::…`). A new store adds one line to the macro.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use switchboard::attributes::{
    AttributeRecord, AttributeStore, Attributes, Comparison, DEFAULT_ATTRIBUTE_CAP, Filter,
};
use switchboard::destination::{DeliveryError, DeliveryId, Receipt};
use switchboard::identity::{IdentityLink, LinkOrigin};
use switchboard::integration::{IntegrationConfig, RunOutcome, RunRecord, Schedule};
use switchboard::store::{
    ClaimedDelivery, Completion, DeliveryState, EnqueueOutcome, Installation, LogStatus,
    MemoryStore, NewDelivery, Outcome, Store,
};
use switchboard::{ErrorKind, Event, Person, Target};

// --- harness ---

/// Which store a test runs against.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Memory,
    #[cfg(feature = "sqlite")]
    Sqlite,
    #[cfg(feature = "sqlite")]
    SqliteInMemory,
}

/// A store plus whatever must outlive it (the SQLite file's directory).
struct Harness {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

impl Deref for Harness {
    type Target = dyn Store;
    fn deref(&self) -> &(dyn Store + 'static) {
        &*self.store
    }
}

impl Backend {
    fn open(self) -> Harness {
        self.open_with_cap(DEFAULT_ATTRIBUTE_CAP)
    }

    fn open_with_cap(self, cap: usize) -> Harness {
        match self {
            Backend::Memory => Harness {
                store: Arc::new(MemoryStore::new().with_attribute_cap(cap)),
                _dir: None,
            },
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let store = switchboard::store::SqliteStore::open(dir.path().join("sb.db"))
                    .expect("open sqlite")
                    .with_attribute_cap(cap);
                Harness {
                    store: Arc::new(store),
                    _dir: Some(dir),
                }
            }
            #[cfg(feature = "sqlite")]
            Backend::SqliteInMemory => Harness {
                store: Arc::new(
                    switchboard::store::SqliteStore::open_in_memory()
                        .expect("open sqlite in memory")
                        .with_attribute_cap(cap),
                ),
                _dir: None,
            },
        }
    }
}

/// `secs` seconds after a fixed instant (whole milliseconds, as stores keep them).
fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("valid time")
}

const LEASE: Duration = Duration::from_secs(30);

fn event(id: &str) -> Event {
    Event::builder(id, "wallet.funded")
        .occurred_at(t(-100))
        .subject(Person::new("u1").email(" Ada@Example.com "))
        .data(serde_json::json!({"amount": 25, "currency": "EUR", "note": "ünïcode ✓"}))
        .build()
        .expect("valid event")
}

fn to(destination: &str, target: Target) -> NewDelivery {
    NewDelivery {
        route: format!("route-{destination}"),
        destination: destination.to_owned(),
        target,
    }
}

fn dm(destination: &str) -> NewDelivery {
    to(destination, Target::SubjectDm)
}

/// Enqueues one event with one delivery to `destination` at `now`.
async fn enqueue_one(s: &Harness, id: &str, destination: &str, now: DateTime<Utc>) {
    let outcome = s
        .enqueue(&event(id), &[dm(destination)], now)
        .await
        .unwrap();
    assert_eq!(outcome, EnqueueOutcome::Accepted { deliveries: 1 });
}

/// Claims everything due at `now`.
async fn claim_all(s: &Harness, now: DateTime<Utc>) -> Vec<ClaimedDelivery> {
    s.claim(now, LEASE, 1000).await.unwrap()
}

/// Claims exactly one delivery due at `now`.
async fn claim_one(s: &Harness, now: DateTime<Utc>) -> ClaimedDelivery {
    let mut claimed = s.claim(now, LEASE, 1).await.unwrap();
    assert_eq!(claimed.len(), 1, "expected one due delivery at {now}");
    claimed.remove(0)
}

fn completion(c: &ClaimedDelivery, outcome: Outcome) -> Completion {
    Completion {
        id: c.id,
        lease: c.lease,
        destination: c.destination.clone(),
        outcome,
    }
}

async fn complete(s: &Harness, c: &ClaimedDelivery, outcome: Outcome, now: DateTime<Utc>) {
    s.complete(&[completion(c, outcome)], now).await.unwrap();
}

fn sent(remote_id: &str) -> Outcome {
    Outcome::Sent(Receipt {
        remote_id: Some(remote_id.to_owned()),
        location: None,
    })
}

async fn state(s: &Harness, id: DeliveryId) -> DeliveryState {
    s.delivery_state(id)
        .await
        .unwrap()
        .expect("delivery exists")
}

async fn statuses(s: &Harness, id: DeliveryId) -> Vec<(LogStatus, u32)> {
    s.delivery_log(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.status, e.attempt))
        .collect()
}

fn ids(claimed: &[ClaimedDelivery]) -> Vec<DeliveryId> {
    claimed.iter().map(|c| c.id).collect()
}

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn record(user: &str, pairs: &[(&str, &str)]) -> AttributeRecord {
    AttributeRecord {
        user_id: user.to_owned(),
        attributes: attrs(pairs),
    }
}

// --- outbox ---

async fn enqueue_and_duplicate(b: Backend) {
    let s = b.open();
    let e = event("evt-1");
    let deliveries = [dm("slack"), to("email", Target::channel("#general"))];
    let first = s.enqueue(&e, &deliveries, t(0)).await.unwrap();
    assert_eq!(first, EnqueueOutcome::Accepted { deliveries: 2 });

    // Same id again (even with other deliveries): nothing is written.
    let again = s.enqueue(&e, &[dm("teams")], t(1)).await.unwrap();
    assert_eq!(again, EnqueueOutcome::Duplicate);

    // An event without deliveries still claims its id.
    let none = s.enqueue(&event("evt-2"), &[], t(0)).await.unwrap();
    assert_eq!(none, EnqueueOutcome::Accepted { deliveries: 0 });
    let dup = s
        .enqueue(&event("evt-2"), &[dm("slack")], t(0))
        .await
        .unwrap();
    assert_eq!(dup, EnqueueOutcome::Duplicate);

    let claimed = claim_all(&s, t(5)).await;
    assert_eq!(claimed.len(), 2, "a duplicate must not add deliveries");
    for c in &claimed {
        assert_eq!(*c.event, e, "the event round-trips unchanged");
        assert_eq!(c.attempts, 0);
        let log = s.delivery_log(c.id).await.unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].status, LogStatus::Queued);
        assert_eq!(log[0].attempt, 0);
        assert_eq!(log[0].at, t(0));
        assert_eq!(log[0].delivery_id, c.id);
        assert_eq!(log[0].detail, None);
    }
    let mut got: Vec<(String, String, Target)> = claimed
        .iter()
        .map(|c| (c.route.clone(), c.destination.clone(), c.target.clone()))
        .collect();
    got.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        got,
        vec![
            (
                "route-email".to_owned(),
                "email".to_owned(),
                Target::ChannelName {
                    name: "general".to_owned()
                }
            ),
            (
                "route-slack".to_owned(),
                "slack".to_owned(),
                Target::SubjectDm
            ),
        ]
    );
    let stats = s.destination_stats().await.unwrap();
    assert!(!stats.iter().any(|d| d.destination == "teams"));
}

async fn delivery_state_of_unknown_id(b: Backend) {
    let s = b.open();
    assert_eq!(s.delivery_state(12345).await.unwrap(), None);
    assert!(s.delivery_log(12345).await.unwrap().is_empty());
    assert_eq!(s.next_due().await.unwrap(), None);
    assert!(s.claim(t(0), LEASE, 10).await.unwrap().is_empty());
    assert!(s.claim(t(0), LEASE, 0).await.unwrap().is_empty());
    s.complete(&[], t(0)).await.unwrap();
}

async fn claim_orders_by_due_time_then_id_and_respects_limit(b: Backend) {
    let s = b.open();
    // Enqueued out of due order; two share a due time.
    enqueue_one(&s, "c", "slack", t(3)).await;
    enqueue_one(&s, "a", "slack", t(1)).await;
    enqueue_one(&s, "b1", "slack", t(2)).await;
    enqueue_one(&s, "b2", "slack", t(2)).await;
    enqueue_one(&s, "future", "slack", t(100)).await;

    assert_eq!(s.next_due().await.unwrap(), Some(t(1)));
    assert!(
        s.claim(t(0), LEASE, 10).await.unwrap().is_empty(),
        "nothing due yet"
    );

    let first = s.claim(t(10), LEASE, 2).await.unwrap();
    let second = s.claim(t(10), LEASE, 10).await.unwrap();
    let kinds = |v: &[ClaimedDelivery]| v.iter().map(|c| c.event.id.clone()).collect::<Vec<_>>();
    assert_eq!(kinds(&first), ["a", "b1"]);
    assert_eq!(
        kinds(&second),
        ["b2", "c"],
        "limit respected, not-yet-due excluded"
    );
    let b1 = &first[1];
    let b2 = &second[0];
    assert!(b1.id < b2.id, "same due time: lower id first");

    for c in first.iter().chain(&second) {
        assert_eq!(state(&s, c.id).await, DeliveryState::InFlight);
    }
    assert!(
        s.claim(t(10), LEASE, 10).await.unwrap().is_empty(),
        "in-flight deliveries are not claimed again while leased"
    );
    // The earliest thing pending is now a lease expiry (t(10) + 30 s), then t(100).
    assert_eq!(s.next_due().await.unwrap(), Some(t(40)));
    let later = s.claim(t(100), LEASE, 1).await.unwrap();
    assert_eq!(later.len(), 1);
    // All four leases expired at t(40), before "future" became due at t(100); among
    // equal expiry times the lowest id ("c", enqueued first) goes first.
    assert_eq!(later[0].event.id, "c");
}

async fn expired_lease_is_reclaimed_and_stale_completion_ignored(b: Backend) {
    let s = b.open();
    enqueue_one(&s, "e", "slack", t(0)).await;
    let first = claim_one(&s, t(0)).await;
    assert!(s.claim(t(29), LEASE, 10).await.unwrap().is_empty());
    assert_eq!(s.next_due().await.unwrap(), Some(t(30)));

    // The worker died; after the lease expires someone else claims it.
    let second = claim_one(&s, t(31)).await;
    assert_eq!(second.id, first.id);
    assert_ne!(second.lease, first.lease, "a fresh lease token per claim");
    assert_eq!(second.attempts, 0);

    // The first worker wakes up and reports: ignored.
    complete(&s, &first, sent("stale"), t(32)).await;
    assert_eq!(state(&s, first.id).await, DeliveryState::InFlight);
    assert_eq!(statuses(&s, first.id).await, [(LogStatus::Queued, 0)]);
    let stats = s.destination_stats().await.unwrap();
    assert_eq!(
        stats[0].last_success_at, None,
        "a stale completion changes nothing"
    );

    complete(&s, &second, sent("ts-1"), t(33)).await;
    assert_eq!(state(&s, first.id).await, DeliveryState::Sent);

    // Completing again (row no longer in flight) is ignored too.
    complete(
        &s,
        &second,
        Outcome::Retry {
            at: t(50),
            error: DeliveryError::temporary("late"),
        },
        t(34),
    )
    .await;
    assert_eq!(state(&s, first.id).await, DeliveryState::Sent);
    assert_eq!(
        statuses(&s, first.id).await,
        [(LogStatus::Queued, 0), (LogStatus::Sent, 1)]
    );
    assert_eq!(s.next_due().await.unwrap(), None);
}

async fn outcome_sent(b: Backend) {
    let s = b.open();
    enqueue_one(&s, "e", "slack", t(0)).await;
    let c = claim_one(&s, t(1)).await;
    complete(&s, &c, sent("1700000000.0001"), t(2)).await;
    assert_eq!(state(&s, c.id).await, DeliveryState::Sent);
    let log = s.delivery_log(c.id).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].status, LogStatus::Sent);
    assert_eq!(log[1].attempt, 1);
    assert_eq!(log[1].at, t(2));
    assert_eq!(log[1].detail.as_deref(), Some("1700000000.0001"));
    let stats = s.destination_stats().await.unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].last_success_at, Some(t(2)));
    assert_eq!(stats[0].sent, 1);
    assert_eq!(stats[0].queued, 0);
    assert!(claim_all(&s, t(1000)).await.is_empty());
}

async fn outcome_retry(b: Backend) {
    let s = b.open();
    enqueue_one(&s, "e", "slack", t(0)).await;
    let c = claim_one(&s, t(1)).await;
    let error = DeliveryError::rate_limited(Some(Duration::from_secs(9)), "ratelimited");
    complete(
        &s,
        &c,
        Outcome::Retry {
            at: t(10),
            error: error.clone(),
        },
        t(2),
    )
    .await;
    assert_eq!(state(&s, c.id).await, DeliveryState::Queued);
    assert_eq!(s.next_due().await.unwrap(), Some(t(10)));
    assert!(
        s.claim(t(9), LEASE, 10).await.unwrap().is_empty(),
        "not before `at`"
    );
    let again = claim_one(&s, t(10)).await;
    assert_eq!(again.id, c.id);
    assert_eq!(again.attempts, 1, "a retry counts as an attempt");

    let log = s.delivery_log(c.id).await.unwrap();
    assert_eq!(log[1].status, LogStatus::Failed);
    assert_eq!(log[1].attempt, 1);
    assert_eq!(log[1].at, t(2));
    assert!(
        log[1]
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("ratelimited"),
        "the failure's detail carries the error: {:?}",
        log[1].detail
    );
    let stats = s.destination_stats().await.unwrap();
    assert!(
        stats[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("ratelimited")
    );
    assert_eq!(stats[0].last_error_at, Some(t(2)));
    assert_eq!(stats[0].queued, 1, "in flight counts as queued");
}

async fn outcome_defer(b: Backend) {
    let s = b.open();
    enqueue_one(&s, "e", "slack", t(0)).await;
    let c = claim_one(&s, t(1)).await;
    complete(&s, &c, Outcome::Defer { until: t(20) }, t(2)).await;
    assert_eq!(state(&s, c.id).await, DeliveryState::Queued);
    assert_eq!(s.next_due().await.unwrap(), Some(t(20)));
    assert!(s.claim(t(19), LEASE, 10).await.unwrap().is_empty());
    let again = claim_one(&s, t(20)).await;
    assert_eq!(again.attempts, 0, "a deferral is not an attempt");
    assert_eq!(
        statuses(&s, c.id).await,
        [(LogStatus::Queued, 0)],
        "no log entry"
    );
    let stats = s.destination_stats().await.unwrap();
    assert_eq!(stats[0].last_error, None);
}

async fn outcome_dead(b: Backend) {
    let s = b.open();
    enqueue_one(&s, "attempted", "slack", t(0)).await;
    enqueue_one(&s, "not-attempted", "slack", t(0)).await;
    let claimed = claim_all(&s, t(1)).await;
    assert_eq!(claimed.len(), 2);
    let error = DeliveryError::permanent("channel_not_found");
    complete(
        &s,
        &claimed[0],
        Outcome::Dead {
            error: error.clone(),
            attempted: true,
        },
        t(2),
    )
    .await;
    complete(
        &s,
        &claimed[1],
        Outcome::Dead {
            error: DeliveryError::recipient_unknown("no slack user for u1"),
            attempted: false,
        },
        t(3),
    )
    .await;
    assert_eq!(state(&s, claimed[0].id).await, DeliveryState::Dead);
    assert_eq!(state(&s, claimed[1].id).await, DeliveryState::Dead);
    let dead = s.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].id, claimed[0].id);
    assert_eq!(dead[0].attempts, 1, "attempted: counts");
    assert_eq!(dead[0].error, error);
    assert_eq!(dead[0].died_at, t(2));
    assert_eq!(dead[1].attempts, 0, "not attempted: attempts unchanged");
    assert_eq!(
        dead[1].error,
        DeliveryError::recipient_unknown("no slack user for u1")
    );

    let log = s.delivery_log(claimed[0].id).await.unwrap();
    assert_eq!(log.last().map(|e| e.status), Some(LogStatus::Dead));
    assert_eq!(log.last().map(|e| e.attempt), Some(1));
    assert!(
        log.last()
            .and_then(|e| e.detail.as_deref())
            .unwrap_or("")
            .contains("channel_not_found")
    );
    let stats = s.destination_stats().await.unwrap();
    assert_eq!(stats[0].dead, 2);
    assert!(
        stats[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("no slack user")
    );
    assert_eq!(stats[0].last_error_at, Some(t(3)));
    assert!(
        claim_all(&s, t(1000)).await.is_empty(),
        "dead letters are not claimed"
    );
    assert_eq!(s.next_due().await.unwrap(), None);
}

async fn outcome_parked(b: Backend) {
    let s = b.open();
    enqueue_one(&s, "e", "slack", t(0)).await;
    let c = claim_one(&s, t(1)).await;
    complete(
        &s,
        &c,
        Outcome::Retry {
            at: t(5),
            error: DeliveryError::temporary("timeout"),
        },
        t(2),
    )
    .await;
    let c = claim_one(&s, t(5)).await;
    complete(
        &s,
        &c,
        Outcome::Parked {
            reason: "token_revoked".to_owned(),
        },
        t(6),
    )
    .await;
    assert_eq!(state(&s, c.id).await, DeliveryState::Parked);
    assert!(
        claim_all(&s, t(1000)).await.is_empty(),
        "parked deliveries are not claimed"
    );
    assert_eq!(s.next_due().await.unwrap(), None);
    let log = s.delivery_log(c.id).await.unwrap();
    let last = log.last().expect("log entries");
    assert_eq!(last.status, LogStatus::Parked);
    assert_eq!(last.detail.as_deref(), Some("token_revoked"));
    assert_eq!(last.attempt, 0, "LogEntry::attempt is 0 for park entries");
    let stats = s.destination_stats().await.unwrap();
    assert_eq!(stats[0].parked, 1);

    // Reconnecting re-queues it with its attempts intact.
    assert_eq!(s.set_connected("slack", true, None, t(7)).await.unwrap(), 1);
    let again = claim_one(&s, t(7)).await;
    assert_eq!(again.id, c.id);
    assert_eq!(again.attempts, 1, "parking is not an attempt");
}

async fn set_connected_parks_and_unparks_in_order(b: Backend) {
    let s = b.open();
    enqueue_one(&s, "s1", "slack", t(0)).await;
    enqueue_one(&s, "s2", "slack", t(1)).await;
    enqueue_one(&s, "s3", "slack", t(2)).await;
    enqueue_one(&s, "t1", "teams", t(0)).await;

    // s1 is in flight; s2 is deferred to later than s3 (so due order != id order).
    let s1 = claim_one(&s, t(0)).await;
    assert_eq!(s1.event.id, "s1");
    let claimed = s.claim(t(1), LEASE, 2).await.unwrap();
    let s2 = claimed
        .iter()
        .find(|c| c.event.id == "s2")
        .expect("s2")
        .clone();
    let t1 = claimed
        .iter()
        .find(|c| c.event.id == "t1")
        .expect("t1")
        .clone();
    complete(&s, &s2, Outcome::Defer { until: t(50) }, t(1)).await;
    complete(&s, &t1, Outcome::Defer { until: t(1) }, t(1)).await;

    let parked = s
        .set_connected("slack", false, Some("token_revoked"), t(3))
        .await
        .unwrap();
    assert_eq!(
        parked, 2,
        "queued ones only; the in-flight one is left alone"
    );
    assert_eq!(s.disconnected().await.unwrap(), ["slack"]);
    assert_eq!(state(&s, s1.id).await, DeliveryState::InFlight);
    assert_eq!(state(&s, s2.id).await, DeliveryState::Parked);
    let s2_log = s.delivery_log(s2.id).await.unwrap();
    let last = s2_log.last().expect("log");
    assert_eq!(last.status, LogStatus::Parked);
    assert_eq!(last.at, t(3));
    assert_eq!(last.attempt, 0, "LogEntry::attempt is 0 for park entries");

    let stats = s.destination_stats().await.unwrap();
    let slack = stats
        .iter()
        .find(|d| d.destination == "slack")
        .expect("slack");
    assert!(!slack.connected);
    assert_eq!(slack.disconnected_reason.as_deref(), Some("token_revoked"));
    assert_eq!(slack.parked, 2);
    assert_eq!(slack.queued, 1, "the in-flight one");
    let teams = stats
        .iter()
        .find(|d| d.destination == "teams")
        .expect("teams");
    assert!(teams.connected);
    assert_eq!(teams.queued, 1);

    // Only teams is claimable while slack is parked.
    let due = claim_all(&s, t(10)).await;
    assert_eq!(ids(&due), [t1.id]);

    // Disconnecting twice parks nothing more.
    assert_eq!(
        s.set_connected("slack", false, Some("again"), t(4))
            .await
            .unwrap(),
        0
    );

    let requeued = s.set_connected("slack", true, None, t(20)).await.unwrap();
    assert_eq!(requeued, 2);
    assert!(s.disconnected().await.unwrap().is_empty());
    assert_eq!(state(&s, s2.id).await, DeliveryState::Queued);
    let last = s.delivery_log(s2.id).await.unwrap().pop().expect("log");
    assert_eq!((last.status, last.at), (LogStatus::Queued, t(20)));
    let stats = s.destination_stats().await.unwrap();
    let slack = stats
        .iter()
        .find(|d| d.destination == "slack")
        .expect("slack");
    assert!(slack.connected);
    assert_eq!(slack.disconnected_reason, None);
    assert_eq!(slack.parked, 0);

    // All due at t(20), in original id order (s2 before s3 although s2 was deferred).
    let due = claim_all(&s, t(20)).await;
    let order: Vec<&str> = due.iter().map(|c| c.event.id.as_str()).collect();
    assert_eq!(order, ["s2", "s3"]);
    assert_eq!(
        s.set_connected("slack", true, None, t(21)).await.unwrap(),
        0
    );
}

async fn set_connected_for_unknown_destination_is_listed(b: Backend) {
    let s = b.open();
    assert_eq!(
        s.set_connected("zendesk", false, Some("uninstalled"), t(0))
            .await
            .unwrap(),
        0
    );
    assert_eq!(s.disconnected().await.unwrap(), ["zendesk"]);
    let stats = s.destination_stats().await.unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].destination, "zendesk");
    assert!(!stats[0].connected);
    assert_eq!(
        stats[0].queued + stats[0].parked + stats[0].dead + stats[0].sent,
        0
    );
}

async fn dead_letters_oldest_first_and_replay(b: Backend) {
    let s = b.open();
    for id in ["d1", "d2", "d3"] {
        enqueue_one(&s, id, "slack", t(0)).await;
    }
    let claimed = claim_all(&s, t(0)).await;
    assert_eq!(claimed.len(), 3);
    // Die out of id order.
    for (c, died) in claimed.iter().zip([t(5), t(3), t(4)]) {
        complete(
            &s,
            c,
            Outcome::Dead {
                error: DeliveryError::permanent(format!("bad {}", c.event.id)),
                attempted: true,
            },
            died,
        )
        .await;
    }
    let dead = s.dead_letters(10).await.unwrap();
    let order: Vec<&str> = dead.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(order, ["d2", "d3", "d1"], "oldest first");
    assert_eq!(s.dead_letters(2).await.unwrap().len(), 2);
    let d2 = &dead[0];
    assert_eq!(d2.event_kind, "wallet.funded");
    assert_eq!(d2.route, "route-slack");
    assert_eq!(d2.destination, "slack");
    assert_eq!(d2.target, Target::SubjectDm);
    assert_eq!(d2.attempts, 1);
    assert_eq!(d2.error, DeliveryError::permanent("bad d2"));
    assert_eq!(d2.died_at, t(3));

    s.replay(d2.id, t(10)).await.unwrap();
    assert_eq!(state(&s, d2.id).await, DeliveryState::Queued);
    let last = s.delivery_log(d2.id).await.unwrap().pop().expect("log");
    assert_eq!(
        (last.status, last.attempt, last.at),
        (LogStatus::Queued, 0, t(10))
    );
    assert_eq!(s.dead_letters(10).await.unwrap().len(), 2);
    assert_eq!(s.next_due().await.unwrap(), Some(t(10)));
    let again = claim_one(&s, t(10)).await;
    assert_eq!(again.id, d2.id);
    assert_eq!(again.attempts, 0, "replay resets attempts");

    // Not a dead letter (in flight now) / unknown id: NotFound.
    let err = s.replay(d2.id, t(11)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = s.replay(987_654, t(11)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let stats = s.destination_stats().await.unwrap();
    assert_eq!((stats[0].dead, stats[0].queued), (2, 1));
}

async fn delivery_log_records_every_step_in_order(b: Backend) {
    let s = b.open();
    enqueue_one(&s, "e", "slack", t(0)).await;
    let c = claim_one(&s, t(0)).await;
    let retry = |at| Outcome::Retry {
        at,
        error: DeliveryError::temporary("503"),
    };
    complete(&s, &c, retry(t(10)), t(1)).await;
    let c = claim_one(&s, t(10)).await;
    complete(&s, &c, Outcome::Defer { until: t(12) }, t(11)).await;
    let c = claim_one(&s, t(12)).await;
    complete(&s, &c, retry(t(20)), t(13)).await;
    let c = claim_one(&s, t(20)).await;
    assert_eq!(c.attempts, 2);
    complete(
        &s,
        &c,
        Outcome::Dead {
            error: DeliveryError::permanent("gave up"),
            attempted: true,
        },
        t(21),
    )
    .await;
    s.replay(c.id, t(30)).await.unwrap();
    let c = claim_one(&s, t(30)).await;
    complete(&s, &c, sent("m-1"), t(31)).await;

    let log = s.delivery_log(c.id).await.unwrap();
    let steps: Vec<(LogStatus, u32, DateTime<Utc>)> =
        log.iter().map(|e| (e.status, e.attempt, e.at)).collect();
    assert_eq!(
        steps,
        [
            (LogStatus::Queued, 0, t(0)),
            (LogStatus::Failed, 1, t(1)),
            (LogStatus::Failed, 2, t(13)),
            (LogStatus::Dead, 3, t(21)),
            (LogStatus::Queued, 0, t(30)),
            (LogStatus::Sent, 1, t(31)),
        ]
    );
    assert!(log.iter().all(|e| e.delivery_id == c.id));
    assert_eq!(log[5].detail.as_deref(), Some("m-1"));
}

async fn destination_stats_per_destination(b: Backend) {
    let s = b.open();
    // slack: 1 sent, 1 dead, 1 queued, 1 in flight; teams: 1 retrying; email: parked.
    for id in ["s-sent", "s-dead", "s-queued", "s-flight"] {
        enqueue_one(&s, id, "slack", t(0)).await;
    }
    enqueue_one(&s, "t-retry", "teams", t(0)).await;
    enqueue_one(&s, "e-parked", "email", t(0)).await;
    let claimed = claim_all(&s, t(0)).await;
    let by_event = |id: &str| claimed.iter().find(|c| c.event.id == id).expect(id).clone();
    complete(&s, &by_event("s-sent"), sent("x"), t(1)).await;
    complete(
        &s,
        &by_event("s-dead"),
        Outcome::Dead {
            error: DeliveryError::permanent("msg_too_long"),
            attempted: true,
        },
        t(2),
    )
    .await;
    complete(
        &s,
        &by_event("s-queued"),
        Outcome::Defer { until: t(100) },
        t(1),
    )
    .await;
    complete(
        &s,
        &by_event("t-retry"),
        Outcome::Retry {
            at: t(100),
            error: DeliveryError::temporary("gateway timeout"),
        },
        t(3),
    )
    .await;
    complete(
        &s,
        &by_event("e-parked"),
        Outcome::Defer { until: t(4) },
        t(1),
    )
    .await;
    s.set_connected("email", false, Some("smtp auth failed"), t(5))
        .await
        .unwrap();

    let stats = s.destination_stats().await.unwrap();
    let names: Vec<&str> = stats.iter().map(|d| d.destination.as_str()).collect();
    assert_eq!(names, ["email", "slack", "teams"], "sorted by name");
    let (email, slack, teams) = (&stats[0], &stats[1], &stats[2]);

    assert!(slack.connected);
    assert_eq!(slack.disconnected_reason, None);
    assert_eq!(
        (slack.queued, slack.parked, slack.dead, slack.sent),
        (2, 0, 1, 1)
    );
    assert_eq!(slack.last_success_at, Some(t(1)));
    assert!(
        slack
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("msg_too_long")
    );
    assert_eq!(slack.last_error_at, Some(t(2)));

    assert_eq!(
        (teams.queued, teams.parked, teams.dead, teams.sent),
        (1, 0, 0, 0)
    );
    assert_eq!(teams.last_success_at, None);
    assert!(
        teams
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("gateway timeout")
    );

    assert!(!email.connected);
    assert_eq!(
        email.disconnected_reason.as_deref(),
        Some("smtp auth failed")
    );
    assert_eq!(
        (email.queued, email.parked, email.dead, email.sent),
        (0, 1, 0, 0)
    );
    assert_eq!(email.last_error, None);
}

async fn batched_completion_applies_each_outcome(b: Backend) {
    let s = b.open();
    for i in 0..5 {
        enqueue_one(&s, &format!("e{i}"), "slack", t(0)).await;
    }
    let claimed = claim_all(&s, t(0)).await;
    let stale = Completion {
        lease: claimed[4].lease + 1_000_000,
        ..completion(&claimed[4], sent("never"))
    };
    let batch = vec![
        completion(&claimed[0], sent("a")),
        completion(
            &claimed[1],
            Outcome::Retry {
                at: t(9),
                error: DeliveryError::temporary("x"),
            },
        ),
        completion(&claimed[2], Outcome::Defer { until: t(9) }),
        completion(
            &claimed[3],
            Outcome::Dead {
                error: DeliveryError::permanent("y"),
                attempted: false,
            },
        ),
        stale,
    ];
    s.complete(&batch, t(1)).await.unwrap();
    let states = [
        state(&s, claimed[0].id).await,
        state(&s, claimed[1].id).await,
        state(&s, claimed[2].id).await,
        state(&s, claimed[3].id).await,
        state(&s, claimed[4].id).await,
    ];
    assert_eq!(
        states,
        [
            DeliveryState::Sent,
            DeliveryState::Queued,
            DeliveryState::Queued,
            DeliveryState::Dead,
            DeliveryState::InFlight,
        ]
    );
}

async fn concurrent_claims_never_hand_out_a_delivery_twice(b: Backend) {
    let s = b.open();
    for i in 0..200 {
        enqueue_one(&s, &format!("e{i}"), "slack", t(0)).await;
    }
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = Arc::clone(&s.store);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.claim(t(1), LEASE, 7).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|c| c.id));
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let distinct: BTreeSet<DeliveryId> = all.iter().copied().collect();
    assert_eq!(all.len(), 200);
    assert_eq!(distinct.len(), 200);
}

/// "Everything" and "forever" are valid arguments, not overflows.
async fn huge_limits_and_leases_are_accepted(b: Backend) {
    let s = b.open();
    enqueue_one(&s, "e", "slack", t(0)).await;
    let claimed = s.claim(t(0), Duration::MAX, usize::MAX).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        s.claim(t(1_000_000_000), LEASE, usize::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    let next = s.next_due().await.unwrap().expect("the lease is pending");
    assert!(next > t(1_000_000_000));
    let run = s.start_run("csv", t(0), Duration::MAX).await.unwrap();
    assert!(run.is_some());
    assert!(
        s.start_run("csv", t(1_000_000_000), LEASE)
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.dead_letters(usize::MAX).await.unwrap().is_empty());
    assert_eq!(s.runs("csv", usize::MAX).await.unwrap().len(), 1);
}

// --- identity links ---

fn link(platform: &str, user: &str, platform_id: &str, origin: LinkOrigin) -> IdentityLink {
    IdentityLink {
        platform: platform.to_owned(),
        user_id: user.to_owned(),
        platform_id: platform_id.to_owned(),
        origin,
        linked_at: t(1),
    }
}

async fn identity_links_and_manual_wins(b: Backend) {
    let s = b.open();
    assert_eq!(s.link("slack", "u1").await.unwrap(), None);
    let auto = link("slack", "u1", "U111", LinkOrigin::EmailMatch);
    s.put_link(&auto).await.unwrap();
    s.put_link(&link("slack", "u0", "U000", LinkOrigin::PhoneMatch))
        .await
        .unwrap();
    s.put_link(&link("teams", "u1", "29:abc", LinkOrigin::EmailMatch))
        .await
        .unwrap();
    assert_eq!(s.link("slack", "u1").await.unwrap(), Some(auto.clone()));

    // Automatic replaces automatic.
    let auto2 = link("slack", "u1", "U112", LinkOrigin::PhoneMatch);
    s.put_link(&auto2).await.unwrap();
    assert_eq!(s.link("slack", "u1").await.unwrap(), Some(auto2));

    // Manual replaces automatic; automatic never replaces manual.
    let manual = IdentityLink {
        linked_at: t(2),
        ..link("slack", "u1", "U999", LinkOrigin::Manual)
    };
    s.put_link(&manual).await.unwrap();
    s.put_link(&link("slack", "u1", "U113", LinkOrigin::EmailMatch))
        .await
        .unwrap();
    assert_eq!(s.link("slack", "u1").await.unwrap(), Some(manual));
    // A manual put replaces a manual link.
    let manual2 = link("slack", "u1", "U998", LinkOrigin::Manual);
    s.put_link(&manual2).await.unwrap();
    assert_eq!(s.link("slack", "u1").await.unwrap(), Some(manual2.clone()));

    let slack = s.links("slack").await.unwrap();
    let users: Vec<&str> = slack.iter().map(|l| l.user_id.as_str()).collect();
    assert_eq!(users, ["u0", "u1"]);
    assert_eq!(slack[1], manual2);
    assert_eq!(s.links("teams").await.unwrap().len(), 1);
    assert!(s.links("zendesk").await.unwrap().is_empty());

    assert!(s.delete_link("slack", "u1").await.unwrap());
    assert!(!s.delete_link("slack", "u1").await.unwrap());
    assert_eq!(s.link("slack", "u1").await.unwrap(), None);
    assert_eq!(
        s.link("teams", "u1").await.unwrap().map(|l| l.platform_id),
        Some("29:abc".to_owned())
    );
    // After deleting a manual link, an automatic one may be stored again.
    s.put_link(&auto).await.unwrap();
    assert_eq!(s.link("slack", "u1").await.unwrap(), Some(auto));
}

// --- integrations and runs ---

fn integration(name: &str) -> IntegrationConfig {
    IntegrationConfig {
        name: name.to_owned(),
        source: format!("s3://bucket/{name}/*.csv"),
        schedule: Schedule::Interval(Duration::from_secs(3600)),
        enabled: true,
        settings: serde_json::json!({"user_id_column": "Email"}),
    }
}

async fn integrations_by_name(b: Backend) {
    let s = b.open();
    assert!(s.integrations().await.unwrap().is_empty());
    s.put_integration(&integration("zeta")).await.unwrap();
    s.put_integration(&integration("alpha")).await.unwrap();
    let replaced = IntegrationConfig {
        enabled: false,
        schedule: Schedule::Cron("0 3 * * *".to_owned()),
        ..integration("zeta")
    };
    s.put_integration(&replaced).await.unwrap();
    let all = s.integrations().await.unwrap();
    assert_eq!(all, [integration("alpha"), replaced]);
}

async fn runs_never_overlap(b: Backend) {
    let s = b.open();
    let lease = Duration::from_secs(60);
    let run = s
        .start_run("csv", t(0), lease)
        .await
        .unwrap()
        .expect("first run");
    assert_eq!(run.integration, "csv");
    assert_eq!(run.outcome, RunOutcome::Running);
    assert_eq!(run.started_at, t(0));
    assert_eq!(run.finished_at, None);
    assert!(
        s.start_run("csv", t(10), lease).await.unwrap().is_none(),
        "overlap refused"
    );
    assert!(s.start_run("csv", t(59), lease).await.unwrap().is_none());
    // Another integration is independent.
    let other = s
        .start_run("other", t(10), lease)
        .await
        .unwrap()
        .expect("other");
    assert_ne!(other.id, run.id);

    let mut finished = run.clone();
    finished.outcome = RunOutcome::Partial;
    finished.finished_at = Some(t(20));
    finished.rows_read = 10;
    finished.rows_imported = 9;
    finished.rows_rejected = 1;
    finished.row_errors = vec!["line 4: missing user id".to_owned()];
    finished.properties_imported = 3;
    finished.details = serde_json::json!({"moved_to": "success/a.csv"});
    s.finish_run(&finished).await.unwrap();

    let next = s
        .start_run("csv", t(30), lease)
        .await
        .unwrap()
        .expect("after finish");
    assert!(next.id > run.id);
    let runs = s.runs("csv", 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].id, next.id, "newest first");
    assert_eq!(runs[1], finished);
    assert_eq!(s.runs("csv", 1).await.unwrap().len(), 1);
    assert!(s.runs("nothing", 10).await.unwrap().is_empty());

    let missing = RunRecord {
        id: 424_242,
        ..finished.clone()
    };
    let err = s.finish_run(&missing).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

async fn abandoned_run_is_taken_over_after_lease_expiry(b: Backend) {
    let s = b.open();
    let lease = Duration::from_secs(60);
    let dead = s.start_run("csv", t(0), lease).await.unwrap().expect("run");
    // The process died; the lease expires at t(60).
    let taken = s
        .start_run("csv", t(61), lease)
        .await
        .unwrap()
        .expect("takeover");
    assert_ne!(taken.id, dead.id);
    let runs = s.runs("csv", 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].id, taken.id);
    assert_eq!(runs[0].outcome, RunOutcome::Running);
    let old = &runs[1];
    assert_eq!(old.id, dead.id);
    assert_eq!(old.outcome, RunOutcome::Failed);
    assert_eq!(
        old.error.as_deref(),
        Some("abandoned: lease expired (process died?)")
    );
    assert!(old.finished_at.is_some());
    // The new run holds its own lease.
    assert!(s.start_run("csv", t(62), lease).await.unwrap().is_none());
}

// --- installations and one-time keys ---

fn installation(key: &str, token: &str) -> Installation {
    Installation {
        platform: "slack".to_owned(),
        key: key.to_owned(),
        token: SecretString::from(token.to_owned()),
        refresh_token: Some(SecretString::from(format!("refresh-{token}"))),
        expires_at: Some(t(3600)),
        data: serde_json::json!({"bot_user_id": "B1", "scopes": ["chat:write"]}),
        updated_at: t(0),
    }
}

async fn installations_round_trip_and_hide_tokens(b: Backend) {
    let s = b.open();
    assert!(s.installation("slack", "T1").await.unwrap().is_none());
    s.put_installation(&installation("T1", "xoxb-secret-1"))
        .await
        .unwrap();
    let got = s
        .installation("slack", "T1")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(got.token.expose_secret(), "xoxb-secret-1");
    assert_eq!(
        got.refresh_token
            .as_ref()
            .map(|r| r.expose_secret().to_owned()),
        Some("refresh-xoxb-secret-1".to_owned())
    );
    assert_eq!(got.expires_at, Some(t(3600)));
    assert_eq!(got.updated_at, t(0));
    assert_eq!(got.data["bot_user_id"], "B1");
    let debug = format!("{got:?}");
    assert!(
        !debug.contains("xoxb-secret-1"),
        "Debug leaks the token: {debug}"
    );
    assert!(
        !debug.contains("refresh-xoxb"),
        "Debug leaks the refresh token: {debug}"
    );
    assert!(debug.contains("T1"));

    // Replace: new token, no refresh token.
    let replaced = Installation {
        refresh_token: None,
        expires_at: None,
        updated_at: t(5),
        ..installation("T1", "xoxb-secret-2")
    };
    s.put_installation(&replaced).await.unwrap();
    let got = s
        .installation("slack", "T1")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(got.token.expose_secret(), "xoxb-secret-2");
    assert!(got.refresh_token.is_none());
    assert_eq!(got.expires_at, None);
    assert_eq!(got.updated_at, t(5));
    assert!(s.installation("teams", "T1").await.unwrap().is_none());

    assert!(s.delete_installation("slack", "T1").await.unwrap());
    assert!(!s.delete_installation("slack", "T1").await.unwrap());
    assert!(s.installation("slack", "T1").await.unwrap().is_none());
}

async fn remember_once_respects_expiry(b: Backend) {
    let s = b.open();
    assert!(
        s.remember_once("slack", "evt-1", t(300), t(0))
            .await
            .unwrap()
    );
    assert!(
        !s.remember_once("slack", "evt-1", t(300), t(1))
            .await
            .unwrap()
    );
    assert!(
        !s.remember_once("slack", "evt-1", t(900), t(299))
            .await
            .unwrap()
    );
    assert!(
        s.remember_once("zendesk", "evt-1", t(300), t(1))
            .await
            .unwrap(),
        "per scope"
    );
    assert!(
        s.remember_once("slack", "evt-2", t(300), t(1))
            .await
            .unwrap()
    );
    // Expired: it may be remembered again, with the new expiry.
    assert!(
        s.remember_once("slack", "evt-1", t(1000), t(301))
            .await
            .unwrap()
    );
    assert!(
        !s.remember_once("slack", "evt-1", t(2000), t(999))
            .await
            .unwrap()
    );
    assert!(
        s.remember_once("slack", "evt-1", t(2000), t(1001))
            .await
            .unwrap()
    );
}

// --- attributes ---

async fn attributes_upsert_merges_and_counts(b: Backend) {
    let s = b.open();
    assert_eq!(s.get("u1").await.unwrap(), None);
    let stats = s
        .upsert(&[
            record("u1", &[("plan", "Basic"), ("tickets", "3")]),
            record("u2", &[("plan", "Premium")]),
            record("u1", &[("plan", "Premium")]),
        ])
        .await
        .unwrap();
    assert_eq!(stats.users_created, 2);
    assert_eq!(stats.users_updated, 0);
    assert_eq!(stats.new_attribute_names, 2);
    assert_eq!(
        s.get("u1").await.unwrap(),
        Some(attrs(&[("plan", "Premium"), ("tickets", "3")])),
        "later records for the same user win, per attribute"
    );

    let stats = s
        .upsert(&[
            record("u1", &[("seats", "10")]),
            record("u1", &[("tickets", "4")]),
            record("u3", &[("plan", "Basic")]),
        ])
        .await
        .unwrap();
    assert_eq!(stats.users_created, 1);
    assert_eq!(stats.users_updated, 1);
    assert_eq!(stats.new_attribute_names, 1);
    assert_eq!(
        s.get("u1").await.unwrap(),
        Some(attrs(&[
            ("plan", "Premium"),
            ("seats", "10"),
            ("tickets", "4")
        ])),
        "merged into what the user had"
    );
    assert_eq!(
        s.get("u2").await.unwrap(),
        Some(attrs(&[("plan", "Premium")]))
    );
    assert_eq!(s.upsert(&[]).await.unwrap().users_created, 0);

    // Odd names and values survive.
    let odd = attrs(&[("a.b", "x\"y"), ("we\"ird\\", "ü ✓"), ("", "empty name")]);
    s.upsert(&[AttributeRecord {
        user_id: "u'4".to_owned(),
        attributes: odd.clone(),
    }])
    .await
    .unwrap();
    assert_eq!(s.get("u'4").await.unwrap(), Some(odd));
    for (name, value) in [("a.b", "x\"y"), ("we\"ird\\", "ü ✓"), ("", "empty name")] {
        assert_eq!(
            s.query(&Filter::eq(name, value)).await.unwrap(),
            ["u'4"],
            "query by the odd name {name:?}"
        );
    }
    assert_eq!(
        s.query(&Filter::Contains {
            attr: "we\"ird\\".to_owned(),
            value: "Ü".to_owned()
        })
        .await
        .unwrap(),
        ["u'4"]
    );
}

async fn attributes_query_numeric_and_text(b: Backend) {
    let s = b.open();
    s.upsert(&[
        record(
            "u1",
            &[("plan", "Premium"), ("tickets", "3"), ("city", "Berlin")],
        ),
        record("u2", &[("plan", "Basic"), ("tickets", "10")]),
        record("u3", &[("plan", "premium"), ("tickets", "2.5")]),
        record("u4", &[("plan", "Premium"), ("tickets", "many")]),
        record("u5", &[("city", "Bern")]),
        record(
            "u6",
            &[("tickets", "10.0"), ("a.b", "dot"), ("we\"ird", "q")],
        ),
    ])
    .await
    .unwrap();
    let q = |f: Filter| {
        let store = Arc::clone(&s.store);
        async move { store.query(&f).await.unwrap() }
    };
    let cmp = |attr: &str, cmp, value: &str| Filter::Cmp {
        attr: attr.to_owned(),
        cmp,
        value: value.to_owned(),
    };

    assert_eq!(
        q(Filter::eq("plan", "Premium")).await,
        ["u1", "u4"],
        "text equality is exact"
    );
    // "10" and "10.0" are equal as numbers.
    assert_eq!(q(Filter::eq("tickets", "10")).await, ["u2", "u6"]);
    // Numeric comparison: 10 > 9 although "10" < "9" as text; "many" compares as text.
    assert_eq!(q(Filter::gt("tickets", "9")).await, ["u2", "u4", "u6"]);
    assert_eq!(
        q(Filter::gt("tickets", "2")).await,
        ["u1", "u2", "u3", "u4", "u6"]
    );
    assert_eq!(q(cmp("tickets", Comparison::Lte, "3")).await, ["u1", "u3"]);
    assert_eq!(
        q(cmp("tickets", Comparison::Lt, "2.5")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        q(cmp("tickets", Comparison::Gte, "2.5")).await,
        ["u1", "u2", "u3", "u4", "u6"]
    );
    assert_eq!(
        q(cmp("city", Comparison::Gt, "Berlin")).await,
        ["u5"],
        "text order"
    );
    assert_eq!(
        q(Filter::Ne {
            attr: "plan".to_owned(),
            value: "Premium".to_owned()
        })
        .await,
        ["u2", "u3"],
        "ne requires the attribute"
    );
    assert_eq!(
        q(Filter::In {
            attr: "plan".to_owned(),
            values: vec!["Basic".to_owned(), "premium".to_owned()]
        })
        .await,
        ["u2", "u3"]
    );
    assert_eq!(
        q(Filter::In {
            attr: "tickets".to_owned(),
            values: vec!["3.0".to_owned(), "many".to_owned()]
        })
        .await,
        ["u1", "u4"]
    );
    assert!(
        q(Filter::In {
            attr: "plan".to_owned(),
            values: vec![]
        })
        .await
        .is_empty()
    );
    assert_eq!(
        q(Filter::Contains {
            attr: "plan".to_owned(),
            value: "PREM".to_owned()
        })
        .await,
        ["u1", "u3", "u4"],
        "contains is case-insensitive"
    );
    assert_eq!(
        q(Filter::Exists {
            attr: "city".to_owned()
        })
        .await,
        ["u1", "u5"]
    );
    assert_eq!(
        q(Filter::And(vec![
            Filter::eq("plan", "Premium"),
            Filter::gt("tickets", "2")
        ]))
        .await,
        ["u1", "u4"]
    );
    assert_eq!(
        q(Filter::Or(vec![
            Filter::eq("plan", "Basic"),
            Filter::Exists {
                attr: "city".to_owned()
            }
        ]))
        .await,
        ["u1", "u2", "u5"]
    );
    assert_eq!(
        q(Filter::Not(Box::new(Filter::Exists {
            attr: "plan".to_owned()
        })))
        .await,
        ["u5", "u6"],
        "not matches users without the attribute"
    );
    assert!(q(Filter::Or(vec![])).await.is_empty());
    assert_eq!(
        q(Filter::And(vec![])).await.len(),
        6,
        "empty and matches everyone"
    );
    assert_eq!(q(Filter::eq("a.b", "dot")).await, ["u6"]);
    assert_eq!(q(Filter::eq("we\"ird", "q")).await, ["u6"]);
    assert!(q(Filter::eq("missing", "x")).await.is_empty());
}

/// A tiny deterministic generator (no external randomness in the suite).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.next(items.len())]
    }
}

const NAMES: &[&str] = &["plan", "tickets", "city", "a.b", "q\"uote", "Ünï"];
const VALUES: &[&str] = &[
    "10",
    "10.0",
    " 10",
    "+10",
    "1e1",
    "9",
    "-3",
    "0.5",
    ".5",
    "abc",
    "ABC",
    "Premium",
    "premium",
    "",
    "nan",
    "inf",
    "x\"y",
    "Ünï ✓",
];

fn random_filter(rng: &mut Lcg, depth: u32) -> Filter {
    let attr = rng.pick(NAMES).to_owned();
    let value = rng.pick(VALUES).to_owned();
    let choice = if depth == 0 { rng.next(6) } else { rng.next(9) };
    match choice {
        0 => Filter::Eq { attr, value },
        1 => Filter::Ne { attr, value },
        2 => Filter::In {
            attr,
            values: (0..rng.next(4))
                .map(|_| rng.pick(VALUES).to_owned())
                .collect(),
        },
        3 => Filter::Contains { attr, value },
        4 => Filter::Cmp {
            attr,
            cmp: [
                Comparison::Gt,
                Comparison::Gte,
                Comparison::Lt,
                Comparison::Lte,
            ][rng.next(4)],
            value,
        },
        5 => Filter::Exists { attr },
        6 => Filter::And(
            (0..rng.next(4))
                .map(|_| random_filter(rng, depth - 1))
                .collect(),
        ),
        7 => Filter::Or(
            (0..rng.next(4))
                .map(|_| random_filter(rng, depth - 1))
                .collect(),
        ),
        _ => Filter::Not(Box::new(random_filter(rng, depth - 1))),
    }
}

/// The store's answer equals `Filter::matches` over the same data, for many
/// random filters over awkward values (numbers written several ways, case,
/// quotes, non-ASCII): no store-side translation of filters may change results.
async fn attributes_query_agrees_with_filter_matches(b: Backend) {
    let s = b.open();
    let mut rng = Lcg(42);
    let mut expected_data: BTreeMap<String, Attributes> = BTreeMap::new();
    let mut batch = Vec::new();
    for u in 0..150 {
        let mut a = Attributes::new();
        for _ in 0..rng.next(5) {
            a.insert(rng.pick(NAMES).to_owned(), rng.pick(VALUES).to_owned());
        }
        let user = format!("user-{u:03}");
        expected_data.insert(user.clone(), a.clone());
        batch.push(AttributeRecord {
            user_id: user,
            attributes: a,
        });
    }
    s.upsert(&batch).await.unwrap();
    for _ in 0..300 {
        let filter = random_filter(&mut rng, 2);
        let expected: Vec<String> = expected_data
            .iter()
            .filter(|(_, a)| filter.matches(a))
            .map(|(u, _)| u.clone())
            .collect();
        assert_eq!(s.query(&filter).await.unwrap(), expected, "{filter:?}");
    }
}

async fn attribute_cap_names_the_overflow_and_writes_nothing(b: Backend) {
    let s = b.open_with_cap(3);
    s.upsert(&[record("u1", &[("a", "1"), ("b", "2")])])
        .await
        .unwrap();
    let err = s
        .upsert(&[
            record("u1", &[("a", "changed")]),
            record("u2", &[("c", "3"), ("d", "4")]),
            record("u3", &[("e", "5")]),
        ])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AttributeCap);
    let message = err.to_string();
    assert!(
        message.contains('d') && message.contains('e'),
        "names the overflow: {message}"
    );
    assert!(
        message.contains("d, e"),
        "lists the attributes over the cap: {message}"
    );
    // Nothing was written: not the values, not the users, not the names.
    assert_eq!(
        s.get("u1").await.unwrap(),
        Some(attrs(&[("a", "1"), ("b", "2")]))
    );
    assert_eq!(s.get("u2").await.unwrap(), None);
    assert_eq!(s.get("u3").await.unwrap(), None);
    let stats = s.upsert(&[record("u2", &[("c", "3")])]).await.unwrap();
    assert_eq!(
        stats.new_attribute_names, 1,
        "c was not registered by the failed batch"
    );
    assert_eq!(stats.users_created, 1);
    // Exactly at the cap: known names are always fine, a fourth is not.
    s.upsert(&[record("u9", &[("a", "x"), ("b", "y"), ("c", "z")])])
        .await
        .unwrap();
    let err = s.upsert(&[record("u9", &[("z", "1")])]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AttributeCap);
    assert!(err.to_string().contains('z'));
}

// --- SQLite only ---

#[cfg(feature = "sqlite")]
mod sqlite_only {
    use super::*;
    use switchboard::store::{Durability, SqliteStore};

    #[tokio::test]
    async fn persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let e = event("persisted");
        let held = {
            let store = SqliteStore::open(&path).unwrap();
            let outcome = store
                .enqueue(&e, &[dm("slack"), dm("teams")], t(0))
                .await
                .unwrap();
            assert_eq!(outcome, EnqueueOutcome::Accepted { deliveries: 2 });
            // One is claimed and then the process "dies" holding the lease.
            let claimed = store.claim(t(0), LEASE, 1).await.unwrap();
            assert_eq!(claimed.len(), 1);
            store
                .put_link(&link("slack", "u1", "U1", LinkOrigin::Manual))
                .await
                .unwrap();
            store
                .upsert(&[record("u1", &[("plan", "Premium")])])
                .await
                .unwrap();
            store
                .put_installation(&installation("T1", "xoxb-1"))
                .await
                .unwrap();
            claimed[0].id
        };
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.enqueue(&e, &[dm("slack")], t(1)).await.unwrap(),
            EnqueueOutcome::Duplicate,
            "event ids survive a restart"
        );
        let now_due = store.claim(t(1), LEASE, 10).await.unwrap();
        assert_eq!(now_due.len(), 1, "the unclaimed one");
        assert_eq!(*now_due[0].event, e);
        assert_ne!(now_due[0].id, held);
        // The dead worker's lease (taken at t(0)) expires at t(30).
        assert!(store.claim(t(29), LEASE, 10).await.unwrap().is_empty());
        let reclaimed = store.claim(t(30), LEASE, 10).await.unwrap();
        assert_eq!(
            ids(&reclaimed),
            [held],
            "the dead worker's delivery is reclaimed"
        );
        assert_eq!(
            store.link("slack", "u1").await.unwrap().map(|l| l.origin),
            Some(LinkOrigin::Manual)
        );
        assert_eq!(
            store.get("u1").await.unwrap(),
            Some(attrs(&[("plan", "Premium")]))
        );
        let inst = store.installation("slack", "T1").await.unwrap().unwrap();
        assert_eq!(inst.token.expose_secret(), "xoxb-1");
        assert_eq!(store.path(), Some(path.as_path()));
    }

    #[tokio::test]
    async fn clones_share_one_database_and_work_as_dyn_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("a.db"))
            .unwrap()
            .with_durability(Durability::Full)
            .unwrap();
        let shared: Arc<dyn Store> = Arc::new(store.clone());
        enqueue_one(
            &Harness {
                store: Arc::clone(&shared),
                _dir: None,
            },
            "x",
            "slack",
            t(0),
        )
        .await;
        assert_eq!(store.claim(t(0), LEASE, 10).await.unwrap().len(), 1);
        assert!(format!("{store:?}").contains("a.db"));
    }

    #[tokio::test]
    async fn two_handles_on_one_file_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.db");
        let a = SqliteStore::open(&path).unwrap();
        let b = SqliteStore::open(&path).unwrap();
        a.enqueue(&event("e"), &[dm("slack")], t(0)).await.unwrap();
        assert_eq!(
            b.enqueue(&event("e"), &[dm("slack")], t(0)).await.unwrap(),
            EnqueueOutcome::Duplicate
        );
        let claimed = b.claim(t(0), LEASE, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert!(a.claim(t(0), LEASE, 10).await.unwrap().is_empty());
        a.complete(&[completion(&claimed[0], sent("r"))], t(1))
            .await
            .unwrap();
        assert_eq!(
            b.delivery_state(claimed[0].id).await.unwrap(),
            Some(DeliveryState::Sent)
        );
    }

    #[tokio::test]
    async fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("future.db");
        drop(SqliteStore::open(&path).unwrap());
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", 999).unwrap();
        }
        let err = SqliteStore::open(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Store);
        assert!(err.to_string().contains("999"), "{err}");
    }

    #[tokio::test]
    async fn open_fails_cleanly_on_a_bad_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = SqliteStore::open(dir.path().join("missing-dir").join("x.db")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Store);
    }
}

// --- instantiation ---

/// Instantiates every behaviour test once per backend.
async fn renewed_run_lease_keeps_the_run(b: Backend) {
    let s = b.open();
    let lease = Duration::from_secs(60);
    let run = s.start_run("csv", t(0), lease).await.unwrap().expect("run");
    // Heartbeats at t(50) and t(100) push the lease to t(160).
    assert!(s.renew_run(run.id, t(50), lease).await.unwrap());
    assert!(s.renew_run(run.id, t(100), lease).await.unwrap());
    assert!(s.start_run("csv", t(150), lease).await.unwrap().is_none());
    // Unrenewed, it is taken over once the lease ends.
    let taken = s
        .start_run("csv", t(161), lease)
        .await
        .unwrap()
        .expect("takeover");
    // The old run is no longer running: its heartbeat says so.
    assert!(!s.renew_run(run.id, t(162), lease).await.unwrap());
    assert!(s.renew_run(taken.id, t(162), lease).await.unwrap());
    assert!(!s.renew_run(9_999, t(162), lease).await.unwrap());
}

async fn large_batches_count_and_merge_every_user(b: Backend) {
    let s = b.open();
    // 200 new users (more than one multi-row statement, plus a remainder).
    let first: Vec<_> = (0..200)
        .map(|i| {
            record(
                &format!("u{i}"),
                &[("plan", "Basic"), ("n", &i.to_string())],
            )
        })
        .collect();
    let stats = s.upsert(&first).await.unwrap();
    assert_eq!((stats.users_created, stats.users_updated), (200, 0));
    // 150 of them again (merged), 70 new ones, one user twice.
    let mut second: Vec<_> = (50..270)
        .map(|i| record(&format!("u{i}"), &[("plan", "Premium")]))
        .collect();
    second.push(record("u60", &[("seats", "3")]));
    let stats = s.upsert(&second).await.unwrap();
    assert_eq!((stats.users_created, stats.users_updated), (70, 150));
    assert_eq!(
        s.get("u60").await.unwrap(),
        Some(attrs(&[("n", "60"), ("plan", "Premium"), ("seats", "3")]))
    );
    assert_eq!(
        s.get("u10").await.unwrap(),
        Some(attrs(&[("n", "10"), ("plan", "Basic")]))
    );
    assert_eq!(
        s.get("u269").await.unwrap(),
        Some(attrs(&[("plan", "Premium")]))
    );
    let premium = s.query(&Filter::eq("plan", "Premium")).await.unwrap();
    assert_eq!(premium.len(), 220);
}

macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Backend::Memory).await;
                }
            )*
        }
        #[cfg(feature = "sqlite")]
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Backend::Sqlite).await;
                }
            )*
        }
        #[cfg(feature = "sqlite")]
        mod sqlite_in_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::SqliteInMemory).await;
                }
            )*
        }
    };
}

suite!(
    enqueue_and_duplicate,
    delivery_state_of_unknown_id,
    claim_orders_by_due_time_then_id_and_respects_limit,
    expired_lease_is_reclaimed_and_stale_completion_ignored,
    outcome_sent,
    outcome_retry,
    outcome_defer,
    outcome_dead,
    outcome_parked,
    set_connected_parks_and_unparks_in_order,
    set_connected_for_unknown_destination_is_listed,
    dead_letters_oldest_first_and_replay,
    delivery_log_records_every_step_in_order,
    destination_stats_per_destination,
    batched_completion_applies_each_outcome,
    concurrent_claims_never_hand_out_a_delivery_twice,
    huge_limits_and_leases_are_accepted,
    identity_links_and_manual_wins,
    integrations_by_name,
    runs_never_overlap,
    abandoned_run_is_taken_over_after_lease_expiry,
    renewed_run_lease_keeps_the_run,
    installations_round_trip_and_hide_tokens,
    remember_once_respects_expiry,
    attributes_upsert_merges_and_counts,
    large_batches_count_and_merge_every_user,
    attributes_query_numeric_and_text,
    attributes_query_agrees_with_filter_matches,
    attribute_cap_names_the_overflow_and_writes_nothing,
);
