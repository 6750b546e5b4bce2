//! Per-row import errors: [`RowError`] (line, user id, reason) and [`RowErrorReason`].

use serde::{Deserialize, Serialize};

/// Why a row was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RowErrorReason {
    /// The row has a different number of fields than the header.
    #[error("expected {expected} fields, found {found}")]
    FieldCount {
        /// Fields in the header.
        expected: usize,
        /// Fields in the row.
        found: usize,
    },
    /// The user-id field is empty.
    #[error("the user id (column {column:?}) is empty")]
    EmptyUserId {
        /// The user-id column's name.
        column: String,
    },
    /// The user-id field is not a usable id.
    #[error("the user id (column {column:?}) is invalid: {detail}")]
    InvalidUserId {
        /// The user-id column's name.
        column: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A mapped field is not valid UTF-8.
    #[error("column {column:?} is not valid UTF-8")]
    InvalidUtf8 {
        /// The column's name.
        column: String,
    },
    /// The record exceeds the size cap; reading stopped here.
    #[error("the record is longer than {limit} bytes (unterminated quote?); reading stopped")]
    TooLong {
        /// The cap, in bytes.
        limit: usize,
    },
    /// The input failed to read; reading stopped here.
    #[error("reading failed: {message}; reading stopped")]
    Read {
        /// The I/O error.
        message: String,
    },
}

/// A rejected row: the line it starts on and why.
///
/// ```
/// use switchboard::attributes::{CsvMapping, read_csv};
/// let csv = "id,plan\n,basic\n";
/// let mut rows = read_csv(csv.as_bytes(), &CsvMapping::new("id")).unwrap();
/// let err = rows.next().unwrap().unwrap_err();
/// assert_eq!(err.line, 2);
/// assert!(err.to_string().starts_with("line 2: "));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct RowError {
    /// The 1-based line the row starts on.
    pub line: u64,
    /// The row's user-id cell as read (trimmed, not normalised, at most
    /// [`MAX_USER_ID_BYTES`](crate::attributes::MAX_USER_ID_BYTES) bytes), if it had a non-blank one; `None` for a
    /// fatal error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Why it was rejected.
    pub reason: RowErrorReason,
}

impl RowErrorReason {
    /// A short, stable name for the reason (`field_count`, `empty_user_id`,
    /// `invalid_user_id`, `invalid_utf8`, `too_long`, `read`), as serialised.
    pub fn kind(&self) -> &'static str {
        match self {
            RowErrorReason::FieldCount { .. } => "field_count",
            RowErrorReason::EmptyUserId { .. } => "empty_user_id",
            RowErrorReason::InvalidUserId { .. } => "invalid_user_id",
            RowErrorReason::InvalidUtf8 { .. } => "invalid_utf8",
            RowErrorReason::TooLong { .. } => "too_long",
            RowErrorReason::Read { .. } => "read",
        }
    }
}

impl RowError {
    /// True if reading stopped at this error (I/O failure or an oversized record);
    /// the rest of the file was not read.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self.reason,
            RowErrorReason::TooLong { .. } | RowErrorReason::Read { .. }
        )
    }
}
