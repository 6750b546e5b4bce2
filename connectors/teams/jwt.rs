//! Bot Framework JWT validation of incoming activities: OpenID metadata and signing keys fetched and cached, issuer, audience, lifetime, `serviceUrl` claim and channel endorsements checked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::api::{Service, TeamsApiError, read_json};
use super::config::{BOT_FRAMEWORK_ISSUER, TeamsConfig};
use crate::inbound::unauthorized;
use crate::{Error, ErrorKind, Result};

/// Clock skew allowed on `exp` and `nbf` (the Bot Framework's 5 minutes).
pub const CLOCK_SKEW: Duration = Duration::from_secs(300);
/// An unknown `kid` refetches the keys at most this often.
pub const MIN_REFETCH: Duration = Duration::from_secs(60);
/// Known keys are refreshed after this long even without an unknown `kid`.
pub const KEYS_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest `Authorization` header considered.
const MAX_TOKEN_LEN: usize = 16 * 1024;

struct Key {
    decoding: DecodingKey,
    endorsements: Vec<String>,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, std::sync::Arc<Key>>,
    fetched_at: Option<Instant>,
}

#[derive(Deserialize)]
struct Jwk {
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    kty: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    endorsements: Vec<String>,
}

/// The claims of a validated Bot Framework token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotClaims {
    /// `iss`.
    pub issuer: String,
    /// `aud` (the bot's app id).
    pub audience: String,
    /// The `serviceurl` claim.
    pub service_url: Option<String>,
    /// The signing key's endorsements (channel ids it may speak for).
    pub endorsements: Vec<String>,
}

#[derive(Deserialize)]
struct RawClaims {
    iss: String,
    #[serde(default)]
    aud: Value,
    #[serde(default)]
    serviceurl: Option<String>,
    #[serde(default, rename = "serviceUrl")]
    service_url: Option<String>,
}

/// Validates the `Authorization: Bearer` token the Bot Connector service puts on
/// every activity it sends to the bot.
///
/// The OpenID metadata document (default
/// [`super::DEFAULT_OPENID_METADATA_URL`]) names the `jwks_uri`; the keys are
/// cached for a day and refetched when a token names an unknown `kid` (at most
/// once per [`MIN_REFETCH`]). A token passes when it is RS256-signed by one of
/// those keys, its issuer is `https://api.botframework.com` (or one added with
/// [`BotAuthenticator::issuer`]), its audience is one of the app ids, it is
/// within its lifetime (±5 minutes), its `serviceurl` claim equals the
/// activity's `serviceUrl`, and the key's endorsements include the activity's
/// `channelId`. Every failure is `ErrorKind::Unauthorized`.
pub struct BotAuthenticator {
    http: reqwest::Client,
    metadata_url: String,
    audiences: Vec<String>,
    issuers: Vec<String>,
    cache: Mutex<KeyCache>,
    fetches: AtomicUsize,
}

impl std::fmt::Debug for BotAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotAuthenticator")
            .field("metadata_url", &self.metadata_url)
            .field("audiences", &self.audiences)
            .field("issuers", &self.issuers)
            .finish_non_exhaustive()
    }
}

fn normalise_url(u: &str) -> &str {
    u.trim().trim_end_matches('/')
}

impl BotAuthenticator {
    /// An authenticator for tokens addressed to `app_id`, using `config`'s
    /// OpenID metadata URL and timeout.
    pub fn new(config: &TeamsConfig, app_id: &str) -> Result<Self> {
        if app_id.trim().is_empty() {
            return Err(Error::new(ErrorKind::Config, "the Teams app id is empty"));
        }
        Ok(BotAuthenticator {
            http: config.http_client()?,
            metadata_url: config.openid_metadata().to_owned(),
            audiences: vec![app_id.trim().to_owned()],
            issuers: vec![BOT_FRAMEWORK_ISSUER.to_owned()],
            cache: Mutex::new(KeyCache::default()),
            fetches: AtomicUsize::new(0),
        })
    }

    /// Also accepts tokens for another app id (a host running several bots).
    #[must_use]
    pub fn audience(mut self, app_id: &str) -> Self {
        self.audiences.push(app_id.trim().to_owned());
        self
    }

    /// Also accepts another issuer, e.g. the Entra issuers newer channels use for
    /// single-tenant bots: `https://login.microsoftonline.com/{tenant}/v2.0` and
    /// `https://sts.windows.net/{tenant}/`.
    #[must_use]
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.issuers.push(issuer.trim().to_owned());
        self
    }

    /// Key-set fetches made so far (metadata + keys count as one).
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::Relaxed)
    }

    async fn fetch_keys(
        &self,
    ) -> std::result::Result<HashMap<String, std::sync::Arc<Key>>, TeamsApiError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let metadata = self
            .http
            .get(&self.metadata_url)
            .send()
            .await
            .map_err(|e| TeamsApiError::network(Service::OpenId, "metadata", &e))?;
        let metadata = read_json(Service::OpenId, "metadata", metadata).await?;
        let jwks_uri = metadata
            .get("jwks_uri")
            .and_then(Value::as_str)
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .ok_or_else(|| {
                TeamsApiError::new(
                    super::FailureClass::Temporary,
                    Service::OpenId,
                    "metadata",
                    None,
                    None,
                    "the OpenID metadata has no jwks_uri",
                )
            })?
            .to_owned();
        let keys = self
            .http
            .get(&jwks_uri)
            .send()
            .await
            .map_err(|e| TeamsApiError::network(Service::OpenId, "keys", &e))?;
        let keys = read_json(Service::OpenId, "keys", keys).await?;
        let list: Vec<Jwk> = keys
            .get("keys")
            .cloned()
            .and_then(|k| serde_json::from_value(k).ok())
            .unwrap_or_default();
        let mut out = HashMap::new();
        for jwk in list {
            let (Some(kid), Some(n), Some(e)) = (jwk.kid, jwk.n, jwk.e) else {
                continue;
            };
            if jwk.kty.as_deref().is_some_and(|k| k != "RSA") {
                continue;
            }
            if let Ok(decoding) = DecodingKey::from_rsa_components(&n, &e) {
                out.insert(
                    kid,
                    std::sync::Arc::new(Key {
                        decoding,
                        endorsements: jwk.endorsements,
                    }),
                );
            }
        }
        Ok(out)
    }

    async fn key(&self, kid: &str) -> Result<std::sync::Arc<Key>> {
        let mut cache = self.cache.lock().await;
        let stale = cache.fetched_at.is_none_or(|t| t.elapsed() >= KEYS_TTL);
        if !stale {
            if let Some(k) = cache.keys.get(kid) {
                return Ok(k.clone());
            }
        }
        let may_fetch = stale || cache.fetched_at.is_none_or(|t| t.elapsed() >= MIN_REFETCH);
        if may_fetch {
            match self.fetch_keys().await {
                Ok(keys) => {
                    cache.keys = keys;
                    cache.fetched_at = Some(Instant::now());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not fetch the Bot Framework signing keys");
                    if cache.keys.is_empty() {
                        return Err(Error::from(e));
                    }
                }
            }
        }
        cache
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| unauthorized("the token's signing key is unknown"))
    }

    /// Validates `authorization` (the whole header value) for an activity from
    /// `service_url` on `channel_id`.
    pub async fn validate(
        &self,
        authorization: &str,
        service_url: &str,
        channel_id: &str,
    ) -> Result<BotClaims> {
        if authorization.len() > MAX_TOKEN_LEN {
            return Err(unauthorized("the Authorization header is too long"));
        }
        let token = authorization
            .trim()
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("no Bearer token"))?;
        let header = decode_header(token).map_err(|_| unauthorized("malformed token"))?;
        if header.alg != Algorithm::RS256 {
            return Err(unauthorized("the token is not RS256-signed"));
        }
        let kid = header
            .kid
            .ok_or_else(|| unauthorized("the token names no signing key"))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = CLOCK_SKEW.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_audience(&self.audiences);
        validation.set_issuer(&self.issuers);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = decode::<RawClaims>(token, &key.decoding, &validation)
            .map_err(|e| unauthorized(&format!("token rejected: {e}")))?;
        let claims = data.claims;
        let claimed = claims.serviceurl.or(claims.service_url);
        match claimed.as_deref() {
            Some(c) if normalise_url(c) == normalise_url(service_url) => {}
            _ => {
                return Err(unauthorized(
                    "the serviceurl claim does not match the activity",
                ));
            }
        }
        if !key.endorsements.iter().any(|e| e == channel_id) {
            return Err(unauthorized(
                "the signing key is not endorsed for the activity's channel",
            ));
        }
        let audience = match &claims.aud {
            Value::String(s) => s.clone(),
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .find(|s| self.audiences.iter().any(|x| x == s))
                .unwrap_or_default()
                .to_owned(),
            _ => String::new(),
        };
        Ok(BotClaims {
            issuer: claims.iss,
            audience,
            service_url: claimed,
            endorsements: key.endorsements.clone(),
        })
    }
}
