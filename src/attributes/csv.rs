//! Streaming CSV import: a column mapping, a constant-memory record reader, per-row errors and an import summary.

use std::collections::BTreeSet;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::io::{self, Read};

use csv::ByteRecord;
use serde::{Deserialize, Serialize};

use super::input::{Input, TextEncoding};
use super::{AttributeRecord, AttributeStore};
use crate::tenant::TenantId;
use crate::{Error, ErrorKind, Result};

/// The default cap on one record's size (1 MiB); see [`CsvMapping::max_record_bytes`].
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

/// The longest user id accepted, in bytes.
pub const MAX_USER_ID_BYTES: usize = 255;

/// The CSV reader's buffer size.
const BUFFER_CAPACITY: usize = 64 * 1024;

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
    user_id_column: String,
    #[serde(default)]
    attributes: Vec<(String, String)>,
    #[serde(default = "default_delimiter")]
    delimiter: u8,
    #[serde(default = "default_max_record_bytes")]
    max_record_bytes: usize,
    #[serde(default)]
    encoding: TextEncoding,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    null_values: Vec<String>,
    #[serde(default)]
    user_id_format: UserIdFormat,
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
    /// Why it was rejected.
    pub reason: RowErrorReason,
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

/// Wraps the input to keep one record's size bounded: reading fails once more
/// than `limit` bytes were read since the current record started. It also keeps
/// the latest chunk read, to tell how a record ended (see [`RecordEnd`]), and
/// drops a leading UTF-8 BOM (the csv crate strips one only when its first read
/// returns more than the BOM).
struct Limited<R> {
    inner: R,
    /// Whether the start of the input was checked for a BOM.
    started: bool,
    consumed: u64,
    record_start: u64,
    limit: u64,
    tripped: bool,
    /// The latest non-empty chunk handed to the reader's buffer, and its offset.
    chunk: Vec<u8>,
    chunk_start: u64,
}

impl<R> Limited<R> {
    /// The input byte at `offset`, if it is in the latest chunk.
    fn byte_at(&self, offset: u64) -> Option<u8> {
        let i = usize::try_from(offset.checked_sub(self.chunk_start)?).ok()?;
        self.chunk.get(i).copied()
    }
}

impl<R: Read> Limited<R> {
    /// The first read: at least the first 3 bytes (or all there is), without a BOM.
    fn read_start(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        const BOM: &[u8] = b"\xef\xbb\xbf";
        if buf.len() < BOM.len() {
            return self.inner.read(buf);
        }
        let mut got = 0;
        while got < BOM.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if buf[..got].starts_with(BOM) {
            buf.copy_within(BOM.len()..got, 0);
            got -= BOM.len();
            if got == 0 {
                // Only the BOM so far: hand out what follows it.
                return self.inner.read(buf);
            }
        }
        Ok(got)
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.consumed.saturating_sub(self.record_start) > self.limit {
            self.tripped = true;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "record too long",
            ));
        }
        let n = if self.started {
            self.inner.read(buf)?
        } else {
            self.started = true;
            self.read_start(buf)?
        };
        if n > 0 {
            self.chunk.clear();
            self.chunk.extend_from_slice(&buf[..n]);
            self.chunk_start = self.consumed;
        }
        self.consumed += n as u64;
        Ok(n)
    }
}

fn csv_reader<R: Read>(
    input: R,
    delimiter: u8,
    max_record_bytes: usize,
    encoding: TextEncoding,
) -> csv::Reader<Limited<Input<R>>> {
    let limited = Limited {
        inner: Input::new(input, encoding),
        started: false,
        consumed: 0,
        record_start: 0,
        // The reader's buffer reads ahead of the record being parsed.
        limit: (max_record_bytes + BUFFER_CAPACITY) as u64,
        tripped: false,
        chunk: Vec::with_capacity(BUFFER_CAPACITY),
        chunk_start: 0,
    };
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .buffer_capacity(BUFFER_CAPACITY)
        .from_reader(limited)
}

/// Where a record ended, from which the line it started on follows.
///
/// The reader counts every `\n` it consumes. A record ending in `\n` (LF files)
/// has consumed it; one ending in `\r` (CRLF files) has not yet — the `\n` is
/// consumed with any blank lines before the next record. So the record started
/// on `line - newlines inside the record - (1 if it ended in \n)`.
#[derive(Debug, Clone, Copy, Default)]
struct RecordEnd {
    /// The reader's line count after the record.
    line: u64,
    /// Whether the record's terminator was a consumed `\n`.
    newline: bool,
}

impl RecordEnd {
    /// The 1-based line `record` (the record that ended here) started on.
    fn start_line(self, record: &ByteRecord) -> u64 {
        let inner = record.as_slice().iter().filter(|&&b| b == b'\n').count() as u64;
        self.line
            .saturating_sub(inner)
            .saturating_sub(u64::from(self.newline))
            .max(1)
    }
}

/// Reads the next record that is not blank (every field empty or spaces). Marks the
/// record start for the size cap. Errors are turned into fatal row errors.
fn next_record<R: Read>(
    reader: &mut csv::Reader<Limited<R>>,
    record: &mut ByteRecord,
    max_record_bytes: usize,
    blank_check_column: Option<usize>,
) -> std::result::Result<Option<RecordEnd>, RowError> {
    loop {
        let start = reader.position().clone();
        let limited = reader.get_mut();
        limited.record_start = start.byte();
        // A `\n` still to be consumed belongs to the previous (CRLF) line.
        let pending_newline = limited.byte_at(start.byte()) == Some(b'\n');
        match reader.read_byte_record(record) {
            Ok(false) => return Ok(None),
            Ok(true) => {
                // Cheap path: a non-blank user id means the record is not blank.
                let maybe_blank = match blank_check_column.and_then(|c| record.get(c)) {
                    Some(field) => field.iter().all(u8::is_ascii_whitespace),
                    None => true,
                };
                if maybe_blank && record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
                    continue;
                }
                let end = reader.position();
                let newline = end
                    .byte()
                    .checked_sub(1)
                    .and_then(|last| reader.get_ref().byte_at(last))
                    == Some(b'\n');
                return Ok(Some(RecordEnd {
                    line: end.line(),
                    newline,
                }));
            }
            Err(e) => {
                let line = start.line() + u64::from(pending_newline);
                let reason = if reader.get_ref().tripped {
                    RowErrorReason::TooLong {
                        limit: max_record_bytes,
                    }
                } else {
                    RowErrorReason::Read {
                        message: e.to_string(),
                    }
                };
                return Err(RowError { line, reason });
            }
        }
    }
}

fn header_names(record: &ByteRecord) -> Vec<String> {
    record
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = String::from_utf8_lossy(f);
            // csv-core strips a BOM only when it arrives in one read; be sure.
            if i == 0 {
                name.trim_start_matches('\u{feff}').to_owned()
            } else {
                name.into_owned()
            }
        })
        .collect()
}

fn find_column(headers: &[String], wanted: &str) -> Option<usize> {
    if let Some(i) = headers.iter().position(|h| h == wanted) {
        return Some(i);
    }
    let wanted = wanted.trim().to_lowercase();
    headers
        .iter()
        .position(|h| h.trim().to_lowercase() == wanted)
}

/// One mapped column: its index in the record, its header and its attribute name.
#[derive(Debug)]
struct MappedColumn {
    index: usize,
    header: String,
    as_name: String,
}

/// The streaming iterator returned by [`read_csv`]: one item per data row.
///
/// Memory use is constant: one reused [`ByteRecord`], a 64 KiB read buffer and
/// the record being built, whatever the file's size.
pub struct CsvRecords<R> {
    reader: csv::Reader<Limited<Input<R>>>,
    /// The current row's normalised user id (with a [`UserIdFormat`]).
    normalized_id: String,
    user_id_format: UserIdFormat,
    null_values: Vec<String>,
    record: ByteRecord,
    headers: Vec<String>,
    user_col: usize,
    user_header: String,
    /// Sorted by attribute name, so records are built from sorted input.
    columns: Vec<MappedColumn>,
    header_len: usize,
    header_trailing_empty: bool,
    max_record_bytes: usize,
    done: bool,
}

impl<R> fmt::Debug for CsvRecords<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsvRecords")
            .field("headers", &self.headers)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<R: Read> CsvRecords<R> {
    /// The file's header row.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    fn field_count_ok(&self, found: usize) -> bool {
        found == self.header_len
            // A trailing empty field (`a,b,c,`) beyond the header.
            || (found == self.header_len + 1 && self.record.get(found - 1).is_some_and(<[u8]>::is_empty))
            // The header ends with an unnamed column the row leaves out.
            || (self.header_trailing_empty && found + 1 == self.header_len)
    }

    /// Reads the next data row without allocating: the row borrows the reader's
    /// buffer until the next call. `None` at the end of the file; after a fatal
    /// error, every later call returns `None`.
    ///
    /// The [`Iterator`] implementation is this plus [`CsvRow::to_record`]; use this
    /// directly when the values can be consumed in place.
    ///
    /// ```
    /// use switchboard::attributes::{CsvMapping, read_csv};
    /// let mapping = CsvMapping::new("id").attribute("Plan", "plan");
    /// let mut rows = read_csv("id,Plan\nu1,basic\n".as_bytes(), &mapping).unwrap();
    /// let row = rows.next_row().unwrap().unwrap();
    /// assert_eq!(row.user_id(), "u1");
    /// assert_eq!(row.attributes().collect::<Vec<_>>(), [("plan", "basic")]);
    /// assert!(rows.next_row().is_none());
    /// ```
    pub fn next_row(&mut self) -> Option<std::result::Result<CsvRow<'_>, RowError>> {
        if self.done {
            return None;
        }
        match next_record(
            &mut self.reader,
            &mut self.record,
            self.max_record_bytes,
            Some(self.user_col),
        ) {
            Ok(Some(end)) => {
                if !matches!(self.user_id_format, UserIdFormat::AsIs) {
                    if let Err(e) = self.normalize_id(end) {
                        return Some(Err(e));
                    }
                }
                Some(self.check(end))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                // Release a possibly large buffer.
                self.record = ByteRecord::new();
                Some(Err(e))
            }
        }
    }

    /// Normalises the current record's user id into `normalized_id`.
    fn normalize_id(&mut self, end: RecordEnd) -> std::result::Result<(), RowError> {
        let raw = self
            .record
            .get(self.user_col)
            .and_then(|f| std::str::from_utf8(f).ok())
            .unwrap_or_default()
            .trim();
        if raw.is_empty() {
            // `check` reports an empty id.
            self.normalized_id.clear();
            return Ok(());
        }
        let (normalized, what) = match &self.user_id_format {
            UserIdFormat::AsIs => return Ok(()),
            UserIdFormat::Email => (crate::identity::normalize_email(raw), "an email address"),
            UserIdFormat::Phone { region } => (
                crate::identity::normalize_phone(raw, region),
                "a phone number",
            ),
        };
        match normalized {
            Some(id) => {
                self.normalized_id = id;
                Ok(())
            }
            None => Err(RowError {
                line: end.start_line(&self.record),
                reason: RowErrorReason::InvalidUserId {
                    column: self.user_header.clone(),
                    detail: format!("{raw:?} is not {what}"),
                },
            }),
        }
    }

    /// Validates the current record as a row.
    fn check(&self, end: RecordEnd) -> std::result::Result<CsvRow<'_>, RowError> {
        let reject = |reason| {
            Err(RowError {
                line: end.start_line(&self.record),
                reason,
            })
        };
        let found = self.record.len();
        if !self.field_count_ok(found) {
            return reject(RowErrorReason::FieldCount {
                expected: self.header_len,
                found,
            });
        }
        // Validate the whole record once (the common case: all valid), then slice
        // fields out of it; fall back to per-field validation otherwise, so
        // invalid bytes in a column that is not imported do not reject the row.
        let mut row = CsvRow {
            end,
            user_id: "",
            whole: std::str::from_utf8(self.record.as_slice()).ok(),
            record: &self.record,
            columns: &self.columns,
            null_values: &self.null_values,
        };
        let Some(user_id) = row.field(self.user_col) else {
            return reject(RowErrorReason::InvalidUtf8 {
                column: self.user_header.clone(),
            });
        };
        let user_id = match self.user_id_format {
            UserIdFormat::AsIs => user_id.trim(),
            _ if user_id.trim().is_empty() => "",
            _ => self.normalized_id.as_str(),
        };
        if user_id.is_empty() {
            return reject(RowErrorReason::EmptyUserId {
                column: self.user_header.clone(),
            });
        }
        if user_id.len() > MAX_USER_ID_BYTES {
            return reject(RowErrorReason::InvalidUserId {
                column: self.user_header.clone(),
                detail: format!("longer than {MAX_USER_ID_BYTES} bytes"),
            });
        }
        let has_control = if user_id.is_ascii() {
            user_id.bytes().any(|b| b.is_ascii_control())
        } else {
            user_id.chars().any(char::is_control)
        };
        if has_control {
            return reject(RowErrorReason::InvalidUserId {
                column: self.user_header.clone(),
                detail: "contains control characters".to_owned(),
            });
        }
        if row.whole.is_none() {
            if let Some(bad) = self.columns.iter().find(|c| row.field(c.index).is_none()) {
                return reject(RowErrorReason::InvalidUtf8 {
                    column: bad.header.clone(),
                });
            }
        }
        row.user_id = user_id;
        Ok(row)
    }
}

/// One valid data row, borrowed from the reader (see [`CsvRecords::next_row`]).
#[derive(Clone, Copy)]
pub struct CsvRow<'a> {
    end: RecordEnd,
    user_id: &'a str,
    /// The whole record as text, if it is all valid UTF-8.
    whole: Option<&'a str>,
    record: &'a ByteRecord,
    columns: &'a [MappedColumn],
    null_values: &'a [String],
}

impl fmt::Debug for CsvRow<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsvRow")
            .field("line", &self.line())
            .field("user_id", &self.user_id)
            .field("attributes", &self.attributes().collect::<Vec<_>>())
            .finish()
    }
}

impl<'a> CsvRow<'a> {
    fn field(&self, index: usize) -> Option<&'a str> {
        match self.whole {
            Some(text) => text.get(self.record.range(index)?),
            None => std::str::from_utf8(self.record.get(index)?).ok(),
        }
    }

    /// The 1-based line the row starts on.
    pub fn line(&self) -> u64 {
        self.end.start_line(self.record)
    }

    /// The user id, trimmed.
    pub fn user_id(&self) -> &'a str {
        self.user_id
    }

    /// The mapped attributes as `(name, value)`, sorted by name; values are
    /// trimmed, and cells holding a configured null value are left out.
    pub fn attributes(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        let row = *self;
        self.columns.iter().filter_map(move |c| {
            let value = row.field(c.index).unwrap_or_default().trim();
            if !row.null_values.is_empty()
                && row
                    .null_values
                    .iter()
                    .any(|n| n.len() == value.len() && n.eq_ignore_ascii_case(value))
            {
                return None;
            }
            Some((c.as_name.as_str(), value))
        })
    }

    /// An owned copy of the row.
    pub fn to_record(&self) -> AttributeRecord {
        AttributeRecord {
            user_id: self.user_id.to_owned(),
            attributes: self
                .attributes()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }
}

impl<R: Read> Iterator for CsvRecords<R> {
    type Item = std::result::Result<AttributeRecord, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_row().map(|row| row.map(|r| r.to_record()))
    }
}

impl<R: Read> std::iter::FusedIterator for CsvRecords<R> {}

/// Reads attribute records from CSV, streaming, in constant memory.
///
/// The header row is read first; every mapped column must be in it, otherwise the
/// whole file is rejected ([`ErrorKind::InvalidInput`]) before any row is read.
/// Then each data row becomes an [`AttributeRecord`] (user id trimmed, values as
/// they are, empty cells as empty strings) or a [`RowError`] naming its line and
/// reason — rows with the wrong number of fields, an empty or invalid user id or
/// a mapped field that is not UTF-8 are rejected without stopping the file.
///
/// Handles a UTF-8 BOM, CRLF and LF line ends, quoted fields with commas, quotes
/// and line breaks, blank lines and a trailing empty field. Duplicate user ids are
/// all returned in file order (the last one wins when upserted); an
/// [`ImportCollector`] counts them.
///
/// ```
/// use switchboard::attributes::{CsvMapping, read_csv};
/// let csv = "\u{feff}Email,Plan,Seats\r\nada@example.com,\"Premium, annual\",3\r\n";
/// let mapping = CsvMapping::new("Email").attribute("Plan", "plan");
/// let records: Vec<_> = read_csv(csv.as_bytes(), &mapping).unwrap().collect();
/// let record = records[0].as_ref().unwrap();
/// assert_eq!(record.user_id, "ada@example.com");
/// assert_eq!(record.attributes["plan"], "Premium, annual");
/// ```
pub fn read_csv<R: Read>(input: R, mapping: &CsvMapping) -> Result<CsvRecords<R>> {
    mapping.validate()?;
    let mut reader = csv_reader(
        input,
        mapping.delimiter,
        mapping.max_record_bytes,
        mapping.encoding,
    );
    let mut record = ByteRecord::new();
    let header = next_record(&mut reader, &mut record, mapping.max_record_bytes, None)
        .map_err(|e| Error::invalid_input(format!("cannot read the CSV header: {e}")))?;
    if header.is_none() {
        return Err(Error::invalid_input("the CSV file is empty: no header row"));
    }
    let headers = header_names(&record);

    let mut missing = Vec::new();
    let user_col = find_column(&headers, &mapping.user_id_column);
    if user_col.is_none() {
        missing.push(mapping.user_id_column.as_str());
    }
    let mut columns = Vec::with_capacity(mapping.attributes.len());
    for (column, as_name) in &mapping.attributes {
        match find_column(&headers, column) {
            Some(index) => columns.push(MappedColumn {
                index,
                header: headers[index].clone(),
                as_name: as_name.clone(),
            }),
            None => missing.push(column.as_str()),
        }
    }
    let Some(user_col) = user_col.filter(|_| missing.is_empty()) else {
        const SHOWN: usize = 30;
        let mut available: Vec<String> = headers
            .iter()
            .take(SHOWN)
            .map(|h| format!("{h:?}"))
            .collect();
        if headers.len() > SHOWN {
            available.push(format!("… {} more", headers.len() - SHOWN));
        }
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "mapped column(s) not in the CSV header: {}; the header has {}",
                missing
                    .iter()
                    .map(|m| format!("{m:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                available.join(", ")
            ),
        ));
    };
    columns.sort_by(|a, b| a.as_name.cmp(&b.as_name));

    let header_len = headers.len();
    let header_trailing_empty =
        header_len > 1 && headers.last().is_some_and(|h| h.trim().is_empty());
    Ok(CsvRecords {
        reader,
        normalized_id: String::new(),
        user_id_format: mapping.user_id_format.clone(),
        null_values: mapping.null_values.clone(),
        record,
        user_header: headers[user_col].clone(),
        headers,
        user_col,
        columns,
        header_len,
        header_trailing_empty,
        max_record_bytes: mapping.max_record_bytes,
        done: false,
    })
}

/// The header and first rows of a CSV file, for a set-up wizard's data-discovery step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsvSample {
    /// The header row.
    pub headers: Vec<String>,
    /// Up to the requested number of data rows, as text (invalid UTF-8 replaced).
    pub rows: Vec<Vec<String>>,
    /// True if the file has more rows than were sampled.
    pub more: bool,
}

/// Reads the header and up to `sample_rows` data rows (blank lines skipped),
/// without a mapping. Reads no further than one row past the sample.
///
/// ```
/// use switchboard::attributes::discover_csv;
/// let sample = discover_csv("id,plan\n1,basic\n2,premium\n".as_bytes(), 1).unwrap();
/// assert_eq!(sample.headers, ["id", "plan"]);
/// assert_eq!(sample.rows, [["1", "basic"]]);
/// assert!(sample.more);
/// ```
pub fn discover_csv(input: impl Read, sample_rows: usize) -> Result<CsvSample> {
    discover_csv_with(input, sample_rows, b',')
}

/// [`discover_csv`] with another delimiter.
pub fn discover_csv_with(input: impl Read, sample_rows: usize, delimiter: u8) -> Result<CsvSample> {
    discover_csv_encoded(input, sample_rows, delimiter, TextEncoding::Utf8)
}

/// [`discover_csv_with`] for a file in another text encoding.
pub fn discover_csv_encoded(
    input: impl Read,
    sample_rows: usize,
    delimiter: u8,
    encoding: TextEncoding,
) -> Result<CsvSample> {
    let mut reader = csv_reader(input, delimiter, DEFAULT_MAX_RECORD_BYTES, encoding);
    let mut record = ByteRecord::new();
    let read = |reader: &mut csv::Reader<_>, record: &mut ByteRecord| {
        next_record(reader, record, DEFAULT_MAX_RECORD_BYTES, None)
            .map_err(|e| Error::invalid_input(format!("cannot read the CSV file: {e}")))
    };
    if read(&mut reader, &mut record)?.is_none() {
        return Err(Error::invalid_input("the CSV file is empty: no header row"));
    }
    let headers = header_names(&record);
    let mut rows = Vec::new();
    let mut more = false;
    while read(&mut reader, &mut record)?.is_some() {
        if rows.len() == sample_rows {
            more = true;
            break;
        }
        rows.push(
            record
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect(),
        );
    }
    Ok(CsvSample {
        headers,
        rows,
        more,
    })
}

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

/// Collects rows from [`read_csv`] into batches for [`AttributeStore::upsert`]
/// while counting what an [`ImportSummary`] reports.
///
/// Memory stays bounded: one batch of records, the first row errors, and 8 bytes
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
    batch: Vec<AttributeRecord>,
    batch_size: usize,
    max_row_errors: usize,
    max_tracked_ids: usize,
    hashes: Vec<u64>,
    properties: BTreeSet<String>,
}

impl Default for ImportCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl ImportCollector {
    /// The default number of records per batch.
    pub const DEFAULT_BATCH_SIZE: usize = 5_000;
    /// The default number of row errors kept.
    pub const DEFAULT_MAX_ROW_ERRORS: usize = 20;
    /// The default number of distinct user ids tracked for duplicate counting.
    pub const DEFAULT_MAX_TRACKED_IDS: usize = 2_000_000;

    /// A collector with batches of 5,000 records, keeping the first 20 row errors.
    pub fn new() -> Self {
        ImportCollector {
            summary: ImportSummary {
                duplicates_exact: true,
                ..ImportSummary::default()
            },
            batch: Vec::new(),
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

    /// Takes one row; returns a full batch when one is ready to upsert.
    pub fn push(
        &mut self,
        row: std::result::Result<AttributeRecord, RowError>,
    ) -> Option<Vec<AttributeRecord>> {
        match row {
            Ok(record) => {
                self.summary.rows_read += 1;
                self.summary.rows_imported += 1;
                if self.hashes.len() < self.max_tracked_ids {
                    let hasher = BuildHasherDefault::<DefaultHasher>::default();
                    self.hashes.push(hasher.hash_one(record.user_id.as_str()));
                } else {
                    self.summary.duplicates_exact = false;
                }
                for name in record.attributes.keys() {
                    if !self.properties.contains(name) {
                        self.properties.insert(name.clone());
                    }
                }
                if self.batch.capacity() == 0 {
                    self.batch.reserve_exact(self.batch_size);
                }
                self.batch.push(record);
                if self.batch.len() >= self.batch_size {
                    return Some(std::mem::take(&mut self.batch));
                }
                None
            }
            Err(error) => {
                if error.is_fatal() {
                    self.summary.stopped_early = true;
                } else {
                    self.summary.rows_read += 1;
                    self.summary.rows_rejected += 1;
                }
                if self.summary.row_errors.len() < self.max_row_errors || error.is_fatal() {
                    self.summary.row_errors.push(error);
                }
                None
            }
        }
    }

    /// The rows counted so far (imported + rejected).
    pub fn rows_read(&self) -> u64 {
        self.summary.rows_read
    }

    /// Ends the import: the last, partial batch and the summary.
    pub fn finish(mut self) -> (Vec<AttributeRecord>, ImportSummary) {
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
    Batch(Vec<AttributeRecord>),
    /// The rows ended (the collector holds the last, partial batch).
    End,
    /// Reading stopped at a fatal row error.
    Fatal(RowError),
}

fn fill<I>(rows: &mut I, collector: &mut ImportCollector) -> Fill
where
    I: Iterator<Item = std::result::Result<AttributeRecord, RowError>>,
{
    for row in rows {
        let fatal = row.as_ref().err().filter(|e| e.is_fatal()).cloned();
        if let Some(batch) = collector.push(row) {
            return Fill::Batch(batch);
        }
        if let Some(error) = fatal {
            return Fill::Fatal(error);
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
pub async fn import_rows<I>(
    rows: I,
    store: &(impl AttributeStore + ?Sized),
    tenant: &TenantId,
    collector: ImportCollector,
) -> Result<ImportSummary>
where
    I: IntoIterator<Item = std::result::Result<AttributeRecord, RowError>>,
{
    let mut collector = collector;
    let mut rows = rows.into_iter();
    let mut written = 0u64;
    let mut pending: Option<Vec<AttributeRecord>> = None;
    loop {
        let step = match pending.take() {
            // The store's future is polled first, so its work is under way
            // (on its own threads) while this task reads the next batch.
            Some(batch) => {
                let (result, step) = tokio::join!(store.upsert(tenant, &batch), async {
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
        store.upsert(tenant, &batch).await?;
    }
    Ok(summary)
}
