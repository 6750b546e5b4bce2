//! Typed Block Kit builders for the blocks switchboard produces and hosts use most (section, header, context, divider, actions with buttons), serialized exactly as Slack documents them.

use serde::{Serialize, Serializer};
use serde_json::{Value, json};

/// Characters in a header block's `plain_text` (Slack's limit).
pub const MAX_HEADER_CHARS: usize = 150;
/// Characters in a button's text (Slack's limit).
pub const MAX_BUTTON_TEXT_CHARS: usize = 75;

/// A Block Kit text object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    /// `plain_text` (with `emoji: true`).
    Plain(String),
    /// `mrkdwn` with `verbatim: true`: Slack does not turn URLs, channel
    /// names or mentions in it into links; links written as `<url|text>` still work.
    Mrkdwn(String),
}

impl Text {
    /// A `plain_text` object.
    pub fn plain(text: impl Into<String>) -> Text {
        Text::Plain(text.into())
    }
    /// A verbatim `mrkdwn` object (already-escaped mrkdwn).
    pub fn mrkdwn(text: impl Into<String>) -> Text {
        Text::Mrkdwn(text.into())
    }
    /// The JSON Slack expects.
    pub fn to_json(&self) -> Value {
        match self {
            Text::Plain(t) => json!({ "type": "plain_text", "text": t, "emoji": true }),
            Text::Mrkdwn(t) => json!({ "type": "mrkdwn", "text": t, "verbatim": true }),
        }
    }
}

/// A button's style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonStyle {
    /// Green.
    Primary,
    /// Red.
    Danger,
}

/// A button element (in an actions block or a section's accessory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    action_id: String,
    text: String,
    value: Option<String>,
    url: Option<String>,
    style: Option<ButtonStyle>,
}

impl Button {
    /// A button sending `action_id` to the app's interactivity handler
    /// ([`crate::slack::SlackInboundBuilder::action`]).
    pub fn new(action_id: impl Into<String>, text: impl Into<String>) -> Button {
        Button {
            action_id: action_id.into(),
            text: text.into(),
            value: None,
            url: None,
            style: None,
        }
    }
    /// The value sent with the action.
    #[must_use]
    pub fn value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }
    /// A link button opening `url`.
    #[must_use]
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }
    /// Its style.
    #[must_use]
    pub fn style(mut self, style: ButtonStyle) -> Self {
        self.style = Some(style);
        self
    }
    /// The JSON Slack expects.
    pub fn to_json(&self) -> Value {
        let text: String = self.text.chars().take(MAX_BUTTON_TEXT_CHARS).collect();
        let mut v = json!({
            "type": "button",
            "action_id": self.action_id,
            "text": Text::Plain(text).to_json(),
        });
        if let Some(x) = &self.value {
            v["value"] = json!(x);
        }
        if let Some(x) = &self.url {
            v["url"] = json!(x);
        }
        match self.style {
            Some(ButtonStyle::Primary) => v["style"] = json!("primary"),
            Some(ButtonStyle::Danger) => v["style"] = json!("danger"),
            None => {}
        }
        v
    }
}

/// One Block Kit layout block.
///
/// ```
/// use switchboard::slack::{Block, Button, Text};
/// let blocks = vec![
///     Block::header("Wallet funded"),
///     Block::section("*42 EUR* were added"),
///     Block::divider(),
///     Block::actions(vec![Button::new("open_wallet", "Open wallet").value("w1")]),
/// ];
/// assert_eq!(blocks[1].to_json()["text"]["verbatim"], true);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// A section with text (and optionally a button accessory).
    Section {
        /// The text.
        text: Text,
        /// An optional block id.
        block_id: Option<String>,
        /// A button on the right.
        accessory: Option<Button>,
    },
    /// A header (plain text, at most [`MAX_HEADER_CHARS`]).
    Header {
        /// The text.
        text: String,
    },
    /// Small context text.
    Context {
        /// Its text elements.
        elements: Vec<Text>,
    },
    /// A divider.
    Divider,
    /// A row of buttons.
    Actions {
        /// An optional block id.
        block_id: Option<String>,
        /// The buttons.
        elements: Vec<Button>,
    },
}

impl Block {
    /// A section of verbatim mrkdwn.
    pub fn section(mrkdwn: impl Into<String>) -> Block {
        Block::Section {
            text: Text::Mrkdwn(mrkdwn.into()),
            block_id: None,
            accessory: None,
        }
    }
    /// A header; longer text is cut to [`MAX_HEADER_CHARS`] with `…`.
    pub fn header(text: impl Into<String>) -> Block {
        Block::Header { text: text.into() }
    }
    /// A context block of verbatim mrkdwn.
    pub fn context(mrkdwn: impl Into<String>) -> Block {
        Block::Context {
            elements: vec![Text::Mrkdwn(mrkdwn.into())],
        }
    }
    /// A divider.
    pub fn divider() -> Block {
        Block::Divider
    }
    /// A row of buttons.
    pub fn actions(buttons: Vec<Button>) -> Block {
        Block::Actions {
            block_id: None,
            elements: buttons,
        }
    }
    /// The JSON Slack expects.
    pub fn to_json(&self) -> Value {
        match self {
            Block::Section {
                text,
                block_id,
                accessory,
            } => {
                let mut v = json!({ "type": "section", "text": text.to_json() });
                if let Some(id) = block_id {
                    v["block_id"] = json!(id);
                }
                if let Some(b) = accessory {
                    v["accessory"] = b.to_json();
                }
                v
            }
            Block::Header { text } => {
                json!({ "type": "header", "text": Text::Plain(header_text(text)).to_json() })
            }
            Block::Context { elements } => json!({
                "type": "context",
                "elements": elements.iter().map(Text::to_json).collect::<Vec<_>>(),
            }),
            Block::Divider => json!({ "type": "divider" }),
            Block::Actions { block_id, elements } => {
                let mut v = json!({
                    "type": "actions",
                    "elements": elements.iter().map(Button::to_json).collect::<Vec<_>>(),
                });
                if let Some(id) = block_id {
                    v["block_id"] = json!(id);
                }
                v
            }
        }
    }
}

/// One line, at most [`MAX_HEADER_CHARS`] characters (`…` when cut).
fn header_text(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= MAX_HEADER_CHARS {
        return line;
    }
    let mut out: String = line.chars().take(MAX_HEADER_CHARS - 1).collect();
    out = out.trim_end().to_owned();
    out.push('…');
    out
}

impl Serialize for Block {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl From<Block> for Value {
    fn from(b: Block) -> Value {
        b.to_json()
    }
}

/// The JSON array of `blocks`.
pub fn blocks_json(blocks: &[Block]) -> Vec<Value> {
    blocks.iter().map(Block::to_json).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_one_line_within_the_limit() {
        let b = Block::header(format!("a*b\nc {}", "x".repeat(200)));
        let t = b.to_json()["text"]["text"].as_str().unwrap().to_owned();
        assert!(t.starts_with("a*b c "));
        assert_eq!(t.chars().count(), MAX_HEADER_CHARS);
        assert!(t.ends_with('…'));
    }
}
