//! [`RunContext`]: what a scheduled job sees during one run and fills in.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};

use super::MAX_ROW_ERRORS;
use crate::attributes::ImportSummary;
use crate::integration::{IntegrationConfig, RunOutcome};
use crate::source::Shutdown;
use crate::tenant::TenantId;

/// What a job sees during one run, and fills in: rows read, imported and rejected,
/// row errors, properties imported and free-form details.
pub struct RunContext {
    config: IntegrationConfig,
    run_id: i64,
    started_at: DateTime<Utc>,
    shutdown: Shutdown,
    pub(super) rows_read: u64,
    pub(super) rows_imported: u64,
    pub(super) rows_rejected: u64,
    pub(super) row_errors: Vec<String>,
    pub(super) properties: BTreeSet<String>,
    pub(super) details: serde_json::Map<String, serde_json::Value>,
    /// A distinct outcome the job asked for, and why.
    pub(super) outcome: Option<(RunOutcome, Option<String>)>,
}

impl fmt::Debug for RunContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunContext")
            .field("tenant", &self.config.tenant)
            .field("integration", &self.config.name)
            .field("run_id", &self.run_id)
            .field("rows_read", &self.rows_read)
            .field("rows_imported", &self.rows_imported)
            .field("rows_rejected", &self.rows_rejected)
            .finish_non_exhaustive()
    }
}

impl RunContext {
    /// A context for a run of `config` (the scheduler makes these; public so jobs
    /// can be tested on their own).
    pub fn new(
        config: IntegrationConfig,
        run_id: i64,
        started_at: DateTime<Utc>,
        shutdown: Shutdown,
    ) -> Self {
        RunContext {
            config,
            run_id,
            started_at,
            shutdown,
            rows_read: 0,
            rows_imported: 0,
            rows_rejected: 0,
            row_errors: Vec::new(),
            properties: BTreeSet::new(),
            details: serde_json::Map::new(),
            outcome: None,
        }
    }

    /// Marks the run as having found nothing new to import
    /// ([`RunOutcome::NoNewFile`], when the job then returns `Ok`), with an
    /// optional reason (e.g. "no such key"). Its figures do not replace the
    /// last import's in [`Scheduler::integrations`](super::Scheduler::integrations).
    pub fn no_new_file(&mut self, reason: Option<String>) {
        self.outcome = Some((RunOutcome::NoNewFile, reason));
    }

    /// Marks the run as "imported, not moved" ([`RunOutcome::ImportedNotMoved`],
    /// when the job then returns `Ok`): the rows were written but the source
    /// could not be moved or marked done, for `reason`.
    pub fn imported_not_moved(&mut self, reason: impl Into<String>) {
        self.outcome = Some((RunOutcome::ImportedNotMoved, Some(reason.into())));
    }

    /// The integration's configuration, as read from the store when this run started.
    pub fn config(&self) -> &IntegrationConfig {
        &self.config
    }

    /// The run's id in the store.
    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    /// When the run started.
    pub fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }

    /// The tenant the integration belongs to.
    pub fn tenant(&self) -> &TenantId {
        &self.config.tenant
    }

    /// Fires when the host shuts down ([`Scheduler::run`](super::Scheduler::run)'s signal). A long job
    /// should watch it (`ctx.shutdown().clone().wait().await`, or
    /// [`Shutdown::is_requested`] between batches) and stop early by returning an
    /// [`ErrorKind::Shutdown`](crate::ErrorKind::Shutdown) error: the run is then recorded as
    /// [`RunOutcome::Abandoned`]. A job still running after the scheduler's
    /// shutdown grace period is cancelled and recorded as abandoned too.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Counts rows read from the source.
    pub fn add_rows_read(&mut self, n: u64) {
        self.rows_read += n;
    }

    /// Counts rows imported.
    pub fn add_rows_imported(&mut self, n: u64) {
        self.rows_imported += n;
    }

    /// Counts one rejected row and keeps its error if fewer than [`MAX_ROW_ERRORS`] are kept.
    pub fn reject_row(&mut self, error: impl fmt::Display) {
        self.rows_rejected += 1;
        if self.row_errors.len() < MAX_ROW_ERRORS {
            self.row_errors.push(error.to_string());
        }
    }

    /// Notes attribute names imported; the run records how many distinct ones.
    pub fn add_properties<I, S>(&mut self, names: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.properties.extend(names.into_iter().map(Into::into));
    }

    /// Adds what an import did: counts, row errors and properties.
    pub fn record_import(&mut self, summary: &ImportSummary) {
        self.rows_read += summary.rows_read;
        self.rows_imported += summary.rows_imported;
        // Rejected rows beyond the kept errors are counted without their text.
        let kept = summary.row_errors.iter().filter(|e| !e.is_fatal());
        let mut kept_count = 0u64;
        for error in kept {
            kept_count += 1;
            self.reject_row(error);
        }
        self.rows_rejected += summary.rows_rejected.saturating_sub(kept_count);
        self.add_properties(summary.properties.iter().cloned());
        if summary.duplicate_user_ids > 0 {
            self.set_detail("duplicate_user_ids", summary.duplicate_user_ids.into());
        }
    }

    /// Sets a connector-specific detail recorded with the run (e.g. where the file moved).
    pub fn set_detail(&mut self, key: impl Into<String>, value: serde_json::Value) {
        self.details.insert(key.into(), value);
    }

    /// Rows read so far.
    pub fn rows_read(&self) -> u64 {
        self.rows_read
    }

    /// Rows imported so far.
    pub fn rows_imported(&self) -> u64 {
        self.rows_imported
    }

    /// Rows rejected so far.
    pub fn rows_rejected(&self) -> u64 {
        self.rows_rejected
    }

    /// The row errors kept so far.
    pub fn row_errors(&self) -> &[String] {
        &self.row_errors
    }

    /// Distinct properties imported so far.
    pub fn properties_imported(&self) -> u64 {
        self.properties.len() as u64
    }
}
