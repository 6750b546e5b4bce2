//! PostgresStore with several replicas on one database: migrations, per-key order, idempotent publish, database-clock leases, runs, the attribute cap and shared pacing.
//!
//! Each replica is a `PostgresStore` with its own connection pool on the same
//! schema (a fresh, randomly named one per test). Without
//! SWITCHBOARD_POSTGRES_URL every test prints that it was skipped and passes.

#![cfg(feature = "postgres")]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use switchboard::attributes::{AttributeRecord, AttributeStore};
use switchboard::destination::{RateLimit, Receipt};
use switchboard::integration::RunOutcome;
use switchboard::store::{
    Completion, EnqueueOutcome, LeaseClock, NewDelivery, OutboxStore, Outcome, PaceDecision,
    PostgresStore, RunStore, ScopeChange,
};
use switchboard::tenant::TenantId;
use switchboard::{ErrorKind, Event, Target};

fn url() -> Option<String> {
    let url = std::env::var("SWITCHBOARD_POSTGRES_URL")
        .ok()
        .filter(|u| !u.trim().is_empty());
    if url.is_none() {
        eprintln!("skipped: SWITCHBOARD_POSTGRES_URL not set");
    }
    url
}

fn schema_name() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    format!("sb_test_{now}_{:016x}", rand::random::<u64>())
}

/// `n` replicas on one fresh schema, connected concurrently (so their
/// migrations race).
async fn replicas(url: &str, n: usize) -> Vec<PostgresStore> {
    let schema = schema_name();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (url, schema) = (url.to_owned(), schema.clone());
            tokio::spawn(async move { PostgresStore::connect_with_schema(&url, &schema).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("join").expect("connect"));
    }
    out
}

fn event(tenant: &str, id: &str) -> Event {
    Event::builder(id, "order.paid")
        .tenant(tenant)
        .build()
        .expect("valid event")
}

fn on_key(key: &str) -> NewDelivery {
    NewDelivery {
        route: "r".to_owned(),
        destination: "slack".to_owned(),
        target: Target::ChannelId { id: key.to_owned() },
        scope: "slack".to_owned(),
        key: key.to_owned(),
    }
}

fn sent() -> Outcome {
    Outcome::Sent(Receipt {
        remote_id: None,
        location: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replicas_migrate_once_and_newer_schema_is_refused() {
    let Some(url) = url() else { return };
    let schema = schema_name();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (url, schema) = (url.clone(), schema.clone());
            tokio::spawn(async move { PostgresStore::connect_with_schema(&url, &schema).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("every replica connects");
    }
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let rows = client
        .query(
            &format!("SELECT version FROM \"{schema}\".switchboard_schema"),
            &[],
        )
        .await
        .expect("version table");
    assert_eq!(rows.len(), 1, "one version row");
    assert_eq!(rows[0].get::<_, i32>(0), PostgresStore::SCHEMA_VERSION);
    client
        .execute(
            &format!("UPDATE \"{schema}\".switchboard_schema SET version = 999"),
            &[],
        )
        .await
        .expect("bump version");
    let err = PostgresStore::connect_with_schema(&url, &schema)
        .await
        .expect_err("a newer schema is refused");
    assert_eq!(err.kind(), ErrorKind::Store);
    assert!(err.to_string().contains("newer"), "{err}");
}

/// Four replicas work 8 keys of 25 deliveries each: every delivery is sent
/// once, never two of one key at the same time, and each key in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_replicas_keep_per_key_order_and_exclusivity() {
    let Some(url) = url() else { return };
    let stores = replicas(&url, 4).await;
    let keys: Vec<String> = (0..8).map(|k| format!("key-{k}")).collect();
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..25 {
        for k in &keys {
            let id = format!("{k}-{i:03}");
            stores[0]
                .enqueue(&event("default", &id), &[on_key(k)], Utc::now())
                .await
                .expect("enqueue");
            expected.entry(k.clone()).or_default().push(id);
        }
    }
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let done: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for store in stores.clone() {
        let (busy, done, violations) = (busy.clone(), done.clone(), violations.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let claimed = store
                    .claim(Utc::now(), Duration::from_secs(30), 4)
                    .await
                    .expect("claim");
                if claimed.is_empty() {
                    if store.pending().await.expect("pending") == 0 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                for c in &claimed {
                    if !busy.lock().expect("lock").insert(c.key.clone()) {
                        violations
                            .lock()
                            .expect("lock")
                            .push(format!("{} claimed twice at once", c.key));
                    }
                }
                tokio::task::yield_now().await;
                for c in &claimed {
                    done.lock()
                        .expect("lock")
                        .entry(c.key.clone())
                        .or_default()
                        .push(c.event.id.clone());
                    busy.lock().expect("lock").remove(&c.key);
                }
                let completions: Vec<Completion> = claimed
                    .iter()
                    .map(|c| Completion {
                        id: c.id,
                        lease: c.lease,
                        outcome: sent(),
                    })
                    .collect();
                store
                    .complete(&completions, Utc::now())
                    .await
                    .expect("complete");
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    assert!(
        violations.lock().expect("lock").is_empty(),
        "{violations:?}"
    );
    assert_eq!(
        *done.lock().expect("lock"),
        expected,
        "each key in order, once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_from_every_replica_is_idempotent_per_event() {
    let Some(url) = url() else { return };
    let stores = replicas(&url, 4).await;
    let mut tasks = Vec::new();
    for store in stores.clone() {
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0;
            for i in 0..50 {
                let e = event("acme", &format!("e{i}"));
                let outcome = store
                    .enqueue(&e, &[on_key("k"), on_key("k2")], Utc::now())
                    .await
                    .expect("enqueue");
                if outcome != EnqueueOutcome::Duplicate {
                    accepted += 1;
                }
            }
            accepted
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("join");
    }
    assert_eq!(total, 50, "each event accepted by exactly one replica");
    assert_eq!(stores[3].pending().await.expect("pending"), 100);
}

/// Leases run on the database's clock: a replica whose clock is an hour
/// ahead cannot take a live lease; once it lapsed, one whose clock is an
/// hour behind takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_on_the_database_clock() {
    let Some(url) = url() else { return };
    let stores = replicas(&url, 2).await;
    let now = Utc::now();
    stores[0]
        .enqueue(&event("default", "e"), &[on_key("k")], now)
        .await
        .expect("enqueue");
    let first = stores[0]
        .claim(now, Duration::from_millis(300), 10)
        .await
        .expect("claim");
    assert_eq!(first.len(), 1);
    let ahead = now + chrono::Duration::hours(1);
    assert!(
        stores[1]
            .claim(ahead, Duration::from_secs(30), 10)
            .await
            .expect("claim")
            .is_empty(),
        "a fast clock does not expire someone else's lease"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let behind = now - chrono::Duration::hours(1);
    let again = stores[1]
        .claim(behind, Duration::from_secs(30), 10)
        .await
        .expect("claim");
    assert_eq!(again.len(), 1, "the lapsed lease is taken over");
    assert_eq!(again[0].attempt, 2);
    // The old worker's completion is stale and ignored.
    stores[0]
        .complete(
            &[Completion {
                id: first[0].id,
                lease: first[0].lease,
                outcome: sent(),
            }],
            Utc::now(),
        )
        .await
        .expect("complete");
    assert_eq!(stores[0].pending().await.expect("pending"), 1);
}

/// A reconnect through one replica re-queues parked deliveries for every
/// replica at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_on_one_replica_is_seen_by_another() {
    let Some(url) = url() else { return };
    let stores = replicas(&url, 2).await;
    let acme = TenantId::new("acme").expect("tenant");
    let now = Utc::now();
    stores[0]
        .set_scope(
            &acme,
            "slack",
            ScopeChange::Disconnect {
                reason: "token revoked".to_owned(),
                epoch: None,
            },
            now,
        )
        .await
        .expect("disconnect");
    stores[1]
        .enqueue(&event("acme", "e1"), &[on_key("k")], now)
        .await
        .expect("enqueue");
    assert!(
        stores[1]
            .claim(now, Duration::from_secs(30), 10)
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(
        stores[0]
            .set_scope(&acme, "slack", ScopeChange::Connect, now)
            .await
            .expect("connect"),
        1
    );
    let claimed = stores[1]
        .claim(now, Duration::from_secs(30), 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].scope_epoch, 1);
}

/// Two replicas run the same schedule for 10 ticks: 10 runs, never two at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_run_a_schedule_once_per_tick() {
    let Some(url) = url() else { return };
    let stores = replicas(&url, 2).await;
    let tenant = TenantId::new("acme").expect("tenant");
    let running = Arc::new(Mutex::new(0_u32));
    let mut started_total = 0;
    for _tick in 0..10 {
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let tasks: Vec<_> = stores
            .iter()
            .cloned()
            .map(|store| {
                let (tenant, running, barrier) = (tenant.clone(), running.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let run = store
                        .start_run(&tenant, "csv", Utc::now(), Duration::from_secs(300))
                        .await
                        .expect("start_run");
                    let Some(mut run) = run else { return 0 };
                    {
                        let mut r = running.lock().expect("lock");
                        *r += 1;
                        assert_eq!(*r, 1, "runs overlap");
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    *running.lock().expect("lock") -= 1;
                    run.outcome = RunOutcome::Success;
                    run.finished_at = Some(Utc::now());
                    store.finish_run(&run).await.expect("finish");
                    1
                })
            })
            .collect();
        let mut started = 0;
        for t in tasks {
            started += t.await.expect("join");
        }
        assert_eq!(started, 1, "one run per tick");
        started_total += started;
    }
    assert_eq!(started_total, 10);
    let runs = stores[0].runs(&tenant, "csv", 100).await.expect("runs");
    assert_eq!(runs.len(), 10);
    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = runs
        .iter()
        .map(|r| (r.started_at, r.finished_at.expect("finished")))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "runs overlap: {w:?}");
    }
}

fn names(prefix: &str, n: usize) -> AttributeRecord {
    AttributeRecord {
        user_id: format!("{prefix}-user"),
        attributes: (0..n)
            .map(|i| (format!("{prefix}{i}"), "1".to_owned()))
            .collect(),
    }
}

/// Imports racing at the cap, from two replicas: by two integrations of one
/// tenant the cap is never exceeded; two tenants each have their own cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_imports_never_exceed_the_cap() {
    let Some(url) = url() else { return };
    let stores: Vec<PostgresStore> = replicas(&url, 2)
        .await
        .into_iter()
        .map(|s| s.with_attribute_cap(10))
        .collect();
    for round in 0..5 {
        let tenant = TenantId::new(format!("t{round}")).expect("tenant");
        // Each batch alone fits (7 of 10); together they do not (14).
        let tasks: Vec<_> = ["a", "b"]
            .iter()
            .zip(stores.iter().cloned())
            .map(|(p, store)| {
                let (tenant, batch) = (tenant.clone(), names(p, 7));
                tokio::spawn(async move { store.upsert(&tenant, &[batch]).await })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.expect("join") {
                Ok(_) => ok += 1,
                Err(e) => assert_eq!(e.kind(), ErrorKind::AttributeCap),
            }
        }
        assert_eq!(ok, 1, "exactly one import fits");
        let registered: BTreeSet<String> = ["a", "b"]
            .iter()
            .filter_map(|p| {
                futures::executor::block_on(stores[0].get(&tenant, &format!("{p}-user")))
                    .expect("get")
            })
            .flat_map(|a| a.into_keys())
            .collect();
        assert_eq!(registered.len(), 7, "cap held: {registered:?}");
    }
    // Two tenants at the cap at once: both fit, independently.
    let tasks: Vec<_> = ["x", "y"]
        .iter()
        .zip(stores.iter().cloned())
        .map(|(p, store)| {
            let tenant = TenantId::new(format!("tenant-{p}")).expect("tenant");
            let batch = names(p, 10);
            tokio::spawn(async move { store.upsert(&tenant, &[batch]).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("each tenant has its own cap");
    }
}

/// Four replicas share one limit: of 40 concurrent acquires on a key allowing
/// 3 per hour, exactly 3 go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_pacer_holds_for_the_sum_of_replicas() {
    let Some(url) = url() else { return };
    let stores = replicas(&url, 4).await;
    let limit = RateLimit::per_hour(3);
    let mut tasks = Vec::new();
    for store in &stores {
        let pacer = store.pacer();
        tasks.push(tokio::spawn(async move {
            let mut go = 0;
            let mut waits = Vec::new();
            for _ in 0..10 {
                match pacer.acquire("slack:T1:C1", limit).await.expect("acquire") {
                    PaceDecision::Go => go += 1,
                    PaceDecision::Wait(d) => waits.push(d),
                }
            }
            (go, waits)
        }));
    }
    let mut go = 0;
    for t in tasks {
        let (g, waits) = t.await.expect("join");
        go += g;
        for w in waits {
            assert!(
                w > Duration::ZERO && w <= Duration::from_secs(1200),
                "{w:?}"
            );
        }
    }
    assert_eq!(go, 3, "the burst is shared by all replicas");
    // Another key has its own budget.
    assert_eq!(
        stores[0]
            .pacer()
            .acquire("slack:T1:C2", limit)
            .await
            .expect("acquire"),
        PaceDecision::Go
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_clock_mode_expires_leases_by_the_callers_now() {
    let Some(url) = url() else { return };
    let store = replicas(&url, 1)
        .await
        .remove(0)
        .with_lease_clock(LeaseClock::Caller);
    let t0 = Utc::now();
    store
        .enqueue(&event("default", "e"), &[on_key("k")], t0)
        .await
        .expect("enqueue");
    assert_eq!(
        store
            .claim(t0, Duration::from_secs(30), 1)
            .await
            .expect("claim")
            .len(),
        1
    );
    let later = t0 + chrono::Duration::seconds(31);
    assert_eq!(
        store
            .claim(later, Duration::from_secs(30), 1)
            .await
            .expect("claim")
            .len(),
        1
    );
}
