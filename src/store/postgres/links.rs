//! `LinkStore`, `RuleStore` and `OnceStore` for `PostgresStore`: identity links (manual winning over automatic), per-tenant route rules, single-use keys.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{PostgresStore, corrupt, db, from_json, tenant, to_json};
use crate::Result;
use crate::identity::{IdentityLink, LinkOrigin};
use crate::message::Target;
use crate::store::{LinkStore, OnceStore, RouteRule, RuleStore};
use crate::tenant::TenantId;

const COLUMNS: &str = "tenant, platform, user_id, platform_id, origin, linked_at";

fn link(r: &tokio_postgres::Row) -> Result<IdentityLink> {
    let origin: String = r.get(4);
    Ok(IdentityLink {
        tenant: tenant(r.get(0))?,
        platform: r.get(1),
        user_id: r.get(2),
        platform_id: r.get(3),
        origin: LinkOrigin::parse(&origin)
            .ok_or_else(|| corrupt(format!("unknown stored link origin {origin:?}")))?,
        linked_at: r.get(5),
    })
}

#[async_trait]
impl LinkStore for PostgresStore {
    async fn put_link(&self, l: &IdentityLink) -> Result<()> {
        let client = self.client().await?;
        // A manual link replaces anything; an automatic one never replaces a manual one.
        client
            .execute(
                &format!(
                    "INSERT INTO identity_links AS l ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (tenant, platform, user_id) DO UPDATE SET \
                       platform_id = excluded.platform_id, origin = excluded.origin, \
                       linked_at = excluded.linked_at \
                     WHERE excluded.origin = 'manual' OR l.origin <> 'manual'"
                ),
                &[
                    &l.tenant.as_str(),
                    &l.platform,
                    &l.user_id,
                    &l.platform_id,
                    &l.origin.as_str(),
                    &l.linked_at,
                ],
            )
            .await
            .map_err(db("put_link"))?;
        Ok(())
    }

    async fn link(
        &self,
        tenant_id: &TenantId,
        platform: &str,
        user_id: &str,
    ) -> Result<Option<IdentityLink>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM identity_links \
                     WHERE tenant = $1 AND platform = $2 AND user_id = $3"
                ),
                &[&tenant_id.as_str(), &platform, &user_id],
            )
            .await
            .map_err(db("link"))?;
        row.as_ref().map(link).transpose()
    }

    async fn links(&self, tenant_id: &TenantId, platform: &str) -> Result<Vec<IdentityLink>> {
        let client = self.client().await?;
        client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM identity_links \
                     WHERE tenant = $1 AND platform = $2 ORDER BY user_id"
                ),
                &[&tenant_id.as_str(), &platform],
            )
            .await
            .map_err(db("links"))?
            .iter()
            .map(link)
            .collect()
    }

    async fn delete_link(
        &self,
        tenant_id: &TenantId,
        platform: &str,
        user_id: &str,
    ) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM identity_links WHERE tenant = $1 AND platform = $2 AND user_id = $3",
                &[&tenant_id.as_str(), &platform, &user_id],
            )
            .await
            .map_err(db("delete_link"))?;
        Ok(n > 0)
    }
}

#[async_trait]
impl RuleStore for PostgresStore {
    async fn put_rule(&self, rule: &RouteRule) -> Result<()> {
        let client = self.client().await?;
        if rule.enabled.is_none() && rule.target.is_none() {
            client
                .execute(
                    "DELETE FROM route_rules WHERE tenant = $1 AND route = $2",
                    &[&rule.tenant.as_str(), &rule.route],
                )
                .await
                .map_err(db("put_rule"))?;
            return Ok(());
        }
        let target = rule.target.as_ref().map(to_json).transpose()?;
        client
            .execute(
                "INSERT INTO route_rules (tenant, route, enabled, target, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (tenant, route) DO UPDATE SET enabled = excluded.enabled, \
                   target = excluded.target, updated_at = excluded.updated_at",
                &[
                    &rule.tenant.as_str(),
                    &rule.route,
                    &rule.enabled,
                    &target,
                    &rule.updated_at,
                ],
            )
            .await
            .map_err(db("put_rule"))?;
        Ok(())
    }

    async fn rules(&self, tenant_id: &TenantId) -> Result<Vec<RouteRule>> {
        let client = self.client().await?;
        client
            .query(
                "SELECT route, enabled, target, updated_at FROM route_rules \
                 WHERE tenant = $1 ORDER BY route",
                &[&tenant_id.as_str()],
            )
            .await
            .map_err(db("rules"))?
            .iter()
            .map(|r| {
                let target: Option<String> = r.get(2);
                Ok(RouteRule {
                    tenant: tenant_id.clone(),
                    route: r.get(0),
                    enabled: r.get(1),
                    target: target.as_deref().map(from_json::<Target>).transpose()?,
                    updated_at: r.get(3),
                })
            })
            .collect()
    }
}

#[async_trait]
impl OnceStore for PostgresStore {
    async fn remember_once(
        &self,
        scope: &str,
        key: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let client = self.client().await?;
        // A few expired keys go with every call, so the table stays small.
        client
            .execute(
                "DELETE FROM remembered WHERE (scope, key) IN \
                 (SELECT scope, key FROM remembered WHERE expires_at <= $1 LIMIT 64)",
                &[&now],
            )
            .await
            .map_err(db("remember_once"))?;
        let n = client
            .execute(
                "INSERT INTO remembered AS r (scope, key, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (scope, key) DO UPDATE SET expires_at = excluded.expires_at \
                 WHERE r.expires_at <= $4",
                &[&scope, &key, &expires_at, &now],
            )
            .await
            .map_err(db("remember_once"))?;
        Ok(n > 0)
    }
}
