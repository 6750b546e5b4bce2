//! Zendesk connector configuration: validated subdomain → base URL, credentials (API token or OAuth), timeouts and the account's request budget.

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::tenant::Connection;
use crate::{Error, ErrorKind, Result};

/// The `platform` of Zendesk connections (the connection's account is the subdomain).
pub const PLATFORM: &str = "zendesk";
/// The connection data field holding the agent email of API-token auth.
pub const EMAIL_FIELD: &str = "email";
/// The account-wide budget used when none is configured: 200 requests per minute
/// (Zendesk's Support Team plan limit; higher plans allow 400, 700 or 2,500).
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 200;
/// Zendesk's per-ticket update limit: 30 updates per 10 minutes per user per ticket.
pub const TICKET_UPDATES_PER_WINDOW: u32 = 30;
/// The window of [`TICKET_UPDATES_PER_WINDOW`].
pub const TICKET_UPDATE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Checks a Zendesk subdomain (`acme` in `https://acme.zendesk.com`): 1–63
/// characters of ASCII letters, digits and `-`, not starting or ending with `-`.
/// The result is lower-cased. Anything else (dots, slashes, `@`, ports, schemes)
/// is rejected, so a subdomain can never point the client at another host.
///
/// ```
/// use switchboard::zendesk::validate_subdomain;
/// assert_eq!(validate_subdomain(" Acme ").unwrap(), "acme");
/// assert!(validate_subdomain("evil.com/x").is_err());
/// ```
pub fn validate_subdomain(raw: &str) -> Result<String> {
    let s = raw.trim().to_ascii_lowercase();
    let ok = !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(s)
    } else {
        Err(Error::new(
            ErrorKind::Config,
            "a Zendesk subdomain is 1-63 letters, digits or '-' (e.g. \"acme\" for acme.zendesk.com)",
        ))
    }
}

/// The base URL of a validated subdomain: `https://{subdomain}.zendesk.com`.
pub fn base_url_for(subdomain: &str) -> Result<String> {
    let sub = validate_subdomain(subdomain)?;
    Ok(format!("https://{sub}.zendesk.com"))
}

/// How requests authenticate. `Debug` never prints a secret.
#[derive(Clone)]
pub enum ZendeskAuth {
    /// An API token: HTTP Basic with `{email}/token:{token}`.
    ApiToken {
        /// The agent's email address.
        email: String,
        /// The API token.
        token: SecretString,
    },
    /// An OAuth access token: `Authorization: Bearer {token}`.
    OAuth(SecretString),
}

impl fmt::Debug for ZendeskAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZendeskAuth::ApiToken { email, .. } => f
                .debug_struct("ApiToken")
                .field("email", email)
                .field("token", &"[redacted]")
                .finish(),
            ZendeskAuth::OAuth(_) => f.write_str("OAuth([redacted])"),
        }
    }
}

impl ZendeskAuth {
    /// API-token auth for `email`.
    pub fn api_token(email: impl Into<String>, token: SecretString) -> Self {
        ZendeskAuth::ApiToken {
            email: email.into().trim().to_owned(),
            token,
        }
    }

    /// OAuth bearer auth.
    pub fn oauth(token: SecretString) -> Self {
        ZendeskAuth::OAuth(token)
    }

    /// The `Authorization` header value (a secret).
    pub fn header_value(&self) -> SecretString {
        use base64::Engine as _;
        match self {
            ZendeskAuth::ApiToken { email, token } => {
                let raw = format!("{email}/token:{}", token.expose_secret());
                SecretString::from(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                ))
            }
            ZendeskAuth::OAuth(token) => {
                SecretString::from(format!("Bearer {}", token.expose_secret()))
            }
        }
    }
}

/// One Zendesk account to talk to: its base URL and credentials.
#[derive(Debug, Clone)]
pub struct ZendeskAccount {
    /// The account key (the subdomain); also keys per-account pacing.
    pub subdomain: String,
    /// `https://{subdomain}.zendesk.com`, or the configured override.
    pub base_url: String,
    /// The credentials.
    pub auth: ZendeskAuth,
}

impl ZendeskAccount {
    /// The account of `subdomain` under `config` (its base-URL override, if any, wins).
    pub fn new(config: &ZendeskConfig, subdomain: &str, auth: ZendeskAuth) -> Result<Self> {
        let subdomain = validate_subdomain(subdomain)?;
        let base_url = match &config.base_url {
            Some(url) => url.clone(),
            None => base_url_for(&subdomain)?,
        };
        Ok(ZendeskAccount {
            subdomain,
            base_url,
            auth,
        })
    }

    /// The account of a tenant's connection: `account` is the subdomain, the
    /// secret `access_token` is an API token when the data field `email` is set
    /// and an OAuth token otherwise.
    pub fn from_connection(config: &ZendeskConfig, connection: &Connection) -> Result<Self> {
        if connection.platform() != PLATFORM {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "a {} connection cannot be used for Zendesk",
                    connection.platform()
                ),
            ));
        }
        let token = connection.access_token().cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::Unauthorized,
                "the Zendesk connection has no access_token: reconnect Zendesk",
            )
        })?;
        let auth = match connection.data_str(EMAIL_FIELD) {
            Some(email) if !email.trim().is_empty() => ZendeskAuth::api_token(email, token),
            _ => ZendeskAuth::oauth(token),
        };
        Self::new(config, connection.account(), auth)
    }
}

/// Settings shared by the Zendesk client, destination and call flow.
///
/// ```
/// use switchboard::zendesk::ZendeskConfig;
/// let config = ZendeskConfig::new().requests_per_minute(400);
/// assert_eq!(config.budget_per_minute(), 400);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZendeskConfig {
    name: String,
    base_url: Option<String>,
    timeout: Option<Duration>,
    requests_per_minute: u32,
}

impl Default for ZendeskConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl ZendeskConfig {
    /// Defaults: destination name `zendesk`, base URL from each account's subdomain,
    /// a 30 s request timeout and [`DEFAULT_REQUESTS_PER_MINUTE`].
    pub fn new() -> Self {
        ZendeskConfig {
            name: PLATFORM.to_owned(),
            base_url: None,
            timeout: Some(Duration::from_secs(30)),
            requests_per_minute: DEFAULT_REQUESTS_PER_MINUTE,
        }
    }

    /// The destination's name.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Overrides the base URL for every account (tests, proxies). Must be an
    /// absolute `http`/`https` URL.
    pub fn base_url(mut self, url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url.trim()).map_err(|e| {
            Error::new(ErrorKind::Config, "invalid Zendesk base URL").with_source(e)
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::new(
                ErrorKind::Config,
                "the Zendesk base URL must use http or https",
            ));
        }
        self.base_url = Some(parsed.as_str().trim_end_matches('/').to_owned());
        Ok(self)
    }

    /// The per-request timeout (`None` disables it).
    #[must_use]
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// The account's API budget (requests per minute, per account); at least 1.
    #[must_use]
    pub fn requests_per_minute(mut self, n: u32) -> Self {
        self.requests_per_minute = n.max(1);
        self
    }

    /// The destination's name.
    pub fn destination_name(&self) -> &str {
        &self.name
    }

    /// The base-URL override, if set.
    pub fn base_url_override(&self) -> Option<&str> {
        self.base_url.as_deref()
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The requests-per-minute budget.
    pub fn budget_per_minute(&self) -> u32 {
        self.requests_per_minute
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains_are_labels_only() {
        assert_eq!(
            base_url_for("acme-1").unwrap(),
            "https://acme-1.zendesk.com"
        );
        for bad in [
            "",
            "-a",
            "a-",
            "a.b",
            "a/b",
            "a@b",
            "a:1",
            "ä",
            &"a".repeat(64),
        ] {
            assert!(validate_subdomain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn auth_headers() {
        let basic = ZendeskAuth::api_token("a@b.c", SecretString::from("t0k"));
        // base64("a@b.c/token:t0k")
        assert_eq!(
            basic.header_value().expose_secret(),
            "Basic YUBiLmMvdG9rZW46dDBr"
        );
        assert!(!format!("{basic:?}").contains("t0k"));
        let bearer = ZendeskAuth::oauth(SecretString::from("xyz"));
        assert_eq!(bearer.header_value().expose_secret(), "Bearer xyz");
        assert!(!format!("{bearer:?}").contains("xyz"));
    }
}
