//! `SlackDestination`: `chat.postMessage` to channels (by id, or by name resolved once via `conversations.list`) and DMs (via `conversations.open`), with Block Kit layout within Slack's limits.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::api::{FailureClass, PostMessage, SlackApiError, SlackClient};
use super::config::SlackConfig;
use super::oauth::BotToken;
use crate::Result;
use crate::destination::{Capabilities, Delivery, DeliveryError, Destination, Receipt};
use crate::message::{Message, MessageFormat, Target};

/// Slack truncates a message's `text` beyond this many characters.
pub const MAX_TEXT_CHARS: usize = 40_000;
/// Blocks per message.
pub const MAX_BLOCKS: usize = 50;
/// Characters in one section block's text.
pub const MAX_SECTION_CHARS: usize = 3_000;
/// Page size for `conversations.list`.
const CHANNEL_PAGE: u32 = 200;
/// A channel name missing from the cached list triggers a fresh listing at most this often.
const CHANNEL_RELIST: Duration = Duration::from_secs(5 * 60);
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
    /// Lays a rendered message out for Slack: the title (if any) as a bold first
    /// section, the body split into sections at line breaks. Text beyond Slack's
    /// 40,000 characters is truncated with `…` rather than rejected; the sections
    /// always fit Slack's 50-block and 3,000-character limits.
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
            let title = truncate(t, MAX_SECTION_CHARS - 2);
            body_budget = body_budget.saturating_sub(slack_len(&title) + 2);
            let title = match message.format {
                MessageFormat::SlackMrkdwn => format!("*{title}*"),
                _ => title,
            };
            blocks.push(section(&title));
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
}

fn section(text: &str) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } })
}

struct ChannelCache {
    by_name: HashMap<String, String>,
    listed_at: Option<Instant>,
}

/// The Slack [`Destination`]: posts with `chat.postMessage` using a bot token.
///
/// * Channel targets by id go straight to `chat.postMessage`; by name they are
///   resolved once through `conversations.list` (all pages) and cached.
/// * DM targets use the Slack user id the engine's identity resolver matched
///   ([`Delivery::recipient`]); the DM channel is opened once with
///   `conversations.open` and cached.
/// * Every Slack failure is classified by [`super::classify`]; a `Disconnected`
///   answer makes the engine park the destination's deliveries until reconnected.
pub struct SlackDestination {
    config: SlackConfig,
    client: SlackClient,
    token: BotToken,
    channels: tokio::sync::Mutex<ChannelCache>,
    dms: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for SlackDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackDestination")
            .field("name", &self.config.destination_name())
            .field("base_url", &self.client.base_url())
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl SlackDestination {
    /// A destination posting with `token`, configured by `config`.
    pub fn new(config: SlackConfig, token: BotToken) -> Result<Self> {
        let client = SlackClient::new(&config)?;
        Ok(Self::with_client(config, client, token))
    }

    /// A destination sharing an existing client.
    pub fn with_client(config: SlackConfig, client: SlackClient, token: BotToken) -> Self {
        SlackDestination {
            config,
            client,
            token,
            channels: tokio::sync::Mutex::new(ChannelCache {
                by_name: HashMap::new(),
                listed_at: None,
            }),
            dms: Mutex::new(HashMap::new()),
        }
    }

    /// The client (to share with the identity resolver and inbound handlers).
    pub fn client(&self) -> &SlackClient {
        &self.client
    }

    /// The token source.
    pub fn token(&self) -> &BotToken {
        &self.token
    }

    /// The channel id for `name` (without `#`), listing channels when it is not cached.
    pub async fn channel_id(&self, name: &str) -> Result<Option<String>, SlackApiError> {
        let token = self.token.get(&self.client).await?;
        self.channel_by_name(&token, name).await
    }

    async fn channel_by_name(
        &self,
        token: &SecretString,
        name: &str,
    ) -> Result<Option<String>, SlackApiError> {
        let key = name.trim().trim_start_matches('#').to_lowercase();
        let mut cache = self.channels.lock().await;
        if let Some(id) = cache.by_name.get(&key) {
            return Ok(Some(id.clone()));
        }
        let stale = cache
            .listed_at
            .is_none_or(|t| t.elapsed() >= CHANNEL_RELIST);
        if !stale {
            return Ok(None);
        }
        let mut by_name = HashMap::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .client
                .conversations_list(token, cursor.as_deref(), CHANNEL_PAGE)
                .await?;
            for c in page.items {
                if let Some(n) = c.name {
                    by_name.insert(n.to_lowercase(), c.id);
                }
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        cache.by_name = by_name;
        cache.listed_at = Some(Instant::now());
        Ok(cache.by_name.get(&key).cloned())
    }

    fn forget_channel_name(&self, id: &str) {
        if let Ok(mut cache) = self.channels.try_lock() {
            cache.by_name.retain(|_, v| v != id);
        }
    }

    async fn dm_channel(&self, token: &SecretString, user: &str) -> Result<String, SlackApiError> {
        if let Some(id) = self.dms.lock().ok().and_then(|m| m.get(user).cloned()) {
            return Ok(id);
        }
        let id = self.client.conversations_open(token, user).await?;
        if let Ok(mut m) = self.dms.lock() {
            m.insert(user.to_owned(), id.clone());
        }
        Ok(id)
    }

    async fn resolve_channel(
        &self,
        token: &SecretString,
        delivery: &Delivery,
    ) -> Result<(String, bool), DeliveryError> {
        match &delivery.target {
            Target::ChannelId { id } => Ok((id.clone(), false)),
            Target::ChannelName { name } => {
                match self
                    .channel_by_name(token, name)
                    .await
                    .map_err(|e| e.to_delivery_error())?
                {
                    Some(id) => Ok((id, true)),
                    None if looks_like_id(name) => Ok((name.clone(), false)),
                    None => Err(DeliveryError::permanent(format!(
                        "no Slack channel named #{name} is visible to the app: check the name in the route; for a private channel invite the bot first, then replay"
                    ))),
                }
            }
            Target::SubjectDm | Target::UserDm { .. } => {
                let Some(user) = delivery.recipient.as_deref() else {
                    return Err(DeliveryError::recipient_unknown(
                        "no Slack user id for the recipient: register the Slack identity resolver for this destination or map the person by hand, then replay",
                    ));
                };
                let id = self
                    .dm_channel(token, user)
                    .await
                    .map_err(|e| e.to_delivery_error())?;
                Ok((id, false))
            }
            other => Err(DeliveryError::permanent(format!(
                "Slack cannot deliver to {}: route it to a channel or a DM",
                other.rate_key(None)
            ))),
        }
    }
}

fn looks_like_id(name: &str) -> bool {
    name.len() >= 9
        && matches!(name.as_bytes().first(), Some(b'C' | b'G' | b'D'))
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[async_trait]
impl Destination for SlackDestination {
    fn name(&self) -> &str {
        self.config.destination_name()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dm: true,
            channel: true,
            threads: false,
            max_text: Some(MAX_TEXT_CHARS),
            format: MessageFormat::SlackMrkdwn,
            global_limits: vec![self.config.per_workspace_limit()],
            target_limits: vec![self.config.per_channel_limit()],
        }
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<Receipt, DeliveryError> {
        if delivery.message.text.trim().is_empty() && delivery.message.title.is_none() {
            return Err(DeliveryError::permanent(
                "the route's template rendered an empty message: fix the template, then replay",
            ));
        }
        let token = self
            .token
            .get(&self.client)
            .await
            .map_err(|e| e.to_delivery_error())?;
        let (channel, by_name) = self.resolve_channel(&token, delivery).await?;
        let laid_out = SlackMessage::from_message(&delivery.message);
        let mut post = PostMessage {
            channel,
            text: laid_out.text,
            blocks: Some(laid_out.blocks),
        };
        let mut result = self.client.post_message(&token, &post).await;
        if let Err(e) = &result {
            // Blocks Slack will not take: fall back to the plain text, which it
            // accepts up to 40,000 characters, rather than losing the message.
            if matches!(
                e.code(),
                Some("invalid_blocks" | "msg_blocks_too_long" | "too_many_blocks")
            ) {
                post.blocks = None;
                result = self.client.post_message(&token, &post).await;
            }
        }
        match result {
            Ok(posted) => Ok(Receipt {
                remote_id: Some(posted.ts).filter(|s| !s.is_empty()),
                location: Some(if posted.channel.is_empty() {
                    post.channel
                } else {
                    posted.channel
                }),
            }),
            Err(e) => {
                if by_name && e.code() == Some("channel_not_found") {
                    self.forget_channel_name(&post.channel);
                }
                if matches!(e.class(), FailureClass::Disconnected) {
                    tracing::warn!(destination = self.name(), error = %e, "Slack disconnected");
                }
                Err(e.to_delivery_error())
            }
        }
    }
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
    fn title_becomes_a_bold_first_section() {
        let mut m = msg("body");
        m.title = Some("Funded".to_owned());
        let s = SlackMessage::from_message(&m);
        assert_eq!(s.blocks[0], section("*Funded*"));
        assert_eq!(s.text, "Funded\n\nbody");
    }
}
