//! S3 sources beyond one folder, against the in-process `s3s-fs` server: recursive listing, date-partitioned folders, full error reports per run.
#![cfg(feature = "s3")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use hyper_util::rt::{TokioExecutor, TokioIo};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use switchboard::integration::{IntegrationConfig, RunOutcome, Schedule};
use switchboard::s3::{Credentials, RetryPolicy, S3Config, S3Connector, S3RunDetails};
use switchboard::schedule::Scheduler;
use switchboard::tenant::TenantId;
use switchboard::{ErrorKind, MemoryStore, Store};

const ACCESS_KEY: &str = "AKIATESTSOURCES";
const SECRET_KEY: &str = "test-secret-key-sources-123456";
const BUCKET: &str = "exports";

/// An `s3s-fs` server on loopback, serving one bucket from a temporary folder.
struct S3Server {
    endpoint: String,
    root: tempfile::TempDir,
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
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                tokio::spawn(async move {
                    let handler = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let service = service.clone();
                            async move { service.call(req.map(s3s::Body::from)).await }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), handler)
                        .await;
                });
            }
        });
        S3Server {
            endpoint,
            root,
            task,
        }
    }

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

    async fn get(&self, key: &str) -> String {
        let bytes = self
            .client()
            .get(&ObjectPath::from(key))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn files_in(&self, folder: &str) -> Vec<String> {
        files_in(&self.root.path().join(BUCKET).join(folder))
    }

    fn config(&self, source: &str) -> S3Config {
        S3Config::new(source, "Email")
            .unwrap()
            .endpoint(&self.endpoint)
            .region("us-east-1")
            .attribute_as("Plan", "plan")
    }

    fn connector(&self) -> S3Connector {
        S3Connector::new(Credentials::access_key(ACCESS_KEY, SECRET_KEY)).retry(RetryPolicy {
            max_retries: 2,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            total_timeout: Duration::from_secs(20),
        })
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

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 10, 30, 0).unwrap()
}

fn d() -> TenantId {
    TenantId::default()
}

fn hourly() -> Schedule {
    Schedule::Interval(Duration::from_secs(3600))
}

async fn scheduler_with(
    store: Arc<dyn Store>,
    connector: &S3Connector,
    integration: &IntegrationConfig,
    now: DateTime<Utc>,
) -> Scheduler {
    let scheduler = Scheduler::new(Arc::clone(&store))
        .clock(move || now)
        .job(Arc::new(
            connector.job(&integration.name, Arc::clone(&store)),
        ));
    scheduler.put_integration(integration).await.unwrap();
    scheduler
}

async fn plan(store: &dyn Store, user: &str) -> Option<String> {
    store
        .get(&d(), user)
        .await
        .unwrap()
        .and_then(|a| a.get("plan").cloned())
}

fn csv(user: &str, plan: &str) -> String {
    format!("Email,Plan\n{user},{plan}\n")
}

// ---------------------------------------------------------------------------
// Recursive listing.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recursive_source_imports_files_in_sub_folders_but_never_success_failed_or_reports() {
    let server = S3Server::start().await;
    server.put("feed/top.csv", csv("top@x.io", "A")).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // 1 s resolution: a fixed order
    server
        .put("feed/eu/de/deep.csv", csv("deep@x.io", "B"))
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    server.put("feed/us/mid.csv", csv("mid@x.io", "C")).await;
    // Never candidates: files already processed, reports, other names.
    server
        .put("feed/success/old.csv", csv("old@x.io", "X"))
        .await;
    server
        .put("feed/eu/failed/bad.csv", csv("bad@x.io", "X"))
        .await;
    server
        .put("feed/us/reports/run-1.csv", csv("rep@x.io", "X"))
        .await;
    server.put("feed/us/notes.txt", "not a csv").await;

    // Without `recursive`, only the folder itself.
    let flat: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let integration = server
        .config("s3://exports/feed/")
        .after_import(switchboard::s3::AfterImport::KeepInPlace)
        .integration("flat", hourly())
        .unwrap();
    let scheduler =
        scheduler_with(Arc::clone(&flat), &server.connector(), &integration, t0()).await;
    let run = scheduler.run_now(&d(), "flat").await.unwrap();
    let details = S3RunDetails::from_run(&run);
    assert_eq!(details.file.as_deref(), Some("s3://exports/feed/top.csv"));
    assert_eq!(details.pending, 0, "{run:?}");
    assert_eq!(plan(flat.as_ref(), "top@x.io").await.as_deref(), Some("A"));
    assert_eq!(plan(flat.as_ref(), "deep@x.io").await, None);

    // Recursive: every sub-folder, oldest first, one file per run, moved to
    // its own folder's success/. Each file holds other users, so the runs add
    // up (upsert-only); a snapshot run would replace the previous file's.
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut integration = server
        .config("s3://exports/feed/")
        .recursive(true)
        .integration("deep", hourly())
        .unwrap();
    integration.settings["import_mode"] = serde_json::json!("upsert_only");
    let scheduler =
        scheduler_with(Arc::clone(&store), &server.connector(), &integration, t0()).await;
    let mut files = Vec::new();
    for _ in 0..3 {
        let run = scheduler.run_now(&d(), "deep").await.unwrap();
        assert_eq!(run.outcome, RunOutcome::Success, "{run:?}");
        files.push(S3RunDetails::from_run(&run).file.unwrap());
    }
    assert_eq!(
        files,
        [
            "s3://exports/feed/top.csv",
            "s3://exports/feed/eu/de/deep.csv",
            "s3://exports/feed/us/mid.csv"
        ]
    );
    let run = scheduler.run_now(&d(), "deep").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::NoNewFile, "{run:?}");
    for (user, expected) in [("top@x.io", "A"), ("deep@x.io", "B"), ("mid@x.io", "C")] {
        assert_eq!(plan(store.as_ref(), user).await.as_deref(), Some(expected));
    }
    for user in ["old@x.io", "bad@x.io", "rep@x.io"] {
        assert_eq!(plan(store.as_ref(), user).await, None, "{user}");
    }
    assert_eq!(server.files_in("feed/eu/de/success").len(), 1);
    assert_eq!(server.files_in("feed/us"), ["notes.txt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_needs_a_folder_and_report_folders_must_be_plain_names() {
    let server = S3Server::start().await;
    let e = server
        .config("s3://exports/feed/users.csv")
        .recursive(true)
        .validate()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.message().contains("cannot be listed recursively"), "{e}");
    for bad in ["", "a/b", "success", "failed", "*"] {
        let e = server
            .config("s3://exports/feed/")
            .error_report_folder(bad)
            .validate()
            .unwrap_err();
        assert!(e.message().contains("error-report folder"), "{bad:?}: {e}");
    }
    server
        .config("s3://exports/feed/")
        .error_report_folder("rejected-rows")
        .validate()
        .unwrap();
}

// ---------------------------------------------------------------------------
// Date-partitioned folders.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn date_placeholders_resolve_against_the_run_date() {
    let server = S3Server::start().await;
    server
        .put("daily/2025/02/28/users.csv", csv("ada@x.io", "Yesterday"))
        .await;
    server
        .put("daily/2025/03/01/users.csv", csv("ada@x.io", "Today"))
        .await;
    server
        .put("daily/2025/03/02/users.csv", csv("ada@x.io", "Tomorrow"))
        .await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let integration = server
        .config("s3://exports/daily/{yyyy}/{mm}/{dd}/")
        .integration("daily", hourly())
        .unwrap();
    let scheduler =
        scheduler_with(Arc::clone(&store), &server.connector(), &integration, t0()).await;
    let run = scheduler.run_now(&d(), "daily").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Success, "{run:?}");
    let details = S3RunDetails::from_run(&run);
    assert_eq!(
        details.file.as_deref(),
        Some("s3://exports/daily/2025/03/01/users.csv")
    );
    assert_eq!(
        plan(store.as_ref(), "ada@x.io").await.as_deref(),
        Some("Today")
    );
    assert_eq!(server.files_in("daily/2025/03/01/success").len(), 1);
    // The other days are untouched.
    assert_eq!(server.files_in("daily/2025/02/28"), ["users.csv"]);
    assert_eq!(server.files_in("daily/2025/03/02"), ["users.csv"]);

    // A day whose folder has no file yet: no new file, not an error.
    let later = Utc.with_ymd_and_hms(2025, 3, 5, 1, 0, 0).unwrap();
    let scheduler =
        scheduler_with(Arc::clone(&store), &server.connector(), &integration, later).await;
    let run = scheduler.run_now(&d(), "daily").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::NoNewFile, "{run:?}");

    // A file name with the date and hour.
    server
        .put("hourly/users-20250301-10.csv", csv("bob@x.io", "Hourly"))
        .await;
    let integration = server
        .config("s3://exports/hourly/users-{yyyy}{mm}{dd}-{hh}.csv")
        .integration("hourly", hourly())
        .unwrap();
    // Its own store: `plan` belongs to the daily integration in the first.
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let scheduler =
        scheduler_with(Arc::clone(&store), &server.connector(), &integration, t0()).await;
    let run = scheduler.run_now(&d(), "hourly").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Success, "{run:?}");
    assert_eq!(
        plan(store.as_ref(), "bob@x.io").await.as_deref(),
        Some("Hourly")
    );
}

// ---------------------------------------------------------------------------
// Error reports.

/// `good` valid rows and `bad` rows with a missing field, interleaved.
fn mixed_csv(good: usize, bad: usize) -> String {
    let mut out = String::from("Email,Plan,Seats\n");
    for i in 0..good.max(bad) {
        if i < good {
            out.push_str(&format!("ok{i}@x.io,Pro,1\n"));
        }
        if i < bad {
            out.push_str(&format!("bad{i}@x.io,Pro\n"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejected_row_is_in_the_runs_error_report() {
    let server = S3Server::start().await;
    server.put("in/users.csv", mixed_csv(10, 50)).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let integration = server
        .config("s3://exports/in/users.csv")
        .integration("hr", hourly())
        .unwrap();
    let scheduler =
        scheduler_with(Arc::clone(&store), &server.connector(), &integration, t0()).await;
    let run = scheduler.run_now(&d(), "hr").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Partial, "{run:?}");
    assert_eq!((run.rows_imported, run.rows_rejected), (10, 50));
    // The run record keeps the first 20; the report has all 50.
    assert_eq!(run.row_errors.len(), 20);
    let details = S3RunDetails::from_run(&run);
    let key = format!("in/reports/run-{}.csv", run.id);
    assert_eq!(
        details.error_report.as_deref(),
        Some(format!("s3://exports/{key}").as_str())
    );
    let report = server.get(&key).await;
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 51, "{report}");
    assert_eq!(lines[0], "line,user_id,kind,reason");
    // Row `bad0` is on line 3 (after the header and `ok0`).
    assert_eq!(
        lines[1],
        "3,bad0@x.io,field_count,\"expected 3 fields, found 2\""
    );
    // Lines 3, 5, ..., 21 interleave with good rows; then only bad rows.
    assert!(
        lines[50].starts_with("61,bad49@x.io,field_count,"),
        "{}",
        lines[50]
    );

    // A clean file writes no report.
    server.put("in/users.csv", mixed_csv(3, 0)).await;
    let run = scheduler.run_now(&d(), "hr").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Success, "{run:?}");
    assert_eq!(S3RunDetails::from_run(&run).error_report, None);
    assert_eq!(server.files_in("in/reports").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_over_one_upload_part_is_uploaded_in_parts_to_a_chosen_folder() {
    let server = S3Server::start().await;
    // 120,000 rejected rows: a report over 5 MiB, so a multipart upload.
    let bad = 120_000;
    server.put("big/users.csv", mixed_csv(1, bad)).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let integration = server
        .config("s3://exports/big/")
        .error_report_folder("rejected")
        .integration("big", hourly())
        .unwrap();
    let scheduler =
        scheduler_with(Arc::clone(&store), &server.connector(), &integration, t0()).await;
    let run = scheduler.run_now(&d(), "big").await.unwrap();
    assert_eq!(run.rows_rejected, bad as u64, "{run:?}");
    let key = format!("big/rejected/run-{}.csv", run.id);
    assert_eq!(
        S3RunDetails::from_run(&run).error_report,
        Some(format!("s3://exports/{key}"))
    );
    let report = server.get(&key).await;
    assert!(report.len() > 5 * 1024 * 1024, "{} bytes", report.len());
    assert_eq!(report.lines().count(), bad + 1);
    assert!(
        report
            .lines()
            .nth(bad)
            .unwrap()
            .contains(&format!("bad{}@x.io", bad - 1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_folder_gets_its_report_beside_the_files_and_reports_can_be_off() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.csv"), mixed_csv(2, 3)).unwrap();
    let source = format!("file://{}/", dir.path().display());
    let config = S3Config::new(&source, "Email")
        .unwrap()
        .attribute_as("Plan", "plan");
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let connector = S3Connector::from_env();
    let integration = config.clone().integration("local", hourly()).unwrap();
    let scheduler = scheduler_with(Arc::clone(&store), &connector, &integration, t0()).await;
    let run = scheduler.run_now(&d(), "local").await.unwrap();
    assert_eq!(run.rows_rejected, 3, "{run:?}");
    let path = dir.path().join(format!("reports/run-{}.csv", run.id));
    let report = std::fs::read_to_string(&path).unwrap();
    assert_eq!(report.lines().count(), 4, "{report}");
    assert!(
        S3RunDetails::from_run(&run)
            .error_report
            .unwrap()
            .ends_with(&format!("/reports/run-{}.csv", run.id))
    );

    std::fs::write(dir.path().join("users.csv"), mixed_csv(2, 3)).unwrap();
    let integration = config
        .error_reports(false)
        .integration("quiet", hourly())
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let scheduler = scheduler_with(Arc::clone(&store), &connector, &integration, t0()).await;
    let run = scheduler.run_now(&d(), "quiet").await.unwrap();
    assert_eq!(run.rows_rejected, 3, "{run:?}");
    assert_eq!(S3RunDetails::from_run(&run).error_report, None);
    assert_eq!(files_in(&dir.path().join("reports")).len(), 1);
}

// ---------------------------------------------------------------------------
// A custom credential provider (role assumption hook).

/// Hands out the server's keys (as an STS role assumption would hand out
/// temporary ones), counting the calls; fails when `fail` is set.
#[derive(Debug, Default)]
struct CountingProvider {
    calls: std::sync::atomic::AtomicUsize,
    fail: bool,
}

#[async_trait::async_trait]
impl switchboard::s3::CredentialProvider for CountingProvider {
    type Credential = switchboard::s3::AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<Self::Credential>> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.fail {
            return Err(object_store::Error::Generic {
                store: "test",
                source: "the role cannot be assumed".into(),
            });
        }
        Ok(Arc::new(switchboard::s3::AwsCredential {
            key_id: ACCESS_KEY.to_owned(),
            secret_key: SECRET_KEY.to_owned(),
            token: None,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_credential_provider_signs_every_request() {
    let server = S3Server::start().await;
    server
        .put("role/users.csv", csv("ada@x.io", "Assumed"))
        .await;
    let provider = Arc::new(CountingProvider::default());
    let connector = S3Connector::new(Credentials::provider(provider.clone()));
    assert_eq!(
        format!("{:?}", Credentials::provider(provider.clone())),
        "Provider([redacted])"
    );
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let integration = server
        .config("s3://exports/role/")
        .integration("role", hourly())
        .unwrap();
    let scheduler = scheduler_with(Arc::clone(&store), &connector, &integration, t0()).await;
    let run = scheduler.run_now(&d(), "role").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Success, "{run:?}");
    assert_eq!(
        plan(store.as_ref(), "ada@x.io").await.as_deref(),
        Some("Assumed")
    );
    // List, HEAD, GET, copy, delete...: each signed request asked the provider.
    let calls = provider.calls.load(std::sync::atomic::Ordering::SeqCst);
    assert!(calls >= 4, "{calls} calls");
    assert_eq!(server.files_in("role/success").len(), 1);

    // A provider that fails: the run fails, the file stays.
    server.put("role/users.csv", csv("bob@x.io", "Never")).await;
    let failing = Arc::new(CountingProvider {
        fail: true,
        ..CountingProvider::default()
    });
    let connector = S3Connector::new(Credentials::provider(failing.clone()));
    let scheduler = scheduler_with(Arc::clone(&store), &connector, &integration, t0()).await;
    let run = scheduler.run_now(&d(), "role").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Failed, "{run:?}");
    assert!(failing.calls.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert_eq!(plan(store.as_ref(), "bob@x.io").await, None);
    assert_eq!(server.files_in("role"), ["users.csv"]);
}
