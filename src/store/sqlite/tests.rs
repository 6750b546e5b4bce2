//! Unit tests of `SqliteStore` internals: the schema-1 migration, per-row decoding at claim, key heads, parking fences, legacy installations.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::params;
use secrecy::{ExposeSecret, SecretString};

use super::*;
use crate::destination::{DeliveryError, Receipt};
use crate::event::Event;
use crate::message::Target;
use crate::store::{
    ClaimedDelivery, Completion, ConnectionStore, EnqueueOutcome, LinkStore, NewDelivery,
    OutboxStore, Outcome, ScopeChange,
};
use crate::tenant::{ConnectionKey, TenantId};

const LEASE: Duration = Duration::from_secs(30);

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
}

fn event(id: &str) -> Event {
    Event::builder(id, "test.kind").build().unwrap()
}

fn delivery(key: &str) -> NewDelivery {
    NewDelivery {
        route: "r".into(),
        destination: "slack".into(),
        target: Target::channel("general"),
        scope: "slack".into(),
        key: key.into(),
    }
}

fn sent(c: &ClaimedDelivery) -> Completion {
    Completion {
        id: c.id,
        lease: c.lease,
        outcome: Outcome::Sent(Receipt::default()),
    }
}

#[tokio::test]
async fn one_head_per_key_with_a_large_backlog() {
    let store = SqliteStore::open_in_memory().unwrap();
    // 20,000 behind one key, then one delivery of another key.
    for i in 0..20_000 {
        store
            .enqueue(&event(&format!("e{i}")), &[delivery("k1")], t(0))
            .await
            .unwrap();
    }
    store
        .enqueue(&event("dm"), &[delivery("k2")], t(1))
        .await
        .unwrap();
    let first = store.claim(t(2), LEASE, 10).await.unwrap();
    assert_eq!(first.len(), 2, "one per key");
    assert_eq!(first[0].key, "k1");
    assert_eq!(first[1].key, "k2");
    // The k1 head is in flight: nothing more for k1, and k2's is in flight too.
    let started = std::time::Instant::now();
    assert!(store.claim(t(3), LEASE, 10).await.unwrap().is_empty());
    eprintln!("claim behind 20k rows took {:?}", started.elapsed());
    store.complete(&[sent(&first[0])], t(3)).await.unwrap();
    let next = store.claim(t(3), LEASE, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].id, first[0].id + 1, "the next of k1, in order");
    assert_eq!(store.pending().await.unwrap(), 20_000);
    assert_eq!(
        store.next_due().await.unwrap(),
        Some(t(2) + LEASE.into_chrono())
    );
}

trait IntoChrono {
    fn into_chrono(self) -> chrono::Duration;
}
impl IntoChrono for Duration {
    fn into_chrono(self) -> chrono::Duration {
        chrono::Duration::from_std(self).unwrap()
    }
}

#[tokio::test]
async fn undecodable_rows_are_dead_lettered_at_claim_the_rest_claimed() {
    let store = SqliteStore::open_in_memory().unwrap();
    store
        .enqueue(&event("bad-event"), &[delivery("a")], t(0))
        .await
        .unwrap();
    store
        .enqueue(&event("bad-target"), &[delivery("b")], t(0))
        .await
        .unwrap();
    store
        .enqueue(&event("good"), &[delivery("c")], t(0))
        .await
        .unwrap();
    {
        let conn = lock(&store.inner.writer);
        conn.execute(
            "UPDATE events SET body = '{not json' WHERE id = 'bad-event'",
            [],
        )
        .unwrap();
        conn.execute(
            "UPDATE deliveries SET target = '{\"type\":\"hologram\"}' WHERE key = 'b'",
            [],
        )
        .unwrap();
    }
    let claimed = store.claim(t(1), LEASE, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].key, "c");
    let dead = store.dead_letters(None, 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert!(
        matches!(&dead[0].error, DeliveryError::Permanent { reason } if reason.contains("event")),
        "{:?}",
        dead[0].error
    );
    assert!(
        matches!(&dead[1].error, DeliveryError::Permanent { reason } if reason.contains("target"))
    );
    assert_eq!(
        dead[1].target,
        Target::ChannelId {
            id: "{\"type\":\"hologram\"}".into()
        }
    );
    assert!(store.claim(t(2), LEASE, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn late_park_after_reconnect_requeues_and_fresh_park_disconnects() {
    let store = SqliteStore::open_in_memory().unwrap();
    let tenant = TenantId::new("acme").unwrap();
    let e = Event::builder("e1", "k")
        .tenant(tenant.clone())
        .build()
        .unwrap();
    store
        .enqueue(&e, &[delivery("x"), delivery("y"), delivery("y")], t(0))
        .await
        .unwrap();
    let claimed = store.claim(t(0), LEASE, 10).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|c| c.scope_epoch == 0 && c.attempt == 1));
    // Reconnected while the workers were busy: their parks are late.
    assert_eq!(
        store
            .set_scope(&tenant, "slack", ScopeChange::Connect, t(1))
            .await
            .unwrap(),
        0
    );
    let late = Completion {
        id: claimed[0].id,
        lease: claimed[0].lease,
        outcome: Outcome::Parked {
            reason: "revoked".into(),
            epoch: 0,
        },
    };
    store.complete(&[late], t(2)).await.unwrap();
    assert_eq!(
        store.delivery_state(claimed[0].id).await.unwrap(),
        Some(DeliveryState::Queued)
    );
    let scopes = store.scopes().await.unwrap();
    assert!(scopes[0].connected);
    assert_eq!(scopes[0].epoch, 1);
    // A disconnect fenced with the old epoch does nothing.
    let fenced = ScopeChange::Disconnect {
        reason: "old".into(),
        epoch: Some(0),
    };
    assert_eq!(
        store
            .set_scope(&tenant, "slack", fenced, t(2))
            .await
            .unwrap(),
        0
    );
    assert!(store.scopes().await.unwrap()[0].connected);
    // A park from the current epoch parks the rest of the scope.
    let again = store.claim(t(3), LEASE, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 1, "the park gave its attempt back");
    assert_eq!(again[0].scope_epoch, 1);
    let park = Completion {
        id: again[0].id,
        lease: again[0].lease,
        outcome: Outcome::Parked {
            reason: "revoked".into(),
            epoch: 1,
        },
    };
    store.complete(&[park], t(4)).await.unwrap();
    let scopes = store.scopes().await.unwrap();
    assert!(!scopes[0].connected);
    assert_eq!(scopes[0].reason.as_deref(), Some("revoked"));
    // The in-flight head of y is still in flight; nothing else is claimable.
    assert!(store.claim(t(5), LEASE, 10).await.unwrap().is_empty());
    // New deliveries in the disconnected scope are parked.
    let e2 = Event::builder("e2", "k")
        .tenant(tenant.clone())
        .build()
        .unwrap();
    store.enqueue(&e2, &[delivery("z")], t(5)).await.unwrap();
    let stats = store.destination_stats().await.unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].tenant, tenant);
    assert_eq!((stats[0].queued, stats[0].parked), (1, 3));
    // Reconnect re-queues the parked ones.
    assert_eq!(
        store
            .set_scope(&tenant, "slack", ScopeChange::Connect, t(6))
            .await
            .unwrap(),
        3
    );
}

#[tokio::test]
async fn prune_removes_sent_rows_their_log_and_orphan_events() {
    let store = SqliteStore::open_in_memory().unwrap();
    for i in 0..5 {
        store
            .enqueue(
                &event(&format!("e{i}")),
                &[delivery(&format!("k{i}"))],
                t(0),
            )
            .await
            .unwrap();
    }
    let claimed = store.claim(t(0), LEASE, 10).await.unwrap();
    let done: Vec<Completion> = claimed[..4].iter().map(sent).collect();
    store.complete(&done, t(1)).await.unwrap();
    let stats = store.prune(t(2)).await.unwrap();
    assert_eq!(stats.deliveries, 4);
    assert_eq!(stats.events, 4);
    assert!(store.delivery_log(claimed[0].id).await.unwrap().is_empty());
    assert_eq!(
        store
            .enqueue(&event("e4"), &[delivery("k4")], t(3))
            .await
            .unwrap(),
        EnqueueOutcome::Duplicate
    );
}

#[tokio::test]
async fn migrates_a_schema_1_file_to_the_default_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    let body = serde_json::to_string(
        &Event::builder("old", "k")
            .subject(crate::event::Person::new("u1"))
            .build()
            .unwrap(),
    )
    .unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        assert!(schema::create_v1(&conn).is_ok());
        conn.execute("INSERT INTO events VALUES ('old', 5)", [])
            .unwrap();
        let target = serde_json::to_string(&Target::SubjectDm).unwrap();
        for (id, state) in [(1, "sent"), (2, "queued"), (3, "parked")] {
            conn.execute(
                "INSERT INTO deliveries (id, event_id, event_kind, event, route, destination, \
                 target, state, due_at, attempts, log_steps) \
                 VALUES (?1, 'old', 'k', ?2, 'r', 'slack', ?3, ?4, 5, 0, 1)",
                params![id, body, target, state],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO destinations (name, connected, disconnected_reason, sent) \
             VALUES ('slack', 0, 'uninstalled', 1)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO identity_links VALUES ('slack', 'u1', 'U1', 'manual', 5)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO installations VALUES ('slack', 'T1', 'xoxb-1', NULL, NULL, '{}', 5)",
            [],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let default = TenantId::default();
    let scopes = store.scopes().await.unwrap();
    assert_eq!(scopes.len(), 1);
    assert_eq!(scopes[0].scope, "destination:slack");
    assert!(!scopes[0].connected);
    let claimed = store.claim(t(0), LEASE, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, 2);
    assert_eq!(claimed[0].key, "default|slack|dm:u1");
    assert_eq!(claimed[0].event.id, "old");
    assert!(store.link(&default, "slack", "u1").await.unwrap().is_some());
    assert_eq!(
        store.enqueue(&event("old"), &[], t(0)).await.unwrap(),
        EnqueueOutcome::Duplicate
    );
    // Plain-text tokens become sealed connections once a keyring is given.
    let key = ConnectionKey::new("slack", "T1");
    let store = store
        .with_keyring(crate::secret::Keyring::new("k1", [3; 32]).unwrap())
        .unwrap();
    let c = store.connection(&key).await.unwrap().unwrap();
    assert_eq!(c.access_token().unwrap().expose_secret(), "xoxb-1");
    assert!(c.is_default);
    let raw: String = lock(&store.inner.writer)
        .query_row("SELECT secrets FROM connections", [], |r| r.get(0))
        .unwrap();
    assert!(!raw.contains("xoxb"));
}

#[tokio::test]
async fn connections_refuse_secrets_without_a_keyring_and_swap_by_revision() {
    let store = SqliteStore::open_in_memory().unwrap();
    let acme = TenantId::new("acme").unwrap();
    let c = crate::tenant::Connection::builder(acme.clone(), "slack", "T1")
        .access_token(SecretString::from("xoxb-1"))
        .build()
        .unwrap();
    let err = store.put_connection(&c, t(0)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Secret);
    let store = store
        .with_keyring(crate::secret::Keyring::new("k1", [3; 32]).unwrap())
        .unwrap();
    let stored = store.put_connection(&c, t(0)).await.unwrap();
    assert_eq!(stored.revision, 1);
    let other = crate::tenant::Connection::builder(TenantId::new("evil").unwrap(), "slack", "T1")
        .build()
        .unwrap();
    assert_eq!(
        store.put_connection(&other, t(1)).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    let new = crate::tenant::Secrets::new().with("access_token", SecretString::from("xoxb-2"));
    let swapped = store
        .swap_secrets(&c.key, 1, &new, None, t(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(swapped.revision, 2);
    assert_eq!(swapped.access_token().unwrap().expose_secret(), "xoxb-2");
    assert!(
        store
            .swap_secrets(&c.key, 1, &new, None, t(3))
            .await
            .unwrap()
            .is_none()
    );
    let d = store
        .default_connection(&acme, "slack")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.key, c.key);
}

/// Throughput beside the hand-written rusqlite baseline of `benches/delivery.rs`
/// (per event one transaction; claims of 128; batched completions). Run with
/// `cargo test --release --features sqlite --lib -- --ignored sqlite_throughput --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run on demand in release mode"]
async fn sqlite_throughput_beside_baseline() {
    const N: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    for durability in [Durability::Normal, Durability::Full] {
        let store = SqliteStore::open(dir.path().join(format!("{durability:?}.db")))
            .unwrap()
            .with_durability(durability)
            .unwrap();
        let start = std::time::Instant::now();
        for i in 0..N {
            let e = Event::builder(format!("e{i}"), "wallet.funded")
                .subject(crate::event::Person::new(format!("user-{}", i % 1000)))
                .data(serde_json::json!({"amount": i, "currency": "EUR"}))
                .build()
                .unwrap();
            let d = NewDelivery {
                route: "funded".into(),
                destination: "noop".into(),
                target: Target::SubjectDm,
                scope: "destination:noop".into(),
                key: format!("default|noop|dm:user-{}", i % 1000),
            };
            store.enqueue(&e, &[d], t(0)).await.unwrap();
        }
        let enqueued = start.elapsed();
        let mut done = 0;
        loop {
            let claimed = store.claim(t(1), LEASE, 128).await.unwrap();
            if claimed.is_empty() {
                break;
            }
            done += claimed.len();
            let c: Vec<Completion> = claimed.iter().map(sent).collect();
            store.complete(&c, t(1)).await.unwrap();
        }
        assert_eq!(done as u64, N);
        let total = start.elapsed();
        eprintln!(
            "SqliteStore {durability:?}: enqueue {:.0}/s, enqueue+claim+complete {:.0} events/s",
            N as f64 / enqueued.as_secs_f64(),
            N as f64 / total.as_secs_f64()
        );
    }
    // The baseline, as in benches/delivery.rs.
    let conn = rusqlite::Connection::open(dir.path().join("baseline.db")).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
         CREATE TABLE events(id TEXT PRIMARY KEY, body TEXT NOT NULL);
         CREATE TABLE deliveries(id INTEGER PRIMARY KEY, event_id TEXT NOT NULL, route TEXT NOT NULL,
           destination TEXT NOT NULL, target TEXT NOT NULL, state INTEGER NOT NULL, due INTEGER NOT NULL,
           attempts INTEGER NOT NULL DEFAULT 0, lease INTEGER NOT NULL DEFAULT 0, lease_until INTEGER);
         CREATE INDEX deliveries_due ON deliveries(state, due, id);
         CREATE TABLE log(delivery_id INTEGER NOT NULL, attempt INTEGER NOT NULL, at INTEGER NOT NULL,
           status INTEGER NOT NULL, detail TEXT);",
    )
    .unwrap();
    let mut conn = conn;
    let start = std::time::Instant::now();
    for i in 0..N {
        let e = Event::builder(format!("e{i}"), "wallet.funded")
            .subject(crate::event::Person::new(format!("user-{}", i % 1000)))
            .data(serde_json::json!({"amount": i, "currency": "EUR"}))
            .build()
            .unwrap();
        let body = serde_json::to_string(&e).unwrap();
        let tx = conn.transaction().unwrap();
        tx.prepare_cached("INSERT INTO events(id, body) VALUES (?1, ?2)")
            .unwrap()
            .execute((&e.id, &body))
            .unwrap();
        tx.prepare_cached("INSERT INTO deliveries(event_id, route, destination, target, state, due) VALUES (?1, 'r', 'noop', '{\"type\":\"subject_dm\"}', 0, 0)")
            .unwrap()
            .execute([&e.id])
            .unwrap();
        let id = tx.last_insert_rowid();
        tx.prepare_cached("INSERT INTO log(delivery_id, attempt, at, status) VALUES (?1, 0, 0, 0)")
            .unwrap()
            .execute([id])
            .unwrap();
        tx.commit().unwrap();
    }
    loop {
        let tx = conn.transaction().unwrap();
        let claimed: Vec<(i64, String)> = tx
            .prepare_cached(
                "UPDATE deliveries SET state = 1, lease = lease + 1, lease_until = 60000
                 WHERE id IN (SELECT id FROM deliveries WHERE state = 0 AND due <= 1 ORDER BY due, id LIMIT 128)
                 RETURNING id, (SELECT body FROM events WHERE events.id = deliveries.event_id)",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        tx.commit().unwrap();
        if claimed.is_empty() {
            break;
        }
        for (_, body) in &claimed {
            let _e: Event = serde_json::from_str(body).unwrap();
        }
        let tx = conn.transaction().unwrap();
        for (id, _) in &claimed {
            tx.prepare_cached("UPDATE deliveries SET state = 2, attempts = attempts + 1, lease_until = NULL WHERE id = ?1 AND lease = 1")
                .unwrap()
                .execute([id])
                .unwrap();
            tx.prepare_cached(
                "INSERT INTO log(delivery_id, attempt, at, status) VALUES (?1, 1, 1, 1)",
            )
            .unwrap()
            .execute([id])
            .unwrap();
        }
        tx.commit().unwrap();
    }
    eprintln!(
        "baseline: {:.0} events/s",
        N as f64 / start.elapsed().as_secs_f64()
    );
}

/// The enqueue SQL alone, one transaction per event, without the writer
/// thread's hand-off: tells SQL cost from round-trip cost.
#[test]
#[ignore = "a measurement, run on demand in release mode"]
fn sqlite_enqueue_sql_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = rusqlite::Connection::open(dir.path().join("sql.db")).unwrap();
    assert!(schema::configure(&conn, true).is_ok());
    assert!(schema::migrate(&mut conn).is_ok());
    let n = 20_000;
    let start = std::time::Instant::now();
    for i in 0..n {
        let e = Event::builder(format!("e{i}"), "wallet.funded")
            .subject(crate::event::Person::new(format!("user-{}", i % 1000)))
            .build()
            .unwrap();
        let ev = outbox_rows::NewEvent {
            tenant: "default".into(),
            id: e.id.clone(),
            kind: e.kind.clone(),
            body: serde_json::to_string(&e).unwrap(),
        };
        let rows = [outbox_rows::NewRow {
            route: "r".into(),
            destination: "noop".into(),
            target: "{\"type\":\"subject_dm\"}".into(),
            scope: "destination:noop".into(),
            key: format!("default|noop|dm:user-{}", i % 1000),
        }];
        assert!(
            writer::in_transaction(&conn, |c| outbox_rows::enqueue_rows(c, &ev, &rows, 0)).is_ok()
        );
    }
    eprintln!(
        "enqueue SQL alone: {:.0}/s",
        f64::from(n) / start.elapsed().as_secs_f64()
    );
}

/// The deliver phase's SQL alone (claims of 32, completions one per savepoint
/// as single requests would run, or all in one call as the writer merges
/// them), without the writer thread.
/// `cargo test --release --features sqlite --lib -- --ignored sqlite_deliver_sql --nocapture`.
#[test]
#[ignore = "a measurement, run on demand in release mode"]
fn sqlite_deliver_sql_alone() {
    let dir = tempfile::tempdir().unwrap();
    for (round, per_savepoint) in [true, false, true, false].into_iter().enumerate() {
        let mut conn = rusqlite::Connection::open(dir.path().join(format!("d{round}.db"))).unwrap();
        assert!(schema::configure(&conn, true).is_ok());
        assert!(schema::migrate(&mut conn).is_ok());
        let n: u32 = 4000;
        for i in 0..n {
            let e = Event::builder(format!("e{i}"), "wallet.funded")
                .subject(crate::event::Person::new(format!("u{}", i % 100)))
                .build()
                .unwrap();
            let ev = outbox_rows::NewEvent {
                tenant: "default".into(),
                id: e.id.clone(),
                kind: e.kind.clone(),
                body: serde_json::to_string(&e).unwrap(),
            };
            let rows = [outbox_rows::NewRow {
                route: "r".into(),
                destination: "noop".into(),
                target: "{\"type\":\"subject_dm\"}".into(),
                scope: "destination:noop".into(),
                key: format!("default|noop|dm:u{}", i % 100),
            }];
            assert!(
                writer::in_transaction(&conn, |c| outbox_rows::enqueue_rows(c, &ev, &rows, 0))
                    .is_ok()
            );
        }
        let start = std::time::Instant::now();
        let (mut claim_time, mut done) = (Duration::ZERO, 0);
        loop {
            let c0 = std::time::Instant::now();
            let claimed =
                writer::in_transaction(&conn, |c| outbox_rows::claim_rows(c, 1, 60_000, 32));
            claim_time += c0.elapsed();
            let Ok(claimed) = claimed else {
                panic!("claim failed")
            };
            if claimed.is_empty() {
                break;
            }
            done += claimed.len();
            let applies: Vec<outbox_rows::Apply> = claimed
                .iter()
                .map(|c| outbox_rows::Apply::new(c.id, c.lease, &sent(c).outcome).unwrap())
                .collect();
            let r = writer::in_transaction(&conn, |c| {
                if per_savepoint {
                    for a in &applies {
                        writer::exec(c, "SAVEPOINT job")?;
                        outbox_rows::complete_rows(c, &[(std::slice::from_ref(a), 2)])?;
                        writer::exec(c, "RELEASE job")?;
                    }
                    Ok(())
                } else {
                    outbox_rows::complete_rows(c, &[(&applies, 2)])
                }
            });
            assert!(r.is_ok());
        }
        assert_eq!(done, usize::try_from(n).unwrap());
        let total = start.elapsed();
        eprintln!(
            "per_savepoint {per_savepoint}: deliver {:.0}/s (claims {:.0}% of it)",
            f64::from(n) / total.as_secs_f64(),
            100.0 * claim_time.as_secs_f64() / total.as_secs_f64()
        );
    }
}
