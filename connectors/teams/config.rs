//! Teams connector configuration: login, Graph and OpenID-metadata hosts, default service URL, destination name, timeout and pacing.

use std::time::Duration;

use crate::destination::RateLimit;
use crate::{Error, ErrorKind, Result};

/// The `platform` under which Teams connections are stored (account: the customer's Entra tenant id).
pub const PLATFORM: &str = "teams";
/// The Microsoft identity platform host (commercial cloud and GCC). Tokens come from
/// `{login}/{tenant}/oauth2/v2.0/token`.
pub const DEFAULT_LOGIN_URL: &str = "https://login.microsoftonline.com";
/// Microsoft Graph (commercial cloud and GCC).
pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com";
/// The Bot Framework OpenID metadata document for tokens the Bot Connector sends to bots.
pub const DEFAULT_OPENID_METADATA_URL: &str =
    "https://login.botframework.com/v1/.well-known/openidconfiguration";
/// The global Teams Bot Framework service URL, used when no conversation told us its own.
pub const DEFAULT_SERVICE_URL: &str = "https://smba.trafficmanager.net/teams";
/// The OAuth scope of Bot Connector tokens.
pub const BOT_FRAMEWORK_SCOPE: &str = "https://api.botframework.com/.default";
/// The Graph scope of application tokens.
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
/// The tenant multi-tenant bot registrations (created before 2025) take tokens from.
pub const BOT_FRAMEWORK_TENANT: &str = "botframework.com";
/// The issuer of tokens the Bot Connector service sends to bots.
pub const BOT_FRAMEWORK_ISSUER: &str = "https://api.botframework.com";

/// Settings shared by the Teams destination, the Graph identity resolver and the inbound handlers.
///
/// ```
/// use switchboard::teams::TeamsConfig;
/// let config = TeamsConfig::new().login_url("https://login.microsoftonline.us").unwrap();
/// assert_eq!(config.login_base_url(), "https://login.microsoftonline.us");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamsConfig {
    name: String,
    login_url: String,
    graph_url: String,
    openid_metadata_url: String,
    default_service_url: String,
    timeout: Option<Duration>,
    refresh_margin: Duration,
    conversation_limits: Vec<RateLimit>,
    tenant_limit: RateLimit,
}

impl Default for TeamsConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Validates an absolute http(s) URL and strips a trailing slash.
pub(crate) fn base_url(what: &str, url: &str) -> Result<String> {
    let parsed = url::Url::parse(url.trim())
        .map_err(|e| Error::new(ErrorKind::Config, format!("invalid {what}")).with_source(e))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Error::new(
            ErrorKind::Config,
            format!("the {what} must be an http or https URL with a host"),
        ));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

impl TeamsConfig {
    /// Defaults: destination name `teams`; the commercial-cloud login, Graph and
    /// OpenID-metadata hosts; a 10 s request timeout; tokens refreshed 5 minutes
    /// before they expire; per conversation 7 messages per second, 8 per 2 s,
    /// 60 per 30 s and 1,800 per hour; 50 requests per second per app per tenant
    /// (Microsoft's published bot limits).
    pub fn new() -> Self {
        TeamsConfig {
            name: PLATFORM.to_owned(),
            login_url: DEFAULT_LOGIN_URL.to_owned(),
            graph_url: DEFAULT_GRAPH_URL.to_owned(),
            openid_metadata_url: DEFAULT_OPENID_METADATA_URL.to_owned(),
            default_service_url: DEFAULT_SERVICE_URL.to_owned(),
            timeout: Some(Duration::from_secs(10)),
            refresh_margin: Duration::from_secs(300),
            conversation_limits: vec![
                RateLimit {
                    burst: 7,
                    per: Duration::from_secs(1),
                },
                RateLimit {
                    burst: 8,
                    per: Duration::from_secs(2),
                },
                RateLimit {
                    burst: 60,
                    per: Duration::from_secs(30),
                },
                RateLimit::per_hour(1_800),
            ],
            tenant_limit: RateLimit::per_second(50),
        }
    }

    /// The destination's name (what routes refer to; also the platform of identity links).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The identity platform host, e.g. `https://login.microsoftonline.us` for GCC
    /// High and DoD, or a test server.
    pub fn login_url(mut self, url: &str) -> Result<Self> {
        self.login_url = base_url("Teams login URL", url)?;
        Ok(self)
    }

    /// The Graph host, e.g. `https://graph.microsoft.us` (GCC High) or
    /// `https://dod-graph.microsoft.us` (DoD).
    pub fn graph_url(mut self, url: &str) -> Result<Self> {
        self.graph_url = base_url("Graph URL", url)?;
        Ok(self)
    }

    /// The Bot Framework OpenID metadata URL whose `jwks_uri` lists the keys that
    /// sign incoming activities (sovereign clouds have their own; tests serve theirs).
    pub fn openid_metadata_url(mut self, url: &str) -> Result<Self> {
        self.openid_metadata_url = base_url("OpenID metadata URL", url)?;
        Ok(self)
    }

    /// The service URL used for 1:1 conversations when the connection stores none
    /// (GCC: `https://smba.infra.gcc.teams.microsoft.com/teams`, GCC High:
    /// `https://smba.infra.gov.teams.microsoft.us/teams`, DoD:
    /// `https://smba.infra.dod.teams.microsoft.us/teams`).
    pub fn default_service_url(mut self, url: &str) -> Result<Self> {
        self.default_service_url = base_url("Teams service URL", url)?;
        Ok(self)
    }

    /// The per-request timeout; `None` disables it.
    #[must_use]
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long before expiry a cached token is replaced (default 5 minutes).
    #[must_use]
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    /// Replaces the per-conversation limits (all windows apply at once).
    #[must_use]
    pub fn conversation_limits(mut self, limits: Vec<RateLimit>) -> Self {
        self.conversation_limits = limits;
        self
    }

    /// Replaces the per-app-per-tenant limit (default 50 per second).
    #[must_use]
    pub fn tenant_limit(mut self, limit: RateLimit) -> Self {
        self.tenant_limit = limit;
        self
    }

    /// The destination's name.
    pub fn destination_name(&self) -> &str {
        &self.name
    }

    /// The identity platform host, without a trailing slash.
    pub fn login_base_url(&self) -> &str {
        &self.login_url
    }

    /// The Graph host, without a trailing slash.
    pub fn graph_base_url(&self) -> &str {
        &self.graph_url
    }

    /// The OpenID metadata URL.
    pub fn openid_metadata(&self) -> &str {
        &self.openid_metadata_url
    }

    /// The fallback service URL, without a trailing slash.
    pub fn fallback_service_url(&self) -> &str {
        &self.default_service_url
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The token refresh margin.
    pub fn token_refresh_margin(&self) -> Duration {
        self.refresh_margin
    }

    /// The per-conversation limits.
    pub fn per_conversation_limits(&self) -> &[RateLimit] {
        &self.conversation_limits
    }

    /// The per-app-per-tenant limit.
    pub fn per_tenant_limit(&self) -> RateLimit {
        self.tenant_limit
    }

    /// The token endpoint for `tenant`.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.login_url, tenant)
    }

    /// An HTTP client with this configuration's timeout.
    pub(crate) fn http_client(&self) -> Result<reqwest::Client> {
        let mut b = reqwest::Client::builder();
        if let Some(t) = self.timeout {
            b = b.timeout(t);
        }
        b.build().map_err(|e| {
            Error::new(ErrorKind::Config, "could not build an HTTP client").with_source(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_validated_and_normalised() {
        let c = TeamsConfig::new()
            .login_url("http://127.0.0.1:9/")
            .unwrap()
            .graph_url("http://127.0.0.1:9/graph/")
            .unwrap();
        assert_eq!(c.token_url("t1"), "http://127.0.0.1:9/t1/oauth2/v2.0/token");
        assert_eq!(c.graph_base_url(), "http://127.0.0.1:9/graph");
        assert!(TeamsConfig::new().login_url("not a url").is_err());
        assert!(TeamsConfig::new().graph_url("ftp://x").is_err());
    }

    #[test]
    fn published_limits_are_the_defaults() {
        let c = TeamsConfig::new();
        let l = c.per_conversation_limits();
        assert_eq!(l.len(), 4);
        assert_eq!((l[0].burst, l[0].per), (7, Duration::from_secs(1)));
        assert_eq!((l[3].burst, l[3].per), (1_800, Duration::from_secs(3_600)));
        assert_eq!(c.per_tenant_limit().burst, 50);
    }
}
