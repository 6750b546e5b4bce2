//! Segmentation latency on `SqliteStore` (and `PostgresStore` when `SWITCHBOARD_POSTGRES_URL` is set) beside a hand-written query over a wide indexed table in the same run.
//!
//! `cargo bench --all-features --bench segment` loads `SEGMENT_USERS` users
//! (default 1,000,000; PostgreSQL: `SEGMENT_PG_USERS`, default 200,000) with
//! six attributes each (`plan`, `tickets`, `seats`, `region`, `score`,
//! `signup`) through `AttributeStore::upsert`, and the same data into a wide
//! table (one column per attribute, one index per filtered column). It then
//! times the first page of 100 plus the total count of
//! `plan = "Premium" and tickets > 2` and of `tickets > 5` through
//! `AttributeStore::query_page`, and the equivalent hand-written SQL over the
//! wide table (`LIMIT 100` + `count(*)`), and prints p50 latencies and ratios.

use std::time::{Duration, Instant};

use switchboard::Filter;
use switchboard::attributes::{AttributeRecord, AttributeStore, Attributes};
use switchboard::store::SqliteStore;
use switchboard::tenant::TenantId;

const PLANS: [&str; 4] = ["Premium", "Basic", "Free", "Trial"];
const REGIONS: [&str; 6] = [
    "eu-west", "eu-north", "us-east", "us-west", "ap-south", "sa-east",
];
const ROUNDS: usize = 25;

/// A small deterministic generator (no dependency, same data every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

struct User {
    id: String,
    plan: &'static str,
    tickets: i64,
    seats: i64,
    region: &'static str,
    score: f64,
    signup: String,
}

fn users(n: usize) -> impl Iterator<Item = User> {
    let mut rng = Lcg(2026);
    (0..n).map(move |i| User {
        id: format!("user-{i:07}"),
        plan: PLANS[rng.next(4) as usize],
        tickets: rng.next(11) as i64,
        seats: 1 + rng.next(500) as i64,
        region: REGIONS[rng.next(6) as usize],
        score: rng.next(10_000) as f64 / 100.0,
        signup: format!("2025-{:02}-{:02}", 1 + rng.next(12), 1 + rng.next(28)),
    })
}

fn record(u: &User) -> AttributeRecord {
    let mut a = Attributes::new();
    a.insert("plan".to_owned(), u.plan.to_owned());
    a.insert("tickets".to_owned(), u.tickets.to_string());
    a.insert("seats".to_owned(), u.seats.to_string());
    a.insert("region".to_owned(), u.region.to_owned());
    a.insert("score".to_owned(), format!("{:.2}", u.score));
    a.insert("signup".to_owned(), u.signup.clone());
    AttributeRecord {
        user_id: u.id.clone(),
        attributes: a,
    }
}

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One row of the results table.
struct Row {
    backend: &'static str,
    users: usize,
    filter: &'static str,
    store: Duration,
    wide: Duration,
    total: u64,
    /// The store's first query (SQLite builds the indexes it drives through).
    first: Duration,
}

async fn time_store(
    store: &dyn AttributeStore,
    tenant: &TenantId,
    filter: &Filter,
) -> (Duration, u64, Duration) {
    let mut samples = Vec::with_capacity(ROUNDS);
    let mut total = 0;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let page = store
            .query_page(tenant, filter, None, 100)
            .await
            .expect("query_page");
        samples.push(start.elapsed());
        assert_eq!(page.users.len(), 100);
        total = page.total;
    }
    let first = samples[0];
    (p50(samples), total, first)
}

const FILTERS: [(&str, &str, &str); 2] = [
    (
        r#"plan = "Premium" and tickets > 2"#,
        "SELECT user_id FROM wide WHERE tenant = ?1 AND plan = 'Premium' AND tickets > 2 ORDER BY user_id LIMIT 100",
        "SELECT count(*) FROM wide WHERE tenant = ?1 AND plan = 'Premium' AND tickets > 2",
    ),
    (
        "tickets > 5",
        "SELECT user_id FROM wide WHERE tenant = ?1 AND tickets > 5 ORDER BY user_id LIMIT 100",
        "SELECT count(*) FROM wide WHERE tenant = ?1 AND tickets > 5",
    ),
];

async fn sqlite(n: usize, rows: &mut Vec<Row>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("segment.db")).expect("open");
    let tenant = TenantId::default();
    let started = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    for u in users(n) {
        batch.push(record(&u));
        if batch.len() == 10_000 {
            store.upsert(&tenant, &batch).await.expect("upsert");
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store.upsert(&tenant, &batch).await.expect("upsert");
    }
    let loaded = started.elapsed();

    let wide_path = dir.path().join("wide.db");
    let conn = rusqlite::Connection::open(&wide_path).expect("open wide");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE wide (tenant TEXT NOT NULL, user_id TEXT NOT NULL, plan TEXT, tickets INTEGER,
             seats INTEGER, region TEXT, score REAL, signup TEXT, PRIMARY KEY (tenant, user_id))
             WITHOUT ROWID;",
    )
    .expect("wide schema");
    let wide_started = Instant::now();
    {
        let tx = conn.unchecked_transaction().expect("tx");
        {
            let mut insert = tx
                .prepare("INSERT INTO wide VALUES ('default', ?1, ?2, ?3, ?4, ?5, ?6, ?7)")
                .expect("prepare");
            for u in users(n) {
                insert
                    .execute(rusqlite::params![
                        u.id, u.plan, u.tickets, u.seats, u.region, u.score, u.signup
                    ])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    conn.execute_batch(
        "CREATE INDEX wide_plan ON wide (tenant, plan, tickets);
         CREATE INDEX wide_tickets ON wide (tenant, tickets);
         ANALYZE;",
    )
    .expect("wide indexes");
    let wide_loaded = wide_started.elapsed();
    println!(
        "sqlite: loaded {n} users x 6 attributes through upsert in {:.1} s; the wide table in {:.1} s",
        loaded.as_secs_f64(),
        wide_loaded.as_secs_f64()
    );

    for (text, page_sql, count_sql) in FILTERS {
        let filter = Filter::parse(text).expect("filter");
        let (store_p50, total, first) = time_store(&store, &tenant, &filter).await;
        let mut samples = Vec::with_capacity(ROUNDS);
        let mut wide_total = 0i64;
        for _ in 0..ROUNDS {
            let start = Instant::now();
            let page: Vec<String> = conn
                .prepare_cached(page_sql)
                .expect("prepare")
                .query_map(["default"], |r| r.get(0))
                .expect("query")
                .collect::<rusqlite::Result<_>>()
                .expect("rows");
            wide_total = conn
                .prepare_cached(count_sql)
                .expect("prepare")
                .query_row(["default"], |r| r.get(0))
                .expect("count");
            samples.push(start.elapsed());
            assert_eq!(page.len(), 100);
        }
        assert_eq!(
            wide_total as u64, total,
            "{text}: both count the same users"
        );
        rows.push(Row {
            backend: "sqlite",
            users: n,
            filter: text,
            store: store_p50,
            wide: p50(samples),
            total,
            first,
        });
    }
}

#[cfg(feature = "postgres")]
async fn postgres(url: &str, n: usize, rows: &mut Vec<Row>) {
    use switchboard::store::PostgresStore;
    let schema = format!(
        "segment_bench_{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let store = PostgresStore::connect_with_schema(url, &schema)
        .await
        .expect("connect");
    let tenant = TenantId::default();
    let started = Instant::now();
    let all: Vec<User> = users(n).collect();
    for chunk in all.chunks(10_000) {
        let batch: Vec<AttributeRecord> = chunk.iter().map(record).collect();
        store.upsert(&tenant, &batch).await.expect("upsert");
    }
    let loaded = started.elapsed();
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "SET search_path = \"{schema}\";
             ANALYZE attribute_values;
             CREATE TABLE wide (tenant text COLLATE \"C\" NOT NULL, user_id text COLLATE \"C\" NOT NULL,
                 plan text, tickets bigint, seats bigint, region text, score double precision,
                 signup text, PRIMARY KEY (tenant, user_id));"
        ))
        .await
        .expect("wide schema");
    let wide_started = Instant::now();
    for chunk in all.chunks(10_000) {
        let ids: Vec<&str> = chunk.iter().map(|u| u.id.as_str()).collect();
        let plans: Vec<&str> = chunk.iter().map(|u| u.plan).collect();
        let tickets: Vec<i64> = chunk.iter().map(|u| u.tickets).collect();
        let seats: Vec<i64> = chunk.iter().map(|u| u.seats).collect();
        let regions: Vec<&str> = chunk.iter().map(|u| u.region).collect();
        let scores: Vec<f64> = chunk.iter().map(|u| u.score).collect();
        let signups: Vec<&str> = chunk.iter().map(|u| u.signup.as_str()).collect();
        client
            .execute(
                "INSERT INTO wide SELECT 'default', * FROM unnest($1::text[], $2::text[], \
                 $3::bigint[], $4::bigint[], $5::text[], $6::float8[], $7::text[])",
                &[&ids, &plans, &tickets, &seats, &regions, &scores, &signups],
            )
            .await
            .expect("insert");
    }
    client
        .batch_execute(
            "CREATE INDEX wide_plan ON wide (tenant, plan, tickets);
             CREATE INDEX wide_tickets ON wide (tenant, tickets);
             ANALYZE wide;",
        )
        .await
        .expect("wide indexes");
    let wide_loaded = wide_started.elapsed();
    println!(
        "postgres: loaded {n} users x 6 attributes through upsert in {:.1} s; the wide table in {:.1} s",
        loaded.as_secs_f64(),
        wide_loaded.as_secs_f64()
    );
    for (text, page_sql, count_sql) in FILTERS {
        let filter = Filter::parse(text).expect("filter");
        let (store_p50, total, first) = time_store(&store, &tenant, &filter).await;
        let page_sql = page_sql.replace("?1", "$1");
        let count_sql = count_sql.replace("?1", "$1");
        let page_stmt = client.prepare(&page_sql).await.expect("prepare");
        let count_stmt = client.prepare(&count_sql).await.expect("prepare");
        let mut samples = Vec::with_capacity(ROUNDS);
        let mut wide_total = 0i64;
        for _ in 0..ROUNDS {
            let start = Instant::now();
            let page = client.query(&page_stmt, &[&"default"]).await.expect("page");
            wide_total = client
                .query_one(&count_stmt, &[&"default"])
                .await
                .expect("count")
                .get(0);
            samples.push(start.elapsed());
            assert_eq!(page.len(), 100);
        }
        assert_eq!(
            wide_total as u64, total,
            "{text}: both count the same users"
        );
        rows.push(Row {
            backend: "postgres",
            users: n,
            filter: text,
            store: store_p50,
            wide: p50(samples),
            total,
            first,
        });
    }
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .expect("drop schema");
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    rt.block_on(async {
        sqlite(env_usize("SEGMENT_USERS", 1_000_000), &mut rows).await;
        #[cfg(feature = "postgres")]
        match std::env::var("SWITCHBOARD_POSTGRES_URL") {
            Ok(url) => postgres(&url, env_usize("SEGMENT_PG_USERS", 200_000), &mut rows).await,
            Err(_) => println!("postgres: skipped (SWITCHBOARD_POSTGRES_URL not set)"),
        }
    });
    println!();
    println!(
        "| backend  | users     | filter                            | matches | store p50 (page of 100 + count) | wide-table SQL p50 | store / wide |"
    );
    println!(
        "|----------|-----------|-----------------------------------|---------|---------------------------------|--------------------|--------------|"
    );
    for r in &rows {
        println!(
            "{} {:?}: first query {:.1} ms",
            r.backend,
            r.filter,
            ms(r.first)
        );
    }
    for r in rows {
        println!(
            "| {:<8} | {:>9} | {:<33} | {:>7} | {:>28.2} ms | {:>15.2} ms | {:>11.2}x |",
            r.backend,
            r.users,
            r.filter,
            r.total,
            ms(r.store),
            ms(r.wide),
            r.store.as_secs_f64() / r.wide.as_secs_f64().max(1e-9)
        );
    }
}
