//! `AttributeStore` for `PostgresStore`: users' attributes per tenant, the per-tenant cap checked in the writing transaction under a row lock.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;

use super::{PostgresStore, db, from_json, to_json};
use crate::Result;
use crate::attributes::{
    AttributeRecord, AttributeStore, Attributes, Filter, UpsertStats, check_attribute_cap,
};
use crate::tenant::TenantId;

/// Users per upsert statement.
const UPSERT_CHUNK: usize = 500;

#[async_trait]
impl AttributeStore for PostgresStore {
    async fn upsert(&self, tenant_id: &TenantId, batch: &[AttributeRecord]) -> Result<UpsertStats> {
        // Group by user, first-seen order; later records win per attribute.
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
        let mut merged: Vec<(&str, BTreeMap<&str, &str>)> = Vec::with_capacity(batch.len());
        for record in batch {
            let i = *index.entry(record.user_id.as_str()).or_insert_with(|| {
                merged.push((record.user_id.as_str(), BTreeMap::new()));
                merged.len() - 1
            });
            if let Some((_, attrs)) = merged.get_mut(i) {
                attrs.extend(
                    record
                        .attributes
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                );
            }
        }
        let users: Vec<String> = merged.iter().map(|(u, _)| (*u).to_owned()).collect();
        let json: Vec<String> = merged
            .iter()
            .map(|(_, a)| to_json(a))
            .collect::<Result<_>>()?;
        let t = tenant_id.as_str();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db("upsert"))?;
        // The tenant's registry row, locked: concurrent imports of one tenant
        // (from any replica) check the cap one after the other.
        tx.execute(
            "INSERT INTO attribute_tenants (tenant) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&t],
        )
        .await
        .map_err(db("upsert"))?;
        tx.execute(
            "SELECT tenant FROM attribute_tenants WHERE tenant = $1 FOR UPDATE",
            &[&t],
        )
        .await
        .map_err(db("upsert"))?;
        let registered: BTreeSet<String> = tx
            .query("SELECT name FROM attribute_names WHERE tenant = $1", &[&t])
            .await
            .map_err(db("upsert"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let new_names = check_attribute_cap(&registered, batch, self.attribute_cap)?;
        let mut stats = UpsertStats {
            new_attribute_names: new_names.len(),
            ..UpsertStats::default()
        };
        if !new_names.is_empty() {
            tx.execute(
                "INSERT INTO attribute_names (tenant, name) SELECT $1, unnest($2::text[]) \
                 ON CONFLICT DO NOTHING",
                &[&t, &new_names],
            )
            .await
            .map_err(db("upsert"))?;
        }
        let stmt = tx
            .prepare_cached(
                "INSERT INTO attributes AS a (tenant, user_id, attrs) \
                 SELECT $1, x.u, x.j::jsonb FROM unnest($2::text[], $3::text[]) AS x(u, j) \
                 ON CONFLICT (tenant, user_id) DO UPDATE SET \
                   attrs = a.attrs || excluded.attrs, updates = a.updates + 1 \
                 RETURNING updates",
            )
            .await
            .map_err(db("upsert"))?;
        for (u, j) in users.chunks(UPSERT_CHUNK).zip(json.chunks(UPSERT_CHUNK)) {
            for r in tx.query(&stmt, &[&t, &u, &j]).await.map_err(db("upsert"))? {
                if r.get::<_, i64>(0) == 0 {
                    stats.users_created += 1;
                } else {
                    stats.users_updated += 1;
                }
            }
        }
        tx.commit().await.map_err(db("upsert"))?;
        Ok(stats)
    }

    async fn get(&self, tenant_id: &TenantId, user_id: &str) -> Result<Option<Attributes>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT attrs::text FROM attributes WHERE tenant = $1 AND user_id = $2",
                &[&tenant_id.as_str(), &user_id],
            )
            .await
            .map_err(db("get"))?;
        row.map(|r| from_json(&r.get::<_, String>(0))).transpose()
    }

    async fn query(&self, tenant_id: &TenantId, filter: &Filter) -> Result<Vec<String>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT user_id, attrs::text FROM attributes WHERE tenant = $1 ORDER BY user_id",
                &[&tenant_id.as_str()],
            )
            .await
            .map_err(db("query"))?;
        let mut out = Vec::new();
        for r in rows {
            let attrs: Attributes = from_json(&r.get::<_, String>(1))?;
            if filter.matches(&attrs) {
                out.push(r.get(0));
            }
        }
        out.sort();
        Ok(out)
    }
}
