//! The streaming CSV record reader: [`read_csv`] and its iterator [`CsvRecords`] (borrowed rows, reused or owned records).

use std::fmt;
use std::io::Read;
use std::sync::Arc;

use super::error::{RowError, RowErrorReason};
use super::fields::Fields;
use super::mapping::{CsvMapping, MAX_USER_ID_BYTES, UserIdFormat};
use super::record::{BLOCK_BYTES, BLOCK_ROWS, Block, CsvRecord, MAX_RECORD_TEXT, Shape};
use super::row::{CsvRow, MappedColumn, trim, trim_span};
use super::source::{RecordEnd, Source, csv_reader, header_names, next_record};
use crate::attributes::AttributeRecord;
use crate::{Error, ErrorKind, Result};

fn find_column(headers: &[String], wanted: &str) -> Option<usize> {
    if let Some(i) = headers.iter().position(|h| h == wanted) {
        return Some(i);
    }
    let wanted = wanted.trim().to_lowercase();
    headers
        .iter()
        .position(|h| h.trim().to_lowercase() == wanted)
}

/// The streaming iterator returned by [`read_csv`]: one item per data row.
///
/// Memory use is constant: one reused record buffer, a 64 KiB read buffer and
/// the record being built, whatever the file's size.
pub struct CsvRecords<R> {
    reader: Source<R>,
    /// The current row's normalised user id (with a [`UserIdFormat`]).
    normalized_id: String,
    user_id_format: UserIdFormat,
    record: Fields,
    headers: Vec<String>,
    user_col: usize,
    user_header: String,
    /// Sorted by attribute name, so records are built from sorted input.
    columns: Vec<MappedColumn>,
    /// The columns' attribute names and the null values, shared by every [`CsvRecord`].
    shape: Arc<Shape>,
    /// Rows the iterator read ahead.
    ahead: Ahead,
    header_len: usize,
    header_trailing_empty: bool,
    /// Whether owned records copy whole rows (see [`CsvRow`]).
    copy_whole: bool,
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
    /// The [`Iterator`] implementation is this plus [`CsvRow::to_csv_record`]; use this
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
                self.record = Fields::default();
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
                user_id: Some(shown_id(raw)),
                reason: RowErrorReason::InvalidUserId {
                    column: self.user_header.clone(),
                    detail: format!("{raw:?} is not {what}"),
                },
            }),
        }
    }

    /// The current record's user-id cell as read (for error reports), if not blank.
    fn raw_user_id(&self) -> Option<String> {
        let raw = String::from_utf8_lossy(self.record.get(self.user_col)?);
        let raw = raw.trim();
        (!raw.is_empty()).then(|| shown_id(raw))
    }

    /// Validates the current record as a row.
    fn check(&self, end: RecordEnd) -> std::result::Result<CsvRow<'_>, RowError> {
        let reject = |reason| {
            Err(RowError {
                line: end.start_line(&self.record),
                user_id: self.raw_user_id(),
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
            user_span: None,
            copy_whole: self.copy_whole,
            record: &self.record,
            columns: &self.columns,
            shape: &self.shape,
        };
        let Some(user_id) = row.field(self.user_col) else {
            return reject(RowErrorReason::InvalidUtf8 {
                column: self.user_header.clone(),
            });
        };
        let (user_id, user_span) = match (&self.user_id_format, row.whole) {
            (UserIdFormat::AsIs, Some(whole)) => {
                let range = self.record.range(self.user_col).unwrap_or_default();
                let span = trim_span(whole, range.start, range.end);
                (whole.get(span.0..span.1).unwrap_or_default(), Some(span))
            }
            (UserIdFormat::AsIs, None) => (trim(user_id), None),
            _ if user_id.trim().is_empty() => ("", None),
            _ => (self.normalized_id.as_str(), None),
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
        row.user_span = user_span;
        Ok(row)
    }
}

/// A user-id cell as shown in a [`RowError`]: at most [`MAX_USER_ID_BYTES`] bytes
/// (cut at a character boundary).
fn shown_id(raw: &str) -> String {
    let mut end = raw.len().min(MAX_USER_ID_BYTES);
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    raw[..end].to_owned()
}

impl<R: Read> CsvRecords<R> {
    /// Reads the next row into `record`, reusing its buffers (the owned
    /// counterpart of the `csv` crate's `read_byte_record`): `None` at the end,
    /// `Some(Err(_))` for a rejected row (`record` is then left unchanged).
    /// Yields exactly what the iterator yields, without allocating per row once
    /// `record` has held every mapped attribute.
    ///
    /// ```
    /// use switchboard::attributes::{AttributeRecord, CsvMapping, read_csv};
    /// let csv = "Email,Plan\nada@example.com,Pro\nbob@example.com,Basic\n";
    /// let mapping = CsvMapping::new("Email").attribute("Plan", "plan");
    /// let mut rows = read_csv(csv.as_bytes(), &mapping).unwrap();
    /// let mut record = AttributeRecord { user_id: String::new(), attributes: Default::default() };
    /// let mut plans = Vec::new();
    /// while let Some(row) = rows.read_record(&mut record) {
    ///     row.unwrap();
    ///     plans.push(record.attributes["plan"].clone());
    /// }
    /// assert_eq!(plans, ["Pro", "Basic"]);
    /// ```
    pub fn read_record(
        &mut self,
        record: &mut AttributeRecord,
    ) -> Option<std::result::Result<(), RowError>> {
        match self.next_row()? {
            Ok(row) => {
                row.fill_record(record);
                Some(Ok(()))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

impl<R: Read> CsvRecords<R> {
    /// Reads up to [`BLOCK_ROWS`] rows (or 64 KiB of values) ahead into one
    /// block, queueing them and the row errors between them in file order.
    fn read_ahead(&mut self) {
        let mut block = self.ahead.take_block(&self.shape, self.header_len);
        // The row errors, by item position (rows and errors in file order).
        let mut errors = std::mem::take(&mut self.ahead.errors);
        errors.clear();
        let mut items = 0usize;
        let limit = self.max_record_bytes;
        while !block.is_full() {
            let Some(row) = self.next_row() else {
                break;
            };
            match row {
                Ok(row) if row.append_to(&mut block) => {}
                Ok(row) => {
                    let error = RowError {
                        line: row.line(),
                        user_id: None,
                        reason: RowErrorReason::TooLong {
                            limit: limit.min(MAX_RECORD_TEXT),
                        },
                    };
                    self.done = true;
                    errors.push_back((items, error));
                    items += 1;
                    break;
                }
                Err(e) => {
                    let fatal = e.is_fatal();
                    errors.push_back((items, e));
                    if fatal {
                        items += 1;
                        break;
                    }
                }
            }
            items += 1;
        }
        self.ahead = Ahead {
            block: Some(Arc::new(block)),
            next_row: 0,
            items,
            next_item: 0,
            errors,
        };
    }
}

/// The text capacity of a file's first block (it grows as needed): small files
/// allocate little.
const FIRST_BLOCK_BYTES: usize = 8 * 1024;

/// The rows of one read-ahead block and the row errors between them.
#[derive(Debug, Default)]
struct Ahead {
    block: Option<Arc<Block>>,
    /// The block's next row to hand out.
    next_row: usize,
    /// Rows and errors read ahead, and how many were handed out.
    items: usize,
    next_item: usize,
    /// The errors, by item position.
    errors: std::collections::VecDeque<(usize, RowError)>,
}

impl Ahead {
    /// An empty block for the next rows: the previous one, cleared, if no record
    /// of it is alive any more (the usual streaming loop), else a new one sized
    /// like the previous block's text.
    fn take_block(&mut self, shape: &Arc<Shape>, fields: usize) -> Block {
        let text = match self.block.take().map(Arc::try_unwrap) {
            Some(Ok(mut block)) => {
                block.clear();
                return block;
            }
            Some(Err(shared)) => shared.text_len() + shared.text_len() / 4,
            None => FIRST_BLOCK_BYTES,
        };
        Block::new(
            shape,
            BLOCK_ROWS,
            fields,
            text.min(BLOCK_BYTES + BLOCK_BYTES / 4),
        )
    }

    fn next(&mut self) -> Option<std::result::Result<CsvRecord, RowError>> {
        if self.next_item == self.items {
            return None;
        }
        let item = self.next_item;
        self.next_item += 1;
        if self.errors.front().is_some_and(|(i, _)| *i == item) {
            return self.errors.pop_front().map(|(_, e)| Err(e));
        }
        let record = CsvRecord::at(self.block.as_ref()?, self.next_row)?;
        self.next_row += 1;
        Some(Ok(record))
    }
}

/// Reads ahead: up to 256 rows are parsed into one shared buffer (see
/// [`CsvRecord`]) before the first of them is returned, so do not mix the
/// iterator with [`CsvRecords::next_row`] or [`CsvRecords::read_record`] on
/// one reader.
impl<R: Read> Iterator for CsvRecords<R> {
    type Item = std::result::Result<CsvRecord, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(item) = self.ahead.next() {
            return Some(item);
        }
        if self.done {
            return None;
        }
        self.read_ahead();
        self.ahead.next()
    }
}

impl<R: Read> std::iter::FusedIterator for CsvRecords<R> {}

/// Reads attribute records from CSV, streaming, in constant memory.
///
/// The header row is read first; every mapped column must be in it, otherwise the
/// whole file is rejected ([`ErrorKind::InvalidInput`]) before any row is read.
/// Then each data row becomes a [`CsvRecord`] (user id trimmed, values as
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
/// assert_eq!(record.user_id(), "ada@example.com");
/// assert_eq!(record.get("plan"), Some("Premium, annual"));
/// ```
pub fn read_csv<R: Read>(input: R, mapping: &CsvMapping) -> Result<CsvRecords<R>> {
    mapping.validate()?;
    let mut reader = csv_reader(
        input,
        mapping.delimiter,
        mapping.max_record_bytes,
        mapping.encoding,
    );
    let mut record = Fields::default();
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
    let shape = Arc::new(Shape {
        names: columns.iter().map(|c| c.as_name.as_str().into()).collect(),
        columns: columns.iter().map(|c| c.index).collect(),
        null_values: mapping.null_values.clone().into(),
    });

    let header_len = headers.len();
    let columns_len = columns.len();
    let header_trailing_empty =
        header_len > 1 && headers.last().is_some_and(|h| h.trim().is_empty());
    Ok(CsvRecords {
        reader,
        normalized_id: String::new(),
        user_id_format: mapping.user_id_format.clone(),
        record,
        user_header: headers[user_col].clone(),
        headers,
        user_col,
        columns,
        shape,
        ahead: Ahead::default(),
        header_len,
        header_trailing_empty,
        // Copying a whole row in one piece beats copying its values one by
        // one unless most of its columns are not imported.
        copy_whole: 2 * (columns_len + 1) >= header_len,
        max_record_bytes: mapping.max_record_bytes,
        done: false,
    })
}
