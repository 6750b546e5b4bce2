//! `ConnectionStore` for `PostgresStore`: connections with secrets sealed by the keyring, defaults per platform, compare-and-swap rotation.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{PostgresStore, count64, db, from_json, tenant, to_i64, to_json};
use crate::secret::{open_or_refuse, seal_or_refuse};
use crate::store::ConnectionStore;
use crate::tenant::{Connection, ConnectionKey, ConnectionState, Secrets, TenantId};
use crate::{Error, ErrorKind, Result};

const COLUMNS: &str = "platform, account, tenant, secrets, expires_at, data, connected, \
     disconnected_reason, disconnected_since, is_default, revision, created_at, updated_at";

impl PostgresStore {
    /// Decodes a row and opens its secrets with the keyring.
    fn open_row(&self, r: &tokio_postgres::Row) -> Result<Connection> {
        let key = ConnectionKey::new(r.get::<_, String>(0), r.get::<_, String>(1));
        let sealed: String = r.get(3);
        let secrets = open_or_refuse(self.keyring(), &key.to_string(), &sealed)?;
        let connected: bool = r.get(6);
        let state = if connected {
            ConnectionState::Connected
        } else {
            ConnectionState::Disconnected {
                reason: r.get::<_, Option<String>>(7).unwrap_or_default(),
                since: r
                    .get::<_, Option<DateTime<Utc>>>(8)
                    .unwrap_or(DateTime::UNIX_EPOCH),
            }
        };
        let data: String = r.get(5);
        Ok(Connection {
            tenant: tenant(r.get(2))?,
            key,
            secrets,
            expires_at: r.get(4),
            data: from_json(&data)?,
            state,
            is_default: r.get(9),
            revision: count64(r.get(10)),
            created_at: r.get(11),
            updated_at: r.get(12),
        })
    }

    async fn connection_rows(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Connection>> {
        let client = self.client().await?;
        let rows = client
            .query(sql, params)
            .await
            .map_err(db("reading connections"))?;
        rows.iter().map(|r| self.open_row(r)).collect()
    }
}

fn state_columns(state: &ConnectionState) -> (bool, Option<String>, Option<DateTime<Utc>>) {
    match state {
        ConnectionState::Connected => (true, None, None),
        ConnectionState::Disconnected { reason, since } => {
            (false, Some(reason.clone()), Some(*since))
        }
    }
}

#[async_trait]
impl ConnectionStore for PostgresStore {
    async fn put_connection(
        &self,
        connection: &Connection,
        now: DateTime<Utc>,
    ) -> Result<Connection> {
        let key = &connection.key;
        let sealed = seal_or_refuse(self.keyring(), &key.to_string(), &connection.secrets)?;
        let data = to_json(&connection.data)?;
        let t = connection.tenant.as_str();
        let (connected, reason, since) = state_columns(&connection.state);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db("put_connection"))?;
        // Serializes writers of this key (the row may not exist yet).
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('switchboard:connection:' || $1))",
            &[&key.to_string()],
        )
        .await
        .map_err(db("put_connection"))?;
        let existing = tx
            .query_opt(
                "SELECT tenant, revision, created_at FROM connections \
                 WHERE platform = $1 AND account = $2 FOR UPDATE",
                &[&key.platform, &key.account],
            )
            .await
            .map_err(db("put_connection"))?;
        let (revision, created_at): (i64, DateTime<Utc>) = match &existing {
            Some(r) => {
                let owner: String = r.get(0);
                if owner != t {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!("connection {key} belongs to another tenant"),
                    ));
                }
                (r.get::<_, i64>(1).saturating_add(1), r.get(2))
            }
            None => (1, now),
        };
        tx.execute(
            &format!(
                "INSERT INTO connections ({COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (platform, account) DO UPDATE SET \
                   secrets = excluded.secrets, expires_at = excluded.expires_at, \
                   data = excluded.data, connected = excluded.connected, \
                   disconnected_reason = excluded.disconnected_reason, \
                   disconnected_since = excluded.disconnected_since, \
                   is_default = excluded.is_default, revision = excluded.revision, \
                   updated_at = excluded.updated_at"
            ),
            &[
                &key.platform,
                &key.account,
                &t,
                &sealed,
                &connection.expires_at,
                &data,
                &connected,
                &reason,
                &since,
                &connection.is_default,
                &revision,
                &created_at,
                &now,
            ],
        )
        .await
        .map_err(db("put_connection"))?;
        if connection.is_default {
            tx.execute(
                "UPDATE connections SET is_default = false \
                 WHERE tenant = $1 AND platform = $2 AND account <> $3 AND is_default",
                &[&t, &key.platform, &key.account],
            )
            .await
            .map_err(db("put_connection"))?;
        }
        tx.commit().await.map_err(db("put_connection"))?;
        let mut stored = connection.clone();
        stored.revision = count64(revision);
        stored.created_at = created_at;
        stored.updated_at = now;
        Ok(stored)
    }

    async fn connection(&self, key: &ConnectionKey) -> Result<Option<Connection>> {
        let found = self
            .connection_rows(
                &format!("SELECT {COLUMNS} FROM connections WHERE platform = $1 AND account = $2"),
                &[&key.platform, &key.account],
            )
            .await?;
        Ok(found.into_iter().next())
    }

    async fn default_connection(
        &self,
        tenant_id: &TenantId,
        platform: &str,
    ) -> Result<Option<Connection>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM connections WHERE tenant = $1 AND platform = $2 \
                     ORDER BY is_default DESC, account LIMIT 2"
                ),
                &[&tenant_id.as_str(), &platform],
            )
            .await
            .map_err(db("default_connection"))?;
        // The one marked default, else the only one.
        let pick = match rows.len() {
            1 => rows.first(),
            _ => rows.first().filter(|r| r.get::<_, bool>(9)),
        };
        pick.map(|r| self.open_row(r)).transpose()
    }

    async fn connections(&self, tenant_id: Option<&TenantId>) -> Result<Vec<Connection>> {
        let t = tenant_id.map(TenantId::as_str);
        self.connection_rows(
            &format!(
                "SELECT {COLUMNS} FROM connections WHERE ($1::text IS NULL OR tenant = $1) \
                 ORDER BY platform, account"
            ),
            &[&t],
        )
        .await
    }

    async fn delete_connection(&self, key: &ConnectionKey) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM connections WHERE platform = $1 AND account = $2",
                &[&key.platform, &key.account],
            )
            .await
            .map_err(db("delete_connection"))?;
        Ok(n > 0)
    }

    async fn set_connection_state(
        &self,
        key: &ConnectionKey,
        state: &ConnectionState,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (connected, reason, since) = state_columns(state);
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE connections SET connected = $3, disconnected_reason = $4, \
                 disconnected_since = $5, updated_at = $6 WHERE platform = $1 AND account = $2",
                &[
                    &key.platform,
                    &key.account,
                    &connected,
                    &reason,
                    &since,
                    &now,
                ],
            )
            .await
            .map_err(db("set_connection_state"))?;
        Ok(n > 0)
    }

    async fn swap_secrets(
        &self,
        key: &ConnectionKey,
        expected_revision: u64,
        secrets: &Secrets,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<Connection>> {
        let sealed = seal_or_refuse(self.keyring(), &key.to_string(), secrets)?;
        // One UPDATE: the revision check and the swap are one step.
        let found = self
            .connection_rows(
                &format!(
                    "UPDATE connections SET secrets = $4, expires_at = $5, \
                     revision = revision + 1, updated_at = $6 \
                     WHERE platform = $1 AND account = $2 AND revision = $3 \
                     RETURNING {COLUMNS}"
                ),
                &[
                    &key.platform,
                    &key.account,
                    &to_i64(expected_revision),
                    &sealed,
                    &expires_at,
                    &now,
                ],
            )
            .await?;
        Ok(found.into_iter().next())
    }
}
