//! Slack's inbound payloads, parsed without panicking and keeping unknown types: slash commands, interactions (shortcuts, modal submissions) and command replies (Events API bodies are in `events`).

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};

use super::super::api::null_default;
use crate::tenant::TenantId;
use crate::{Error, ErrorKind, Result};

/// Accepts `true`/`false` as JSON booleans or as the strings form bodies carry.
fn flexible_bool<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Bool(b)) => b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true") || s == "1",
        _ => false,
    })
}

fn form_map(body: &[u8]) -> Map<String, Value> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect()
}

pub(super) fn invalid(what: &str) -> Error {
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
///
/// `response_url` can post to the conversation for 30 minutes: `Debug`
/// prints it as `[redacted]` and `Serialize` leaves it out.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// True when the app is installed org-wide on that organisation.
    #[serde(default, deserialize_with = "flexible_bool")]
    pub is_enterprise_install: bool,
    /// The tenant whose Slack connection the request came through (set by
    /// [`super::SlackInbound`] after it authorized the workspace; not part of
    /// Slack's payload).
    #[serde(skip)]
    pub tenant: TenantId,
    /// Where delayed answers go (up to 5 times within 30 minutes). Never
    /// serialized or printed.
    #[serde(default, skip_serializing)]
    pub response_url: String,
    /// Opens a modal (valid for about 3 seconds).
    #[serde(default)]
    pub trigger_id: String,
    /// The app's id.
    #[serde(default)]
    pub api_app_id: String,
}

const REDACTED: &str = "[redacted]";

impl std::fmt::Debug for SlashCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlashCommand")
            .field("command", &self.command)
            .field("text", &self.text)
            .field("user_id", &self.user_id)
            .field("user_name", &self.user_name)
            .field("channel_id", &self.channel_id)
            .field("channel_name", &self.channel_name)
            .field("team_id", &self.team_id)
            .field("team_domain", &self.team_domain)
            .field("enterprise_id", &self.enterprise_id)
            .field("is_enterprise_install", &self.is_enterprise_install)
            .field("tenant", &self.tenant)
            .field("response_url", &REDACTED)
            .field("trigger_id", &self.trigger_id)
            .field("api_app_id", &self.api_app_id)
            .finish()
    }
}

impl std::fmt::Debug for MessageShortcut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageShortcut")
            .field("callback_id", &self.callback_id)
            .field("trigger_id", &self.trigger_id)
            .field(
                "response_url",
                &self.response_url.as_ref().map(|_| REDACTED),
            )
            .field("user", &self.user)
            .field("channel", &self.channel)
            .field("message", &self.message)
            .field("team", &self.team)
            .field("enterprise", &self.enterprise)
            .field("is_enterprise_install", &self.is_enterprise_install)
            .finish()
    }
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
        let mut cmd = cmd;
        cmd.enterprise_id = cmd.enterprise_id.filter(|e| !e.is_empty());
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
    /// Its Enterprise Grid organisation, if any.
    #[serde(default)]
    pub enterprise_id: Option<String>,
}

/// An Enterprise Grid organisation in a payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnterpriseRef {
    /// The enterprise id.
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// Its name.
    #[serde(default)]
    pub name: Option<String>,
}

/// Which workspace (and organisation) an interaction came from, as the
/// request's authorization needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkspaceRef {
    /// The team id.
    pub team_id: Option<String>,
    /// The enterprise id.
    pub enterprise_id: Option<String>,
    /// Whether Slack said the app is installed org-wide (`None`: not said).
    pub is_enterprise_install: Option<bool>,
}

impl WorkspaceRef {
    fn of(
        team: Option<&TeamRef>,
        user: &InteractionUser,
        enterprise: Option<&EnterpriseRef>,
        is_enterprise_install: bool,
    ) -> WorkspaceRef {
        let team_id = team
            .map(|t| t.id.clone())
            .or_else(|| user.team_id.clone())
            .filter(|t| !t.is_empty());
        let enterprise_id = enterprise
            .map(|e| e.id.clone())
            .or_else(|| team.and_then(|t| t.enterprise_id.clone()))
            .filter(|e| !e.is_empty());
        WorkspaceRef {
            team_id,
            enterprise_id,
            is_enterprise_install: Some(is_enterprise_install),
        }
    }
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
    /// The Enterprise Grid organisation, if any.
    #[serde(default)]
    pub enterprise: Option<EnterpriseRef>,
    /// True when the app is installed org-wide on that organisation.
    #[serde(default, deserialize_with = "null_default")]
    pub is_enterprise_install: bool,
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

/// A message shortcut (`type: message_action`). `response_url` is
/// redacted in `Debug` and never serialized.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageShortcut {
    /// The shortcut's callback id.
    #[serde(default, deserialize_with = "null_default")]
    pub callback_id: String,
    /// Opens a modal (about 3 seconds).
    #[serde(default, deserialize_with = "null_default")]
    pub trigger_id: String,
    /// Where replies can be posted (30 minutes). Never serialized or printed.
    #[serde(default, skip_serializing)]
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
    /// The Enterprise Grid organisation, if any.
    #[serde(default)]
    pub enterprise: Option<EnterpriseRef>,
    /// True when the app is installed org-wide on that organisation.
    #[serde(default, deserialize_with = "null_default")]
    pub is_enterprise_install: bool,
}

impl Shortcut {
    /// The workspace it came from.
    pub fn workspace(&self) -> WorkspaceRef {
        WorkspaceRef::of(
            self.team.as_ref(),
            &self.user,
            self.enterprise.as_ref(),
            self.is_enterprise_install,
        )
    }
}

impl MessageShortcut {
    /// The workspace it came from.
    pub fn workspace(&self) -> WorkspaceRef {
        WorkspaceRef::of(
            self.team.as_ref(),
            &self.user,
            self.enterprise.as_ref(),
            self.is_enterprise_install,
        )
    }
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
    /// The Enterprise Grid organisation, if any.
    #[serde(default)]
    pub enterprise: Option<EnterpriseRef>,
    /// True when the app is installed org-wide on that organisation.
    #[serde(default, deserialize_with = "null_default")]
    pub is_enterprise_install: bool,
}

impl ViewSubmission {
    /// The workspace it came from.
    pub fn workspace(&self) -> WorkspaceRef {
        WorkspaceRef::of(
            self.team.as_ref(),
            &self.user,
            self.enterprise.as_ref(),
            self.is_enterprise_install,
        )
    }
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

    /// The raw JSON payload of a form-encoded interaction body (`payload=`),
    /// if any. Never panics.
    pub fn parse_value(body: &[u8]) -> Option<Value> {
        let payload = url::form_urlencoded::parse(body)
            .find(|(k, _)| k == "payload")
            .map(|(_, v)| v.into_owned())?;
        serde_json::from_str(&payload).ok()
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

#[cfg(test)]
mod tests {
    use super::super::events::{EventCallback, EventsRequest, SlackEvent};
    use super::*;

    #[test]
    fn the_documented_command_parses() {
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c&is_enterprise_install=false";
        let cmd = SlashCommand::parse(body.as_bytes()).unwrap();
        assert_eq!(cmd.command, "/webhook-collect");
        assert_eq!(cmd.user_name, "roadrunner");
        assert!(!cmd.is_enterprise_install);
        assert_eq!(
            cmd.response_url,
            "https://hooks.slack.com/commands/T1DC2JH3J/397700885554/96rGlfmibIGlgcZRskXaIFfN"
        );
        assert_eq!(cmd.channel().kind, ChannelType::PrivateChannel);
        let org = SlashCommand::parse(
            b"command=%2Fx&team_id=T1&enterprise_id=E1&is_enterprise_install=true",
        )
        .unwrap();
        assert!(org.is_enterprise_install);
        assert_eq!(org.enterprise_id.as_deref(), Some("E1"));
    }

    #[test]
    fn channel_types() {
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
    fn org_wide_events_carry_their_enterprise() {
        let e = EventsRequest::parse(br#"{"type":"event_callback","event_id":"Ev1","team_id":"T1","event":{"type":"app_uninstalled"},"authorizations":[{"enterprise_id":"E1","team_id":"T1","is_bot":true,"is_enterprise_install":true}]}"#).unwrap();
        let EventsRequest::EventCallback(cb) = e else {
            panic!("not a callback")
        };
        assert_eq!(cb.event, SlackEvent::AppUninstalled);
        assert_eq!(
            cb.workspace(),
            WorkspaceRef {
                team_id: Some("T1".into()),
                enterprise_id: Some("E1".into()),
                is_enterprise_install: Some(true)
            }
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
