//! `AttributeStore` for `SqliteStore`: users' attributes per tenant, the per-tenant cap checked in the write transaction, SQL pre-filtered segmentation.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::{Db, SqliteStore, from_json, to_json};
use crate::Result;
use crate::attributes::{
    AttributeRecord, AttributeStore, Attributes, Filter, UpsertStats, check_attribute_cap,
};
use crate::tenant::TenantId;

fn upsert_rows(
    conn: &Connection,
    tenant: &str,
    users: &[(String, String)],
    names: &AttributeRecord,
    cap: usize,
) -> Db<UpsertStats> {
    let mut stats = UpsertStats::default();
    let registered: BTreeSet<String> = conn
        .prepare_cached("SELECT name FROM attribute_names WHERE tenant = ?1")?
        .query_map(params![tenant], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    // Fails before anything is written; in the write transaction, so two
    // concurrent upserts cannot both pass the cap.
    let new_names = check_attribute_cap(&registered, [names], cap)?;
    stats.new_attribute_names = new_names.len();
    let mut register = conn
        .prepare_cached("INSERT OR IGNORE INTO attribute_names (tenant, name) VALUES (?1, ?2)")?;
    for name in &new_names {
        register.execute(params![tenant, name])?;
    }
    // Users are distinct within `users`, so many fit in one statement: a chunk of
    // rows per INSERT amortises statement overhead over the batch.
    let mut chunks = users.chunks_exact(UPSERT_CHUNK);
    let mut tally = |updates: i64| {
        if updates == 0 {
            stats.users_created += 1;
        } else {
            stats.users_updated += 1;
        }
    };
    if chunks.len() > 0 {
        let mut upsert = conn.prepare_cached(&upsert_sql(UPSERT_CHUNK))?;
        for chunk in &mut chunks {
            let values = std::iter::once(&tenant as &dyn rusqlite::ToSql).chain(
                chunk
                    .iter()
                    .flat_map(|(u, j)| [u as &dyn rusqlite::ToSql, j as &dyn rusqlite::ToSql]),
            );
            let mut rows = upsert.query(params_from_iter(values))?;
            while let Some(row) = rows.next()? {
                tally(row.get(0)?);
            }
        }
    }
    let mut upsert = conn.prepare_cached(&upsert_sql(1))?;
    for (user_id, json) in chunks.remainder() {
        tally(upsert.query_row(params![tenant, user_id, json], |r| r.get(0))?);
    }
    Ok(stats)
}

/// Rows per multi-row attribute upsert statement.
const UPSERT_CHUNK: usize = 64;

/// `INSERT … VALUES (?1, ?, ?), … ON CONFLICT … RETURNING updates` for `rows`
/// users of the tenant `?1`.
fn upsert_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|i| format!("(?1, ?{}, ?{})", 2 * i + 2, 2 * i + 3))
        .collect();
    format!(
        "INSERT INTO attributes (tenant, user_id, attrs) VALUES {} \
         ON CONFLICT (tenant, user_id) DO UPDATE SET \
           attrs = json_patch(attrs, excluded.attrs), updates = updates + 1 \
         RETURNING updates",
        values.join(", ")
    )
}

/// A JSON path selecting the top-level key `name`, or `None` if the name cannot be
/// quoted in SQLite's path syntax (the caller then skips SQL pre-filtering).
fn json_path(name: &str) -> Option<String> {
    if name.is_empty() || name.contains(['"', '\\']) || name.chars().any(char::is_control) {
        return None;
    }
    Some(format!("$.\"{name}\""))
}

/// Binds `value` as the next parameter; returns its placeholder.
fn bind(params: &mut Vec<String>, value: String) -> String {
    params.push(value);
    format!("?{}", params.len())
}

/// "attribute `attr` is present".
fn present(params: &mut Vec<String>, attr: &str) -> Option<String> {
    let path = bind(params, json_path(attr)?);
    Some(format!("json_type(attrs, {path}) IS NOT NULL"))
}

fn is_number(s: &str) -> bool {
    s.trim().parse::<f64>().is_ok()
}

/// Maximum bound parameters in a pre-filter (SQLite allows 32766).
const MAX_FILTER_PARAMS: usize = 1000;

/// Translates `filter` into a SQL condition on `attrs` that every matching row
/// satisfies (a necessary condition, possibly weaker); `None` means "no
/// condition". Rows passing it are checked exactly with [`Filter::matches`].
fn prefilter(filter: &Filter, params: &mut Vec<String>) -> Option<String> {
    if params.len() > MAX_FILTER_PARAMS {
        return None;
    }
    match filter {
        Filter::Eq { attr, value } => {
            if is_number(value) {
                present(params, attr)
            } else {
                // A non-numeric value only equals the identical text.
                let path = json_path(attr)?;
                let p = bind(params, path);
                let v = bind(params, value.clone());
                Some(format!("json_extract(attrs, {p}) = {v}"))
            }
        }
        Filter::In { attr, values } => {
            if values.is_empty() {
                Some("0".to_owned())
            } else if values.iter().any(|v| is_number(v)) {
                present(params, attr)
            } else {
                let path = json_path(attr)?;
                let p = bind(params, path);
                let list: Vec<String> = values.iter().map(|v| bind(params, v.clone())).collect();
                Some(format!("json_extract(attrs, {p}) IN ({})", list.join(", ")))
            }
        }
        Filter::Ne { attr, .. }
        | Filter::Contains { attr, .. }
        | Filter::Cmp { attr, .. }
        | Filter::Exists { attr } => present(params, attr),
        Filter::And(filters) => {
            let parts: Vec<String> = filters
                .iter()
                .filter_map(|f| prefilter(f, params))
                .collect();
            if parts.is_empty() {
                None
            } else {
                Some(format!("({})", parts.join(" AND ")))
            }
        }
        Filter::Or(filters) => {
            if filters.is_empty() {
                return Some("0".to_owned());
            }
            let mut parts = Vec::with_capacity(filters.len());
            for f in filters {
                parts.push(prefilter(f, params)?);
            }
            Some(format!("({})", parts.join(" OR ")))
        }
        Filter::Not(_) => None,
    }
}

/// The attribute names `filter` looks at.
fn referenced<'f>(filter: &'f Filter, names: &mut BTreeSet<&'f str>) {
    match filter {
        Filter::Eq { attr, .. }
        | Filter::Ne { attr, .. }
        | Filter::In { attr, .. }
        | Filter::Contains { attr, .. }
        | Filter::Cmp { attr, .. }
        | Filter::Exists { attr } => {
            names.insert(attr);
        }
        Filter::And(filters) | Filter::Or(filters) => {
            for f in filters {
                referenced(f, names);
            }
        }
        Filter::Not(f) => referenced(f, names),
    }
}

/// Most attributes extracted in SQL for a query; beyond, whole rows are decoded.
const MAX_EXTRACTED: usize = 32;

fn query_rows(conn: &Connection, tenant: &str, filter: &Filter) -> Db<Vec<String>> {
    // ?1 is the tenant.
    let mut params = vec![tenant.to_owned()];
    let condition = match prefilter(filter, &mut params) {
        Some(cond) if params.len() <= MAX_FILTER_PARAMS => format!("AND {cond}"),
        _ => {
            params.truncate(1);
            String::new()
        }
    };
    // Only the attributes the filter looks at are read (SQLite extracts them),
    // unless a name cannot be written as a JSON path.
    let mut names = BTreeSet::new();
    referenced(filter, &mut names);
    let paths: Option<Vec<String>> = if names.len() <= MAX_EXTRACTED {
        names.iter().map(|n| json_path(n)).collect()
    } else {
        None
    };
    let columns = match &paths {
        Some(paths) => paths
            .iter()
            .map(|p| format!(", json_extract(attrs, {})", bind(&mut params, p.clone())))
            .collect::<String>(),
        None => ", attrs".to_owned(),
    };
    let sql = format!(
        "SELECT user_id{columns} FROM attributes WHERE tenant = ?1 {condition} ORDER BY user_id"
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(params_from_iter(params.iter()))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let attrs: Attributes = if paths.is_some() {
            let mut attrs = Attributes::new();
            for (i, name) in names.iter().enumerate() {
                if let Some(value) = row.get::<_, Option<String>>(i + 1)? {
                    attrs.insert((*name).to_owned(), value);
                }
            }
            attrs
        } else {
            from_json(row.get_ref(1)?.as_str()?)?
        };
        if filter.matches(&attrs) {
            out.push(row.get(0)?);
        }
    }
    Ok(out)
}

#[async_trait]
impl AttributeStore for SqliteStore {
    async fn upsert(&self, tenant: &TenantId, batch: &[AttributeRecord]) -> Result<UpsertStats> {
        // Group the records by user (first-seen order); JSON is encoded here, so
        // only SQL runs on the writer thread.
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
        // Per user: the first record, and any later ones.
        let mut groups: Vec<(&AttributeRecord, Vec<&Attributes>)> = Vec::with_capacity(batch.len());
        let mut names: HashSet<&str> = HashSet::new();
        for record in batch {
            names.extend(record.attributes.keys().map(String::as_str));
            match index.get(record.user_id.as_str()) {
                Some(&i) => groups[i].1.push(&record.attributes),
                None => {
                    index.insert(&record.user_id, groups.len());
                    groups.push((record, Vec::new()));
                }
            }
        }
        drop(index);
        let users: Vec<(String, String)> = groups
            .iter()
            .map(|(first, later)| {
                let json = if later.is_empty() {
                    to_json(&first.attributes)?
                } else {
                    // Later records for the same user win, attribute by attribute.
                    let merged: BTreeMap<&str, &str> = std::iter::once(&first.attributes)
                        .chain(later.iter().copied())
                        .flat_map(|a| a.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                        .collect();
                    to_json(&merged)?
                };
                Ok((first.user_id.clone(), json))
            })
            .collect::<Result<_>>()?;
        // Every name in the batch, as one record: all the cap check needs.
        let names = AttributeRecord {
            user_id: String::new(),
            attributes: names
                .into_iter()
                .map(|k| (k.to_owned(), String::new()))
                .collect(),
        };
        let cap = self.attribute_cap;
        let tenant = tenant.as_str().to_owned();
        self.write_long("upsert", move |conn| {
            upsert_rows(conn, &tenant, &users, &names, cap)
        })
        .await
    }

    async fn get(&self, tenant: &TenantId, user_id: &str) -> Result<Option<Attributes>> {
        let tenant = tenant.as_str().to_owned();
        let user_id = user_id.to_owned();
        self.read("get", move |conn| {
            let json: Option<String> = conn
                .prepare_cached("SELECT attrs FROM attributes WHERE tenant = ?1 AND user_id = ?2")?
                .query_row(params![tenant, user_id], |r| r.get(0))
                .optional()?;
            json.as_deref().map(from_json).transpose()
        })
        .await
    }

    async fn query(&self, tenant: &TenantId, filter: &Filter) -> Result<Vec<String>> {
        let tenant = tenant.as_str().to_owned();
        let filter = filter.clone();
        self.read("query", move |conn| query_rows(conn, &tenant, &filter))
            .await
    }
}
