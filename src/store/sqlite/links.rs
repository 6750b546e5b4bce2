//! `LinkStore` for `SqliteStore`: identity links per (tenant, platform, host user), manual links winning over automatic ones.

use async_trait::async_trait;
use rusqlite::params;

use super::{Db, SqliteStore, corrupt, millis, tenant, time};
use crate::Result;
use crate::identity::{IdentityLink, LinkOrigin};
use crate::store::LinkStore;
use crate::tenant::TenantId;

const COLUMNS: &str = "tenant, platform, user_id, platform_id, origin, linked_at";

fn link_from_row(row: &rusqlite::Row<'_>) -> Db<IdentityLink> {
    let origin: String = row.get(4)?;
    Ok(IdentityLink {
        tenant: tenant(row.get(0)?)?,
        platform: row.get(1)?,
        user_id: row.get(2)?,
        platform_id: row.get(3)?,
        origin: LinkOrigin::parse(&origin)
            .ok_or_else(|| corrupt(format!("unknown stored link origin {origin:?}")))?,
        linked_at: time(row.get(5)?)?,
    })
}

#[async_trait]
impl LinkStore for SqliteStore {
    async fn put_link(&self, link: &IdentityLink) -> Result<()> {
        let link = link.clone();
        self.write("put_link", move |conn| {
            // A manual link replaces anything; an automatic one never replaces a manual one.
            conn.prepare_cached(
                "INSERT INTO identity_links \
                   (tenant, platform, user_id, platform_id, origin, linked_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (tenant, platform, user_id) DO UPDATE SET \
                   platform_id = excluded.platform_id, origin = excluded.origin, \
                   linked_at = excluded.linked_at \
                 WHERE excluded.origin = 'manual' OR identity_links.origin <> 'manual'",
            )?
            .execute(params![
                link.tenant.as_str(),
                link.platform,
                link.user_id,
                link.platform_id,
                link.origin.as_str(),
                millis(link.linked_at)
            ])?;
            Ok(())
        })
        .await
    }

    async fn link(
        &self,
        tenant: &TenantId,
        platform: &str,
        user_id: &str,
    ) -> Result<Option<IdentityLink>> {
        let tenant = tenant.as_str().to_owned();
        let platform = platform.to_owned();
        let user_id = user_id.to_owned();
        self.read("link", move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM identity_links \
                 WHERE tenant = ?1 AND platform = ?2 AND user_id = ?3"
            ))?;
            let mut rows = stmt.query(params![tenant, platform, user_id])?;
            match rows.next()? {
                Some(row) => Ok(Some(link_from_row(row)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn links(&self, tenant: &TenantId, platform: &str) -> Result<Vec<IdentityLink>> {
        let tenant = tenant.as_str().to_owned();
        let platform = platform.to_owned();
        self.read("links", move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM identity_links \
                 WHERE tenant = ?1 AND platform = ?2 ORDER BY user_id"
            ))?;
            let mut rows = stmt.query(params![tenant, platform])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(link_from_row(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn delete_link(&self, tenant: &TenantId, platform: &str, user_id: &str) -> Result<bool> {
        let tenant = tenant.as_str().to_owned();
        let platform = platform.to_owned();
        let user_id = user_id.to_owned();
        self.write("delete_link", move |conn| {
            let n = conn
                .prepare_cached(
                    "DELETE FROM identity_links \
                     WHERE tenant = ?1 AND platform = ?2 AND user_id = ?3",
                )?
                .execute(params![tenant, platform, user_id])?;
            Ok(n > 0)
        })
        .await
    }
}
