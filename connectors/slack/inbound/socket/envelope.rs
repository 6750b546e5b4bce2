//! Socket Mode messages, parsed without panicking: `hello`, `disconnect` (with its reason) and the envelopes (`events_api`, `slash_commands`, `interactive`) with their acknowledgements.

use serde_json::{Map, Value, json};

use super::super::payloads::invalid;
use crate::Result;

/// What an envelope carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeKind {
    /// An Events API body (what the HTTP receiver gets as JSON).
    EventsApi,
    /// A slash command, its form fields as a JSON object.
    SlashCommands,
    /// An interaction payload (what the HTTP receiver gets as `payload=`).
    Interactive,
}

impl EnvelopeKind {
    /// Slack's name of the envelope type.
    pub fn as_str(&self) -> &'static str {
        match self {
            EnvelopeKind::EventsApi => "events_api",
            EnvelopeKind::SlashCommands => "slash_commands",
            EnvelopeKind::Interactive => "interactive",
        }
    }
}

/// One Socket Mode envelope: acknowledge it by its `envelope_id` within 3 s.
///
/// `Debug` leaves the payload out: a slash command's or shortcut's payload
/// holds a `response_url`, a 30-minute posting capability.
#[derive(Clone, PartialEq)]
pub struct SocketEnvelope {
    /// The id to acknowledge.
    pub envelope_id: String,
    /// What it carries.
    pub kind: EnvelopeKind,
    /// The payload, as the HTTP receiver would get it (decoded).
    pub payload: Value,
    /// Whether the acknowledgement may carry a response `payload` (slash
    /// commands, view submissions, options).
    pub accepts_response_payload: bool,
    /// Slack's redelivery count (0 or absent for the first delivery).
    pub retry_attempt: Option<u64>,
    /// Why it was redelivered (e.g. `timeout`).
    pub retry_reason: Option<String>,
}

impl std::fmt::Debug for SocketEnvelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketEnvelope")
            .field("envelope_id", &self.envelope_id)
            .field("kind", &self.kind)
            .field("payload", &"[not shown]")
            .field("accepts_response_payload", &self.accepts_response_payload)
            .field("retry_attempt", &self.retry_attempt)
            .field("retry_reason", &self.retry_reason)
            .finish()
    }
}

/// Why Slack is closing a Socket Mode connection (`disconnect.reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The connection will close in about 10 seconds.
    Warning,
    /// Slack refreshes connections regularly: connect again.
    RefreshRequested,
    /// Socket Mode was turned off in the app's settings.
    LinkDisabled,
    /// Another reason (e.g. `too_many_websockets`).
    Other(String),
}

impl DisconnectReason {
    fn parse(reason: &str) -> Self {
        match reason {
            "warning" => DisconnectReason::Warning,
            "refresh_requested" => DisconnectReason::RefreshRequested,
            "link_disabled" => DisconnectReason::LinkDisabled,
            other => DisconnectReason::Other(other.to_owned()),
        }
    }
}

/// A text frame from a Socket Mode connection.
#[derive(Debug, Clone, PartialEq)]
pub enum SocketMessage {
    /// The connection is ready; `num_connections` the app has open.
    Hello {
        /// How many connections the app has open (Slack's count).
        num_connections: Option<u64>,
        /// Roughly how long Slack keeps this connection (seconds).
        approximate_connection_time: Option<u64>,
    },
    /// Slack is about to close this connection: open another first.
    Disconnect {
        /// Why.
        reason: DisconnectReason,
    },
    /// Something to handle and acknowledge.
    Envelope(SocketEnvelope),
    /// Any other type (kept, not rejected).
    Unknown {
        /// The message's `type`.
        kind: String,
    },
}

impl SocketMessage {
    /// Parses a text frame. Never panics; a frame that is not a JSON object
    /// with a `type`, or an envelope without an `envelope_id`, is an
    /// [`crate::ErrorKind::InvalidInput`] error.
    pub fn parse(frame: &[u8]) -> Result<SocketMessage> {
        let value: Value =
            serde_json::from_slice(frame).map_err(|_| invalid("socket message is not JSON"))?;
        let text = |k: &str| value.get(k).and_then(Value::as_str);
        let kind = text("type").ok_or_else(|| invalid("socket message without a type"))?;
        let envelope_kind = match kind {
            "hello" => {
                let number = |k: &str| value.get(k).and_then(Value::as_u64);
                let debug = value.get("debug_info");
                return Ok(SocketMessage::Hello {
                    num_connections: number("num_connections"),
                    approximate_connection_time: debug
                        .and_then(|d| d.get("approximate_connection_time"))
                        .and_then(Value::as_u64),
                });
            }
            "disconnect" => {
                return Ok(SocketMessage::Disconnect {
                    reason: DisconnectReason::parse(text("reason").unwrap_or("")),
                });
            }
            "events_api" => EnvelopeKind::EventsApi,
            "slash_commands" => EnvelopeKind::SlashCommands,
            "interactive" => EnvelopeKind::Interactive,
            other => {
                return Ok(SocketMessage::Unknown {
                    kind: other.to_owned(),
                });
            }
        };
        let envelope_id = text("envelope_id")
            .filter(|e| !e.is_empty())
            .ok_or_else(|| invalid("socket envelope without an envelope_id"))?
            .to_owned();
        Ok(SocketMessage::Envelope(SocketEnvelope {
            envelope_id,
            kind: envelope_kind,
            payload: value.get("payload").cloned().unwrap_or(Value::Null),
            accepts_response_payload: value
                .get("accepts_response_payload")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            retry_attempt: value.get("retry_attempt").and_then(Value::as_u64),
            retry_reason: text("retry_reason")
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
        }))
    }
}

impl SocketEnvelope {
    /// The body the HTTP receiver would have received for this payload:
    /// the JSON for `events_api`, the form for `slash_commands`, and
    /// `payload=<json>` for `interactive`.
    pub fn http_body(&self) -> Vec<u8> {
        match self.kind {
            EnvelopeKind::EventsApi => serde_json::to_vec(&self.payload).unwrap_or_default(),
            EnvelopeKind::SlashCommands => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                if let Value::Object(fields) = &self.payload {
                    for (k, v) in fields {
                        match v {
                            Value::String(s) => form.append_pair(k, s),
                            Value::Null => form.append_pair(k, ""),
                            other => form.append_pair(k, &other.to_string()),
                        };
                    }
                }
                form.finish().into_bytes()
            }
            EnvelopeKind::Interactive => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("payload", &self.payload.to_string());
                form.finish().into_bytes()
            }
        }
    }

    /// The acknowledgement frame: `{"envelope_id": …}`, with `payload` when
    /// the envelope accepts one and `response` is given.
    pub fn ack(&self, response: Option<Value>) -> String {
        let mut ack = Map::new();
        ack.insert("envelope_id".into(), json!(self.envelope_id));
        if let Some(payload) = response.filter(|_| self.accepts_response_payload) {
            ack.insert("payload".into(), payload);
        }
        Value::Object(ack).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_messages_parse() {
        let hello = SocketMessage::parse(br#"{"type":"hello","num_connections":1,"debug_info":{"host":"applink-7fc4fdbb64-4x5xq","build_number":10,"approximate_connection_time":18060},"connection_info":{"app_id":"A01K58AR4RF"}}"#).unwrap();
        assert_eq!(
            hello,
            SocketMessage::Hello {
                num_connections: Some(1),
                approximate_connection_time: Some(18060)
            }
        );
        let d = SocketMessage::parse(br#"{"type":"disconnect","reason":"refresh_requested","debug_info":{"host":"applink-7fc4fdbb64-4x5xq"}}"#).unwrap();
        assert_eq!(
            d,
            SocketMessage::Disconnect {
                reason: DisconnectReason::RefreshRequested
            }
        );
        let e = SocketMessage::parse(br#"{"envelope_id":"dbdd0ef3-1543-4f94-bfb4-133d0e6c1545","payload":{"command":"/hi","text":"x","is_enterprise_install":"false"},"type":"slash_commands","accepts_response_payload":true}"#).unwrap();
        let SocketMessage::Envelope(e) = e else {
            panic!("not an envelope")
        };
        assert_eq!(e.kind, EnvelopeKind::SlashCommands);
        assert!(e.accepts_response_payload);
        let body = String::from_utf8(e.http_body()).unwrap();
        assert_eq!(body, "command=%2Fhi&is_enterprise_install=false&text=x");
        assert_eq!(
            e.ack(Some(json!({"text": "ok"}))),
            r#"{"envelope_id":"dbdd0ef3-1543-4f94-bfb4-133d0e6c1545","payload":{"text":"ok"}}"#
        );
        assert!(!format!("{e:?}").contains("/hi"));
    }

    #[test]
    fn bad_frames_are_errors() {
        assert!(SocketMessage::parse(b"").is_err());
        assert!(SocketMessage::parse(b"[]").is_err());
        assert!(SocketMessage::parse(br#"{"type":"events_api"}"#).is_err());
        assert_eq!(
            SocketMessage::parse(br#"{"type":"new_kind"}"#).unwrap(),
            SocketMessage::Unknown {
                kind: "new_kind".into()
            }
        );
    }
}
