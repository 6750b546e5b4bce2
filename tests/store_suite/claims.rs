//! Claims: due order, head-of-key, leases (expiry, renew, release), attempts counted at claim and given back, concurrency and extreme arguments.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use switchboard::destination::{DeliveryError, DeliveryId};
use switchboard::store::{DeliveryState, LogStatus, Outcome, ScopeChange};

use crate::harness::*;

pub async fn claim_orders_by_due_time_then_id_and_respects_limit(b: Backend) {
    let s = b.open();
    // Enqueued out of due order; two share a due time. Each on its own key.
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
    assert_eq!(event_ids(&first), ["a", "b1"]);
    assert_eq!(
        event_ids(&second),
        ["b2", "c"],
        "limit respected, not-yet-due excluded"
    );
    assert!(first[1].id < second[0].id, "same due time: lower id first");

    for c in first.iter().chain(&second) {
        assert_eq!(state(&s, c.id).await, DeliveryState::InFlight);
    }
    assert_eq!(s.pending().await.unwrap(), 5, "in flight counts as pending");
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
    assert_eq!(later[0].attempt, 2);
}

/// At most one delivery per key is out, the oldest first; a retrying or
/// deferred head holds back its key while other keys flow.
pub async fn head_of_key_claims_one_per_key_in_order(b: Backend) {
    let s = b.open();
    enqueue_on_key(&s, "a1", "slack", "k-a", t(0)).await;
    enqueue_on_key(&s, "a2", "slack", "k-a", t(0)).await;
    enqueue_on_key(&s, "a3", "slack", "k-a", t(0)).await;
    enqueue_on_key(&s, "b1", "slack", "k-b", t(1)).await;
    enqueue_on_key(&s, "b2", "slack", "k-b", t(1)).await;

    let first = claim_all(&s, t(2)).await;
    assert_eq!(event_ids(&first), ["a1", "b1"], "one per key, the oldest");
    assert_eq!(first[0].key, "k-a");
    assert!(
        claim_all(&s, t(2)).await.is_empty(),
        "the rest wait behind their in-flight heads"
    );

    // a1 fails and retries at t(50): k-a is held back, k-b keeps flowing.
    complete(
        &s,
        &first[0],
        Outcome::Retry {
            at: t(50),
            error: DeliveryError::temporary("503"),
        },
        t(3),
    )
    .await;
    complete(&s, &first[1], sent("b1"), t(3)).await;
    let next = claim_all(&s, t(4)).await;
    assert_eq!(
        event_ids(&next),
        ["b2"],
        "a2 must not overtake the retrying a1"
    );
    complete(&s, &next[0], sent("b2"), t(5)).await;
    assert!(claim_all(&s, t(49)).await.is_empty());
    assert_eq!(s.next_due().await.unwrap(), Some(t(50)));

    let retried = claim_all(&s, t(50)).await;
    assert_eq!(event_ids(&retried), ["a1"]);
    assert_eq!(retried[0].attempt, 2);
    // A deferred head holds its key back too.
    complete(&s, &retried[0], Outcome::Defer { until: t(60) }, t(51)).await;
    assert!(claim_all(&s, t(55)).await.is_empty());
    let again = claim_one(&s, t(60)).await;
    assert_eq!((again.event.id.as_str(), again.attempt), ("a1", 2));
    complete(&s, &again, sent("a1"), t(61)).await;

    // Then the rest of k-a, strictly one at a time and in order.
    let mut order = Vec::new();
    for step in 0..3 {
        let batch = claim_all(&s, t(70 + step)).await;
        assert!(batch.len() <= 1, "one per key: {:?}", event_ids(&batch));
        for c in &batch {
            order.push(c.event.id.clone());
            complete(&s, c, sent("x"), t(70 + step)).await;
        }
    }
    assert_eq!(order, ["a2", "a3"]);
    assert_eq!(s.pending().await.unwrap(), 0);
}

/// A dead head lets the next delivery of its key go.
pub async fn dead_head_releases_its_key(b: Backend) {
    let s = b.open();
    enqueue_on_key(&s, "x1", "slack", "k", t(0)).await;
    enqueue_on_key(&s, "x2", "slack", "k", t(0)).await;
    let head = claim_one(&s, t(0)).await;
    assert_eq!(head.event.id, "x1");
    complete(
        &s,
        &head,
        Outcome::Dead {
            error: DeliveryError::permanent("channel_not_found"),
            attempted: true,
        },
        t(1),
    )
    .await;
    let next = claim_one(&s, t(1)).await;
    assert_eq!(next.event.id, "x2");
}

pub async fn expired_lease_is_reclaimed_and_stale_completion_ignored(b: Backend) {
    let s = b.open();
    enqueue_one(&s, "e", "slack", t(0)).await;
    let first = claim_one(&s, t(0)).await;
    assert!(s.claim(t(29), LEASE, 10).await.unwrap().is_empty());
    assert_eq!(s.next_due().await.unwrap(), Some(t(30)));

    // The worker died; after the lease expires someone else claims it.
    let second = claim_one(&s, t(31)).await;
    assert_eq!(second.id, first.id);
    assert_ne!(second.lease, first.lease, "a fresh lease token per claim");
    assert_eq!(second.attempt, 2, "the crashed claim counted");

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
        [(LogStatus::Queued, 0), (LogStatus::Sent, 2)]
    );
    assert_eq!(s.next_due().await.unwrap(), None);
}

/// A worker that crashes on every claim still burns attempts: each expired
/// lease's reclaim is the next attempt.
pub async fn repeated_lease_expiry_keeps_increasing_attempt(b: Backend) {
    let s = b.open();
    enqueue_one(&s, "crashy", "slack", t(0)).await;
    let mut now = 0;
    for expected in 1..=5 {
        let c = claim_one(&s, t(now)).await;
        assert_eq!(c.attempt, expected);
        now += 31;
    }
}

pub async fn renew_extends_only_held_leases(b: Backend) {
    let s = b.open();
    enqueue_one(&s, "e", "slack", t(0)).await;
    let c = claim_one(&s, t(0)).await;
    assert_eq!(
        s.renew(
            &[(c.id, c.lease), (c.id, c.lease + 99), (777, 1)],
            t(20),
            LEASE
        )
        .await
        .unwrap(),
        1,
        "only the matching claim is held"
    );
    assert_eq!(s.next_due().await.unwrap(), Some(t(50)));
    assert!(claim_all(&s, t(31)).await.is_empty(), "renewed past t(30)");
    let again = claim_one(&s, t(50)).await;
    assert_eq!(again.id, c.id);
    // The old claim's token no longer renews.
    assert_eq!(s.renew(&[(c.id, c.lease)], t(51), LEASE).await.unwrap(), 0);
    assert_eq!(
        s.renew(&[(again.id, again.lease)], t(51), LEASE)
            .await
            .unwrap(),
        1
    );
}

pub async fn release_gives_claims_back_unattempted(b: Backend) {
    let s = b.open();
    enqueue_one(&s, "e1", "slack", t(0)).await;
    enqueue_one(&s, "e2", "slack", t(0)).await;
    let claimed = claim_all(&s, t(0)).await;
    assert_eq!(claimed.len(), 2);
    // e1 released; e2's release has a stale token and is ignored.
    s.release(
        &[
            (claimed[0].id, claimed[0].lease),
            (claimed[1].id, claimed[1].lease + 1000),
        ],
        t(5),
    )
    .await
    .unwrap();
    assert_eq!(state(&s, claimed[0].id).await, DeliveryState::Queued);
    assert_eq!(state(&s, claimed[1].id).await, DeliveryState::InFlight);
    let again = claim_one(&s, t(5)).await;
    assert_eq!(again.id, claimed[0].id, "due at once");
    assert_eq!(again.attempt, 1, "the released claim was given back");
}

/// Attempts are counted at claim; Defer, Snooze, Parked and release give the
/// claim's attempt back, Retry does not.
pub async fn attempts_counted_at_claim_and_given_back(b: Backend) {
    let s = b.open();
    enqueue_one(&s, "e", "slack", t(0)).await;
    let c = claim_one(&s, t(0)).await;
    assert_eq!(c.attempt, 1);
    complete(&s, &c, Outcome::Defer { until: t(1) }, t(0)).await;

    let c = claim_one(&s, t(1)).await;
    assert_eq!(c.attempt, 1, "defer gave it back");
    let throttled = DeliveryError::rate_limited(Some(Duration::from_secs(9)), "ratelimited");
    complete(
        &s,
        &c,
        Outcome::Snooze {
            until: t(10),
            error: throttled,
        },
        t(1),
    )
    .await;
    assert_eq!(state(&s, c.id).await, DeliveryState::Queued);
    assert!(claim_all(&s, t(9)).await.is_empty(), "snoozed until t(10)");

    let c = claim_one(&s, t(10)).await;
    assert_eq!(c.attempt, 1, "snooze gave it back");
    complete(
        &s,
        &c,
        Outcome::Parked {
            reason: "not connected".to_owned(),
            epoch: c.scope_epoch,
        },
        t(10),
    )
    .await;
    assert_eq!(state(&s, c.id).await, DeliveryState::Parked);
    assert_eq!(
        s.set_scope(&default_tenant(), "slack", ScopeChange::Connect, t(11))
            .await
            .unwrap(),
        1
    );

    let c = claim_one(&s, t(11)).await;
    assert_eq!(c.attempt, 1, "parking gave it back");
    s.release(&[(c.id, c.lease)], t(12)).await.unwrap();

    let c = claim_one(&s, t(12)).await;
    assert_eq!(c.attempt, 1, "release gave it back");
    complete(
        &s,
        &c,
        Outcome::Retry {
            at: t(13),
            error: DeliveryError::temporary("503"),
        },
        t(12),
    )
    .await;
    let c = claim_one(&s, t(13)).await;
    assert_eq!(c.attempt, 2, "a retry was an attempt");

    // The snooze is logged as a failure (with the error), the defer not at all.
    let log = s.delivery_log(c.id).await.unwrap();
    let failed: Vec<&str> = log
        .iter()
        .filter(|e| e.status == LogStatus::Failed)
        .filter_map(|e| e.detail.as_deref())
        .collect();
    assert_eq!(failed.len(), 2, "{log:?}");
    assert!(failed[0].contains("ratelimited"), "{failed:?}");
    assert!(failed[1].contains("503"), "{failed:?}");
}

pub async fn concurrent_claims_never_hand_out_a_delivery_twice(b: Backend) {
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
pub async fn huge_limits_and_leases_are_accepted(b: Backend) {
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
    assert_eq!(
        s.renew(&[(claimed[0].id, claimed[0].lease)], t(1), Duration::MAX)
            .await
            .unwrap(),
        1
    );
    let tn = default_tenant();
    let run = s.start_run(&tn, "csv", t(0), Duration::MAX).await.unwrap();
    assert!(run.is_some());
    assert!(
        s.start_run(&tn, "csv", t(1_000_000_000), LEASE)
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.dead_letters(None, usize::MAX).await.unwrap().is_empty());
    assert_eq!(s.runs(&tn, "csv", usize::MAX).await.unwrap().len(), 1);
}
