//! The S3 connector against a real S3-protocol server (`s3s-fs`) started in process, with static credentials.
#![cfg(feature = "s3")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use hyper_util::rt::{TokioExecutor, TokioIo};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use switchboard::attributes::UpsertStats;
use switchboard::destination::DeliveryId;
use switchboard::identity::IdentityLink;
use switchboard::integration::{IntegrationConfig, RunOutcome, RunRecord, Schedule};
use switchboard::s3::{
    AfterImport, Credentials, RetryPolicy, S3Config, S3Connection, S3Connector, S3Import,
    S3RunDetails,
};
use switchboard::schedule::{RunContext, Scheduler};
use switchboard::store::{
    ClaimedDelivery, Completion, ConnectionStore, DeadLetter, DeliveryState, DestinationStats,
    EnqueueOutcome, LinkStore, LogEntry, NewDelivery, OnceStore, OutboxStore, PruneStats,
    RouteRule, RuleStore, RunStore, ScopeChange, ScopeStatus,
};
use switchboard::tenant::{Connection, ConnectionKey, ConnectionState, Secrets, TenantId};
use switchboard::{
    AttributeRecord, AttributeStore, Attributes, ErrorKind, Event, Filter, MemoryStore, Shutdown,
    Store,
};

// ---------------------------------------------------------------------------
// Heap accounting: the large-file test asserts the import's peak heap growth.

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
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's arguments.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// The large-file test measures the heap alone: it takes this for writing, every
/// other test for reading.
static HEAVY: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

// ---------------------------------------------------------------------------
// The in-process S3 server.

const ACCESS_KEY: &str = "AKIATESTSWITCHBOARD";
const SECRET_KEY: &str = "test-secret-key-1234567890";
const BUCKET: &str = "exports";
const TENANT_KEY: &str = "AKIATENANTACME";
const TENANT_SECRET: &str = "tenant-secret-key-0987654321";

struct S3Server {
    endpoint: String,
    root: tempfile::TempDir,
    /// GET requests still to answer with `503 SlowDown`.
    slow_downs: Arc<AtomicUsize>,
    /// When set, objects under `success/` report a non-MD5 ETag, as SSE-KMS
    /// and SSE-C buckets do.
    kms_etags: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl S3Server {
    async fn start() -> S3Server {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        let mut auth = s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY);
        // A second key pair: a tenant's own credentials, held in its connection.
        auth.register(TENANT_KEY.to_owned(), TENANT_SECRET.into());
        builder.set_auth(auth);
        let service = builder.build();
        let slow_downs = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let faults = Arc::clone(&slow_downs);
        let kms_etags = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let kms = Arc::clone(&kms_etags);
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                let faults = Arc::clone(&faults);
                let kms = Arc::clone(&kms);
                let handler = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| {
                        let service = service.clone();
                        let throttle = req.method() == http::Method::GET
                            && faults
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok();
                        let mangle =
                            kms.load(Ordering::SeqCst) && req.uri().path().contains("/success/");
                        async move {
                            if throttle {
                                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
                                return Ok(http::Response::builder()
                                    .status(503)
                                    .header("content-type", "application/xml")
                                    .body(s3s::Body::from(body.to_owned()))
                                    .unwrap());
                            }
                            let mut response = service.call(req.map(s3s::Body::from)).await?;
                            if mangle && response.headers().contains_key("etag") {
                                response.headers_mut().insert(
                                    "etag",
                                    http::HeaderValue::from_static(
                                        "\"kms0a1b2c3d4e5f60718293a4b5c6d7e8f\"",
                                    ),
                                );
                            }
                            Ok::<_, s3s::HttpError>(response)
                        }
                    },
                );
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), handler)
                        .await;
                });
            }
        });
        S3Server {
            endpoint,
            root,
            slow_downs,
            kms_etags,
            task,
        }
    }

    /// A client for the test's own uploads.
    fn client(&self) -> impl ObjectStore {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .unwrap()
    }

    async fn put(&self, key: &str, body: impl Into<Vec<u8>>) {
        self.client()
            .put(&ObjectPath::from(key), body.into().into())
            .await
            .unwrap();
    }

    fn exists(&self, key: &str) -> bool {
        self.root.path().join(BUCKET).join(key).is_file()
    }

    /// The file names in a folder of the bucket (sorted).
    fn files_in(&self, folder: &str) -> Vec<String> {
        files_in(&self.root.path().join(BUCKET).join(folder))
    }

    fn config(&self, source: &str) -> S3Config {
        S3Config::new(source, "Email")
            .unwrap()
            .endpoint(&self.endpoint)
            .region("us-east-1")
    }

    fn connector(&self) -> S3Connector {
        S3Connector::new(Credentials::access_key(ACCESS_KEY, SECRET_KEY)).retry(fast_retry())
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 4,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        total_timeout: Duration::from_secs(20),
    }
}

const USERS_CSV: &str = "Email,Plan,Support Tickets,Notes\n\
ada@example.com,Premium,3,vip\n\
bob@example.com,Basic,0,\n\
cy@example.com,Premium,7,\"late, payer\"\n";

fn users_config(server: &S3Server, source: &str) -> S3Config {
    server
        .config(source)
        .attribute_as("Plan", "plan")
        .attribute_as("Support Tickets", "support_tickets")
}

fn hourly() -> Schedule {
    Schedule::Interval(Duration::from_secs(3600))
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 10, 30, 0).unwrap()
}

/// A scheduler with one S3 job, its integration saved, on a fixed clock.
async fn scheduler_with(
    store: Arc<dyn Store>,
    connector: &S3Connector,
    integrations: &[IntegrationConfig],
    now: DateTime<Utc>,
) -> Scheduler {
    let mut scheduler = Scheduler::new(Arc::clone(&store)).clock(move || now);
    for integration in integrations {
        scheduler = scheduler.job(Arc::new(
            connector.job(&integration.name, Arc::clone(&store)),
        ));
    }
    for integration in integrations {
        scheduler.put_integration(integration).await.unwrap();
    }
    scheduler
}

/// Every store the suite runs against.
fn stores() -> Vec<(&'static str, Arc<dyn Store>)> {
    #[allow(unused_mut)]
    let mut stores: Vec<(&'static str, Arc<dyn Store>)> =
        vec![("memory", Arc::new(MemoryStore::new()))];
    #[cfg(feature = "sqlite")]
    stores.push((
        "sqlite",
        Arc::new(switchboard::SqliteStore::open_in_memory().unwrap()),
    ));
    stores
}

async fn attrs(store: &dyn Store, user: &str) -> Option<Attributes> {
    store.get(&d(), user).await.unwrap()
}

/// The default tenant.
fn d() -> TenantId {
    TenantId::default()
}

// ---------------------------------------------------------------------------
// Discovery.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_returns_the_header_and_sample_rows() {
    let _shared = HEAVY.read().await;
    let server = S3Server::start().await;
    server.put("hr/users.csv", USERS_CSV).await;
    let config = users_config(&server, "s3://exports/hr/users.csv");
    let found = server.connector().discover(&config, 2).await.unwrap();
    assert_eq!(found.object, "s3://exports/hr/users.csv");
    assert_eq!(found.headers, ["Email", "Plan", "Support Tickets", "Notes"]);
    assert_eq!(found.rows.len(), 2);
    assert_eq!(found.rows[0], ["ada@example.com", "Premium", "3", "vip"]);
    assert!(found.more_rows);
    assert_eq!(found.size, USERS_CSV.len() as u64);
    assert!(found.etag.is_some());
    assert_eq!(found.matching_files, 1);

    // A glob samples the oldest match and counts them all; other names and
    // sub-folders are not matches.
    server.put("hr/users-2.csv", USERS_CSV).await;
    server.put("hr/readme.txt", "not data").await;
    server.put("hr/success/old.csv", USERS_CSV).await;
    let glob = users_config(&server, "s3://exports/hr/*.csv");
    let found = server.connector().discover(&glob, 10).await.unwrap();
    assert_eq!(found.matching_files, 2);
    assert_eq!(found.object, "s3://exports/hr/users.csv");
    assert_eq!(found.rows.len(), 3);
    assert!(!found.more_rows);

    // Before any column is chosen, discovery works without a mapping.
    let bare = S3Config::new("s3://exports/hr/users.csv", "")
        .unwrap()
        .endpoint(&server.endpoint);
    assert_eq!(
        server
            .connector()
            .discover(&bare, 1)
            .await
            .unwrap()
            .headers
            .len(),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_errors_say_what_is_wrong() {
    let _shared = HEAVY.read().await;
    let server = S3Server::start().await;
    server.put("users.csv", USERS_CSV).await;
    server
        .put("semicolon.csv", "Email;Plan;Seats\na@x.com;Basic;1\n")
        .await;
    server
        .put(
            "archive.csv",
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03".to_vec(),
        )
        .await;
    let connector = server.connector();

    let missing_bucket = users_config(&server, "s3://no-such-bucket/users.csv");
    let e = connector.discover(&missing_bucket, 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(
        e.message().contains("\"no-such-bucket\" does not exist"),
        "{e}"
    );

    let missing_key = users_config(&server, "s3://exports/nope.csv");
    let e = connector.discover(&missing_key, 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.message().contains("no such key"), "{e}");
    assert!(e.message().contains("s3://exports/nope.csv"), "{e}");

    let no_match = users_config(&server, "s3://exports/*.tsv");
    let e = connector.discover(&no_match, 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.message().contains("no file matches"), "{e}");

    let wrong_secret =
        S3Connector::new(Credentials::access_key(ACCESS_KEY, "wrong-secret")).retry(fast_retry());
    let e = wrong_secret
        .discover(&users_config(&server, "s3://exports/users.csv"), 1)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
    assert!(e.message().contains("access denied"), "{e}");
    assert!(e.message().contains("secret"), "{e}");
    assert!(
        !e.to_string().contains("wrong-secret"),
        "the secret leaked: {e}"
    );
    assert!(!e.is_temporary());

    let unknown_key = S3Connector::new(Credentials::access_key("AKIAUNKNOWN", SECRET_KEY));
    let e = unknown_key
        .discover(&users_config(&server, "s3://exports/users.csv"), 1)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
    assert!(e.message().contains("access key id"), "{e}");

    let gz = users_config(&server, "s3://exports/archive.csv");
    let e = connector.discover(&gz, 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(
        e.message().contains("cannot be imported") && e.message().contains("gzip"),
        "{e}"
    );

    let missing_column = server.config("s3://exports/users.csv").attribute("Seats");
    let e = connector.discover(&missing_column, 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.message().contains("\"Seats\""), "{e}");
    assert!(
        e.message().contains("\"Support Tickets\""),
        "lists the columns there are: {e}"
    );

    let semicolons = server
        .config("s3://exports/semicolon.csv")
        .attribute("Plan");
    let e = connector.discover(&semicolons, 1).await.unwrap_err();
    assert!(e.message().contains("';'-separated"), "{e}");
    let fixed = semicolons.delimiter(';');
    assert_eq!(
        connector.discover(&fixed, 1).await.unwrap().headers,
        ["Email", "Plan", "Seats"]
    );
}

// ---------------------------------------------------------------------------
// Runs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_file_is_imported_recorded_and_moved_to_success() {
    let _shared = HEAVY.read().await;
    for (store_name, store) in stores() {
        let server = S3Server::start().await;
        server.put("hr/users.csv", USERS_CSV).await;
        let integration = users_config(&server, "s3://exports/hr/users.csv")
            .integration("hr-users", hourly())
            .unwrap();
        let connector = server.connector();
        let scheduler = scheduler_with(Arc::clone(&store), &connector, &[integration], t0()).await;

        let run = scheduler.run_now(&d(), "hr-users").await.unwrap();
        assert_eq!(run.outcome, RunOutcome::Success, "{store_name}: {run:?}");
        assert_eq!(
            (run.rows_read, run.rows_imported, run.rows_rejected),
            (3, 3, 0)
        );
        assert_eq!(run.properties_imported, 2);
        assert!(run.row_errors.is_empty());

        let ada = attrs(store.as_ref(), "ada@example.com").await.unwrap();
        assert_eq!(ada["plan"], "Premium");
        assert_eq!(ada["support_tickets"], "3");
        assert!(
            !ada.contains_key("Notes"),
            "unmapped columns are not imported"
        );
        let premium = store
            .query(
                &d(),
                &Filter::parse("plan = \"Premium\" and support_tickets > 2").unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(premium, ["ada@example.com", "cy@example.com"]);

        let details = S3RunDetails::from_run(&run);
        assert_eq!(details.file.as_deref(), Some("s3://exports/hr/users.csv"));
        assert_eq!(
            details.moved_to.as_deref(),
            Some("s3://exports/hr/success/users-20250301T103000Z.csv")
        );
        assert!(!server.exists("hr/users.csv"));
        assert_eq!(
            server.files_in("hr/success"),
            ["users-20250301T103000Z.csv"]
        );
        assert_eq!(
            std::fs::read_to_string(
                server
                    .root
                    .path()
                    .join("exports/hr/success/users-20250301T103000Z.csv")
            )
            .unwrap(),
            USERS_CSV,
            "the moved copy is the file"
        );

        // The run history has it; the next run finds no new file.
        let history = store.runs(&d(), "hr-users", 10).await.unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].outcome, RunOutcome::Success);
        let next = scheduler.run_now(&d(), "hr-users").await.unwrap();
        assert_eq!(next.outcome, RunOutcome::NoNewFile);
        assert!(
            next.error.as_deref().unwrap().contains("no such key"),
            "{next:?}"
        );
        assert_eq!(next.rows_read, 0);
        assert_eq!(S3RunDetails::from_run(&next).file, None);

        // A rerun in the same second never overwrites an earlier move.
        server.put("hr/users.csv", USERS_CSV).await;
        let again = scheduler.run_now(&d(), "hr-users").await.unwrap();
        let moved = S3RunDetails::from_run(&again).moved_to.unwrap();
        assert!(
            moved.ends_with(&format!("users-20250301T103000Z-run{}.csv", again.id)),
            "{moved}"
        );
        assert_eq!(server.files_in("hr/success").len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_bad_file_is_partial_and_lists_the_rejected_lines() {
    let _shared = HEAVY.read().await;
    let server = S3Server::start().await;
    let csv = "Email,Plan,Support Tickets\n\
        ada@example.com,Premium,3\n\
        ,Basic,1\n\
        bob@example.com,Basic\n\
        cy@example.com,Premium,7\n";
    server.put("users.csv", csv).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let integration = users_config(&server, "s3://exports/users.csv")
        .integration("hr", hourly())
        .unwrap();
    let scheduler = scheduler_with(
        Arc::clone(&store),
        &server.connector(),
        &[integration],
        t0(),
    )
    .await;

    let run = scheduler.run_now(&d(), "hr").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Partial, "{run:?}");
    assert_eq!(
        (run.rows_read, run.rows_imported, run.rows_rejected),
        (4, 2, 2)
    );
    assert_eq!(run.row_errors.len(), 2);
    assert!(
        run.row_errors[0].starts_with("line 3: ") && run.row_errors[0].contains("empty"),
        "{:?}",
        run.row_errors
    );
    assert!(
        run.row_errors[1].starts_with("line 4: ") && run.row_errors[1].contains("fields"),
        "{:?}",
        run.row_errors
    );
    assert!(attrs(store.as_ref(), "ada@example.com").await.is_some());
    assert!(attrs(store.as_ref(), "cy@example.com").await.is_some());
    assert!(attrs(store.as_ref(), "bob@example.com").await.is_none());
    // Good rows were imported, so the file counts as processed.
    assert_eq!(server.files_in("success").len(), 1);
    assert!(server.files_in("failed").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_whose_rows_are_all_rejected_fails_and_moves_to_failed() {
    let _shared = HEAVY.read().await;
    let server = S3Server::start().await;
    server
        .put(
            "users.csv",
            "Email,Plan,Support Tickets\n,Basic,1\n,Premium,2\n",
        )
        .await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let integration = users_config(&server, "s3://exports/users.csv")
        .integration("hr", hourly())
        .unwrap();
    let scheduler = scheduler_with(
        Arc::clone(&store),
        &server.connector(),
        &[integration],
        t0(),
    )
    .await;
    let run = scheduler.run_now(&d(), "hr").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Failed);
    assert_eq!(
        (run.rows_read, run.rows_imported, run.rows_rejected),
        (2, 0, 2)
    );
    assert!(run.error.unwrap().contains("all 2 rows were rejected"));
    assert_eq!(server.files_in("failed"), ["users-20250301T103000Z.csv"]);
    assert!(!server.exists("users.csv"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_column_fails_the_run_writes_nothing_and_moves_to_failed() {
    let _shared = HEAVY.read().await;
    for (store_name, store) in stores() {
        let server = S3Server::start().await;
        server.put("users.csv", USERS_CSV).await;
        let integration = server
            .config("s3://exports/users.csv")
            .attribute_as("Plan", "plan")
            .attribute("Seats")
            .integration("hr", hourly())
            .unwrap();
        let scheduler = scheduler_with(
            Arc::clone(&store),
            &server.connector(),
            &[integration],
            t0(),
        )
        .await;
        let run = scheduler.run_now(&d(), "hr").await.unwrap();
        assert_eq!(run.outcome, RunOutcome::Failed, "{store_name}");
        let error = run.error.clone().unwrap();
        assert!(
            error.contains("\"Seats\"") && error.contains("nothing was written"),
            "{error}"
        );
        assert!(
            error.contains("failed/users-20250301T103000Z.csv"),
            "{error}"
        );
        assert_eq!(run.rows_imported, 0);
        assert!(attrs(store.as_ref(), "ada@example.com").await.is_none());
        assert_eq!(server.files_in("failed"), ["users-20250301T103000Z.csv"]);
        assert_eq!(
            S3RunDetails::from_run(&run).moved_to.as_deref(),
            Some("s3://exports/failed/users-20250301T103000Z.csv")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_broken_mid_stream_writes_nothing() {
    let _shared = HEAVY.read().await;
    // 2,000 good rows, then an unterminated quote that swallows more than the
    // 1 MiB record cap: reading stops there. The validation pass finds it before
    // a single row is written.
    let server = S3Server::start().await;
    let mut csv = String::from("Email,Plan,Support Tickets\n");
    for i in 0..2000 {
        csv.push_str(&format!("user{i}@example.com,Basic,{i}\n"));
    }
    csv.push_str("broken@example.com,\"Premium,1\n");
    csv.push_str(&"x".repeat(1_300_000));
    server.put("users.csv", csv).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let integration = users_config(&server, "s3://exports/users.csv")
        .integration("hr", hourly())
        .unwrap();
    let scheduler = scheduler_with(
        Arc::clone(&store),
        &server.connector(),
        &[integration],
        t0(),
    )
    .await;
    let run = scheduler.run_now(&d(), "hr").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Failed);
    let error = run.error.unwrap();
    assert!(
        error.contains("line 2002") && error.contains("nothing was written"),
        "{error}"
    );
    assert!(
        attrs(store.as_ref(), "user0@example.com").await.is_none(),
        "half-written"
    );
    assert_eq!(server.files_in("failed").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_is_permanent_reported_and_leaves_the_file() {
    let _shared = HEAVY.read().await;
    let server = S3Server::start().await;
    server.put("users.csv", USERS_CSV).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let integration = users_config(&server, "s3://exports/users.csv")
        .integration("hr", hourly())
        .unwrap();
    let wrong =
        S3Connector::new(Credentials::access_key(ACCESS_KEY, "not-the-secret")).retry(fast_retry());
    let scheduler = scheduler_with(
        Arc::clone(&store),
        &wrong,
        std::slice::from_ref(&integration),
        t0(),
    )
    .await;
    let started = std::time::Instant::now();
    let run = scheduler.run_now(&d(), "hr").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "access denied is not retried"
    );
    assert_eq!(run.outcome, RunOutcome::Failed);
    let error = run.error.unwrap();
    assert!(
        error.contains("access denied") && error.contains("secret"),
        "{error}"
    );
    assert!(
        server.exists("users.csv"),
        "the file stays for the next run"
    );
    assert!(server.files_in("failed").is_empty());

    // A missing bucket is reported the same way.
    let gone = users_config(&server, "s3://other-bucket/users.csv")
        .integration("gone", hourly())
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let scheduler = scheduler_with(Arc::clone(&store), &server.connector(), &[gone], t0()).await;
    let run = scheduler.run_now(&d(), "gone").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Failed);
    assert!(
        run.error
            .unwrap()
            .contains("\"other-bucket\" does not exist")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_with_backoff() {
    let _shared = HEAVY.read().await;
    let server = S3Server::start().await;
    server.put("users.csv", USERS_CSV).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let integration = users_config(&server, "s3://exports/users.csv")
        .integration("hr", hourly())
        .unwrap();
    let scheduler = scheduler_with(
        Arc::clone(&store),
        &server.connector(),
        &[integration],
        t0(),
    )
    .await;

    server.slow_downs.store(3, Ordering::SeqCst);
    let run = scheduler.run_now(&d(), "hr").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Success, "{run:?}");
    assert_eq!(
        server.slow_downs.load(Ordering::SeqCst),
        0,
        "the 503s were answered"
    );
    assert_eq!(run.rows_imported, 3);

    // When S3 keeps throttling past the retry budget the run fails as temporary
    // and the file stays.
    server.put("users.csv", USERS_CSV).await;
    server.slow_downs.store(1000, Ordering::SeqCst);
    let run = scheduler.run_now(&d(), "hr").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Failed);
    let error = run.error.unwrap();
    assert!(
        error.contains("failed after retries") && error.contains("temporary"),
        "{error}"
    );
    assert!(server.exists("users.csv"));
    server.slow_downs.store(0, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attribute_cap_is_enforced_before_anything_is_written() {
    let _shared = HEAVY.read().await;
    let server = S3Server::start().await;
    server.put("users.csv", USERS_CSV).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new().with_attribute_cap(1));
    let integration = users_config(&server, "s3://exports/users.csv")
        .integration("hr", hourly())
        .unwrap();
    let scheduler = scheduler_with(
        Arc::clone(&store),
        &server.connector(),
        &[integration],
        t0(),
    )
    .await;
    let run = scheduler.run_now(&d(), "hr").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Failed);
    let error = run.error.unwrap();
    assert!(
        error.contains("over the cap of 1") && error.contains("nothing was written"),
        "{error}"
    );
    assert!(attrs(store.as_ref(), "ada@example.com").await.is_none());
    assert!(
        server.exists("users.csv"),
        "the file is fine: it stays until the cap or mapping is fixed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_in_place_lets_two_integrations_read_one_file() {
    let _shared = HEAVY.read().await;
    for (store_name, store) in stores() {
        let server = S3Server::start().await;
        server.put("shared/users.csv", USERS_CSV).await;
        let plans = server
            .config("s3://exports/shared/users.csv")
            .attribute_as("Plan", "plan")
            .after_import(AfterImport::KeepInPlace)
            .integration("plans", hourly())
            .unwrap();
        let tickets = server
            .config("s3://exports/shared/users.csv")
            .attribute_as("Support Tickets", "tickets")
            .after_import(AfterImport::KeepInPlace)
            .integration("tickets", hourly())
            .unwrap();
        let scheduler = scheduler_with(
            Arc::clone(&store),
            &server.connector(),
            &[plans, tickets],
            t0(),
        )
        .await;

        let runs = scheduler.run_due(t0()).await.unwrap();
        assert_eq!(runs.len(), 2, "{store_name}");
        for run in &runs {
            assert_eq!(run.outcome, RunOutcome::Success, "{store_name}: {run:?}");
            assert_eq!(run.rows_imported, 3);
            let details = S3RunDetails::from_run(run);
            assert!(details.kept_in_place && details.moved_to.is_none());
        }
        let ada = attrs(store.as_ref(), "ada@example.com").await.unwrap();
        assert_eq!(
            (ada["plan"].as_str(), ada["tickets"].as_str()),
            ("Premium", "3")
        );
        assert!(server.exists("shared/users.csv"));
        assert!(server.files_in("shared/success").is_empty());

        // The same version is not imported again by either integration…
        for name in ["plans", "tickets"] {
            let run = scheduler.run_now(&d(), name).await.unwrap();
            assert_eq!(run.rows_read, 0, "{store_name} {name}");
            assert_eq!(run.outcome, RunOutcome::NoNewFile, "{store_name} {name}");
            assert_eq!(
                run.error, None,
                "a glob-less keep-in-place source that was read is no error"
            );
            assert_eq!(S3RunDetails::from_run(&run).file, None);
        }
        // …but a new version (new ETag) is.
        server
            .put(
                "shared/users.csv",
                "Email,Plan,Support Tickets\nada@example.com,Basic,4\n",
            )
            .await;
        for name in ["plans", "tickets"] {
            let run = scheduler.run_now(&d(), name).await.unwrap();
            assert_eq!(run.rows_imported, 1, "{store_name} {name}");
        }
        let ada = attrs(store.as_ref(), "ada@example.com").await.unwrap();
        assert_eq!(
            (ada["plan"].as_str(), ada["tickets"].as_str()),
            ("Basic", "4")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_glob_imports_the_oldest_file_per_run_and_skips_the_rest() {
    let _shared = HEAVY.read().await;
    let server = S3Server::start().await;
    server
        .put(
            "daily/users-b.csv",
            "Email,Plan,Support Tickets\nada@example.com,Basic,1\n",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // S3 times have 1 s resolution; the older file goes first whatever its name
    server
        .put(
            "daily/users-a.csv",
            "Email,Plan,Support Tickets\nada@example.com,Premium,2\n",
        )
        .await;
    server.put("daily/notes.txt", "ignore me").await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let integration = users_config(&server, "s3://exports/daily/*.csv")
        .integration("daily", hourly())
        .unwrap();
    let scheduler = scheduler_with(
        Arc::clone(&store),
        &server.connector(),
        &[integration],
        t0(),
    )
    .await;

    let first = scheduler.run_now(&d(), "daily").await.unwrap();
    let details = S3RunDetails::from_run(&first);
    assert_eq!(
        details.file.as_deref(),
        Some("s3://exports/daily/users-b.csv")
    );
    assert_eq!(details.pending, 1);
    assert_eq!(
        attrs(store.as_ref(), "ada@example.com").await.unwrap()["plan"],
        "Basic"
    );

    let second = scheduler.run_now(&d(), "daily").await.unwrap();
    assert_eq!(
        S3RunDetails::from_run(&second).file.as_deref(),
        Some("s3://exports/daily/users-a.csv")
    );
    assert_eq!(
        attrs(store.as_ref(), "ada@example.com").await.unwrap()["plan"],
        "Premium"
    );

    let third = scheduler.run_now(&d(), "daily").await.unwrap();
    assert_eq!(
        S3RunDetails::from_run(&third).file,
        None,
        "success/ is never re-imported"
    );
    assert_eq!(server.files_in("daily"), ["notes.txt"]);
    assert_eq!(server.files_in("daily/success").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_folder_works_the_same_way() {
    let _shared = HEAVY.read().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.csv"), USERS_CSV).unwrap();
    let source = format!("file://{}/", dir.path().display());
    let config = S3Config::new(&source, "Email")
        .unwrap()
        .attribute_as("Plan", "plan");
    let connector = S3Connector::from_env();
    let found = connector.discover(&config, 5).await.unwrap();
    assert_eq!(found.rows.len(), 3);

    let (_, store) = stores().pop().unwrap();
    let integration = config.integration("local", hourly()).unwrap();
    let scheduler = scheduler_with(Arc::clone(&store), &connector, &[integration], t0()).await;
    let run = scheduler.run_now(&d(), "local").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Success, "{run:?}");
    assert_eq!(run.rows_imported, 3);
    assert_eq!(files_in(dir.path()), Vec::<String>::new());
    assert_eq!(
        files_in(&dir.path().join("success")),
        ["users-20250301T103000Z.csv"]
    );

    let missing = S3Config::new("file:///definitely/not/here/", "Email")
        .unwrap()
        .attribute("Plan");
    let e = connector.discover(&missing, 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.message().contains("/definitely/not/here"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_streams_in_bounded_memory() {
    let _alone = HEAVY.write().await;
    // ~48 MB of CSV, 200,000 rows over 1,000 users, written straight into the
    // server's folder. The import downloads, validates and writes it; the heap
    // never grows by more than a fraction of the file.
    let server = S3Server::start().await;
    let path = server.root.path().join(BUCKET).join("big.csv");
    let rows = 200_000u64;
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        writeln!(out, "Email,Plan,Support Tickets,Notes").unwrap();
        let filler = "n".repeat(200);
        for i in 0..rows {
            writeln!(
                out,
                "user{}@example.com,Plan {},{},{filler}",
                i % 1000,
                i % 7,
                i
            )
            .unwrap();
        }
        out.flush().unwrap();
    }
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 45_000_000, "{size}");

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let integration = users_config(&server, "s3://exports/big.csv")
        .integration("big", hourly())
        .unwrap();
    let scheduler = scheduler_with(
        Arc::clone(&store),
        &server.connector(),
        &[integration],
        t0(),
    )
    .await;

    let baseline = CURRENT.load(Ordering::SeqCst);
    PEAK.store(baseline, Ordering::SeqCst);
    let run = scheduler.run_now(&d(), "big").await.unwrap();
    let growth = PEAK.load(Ordering::SeqCst).saturating_sub(baseline);
    eprintln!(
        "peak heap growth: {} KiB for a {} KiB file",
        growth >> 10,
        size >> 10
    );

    assert_eq!(run.outcome, RunOutcome::Success, "{run:?}");
    assert_eq!(run.rows_imported, rows);
    assert_eq!(S3RunDetails::from_run(&run).duplicate_user_ids, rows - 1000);
    assert!(
        growth < 16 << 20,
        "peak heap growth {} MB for a {} MB file",
        growth >> 20,
        size >> 20
    );
    assert!(!path.exists());
}

// ---------------------------------------------------------------------------
// A crash mid-run.

/// A store whose upserts stop forever after `allowed` batches: a process that
/// dies while writing.
struct HangingStore {
    inner: MemoryStore,
    allowed: AtomicUsize,
    written: AtomicUsize,
    /// Fail (a store error) instead of hanging once `allowed` is used up.
    fail: bool,
}

impl HangingStore {
    /// Counts a batch down `allowed`; past it, fails or hangs.
    async fn gate(&self) -> switchboard::Result<()> {
        if self
            .allowed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            if self.fail {
                return Err(switchboard::Error::new(ErrorKind::Store, "disk full"));
            }
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

#[async_trait]
impl AttributeStore for HangingStore {
    async fn upsert(
        &self,
        tenant: &TenantId,
        batch: &[AttributeRecord],
    ) -> switchboard::Result<UpsertStats> {
        self.gate().await?;
        let stats = self.inner.upsert(tenant, batch).await?;
        self.written.fetch_add(batch.len(), Ordering::SeqCst);
        Ok(stats)
    }
    async fn write_import(
        &self,
        tenant: &TenantId,
        run: &switchboard::attributes::ImportRun,
        batch: &[AttributeRecord],
    ) -> switchboard::Result<UpsertStats> {
        self.gate().await?;
        let stats = self.inner.write_import(tenant, run, batch).await?;
        self.written.fetch_add(batch.len(), Ordering::SeqCst);
        Ok(stats)
    }
    async fn begin_import(
        &self,
        tenant: &TenantId,
        integration: &str,
        mode: switchboard::attributes::ImportMode,
        names: &[String],
    ) -> switchboard::Result<switchboard::attributes::ImportRun> {
        self.inner
            .begin_import(tenant, integration, mode, names)
            .await
    }
    async fn finish_import(
        &self,
        tenant: &TenantId,
        run: &switchboard::attributes::ImportRun,
    ) -> switchboard::Result<switchboard::attributes::RemovedAttributes> {
        self.inner.finish_import(tenant, run).await
    }
    async fn release_names(
        &self,
        tenant: &TenantId,
        integration: &str,
        keep: &[String],
    ) -> switchboard::Result<switchboard::attributes::RemovedAttributes> {
        self.inner.release_names(tenant, integration, keep).await
    }
    async fn delete_user(&self, tenant: &TenantId, u: &str) -> switchboard::Result<u64> {
        self.inner.delete_user(tenant, u).await
    }
    async fn delete_value(&self, tenant: &TenantId, u: &str, n: &str) -> switchboard::Result<bool> {
        self.inner.delete_value(tenant, u, n).await
    }
    async fn delete_name(
        &self,
        tenant: &TenantId,
        n: &str,
    ) -> switchboard::Result<switchboard::attributes::RemovedAttributes> {
        self.inner.delete_name(tenant, n).await
    }
    async fn names(
        &self,
        tenant: &TenantId,
    ) -> switchboard::Result<Vec<switchboard::attributes::AttributeName>> {
        self.inner.names(tenant).await
    }
    async fn query_page(
        &self,
        tenant: &TenantId,
        f: &Filter,
        after: Option<&str>,
        limit: usize,
    ) -> switchboard::Result<switchboard::attributes::AttributePage> {
        self.inner.query_page(tenant, f, after, limit).await
    }
    async fn get(
        &self,
        tenant: &TenantId,
        user_id: &str,
    ) -> switchboard::Result<Option<Attributes>> {
        self.inner.get(tenant, user_id).await
    }
    async fn query(&self, tenant: &TenantId, filter: &Filter) -> switchboard::Result<Vec<String>> {
        self.inner.query(tenant, filter).await
    }
}

#[async_trait]
impl OutboxStore for HangingStore {
    async fn enqueue(
        &self,
        event: &Event,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
    ) -> switchboard::Result<EnqueueOutcome> {
        self.inner.enqueue(event, deliveries, now).await
    }
    async fn claim(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> switchboard::Result<Vec<ClaimedDelivery>> {
        self.inner.claim(now, lease, limit).await
    }
    async fn complete(
        &self,
        completions: &[Completion],
        now: DateTime<Utc>,
    ) -> switchboard::Result<()> {
        self.inner.complete(completions, now).await
    }
    async fn renew(
        &self,
        claims: &[(DeliveryId, i64)],
        now: DateTime<Utc>,
        lease: Duration,
    ) -> switchboard::Result<u64> {
        self.inner.renew(claims, now, lease).await
    }
    async fn release(
        &self,
        claims: &[(DeliveryId, i64)],
        now: DateTime<Utc>,
    ) -> switchboard::Result<()> {
        self.inner.release(claims, now).await
    }
    async fn set_scope(
        &self,
        tenant: &TenantId,
        scope: &str,
        change: ScopeChange,
        now: DateTime<Utc>,
    ) -> switchboard::Result<u64> {
        self.inner.set_scope(tenant, scope, change, now).await
    }
    async fn scopes(&self) -> switchboard::Result<Vec<ScopeStatus>> {
        self.inner.scopes().await
    }
    async fn next_due(&self) -> switchboard::Result<Option<DateTime<Utc>>> {
        self.inner.next_due().await
    }
    async fn pending(&self) -> switchboard::Result<u64> {
        self.inner.pending().await
    }
    async fn dead_letters(
        &self,
        tenant: Option<&TenantId>,
        limit: usize,
    ) -> switchboard::Result<Vec<DeadLetter>> {
        self.inner.dead_letters(tenant, limit).await
    }
    async fn replay(&self, id: DeliveryId, now: DateTime<Utc>) -> switchboard::Result<()> {
        self.inner.replay(id, now).await
    }
    async fn delivery_log(&self, id: DeliveryId) -> switchboard::Result<Vec<LogEntry>> {
        self.inner.delivery_log(id).await
    }
    async fn delivery_state(&self, id: DeliveryId) -> switchboard::Result<Option<DeliveryState>> {
        self.inner.delivery_state(id).await
    }
    async fn destination_stats(&self) -> switchboard::Result<Vec<DestinationStats>> {
        self.inner.destination_stats().await
    }
    async fn prune(&self, sent_before: DateTime<Utc>) -> switchboard::Result<PruneStats> {
        self.inner.prune(sent_before).await
    }
}

#[async_trait]
impl ConnectionStore for HangingStore {
    async fn put_connection(
        &self,
        connection: &Connection,
        now: DateTime<Utc>,
    ) -> switchboard::Result<Connection> {
        self.inner.put_connection(connection, now).await
    }
    async fn connection(&self, key: &ConnectionKey) -> switchboard::Result<Option<Connection>> {
        self.inner.connection(key).await
    }
    async fn default_connection(
        &self,
        tenant: &TenantId,
        platform: &str,
    ) -> switchboard::Result<Option<Connection>> {
        self.inner.default_connection(tenant, platform).await
    }
    async fn connections(&self, tenant: Option<&TenantId>) -> switchboard::Result<Vec<Connection>> {
        self.inner.connections(tenant).await
    }
    async fn delete_connection(&self, key: &ConnectionKey) -> switchboard::Result<bool> {
        self.inner.delete_connection(key).await
    }
    async fn set_connection_state(
        &self,
        key: &ConnectionKey,
        state: &ConnectionState,
        now: DateTime<Utc>,
    ) -> switchboard::Result<bool> {
        self.inner.set_connection_state(key, state, now).await
    }
    async fn swap_secrets(
        &self,
        key: &ConnectionKey,
        expected_revision: u64,
        secrets: &Secrets,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> switchboard::Result<Option<Connection>> {
        self.inner
            .swap_secrets(key, expected_revision, secrets, expires_at, now)
            .await
    }
}

#[async_trait]
impl LinkStore for HangingStore {
    async fn put_link(&self, link: &IdentityLink) -> switchboard::Result<()> {
        self.inner.put_link(link).await
    }
    async fn link(
        &self,
        tenant: &TenantId,
        platform: &str,
        user_id: &str,
    ) -> switchboard::Result<Option<IdentityLink>> {
        self.inner.link(tenant, platform, user_id).await
    }
    async fn links(
        &self,
        tenant: &TenantId,
        platform: &str,
    ) -> switchboard::Result<Vec<IdentityLink>> {
        self.inner.links(tenant, platform).await
    }
    async fn delete_link(
        &self,
        tenant: &TenantId,
        platform: &str,
        user_id: &str,
    ) -> switchboard::Result<bool> {
        self.inner.delete_link(tenant, platform, user_id).await
    }
}

#[async_trait]
impl RunStore for HangingStore {
    async fn put_integration(&self, config: &IntegrationConfig) -> switchboard::Result<()> {
        self.inner.put_integration(config).await
    }
    async fn integrations(
        &self,
        tenant: Option<&TenantId>,
    ) -> switchboard::Result<Vec<IntegrationConfig>> {
        self.inner.integrations(tenant).await
    }
    async fn delete_integration(&self, tenant: &TenantId, name: &str) -> switchboard::Result<bool> {
        self.inner.delete_integration(tenant, name).await
    }
    async fn start_run(
        &self,
        tenant: &TenantId,
        integration: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> switchboard::Result<Option<RunRecord>> {
        self.inner.start_run(tenant, integration, now, lease).await
    }
    async fn renew_run(
        &self,
        run_id: i64,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> switchboard::Result<bool> {
        self.inner.renew_run(run_id, now, lease).await
    }
    async fn finish_run(&self, run: &RunRecord) -> switchboard::Result<()> {
        self.inner.finish_run(run).await
    }
    async fn runs(
        &self,
        tenant: &TenantId,
        integration: &str,
        limit: usize,
    ) -> switchboard::Result<Vec<RunRecord>> {
        self.inner.runs(tenant, integration, limit).await
    }
}

#[async_trait]
impl RuleStore for HangingStore {
    async fn put_rule(&self, rule: &RouteRule) -> switchboard::Result<()> {
        self.inner.put_rule(rule).await
    }
    async fn rules(&self, tenant: &TenantId) -> switchboard::Result<Vec<RouteRule>> {
        self.inner.rules(tenant).await
    }
}

#[async_trait]
impl OnceStore for HangingStore {
    async fn remember_once(
        &self,
        scope: &str,
        key: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> switchboard::Result<bool> {
        self.inner.remember_once(scope, key, expires_at, now).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_after_a_crash_imports_the_file_that_stayed_in_place() {
    let _shared = HEAVY.read().await;
    let server = S3Server::start().await;
    let mut csv = String::from("Email,Plan,Support Tickets\n");
    for i in 0..1000 {
        csv.push_str(&format!("user{i}@example.com,Basic,{i}\n"));
    }
    server.put("users.csv", csv).await;
    let hanging = Arc::new(HangingStore {
        inner: MemoryStore::new(),
        allowed: AtomicUsize::new(2),
        written: AtomicUsize::new(0),
        fail: false,
    });
    let store: Arc<dyn Store> = hanging.clone();
    let integration = users_config(&server, "s3://exports/users.csv")
        .integration("hr", hourly())
        .unwrap();
    store.put_integration(&integration).await.unwrap();
    let connector = server.connector().batch_size(100);
    let lease = Duration::from_secs(3600);

    // The "process" starts a run under the store's lease and dies while writing:
    // two batches are in, the third never finishes, and the task is gone.
    let run = store
        .start_run(&d(), "hr", t0(), lease)
        .await
        .unwrap()
        .unwrap();
    let job: Arc<S3Import> = Arc::new(connector.job("hr", Arc::clone(&store)));
    let (_trigger, shutdown) = Shutdown::new();
    let mut ctx = RunContext::new(integration.clone(), run.id, run.started_at, shutdown);
    let task = tokio::spawn({
        let job = Arc::clone(&job);
        async move { job.run_once(&mut ctx).await }
    });
    while hanging.written.load(Ordering::SeqCst) < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    let _ = task.await;
    assert_eq!(
        hanging.written.load(Ordering::SeqCst),
        200,
        "half the file was written"
    );
    assert!(server.exists("users.csv"), "the file stays where it was");
    assert!(server.files_in("success").is_empty());
    hanging.allowed.store(usize::MAX, Ordering::SeqCst);

    // While the dead run's lease holds, no other run starts: runs never overlap.
    let early = scheduler_with(
        Arc::clone(&store),
        &connector,
        std::slice::from_ref(&integration),
        t0() + chrono::Duration::minutes(10),
    )
    .await;
    let e = early.run_now(&d(), "hr").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);

    // Once the lease has expired the next run takes over and imports it all.
    let later = t0() + chrono::Duration::hours(2);
    let scheduler = scheduler_with(Arc::clone(&store), &connector, &[integration], later).await;
    let rerun = scheduler.run_now(&d(), "hr").await.unwrap();
    assert_eq!(rerun.outcome, RunOutcome::Success, "{rerun:?}");
    assert_eq!(rerun.rows_imported, 1000);
    assert!(attrs(store.as_ref(), "user999@example.com").await.is_some());
    assert_eq!(server.files_in("success"), ["users-20250301T123000Z.csv"]);
    let history = store.runs(&d(), "hr", 10).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].outcome, RunOutcome::Success);
    assert!(
        matches!(
            history[1].outcome,
            RunOutcome::Failed | RunOutcome::Abandoned
        ),
        "{:?}",
        history[1]
    );
    assert!(
        history[1]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("abandoned")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_read_at_every_run_and_disabled_integrations_do_not_run() {
    let _shared = HEAVY.read().await;
    let server = S3Server::start().await;
    server.put("users.csv", USERS_CSV).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut integration = users_config(&server, "s3://exports/users.csv")
        .integration("hr", hourly())
        .unwrap();
    integration.enabled = false;
    let scheduler = scheduler_with(
        Arc::clone(&store),
        &server.connector(),
        &[integration.clone()],
        t0(),
    )
    .await;
    assert!(scheduler.run_due(t0()).await.unwrap().is_empty());
    assert!(server.exists("users.csv"));

    // Re-enabled with a renamed attribute: the next run uses the new settings.
    let mut changed = server
        .config("s3://exports/users.csv")
        .attribute_as("Plan", "tier")
        .integration("hr", hourly())
        .unwrap();
    changed.enabled = true;
    scheduler.put_integration(&changed).await.unwrap();
    let runs = scheduler.run_due(t0()).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        attrs(store.as_ref(), "ada@example.com").await.unwrap()["tier"],
        "Premium"
    );
}

// ---------------------------------------------------------------------------
// Tenants and their S3 connections.

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).unwrap()
}

/// Stores that can hold connection secrets (sealed with a test keyring).
fn keyed_stores() -> Vec<(&'static str, Arc<dyn Store>)> {
    let keyring = || switchboard::secret::Keyring::generate("test").unwrap();
    #[allow(unused_mut)]
    let mut stores: Vec<(&'static str, Arc<dyn Store>)> = vec![(
        "memory",
        Arc::new(MemoryStore::new().with_keyring(keyring())),
    )];
    #[cfg(feature = "sqlite")]
    stores.push((
        "sqlite",
        Arc::new(
            switchboard::SqliteStore::open_in_memory()
                .unwrap()
                .with_keyring(keyring())
                .unwrap(),
        ),
    ));
    stores
}

/// Acme's connection to the test server with its own key pair.
fn acme_connection(server: &S3Server) -> Connection {
    S3Connection::new(tenant("acme"), "acme-hr", TENANT_KEY, TENANT_SECRET)
        .endpoint(&server.endpoint)
        .region("us-east-1")
        .bucket(BUCKET)
        .build()
        .unwrap()
}

/// Settings that take region and endpoint from the connection.
fn tenant_users_config(source: &str) -> S3Config {
    S3Config::new(source, "Email")
        .unwrap()
        .attribute_as("Plan", "plan")
        .attribute_as("Support Tickets", "support_tickets")
}

/// A connector whose own credentials the server refuses: a run that succeeds
/// used the tenant's connection.
fn connector_with_wrong_keys() -> S3Connector {
    S3Connector::new(Credentials::access_key(ACCESS_KEY, "not-the-secret")).retry(fast_retry())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_integration_reads_with_its_connection_into_its_own_users() {
    let _shared = HEAVY.read().await;
    for (store_name, store) in keyed_stores() {
        let server = S3Server::start().await;
        server.put("acme/users.csv", USERS_CSV).await;
        store
            .put_connection(&acme_connection(&server), t0())
            .await
            .unwrap();
        let integration = tenant_users_config("s3://exports/acme/users.csv")
            .tenant_integration(tenant("acme"), "hr", hourly())
            .unwrap();
        let scheduler = scheduler_with(
            Arc::clone(&store),
            &connector_with_wrong_keys(),
            &[integration],
            t0(),
        )
        .await;
        let run = scheduler.run_now(&tenant("acme"), "hr").await.unwrap();
        assert_eq!(run.outcome, RunOutcome::Success, "{store_name}: {run:?}");
        assert_eq!(run.tenant, tenant("acme"));
        assert_eq!(run.rows_imported, 3);
        assert_eq!(
            store
                .get(&tenant("acme"), "ada@example.com")
                .await
                .unwrap()
                .unwrap()["plan"],
            "Premium"
        );
        assert_eq!(
            store.get(&d(), "ada@example.com").await.unwrap(),
            None,
            "{store_name}: nothing lands in the default tenant"
        );
        let premium = Filter::parse(r#"plan = "Premium""#).unwrap();
        assert_eq!(
            store.query(&tenant("acme"), &premium).await.unwrap(),
            ["ada@example.com", "cy@example.com"]
        );
        assert!(store.query(&d(), &premium).await.unwrap().is_empty());
        assert_eq!(server.files_in("acme/success").len(), 1);
        assert_eq!(
            store.runs(&tenant("acme"), "hr", 10).await.unwrap().len(),
            1
        );
        assert!(store.runs(&d(), "hr", 10).await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_never_gets_the_connectors_keys_nor_another_tenants_connection() {
    let _shared = HEAVY.read().await;
    let server = S3Server::start().await;
    server.put("users.csv", USERS_CSV).await;
    let store: Arc<dyn Store> = Arc::new(
        MemoryStore::new().with_keyring(switchboard::secret::Keyring::generate("t").unwrap()),
    );
    store
        .put_connection(&acme_connection(&server), t0())
        .await
        .unwrap();
    // Globex has no connection; its settings carry the server's endpoint, and
    // the connector holds valid keys (the default tenant's).
    let own = users_config(&server, "s3://exports/users.csv")
        .tenant_integration(tenant("globex"), "hr", hourly())
        .unwrap();
    let borrowed = server
        .config("s3://exports/borrowed/users.csv")
        .attribute_as("Plan", "borrowed_plan")
        .after_import(AfterImport::KeepInPlace)
        .connection("acme-hr")
        .tenant_integration(tenant("globex"), "borrowed", hourly())
        .unwrap();
    let local = S3Config::new("file:///tmp/", "Email")
        .unwrap()
        .attribute("Plan")
        .tenant_integration(tenant("globex"), "local", hourly())
        .unwrap();
    let scheduler = scheduler_with(
        Arc::clone(&store),
        &server.connector(),
        &[own, borrowed, local],
        t0(),
    )
    .await;

    let run = scheduler.run_now(&tenant("globex"), "hr").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Failed);
    assert!(
        run.error.as_deref().unwrap().contains("no S3 connection"),
        "{run:?}"
    );
    let run = scheduler
        .run_now(&tenant("globex"), "borrowed")
        .await
        .unwrap();
    assert_eq!(run.outcome, RunOutcome::Failed);
    let error = run.error.unwrap();
    assert!(
        error.contains("globex has no S3 connection s3:acme-hr"),
        "{error}"
    );
    let run = scheduler.run_now(&tenant("globex"), "local").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Failed);
    assert!(
        run.error
            .unwrap()
            .contains("only available to the default tenant")
    );

    assert!(server.exists("users.csv"), "nothing was read or moved");
    assert!(
        store
            .get(&tenant("globex"), "ada@example.com")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get(&tenant("acme"), "ada@example.com")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_problems_say_what_to_fix() {
    let _shared = HEAVY.read().await;
    let server = S3Server::start().await;
    server.put("users.csv", USERS_CSV).await;
    let store: Arc<dyn Store> = Arc::new(
        MemoryStore::new().with_keyring(switchboard::secret::Keyring::generate("t").unwrap()),
    );
    // A connection for another bucket, and one with a wrong secret.
    let other_bucket = S3Connection::new(tenant("acme"), "acme-other", TENANT_KEY, TENANT_SECRET)
        .endpoint(&server.endpoint)
        .bucket("other-bucket")
        .default_for_platform(false)
        .build()
        .unwrap();
    let wrong = S3Connection::new(tenant("acme"), "acme-wrong", TENANT_KEY, "wrong")
        .endpoint(&server.endpoint)
        .region("us-east-1")
        .default_for_platform(false)
        .build()
        .unwrap();
    for c in [&other_bucket, &wrong] {
        store.put_connection(c, t0()).await.unwrap();
    }
    let connector = connector_with_wrong_keys();
    let config = tenant_users_config("s3://exports/users.csv");
    let e = connector
        .discover_with(&config, &other_bucket, 2)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    assert!(
        e.message().contains("for the bucket \"other-bucket\""),
        "{e}"
    );
    let e = connector
        .discover_with(&config, &wrong, 2)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
    assert!(
        !e.to_string().contains("wrong\""),
        "no secret in errors: {e}"
    );

    // Discovery with the right connection works with the connector's bad keys.
    let found = connector
        .discover_with(&config, &acme_connection(&server), 2)
        .await
        .unwrap();
    assert_eq!(found.headers[0], "Email");

    // A disconnected connection is refused before any request.
    let mut revoked = acme_connection(&server);
    revoked.state = ConnectionState::Disconnected {
        reason: "key rotated".into(),
        since: t0(),
    };
    let e = connector
        .discover_with(&config, &revoked, 2)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    assert!(e.message().contains("key rotated"), "{e}");

    // A run naming the wrong-secret connection fails as access denied and
    // leaves the file.
    let integration = config
        .clone()
        .connection("acme-wrong")
        .tenant_integration(tenant("acme"), "hr", hourly())
        .unwrap();
    let scheduler = scheduler_with(Arc::clone(&store), &connector, &[integration], t0()).await;
    let run = scheduler.run_now(&tenant("acme"), "hr").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Failed);
    assert!(server.exists("users.csv"));
}

/// A CSV with `n` attribute columns named `{prefix}0..` for two users.
fn wide_csv(prefix: &str, n: usize) -> (String, S3Config) {
    let mut header = String::from("Email");
    let mut config = S3Config::new(&format!("s3://exports/{prefix}/wide.csv"), "Email").unwrap();
    for i in 0..n {
        header.push_str(&format!(",{prefix}{i}"));
        config = config.attribute(format!("{prefix}{i}"));
    }
    let mut csv = header + "\n";
    for u in 0..2 {
        csv.push_str(&format!("{prefix}{u}@example.com"));
        for i in 0..n {
            csv.push_str(&format!(",{}", u * i));
        }
        csv.push('\n');
    }
    (csv, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_at_the_attribute_cap_does_not_block_another() {
    let _shared = HEAVY.read().await;
    for (store_name, store) in keyed_stores() {
        let server = S3Server::start().await;
        store
            .put_connection(&acme_connection(&server), t0())
            .await
            .unwrap();
        let globex = S3Connection::new(tenant("globex"), "globex-hr", TENANT_KEY, TENANT_SECRET)
            .endpoint(&server.endpoint)
            .region("us-east-1")
            .build()
            .unwrap();
        store.put_connection(&globex, t0()).await.unwrap();
        let (acme_csv, acme_config) = wide_csv("a", 100);
        let (globex_csv, globex_config) = wide_csv("g", 100);
        server.put("a/wide.csv", acme_csv).await;
        server.put("g/wide.csv", globex_csv).await;
        server
            .put("a/more.csv", "Email,extra\nlate@example.com,1\n")
            .await;
        let more = S3Config::new("s3://exports/a/more.csv", "Email")
            .unwrap()
            .attribute("extra")
            .tenant_integration(tenant("acme"), "more", hourly())
            .unwrap();
        let scheduler = scheduler_with(
            Arc::clone(&store),
            &connector_with_wrong_keys(),
            &[
                acme_config
                    .tenant_integration(tenant("acme"), "wide", hourly())
                    .unwrap(),
                globex_config
                    .tenant_integration(tenant("globex"), "wide", hourly())
                    .unwrap(),
                more,
            ],
            t0(),
        )
        .await;
        let runs = scheduler.run_due(t0()).await.unwrap();
        let by_tenant: Vec<_> = runs
            .iter()
            .map(|r| (r.tenant.as_str(), r.integration.as_str(), r.outcome))
            .collect();
        // "more" may run before or after acme's "wide": one of acme's runs
        // hits the cap, globex's always succeeds.
        let globex_run = runs.iter().find(|r| r.tenant == tenant("globex")).unwrap();
        assert_eq!(
            globex_run.outcome,
            RunOutcome::Success,
            "{store_name}: {by_tenant:?}"
        );
        assert_eq!(globex_run.properties_imported, 100);
        let acme_failed: Vec<_> = runs
            .iter()
            .filter(|r| r.tenant == tenant("acme") && r.outcome == RunOutcome::Failed)
            .collect();
        assert_eq!(acme_failed.len(), 1, "{store_name}: {by_tenant:?}");
        assert!(
            acme_failed[0]
                .error
                .as_deref()
                .unwrap()
                .contains("over the cap of 100"),
            "{:?}",
            acme_failed[0]
        );
        assert!(
            store
                .get(&tenant("globex"), "g1@example.com")
                .await
                .unwrap()
                .is_some()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_in_place_bookkeeping_is_per_tenant() {
    let _shared = HEAVY.read().await;
    let server = S3Server::start().await;
    server.put("shared/users.csv", USERS_CSV).await;
    let store: Arc<dyn Store> = Arc::new(
        MemoryStore::new().with_keyring(switchboard::secret::Keyring::generate("t").unwrap()),
    );
    let globex = S3Connection::new(tenant("globex"), "globex-hr", TENANT_KEY, TENANT_SECRET)
        .endpoint(&server.endpoint)
        .region("us-east-1")
        .build()
        .unwrap();
    for c in [acme_connection(&server), globex] {
        store.put_connection(&c, t0()).await.unwrap();
    }
    // The same integration name and file in two tenants, and the default
    // tenant's with the connector's own keys.
    let config =
        tenant_users_config("s3://exports/shared/users.csv").after_import(AfterImport::KeepInPlace);
    let default_config = users_config(&server, "s3://exports/shared/users.csv")
        .after_import(AfterImport::KeepInPlace);
    let scheduler = scheduler_with(
        Arc::clone(&store),
        &server.connector(),
        &[
            config
                .tenant_integration(tenant("acme"), "hr", hourly())
                .unwrap(),
            config
                .tenant_integration(tenant("globex"), "hr", hourly())
                .unwrap(),
            default_config.integration("hr", hourly()).unwrap(),
        ],
        t0(),
    )
    .await;
    for t in [tenant("acme"), tenant("globex"), d()] {
        let run = scheduler.run_now(&t, "hr").await.unwrap();
        assert_eq!(run.outcome, RunOutcome::Success, "{t}: {run:?}");
        assert_eq!(
            run.rows_imported, 3,
            "{t}: each tenant imports the file once"
        );
        let again = scheduler.run_now(&t, "hr").await.unwrap();
        assert_eq!(
            again.rows_read, 0,
            "{t}: the same version is not imported twice"
        );
        assert!(store.get(&t, "cy@example.com").await.unwrap().is_some());
    }
    assert!(server.exists("shared/users.csv"));
}

// ---------------------------------------------------------------------------
// Issue 15: shared files, no-new-file runs, stuck files, honest run records,
// dotted buckets, SSE-KMS-safe moves.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_move_mode_integration_on_one_file_is_refused_when_saved() {
    let _shared = HEAVY.read().await;
    let server = S3Server::start().await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let connector = server.connector();
    let first = users_config(&server, "s3://exports/shared/users.csv")
        .integration("plans", hourly())
        .unwrap();
    let second = server
        .config("s3://exports/shared/*.csv")
        .attribute_as("Support Tickets", "tickets")
        .integration("tickets", hourly())
        .unwrap();
    let scheduler = Scheduler::new(Arc::clone(&store))
        .job(Arc::new(connector.job("plans", Arc::clone(&store))))
        .job(Arc::new(connector.job("tickets", Arc::clone(&store))));
    scheduler.put_integration(&first).await.unwrap();
    let e = scheduler.put_integration(&second).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.message().contains("keep-in-place"), "{e}");
    // Two integrations claiming one attribute name are refused too.
    let clash = server
        .config("s3://exports/other/users.csv")
        .attribute_as("Plan", "plan")
        .integration("tickets", hourly())
        .unwrap();
    let e = scheduler.put_integration(&clash).await.unwrap_err();
    assert!(
        e.message().contains("\"plan\"") && e.message().contains("\"plans\""),
        "{e}"
    );
    // Both keeping the file in place is fine.
    let keep = |c: S3Config| c.after_import(AfterImport::KeepInPlace);
    scheduler
        .put_integration(
            &keep(users_config(&server, "s3://exports/shared/users.csv"))
                .integration("plans", hourly())
                .unwrap(),
        )
        .await
        .unwrap();
    scheduler
        .put_integration(
            &keep(
                server
                    .config("s3://exports/shared/*.csv")
                    .attribute_as("Support Tickets", "tickets"),
            )
            .integration("tickets", hourly())
            .unwrap(),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_is_a_no_new_file_run_with_the_reason_and_keeps_the_last_figures() {
    let _shared = HEAVY.read().await;
    let server = S3Server::start().await;
    server.put("daily/users.csv", USERS_CSV).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let integration = users_config(&server, "s3://exports/daily/users.csv")
        .integration("daily", hourly())
        .unwrap();
    let scheduler = scheduler_with(
        Arc::clone(&store),
        &server.connector(),
        &[integration],
        t0(),
    )
    .await;
    let first = scheduler.run_now(&d(), "daily").await.unwrap();
    assert_eq!(first.outcome, RunOutcome::Success);
    for _ in 0..3 {
        let run = scheduler.run_now(&d(), "daily").await.unwrap();
        assert_eq!(run.outcome, RunOutcome::NoNewFile, "never success: {run:?}");
        let reason = run.error.unwrap();
        assert!(
            reason.contains("no such key") && reason.contains("daily/users.csv"),
            "{reason}"
        );
    }
    let rows = scheduler.integrations(Some(&d())).await.unwrap();
    assert_eq!(rows[0].last_outcome, Some(RunOutcome::NoNewFile));
    assert_eq!(
        rows[0].properties_imported, 2,
        "the last import's figures stay"
    );
    assert_eq!(rows[0].rows_imported, 3);
    assert_eq!(rows[0].last_import, Some(first.started_at));
    let history = store.runs(&d(), "daily", 10).await.unwrap();
    let compact = switchboard::schedule::compact_history(&history);
    assert_eq!(compact.len(), 2, "{compact:?}");
    assert_eq!(
        (compact[0].run.outcome, compact[0].runs),
        (RunOutcome::NoNewFile, 3)
    );
    assert_eq!(
        (compact[1].run.outcome, compact[1].runs),
        (RunOutcome::Success, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_file_does_not_block_newer_files() {
    let _shared = HEAVY.read().await;
    let server = S3Server::start().await;
    // The oldest file maps a column the cap has no room for; the newer is fine.
    server
        .put(
            "in/a.csv",
            "Email,Plan,Support Tickets\nada@example.com,Basic,1\n",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    server
        .put(
            "in/b.csv",
            "Email,Plan,Support Tickets\nbob@example.com,Pro,2\n",
        )
        .await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let integration = users_config(&server, "s3://exports/in/*.csv")
        .integration("in", hourly())
        .unwrap();
    let scheduler = scheduler_with(
        Arc::clone(&store),
        &server.connector(),
        &[integration],
        t0(),
    )
    .await;
    // A file broken inside moves to failed/ and the next file is imported in the same run.
    server.put("in/a.csv", "Email,Other\nx,y\n").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    server
        .put(
            "in/b.csv",
            "Email,Plan,Support Tickets\nbob@example.com,Pro,2\n",
        )
        .await;
    let run = scheduler.run_now(&d(), "in").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Failed, "{run:?}");
    let details = S3RunDetails::from_run(&run);
    assert_eq!(details.failed_files.len(), 1, "{details:?}");
    assert!(details.failed_files[0].contains("a.csv"));
    assert_eq!(server.files_in("in/failed").len(), 1);
    assert_eq!(run.rows_imported, 1, "b.csv was still imported");
    assert!(attrs(store.as_ref(), "bob@example.com").await.is_some());
    assert_eq!(server.files_in("in/success").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_file_only_skips_older_files() {
    let _shared = HEAVY.read().await;
    let server = S3Server::start().await;
    server
        .put(
            "in/old.csv",
            "Email,Plan,Support Tickets\nold@example.com,Basic,1\n",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    server
        .put(
            "in/new.csv",
            "Email,Plan,Support Tickets\nnew@example.com,Pro,2\n",
        )
        .await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let integration = users_config(&server, "s3://exports/in/*.csv")
        .newest_file_only(true)
        .integration("in", hourly())
        .unwrap();
    let scheduler = scheduler_with(
        Arc::clone(&store),
        &server.connector(),
        &[integration],
        t0(),
    )
    .await;
    let run = scheduler.run_now(&d(), "in").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Success, "{run:?}");
    assert_eq!(S3RunDetails::from_run(&run).skipped_older, 1);
    assert!(attrs(store.as_ref(), "new@example.com").await.is_some());
    assert!(attrs(store.as_ref(), "old@example.com").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_failing_midway_counts_the_rows_written() {
    let _shared = HEAVY.read().await;
    let server = S3Server::start().await;
    let mut csv = String::from("Email,Plan,Support Tickets\n");
    for i in 0..25 {
        csv.push_str(&format!("user{i}@example.com,Basic,{i}\n"));
    }
    server.put("users.csv", csv).await;
    let failing = Arc::new(HangingStore {
        inner: MemoryStore::new(),
        allowed: AtomicUsize::new(2),
        written: AtomicUsize::new(0),
        fail: true,
    });
    let store: Arc<dyn Store> = failing.clone();
    let integration = users_config(&server, "s3://exports/users.csv")
        .integration("hr", hourly())
        .unwrap();
    let connector = server.connector().batch_size(10);
    let scheduler = scheduler_with(Arc::clone(&store), &connector, &[integration], t0()).await;
    let run = scheduler.run_now(&d(), "hr").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Failed);
    assert_eq!(run.rows_imported, 20, "two batches were written: {run:?}");
    assert_eq!(failing.written.load(Ordering::SeqCst), 20);
    assert!(run.error.unwrap().contains("20 rows were written"));
    assert!(
        server.exists("users.csv"),
        "the file stays for the next run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_but_not_moved_is_its_own_outcome() {
    let _shared = HEAVY.read().await;
    let server = S3Server::start().await;
    server.put("users.csv", USERS_CSV).await;
    // A folder where the copy should go, blocking it: a file named `success`.
    server.put("success", "not a folder").await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let integration = users_config(&server, "s3://exports/users.csv")
        .integration("hr", hourly())
        .unwrap();
    let scheduler = scheduler_with(
        Arc::clone(&store),
        &server.connector(),
        &[integration],
        t0(),
    )
    .await;
    let run = scheduler.run_now(&d(), "hr").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::ImportedNotMoved, "{run:?}");
    assert_eq!(run.rows_imported, 3);
    assert!(run.error.unwrap().contains("could not be moved"));
    assert!(server.exists("users.csv"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_work_when_copies_get_new_etags_as_with_sse_kms() {
    let _shared = HEAVY.read().await;
    let server = S3Server::start().await;
    server.put("users.csv", USERS_CSV).await;
    server
        .kms_etags
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let integration = users_config(&server, "s3://exports/users.csv")
        .integration("hr", hourly())
        .unwrap();
    let scheduler = scheduler_with(
        Arc::clone(&store),
        &server.connector(),
        &[integration],
        t0(),
    )
    .await;
    let run = scheduler.run_now(&d(), "hr").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Success, "{run:?}");
    assert!(!server.exists("users.csv"));
    assert_eq!(server.files_in("success").len(), 1);
}

#[test]
fn dotted_bucket_names_use_path_style() {
    let dotted = S3Config::new("s3://acme.exports.eu/users.csv", "Email").unwrap();
    assert!(dotted.uses_path_style());
    let plain = S3Config::new("s3://acme-exports/users.csv", "Email").unwrap();
    assert!(!plain.uses_path_style());
    assert!(
        !dotted.path_style(false).uses_path_style(),
        "an explicit choice wins"
    );
}

/// Issue 15, defect 1: a run replaces the integration's values (users missing
/// from the new file lose them), upsert-only merges, and saving the integration
/// without a column deletes that column's values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_replace_the_integrations_values_unless_upsert_only() {
    let _shared = HEAVY.read().await;
    for (store_name, store) in stores() {
        let server = S3Server::start().await;
        server.put("users.csv", USERS_CSV).await;
        let mut integration = users_config(&server, "s3://exports/users.csv")
            .integration("hr", hourly())
            .unwrap();
        let scheduler = scheduler_with(
            Arc::clone(&store),
            &server.connector(),
            std::slice::from_ref(&integration),
            t0(),
        )
        .await;
        let run = scheduler.run_now(&d(), "hr").await.unwrap();
        assert_eq!(run.outcome, RunOutcome::Success, "{store_name}: {run:?}");
        assert!(attrs(store.as_ref(), "bob@example.com").await.is_some());

        server
            .put(
                "users.csv",
                "Email,Plan,Support Tickets,Notes\nada@example.com,Gold,4,\n",
            )
            .await;
        let run = scheduler.run_now(&d(), "hr").await.unwrap();
        assert_eq!(run.outcome, RunOutcome::Success, "{store_name}: {run:?}");
        assert_eq!(
            S3RunDetails::from_run(&run).values_removed,
            4,
            "{store_name}"
        );
        assert_eq!(
            attrs(store.as_ref(), "bob@example.com").await,
            None,
            "{store_name}"
        );
        assert_eq!(
            attrs(store.as_ref(), "cy@example.com").await,
            None,
            "{store_name}"
        );
        let ada = attrs(store.as_ref(), "ada@example.com").await.unwrap();
        assert_eq!(
            ada.get("plan").map(String::as_str),
            Some("Gold"),
            "{store_name}"
        );

        // Upsert-only: a user missing from the file keeps the values.
        integration.settings["import_mode"] = serde_json::json!("upsert_only");
        scheduler.put_integration(&integration).await.unwrap();
        server
            .put(
                "users.csv",
                "Email,Plan,Support Tickets,Notes\nbob@example.com,Basic,1,\n",
            )
            .await;
        let run = scheduler.run_now(&d(), "hr").await.unwrap();
        assert_eq!(run.outcome, RunOutcome::Success, "{store_name}: {run:?}");
        assert!(
            attrs(store.as_ref(), "ada@example.com").await.is_some(),
            "{store_name}"
        );
        assert!(
            attrs(store.as_ref(), "bob@example.com").await.is_some(),
            "{store_name}"
        );

        // An invalid mode is refused when saved.
        let mut bad = integration.clone();
        bad.settings["import_mode"] = serde_json::json!("sometimes");
        assert!(scheduler.put_integration(&bad).await.is_err());

        // Saved without the tickets column: its values go, its name is freed.
        let mut fewer = server
            .config("s3://exports/users.csv")
            .attribute_as("Plan", "plan")
            .integration("hr", hourly())
            .unwrap();
        fewer.settings["import_mode"] = serde_json::json!("upsert_only");
        scheduler.put_integration(&fewer).await.unwrap();
        let ada = attrs(store.as_ref(), "ada@example.com").await.unwrap();
        assert_eq!(ada.keys().collect::<Vec<_>>(), ["plan"], "{store_name}");
        let names: Vec<String> = store
            .names(&d())
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["plan"], "{store_name}");
    }
}
