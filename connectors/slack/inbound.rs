//! Inbound Slack requests, framework-agnostic: v0 signature verification, slash commands, shortcuts and the capture modal, the Events API, and (feature `axum`) ready-made routes.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::api::{SlackClient, null_default};
use super::config::{PLATFORM, SlackConfig};
use super::oauth::BotToken;
use crate::engine::Switchboard;
use crate::event::{Event, Person};
use crate::inbound::{
    DEFAULT_BODY_LIMIT, DEFAULT_WINDOW, InboundRequest, InboundResponse, check_body_size,
    check_timestamp, error_response, header, json_response, parse_timestamp, response,
    unauthorized, verify_hmac_sha256,
};
use crate::store::Store;
use crate::template::unescape_mrkdwn;
use crate::{Error, ErrorKind, Result};

/// The header carrying Slack's request signature (`v0=…`).
pub const SIGNATURE_HEADER: &str = "x-slack-signature";
/// The header carrying the request's unix timestamp.
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
/// Present on Events API redeliveries (1, 2, 3).
pub const RETRY_NUM_HEADER: &str = "x-slack-retry-num";
/// The kind of the event published when someone submits the capture modal.
pub const INSIGHT_EVENT_KIND: &str = "insight.captured";
/// The `callback_id` of the capture modal.
pub const CAPTURE_CALLBACK_ID: &str = "switchboard_capture";
/// The `block_id` of the modal's text input.
pub const CAPTURE_TEXT_BLOCK: &str = "capture_text";
/// The `block_id` of the modal's optional "about whom" user picker.
pub const CAPTURE_SUBJECT_BLOCK: &str = "capture_subject";
const TEXT_ACTION: &str = "text";
const SUBJECT_ACTION: &str = "subject";
/// Slack's limit for a `plain_text_input` value.
const MAX_INPUT_CHARS: usize = 3_000;
const EVENT_SCOPE: &str = "slack:event";
/// Slack retries an event for about an hour; remember ids for a day.
const EVENT_MEMORY: Duration = Duration::from_secs(24 * 3_600);
/// Answer slash commands within this (Slack waits 3 s).
const DEFAULT_DEADLINE: Duration = Duration::from_millis(2_500);
const GENERIC_FAILURE: &str = "Sorry, something went wrong. Please try again.";

/// Verifies Slack's v0 request signature.
///
/// The signature is `v0=` + hex(HMAC-SHA256(signing secret, `v0:{timestamp}:{body}`))
/// over the raw body, compared in constant time; timestamps more than 5 minutes
/// before or after `now_unix` are rejected (replays). Any failure is an
/// `Unauthorized` error whose message is for logs only.
///
/// ```
/// // The example from Slack's "Verifying requests from Slack".
/// let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
/// switchboard::slack::verify_signature(
///     "8f742231b10e8888abcd99yyyzzz85a5",
///     "1531420618",
///     body,
///     "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
///     1531420618,
/// )
/// .unwrap();
/// ```
pub fn verify_signature(
    signing_secret: &str,
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now_unix: i64,
) -> Result<(), Error> {
    let ts = parse_timestamp(timestamp)?;
    check_timestamp(ts, now_unix, DEFAULT_WINDOW)?;
    let hex_sig = signature
        .trim()
        .strip_prefix("v0=")
        .ok_or_else(|| unauthorized("signature is not a v0 signature"))?;
    let expected = hex::decode(hex_sig).map_err(|_| unauthorized("signature is not hex"))?;
    if !verify_hmac_sha256(
        signing_secret.as_bytes(),
        &[b"v0:", timestamp.as_bytes(), b":", body],
        &expected,
    ) {
        return Err(unauthorized("signature mismatch"));
    }
    Ok(())
}

fn form_map(body: &[u8]) -> Map<String, Value> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect()
}

fn invalid(what: &str) -> Error {
    Error::new(ErrorKind::InvalidInput, what)
}

/// What kind of conversation a request came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelType {
    /// A channel (public, or private with a `C…` id).
    Channel,
    /// A private channel.
    PrivateChannel,
    /// A direct message.
    DirectMessage,
    /// A group direct message.
    GroupMessage,
    /// Could not tell.
    #[default]
    #[serde(other)]
    Unknown,
}

impl ChannelType {
    /// Infers the type from a channel id and the name Slack sent with it
    /// (slash commands send `directmessage` / `privategroup` for DMs and private groups).
    pub fn infer(id: &str, name: Option<&str>) -> ChannelType {
        match (name, id.as_bytes().first()) {
            (Some("directmessage"), _) | (_, Some(b'D')) => ChannelType::DirectMessage,
            (Some(n), _) if n.starts_with("mpdm-") => ChannelType::GroupMessage,
            (Some("privategroup"), _) | (_, Some(b'G')) => ChannelType::PrivateChannel,
            (_, Some(b'C')) => ChannelType::Channel,
            _ => ChannelType::Unknown,
        }
    }
}

/// A conversation a request came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRef {
    /// Its id.
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// Its name, when Slack sent one.
    #[serde(default)]
    pub name: Option<String>,
    /// What kind it is.
    #[serde(default, rename = "type")]
    pub kind: ChannelType,
}

/// A slash command invocation (Slack posts it form-encoded). Unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlashCommand {
    /// The command, e.g. `/perks`.
    #[serde(default)]
    pub command: String,
    /// Everything after the command, e.g. `balance`.
    #[serde(default)]
    pub text: String,
    /// Who ran it.
    #[serde(default)]
    pub user_id: String,
    /// Their handle.
    #[serde(default)]
    pub user_name: String,
    /// Where.
    #[serde(default)]
    pub channel_id: String,
    /// The channel's name (`directmessage` / `privategroup` for DMs and private groups).
    #[serde(default)]
    pub channel_name: String,
    /// The workspace.
    #[serde(default)]
    pub team_id: String,
    /// The workspace's subdomain.
    #[serde(default)]
    pub team_domain: String,
    /// The Enterprise Grid organisation, if any.
    #[serde(default)]
    pub enterprise_id: Option<String>,
    /// Where delayed answers go (up to 5 times within 30 minutes).
    #[serde(default)]
    pub response_url: String,
    /// Opens a modal (valid for about 3 seconds).
    #[serde(default)]
    pub trigger_id: String,
    /// The app's id.
    #[serde(default)]
    pub api_app_id: String,
}

impl SlashCommand {
    /// Parses a form-encoded slash command body. Never panics; a body without a
    /// `command` is invalid input.
    pub fn parse(body: &[u8]) -> Result<SlashCommand> {
        let cmd: SlashCommand = serde_json::from_value(Value::Object(form_map(body)))
            .map_err(|_| invalid("malformed slash command"))?;
        if !cmd.command.starts_with('/') {
            return Err(invalid("slash command without a command"));
        }
        Ok(cmd)
    }

    /// The conversation it was run in.
    pub fn channel(&self) -> ChannelRef {
        let name = Some(self.channel_name.clone()).filter(|n| !n.is_empty());
        ChannelRef {
            id: self.channel_id.clone(),
            kind: ChannelType::infer(&self.channel_id, name.as_deref()),
            name,
        }
    }

    /// The arguments after the command, split on whitespace.
    pub fn args(&self) -> Vec<&str> {
        self.text.split_whitespace().collect()
    }
}

/// The user who interacted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InteractionUser {
    /// The user id.
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// The handle.
    #[serde(default)]
    pub username: Option<String>,
    /// The (legacy) name.
    #[serde(default)]
    pub name: Option<String>,
    /// The workspace.
    #[serde(default)]
    pub team_id: Option<String>,
}

/// A workspace reference in a payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamRef {
    /// The team id.
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// Its subdomain.
    #[serde(default)]
    pub domain: Option<String>,
}

/// A global shortcut (`type: shortcut`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortcut {
    /// The shortcut's callback id (set in the app's configuration).
    #[serde(default, deserialize_with = "null_default")]
    pub callback_id: String,
    /// Opens a modal (about 3 seconds).
    #[serde(default, deserialize_with = "null_default")]
    pub trigger_id: String,
    /// Who used it.
    #[serde(default, deserialize_with = "null_default")]
    pub user: InteractionUser,
    /// The workspace.
    #[serde(default)]
    pub team: Option<TeamRef>,
}

/// The message a message shortcut was used on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShortcutMessage {
    /// Its text (mrkdwn, escaped).
    #[serde(default, deserialize_with = "null_default")]
    pub text: String,
    /// Its timestamp.
    #[serde(default, deserialize_with = "null_default")]
    pub ts: String,
    /// Its author.
    #[serde(default)]
    pub user: Option<String>,
}

/// A message shortcut (`type: message_action`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageShortcut {
    /// The shortcut's callback id.
    #[serde(default, deserialize_with = "null_default")]
    pub callback_id: String,
    /// Opens a modal (about 3 seconds).
    #[serde(default, deserialize_with = "null_default")]
    pub trigger_id: String,
    /// Where replies can be posted.
    #[serde(default)]
    pub response_url: Option<String>,
    /// Who used it.
    #[serde(default, deserialize_with = "null_default")]
    pub user: InteractionUser,
    /// The channel of the message.
    #[serde(default)]
    pub channel: Option<ChannelRef>,
    /// The message.
    #[serde(default)]
    pub message: Option<ShortcutMessage>,
    /// The workspace.
    #[serde(default)]
    pub team: Option<TeamRef>,
}

/// The state of one input element in a submitted view.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElementState {
    /// The element type (`plain_text_input`, `users_select`, …; unknown types kept).
    #[serde(default, rename = "type", deserialize_with = "null_default")]
    pub kind: String,
    /// A text input's value.
    #[serde(default)]
    pub value: Option<String>,
    /// A user picker's choice.
    #[serde(default)]
    pub selected_user: Option<String>,
}

/// `view.state` of a submitted view.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewState {
    /// block_id → action_id → element state.
    #[serde(default, deserialize_with = "null_default")]
    pub values: HashMap<String, HashMap<String, ElementState>>,
}

/// A view (modal) as Slack sends it back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// The view id.
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// The callback id given when it was opened.
    #[serde(default, deserialize_with = "null_default")]
    pub callback_id: String,
    /// The `private_metadata` given when it was opened.
    #[serde(default, deserialize_with = "null_default")]
    pub private_metadata: String,
    /// The inputs' values.
    #[serde(default, deserialize_with = "null_default")]
    pub state: ViewState,
}

impl View {
    /// The state of `action_id` in block `block_id`.
    pub fn element(&self, block_id: &str, action_id: &str) -> Option<&ElementState> {
        self.state.values.get(block_id)?.get(action_id)
    }
}

/// A modal submission (`type: view_submission`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewSubmission {
    /// Who submitted.
    #[serde(default, deserialize_with = "null_default")]
    pub user: InteractionUser,
    /// The workspace.
    #[serde(default)]
    pub team: Option<TeamRef>,
    /// The submitted view.
    #[serde(default, deserialize_with = "null_default")]
    pub view: View,
}

/// An interaction payload (shortcuts, modal submissions, …). Types this crate
/// does not model are kept, not rejected.
#[derive(Debug, Clone, PartialEq)]
pub enum Interaction {
    /// A global shortcut.
    Shortcut(Shortcut),
    /// A message shortcut.
    MessageShortcut(MessageShortcut),
    /// A modal submission.
    ViewSubmission(ViewSubmission),
    /// Any other type (`block_actions`, `view_closed`, types added later…).
    Unknown {
        /// The payload's `type`.
        kind: String,
        /// The whole payload.
        payload: Value,
    },
}

impl Interaction {
    /// Parses a form-encoded interaction body (`payload=<json>`). Never panics.
    pub fn parse(body: &[u8]) -> Result<Interaction> {
        let payload = url::form_urlencoded::parse(body)
            .find(|(k, _)| k == "payload")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| invalid("interaction without a payload"))?;
        let value: Value = serde_json::from_str(&payload)
            .map_err(|_| invalid("interaction payload is not JSON"))?;
        Self::from_json(value)
    }

    /// Classifies an interaction payload already parsed as JSON.
    pub fn from_json(value: Value) -> Result<Interaction> {
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("interaction without a type"))?
            .to_owned();
        let bad = |_| invalid("malformed interaction payload");
        Ok(match kind.as_str() {
            "shortcut" => Interaction::Shortcut(serde_json::from_value(value).map_err(bad)?),
            "message_action" => {
                Interaction::MessageShortcut(serde_json::from_value(value).map_err(bad)?)
            }
            "view_submission" => {
                Interaction::ViewSubmission(serde_json::from_value(value).map_err(bad)?)
            }
            _ => Interaction::Unknown {
                kind,
                payload: value,
            },
        })
    }
}

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
    /// The app.
    pub api_app_id: Option<String>,
    /// The event itself.
    pub event: SlackEvent,
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
    /// Any other envelope type (e.g. `app_rate_limited`).
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
                EventsRequest::EventCallback(EventCallback {
                    event_id,
                    event_time: value.get("event_time").and_then(Value::as_i64).unwrap_or(0),
                    team_id: text(&value, "team_id"),
                    api_app_id: text(&value, "api_app_id"),
                    event,
                })
            }
            _ => EventsRequest::Unknown {
                kind,
                payload: value,
            },
        })
    }
}

/// Who sees a command's answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Only the person who ran the command (the default).
    #[default]
    Ephemeral,
    /// Everyone in the channel.
    InChannel,
}

/// A slash command's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandReply {
    /// The text (mrkdwn).
    pub text: String,
    /// Who sees it.
    pub visibility: Visibility,
}

impl CommandReply {
    /// Seen only by the person who ran the command.
    pub fn ephemeral(text: impl Into<String>) -> Self {
        CommandReply {
            text: text.into(),
            visibility: Visibility::Ephemeral,
        }
    }
    /// Seen by the whole channel.
    pub fn in_channel(text: impl Into<String>) -> Self {
        CommandReply {
            text: text.into(),
            visibility: Visibility::InChannel,
        }
    }
    /// The JSON Slack expects (`response_type` + `text`).
    pub fn to_json(&self) -> Value {
        let response_type = match self.visibility {
            Visibility::Ephemeral => "ephemeral",
            Visibility::InChannel => "in_channel",
        };
        json!({ "response_type": response_type, "text": self.text })
    }
}

impl From<String> for CommandReply {
    fn from(text: String) -> Self {
        CommandReply::ephemeral(text)
    }
}

impl From<&str> for CommandReply {
    fn from(text: &str) -> Self {
        CommandReply::ephemeral(text)
    }
}

type CommandFuture = Pin<Box<dyn Future<Output = Result<CommandReply>> + Send>>;
type CommandHandler = Arc<dyn Fn(SlashCommand) -> CommandFuture + Send + Sync>;
type EventHook = Arc<dyn Fn(EventCallback) + Send + Sync>;
type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Where a capture started; kept in the modal's `private_metadata`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CaptureSource {
    SlashCommand,
    MessageShortcut,
    #[default]
    #[serde(other)]
    GlobalShortcut,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CaptureContext {
    #[serde(default)]
    source: CaptureSource,
    #[serde(default)]
    channel: Option<ChannelRef>,
    #[serde(default)]
    message_ts: Option<String>,
    #[serde(default)]
    team_id: Option<String>,
}

struct Inner {
    signing_secret: SecretString,
    body_limit: usize,
    commands: HashMap<String, CommandHandler>,
    capture_commands: HashSet<String>,
    capture_shortcuts: HashSet<String>,
    client: SlackClient,
    token: Option<BotToken>,
    switchboard: Option<Switchboard>,
    store: Option<Arc<dyn Store>>,
    destination: String,
    deadline: Duration,
    clock: Clock,
    on_event: Option<EventHook>,
}

/// Framework-agnostic handlers for Slack's requests: each takes an
/// [`InboundRequest`] (the raw body plus headers) and returns an
/// [`InboundResponse`].
///
/// Every handler checks the body size and verifies the signature
/// ([`verify_signature`]) before it parses anything; a failure is a bare `401`.
/// Cheap to clone.
#[derive(Clone)]
pub struct SlackInbound {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SlackInbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut commands: Vec<_> = self.inner.commands.keys().collect();
        commands.sort();
        f.debug_struct("SlackInbound")
            .field("signing_secret", &"[redacted]")
            .field("commands", &commands)
            .field("capture_commands", &self.inner.capture_commands)
            .field("capture_shortcuts", &self.inner.capture_shortcuts)
            .field("destination", &self.inner.destination)
            .finish_non_exhaustive()
    }
}

/// Builder for [`SlackInbound`].
#[must_use]
pub struct SlackInboundBuilder {
    signing_secret: SecretString,
    body_limit: usize,
    commands: HashMap<String, CommandHandler>,
    capture_commands: HashSet<String>,
    capture_shortcuts: HashSet<String>,
    config: SlackConfig,
    client: Option<SlackClient>,
    token: Option<BotToken>,
    switchboard: Option<Switchboard>,
    store: Option<Arc<dyn Store>>,
    deadline: Duration,
    clock: Clock,
    on_event: Option<EventHook>,
}

impl std::fmt::Debug for SlackInboundBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackInboundBuilder")
            .finish_non_exhaustive()
    }
}

fn command_key(name: &str) -> String {
    let name = name.trim().to_lowercase();
    if name.starts_with('/') {
        name
    } else {
        format!("/{name}")
    }
}

impl SlackInboundBuilder {
    /// Base URL (for `views.open`) and destination name (default [`SlackConfig::new`]).
    pub fn config(mut self, config: SlackConfig) -> Self {
        self.config = config;
        self
    }
    /// Shares an API client.
    pub fn client(mut self, client: SlackClient) -> Self {
        self.client = Some(client);
        self
    }
    /// The bot token for `views.open` (needed by capture commands and shortcuts).
    pub fn token(mut self, token: BotToken) -> Self {
        self.token = Some(token);
        self
    }
    /// Publishes captured insights into this switchboard and disconnects the
    /// destination when the app is uninstalled; its store is used unless
    /// [`SlackInboundBuilder::store`] is given.
    pub fn switchboard(mut self, switchboard: Switchboard) -> Self {
        self.switchboard = Some(switchboard);
        self
    }
    /// The store for event de-duplication and identity links.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }
    /// Answers slash command `name` (e.g. `/perks`) with `handler`'s text
    /// (ephemeral unless the reply says otherwise). Answers that take longer than
    /// the deadline are acknowledged at once and posted to the `response_url`.
    pub fn command<F, Fut, R>(mut self, name: &str, handler: F) -> Self
    where
        F: Fn(SlashCommand) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
        R: Into<CommandReply>,
    {
        let handler: CommandHandler = Arc::new(move |cmd| {
            let fut = handler(cmd);
            Box::pin(async move { fut.await.map(Into::into) })
        });
        self.commands.insert(command_key(name), handler);
        self
    }
    /// Slash command `name` opens the capture modal, prefilled with the command's text.
    pub fn capture_command(mut self, name: &str) -> Self {
        self.capture_commands.insert(command_key(name));
        self
    }
    /// The message or global shortcut with `callback_id` opens the capture modal
    /// (a message shortcut prefills it with the message's text).
    pub fn capture_shortcut(mut self, callback_id: &str) -> Self {
        self.capture_shortcuts.insert(callback_id.to_owned());
        self
    }
    /// Called (in a background task) for every new Events API event.
    pub fn on_event(mut self, hook: impl Fn(EventCallback) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(hook));
        self
    }
    /// The body-size cap (default 1 MiB).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }
    /// How long a command handler may take before the answer goes through
    /// `response_url` instead (default 2.5 s; Slack waits 3 s).
    pub fn command_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }
    /// The clock for signature windows, in unix seconds (default: system time).
    pub fn clock(mut self, now_unix: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(now_unix);
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<SlackInbound> {
        let captures = !self.capture_commands.is_empty() || !self.capture_shortcuts.is_empty();
        if captures && (self.token.is_none() || self.switchboard.is_none()) {
            return Err(Error::new(
                ErrorKind::Config,
                "capturing insights needs a bot token (for views.open) and a switchboard (to publish)",
            ));
        }
        if self.signing_secret.expose_secret().is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                "the Slack signing secret is empty",
            ));
        }
        let client = match self.client {
            Some(c) => c,
            None => SlackClient::new(&self.config)?,
        };
        let store = self
            .store
            .or_else(|| self.switchboard.as_ref().map(|s| s.store().clone()));
        Ok(SlackInbound {
            inner: Arc::new(Inner {
                signing_secret: self.signing_secret,
                body_limit: self.body_limit,
                commands: self.commands,
                capture_commands: self.capture_commands,
                capture_shortcuts: self.capture_shortcuts,
                client,
                token: self.token,
                switchboard: self.switchboard,
                store,
                destination: self.config.destination_name().to_owned(),
                deadline: self.deadline,
                clock: self.clock,
                on_event: self.on_event,
            }),
        })
    }
}

fn system_now() -> i64 {
    Utc::now().timestamp()
}

fn empty_ok() -> InboundResponse {
    response(http::StatusCode::OK, "text/plain; charset=utf-8", "")
}

fn reply(r: &CommandReply) -> InboundResponse {
    json_response(http::StatusCode::OK, &r.to_json())
}

/// `<@U123>` or `<@U123|name>` at the start of a command's text.
fn leading_mention(text: &str) -> Option<String> {
    let rest = text.trim_start().strip_prefix("<@")?;
    let end = rest.find('>')?;
    let id = rest[..end].split('|').next()?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| id.to_owned())
}

fn clip(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn capture_view(prefill: &str, subject: Option<&str>, context: &CaptureContext) -> Value {
    let mut text_input = json!({
        "type": "plain_text_input",
        "action_id": TEXT_ACTION,
        "multiline": true,
        "max_length": MAX_INPUT_CHARS,
    });
    let prefill = clip(prefill.trim(), MAX_INPUT_CHARS);
    if !prefill.is_empty() {
        text_input["initial_value"] = json!(prefill);
    }
    let mut user_select = json!({
        "type": "users_select",
        "action_id": SUBJECT_ACTION,
        "placeholder": { "type": "plain_text", "text": "Choose a person" },
    });
    if let Some(u) = subject {
        user_select["initial_user"] = json!(u);
    }
    json!({
        "type": "modal",
        "callback_id": CAPTURE_CALLBACK_ID,
        "title": { "type": "plain_text", "text": "Capture insight" },
        "submit": { "type": "plain_text", "text": "Save" },
        "close": { "type": "plain_text", "text": "Cancel" },
        "private_metadata": serde_json::to_string(context).unwrap_or_default(),
        "blocks": [
            {
                "type": "input",
                "block_id": CAPTURE_TEXT_BLOCK,
                "label": { "type": "plain_text", "text": "Insight" },
                "element": text_input,
            },
            {
                "type": "input",
                "block_id": CAPTURE_SUBJECT_BLOCK,
                "optional": true,
                "label": { "type": "plain_text", "text": "About whom" },
                "element": user_select,
            }
        ]
    })
}

impl SlackInbound {
    /// Starts a builder with the app's signing secret.
    pub fn builder(signing_secret: SecretString) -> SlackInboundBuilder {
        SlackInboundBuilder {
            signing_secret,
            body_limit: DEFAULT_BODY_LIMIT,
            commands: HashMap::new(),
            capture_commands: HashSet::new(),
            capture_shortcuts: HashSet::new(),
            config: SlackConfig::new(),
            client: None,
            token: None,
            switchboard: None,
            store: None,
            deadline: DEFAULT_DEADLINE,
            clock: Arc::new(system_now),
            on_event: None,
        }
    }

    /// Checks the size and signature of a request; returns the verified body.
    pub fn verify<'a>(&self, request: &'a InboundRequest) -> Result<&'a [u8]> {
        let body = request.body();
        check_body_size(body.len(), self.inner.body_limit)?;
        let timestamp = header(request, TIMESTAMP_HEADER)
            .ok_or_else(|| unauthorized("missing request timestamp"))?;
        let signature =
            header(request, SIGNATURE_HEADER).ok_or_else(|| unauthorized("missing signature"))?;
        verify_signature(
            self.inner.signing_secret.expose_secret(),
            timestamp,
            body,
            signature,
            (self.inner.clock)(),
        )?;
        Ok(body)
    }

    /// Any Slack request: routed by its body after verification (JSON → Events
    /// API, `payload=` → interaction, `command=` → slash command).
    pub async fn handle(&self, request: &InboundRequest) -> InboundResponse {
        let body = match self.verify(request) {
            Ok(b) => b,
            Err(e) => return error_response(&e),
        };
        if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            return self.events(body, request).await;
        }
        if url::form_urlencoded::parse(body).any(|(k, _)| k == "payload") {
            return self.interaction(body).await;
        }
        self.command(body).await
    }

    /// `POST` slash commands.
    pub async fn handle_command(&self, request: &InboundRequest) -> InboundResponse {
        match self.verify(request) {
            Ok(body) => self.command(body).await,
            Err(e) => error_response(&e),
        }
    }

    /// `POST` interactivity (shortcuts, modal submissions).
    pub async fn handle_interaction(&self, request: &InboundRequest) -> InboundResponse {
        match self.verify(request) {
            Ok(body) => self.interaction(body).await,
            Err(e) => error_response(&e),
        }
    }

    /// `POST` Events API.
    pub async fn handle_event(&self, request: &InboundRequest) -> InboundResponse {
        match self.verify(request) {
            Ok(body) => self.events(body, request).await,
            Err(e) => error_response(&e),
        }
    }

    async fn command(&self, body: &[u8]) -> InboundResponse {
        let cmd = match SlashCommand::parse(body) {
            Ok(c) => c,
            Err(e) => return error_response(&e),
        };
        let key = command_key(&cmd.command);
        if self.inner.capture_commands.contains(&key) {
            let context = CaptureContext {
                source: CaptureSource::SlashCommand,
                channel: Some(cmd.channel()),
                message_ts: None,
                team_id: Some(cmd.team_id.clone()).filter(|t| !t.is_empty()),
            };
            let subject = leading_mention(&cmd.text);
            let prefill = unescape_mrkdwn(&cmd.text);
            return match self
                .open_capture(&cmd.trigger_id, &prefill, subject.as_deref(), &context)
                .await
            {
                Ok(()) => empty_ok(),
                Err(e) => {
                    tracing::warn!(error = %e, "could not open the Slack capture modal");
                    reply(&CommandReply::ephemeral(
                        "Sorry, the form could not be opened. Please try again.",
                    ))
                }
            };
        }
        let Some(handler) = self.inner.commands.get(&key) else {
            return reply(&CommandReply::ephemeral(format!(
                "Sorry, `{}` is not a command I know.",
                crate::template::escape_mrkdwn(&cmd.command)
            )));
        };
        let response_url = cmd.response_url.clone();
        let mut task = tokio::spawn(handler(cmd));
        match tokio::time::timeout(self.inner.deadline, &mut task).await {
            Ok(Ok(Ok(r))) => reply(&r),
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "Slack command handler failed");
                reply(&CommandReply::ephemeral(GENERIC_FAILURE))
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "Slack command handler panicked");
                reply(&CommandReply::ephemeral(GENERIC_FAILURE))
            }
            Err(_) => {
                // Slack waits 3 seconds: acknowledge now, answer through response_url.
                let client = self.inner.client.clone();
                tokio::spawn(async move {
                    let answer = match task.await {
                        Ok(Ok(r)) => r,
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "Slack command handler failed");
                            CommandReply::ephemeral(GENERIC_FAILURE)
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "Slack command handler panicked");
                            CommandReply::ephemeral(GENERIC_FAILURE)
                        }
                    };
                    if response_url.is_empty() {
                        tracing::warn!("slow Slack command has no response_url; answer dropped");
                        return;
                    }
                    if let Err(e) = client.respond(&response_url, &answer.to_json()).await {
                        tracing::warn!(error = %e, "could not post to the Slack response_url");
                    }
                });
                empty_ok()
            }
        }
    }

    async fn open_capture(
        &self,
        trigger_id: &str,
        prefill: &str,
        subject: Option<&str>,
        context: &CaptureContext,
    ) -> Result<()> {
        let token = self
            .inner
            .token
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::Config, "no bot token for views.open"))?;
        let view = capture_view(prefill, subject, context);
        // The trigger_id is only good for about 3 seconds, and so is Slack's patience.
        let open = async {
            let token = token.get(&self.inner.client).await?;
            self.inner
                .client
                .views_open(&token, trigger_id, &view)
                .await
        };
        match tokio::time::timeout(self.inner.deadline, open).await {
            Ok(result) => result.map(|_| ()).map_err(Error::from),
            Err(_) => Err(Error::new(ErrorKind::Network, "views.open took too long").temporary()),
        }
    }

    async fn interaction(&self, body: &[u8]) -> InboundResponse {
        let interaction = match Interaction::parse(body) {
            Ok(i) => i,
            Err(e) => return error_response(&e),
        };
        match interaction {
            Interaction::MessageShortcut(s)
                if self.inner.capture_shortcuts.contains(&s.callback_id) =>
            {
                let message = s.message.unwrap_or_default();
                let channel = s.channel.map(|mut c| {
                    c.kind = ChannelType::infer(&c.id, c.name.as_deref());
                    c
                });
                let context = CaptureContext {
                    source: CaptureSource::MessageShortcut,
                    channel,
                    message_ts: Some(message.ts).filter(|t| !t.is_empty()),
                    team_id: s.team.map(|t| t.id).filter(|t| !t.is_empty()),
                };
                let prefill = unescape_mrkdwn(&message.text);
                self.capture_ack(&s.trigger_id, &prefill, &context).await
            }
            Interaction::Shortcut(s) if self.inner.capture_shortcuts.contains(&s.callback_id) => {
                let context = CaptureContext {
                    source: CaptureSource::GlobalShortcut,
                    channel: None,
                    message_ts: None,
                    team_id: s.team.map(|t| t.id).filter(|t| !t.is_empty()),
                };
                self.capture_ack(&s.trigger_id, "", &context).await
            }
            Interaction::ViewSubmission(v) if v.view.callback_id == CAPTURE_CALLBACK_ID => {
                self.capture_submitted(v).await
            }
            _ => empty_ok(),
        }
    }

    async fn capture_ack(
        &self,
        trigger_id: &str,
        prefill: &str,
        context: &CaptureContext,
    ) -> InboundResponse {
        match self.open_capture(trigger_id, prefill, None, context).await {
            Ok(()) => empty_ok(),
            Err(e) => {
                tracing::warn!(error = %e, "could not open the Slack capture modal");
                error_response(&e)
            }
        }
    }

    async fn host_user(&self, slack_user: &str) -> Option<String> {
        let store = self.inner.store.as_ref()?;
        let links = store.links(&self.inner.destination).await.ok()?;
        links
            .into_iter()
            .find(|l| l.platform_id == slack_user)
            .map(|l| l.user_id)
    }

    async fn capture_submitted(&self, submission: ViewSubmission) -> InboundResponse {
        let view = &submission.view;
        let text = view
            .element(CAPTURE_TEXT_BLOCK, TEXT_ACTION)
            .and_then(|e| e.value.as_deref())
            .map(str::trim)
            .unwrap_or("");
        if text.is_empty() {
            return json_response(
                http::StatusCode::OK,
                &json!({
                    "response_action": "errors",
                    "errors": { CAPTURE_TEXT_BLOCK: "Please write something to capture." }
                }),
            );
        }
        let subject = view
            .element(CAPTURE_SUBJECT_BLOCK, SUBJECT_ACTION)
            .and_then(|e| e.selected_user.clone())
            .filter(|u| !u.is_empty());
        let context: CaptureContext =
            serde_json::from_str(&view.private_metadata).unwrap_or_default();
        let author = &submission.user;
        let author_host = self.host_user(&author.id).await;
        let subject_host = match &subject {
            Some(s) => self.host_user(s).await,
            None => None,
        };
        let now: DateTime<Utc> = Utc::now();
        let event_id = if view.id.is_empty() {
            format!("slack:view:{}:{}", author.id, now.timestamp_millis())
        } else {
            format!("slack:view:{}", view.id)
        };
        let data = json!({
            "text": text,
            "author": {
                "slack_user_id": author.id,
                "name": author.username.clone().or_else(|| author.name.clone()),
                "user_id": author_host,
            },
            "subject": subject.as_ref().map(|s| json!({
                "slack_user_id": s,
                "user_id": subject_host,
            })),
            "channel": context.channel.as_ref().map(|c| json!({
                "id": c.id,
                "name": c.name,
                "type": c.kind,
            })),
            "source": context.source,
            "message_ts": context.message_ts,
            "team_id": submission.team.as_ref().map(|t| t.id.clone()).or(context.team_id.clone()),
            "captured_at": now.to_rfc3339(),
        });
        let mut builder = Event::builder(event_id, INSIGHT_EVENT_KIND)
            .source(PLATFORM)
            .occurred_at(now)
            .data(data);
        if let Some(a) = author_host {
            builder = builder.actor(Person::new(a));
        }
        if let Some(s) = subject_host {
            builder = builder.subject(Person::new(s));
        }
        let Some(sb) = &self.inner.switchboard else {
            return error_response(&Error::new(ErrorKind::Config, "no switchboard"));
        };
        let published = match builder.build() {
            Ok(event) => sb.publish(event).await,
            Err(e) => Err(e),
        };
        match published {
            Ok(_) => empty_ok(),
            Err(e) => {
                tracing::error!(error = %e, "could not publish a captured insight");
                error_response(&e)
            }
        }
    }

    async fn events(&self, body: &[u8], request: &InboundRequest) -> InboundResponse {
        let parsed = match EventsRequest::parse(body) {
            Ok(p) => p,
            Err(e) => return error_response(&e),
        };
        let callback = match parsed {
            EventsRequest::UrlVerification { challenge } => {
                return json_response(http::StatusCode::OK, &json!({ "challenge": challenge }));
            }
            EventsRequest::Unknown { .. } => return empty_ok(),
            EventsRequest::EventCallback(cb) => cb,
        };
        let Some(store) = &self.inner.store else {
            return error_response(&Error::new(
                ErrorKind::Config,
                "the Slack events handler needs a store",
            ));
        };
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(EVENT_MEMORY).unwrap_or_default();
        match store
            .remember_once(EVENT_SCOPE, &callback.event_id, until, now)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(
                    event_id = %callback.event_id,
                    retry = header(request, RETRY_NUM_HEADER).unwrap_or("-"),
                    "duplicate Slack event ignored"
                );
                return empty_ok();
            }
            // Slack retries on errors, so nothing is lost.
            Err(e) => return error_response(&e),
        }
        let ours = match self.inner.token.as_ref().and_then(BotToken::team_id) {
            Some(team) => callback.team_id.as_deref() == Some(team),
            None => true,
        };
        let lost = match &callback.event {
            SlackEvent::AppUninstalled => Some("the Slack app was uninstalled"),
            SlackEvent::TokensRevoked { bot, .. } if !bot.is_empty() => {
                Some("the Slack bot token was revoked")
            }
            _ => None,
        };
        if let (Some(what), true) = (lost, ours) {
            if let Some(team) = &callback.team_id {
                if let Err(e) = store.delete_installation(PLATFORM, team).await {
                    tracing::warn!(error = %e, "could not forget the Slack installation");
                }
            }
            if let Some(sb) = &self.inner.switchboard {
                let reason = format!(
                    "{what}: reinstall the Slack app; queued messages are kept and sent after reconnecting"
                );
                if let Err(e) = sb.disconnect(&self.inner.destination, &reason).await {
                    tracing::warn!(error = %e, "could not mark Slack disconnected");
                }
            }
        }
        if let Some(hook) = &self.inner.on_event {
            let hook = hook.clone();
            tokio::spawn(async move { hook(callback) });
        }
        empty_ok()
    }
}

/// Ready-made axum routes: `POST /slack/commands`, `POST /slack/interactions`,
/// `POST /slack/events`, and with `oauth` `GET /slack/install` and
/// `GET /slack/oauth/callback`.
#[cfg(feature = "axum")]
pub fn router(inbound: SlackInbound, oauth: Option<Arc<super::oauth::SlackOAuth>>) -> axum::Router {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::response::Response;
    use axum::routing::{get, post};

    async fn into_inbound(
        request: Request,
        limit: usize,
    ) -> std::result::Result<InboundRequest, Response> {
        let (parts, body) = request.into_parts();
        match axum::body::to_bytes(body, limit).await {
            Ok(bytes) => Ok(http::Request::from_parts(parts, bytes)),
            Err(_) => Err(error_response(&Error::new(
                ErrorKind::PayloadTooLarge,
                "body too large",
            ))
            .map(Body::from)),
        }
    }

    let limit = inbound.inner.body_limit;
    let mut router = axum::Router::new();
    for (path, which) in [
        ("/slack/commands", 0u8),
        ("/slack/interactions", 1),
        ("/slack/events", 2),
    ] {
        let inbound = inbound.clone();
        router = router.route(
            path,
            post(move |request: Request| {
                let inbound = inbound.clone();
                async move {
                    let request = match into_inbound(request, limit).await {
                        Ok(r) => r,
                        Err(resp) => return resp,
                    };
                    let resp = match which {
                        0 => inbound.handle_command(&request).await,
                        1 => inbound.handle_interaction(&request).await,
                        _ => inbound.handle_event(&request).await,
                    };
                    resp.map(Body::from)
                }
            }),
        );
    }
    if let Some(oauth) = oauth {
        let install = oauth.clone();
        router = router
            .route(
                "/slack/install",
                get(move |request: Request| {
                    let oauth = install.clone();
                    async move {
                        let request = match into_inbound(request, 0).await {
                            Ok(r) => r,
                            Err(resp) => return resp,
                        };
                        oauth.handle_install(&request).await.map(Body::from)
                    }
                }),
            )
            .route(
                "/slack/oauth/callback",
                get(move |request: Request| {
                    let oauth = oauth.clone();
                    async move {
                        let request = match into_inbound(request, 0).await {
                            Ok(r) => r,
                            Err(resp) => return resp,
                        };
                        oauth.handle_callback(&request).await.map(Body::from)
                    }
                }),
            );
    }
    router
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const DOC_TS: &str = "1531420618";
    const DOC_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const DOC_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn the_documented_vector_verifies_and_parses() {
        verify_signature(
            DOC_SECRET,
            DOC_TS,
            DOC_BODY.as_bytes(),
            DOC_SIG,
            1_531_420_618,
        )
        .unwrap();
        let cmd = SlashCommand::parse(DOC_BODY.as_bytes()).unwrap();
        assert_eq!(cmd.command, "/webhook-collect");
        assert_eq!(cmd.user_name, "roadrunner");
        assert_eq!(
            cmd.response_url,
            "https://hooks.slack.com/commands/T1DC2JH3J/397700885554/96rGlfmibIGlgcZRskXaIFfN"
        );
        assert_eq!(cmd.channel().kind, ChannelType::PrivateChannel);
    }

    #[test]
    fn mentions_and_channel_types() {
        assert_eq!(
            leading_mention("<@U123|ann> great call"),
            Some("U123".to_owned())
        );
        assert_eq!(leading_mention("hi <@U123>"), None);
        assert_eq!(ChannelType::infer("D1", None), ChannelType::DirectMessage);
        assert_eq!(
            ChannelType::infer("C1", Some("general")),
            ChannelType::Channel
        );
        assert_eq!(
            ChannelType::infer("G1", Some("mpdm-a--b-1")),
            ChannelType::GroupMessage
        );
    }

    #[test]
    fn unknown_types_are_kept() {
        let body = format!(
            "payload={}",
            url::form_urlencoded::byte_serialize(br#"{"type":"block_suggestion","x":1}"#)
                .collect::<String>()
        );
        match Interaction::parse(body.as_bytes()).unwrap() {
            Interaction::Unknown { kind, payload } => {
                assert_eq!(kind, "block_suggestion");
                assert_eq!(payload["x"], 1);
            }
            other => panic!("{other:?}"),
        }
        let e = EventsRequest::parse(br#"{"type":"event_callback","event_id":"Ev1","event":{"type":"reaction_added","new_field":true}}"#).unwrap();
        assert!(matches!(
            e,
            EventsRequest::EventCallback(EventCallback { event: SlackEvent::Other { ref kind, .. }, .. }) if kind == "reaction_added"
        ));
    }
}
