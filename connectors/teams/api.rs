//! The Bot Connector REST client (create conversation, send activity) and the one place that maps Microsoft's answers (Bot Connector, identity platform, Graph) into switchboard's failure classes.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::TeamsConfig;
use crate::destination::DeliveryError;
use crate::{Error, ErrorKind, Result};

/// How a failed Microsoft call is classified; decides retry, dead letter or parking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum FailureClass {
    /// HTTP 429: retry after `retry_after` (the `Retry-After` header).
    RateLimited {
        /// Microsoft's `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// 412, 5xx, timeouts and network failures: retry with backoff.
    Temporary,
    /// Will not succeed as is (conversation not found, bad request): dead letter.
    Permanent,
    /// The app cannot reach this person (not installed for them, blocked, uninstalled).
    RecipientUnknown,
    /// The credentials no longer work (401, rejected client secret): park until reconnected.
    Disconnected,
}

/// Which Microsoft service answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    /// The Microsoft identity platform (token endpoint).
    Login,
    /// The Bot Connector service (`{serviceUrl}/v3/...`).
    BotConnector,
    /// Microsoft Graph.
    Graph,
    /// The Bot Framework OpenID metadata / keys.
    OpenId,
    /// A Workflows (Power Automate) webhook.
    Workflows,
}

impl Service {
    fn label(self) -> &'static str {
        match self {
            Service::Login => "Microsoft identity platform",
            Service::BotConnector => "Bot Connector",
            Service::Graph => "Microsoft Graph",
            Service::OpenId => "Bot Framework OpenID metadata",
            Service::Workflows => "Workflows webhook",
        }
    }
}

/// A failed Microsoft call: its class, the service, the HTTP status, Microsoft's
/// error code and an admin-actionable message. Never contains a secret or token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{service} call {operation} failed (HTTP {status}, {code}): {message}",
    service = self.service.label(),
    status = self.status.map_or_else(|| "none".to_owned(), |s| s.to_string()),
    code = self.code.as_deref().unwrap_or("no error code"))]
pub struct TeamsApiError {
    class: FailureClass,
    service: Service,
    operation: String,
    status: Option<u16>,
    code: Option<String>,
    message: String,
}

impl TeamsApiError {
    /// An error of `class`.
    pub fn new(
        class: FailureClass,
        service: Service,
        operation: impl Into<String>,
        status: Option<u16>,
        code: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        TeamsApiError {
            class,
            service,
            operation: operation.into(),
            status,
            code: code.map(str::to_owned),
            message: message.into(),
        }
    }

    /// A network failure (connect, timeout, TLS): temporary.
    pub fn network(service: Service, operation: &str, e: &reqwest::Error) -> Self {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else {
            "failed on the network"
        };
        Self::new(
            FailureClass::Temporary,
            service,
            operation,
            None,
            None,
            format!("the request {what}; it will be retried"),
        )
    }

    /// The classification.
    pub fn class(&self) -> FailureClass {
        self.class
    }
    /// The service that answered.
    pub fn service(&self) -> Service {
        self.service
    }
    /// The HTTP status, if there was a response.
    pub fn status(&self) -> Option<u16> {
        self.status
    }
    /// Microsoft's error code (`ConversationNotFound`, `invalid_client`, …).
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
    /// The admin-facing explanation.
    pub fn message(&self) -> &str {
        &self.message
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

impl From<TeamsApiError> for Error {
    fn from(e: TeamsApiError) -> Self {
        let (kind, temporary) = match e.class {
            FailureClass::Disconnected => (ErrorKind::Unauthorized, false),
            FailureClass::RateLimited { .. } => (ErrorKind::Platform, true),
            FailureClass::Temporary => (ErrorKind::Network, true),
            FailureClass::Permanent => (ErrorKind::Platform, false),
            FailureClass::RecipientUnknown => (ErrorKind::NotFound, false),
        };
        let err = Error::new(kind, e.to_string());
        if temporary { err.temporary() } else { err }
    }
}

/// The error code and message in a Microsoft error body: Bot Connector and Graph
/// send `{"error": {"code": "…", "message": "…"}}`, the identity platform
/// `{"error": "invalid_client", "error_description": "AADSTS…"}`.
pub fn error_code(body: &Value) -> (Option<String>, Option<String>) {
    match body.get("error") {
        Some(Value::Object(o)) => (
            o.get("code").and_then(Value::as_str).map(str::to_owned),
            o.get("message").and_then(Value::as_str).map(str::to_owned),
        ),
        Some(Value::String(code)) => (
            Some(code.clone()),
            body.get("error_description")
                .and_then(Value::as_str)
                .map(str::to_owned),
        ),
        _ => (None, None),
    }
}

fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Maps one Microsoft answer to a class and an admin-actionable message. This is
/// the single mapping of the connector:
///
/// * 429 → rate limited (`Retry-After` wins); 412, 502, 504 and every other 5xx →
///   temporary (Microsoft's guidance is to retry 412, 502 and 504 like 429).
/// * 401 → disconnected; a token request refused with 400/401 (`invalid_client`,
///   `unauthorized_client`, an unknown tenant or app) → disconnected.
/// * 403 `BotNotInConversationRoster` (the app is not installed for that person
///   or in that chat) and `MessageWritesBlocked` / `ConversationBlockedByUser`
///   (blocked or uninstalled) → recipient unknown; other 403s → disconnected for
///   Graph (missing consent) and permanent otherwise.
/// * 404 (`ConversationNotFound`, …) and other 4xx → permanent.
///
/// ```
/// use switchboard::teams::{FailureClass, Service, classify};
/// let body = serde_json::json!({"error": {"code": "ConversationNotFound", "message": "Conversation not found."}});
/// assert_eq!(classify(Service::BotConnector, 404, &body, None).0, FailureClass::Permanent);
/// ```
pub fn classify(
    service: Service,
    status: u16,
    body: &Value,
    retry_after: Option<Duration>,
) -> (FailureClass, String) {
    use FailureClass::*;
    let (code, detail) = error_code(body);
    let detail = detail.map(|d| clip(&d, 300)).unwrap_or_default();
    let body_text = body.to_string();
    let has = |needle: &str| code.as_deref() == Some(needle) || body_text.contains(needle);
    let with = |msg: &str| {
        if detail.is_empty() {
            msg.to_owned()
        } else {
            format!("{msg} ({detail})")
        }
    };
    match status {
        429 => (
            RateLimited { retry_after },
            with("Microsoft throttled the app; it will be retried after Retry-After"),
        ),
        412 | 502 | 504 => (Temporary, with("transient failure; it will be retried")),
        s if s >= 500 => (
            Temporary,
            with(&format!("server error {s}; it will be retried")),
        ),
        400 | 401 if service == Service::Login => (
            Disconnected,
            with(
                "the identity platform refused the app's credentials (wrong or expired client secret, unknown app id, or the customer's tenant has not consented): reconnect Teams for this tenant; queued messages are kept",
            ),
        ),
        401 | 403 if service == Service::Workflows => (
            Disconnected,
            with(
                "the Workflows webhook no longer accepts its URL (the workflow was turned off, its owner left, or the URL was regenerated): create the workflow again and reconnect with the new URL; queued messages are kept",
            ),
        ),
        404 if service == Service::Workflows => (
            Permanent,
            with(
                "the Workflows webhook was not found (the workflow was deleted): create it again, update the channel's webhook URL, then replay",
            ),
        ),
        400 if service == Service::Workflows => (
            Permanent,
            with(
                "the workflow refused the payload (it expects an Adaptive Card in attachments): check the workflow's trigger and the route's template, then replay",
            ),
        ),
        401 => (
            Disconnected,
            with(
                "Microsoft no longer accepts the app's token: check the app id and client secret and reconnect Teams; queued messages are kept",
            ),
        ),
        403 if has("BotNotInConversationRoster") => (
            RecipientUnknown,
            with(
                "the Teams app is not installed for this person or in this conversation: install the app for them (Teams admin center → Manage apps, or an app setup policy), then replay",
            ),
        ),
        403 if has("MessageWritesBlocked") || has("ConversationBlockedByUser") => (
            RecipientUnknown,
            with(
                "the person blocked or uninstalled the Teams app: they must unblock or reinstall it, then replay",
            ),
        ),
        403 if service == Service::Graph => (
            Disconnected,
            with(
                "Graph refused the request: grant the app the User.Read.All application permission with admin consent, then reconnect",
            ),
        ),
        403 => (
            Permanent,
            with(
                "Teams refused the message (the app may be blocked by an admin or removed from the team): ask a Teams admin, then replay",
            ),
        ),
        404 if service == Service::BotConnector => (
            Permanent,
            with(
                "the Teams conversation was not found (deleted, or the app was removed from it): install the app in the team or chat again so a new conversation reference is collected, then replay",
            ),
        ),
        404 => (Permanent, with("not found")),
        413 => (
            Permanent,
            with("the message is too large for Teams: shorten the route's template, then replay"),
        ),
        s => (
            Permanent,
            with(&format!("Microsoft refused the request with HTTP {s}")),
        ),
    }
}

/// Parses `Retry-After` (delta seconds; an HTTP date is treated as unknown).
pub(crate) fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Reads a response: 2xx → its JSON body (empty bodies read as `null`), anything
/// else → a classified [`TeamsApiError`].
pub(crate) async fn read_json(
    service: Service,
    operation: &str,
    response: reqwest::Response,
) -> std::result::Result<Value, TeamsApiError> {
    let status = response.status().as_u16();
    let retry_after = parse_retry_after(response.headers());
    let bytes = response
        .bytes()
        .await
        .map_err(|e| TeamsApiError::network(service, operation, &e))?;
    let body: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let (class, message) = classify(service, status, &body, retry_after);
    let (code, _) = error_code(&body);
    Err(TeamsApiError::new(
        class,
        service,
        operation,
        Some(status),
        code.as_deref(),
        message,
    ))
}

/// Where a conversation lives: what a bot needs to post into it later.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConversationReference {
    /// The Bot Framework service URL the conversation is served from.
    #[serde(rename = "serviceUrl")]
    pub service_url: String,
    /// The conversation id (`19:…@thread.tacv2` for channels, `a:…` for 1:1 chats).
    #[serde(rename = "conversationId")]
    pub conversation_id: String,
    /// The customer's Entra tenant id.
    #[serde(rename = "tenantId")]
    pub tenant_id: String,
    /// `personal`, `groupChat` or `channel`, when known.
    #[serde(
        rename = "conversationType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub conversation_type: Option<String>,
    /// A name to find it by (channel or team name), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What `POST /v3/conversations` returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationResource {
    /// The conversation id.
    pub id: String,
    /// The service URL to use for the conversation, when the service gave one.
    #[serde(rename = "serviceUrl", default)]
    pub service_url: Option<String>,
    /// The id of the initial activity, if one was sent.
    #[serde(rename = "activityId", default)]
    pub activity_id: Option<String>,
}

/// A Bot Connector client: one HTTP client, the bearer token passed per call.
#[derive(Debug, Clone)]
pub struct BotConnectorClient {
    http: reqwest::Client,
}

/// `{service_url}/v3/conversations[/{id}/activities]`, the id encoded as one path segment.
pub fn conversations_url(service_url: &str, conversation_id: Option<&str>) -> Result<url::Url> {
    let mut url = url::Url::parse(service_url.trim()).map_err(|e| {
        Error::new(ErrorKind::InvalidInput, "invalid Teams service URL").with_source(e)
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "the Teams service URL must be an http or https URL",
        ));
    }
    {
        let mut segments = url
            .path_segments_mut()
            .map_err(|()| Error::new(ErrorKind::InvalidInput, "invalid Teams service URL"))?;
        segments.pop_if_empty().push("v3").push("conversations");
        if let Some(id) = conversation_id {
            segments.push(id).push("activities");
        }
    }
    Ok(url)
}

impl BotConnectorClient {
    /// A client with `config`'s timeout.
    pub fn new(config: &TeamsConfig) -> Result<Self> {
        Ok(BotConnectorClient {
            http: config.http_client()?,
        })
    }

    /// A client sharing an HTTP client.
    pub fn with_http(http: reqwest::Client) -> Self {
        BotConnectorClient { http }
    }

    /// Creates (or finds) the 1:1 conversation between the bot and the person
    /// with Entra object id `aad_object_id` in `tenant_id`:
    /// `POST {serviceUrl}/v3/conversations` with `isGroup: false`, the bot, the
    /// member and `channelData.tenant.id`.
    pub async fn create_personal_conversation(
        &self,
        token: &SecretString,
        service_url: &str,
        bot_id: &str,
        aad_object_id: &str,
        tenant_id: &str,
    ) -> std::result::Result<ConversationResource, TeamsApiError> {
        const OP: &str = "create conversation";
        let url = conversations_url(service_url, None).map_err(|e| invalid(OP, &e))?;
        let body = json!({
            "isGroup": false,
            "bot": { "id": bot_id },
            "members": [ { "id": aad_object_id } ],
            "tenantId": tenant_id,
            "channelData": { "tenant": { "id": tenant_id } },
        });
        let response = self
            .http
            .post(url)
            .bearer_auth(token.expose_secret())
            .json(&body)
            .send()
            .await
            .map_err(|e| TeamsApiError::network(Service::BotConnector, OP, &e))?;
        let value = read_json(Service::BotConnector, OP, response).await?;
        serde_json::from_value::<ConversationResource>(value)
            .ok()
            .filter(|c| !c.id.is_empty())
            .ok_or_else(|| {
                TeamsApiError::new(
                    FailureClass::Temporary,
                    Service::BotConnector,
                    OP,
                    None,
                    None,
                    "the answer carried no conversation id; it will be retried",
                )
            })
    }

    /// Sends `activity` to a conversation:
    /// `POST {serviceUrl}/v3/conversations/{id}/activities`; returns the new activity's id.
    pub async fn send_activity(
        &self,
        token: &SecretString,
        service_url: &str,
        conversation_id: &str,
        activity: &Value,
    ) -> std::result::Result<Option<String>, TeamsApiError> {
        const OP: &str = "send to conversation";
        let url =
            conversations_url(service_url, Some(conversation_id)).map_err(|e| invalid(OP, &e))?;
        let response = self
            .http
            .post(url)
            .bearer_auth(token.expose_secret())
            .json(activity)
            .send()
            .await
            .map_err(|e| TeamsApiError::network(Service::BotConnector, OP, &e))?;
        let value = read_json(Service::BotConnector, OP, response).await?;
        Ok(value
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned))
    }
}

fn invalid(op: &str, e: &Error) -> TeamsApiError {
    TeamsApiError::new(
        FailureClass::Permanent,
        Service::BotConnector,
        op,
        None,
        None,
        format!("{}: fix the stored service URL, then replay", e.message()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_ids_are_one_path_segment() {
        let u = conversations_url(
            "https://smba.trafficmanager.net/amer/",
            Some("19:abc@thread.tacv2;messageid=1/2"),
        )
        .unwrap();
        assert_eq!(
            u.path(),
            "/amer/v3/conversations/19:abc@thread.tacv2;messageid=1%2F2/activities"
        );
        let u = conversations_url("https://smba.trafficmanager.net/teams", None).unwrap();
        assert_eq!(u.path(), "/teams/v3/conversations");
        assert!(conversations_url("mailto:x@y", None).is_err());
    }

    #[test]
    fn classification_follows_microsofts_guidance() {
        let b = |code: &str| json!({"error": {"code": code, "message": "m"}});
        let c = |status, body: &Value| classify(Service::BotConnector, status, body, None).0;
        assert_eq!(c(412, &Value::Null), FailureClass::Temporary);
        assert_eq!(c(502, &Value::Null), FailureClass::Temporary);
        assert_eq!(c(504, &Value::Null), FailureClass::Temporary);
        assert_eq!(c(401, &Value::Null), FailureClass::Disconnected);
        assert_eq!(
            c(403, &b("BotNotInConversationRoster")),
            FailureClass::RecipientUnknown
        );
        assert_eq!(
            c(
                403,
                &json!({"error": {"code": "Forbidden", "message": "x"}, "subCode": "MessageWritesBlocked"})
            ),
            FailureClass::RecipientUnknown
        );
        assert_eq!(c(404, &b("ConversationNotFound")), FailureClass::Permanent);
        assert_eq!(
            classify(
                Service::Login,
                400,
                &json!({"error": "invalid_client"}),
                None
            )
            .0,
            FailureClass::Disconnected
        );
        let (class, _) = classify(
            Service::BotConnector,
            429,
            &Value::Null,
            Some(Duration::from_secs(3)),
        );
        assert_eq!(
            class,
            FailureClass::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
    }
}
