//! The one place that maps Zendesk's answers (HTTP status, `Retry-After`, the `error`/`description`/`details` body) into switchboard's failure classes.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::destination::DeliveryError;
use crate::{Error, ErrorKind};

/// How a failed Zendesk call is classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum FailureClass {
    /// HTTP 429: retry after Zendesk's `Retry-After` (seconds).
    RateLimited {
        /// Zendesk's `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// 5xx, 409 conflicts, network failures and timeouts: retry with backoff.
    Temporary,
    /// 400, 404, 413, 422 and other 4xx: will not succeed as is.
    Permanent,
    /// 401/403: the credentials no longer work; park the connection until reconnected.
    Disconnected,
}

/// A failed Zendesk call: class, HTTP status, the operation, Zendesk's error code
/// (`RecordInvalid`, `RecordNotFound`…), the validation details naming each field,
/// and an admin-facing message. Never contains a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Zendesk {operation} failed (HTTP {status}{code}): {message}", code = self.code.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
pub struct ZendeskApiError {
    class: FailureClass,
    status: u16,
    operation: String,
    code: Option<String>,
    message: String,
    fields: Vec<String>,
}

impl ZendeskApiError {
    /// An error of `class` (status 0 means no HTTP answer).
    pub fn new(
        class: FailureClass,
        status: u16,
        operation: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ZendeskApiError {
            class,
            status,
            operation: operation.into(),
            code: None,
            message: message.into(),
            fields: Vec::new(),
        }
    }
    /// A network failure (connect, timeout, TLS, broken body).
    pub fn network(operation: &str, e: reqwest::Error) -> Self {
        // reqwest's Display may include the URL but never headers.
        let what = if e.is_timeout() {
            "timed out"
        } else {
            "network failure"
        };
        Self::new(
            FailureClass::Temporary,
            0,
            operation,
            format!("{what}; it will be retried ({})", e.without_url()),
        )
    }
    /// The classification.
    pub fn class(&self) -> FailureClass {
        self.class
    }
    /// The HTTP status (0 when Zendesk was not reached).
    pub fn status(&self) -> u16 {
        self.status
    }
    /// The operation that failed (e.g. `create ticket`).
    pub fn operation(&self) -> &str {
        &self.operation
    }
    /// Zendesk's `error` code, when given.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
    /// The fields Zendesk's validation `details` named (422).
    pub fn fields(&self) -> &[String] {
        &self.fields
    }
    /// The admin-facing explanation, including Zendesk's details.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// True for 401/403.
    pub fn is_disconnected(&self) -> bool {
        self.class == FailureClass::Disconnected
    }
    /// True for 404.
    pub fn is_not_found(&self) -> bool {
        self.status == 404
    }

    /// The engine's classification.
    pub fn to_delivery_error(&self) -> DeliveryError {
        let reason = self.to_string();
        match self.class {
            FailureClass::RateLimited { retry_after } => {
                DeliveryError::rate_limited(retry_after, reason)
            }
            FailureClass::Temporary => DeliveryError::temporary(reason),
            FailureClass::Permanent => DeliveryError::permanent(reason),
            FailureClass::Disconnected => DeliveryError::disconnected(reason),
        }
    }
}

impl From<ZendeskApiError> for Error {
    fn from(e: ZendeskApiError) -> Self {
        let (kind, temporary) = match e.class {
            FailureClass::Disconnected => (ErrorKind::Unauthorized, false),
            FailureClass::RateLimited { .. } => (ErrorKind::Platform, true),
            FailureClass::Temporary if e.status == 0 => (ErrorKind::Network, true),
            FailureClass::Temporary => (ErrorKind::Platform, true),
            FailureClass::Permanent if e.status == 404 => (ErrorKind::NotFound, false),
            FailureClass::Permanent => (ErrorKind::Platform, false),
        };
        let err = Error::new(kind, e.to_string());
        if temporary { err.temporary() } else { err }
    }
}

/// Parses `Retry-After` (Zendesk sends whole seconds).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    }
}

/// Zendesk's error body: `{"error": "RecordInvalid", "description": "…",
/// "details": {"field": [{"description": "…", "error": "…"}]}}`; `error` may also
/// be an object with `title`/`message`, or the body may be plain text.
fn describe_body(body: &[u8]) -> (Option<String>, Option<String>, Vec<(String, String)>) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        let t = String::from_utf8_lossy(body);
        let t = t.trim();
        let t = (!t.is_empty()).then(|| t.chars().take(300).collect::<String>());
        return (None, t, Vec::new());
    };
    let (mut code, mut description) = (None, v.get("description").and_then(text));
    match v.get("error") {
        Some(Value::String(s)) => code = text(&Value::String(s.clone())),
        Some(Value::Object(o)) => {
            code = o.get("title").and_then(text);
            if description.is_none() {
                description = o.get("message").and_then(text);
            }
        }
        _ => {}
    }
    let mut details = Vec::new();
    if let Some(Value::Object(map)) = v.get("details") {
        for (field, problems) in map {
            let list: Vec<&Value> = match problems {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            for p in list {
                let d = p
                    .get("description")
                    .and_then(text)
                    .or_else(|| p.get("error").and_then(text))
                    .or_else(|| text(p))
                    .unwrap_or_else(|| "invalid".to_owned());
                details.push((field.clone(), d));
            }
        }
    }
    (code, description, details)
}

/// Maps one Zendesk answer to an error; this is the connector's single mapping.
///
/// 429 → rate limited with `Retry-After`; 401/403 → disconnected (the tenant's
/// deliveries are parked until Zendesk is reconnected); 404 → permanent;
/// 409 → temporary (Zendesk's answer to concurrent updates of one record);
/// 422 and other 4xx → permanent, naming each field Zendesk's `details` list;
/// 5xx → temporary.
///
/// ```
/// use switchboard::zendesk::{FailureClass, classify};
/// let body = br#"{"error":"RecordInvalid","description":"Record validation errors",
///   "details":{"requester":[{"description":"Requester: is invalid","error":"InvalidValue"}]}}"#;
/// let e = classify("create ticket", 422, None, body);
/// assert_eq!(e.class(), FailureClass::Permanent);
/// assert_eq!(e.fields(), ["requester"]);
/// assert!(e.message().contains("Requester: is invalid"));
/// ```
pub fn classify(
    operation: &str,
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ZendeskApiError {
    let (code, description, details) = describe_body(body);
    let (class, advice) = match status {
        429 => (
            FailureClass::RateLimited { retry_after },
            "Zendesk rate-limited the account; retried after its Retry-After",
        ),
        401 => (
            FailureClass::Disconnected,
            "Zendesk no longer accepts the credentials: reconnect Zendesk (new API token or OAuth grant); queued work is kept",
        ),
        403 => (
            FailureClass::Disconnected,
            "the Zendesk credentials lack permission (agent/admin role or OAuth scope): reconnect Zendesk with an admin; queued work is kept",
        ),
        404 => (
            FailureClass::Permanent,
            "Zendesk has no such record (deleted, or the wrong subdomain)",
        ),
        409 => (
            FailureClass::Temporary,
            "Zendesk reported a conflicting concurrent update; it will be retried",
        ),
        413 => (
            FailureClass::Permanent,
            "Zendesk refused the request as too large",
        ),
        422 => (FailureClass::Permanent, "Zendesk rejected the record"),
        s if s >= 500 => (
            FailureClass::Temporary,
            "Zendesk is unavailable; it will be retried",
        ),
        _ => (FailureClass::Permanent, "Zendesk refused the request"),
    };
    let mut message = advice.to_owned();
    if let Some(d) = &description {
        message.push_str(": ");
        message.push_str(d);
    }
    if !details.is_empty() {
        let list: Vec<String> = details.iter().map(|(f, d)| format!("{f}: {d}")).collect();
        message.push_str(" (");
        message.push_str(&list.join("; "));
        message.push(')');
    }
    let mut fields: Vec<String> = details.into_iter().map(|(f, _)| f).collect();
    fields.dedup();
    ZendeskApiError {
        class,
        status,
        operation: operation.to_owned(),
        code,
        message,
        fields,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(
            classify("x", 401, None, b"{\"error\":\"Couldn't authenticate you\"}").class(),
            FailureClass::Disconnected
        );
        assert_eq!(
            classify("x", 403, None, b"").class(),
            FailureClass::Disconnected
        );
        assert_eq!(
            classify(
                "x",
                404,
                None,
                b"{\"error\":\"RecordNotFound\",\"description\":\"Not found\"}"
            )
            .class(),
            FailureClass::Permanent
        );
        assert_eq!(
            classify("x", 503, None, b"<html>").class(),
            FailureClass::Temporary
        );
        assert_eq!(
            classify("x", 429, Some(Duration::from_secs(7)), b"").class(),
            FailureClass::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        let e = classify(
            "x",
            400,
            None,
            br#"{"error":{"title":"Invalid attribute","message":"bad page[size]"}}"#,
        );
        assert_eq!(e.code(), Some("Invalid attribute"));
        assert!(e.message().contains("bad page[size]"));
    }
}
