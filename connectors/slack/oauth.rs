//! OAuth v2 install (signed single-use `state`, code exchange, stored installation), token rotation, uninstall, and `BotToken`, where every Slack call gets its token.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::Rng as _;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::api::{FailureClass, OAuthAccess, SlackApiError, SlackClient};
use super::config::{DEFAULT_AUTHORIZE_URL, PLATFORM, SlackConfig};
use crate::engine::Switchboard;
use crate::inbound::{
    InboundRequest, InboundResponse, constant_time_eq, error_response, hmac_sha256, response,
    unauthorized,
};
use crate::store::{Installation, Store};
use crate::{Error, ErrorKind, Result};

/// How long an install link's `state` stays valid.
pub const STATE_TTL: Duration = Duration::from_secs(10 * 60);
/// Refresh rotating tokens this long before they expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
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

/// Where a Slack call's bot token comes from: a fixed token, or the installation
/// stored for a workspace (read on every use, so a reinstall takes effect at once,
/// and refreshed before expiry when token rotation is on).
#[derive(Clone)]
pub struct BotToken {
    kind: Arc<TokenKind>,
}

enum TokenKind {
    Fixed(SecretString),
    Installed {
        store: Arc<dyn Store>,
        team_id: String,
        refresh: Option<(String, SecretString)>,
        lock: tokio::sync::Mutex<()>,
    },
}

impl fmt::Debug for BotToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.kind {
            TokenKind::Fixed(_) => f.write_str("BotToken::Fixed([redacted])"),
            TokenKind::Installed {
                team_id, refresh, ..
            } => f
                .debug_struct("BotToken::Installed")
                .field("team_id", team_id)
                .field("refresh", &refresh.is_some())
                .finish(),
        }
    }
}

impl BotToken {
    /// A fixed bot token (e.g. from `SLACK_BOT_TOKEN` for a single-workspace app).
    pub fn new(token: SecretString) -> Self {
        BotToken {
            kind: Arc::new(TokenKind::Fixed(token)),
        }
    }

    /// The token of the installation stored for workspace `team_id`.
    pub fn installed(store: Arc<dyn Store>, team_id: impl Into<String>) -> Self {
        BotToken {
            kind: Arc::new(TokenKind::Installed {
                store,
                team_id: team_id.into(),
                refresh: None,
                lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Refreshes a rotating installed token with `oauth.v2.access`
    /// (`grant_type=refresh_token`) before it expires. No effect on fixed tokens.
    #[must_use]
    pub fn with_refresh(self, client_id: impl Into<String>, client_secret: SecretString) -> Self {
        match &*self.kind {
            TokenKind::Fixed(_) => self,
            TokenKind::Installed { store, team_id, .. } => BotToken {
                kind: Arc::new(TokenKind::Installed {
                    store: store.clone(),
                    team_id: team_id.clone(),
                    refresh: Some((client_id.into(), client_secret)),
                    lock: tokio::sync::Mutex::new(()),
                }),
            },
        }
    }

    /// The workspace of an installed token.
    pub fn team_id(&self) -> Option<&str> {
        match &*self.kind {
            TokenKind::Fixed(_) => None,
            TokenKind::Installed { team_id, .. } => Some(team_id),
        }
    }

    /// The token to use now. A missing installation is `Disconnected`.
    pub async fn get(&self, client: &SlackClient) -> Result<SecretString, SlackApiError> {
        let (store, team_id, refresh, lock) = match &*self.kind {
            TokenKind::Fixed(t) => return Ok(t.clone()),
            TokenKind::Installed {
                store,
                team_id,
                refresh,
                lock,
            } => (store, team_id, refresh, lock),
        };
        let installation = read_installation(store.as_ref(), team_id).await?;
        let now = Utc::now();
        let Some((client_id, client_secret)) = refresh else {
            return Ok(installation.token);
        };
        if !needs_refresh(&installation, now) {
            return Ok(installation.token);
        }
        let _guard = lock.lock().await;
        // Someone else may have refreshed while we waited.
        let installation = read_installation(store.as_ref(), team_id).await?;
        if !needs_refresh(&installation, now) {
            return Ok(installation.token);
        }
        let refreshed =
            refresh_installation(client, &installation, client_id, client_secret, now).await?;
        store.put_installation(&refreshed).await.map_err(|e| {
            SlackApiError::new(
                FailureClass::Temporary,
                "oauth.v2.access",
                None,
                format!("could not store the refreshed token: {}", e.message()),
            )
        })?;
        Ok(refreshed.token)
    }
}

async fn read_installation(
    store: &dyn Store,
    team_id: &str,
) -> Result<Installation, SlackApiError> {
    match store.installation(PLATFORM, team_id).await {
        Ok(Some(i)) => Ok(i),
        Ok(None) => Err(SlackApiError::new(
            FailureClass::Disconnected,
            "installation",
            None,
            format!(
                "the Slack app is not installed for workspace {team_id}: install it; queued messages are kept and sent after reconnecting"
            ),
        )),
        Err(e) => Err(SlackApiError::new(
            FailureClass::Temporary,
            "installation",
            None,
            format!("could not read the Slack installation: {}", e.message()),
        )),
    }
}

fn needs_refresh(installation: &Installation, now: DateTime<Utc>) -> bool {
    match (installation.expires_at, &installation.refresh_token) {
        (Some(expires_at), Some(_)) => {
            let margin = chrono::Duration::from_std(REFRESH_MARGIN).unwrap_or_default();
            expires_at - margin <= now
        }
        _ => false,
    }
}

async fn refresh_installation(
    client: &SlackClient,
    installation: &Installation,
    client_id: &str,
    client_secret: &SecretString,
    now: DateTime<Utc>,
) -> Result<Installation, SlackApiError> {
    let Some(refresh_token) = &installation.refresh_token else {
        return Ok(installation.clone());
    };
    let access = client
        .oauth_v2_access(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose_secret()),
            ("client_id", client_id),
            ("client_secret", client_secret.expose_secret()),
        ])
        .await?;
    let mut data = installation.data.clone();
    if !access.scope.is_empty() {
        data["scopes"] = json!(split_scopes(&access.scope));
    }
    Ok(Installation {
        platform: installation.platform.clone(),
        key: installation.key.clone(),
        token: access.access_token,
        refresh_token: access
            .refresh_token
            .or_else(|| installation.refresh_token.clone()),
        expires_at: expires_at(now, access.expires_in),
        data,
        updated_at: now,
    })
}

fn split_scopes(scope: &str) -> Vec<String> {
    scope
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn expires_at(now: DateTime<Utc>, expires_in: Option<i64>) -> Option<DateTime<Utc>> {
    expires_in
        .filter(|s| *s > 0)
        .map(|s| now + chrono::Duration::seconds(s))
}

/// The OAuth v2 install flow for one Slack app.
///
/// [`SlackOAuth::install_url`] builds the "Add to Slack" link with the bot scopes
/// and a signed `state` (HMAC, expires after [`STATE_TTL`], single use through
/// [`Store::remember_once`]). The callback verifies the state, exchanges the
/// `code` with `oauth.v2.access`, stores an [`Installation`] (key: the team id;
/// the bot token as a secret; the bot user id and scopes in `data`) and calls
/// [`Switchboard::reconnect`] so deliveries parked while disconnected flow again.
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
    destination: String,
    success_url: Option<String>,
}

impl fmt::Debug for SlackOAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackOAuth")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("redirect_uri", &self.redirect_uri)
            .field("scopes", &self.scopes)
            .field("authorize_url", &self.authorize_url)
            .field("destination", &self.destination)
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
}

impl fmt::Debug for SlackOAuthBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackOAuthBuilder")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl SlackOAuthBuilder {
    /// API base URL and destination name (default [`SlackConfig::new`]).
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
    /// Where installations and used states are stored (default: the switchboard's store).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }
    /// The switchboard to reconnect after an install (and disconnect on uninstall).
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
            destination: self.config.destination_name().to_owned(),
            success_url: self.success_url,
        })
    }
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
        }
    }

    /// A [`BotToken`] reading this app's installation for `team_id`, refreshed
    /// with this app's credentials when token rotation is on.
    pub fn bot_token(&self, team_id: impl Into<String>) -> BotToken {
        BotToken::installed(self.store.clone(), team_id)
            .with_refresh(self.client_id.clone(), self.client_secret.clone())
    }

    /// The "Add to Slack" URL with the scopes and a fresh signed `state`.
    pub fn install_url(&self) -> Result<String> {
        self.install_url_at(Utc::now())
    }

    /// [`SlackOAuth::install_url`] as of `now`.
    pub fn install_url_at(&self, now: DateTime<Utc>) -> Result<String> {
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
            q.append_pair("state", &self.new_state(now));
        }
        Ok(url.into())
    }

    fn sign_state(&self, payload: &str) -> [u8; 32] {
        hmac_sha256(
            self.state_key.expose_secret().as_bytes(),
            &[b"slack-oauth-state:", payload.as_bytes()],
        )
    }

    fn new_state(&self, now: DateTime<Utc>) -> String {
        let nonce: [u8; 16] = rand::rng().random();
        let ttl = i64::try_from(STATE_TTL.as_secs()).unwrap_or(600);
        let payload = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(nonce),
            now.timestamp().saturating_add(ttl)
        );
        let sig = URL_SAFE_NO_PAD.encode(self.sign_state(&payload));
        format!("{payload}.{sig}")
    }

    /// Checks a callback's `state`: our signature, not expired, not used before
    /// (it is consumed by this call).
    pub async fn verify_state(&self, state: &str, now: DateTime<Utc>) -> Result<()> {
        let mut parts = state.split('.');
        let (Some(nonce), Some(exp), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(unauthorized("malformed OAuth state"));
        };
        let expected = self.sign_state(&format!("{nonce}.{exp}"));
        let given = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| unauthorized("malformed OAuth state"))?;
        if !constant_time_eq(&expected, &given) {
            return Err(unauthorized("OAuth state signature mismatch"));
        }
        let exp: i64 = exp
            .parse()
            .map_err(|_| unauthorized("malformed OAuth state"))?;
        let ttl = i64::try_from(STATE_TTL.as_secs()).unwrap_or(600);
        if exp < now.timestamp() || exp > now.timestamp().saturating_add(ttl) {
            return Err(unauthorized("OAuth state expired"));
        }
        let expires = DateTime::<Utc>::from_timestamp(exp, 0).unwrap_or(now);
        if !self
            .store
            .remember_once(STATE_SCOPE, nonce, expires, now)
            .await?
        {
            return Err(unauthorized("OAuth state already used"));
        }
        Ok(())
    }

    /// Verifies `state`, exchanges `code` with `oauth.v2.access`, stores the
    /// installation and reconnects the destination.
    pub async fn complete_install(&self, code: &str, state: &str) -> Result<Installation> {
        let now = Utc::now();
        self.verify_state(state, now).await?;
        let mut form = vec![
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose_secret()),
            ("code", code),
        ];
        if let Some(r) = &self.redirect_uri {
            form.push(("redirect_uri", r.as_str()));
        }
        let access = self.client.oauth_v2_access(&form).await?;
        let installation = installation_from(access, now)?;
        self.store.put_installation(&installation).await?;
        if let Some(sb) = &self.switchboard {
            match sb.reconnect(&self.destination).await {
                Ok(n) => tracing::info!(
                    team = %installation.key,
                    resumed = n,
                    "Slack app installed; destination reconnected"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "Slack app installed but the destination could not be reconnected")
                }
            }
        }
        Ok(installation)
    }

    /// Refreshes the installation of `team_id` now (token rotation).
    pub async fn refresh(&self, team_id: &str) -> Result<Installation> {
        let installation = read_installation(self.store.as_ref(), team_id).await?;
        if installation.refresh_token.is_none() {
            return Err(Error::new(
                ErrorKind::Conflict,
                "this installation has no refresh token (token rotation is off)",
            ));
        }
        let refreshed = refresh_installation(
            &self.client,
            &installation,
            &self.client_id,
            &self.client_secret,
            Utc::now(),
        )
        .await?;
        self.store.put_installation(&refreshed).await?;
        Ok(refreshed)
    }

    /// Forgets the installation of `team_id` and marks the destination
    /// disconnected (queued deliveries are parked, not dropped).
    pub async fn uninstall(&self, team_id: &str, reason: &str) -> Result<()> {
        self.store.delete_installation(PLATFORM, team_id).await?;
        if let Some(sb) = &self.switchboard {
            sb.disconnect(&self.destination, reason).await?;
        }
        Ok(())
    }

    /// `GET /slack/install`: redirects the browser to Slack's authorize page.
    pub async fn handle_install(&self, _request: &InboundRequest) -> InboundResponse {
        match self.install_url() {
            Ok(url) => redirect(&url),
            Err(e) => error_response(&e),
        }
    }

    /// `GET /slack/oauth/callback?code=…&state=…`: completes the install. Any
    /// failure answers without detail.
    pub async fn handle_callback(&self, request: &InboundRequest) -> InboundResponse {
        let query = request.uri().query().unwrap_or("");
        let mut code = None;
        let mut state = None;
        let mut denied = false;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "code" => code = Some(v.into_owned()),
                "state" => state = Some(v.into_owned()),
                "error" => denied = true,
                _ => {}
            }
        }
        if denied {
            return response(
                http::StatusCode::BAD_REQUEST,
                "text/plain; charset=utf-8",
                "The installation was cancelled.",
            );
        }
        let (Some(code), Some(state)) = (code, state) else {
            return error_response(&Error::new(
                ErrorKind::InvalidInput,
                "missing code or state",
            ));
        };
        match self.complete_install(&code, &state).await {
            Ok(_) => match &self.success_url {
                Some(url) => redirect(url),
                None => response(
                    http::StatusCode::OK,
                    "text/plain; charset=utf-8",
                    "The Slack app is installed. You can close this window.",
                ),
            },
            Err(e) => {
                tracing::warn!(error = %e, "Slack install failed");
                error_response(&e)
            }
        }
    }
}

fn redirect(location: &str) -> InboundResponse {
    let mut r = response(http::StatusCode::FOUND, "text/plain; charset=utf-8", "");
    if let Ok(v) = http::HeaderValue::from_str(location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

fn installation_from(access: OAuthAccess, now: DateTime<Utc>) -> Result<Installation> {
    let key = access
        .team_id
        .clone()
        .or_else(|| access.enterprise_id.clone())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Platform,
                "oauth.v2.access answered without a team or enterprise id",
            )
        })?;
    Ok(Installation {
        platform: PLATFORM.to_owned(),
        key,
        expires_at: expires_at(now, access.expires_in),
        data: json!({
            "bot_user_id": access.bot_user_id,
            "scopes": split_scopes(&access.scope),
            "team_name": access.team_name,
            "app_id": access.app_id,
            "enterprise_id": access.enterprise_id,
            "token_type": access.token_type,
        }),
        token: access.access_token,
        refresh_token: access.refresh_token,
        updated_at: now,
    })
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

    #[tokio::test]
    async fn state_is_signed_single_use_and_expires() {
        let o = oauth();
        let now = Utc::now();
        let url = url::Url::parse(&o.install_url_at(now).unwrap()).unwrap();
        let pairs: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs["client_id"], "123.456");
        assert!(pairs["scope"].contains("users:read.email"));
        let state = pairs["state"].clone();

        // Tampered.
        let mut bad = state.clone();
        bad.insert(0, 'x');
        assert_eq!(
            o.verify_state(&bad, now).await.unwrap_err().kind(),
            ErrorKind::Unauthorized
        );
        // Expired.
        let late = now + chrono::Duration::seconds(601);
        assert!(o.verify_state(&state, late).await.is_err());
        // Valid once, then replay refused.
        o.verify_state(&state, now + chrono::Duration::seconds(599))
            .await
            .unwrap();
        assert!(o.verify_state(&state, now).await.is_err());
    }

    #[test]
    fn debug_redacts_secrets() {
        let t = BotToken::new(SecretString::from("xoxb-secret".to_owned()));
        assert!(!format!("{t:?}").contains("xoxb"));
        assert!(!format!("{:?}", oauth()).contains("shh"));
    }
}
