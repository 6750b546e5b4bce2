//! The import job: discovery, staging the object, validating it, writing it in batches, and moving or remembering the file.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use async_trait::async_trait;
use object_store::ObjectMeta;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::client::{Bucket, ClientSettings, Op};
use super::config::{AfterImport, S3Config};
use super::connection::S3_PLATFORM;
use super::connector::S3Connector;
use super::reader::{delimiter_hint, not_csv_reason, with_prefix};
use super::report::ReportSpool;
use super::source::Location;
use crate::attributes::{
    AttributeBatch, CsvMapping, ImportCollector, ImportRun, ImportSummary, RowErrorReason,
    import_mode_of, read_csv,
};
use crate::integration::{IntegrationConfig, RunRecord};
use crate::schedule::{MAX_ROW_ERRORS, RunContext, ScheduledJob};
use crate::source::Shutdown;
use crate::store::Store;
use crate::tenant::{ConnectionKey, TenantId};
use crate::{Error, ErrorKind, Result};

use super::connector::{Opened, read_failure};

/// How long a keep-in-place integration remembers a processed file version.
const REMEMBER_FOR_DAYS: i64 = 3650;
/// The folder, beside the file, that receives imported files.
pub const SUCCESS_FOLDER: &str = "success";

/// The folder, beside the file, that receives files that could not be imported.
pub const FAILED_FOLDER: &str = "failed";

/// What an S3 run recorded in [`RunRecord::details`], typed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct S3RunDetails {
    /// The file the run imported (`None` when no new file was waiting).
    pub file: Option<String>,
    /// The ETag of the version read.
    pub etag: Option<String>,
    /// Its size in bytes.
    pub size: Option<u64>,
    /// Where the file was moved (`…/success/…` or `…/failed/…`).
    pub moved_to: Option<String>,
    /// True if the file was left in place and its ETag remembered.
    pub kept_in_place: bool,
    /// True if the file changed during the run, so it was neither moved nor
    /// remembered: the next run imports the new version.
    pub source_changed: bool,
    /// Other matching files still waiting for a run.
    pub pending: u64,
    /// Rows whose user id appeared on an earlier row (the later row won).
    pub duplicate_user_ids: u64,
    /// Older matching files skipped because only the newest is imported
    /// ([`S3Config::newest_file_only`]).
    pub skipped_older: u64,
    /// Files this run tried before the one it imported, and why each failed
    /// (`url: reason`): a file that cannot be imported never blocks newer ones.
    pub failed_files: Vec<String>,
    /// Values of the integration the run removed: with
    /// [`ImportMode::Snapshot`](crate::attributes::ImportMode::Snapshot), those
    /// of users missing from the file; in either mode, those of attributes no
    /// longer mapped.
    pub values_removed: u64,
    /// Attribute names the run freed under the cap (no longer mapped).
    pub names_freed: u64,
    /// The URL of the run's full error report (every rejected row, as CSV:
    /// `line,user_id,kind,reason`), when rows were rejected and reports are on
    /// ([`S3Config::error_report_folder`]). Derived from the run id:
    /// `<source folder>/<report folder>/run-<run id>.csv`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_report: Option<String>,
    /// Why the error report could not be written, if it could not (the
    /// import itself went on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_report_failed: Option<String>,
}

impl S3RunDetails {
    /// Reads the details of a run of an S3 import (defaults where absent).
    pub fn from_run(run: &RunRecord) -> Self {
        serde_json::from_value(run.details.clone()).unwrap_or_default()
    }

    fn write_to(&self, ctx: &mut RunContext) {
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(self) {
            for (key, value) in map {
                if key != "duplicate_user_ids" {
                    ctx.set_detail(key, value);
                }
            }
        }
    }
}

/// The scheduled import of one integration: register it with a
/// [`crate::schedule::Scheduler`], or call [`S3Import::run_once`].
///
/// One run imports one file — the oldest matching one not yet imported:
///
/// 1. The file is opened (an S3 object is downloaded, streaming, to an unnamed
///    temporary file; a local file is read in place).
/// 2. **Validation pass**: the header is checked against the mapping and every
///    row is parsed and counted, writing nothing. A file that is not CSV, lacks
///    a mapped column or is malformed beyond a row (an unterminated quote) fails
///    the run here, with nothing written, and moves to `failed/`.
/// 3. **Write pass**: the run claims the mapped attribute names for this
///    integration ([`crate::attributes::AttributeStore::begin_import`]: another
///    integration's name or the attribute cap fail it before anything is
///    written) and the good rows are written in batches, each value stamped
///    with the run's generation. Once every row is written, a
///    [`ImportMode::Snapshot`](crate::attributes::ImportMode::Snapshot) run
///    (the default; setting `"import_mode"`) removes the integration's values
///    the file no longer has — users missing from it, columns no longer
///    mapped — in one step; `"upsert_only"` merges and removes only unmapped
///    columns. A file without any good row replaces nothing.
/// 4. The file moves under `success/` (also for a partial import) or `failed/`
///    (every row rejected), or — with [`AfterImport::KeepInPlace`] — stays and its
///    ETag is remembered for this integration.
///
/// A run that fails for a reason outside the file (S3 unreachable, access
/// denied, the store failing, the attribute cap, shutdown) leaves the file where
/// it is, so the next run imports it. A process that dies during the write pass
/// leaves the rows written so far beside the previous import (nothing is
/// removed before every row is written); the file stays in place and the next
/// run writes every row again, then replaces.
pub struct S3Import {
    pub(super) name: String,
    pub(super) store: Arc<dyn Store>,
    pub(super) connector: S3Connector,
}

impl std::fmt::Debug for S3Import {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Import")
            .field("name", &self.name)
            .field("connector", &self.connector)
            .finish_non_exhaustive()
    }
}

/// Why a file could not be imported: its content, or something outside it.
enum Failure {
    /// The file is not importable (not CSV, missing column, malformed): it moves to `failed/`.
    Content(String),
    /// Something else failed; the file stays for the next run.
    Other(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Other(e)
    }
}

/// The file is staged and ready for the two passes.
struct Staged {
    file: File,
    meta: ObjectMeta,
}

impl S3Import {
    /// The integration's name.
    pub fn integration(&self) -> &str {
        &self.name
    }

    /// Runs the import once with `ctx` (the scheduler does this on schedule).
    pub async fn run_once(&self, ctx: &mut RunContext) -> Result<()> {
        let mut details = S3RunDetails::default();
        let result = self.import(ctx, &mut details).await;
        details.write_to(ctx);
        result
    }

    /// The keep-in-place bookkeeping scope of one tenant's integration (the
    /// default tenant's keeps its pre-tenant name; tenant ids hold no control
    /// characters, so the separator is unambiguous).
    fn scope(ctx: &RunContext) -> String {
        let config = ctx.config();
        if config.tenant.is_default() {
            format!("s3-import:{}", config.name)
        } else {
            format!("s3-import:{}\u{1f}{}", config.tenant, config.name)
        }
    }

    /// The settings and credentials a run of `tenant` uses: the connection the
    /// settings name, else the tenant's default S3 connection, else — for the
    /// default tenant only — the connector's own credentials. Another tenant's
    /// connection is never used, and a tenant other than the default never gets
    /// the connector's credentials nor a `file://` source (the host's own disk).
    async fn credentials_for(
        &self,
        tenant: &TenantId,
        config: S3Config,
    ) -> Result<(S3Config, ClientSettings)> {
        let is_local = matches!(config.source().location(), Location::Local { .. });
        if is_local {
            if !tenant.is_default() {
                return Err(Error::config(format!(
                    "a file:// source reads the host's own disk and is only available to the default tenant, not to tenant {tenant}; use an s3:// source with the tenant's S3 connection"
                )));
            }
            return Ok((config, self.connector.client.clone()));
        }
        let connection = match config.configured_connection() {
            Some(account) => {
                let key = ConnectionKey::new(S3_PLATFORM, account);
                let found = self.store.connection(&key).await?;
                match found {
                    Some(c) if &c.tenant == tenant => Some(c),
                    // Never reveal or use another tenant's connection.
                    _ => {
                        return Err(Error::new(
                            ErrorKind::NotFound,
                            format!(
                                "tenant {tenant} has no S3 connection {key}; connect it or fix the integration's connection setting"
                            ),
                        ));
                    }
                }
            }
            None => self.store.default_connection(tenant, S3_PLATFORM).await?,
        };
        match connection {
            Some(connection) => self.connector.with_connection(&config, &connection),
            None if tenant.is_default() => Ok((config, self.connector.client.clone())),
            None => Err(Error::new(
                ErrorKind::Unauthorized,
                format!(
                    "tenant {tenant} has no S3 connection: connect one (platform {S3_PLATFORM:?}) with the bucket's access key"
                ),
            )),
        }
    }

    async fn import(&self, ctx: &mut RunContext, details: &mut S3RunDetails) -> Result<()> {
        let tenant = ctx.tenant().clone();
        let settings = S3Config::from_integration(ctx.config())?;
        let (config, client) = self.credentials_for(&tenant, settings).await?;
        let now = ctx.started_at();
        let bucket = Bucket::open_at(&config, &client, now)?;
        let scope = Self::scope(ctx);

        let mut waiting = Vec::new();
        let candidates = bucket.candidates().await?;
        let found = !candidates.is_empty();
        for meta in candidates {
            if config.after() == AfterImport::KeepInPlace {
                // Remembering "until now" records nothing: this only asks.
                let key = version_key(&bucket, &meta);
                if !self.store.remember_once(&scope, &key, now, now).await? {
                    continue;
                }
            }
            waiting.push(meta);
        }
        if config.newest_only() && waiting.len() > 1 {
            details.skipped_older = (waiting.len() - 1) as u64;
            waiting.drain(..waiting.len() - 1);
        }
        if waiting.is_empty() {
            let reason = config.source().exact_path().filter(|_| !found).map(|path| {
                format!(
                    "no such key: nothing at {}; check the path (a previous run, or another integration moving this file, may have moved it to success/ or failed/)",
                    bucket.url_of(&path)
                )
            });
            ctx.no_new_file(reason);
            return Ok(());
        }
        // Oldest first; a file that fails does not block the newer ones.
        let total = waiting.len();
        let mut failures: Vec<Error> = Vec::new();
        for (i, listed) in waiting.into_iter().enumerate() {
            details.pending = (total - i - 1) as u64;
            let url = bucket.url_of(&listed.location);
            details.file = Some(url.clone());
            match self
                .import_file(ctx, details, &bucket, &config, &listed)
                .await
            {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::Shutdown => return Err(e),
                Err(e) => {
                    details.failed_files.push(format!("{url}: {}", e.message()));
                    failures.push(e);
                }
            }
        }
        match failures.len() {
            0 => Ok(()),
            1 => Err(failures.remove(0)),
            n => {
                let first = failures.remove(0);
                Err(first.context(format!("{n} files failed (see the run's failed_files)")))
            }
        }
    }

    /// Imports one file: stage, validate, write, then move or remember it.
    async fn import_file(
        &self,
        ctx: &mut RunContext,
        details: &mut S3RunDetails,
        bucket: &Bucket,
        config: &S3Config,
        listed: &ObjectMeta,
    ) -> Result<()> {
        let tenant = ctx.tenant().clone();
        let staged = self.stage(bucket, listed).await?;
        details.etag = staged.meta.e_tag.clone();
        details.size = Some(staged.meta.size);

        let mapping = config.mapping();
        let Staged { file, meta } = staged;
        let report = match config.report_folder() {
            Some(_) => Some(ReportSpool::create(&self.spool_dir())?),
            None => None,
        };
        let outcome = self
            .validate(
                file,
                mapping.clone(),
                config.mapping_delimiter(),
                ctx.shutdown().clone(),
                report,
            )
            .await;
        let (file, summary, report) = match outcome {
            Ok(ok) => ok,
            Err(Failure::Other(e)) => return Err(e),
            Err(Failure::Content(reason)) => {
                let url = bucket.url_of(&meta.location);
                let moved = self
                    .finish_file(bucket, config, &meta, FAILED_FOLDER, ctx, details)
                    .await;
                let mut message =
                    format!("{url} cannot be imported: {reason}; nothing was written");
                match (moved, &details.moved_to) {
                    (Err(e), _) => message.push_str(&format!("; {}", e.message())),
                    (Ok(()), Some(to)) => message.push_str(&format!("; moved to {to}")),
                    (Ok(()), None) => {}
                }
                return Err(Error::invalid_input(message));
            }
        };

        if let (Some(report), Some(folder)) = (report, config.report_folder()) {
            let path = super::report::report_path(bucket, folder, ctx.run_id());
            match super::report::upload(bucket, &path, report).await {
                Ok(url) => details.error_report = Some(url),
                Err(e) => {
                    tracing::warn!(error = %e, "the error report could not be written");
                    details.error_report_failed = Some(e.message().to_owned());
                }
            }
        }
        if summary.rows_imported > 0 {
            // The run's generation: every value written is stamped with it; a
            // snapshot removes the integration's older values only once every
            // row is written, so a failed run leaves the previous import whole.
            let names: Vec<String> = config
                .attributes()
                .iter()
                .map(|a| a.name().to_owned())
                .collect();
            let mode = import_mode_of(&ctx.config().settings)?;
            let run = self
                .store
                .begin_import(&tenant, &ctx.config().name, mode, &names)
                .await
                .map_err(|e| {
                    let written = ImportSummary {
                        rows_imported: 0,
                        ..summary.clone()
                    };
                    ctx.record_import(&written);
                    e.context("import into the store stopped (nothing was written)")
                })?;
            if let Err((written, e)) = self
                .write(&tenant, &run, file, mapping, summary.rows_imported)
                .await
            {
                // Count what was written, not what would have been.
                let mut partial = summary.clone();
                partial.rows_imported = written;
                ctx.record_import(&partial);
                return Err(e);
            }
            let removed = self.store.finish_import(&tenant, &run).await?;
            details.values_removed = removed.values;
            details.names_freed = removed.names;
        }
        ctx.record_import(&summary);
        details.duplicate_user_ids = summary.duplicate_user_ids;
        let folder = if summary.rows_imported == 0 && summary.rows_rejected > 0 {
            FAILED_FOLDER
        } else {
            SUCCESS_FOLDER
        };
        if let Err(e) = self
            .finish_file(bucket, config, &meta, folder, ctx, details)
            .await
        {
            if summary.rows_imported > 0 {
                // Imported, but not moved: its own outcome, not "failed".
                ctx.imported_not_moved(e.to_string());
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }

    /// Opens the file for two passes: a local file as it is, an S3 object
    /// downloaded (streaming) into an unnamed temporary file.
    async fn stage(&self, bucket: &Bucket, meta: &ObjectMeta) -> Result<Staged> {
        if let Location::Local { folder } = bucket.source.location() {
            let path = folder.join(meta.location.as_ref());
            let file = File::open(&path).map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("cannot open {}: {e}", path.display()),
                )
                .with_source(e)
            })?;
            return Ok(Staged {
                file,
                meta: meta.clone(),
            });
        }
        let opened = self.connector.open(bucket, meta).await?;
        let spool_dir = self.spool_dir();
        let Opened {
            mut reader,
            meta: actual,
            failure,
        } = opened;
        let expected = actual.size;
        let copied = tokio::task::spawn_blocking(move || {
            let mut spool = tempfile::tempfile_in(&spool_dir).map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!(
                        "cannot create a staging file in {}: {e}; set a writable spool_dir",
                        spool_dir.display()
                    ),
                )
                .with_source(e)
            })?;
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Ok(Err(e)),
                };
                std::io::Write::write_all(&mut spool, &buf[..n]).map_err(|e| {
                    Error::new(
                        ErrorKind::Io,
                        format!(
                            "cannot write the staging file in {}: {e}; free disk space or set another spool_dir",
                            spool_dir.display()
                        ),
                    )
                    .with_source(e)
                })?;
                total += n as u64;
            }
            spool.seek(SeekFrom::Start(0))?;
            Ok::<_, Error>(Ok((spool, total)))
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("download task failed: {e}")))??;
        match copied {
            Ok((file, total)) if total == expected => Ok(Staged { file, meta: actual }),
            Ok((_, total)) => Err(Error::new(
                ErrorKind::Network,
                format!(
                    "the download of {} ended after {total} of {expected} bytes; the next run tries again",
                    bucket.url_of(&meta.location)
                ),
            )
            .temporary()),
            Err(io) => Err(read_failure(bucket, &actual, failure, io)),
        }
    }

    /// Where staged files and error reports are spooled.
    fn spool_dir(&self) -> std::path::PathBuf {
        self.connector
            .spool_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
    }

    /// The validation pass: reads every row, writes nothing; spools every
    /// rejected row to `report`, returned finished when rows were rejected.
    async fn validate(
        &self,
        file: File,
        mapping: CsvMapping,
        delimiter: u8,
        shutdown: Shutdown,
        report: Option<ReportSpool>,
    ) -> std::result::Result<(File, ImportSummary, Option<File>), Failure> {
        let mut report = report;
        tokio::task::spawn_blocking(move || {
            let mut file = file;
            let io = |e: std::io::Error| {
                Failure::Other(
                    Error::new(ErrorKind::Io, format!("reading the staged file failed: {e}"))
                        .with_source(e),
                )
            };
            let (prefix, reader) = with_prefix(&mut file).map_err(io)?;
            if let Some(reason) = not_csv_reason(&prefix) {
                return Err(Failure::Content(format!(
                    "it does not look like a CSV file: {reason}"
                )));
            }
            let rows = read_csv(reader, &mapping).map_err(|e| {
                let hint = delimiter_hint(&prefix, delimiter)
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                Failure::Content(format!("{}{hint}", e.message()))
            })?;
            let mut collector = ImportCollector::new().max_row_errors(MAX_ROW_ERRORS);
            for (i, row) in rows.enumerate() {
                if let Err(error) = &row {
                    match &error.reason {
                        RowErrorReason::TooLong { .. } => {
                            return Err(Failure::Content(error.to_string()));
                        }
                        RowErrorReason::Read { message } => {
                            return Err(Failure::Other(Error::new(
                                ErrorKind::Io,
                                format!(
                                    "reading the staged file failed at line {}: {message}",
                                    error.line
                                ),
                            )));
                        }
                        _ => {}
                    }
                    if let Some(report) = &mut report {
                        report.push(error).map_err(Failure::Other)?;
                    }
                }
                // Batches are only counted here; the write pass builds its own.
                drop(collector.push(row));
                if i % 8192 == 0 && shutdown.is_requested() {
                    return Err(Failure::Other(Error::new(
                        ErrorKind::Shutdown,
                        "shutting down: the import stopped before writing; the file stays for the next run",
                    )));
                }
            }
            let (_, summary) = collector.finish();
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            let report = match report {
                Some(report) if report.rows() > 0 => {
                    Some(report.finish().map_err(Failure::Other)?)
                }
                _ => None,
            };
            Ok((file, summary, report))
        })
        .await
        .map_err(|e| Failure::Other(Error::new(ErrorKind::Io, format!("validation task failed: {e}"))))?
    }

    /// The write pass: parses the file again and upserts the good rows in batches.
    async fn write(
        &self,
        tenant: &TenantId,
        run: &ImportRun,
        file: File,
        mapping: CsvMapping,
        expected: u64,
    ) -> std::result::Result<(), (u64, Error)> {
        let batch_size = self.connector.batch_size;
        let (tx, mut rx) = mpsc::channel::<AttributeBatch>(1);
        let producer = tokio::task::spawn_blocking(move || {
            let rows = read_csv(file, &mapping)?;
            let mut batch = AttributeBatch::with_capacity(batch_size, 0);
            let mut sent = 0u64;
            for record in rows.flatten() {
                batch.push_csv(&record)?;
                if batch.len() == batch_size {
                    sent += batch.len() as u64;
                    let full =
                        std::mem::replace(&mut batch, AttributeBatch::with_capacity(batch_size, 0));
                    if tx.blocking_send(full).is_err() {
                        return Ok(sent);
                    }
                }
            }
            if !batch.is_empty() {
                sent += batch.len() as u64;
                // A closed channel means the consumer failed; it reports why.
                let _ = tx.blocking_send(batch);
            }
            Ok::<_, Error>(sent)
        });
        let mut written = 0u64;
        while let Some(batch) = rx.recv().await {
            if let Err(e) = self.store.write_import_batch(tenant, run, &batch).await {
                let done = if written == 0 {
                    "nothing was written".to_owned()
                } else {
                    format!(
                        "{written} rows were written before; the previous import stays in place and the next run writes them again"
                    )
                };
                return Err((
                    written,
                    e.context(format!("import into the store stopped ({done})")),
                ));
            }
            written += batch.len() as u64;
        }
        let sent = producer
            .await
            .map_err(|e| {
                (
                    written,
                    Error::new(ErrorKind::Io, format!("import task failed: {e}")),
                )
            })?
            .map_err(|e| (written, e))?;
        if sent != expected || written != expected {
            return Err((written, Error::new(
                ErrorKind::Conflict,
                format!(
                    "the file changed between the validation and the write pass ({expected} rows validated, {written} written); the next run imports it again"
                ),
            )
            .temporary()));
        }
        Ok(())
    }

    /// Moves the file to `folder` (or remembers its ETag), unless it changed
    /// during the run.
    async fn finish_file(
        &self,
        bucket: &Bucket,
        config: &S3Config,
        meta: &ObjectMeta,
        folder: &str,
        ctx: &RunContext,
        details: &mut S3RunDetails,
    ) -> Result<()> {
        let now = ctx.started_at();
        match config.after() {
            AfterImport::KeepInPlace => {
                let until = now + chrono::Duration::days(REMEMBER_FOR_DAYS);
                self.store
                    .remember_once(&Self::scope(ctx), &version_key(bucket, meta), until, now)
                    .await?;
                details.kept_in_place = true;
                Ok(())
            }
            AfterImport::Move => {
                let current = match bucket.store.head(&meta.location).await {
                    Ok(current) => current,
                    Err(object_store::Error::NotFound { .. }) => {
                        details.source_changed = true;
                        return Ok(());
                    }
                    Err(e) => return Err(bucket.error(e, Op::Head, &meta.location)),
                };
                if current.e_tag != meta.e_tag || current.size != meta.size {
                    details.source_changed = true;
                    return Ok(());
                }
                let to = bucket
                    .move_to(&current, folder, now, ctx.run_id())
                    .await
                    .map_err(|e| {
                        e.context(format!(
                            "the import finished but the file could not be moved to {folder}/ (it stays in place and is imported again next run)"
                        ))
                    })?;
                details.moved_to = Some(bucket.url_of(&to));
                Ok(())
            }
        }
    }
}

/// Identifies one version of one object for keep-in-place bookkeeping.
fn version_key(bucket: &Bucket, meta: &ObjectMeta) -> String {
    let version = match &meta.e_tag {
        Some(etag) => etag.clone(),
        None => format!("{}@{}", meta.size, meta.last_modified.timestamp_millis()),
    };
    format!("{}#{version}", bucket.url_of(&meta.location))
}

#[async_trait]
impl ScheduledJob for S3Import {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, ctx: &mut RunContext) -> Result<()> {
        self.run_once(ctx).await
    }

    fn attribute_names(&self, config: &IntegrationConfig) -> Option<Vec<String>> {
        let settings = serde_json::from_value::<S3Config>(config.settings.clone()).ok()?;
        Some(
            settings
                .attributes()
                .iter()
                .map(|a| a.name().to_owned())
                .collect(),
        )
    }

    /// Refuses, when an integration is saved: an attribute name another of the
    /// tenant's integrations already imports (each attribute belongs to one
    /// integration), and two integrations reading the same files when either
    /// moves them (the second would find nothing): use keep-in-place for both.
    fn check_config(&self, config: &IntegrationConfig, others: &[IntegrationConfig]) -> Result<()> {
        let Ok(mine) = serde_json::from_value::<S3Config>(config.settings.clone()) else {
            return Ok(()); // from_integration reports bad settings at the run
        };
        for other in others
            .iter()
            .filter(|o| o.tenant == config.tenant && o.name != config.name)
        {
            let Ok(theirs) = serde_json::from_value::<S3Config>(other.settings.clone()) else {
                continue;
            };
            for attribute in mine.attributes() {
                let name = attribute.name();
                if theirs.attributes().iter().any(|a| a.name() == name) {
                    return Err(Error::config(format!(
                        "the attribute {name:?} is already imported by integration {:?}: each attribute belongs to one integration; map the column under another name (or remove it from {:?} first)",
                        other.name, other.name
                    )));
                }
            }
            let moving = mine.after() == AfterImport::Move || theirs.after() == AfterImport::Move;
            if moving && sources_overlap(mine.source(), theirs.source()) {
                return Err(Error::config(format!(
                    "integration {:?} also reads {}, and one of them moves the file after importing it, so the other would find nothing: set both to keep-in-place (AfterImport::KeepInPlace) to read one file from several integrations",
                    other.name,
                    theirs.source()
                )));
            }
        }
        Ok(())
    }
}

/// True if two sources can match one object.
fn sources_overlap(a: &super::source::SourceUrl, b: &super::source::SourceUrl) -> bool {
    if a.bucket() != b.bucket() || a.local_folder() != b.local_folder() || a.folder() != b.folder()
    {
        return false;
    }
    match (a.is_glob(), b.is_glob()) {
        (false, false) => a.pattern() == b.pattern(),
        (true, false) => a.matches(b.pattern()),
        (false, true) => b.matches(a.pattern()),
        // Two patterns in one folder may well match one file.
        (true, true) => true,
    }
}
