//! `AttributeStore` for `SqliteStore`: values in one row per (tenant, user, owner) (see `attribute_rows`), segmentation as parameterised SQL over indexes built on first use.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, ToSql, params, params_from_iter};

use super::attribute_rows::{self as rows, Batch, Merge};
use super::{Db, SqliteStore};
use crate::Result;
use crate::attributes::sql::{self, Dialect, Layout, Param};
use crate::attributes::{
    AttributeBatch, AttributeName, AttributeOwner, AttributePage, AttributeRecord, AttributeStore,
    Attributes, Filter, ImportMode, ImportRun, RemovedAttributes, UpsertStats,
};
use crate::tenant::TenantId;

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
    let regs = rows::registered(conn, tenant)?;
    let columns = rows::columns(&regs);
    let plan = sql::plan(Dialect::Sqlite, Layout::Rows(&columns), tenant, filter);
    if plan.exact {
        let query = format!("SELECT d.user_id {} ORDER BY d.user_id", plan.from_where);
        let mut stmt = conn.prepare(&query)?;
        let rows = stmt.query_map(params_from_iter(to_sql(&plan.builder.params)), |r| r.get(0))?;
        return Ok(rows.collect::<rusqlite::Result<_>>()?);
    }
    let query = format!(
        "SELECT c.user_id, a.owner, a.vals FROM (SELECT d.user_id AS user_id {}) c \
         LEFT JOIN attribute_rows a ON a.tenant = ?1 AND a.user_id = c.user_id ORDER BY c.user_id",
        plan.from_where
    );
    let mut stmt = conn.prepare(&query)?;
    let mut result = stmt.query(params_from_iter(to_sql(&plan.builder.params)))?;
    let mut triples = Vec::new();
    while let Some(row) = result.next()? {
        let user: String = row.get(0)?;
        let owner: Option<String> = row.get(1)?;
        let vals: Option<Vec<u8>> = row.get(2)?;
        let mut any = false;
        if let (Some(owner), Some(vals)) = (owner, vals) {
            for (name, text) in rows::decode(&regs, &owner, &vals) {
                if plan.referenced.iter().any(|r| r == name) {
                    triples.push((user.clone(), Some(name.to_owned()), Some(text.to_owned())));
                    any = true;
                }
            }
        }
        if !any {
            triples.push((user, None, None));
        }
    }
    Ok(sql::residual(filter, triples))
}

fn page(
    conn: &Connection,
    tenant: &str,
    filter: &Filter,
    after: Option<&str>,
    limit: usize,
) -> Db<AttributePage> {
    let regs = rows::registered(conn, tenant)?;
    let columns = rows::columns(&regs);
    let plan = sql::plan(Dialect::Sqlite, Layout::Rows(&columns), tenant, filter);
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
        let (query, b) = plan.page_query(after, limit);
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

impl SqliteStore {
    /// Writes `batch` as `writer`'s values stamped `generation` on the writer
    /// thread (`slot_names`: the names a [`Merge::Replace`] write replaces).
    #[allow(clippy::too_many_arguments)]
    async fn write_batch(
        &self,
        what: &'static str,
        tenant: &TenantId,
        writer: AttributeOwner,
        generation: i64,
        batch: &AttributeBatch,
        merge: Merge,
        slot_names: Vec<String>,
    ) -> Result<UpsertStats> {
        let users = Batch::new(batch.clone())?;
        let cap = self.attribute_cap;
        let tenant = tenant.as_str().to_owned();
        self.write_long(what, move |conn| {
            rows::write_values(
                conn,
                &tenant,
                &writer,
                generation,
                &users,
                cap,
                merge,
                &slot_names,
            )
            // The batch is freed by the caller's thread, which allocated it.
            .map(|stats| (stats, users))
        })
        .await
        .map(|(stats, _users)| stats)
    }

    /// Builds the indexes the plan of `filter` drives through, the first time
    /// a filter needs them (about a second per million values; later writes
    /// maintain them).
    async fn index_for(&self, tenant: &TenantId, filter: &Filter) -> Result<()> {
        let t = tenant.as_str().to_owned();
        let f = filter.clone();
        let needed: Vec<String> = self
            .read("attribute columns", move |conn| {
                let columns = rows::columns(&rows::registered(conn, &t)?);
                Ok(sql::plan(Dialect::Sqlite, Layout::Rows(&columns), &t, &f).indexed)
            })
            .await?;
        let missing: Vec<String> = {
            let known = super::lock_set(&self.inner.attribute_indexes);
            needed.into_iter().filter(|c| !known.contains(c)).collect()
        };
        for column in missing {
            let Some(ddl) = rows::index_sql(&column) else {
                continue;
            };
            // Statistics from a sample let the planner choose between the new
            // index and the user order (a page of a common value).
            self.write_long("index attributes", move |conn| {
                Ok(conn.execute_batch(&format!(
                    "{ddl}; PRAGMA analysis_limit = 1000; ANALYZE attribute_rows;"
                ))?)
            })
            .await?;
            super::lock_set(&self.inner.attribute_indexes).insert(column);
        }
        Ok(())
    }
}

#[async_trait]
impl AttributeStore for SqliteStore {
    async fn upsert(&self, tenant: &TenantId, batch: &[AttributeRecord]) -> Result<UpsertStats> {
        self.upsert_batch(tenant, &AttributeBatch::from_records(batch)?)
            .await
    }

    async fn upsert_batch(&self, tenant: &TenantId, batch: &AttributeBatch) -> Result<UpsertStats> {
        self.write_batch(
            "upsert",
            tenant,
            AttributeOwner::Api,
            0,
            batch,
            Merge::Keep,
            Vec::new(),
        )
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
            .write("begin import", move |conn| {
                rows::begin(conn, &t, &i, &n, cap)
            })
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
        self.write_import_batch(tenant, run, &AttributeBatch::from_records(batch)?)
            .await
    }

    async fn write_import_batch(
        &self,
        tenant: &TenantId,
        run: &ImportRun,
        batch: &AttributeBatch,
    ) -> Result<UpsertStats> {
        if let Some(extra) = batch.names().find(|n| !run.names.iter().any(|r| r == n)) {
            return Err(crate::Error::invalid_input(format!(
                "the attribute {extra:?} is not among the names the import run of {:?} maps",
                run.integration
            )));
        }
        let merge = match run.mode {
            ImportMode::Snapshot => Merge::Replace,
            ImportMode::UpsertOnly => Merge::Keep,
        };
        self.write_batch(
            "write import",
            tenant,
            AttributeOwner::Integration(run.integration.clone()),
            run.generation,
            batch,
            merge,
            run.names.clone(),
        )
        .await
    }

    async fn finish_import(&self, tenant: &TenantId, run: &ImportRun) -> Result<RemovedAttributes> {
        let tenant = tenant.as_str().to_owned();
        let run = run.clone();
        self.write_long("finish import", move |conn| {
            rows::finish(conn, &tenant, &run)
        })
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
            rows::release(conn, &tenant, &integration, &keep)
        })
        .await
    }

    async fn get(&self, tenant: &TenantId, user_id: &str) -> Result<Option<Attributes>> {
        let tenant = tenant.as_str().to_owned();
        let user_id = user_id.to_owned();
        self.read("get", move |conn| {
            let attrs: Attributes = rows::user_values(conn, &tenant, &user_id)?
                .into_iter()
                .collect();
            Ok((!attrs.is_empty()).then_some(attrs))
        })
        .await
    }

    async fn delete_user(&self, tenant: &TenantId, user_id: &str) -> Result<u64> {
        let tenant = tenant.as_str().to_owned();
        let user_id = user_id.to_owned();
        self.write("delete user attributes", move |conn| {
            rows::delete_user(conn, &tenant, &user_id)
        })
        .await
    }

    async fn delete_value(&self, tenant: &TenantId, user_id: &str, name: &str) -> Result<bool> {
        let tenant = tenant.as_str().to_owned();
        let user_id = user_id.to_owned();
        let name = name.to_owned();
        self.write("delete attribute", move |conn| {
            rows::delete_value(conn, &tenant, &user_id, &name)
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
                values: rows::drop_name(conn, &tenant, &name)?,
                names: u64::from(registered),
            })
        })
        .await
    }

    async fn names(&self, tenant: &TenantId) -> Result<Vec<AttributeName>> {
        let tenant = tenant.as_str().to_owned();
        self.read("attribute names", move |conn| {
            Ok(rows::owners(&rows::registered(conn, &tenant)?)
                .into_iter()
                .map(|(name, owner)| AttributeName { name, owner })
                .collect())
        })
        .await
    }

    async fn query(&self, tenant: &TenantId, filter: &Filter) -> Result<Vec<String>> {
        self.index_for(tenant, filter).await?;
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
        self.index_for(tenant, filter).await?;
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
    rows::release(conn, tenant, integration, &[])?;
    Ok(())
}
