//! The Slack Web API client: one method per Web API call the connector makes, tokens per call, every answer mapped by `errors.rs`.

use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use super::config::SlackConfig;
use super::errors::{
    FailureClass, SlackApiError, interpret, network_error, parse_retry_after, str_at,
};
use crate::{Error, ErrorKind, Result};

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
    /// Reply in the thread of this parent message's `ts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_ts: Option<String>,
    /// With `thread_ts`: also show the reply in the channel.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reply_broadcast: bool,
}

impl PostMessage {
    /// A message of `text` to `channel`.
    pub fn new(channel: impl Into<String>, text: impl Into<String>) -> Self {
        PostMessage {
            channel: channel.into(),
            text: text.into(),
            blocks: None,
            thread_ts: None,
            reply_broadcast: false,
        }
    }
    /// With Block Kit blocks.
    #[must_use]
    pub fn blocks(mut self, blocks: Vec<Value>) -> Self {
        self.blocks = Some(blocks);
        self
    }
    /// As a reply in the thread of `parent_ts`; `broadcast` also shows it in the channel.
    #[must_use]
    pub fn in_thread(mut self, parent_ts: impl Into<String>, broadcast: bool) -> Self {
        self.thread_ts = Some(parent_ts.into());
        self.reply_broadcast = broadcast;
        self
    }
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
    /// Invited but never signed in.
    #[serde(default, deserialize_with = "null_default")]
    pub is_invited_user: bool,
    /// Profile fields.
    #[serde(default, deserialize_with = "null_default")]
    pub profile: SlackProfile,
}

impl SlackUser {
    /// Slackbot's fixed user id.
    pub const SLACKBOT: &'static str = "USLACKBOT";

    /// True for accounts a sync must skip: deleted, invited (never signed
    /// in), bots/apps (and Slackbot) and guests.
    pub fn is_skipped(&self) -> bool {
        self.deleted
            || self.is_invited_user
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

/// What `auth.test` says about a token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthIdentity {
    /// The workspace.
    #[serde(default)]
    pub team_id: Option<String>,
    /// The workspace's name.
    #[serde(default)]
    pub team: Option<String>,
    /// The token's user (the bot user for a bot token).
    #[serde(default)]
    pub user_id: Option<String>,
    /// The Enterprise Grid organisation, if any.
    #[serde(default)]
    pub enterprise_id: Option<String>,
    /// True for an org-wide install's token.
    #[serde(default, deserialize_with = "null_default")]
    pub is_enterprise_install: bool,
}

#[derive(Deserialize)]
struct TeamEntry {
    id: String,
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
    /// The enterprise name, if any.
    pub enterprise_name: Option<String>,
    /// True for an org-wide install on an Enterprise Grid organisation (then
    /// `team_id` is absent and the token acts on every workspace of the org).
    pub is_enterprise_install: bool,
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
            .field("is_enterprise_install", &self.is_enterprise_install)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires_in", &self.expires_in)
            .finish()
    }
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
            enterprise_name: owned(&["enterprise", "name"]),
            is_enterprise_install: v
                .get("is_enterprise_install")
                .and_then(Value::as_bool)
                .unwrap_or(false),
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

    /// `chat.update`: replaces the text and blocks of the message `ts` in `channel`.
    pub async fn chat_update(
        &self,
        token: &SecretString,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: &[Value],
    ) -> Result<PostedMessage, SlackApiError> {
        let body = json!({ "channel": channel, "ts": ts, "text": text, "blocks": blocks });
        let v = self.call(token, "chat.update", &body).await?;
        Ok(serde_json::from_value(v).unwrap_or_default())
    }

    /// `chat.delete`: deletes the message `ts` in `channel`.
    pub async fn chat_delete(
        &self,
        token: &SecretString,
        channel: &str,
        ts: &str,
    ) -> Result<(), SlackApiError> {
        self.call(
            token,
            "chat.delete",
            &json!({ "channel": channel, "ts": ts }),
        )
        .await
        .map(|_| ())
    }

    /// `chat.postEphemeral`: a message only `user` sees in `channel`; returns its `message_ts`.
    pub async fn chat_post_ephemeral(
        &self,
        token: &SecretString,
        channel: &str,
        user: &str,
        text: &str,
        blocks: &[Value],
    ) -> Result<String, SlackApiError> {
        let body = json!({ "channel": channel, "user": user, "text": text, "blocks": blocks });
        let v = self.call(token, "chat.postEphemeral", &body).await?;
        Ok(str_at(&v, &["message_ts"]).unwrap_or_default().to_owned())
    }

    /// `views.publish`: sets `user`'s App Home tab to `view` (a `home` view); returns the view id.
    pub async fn views_publish(
        &self,
        token: &SecretString,
        user: &str,
        view: &Value,
    ) -> Result<String, SlackApiError> {
        let v = self
            .call(
                token,
                "views.publish",
                &json!({ "user_id": user, "view": view }),
            )
            .await?;
        Ok(str_at(&v, &["view", "id"]).unwrap_or_default().to_owned())
    }

    /// One page of `conversations.list` (public and private channels the app can
    /// see, archived excluded). `team_id` names the workspace, which Slack
    /// requires when the token is an org-wide install's (ignored otherwise).
    pub async fn conversations_list(
        &self,
        token: &SecretString,
        team_id: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<Conversation>, SlackApiError> {
        let mut filters = vec![
            ("types", "public_channel,private_channel"),
            ("exclude_archived", "true"),
        ];
        if let Some(team) = team_id {
            filters.push(("team_id", team));
        }
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

    /// One page of `users.list`. `team_id` names the workspace, which Slack
    /// requires when the token is an org-wide install's (ignored otherwise).
    pub async fn users_list(
        &self,
        token: &SecretString,
        team_id: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<SlackUser>, SlackApiError> {
        let filters: Vec<(&str, &str)> = team_id.map(|t| ("team_id", t)).into_iter().collect();
        self.list_page(token, "users.list", "members", &filters, cursor, limit)
            .await
    }

    /// One page of `auth.teams.list`: the workspaces an org-wide install's
    /// token has been added to (ids only).
    pub async fn auth_teams_list(
        &self,
        token: &SecretString,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<String>, SlackApiError> {
        let page: Page<TeamEntry> = self
            .list_page(token, "auth.teams.list", "teams", &[], cursor, limit)
            .await?;
        Ok(Page {
            items: page.items.into_iter().map(|t| t.id).collect(),
            next_cursor: page.next_cursor,
        })
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

    /// `auth.test`: which workspace and user a token belongs to.
    pub async fn auth_test(&self, token: &SecretString) -> Result<AuthIdentity, SlackApiError> {
        let v = self.call(token, "auth.test", &json!({})).await?;
        let mut who: AuthIdentity = Self::decode("auth.test", v)?;
        who.team_id = who.team_id.filter(|t| !t.is_empty());
        who.enterprise_id = who.enterprise_id.filter(|t| !t.is_empty());
        Ok(who)
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

    /// `apps.connections.open` (Socket Mode): with the app-level token
    /// (`xapp-…`, scope `connections:write`) as Bearer, a POST without
    /// arguments; answers the WebSocket URL to connect to (`url`).
    pub async fn apps_connections_open(
        &self,
        app_token: &SecretString,
    ) -> Result<String, SlackApiError> {
        const METHOD: &str = "apps.connections.open";
        let request = self
            .http
            .post(self.url(METHOD))
            .bearer_auth(app_token.expose_secret())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        let v = self.send(METHOD, request).await?;
        str_at(&v, &["url"])
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                SlackApiError::new(
                    FailureClass::Temporary,
                    METHOD,
                    None,
                    "the answer has no url",
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

#[cfg(test)]
mod tests {
    use super::*;

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
