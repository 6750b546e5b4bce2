//! [`CsvRecord`]: an owned data row in one buffer, with attribute names shared by every row of a file.

use std::fmt;
use std::sync::Arc;

use crate::attributes::{AttributeRecord, Attributes};

/// Marks a value that is absent (a configured null value) in [`CsvRecord::ends`].
const ABSENT: u32 = 1 << 31;

/// The largest row text a [`CsvRecord`] holds (its offsets are 31-bit).
pub(super) const MAX_RECORD_TEXT: usize = (ABSENT - 1) as usize;

/// One imported row, owned: the user id and the mapped attributes' values in
/// one string, the attribute names shared (an [`Arc`]) by every record of the
/// file. Building one costs two allocations, whatever the number of columns.
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
    /// The mapped attribute names, sorted, shared by the file's records.
    names: Arc<[Box<str>]>,
    /// The user id, then each present value, back to back.
    text: String,
    /// `ends[0]`: where the user id ends; `ends[i + 1]`: where value `i` ends,
    /// or [`ABSENT`] | the previous end if the cell held a null value.
    ends: Box<[u32]>,
    line: u64,
}

impl CsvRecord {
    /// Builds a record; `values` in the order of `names`, `None` for an absent
    /// value. `None` if the text would be longer than [`MAX_RECORD_TEXT`].
    pub(super) fn build<'a>(
        names: &Arc<[Box<str>]>,
        line: u64,
        user_id: &str,
        capacity: usize,
        values: impl Iterator<Item = Option<&'a str>>,
    ) -> Option<CsvRecord> {
        let mut text = String::with_capacity(capacity.max(user_id.len()));
        let mut ends = Vec::with_capacity(names.len() + 1);
        text.push_str(user_id);
        ends.push(offset(text.len())?);
        for value in values {
            match value {
                Some(v) => {
                    text.push_str(v);
                    ends.push(offset(text.len())?);
                }
                None => ends.push(offset(text.len())? | ABSENT),
            }
        }
        debug_assert_eq!(ends.len(), names.len() + 1);
        Some(CsvRecord {
            names: Arc::clone(names),
            text,
            ends: ends.into_boxed_slice(),
            line,
        })
    }

    /// The user id (trimmed, normalised if the mapping says so).
    pub fn user_id(&self) -> &str {
        self.text.get(..self.end(0)).unwrap_or_default()
    }

    /// The 1-based line the row starts on.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The mapped attribute names, sorted; the same for every record of a file.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.names.iter().map(|n| &**n)
    }

    /// The value of the attribute at `index` in [`CsvRecord::names`]; `None`
    /// past the end or if the cell held a null value.
    pub fn value(&self, index: usize) -> Option<&str> {
        let raw = *self.ends.get(index + 1)?;
        if raw & ABSENT != 0 {
            return None;
        }
        self.text.get(self.end(index)..raw as usize)
    }

    /// The value of attribute `name`; `None` if it is not mapped or the cell
    /// held a null value.
    pub fn get(&self, name: &str) -> Option<&str> {
        let index = self.names.binary_search_by(|n| (**n).cmp(name)).ok()?;
        self.value(index)
    }

    /// The attributes as `(name, value)`, sorted by name; null cells left out.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.names
            .iter()
            .enumerate()
            .filter_map(|(i, name)| Some((&**name, self.value(i)?)))
    }

    /// The number of attributes present (null cells not counted).
    pub fn len(&self) -> usize {
        self.ends[1..].iter().filter(|e| *e & ABSENT == 0).count()
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

    /// Where entry `i` of `ends` ends, without the absent flag.
    fn end(&self, i: usize) -> usize {
        self.ends.get(i).map_or(0, |e| (e & !ABSENT) as usize)
    }
}

fn offset(len: usize) -> Option<u32> {
    u32::try_from(len).ok().filter(|&n| n < ABSENT)
}

impl From<CsvRecord> for AttributeRecord {
    fn from(record: CsvRecord) -> Self {
        let attributes = record.to_attributes();
        let mut user_id = record.text;
        // The user id is the start of the text: keep the buffer.
        user_id.truncate(record.ends.first().map_or(0, |e| (e & !ABSENT) as usize));
        AttributeRecord {
            user_id,
            attributes,
        }
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
