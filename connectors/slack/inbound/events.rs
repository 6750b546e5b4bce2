//! Events API request bodies, parsed without panicking and keeping unknown types: `url_verification`, `event_callback` (with its authorization) and `app_rate_limited`.

use serde_json::Value;

use super::payloads::{WorkspaceRef, invalid};
use crate::Result;

/// An inner Events API event. Types this crate does not act on are kept.
#[derive(Debug, Clone, PartialEq)]
pub enum SlackEvent {
    /// The app was uninstalled from the workspace.
    AppUninstalled,
    /// Tokens were revoked; the lists hold the user ids whose tokens went.
    TokensRevoked {
        /// Bot tokens' user ids.
        bot: Vec<String>,
        /// User tokens' user ids.
        oauth: Vec<String>,
    },
    /// Any other event.
    Other {
        /// The event's `type`.
        kind: String,
        /// The event.
        payload: Value,
    },
}

/// An `event_callback` envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct EventCallback {
    /// Unique per event; redeliveries carry the same id.
    pub event_id: String,
    /// When it happened (unix seconds).
    pub event_time: i64,
    /// The workspace.
    pub team_id: Option<String>,
    /// The Enterprise Grid organisation (top level, or from `authorizations`).
    pub enterprise_id: Option<String>,
    /// Whether the installation the event is for is org-wide (from
    /// `authorizations[0].is_enterprise_install`; `None` when not said).
    pub is_enterprise_install: Option<bool>,
    /// The app.
    pub api_app_id: Option<String>,
    /// The event itself.
    pub event: SlackEvent,
    /// The inner `event` object as Slack sent it.
    pub event_json: Value,
}

impl SlackEvent {
    /// The event's `type` (e.g. `app_mention`).
    pub fn kind(&self) -> &str {
        match self {
            SlackEvent::AppUninstalled => "app_uninstalled",
            SlackEvent::TokensRevoked { .. } => "tokens_revoked",
            SlackEvent::Other { kind, .. } => kind,
        }
    }
}

impl EventCallback {
    /// The workspace it came from.
    pub fn workspace(&self) -> WorkspaceRef {
        WorkspaceRef {
            team_id: self.team_id.clone(),
            enterprise_id: self.enterprise_id.clone(),
            is_enterprise_install: self.is_enterprise_install,
        }
    }
}

/// An Events API request body.
#[derive(Debug, Clone, PartialEq)]
pub enum EventsRequest {
    /// The handshake when the request URL is configured; echo the challenge.
    UrlVerification {
        /// The value to echo.
        challenge: String,
    },
    /// An event.
    EventCallback(EventCallback),
    /// Slack is dropping this workspace's events: the app would receive more
    /// than 30,000 in an hour from it (or answered too few with 200).
    AppRateLimited {
        /// The workspace whose event subscriptions are limited.
        team_id: Option<String>,
        /// The minute (unix seconds, rounded) the limiting began.
        minute_rate_limited: i64,
        /// The app.
        api_app_id: Option<String>,
    },
    /// Any other envelope type.
    Unknown {
        /// The envelope's `type`.
        kind: String,
        /// The whole body.
        payload: Value,
    },
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl EventsRequest {
    /// Parses an Events API JSON body. Never panics.
    pub fn parse(body: &[u8]) -> Result<EventsRequest> {
        let value: Value =
            serde_json::from_slice(body).map_err(|_| invalid("event body is not JSON"))?;
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let kind = text(&value, "type").ok_or_else(|| invalid("event body without a type"))?;
        Ok(match kind.as_str() {
            "url_verification" => EventsRequest::UrlVerification {
                challenge: text(&value, "challenge")
                    .ok_or_else(|| invalid("url_verification without a challenge"))?,
            },
            "event_callback" => {
                let event_id = text(&value, "event_id")
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| invalid("event without an event_id"))?;
                let inner = value.get("event").cloned().unwrap_or(Value::Null);
                let event_json = inner.clone();
                let inner_kind = text(&inner, "type").unwrap_or_default();
                let event = match inner_kind.as_str() {
                    "app_uninstalled" => SlackEvent::AppUninstalled,
                    "tokens_revoked" => SlackEvent::TokensRevoked {
                        bot: string_list(inner.get("tokens").and_then(|t| t.get("bot"))),
                        oauth: string_list(inner.get("tokens").and_then(|t| t.get("oauth"))),
                    },
                    _ => SlackEvent::Other {
                        kind: inner_kind,
                        payload: inner,
                    },
                };
                let authorization = value
                    .get("authorizations")
                    .and_then(Value::as_array)
                    .and_then(|a| a.first());
                let enterprise_id = text(&value, "enterprise_id")
                    .or_else(|| authorization.and_then(|a| text(a, "enterprise_id")))
                    .filter(|e| !e.is_empty());
                let is_enterprise_install = authorization
                    .and_then(|a| a.get("is_enterprise_install"))
                    .and_then(Value::as_bool);
                let team_id = text(&value, "team_id")
                    .or_else(|| authorization.and_then(|a| text(a, "team_id")))
                    .filter(|t| !t.is_empty());
                EventsRequest::EventCallback(EventCallback {
                    event_id,
                    event_time: value.get("event_time").and_then(Value::as_i64).unwrap_or(0),
                    team_id,
                    enterprise_id,
                    is_enterprise_install,
                    api_app_id: text(&value, "api_app_id"),
                    event,
                    event_json,
                })
            }
            "app_rate_limited" => EventsRequest::AppRateLimited {
                team_id: text(&value, "team_id").filter(|t| !t.is_empty()),
                minute_rate_limited: value
                    .get("minute_rate_limited")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                api_app_id: text(&value, "api_app_id"),
            },
            _ => EventsRequest::Unknown {
                kind,
                payload: value,
            },
        })
    }
}
