//! [`AttributeBatch`]: many users' attribute values in one buffer, what an import hands an [`AttributeStore`](super::AttributeStore).

use std::collections::HashMap;
use std::sync::Arc;

use super::csv::{CsvRecord, Shape};
use super::{AttributeRecord, Attributes};
use crate::{Error, Result};

/// A byte range of [`AttributeBatch`]'s text.
type Span = (u32, u32);

/// Where one record of a batch is.
#[derive(Debug, Clone, Copy)]
struct RecordAt {
    user: Span,
    /// Its values' range in the batch's `values`.
    values: (u32, u32),
}

/// Where one value is: its name (an index into the batch's names) and text.
#[derive(Debug, Clone, Copy)]
struct ValueAt {
    name: u32,
    text: Span,
}

/// Records of many users in one buffer: every user id and value back to back
/// in one string, each name stored once. What [`ImportCollector`](super::ImportCollector)
/// hands to [`AttributeStore::upsert_batch`](super::AttributeStore::upsert_batch)
/// and [`AttributeStore::write_import_batch`](super::AttributeStore::write_import_batch):
/// filling it costs no allocation per record, whatever the number of values,
/// once its buffers have grown.
///
/// A batch may hold a user more than once (a store merges them; later values
/// win) and holds at most 4 GiB of text.
///
/// ```
/// use switchboard::attributes::AttributeBatch;
/// let mut batch = AttributeBatch::new();
/// batch.push("ada@example.com", [("plan", "Pro"), ("seats", "3")]).unwrap();
/// batch.push("bob@example.com", [("plan", "Basic")]).unwrap();
/// assert_eq!(batch.len(), 2);
/// assert_eq!(batch.names().collect::<Vec<_>>(), ["plan", "seats"]);
/// let records = batch.to_records();
/// assert_eq!(records[1].user_id, "bob@example.com");
/// assert_eq!(records[0].attributes["seats"], "3");
/// ```
#[derive(Debug, Clone, Default)]
pub struct AttributeBatch {
    text: String,
    records: Vec<RecordAt>,
    values: Vec<ValueAt>,
    /// The distinct names with a value, in order of appearance.
    names: Vec<Box<str>>,
    /// Name → its index in `names`.
    index: HashMap<Box<str>, u32>,
    /// The name index of each position of the last record pushed.
    last: Vec<u32>,
    /// The file shape of the last [`CsvRecord`] pushed and, per name of it,
    /// its index in `names` (`u32::MAX`: no value yet).
    shape: Option<(Arc<Shape>, Vec<u32>)>,
}

/// One record of an [`AttributeBatch`] ([`AttributeBatch::iter`]).
#[derive(Debug, Clone, Copy)]
pub struct BatchRecord<'a> {
    batch: &'a AttributeBatch,
    at: RecordAt,
}

impl<'a> BatchRecord<'a> {
    /// The user id.
    pub fn user_id(&self) -> &'a str {
        self.batch.str(self.at.user)
    }

    /// The values as `(name, value)`, in the order they were pushed.
    pub fn attributes(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let batch = self.batch;
        self.indexed()
            .map(move |(name, text)| (batch.name(name), text))
    }

    /// The values as (index into [`AttributeBatch::names`], value).
    pub(crate) fn indexed(&self) -> impl Iterator<Item = (u32, &'a str)> + 'a {
        let batch = self.batch;
        let (start, end) = self.at.values;
        batch
            .values
            .get(start as usize..end as usize)
            .unwrap_or_default()
            .iter()
            .map(move |v| (v.name, batch.str(v.text)))
    }
}

fn too_big() -> Error {
    Error::invalid_input(
        "an attribute batch holds at most 4 GiB of text: write the records in smaller batches",
    )
}

impl AttributeBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `records` records of `bytes` bytes of text.
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        AttributeBatch {
            text: String::with_capacity(bytes),
            records: Vec::with_capacity(records),
            ..Self::default()
        }
    }

    /// A batch of `records`, in order.
    pub fn from_records(records: &[AttributeRecord]) -> Result<Self> {
        let bytes = records
            .iter()
            .map(|r| r.user_id.len() + r.attributes.values().map(String::len).sum::<usize>())
            .sum();
        let mut batch = Self::with_capacity(records.len(), bytes);
        for record in records {
            batch.push_record(record)?;
        }
        Ok(batch)
    }

    /// The number of records (a user pushed twice counts twice).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True if the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The bytes of text (user ids and values) the batch holds.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.text.clear();
        self.records.clear();
        self.values.clear();
        self.names.clear();
        self.index.clear();
        self.last.clear();
        self.shape = None;
    }

    /// The distinct attribute names with at least one value, in order of
    /// first appearance.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.names.iter().map(|n| &**n)
    }

    /// The records, in the order they were pushed.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = BatchRecord<'_>> + '_ {
        self.records
            .iter()
            .map(move |&at| BatchRecord { batch: self, at })
    }

    /// The records as [`AttributeRecord`]s (a name given twice in one record:
    /// the later value).
    pub fn to_records(&self) -> Vec<AttributeRecord> {
        self.iter()
            .map(|r| AttributeRecord {
                user_id: r.user_id().to_owned(),
                attributes: r
                    .attributes()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect::<Attributes>(),
            })
            .collect()
    }

    /// Appends a record: `user_id` and its `(name, value)` pairs (a name
    /// given twice: the later value). Fails, leaving the batch unchanged, if
    /// the batch's text would pass 4 GiB.
    pub fn push<'a>(
        &mut self,
        user_id: &str,
        attributes: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<()> {
        let mark = self.mark();
        let user = self.push_text(user_id);
        let first = self.values.len();
        for (position, (name, value)) in attributes.into_iter().enumerate() {
            let name = match self.last.get(position) {
                Some(&i) if self.name(i) == name => i,
                _ => {
                    let i = self.name_index(name);
                    match self.last.get_mut(position) {
                        Some(slot) => *slot = i,
                        None => self.last.push(i),
                    }
                    i
                }
            };
            let text = self.push_text(value);
            let earlier = self.values.get_mut(first..).unwrap_or_default();
            match earlier.iter_mut().find(|v| v.name == name) {
                Some(v) => v.text = text,
                None => self.values.push(ValueAt { name, text }),
            }
        }
        self.finish_record(mark, user, first)
    }

    /// Appends an [`AttributeRecord`].
    pub fn push_record(&mut self, record: &AttributeRecord) -> Result<()> {
        self.push(
            &record.user_id,
            record
                .attributes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
    }

    /// Appends a [`CsvRecord`] (its null cells left out); records of one file
    /// look their names up once.
    pub fn push_csv(&mut self, record: &CsvRecord) -> Result<()> {
        let shape = record.shape();
        let same = self
            .shape
            .as_ref()
            .is_some_and(|(s, _)| Arc::ptr_eq(s, shape));
        if !same {
            self.shape = Some((Arc::clone(shape), vec![u32::MAX; shape.names.len()]));
        }
        let mark = self.mark();
        let user = self.push_text(record.user_id());
        let first = self.values.len();
        for i in 0..shape.names.len() {
            let Some(value) = record.value(i) else {
                continue;
            };
            let known = self
                .shape
                .as_ref()
                .and_then(|(_, map)| map.get(i).copied())
                .filter(|&n| n != u32::MAX);
            let name = match known {
                Some(n) => n,
                None => {
                    let n = self.name_index(shape.names.get(i).map_or("", |n| &**n));
                    if let Some(slot) = self.shape.as_mut().and_then(|(_, map)| map.get_mut(i)) {
                        *slot = n;
                    }
                    n
                }
            };
            let text = self.push_text(value);
            self.values.push(ValueAt { name, text });
        }
        self.finish_record(mark, user, first)
    }

    /// Everything but the names, as it was before a push.
    fn mark(&self) -> (usize, usize) {
        (self.text.len(), self.values.len())
    }

    /// Appends `s` to the text (its span is checked in `finish_record`).
    fn push_text(&mut self, s: &str) -> Span {
        let start = self.text.len();
        self.text.push_str(s);
        (
            u32::try_from(start).unwrap_or(u32::MAX),
            u32::try_from(self.text.len()).unwrap_or(u32::MAX),
        )
    }

    /// Records the record just appended, or takes it out again if the text
    /// passed what a span holds.
    fn finish_record(
        &mut self,
        (text, values): (usize, usize),
        user: Span,
        first: usize,
    ) -> Result<()> {
        let (Ok(_), Ok(start), Ok(end)) = (
            u32::try_from(self.text.len()),
            u32::try_from(first),
            u32::try_from(self.values.len()),
        ) else {
            self.text.truncate(text);
            self.values.truncate(values);
            return Err(too_big());
        };
        self.records.push(RecordAt {
            user,
            values: (start, end),
        });
        Ok(())
    }

    /// The index of `name`, registering it.
    fn name_index(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        // Fewer than 2^32 names: every name has a value in the text.
        let i = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.into());
        self.index.insert(name.into(), i);
        i
    }

    fn name(&self, i: u32) -> &str {
        self.names.get(i as usize).map_or("", |n| &**n)
    }

    fn str(&self, (start, end): Span) -> &str {
        self.text
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    /// The distinct names, indexed as [`BatchRecord::indexed`] reports them.
    #[cfg(feature = "sqlite")]
    pub(crate) fn name_list(&self) -> &[Box<str>] {
        &self.names
    }

    /// `None` if every user id is distinct; else the batch with each user
    /// once, where it first appeared, its values merged (later values win).
    #[cfg(feature = "sqlite")]
    pub(crate) fn merged_by_user(&self) -> Result<Option<AttributeBatch>> {
        let mut seen = std::collections::HashSet::with_capacity(self.len());
        if self.iter().all(|r| seen.insert(r.user_id())) {
            return Ok(None);
        }
        let mut order: Vec<&str> = Vec::new();
        let mut merged: HashMap<&str, std::collections::BTreeMap<u32, &str>> = HashMap::new();
        for record in self.iter() {
            let user = record.user_id();
            let values = merged.entry(user).or_insert_with(|| {
                order.push(user);
                std::collections::BTreeMap::new()
            });
            values.extend(record.indexed());
        }
        let mut out = AttributeBatch::with_capacity(order.len(), self.text.len());
        for user in order {
            let values = merged.get(user).into_iter().flatten();
            out.push(user, values.map(|(n, v)| (self.name(*n), *v)))?;
        }
        Ok(Some(out))
    }
}

impl TryFrom<&[AttributeRecord]> for AttributeBatch {
    type Error = Error;

    fn try_from(records: &[AttributeRecord]) -> Result<Self> {
        Self::from_records(records)
    }
}

/// A row an [`ImportCollector`](super::ImportCollector) takes: what
/// [`read_csv`](super::read_csv) yields ([`CsvRecord`]) or an [`AttributeRecord`].
pub trait ImportRow {
    /// The user id.
    fn user_id(&self) -> &str;
    /// Appends the row to `batch`.
    fn append_to(&self, batch: &mut AttributeBatch) -> Result<()>;
}

impl ImportRow for CsvRecord {
    fn user_id(&self) -> &str {
        CsvRecord::user_id(self)
    }

    fn append_to(&self, batch: &mut AttributeBatch) -> Result<()> {
        batch.push_csv(self)
    }
}

impl ImportRow for AttributeRecord {
    fn user_id(&self) -> &str {
        &self.user_id
    }

    fn append_to(&self, batch: &mut AttributeBatch) -> Result<()> {
        batch.push_record(self)
    }
}

impl<T: ImportRow + ?Sized> ImportRow for &T {
    fn user_id(&self) -> &str {
        (**self).user_id()
    }

    fn append_to(&self, batch: &mut AttributeBatch) -> Result<()> {
        (**self).append_to(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::{CsvMapping, read_csv};
    use proptest::prelude::*;

    fn record(user: &str, values: &[(&str, &str)]) -> AttributeRecord {
        AttributeRecord {
            user_id: user.to_owned(),
            attributes: values
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn a_name_twice_in_one_record_keeps_the_later_value() {
        let mut batch = AttributeBatch::new();
        batch
            .push("u", [("plan", "a"), ("seats", "1"), ("plan", "b")])
            .unwrap();
        assert_eq!(
            batch.to_records(),
            [record("u", &[("plan", "b"), ("seats", "1")])]
        );
        assert_eq!(batch.iter().next().unwrap().attributes().count(), 2);
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn users_pushed_twice_merge_where_they_first_appeared() {
        let mut batch = AttributeBatch::new();
        batch.push("u1", [("plan", "a"), ("seats", "1")]).unwrap();
        batch.push("u2", [("plan", "x")]).unwrap();
        batch.push("u1", [("plan", "b"), ("city", "Graz")]).unwrap();
        let merged = batch.merged_by_user().unwrap().expect("u1 twice");
        assert_eq!(
            merged.to_records(),
            [
                record("u1", &[("city", "Graz"), ("plan", "b"), ("seats", "1")]),
                record("u2", &[("plan", "x")]),
            ]
        );
        assert!(merged.merged_by_user().unwrap().is_none());
    }

    #[test]
    fn csv_records_leave_null_cells_out_and_name_only_what_has_a_value() {
        let csv = "id,plan,city\nu1,Pro,\nu2,NULL,\n";
        let mapping = CsvMapping::new("id")
            .attribute("plan", "plan")
            .attribute("city", "city")
            .null_values(["NULL", ""]);
        let mut batch = AttributeBatch::new();
        for row in read_csv(csv.as_bytes(), &mapping).unwrap() {
            batch.push_csv(&row.unwrap()).unwrap();
        }
        assert_eq!(batch.names().collect::<Vec<_>>(), ["plan"]);
        assert_eq!(
            batch.to_records(),
            [record("u1", &[("plan", "Pro")]), record("u2", &[])]
        );
    }

    proptest! {
        #[test]
        fn records_round_trip_through_a_batch(
            records in proptest::collection::vec(
                ("[a-c]{1,2}", proptest::collection::btree_map("[a-e]{1,2}", "\\PC{0,6}", 0..5)),
                0..20,
            ),
        ) {
            let records: Vec<AttributeRecord> = records
                .into_iter()
                .map(|(user_id, attributes)| AttributeRecord { user_id, attributes })
                .collect();
            let batch = AttributeBatch::from_records(&records).unwrap();
            prop_assert_eq!(batch.to_records(), records.clone());
            let mut names: Vec<&str> = records.iter().flat_map(|r| r.attributes.keys().map(String::as_str)).collect();
            names.sort_unstable();
            names.dedup();
            let mut got: Vec<&str> = batch.names().collect();
            got.sort_unstable();
            prop_assert_eq!(got, names);
            // Merging agrees with applying the records in order.
            #[cfg(feature = "sqlite")]
            {
            let mut expected: Vec<(String, Attributes)> = Vec::new();
            for r in &records {
                match expected.iter_mut().find(|(u, _)| *u == r.user_id) {
                    Some((_, a)) => a.extend(r.attributes.clone()),
                    None => expected.push((r.user_id.clone(), r.attributes.clone())),
                }
            }
            let merged = batch.merged_by_user().unwrap().map_or_else(|| batch.to_records(), |m| m.to_records());
            let merged: Vec<(String, Attributes)> = merged.into_iter().map(|r| (r.user_id, r.attributes)).collect();
            prop_assert_eq!(merged, expected);
            }
        }
    }
}
