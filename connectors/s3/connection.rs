//! Tenant connections for S3: building one from a bucket's credentials, and reading the credentials, region, endpoint and bucket back at run time.

use secrecy::{ExposeSecret, SecretString};

use super::config::{Credentials, check_endpoint};
use crate::tenant::{Connection, ConnectionBuilder, TenantId};
use crate::{Error, ErrorKind, Result};

/// The platform name of S3 connections (`ConnectionKey { platform: "s3", .. }`).
pub const S3_PLATFORM: &str = "s3";

/// The secret holding the access key id.
pub const ACCESS_KEY_ID: &str = "access_key_id";
/// The secret holding the secret access key.
pub const SECRET_ACCESS_KEY: &str = "secret_access_key";
/// The secret holding the session token of temporary credentials (optional).
pub const SESSION_TOKEN: &str = "session_token";

/// Builds a tenant's connection to an S3 bucket (or an S3-compatible service):
/// platform [`S3_PLATFORM`], an account name the host chooses (unique across
/// tenants, e.g. `acme-hr-exports`), the access key as secrets
/// ([`ACCESS_KEY_ID`], [`SECRET_ACCESS_KEY`], optionally [`SESSION_TOKEN`]) and
/// the non-secret `region`, `endpoint` and `bucket` in its data.
///
/// Store it with [`crate::Switchboard::connect`] or
/// [`crate::store::ConnectionStore::put_connection`] (the secrets are sealed at
/// rest); an S3 integration of that tenant then uses it — the one named by
/// [`crate::s3::S3Config::connection`], else the tenant's default S3 connection.
///
/// ```
/// use switchboard::s3::S3Connection;
/// use switchboard::tenant::TenantId;
/// let connection = S3Connection::new(TenantId::new("acme").unwrap(), "acme-hr", "AKIDEXAMPLE", "secret")
///     .region("eu-central-1")
///     .bucket("acme-exports")
///     .build()
///     .unwrap();
/// assert_eq!(connection.key.to_string(), "s3:acme-hr");
/// assert_eq!(connection.data_str("bucket"), Some("acme-exports"));
/// assert!(!format!("{connection:?}").contains("secret\""));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct S3Connection {
    builder: ConnectionBuilder,
    data: serde_json::Map<String, serde_json::Value>,
}

impl S3Connection {
    /// A connection of `tenant` named `account` with a static access key.
    pub fn new(
        tenant: TenantId,
        account: impl Into<String>,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        let builder = Connection::builder(tenant, S3_PLATFORM, account)
            .secret(ACCESS_KEY_ID, SecretString::from(access_key_id.into()))
            .secret(
                SECRET_ACCESS_KEY,
                SecretString::from(secret_access_key.into()),
            );
        S3Connection {
            builder,
            data: serde_json::Map::new(),
        }
    }

    /// Adds the session token of temporary (STS) credentials.
    pub fn session_token(mut self, token: impl Into<String>) -> Self {
        self.builder = self
            .builder
            .secret(SESSION_TOKEN, SecretString::from(token.into()));
        self
    }

    /// The bucket's region.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.data.insert("region".into(), region.into().into());
        self
    }

    /// An endpoint override (MinIO, R2, …), e.g. `http://127.0.0.1:9000`.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.data.insert("endpoint".into(), endpoint.into().into());
        self
    }

    /// The bucket these credentials are for: an integration using the
    /// connection must read from it.
    pub fn bucket(mut self, bucket: impl Into<String>) -> Self {
        self.data.insert("bucket".into(), bucket.into().into());
        self
    }

    /// Whether this is the tenant's default S3 connection (default: yes).
    pub fn default_for_platform(mut self, is_default: bool) -> Self {
        self.builder = self.builder.default_for_platform(is_default);
        self
    }

    /// Validates and returns the connection.
    pub fn build(self) -> Result<Connection> {
        let connection = self
            .builder
            .data(serde_json::Value::Object(self.data))
            .build()?;
        let resolved = resolve(&connection)?;
        if let Some(endpoint) = &resolved.endpoint {
            check_endpoint(endpoint)?;
        }
        Ok(connection)
    }
}

/// What a connection contributes to a run.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) credentials: Credentials,
    pub(crate) region: Option<String>,
    pub(crate) endpoint: Option<String>,
    pub(crate) bucket: Option<String>,
}

/// Reads a stored S3 connection: its credentials and data. A disconnected
/// connection, or one without both keys, is [`ErrorKind::Unauthorized`].
pub(crate) fn resolve(connection: &Connection) -> Result<Resolved> {
    let key = &connection.key;
    if key.platform != S3_PLATFORM {
        return Err(Error::config(format!(
            "the connection {key} is not an S3 connection (platform {S3_PLATFORM:?})"
        )));
    }
    if let crate::tenant::ConnectionState::Disconnected { reason, .. } = &connection.state {
        return Err(Error::new(
            ErrorKind::Unauthorized,
            format!(
                "the S3 connection {key} is disconnected ({reason}); reconnect it with new credentials"
            ),
        ));
    }
    let missing = |name: &str| {
        Error::new(
            ErrorKind::Unauthorized,
            format!(
                "the S3 connection {key} has no {name} secret; reconnect it with an access key id and secret access key"
            ),
        )
    };
    let access_key_id = connection
        .secret(ACCESS_KEY_ID)
        .ok_or_else(|| missing(ACCESS_KEY_ID))?
        .expose_secret()
        .trim()
        .to_owned();
    let secret_access_key = connection
        .secret(SECRET_ACCESS_KEY)
        .ok_or_else(|| missing(SECRET_ACCESS_KEY))?
        .clone();
    if access_key_id.is_empty() {
        return Err(missing(ACCESS_KEY_ID));
    }
    let credentials = Credentials::AccessKey {
        access_key_id,
        secret_access_key,
        session_token: connection.secret(SESSION_TOKEN).cloned(),
    };
    let field = |name: &str| {
        connection
            .data_str(name)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Ok(Resolved {
        credentials,
        region: field("region"),
        endpoint: field("endpoint"),
        bucket: field("bucket"),
    })
}
