//! PostgresStore throughput with 1, 2 and 4 replicas beside SqliteStore (store level and through `Switchboard`), and claim + complete latency under 4 replicas.
//!
//! `SWITCHBOARD_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --features postgres,sqlite --bench postgres`
//!
//! Store level, with a no-op destination: publishers enqueue events (one
//! delivery each, 100 ordering keys) while every replica's worker claims
//! batches of 32 and completes them as sent, until nothing is pending. Each
//! replica is a `PostgresStore` with its own connection pool, as separate
//! processes would be. Engine level: each replica is a `Switchboard` with a
//! no-op destination, its publishers publishing while it delivers, each
//! ending when the database has nothing queued or in flight. Claim + complete
//! latency is measured over a backlog of 2,000 and of 20,000 deliveries. Without the variable
//! it says so and exits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use switchboard::destination::Receipt;
use switchboard::engine::WorkerConfig;
use switchboard::store::{
    Completion, NewDelivery, OutboxStore, Outcome, PostgresStore, SqliteStore,
};
use switchboard::{
    Capabilities, Delivery, DeliveryError, Destination, Event, Person, Route, Store, Switchboard,
    Target,
};

struct Noop;

#[async_trait]
impl Destination for Noop {
    fn name(&self) -> &str {
        "noop"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    async fn deliver(&self, _: &Delivery) -> Result<Receipt, DeliveryError> {
        Ok(Receipt::default())
    }
}

fn board(store: Arc<dyn Store>) -> Switchboard {
    Switchboard::builder()
        .store_arc(store)
        .destination(Noop)
        // At most 8 deliveries at once: the engine awaits store calls while
        // its in-flight deliveries (which use the store too) are not polled,
        // so a concurrency above the pool's 16 connections can starve it.
        .worker(WorkerConfig {
            concurrency: 8,
            ..WorkerConfig::default()
        })
        .route(
            Route::on("wallet.*")
                .to("noop", Target::SubjectDm)
                .template("{{ data.amount }}"),
        )
        .build()
        .expect("valid wiring")
}

fn engine_event(run: &str, i: usize) -> Event {
    Event::builder(format!("{run}-{i}"), "wallet.funded")
        .subject(Person::new(format!("u{}", i % KEYS)))
        .data(serde_json::json!({"amount": i}))
        .build()
        .expect("valid event")
}

/// Publish → deliver through one `Switchboard` per store: `PUBLISHERS`
/// tasks per replica publish `EVENTS` events in all while each replica
/// delivers, and each replica ends when nothing is queued or in flight in the
/// database; returns events per second.
async fn engine(stores: Vec<Arc<dyn Store>>, run: &str) -> f64 {
    let start = Instant::now();
    let boards: Vec<Arc<Switchboard>> = stores.into_iter().map(|s| Arc::new(board(s))).collect();
    let n = boards.len() * PUBLISHERS;
    let mut tasks = Vec::new();
    for (r, sb) in boards
        .iter()
        .flat_map(|b| std::iter::repeat_n(b.clone(), PUBLISHERS))
        .enumerate()
    {
        let run = run.to_owned();
        tasks.push(tokio::spawn(async move {
            for i in (r..EVENTS).step_by(n) {
                sb.publish(engine_event(&run, i)).await.expect("publish");
            }
        }));
    }
    let publishing = Arc::new(std::sync::atomic::AtomicUsize::new(tasks.len()));
    let mut publishers = Vec::new();
    for t in tasks {
        let publishing = publishing.clone();
        publishers.push(tokio::spawn(async move {
            t.await.expect("publisher");
            publishing.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }));
    }
    let mut workers = Vec::new();
    for sb in boards {
        let publishing = publishing.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let s = sb.run_until_idle().await.expect("run");
                let worked = s.delivered + s.retried + s.dead + s.parked + s.deferred;
                let done = publishing.load(std::sync::atomic::Ordering::SeqCst) == 0;
                if worked == 0 && done && sb.store().pending().await.expect("pending") == 0 {
                    return;
                }
                if worked == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }));
    }
    for t in publishers.into_iter().chain(workers) {
        t.await.expect("task");
    }
    EVENTS as f64 / start.elapsed().as_secs_f64()
}

const EVENTS: usize = 4000;
const KEYS: usize = 100;
const BATCH: usize = 32;

fn delivery(i: usize) -> NewDelivery {
    let key = format!("default|noop|C{}", i % KEYS);
    NewDelivery {
        route: "r".to_owned(),
        destination: "noop".to_owned(),
        target: Target::ChannelId { id: key.clone() },
        scope: "destination:noop".to_owned(),
        key,
    }
}

fn event(run: &str, i: usize) -> Event {
    Event::builder(format!("{run}-{i}"), "order.paid")
        .build()
        .expect("valid event")
}

fn sent() -> Outcome {
    Outcome::Sent(Receipt {
        remote_id: None,
        location: None,
    })
}

/// Concurrent publishers per replica (a host publishes from many requests).
const PUBLISHERS: usize = 8;

/// Publishes `EVENTS` events through the stores (`PUBLISHERS` tasks each)
/// while, if `deliver`, each store's worker delivers; returns events per
/// second, end to end.
async fn pipeline(
    stores: Vec<Arc<dyn OutboxStore>>,
    run: &str,
    publish: bool,
    deliver: bool,
) -> f64 {
    let start = Instant::now();
    let n = stores.len() * PUBLISHERS;
    let mut tasks = Vec::new();
    let publishers = if publish { PUBLISHERS } else { 0 };
    for (r, store) in stores
        .iter()
        .flat_map(|s| std::iter::repeat_n(s.clone(), publishers))
        .enumerate()
    {
        let run = run.to_owned();
        tasks.push(tokio::spawn(async move {
            for i in (r..EVENTS).step_by(n) {
                store
                    .enqueue(&event(&run, i), &[delivery(i)], Utc::now())
                    .await
                    .expect("enqueue");
            }
        }));
    }
    let workers = if deliver { stores.clone() } else { Vec::new() };
    for store in workers {
        tasks.push(tokio::spawn(async move {
            let mut idle = 0;
            loop {
                let claimed = store
                    .claim(Utc::now(), Duration::from_secs(60), BATCH)
                    .await
                    .expect("claim");
                if claimed.is_empty() {
                    if store.pending().await.expect("pending") == 0 {
                        idle += 1;
                        if idle > 20 {
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                idle = 0;
                let done: Vec<Completion> = claimed
                    .iter()
                    .map(|c| Completion {
                        id: c.id,
                        lease: c.lease,
                        outcome: sent(),
                    })
                    .collect();
                store.complete(&done, Utc::now()).await.expect("complete");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    EVENTS as f64 / start.elapsed().as_secs_f64()
}

fn schema() -> String {
    format!("sb_bench_{:016x}", rand::random::<u64>())
}

async fn drop_schema(url: &str, schema: &str) {
    if let Ok((client, conn)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        tokio::spawn(conn);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await;
    }
}

async fn replicas(url: &str, schema: &str, n: usize) -> Vec<PostgresStore> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            PostgresStore::connect_with_schema(url, schema)
                .await
                .expect("connect"),
        );
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// Claim one + complete it, from 4 replicas at once, over a backlog of
/// `backlog` deliveries (2,000 samples at most).
async fn latency(url: &str, backlog: usize) -> (Duration, Duration, usize) {
    let schema = schema();
    let stores = replicas(url, &schema, 4).await;
    let mut fill = Vec::new();
    for p in 0..8 {
        let store = stores[p % 4].clone();
        fill.push(tokio::spawn(async move {
            for i in (p..backlog).step_by(8) {
                store
                    .enqueue(&event("lat", i), &[delivery(i)], Utc::now())
                    .await
                    .expect("enqueue");
            }
        }));
    }
    for f in fill {
        f.await.expect("fill");
    }
    let mut tasks = Vec::new();
    for store in stores {
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while samples.len() < 500 {
                let t = Instant::now();
                let claimed = store
                    .claim(Utc::now(), Duration::from_secs(60), 1)
                    .await
                    .expect("claim");
                let Some(c) = claimed.first() else {
                    if store.pending().await.expect("pending") == 0 {
                        break;
                    }
                    continue;
                };
                store
                    .complete(
                        &[Completion {
                            id: c.id,
                            lease: c.lease,
                            outcome: sent(),
                        }],
                        Utc::now(),
                    )
                    .await
                    .expect("complete");
                samples.push(t.elapsed());
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort();
    drop_schema(url, &schema).await;
    (percentile(&all, 0.5), percentile(&all, 0.99), all.len())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let Some(url) = std::env::var("SWITCHBOARD_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        println!("skipped: SWITCHBOARD_POSTGRES_URL not set");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = SqliteStore::open(dir.path().join("bench.db")).expect("sqlite");
    let rate = pipeline(vec![Arc::new(sqlite)], "sqlite", true, true).await;
    println!(
        "SqliteStore, 1 process:        {rate:>6.0} events/s publish+deliver ({EVENTS} events, {KEYS} keys, {PUBLISHERS} publishers)"
    );
    let mut base = None;
    for n in [1, 2, 4] {
        let schema = schema();
        let stores: Vec<Arc<dyn OutboxStore>> = replicas(&url, &schema, n)
            .await
            .into_iter()
            .map(|s| Arc::new(s) as Arc<dyn OutboxStore>)
            .collect();
        let rate = pipeline(stores.clone(), &format!("pg{n}"), true, true).await;
        let ratio = rate / *base.get_or_insert(rate);
        println!(
            "PostgresStore, {n} replica(s): {rate:>6.0} events/s publish+deliver (x{ratio:.2} of 1 replica)"
        );
        let published = pipeline(stores.clone(), &format!("pg{n}b"), true, false).await;
        let drained = pipeline(stores, &format!("pg{n}b"), false, true).await;
        println!(
            "                               {published:>6.0} events/s publish only, {drained:>6.0} deliveries/s draining a backlog of {EVENTS}"
        );
        drop_schema(&url, &schema).await;
    }
    let dir2 = tempfile::tempdir().expect("temp dir");
    let sqlite = SqliteStore::open(dir2.path().join("engine.db")).expect("sqlite");
    let rate = engine(vec![Arc::new(sqlite)], "esqlite").await;
    println!("engine, SqliteStore, 1 process:        {rate:>6.0} events/s publish → deliver");
    let mut base = None;
    for n in [1, 2, 4] {
        let schema = schema();
        let stores: Vec<Arc<dyn Store>> = replicas(&url, &schema, n)
            .await
            .into_iter()
            .map(|s| Arc::new(s) as Arc<dyn Store>)
            .collect();
        let rate = engine(stores, &format!("e{n}")).await;
        let ratio = rate / *base.get_or_insert(rate);
        println!(
            "engine, PostgresStore, {n} replica(s): {rate:>6.0} events/s publish → deliver (x{ratio:.2} of 1 replica)"
        );
        drop_schema(&url, &schema).await;
    }
    for backlog in [2_000, 20_000] {
        let (p50, p99, n) = latency(&url, backlog).await;
        println!(
            "claim + complete under 4 replicas, backlog {backlog}: p50 {p50:?}, p99 {p99:?} ({n} samples)"
        );
    }
}
