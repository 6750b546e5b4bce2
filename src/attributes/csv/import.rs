//! Collecting read rows into batches and writing them to an [`AttributeStore`] ([`import_rows`]).

use std::collections::BTreeSet;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use serde::{Deserialize, Serialize};

use super::error::{RowError, RowErrorReason};
use crate::attributes::{AttributeBatch, AttributeStore, ImportRow};
use crate::tenant::TenantId;
use crate::{Error, ErrorKind, Result};

/// What an import did: counts, the first row errors, duplicates and the
/// attributes imported. Produced by [`ImportCollector::finish`] and [`import_rows`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSummary {
    /// Data rows read (imported + rejected).
    pub rows_read: u64,
    /// Rows imported (duplicates included: each was written, the last one won).
    pub rows_imported: u64,
    /// Rows rejected.
    pub rows_rejected: u64,
    /// Rows whose user id appeared on an earlier row (the later row won).
    pub duplicate_user_ids: u64,
    /// False if the file had more rows than the collector tracks user ids for
    /// ([`ImportCollector::max_tracked_ids`]); `duplicate_user_ids` is then a
    /// lower bound.
    pub duplicates_exact: bool,
    /// The first row errors, in file order.
    pub row_errors: Vec<RowError>,
    /// The distinct attribute names imported, sorted.
    pub properties: Vec<String>,
    /// True if reading stopped at a fatal row error (see [`RowError::is_fatal`]).
    pub stopped_early: bool,
}

impl ImportSummary {
    /// Distinct users imported.
    pub fn users_imported(&self) -> u64 {
        self.rows_imported.saturating_sub(self.duplicate_user_ids)
    }
}

/// Collects rows from [`read_csv`] into [`AttributeBatch`]es for
/// [`AttributeStore::upsert_batch`] while counting what an [`ImportSummary`] reports.
///
/// Memory stays bounded: one batch (at most [`ImportCollector::DEFAULT_BATCH_SIZE`]
/// records by default, and no more than 64 MiB of text), the first row errors, and 8 bytes
/// (a hash of the user id) per row for duplicate counting, up to
/// [`ImportCollector::max_tracked_ids`] rows (2,000,000 by default, i.e. 16 MB).
///
/// ```
/// use switchboard::attributes::{CsvMapping, ImportCollector, read_csv};
/// let csv = "id,plan\n1,basic\n2,\n1,premium\n,x\n";
/// let mapping = CsvMapping::new("id").attribute("plan", "plan");
/// let mut collector = ImportCollector::new().batch_size(100);
/// for row in read_csv(csv.as_bytes(), &mapping).unwrap() {
///     assert!(collector.push(row).is_none()); // the batch never fills here
/// }
/// let (last_batch, summary) = collector.finish();
/// assert_eq!(last_batch.len(), 3);
/// assert_eq!((summary.rows_read, summary.rows_rejected, summary.duplicate_user_ids), (4, 1, 1));
/// ```
#[derive(Debug)]
pub struct ImportCollector {
    summary: ImportSummary,
    batch: AttributeBatch,
    batch_size: usize,
    max_row_errors: usize,
    max_tracked_ids: usize,
    hashes: Vec<u64>,
    properties: BTreeSet<String>,
}

/// The text after which a batch is handed out whatever its number of records.
const MAX_BATCH_TEXT: usize = 64 << 20;

impl Default for ImportCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl ImportCollector {
    /// The default number of records per batch.
    pub const DEFAULT_BATCH_SIZE: usize = 2_000;
    /// The default number of row errors kept.
    pub const DEFAULT_MAX_ROW_ERRORS: usize = 20;
    /// The default number of distinct user ids tracked for duplicate counting.
    pub const DEFAULT_MAX_TRACKED_IDS: usize = 2_000_000;

    /// A collector with batches of 2,000 records ([`Self::DEFAULT_BATCH_SIZE`]), keeping the first 20 row errors.
    pub fn new() -> Self {
        ImportCollector {
            summary: ImportSummary {
                duplicates_exact: true,
                ..ImportSummary::default()
            },
            batch: AttributeBatch::new(),
            batch_size: Self::DEFAULT_BATCH_SIZE,
            max_row_errors: Self::DEFAULT_MAX_ROW_ERRORS,
            max_tracked_ids: Self::DEFAULT_MAX_TRACKED_IDS,
            hashes: Vec::new(),
            properties: BTreeSet::new(),
        }
    }

    /// Records per batch (at least 1).
    #[must_use]
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// How many row errors to keep (the rest are only counted).
    #[must_use]
    pub fn max_row_errors(mut self, n: usize) -> Self {
        self.max_row_errors = n;
        self
    }

    /// How many rows' user ids to remember for duplicate counting (8 bytes each).
    #[must_use]
    pub fn max_tracked_ids(mut self, n: usize) -> Self {
        self.max_tracked_ids = n;
        self
    }

    /// Takes one row (a [`CsvRecord`](super::CsvRecord) from [`read_csv`] or an
    /// [`AttributeRecord`](crate::attributes::AttributeRecord)); returns a full
    /// batch when one is ready to write.
    pub fn push<T: ImportRow>(
        &mut self,
        row: std::result::Result<T, RowError>,
    ) -> Option<AttributeBatch> {
        let record = match row {
            Ok(record) => record,
            Err(error) => {
                self.reject(error);
                return None;
            }
        };
        if self.batch.is_empty() && self.batch.text_len() == 0 {
            self.batch = AttributeBatch::with_capacity(self.batch_size, 0);
        }
        if let Err(e) = record.append_to(&mut self.batch) {
            // A record of over 4 GiB (a CSV record is far smaller).
            let line = self.summary.rows_read + 1;
            self.reject(RowError {
                line,
                user_id: None,
                reason: RowErrorReason::TooLong {
                    limit: u32::MAX as usize,
                },
            });
            tracing::warn!(line, error = %e, "an attribute record too large to import");
            return None;
        }
        self.summary.rows_read += 1;
        self.summary.rows_imported += 1;
        if self.hashes.len() < self.max_tracked_ids {
            let hasher = BuildHasherDefault::<DefaultHasher>::default();
            self.hashes.push(hasher.hash_one(record.user_id()));
        } else {
            self.summary.duplicates_exact = false;
        }
        if self.batch.len() >= self.batch_size || self.batch.text_len() >= MAX_BATCH_TEXT {
            self.note_names();
            return Some(std::mem::take(&mut self.batch));
        }
        None
    }

    /// Counts a rejected row, keeping the first errors.
    fn reject(&mut self, error: RowError) {
        if error.is_fatal() {
            self.summary.stopped_early = true;
        } else {
            self.summary.rows_read += 1;
            self.summary.rows_rejected += 1;
        }
        if self.summary.row_errors.len() < self.max_row_errors || error.is_fatal() {
            self.summary.row_errors.push(error);
        }
    }

    /// Adds the names of the batch to the properties imported.
    fn note_names(&mut self) {
        for name in self.batch.names() {
            if !self.properties.contains(name) {
                self.properties.insert(name.to_owned());
            }
        }
    }

    /// The rows counted so far (imported + rejected).
    pub fn rows_read(&self) -> u64 {
        self.summary.rows_read
    }

    /// Ends the import: the last, partial batch and the summary.
    pub fn finish(mut self) -> (AttributeBatch, ImportSummary) {
        self.note_names();
        self.hashes.sort_unstable();
        let mut distinct = 0u64;
        let mut previous = None;
        for h in &self.hashes {
            if previous != Some(*h) {
                distinct += 1;
                previous = Some(*h);
            }
        }
        self.summary.duplicate_user_ids = self.hashes.len() as u64 - distinct;
        self.summary.properties = self.properties.into_iter().collect();
        (self.batch, self.summary)
    }
}

/// What reading towards the next batch ended with.
enum Fill {
    /// A full batch to write.
    Batch(AttributeBatch),
    /// The rows ended (the collector holds the last, partial batch).
    End,
    /// Reading stopped at a fatal row error.
    Fatal(RowError),
}

fn fill<I, T>(rows: &mut I, collector: &mut ImportCollector) -> Fill
where
    I: Iterator<Item = std::result::Result<T, RowError>>,
    T: ImportRow,
{
    for row in rows {
        if let Some(batch) = collector.push(row) {
            return Fill::Batch(batch);
        }
        if collector.summary.stopped_early {
            if let Some(error) = collector.summary.row_errors.last() {
                return Fill::Fatal(error.clone());
            }
        }
    }
    Fill::End
}

/// Streams rows (usually from [`read_csv`]) into `tenant`'s users in an
/// [`AttributeStore`], in batches.
///
/// Reading is pipelined with writing: the next batch is read while the store
/// writes the previous one, so at most two batches are in memory.
///
/// Every record of a CSV import carries every mapped attribute, so the first batch
/// registers all names: an import that would exceed the tenant's attribute cap fails on it,
/// before anything is written. A fatal row error (I/O failure, oversized record)
/// fails the import; the full batches before it are already written.
pub async fn import_rows<I, T>(
    rows: I,
    store: &(impl AttributeStore + ?Sized),
    tenant: &TenantId,
    collector: ImportCollector,
) -> Result<ImportSummary>
where
    I: IntoIterator<Item = std::result::Result<T, RowError>>,
    T: ImportRow,
{
    let mut collector = collector;
    let mut rows = rows.into_iter();
    let mut written = 0u64;
    let mut pending: Option<AttributeBatch> = None;
    loop {
        let step = match pending.take() {
            // The store's future is polled first, so its work is under way
            // (on its own threads) while this task reads the next batch.
            Some(batch) => {
                let (result, step) = tokio::join!(store.upsert_batch(tenant, &batch), async {
                    fill(&mut rows, &mut collector)
                });
                result?;
                written += batch.len() as u64;
                step
            }
            None => fill(&mut rows, &mut collector),
        };
        match step {
            Fill::Batch(batch) => pending = Some(batch),
            Fill::End => break,
            Fill::Fatal(error) => {
                let kind = match error.reason {
                    RowErrorReason::Read { .. } => ErrorKind::Io,
                    _ => ErrorKind::InvalidInput,
                };
                return Err(Error::new(
                    kind,
                    format!("import stopped: {error}; {written} rows were imported before"),
                ));
            }
        }
    }
    let (batch, summary) = collector.finish();
    if !batch.is_empty() {
        store.upsert_batch(tenant, &batch).await?;
    }
    Ok(summary)
}
