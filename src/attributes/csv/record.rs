//! [`CsvRecord`]: an owned data row in one buffer, with attribute names shared by every row of a file.

use std::fmt;
use std::sync::Arc;

use crate::attributes::{AttributeRecord, Attributes};

/// Marks a value that is absent (a configured null value) in [`CsvRecord::ends`].
const ABSENT: u32 = 1 << 31;

/// The largest block text a [`CsvRecord`] points into (its offsets are 31-bit).
pub(super) const MAX_RECORD_TEXT: usize = (ABSENT - 1) as usize;

/// Rows per block read ahead by the iterator (see [`CsvRecord`]).
pub(super) const BLOCK_ROWS: usize = 256;

/// Text bytes after which a block is closed even with fewer rows.
pub(super) const BLOCK_BYTES: usize = 64 * 1024;

/// Consecutive rows of one file in one buffer: what [`CsvRecord`]s point into.
#[derive(Debug)]
pub(super) struct Block {
    /// The mapped attribute names, sorted, shared by the file's records.
    names: Arc<[Box<str>]>,
    /// Each row's user id, then each present value, back to back.
    text: String,
    /// Per row, `names.len() + 1` entries: where its user id ends, then where
    /// each value ends (or [`ABSENT`] | the previous end for a null value).
    /// A row starts where the previous one ended.
    ends: Vec<u32>,
    /// Per row, the line it starts on.
    lines: Vec<u64>,
}

impl Block {
    /// An empty block for a file with these attribute `names`, with room
    /// for `rows` rows and `text` bytes.
    pub(super) fn new(names: &Arc<[Box<str>]>, rows: usize, text: usize) -> Block {
        Block {
            names: Arc::clone(names),
            text: String::with_capacity(text),
            ends: Vec::with_capacity(rows * (names.len() + 1)),
            lines: Vec::with_capacity(rows),
        }
    }

    /// Empties the block, keeping its buffers.
    pub(super) fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
        self.lines.clear();
    }

    /// The bytes of text the block holds.
    pub(super) fn text_len(&self) -> usize {
        self.text.len()
    }

    /// True once the block holds enough to be handed out.
    pub(super) fn is_full(&self) -> bool {
        self.lines.len() >= BLOCK_ROWS || self.text.len() >= BLOCK_BYTES
    }

    /// Appends a row; `values` in the order of the names, `None` for an absent
    /// value. `false` (and the block unchanged) if the block's text would pass
    /// [`MAX_RECORD_TEXT`].
    pub(super) fn push<'a>(
        &mut self,
        line: u64,
        user_id: &str,
        values: impl Iterator<Item = Option<&'a str>>,
    ) -> bool {
        let (text_len, ends_len) = (self.text.len(), self.ends.len());
        let mut ok = true;
        self.text.push_str(user_id);
        ok &= push_end(&mut self.ends, self.text.len(), 0);
        for value in values {
            match value {
                Some(v) => {
                    self.text.push_str(v);
                    ok &= push_end(&mut self.ends, self.text.len(), 0);
                }
                None => ok &= push_end(&mut self.ends, self.text.len(), ABSENT),
            }
        }
        if !ok || self.ends.len() - ends_len != self.names.len() + 1 {
            self.text.truncate(text_len);
            self.ends.truncate(ends_len);
            return false;
        }
        self.lines.push(line);
        true
    }
}

fn push_end(ends: &mut Vec<u32>, len: usize, flag: u32) -> bool {
    match u32::try_from(len).ok().filter(|&n| n < ABSENT) {
        Some(n) => {
            ends.push(n | flag);
            true
        }
        None => false,
    }
}

/// One imported row, owned: the user id and the mapped attributes' values,
/// sharing one buffer with up to 255 neighbouring rows of the file and the
/// attribute names with all of them. Reading a row costs no allocation of its
/// own (a few per block of 256 rows), whatever the number of columns; a record
/// kept alive keeps its block (at most 64 KiB of text, or one longer row).
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
    /// The row's first entry in `block.ends`.
    base: usize,
    line: u64,
}

impl CsvRecord {
    /// Row `row` of a finished block; `None` past its end.
    pub(super) fn at(block: &Arc<Block>, row: usize) -> Option<CsvRecord> {
        Some(CsvRecord {
            line: *block.lines.get(row)?,
            base: row * (block.names.len() + 1),
            block: Arc::clone(block),
        })
    }

    /// The user id (trimmed, normalised if the mapping says so).
    pub fn user_id(&self) -> &str {
        self.slice(0)
    }

    /// The 1-based line the row starts on.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The mapped attribute names, sorted; the same for every record of a file.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.block.names.iter().map(|n| &**n)
    }

    /// The value of the attribute at `index` in [`CsvRecord::names`]; `None`
    /// past the end or if the cell held a null value.
    pub fn value(&self, index: usize) -> Option<&str> {
        if index >= self.block.names.len() || self.block.ends[self.base + index + 1] & ABSENT != 0 {
            return None;
        }
        Some(self.slice(index + 1))
    }

    /// The value of attribute `name`; `None` if it is not mapped or the cell
    /// held a null value.
    pub fn get(&self, name: &str) -> Option<&str> {
        let index = self
            .block
            .names
            .binary_search_by(|n| (**n).cmp(name))
            .ok()?;
        self.value(index)
    }

    /// The attributes as `(name, value)`, sorted by name; null cells left out.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.block
            .names
            .iter()
            .enumerate()
            .filter_map(|(i, name)| Some((&**name, self.value(i)?)))
    }

    /// The number of attributes present (null cells not counted).
    pub fn len(&self) -> usize {
        let n = self.block.names.len();
        self.block.ends[self.base + 1..self.base + 1 + n]
            .iter()
            .filter(|e| *e & ABSENT == 0)
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

    /// Entry `i` of the row (0: the user id, then the values) as text.
    fn slice(&self, i: usize) -> &str {
        let at = self.base + i;
        let start = match at.checked_sub(1) {
            Some(previous) => self.block.ends.get(previous).map_or(0, |e| e & !ABSENT),
            None => 0,
        };
        let end = self.block.ends.get(at).map_or(0, |e| e & !ABSENT);
        self.block
            .text
            .get(start as usize..end as usize)
            .unwrap_or_default()
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
        self.line == other.line
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
            .field("line", &self.line)
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
