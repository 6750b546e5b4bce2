//! `SlackDestination`: `chat.postMessage` with each delivery's tenant connection, to channels (by id, or by name resolved per connection via paced, resumable `conversations.list` pages) and DMs (via `conversations.open`, paced by its tier), with Block Kit layout within Slack's limits; plus message updates, deletes, ephemeral messages and threads by receipt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use secrecy::SecretString;

use super::api::{PostMessage, SlackClient};
use super::block_template::{BlockTemplate, BlockTemplates};
use super::channels::{ChannelDirectory, Listing, MethodPacer};
use super::config::{PLATFORM, SlackConfig};
use super::connection::{SlackConnectionData, list_workspaces};
use super::errors::{FailureClass, SlackApiError};
use super::layout::{MAX_TEXT_CHARS, SlackMessage};
use super::threads::ThreadFollowUps;
use super::token::{BotToken, TokenRotation, stored_token};
use crate::Result;
use crate::destination::{Capabilities, Delivery, DeliveryError, Destination, Receipt};
use crate::message::{MessageFormat, Target};
use crate::tenant::Connection;

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
    channels: ChannelDirectory,
    pacer: MethodPacer,
    dms: Mutex<HashMap<(String, String), String>>,
    teams: tokio::sync::Mutex<HashMap<String, Vec<Option<String>>>>,
    threads: Option<ThreadFollowUps>,
    block_templates: BlockTemplates,
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
            channels: ChannelDirectory::new(config.channel_cache_ttl(), config.tier2()),
            config,
            client,
            fixed: None,
            rotation: None,
            pacer: MethodPacer::default(),
            dms: Mutex::new(HashMap::new()),
            teams: tokio::sync::Mutex::new(HashMap::new()),
            threads: None,
            block_templates: BlockTemplates::new(),
        }
    }

    /// Refreshes rotating connection tokens (see [`TokenRotation`]).
    #[must_use]
    pub fn with_rotation(mut self, rotation: Arc<TokenRotation>) -> Self {
        self.rotation = Some(rotation);
        self
    }

    /// Posts follow-up events of the same key (e.g. every update of one
    /// redemption) as replies in the thread of the first message of that
    /// key, in each channel (see [`ThreadFollowUps`]).
    #[must_use]
    pub fn with_thread_follow_ups(mut self, threads: ThreadFollowUps) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Deliveries of the route named `route` are sent as the blocks
    /// `template` renders for their event (see [`BlockTemplate`]), with the
    /// route's rendered text as the notification fallback. A rendering that
    /// is not valid blocks is a permanent failure naming what is wrong.
    #[must_use]
    pub fn with_block_template(
        mut self,
        route: impl Into<String>,
        template: BlockTemplate,
    ) -> Self {
        self.block_templates
            .insert(route.into(), Arc::new(template));
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

    async fn channel_by_name(
        &self,
        creds: &Credentials,
        name: &str,
    ) -> Result<Option<String>, SlackApiError> {
        let listing = Listing {
            client: &self.client,
            token: &creds.token,
            teams: &creds.teams,
        };
        self.channels
            .resolve(&cache_key(creds.connection.as_deref()), name, &listing)
            .await
    }

    /// The DM channel (`D…`) with `user`: opened once per connection with
    /// `conversations.open` (Tier 3, paced per connection by
    /// [`SlackConfig::tier3_interval`]) and cached.
    async fn dm_channel(&self, creds: &Credentials, user: &str) -> Result<String, SlackApiError> {
        let connection_key = cache_key(creds.connection.as_deref());
        let key = (connection_key.clone(), user.to_owned());
        if let Some(id) = self.dms.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(id);
        }
        let pace_key = format!("conversations.open:{connection_key}");
        self.pacer.wait(&pace_key, self.config.tier3()).await;
        let id = match self.client.conversations_open(&creds.token, user).await {
            Ok(id) => id,
            Err(e) => {
                if let FailureClass::RateLimited {
                    retry_after: Some(after),
                } = e.class()
                {
                    self.pacer.back_off(&pace_key, after);
                }
                return Err(e);
            }
        };
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
        let laid_out = match self.block_templates.get(&delivery.route) {
            Some(template) => match template.render_event(delivery.event.clone()) {
                Ok(blocks) => SlackMessage::from_blocks(
                    SlackMessage::from_message(&delivery.message).text,
                    &blocks,
                ),
                Err(e) => {
                    return Err(SlackApiError::new(
                        FailureClass::Permanent,
                        "chat.postMessage",
                        None,
                        format!("{e}: fix the route's block template, then replay"),
                    ));
                }
            },
            None => SlackMessage::from_message(&delivery.message),
        };
        let mut post = PostMessage::new(channel, laid_out.text).blocks(laid_out.blocks);
        let thread = match &self.threads {
            Some(t) => t.key(self.config.destination_name(), &post.channel, delivery),
            None => None,
        };
        let mut parent = None;
        if let (Some(threads), Some(key)) = (&self.threads, &thread) {
            parent = threads.parent(delivery, key).await?;
            if let Some(ts) = &parent {
                post = post.in_thread(ts.clone(), threads.broadcast());
            }
        }
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
        if let (Err(e), true, Target::ChannelName { name }) = (&result, by_name, &delivery.target) {
            if e.code() == Some("channel_not_found") {
                // Renamed or recreated: list the names again and retry once
                // if the name now points elsewhere.
                let key = cache_key(creds.connection.as_deref());
                self.channels.invalidate(&key, name);
                if let Some(fresh) = self.channel_by_name(creds, name).await? {
                    if fresh != post.channel {
                        post.channel = fresh;
                        result = self.client.post_message(&creds.token, &post).await;
                    }
                }
            }
        }
        let posted = result?;
        if let (Some(threads), Some(key), None) = (&self.threads, &thread, &parent) {
            if !posted.ts.is_empty() {
                threads.remember(delivery, key, &posted.ts).await;
            }
        }
        Ok(Receipt {
            remote_id: Some(posted.ts).filter(|s| !s.is_empty()),
            location: Some(if posted.channel.is_empty() {
                post.channel
            } else {
                posted.channel
            }),
        })
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
            threads: true,
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
