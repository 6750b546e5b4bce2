//! SQLite attribute rows: one row per (tenant, user, owner) with a column pair (`t<slot>` text, `n<slot>` numeric key) per name of the owner; names and their slots, writes, generations and removals.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rusqlite::{Connection, ToSql, params, params_from_iter};

use super::{Db, changed, sql_limit};
use crate::attributes::sql::Column;
use crate::attributes::{
    AttributeOwner, ImportMode, ImportRun, RemovedAttributes, UpsertStats, check_attribute_cap,
    check_import_cap, check_owners,
};

/// One user's values of a batch: (name, text, numeric key).
pub(super) type UserValues = (String, Vec<(String, String, Option<Vec<u8>>)>);

/// One registered name: its owner (as stored) and its slot in the owner's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Registered {
    pub(super) name: String,
    pub(super) owner: String,
    pub(super) slot: usize,
}

/// The text column of `slot`.
pub(super) fn text_col(slot: usize) -> String {
    format!("t{slot}")
}

/// The numeric-key column of `slot`.
pub(super) fn num_col(slot: usize) -> String {
    format!("n{slot}")
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
                    value: text_col(r.slot),
                    num: num_col(r.slot),
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

/// Adds slot columns up to `slot` if the table lacks them (cheap in SQLite:
/// existing rows are not rewritten).
pub(super) fn ensure_slot_columns(conn: &Connection, slot: usize) -> Db<()> {
    let present: BTreeSet<String> = conn
        .prepare_cached("SELECT name FROM pragma_table_info('attribute_rows')")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for i in 0..=slot {
        if !present.contains(&text_col(i)) {
            conn.execute_batch(&format!(
                "ALTER TABLE attribute_rows ADD COLUMN {} TEXT; \
                 ALTER TABLE attribute_rows ADD COLUMN {} BLOB;",
                text_col(i),
                num_col(i)
            ))?;
        }
    }
    Ok(())
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
    ensure_slot_columns(conn, slot)?;
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

/// Deletes the rows of `owner` that hold none of its names' values.
fn delete_empty_rows(conn: &Connection, tenant: &str, owner: &str, regs: &[Registered]) -> Db<()> {
    let empty: Vec<String> = slots_of(regs, owner)
        .map(|s| format!(" AND {} IS NULL", text_col(s)))
        .collect();
    conn.prepare_cached(&format!(
        "DELETE FROM attribute_rows WHERE tenant = ?1 AND owner = ?2{}",
        empty.concat()
    ))?
    .execute(params![tenant, owner])?;
    Ok(())
}

/// Clears one slot of `owner`'s rows; the number of values removed.
fn clear_slot(conn: &Connection, tenant: &str, owner: &str, slot: usize) -> Db<u64> {
    let (t, n) = (text_col(slot), num_col(slot));
    let cleared = conn
        .prepare_cached(&format!(
            "UPDATE attribute_rows SET {t} = NULL, {n} = NULL \
             WHERE tenant = ?1 AND owner = ?2 AND {t} IS NOT NULL"
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
    let (ft, fnum, tt, tn) = (
        text_col(from.slot),
        num_col(from.slot),
        text_col(to),
        num_col(to),
    );
    conn.execute(
        &format!(
            "INSERT INTO attribute_rows (tenant, user_id, owner, generation, {tt}, {tn}) \
             SELECT tenant, user_id, ?2, 0, {ft}, {fnum} FROM attribute_rows \
             WHERE tenant = ?1 AND owner = ?3 AND {ft} IS NOT NULL \
             ON CONFLICT (tenant, user_id, owner) DO UPDATE SET {tt} = excluded.{tt}, {tn} = excluded.{tn}"
        ),
        params![tenant, integration, from.owner],
    )?;
    clear_slot(conn, tenant, &from.owner, from.slot)?;
    delete_empty_rows(conn, tenant, &from.owner, regs)?;
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

/// The upsert of `rows` rows of one user and `slots` value pairs each.
fn upsert_sql(slots: &[usize], rows: usize, merge: Merge) -> String {
    let width = 1 + 2 * slots.len();
    let mut cols = String::new();
    for s in slots {
        cols.push_str(&format!(", {}, {}", text_col(*s), num_col(*s)));
    }
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let p = 4 + r * width;
            let mut v = format!("(?1, ?{p}, ?2, ?3");
            for i in 0..2 * slots.len() {
                v.push_str(&format!(", ?{}", p + 1 + i));
            }
            v.push(')');
            v
        })
        .collect();
    let keep_old = match merge {
        Merge::Keep => "excluded.{t} IS NULL".to_owned(),
        Merge::Replace => {
            "excluded.{t} IS NULL AND attribute_rows.generation = excluded.generation".to_owned()
        }
    };
    let mut set = vec!["generation = excluded.generation".to_owned()];
    for s in slots {
        let (t, n) = (text_col(*s), num_col(*s));
        let cond = keep_old.replace("{t}", &t);
        set.push(format!(
            "{t} = CASE WHEN {cond} THEN attribute_rows.{t} ELSE excluded.{t} END"
        ));
        set.push(format!(
            "{n} = CASE WHEN {cond} THEN attribute_rows.{n} ELSE excluded.{n} END"
        ));
    }
    format!(
        "INSERT INTO attribute_rows (tenant, user_id, owner, generation{cols}) VALUES {} \
         ON CONFLICT (tenant, user_id, owner) DO UPDATE SET {}",
        values.join(", "),
        set.join(", ")
    )
}

/// Bound parameters per statement (SQLite allows 32,766).
const MAX_PARAMS: usize = 30_000;

/// Writes grouped values of `writer` stamped `generation`, after the
/// ownership and cap checks (in the write transaction). `slot_names` are the
/// names whose columns a [`Merge::Replace`] write sets (every name of the run).
#[allow(clippy::too_many_arguments)]
pub(super) fn write_values(
    conn: &Connection,
    tenant: &str,
    writer: &AttributeOwner,
    generation: i64,
    users: &[UserValues],
    names: &BTreeSet<String>,
    cap: usize,
    merge: Merge,
    slot_names: &[String],
) -> Db<UpsertStats> {
    let mut regs = registered(conn, tenant)?;
    let owners = owners(&regs);
    check_owners(&owners, writer, names.iter().map(String::as_str))?;
    let registered_names: BTreeSet<String> = owners.keys().cloned().collect();
    let batch = crate::attributes::AttributeRecord {
        user_id: String::new(),
        attributes: names.iter().map(|n| (n.clone(), String::new())).collect(),
    };
    // Fails before anything is written.
    let new_names = check_attribute_cap(&registered_names, [&batch], cap)?;
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
    // The columns written, in slot order, and each name's position among them.
    let mut written: Vec<(usize, &str)> = regs
        .iter()
        .filter(|r| {
            r.owner == owner
                && (names.contains(&r.name)
                    || (merge == Merge::Replace && slot_names.contains(&r.name)))
        })
        .map(|r| (r.slot, r.name.as_str()))
        .collect();
    written.sort_unstable();
    let slots: Vec<usize> = written.iter().map(|(s, _)| *s).collect();
    let position: HashMap<&str, usize> = written
        .iter()
        .enumerate()
        .map(|(i, (_, n))| (*n, i))
        .collect();
    let mut exists = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM attribute_rows WHERE tenant = ?1 AND user_id = ?2)",
    )?;
    // A user exists while it has an attribute; a user without values writes nothing.
    let users: Vec<&UserValues> = users.iter().filter(|(_, v)| !v.is_empty()).collect();
    for (user, _) in &users {
        if exists.query_row(params![tenant, user], |r| r.get::<_, bool>(0))? {
            stats.users_updated += 1;
        } else {
            stats.users_created += 1;
        }
    }
    if slots.is_empty() {
        return Ok(stats);
    }
    let width = 1 + 2 * slots.len();
    let per_statement = (MAX_PARAMS / width).clamp(1, 64);
    let null: Option<&str> = None;
    let null_key: Option<&[u8]> = None;
    for chunk in users.chunks(per_statement) {
        let sql = upsert_sql(&slots, chunk.len(), merge);
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut values: Vec<&dyn ToSql> = Vec::with_capacity(3 + width * chunk.len());
        values.push(&tenant);
        values.push(&owner);
        values.push(&generation);
        for (user, attrs) in chunk {
            values.push(user);
            let start = values.len();
            for _ in 0..slots.len() {
                values.push(&null);
                values.push(&null_key);
            }
            for (name, text, key) in attrs {
                if let Some(i) = position.get(name.as_str()) {
                    values[start + 2 * i] = text as &dyn ToSql;
                    values[start + 2 * i + 1] = key as &dyn ToSql;
                }
            }
        }
        stmt.execute(params_from_iter(values))?;
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
    delete_empty_rows(conn, tenant, &reg.owner, &regs)?;
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
        let regs = registered(conn, tenant)?;
        let count: Vec<String> = slots_of(&regs, &run.integration)
            .map(|s| format!("({} IS NOT NULL)", text_col(s)))
            .collect();
        let count = if count.is_empty() {
            "0".to_owned()
        } else {
            count.join(" + ")
        };
        let mut stale = conn.prepare_cached(&format!(
            "DELETE FROM attribute_rows WHERE tenant = ?1 AND owner = ?2 AND generation < ?3 \
             RETURNING {count}"
        ))?;
        let rows = stale.query_map(params![tenant, run.integration, run.generation], |r| {
            r.get::<_, i64>(0)
        })?;
        for n in rows {
            removed.values += u64::try_from(n?).unwrap_or(0);
        }
    }
    Ok(removed)
}

/// One user's values as (name, text), every owner's.
pub(super) fn user_values(
    conn: &Connection,
    tenant: &str,
    user: &str,
) -> Db<Vec<(String, String)>> {
    let regs = registered(conn, tenant)?;
    let mut stmt =
        conn.prepare_cached("SELECT * FROM attribute_rows WHERE tenant = ?1 AND user_id = ?2")?;
    let mut rows = stmt.query(params![tenant, user])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let owner: String = row.get("owner")?;
        for reg in regs.iter().filter(|r| r.owner == owner) {
            if let Some(text) = row.get::<_, Option<String>>(text_col(reg.slot).as_str())? {
                out.push((reg.name.clone(), text));
            }
        }
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
    let (t, n) = (text_col(reg.slot), num_col(reg.slot));
    let cleared = conn
        .prepare_cached(&format!(
            "UPDATE attribute_rows SET {t} = NULL, {n} = NULL \
             WHERE tenant = ?1 AND user_id = ?2 AND owner = ?3 AND {t} IS NOT NULL"
        ))?
        .execute(params![tenant, user, reg.owner])?;
    if cleared > 0 {
        let empty: Vec<String> = slots_of(&regs, &reg.owner)
            .map(|s| format!(" AND {} IS NULL", text_col(s)))
            .collect();
        conn.prepare_cached(&format!(
            "DELETE FROM attribute_rows WHERE tenant = ?1 AND user_id = ?2 AND owner = ?3{}",
            empty.concat()
        ))?
        .execute(params![tenant, user, reg.owner])?;
    }
    Ok(cleared > 0)
}

/// The statement that builds the index segmentation reads on `column`
/// (`t<slot>` or `n<slot>`), or `None` for a name that is not a slot column.
pub(super) fn index_sql(column: &str) -> Option<String> {
    let digits = column
        .strip_prefix('t')
        .or_else(|| column.strip_prefix('n'))?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!(
        "CREATE INDEX IF NOT EXISTS attribute_rows_{column} ON attribute_rows \
         (tenant, owner, {column}) WHERE {column} IS NOT NULL"
    ))
}
