//! The incoming Bot Framework activity: a typed subset of the fields Teams sends, parsed leniently (unknown fields ignored, wrong types rejected).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::api::ConversationReference;
use crate::{Error, ErrorKind, Result};

/// Largest activity body accepted by [`Activity::parse`] (Teams messages are ≤ ~100 KB).
pub const MAX_ACTIVITY_BYTES: usize = 256 * 1024;

/// A user or bot in an activity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelAccount {
    /// The channel-specific id (`29:…` for users, `28:…` for bots).
    #[serde(default)]
    pub id: String,
    /// The display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The Microsoft Entra object id (users only).
    #[serde(rename = "aadObjectId", default)]
    pub aad_object_id: Option<String>,
}

/// The conversation an activity belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationAccount {
    /// The conversation id.
    #[serde(default)]
    pub id: String,
    /// `personal`, `groupChat` or `channel`.
    #[serde(rename = "conversationType", default)]
    pub conversation_type: Option<String>,
    /// The Entra tenant id.
    #[serde(rename = "tenantId", default)]
    pub tenant_id: Option<String>,
    /// The name (group chats, channels).
    #[serde(default)]
    pub name: Option<String>,
    /// True for group conversations.
    #[serde(rename = "isGroup", default)]
    pub is_group: Option<bool>,
}

/// One Bot Framework activity as Teams sends it to the bot's messaging endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    /// `message`, `invoke`, `conversationUpdate`, `installationUpdate`, …
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The activity id.
    #[serde(default)]
    pub id: Option<String>,
    /// When it was sent (RFC 3339).
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Where replies go.
    #[serde(rename = "serviceUrl", default)]
    pub service_url: String,
    /// `msteams`.
    #[serde(rename = "channelId", default)]
    pub channel_id: String,
    /// The sender.
    #[serde(default)]
    pub from: ChannelAccount,
    /// The conversation.
    #[serde(default)]
    pub conversation: ConversationAccount,
    /// The bot.
    #[serde(default)]
    pub recipient: ChannelAccount,
    /// Message text (may contain `<at>bot</at>`).
    #[serde(default)]
    pub text: Option<String>,
    /// The invoke name (`composeExtension/fetchTask`, …).
    #[serde(default)]
    pub name: Option<String>,
    /// The invoke payload.
    #[serde(default)]
    pub value: Value,
    /// `installationUpdate` action: `add` or `remove`.
    #[serde(default)]
    pub action: Option<String>,
    /// Teams channel data (`tenant.id`, `team`, `channel`, `eventType`).
    #[serde(rename = "channelData", default)]
    pub channel_data: Value,
    /// Members added (`conversationUpdate`).
    #[serde(rename = "membersAdded", default)]
    pub members_added: Vec<ChannelAccount>,
    /// Members removed (`conversationUpdate`).
    #[serde(rename = "membersRemoved", default)]
    pub members_removed: Vec<ChannelAccount>,
    /// The activity this one replies to.
    #[serde(rename = "replyToId", default)]
    pub reply_to_id: Option<String>,
}

impl Activity {
    /// Parses an activity from JSON bytes: at most [`MAX_ACTIVITY_BYTES`], a JSON
    /// object with a `type`. Unknown fields are ignored.
    pub fn parse(body: &[u8]) -> Result<Activity> {
        if body.len() > MAX_ACTIVITY_BYTES {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                "the activity exceeds the size limit",
            ));
        }
        let value: Value = serde_json::from_slice(body)?;
        if !value.is_object() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "an activity must be a JSON object",
            ));
        }
        let activity: Activity = serde_json::from_value(value)?;
        if activity.kind.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "the activity has no type",
            ));
        }
        Ok(activity)
    }

    /// The Entra tenant id: `channelData.tenant.id`, else `conversation.tenantId`.
    pub fn tenant_id(&self) -> Option<&str> {
        self.channel_data
            .pointer("/tenant/id")
            .and_then(Value::as_str)
            .or(self.conversation.tenant_id.as_deref())
            .filter(|t| !t.is_empty())
    }

    /// The reference for posting into this activity's conversation later.
    pub fn conversation_reference(&self) -> Option<ConversationReference> {
        let tenant = self.tenant_id()?;
        if self.service_url.is_empty() || self.conversation.id.is_empty() {
            return None;
        }
        let name = self
            .channel_data
            .pointer("/channel/name")
            .and_then(Value::as_str)
            .or(self.conversation.name.as_deref())
            .or_else(|| {
                self.channel_data
                    .pointer("/team/name")
                    .and_then(Value::as_str)
            })
            .map(str::to_owned);
        Some(ConversationReference {
            service_url: self.service_url.clone(),
            conversation_id: self.conversation.id.clone(),
            tenant_id: tenant.to_owned(),
            conversation_type: self.conversation.conversation_type.clone(),
            name,
        })
    }

    /// True when the bot itself was added (`conversationUpdate` with the bot in
    /// `membersAdded`, or `installationUpdate` with action `add`).
    pub fn bot_added(&self) -> bool {
        match self.kind.as_str() {
            "conversationUpdate" => self.members_added.iter().any(|m| m.id == self.recipient.id),
            "installationUpdate" => self.action.as_deref() == Some("add"),
            _ => false,
        }
    }

    /// True when the bot itself was removed (uninstalled from the team, chat or personal scope).
    pub fn bot_removed(&self) -> bool {
        match self.kind.as_str() {
            "conversationUpdate" => self
                .members_removed
                .iter()
                .any(|m| m.id == self.recipient.id),
            "installationUpdate" => self.action.as_deref() == Some("remove"),
            _ => false,
        }
    }

    /// The message text without `<at>…</at>` mentions and surrounding whitespace.
    pub fn text_without_mentions(&self) -> String {
        let text = self.text.as_deref().unwrap_or("");
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("<at>") {
            out.push_str(&rest[..start]);
            match rest[start..].find("</at>") {
                Some(end) => rest = &rest[start + end + 5..],
                None => {
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// Text content of a message payload's HTML body: tags dropped, the common
/// entities decoded, whitespace collapsed.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    let mut tag = String::new();
    for c in html.chars() {
        match (in_tag, c) {
            (false, '<') => {
                in_tag = true;
                tag.clear();
            }
            (true, '>') => {
                in_tag = false;
                let t = tag.trim_start_matches('/').to_ascii_lowercase();
                if t.starts_with("br") || t.starts_with('p') || t.starts_with("div") {
                    out.push('\n');
                }
            }
            (true, c) => tag.push(c),
            (false, c) => out.push(c),
        }
    }
    let decoded = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    decoded
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_documented_conversation_update() {
        let body = br#"{
            "type": "conversationUpdate", "id": "f:1", "channelId": "msteams",
            "serviceUrl": "https://smba.trafficmanager.net/emea/",
            "from": {"id": "29:u", "aadObjectId": "a-1"},
            "recipient": {"id": "28:bot", "name": "Perks"},
            "conversation": {"id": "19:c@thread.tacv2", "conversationType": "channel", "tenantId": "t-1", "isGroup": true},
            "membersAdded": [{"id": "28:bot"}],
            "channelData": {"tenant": {"id": "t-1"}, "team": {"id": "19:c@thread.tacv2", "name": "Sales"}, "eventType": "teamMemberAdded"}
        }"#;
        let a = Activity::parse(body).unwrap();
        assert!(a.bot_added());
        assert!(!a.bot_removed());
        let r = a.conversation_reference().unwrap();
        assert_eq!(r.tenant_id, "t-1");
        assert_eq!(r.name.as_deref(), Some("Sales"));
    }

    #[test]
    fn rejects_non_objects_and_typeless() {
        assert!(Activity::parse(b"[]").is_err());
        assert!(Activity::parse(b"{}").is_err());
        assert!(Activity::parse(br#"{"type": 3}"#).is_err());
        assert!(Activity::parse(b"not json").is_err());
    }

    #[test]
    fn mentions_and_html() {
        let a = Activity {
            text: Some("<at>Perks</at> how many   points?".into()),
            ..Default::default()
        };
        assert_eq!(a.text_without_mentions(), "how many points?");
        assert_eq!(
            html_to_text("<p>Great &amp; fast</p><p>call&nbsp;me</p>"),
            "Great & fast\ncall me"
        );
    }
}
