//! SQLite attribute rows: one row per (tenant, user, owner) with the owner's values packed by slot (`packed`); names and their slots, writes, generations and removals.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rusqlite::{Connection, ToSql, params, params_from_iter};

use super::packed;
use super::{Db, changed, sql_limit};
use crate::attributes::AttributeBatch;
use crate::attributes::sql::Column;
use crate::attributes::{
    AttributeOwner, ImportMode, ImportRun, RemovedAttributes, UpsertStats, check_attribute_cap,
    check_import_cap, check_owners,
};

/// A batch of writes for the writer thread: each user once (later records
/// of a user win per attribute), and every name written.
#[derive(Debug, Default)]
pub(super) struct Batch {
    records: AttributeBatch,
    /// Every name written.
    pub(super) names: BTreeSet<String>,
}

impl Batch {
    /// Takes `records` (merging a user given twice).
    pub(super) fn new(records: AttributeBatch) -> crate::Result<Batch> {
        let records = records.merged_by_user()?.unwrap_or(records);
        let names = records.names().map(str::to_owned).collect();
        Ok(Batch { records, names })
    }
}

/// One registered name: its owner (as stored) and its slot in the owner's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Registered {
    pub(super) name: String,
    pub(super) owner: String,
    pub(super) slot: usize,
}

/// The SQL reading the text in `slot` of the row `alias`.
pub(super) fn text_expr(slot: usize, alias: &str) -> String {
    format!("sb_text({alias}vals, {slot})")
}

/// The SQL reading the numeric key in `slot` of the row `alias`.
fn num_expr(slot: usize, alias: &str) -> String {
    format!("sb_num({alias}vals, {slot})")
}

/// Every registered name of `tenant`, by name.
pub(super) fn registered(conn: &Connection, tenant: &str) -> Db<Vec<Registered>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, owner, slot FROM attribute_names WHERE tenant = ?1 ORDER BY name",
    )?;
    let rows = stmt.query_map(params![tenant], |r| {
        Ok(Registered {
            name: r.get(0)?,
            owner: r.get(1)?,
            slot: usize::try_from(r.get::<_, i64>(2)?).unwrap_or(usize::MAX),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Registered name → owner.
pub(super) fn owners(regs: &[Registered]) -> BTreeMap<String, AttributeOwner> {
    regs.iter()
        .map(|r| (r.name.clone(), AttributeOwner::from_stored(&r.owner)))
        .collect()
}

/// Where each registered name lives, for [`crate::attributes::sql::Layout::Rows`].
pub(super) fn columns(regs: &[Registered]) -> HashMap<String, Column> {
    regs.iter()
        .map(|r| {
            (
                r.name.clone(),
                Column {
                    group: r.owner.clone(),
                    value: text_expr(r.slot, "{a}."),
                    num: num_expr(r.slot, "{a}."),
                    indexes: [format!("t{}", r.slot), format!("n{}", r.slot)],
                    nullable: true,
                },
            )
        })
        .collect()
}

/// The slots `owner` uses.
fn slots_of<'a>(regs: &'a [Registered], owner: &'a str) -> impl Iterator<Item = usize> + 'a {
    regs.iter()
        .filter(move |r| r.owner == owner)
        .map(|r| r.slot)
}

/// Registers `name` for `owner` in its lowest free slot (no-op when it is
/// already the owner's); returns the slot.
fn register(
    conn: &Connection,
    tenant: &str,
    name: &str,
    owner: &str,
    regs: &mut Vec<Registered>,
) -> Db<usize> {
    if let Some(r) = regs.iter().find(|r| r.name == name && r.owner == owner) {
        return Ok(r.slot);
    }
    let used: BTreeSet<usize> = slots_of(regs, owner).collect();
    let slot = (0..).find(|s| !used.contains(s)).unwrap_or(0);
    conn.prepare_cached(
        "INSERT INTO attribute_names (tenant, name, owner, slot) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (tenant, name) DO UPDATE SET owner = excluded.owner, slot = excluded.slot",
    )?
    .execute(params![tenant, name, owner, sql_limit(slot)])?;
    regs.retain(|r| r.name != name);
    regs.push(Registered {
        name: name.to_owned(),
        owner: owner.to_owned(),
        slot,
    });
    Ok(slot)
}

/// Deletes the rows of `owner` that hold no value.
fn delete_empty_rows(conn: &Connection, tenant: &str, owner: &str) -> Db<()> {
    conn.prepare_cached(
        "DELETE FROM attribute_rows WHERE tenant = ?1 AND owner = ?2 AND length(vals) = 0",
    )?
    .execute(params![tenant, owner])?;
    Ok(())
}

/// Clears one slot of `owner`'s rows; the number of values removed.
fn clear_slot(conn: &Connection, tenant: &str, owner: &str, slot: usize) -> Db<u64> {
    let present = text_expr(slot, "");
    let cleared = conn
        .prepare_cached(&format!(
            "UPDATE attribute_rows SET vals = sb_drop(vals, {slot}) \
             WHERE tenant = ?1 AND owner = ?2 AND {present} IS NOT NULL"
        ))?
        .execute(params![tenant, owner])?;
    Ok(changed(cleared))
}

/// Moves an API name's values into `integration`'s rows (an integration
/// adopts it); the moved values count as written by no run (generation 0).
fn adopt(
    conn: &Connection,
    tenant: &str,
    name: &str,
    integration: &str,
    regs: &mut Vec<Registered>,
) -> Db<()> {
    let Some(from) = regs.iter().find(|r| r.name == name).cloned() else {
        return Ok(());
    };
    regs.retain(|r| r.name != name);
    let to = register(conn, tenant, name, integration, regs)?;
    let (f, present) = (from.slot, text_expr(from.slot, ""));
    conn.execute(
        &format!(
            "INSERT INTO attribute_rows (tenant, user_id, owner, generation, vals) \
             SELECT tenant, user_id, ?2, 0, sb_pick(vals, {f}, {to}) FROM attribute_rows \
             WHERE tenant = ?1 AND owner = ?3 AND {present} IS NOT NULL \
             ON CONFLICT (tenant, user_id, owner) DO UPDATE SET \
             vals = sb_merge(attribute_rows.vals, excluded.vals)"
        ),
        params![tenant, integration, from.owner],
    )?;
    clear_slot(conn, tenant, &from.owner, from.slot)?;
    delete_empty_rows(conn, tenant, &from.owner)?;
    Ok(())
}

/// How a write treats the values a row already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Merge {
    /// Keep the values the write does not set (API writes, upsert-only runs).
    Keep,
    /// A snapshot run: the row becomes what the run writes (values of an
    /// earlier write of the same run are kept).
    Replace,
}

/// The `VALUES` rows of a write of `rows` users (a user and its packed
/// values each, from `?5`; `?1` the tenant, `?2` the owner, `?3` the
/// generation, `?4` the slots a [`Merge::Replace`] write replaces).
fn values_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| format!("(?1, ?{}, ?2, ?3, ?{})", 5 + 2 * r, 6 + 2 * r))
        .collect();
    values.join(", ")
}

/// The insert of the rows that do not exist yet (the others are left alone;
/// it cannot fail midway, so SQLite keeps no statement journal for it),
/// returning the users inserted when `returning`.
pub(super) fn insert_sql(rows: usize, returning: bool) -> String {
    format!(
        "INSERT OR IGNORE INTO attribute_rows (tenant, user_id, owner, generation, vals) VALUES {}{}",
        values_sql(rows),
        if returning { " RETURNING user_id" } else { "" }
    )
}

/// Stamps the generation on the rows that already hold exactly the values
/// written (an unchanged user of a daily file): the row's values, and so the
/// segmentation indexes over them, are left alone.
pub(super) fn touch_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| format!("(?{}, ?{})", 5 + 2 * r, 6 + 2 * r))
        .collect();
    // The CROSS JOIN keeps the written rows as the outer loop, each found
    // through the unique key (an `UPDATE … FROM` let SQLite scan the tenant's
    // rows per statement once the table has statistics).
    format!(
        "UPDATE attribute_rows SET generation = ?3 WHERE id IN (SELECT a.id \
         FROM (VALUES {}) AS v CROSS JOIN attribute_rows AS a \
         WHERE a.tenant = ?1 AND a.owner = ?2 AND a.user_id = v.column1 AND a.vals = v.column2)",
        values.join(", ")
    )
}

/// The upsert of `rows` rows: new values over the existing row's (a row
/// that already holds exactly them is left alone).
pub(super) fn upsert_sql(rows: usize, merge: Merge) -> String {
    let vals = match merge {
        Merge::Keep => "sb_merge(attribute_rows.vals, excluded.vals)",
        Merge::Replace => {
            "CASE WHEN attribute_rows.generation = excluded.generation \
             THEN sb_merge(attribute_rows.vals, excluded.vals) \
             ELSE sb_replace(attribute_rows.vals, excluded.vals, ?4) END"
        }
    };
    format!(
        "INSERT INTO attribute_rows (tenant, user_id, owner, generation, vals) VALUES {} \
         ON CONFLICT (tenant, user_id, owner) DO UPDATE SET generation = excluded.generation, \
         created = 0, vals = {vals} WHERE attribute_rows.vals IS NOT excluded.vals",
        values_sql(rows)
    )
}

/// Rows per statement.
const ROWS_PER_STATEMENT: usize = 100;

/// Writes grouped values of `writer` stamped `generation`, after the
/// ownership and cap checks (in the write transaction). `slot_names` are the
/// names whose values a [`Merge::Replace`] write replaces (every name of the run).
#[allow(clippy::too_many_arguments)]
pub(super) fn write_values(
    conn: &Connection,
    tenant: &str,
    writer: &AttributeOwner,
    generation: i64,
    batch: &Batch,
    cap: usize,
    merge: Merge,
    slot_names: &[String],
) -> Db<UpsertStats> {
    let names = &batch.names;
    let mut regs = registered(conn, tenant)?;
    let owners = owners(&regs);
    check_owners(&owners, writer, names.iter().map(String::as_str))?;
    let registered_names: BTreeSet<String> = owners.keys().cloned().collect();
    let probe = crate::attributes::AttributeRecord {
        user_id: String::new(),
        attributes: names.iter().map(|n| (n.clone(), String::new())).collect(),
    };
    // Fails before anything is written.
    let new_names = check_attribute_cap(&registered_names, [&probe], cap)?;
    let owner = writer.as_stored();
    for name in names {
        if owners.get(name).is_some_and(|o| o != writer) {
            adopt(conn, tenant, name, owner, &mut regs)?;
        } else {
            register(conn, tenant, name, owner, &mut regs)?;
        }
    }
    let mut stats = UpsertStats {
        new_attribute_names: new_names.len(),
        ..UpsertStats::default()
    };
    // The slots written: each name's, and every slot of the run for a snapshot.
    let mut slot_of: Vec<(&str, usize)> = regs
        .iter()
        .filter(|r| r.owner == owner)
        .map(|r| (r.name.as_str(), r.slot))
        .collect();
    slot_of.sort_unstable();
    let find = |name: &str| {
        slot_of
            .binary_search_by(|(n, _)| (*n).cmp(name))
            .ok()
            .and_then(|i| slot_of.get(i))
            .map(|(_, s)| *s)
    };
    let replaced: Vec<usize> = slot_names.iter().filter_map(|n| find(n)).collect();
    let slot_by_name: Vec<Option<usize>> =
        batch.records.name_list().iter().map(|n| find(n)).collect();
    let replaced = packed::encode_slots(&replaced);
    // Each user's values packed in slot order, back to back in one buffer; a
    // user without values writes nothing.
    let records = &batch.records;
    let mut blobs: Vec<u8> = Vec::with_capacity(records.text_len() + 4 * records.len());
    let mut spans: Vec<(&str, std::ops::Range<usize>)> = Vec::with_capacity(records.len());
    let mut entries: Vec<(usize, &str)> = Vec::new();
    for record in records.iter() {
        entries.clear();
        for (name, text) in record.indexed() {
            if let Some(Some(slot)) = slot_by_name.get(name as usize) {
                entries.push((*slot, text));
            }
        }
        if entries.is_empty() {
            continue;
        }
        entries.sort_unstable_by_key(|(s, _)| *s);
        let start = blobs.len();
        for (s, t) in &entries {
            packed::push(&mut blobs, *s, t);
        }
        spans.push((record.user_id(), start..blobs.len()));
    }
    let packed_users: Vec<(&str, &[u8])> = spans
        .iter()
        .map(|(u, r)| (*u, blobs.get(r.clone()).unwrap_or_default()))
        .collect();
    // A user new to this owner's rows may have another owner's.
    let other_owners = regs.iter().any(|r| r.owner != owner);
    let mut inserted: Vec<String> = Vec::new();
    // Per statement of up to 100 users: the new rows are inserted first (a
    // plain insert, the cheap case of a first import), then, if some users
    // already had a row, the upsert merges the values into theirs (merging
    // a row just inserted into itself changes nothing).
    let full = (
        insert_sql(ROWS_PER_STATEMENT, other_owners),
        upsert_sql(ROWS_PER_STATEMENT, merge),
        touch_sql(ROWS_PER_STATEMENT),
    );
    for chunk in packed_users.chunks(ROWS_PER_STATEMENT) {
        let mut values: Vec<&dyn ToSql> = Vec::with_capacity(4 + 2 * chunk.len());
        values.push(&tenant);
        values.push(&owner);
        values.push(&generation);
        values.push(&replaced);
        for (user, vals) in chunk {
            values.push(user);
            values.push(vals);
        }
        // The full-size statement is prepared once; a last, shorter chunk
        // gets its own.
        let sql = |full: &str, sql: &dyn Fn(usize) -> String| {
            if chunk.len() == ROWS_PER_STATEMENT {
                conn.prepare_cached(full)
            } else {
                conn.prepare_cached(&sql(chunk.len()))
            }
        };
        let mut insert = sql(&full.0, &|n| insert_sql(n, other_owners))?;
        let new = if other_owners {
            let before = inserted.len();
            let mut rows = insert.query(params_from_iter(values.iter()))?;
            while let Some(row) = rows.next()? {
                inserted.push(row.get(0)?);
            }
            inserted.len() - before
        } else {
            let n = insert.execute(params_from_iter(values.iter()))?;
            stats.users_created += n;
            n
        };
        if new == chunk.len() {
            continue;
        }
        stats.users_updated += chunk.len() - new;
        // Rows already holding these values (the ones just inserted too).
        let same = sql(&full.2, &touch_sql)?.execute(params_from_iter(values.iter()))?;
        if same < chunk.len() {
            sql(&full.1, &|n| upsert_sql(n, merge))?.execute(params_from_iter(values.iter()))?;
        }
    }
    if !inserted.is_empty() {
        let mut elsewhere = conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM attribute_rows \
             WHERE tenant = ?1 AND user_id = ?2 AND owner <> ?3)",
        )?;
        for user in &inserted {
            if elsewhere.query_row(params![tenant, user, owner], |r| r.get::<_, bool>(0))? {
                stats.users_updated += 1;
            } else {
                stats.users_created += 1;
            }
        }
    }
    Ok(stats)
}

/// Starts an import run: ownership and cap checks, the run's names
/// registered (API names adopted), a new generation.
pub(super) fn begin(
    conn: &Connection,
    tenant: &str,
    integration: &str,
    names: &[String],
    cap: usize,
) -> Db<i64> {
    let mut regs = registered(conn, tenant)?;
    let owners = owners(&regs);
    let writer = AttributeOwner::Integration(integration.to_owned());
    check_owners(&owners, &writer, names.iter().map(String::as_str))?;
    check_import_cap(&owners, integration, names, cap)?;
    for name in names {
        if owners.get(name).is_some_and(|o| *o != writer) {
            adopt(conn, tenant, name, integration, &mut regs)?;
        } else {
            register(conn, tenant, name, integration, &mut regs)?;
        }
    }
    let generation = conn
        .prepare_cached(
            "INSERT INTO attribute_generations (tenant, integration, generation) VALUES (?1, ?2, 1) \
             ON CONFLICT (tenant, integration) DO UPDATE SET generation = generation + 1 \
             RETURNING generation",
        )?
        .query_row(params![tenant, integration], |r| r.get(0))?;
    Ok(generation)
}

/// Deletes every value of `name` and its registration; the values removed.
pub(super) fn drop_name(conn: &Connection, tenant: &str, name: &str) -> Db<u64> {
    let mut regs = registered(conn, tenant)?;
    let Some(reg) = regs.iter().find(|r| r.name == name).cloned() else {
        return Ok(0);
    };
    let values = clear_slot(conn, tenant, &reg.owner, reg.slot)?;
    conn.prepare_cached("DELETE FROM attribute_names WHERE tenant = ?1 AND name = ?2")?
        .execute(params![tenant, name])?;
    regs.retain(|r| r.name != name);
    delete_empty_rows(conn, tenant, &reg.owner)?;
    Ok(values)
}

/// Frees the names `integration` owns except `keep`.
pub(super) fn release(
    conn: &Connection,
    tenant: &str,
    integration: &str,
    keep: &[String],
) -> Db<RemovedAttributes> {
    let mut removed = RemovedAttributes::default();
    let owned: Vec<String> = registered(conn, tenant)?
        .into_iter()
        .filter(|r| r.owner == integration && !keep.contains(&r.name))
        .map(|r| r.name)
        .collect();
    for name in &owned {
        removed.values += drop_name(conn, tenant, name)?;
        removed.names += 1;
    }
    Ok(removed)
}

/// Ends a successful run: frees the names it no longer maps and, for a
/// snapshot, deletes the integration's rows it did not write.
pub(super) fn finish(conn: &Connection, tenant: &str, run: &ImportRun) -> Db<RemovedAttributes> {
    let mut removed = release(conn, tenant, &run.integration, &run.names)?;
    if run.mode == ImportMode::Snapshot {
        let mut stale = conn.prepare_cached(
            "DELETE FROM attribute_rows WHERE tenant = ?1 AND owner = ?2 AND generation < ?3 \
             RETURNING sb_count(vals)",
        )?;
        let rows = stale.query_map(params![tenant, run.integration, run.generation], |r| {
            r.get::<_, i64>(0)
        })?;
        for n in rows {
            removed.values += u64::try_from(n?).unwrap_or(0);
        }
    }
    Ok(removed)
}

/// The (name, text) pairs of one packed row of `owner`.
pub(super) fn decode<'a>(
    regs: &'a [Registered],
    owner: &'a str,
    vals: &'a [u8],
) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    packed::entries(vals).filter_map(move |(slot, text)| {
        regs.iter()
            .find(|r| r.slot == slot && r.owner == owner)
            .map(|r| (r.name.as_str(), text))
    })
}

/// One user's values as (name, text), every owner's.
pub(super) fn user_values(
    conn: &Connection,
    tenant: &str,
    user: &str,
) -> Db<Vec<(String, String)>> {
    let regs = registered(conn, tenant)?;
    let mut stmt = conn.prepare_cached(
        "SELECT owner, vals FROM attribute_rows WHERE tenant = ?1 AND user_id = ?2",
    )?;
    let mut rows = stmt.query(params![tenant, user])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let owner: String = row.get(0)?;
        let vals: Vec<u8> = row.get(1)?;
        out.extend(decode(&regs, &owner, &vals).map(|(n, t)| (n.to_owned(), t.to_owned())));
    }
    Ok(out)
}

/// Deletes one user's rows; the values removed.
pub(super) fn delete_user(conn: &Connection, tenant: &str, user: &str) -> Db<u64> {
    let values = user_values(conn, tenant, user)?.len() as u64;
    conn.prepare_cached("DELETE FROM attribute_rows WHERE tenant = ?1 AND user_id = ?2")?
        .execute(params![tenant, user])?;
    Ok(values)
}

/// Deletes one value; true if it existed.
pub(super) fn delete_value(conn: &Connection, tenant: &str, user: &str, name: &str) -> Db<bool> {
    let regs = registered(conn, tenant)?;
    let Some(reg) = regs.iter().find(|r| r.name == name) else {
        return Ok(false);
    };
    let (slot, present) = (reg.slot, text_expr(reg.slot, ""));
    let cleared = conn
        .prepare_cached(&format!(
            "UPDATE attribute_rows SET vals = sb_drop(vals, {slot}) \
             WHERE tenant = ?1 AND user_id = ?2 AND owner = ?3 AND {present} IS NOT NULL"
        ))?
        .execute(params![tenant, user, reg.owner])?;
    if cleared > 0 {
        conn.prepare_cached(
            "DELETE FROM attribute_rows WHERE tenant = ?1 AND user_id = ?2 AND owner = ?3 \
             AND length(vals) = 0",
        )?
        .execute(params![tenant, user, reg.owner])?;
    }
    Ok(cleared > 0)
}

/// The statement that builds the index segmentation reads named `spec`:
/// `t<slot>` (the text) or `n<slot>` (the numeric key), or several joined by
/// `_` (a composite index, partial on the first slot's presence); `None` for
/// another name.
pub(super) fn index_sql(spec: &str) -> Option<String> {
    let mut exprs = Vec::new();
    let mut first = None;
    for part in spec.split('_') {
        let (kind, digits) = part.split_at_checked(1)?;
        let slot: usize = digits.parse().ok()?;
        first.get_or_insert(slot);
        exprs.push(match kind {
            "t" => text_expr(slot, ""),
            "n" => num_expr(slot, ""),
            _ => return None,
        });
    }
    let present = text_expr(first?, "");
    Some(format!(
        "CREATE INDEX IF NOT EXISTS attribute_rows_{spec} ON attribute_rows \
         (tenant, owner, {}) WHERE {present} IS NOT NULL",
        exprs.join(", ")
    ))
}
