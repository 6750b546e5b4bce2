//! Adaptive Card 1.5 layout of a rendered message with a text fallback, and escaping that keeps user text from becoming a mention, a link or formatting.

use std::borrow::Cow;

use serde_json::{Value, json};

use crate::message::{Message, MessageFormat};

/// The Adaptive Card schema version sent (Teams supports 1.5 on desktop, web and mobile).
pub const CARD_VERSION: &str = "1.5";
/// The attachment content type of Adaptive Cards.
pub const ADAPTIVE_CARD_CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";
/// Longest body text placed in a card (characters); longer text is truncated with `…`.
/// Teams refuses messages over about 28 KB, card and fallback included.
pub const MAX_TEXT_CHARS: usize = 12_000;
/// Longest notification / fallback text (characters).
pub const MAX_SUMMARY_CHARS: usize = 1_000;
const ELLIPSIS: char = '…';
const ZWSP: char = '\u{200B}';

/// Escapes `text` so Teams shows it literally: the Markdown punctuation that
/// makes emphasis, code, links or HTML (`\ ` * _ ~ [ ] < > #`) is
/// backslash-escaped, and `://` and `www.` get a zero-width space so bare URLs
/// are not turned into links. `<at>` can never form because `<` is escaped, and
/// Adaptive Cards only mention people listed in `msteams.entities`, which
/// switchboard never sends.
///
/// ```
/// use switchboard::teams::escape_markdown;
/// assert_eq!(escape_markdown("[x](y) *b*"), r"\[x\](y) \*b\*");
/// assert!(!escape_markdown("see https://evil.example").contains("://"));
/// ```
pub fn escape_markdown(text: &str) -> Cow<'_, str> {
    let needs = text.contains(['\\', '`', '*', '_', '~', '[', ']', '<', '>', '#'])
        || text.contains("://")
        || text.to_ascii_lowercase().contains("www.");
    if !needs {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let lower = text.to_ascii_lowercase();
    for (i, c) in text.char_indices() {
        match c {
            '\\' | '`' | '*' | '_' | '~' | '[' | ']' | '<' | '>' | '#' => {
                out.push('\\');
                out.push(c);
            }
            ':' if text[i..].starts_with("://") => {
                out.push(':');
                out.push(ZWSP);
            }
            '.' if i >= 3 && lower.get(i - 3..i) == Some("www") => {
                out.push(ZWSP);
                out.push('.');
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Reverses the core's HTML escaping of template values (`&amp;`, `&lt;`,
/// `&gt;`, `&quot;`, `&#x27;`), for text bound for a card, which shows
/// entities literally.
fn unescape_html(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Markdown text of a `.teams` template: the host's Markdown is kept; `<` and
/// `>` (which values can only contain as entities) are escaped for the card.
fn trusted_markdown(text: &str) -> String {
    let plain = unescape_html(text);
    let mut out = String::with_capacity(plain.len());
    for c in plain.chars() {
        if matches!(c, '<' | '>') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Truncates to `max` characters, ending in `…`, never leaving a dangling `\`.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    // An odd run of trailing backslashes would escape the ellipsis.
    let trailing = out.chars().rev().take_while(|c| *c == '\\').count();
    if trailing % 2 == 1 {
        out.pop();
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out.push(ELLIPSIS);
    out
}

/// What is sent for one delivery: an Adaptive Card plus the plain text used for
/// notifications and clients that cannot render the card.
#[derive(Debug, Clone, PartialEq)]
pub struct TeamsMessage {
    /// The Adaptive Card (version [`CARD_VERSION`]).
    pub card: Value,
    /// Plain text: the activity's `summary` and the card's `fallbackText`.
    pub fallback: String,
}

impl TeamsMessage {
    /// Lays a rendered message out: the title (if any) as a bold first
    /// `TextBlock`, the body as a wrapping `TextBlock`. Plain messages (the
    /// default) are escaped with [`escape_markdown`] so every character shows
    /// literally; `TeamsMarkdown` messages keep the template's Markdown.
    pub fn from_message(message: &Message) -> TeamsMessage {
        let title = message
            .title
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let (title_md, body_md, plain_title, plain_body) = match message.format {
            MessageFormat::TeamsMarkdown | MessageFormat::Html => (
                title.map(trusted_markdown),
                trusted_markdown(&message.text),
                title.map(unescape_html),
                unescape_html(&message.text),
            ),
            _ => (
                title.map(|t| escape_markdown(t).into_owned()),
                escape_markdown(&message.text).into_owned(),
                title.map(str::to_owned),
                message.text.clone(),
            ),
        };
        let mut body = Vec::new();
        if let Some(t) = title_md {
            body.push(json!({
                "type": "TextBlock",
                "text": truncate(&t, 500),
                "weight": "Bolder",
                "size": "Medium",
                "wrap": true,
            }));
        }
        if !body_md.trim().is_empty() {
            body.push(json!({
                "type": "TextBlock",
                "text": truncate(&body_md, MAX_TEXT_CHARS),
                "wrap": true,
            }));
        }
        let fallback = match plain_title {
            Some(t) if plain_body.trim().is_empty() => t,
            Some(t) => format!("{t}\n\n{plain_body}"),
            None => plain_body,
        };
        let fallback = truncate(&fallback, MAX_SUMMARY_CHARS);
        let card = json!({
            "type": "AdaptiveCard",
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "version": CARD_VERSION,
            "fallbackText": fallback,
            "body": body,
        });
        TeamsMessage { card, fallback }
    }

    /// The `message` activity carrying the card as its one attachment.
    pub fn to_activity(&self) -> Value {
        json!({
            "type": "message",
            "summary": self.fallback,
            "attachments": [{
                "contentType": ADAPTIVE_CARD_CONTENT_TYPE,
                "content": self.card,
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &str, format: MessageFormat) -> Message {
        Message {
            text: text.to_owned(),
            title: Some("Funded".to_owned()),
            format,
        }
    }

    #[test]
    fn plain_text_is_literal_in_the_card() {
        let m = TeamsMessage::from_message(&msg(
            "<at>Everyone</at> [win](https://x.example) **now**",
            MessageFormat::Plain,
        ));
        let text = m.card["body"][1]["text"].as_str().unwrap();
        assert_eq!(
            text,
            "\\<at\\>Everyone\\</at\\> \\[win\\](https:\u{200B}//x.example) \\*\\*now\\*\\*"
        );
        assert_eq!(m.card["version"], "1.5");
        assert_eq!(m.card["body"][0]["weight"], "Bolder");
        assert!(m.fallback.starts_with("Funded\n\n<at>Everyone"));
        let a = m.to_activity();
        assert_eq!(
            a["attachments"][0]["contentType"],
            ADAPTIVE_CARD_CONTENT_TYPE
        );
    }

    #[test]
    fn teams_markdown_keeps_the_template_and_decodes_values() {
        let m = TeamsMessage::from_message(&msg(
            "**Balance**: 5 &lt;at&gt;x&lt;/at&gt; &amp; co",
            MessageFormat::TeamsMarkdown,
        ));
        let text = m.card["body"][1]["text"].as_str().unwrap();
        assert_eq!(text, "**Balance**: 5 \\<at\\>x\\</at\\> & co");
    }

    #[test]
    fn truncation_never_leaves_an_escape_dangling() {
        let t = truncate(&"\\*".repeat(10), 6);
        assert_eq!(t, "\\*\\*…");
        assert_eq!(truncate("short", 10), "short");
    }
}
