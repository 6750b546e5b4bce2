//! Streaming CSV import: a column mapping, a constant-memory record reader, per-row errors and an import summary.

mod discover;
mod error;
mod fields;
mod import;
mod mapping;
mod reader;
mod record;
mod report;
mod row;
mod source;

pub use discover::{CsvSample, discover_csv, discover_csv_encoded, discover_csv_with};
pub use error::{RowError, RowErrorReason};
pub use import::{ImportCollector, ImportSummary, import_rows};
pub use mapping::{CsvMapping, DEFAULT_MAX_RECORD_BYTES, MAX_USER_ID_BYTES, UserIdFormat};
pub use reader::{CsvRecords, read_csv};
pub use record::CsvRecord;
pub(crate) use record::Shape;
pub use report::ErrorReport;
pub use row::CsvRow;
