//! [`CsvRecord`]: an owned data row in one buffer, with attribute names shared by every row of a file.

use std::fmt;
use std::sync::Arc;

use crate::attributes::{AttributeRecord, Attributes};

/// The largest block text a [`CsvRecord`] points into (its offsets are 31-bit).
pub(super) const MAX_RECORD_TEXT: usize = (1 << 31) - 1;

/// Rows per block read ahead by the iterator (see [`CsvRecord`]).
pub(super) const BLOCK_ROWS: usize = 256;

/// Text bytes after which a block is closed even with fewer rows.
pub(super) const BLOCK_BYTES: usize = 64 * 1024;

/// What every record of one file shares: the mapped attribute names, sorted,
/// the column each is read from and the configured null values.
#[derive(Debug)]
pub(crate) struct Shape {
    pub(crate) names: Box<[Box<str>]>,
    /// Per name, the index of its column in a record.
    pub(super) columns: Box<[usize]>,
    pub(super) null_values: Box<[String]>,
}

impl Shape {
    /// Whether `value` is one of the configured null values (ASCII case ignored).
    pub(super) fn is_null(&self, value: &str) -> bool {
        !self.null_values.is_empty()
            && self
                .null_values
                .iter()
                .any(|n| n.len() == value.len() && n.eq_ignore_ascii_case(value))
    }
}

/// Where one row of a [`Block`] is.
#[derive(Debug, Clone, Copy)]
struct RowAt {
    /// The line the row starts on.
    line: u64,
    /// Where the row's fields start in the block's text.
    text: u32,
    /// The row's first entry in the block's `ends`.
    ends: u32,
    /// How many fields the row has.
    fields: u32,
    /// Where the user id starts and ends in the block's text.
    user: (u32, u32),
    /// The fields are the mapped values in name order (copied one by one),
    /// not the record's columns.
    packed: bool,
}

/// Consecutive rows of one file in one buffer: what [`CsvRecord`]s point into.
///
/// A row is usually the whole record as parsed, with its field ends: values
/// are trimmed and checked against the null values when read. A record that
/// is not all valid UTF-8, or a file most of whose columns are not imported,
/// has its values copied one by one instead ("packed").
#[derive(Debug)]
pub(super) struct Block {
    shape: Arc<Shape>,
    /// The rows' text (after its user id, if that was normalised).
    text: String,
    /// Per row, where each field ends, from the row's start.
    ends: Vec<u32>,
    rows: Vec<RowAt>,
}

impl Block {
    /// An empty block for a file of this `shape`, with room for `rows` rows
    /// of `fields` fields and `text` bytes.
    pub(super) fn new(shape: &Arc<Shape>, rows: usize, fields: usize, text: usize) -> Block {
        Block {
            shape: Arc::clone(shape),
            text: String::with_capacity(text),
            ends: Vec::with_capacity(rows * fields),
            rows: Vec::with_capacity(rows),
        }
    }

    /// Empties the block, keeping its buffers.
    pub(super) fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
        self.rows.clear();
    }

    /// The bytes of text the block holds.
    pub(super) fn text_len(&self) -> usize {
        self.text.len()
    }

    /// True once the block holds enough to be handed out.
    pub(super) fn is_full(&self) -> bool {
        self.rows.len() >= BLOCK_ROWS || self.text.len() >= BLOCK_BYTES
    }

    /// Appends a whole record: `record` is its text and `ends` where each of
    /// its fields ends in it; `user_id` is a span of it, or (`Err`) a text of
    /// its own (a normalised id). `false` (and the block unchanged) if the
    /// block's text would pass [`MAX_RECORD_TEXT`].
    pub(super) fn push_record(
        &mut self,
        line: u64,
        user_id: std::result::Result<(usize, usize), &str>,
        record: &str,
        ends: &[usize],
    ) -> bool {
        let text_len = self.text.len();
        let user = match user_id {
            Ok((start, end)) => (text_len + start, text_len + end),
            Err(id) => {
                self.text.push_str(id);
                (text_len, self.text.len())
            }
        };
        let at = self.text.len();
        if at + record.len() > MAX_RECORD_TEXT || ends.iter().any(|&e| e > record.len()) {
            self.text.truncate(text_len);
            return false;
        }
        self.text.push_str(record);
        let first = self.ends.len();
        // Every end is at most the record's length, below 2^31.
        self.ends.extend(ends.iter().map(|&e| e as u32));
        self.push_row(line, (text_len, at), first, ends.len(), user, false)
    }

    /// Appends a row value by value ("packed"): its user id, then its values
    /// in the order of the names. `false` (and the block unchanged) if the
    /// block's text would pass [`MAX_RECORD_TEXT`].
    pub(super) fn push_values<'a>(
        &mut self,
        line: u64,
        user_id: &str,
        values: impl Iterator<Item = &'a str>,
    ) -> bool {
        let (text_len, first) = (self.text.len(), self.ends.len());
        self.text.push_str(user_id);
        let at = self.text.len();
        for value in values {
            self.text.push_str(value);
            self.ends
                .push(u32::try_from(self.text.len() - at).unwrap_or(u32::MAX));
        }
        let fields = self.ends.len() - first;
        if self.text.len() > MAX_RECORD_TEXT || fields != self.shape.names.len() {
            self.text.truncate(text_len);
            self.ends.truncate(first);
            return false;
        }
        self.push_row(line, (text_len, at), first, fields, (text_len, at), true)
    }

    /// Records a row whose text (after the block's first `text.0` bytes) and
    /// field ends (from entry `ends`) were just appended; takes them out again
    /// and returns `false` if its offsets do not fit.
    fn push_row(
        &mut self,
        line: u64,
        (text_len, text): (usize, usize),
        ends: usize,
        fields: usize,
        user: (usize, usize),
        packed: bool,
    ) -> bool {
        let small = |n: usize| u32::try_from(n).ok();
        let row = (|| {
            Some(RowAt {
                line,
                text: small(text)?,
                ends: small(ends)?,
                fields: small(fields)?,
                user: (small(user.0)?, small(user.1)?),
                packed,
            })
        })();
        match row {
            Some(row) => {
                self.rows.push(row);
                true
            }
            None => {
                self.text.truncate(text_len);
                self.ends.truncate(ends);
                false
            }
        }
    }

    /// Field `field` of `row` as text; empty past the row's fields.
    fn field(&self, row: &RowAt, field: usize) -> &str {
        if field >= row.fields as usize {
            return "";
        }
        let first = row.ends as usize;
        let end = self.ends.get(first + field).copied().unwrap_or(0);
        let start = match field.checked_sub(1) {
            Some(previous) => self.ends.get(first + previous).copied().unwrap_or(0),
            None => 0,
        };
        let at = row.text as usize;
        self.text
            .get(at + start as usize..at + end as usize)
            .unwrap_or_default()
    }

    /// The value of attribute `index` in `row`: trimmed, `None` for a null
    /// value or past the names.
    fn value(&self, row: &RowAt, index: usize) -> Option<&str> {
        let field = if row.packed {
            index
        } else {
            *self.shape.columns.get(index)?
        };
        let value = super::row::trim(self.field(row, field));
        (!self.shape.is_null(value)).then_some(value)
    }
}

/// One imported row, owned: the user id and the mapped attributes' values,
/// sharing one buffer with up to 255 neighbouring rows of the file and the
/// attribute names with all of them. Reading a row costs no allocation of its
/// own (a few per block of 256 rows), whatever the number of columns; a record
/// kept alive keeps its block (at most 64 KiB of text, or one longer row).
/// A row is stored as parsed (the whole record, when most of its columns are
/// mapped): values are trimmed and matched against the null values as they are
/// read, so copying a row costs one copy of its text and field ends.
///
/// The items of [`read_csv`](crate::attributes::read_csv)'s iterator. Values
/// are read by name ([`CsvRecord::get`]), by position ([`CsvRecord::value`]) or
/// as `(name, value)` pairs sorted by name ([`CsvRecord::attributes`]); an
/// [`AttributeRecord`] (a map) is one [`From`] away.
///
/// ```
/// use switchboard::attributes::{AttributeRecord, CsvMapping, read_csv};
/// let csv = "Email,Plan,Seats\nada@example.com,Pro,3\n";
/// let mapping = CsvMapping::new("Email").attribute("Plan", "plan").attribute("Seats", "seats");
/// let record = read_csv(csv.as_bytes(), &mapping).unwrap().next().unwrap().unwrap();
/// assert_eq!(record.user_id(), "ada@example.com");
/// assert_eq!(record.get("plan"), Some("Pro"));
/// assert_eq!(record.attributes().collect::<Vec<_>>(), [("plan", "Pro"), ("seats", "3")]);
/// let map = AttributeRecord::from(record);
/// assert_eq!(map.attributes["seats"], "3");
/// ```
#[derive(Clone)]
pub struct CsvRecord {
    block: Arc<Block>,
    row: RowAt,
}

impl CsvRecord {
    /// Row `row` of a finished block; `None` past its end.
    pub(super) fn at(block: &Arc<Block>, row: usize) -> Option<CsvRecord> {
        Some(CsvRecord {
            row: *block.rows.get(row)?,
            block: Arc::clone(block),
        })
    }

    /// The user id (trimmed, normalised if the mapping says so).
    pub fn user_id(&self) -> &str {
        let (start, end) = self.row.user;
        self.block
            .text
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    /// What every record of its file shares.
    pub(crate) fn shape(&self) -> &Arc<Shape> {
        &self.block.shape
    }

    /// The 1-based line the row starts on.
    pub fn line(&self) -> u64 {
        self.row.line
    }

    /// The mapped attribute names, sorted; the same for every record of a file.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.block.shape.names.iter().map(|n| &**n)
    }

    /// The value of the attribute at `index` in [`CsvRecord::names`]; `None`
    /// past the end or if the cell held a null value.
    pub fn value(&self, index: usize) -> Option<&str> {
        if index >= self.block.shape.names.len() {
            return None;
        }
        self.block.value(&self.row, index)
    }

    /// The value of attribute `name`; `None` if it is not mapped or the cell
    /// held a null value.
    pub fn get(&self, name: &str) -> Option<&str> {
        let index = self
            .block
            .shape
            .names
            .binary_search_by(|n| (**n).cmp(name))
            .ok()?;
        self.value(index)
    }

    /// The attributes as `(name, value)`, sorted by name; null cells left out.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.block
            .shape
            .names
            .iter()
            .enumerate()
            .filter_map(|(i, name)| Some((&**name, self.block.value(&self.row, i)?)))
    }

    /// The number of attributes present (null cells not counted).
    pub fn len(&self) -> usize {
        let shape = &self.block.shape;
        if shape.null_values.is_empty() {
            return shape.names.len();
        }
        (0..shape.names.len())
            .filter(|&i| self.block.value(&self.row, i).is_some())
            .count()
    }

    /// True if no attribute is present.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The attributes as a map.
    pub fn to_attributes(&self) -> Attributes {
        self.attributes()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

impl From<CsvRecord> for AttributeRecord {
    fn from(record: CsvRecord) -> Self {
        AttributeRecord::from(&record)
    }
}

impl From<&CsvRecord> for AttributeRecord {
    fn from(record: &CsvRecord) -> Self {
        AttributeRecord {
            user_id: record.user_id().to_owned(),
            attributes: record.to_attributes(),
        }
    }
}

impl PartialEq for CsvRecord {
    /// Equal user ids, lines and attributes (names and values).
    fn eq(&self, other: &Self) -> bool {
        self.line() == other.line()
            && self.user_id() == other.user_id()
            && self.attributes().eq(other.attributes())
    }
}

impl Eq for CsvRecord {}

impl PartialEq<AttributeRecord> for CsvRecord {
    /// Equal user ids and attributes (the line is not compared).
    fn eq(&self, other: &AttributeRecord) -> bool {
        self.user_id() == other.user_id
            && self.attributes().eq(other
                .attributes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

impl fmt::Debug for CsvRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsvRecord")
            .field("line", &self.line())
            .field("user_id", &self.user_id())
            .field("attributes", &AttributesDebug(self))
            .finish()
    }
}

struct AttributesDebug<'a>(&'a CsvRecord);

impl fmt::Debug for AttributesDebug<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.attributes()).finish()
    }
}
