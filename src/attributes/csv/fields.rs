//! [`Fields`]: one parsed CSV record's fields in one buffer, reused from record to record.

use std::ops::Range;

/// The fields of one record, back to back in one buffer (the counterpart of
/// the `csv` crate's `ByteRecord`, filled by [`Source`](super::source::Source)).
#[derive(Debug, Default)]
pub(super) struct Fields {
    /// The fields' bytes; only `text[..ends[len - 1]]` is the record.
    pub(super) text: Vec<u8>,
    /// Where each field ends in `text`; only `ends[..len]` are the record's.
    pub(super) ends: Vec<usize>,
    /// The number of fields.
    pub(super) len: usize,
}

impl Fields {
    /// The number of fields.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Where each field ends in [`Fields::as_slice`].
    pub(super) fn ends(&self) -> &[usize] {
        self.ends.get(..self.len).unwrap_or_default()
    }

    /// Where field `i` is in [`Fields::as_slice`]; `None` past the end.
    pub(super) fn range(&self, i: usize) -> Option<Range<usize>> {
        if i >= self.len {
            return None;
        }
        let end = *self.ends.get(i)?;
        let start = match i.checked_sub(1) {
            Some(previous) => *self.ends.get(previous)?,
            None => 0,
        };
        Some(start..end)
    }

    /// Field `i`; `None` past the end.
    pub(super) fn get(&self, i: usize) -> Option<&[u8]> {
        self.text.get(self.range(i)?)
    }

    /// Every field's bytes, back to back.
    pub(super) fn as_slice(&self) -> &[u8] {
        let end = match self.len.checked_sub(1) {
            Some(last) => self.ends.get(last).copied().unwrap_or(0),
            None => 0,
        };
        self.text.get(..end).unwrap_or_default()
    }

    /// The fields in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len).filter_map(|i| self.get(i))
    }

    /// Room for more field bytes (`csv_core` said the output is full).
    pub(super) fn grow_text(&mut self) {
        let len = self.text.len().saturating_mul(2).max(64);
        self.text.resize(len, 0);
    }

    /// Room for more fields (`csv_core` said the ends are full).
    pub(super) fn grow_ends(&mut self) {
        let len = self.ends.len().saturating_mul(2).max(16);
        self.ends.resize(len, 0);
    }
}
