//! Scheduled integrations (e.g. a CSV import): their configuration, schedule and run history.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::tenant::TenantId;

/// When an integration runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Schedule {
    /// Every so often.
    Interval(#[serde(with = "duration_secs")] Duration),
    /// A cron expression (5 or 6 fields, parsed with `croner`).
    Cron(String),
}

mod duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

/// An integration's configuration as the admin set it up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntegrationConfig {
    /// The tenant it belongs to.
    #[serde(default)]
    pub tenant: TenantId,
    /// Name, unique within the tenant.
    pub name: String,
    /// Human description of the source (e.g. `s3://bucket/exports/*.csv`).
    pub source: String,
    /// When it runs.
    pub schedule: Schedule,
    /// Disabled integrations do not run.
    pub enabled: bool,
    /// Connector-specific settings (never secrets).
    #[serde(default)]
    pub settings: serde_json::Value,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Still going (or its process died; see the lease).
    Running,
    /// Everything imported.
    Success,
    /// Some rows rejected, the rest imported.
    Partial,
    /// Nothing imported.
    Failed,
    /// Cancelled (shutdown) before it finished.
    Abandoned,
    /// Nothing new to import (no file, or only files already imported); the
    /// last import's figures stay the integration's figures. The record's
    /// `error` may say why (e.g. the key does not exist).
    NoNewFile,
    /// Every row was imported but the source could not be moved or marked
    /// done afterwards (the record's `error` says why); the next run may import
    /// the same file again.
    ImportedNotMoved,
}

impl RunOutcome {
    /// True for a run that imported something (its figures are the
    /// integration's current ones): not running, not "no new file", not
    /// abandoned.
    pub fn is_import(self) -> bool {
        matches!(
            self,
            RunOutcome::Success
                | RunOutcome::Partial
                | RunOutcome::Failed
                | RunOutcome::ImportedNotMoved
        )
    }

    /// Stable name for storage.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Running => "running",
            RunOutcome::Success => "success",
            RunOutcome::Partial => "partial",
            RunOutcome::Failed => "failed",
            RunOutcome::Abandoned => "abandoned",
            RunOutcome::NoNewFile => "no_new_file",
            RunOutcome::ImportedNotMoved => "imported_not_moved",
        }
    }
    /// Parses [`RunOutcome::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(RunOutcome::Running),
            "success" => Some(RunOutcome::Success),
            "partial" => Some(RunOutcome::Partial),
            "failed" => Some(RunOutcome::Failed),
            "abandoned" => Some(RunOutcome::Abandoned),
            "no_new_file" => Some(RunOutcome::NoNewFile),
            "imported_not_moved" => Some(RunOutcome::ImportedNotMoved),
            _ => None,
        }
    }
}

/// One run of an integration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The store's id.
    pub id: i64,
    /// The integration's tenant.
    #[serde(default)]
    pub tenant: TenantId,
    /// The integration's name.
    pub integration: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// How it ended.
    pub outcome: RunOutcome,
    /// Rows read from the source.
    pub rows_read: u64,
    /// Rows imported.
    pub rows_imported: u64,
    /// Rows rejected.
    pub rows_rejected: u64,
    /// The first row errors (line number and reason).
    pub row_errors: Vec<String>,
    /// Distinct attributes imported.
    pub properties_imported: u64,
    /// The error that failed the run.
    pub error: Option<String>,
    /// Connector-specific details (e.g. where the file was moved).
    #[serde(default)]
    pub details: serde_json::Value,
}
