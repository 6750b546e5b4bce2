//! Zendesk webhooks: signature verification (base64 HMAC-SHA256 over timestamp + body, 5-minute window), the payload parser, and a handler that turns verified webhooks into events.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::event::Event;
use crate::inbound::{
    self, DEFAULT_BODY_LIMIT, DEFAULT_WINDOW, InboundRequest, InboundResponse, check_body_size,
    check_timestamp, unauthorized,
};
use crate::source::Emitter;
use crate::tenant::TenantId;
use crate::{Error, ErrorKind, Result};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Zendesk-Webhook-Signature";
/// The header carrying the signed timestamp (ISO 8601, e.g. `2021-07-25T10:00:00Z`).
pub const SIGNATURE_TIMESTAMP_HEADER: &str = "X-Zendesk-Webhook-Signature-Timestamp";
/// Kind of events made from webhooks that are not Zendesk event subscriptions
/// (trigger and automation webhooks with an admin-defined body).
pub const WEBHOOK_EVENT_KIND: &str = "zendesk.webhook";

/// Parses the signature timestamp: ISO 8601 / RFC 3339 as Zendesk sends it, or
/// decimal unix seconds.
fn parse_signature_timestamp(raw: &str) -> Result<i64> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.timestamp());
    }
    inbound::parse_timestamp(raw)
        .map_err(|_| unauthorized("the webhook timestamp is neither ISO 8601 nor unix time"))
}

/// Verifies a Zendesk webhook: `signature` must equal
/// `base64(HMAC-SHA256(signing_secret, timestamp + body))` (compared in constant
/// time) and `timestamp` must be within 5 minutes of `now_unix` either way.
/// The signing secret is used as given (its text is the key; it is not base64-decoded).
///
/// ```
/// use switchboard::zendesk::verify_webhook;
/// let secret = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ==";
/// let ts = "2021-07-25T10:00:00Z";
/// let body = br#"{"say": "hello"}"#;
/// let now = 1_627_207_200; // 2021-07-25T10:00:00Z
/// let sig = "gf3v0LzLRHPUnIdhbvwRDVEvzSb07/QN0GYjSNlkBT0=";
/// assert!(verify_webhook(secret, ts, body, sig, now).is_ok());
/// assert!(verify_webhook(secret, ts, b"{}", sig, now).is_err());
/// ```
pub fn verify_webhook(
    signing_secret: &str,
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now_unix: i64,
) -> Result<()> {
    use base64::Engine as _;
    if signing_secret.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            "the Zendesk signing secret is empty",
        ));
    }
    let at = parse_signature_timestamp(timestamp)?;
    check_timestamp(at, now_unix, DEFAULT_WINDOW)?;
    let given = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| unauthorized("the webhook signature is not base64"))?;
    if inbound::verify_hmac_sha256(
        signing_secret.as_bytes(),
        &[timestamp.as_bytes(), body],
        &given,
    ) {
        Ok(())
    } else {
        Err(unauthorized("the webhook signature does not match"))
    }
}

/// A parsed webhook body.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookPayload {
    /// The event kind: `zendesk.ticket.created` for the event type
    /// `zen:event-type:ticket.created`, or [`WEBHOOK_EVENT_KIND`] for trigger webhooks.
    pub kind: String,
    /// Zendesk's event id when given (`id`), else none.
    pub id: Option<String>,
    /// The subject (e.g. `zen:ticket:123`), when given.
    pub subject: Option<String>,
    /// The ticket id from the subject or the body, when one is present.
    pub ticket_id: Option<u64>,
    /// When it happened (`time`), when given.
    pub time: Option<DateTime<Utc>>,
    /// The whole JSON body.
    pub body: Value,
}

fn ticket_id_of(body: &Value, subject: Option<&str>) -> Option<u64> {
    if let Some(id) = subject.and_then(|s| s.strip_prefix("zen:ticket:")) {
        if let Ok(n) = id.parse() {
            return Some(n);
        }
    }
    for p in ["/detail/id", "/ticket/id", "/ticket_id"] {
        match body.pointer(p) {
            Some(Value::Number(n)) => return n.as_u64(),
            Some(Value::String(s)) => {
                if let Ok(n) = s.trim().parse() {
                    return Some(n);
                }
            }
            _ => {}
        }
    }
    None
}

/// Parses a webhook body (after verification). It must be a JSON object; event
/// subscriptions carry `type` `zen:event-type:…`, which becomes the kind.
pub fn parse_webhook(body: &[u8]) -> Result<WebhookPayload> {
    let body: Value = serde_json::from_slice(body).map_err(|e| {
        Error::new(ErrorKind::InvalidInput, "the webhook body is not JSON").with_source(e)
    })?;
    if !body.is_object() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "the webhook body is not a JSON object",
        ));
    }
    let str_of = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 512)
            .map(str::to_owned)
    };
    let kind = match str_of("type")
        .as_deref()
        .and_then(|t| t.strip_prefix("zen:event-type:"))
    {
        Some(t)
            if !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') =>
        {
            format!("zendesk.{t}")
        }
        _ => WEBHOOK_EVENT_KIND.to_owned(),
    };
    let subject = str_of("subject");
    let time = str_of("time")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc));
    Ok(WebhookPayload {
        ticket_id: ticket_id_of(&body, subject.as_deref()),
        id: str_of("id"),
        kind,
        subject,
        time,
        body,
    })
}

/// Receives Zendesk webhooks for one tenant: verifies them on the raw bytes,
/// parses them and publishes an event per webhook.
///
/// Event ids are Zendesk's event id when present, else a hash of the signed
/// timestamp and body, so a redelivered webhook publishes nothing new.
#[derive(Clone)]
pub struct ZendeskWebhook {
    secret: secrecy::SecretString,
    tenant: TenantId,
    body_limit: usize,
}

impl std::fmt::Debug for ZendeskWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZendeskWebhook")
            .field("secret", &"[redacted]")
            .field("tenant", &self.tenant)
            .finish()
    }
}

impl ZendeskWebhook {
    /// A receiver verifying with the webhook's signing secret.
    pub fn new(signing_secret: secrecy::SecretString) -> Self {
        ZendeskWebhook {
            secret: signing_secret,
            tenant: TenantId::default_tenant(),
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }

    /// The tenant the events belong to.
    #[must_use]
    pub fn tenant(mut self, tenant: TenantId) -> Self {
        self.tenant = tenant;
        self
    }

    /// The tenant the events belong to.
    pub fn tenant_id(&self) -> &TenantId {
        &self.tenant
    }

    /// The body cap (default 1 MiB).
    #[must_use]
    pub fn body_limit(mut self, limit: usize) -> Self {
        self.body_limit = limit;
        self
    }

    /// Verifies and parses a request into an event (nothing is published).
    pub fn to_event(&self, request: &InboundRequest, now_unix: i64) -> Result<Event> {
        use secrecy::ExposeSecret;
        check_body_size(request.body().len(), self.body_limit)?;
        let ts = inbound::header(request, SIGNATURE_TIMESTAMP_HEADER)
            .ok_or_else(|| unauthorized("missing X-Zendesk-Webhook-Signature-Timestamp"))?;
        let sig = inbound::header(request, SIGNATURE_HEADER)
            .ok_or_else(|| unauthorized("missing X-Zendesk-Webhook-Signature"))?;
        verify_webhook(
            self.secret.expose_secret(),
            ts,
            request.body(),
            sig,
            now_unix,
        )?;
        let payload = parse_webhook(request.body())?;
        let id = match &payload.id {
            Some(id) => format!("zendesk:{id}"),
            None => {
                use sha2::Digest as _;
                let mut h = sha2::Sha256::new();
                h.update(ts.as_bytes());
                h.update(request.body());
                format!("zendesk:{}", hex::encode(h.finalize()))
            }
        };
        let mut b = Event::builder(id, payload.kind.clone())
            .source("zendesk")
            .tenant(self.tenant.as_str())
            .data(payload.body);
        if let Some(t) = payload.time {
            b = b.occurred_at(t);
        }
        b.build()
    }

    /// Handles one request: `200` after publishing, `401` for a bad signature or
    /// stale timestamp, `413` over the cap, `400` for a body that is not a JSON
    /// object, `500` if publishing failed (Zendesk then retries).
    pub async fn handle(&self, request: &InboundRequest, emitter: &Emitter) -> InboundResponse {
        let now = Utc::now().timestamp();
        let event = match self.to_event(request, now) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "rejected a Zendesk webhook");
                return inbound::error_response(&e);
            }
        };
        match emitter.emit(event).await {
            Ok(_) => inbound::response(http::StatusCode::OK, "text/plain; charset=utf-8", "ok"),
            Err(e) => {
                tracing::warn!(error = %e, "could not publish a Zendesk webhook");
                inbound::error_response(&e)
            }
        }
    }
}
