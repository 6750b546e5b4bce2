//! The packed attribute values of one SQLite attribute row (slot → text, in one blob) and the SQL functions that read and merge them.
//!
//! A blob is a sequence of entries sorted by slot, each `slot` (LEB128),
//! `length` (LEB128) and that many bytes of UTF-8 text. One bound blob per
//! row keeps imports cheap; the functions below make the values visible to
//! SQL, and the segmentation indexes are expression indexes over them
//! (`sb_text(vals, 3)`, `sb_num(vals, 3)`). They are registered on every
//! connection the store opens; they are deterministic, so SQLite may index
//! them.

use rusqlite::Connection;
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::ValueRef;

use crate::attributes::sql::num_key;

fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*pos)?;
        *pos += 1;
        n |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// Appends one entry (entries must be pushed in increasing slot order).
pub(super) fn push(out: &mut Vec<u8>, slot: usize, text: &str) {
    push_varint(out, slot as u64);
    push_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// The entries of a blob, in slot order; stops at the first malformed entry
/// (a blob this module did not write).
pub(super) struct Entries<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Entries<'a> {
    type Item = (usize, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let slot = usize::try_from(read_varint(self.bytes, &mut self.pos)?).ok()?;
        let len = usize::try_from(read_varint(self.bytes, &mut self.pos)?).ok()?;
        let end = self.pos.checked_add(len)?;
        let text = std::str::from_utf8(self.bytes.get(self.pos..end)?).ok()?;
        self.pos = end;
        Some((slot, text))
    }
}

/// Reads a blob.
pub(super) fn entries(bytes: &[u8]) -> Entries<'_> {
    Entries { bytes, pos: 0 }
}

/// The text in `slot`.
pub(super) fn get(bytes: &[u8], slot: usize) -> Option<&str> {
    entries(bytes)
        .take_while(|(s, _)| *s <= slot)
        .find(|(s, _)| *s == slot)
        .map(|(_, t)| t)
}

/// `new`'s entries over `old`'s, minus `old`'s slots in `drop` (sorted).
fn merge(old: &[u8], new: &[u8], drop: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(old.len() + new.len());
    let mut a = entries(old)
        .filter(|(s, _)| drop.binary_search(s).is_err())
        .peekable();
    let mut b = entries(new).peekable();
    loop {
        match (a.peek().copied(), b.peek().copied()) {
            (Some((sa, ta)), Some((sb, tb))) => {
                if sa < sb {
                    push(&mut out, sa, ta);
                    a.next();
                } else {
                    push(&mut out, sb, tb);
                    b.next();
                    if sa == sb {
                        a.next();
                    }
                }
            }
            (Some((sa, ta)), None) => {
                push(&mut out, sa, ta);
                a.next();
            }
            (None, Some((sb, tb))) => {
                push(&mut out, sb, tb);
                b.next();
            }
            (None, None) => return out,
        }
    }
}

/// The slots listed in a blob of varints (the `drop` argument of `sb_replace`).
fn slot_list(bytes: &[u8]) -> Vec<usize> {
    let mut pos = 0;
    let mut out = Vec::new();
    while let Some(n) = read_varint(bytes, &mut pos) {
        out.extend(usize::try_from(n).ok());
    }
    out.sort_unstable();
    out
}

/// A list of slots for `sb_replace`.
pub(super) fn encode_slots(slots: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in slots {
        push_varint(&mut out, *s as u64);
    }
    out
}

fn blob<'a>(ctx: &'a Context<'_>, i: usize) -> &'a [u8] {
    match ctx.get_raw(i) {
        ValueRef::Blob(b) | ValueRef::Text(b) => b,
        _ => &[],
    }
}

fn slot(ctx: &Context<'_>, i: usize) -> Option<usize> {
    match ctx.get_raw(i) {
        ValueRef::Integer(n) => usize::try_from(n).ok(),
        _ => None,
    }
}

/// Registers the functions on `conn`:
/// - `sb_text(vals, slot)`: the text, or NULL;
/// - `sb_num(vals, slot)`: the [`crate::attributes::Decimal::sort_key`] of a
///   plain decimal number, else NULL;
/// - `sb_merge(old, new)`: `new`'s values over `old`'s;
/// - `sb_replace(old, new, slots)`: `old` without the listed slots, then `new` over it;
/// - `sb_drop(vals, slot)`, `sb_pick(vals, from, to)`, `sb_count(vals)`.
pub(super) fn register(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8
        | FunctionFlags::SQLITE_DETERMINISTIC
        | FunctionFlags::SQLITE_INNOCUOUS;
    conn.create_scalar_function("sb_text", 2, flags, |ctx| {
        Ok(slot(ctx, 1)
            .and_then(|s| get(blob(ctx, 0), s))
            .map(str::to_owned))
    })?;
    conn.create_scalar_function("sb_num", 2, flags, |ctx| {
        Ok(slot(ctx, 1)
            .and_then(|s| get(blob(ctx, 0), s))
            .and_then(num_key))
    })?;
    conn.create_scalar_function("sb_merge", 2, flags, |ctx| {
        Ok(merge(blob(ctx, 0), blob(ctx, 1), &[]))
    })?;
    conn.create_scalar_function("sb_replace", 3, flags, |ctx| {
        Ok(merge(blob(ctx, 0), blob(ctx, 1), &slot_list(blob(ctx, 2))))
    })?;
    conn.create_scalar_function("sb_drop", 2, flags, |ctx| {
        let drop: Vec<usize> = slot(ctx, 1).into_iter().collect();
        Ok(merge(blob(ctx, 0), &[], &drop))
    })?;
    conn.create_scalar_function("sb_pick", 3, flags, |ctx| {
        let mut out = Vec::new();
        if let (Some(from), Some(to)) = (slot(ctx, 1), slot(ctx, 2)) {
            if let Some(text) = get(blob(ctx, 0), from) {
                push(&mut out, to, text);
            }
        }
        Ok(out)
    })?;
    conn.create_scalar_function("sb_count", 1, flags, |ctx| {
        Ok(entries(blob(ctx, 0)).count() as i64)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pack(entries: &[(usize, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (s, t) in entries {
            push(&mut out, *s, t);
        }
        out
    }

    #[test]
    fn merge_puts_new_values_over_old_and_drops_listed_slots() {
        let old = pack(&[(0, "a"), (2, "b"), (5, "c")]);
        let new = pack(&[(2, "B"), (3, "d")]);
        assert_eq!(
            merge(&old, &new, &[]),
            pack(&[(0, "a"), (2, "B"), (3, "d"), (5, "c")])
        );
        assert_eq!(merge(&old, &new, &[0, 5]), pack(&[(2, "B"), (3, "d")]));
        assert_eq!(get(&old, 5), Some("c"));
        assert_eq!(get(&old, 1), None);
    }

    proptest! {
        #[test]
        fn any_blob_reads_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64), s in 0usize..8) {
            let _ = get(&bytes, s);
            let _ = merge(&bytes, &bytes, &[s]);
            prop_assert!(entries(&bytes).count() <= bytes.len());
        }

        #[test]
        fn values_round_trip(map in proptest::collection::btree_map(0usize..300, "\\PC{0,12}", 0..20)) {
            let mut blob = Vec::new();
            for (s, t) in &map {
                push(&mut blob, *s, t);
            }
            let back: Vec<(usize, String)> = entries(&blob).map(|(s, t)| (s, t.to_owned())).collect();
            let expected: Vec<(usize, String)> = map.clone().into_iter().collect();
            prop_assert_eq!(back, expected);
        }
    }
}
