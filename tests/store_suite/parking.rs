//! Parking per (tenant, scope): disconnect, enqueue while disconnected, reconnect in order, and epochs fencing late answers.

use switchboard::destination::DeliveryError;
use switchboard::store::{DeliveryState, LogStatus, Outcome, ScopeChange};

use crate::harness::*;

fn disconnect(reason: &str) -> ScopeChange {
    ScopeChange::Disconnect {
        reason: reason.to_owned(),
        epoch: None,
    }
}

pub async fn set_scope_parks_and_unparks_in_order(b: Backend) {
    let s = b.open();
    let tn = default_tenant();
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
        .set_scope(&tn, "slack", disconnect("token_revoked"), t(3))
        .await
        .unwrap();
    assert_eq!(
        parked, 2,
        "queued ones only; the in-flight one is left alone"
    );
    let scopes = s.scopes().await.unwrap();
    assert_eq!(scopes.len(), 1);
    assert_eq!(
        (
            scopes[0].tenant.as_str(),
            scopes[0].scope.as_str(),
            scopes[0].connected,
            scopes[0].reason.as_deref(),
            scopes[0].since,
        ),
        ("default", "slack", false, Some("token_revoked"), t(3))
    );
    assert_eq!(state(&s, s1.id).await, DeliveryState::InFlight);
    assert_eq!(state(&s, s2.id).await, DeliveryState::Parked);
    let s2_log = s.delivery_log(s2.id).await.unwrap();
    let last = s2_log.last().expect("log");
    assert_eq!(last.status, LogStatus::Parked);
    assert_eq!(last.at, t(3));
    assert_eq!(last.attempt, 0, "LogEntry::attempt is 0 for park entries");
    assert_eq!(last.detail.as_deref(), Some("token_revoked"));

    let stats = s.destination_stats().await.unwrap();
    let slack = stats
        .iter()
        .find(|d| d.destination == "slack")
        .expect("slack");
    assert_eq!(slack.parked, 2);
    assert_eq!(slack.queued, 1, "the in-flight one");
    assert_eq!(s.pending().await.unwrap(), 2, "s1 and t1");

    // Only teams is claimable while slack is parked.
    let due = claim_all(&s, t(10)).await;
    assert_eq!(ids(&due), [t1.id]);

    // Disconnecting twice parks nothing more.
    assert_eq!(
        s.set_scope(&tn, "slack", disconnect("again"), t(4))
            .await
            .unwrap(),
        0
    );

    let requeued = s
        .set_scope(&tn, "slack", ScopeChange::Connect, t(20))
        .await
        .unwrap();
    assert_eq!(requeued, 2);
    let scopes = s.scopes().await.unwrap();
    assert!(scopes[0].connected);
    assert_eq!(scopes[0].reason, None);
    assert_eq!(scopes[0].epoch, 1, "a reconnect bumps the epoch");
    assert_eq!(state(&s, s2.id).await, DeliveryState::Queued);
    let last = s.delivery_log(s2.id).await.unwrap().pop().expect("log");
    assert_eq!((last.status, last.at), (LogStatus::Queued, t(20)));
    let stats = s.destination_stats().await.unwrap();
    let slack = stats
        .iter()
        .find(|d| d.destination == "slack")
        .expect("slack");
    assert_eq!(slack.parked, 0);

    // All due at t(20), in original id order (s2 before s3 although s2 was deferred).
    let due = claim_all(&s, t(20)).await;
    let order: Vec<&str> = due.iter().map(|c| c.event.id.as_str()).collect();
    assert_eq!(order, ["s2", "s3"]);
    assert!(
        due.iter().all(|c| c.scope_epoch == 1),
        "claims carry the scope's epoch"
    );
    assert_eq!(
        s.set_scope(&tn, "slack", ScopeChange::Connect, t(21))
            .await
            .unwrap(),
        0
    );
    assert_eq!(s.scopes().await.unwrap()[0].epoch, 2, "every connect bumps");
}

/// A reconnect re-queues a key's parked deliveries in their original order,
/// and they still go out one at a time.
pub async fn connect_requeues_a_key_in_original_order(b: Backend) {
    let s = b.open();
    let tn = default_tenant();
    for id in ["k1", "k2", "k3"] {
        enqueue_on_key(&s, id, "slack", "one-key", t(0)).await;
    }
    s.set_scope(&tn, "slack", disconnect("revoked"), t(1))
        .await
        .unwrap();
    assert_eq!(
        s.set_scope(&tn, "slack", ScopeChange::Connect, t(2))
            .await
            .unwrap(),
        3
    );
    let mut order = Vec::new();
    for step in 0..4 {
        let batch = claim_all(&s, t(3 + step)).await;
        assert!(batch.len() <= 1);
        for c in &batch {
            order.push(c.event.id.clone());
            complete(&s, c, sent("x"), t(3 + step)).await;
        }
    }
    assert_eq!(order, ["k1", "k2", "k3"]);
}

pub async fn set_scope_for_unknown_scope_is_listed(b: Backend) {
    let s = b.open();
    assert_eq!(
        s.set_scope(&tenant("acme"), "zendesk", disconnect("uninstalled"), t(0))
            .await
            .unwrap(),
        0
    );
    let scopes = s.scopes().await.unwrap();
    assert_eq!(scopes.len(), 1);
    assert_eq!(scopes[0].tenant, tenant("acme"));
    assert_eq!(scopes[0].scope, "zendesk");
    assert!(!scopes[0].connected);
    assert_eq!(scopes[0].epoch, 0);
    assert!(s.destination_stats().await.unwrap().is_empty());
}

/// Disconnecting tenant B's scope parks only B's deliveries.
pub async fn parking_is_per_tenant_and_scope(b: Backend) {
    let s = b.open();
    enqueue_in(&s, "acme", "a1", "slack", t(0)).await;
    enqueue_in(&s, "globex", "g1", "slack", t(0)).await;
    enqueue_in(&s, "globex", "g2", "teams", t(0)).await;
    let parked = s
        .set_scope(
            &tenant("globex"),
            "slack",
            disconnect("token_revoked"),
            t(1),
        )
        .await
        .unwrap();
    assert_eq!(parked, 1, "globex's slack delivery only");
    let due = claim_all(&s, t(2)).await;
    let mut got: Vec<String> = due
        .iter()
        .map(|c| format!("{}/{}", c.event.tenant, c.event.id))
        .collect();
    got.sort();
    assert_eq!(got, ["acme/a1", "globex/g2"]);
    let scopes = s.scopes().await.unwrap();
    assert_eq!(scopes.len(), 1);
    assert_eq!(
        (scopes[0].tenant.as_str(), scopes[0].scope.as_str()),
        ("globex", "slack")
    );
    // New deliveries of acme's slack are queued, globex's are parked.
    enqueue_in(&s, "acme", "a2", "slack", t(3)).await;
    enqueue_in(&s, "globex", "g3", "slack", t(3)).await;
    let due = claim_all(&s, t(3)).await;
    assert_eq!(event_ids(&due), ["a2"]);
}

/// A delivery enqueued into a disconnected scope is created parked.
pub async fn enqueue_into_disconnected_scope_is_parked(b: Backend) {
    let s = b.open();
    let tn = default_tenant();
    s.set_scope(&tn, "slack", disconnect("not connected"), t(0))
        .await
        .unwrap();
    let outcome = s
        .enqueue(&event("e"), &[dm("slack"), dm("teams")], t(1))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        switchboard::store::EnqueueOutcome::Accepted { deliveries: 2 },
        "parked ones count as created"
    );
    let due = claim_all(&s, t(1)).await;
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].destination, "teams");
    assert_eq!(s.pending().await.unwrap(), 1);
    let stats = s.destination_stats().await.unwrap();
    let slack = stats
        .iter()
        .find(|d| d.destination == "slack")
        .expect("slack");
    assert_eq!((slack.parked, slack.queued), (1, 0));

    // Reconnecting releases it.
    assert_eq!(
        s.set_scope(&tn, "slack", ScopeChange::Connect, t(2))
            .await
            .unwrap(),
        1
    );
    let c = claim_one(&s, t(2)).await;
    assert_eq!(c.destination, "slack");
    let log = s.delivery_log(c.id).await.unwrap();
    assert!(
        log.iter()
            .any(|e| e.status == LogStatus::Parked && e.at == t(1) && e.attempt == 0),
        "created with a parked entry: {log:?}"
    );
    assert!(log.iter().all(|e| e.status != LogStatus::Sent), "{log:?}");
}

/// `Parked` with the current epoch parks the delivery, marks the scope
/// disconnected and parks the scope's queued deliveries.
pub async fn parked_outcome_disconnects_its_scope(b: Backend) {
    let s = b.open();
    enqueue_one(&s, "p1", "slack", t(0)).await;
    let first = claim_one(&s, t(0)).await;
    assert_eq!(first.event.id, "p1");
    complete(
        &s,
        &first,
        Outcome::Retry {
            at: t(5),
            error: DeliveryError::temporary("timeout"),
        },
        t(1),
    )
    .await;
    enqueue_one(&s, "p2", "slack", t(5)).await;
    enqueue_one(&s, "other", "teams", t(5)).await;
    let c = claim_one(&s, t(5)).await;
    assert_eq!((c.event.id.as_str(), c.attempt), ("p1", 2));
    complete(
        &s,
        &c,
        Outcome::Parked {
            reason: "token_revoked".to_owned(),
            epoch: c.scope_epoch,
        },
        t(6),
    )
    .await;
    assert_eq!(state(&s, c.id).await, DeliveryState::Parked);
    let last = s.delivery_log(c.id).await.unwrap().pop().expect("log");
    assert_eq!(last.status, LogStatus::Parked);
    assert_eq!(last.detail.as_deref(), Some("token_revoked"));
    assert_eq!(last.attempt, 0, "LogEntry::attempt is 0 for park entries");
    let scopes = s.scopes().await.unwrap();
    assert_eq!(scopes.len(), 1);
    assert_eq!(scopes[0].scope, "slack");
    assert!(!scopes[0].connected);
    assert_eq!(scopes[0].reason.as_deref(), Some("token_revoked"));
    // p2 (queued, same scope) is parked too; teams is untouched.
    let due = claim_all(&s, t(7)).await;
    assert_eq!(event_ids(&due), ["other"]);
    let stats = s.destination_stats().await.unwrap();
    let slack = stats
        .iter()
        .find(|d| d.destination == "slack")
        .expect("slack");
    assert_eq!(slack.parked, 2);

    // Reconnecting re-queues both with their attempts intact.
    assert_eq!(
        s.set_scope(&default_tenant(), "slack", ScopeChange::Connect, t(8))
            .await
            .unwrap(),
        2
    );
    let again = claim_all(&s, t(8)).await;
    assert_eq!(event_ids(&again), ["p1", "p2"]);
    assert_eq!(again[0].attempt, 2, "parking was not an attempt");
    assert_eq!(again[1].attempt, 1);
}

/// A `Parked` answer from before a reconnect re-queues the delivery (due now)
/// and leaves the scope connected.
pub async fn parked_with_old_epoch_requeues_and_leaves_scope_connected(b: Backend) {
    let s = b.open();
    let tn = default_tenant();
    enqueue_one(&s, "late", "slack", t(0)).await;
    enqueue_one(&s, "queued", "slack", t(0)).await;
    let claimed = claim_all(&s, t(0)).await;
    let late = claimed
        .iter()
        .find(|c| c.event.id == "late")
        .expect("late")
        .clone();
    let queued = claimed
        .iter()
        .find(|c| c.event.id == "queued")
        .expect("queued")
        .clone();
    complete(&s, &queued, Outcome::Defer { until: t(1) }, t(0)).await;
    assert_eq!(late.scope_epoch, 0);
    // Reconnected while the worker was out.
    s.set_scope(&tn, "slack", ScopeChange::Connect, t(1))
        .await
        .unwrap();
    complete(
        &s,
        &late,
        Outcome::Parked {
            reason: "token_revoked".to_owned(),
            epoch: late.scope_epoch,
        },
        t(2),
    )
    .await;
    assert_eq!(state(&s, late.id).await, DeliveryState::Queued);
    let scopes = s.scopes().await.unwrap();
    assert!(scopes[0].connected, "the late answer must not disconnect");
    assert_eq!(scopes[0].epoch, 1);
    assert_eq!(state(&s, queued.id).await, DeliveryState::Queued);
    let due = claim_all(&s, t(2)).await;
    let mut got = event_ids(&due);
    got.sort();
    assert_eq!(got, ["late", "queued"], "re-queued due now");
    let late_again = due.iter().find(|c| c.event.id == "late").expect("late");
    assert_eq!(late_again.attempt, 1, "the parked claim was given back");
    assert_eq!(late_again.scope_epoch, 1);
}

/// `Disconnect` fenced with a stale epoch does nothing.
pub async fn disconnect_with_stale_epoch_is_a_no_op(b: Backend) {
    let s = b.open();
    let tn = default_tenant();
    enqueue_one(&s, "e", "slack", t(0)).await;
    let c = claim_one(&s, t(0)).await;
    complete(&s, &c, Outcome::Defer { until: t(0) }, t(0)).await;
    s.set_scope(&tn, "slack", ScopeChange::Connect, t(1))
        .await
        .unwrap();
    let stale = ScopeChange::Disconnect {
        reason: "late 401".to_owned(),
        epoch: Some(c.scope_epoch),
    };
    assert_eq!(s.set_scope(&tn, "slack", stale, t(2)).await.unwrap(), 0);
    let scopes = s.scopes().await.unwrap();
    assert!(scopes[0].connected);
    assert_eq!(scopes[0].reason, None);
    assert_eq!(state(&s, c.id).await, DeliveryState::Queued);

    // With the current epoch it applies.
    let current = ScopeChange::Disconnect {
        reason: "401".to_owned(),
        epoch: Some(1),
    };
    assert_eq!(s.set_scope(&tn, "slack", current, t(3)).await.unwrap(), 1);
    assert_eq!(state(&s, c.id).await, DeliveryState::Parked);
    assert!(!s.scopes().await.unwrap()[0].connected);
}
