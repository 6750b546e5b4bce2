//! Slack connector configuration: API base URL, destination name, HTTP timeout and pacing.

use std::time::Duration;

use crate::destination::RateLimit;
use crate::{Error, ErrorKind, Result};

/// Slack's Web API base URL (override for GovSlack, proxies and tests).
pub const DEFAULT_BASE_URL: &str = "https://slack.com/api";
/// Where users approve an installation (OAuth v2).
pub const DEFAULT_AUTHORIZE_URL: &str = "https://slack.com/oauth/v2/authorize";
/// The `platform` under which Slack installations are stored (key: the team id).
pub const PLATFORM: &str = "slack";

/// Settings shared by the Slack destination, identity resolver and inbound handlers.
///
/// ```
/// use switchboard::slack::SlackConfig;
/// let config = SlackConfig::new().base_url("https://slack.com/api").unwrap();
/// assert_eq!(config.destination_name(), "slack");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackConfig {
    name: String,
    base_url: String,
    timeout: Option<Duration>,
    channel_limit: RateLimit,
    workspace_limit: RateLimit,
    channel_ttl: Duration,
    tier2_interval: Duration,
    tier3_interval: Duration,
}

/// Slack's Tier 2 (`conversations.list`, "20+ per minute"): one call per 3 s.
pub const TIER2_INTERVAL: Duration = Duration::from_secs(3);
/// Slack's Tier 3 (`conversations.open`, "50+ per minute"): one call per 1.2 s.
pub const TIER3_INTERVAL: Duration = Duration::from_millis(1_200);
/// How long resolved channel names are trusted before they are listed again.
pub const CHANNEL_NAME_TTL: Duration = Duration::from_secs(3_600);

impl Default for SlackConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl SlackConfig {
    /// Defaults: destination name `slack`, base URL [`DEFAULT_BASE_URL`], a 10 s
    /// request timeout, 1 message/second per channel and 300 messages/minute per
    /// workspace (see the module docs for where these numbers come from).
    pub fn new() -> Self {
        SlackConfig {
            name: PLATFORM.to_owned(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            timeout: Some(Duration::from_secs(10)),
            channel_limit: RateLimit::per_second(1),
            workspace_limit: RateLimit::per_minute(300),
            channel_ttl: CHANNEL_NAME_TTL,
            tier2_interval: TIER2_INTERVAL,
            tier3_interval: TIER3_INTERVAL,
        }
    }

    /// The destination's name (what routes refer to; also the platform of identity links).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The Web API base URL, e.g. `https://slack.com/api` or a test server's URL.
    /// Must be an absolute `http`/`https` URL.
    pub fn base_url(mut self, url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url.trim())
            .map_err(|e| Error::new(ErrorKind::Config, "invalid Slack base URL").with_source(e))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::new(
                ErrorKind::Config,
                "the Slack base URL must use http or https",
            ));
        }
        self.base_url = parsed.as_str().trim_end_matches('/').to_owned();
        Ok(self)
    }

    /// The per-request timeout; `None` disables it (useful under a paused test clock,
    /// where a pending timer would fire while a request waits for the network).
    #[must_use]
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// The pace per channel (default 1 message per second, no burst).
    #[must_use]
    pub fn channel_limit(mut self, limit: RateLimit) -> Self {
        self.channel_limit = limit;
        self
    }

    /// The pace for the whole workspace (default 300 messages per minute).
    #[must_use]
    pub fn workspace_limit(mut self, limit: RateLimit) -> Self {
        self.workspace_limit = limit;
        self
    }

    /// How long resolved channel names are cached (default 1 hour); a
    /// `channel_not_found` answer for a name refreshes it at once.
    #[must_use]
    pub fn channel_name_ttl(mut self, ttl: Duration) -> Self {
        self.channel_ttl = ttl;
        self
    }

    /// The spacing of Tier 2 calls per connection (`conversations.list`
    /// pages; default [`TIER2_INTERVAL`]).
    #[must_use]
    pub fn tier2_interval(mut self, interval: Duration) -> Self {
        self.tier2_interval = interval;
        self
    }

    /// The spacing of Tier 3 calls per connection (`conversations.open`;
    /// default [`TIER3_INTERVAL`]).
    #[must_use]
    pub fn tier3_interval(mut self, interval: Duration) -> Self {
        self.tier3_interval = interval;
        self
    }

    /// The channel-name cache's lifetime.
    pub fn channel_cache_ttl(&self) -> Duration {
        self.channel_ttl
    }

    /// The Tier 2 spacing.
    pub fn tier2(&self) -> Duration {
        self.tier2_interval
    }

    /// The Tier 3 spacing.
    pub fn tier3(&self) -> Duration {
        self.tier3_interval
    }

    /// The destination's name.
    pub fn destination_name(&self) -> &str {
        &self.name
    }

    /// The Web API base URL, without a trailing slash.
    pub fn api_base_url(&self) -> &str {
        &self.base_url
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The per-channel limit.
    pub fn per_channel_limit(&self) -> RateLimit {
        self.channel_limit
    }

    /// The workspace-wide limit.
    pub fn per_workspace_limit(&self) -> RateLimit {
        self.workspace_limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_is_validated_and_normalised() {
        let c = SlackConfig::new()
            .base_url("http://127.0.0.1:9/api/")
            .unwrap();
        assert_eq!(c.api_base_url(), "http://127.0.0.1:9/api");
        assert!(SlackConfig::new().base_url("not a url").is_err());
        assert!(SlackConfig::new().base_url("ftp://x/api").is_err());
    }
}
