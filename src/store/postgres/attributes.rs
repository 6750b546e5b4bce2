//! `AttributeStore` for `PostgresStore`: one row per (tenant, user, attribute) with a numeric key, names with their owner under the per-tenant cap (checked under a row lock), import generations, segmentation as parameterised SQL.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::{PostgresStore, db};
use crate::Result;
use crate::attributes::sql::{self, Dialect, Layout, Param};
use crate::attributes::{
    AttributeName, AttributeOwner, AttributePage, AttributeRecord, AttributeStore, Attributes,
    Filter, ImportMode, ImportRun, RemovedAttributes, UpsertStats, check_attribute_cap,
    check_import_cap, check_owners,
};
use crate::tenant::TenantId;

/// Values per insert statement.
const VALUES_CHUNK: usize = 2000;

/// A batch grouped by user (later records win per attribute), flattened into
/// columns, with its distinct users and names.
struct Grouped {
    users: Vec<String>,
    names: BTreeSet<String>,
    u: Vec<String>,
    n: Vec<String>,
    v: Vec<String>,
    k: Vec<Option<Vec<u8>>>,
}

fn group(batch: &[AttributeRecord]) -> Grouped {
    let (merged, names) = sql::merge_by_user(batch);
    let mut g = Grouped {
        // A user exists while it has an attribute.
        users: merged
            .iter()
            .filter(|(_, attrs)| !attrs.is_empty())
            .map(|(u, _)| (*u).to_owned())
            .collect(),
        names,
        u: Vec::new(),
        n: Vec::new(),
        v: Vec::new(),
        k: Vec::new(),
    };
    for (user, attrs) in merged {
        for (name, value) in attrs {
            g.u.push(user.to_owned());
            g.n.push(name.to_owned());
            g.v.push(value.to_owned());
            g.k.push(sql::num_key(value));
        }
    }
    g
}

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Locks the tenant's registry row (concurrent writers of one tenant, on any
/// replica, check names one after the other) and reads its names.
async fn lock_names(tx: &Tx<'_>, tenant: &str) -> Result<BTreeMap<String, AttributeOwner>> {
    tx.execute(
        "INSERT INTO attribute_tenants (tenant) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&tenant],
    )
    .await
    .map_err(db("attributes"))?;
    tx.execute(
        "SELECT tenant FROM attribute_tenants WHERE tenant = $1 FOR UPDATE",
        &[&tenant],
    )
    .await
    .map_err(db("attributes"))?;
    read_names(tx, tenant).await
}

async fn read_names<C: GenericClient + Sync>(
    client: &C,
    tenant: &str,
) -> Result<BTreeMap<String, AttributeOwner>> {
    Ok(client
        .query(
            "SELECT name, owner FROM attribute_names WHERE tenant = $1",
            &[&tenant],
        )
        .await
        .map_err(db("attributes"))?
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                AttributeOwner::from_stored(&r.get::<_, String>(1)),
            )
        })
        .collect())
}

async fn register(tx: &Tx<'_>, tenant: &str, names: &[String], owner: &str) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO attribute_names (tenant, name, owner) SELECT $1, unnest($2::text[]), $3 \
         ON CONFLICT (tenant, name) DO UPDATE SET owner = excluded.owner",
        &[&tenant, &names, &owner],
    )
    .await
    .map_err(db("attributes"))?;
    Ok(())
}

impl PostgresStore {
    async fn write_values(
        &self,
        tenant: &str,
        writer: &AttributeOwner,
        generation: i64,
        g: Grouped,
    ) -> Result<UpsertStats> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db("upsert"))?;
        let owners = lock_names(&tx, tenant).await?;
        check_owners(&owners, writer, g.names.iter().map(String::as_str))?;
        let registered: BTreeSet<String> = owners.keys().cloned().collect();
        let batch = AttributeRecord {
            user_id: String::new(),
            attributes: g.names.iter().map(|n| (n.clone(), String::new())).collect(),
        };
        let new_names = check_attribute_cap(&registered, [&batch], self.attribute_cap)?;
        register(&tx, tenant, &new_names, writer.as_stored()).await?;
        let existing = tx
            .query_one(
                "SELECT count(DISTINCT user_id) FROM attribute_values \
                 WHERE tenant = $1 AND user_id = ANY($2)",
                &[&tenant, &g.users],
            )
            .await
            .map_err(db("upsert"))?
            .get::<_, i64>(0);
        let existing = usize::try_from(existing).unwrap_or(0);
        let stats = UpsertStats {
            users_created: g.users.len().saturating_sub(existing),
            users_updated: existing.min(g.users.len()),
            new_attribute_names: new_names.len(),
        };
        let stmt = tx
            .prepare_cached(
                "INSERT INTO attribute_values AS a (tenant, user_id, name, value, num, generation) \
                 SELECT $1, x.u, x.n, x.v, x.k, $2 \
                 FROM unnest($3::text[], $4::text[], $5::text[], $6::bytea[]) AS x(u, n, v, k) \
                 ON CONFLICT (tenant, user_id, name) DO UPDATE SET \
                   value = excluded.value, num = excluded.num, generation = excluded.generation",
            )
            .await
            .map_err(db("upsert"))?;
        let mut start = 0;
        while start < g.u.len() {
            let end = (start + VALUES_CHUNK).min(g.u.len());
            tx.execute(
                &stmt,
                &[
                    &tenant,
                    &generation,
                    &&g.u[start..end],
                    &&g.n[start..end],
                    &&g.v[start..end],
                    &&g.k[start..end],
                ],
            )
            .await
            .map_err(db("upsert"))?;
            start = end;
        }
        tx.commit().await.map_err(db("upsert"))?;
        Ok(stats)
    }
}

/// Deletes every value of `names` and their registrations.
async fn drop_names(tx: &Tx<'_>, tenant: &str, names: &[String]) -> Result<u64> {
    if names.is_empty() {
        return Ok(0);
    }
    let values = tx
        .execute(
            "DELETE FROM attribute_values WHERE tenant = $1 AND name = ANY($2)",
            &[&tenant, &names],
        )
        .await
        .map_err(db("attributes"))?;
    tx.execute(
        "DELETE FROM attribute_names WHERE tenant = $1 AND name = ANY($2)",
        &[&tenant, &names],
    )
    .await
    .map_err(db("attributes"))?;
    Ok(values)
}

/// Frees the names `integration` owns except `keep`, in `tx`.
pub(super) async fn release_in(
    tx: &Tx<'_>,
    tenant: &str,
    integration: &str,
    keep: &[String],
) -> Result<RemovedAttributes> {
    let owners = lock_names(tx, tenant).await?;
    let freed: Vec<String> = owners
        .into_iter()
        .filter(|(n, o)| o.integration() == Some(integration) && !keep.contains(n))
        .map(|(n, _)| n)
        .collect();
    Ok(RemovedAttributes {
        values: drop_names(tx, tenant, &freed).await?,
        names: freed.len() as u64,
    })
}

fn to_sql(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| match p {
            Param::Text(s) => s as &(dyn ToSql + Sync),
            Param::Blob(b) => b as &(dyn ToSql + Sync),
            Param::Int(i) => i as &(dyn ToSql + Sync),
        })
        .collect()
}

async fn matching<C: GenericClient + Sync>(
    client: &C,
    tenant: &str,
    filter: &Filter,
) -> Result<Vec<String>> {
    let plan = sql::plan(Dialect::Postgres, Layout::Values, tenant, filter);
    if plan.exact {
        let query = format!("SELECT d.user_id {} ORDER BY d.user_id", plan.from_where);
        let rows = client
            .query(&query, &to_sql(&plan.builder.params))
            .await
            .map_err(db("query"))?;
        return Ok(rows.iter().map(|r| r.get(0)).collect());
    }
    let mut b = plan.builder.clone();
    let names = b.bind(Param::Text(String::new()));
    // The names as one text[] parameter: replace the placeholder's type.
    b.params.pop();
    let query = format!(
        "SELECT c.user_id, a.name, a.value FROM (SELECT d.user_id AS user_id {}) c \
         LEFT JOIN attribute_values a ON a.tenant = $1 AND a.user_id = c.user_id \
         AND a.name = ANY({names}::text[]) ORDER BY c.user_id",
        plan.from_where
    );
    let mut params = to_sql(&b.params);
    params.push(&plan.referenced);
    let rows = client.query(&query, &params).await.map_err(db("query"))?;
    Ok(sql::residual(
        filter,
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))),
    ))
}

#[async_trait]
impl AttributeStore for PostgresStore {
    async fn upsert(&self, tenant_id: &TenantId, batch: &[AttributeRecord]) -> Result<UpsertStats> {
        self.write_values(tenant_id.as_str(), &AttributeOwner::Api, 0, group(batch))
            .await
    }

    async fn begin_import(
        &self,
        tenant_id: &TenantId,
        integration: &str,
        mode: ImportMode,
        names: &[String],
    ) -> Result<ImportRun> {
        let t = tenant_id.as_str();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db("begin import"))?;
        let owners = lock_names(&tx, t).await?;
        let writer = AttributeOwner::Integration(integration.to_owned());
        check_owners(&owners, &writer, names.iter().map(String::as_str))?;
        check_import_cap(&owners, integration, names, self.attribute_cap)?;
        register(&tx, t, names, integration).await?;
        let generation: i64 = tx
            .query_one(
                "INSERT INTO attribute_generations AS g (tenant, integration, generation) \
                 VALUES ($1, $2, 1) ON CONFLICT (tenant, integration) \
                 DO UPDATE SET generation = g.generation + 1 RETURNING generation",
                &[&t, &integration],
            )
            .await
            .map_err(db("begin import"))?
            .get(0);
        tx.commit().await.map_err(db("begin import"))?;
        Ok(ImportRun {
            integration: integration.to_owned(),
            generation,
            mode,
            names: names.to_vec(),
        })
    }

    async fn write_import(
        &self,
        tenant_id: &TenantId,
        run: &ImportRun,
        batch: &[AttributeRecord],
    ) -> Result<UpsertStats> {
        let g = group(batch);
        if let Some(extra) = g.names.iter().find(|n| !run.names.contains(n)) {
            return Err(crate::Error::invalid_input(format!(
                "the attribute {extra:?} is not among the names the import run of {:?} maps",
                run.integration
            )));
        }
        let writer = AttributeOwner::Integration(run.integration.clone());
        self.write_values(tenant_id.as_str(), &writer, run.generation, g)
            .await
    }

    async fn finish_import(
        &self,
        tenant_id: &TenantId,
        run: &ImportRun,
    ) -> Result<RemovedAttributes> {
        let t = tenant_id.as_str();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db("finish import"))?;
        let mut removed = release_in(&tx, t, &run.integration, &run.names).await?;
        if run.mode == ImportMode::Snapshot {
            removed.values += tx
                .execute(
                    "DELETE FROM attribute_values WHERE tenant = $1 AND generation < $3 \
                     AND name IN (SELECT name FROM attribute_names WHERE tenant = $1 AND owner = $2)",
                    &[&t, &run.integration, &run.generation],
                )
                .await
                .map_err(db("finish import"))?;
        }
        tx.commit().await.map_err(db("finish import"))?;
        Ok(removed)
    }

    async fn release_names(
        &self,
        tenant_id: &TenantId,
        integration: &str,
        keep: &[String],
    ) -> Result<RemovedAttributes> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db("release names"))?;
        let removed = release_in(&tx, tenant_id.as_str(), integration, keep).await?;
        tx.commit().await.map_err(db("release names"))?;
        Ok(removed)
    }

    async fn get(&self, tenant_id: &TenantId, user_id: &str) -> Result<Option<Attributes>> {
        let client = self.client().await?;
        let attrs: Attributes = client
            .query(
                "SELECT name, value FROM attribute_values WHERE tenant = $1 AND user_id = $2",
                &[&tenant_id.as_str(), &user_id],
            )
            .await
            .map_err(db("get"))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok((!attrs.is_empty()).then_some(attrs))
    }

    async fn delete_user(&self, tenant_id: &TenantId, user_id: &str) -> Result<u64> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM attribute_values WHERE tenant = $1 AND user_id = $2",
                &[&tenant_id.as_str(), &user_id],
            )
            .await
            .map_err(db("delete user attributes"))
    }

    async fn delete_value(&self, tenant_id: &TenantId, user_id: &str, name: &str) -> Result<bool> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "DELETE FROM attribute_values WHERE tenant = $1 AND user_id = $2 AND name = $3",
                &[&tenant_id.as_str(), &user_id, &name],
            )
            .await
            .map_err(db("delete attribute"))?
            > 0)
    }

    async fn delete_name(&self, tenant_id: &TenantId, name: &str) -> Result<RemovedAttributes> {
        let t = tenant_id.as_str();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db("delete name"))?;
        let owners = lock_names(&tx, t).await?;
        let removed = RemovedAttributes {
            values: drop_names(&tx, t, &[name.to_owned()]).await?,
            names: u64::from(owners.contains_key(name)),
        };
        tx.commit().await.map_err(db("delete name"))?;
        Ok(removed)
    }

    async fn names(&self, tenant_id: &TenantId) -> Result<Vec<AttributeName>> {
        let client = self.client().await?;
        Ok(read_names(&client, tenant_id.as_str())
            .await?
            .into_iter()
            .map(|(name, owner)| AttributeName { name, owner })
            .collect())
    }

    async fn query(&self, tenant_id: &TenantId, filter: &Filter) -> Result<Vec<String>> {
        let client = self.client().await?;
        matching(&client, tenant_id.as_str(), filter).await
    }

    async fn query_page(
        &self,
        tenant_id: &TenantId,
        filter: &Filter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<AttributePage> {
        let t = tenant_id.as_str();
        let mut client = self.client().await?;
        let plan = sql::plan(Dialect::Postgres, Layout::Values, t, filter);
        if !plan.exact {
            return Ok(sql::page_of(
                matching(&client, t, filter).await?,
                after,
                limit,
            ));
        }
        // One snapshot for the count and the page.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db("query page"))?;
        let total: i64 = tx
            .query_one(
                &format!("SELECT count(*) {}", plan.from_where),
                &to_sql(&plan.builder.params),
            )
            .await
            .map_err(db("query page"))?
            .get(0);
        let limit = sql::page_limit(limit);
        let (query, b) = plan.page_query(after, limit);
        let users: Vec<String> = tx
            .query(&query, &to_sql(&b.params))
            .await
            .map_err(db("query page"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.commit().await.map_err(db("query page"))?;
        Ok(sql::page_from_rows(users, total.max(0) as u64, limit))
    }
}
