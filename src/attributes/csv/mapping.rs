//! [`CsvMapping`]: which CSV columns are imported, under which names, and how the user id is normalised.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::attributes::input::TextEncoding;
use crate::{Error, Result};

/// The default cap on one record's size (1 MiB); see [`CsvMapping::max_record_bytes`].
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

/// The longest user id accepted, in bytes.
pub const MAX_USER_ID_BYTES: usize = 255;

/// The CSV reader's buffer size.
pub(super) const BUFFER_CAPACITY: usize = 64 * 1024;

/// Which CSV columns to import: the unique user-id column and the attribute
/// columns, each under the name it is imported as.
///
/// A consuming builder:
/// ```
/// use switchboard::attributes::CsvMapping;
/// let mapping = CsvMapping::new("Email")
///     .attribute("Plan", "plan")
///     .attribute("Support Tickets", "support_tickets");
/// assert_eq!(mapping.user_id_column(), "Email");
/// ```
///
/// Column names are matched against the header exactly; a column that is not found
/// exactly is matched ignoring surrounding spaces and case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsvMapping {
    pub(super) user_id_column: String,
    #[serde(default)]
    pub(super) attributes: Vec<(String, String)>,
    #[serde(default = "default_delimiter")]
    pub(super) delimiter: u8,
    #[serde(default = "default_max_record_bytes")]
    pub(super) max_record_bytes: usize,
    #[serde(default)]
    pub(super) encoding: TextEncoding,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) null_values: Vec<String>,
    #[serde(default)]
    pub(super) user_id_format: UserIdFormat,
}

/// How the user-id column is normalised, so `Ada@X.com` and `ada@x.com` are
/// one user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UserIdFormat {
    /// As written (trimmed).
    #[default]
    AsIs,
    /// An email address, normalised with [`crate::identity::normalize_email`];
    /// a row whose id is not an email address is rejected.
    Email,
    /// A phone number, normalised to E.164 with
    /// [`crate::identity::normalize_phone`] (numbers without a country code
    /// are read in `region`, ISO 3166 alpha-2); other ids are rejected.
    Phone {
        /// The default region.
        region: String,
    },
}

fn default_delimiter() -> u8 {
    b','
}

fn default_max_record_bytes() -> usize {
    DEFAULT_MAX_RECORD_BYTES
}

impl CsvMapping {
    /// A mapping whose user ids come from `user_id_column`.
    pub fn new(user_id_column: impl Into<String>) -> Self {
        CsvMapping {
            user_id_column: user_id_column.into(),
            attributes: Vec::new(),
            delimiter: default_delimiter(),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            encoding: TextEncoding::Utf8,
            null_values: Vec::new(),
            user_id_format: UserIdFormat::AsIs,
        }
    }

    /// The file's text encoding (default UTF-8; see [`TextEncoding`]). Gzipped
    /// files (`.csv.gz`) are recognised by their content whatever this says.
    #[must_use]
    pub fn encoding(mut self, encoding: TextEncoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Values that mean "no value" (compared after trimming, case-insensitively,
    /// e.g. `NULL`, `n/a`, `-`): such a cell sets no attribute for the user.
    #[must_use]
    pub fn null_values<I, S>(mut self, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.null_values = values
            .into_iter()
            .map(|v| v.into().trim().to_lowercase())
            .collect();
        self
    }

    /// How user ids are normalised (default: as written, trimmed).
    #[must_use]
    pub fn user_id_format(mut self, format: UserIdFormat) -> Self {
        self.user_id_format = format;
        self
    }

    /// Imports `column` as the attribute `as_name`.
    #[must_use]
    pub fn attribute(mut self, column: impl Into<String>, as_name: impl Into<String>) -> Self {
        self.attributes.push((column.into(), as_name.into()));
        self
    }

    /// Sets the field delimiter (default `,`; `;` and tab are common too).
    #[must_use]
    pub fn delimiter(mut self, delimiter: u8) -> Self {
        self.delimiter = delimiter;
        self
    }

    /// Caps the size of one record (default 1 MiB, at least 1 KiB). A longer
    /// record (typically an unterminated quote swallowing the rest of the file)
    /// stops reading with a [`RowErrorReason::TooLong`] error, so memory stays
    /// bounded.
    #[must_use]
    pub fn max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = bytes.max(1024);
        self
    }

    /// The user-id column.
    pub fn user_id_column(&self) -> &str {
        &self.user_id_column
    }

    /// The mapped columns as `(column, as_name)`, in the order they were added.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attributes
            .iter()
            .map(|(c, a)| (c.as_str(), a.as_str()))
    }

    /// Checks the mapping itself: non-empty names, attribute names unique.
    pub fn validate(&self) -> Result<()> {
        if self.user_id_column.trim().is_empty() {
            return Err(Error::invalid_input(
                "the user-id column name must not be empty",
            ));
        }
        let mut seen = BTreeSet::new();
        for (column, as_name) in &self.attributes {
            if column.trim().is_empty() {
                return Err(Error::invalid_input(
                    "a mapped column name must not be empty",
                ));
            }
            if as_name.trim().is_empty() {
                return Err(Error::invalid_input(format!(
                    "column {column:?} is mapped to an empty attribute name"
                )));
            }
            if !seen.insert(as_name.as_str()) {
                return Err(Error::invalid_input(format!(
                    "attribute name {as_name:?} is mapped more than once"
                )));
            }
        }
        if matches!(self.delimiter, b'"' | b'\n' | b'\r') {
            return Err(Error::invalid_input(
                "the delimiter cannot be a quote or a line break",
            ));
        }
        Ok(())
    }
}
