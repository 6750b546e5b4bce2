//! Laying a rendered message out for Slack: fallback text plus Block Kit blocks (a header block for the title, verbatim mrkdwn sections for the body) within Slack's limits.

use serde_json::Value;

use super::blocks::Block;
use crate::message::{Message, MessageFormat};
use crate::template::unescape_mrkdwn;

/// Slack truncates a message's `text` beyond this many characters.
pub const MAX_TEXT_CHARS: usize = 40_000;
/// Blocks per message.
pub const MAX_BLOCKS: usize = 50;
/// Characters in one section block's text.
pub const MAX_SECTION_CHARS: usize = 3_000;
const ELLIPSIS: &str = "…";

/// Length as Slack counts it, conservatively (UTF-16 code units).
fn slack_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// The largest byte index ≤ `max_units` UTF-16 units into `s`, on a char boundary.
fn prefix_end(s: &str, max_units: usize) -> usize {
    let mut units = 0;
    for (i, c) in s.char_indices() {
        units += c.len_utf16();
        if units > max_units {
            return i;
        }
    }
    s.len()
}

/// Moves a cut point back so it does not split an `&…;` entity or a `<…>` token
/// (a link or mention the host's template wrote).
fn safe_cut(s: &str, end: usize) -> usize {
    let head = &s[..end];
    let mut cut = end;
    if let Some(amp) = head.rfind('&') {
        if !head[amp..].contains(';') && end - amp <= 8 {
            cut = amp;
        }
    }
    if let Some(lt) = head[..cut].rfind('<') {
        if !head[lt..cut].contains('>') && cut - lt <= 1_000 {
            cut = lt;
        }
    }
    if cut == 0 { end } else { cut }
}

/// Truncates `text` to `max` characters (Slack's count), ending in `…` when cut.
fn truncate(text: &str, max: usize) -> String {
    if slack_len(text) <= max {
        return text.to_owned();
    }
    let end = safe_cut(text, prefix_end(text, max.saturating_sub(1)));
    let mut out = text[..end].trim_end().to_owned();
    out.push_str(ELLIPSIS);
    out
}

/// Splits `text` into chunks of at most `max` characters, preferring line breaks,
/// then spaces, never splitting an escape entity or a `<…>` token.
fn split(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while slack_len(rest) > max {
        let hard = prefix_end(rest, max);
        let window = &rest[..hard];
        let half = hard / 2;
        let cut = match window.rfind('\n') {
            Some(i) if i >= half => i + 1,
            _ => match window.rfind(' ') {
                Some(i) if i >= half => i + 1,
                _ => safe_cut(rest, hard),
            },
        };
        let cut = if cut == 0 {
            rest.chars().next().map_or(rest.len(), char::len_utf8)
        } else {
            cut
        };
        let (chunk, tail) = rest.split_at(cut);
        if !chunk.trim().is_empty() {
            out.push(chunk.trim_end().to_owned());
        }
        rest = tail;
    }
    if !rest.trim().is_empty() {
        out.push(rest.to_owned());
    }
    out
}

/// What is posted for one delivery: fallback `text` plus Block Kit `blocks`.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackMessage {
    /// The notification / fallback text (≤ [`MAX_TEXT_CHARS`]).
    pub text: String,
    /// Section blocks (≤ [`MAX_BLOCKS`], each ≤ [`MAX_SECTION_CHARS`]).
    pub blocks: Vec<Value>,
}

impl SlackMessage {
    /// Lays a rendered message out for Slack: the title (if any) as a header
    /// block (plain text, one line, at most 150 characters, so `*` or a line
    /// break in a title cannot break the layout), the body split into
    /// verbatim mrkdwn sections at line breaks (`verbatim: true`: Slack does
    /// not auto-link URLs, channel names or mentions in user text). Text
    /// beyond Slack's 40,000 characters is truncated with `…` rather than
    /// rejected; the sections always fit Slack's 50-block and
    /// 3,000-character limits.
    pub fn from_message(message: &Message) -> SlackMessage {
        let title = message
            .title
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let full = match title {
            Some(t) => format!("{t}\n\n{}", message.text),
            None => message.text.clone(),
        };
        let text = truncate(&full, MAX_TEXT_CHARS);
        let mut blocks = Vec::new();
        let mut body_budget = MAX_TEXT_CHARS;
        if let Some(t) = title {
            body_budget = body_budget.saturating_sub(slack_len(t) + 2);
            let plain = match message.format {
                MessageFormat::SlackMrkdwn => unescape_mrkdwn(t).into_owned(),
                _ => t.to_owned(),
            };
            blocks.push(Block::header(plain).to_json());
        }
        let body = truncate(&message.text, body_budget);
        for chunk in split(&body, MAX_SECTION_CHARS) {
            if blocks.len() == MAX_BLOCKS {
                break;
            }
            blocks.push(section(&chunk));
        }
        SlackMessage { text, blocks }
    }

    /// A message of typed blocks with `text` as the notification fallback.
    pub fn from_blocks(text: impl Into<String>, blocks: &[Block]) -> SlackMessage {
        SlackMessage {
            text: truncate(&text.into(), MAX_TEXT_CHARS),
            blocks: blocks.iter().take(MAX_BLOCKS).map(Block::to_json).collect(),
        }
    }
}

pub(super) fn section(text: &str) -> Value {
    Block::section(text).to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &str) -> Message {
        Message {
            text: text.to_owned(),
            title: None,
            format: MessageFormat::SlackMrkdwn,
        }
    }

    #[test]
    fn short_text_is_one_section() {
        let m = SlackMessage::from_message(&msg("Hello *you*"));
        assert_eq!(m.text, "Hello *you*");
        assert_eq!(m.blocks, vec![section("Hello *you*")]);
    }

    #[test]
    fn long_text_is_split_and_truncated_within_limits() {
        let line = "word &amp; word &lt;!channel&gt; ".repeat(10);
        let text = format!("{line}\n").repeat(200); // ~66k chars
        let m = SlackMessage::from_message(&msg(&text));
        assert!(slack_len(&m.text) <= MAX_TEXT_CHARS);
        assert!(m.text.ends_with(ELLIPSIS));
        assert!(m.blocks.len() <= MAX_BLOCKS);
        let mut total = 0;
        for b in &m.blocks {
            let t = b["text"]["text"].as_str().unwrap();
            assert!(slack_len(t) <= MAX_SECTION_CHARS);
            // No entity is cut in half.
            assert!(!t.ends_with('&') && !t.ends_with("&amp") && !t.ends_with("&l"));
            total += slack_len(t);
        }
        assert!(total <= MAX_TEXT_CHARS);
    }

    #[test]
    fn no_break_points_still_splits_on_char_boundaries() {
        let text = "é".repeat(7_000);
        let chunks = split(&text, MAX_SECTION_CHARS);
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| slack_len(c) <= MAX_SECTION_CHARS));
        assert_eq!(chunks.concat(), text);
    }

    #[test]
    fn entities_and_links_are_not_cut() {
        let s = format!("{}&amp;", "a".repeat(2_998));
        let end = safe_cut(&s, prefix_end(&s, 3_000));
        assert_eq!(&s[..end], "a".repeat(2_998));
        let s = format!("{}<https://example.com|x>", "a".repeat(2_990));
        let end = safe_cut(&s, prefix_end(&s, 3_000));
        assert_eq!(end, 2_990);
    }

    #[test]
    fn title_becomes_a_header_block() {
        let mut m = msg("body");
        m.title = Some("Funded".to_owned());
        let s = SlackMessage::from_message(&m);
        assert_eq!(
            s.blocks[0],
            serde_json::json!({ "type": "header", "text": { "type": "plain_text", "text": "Funded", "emoji": true } })
        );
        assert_eq!(s.text, "Funded\n\nbody");
    }
}
