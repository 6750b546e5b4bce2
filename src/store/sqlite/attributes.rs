//! `AttributeStore` for `SqliteStore`: one row per (tenant, user, attribute) with a numeric key, names with their owner under the per-tenant cap, import generations, segmentation as parameterised SQL.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, ToSql, params, params_from_iter};

use super::{Db, SqliteStore};
use crate::Result;
use crate::attributes::sql::{self, Dialect, Param};
use crate::attributes::{
    AttributeName, AttributeOwner, AttributePage, AttributeRecord, AttributeStore, Attributes,
    Filter, ImportMode, ImportRun, RemovedAttributes, UpsertStats, check_attribute_cap,
    check_import_cap, check_owners,
};
use crate::tenant::TenantId;

/// One user's merged values of a batch.
type UserValues = (String, Vec<(String, String, Option<Vec<u8>>)>);

/// Groups a batch by user (first-seen order); later records win per attribute.
/// Numeric keys are computed here, off the writer thread.
fn group(batch: &[AttributeRecord]) -> (Vec<UserValues>, BTreeSet<String>) {
    let (merged, names) = sql::merge_by_user(batch);
    let users = merged
        .into_iter()
        .map(|(u, attrs)| {
            let values = attrs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned(), sql::num_key(v)))
                .collect();
            (u.to_owned(), values)
        })
        .collect();
    (users, names)
}

fn owners(conn: &Connection, tenant: &str) -> Db<BTreeMap<String, AttributeOwner>> {
    let mut stmt =
        conn.prepare_cached("SELECT name, owner FROM attribute_names WHERE tenant = ?1")?;
    let rows = stmt.query_map(params![tenant], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (name, owner) = row?;
        out.insert(name, AttributeOwner::from_stored(&owner));
    }
    Ok(out)
}

/// Values per multi-row insert statement.
const VALUES_CHUNK: usize = 100;

fn insert_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|i| {
            let p = 3 + 4 * i;
            format!("(?1, ?{p}, ?{}, ?{}, ?{}, ?2)", p + 1, p + 2, p + 3)
        })
        .collect();
    format!(
        "INSERT INTO attribute_values (tenant, user_id, name, value, num, generation) VALUES {} \
         ON CONFLICT (tenant, user_id, name) DO UPDATE SET \
           value = excluded.value, num = excluded.num, generation = excluded.generation",
        values.join(", ")
    )
}

/// Writes grouped values of `writer` stamped `generation`, after the
/// ownership and cap checks (in the write transaction).
fn write_values(
    conn: &Connection,
    tenant: &str,
    writer: &AttributeOwner,
    generation: i64,
    users: &[UserValues],
    names: &BTreeSet<String>,
    cap: usize,
) -> Db<UpsertStats> {
    let owners = owners(conn, tenant)?;
    check_owners(&owners, writer, names.iter().map(String::as_str))?;
    let registered: BTreeSet<String> = owners.keys().cloned().collect();
    let batch = AttributeRecord {
        user_id: String::new(),
        attributes: names.iter().map(|n| (n.clone(), String::new())).collect(),
    };
    // Fails before anything is written.
    let new_names = check_attribute_cap(&registered, [&batch], cap)?;
    let mut stats = UpsertStats {
        new_attribute_names: new_names.len(),
        ..UpsertStats::default()
    };
    let mut register = conn.prepare_cached(
        "INSERT INTO attribute_names (tenant, name, owner) VALUES (?1, ?2, ?3) \
         ON CONFLICT (tenant, name) DO UPDATE SET owner = excluded.owner",
    )?;
    for name in &new_names {
        register.execute(params![tenant, name, writer.as_stored()])?;
    }
    let mut exists = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM attribute_values WHERE tenant = ?1 AND user_id = ?2)",
    )?;
    // A user exists while it has an attribute.
    for (user, _) in users.iter().filter(|(_, values)| !values.is_empty()) {
        if exists.query_row(params![tenant, user], |r| r.get::<_, bool>(0))? {
            stats.users_updated += 1;
        } else {
            stats.users_created += 1;
        }
    }
    let flat: Vec<(&str, &str, &str, Option<&[u8]>)> = users
        .iter()
        .flat_map(|(u, values)| {
            values
                .iter()
                .map(move |(n, v, k)| (u.as_str(), n.as_str(), v.as_str(), k.as_deref()))
        })
        .collect();
    let mut chunks = flat.chunks_exact(VALUES_CHUNK);
    if chunks.len() > 0 {
        let mut insert = conn.prepare_cached(&insert_sql(VALUES_CHUNK))?;
        for chunk in &mut chunks {
            let mut values: Vec<&dyn ToSql> = Vec::with_capacity(2 + 4 * chunk.len());
            values.push(&tenant);
            values.push(&generation);
            for (u, n, v, k) in chunk {
                values.extend([u as &dyn ToSql, n, v, k]);
            }
            insert.execute(params_from_iter(values))?;
        }
    }
    let mut insert = conn.prepare_cached(&insert_sql(1))?;
    for (u, n, v, k) in chunks.remainder() {
        insert.execute(params![tenant, generation, u, n, v, k])?;
    }
    Ok(stats)
}

fn begin(
    conn: &Connection,
    tenant: &str,
    integration: &str,
    names: &[String],
    cap: usize,
) -> Db<i64> {
    let owners = owners(conn, tenant)?;
    let writer = AttributeOwner::Integration(integration.to_owned());
    check_owners(&owners, &writer, names.iter().map(String::as_str))?;
    check_import_cap(&owners, integration, names, cap)?;
    let mut register = conn.prepare_cached(
        "INSERT INTO attribute_names (tenant, name, owner) VALUES (?1, ?2, ?3) \
         ON CONFLICT (tenant, name) DO UPDATE SET owner = excluded.owner",
    )?;
    for name in names {
        register.execute(params![tenant, name, integration])?;
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

/// Deletes every value of `name` and its registration.
fn drop_name(conn: &Connection, tenant: &str, name: &str) -> Db<u64> {
    let values = conn
        .prepare_cached("DELETE FROM attribute_values WHERE tenant = ?1 AND name = ?2")?
        .execute(params![tenant, name])?;
    conn.prepare_cached("DELETE FROM attribute_names WHERE tenant = ?1 AND name = ?2")?
        .execute(params![tenant, name])?;
    Ok(values as u64)
}

/// Frees the names `integration` owns except `keep`.
fn release(
    conn: &Connection,
    tenant: &str,
    integration: &str,
    keep: &[String],
) -> Db<RemovedAttributes> {
    let mut removed = RemovedAttributes::default();
    let owned: Vec<String> = conn
        .prepare_cached("SELECT name FROM attribute_names WHERE tenant = ?1 AND owner = ?2")?
        .query_map(params![tenant, integration], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for name in owned.iter().filter(|n| !keep.contains(n)) {
        removed.values += drop_name(conn, tenant, name)?;
        removed.names += 1;
    }
    Ok(removed)
}

fn finish(conn: &Connection, tenant: &str, run: &ImportRun) -> Db<RemovedAttributes> {
    let mut removed = release(conn, tenant, &run.integration, &run.names)?;
    if run.mode == ImportMode::Snapshot {
        let owned: Vec<String> = conn
            .prepare_cached("SELECT name FROM attribute_names WHERE tenant = ?1 AND owner = ?2")?
            .query_map(params![tenant, run.integration], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut stale = conn.prepare_cached(
            "DELETE FROM attribute_values WHERE tenant = ?1 AND name = ?2 AND generation < ?3",
        )?;
        for name in &owned {
            removed.values += stale.execute(params![tenant, name, run.generation])? as u64;
        }
    }
    Ok(removed)
}

fn to_sql(params: &[Param]) -> Vec<&dyn ToSql> {
    params
        .iter()
        .map(|p| match p {
            Param::Text(s) => s as &dyn ToSql,
            Param::Blob(b) => b as &dyn ToSql,
            Param::Int(i) => i as &dyn ToSql,
        })
        .collect()
}

/// Every matching user, sorted, through the plan (and the Rust check when it
/// is not exact).
fn matching(conn: &Connection, tenant: &str, filter: &Filter) -> Db<Vec<String>> {
    let plan = sql::plan(Dialect::Sqlite, tenant, filter);
    if plan.exact {
        let query = format!("SELECT d.user_id {} ORDER BY d.user_id", plan.from_where);
        let mut stmt = conn.prepare(&query)?;
        let rows = stmt.query_map(params_from_iter(to_sql(&plan.builder.params)), |r| r.get(0))?;
        return Ok(rows.collect::<rusqlite::Result<_>>()?);
    }
    let mut b = plan.builder.clone();
    let names: Vec<String> = plan
        .referenced
        .iter()
        .map(|n| b.bind(Param::Text(n.clone())))
        .collect();
    let query = format!(
        "SELECT c.user_id, a.name, a.value FROM (SELECT d.user_id AS user_id {}) c \
         LEFT JOIN attribute_values a ON a.tenant = ?1 AND a.user_id = c.user_id \
         AND a.name IN ({}) ORDER BY c.user_id",
        plan.from_where,
        names.join(", ")
    );
    let mut stmt = conn.prepare(&query)?;
    let rows = stmt
        .query_map(params_from_iter(to_sql(&b.params)), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(sql::residual(filter, rows))
}

fn page(
    conn: &Connection,
    tenant: &str,
    filter: &Filter,
    after: Option<&str>,
    limit: usize,
) -> Db<AttributePage> {
    let plan = sql::plan(Dialect::Sqlite, tenant, filter);
    if !plan.exact {
        return Ok(sql::page_of(matching(conn, tenant, filter)?, after, limit));
    }
    // One read transaction: the count and the page see the same data.
    let own_tx = conn.is_autocommit();
    if own_tx {
        conn.execute_batch("BEGIN")?;
    }
    let result = (|| {
        let total: i64 = conn
            .prepare(&format!("SELECT count(*) {}", plan.from_where))?
            .query_row(params_from_iter(to_sql(&plan.builder.params)), |r| r.get(0))?;
        let limit = sql::page_limit(limit);
        let mut b = plan.builder.clone();
        let after_sql = match after {
            Some(a) => format!(" AND d.user_id > {}", b.bind(Param::Text(a.to_owned()))),
            None => String::new(),
        };
        let lim = b.bind(Param::Int(i64::try_from(limit + 1).unwrap_or(i64::MAX)));
        let query = format!(
            "SELECT d.user_id {}{after_sql} ORDER BY d.user_id LIMIT {lim}",
            plan.from_where
        );
        let users: Vec<String> = conn
            .prepare(&query)?
            .query_map(params_from_iter(to_sql(&b.params)), |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok::<_, super::DbError>(sql::page_from_rows(users, total.max(0) as u64, limit))
    })();
    if own_tx {
        conn.execute_batch("COMMIT")?;
    }
    result
}

#[async_trait]
impl AttributeStore for SqliteStore {
    async fn upsert(&self, tenant: &TenantId, batch: &[AttributeRecord]) -> Result<UpsertStats> {
        let (users, names) = group(batch);
        let cap = self.attribute_cap;
        let tenant = tenant.as_str().to_owned();
        self.write_long("upsert", move |conn| {
            write_values(conn, &tenant, &AttributeOwner::Api, 0, &users, &names, cap)
        })
        .await
    }

    async fn begin_import(
        &self,
        tenant: &TenantId,
        integration: &str,
        mode: ImportMode,
        names: &[String],
    ) -> Result<ImportRun> {
        let cap = self.attribute_cap;
        let t = tenant.as_str().to_owned();
        let i = integration.to_owned();
        let n = names.to_vec();
        let generation = self
            .write("begin import", move |conn| begin(conn, &t, &i, &n, cap))
            .await?;
        Ok(ImportRun {
            integration: integration.to_owned(),
            generation,
            mode,
            names: names.to_vec(),
        })
    }

    async fn write_import(
        &self,
        tenant: &TenantId,
        run: &ImportRun,
        batch: &[AttributeRecord],
    ) -> Result<UpsertStats> {
        let (users, names) = group(batch);
        if let Some(extra) = names.iter().find(|n| !run.names.contains(n)) {
            return Err(crate::Error::invalid_input(format!(
                "the attribute {extra:?} is not among the names the import run of {:?} maps",
                run.integration
            )));
        }
        let cap = self.attribute_cap;
        let tenant = tenant.as_str().to_owned();
        let writer = AttributeOwner::Integration(run.integration.clone());
        let generation = run.generation;
        self.write_long("write import", move |conn| {
            write_values(conn, &tenant, &writer, generation, &users, &names, cap)
        })
        .await
    }

    async fn finish_import(&self, tenant: &TenantId, run: &ImportRun) -> Result<RemovedAttributes> {
        let tenant = tenant.as_str().to_owned();
        let run = run.clone();
        self.write_long("finish import", move |conn| finish(conn, &tenant, &run))
            .await
    }

    async fn release_names(
        &self,
        tenant: &TenantId,
        integration: &str,
        keep: &[String],
    ) -> Result<RemovedAttributes> {
        let tenant = tenant.as_str().to_owned();
        let integration = integration.to_owned();
        let keep = keep.to_vec();
        self.write_long("release attribute names", move |conn| {
            release(conn, &tenant, &integration, &keep)
        })
        .await
    }

    async fn get(&self, tenant: &TenantId, user_id: &str) -> Result<Option<Attributes>> {
        let tenant = tenant.as_str().to_owned();
        let user_id = user_id.to_owned();
        self.read("get", move |conn| {
            let attrs: Attributes = conn
                .prepare_cached(
                    "SELECT name, value FROM attribute_values WHERE tenant = ?1 AND user_id = ?2",
                )?
                .query_map(params![tenant, user_id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok((!attrs.is_empty()).then_some(attrs))
        })
        .await
    }

    async fn delete_user(&self, tenant: &TenantId, user_id: &str) -> Result<u64> {
        let tenant = tenant.as_str().to_owned();
        let user_id = user_id.to_owned();
        self.write("delete user attributes", move |conn| {
            Ok(conn
                .prepare_cached("DELETE FROM attribute_values WHERE tenant = ?1 AND user_id = ?2")?
                .execute(params![tenant, user_id])? as u64)
        })
        .await
    }

    async fn delete_value(&self, tenant: &TenantId, user_id: &str, name: &str) -> Result<bool> {
        let tenant = tenant.as_str().to_owned();
        let user_id = user_id.to_owned();
        let name = name.to_owned();
        self.write("delete attribute", move |conn| {
            Ok(conn
                .prepare_cached(
                    "DELETE FROM attribute_values WHERE tenant = ?1 AND user_id = ?2 AND name = ?3",
                )?
                .execute(params![tenant, user_id, name])?
                > 0)
        })
        .await
    }

    async fn delete_name(&self, tenant: &TenantId, name: &str) -> Result<RemovedAttributes> {
        let tenant = tenant.as_str().to_owned();
        let name = name.to_owned();
        self.write_long("delete attribute name", move |conn| {
            let registered = conn
                .prepare_cached("SELECT 1 FROM attribute_names WHERE tenant = ?1 AND name = ?2")?
                .query_row(params![tenant, name], |_| Ok(()))
                .optional()?
                .is_some();
            Ok(RemovedAttributes {
                values: drop_name(conn, &tenant, &name)?,
                names: u64::from(registered),
            })
        })
        .await
    }

    async fn names(&self, tenant: &TenantId) -> Result<Vec<AttributeName>> {
        let tenant = tenant.as_str().to_owned();
        self.read("attribute names", move |conn| {
            Ok(owners(conn, &tenant)?
                .into_iter()
                .map(|(name, owner)| AttributeName { name, owner })
                .collect())
        })
        .await
    }

    async fn query(&self, tenant: &TenantId, filter: &Filter) -> Result<Vec<String>> {
        let tenant = tenant.as_str().to_owned();
        let filter = filter.clone();
        self.read("query", move |conn| matching(conn, &tenant, &filter))
            .await
    }

    async fn query_page(
        &self,
        tenant: &TenantId,
        filter: &Filter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<AttributePage> {
        let tenant = tenant.as_str().to_owned();
        let filter = filter.clone();
        let after = after.map(str::to_owned);
        self.read("query page", move |conn| {
            page(conn, &tenant, &filter, after.as_deref(), limit)
        })
        .await
    }
}

/// Deletes everything `integration` owns (its names, their values, its
/// generation counter stays so a re-created integration keeps counting up):
/// called in the transaction that deletes the integration.
pub(super) fn delete_integration_attributes(
    conn: &Connection,
    tenant: &str,
    integration: &str,
) -> Db<()> {
    release(conn, tenant, integration, &[])?;
    Ok(())
}
