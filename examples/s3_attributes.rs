//! Imports user attributes from a CSV in S3 (or a local folder) into a store, then
//! optionally prints a segment.
//!
//! With no arguments it imports `examples/data/users.csv` from a temporary copy of
//! that folder (the run moves the file to `success/`, so the repository's copy is
//! left alone) and needs no credentials:
//!
//! ```text
//! cargo run --example s3_attributes --features s3 -- --once --segment 'plan = "Premium" and support_tickets > 2'
//! ```
//!
//! Against S3 or MinIO (endpoint and credentials from `AWS_ENDPOINT_URL`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`):
//!
//! ```text
//! cargo run --example s3_attributes --features s3 -- \
//!     --source 's3://hr-exports/daily/*.csv' --user-id-column Email \
//!     --attribute Plan=plan --attribute 'Support Tickets=support_tickets' \
//!     --store sqlite://attributes.db --once
//! ```
//!
//! Options: `--source URL`, `--user-id-column NAME`, `--attribute COLUMN[=NAME]`
//! (repeatable), `--delimiter C` (default `,`; `tab` for tabs), `--store sqlite://PATH` (or `postgres://…` with the `postgres` feature)
//! (default: in memory), `--keep-in-place` (remember the file's ETag instead of moving it),
//! `--once` (one run now, then exit) or `--every SECONDS` / `--cron 'EXPR'` (run on
//! that schedule until Ctrl-C; default every hour), `--segment 'EXPR'`. Each run
//! ends with its report as one JSON line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use switchboard::integration::{RunOutcome, RunRecord, Schedule};
use switchboard::s3::{AfterImport, Credentials, S3Config, S3Connector, S3RunDetails};
use switchboard::schedule::Scheduler;
use switchboard::{Filter, MemoryStore, Store};

const USAGE: &str = "usage: s3_attributes [--source URL] [--user-id-column NAME] \
[--attribute COLUMN[=NAME]]... [--delimiter C] [--store sqlite://PATH|postgres://URL] [--keep-in-place] \
[--once | --every SECONDS | --cron EXPR] [--segment EXPR]";

#[derive(Debug, Default)]
struct Args {
    source: Option<String>,
    user_id_column: Option<String>,
    attributes: Vec<(String, Option<String>)>,
    store: Option<String>,
    keep_in_place: bool,
    delimiter: Option<char>,
    once: bool,
    schedule: Option<Schedule>,
    segment: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--source" => args.source = Some(value("--source")?),
            "--user-id-column" => args.user_id_column = Some(value("--user-id-column")?),
            "--attribute" => {
                let spec = value("--attribute")?;
                let (column, name) = match spec.split_once('=') {
                    Some((column, name)) => (column.to_owned(), Some(name.to_owned())),
                    None => (spec, None),
                };
                args.attributes.push((column, name));
            }
            "--store" => args.store = Some(value("--store")?),
            "--keep-in-place" => args.keep_in_place = true,
            "--delimiter" => {
                let text = value("--delimiter")?;
                let mut chars = text.chars();
                args.delimiter = match (chars.next(), chars.next()) {
                    (Some(c), None) => Some(c),
                    _ if text == "tab" || text == "\\t" => Some('\t'),
                    _ => return Err("--delimiter takes one character (or `tab`)".to_owned()),
                };
            }
            "--once" => args.once = true,
            "--every" => {
                let secs: u64 = value("--every")?
                    .parse()
                    .map_err(|_| "--every takes a number of seconds".to_owned())?;
                args.schedule = Some(Schedule::Interval(Duration::from_secs(secs)));
            }
            "--cron" => args.schedule = Some(Schedule::Cron(value("--cron")?)),
            "--segment" => args.segment = Some(value("--segment")?),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// Copies `examples/data/` into a temporary folder and returns a `file://` source
/// for it (the folder is removed when the guard drops).
fn sample_source() -> std::io::Result<(String, tempfile::TempDir)> {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/data");
    let dir = tempfile::tempdir()?;
    for entry in std::fs::read_dir(&data)? {
        let entry = entry?;
        if entry.path().extension().is_some_and(|e| e == "csv") {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name()))?;
        }
    }
    Ok((format!("file://{}/*.csv", dir.path().display()), dir))
}

fn open_store(spec: Option<&str>) -> Result<Arc<dyn Store>, String> {
    match spec {
        None => Ok(Arc::new(MemoryStore::new())),
        Some(spec) => {
            let Some(path) = spec.strip_prefix("sqlite://") else {
                return Err(format!("--store {spec:?}: expected sqlite://PATH"));
            };
            open_sqlite(path)
        }
    }
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> Result<Arc<dyn Store>, String> {
    switchboard::PostgresStore::connect(url)
        .await
        .map(|s| Arc::new(s) as Arc<dyn Store>)
        .map_err(|e| format!("cannot open the PostgreSQL store: {e}"))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_url: &str) -> Result<Arc<dyn Store>, String> {
    Err("--store postgres://… needs the `postgres` feature".to_owned())
}

#[cfg(feature = "sqlite")]
fn open_sqlite(path: &str) -> Result<Arc<dyn Store>, String> {
    switchboard::SqliteStore::open(path)
        .map(|s| Arc::new(s) as Arc<dyn Store>)
        .map_err(|e| format!("cannot open {path}: {e}"))
}

#[cfg(not(feature = "sqlite"))]
fn open_sqlite(_path: &str) -> Result<Arc<dyn Store>, String> {
    Err("this build has no `sqlite` feature".to_owned())
}

fn credentials_from_env() -> Credentials {
    match (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Ok(id), Ok(secret)) if !id.is_empty() => {
            let credentials = Credentials::access_key(id, secret);
            match std::env::var("AWS_SESSION_TOKEN") {
                Ok(token) if !token.is_empty() => credentials.with_session_token(token),
                _ => credentials,
            }
        }
        _ => Credentials::Environment,
    }
}

/// The run report as one JSON line.
async fn report(
    run: &RunRecord,
    store: &dyn Store,
    segment: Option<&Filter>,
) -> switchboard::Result<serde_json::Value> {
    let details = S3RunDetails::from_run(run);
    let mut line = serde_json::json!({
        "outcome": run.outcome,
        "rows_read": run.rows_read,
        "rows_imported": run.rows_imported,
        "rows_rejected": run.rows_rejected,
        "properties_imported": run.properties_imported,
        "moved_to": details.moved_to,
        "file": details.file,
        "row_errors": run.row_errors,
        "error": run.error,
    });
    if let Some(filter) = segment {
        line["segment"] = serde_json::json!(store.query(&run.tenant, filter).await?);
    }
    Ok(line)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}

/// Returns whether the last run did not fail.
async fn run() -> Result<bool, String> {
    let args = parse_args()?;
    let segment = args
        .segment
        .as_deref()
        .map(Filter::parse)
        .transpose()
        .map_err(|e| format!("--segment: {e}"))?;

    // The default: the sample file, from a temporary copy of its folder.
    let mut _sample_dir = None;
    let (source, defaults) = match &args.source {
        Some(source) => (source.clone(), false),
        None => {
            let (source, dir) = sample_source().map_err(|e| format!("copying the sample: {e}"))?;
            _sample_dir = Some(dir);
            (source, true)
        }
    };
    let user_id_column = match (&args.user_id_column, defaults) {
        (Some(column), _) => column.clone(),
        (None, true) => "Email".to_owned(),
        (None, false) => {
            return Err(format!(
                "--user-id-column is required with --source\n{USAGE}"
            ));
        }
    };
    let mut attributes = args.attributes.clone();
    if attributes.is_empty() && defaults {
        attributes = vec![
            ("Plan".to_owned(), Some("plan".to_owned())),
            (
                "Support Tickets".to_owned(),
                Some("support_tickets".to_owned()),
            ),
            ("Country".to_owned(), Some("country".to_owned())),
        ];
    }

    let mut config = S3Config::new(&source, user_id_column).map_err(|e| e.to_string())?;
    for (column, name) in attributes {
        config = match name {
            Some(name) => config.attribute_as(column, name),
            None => config.attribute(column),
        };
    }
    if source.starts_with("s3://") {
        if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
            config = config.endpoint(endpoint);
        }
        if let Ok(region) = std::env::var("AWS_REGION") {
            config = config.region(region);
        }
    }
    if args.keep_in_place {
        config = config.after_import(AfterImport::KeepInPlace);
    }
    if let Some(delimiter) = args.delimiter {
        config = config.delimiter(delimiter);
    }
    let schedule = args
        .schedule
        .clone()
        .unwrap_or(Schedule::Interval(Duration::from_secs(3600)));
    let integration = config
        .integration("s3-attributes", schedule)
        .map_err(|e| e.to_string())?;

    let store = match args.store.as_deref() {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            open_postgres(url).await?
        }
        spec => open_store(spec)?,
    };
    let connector = S3Connector::new(credentials_from_env());
    let scheduler = Scheduler::new(Arc::clone(&store))
        .job(Arc::new(connector.job("s3-attributes", Arc::clone(&store))));
    scheduler
        .put_integration(&integration)
        .await
        .map_err(|e| e.to_string())?;

    if args.once {
        let run = scheduler
            .run_now(&switchboard::TenantId::default(), "s3-attributes")
            .await
            .map_err(|e| e.to_string())?;
        let line = report(&run, store.as_ref(), segment.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        println!("{line}");
        return Ok(run.outcome != RunOutcome::Failed);
    }

    // On the schedule until Ctrl-C: one JSON line per run.
    let mut ok = true;
    loop {
        let runs = scheduler
            .run_due(chrono::Utc::now())
            .await
            .map_err(|e| e.to_string())?;
        for run in &runs {
            let line = report(run, store.as_ref(), segment.as_ref())
                .await
                .map_err(|e| e.to_string())?;
            println!("{line}");
            ok = run.outcome != RunOutcome::Failed;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ok),
        }
    }
}
