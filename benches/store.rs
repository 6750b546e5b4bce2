//! Store-level throughput of `SqliteStore` (beside `MemoryStore`): enqueue, claim + complete, attribute upserts and segmentation queries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use criterion::{BenchmarkId, Criterion, Throughput};
use switchboard::attributes::AttributeRecord;
use switchboard::store::{Completion, NewDelivery, Outcome, SqliteStore, Store};
use switchboard::{Event, Filter, MemoryStore, Person, Receipt, Target};

const LEASE: Duration = Duration::from_secs(60);

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_700_000_000_000 + ms).expect("valid time")
}

fn event(run: u64, i: u64) -> Event {
    Event::builder(format!("{run}-{i}"), "wallet.funded")
        .occurred_at(at(0))
        .subject(Person::new(format!("user-{}", i % 1000)).email("someone@example.com"))
        .data(serde_json::json!({"amount": i, "currency": "EUR", "wallet": "w-1"}))
        .build()
        .expect("valid event")
}

/// One DM per event, each to its own key (a key's deliveries go one at a
/// time, so distinct keys measure the store, not the ordering).
fn deliveries(i: u64) -> [NewDelivery; 1] {
    [NewDelivery {
        route: "funded".to_owned(),
        destination: "slack".to_owned(),
        target: Target::SubjectDm,
        scope: "slack".to_owned(),
        key: format!("default/slack/dm:{i}"),
    }]
}

/// Claims and completes (sent) everything due, `batch` at a time.
async fn drain(store: &dyn Store, batch: usize) -> usize {
    let mut done = 0;
    loop {
        let claimed = store.claim(at(1), LEASE, batch).await.expect("claim");
        if claimed.is_empty() {
            return done;
        }
        done += claimed.len();
        let completions: Vec<Completion> = claimed
            .iter()
            .map(|c| Completion {
                id: c.id,
                lease: c.lease,
                outcome: Outcome::Sent(Receipt {
                    remote_id: Some("1700000000.000100".to_owned()),
                    location: None,
                }),
            })
            .collect();
        store.complete(&completions, at(2)).await.expect("complete");
    }
}

fn records(n: usize, round: usize) -> Vec<AttributeRecord> {
    (0..n)
        .map(|i| AttributeRecord {
            user_id: format!("user-{i:07}"),
            attributes: (0..10)
                .map(|a| {
                    (
                        format!("attr_{a}"),
                        format!("{}", (i * 7 + a + round) % 1000),
                    )
                })
                .collect(),
        })
        .collect()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir.path().join("bench.db")).expect("open"));
    let memory: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let stores = [("sqlite", sqlite), ("memory", memory)];
    let mut run = 0u64;

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    // One event (one delivery) per enqueue, one transaction each.
    let mut g = c.benchmark_group("store/enqueue");
    g.throughput(Throughput::Elements(1));
    for (name, store) in &stores {
        g.bench_function(BenchmarkId::new("sequential", name), |b| {
            b.iter_custom(|iters| {
                run += 1;
                rt.block_on(async {
                    let start = Instant::now();
                    for i in 0..iters {
                        store
                            .enqueue(&event(run, i), &deliveries(i), at(0))
                            .await
                            .expect("enqueue");
                    }
                    let took = start.elapsed();
                    drain(store.as_ref(), 256).await;
                    took
                })
            })
        });
        // Eight publishers at once: SqliteStore commits what is waiting together.
        g.bench_function(BenchmarkId::new("8_concurrent", name), |b| {
            b.iter_custom(|iters| {
                run += 1;
                let this_run = run;
                rt.block_on(async {
                    let start = Instant::now();
                    let mut tasks = Vec::new();
                    for p in 0..8 {
                        let store = Arc::clone(store);
                        tasks.push(tokio::spawn(async move {
                            for i in (p..iters).step_by(8) {
                                store
                                    .enqueue(&event(this_run, i), &deliveries(i), at(0))
                                    .await
                                    .expect("enqueue");
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.expect("publisher");
                    }
                    let took = start.elapsed();
                    drain(store.as_ref(), 256).await;
                    took
                })
            })
        });
    }
    g.finish();

    // Claim 128 + complete 128, until 2,000 queued deliveries are sent.
    let mut g = c.benchmark_group("store/claim_complete");
    g.throughput(Throughput::Elements(2_000));
    for (name, store) in &stores {
        g.bench_function(BenchmarkId::new("batch_128", name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    run += 1;
                    rt.block_on(async {
                        for i in 0..2_000 {
                            store
                                .enqueue(&event(run, i), &deliveries(i), at(0))
                                .await
                                .expect("enqueue");
                        }
                        let start = Instant::now();
                        assert_eq!(drain(store.as_ref(), 128).await, 2_000);
                        total += start.elapsed();
                    });
                }
                total
            })
        });
    }
    g.finish();

    // 10,000 users × 10 attributes per upsert: new users, then merged into existing ones.
    let tenant = switchboard::TenantId::default();
    let mut g = c.benchmark_group("store/attributes");
    g.throughput(Throughput::Elements(10_000));
    for (name, store) in &stores {
        let batch = records(10_000, 0);
        let again = records(10_000, 1);
        let mut fresh = 0usize;
        g.bench_function(BenchmarkId::new("upsert_new_users", name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    fresh += 1;
                    let renamed: Vec<AttributeRecord> = batch
                        .iter()
                        .map(|r| AttributeRecord {
                            user_id: format!("{fresh}-{}", r.user_id),
                            attributes: r.attributes.clone(),
                        })
                        .collect();
                    let start = Instant::now();
                    rt.block_on(store.upsert(&tenant, &renamed))
                        .expect("upsert");
                    total += start.elapsed();
                }
                total
            })
        });
        rt.block_on(store.upsert(&tenant, &batch)).expect("upsert");
        g.bench_function(BenchmarkId::new("upsert_merge", name), |b| {
            b.iter(|| rt.block_on(store.upsert(&tenant, &again)).expect("upsert"))
        });
    }
    g.finish();

    // Segmentation over 100,000 users with 10 attributes each.
    let mut g = c.benchmark_group("store/query_100k_users");
    g.throughput(Throughput::Elements(100_000));
    let segment: [(&str, Arc<dyn Store>); 2] = [
        (
            "sqlite",
            Arc::new(SqliteStore::open(dir.path().join("segment.db")).expect("open")),
        ),
        ("memory", Arc::new(MemoryStore::new())),
    ];
    let users = records(100_000, 0);
    for (name, store) in &segment {
        for chunk in users.chunks(10_000) {
            rt.block_on(store.upsert(&tenant, chunk)).expect("upsert");
        }
        let filters = [
            ("text_eq", Filter::eq("attr_3", "Premium")),
            ("numeric_eq", Filter::eq("attr_3", "17")),
            (
                "numeric_and",
                Filter::And(vec![
                    Filter::gt("attr_1", "500"),
                    Filter::gt("attr_2", "900"),
                ]),
            ),
        ];
        for (label, filter) in &filters {
            g.bench_function(BenchmarkId::new(*label, name), |b| {
                b.iter(|| rt.block_on(store.query(&tenant, filter)).expect("query"))
            });
        }
    }
    g.finish();
    c.final_summary();
}
