//! [`CsvRow`]: one valid data row borrowed from the reader, and its owned copies.

use std::fmt;
use std::sync::Arc;

use super::fields::Fields;
use super::record::{Block, CsvRecord, Shape};
use super::source::RecordEnd;
use crate::attributes::AttributeRecord;

/// One mapped column: its index in the record, its header and its attribute name.
#[derive(Debug)]
pub(super) struct MappedColumn {
    pub(super) index: usize,
    pub(super) header: String,
    pub(super) as_name: String,
}

/// One valid data row, borrowed from the reader (see [`CsvRecords::next_row`](super::CsvRecords::next_row)).
#[derive(Clone, Copy)]
pub struct CsvRow<'a> {
    pub(super) end: RecordEnd,
    pub(super) user_id: &'a str,
    /// The whole record as text, if it is all valid UTF-8.
    pub(super) whole: Option<&'a str>,
    /// Where the user id is in `whole`, unless it was normalised.
    pub(super) user_span: Option<(usize, usize)>,
    /// Whether owned copies take the whole record (most of its columns are
    /// mapped) rather than value by value.
    pub(super) copy_whole: bool,
    pub(super) record: &'a Fields,
    pub(super) columns: &'a [MappedColumn],
    pub(super) shape: &'a Arc<Shape>,
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
    pub(super) fn field(&self, index: usize) -> Option<&'a str> {
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
        self.columns
            .iter()
            .filter_map(move |c| Some((c.as_name.as_str(), row.value(c)?)))
    }

    /// Column `c`'s value, trimmed; `None` for a configured null value.
    fn value(&self, c: &MappedColumn) -> Option<&'a str> {
        let value = trim(self.field(c.index).unwrap_or_default());
        (!self.shape.is_null(value)).then_some(value)
    }

    /// An owned copy of the row as a [`CsvRecord`] (a block of its own; the
    /// iterator shares one block between many rows). `None` only if the row's
    /// text exceeds 2 GiB.
    pub fn to_csv_record(&self) -> Option<CsvRecord> {
        let values = match self.whole {
            Some(whole) if self.copy_whole => whole.len(),
            _ => self
                .columns
                .iter()
                .map(|c| self.record.range(c.index).map_or(0, |r| r.len()))
                .sum::<usize>(),
        };
        let capacity = self.user_id.len() + values;
        let mut block = Block::new(self.shape, 1, self.record.len(), capacity);
        if !self.append_to(&mut block) {
            return None;
        }
        CsvRecord::at(&Arc::new(block), 0)
    }

    /// Appends the row to `block`; `false` if the block's text would pass 2 GiB.
    pub(super) fn append_to(&self, block: &mut Block) -> bool {
        let row = *self;
        match self.whole {
            Some(whole) if self.copy_whole => block.push_record(
                self.line(),
                self.user_span.ok_or(self.user_id),
                whole,
                self.record.ends(),
            ),
            _ => block.push_values(
                self.line(),
                self.user_id,
                self.columns
                    .iter()
                    .map(move |c| trim(row.field(c.index).unwrap_or_default())),
            ),
        }
    }

    /// Overwrites `record` with this row, reusing its strings: values of
    /// attributes it already holds are copied into their existing buffers, so
    /// once `record` has seen a row with every mapped attribute, refilling it
    /// allocates nothing. The result equals [`CsvRow::to_record`].
    pub fn fill_record(&self, record: &mut AttributeRecord) {
        record.user_id.clear();
        record.user_id.push_str(self.user_id);
        let map = &mut record.attributes;
        // Fast path: the record holds exactly this row's names (both in name
        // order), so the values are overwritten in place without a lookup.
        let mut row = self.attributes();
        let mut same_names = true;
        for (name, slot) in map.iter_mut() {
            match row.next() {
                Some((row_name, value)) if row_name == name => {
                    slot.clear();
                    slot.push_str(value);
                }
                _ => {
                    same_names = false;
                    break;
                }
            }
        }
        if same_names && row.next().is_none() {
            return;
        }
        let mut present = 0usize;
        for (name, value) in self.attributes() {
            present += 1;
            match map.get_mut(name) {
                Some(slot) => {
                    slot.clear();
                    slot.push_str(value);
                }
                None => {
                    map.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        if map.len() > present {
            // Names left over from an earlier row (a null cell here, or another mapping).
            map.retain(|k, _| self.attributes().any(|(name, _)| name == k));
        }
    }

    /// An owned copy of the row as a map ([`CsvRow::to_csv_record`] is cheaper).
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

/// `text.trim()`, without looking for Unicode white space in the common cell
/// that starts and ends with a visible ASCII character.
pub(super) fn trim(text: &str) -> &str {
    match (text.as_bytes().first(), text.as_bytes().last()) {
        (Some(&first), Some(&last)) if visible_ascii(first) && visible_ascii(last) => text,
        _ => text.trim(),
    }
}

/// Where `text[start..end]`, trimmed as [`trim`] trims it, is in `text`.
pub(super) fn trim_span(text: &str, start: usize, end: usize) -> (usize, usize) {
    let bytes = text.as_bytes();
    match (
        bytes.get(start),
        end.checked_sub(1).and_then(|last| bytes.get(last)),
    ) {
        (Some(&first), Some(&last))
            if start < end && visible_ascii(first) && visible_ascii(last) =>
        {
            (start, end)
        }
        _ => {
            let cell = text.get(start..end).unwrap_or_default();
            let lead = cell.len() - cell.trim_start().len();
            let start = start + lead.min(cell.len());
            (start, start + cell.trim().len())
        }
    }
}

/// An ASCII character that is neither white space nor a control character.
fn visible_ascii(b: u8) -> bool {
    b > b' ' && b < 0x7f
}

#[cfg(test)]
mod tests {
    use super::{trim, trim_span};

    #[test]
    fn trim_matches_str_trim() {
        for text in [
            "",
            " ",
            "a",
            "abc",
            " abc",
            "abc ",
            "\tabc\r\n",
            "\u{b}abc",
            "abc\u{c}",
            "\u{a0}abc",
            "abc\u{85}",
            "\u{2003}abc\u{3000}",
            "é",
            "a b",
            "\u{7f}abc",
            "abc\u{1}",
        ] {
            assert_eq!(trim(text), text.trim(), "{text:?}");
            let record = format!("x,{text},y");
            let (start, end) = trim_span(&record, 2, 2 + text.len());
            assert_eq!(&record[start..end], text.trim(), "{text:?}");
        }
    }
}
