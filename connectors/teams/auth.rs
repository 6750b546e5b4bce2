//! App credentials per tenant connection, and client-credentials tokens cached per connection with coalesced refresh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::time::Instant;

use super::api::{FailureClass, Service, TeamsApiError, read_json};
use super::config::{PLATFORM, TeamsConfig};
use crate::tenant::{Connection, secret_names};
use crate::{Error, ErrorKind, Result};

/// The app identity that talks to one customer tenant: the bot's app id, the
/// customer's Entra tenant id (where tokens are issued) and the client secret.
#[derive(Clone)]
pub struct TeamsCredentials {
    app_id: String,
    tenant_id: String,
    client_secret: SecretString,
}

impl std::fmt::Debug for TeamsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeamsCredentials")
            .field("app_id", &self.app_id)
            .field("tenant_id", &self.tenant_id)
            .field("client_secret", &"[redacted]")
            .finish()
    }
}

fn non_empty(what: &str, v: &str) -> Result<String> {
    let v = v.trim();
    if v.is_empty() || v.len() > 256 || v.chars().any(|c| c.is_control() || c == '/') {
        return Err(Error::new(
            ErrorKind::Config,
            format!("the Teams {what} must be a non-empty id"),
        ));
    }
    Ok(v.to_owned())
}

impl TeamsCredentials {
    /// Credentials for a single-tenant bot (`tenant_id` = the tenant the app is
    /// registered in) or, with [`super::BOT_FRAMEWORK_TENANT`], a legacy
    /// multi-tenant registration.
    pub fn new(app_id: &str, tenant_id: &str, client_secret: SecretString) -> Result<Self> {
        if client_secret.expose_secret().trim().is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                "the Teams client secret is empty",
            ));
        }
        Ok(TeamsCredentials {
            app_id: non_empty("app id", app_id)?,
            tenant_id: non_empty("tenant id", tenant_id)?,
            client_secret,
        })
    }

    /// Reads a tenant's Teams connection: `account` = the customer's Entra tenant
    /// id, secret `client_secret`, `data.app_id`; `data.token_tenant` overrides
    /// the tenant tokens are requested from (e.g. `botframework.com`).
    pub fn from_connection(connection: &Connection) -> Result<Self> {
        if connection.platform() != PLATFORM {
            return Err(Error::new(
                ErrorKind::Config,
                format!("connection {} is not a Teams connection", connection.key),
            ));
        }
        let secret = connection
            .secret(secret_names::CLIENT_SECRET)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unauthorized,
                    "the Teams connection has no client_secret: reconnect Teams for this tenant",
                )
            })?
            .clone();
        let app_id = connection.data_str("app_id").ok_or_else(|| {
            Error::new(
                ErrorKind::Unauthorized,
                "the Teams connection has no data.app_id: reconnect Teams for this tenant",
            )
        })?;
        let tenant = connection
            .data_str("token_tenant")
            .unwrap_or_else(|| connection.account());
        Self::new(app_id, tenant, secret)
            .map_err(|e| Error::new(ErrorKind::Unauthorized, e.message()))
    }

    /// The bot's Microsoft app id.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The tenant tokens are issued by.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    fn cache_key(&self, scope: &str) -> String {
        format!("{}\u{1f}{}\u{1f}{}", self.tenant_id, self.app_id, scope)
    }
}

#[derive(Clone)]
struct CachedToken {
    token: SecretString,
    refresh_at: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<CachedToken>>>;

/// Client-credentials tokens (`POST {login}/{tenant}/oauth2/v2.0/token`), cached
/// per (tenant, app, scope) until `refresh_margin` before they expire. A burst of
/// callers needing a fresh token makes one request: the first fetches while the
/// others wait for its answer.
pub struct TokenProvider {
    http: reqwest::Client,
    config: TeamsConfig,
    slots: Mutex<HashMap<String, Slot>>,
    requests: AtomicUsize,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider")
            .field("login_url", &self.config.login_base_url())
            .field("requests", &self.requests.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl TokenProvider {
    /// A provider using `config`'s login host, timeout and refresh margin.
    pub fn new(config: &TeamsConfig) -> Result<Self> {
        Ok(TokenProvider {
            http: config.http_client()?,
            config: config.clone(),
            slots: Mutex::new(HashMap::new()),
            requests: AtomicUsize::new(0),
        })
    }

    /// Token requests made so far (for tests and metrics).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    fn slot(&self, key: &str) -> Slot {
        let mut slots = match self.slots.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        slots.entry(key.to_owned()).or_default().clone()
    }

    /// A valid token for `credentials` and `scope`, from the cache when possible.
    pub async fn token(
        &self,
        credentials: &TeamsCredentials,
        scope: &str,
    ) -> std::result::Result<SecretString, TeamsApiError> {
        let slot = self.slot(&credentials.cache_key(scope));
        let mut guard = slot.lock().await;
        if let Some(cached) = guard.as_ref() {
            if Instant::now() < cached.refresh_at {
                return Ok(cached.token.clone());
            }
        }
        let (token, expires_in) = self.fetch(credentials, scope).await?;
        let lifetime = expires_in.saturating_sub(self.config.token_refresh_margin());
        *guard = Some(CachedToken {
            token: token.clone(),
            refresh_at: Instant::now() + lifetime,
        });
        Ok(token)
    }

    /// Drops the cached token (after the service refused it with 401).
    pub fn invalidate(&self, credentials: &TeamsCredentials, scope: &str) {
        let slot = self.slot(&credentials.cache_key(scope));
        if let Ok(mut g) = slot.try_lock() {
            *g = None;
        }
    }

    async fn fetch(
        &self,
        credentials: &TeamsCredentials,
        scope: &str,
    ) -> std::result::Result<(SecretString, Duration), TeamsApiError> {
        const OP: &str = "token";
        self.requests.fetch_add(1, Ordering::Relaxed);
        let url = self.config.token_url(&credentials.tenant_id);
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", credentials.app_id.as_str()),
            ("client_secret", credentials.client_secret.expose_secret()),
            ("scope", scope),
        ];
        let response = self
            .http
            .post(url)
            .form(&form)
            .send()
            .await
            .map_err(|e| TeamsApiError::network(Service::Login, OP, &e))?;
        let body = read_json(Service::Login, OP, response).await?;
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                TeamsApiError::new(
                    FailureClass::Temporary,
                    Service::Login,
                    OP,
                    None,
                    None,
                    "the token answer carried no access_token; it will be retried",
                )
            })?;
        let expires_in = body
            .get("expires_in")
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(3_599);
        Ok((
            SecretString::from(token.to_owned()),
            Duration::from_secs(expires_in),
        ))
    }
}
