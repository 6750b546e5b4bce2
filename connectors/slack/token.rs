//! Where each Slack call's bot token comes from: the delivery's or request's connection (refreshed, with token rotation, under a store-wide lease and a compare-and-swap), or one fixed token for a single-workspace host.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::api::SlackClient;
use super::config::SlackConfig;
use super::connection::{expires_at, split_scopes, store_error};
use super::errors::{FailureClass, SlackApiError};
use crate::Result;
use crate::store::Store;
use crate::tenant::{Connection, ConnectionKey, secret_names};

/// Refresh rotating tokens this long before they expire.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// How long one instance may hold the store-wide refresh lease.
const REFRESH_LEASE: Duration = Duration::from_secs(30);
/// How long an instance waits for another one's refresh before giving up (a
/// temporary failure: the delivery is retried).
const REFRESH_WAIT: Duration = Duration::from_secs(10);
const REFRESH_POLL: Duration = Duration::from_millis(25);
const LEASE_SCOPE: &str = "slack:token-refresh";

/// One fixed bot token, for a single-workspace host (e.g. `SLACK_BOT_TOKEN`):
/// used for the default tenant when it has no stored connection. `Debug`
/// prints `[redacted]`.
#[derive(Clone)]
pub struct BotToken {
    token: Arc<SecretString>,
}

impl fmt::Debug for BotToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BotToken([redacted])")
    }
}

impl BotToken {
    /// A fixed bot token.
    pub fn new(token: SecretString) -> Self {
        BotToken {
            token: Arc::new(token),
        }
    }

    /// The token.
    pub fn secret(&self) -> &SecretString {
        &self.token
    }
}

fn not_connected(method: &str, what: &str) -> SlackApiError {
    SlackApiError::new(
        FailureClass::Disconnected,
        method,
        None,
        format!(
            "{what}: install the Slack app for this tenant; queued messages are kept and sent after connecting"
        ),
    )
}

/// The bot token of a connection as stored (no refresh).
pub(super) fn stored_token(connection: &Connection) -> Result<SecretString, SlackApiError> {
    connection.access_token().cloned().ok_or_else(|| {
        not_connected(
            "connection",
            &format!("the Slack connection {} holds no bot token", connection.key),
        )
    })
}

fn needs_refresh(connection: &Connection, now: DateTime<Utc>) -> bool {
    let margin = chrono::Duration::from_std(REFRESH_MARGIN).unwrap_or_default();
    match connection.expires_at {
        Some(at) => connection.secret(secret_names::REFRESH_TOKEN).is_some() && at - margin <= now,
        None => false,
    }
}

/// Token rotation for Slack connections (`oauth.v2.access` with
/// `grant_type=refresh_token`), safe across instances sharing one store.
///
/// A token within [`REFRESH_MARGIN`] of its expiry is refreshed before use,
/// and one Slack refused with `token_expired` is refreshed at once
/// ([`TokenRotation::refresh`]). Exactly one instance refreshes a given
/// revision of a connection: it takes a lease in the store
/// ([`crate::store::OnceStore::remember_once`] on the connection key and
/// revision), calls Slack, and writes the new tokens with
/// [`crate::store::ConnectionStore::swap_secrets`] naming the revision it
/// read. Every other instance waits for the revision to move and re-reads the
/// store; an instance whose refresh Slack answers with
/// `invalid_refresh_token` re-reads the store too, and only reports the
/// connection disconnected if nobody refreshed it.
pub struct TokenRotation {
    client: SlackClient,
    store: Arc<dyn Store>,
    client_id: String,
    client_secret: SecretString,
    locks: Mutex<HashMap<ConnectionKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl fmt::Debug for TokenRotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRotation")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl TokenRotation {
    /// Rotation with the app's client id and secret, writing refreshed tokens
    /// to `store` (the switchboard's).
    pub fn new(
        config: &SlackConfig,
        store: Arc<dyn Store>,
        client_id: impl Into<String>,
        client_secret: SecretString,
    ) -> Result<Self> {
        Ok(Self::with_client(
            SlackClient::new(config)?,
            store,
            client_id,
            client_secret,
        ))
    }

    /// Like [`TokenRotation::new`], sharing a client.
    pub fn with_client(
        client: SlackClient,
        store: Arc<dyn Store>,
        client_id: impl Into<String>,
        client_secret: SecretString,
    ) -> Self {
        TokenRotation {
            client,
            store,
            client_id: client_id.into(),
            client_secret,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// The token to use for `connection` now: the stored one, refreshed first
    /// if it expires within [`REFRESH_MARGIN`].
    pub async fn token(&self, connection: &Connection) -> Result<SecretString, SlackApiError> {
        if !needs_refresh(connection, Utc::now()) {
            return stored_token(connection);
        }
        let fresh = self.refresh_from(connection, false).await?;
        stored_token(&fresh)
    }

    /// Refreshes `connection` now, unless another instance already refreshed
    /// the revision given (then that result is returned). Used when Slack
    /// answers `token_expired`.
    pub async fn refresh(&self, connection: &Connection) -> Result<Connection, SlackApiError> {
        self.refresh_from(connection, true).await
    }

    fn local_lock(&self, key: &ConnectionKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(key.clone()).or_default().clone()
    }

    async fn read(&self, key: &ConnectionKey) -> Result<Connection, SlackApiError> {
        match self.store.connection(key).await {
            Ok(Some(c)) => Ok(c),
            Ok(None) => Err(not_connected(
                "oauth.v2.access",
                &format!("the Slack connection {key} no longer exists"),
            )),
            Err(e) => Err(store_error("oauth.v2.access", &e)),
        }
    }

    async fn refresh_from(
        &self,
        seen: &Connection,
        force: bool,
    ) -> Result<Connection, SlackApiError> {
        let key = &seen.key;
        let local = self.local_lock(key);
        let _guard = local.lock().await;
        let started = tokio::time::Instant::now();
        loop {
            let current = self.read(key).await?;
            let now = Utc::now();
            if current.revision != seen.revision || (!force && !needs_refresh(&current, now)) {
                // Someone refreshed it meanwhile (or it no longer needs it).
                return Ok(current);
            }
            let Some(refresh_token) = current.secret(secret_names::REFRESH_TOKEN).cloned() else {
                if force {
                    return Err(SlackApiError::new(
                        FailureClass::Disconnected,
                        "oauth.v2.access",
                        Some("token_expired"),
                        "the Slack token expired and the connection has no refresh token: reinstall the Slack app; queued messages are kept and sent after reconnecting",
                    ));
                }
                return Ok(current);
            };
            let lease_until = now + chrono::Duration::from_std(REFRESH_LEASE).unwrap_or_default();
            let lease_key = format!("{key}#{}", current.revision);
            let leased = self
                .store
                .remember_once(LEASE_SCOPE, &lease_key, lease_until, now)
                .await
                .map_err(|e| store_error("oauth.v2.access", &e))?;
            if !leased {
                // Another instance is refreshing this revision: wait for it.
                if started.elapsed() >= REFRESH_WAIT {
                    return Err(SlackApiError::new(
                        FailureClass::Temporary,
                        "oauth.v2.access",
                        None,
                        "another instance is refreshing the Slack token; it will be retried",
                    ));
                }
                tokio::time::sleep(REFRESH_POLL).await;
                continue;
            }
            return self.exchange(&current, &refresh_token).await;
        }
    }

    async fn exchange(
        &self,
        current: &Connection,
        refresh_token: &SecretString,
    ) -> Result<Connection, SlackApiError> {
        let answer = self
            .client
            .oauth_v2_access(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.expose_secret()),
                ("client_id", &self.client_id),
                ("client_secret", self.client_secret.expose_secret()),
            ])
            .await;
        let access = match answer {
            Ok(a) => a,
            Err(e) if e.code() == Some("invalid_refresh_token") => {
                // Perhaps another instance used the refresh token first.
                let now = self.read(&current.key).await?;
                if now.revision != current.revision {
                    return Ok(now);
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let now = Utc::now();
        let mut secrets = current.secrets.clone();
        secrets.insert(secret_names::ACCESS_TOKEN, access.access_token);
        if let Some(r) = access.refresh_token {
            secrets.insert(secret_names::REFRESH_TOKEN, r);
        }
        let expires = expires_at(now, access.expires_in);
        let swapped = self
            .store
            .swap_secrets(&current.key, current.revision, &secrets, expires, now)
            .await
            .map_err(|e| store_error("oauth.v2.access", &e))?;
        if !access.scope.is_empty() {
            tracing::debug!(connection = %current.key, scopes = ?split_scopes(&access.scope), "Slack token refreshed");
        }
        match swapped {
            Some(c) => Ok(c),
            // Another writer changed it first: theirs is the stored truth.
            None => self.read(&current.key).await,
        }
    }
}
