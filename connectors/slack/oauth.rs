//! OAuth v2 install per tenant: a signed, single-use, 10-minute `state` carrying the tenant and bound to the browser by a cookie; the code exchange stored as the tenant's connection; uninstall and token refresh per connection.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::Rng as _;
use secrecy::{ExposeSecret, SecretString};

use super::api::SlackClient;
use super::config::{DEFAULT_AUTHORIZE_URL, SlackConfig};
use super::connection::connection_from_access;
use super::token::TokenRotation;
use crate::engine::Switchboard;
use crate::inbound::{
    InboundRequest, InboundResponse, constant_time_eq, error_response, hmac_sha256, response,
    unauthorized,
};
use crate::store::Store;
use crate::tenant::{Connection, ConnectionKey, ConnectionState, TenantId};
use crate::{Error, ErrorKind, Result};

/// How long an install link's `state` stays valid.
pub const STATE_TTL: Duration = Duration::from_secs(10 * 60);
/// The cookie binding an install to the browser that started it.
pub const STATE_COOKIE: &str = "switchboard_slack_oauth";
const STATE_SCOPE: &str = "slack:oauth-state";

/// The bot scopes the connector needs: post (`chat:write`), open DMs (`im:write`),
/// resolve channel names (`channels:read`, `groups:read`), sync users by email
/// (`users:read`, `users:read.email`) and receive slash commands and shortcuts
/// (`commands`).
pub const DEFAULT_BOT_SCOPES: &[&str] = &[
    "chat:write",
    "im:write",
    "channels:read",
    "groups:read",
    "users:read",
    "users:read.email",
    "commands",
];

type TenantOf = Arc<dyn Fn(&InboundRequest) -> Option<TenantId> + Send + Sync>;

/// The start of one install: the authorize URL to send the browser to, and
/// the `Set-Cookie` value that binds the install to that browser.
#[derive(Clone)]
pub struct InstallStart {
    /// Slack's authorize URL with the scopes and the signed `state`.
    pub url: String,
    /// The `Set-Cookie` header value to send with the redirect.
    pub set_cookie: String,
}

impl fmt::Debug for InstallStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallStart")
            .field("url", &self.url)
            .field("set_cookie", &"[redacted]")
            .finish()
    }
}

/// The OAuth v2 install flow for one Slack app, serving every tenant.
///
/// [`SlackOAuth::install_url`] builds the "Add to Slack" link for a tenant
/// with the bot scopes and a `state` that is HMAC-signed, expires after
/// [`STATE_TTL`], is single use ([`crate::store::OnceStore::remember_once`]),
/// carries the tenant, and is bound to the browser that started the install:
/// [`SlackOAuth::handle_install`] sets a cookie holding a random secret whose
/// HMAC is in the state, and the callback refuses a state whose browser does
/// not present that cookie (so an install link minted for one tenant and
/// replayed from another browser cannot link the replayer's workspace to that
/// tenant). The callback exchanges the `code` with `oauth.v2.access` and
/// stores the tenant's connection with [`Switchboard::connect`] (account: the
/// team id, or the enterprise id for an org-wide install), which resumes the
/// tenant's parked Slack deliveries.
pub struct SlackOAuth {
    client: SlackClient,
    client_id: String,
    client_secret: SecretString,
    state_key: SecretString,
    redirect_uri: Option<String>,
    scopes: Vec<String>,
    authorize_url: String,
    store: Arc<dyn Store>,
    switchboard: Option<Switchboard>,
    success_url: Option<String>,
    tenant_of: Option<TenantOf>,
    cookie_path: String,
}

impl fmt::Debug for SlackOAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackOAuth")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("redirect_uri", &self.redirect_uri)
            .field("scopes", &self.scopes)
            .field("authorize_url", &self.authorize_url)
            .finish_non_exhaustive()
    }
}

/// Builder for [`SlackOAuth`].
#[must_use]
pub struct SlackOAuthBuilder {
    client_id: String,
    client_secret: SecretString,
    state_key: Option<SecretString>,
    redirect_uri: Option<String>,
    scopes: Vec<String>,
    authorize_url: String,
    config: SlackConfig,
    store: Option<Arc<dyn Store>>,
    switchboard: Option<Switchboard>,
    success_url: Option<String>,
    tenant_of: Option<TenantOf>,
    cookie_path: String,
}

impl fmt::Debug for SlackOAuthBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackOAuthBuilder")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl SlackOAuthBuilder {
    /// Which tenant a `GET /slack/install` request is for (the host's signed-in
    /// admin's organisation); `None` refuses the request. Default: the
    /// default tenant (single-tenant hosts).
    pub fn tenant_of(
        mut self,
        tenant_of: impl Fn(&InboundRequest) -> Option<TenantId> + Send + Sync + 'static,
    ) -> Self {
        self.tenant_of = Some(Arc::new(tenant_of));
        self
    }
    /// The `Path` of the browser-binding cookie (default `/`; e.g. `/slack`).
    pub fn cookie_path(mut self, path: impl Into<String>) -> Self {
        self.cookie_path = path.into();
        self
    }
    /// API base URL (default [`SlackConfig::new`]).
    pub fn config(mut self, config: SlackConfig) -> Self {
        self.config = config;
        self
    }
    /// The redirect URI registered for the app (sent to Slack when set).
    pub fn redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.redirect_uri = Some(uri.into());
        self
    }
    /// The bot scopes to request (default [`DEFAULT_BOT_SCOPES`]).
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }
    /// The authorize page (default [`DEFAULT_AUTHORIZE_URL`]).
    pub fn authorize_url(mut self, url: impl Into<String>) -> Self {
        self.authorize_url = url.into();
        self
    }
    /// The key that signs `state` (default: the client secret).
    pub fn state_secret(mut self, key: SecretString) -> Self {
        self.state_key = Some(key);
        self
    }
    /// Where connections and used states are stored (default: the switchboard's store).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }
    /// The switchboard that stores connections ([`Switchboard::connect`]),
    /// resuming parked deliveries, and disconnects them on uninstall.
    pub fn switchboard(mut self, switchboard: Switchboard) -> Self {
        self.switchboard = Some(switchboard);
        self
    }
    /// Where the browser goes after a successful install (default: a short page).
    pub fn success_url(mut self, url: impl Into<String>) -> Self {
        self.success_url = Some(url.into());
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<SlackOAuth> {
        let store = match (self.store, &self.switchboard) {
            (Some(s), _) => s,
            (None, Some(sb)) => sb.store().clone(),
            (None, None) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    "SlackOAuth needs a store or a switchboard",
                ));
            }
        };
        url::Url::parse(&self.authorize_url).map_err(|e| {
            Error::new(ErrorKind::Config, "invalid Slack authorize URL").with_source(e)
        })?;
        if self.client_id.trim().is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                "the Slack client id is empty",
            ));
        }
        let cookie_path = self.cookie_path;
        if cookie_path.is_empty() || cookie_path.chars().any(|c| c == ';' || c.is_control()) {
            return Err(Error::new(ErrorKind::Config, "invalid cookie path"));
        }
        Ok(SlackOAuth {
            client: SlackClient::new(&self.config)?,
            state_key: self.state_key.unwrap_or_else(|| self.client_secret.clone()),
            client_id: self.client_id,
            client_secret: self.client_secret,
            redirect_uri: self.redirect_uri,
            scopes: self.scopes,
            authorize_url: self.authorize_url,
            store,
            switchboard: self.switchboard,
            success_url: self.success_url,
            tenant_of: self.tenant_of,
            cookie_path,
        })
    }
}

/// The browser's install cookie value from a request's `Cookie` headers.
pub fn state_cookie(request: &InboundRequest) -> Option<String> {
    request
        .headers()
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == STATE_COOKIE)
        .map(|(_, value)| value.trim().to_owned())
}

impl SlackOAuth {
    /// Starts a builder for the app with this client id and secret.
    pub fn builder(client_id: impl Into<String>, client_secret: SecretString) -> SlackOAuthBuilder {
        SlackOAuthBuilder {
            client_id: client_id.into(),
            client_secret,
            state_key: None,
            redirect_uri: None,
            scopes: DEFAULT_BOT_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            authorize_url: DEFAULT_AUTHORIZE_URL.to_owned(),
            config: SlackConfig::new(),
            store: None,
            switchboard: None,
            success_url: None,
            tenant_of: None,
            cookie_path: "/".to_owned(),
        }
    }

    /// Token rotation with this app's credentials and store, for
    /// [`super::SlackDestination::with_rotation`] and friends.
    pub fn token_rotation(&self) -> TokenRotation {
        TokenRotation::with_client(
            self.client.clone(),
            self.store.clone(),
            self.client_id.clone(),
            self.client_secret.clone(),
        )
    }

    /// The "Add to Slack" URL for `tenant`, with the scopes and a fresh signed
    /// `state`. Send the browser there with [`SlackOAuth::start_install`]'s
    /// cookie (or use [`SlackOAuth::handle_install`]): without it the
    /// callback refuses the state.
    pub fn install_url(&self, tenant: &TenantId) -> Result<String> {
        Ok(self.start_install(tenant, Utc::now())?.url)
    }

    /// The authorize URL and the browser-binding cookie for an install of
    /// `tenant` started at `now`.
    pub fn start_install(&self, tenant: &TenantId, now: DateTime<Utc>) -> Result<InstallStart> {
        let browser: [u8; 16] = rand::rng().random();
        let browser = URL_SAFE_NO_PAD.encode(browser);
        let state = self.new_state(tenant, &browser, now);
        let mut url = url::Url::parse(&self.authorize_url).map_err(|e| {
            Error::new(ErrorKind::Config, "invalid Slack authorize URL").with_source(e)
        })?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", &self.client_id);
            q.append_pair("scope", &self.scopes.join(","));
            if let Some(r) = &self.redirect_uri {
                q.append_pair("redirect_uri", r);
            }
            q.append_pair("state", &state);
        }
        let set_cookie = format!(
            "{STATE_COOKIE}={browser}; Path={}; Max-Age={}; HttpOnly; Secure; SameSite=Lax",
            self.cookie_path,
            STATE_TTL.as_secs()
        );
        Ok(InstallStart {
            url: url.into(),
            set_cookie,
        })
    }

    fn sign(&self, label: &str, payload: &str) -> [u8; 32] {
        hmac_sha256(
            self.state_key.expose_secret().as_bytes(),
            &[label.as_bytes(), payload.as_bytes()],
        )
    }

    /// What the state holds of the browser's cookie: a keyed hash, so the
    /// cookie cannot be derived from the (visible) state.
    fn binding(&self, browser: &str) -> String {
        URL_SAFE_NO_PAD.encode(&self.sign("slack-oauth-browser:", browser)[..16])
    }

    fn new_state(&self, tenant: &TenantId, browser: &str, now: DateTime<Utc>) -> String {
        let ttl = i64::try_from(STATE_TTL.as_secs()).unwrap_or(600);
        let payload = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(tenant.as_str()),
            self.binding(browser),
            now.timestamp().saturating_add(ttl)
        );
        let sig = URL_SAFE_NO_PAD.encode(self.sign("slack-oauth-state:", &payload));
        format!("{payload}.{sig}")
    }

    /// Checks a callback's `state` against the browser's cookie: our
    /// signature, not expired, started in this browser, not used before (it is
    /// consumed by this call). Returns the tenant it carries.
    pub async fn verify_state(
        &self,
        state: &str,
        browser_cookie: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<TenantId> {
        let malformed = || unauthorized("malformed OAuth state");
        let mut parts = state.split('.');
        let (Some(tenant), Some(binding), Some(exp), Some(sig), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(malformed());
        };
        let expected = self.sign("slack-oauth-state:", &format!("{tenant}.{binding}.{exp}"));
        let given = URL_SAFE_NO_PAD.decode(sig).map_err(|_| malformed())?;
        if !constant_time_eq(&expected, &given) {
            return Err(unauthorized("OAuth state signature mismatch"));
        }
        let exp: i64 = exp.parse().map_err(|_| malformed())?;
        let ttl = i64::try_from(STATE_TTL.as_secs()).unwrap_or(600);
        if exp < now.timestamp() || exp > now.timestamp().saturating_add(ttl) {
            return Err(unauthorized("OAuth state expired"));
        }
        let Some(cookie) = browser_cookie.filter(|c| !c.is_empty()) else {
            return Err(unauthorized(
                "OAuth state presented without the install cookie (another browser?)",
            ));
        };
        if !constant_time_eq(self.binding(cookie).as_bytes(), binding.as_bytes()) {
            return Err(unauthorized("OAuth state was started in another browser"));
        }
        let tenant = URL_SAFE_NO_PAD
            .decode(tenant)
            .ok()
            .and_then(|t| String::from_utf8(t).ok())
            .ok_or_else(malformed)?;
        let tenant = TenantId::new(tenant).map_err(|_| malformed())?;
        let expires = DateTime::<Utc>::from_timestamp(exp, 0).unwrap_or(now);
        if !self
            .store
            .remember_once(STATE_SCOPE, binding, expires, now)
            .await?
        {
            return Err(unauthorized("OAuth state already used"));
        }
        Ok(tenant)
    }

    /// Verifies `state` against the browser's cookie, exchanges `code` with
    /// `oauth.v2.access`, and stores the connection under the state's tenant
    /// (with [`Switchboard::connect`] when there is a switchboard, which
    /// resumes the tenant's parked Slack deliveries). Returns the stored
    /// connection; its `tenant` is the one the install was started for.
    pub async fn complete_install(
        &self,
        code: &str,
        state: &str,
        browser_cookie: Option<&str>,
    ) -> Result<Connection> {
        let now = Utc::now();
        let tenant = self.verify_state(state, browser_cookie, now).await?;
        let mut form = vec![
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose_secret()),
            ("code", code),
        ];
        if let Some(r) = &self.redirect_uri {
            form.push(("redirect_uri", r.as_str()));
        }
        let access = self.client.oauth_v2_access(&form).await?;
        let connection = connection_from_access(tenant, access, now)?;
        let stored = match &self.switchboard {
            Some(sb) => sb.connect(connection).await?,
            None => self.store.put_connection(&connection, now).await?,
        };
        tracing::info!(
            tenant = %stored.tenant,
            connection = %stored.key,
            "Slack app installed"
        );
        Ok(stored)
    }

    /// Refreshes a rotating connection's token now.
    pub async fn refresh(&self, key: &ConnectionKey) -> Result<Connection> {
        let connection = self
            .store
            .connection(key)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no connection {key}")))?;
        Ok(self.token_rotation().refresh(&connection).await?)
    }

    /// Marks a connection disconnected (its tenant's queued Slack deliveries
    /// are parked, not dropped; other tenants are not affected).
    pub async fn uninstall(&self, key: &ConnectionKey, reason: &str) -> Result<()> {
        match &self.switchboard {
            Some(sb) => sb.disconnect_connection(key, reason).await.map(|_| ()),
            None => {
                let now = Utc::now();
                let state = ConnectionState::Disconnected {
                    reason: reason.to_owned(),
                    since: now,
                };
                self.store
                    .set_connection_state(key, &state, now)
                    .await
                    .map(|_| ())
            }
        }
    }

    /// `GET /slack/install`: redirects the browser to Slack's authorize page
    /// for the tenant [`SlackOAuthBuilder::tenant_of`] names, setting the
    /// browser-binding cookie.
    pub async fn handle_install(&self, request: &InboundRequest) -> InboundResponse {
        let tenant = match &self.tenant_of {
            Some(f) => f(request),
            None => Some(TenantId::default_tenant()),
        };
        match tenant {
            Some(t) => self.handle_install_for(&t),
            None => error_response(&unauthorized("no tenant for this install request")),
        }
    }

    /// Redirects to Slack's authorize page for `tenant`, with the
    /// browser-binding cookie.
    pub fn handle_install_for(&self, tenant: &TenantId) -> InboundResponse {
        match self.start_install(tenant, Utc::now()) {
            Ok(start) => {
                let mut r = redirect(&start.url);
                if let Ok(v) = http::HeaderValue::from_str(&start.set_cookie) {
                    r.headers_mut().append(http::header::SET_COOKIE, v);
                }
                r
            }
            Err(e) => error_response(&e),
        }
    }

    /// The callback's work for hosts that answer the browser themselves:
    /// reads `code`, `state` and the cookie, and completes the install.
    pub async fn callback(&self, request: &InboundRequest) -> Result<Connection> {
        let query = request.uri().query().unwrap_or("");
        let mut code = None;
        let mut state = None;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "code" => code = Some(v.into_owned()),
                "state" => state = Some(v.into_owned()),
                "error" => {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        "the installation was cancelled",
                    ));
                }
                _ => {}
            }
        }
        let (Some(code), Some(state)) = (code, state) else {
            return Err(Error::new(ErrorKind::InvalidInput, "missing code or state"));
        };
        self.complete_install(&code, &state, state_cookie(request).as_deref())
            .await
    }

    /// `GET /slack/oauth/callback?code=…&state=…`: completes the install and
    /// clears the cookie; the stored connection's tenant is in the
    /// `x-switchboard-tenant` header. Any failure answers without detail.
    pub async fn handle_callback(&self, request: &InboundRequest) -> InboundResponse {
        let mut r = match self.callback(request).await {
            Ok(connection) => {
                let mut r = match &self.success_url {
                    Some(url) => redirect(url),
                    None => response(
                        http::StatusCode::OK,
                        "text/plain; charset=utf-8",
                        "The Slack app is installed. You can close this window.",
                    ),
                };
                if let Ok(v) = http::HeaderValue::from_str(connection.tenant.as_str()) {
                    r.headers_mut().insert(TENANT_HEADER, v);
                }
                r
            }
            Err(e) if e.kind() == ErrorKind::InvalidInput => response(
                http::StatusCode::BAD_REQUEST,
                "text/plain; charset=utf-8",
                "The installation was cancelled or the link is incomplete.",
            ),
            Err(e) => {
                tracing::warn!(error = %e, "Slack install failed");
                error_response(&e)
            }
        };
        let clear = format!(
            "{STATE_COOKIE}=; Path={}; Max-Age=0; HttpOnly; Secure; SameSite=Lax",
            self.cookie_path
        );
        if let Ok(v) = http::HeaderValue::from_str(&clear) {
            r.headers_mut().append(http::header::SET_COOKIE, v);
        }
        r
    }
}

/// The response header naming the tenant a callback installed for.
pub const TENANT_HEADER: &str = "x-switchboard-tenant";

fn redirect(location: &str) -> InboundResponse {
    let mut r = response(http::StatusCode::FOUND, "text/plain; charset=utf-8", "");
    if let Ok(v) = http::HeaderValue::from_str(location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    fn oauth() -> SlackOAuth {
        SlackOAuth::builder("123.456", SecretString::from("shh".to_owned()))
            .store(Arc::new(MemoryStore::new()))
            .build()
            .unwrap()
    }

    fn cookie_value(set_cookie: &str) -> String {
        set_cookie
            .split(';')
            .next()
            .and_then(|p| p.split_once('='))
            .map(|(_, v)| v.to_owned())
            .unwrap()
    }

    #[tokio::test]
    async fn state_is_signed_bound_single_use_and_expires() {
        let o = oauth();
        let now = Utc::now();
        let acme = TenantId::new("acme").unwrap();
        let start = o.start_install(&acme, now).unwrap();
        let url = url::Url::parse(&start.url).unwrap();
        let pairs: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs["client_id"], "123.456");
        assert!(pairs["scope"].contains("users:read.email"));
        let state = pairs["state"].clone();
        let cookie = cookie_value(&start.set_cookie);
        assert!(
            !state.contains(&cookie),
            "the cookie is not derivable from the state"
        );

        // Tampered.
        let mut bad = state.clone();
        bad.insert(0, 'x');
        assert_eq!(
            o.verify_state(&bad, Some(&cookie), now)
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::Unauthorized
        );
        // Another browser (no cookie, or its own).
        assert!(o.verify_state(&state, None, now).await.is_err());
        let other = cookie_value(&o.start_install(&acme, now).unwrap().set_cookie);
        assert!(o.verify_state(&state, Some(&other), now).await.is_err());
        // Expired.
        let late = now + chrono::Duration::seconds(601);
        assert!(o.verify_state(&state, Some(&cookie), late).await.is_err());
        // Valid once, with the tenant; then replay refused.
        let t = o
            .verify_state(&state, Some(&cookie), now + chrono::Duration::seconds(599))
            .await
            .unwrap();
        assert_eq!(t, acme);
        assert!(o.verify_state(&state, Some(&cookie), now).await.is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_states_are_refused_without_panicking(
            state in "\\PC{0,160}",
            dots in 0usize..6,
            cookie in proptest::option::of("[A-Za-z0-9_-]{0,24}"),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let o = oauth();
            let state = format!("{state}{}", ".x".repeat(dots));
            let r = rt.block_on(o.verify_state(&state, cookie.as_deref(), Utc::now()));
            proptest::prop_assert!(r.is_err());
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let t = super::super::BotToken::new(SecretString::from("xoxb-secret".to_owned()));
        assert!(!format!("{t:?}").contains("xoxb"));
        assert!(!format!("{:?}", oauth()).contains("shh"));
    }
}
