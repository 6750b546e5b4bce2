//! `ConnectionStore` for `SqliteStore`: tenants' connections with secrets sealed by the keyring, defaults per platform, compare-and-swap rotation.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection as Db3, OptionalExtension, params};

use super::{Db, SqliteStore, count64, from_json, millis, opt_time, tenant, time, to_i64, to_json};
use crate::secret::{Keyring, open_or_refuse, seal_or_refuse};
use crate::store::ConnectionStore;
use crate::tenant::{Connection, ConnectionKey, ConnectionState, Secrets, TenantId};
use crate::{Error, ErrorKind, Result};

const COLUMNS: &str = "platform, account, tenant, secrets, expires_at, data, connected, \
     disconnected_reason, disconnected_since, is_default, revision, created_at, updated_at";

/// A stored connection with its secrets still sealed.
struct Row {
    key: ConnectionKey,
    tenant: TenantId,
    sealed: String,
    expires_at: Option<DateTime<Utc>>,
    data: serde_json::Value,
    state: ConnectionState,
    is_default: bool,
    revision: u64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

fn row(r: &rusqlite::Row<'_>) -> Db<Row> {
    let connected: bool = r.get(6)?;
    let state = if connected {
        ConnectionState::Connected
    } else {
        ConnectionState::Disconnected {
            reason: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
            since: time(r.get::<_, Option<i64>>(8)?.unwrap_or(0))?,
        }
    };
    Ok(Row {
        key: ConnectionKey::new(r.get::<_, String>(0)?, r.get::<_, String>(1)?),
        tenant: tenant(r.get(2)?)?,
        sealed: r.get(3)?,
        expires_at: opt_time(r.get(4)?)?,
        data: from_json(r.get_ref(5)?.as_str()?)?,
        state,
        is_default: r.get(9)?,
        revision: count64(r.get(10)?)?,
        created_at: time(r.get(11)?)?,
        updated_at: time(r.get(12)?)?,
    })
}

fn rows(conn: &Db3, sql: &str, p: impl rusqlite::Params) -> Db<Vec<Row>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut found = stmt.query(p)?;
    let mut out = Vec::new();
    while let Some(r) = found.next()? {
        out.push(row(r)?);
    }
    Ok(out)
}

impl SqliteStore {
    /// Opens a stored row's secrets with the keyring.
    fn open_row(&self, r: Row) -> Result<Connection> {
        let secrets = open_or_refuse(self.keyring(), &r.key.to_string(), &r.sealed)?;
        Ok(Connection {
            tenant: r.tenant,
            key: r.key,
            secrets,
            expires_at: r.expires_at,
            data: r.data,
            state: r.state,
            is_default: r.is_default,
            revision: r.revision,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }

    fn open_rows(&self, rows: Vec<Row>) -> Result<Vec<Connection>> {
        rows.into_iter().map(|r| self.open_row(r)).collect()
    }
}

fn state_columns(state: &ConnectionState) -> (bool, Option<String>, Option<i64>) {
    match state {
        ConnectionState::Connected => (true, None, None),
        ConnectionState::Disconnected { reason, since } => {
            (false, Some(reason.clone()), Some(millis(*since)))
        }
    }
}

#[async_trait]
impl ConnectionStore for SqliteStore {
    async fn put_connection(
        &self,
        connection: &Connection,
        now: DateTime<Utc>,
    ) -> Result<Connection> {
        let sealed = seal_or_refuse(
            self.keyring(),
            &connection.key.to_string(),
            &connection.secrets,
        )?;
        let c = connection.clone();
        let data = to_json(&c.data)?;
        let now_ms = millis(now);
        let (tenant_id, key, is_default) = (c.tenant.clone(), c.key.clone(), c.is_default);
        let (revision, created_at) = self
            .write("put_connection", move |conn| {
                let existing: Option<(String, i64, i64)> = conn
                    .prepare_cached(
                        "SELECT tenant, revision, created_at FROM connections \
                         WHERE platform = ?1 AND account = ?2",
                    )?
                    .query_row(params![key.platform, key.account], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()?;
                if let Some((owner, _, _)) = &existing {
                    if owner != tenant_id.as_str() {
                        return Err(Error::new(
                            ErrorKind::Conflict,
                            format!("connection {key} belongs to another tenant"),
                        )
                        .into());
                    }
                }
                let (revision, created_at) = existing.map_or((1, now_ms), |(_, rev, created)| {
                    (rev.saturating_add(1), created)
                });
                let (connected, reason, since) = state_columns(&c.state);
                conn.prepare_cached(&format!(
                    "INSERT INTO connections ({COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
                     ON CONFLICT (platform, account) DO UPDATE SET \
                       secrets = excluded.secrets, expires_at = excluded.expires_at, \
                       data = excluded.data, connected = excluded.connected, \
                       disconnected_reason = excluded.disconnected_reason, \
                       disconnected_since = excluded.disconnected_since, \
                       is_default = excluded.is_default, revision = excluded.revision, \
                       updated_at = excluded.updated_at"
                ))?
                .execute(params![
                    key.platform,
                    key.account,
                    tenant_id.as_str(),
                    sealed,
                    c.expires_at.map(millis),
                    data,
                    connected,
                    reason,
                    since,
                    is_default,
                    revision,
                    created_at,
                    now_ms
                ])?;
                if is_default {
                    conn.prepare_cached(
                        "UPDATE connections SET is_default = 0 \
                         WHERE tenant = ?1 AND platform = ?2 AND account <> ?3 AND is_default",
                    )?
                    .execute(params![
                        tenant_id.as_str(),
                        key.platform,
                        key.account
                    ])?;
                }
                Ok((revision, created_at))
            })
            .await?;
        let mut stored = connection.clone();
        stored.revision = u64::try_from(revision).unwrap_or(0);
        stored.created_at = time(created_at).map_err(Error::from)?;
        stored.updated_at = now;
        Ok(stored)
    }

    async fn connection(&self, key: &ConnectionKey) -> Result<Option<Connection>> {
        let key = key.clone();
        let found = self
            .read("connection", move |conn| {
                rows(
                    conn,
                    &format!(
                        "SELECT {COLUMNS} FROM connections WHERE platform = ?1 AND account = ?2"
                    ),
                    params![key.platform, key.account],
                )
            })
            .await?;
        found
            .into_iter()
            .next()
            .map(|r| self.open_row(r))
            .transpose()
    }

    async fn default_connection(
        &self,
        tenant: &TenantId,
        platform: &str,
    ) -> Result<Option<Connection>> {
        let tenant = tenant.as_str().to_owned();
        let platform = platform.to_owned();
        let found = self
            .read("default_connection", move |conn| {
                rows(
                    conn,
                    &format!(
                        "SELECT {COLUMNS} FROM connections WHERE tenant = ?1 AND platform = ?2 \
                         ORDER BY is_default DESC, account LIMIT 2"
                    ),
                    params![tenant, platform],
                )
            })
            .await?;
        // The one marked default, else the only one.
        let pick = match found.len() {
            1 => found.into_iter().next(),
            _ => found.into_iter().next().filter(|r| r.is_default),
        };
        pick.map(|r| self.open_row(r)).transpose()
    }

    async fn connections(&self, tenant: Option<&TenantId>) -> Result<Vec<Connection>> {
        let tenant = tenant.map(|t| t.as_str().to_owned());
        let found = self
            .read("connections", move |conn| {
                rows(
                    conn,
                    &format!(
                        "SELECT {COLUMNS} FROM connections WHERE (?1 IS NULL OR tenant = ?1) \
                         ORDER BY platform, account"
                    ),
                    params![tenant],
                )
            })
            .await?;
        self.open_rows(found)
    }

    async fn delete_connection(&self, key: &ConnectionKey) -> Result<bool> {
        let key = key.clone();
        self.write("delete_connection", move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM connections WHERE platform = ?1 AND account = ?2")?
                .execute(params![key.platform, key.account])?;
            Ok(n > 0)
        })
        .await
    }

    async fn set_connection_state(
        &self,
        key: &ConnectionKey,
        state: &ConnectionState,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let key = key.clone();
        let (connected, reason, since) = state_columns(state);
        let now = millis(now);
        self.write("set_connection_state", move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE connections SET connected = ?3, disconnected_reason = ?4, \
                     disconnected_since = ?5, updated_at = ?6 \
                     WHERE platform = ?1 AND account = ?2",
                )?
                .execute(params![
                    key.platform,
                    key.account,
                    connected,
                    reason,
                    since,
                    now
                ])?;
            Ok(n > 0)
        })
        .await
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
        let key = key.clone();
        let expected = to_i64(expected_revision);
        let expires_at = expires_at.map(millis);
        let now = millis(now);
        // One UPDATE: the revision check and the swap are one step.
        let found = self
            .write("swap_secrets", move |conn| {
                rows(
                    conn,
                    &format!(
                        "UPDATE connections SET secrets = ?4, expires_at = ?5, \
                         revision = revision + 1, updated_at = ?6 \
                         WHERE platform = ?1 AND account = ?2 AND revision = ?3 \
                         RETURNING {COLUMNS}"
                    ),
                    params![key.platform, key.account, expected, sealed, expires_at, now],
                )
            })
            .await?;
        found
            .into_iter()
            .next()
            .map(|r| self.open_row(r))
            .transpose()
    }
}

/// Seals the plain-text tokens of schema-1 installations into connections of
/// the default tenant, and deletes the plain text.
pub(super) fn seal_legacy_installations(store: &SqliteStore, keyring: &Keyring) -> Result<()> {
    store.write_now("sealing legacy installations", |conn| {
        let exists: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master \
             WHERE type = 'table' AND name = 'legacy_installations')",
            [],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(());
        }
        type Legacy = (
            String,
            String,
            String,
            Option<String>,
            Option<i64>,
            String,
            i64,
        );
        let legacy: Vec<Legacy> = conn
            .prepare(
                "SELECT platform, key, token, refresh_token, expires_at, data, updated_at \
                 FROM legacy_installations ORDER BY platform, key",
            )?
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        for (platform, account, token, refresh, expires_at, data, updated_at) in &legacy {
            let key = ConnectionKey::new(platform.as_str(), account.as_str());
            let mut secrets =
                Secrets::new().with("access_token", secrecy::SecretString::from(token.clone()));
            if let Some(r) = refresh {
                secrets.insert("refresh_token", secrecy::SecretString::from(r.clone()));
            }
            let sealed = keyring.seal_secrets(&key.to_string(), &secrets)?;
            // The only installation of its platform is the default.
            let alone = legacy.iter().filter(|l| l.0 == *platform).count() == 1;
            conn.prepare(&format!(
                "INSERT INTO connections ({COLUMNS}) \
                 VALUES (?1, ?2, 'default', ?3, ?4, ?5, 1, NULL, NULL, ?6, 1, ?7, ?7) \
                 ON CONFLICT (platform, account) DO NOTHING"
            ))?
            .execute(params![
                platform, account, sealed, expires_at, data, alone, updated_at
            ])?;
        }
        conn.execute_batch("DROP TABLE legacy_installations")?;
        Ok(())
    })
}
