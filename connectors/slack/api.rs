//! The Slack Web API client, and the one place that maps Slack's answers (HTTP status, `"ok": false` codes) into switchboard's failure classes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use super::config::SlackConfig;
use crate::destination::DeliveryError;
use crate::{Error, ErrorKind, Result};

/// How a failed Slack call is classified; decides retry, dead letter or parking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum FailureClass {
    /// HTTP 429 or `ratelimited`: retry after `retry_after` (Slack's `Retry-After`).
    RateLimited {
        /// Slack's `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// 5xx, timeouts, network failures, Slack's `internal_error`: retry with backoff.
    Temporary,
    /// Will not succeed as is (`not_in_channel`, `channel_not_found`, …): dead letter.
    Permanent,
    /// The person is not a usable Slack user (`users_not_found`, `user_not_found`).
    RecipientUnknown,
    /// The token is no longer valid (`invalid_auth`, `token_revoked`, …): park until reinstalled.
    Disconnected,
}

/// A failed Slack call: its class, the method, Slack's error code and a message
/// that tells an admin what to do. Never contains a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Slack {method} failed ({code}): {message}", code = self.code.as_deref().unwrap_or("no error code"))]
pub struct SlackApiError {
    class: FailureClass,
    method: String,
    code: Option<String>,
    message: String,
}

impl SlackApiError {
    /// An error of `class` for `method`.
    pub fn new(
        class: FailureClass,
        method: impl Into<String>,
        code: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        SlackApiError {
            class,
            method: method.into(),
            code: code.map(str::to_owned),
            message: message.into(),
        }
    }
    /// The classification.
    pub fn class(&self) -> FailureClass {
        self.class
    }
    /// The Web API method that failed (e.g. `chat.postMessage`).
    pub fn method(&self) -> &str {
        &self.method
    }
    /// Slack's error code (e.g. `not_in_channel`), when Slack gave one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
    /// The admin-facing explanation.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// True when the token is unusable (the integration is disconnected).
    pub fn is_disconnected(&self) -> bool {
        self.class == FailureClass::Disconnected
    }

    /// The engine's classification of this failure.
    pub fn to_delivery_error(&self) -> DeliveryError {
        let reason = self.to_string();
        match self.class {
            FailureClass::RateLimited { retry_after } => {
                DeliveryError::rate_limited(retry_after, reason)
            }
            FailureClass::Temporary => DeliveryError::temporary(reason),
            FailureClass::Permanent => DeliveryError::permanent(reason),
            FailureClass::RecipientUnknown => DeliveryError::recipient_unknown(reason),
            FailureClass::Disconnected => DeliveryError::disconnected(reason),
        }
    }
}

impl From<SlackApiError> for Error {
    fn from(e: SlackApiError) -> Self {
        let (kind, temporary) = match e.class {
            FailureClass::Disconnected => (ErrorKind::Unauthorized, false),
            FailureClass::RateLimited { .. } => (ErrorKind::Platform, true),
            FailureClass::Temporary => (ErrorKind::Network, true),
            FailureClass::Permanent => (ErrorKind::Platform, false),
            FailureClass::RecipientUnknown => (ErrorKind::NotFound, false),
        };
        // The message already says everything the source would.
        let err = Error::new(kind, e.to_string());
        if temporary { err.temporary() } else { err }
    }
}

/// Maps one Slack answer to a class and an admin-actionable message.
///
/// This is the single mapping for the whole connector: HTTP 429 and
/// `ratelimited`/`rate_limited` → rate limited (with `Retry-After`); 5xx →
/// temporary; `not_in_channel`, `channel_not_found`, `is_archived`, `msg_too_long`
/// → permanent; `users_not_found`, `user_not_found` → recipient unknown;
/// `invalid_auth`, `token_revoked`, `account_inactive`, `missing_scope` →
/// disconnected. HTTP 200 with `"ok": false` is an error like any other.
///
/// ```
/// use switchboard::slack::{FailureClass, classify};
/// assert_eq!(classify(200, Some("token_revoked"), None).0, FailureClass::Disconnected);
/// assert_eq!(classify(200, Some("not_in_channel"), None).0, FailureClass::Permanent);
/// ```
pub fn classify(
    status: u16,
    error_code: Option<&str>,
    retry_after: Option<Duration>,
) -> (FailureClass, String) {
    use FailureClass::*;
    if status == 429 {
        return (
            RateLimited { retry_after },
            "Slack rate-limited the app; it will be retried after Slack's Retry-After".to_owned(),
        );
    }
    if status >= 500 {
        return (
            Temporary,
            format!("Slack answered HTTP {status}; it will be retried"),
        );
    }
    let Some(code) = error_code else {
        if (200..300).contains(&status) {
            return (
                Permanent,
                "Slack answered \"ok\": false without an error code".to_owned(),
            );
        }
        return (
            Permanent,
            format!("Slack answered HTTP {status}; check the configured Slack base URL"),
        );
    };
    let (class, message): (FailureClass, &str) = match code {
        "ratelimited" | "rate_limited" => (
            RateLimited { retry_after },
            "Slack rate-limited the app; it will be retried after Slack's Retry-After",
        ),
        "not_in_channel" => (
            Permanent,
            "the Slack app is not a member of this channel: invite the bot to the (private) channel with /invite, then replay",
        ),
        "channel_not_found" => (
            Permanent,
            "the Slack channel was not found or is not visible to the app: check the channel in the route (private channels need the bot invited first), then replay",
        ),
        "is_archived" => (
            Permanent,
            "the Slack channel is archived: unarchive it or point the route at another channel, then replay",
        ),
        "msg_too_long" => (
            Permanent,
            "the message is too long for Slack: shorten the route's template, then replay",
        ),
        "invalid_blocks" | "msg_blocks_too_long" | "too_many_blocks" | "invalid_blocks_format" => (
            Permanent,
            "Slack rejected the message layout: shorten the route's template, then replay",
        ),
        "no_text" => (
            Permanent,
            "the message is empty: fix the route's template, then replay",
        ),
        "restricted_action" | "restricted_action_read_only_channel" | "ekm_access_denied" => (
            Permanent,
            "a workspace setting prevents the app from posting here: ask a Slack admin, then replay",
        ),
        "users_not_found" | "user_not_found" | "user_disabled" | "user_not_visible"
        | "cannot_dm_bot" => (
            RecipientUnknown,
            "the person is not an active member of the Slack workspace: map them by hand or invite them, then replay",
        ),
        "invalid_auth" | "not_authed" => (
            Disconnected,
            "Slack no longer accepts the app's token: reinstall the Slack app; queued messages are kept and sent after reconnecting",
        ),
        "token_revoked" | "token_expired" => (
            Disconnected,
            "the Slack token was revoked or expired (was the app uninstalled?): reinstall the Slack app; queued messages are kept and sent after reconnecting",
        ),
        "account_inactive" => (
            Disconnected,
            "the Slack workspace or the app's bot user is inactive: reinstall the Slack app; queued messages are kept and sent after reconnecting",
        ),
        "missing_scope" | "no_permission" | "team_access_not_granted" => (
            Disconnected,
            "the Slack app lacks a permission it needs: reinstall it with the required scopes; queued messages are kept and sent after reconnecting",
        ),
        "invalid_refresh_token" => (
            Disconnected,
            "Slack rejected the refresh token: reinstall the Slack app; queued messages are kept and sent after reconnecting",
        ),
        "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => (
            Temporary,
            "Slack had an internal problem; it will be retried",
        ),
        _ => (Permanent, "Slack refused the request"),
    };
    (class, message.to_owned())
}

/// Parses `Retry-After` (Slack sends whole seconds).
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Deserializes `null` or a missing field as the default value.
pub(super) fn null_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A `chat.postMessage` request body. There is deliberately no `link_names` and
/// no `parse`: text is sent as already-escaped mrkdwn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostMessage {
    /// Channel, private channel or DM id.
    pub channel: String,
    /// Fallback text (notifications, screen readers); ≤ 40,000 characters.
    pub text: String,
    /// Block Kit blocks (≤ 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<Vec<Value>>,
}

/// What `chat.postMessage` returned on success.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostedMessage {
    /// The channel it was posted to.
    #[serde(default, deserialize_with = "null_default")]
    pub channel: String,
    /// The message's timestamp (its id within the channel).
    #[serde(default, deserialize_with = "null_default")]
    pub ts: String,
}

/// A Slack user as `users.list` / `users.lookupByEmail` return it (unknown fields ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlackUser {
    /// The user id (`U…`/`W…`).
    pub id: String,
    /// The handle.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Deactivated accounts.
    #[serde(default, deserialize_with = "null_default")]
    pub deleted: bool,
    /// Bot users.
    #[serde(default, deserialize_with = "null_default")]
    pub is_bot: bool,
    /// App users.
    #[serde(default, deserialize_with = "null_default")]
    pub is_app_user: bool,
    /// Multi-channel guests.
    #[serde(default, deserialize_with = "null_default")]
    pub is_restricted: bool,
    /// Single-channel guests.
    #[serde(default, deserialize_with = "null_default")]
    pub is_ultra_restricted: bool,
    /// Profile fields.
    #[serde(default, deserialize_with = "null_default")]
    pub profile: SlackProfile,
}

impl SlackUser {
    /// Slackbot's fixed user id.
    pub const SLACKBOT: &'static str = "USLACKBOT";

    /// True for accounts a sync must skip: deleted, bots/apps (and Slackbot) and guests.
    pub fn is_skipped(&self) -> bool {
        self.deleted
            || self.is_bot
            || self.is_app_user
            || self.id == Self::SLACKBOT
            || self.is_restricted
            || self.is_ultra_restricted
    }
}

/// The profile part of a [`SlackUser`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlackProfile {
    /// `profile.email` (needs the `users:read.email` scope).
    #[serde(default)]
    pub email: Option<String>,
    /// The full name.
    #[serde(default)]
    pub real_name: Option<String>,
    /// The display name.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// A channel-like conversation as `conversations.list` returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// The id (`C…`, `G…`, `D…`).
    pub id: String,
    /// The name without `#` (absent for DMs).
    #[serde(default)]
    pub name: Option<String>,
    /// Private channel.
    #[serde(default, deserialize_with = "null_default")]
    pub is_private: bool,
    /// Archived channel.
    #[serde(default, deserialize_with = "null_default")]
    pub is_archived: bool,
    /// Whether the app's bot is a member.
    #[serde(default, deserialize_with = "null_default")]
    pub is_member: bool,
}

/// One page of a cursor-paginated list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items on this page (possibly fewer than asked for, even zero).
    pub items: Vec<T>,
    /// `response_metadata.next_cursor`; `None` when it was missing or empty (the end).
    pub next_cursor: Option<String>,
}

/// What `oauth.v2.access` returned (install or token refresh).
#[derive(Clone)]
pub struct OAuthAccess {
    /// The bot token (`xoxb-…`, or `xoxe.xoxb-…` when rotating).
    pub access_token: SecretString,
    /// `bot` for bot tokens.
    pub token_type: Option<String>,
    /// Granted scopes, comma-separated.
    pub scope: String,
    /// The bot's user id.
    pub bot_user_id: Option<String>,
    /// The app id.
    pub app_id: Option<String>,
    /// The workspace id.
    pub team_id: Option<String>,
    /// The workspace name.
    pub team_name: Option<String>,
    /// The Enterprise Grid organisation id, if any.
    pub enterprise_id: Option<String>,
    /// The refresh token, when token rotation is on.
    pub refresh_token: Option<SecretString>,
    /// Seconds until `access_token` expires, when token rotation is on.
    pub expires_in: Option<i64>,
}

impl fmt::Debug for OAuthAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthAccess")
            .field("access_token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("scope", &self.scope)
            .field("bot_user_id", &self.bot_user_id)
            .field("app_id", &self.app_id)
            .field("team_id", &self.team_id)
            .field("team_name", &self.team_name)
            .field("enterprise_id", &self.enterprise_id)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

impl OAuthAccess {
    fn from_value(v: &Value) -> Option<OAuthAccess> {
        let owned = |path: &[&str]| str_at(v, path).map(str::to_owned);
        Some(OAuthAccess {
            access_token: SecretString::from(owned(&["access_token"])?),
            token_type: owned(&["token_type"]),
            scope: owned(&["scope"]).unwrap_or_default(),
            bot_user_id: owned(&["bot_user_id"]),
            app_id: owned(&["app_id"]),
            team_id: owned(&["team", "id"]),
            team_name: owned(&["team", "name"]),
            enterprise_id: owned(&["enterprise", "id"]),
            refresh_token: owned(&["refresh_token"]).map(SecretString::from),
            expires_in: v.get("expires_in").and_then(Value::as_i64),
        })
    }
}

/// A Slack Web API client (bot token per call, JSON bodies, one error mapping).
///
/// Cheap to clone. Tokens are passed per call and only ever placed in the
/// `Authorization: Bearer` header.
#[derive(Clone)]
pub struct SlackClient {
    http: reqwest::Client,
    base: Arc<str>,
}

impl fmt::Debug for SlackClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackClient")
            .field("base_url", &self.base)
            .finish()
    }
}

const JSON_UTF8: &str = "application/json; charset=utf-8";

impl SlackClient {
    /// A client for `config`'s base URL and timeout.
    pub fn new(config: &SlackConfig) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")));
        if let Some(t) = config.request_timeout() {
            builder = builder.timeout(t);
        }
        let http = builder.build().map_err(|e| {
            Error::new(ErrorKind::Config, "could not build the HTTP client").with_source(e)
        })?;
        Ok(SlackClient {
            http,
            base: Arc::from(config.api_base_url()),
        })
    }

    /// The Web API base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, method: &str) -> String {
        format!("{}/{}", self.base, method)
    }

    async fn send(
        &self,
        method: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, SlackApiError> {
        let response = request
            .send()
            .await
            .map_err(|e| network_error(method, &e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = response
            .bytes()
            .await
            .map_err(|e| network_error(method, &e))?;
        interpret(method, status, retry_after, &body)
    }

    /// Calls `method` with a JSON body (POST) and returns Slack's JSON answer when `ok`.
    pub async fn call(
        &self,
        token: &SecretString,
        method: &str,
        body: &Value,
    ) -> Result<Value, SlackApiError> {
        let bytes = serde_json::to_vec(body).map_err(|e| {
            SlackApiError::new(
                FailureClass::Permanent,
                method,
                None,
                format!("could not encode the request: {e}"),
            )
        })?;
        let request = self
            .http
            .post(self.url(method))
            .bearer_auth(token.expose_secret())
            .header(http::header::CONTENT_TYPE, JSON_UTF8)
            .body(bytes);
        self.send(method, request).await
    }

    /// Calls a read method with query arguments (GET), for methods that do not accept JSON.
    pub async fn get(
        &self,
        token: &SecretString,
        method: &str,
        query: &[(&str, &str)],
    ) -> Result<Value, SlackApiError> {
        let request = self
            .http
            .get(self.url(method))
            .bearer_auth(token.expose_secret())
            .query(query);
        self.send(method, request).await
    }

    fn decode<T: DeserializeOwned>(method: &str, value: Value) -> Result<T, SlackApiError> {
        serde_json::from_value(value).map_err(|e| {
            SlackApiError::new(
                FailureClass::Permanent,
                method,
                None,
                format!("unexpected response shape: {e}"),
            )
        })
    }

    /// `chat.postMessage`.
    pub async fn post_message(
        &self,
        token: &SecretString,
        message: &PostMessage,
    ) -> Result<PostedMessage, SlackApiError> {
        let body = serde_json::to_value(message).unwrap_or(Value::Null);
        let v = self.call(token, "chat.postMessage", &body).await?;
        // Lenient: the message was posted; never turn a success into a failure.
        Ok(serde_json::from_value(v).unwrap_or_default())
    }

    /// One page of `conversations.list` (public and private channels the app can
    /// see, archived excluded).
    pub async fn conversations_list(
        &self,
        token: &SecretString,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<Conversation>, SlackApiError> {
        let filters = [
            ("types", "public_channel,private_channel"),
            ("exclude_archived", "true"),
        ];
        self.list_page(
            token,
            "conversations.list",
            "channels",
            &filters,
            cursor,
            limit,
        )
        .await
    }

    /// `conversations.open` with one user: the id of the DM channel with them.
    pub async fn conversations_open(
        &self,
        token: &SecretString,
        user: &str,
    ) -> Result<String, SlackApiError> {
        let v = self
            .call(token, "conversations.open", &json!({ "users": user }))
            .await?;
        str_at(&v, &["channel", "id"])
            .map(str::to_owned)
            .ok_or_else(|| {
                SlackApiError::new(
                    FailureClass::Temporary,
                    "conversations.open",
                    None,
                    "the answer has no channel id",
                )
            })
    }

    /// One page of a cursor-paginated list method: `filters`, `limit` and the
    /// `cursor` (if any) as query parameters; the items under `field`.
    async fn list_page<T: DeserializeOwned>(
        &self,
        token: &SecretString,
        method: &'static str,
        field: &str,
        filters: &[(&str, &str)],
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<T>, SlackApiError> {
        let limit = limit.to_string();
        let mut query = filters.to_vec();
        query.push(("limit", limit.as_str()));
        if let Some(c) = cursor {
            query.push(("cursor", c));
        }
        let v = self.get(token, method, &query).await?;
        page(v, field, method)
    }

    /// One page of `users.list`.
    pub async fn users_list(
        &self,
        token: &SecretString,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<SlackUser>, SlackApiError> {
        self.list_page(token, "users.list", "members", &[], cursor, limit)
            .await
    }

    /// `users.lookupByEmail`.
    pub async fn users_lookup_by_email(
        &self,
        token: &SecretString,
        email: &str,
    ) -> Result<SlackUser, SlackApiError> {
        let v = self
            .get(token, "users.lookupByEmail", &[("email", email)])
            .await?;
        let user = v.get("user").cloned().unwrap_or(Value::Null);
        Self::decode("users.lookupByEmail", user)
    }

    /// `views.open`: opens `view` as a modal for the `trigger_id`'s user; returns the view id.
    pub async fn views_open(
        &self,
        token: &SecretString,
        trigger_id: &str,
        view: &Value,
    ) -> Result<String, SlackApiError> {
        let v = self
            .call(
                token,
                "views.open",
                &json!({ "trigger_id": trigger_id, "view": view }),
            )
            .await?;
        Ok(str_at(&v, &["view", "id"]).unwrap_or_default().to_owned())
    }

    /// `oauth.v2.access` with form-encoded arguments (code exchange or refresh).
    pub async fn oauth_v2_access(
        &self,
        form: &[(&str, &str)],
    ) -> Result<OAuthAccess, SlackApiError> {
        let request = self.http.post(self.url("oauth.v2.access")).form(form);
        let v = self.send("oauth.v2.access", request).await?;
        OAuthAccess::from_value(&v).ok_or_else(|| {
            SlackApiError::new(
                FailureClass::Permanent,
                "oauth.v2.access",
                None,
                "the answer has no access_token",
            )
        })
    }

    /// Posts a reply to a slash command's or shortcut's `response_url`.
    pub async fn respond(&self, response_url: &str, body: &Value) -> Result<(), SlackApiError> {
        const METHOD: &str = "response_url";
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let response = self
            .http
            .post(response_url)
            .header(http::header::CONTENT_TYPE, JSON_UTF8)
            .body(bytes)
            .send()
            .await
            .map_err(|e| network_error(METHOD, &e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = response
            .bytes()
            .await
            .map_err(|e| network_error(METHOD, &e))?;
        if (200..300).contains(&status) {
            // Response URLs answer `ok` as text or `{"ok": true}`; only an explicit
            // `"ok": false` is a failure.
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                if v.get("ok") == Some(&Value::Bool(false)) {
                    interpret(METHOD, status, retry_after, &body)?;
                }
            }
            return Ok(());
        }
        interpret(METHOD, status, retry_after, &body).map(|_| ())
    }
}

fn page<T: DeserializeOwned>(
    v: Value,
    field: &str,
    method: &str,
) -> Result<Page<T>, SlackApiError> {
    let next_cursor = str_at(&v, &["response_metadata", "next_cursor"]).map(str::to_owned);
    let items = match v.get(field) {
        Some(Value::Array(list)) => {
            let mut items = Vec::with_capacity(list.len());
            for item in list {
                items.push(SlackClient::decode::<T>(method, item.clone())?);
            }
            items
        }
        _ => Vec::new(),
    };
    Ok(Page { items, next_cursor })
}

fn network_error(method: &str, e: &reqwest::Error) -> SlackApiError {
    let message = if e.is_timeout() {
        "Slack did not answer in time; it will be retried"
    } else if e.is_connect() {
        "could not connect to Slack; it will be retried"
    } else {
        "the request to Slack failed; it will be retried"
    };
    SlackApiError::new(FailureClass::Temporary, method, None, message)
}

/// Turns an HTTP answer into Slack's JSON (when `ok`) or a classified error.
fn interpret(
    method: &str,
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Value, SlackApiError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let code = json
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(Value::as_str);
    let fail = |class_and_message: (FailureClass, String), code: Option<&str>| {
        let (class, mut message) = class_and_message;
        if let Some(needed) = json.as_ref().and_then(|v| str_at(v, &["needed"])) {
            message.push_str(&format!(" (missing scope: {needed})"));
        }
        Err(SlackApiError::new(class, method, code, message))
    };
    if status == 429 {
        let code = code.or(Some("ratelimited"));
        return fail(classify(status, code, retry_after), code);
    }
    if !(200..300).contains(&status) {
        return fail(classify(status, code, retry_after), code);
    }
    match json {
        Some(v) if v.get("ok") == Some(&Value::Bool(true)) => Ok(v),
        Some(_) => fail(classify(status, code, retry_after), code),
        None => Err(SlackApiError::new(
            FailureClass::Temporary,
            method,
            None,
            "Slack answered with a body that is not JSON; it will be retried",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_false_is_an_error_even_with_http_200() {
        let e = interpret(
            "chat.postMessage",
            200,
            None,
            br#"{"ok":false,"error":"not_in_channel"}"#,
        )
        .unwrap_err();
        assert_eq!(e.class(), FailureClass::Permanent);
        assert_eq!(e.code(), Some("not_in_channel"));
        assert!(e.message().contains("invite"));
    }

    #[test]
    fn http_429_uses_retry_after() {
        let e = interpret(
            "chat.postMessage",
            429,
            Some(Duration::from_secs(30)),
            br#"{"ok":false,"error":"ratelimited"}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.class(),
            FailureClass::RateLimited {
                retry_after: Some(Duration::from_secs(30))
            }
        );
        assert_eq!(
            e.to_delivery_error(),
            DeliveryError::rate_limited(Some(Duration::from_secs(30)), e.to_string())
        );
    }

    #[test]
    fn server_errors_and_garbage_are_temporary() {
        for (status, body) in [(500, &b"oops"[..]), (503, b""), (200, b"<html>")] {
            let e = interpret("users.list", status, None, body).unwrap_err();
            assert_eq!(e.class(), FailureClass::Temporary, "{status}");
        }
    }

    #[test]
    fn the_documented_codes_map_to_their_classes() {
        use FailureClass::*;
        for (code, class) in [
            ("not_in_channel", Permanent),
            ("channel_not_found", Permanent),
            ("is_archived", Permanent),
            ("msg_too_long", Permanent),
            ("users_not_found", RecipientUnknown),
            ("user_not_found", RecipientUnknown),
            ("invalid_auth", Disconnected),
            ("token_revoked", Disconnected),
            ("account_inactive", Disconnected),
            ("missing_scope", Disconnected),
            ("ratelimited", RateLimited { retry_after: None }),
            ("internal_error", Temporary),
        ] {
            assert_eq!(classify(200, Some(code), None).0, class, "{code}");
        }
    }

    #[test]
    fn missing_scope_names_the_scope() {
        let e = interpret(
            "users.list",
            200,
            None,
            br#"{"ok":false,"error":"missing_scope","needed":"users:read.email","provided":"chat:write"}"#,
        )
        .unwrap_err();
        assert!(e.is_disconnected());
        assert!(e.message().contains("users:read.email"));
    }

    #[test]
    fn user_fields_tolerate_nulls_and_unknowns() {
        let u: SlackUser = serde_json::from_value(json!({
            "id": "U1", "deleted": null, "is_bot": false, "brand_new_field": {"x": 1},
            "profile": {"email": "a@b.c", "image_24": "x"}
        }))
        .unwrap();
        assert_eq!(u.profile.email.as_deref(), Some("a@b.c"));
        assert!(!u.is_skipped());
    }
}
