//! Benchmark: a 1,000,000-row CSV imported into SqliteStore from an in-process S3 server and from a local folder — rows/s and peak heap.
//!
//! Run: `cargo bench --bench s3 --all-features` (`SB_BENCH_ROWS=200000` for a
//! shorter run). Prints one line per path and the ratio.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use switchboard::integration::{RunOutcome, Schedule};
use switchboard::s3::{Credentials, S3Config, S3Connector};
use switchboard::schedule::Scheduler;
use switchboard::{SqliteStore, Store};

struct CountingAlloc;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator; the counters only observe sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const ACCESS_KEY: &str = "AKIABENCH";
const SECRET_KEY: &str = "bench-secret";
const BUCKET: &str = "bench";

/// Serves `root` over the S3 protocol on 127.0.0.1; returns the endpoint.
async fn serve_s3(root: &Path) -> String {
    let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs root");
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    endpoint
}

fn write_csv(path: &Path, rows: u64) -> u64 {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create csv"));
    writeln!(out, "Email,Name,Plan,Support Tickets,Country").expect("write");
    let plans = ["Basic", "Premium", "Enterprise"];
    let countries = ["DE", "GB", "US", "NL", "FR"];
    for i in 0..rows {
        writeln!(
            out,
            "user{i}@example.com,User {i},{},{},{}",
            plans[(i % 3) as usize],
            i % 11,
            countries[(i % 5) as usize]
        )
        .expect("write");
    }
    out.flush().expect("flush");
    std::fs::metadata(path).expect("metadata").len()
}

struct Measured {
    seconds: f64,
    rows: u64,
    peak_heap: usize,
}

async fn import(config: S3Config, connector: &S3Connector, db: &Path) -> Measured {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(db).expect("sqlite"));
    let scheduler = Scheduler::new(Arc::clone(&store))
        .job(Arc::new(connector.job("bench", Arc::clone(&store))));
    let integration = config
        .attribute_as("Plan", "plan")
        .attribute_as("Support Tickets", "support_tickets")
        .attribute_as("Country", "country")
        .integration("bench", Schedule::Interval(Duration::from_secs(3600)))
        .expect("integration");
    scheduler
        .put_integration(&integration)
        .await
        .expect("put integration");
    let baseline = CURRENT.load(Ordering::SeqCst);
    PEAK.store(baseline, Ordering::SeqCst);
    let started = Instant::now();
    let run = scheduler
        .run_now(&switchboard::TenantId::default(), "bench")
        .await
        .expect("run");
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(run.outcome, RunOutcome::Success, "{run:?}");
    Measured {
        seconds,
        rows: run.rows_imported,
        peak_heap: PEAK.load(Ordering::SeqCst).saturating_sub(baseline),
    }
}

fn print(label: &str, m: &Measured, bytes: u64) {
    println!(
        "{label:<22} {:>9} rows in {:>6.2} s = {:>9.0} rows/s ({:>6.1} MB/s), peak heap growth {:>5.1} MiB",
        m.rows,
        m.seconds,
        m.rows as f64 / m.seconds,
        bytes as f64 / m.seconds / 1e6,
        m.peak_heap as f64 / (1 << 20) as f64
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows: u64 = std::env::var("SB_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let s3_root = dir.path().join("s3");
    let local = dir.path().join("local");
    std::fs::create_dir_all(s3_root.join(BUCKET)).expect("mkdir");
    std::fs::create_dir_all(&local).expect("mkdir");
    let csv = local.join("users.csv");
    let bytes = write_csv(&csv, rows);
    println!(
        "s3 import benchmark: {rows} rows, {:.1} MB CSV, into SqliteStore (a file), 3 attributes",
        bytes as f64 / 1e6
    );

    let endpoint = serve_s3(&s3_root).await;
    // Upload through the server so the object has its ETag like any S3 object.
    let client = AmazonS3Builder::new()
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_bucket_name(BUCKET)
        .with_region("us-east-1")
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .build()
        .expect("client");
    let body = std::fs::read(&csv).expect("read csv");
    client
        .put(&"users.csv".into(), body.into())
        .await
        .expect("upload");

    let connector =
        S3Connector::new(Credentials::access_key(ACCESS_KEY, SECRET_KEY)).spool_dir(dir.path());
    let s3_config = S3Config::new(&format!("s3://{BUCKET}/users.csv"), "Email")
        .expect("config")
        .endpoint(&endpoint);
    let from_s3 = import(s3_config, &connector, &dir.path().join("s3.db")).await;
    print("S3 (s3s-fs, loopback)", &from_s3, bytes);

    let local_config =
        S3Config::new(&format!("file://{}/users.csv", local.display()), "Email").expect("config");
    let from_local = import(local_config, &connector, &dir.path().join("local.db")).await;
    print("local folder", &from_local, bytes);

    println!(
        "ratio: the S3 path takes {:.2}x the local path's time",
        from_s3.seconds / from_local.seconds
    );
}
