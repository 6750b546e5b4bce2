//! publish → deliver throughput for MemoryStore and SqliteStore beside a hand-written
//! rusqlite baseline doing the same durable work, plus peak memory with 100,000 queued deliveries.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, Throughput};
use switchboard::{
    Capabilities, Delivery, DeliveryError, Destination, Event, MemoryStore, Person, Receipt, Route,
    SqliteStore, Store, Switchboard, Target,
};

const EVENTS: u64 = 2_000;

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

fn board(store: impl Store) -> Switchboard {
    Switchboard::builder()
        .store(store)
        .destination(Noop)
        .route(
            Route::on("wallet.*")
                .to("noop", Target::SubjectDm)
                .template("{{ data.amount }}"),
        )
        .build()
        .expect("valid wiring")
}

fn event(i: u64, run: u64) -> Event {
    Event::builder(format!("{run}-{i}"), "wallet.funded")
        .subject(Person::new(format!("u{}", i % 100)))
        .data(serde_json::json!({"amount": i}))
        .build()
        .expect("valid event")
}

async fn publish_and_deliver(sb: &Switchboard, n: u64, run: u64) -> Duration {
    let (publish, deliver) = publish_then_deliver(sb, n, run).await;
    publish + deliver
}

/// The time spent publishing `n` events (one after the other), then
/// delivering them all.
async fn publish_then_deliver(sb: &Switchboard, n: u64, run: u64) -> (Duration, Duration) {
    let start = Instant::now();
    for i in 0..n {
        sb.publish(event(i, run)).await.expect("publish");
    }
    let published = start.elapsed();
    let s = sb.run_until_idle().await.expect("run");
    assert_eq!(s.delivered, n);
    (published, start.elapsed() - published)
}

/// The minimum durable work done by hand with rusqlite: per event one transaction
/// inserting the event, its delivery and a log row; then batched claims (128) and
/// batched completions (state update + log row), as the outbox does.
struct Baseline {
    conn: rusqlite::Connection,
}

impl Baseline {
    fn open(path: &std::path::Path) -> Baseline {
        let conn = rusqlite::Connection::open(path).expect("open");
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
        .expect("schema");
        Baseline { conn }
    }

    fn run(&mut self, n: u64, run: u64) -> Duration {
        let (publish, deliver) = self.run_split(n, run);
        publish + deliver
    }

    /// The time spent inserting `n` events, then claiming and completing them all.
    fn run_split(&mut self, n: u64, run: u64) -> (Duration, Duration) {
        let start = Instant::now();
        for i in 0..n {
            let e = event(i, run);
            let body = serde_json::to_string(&e).expect("json");
            let tx = self.conn.transaction().expect("tx");
            {
                tx.prepare_cached("INSERT INTO events(id, body) VALUES (?1, ?2)")
                    .and_then(|mut s| s.execute((&e.id, &body)))
                    .expect("event");
                tx.prepare_cached("INSERT INTO deliveries(event_id, route, destination, target, state, due) VALUES (?1, 'r', 'noop', '{\"type\":\"subject_dm\"}', 0, 0)")
                    .and_then(|mut s| s.execute([&e.id]))
                    .expect("delivery");
                let id = tx.last_insert_rowid();
                tx.prepare_cached(
                    "INSERT INTO log(delivery_id, attempt, at, status) VALUES (?1, 0, 0, 0)",
                )
                .and_then(|mut s| s.execute([id]))
                .expect("log");
            }
            tx.commit().expect("commit");
        }
        let published = start.elapsed();
        loop {
            let tx = self.conn.transaction().expect("tx");
            let claimed: Vec<(i64, String)> = {
                let mut s = tx
                    .prepare_cached(
                        "UPDATE deliveries SET state = 1, lease = lease + 1, lease_until = 60000
                         WHERE id IN (SELECT id FROM deliveries WHERE state = 0 AND due <= 1 ORDER BY due, id LIMIT 128)
                         RETURNING id, (SELECT body FROM events WHERE events.id = deliveries.event_id)",
                    )
                    .expect("claim");
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .expect("claim")
                    .collect::<Result<_, _>>()
                    .expect("rows")
            };
            tx.commit().expect("commit");
            if claimed.is_empty() {
                break;
            }
            for (_, body) in &claimed {
                let _e: Event = serde_json::from_str(body).expect("event json");
            }
            let tx = self.conn.transaction().expect("tx");
            for (id, _) in &claimed {
                tx.prepare_cached("UPDATE deliveries SET state = 2, attempts = attempts + 1, lease_until = NULL WHERE id = ?1 AND lease = 1")
                    .and_then(|mut s| s.execute([id]))
                    .expect("update");
                tx.prepare_cached(
                    "INSERT INTO log(delivery_id, attempt, at, status) VALUES (?1, 1, 1, 1)",
                )
                .and_then(|mut s| s.execute([id]))
                .expect("log");
            }
            tx.commit().expect("commit");
        }
        (published, start.elapsed() - published)
    }
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// 100,000 queued deliveries in SqliteStore, then all delivered: peak process memory.
fn memory_100k(rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("mem.db")).expect("open");
    let sb = board(store);
    let before = peak_rss_mb().unwrap_or(0.0);
    rt.block_on(async {
        for i in 0..100_000 {
            sb.publish(event(i, 999)).await.expect("publish");
        }
        let queued = peak_rss_mb().unwrap_or(0.0);
        let s = sb.run_until_idle().await.expect("run");
        assert_eq!(s.delivered, 100_000);
        println!(
            "memory: 100,000 queued deliveries in SqliteStore: peak RSS {queued:.1} MB after queueing, {:.1} MB after delivering all (process baseline {before:.1} MB; goal < 100 MB)",
            peak_rss_mb().unwrap_or(0.0)
        );
    });
}

/// Three passes of the baseline and SqliteStore side by side, each split into
/// its two phases, so a change can be placed: publishing (one commit per
/// event, one after the other) or delivering (claims and completions).
fn phases(rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rate = |d: Duration| EVENTS as f64 / d.as_secs_f64();
    for round in 0..3 {
        let (bp, bd) =
            Baseline::open(&dir.path().join(format!("b{round}.db"))).run_split(EVENTS, 500 + round);
        let sb = board(SqliteStore::open(dir.path().join(format!("s{round}.db"))).expect("open"));
        let (sp, sd) = rt.block_on(publish_then_deliver(&sb, EVENTS, 600 + round));
        println!(
            "phases: baseline publish {:.0}/s deliver {:.0}/s total {:.0}/s | sqlite_store publish {:.0}/s deliver {:.0}/s total {:.0}/s | ratio {:.2}",
            rate(bp),
            rate(bd),
            rate(bp + bd),
            rate(sp),
            rate(sd),
            rate(sp + sd),
            (bp + bd).as_secs_f64() / (sp + sd).as_secs_f64()
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::var_os("DELIVERY_BENCH_SKIP_MEMORY").is_none() {
        memory_100k(&rt);
    }
    phases(&rt);

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let mut g = c.benchmark_group("publish_deliver");
    g.throughput(Throughput::Elements(EVENTS));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut run = 0u64;

    // Every iteration starts from an empty store (created outside the timed
    // section), so each measures the same work: 2,000 events published and
    // delivered, not a store carrying the history of earlier iterations.
    let mut fresh = 0u64;
    let mut next_path = move |name: &str| {
        fresh += 1;
        dir.path().join(format!("{name}-{fresh}.db"))
    };
    g.bench_function("baseline_rusqlite", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    run += 1;
                    let mut baseline = Baseline::open(&next_path("baseline"));
                    baseline.run(EVENTS, run)
                })
                .sum()
        })
    });
    g.bench_function("sqlite_store", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    run += 1;
                    let sb = board(SqliteStore::open(next_path("store")).expect("open"));
                    rt.block_on(publish_and_deliver(&sb, EVENTS, run))
                })
                .sum()
        })
    });
    g.bench_function("memory_store", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    run += 1;
                    let sb = board(MemoryStore::new());
                    rt.block_on(publish_and_deliver(&sb, EVENTS, run))
                })
                .sum()
        })
    });
    g.finish();
    c.final_summary();
}
