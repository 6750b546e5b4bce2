//! Run history folding and the admin page's integration rows.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::integration::{RunOutcome, RunRecord, Schedule};
use crate::tenant::TenantId;

/// One line of an integration's run history with repeated "no new file" runs
/// folded together (see [`compact_history`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The run (the latest of a folded series).
    pub run: RunRecord,
    /// How many consecutive runs this line stands for (1 unless folded).
    pub runs: u64,
    /// When the earliest run of a folded series started.
    pub since: DateTime<Utc>,
}

/// Folds consecutive [`RunOutcome::NoNewFile`] runs with the same reason (as
/// listed by [`crate::store::RunStore::runs`], newest first) into one entry,
/// so a daily file checked hourly shows one import and one "no new file ×23"
/// line per day.
pub fn compact_history(runs: &[RunRecord]) -> Vec<HistoryEntry> {
    let mut out: Vec<HistoryEntry> = Vec::new();
    for run in runs {
        if let Some(last) = out.last_mut() {
            if run.outcome == RunOutcome::NoNewFile
                && last.run.outcome == RunOutcome::NoNewFile
                && last.run.error == run.error
            {
                last.runs += 1;
                last.since = run.started_at;
                continue;
            }
        }
        out.push(HistoryEntry {
            run: run.clone(),
            runs: 1,
            since: run.started_at,
        });
    }
    out
}

/// One row of the admin page's integrations table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntegrationRow {
    /// The tenant the integration belongs to.
    pub tenant: TenantId,
    /// The integration's name.
    pub name: String,
    /// Where it reads from.
    pub source: String,
    /// Distinct properties the last import imported (runs that found no new
    /// file do not replace it).
    pub properties_imported: u64,
    /// When the last import (a run that found something to import) started.
    pub last_import: Option<DateTime<Utc>>,
    /// Rows the last import imported.
    pub rows_imported: u64,
    /// When it runs.
    pub schedule: Schedule,
    /// When the latest run started.
    pub last_run: Option<DateTime<Utc>>,
    /// How the latest run ended (`running` while it runs).
    pub last_outcome: Option<RunOutcome>,
    /// The error of the last finished run, if it failed.
    pub last_error: Option<String>,
    /// Whether it runs at all.
    pub enabled: bool,
    /// When it is due next (`None` if disabled or the schedule is invalid).
    pub next_run: Option<DateTime<Utc>>,
    /// Why the schedule cannot be used, if it cannot.
    pub schedule_error: Option<String>,
    /// Whether this scheduler has a job that runs it.
    pub has_job: bool,
}
