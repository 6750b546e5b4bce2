//! Where a delivery goes (`Target`) and what is delivered (`Message`).

use serde::{Deserialize, Serialize};

/// Where a delivery goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Target {
    /// The direct messages of the event's subject (resolved through identity links).
    SubjectDm,
    /// The direct messages of a given host user.
    UserDm {
        /// The host's user id.
        user_id: String,
    },
    /// A channel by its name (e.g. `general`, without `#`).
    ChannelName {
        /// The channel's name.
        name: String,
    },
    /// A channel by its platform id (e.g. Slack `C0123`).
    ChannelId {
        /// The channel's id.
        id: String,
    },
    /// An email address.
    Email {
        /// The address.
        address: String,
    },
    /// A ticket (new when `id` is `None`).
    Ticket {
        /// The ticket id, if it exists.
        id: Option<String>,
    },
}

impl Target {
    /// A channel by name; a leading `#` is stripped.
    pub fn channel(name: &str) -> Target {
        Target::ChannelName {
            name: name.trim().trim_start_matches('#').to_owned(),
        }
    }

    /// The key the rate limiter paces per target (e.g. `channel:general`, `dm:u1`).
    pub fn rate_key(&self, subject: Option<&str>) -> String {
        match self {
            Target::SubjectDm => format!("dm:{}", subject.unwrap_or("")),
            Target::UserDm { user_id } => format!("dm:{user_id}"),
            Target::ChannelName { name } => format!("channel:{name}"),
            Target::ChannelId { id } => format!("channel-id:{id}"),
            Target::Email { address } => format!("email:{address}"),
            Target::Ticket { id } => format!("ticket:{}", id.as_deref().unwrap_or("new")),
        }
    }

    /// True when the target is a person's DM (needs identity resolution).
    pub fn is_dm(&self) -> bool {
        matches!(self, Target::SubjectDm | Target::UserDm { .. })
    }
}

/// The text format a destination expects; decides how template values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MessageFormat {
    /// Plain text, no escaping.
    #[default]
    Plain,
    /// Slack mrkdwn: `&`, `<`, `>` escaped in interpolated values.
    SlackMrkdwn,
    /// HTML: values HTML-escaped.
    Html,
    /// Markdown as Teams renders it; values are HTML-escaped (Teams accepts HTML in text).
    TeamsMarkdown,
}

/// What is delivered: rendered text in the destination's format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The rendered body.
    pub text: String,
    /// Optional rendered title / email subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The format the text is in.
    pub format: MessageFormat,
}
