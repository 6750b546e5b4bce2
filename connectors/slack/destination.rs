//! `SlackDestination`: `chat.postMessage` with each delivery's tenant connection, to channels (by id, or by name resolved once per connection via `conversations.list`) and DMs (via `conversations.open`), with Block Kit layout within Slack's limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::api::{PostMessage, SlackClient};
use super::config::{PLATFORM, SlackConfig};
use super::connection::{SlackConnectionData, list_workspaces};
use super::errors::{FailureClass, SlackApiError};
use super::token::{BotToken, TokenRotation, stored_token};
use crate::Result;
use crate::destination::{Capabilities, Delivery, DeliveryError, Destination, Receipt};
use crate::message::{Message, MessageFormat, Target};
use crate::tenant::Connection;

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

#[derive(Default)]
struct ChannelCache {
    by_name: HashMap<String, String>,
    listed_at: Option<Instant>,
}

/// The key caches are kept under: the connection's key, or the fixed token's.
fn cache_key(connection: Option<&Connection>) -> String {
    connection.map_or_else(|| FIXED_KEY.to_owned(), |c| c.key.to_string())
}
const FIXED_KEY: &str = "slack:(fixed token)";

/// The credentials of one delivery.
struct Credentials {
    token: SecretString,
    connection: Option<Arc<Connection>>,
    /// The workspaces list calls name with `team_id` (org-wide installs).
    teams: Vec<Option<String>>,
}

/// The Slack [`Destination`]: posts with `chat.postMessage`, with each
/// delivery's tenant connection's bot token.
///
/// * [`Destination::platform`] is `slack`: the engine hands each delivery its
///   tenant's Slack connection ([`Delivery::connection`]), whose bot token
///   is used; a tenant without one is parked "not connected" by the engine.
///   Built with [`SlackDestination::new`] and a fixed [`BotToken`], it also
///   serves the default tenant without a stored connection.
/// * Channel targets by id go straight to `chat.postMessage`; by name they are
///   resolved once per connection through `conversations.list` (all pages;
///   for an org-wide install in each of its workspaces, with `team_id`) and
///   cached per connection.
/// * DM targets use the Slack user id the engine's identity resolver matched
///   ([`Delivery::recipient`]); the DM channel is opened once per connection
///   with `conversations.open` and cached.
/// * Every Slack failure is classified by [`super::classify`]; a `Disconnected`
///   answer parks that tenant's Slack deliveries only, until it reconnects.
///   With [`TokenRotation`], tokens are refreshed before they expire, and a
///   `token_expired` answer refreshes and retries once.
pub struct SlackDestination {
    config: SlackConfig,
    client: SlackClient,
    fixed: Option<BotToken>,
    rotation: Option<Arc<TokenRotation>>,
    channels: Mutex<HashMap<String, Arc<tokio::sync::Mutex<ChannelCache>>>>,
    dms: Mutex<HashMap<(String, String), String>>,
    teams: tokio::sync::Mutex<HashMap<String, Vec<Option<String>>>>,
}

impl std::fmt::Debug for SlackDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackDestination")
            .field("name", &self.config.destination_name())
            .field("base_url", &self.client.base_url())
            .field("fixed_token", &self.fixed)
            .field("rotation", &self.rotation.is_some())
            .finish_non_exhaustive()
    }
}

impl SlackDestination {
    /// A destination posting with one fixed `token` for the default tenant
    /// (single-workspace hosts), and with each other tenant's connection.
    pub fn new(config: SlackConfig, token: BotToken) -> Result<Self> {
        let client = SlackClient::new(&config)?;
        Ok(Self::with_client(config, client, token))
    }

    /// Like [`SlackDestination::new`], sharing an existing client.
    pub fn with_client(config: SlackConfig, client: SlackClient, token: BotToken) -> Self {
        let mut d = Self::for_connections_with_client(config, client);
        d.fixed = Some(token);
        d
    }

    /// A multi-tenant destination: every delivery uses its tenant's stored
    /// Slack connection; there is no fixed token.
    pub fn for_connections(config: SlackConfig) -> Result<Self> {
        let client = SlackClient::new(&config)?;
        Ok(Self::for_connections_with_client(config, client))
    }

    /// Like [`SlackDestination::for_connections`], sharing a client.
    pub fn for_connections_with_client(config: SlackConfig, client: SlackClient) -> Self {
        SlackDestination {
            config,
            client,
            fixed: None,
            rotation: None,
            channels: Mutex::new(HashMap::new()),
            dms: Mutex::new(HashMap::new()),
            teams: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Refreshes rotating connection tokens (see [`TokenRotation`]).
    #[must_use]
    pub fn with_rotation(mut self, rotation: Arc<TokenRotation>) -> Self {
        self.rotation = Some(rotation);
        self
    }

    /// The client (to share with the identity resolver and inbound handlers).
    pub fn client(&self) -> &SlackClient {
        &self.client
    }

    /// The fixed token, if built with one.
    pub fn token(&self) -> Option<&BotToken> {
        self.fixed.as_ref()
    }

    /// The token a delivery with `connection` would use now (refreshed first
    /// if it is about to expire).
    pub async fn token_for(
        &self,
        connection: Option<&Connection>,
    ) -> Result<SecretString, SlackApiError> {
        match (connection, &self.rotation, &self.fixed) {
            (Some(c), Some(r), _) => r.token(c).await,
            (Some(c), None, _) => stored_token(c),
            (None, _, Some(t)) => Ok(t.secret().clone()),
            (None, _, None) => Err(SlackApiError::new(
                FailureClass::Disconnected,
                "connection",
                None,
                "this tenant has no Slack connection: install the Slack app; queued messages are kept and sent after connecting",
            )),
        }
    }

    async fn credentials(&self, delivery: &Delivery) -> Result<Credentials, SlackApiError> {
        let connection = delivery.connection.clone();
        let token = self.token_for(connection.as_deref()).await?;
        let teams = match connection.as_deref() {
            Some(c) => self.list_teams(c, &token).await?,
            None => vec![None],
        };
        Ok(Credentials {
            token,
            connection,
            teams,
        })
    }

    /// The workspaces list calls go to (see [`list_workspaces`]), cached per
    /// org-wide connection.
    async fn list_teams(
        &self,
        connection: &Connection,
        token: &SecretString,
    ) -> Result<Vec<Option<String>>, SlackApiError> {
        if !SlackConnectionData::from_connection(connection).is_enterprise_install {
            return Ok(vec![None]);
        }
        let key = connection.key.to_string();
        let mut teams = self.teams.lock().await;
        if let Some(t) = teams.get(&key) {
            return Ok(t.clone());
        }
        let all = list_workspaces(&self.client, connection, token).await?;
        teams.insert(key, all.clone());
        Ok(all)
    }

    /// The channel id for `name` (without `#`) in the workspace of
    /// `connection` (the fixed token's when `None`), listing channels when it
    /// is not cached.
    pub async fn channel_id(
        &self,
        connection: Option<&Connection>,
        name: &str,
    ) -> Result<Option<String>, SlackApiError> {
        let token = self.token_for(connection).await?;
        let teams = match connection {
            Some(c) => self.list_teams(c, &token).await?,
            None => vec![None],
        };
        let creds = Credentials {
            token,
            connection: connection.map(|c| Arc::new(c.clone())),
            teams,
        };
        self.channel_by_name(&creds, name).await
    }

    fn channel_cache(&self, key: &str) -> Arc<tokio::sync::Mutex<ChannelCache>> {
        let mut all = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(key.to_owned()).or_default().clone()
    }

    async fn channel_by_name(
        &self,
        creds: &Credentials,
        name: &str,
    ) -> Result<Option<String>, SlackApiError> {
        let key = name.trim().trim_start_matches('#').to_lowercase();
        let cache = self.channel_cache(&cache_key(creds.connection.as_deref()));
        let mut cache = cache.lock().await;
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
        for team in &creds.teams {
            let mut cursor: Option<String> = None;
            loop {
                let page = self
                    .client
                    .conversations_list(
                        &creds.token,
                        team.as_deref(),
                        cursor.as_deref(),
                        CHANNEL_PAGE,
                    )
                    .await?;
                for c in page.items {
                    if let Some(n) = c.name {
                        by_name.entry(n.to_lowercase()).or_insert(c.id);
                    }
                }
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        cache.by_name = by_name;
        cache.listed_at = Some(Instant::now());
        Ok(cache.by_name.get(&key).cloned())
    }

    fn forget_channel_name(&self, connection: Option<&Connection>, id: &str) {
        let cache = self.channel_cache(&cache_key(connection));
        if let Ok(mut cache) = cache.try_lock() {
            cache.by_name.retain(|_, v| v != id);
        }
    }

    async fn dm_channel(&self, creds: &Credentials, user: &str) -> Result<String, SlackApiError> {
        let key = (cache_key(creds.connection.as_deref()), user.to_owned());
        if let Some(id) = self.dms.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(id);
        }
        let id = self.client.conversations_open(&creds.token, user).await?;
        if let Ok(mut m) = self.dms.lock() {
            m.insert(key, id.clone());
        }
        Ok(id)
    }

    async fn resolve_channel(
        &self,
        creds: &Credentials,
        delivery: &Delivery,
    ) -> Result<(String, bool), SlackApiError> {
        match &delivery.target {
            Target::ChannelId { id } => Ok((id.clone(), false)),
            Target::ChannelName { name } => match self.channel_by_name(creds, name).await? {
                Some(id) => Ok((id, true)),
                None if looks_like_id(name) => Ok((name.clone(), false)),
                None => Err(SlackApiError::new(
                    FailureClass::Permanent,
                    "conversations.list",
                    None,
                    format!(
                        "no Slack channel named #{name} is visible to the app: check the name in the route; for a private channel invite the bot first, then replay"
                    ),
                )),
            },
            Target::SubjectDm | Target::UserDm { .. } => {
                let Some(user) = delivery.recipient.as_deref() else {
                    return Err(SlackApiError::new(
                        FailureClass::RecipientUnknown,
                        "conversations.open",
                        None,
                        "no Slack user id for the recipient: register the Slack identity resolver for this destination or map the person by hand, then replay",
                    ));
                };
                Ok((self.dm_channel(creds, user).await?, false))
            }
            other => Err(SlackApiError::new(
                FailureClass::Permanent,
                "chat.postMessage",
                None,
                format!(
                    "Slack cannot deliver to {}: route it to a channel or a DM",
                    other.rate_key(None)
                ),
            )),
        }
    }

    /// One attempt with the credentials given.
    async fn attempt(
        &self,
        creds: &Credentials,
        delivery: &Delivery,
    ) -> Result<Receipt, SlackApiError> {
        let (channel, by_name) = self.resolve_channel(creds, delivery).await?;
        let laid_out = SlackMessage::from_message(&delivery.message);
        let mut post = PostMessage {
            channel,
            text: laid_out.text,
            blocks: Some(laid_out.blocks),
        };
        let mut result = self.client.post_message(&creds.token, &post).await;
        if let Err(e) = &result {
            // Blocks Slack will not take: fall back to the plain text, which it
            // accepts up to 40,000 characters, rather than losing the message.
            if matches!(
                e.code(),
                Some("invalid_blocks" | "msg_blocks_too_long" | "too_many_blocks")
            ) {
                post.blocks = None;
                result = self.client.post_message(&creds.token, &post).await;
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
                    self.forget_channel_name(creds.connection.as_deref(), &post.channel);
                }
                Err(e)
            }
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

    fn platform(&self) -> Option<&str> {
        Some(PLATFORM)
    }

    fn has_fixed_credentials(&self) -> bool {
        self.fixed.is_some()
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<Receipt, DeliveryError> {
        if delivery.message.text.trim().is_empty() && delivery.message.title.is_none() {
            return Err(DeliveryError::permanent(
                "the route's template rendered an empty message: fix the template, then replay",
            ));
        }
        let mut creds = self
            .credentials(delivery)
            .await
            .map_err(|e| e.to_delivery_error())?;
        let mut result = self.attempt(&creds, delivery).await;
        if let (Err(e), Some(rotation), Some(connection)) =
            (&result, &self.rotation, creds.connection.clone())
        {
            if e.code() == Some("token_expired") {
                // Refresh (or pick up another instance's refresh) and retry once.
                match rotation.refresh(&connection).await {
                    Ok(fresh) => {
                        creds.token = stored_token(&fresh).map_err(|e| e.to_delivery_error())?;
                        creds.connection = Some(Arc::new(fresh));
                        result = self.attempt(&creds, delivery).await;
                    }
                    Err(refresh_error) => result = Err(refresh_error),
                }
            }
        }
        result.map_err(|e| {
            if e.is_disconnected() {
                tracing::warn!(
                    destination = self.name(),
                    tenant = %delivery.tenant,
                    connection = %cache_key(creds.connection.as_deref()),
                    error = %e,
                    "Slack disconnected"
                );
            }
            e.to_delivery_error()
        })
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
