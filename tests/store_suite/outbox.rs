//! Outbox behaviour: enqueue, outcomes, dead letters, the log, stats and prune.

use std::time::Duration;

use chrono::{DateTime, Utc};
use switchboard::destination::DeliveryError;
use switchboard::store::{
    ClaimedDelivery, Completion, DeliveryState, EnqueueOutcome, LogStatus, Outcome, ScopeChange,
};
use switchboard::{ErrorKind, Target};

use crate::harness::*;

pub async fn enqueue_and_duplicate(b: Backend) {
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
    assert_eq!(s.pending().await.unwrap(), 2);

    let claimed = claim_all(&s, t(5)).await;
    assert_eq!(claimed.len(), 2, "a duplicate must not add deliveries");
    for c in &claimed {
        assert_eq!(*c.event, e, "the event round-trips unchanged");
        assert_eq!(c.attempt, 1, "the first claim is attempt 1");
        assert_eq!(c.scope_epoch, 0, "no recorded scope state");
        let log = s.delivery_log(c.id).await.unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].status, LogStatus::Queued);
        assert_eq!(log[0].attempt, 0);
        assert_eq!(log[0].at, t(0));
        assert_eq!(log[0].delivery_id, c.id);
        assert_eq!(log[0].detail, None);
    }
    let mut got: Vec<(String, String, Target, String, String)> = claimed
        .iter()
        .map(|c| {
            (
                c.route.clone(),
                c.destination.clone(),
                c.target.clone(),
                c.scope.clone(),
                c.key.clone(),
            )
        })
        .collect();
    got.sort_by(|a, b| a.1.cmp(&b.1));
    let expected: Vec<(String, String, Target, String, String)> =
        [to("email", Target::channel("#general")), dm("slack")]
            .into_iter()
            .map(|d| (d.route, d.destination, d.target, d.scope, d.key))
            .collect();
    assert_eq!(
        got, expected,
        "route, destination, target, scope and key round-trip"
    );
    let stats = s.destination_stats().await.unwrap();
    assert!(!stats.iter().any(|d| d.destination == "teams"));
}

/// Event ids are unique per tenant: two tenants may use the same id.
pub async fn event_ids_are_per_tenant(b: Backend) {
    let s = b.open();
    let a = s
        .enqueue(&event_in("acme", "order-1"), &[dm("slack")], t(0))
        .await
        .unwrap();
    let b2 = s
        .enqueue(
            &event_in("globex", "order-1"),
            &[keyed("slack", Target::SubjectDm, "globex/slack/u1")],
            t(0),
        )
        .await
        .unwrap();
    assert_eq!(a, EnqueueOutcome::Accepted { deliveries: 1 });
    assert_eq!(b2, EnqueueOutcome::Accepted { deliveries: 1 });
    assert_eq!(
        s.enqueue(&event_in("acme", "order-1"), &[dm("slack")], t(1))
            .await
            .unwrap(),
        EnqueueOutcome::Duplicate
    );
    let mut tenants: Vec<String> = claim_all(&s, t(1))
        .await
        .iter()
        .map(|c| c.event.tenant.to_string())
        .collect();
    tenants.sort();
    assert_eq!(tenants, ["acme", "globex"]);
}

pub async fn delivery_state_of_unknown_id(b: Backend) {
    let s = b.open();
    assert_eq!(s.delivery_state(12345).await.unwrap(), None);
    assert!(s.delivery_log(12345).await.unwrap().is_empty());
    assert_eq!(s.next_due().await.unwrap(), None);
    assert_eq!(s.pending().await.unwrap(), 0);
    assert!(s.claim(t(0), LEASE, 10).await.unwrap().is_empty());
    assert!(s.claim(t(0), LEASE, 0).await.unwrap().is_empty());
    s.complete(&[], t(0)).await.unwrap();
    assert_eq!(s.renew(&[(12345, 1)], t(0), LEASE).await.unwrap(), 0);
    s.release(&[(12345, 1)], t(0)).await.unwrap();
    assert!(s.scopes().await.unwrap().is_empty());
}

pub async fn outcome_sent(b: Backend) {
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
    assert_eq!(s.pending().await.unwrap(), 0);
    assert!(claim_all(&s, t(1000)).await.is_empty());
}

pub async fn outcome_retry(b: Backend) {
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
    assert_eq!(again.attempt, 2, "a retry counts as an attempt");

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

pub async fn outcome_defer(b: Backend) {
    let s = b.open();
    enqueue_one(&s, "e", "slack", t(0)).await;
    let c = claim_one(&s, t(1)).await;
    complete(&s, &c, Outcome::Defer { until: t(20) }, t(2)).await;
    assert_eq!(state(&s, c.id).await, DeliveryState::Queued);
    assert_eq!(s.next_due().await.unwrap(), Some(t(20)));
    assert!(s.claim(t(19), LEASE, 10).await.unwrap().is_empty());
    let again = claim_one(&s, t(20)).await;
    assert_eq!(again.attempt, 1, "a deferral is not an attempt");
    assert_eq!(
        statuses(&s, c.id).await,
        [(LogStatus::Queued, 0)],
        "no log entry"
    );
    let stats = s.destination_stats().await.unwrap();
    assert_eq!(stats[0].last_error, None);
}

pub async fn outcome_dead(b: Backend) {
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
    let dead = s.dead_letters(None, 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].id, claimed[0].id);
    assert_eq!(dead[0].attempts, 1, "attempted: the claim counts");
    assert_eq!(dead[0].error, error);
    assert_eq!(dead[0].died_at, t(2));
    assert_eq!(dead[0].tenant, default_tenant());
    assert_eq!(
        dead[1].attempts, 0,
        "not attempted: the claim is given back"
    );
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
    assert_eq!(s.pending().await.unwrap(), 0);
}

pub async fn dead_letters_oldest_first_and_replay(b: Backend) {
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
    let dead = s.dead_letters(None, 10).await.unwrap();
    let order: Vec<&str> = dead.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(order, ["d2", "d3", "d1"], "oldest first");
    assert_eq!(s.dead_letters(None, 2).await.unwrap().len(), 2);
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
    assert_eq!(s.dead_letters(None, 10).await.unwrap().len(), 2);
    assert_eq!(s.next_due().await.unwrap(), Some(t(10)));
    let again = claim_one(&s, t(10)).await;
    assert_eq!(again.id, d2.id);
    assert_eq!(again.attempt, 1, "replay resets attempts");

    // Not a dead letter (in flight now) / unknown id: NotFound.
    let err = s.replay(d2.id, t(11)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = s.replay(987_654, t(11)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let stats = s.destination_stats().await.unwrap();
    assert_eq!((stats[0].dead, stats[0].queued), (2, 1));
}

pub async fn dead_letters_filter_by_tenant(b: Backend) {
    let s = b.open();
    enqueue_in(&s, "acme", "a1", "slack", t(0)).await;
    enqueue_in(&s, "globex", "g1", "slack", t(0)).await;
    enqueue_in(&s, "acme", "a2", "slack", t(0)).await;
    for (i, c) in claim_all(&s, t(0)).await.iter().enumerate() {
        complete(
            &s,
            c,
            Outcome::Dead {
                error: DeliveryError::permanent("no"),
                attempted: true,
            },
            t(1 + i as i64),
        )
        .await;
    }
    let names = |v: Vec<switchboard::store::DeadLetter>| {
        v.into_iter()
            .map(|d| format!("{}/{}", d.tenant, d.event_id))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(s.dead_letters(Some(&tenant("acme")), 10).await.unwrap()),
        ["acme/a1", "acme/a2"]
    );
    assert_eq!(
        names(s.dead_letters(Some(&tenant("globex")), 10).await.unwrap()),
        ["globex/g1"]
    );
    assert!(
        s.dead_letters(Some(&tenant("initech")), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.dead_letters(None, 10).await.unwrap().len(), 3);
    assert_eq!(
        names(s.dead_letters(Some(&tenant("acme")), 1).await.unwrap()),
        ["acme/a1"],
        "limit after the filter"
    );
}

pub async fn delivery_log_records_every_step_in_order(b: Backend) {
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
    assert_eq!(c.attempt, 3);
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

pub async fn destination_stats_per_destination(b: Backend) {
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
    let disconnect = ScopeChange::Disconnect {
        reason: "smtp auth failed".to_owned(),
        epoch: None,
    };
    assert_eq!(
        s.set_scope(&default_tenant(), "email", disconnect, t(5))
            .await
            .unwrap(),
        1
    );

    let stats = s.destination_stats().await.unwrap();
    let names: Vec<&str> = stats.iter().map(|d| d.destination.as_str()).collect();
    assert_eq!(names, ["email", "slack", "teams"], "sorted by name");
    let (email, slack, teams) = (&stats[0], &stats[1], &stats[2]);
    assert!(stats.iter().all(|d| d.tenant == default_tenant()));
    assert_eq!(slack.scope, "slack");

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

    assert_eq!(
        (email.queued, email.parked, email.dead, email.sent),
        (0, 1, 0, 0)
    );
    assert_eq!(email.last_error, None);
    assert_eq!(s.pending().await.unwrap(), 3);
}

/// Stats are per (tenant, destination): one tenant's successes and errors are
/// not another's.
pub async fn destination_stats_per_tenant(b: Backend) {
    let s = b.open();
    enqueue_in(&s, "acme", "a1", "slack", t(0)).await;
    enqueue_in(&s, "acme", "a2", "slack", t(0)).await;
    enqueue_in(&s, "globex", "g1", "slack", t(0)).await;
    let claimed = claim_all(&s, t(0)).await;
    for c in &claimed {
        let outcome = if c.event.tenant.as_str() == "acme" {
            sent("ok")
        } else {
            Outcome::Retry {
                at: t(60),
                error: DeliveryError::temporary("globex is down"),
            }
        };
        complete(&s, c, outcome, t(5)).await;
    }
    let stats = s.destination_stats().await.unwrap();
    let rows: Vec<(String, &str, u64, u64)> = stats
        .iter()
        .map(|d| {
            (
                d.tenant.to_string(),
                d.destination.as_str(),
                d.sent,
                d.queued,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("acme".to_owned(), "slack", 2, 0),
            ("globex".to_owned(), "slack", 0, 1)
        ],
        "sorted by tenant then destination"
    );
    let (acme, globex) = (&stats[0], &stats[1]);
    assert_eq!(acme.last_success_at, Some(t(5)));
    assert_eq!(acme.last_error, None);
    assert_eq!(globex.last_success_at, None);
    assert!(
        globex
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("globex is down")
    );
    assert_eq!(globex.last_error_at, Some(t(5)));
}

pub async fn batched_completion_applies_each_outcome(b: Backend) {
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
    let mut states = Vec::new();
    for c in &claimed {
        states.push(state(&s, c.id).await);
    }
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

/// Prune removes delivered deliveries older than the cutoff (and their log),
/// then events with no delivery left; dead letters and pending ones stay.
pub async fn prune_removes_old_sent_and_keeps_the_rest(b: Backend) {
    let s = b.open();
    enqueue_one(&s, "old-sent", "slack", t(0)).await;
    enqueue_one(&s, "new-sent", "slack", t(0)).await;
    enqueue_one(&s, "dead", "slack", t(0)).await;
    enqueue_one(&s, "queued", "slack", t(0)).await;
    enqueue_one(&s, "flight", "slack", t(0)).await;
    // One event with two deliveries: one sent long ago, one still pending.
    let mixed = s
        .enqueue(
            &event("mixed"),
            &[
                keyed("slack", Target::SubjectDm, "mixed/slack"),
                keyed("teams", Target::SubjectDm, "mixed/teams"),
            ],
            t(0),
        )
        .await
        .unwrap();
    assert_eq!(mixed, EnqueueOutcome::Accepted { deliveries: 2 });
    let claimed = claim_all(&s, t(0)).await;
    assert_eq!(claimed.len(), 7);
    let by = |id: &str, dest: &str| -> ClaimedDelivery {
        claimed
            .iter()
            .find(|c| c.event.id == id && c.destination == dest)
            .expect(id)
            .clone()
    };
    complete(&s, &by("old-sent", "slack"), sent("1"), t(10)).await;
    complete(&s, &by("mixed", "slack"), sent("2"), t(10)).await;
    complete(&s, &by("new-sent", "slack"), sent("3"), t(500)).await;
    complete(
        &s,
        &by("dead", "slack"),
        Outcome::Dead {
            error: DeliveryError::permanent("gone"),
            attempted: true,
        },
        t(10),
    )
    .await;
    complete(
        &s,
        &by("queued", "slack"),
        Outcome::Defer { until: t(20) },
        t(10),
    )
    .await;
    complete(
        &s,
        &by("mixed", "teams"),
        Outcome::Defer { until: t(20) },
        t(10),
    )
    .await;

    let stats = s.prune(t(100)).await.unwrap();
    assert_eq!(stats.deliveries, 2, "old-sent and mixed/slack");
    assert_eq!(stats.events, 1, "old-sent only: mixed still has a delivery");
    assert_eq!(
        s.delivery_state(by("old-sent", "slack").id).await.unwrap(),
        None
    );
    assert!(
        s.delivery_log(by("old-sent", "slack").id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.delivery_state(by("mixed", "slack").id).await.unwrap(),
        None
    );
    assert_eq!(
        state(&s, by("new-sent", "slack").id).await,
        DeliveryState::Sent
    );
    assert_eq!(state(&s, by("dead", "slack").id).await, DeliveryState::Dead);
    assert_eq!(
        state(&s, by("queued", "slack").id).await,
        DeliveryState::Queued
    );
    assert_eq!(
        state(&s, by("flight", "slack").id).await,
        DeliveryState::InFlight
    );
    assert_eq!(
        state(&s, by("mixed", "teams").id).await,
        DeliveryState::Queued
    );
    assert_eq!(s.dead_letters(None, 10).await.unwrap().len(), 1);
    assert_eq!(s.pending().await.unwrap(), 3);

    // The pruned event's id is forgotten; the others are still known.
    assert_eq!(
        s.enqueue(&event("mixed"), &[dm("slack")], t(600))
            .await
            .unwrap(),
        EnqueueOutcome::Duplicate
    );
    assert_eq!(
        s.enqueue(&event("new-sent"), &[dm("slack")], t(600))
            .await
            .unwrap(),
        EnqueueOutcome::Duplicate
    );
    assert_eq!(
        s.enqueue(&event("old-sent"), &[dm("slack")], t(600))
            .await
            .unwrap(),
        EnqueueOutcome::Accepted { deliveries: 1 }
    );
    // Nothing else is old enough now.
    assert_eq!(s.prune(t(100)).await.unwrap().deliveries, 0);
}
