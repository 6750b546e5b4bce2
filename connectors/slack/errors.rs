//! The one place that maps Slack's answers (HTTP status, `"ok": false` codes) into switchboard's failure classes.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::destination::DeliveryError;
use crate::{Error, ErrorKind};

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
/// and `no_permission` → permanent; `users_not_found`, `user_not_found` →
/// recipient unknown; `invalid_auth`, `token_revoked`, `account_inactive`,
/// `missing_scope` (naming Slack's `needed` scope) → disconnected;
/// `internal_error`, `fatal_error` (which may have partly succeeded),
/// `team_added_to_org`, `org_login_required` (a workspace migrating into an
/// Enterprise organisation) → temporary. HTTP 200 with `"ok": false` is an
/// error like any other.
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
        "missing_scope" => (
            Disconnected,
            "the Slack app's token lacks a scope this call needs: add the scope to the app's bot token scopes and reinstall the app in the workspace; queued messages are kept and sent after reconnecting",
        ),
        "team_access_not_granted" => (
            Disconnected,
            "the Slack app has not been granted access to this workspace of the organisation: an org admin must add the app to it, then reconnect; queued messages are kept and sent after reconnecting",
        ),
        // Per channel (e.g. posting is restricted there): not the whole workspace.
        "no_permission" => (
            Permanent,
            "the Slack app may not post in this channel (a channel or workspace setting restricts it): ask a Slack admin or route to another channel, then replay",
        ),
        // The workspace is migrating into an Enterprise Grid organisation: the
        // Web API is intermittently unavailable until the move completes.
        "team_added_to_org" | "org_login_required" => (
            Temporary,
            "the Slack workspace is being migrated into an Enterprise organisation and is temporarily unavailable; it will be retried",
        ),
        // Slack: "it's possible some aspect of the operation succeeded before
        // the error was raised" — a retry may post twice, which is preferred
        // over losing the notification.
        "fatal_error" => (
            Temporary,
            "Slack had a catastrophic error (the call may have partly succeeded, so a retry can post twice); it will be retried",
        ),
        "invalid_refresh_token" => (
            Disconnected,
            "Slack rejected the refresh token: reinstall the Slack app; queued messages are kept and sent after reconnecting",
        ),
        "internal_error" | "service_unavailable" | "request_timeout" => (
            Temporary,
            "Slack had an internal problem; it will be retried",
        ),
        _ => (Permanent, "Slack refused the request"),
    };
    (class, message.to_owned())
}

/// Parses `Retry-After` (Slack sends whole seconds).
pub(super) fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

pub(super) fn network_error(method: &str, e: &reqwest::Error) -> SlackApiError {
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
pub(super) fn interpret(
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
        let needed = json.as_ref().and_then(|v| str_at(v, &["needed"]));
        if let (Some(needed), Some("missing_scope")) = (needed, code) {
            message = format!(
                "the Slack app's token lacks the {needed} scope ({method} needs it): add {needed} to the app's bot token scopes and reinstall the app in the workspace; queued messages are kept and sent after reconnecting"
            );
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

pub(super) fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
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
}
