//! Tenants and connections: which customer organisation an event belongs to, and each tenant's links to platform accounts with their (secret) credentials and state.
//!
//! A **tenant** is the host's customer organisation, an opaque id the host
//! chooses; events without one belong to [`TenantId::DEFAULT`]. A
//! **connection** is one tenant's link to one platform account (a Slack
//! workspace, a Teams tenant, a Zendesk subdomain, a mailbox, a bucket's
//! credentials). Connections are stored in the [`crate::Store`] with their
//! secrets encrypted (see [`crate::secret::Keyring`]); destinations receive the
//! delivery's connection with each [`crate::Delivery`] and never hold one
//! tenant's credentials themselves.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The id of a tenant (the host's customer organisation).
///
/// Opaque to switchboard: 1–128 bytes, no control characters. The default
/// tenant, used by events that name none, is `"default"`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl Serialize for TenantId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl TenantId {
    /// The id of the default tenant.
    pub const DEFAULT: &'static str = "default";

    /// Validates a tenant id.
    pub fn new(id: impl AsRef<str>) -> Result<TenantId> {
        let id = id.as_ref();
        if id.is_empty() || id.len() > 128 {
            return Err(Error::invalid_input(
                "a tenant id must be between 1 and 128 bytes",
            ));
        }
        if id.chars().any(char::is_control) {
            return Err(Error::invalid_input(
                "a tenant id must not contain control characters",
            ));
        }
        Ok(TenantId(Arc::from(id)))
    }

    /// The default tenant.
    pub fn default_tenant() -> TenantId {
        TenantId(Arc::from(Self::DEFAULT))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the default tenant.
    pub fn is_default(&self) -> bool {
        &*self.0 == Self::DEFAULT
    }
}

impl Default for TenantId {
    fn default() -> Self {
        TenantId::default_tenant()
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for TenantId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        TenantId::new(s)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TenantId::new(&s).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<&str> for TenantId {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        TenantId::new(s)
    }
}

impl TryFrom<String> for TenantId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        TenantId::new(s)
    }
}

/// Well-known secret names of a connection.
pub mod secret_names {
    /// The access token (Slack bot token, OAuth bearer, API token…).
    pub const ACCESS_TOKEN: &str = "access_token";
    /// The refresh token of a rotating token.
    pub const REFRESH_TOKEN: &str = "refresh_token";
    /// A client secret or password.
    pub const CLIENT_SECRET: &str = "client_secret";
    /// A password (SMTP/IMAP).
    pub const PASSWORD: &str = "password";
}

/// A connection's secrets: name → value. `Debug` prints the names only, and
/// `Serialize` writes the names only, never a value.
#[derive(Clone, Default)]
pub struct Secrets(BTreeMap<String, SecretString>);

impl Secrets {
    /// No secrets.
    pub fn new() -> Self {
        Secrets(BTreeMap::new())
    }
    /// Adds or replaces a secret.
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: SecretString) -> Self {
        self.0.insert(name.into(), value);
        self
    }
    /// Adds or replaces a secret in place.
    pub fn insert(&mut self, name: impl Into<String>, value: SecretString) {
        self.0.insert(name.into(), value);
    }
    /// Removes a secret.
    pub fn remove(&mut self, name: &str) -> Option<SecretString> {
        self.0.remove(name)
    }
    /// One secret.
    pub fn get(&self, name: &str) -> Option<&SecretString> {
        self.0.get(name)
    }
    /// The secrets' names and values, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SecretString)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
    /// The names of the secrets held.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "[redacted]")))
            .finish()
    }
}

impl Serialize for Secrets {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.0.keys())
    }
}

/// Whether a connection can be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ConnectionState {
    /// Usable.
    Connected,
    /// Not usable until reconnected: credentials revoked, app uninstalled, …
    Disconnected {
        /// Why, for the admin ("token revoked — reinstall").
        reason: String,
        /// Since when.
        since: DateTime<Utc>,
    },
}

impl ConnectionState {
    /// True when connected.
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnectionState::Connected)
    }
}

/// Identifies a connection: the platform and the platform's account key (a Slack
/// team or enterprise id, a Teams tenant id, a Zendesk subdomain, a mailbox…).
/// Unique across tenants: one platform account belongs to one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnectionKey {
    /// The platform (`slack`, `teams`, `zendesk`, `smtp`, `s3`…).
    pub platform: String,
    /// The platform's account key.
    pub account: String,
}

impl ConnectionKey {
    /// A key.
    pub fn new(platform: impl Into<String>, account: impl Into<String>) -> Self {
        ConnectionKey {
            platform: platform.into(),
            account: account.into(),
        }
    }
}

impl fmt::Display for ConnectionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.platform, self.account)
    }
}

/// One tenant's link to one platform account.
///
/// Build one with [`Connection::builder`]; store it with
/// [`crate::Switchboard::connect`] (which also resumes that tenant's parked
/// deliveries) or [`crate::store::ConnectionStore::put_connection`].
#[derive(Clone, Serialize)]
pub struct Connection {
    /// The tenant it belongs to.
    pub tenant: TenantId,
    /// Platform and account.
    pub key: ConnectionKey,
    /// Credentials; encrypted at rest, never serialized or printed.
    pub secrets: Secrets,
    /// When the access token expires (rotating tokens).
    pub expires_at: Option<DateTime<Utc>>,
    /// The platform's non-secret ids and details (team id, enterprise id,
    /// bot user id, scopes, service URL…).
    pub data: serde_json::Value,
    /// Connected or disconnected.
    pub state: ConnectionState,
    /// The tenant's default connection for this platform (used when a delivery
    /// does not name one).
    pub is_default: bool,
    /// Bumped by the store on every change of the secrets; compare-and-swap
    /// updates (token rotation) name the revision they read.
    pub revision: u64,
    /// When it was first stored.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("tenant", &self.tenant)
            .field("key", &self.key)
            .field("secrets", &self.secrets)
            .field("expires_at", &self.expires_at)
            .field("data", &self.data)
            .field("state", &self.state)
            .field("is_default", &self.is_default)
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Starts a connection of `tenant` to `account` on `platform`.
    pub fn builder(
        tenant: TenantId,
        platform: impl Into<String>,
        account: impl Into<String>,
    ) -> ConnectionBuilder {
        let now = Utc::now();
        ConnectionBuilder {
            connection: Connection {
                tenant,
                key: ConnectionKey::new(platform, account),
                secrets: Secrets::new(),
                expires_at: None,
                data: serde_json::Value::Null,
                state: ConnectionState::Connected,
                is_default: true,
                revision: 0,
                created_at: now,
                updated_at: now,
            },
        }
    }

    /// The platform.
    pub fn platform(&self) -> &str {
        &self.key.platform
    }

    /// The platform's account key.
    pub fn account(&self) -> &str {
        &self.key.account
    }

    /// One secret by name.
    pub fn secret(&self, name: &str) -> Option<&SecretString> {
        self.secrets.get(name)
    }

    /// The access token, if one is held.
    pub fn access_token(&self) -> Option<&SecretString> {
        self.secrets.get(secret_names::ACCESS_TOKEN)
    }

    /// A string field of [`Connection::data`].
    pub fn data_str(&self, field: &str) -> Option<&str> {
        self.data.get(field).and_then(serde_json::Value::as_str)
    }

    /// True when connected.
    pub fn is_connected(&self) -> bool {
        self.state.is_connected()
    }
}

/// Builder for [`Connection`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ConnectionBuilder {
    connection: Connection,
}

impl ConnectionBuilder {
    /// Adds a secret.
    pub fn secret(mut self, name: impl Into<String>, value: SecretString) -> Self {
        self.connection.secrets.insert(name, value);
        self
    }
    /// Sets the access token.
    pub fn access_token(self, token: SecretString) -> Self {
        self.secret(secret_names::ACCESS_TOKEN, token)
    }
    /// Sets the refresh token.
    pub fn refresh_token(self, token: SecretString) -> Self {
        self.secret(secret_names::REFRESH_TOKEN, token)
    }
    /// Sets when the access token expires.
    pub fn expires_at(mut self, at: DateTime<Utc>) -> Self {
        self.connection.expires_at = Some(at);
        self
    }
    /// Sets the non-secret details.
    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.connection.data = data;
        self
    }
    /// Whether this is the tenant's default connection for the platform (default: yes).
    pub fn default_for_platform(mut self, is_default: bool) -> Self {
        self.connection.is_default = is_default;
        self
    }
    /// Sets the creation and update time.
    pub fn at(mut self, now: DateTime<Utc>) -> Self {
        self.connection.created_at = now;
        self.connection.updated_at = now;
        self
    }
    /// Validates and returns the connection.
    pub fn build(self) -> Result<Connection> {
        let c = &self.connection;
        if c.key.platform.trim().is_empty() || c.key.account.trim().is_empty() {
            return Err(Error::invalid_input(
                "a connection needs a platform and an account",
            ));
        }
        Ok(self.connection)
    }
}
