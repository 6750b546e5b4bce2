//! Inbound Slack requests for every workspace, framework-agnostic: each request is verified, then authorized to its workspace's connection (tenant and token); slash commands, shortcuts and the capture modal, the Events API, and (feature `axum`) ready-made routes.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::api::SlackClient;
use super::config::SlackConfig;
use super::token::{BotToken, TokenRotation};
use crate::engine::Switchboard;
use crate::inbound::{
    DEFAULT_BODY_LIMIT, InboundRequest, InboundResponse, check_body_size, error_response, header,
    unauthorized,
};
use crate::store::Store;
use crate::{Error, ErrorKind, Result};

mod events;
mod handlers;
mod interactivity;
mod payloads;
#[cfg(feature = "axum")]
mod router;
mod socket;
mod verify;

pub use events::{EventCallback, EventsRequest, SlackEvent};
pub use interactivity::{
    BlockAction, OptionsRequest, SlackOption, ViewEventKind, ViewInteraction, ViewResponse,
    options_json,
};
pub use payloads::{
    ChannelRef, ChannelType, CommandReply, ElementState, EnterpriseRef, Interaction,
    InteractionUser, MessageShortcut, Shortcut, ShortcutMessage, SlashCommand, TeamRef, View,
    ViewState, ViewSubmission, Visibility, WorkspaceRef,
};
#[cfg(feature = "axum")]
pub use router::router;
pub use socket::{
    DisconnectReason, EnvelopeKind, MAX_SOCKET_CONNECTIONS, SocketEnvelope, SocketMessage,
    SocketMode, SocketModeBuilder, SocketModeHandle, SocketModeStats,
};
pub use verify::verify_signature;

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
type CommandFuture = Pin<Box<dyn Future<Output = Result<CommandReply>> + Send>>;
type CommandHandler = Arc<dyn Fn(SlashCommand) -> CommandFuture + Send + Sync>;
type EventHook = Arc<dyn Fn(EventCallback) + Send + Sync>;
type EventFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;
type EventHandler = Arc<dyn Fn(SlackEventContext) -> EventFuture + Send + Sync>;

/// The kind of events published for Events API events: `slack.` + the
/// event's type (e.g. `slack.app_mention`, `slack.team_join`).
pub const EVENT_KIND_PREFIX: &str = "slack.";
/// The id of published Events API events: `slack:` + Slack's `event_id`.
pub const EVENT_ID_PREFIX: &str = "slack:";

/// What a typed Events API handler ([`SlackInboundBuilder::on`]) receives.
#[derive(Debug, Clone)]
pub struct SlackEventContext {
    /// The tenant whose workspace sent it.
    pub tenant: crate::tenant::TenantId,
    /// Its Slack connection (`None` for a fixed-token host).
    pub connection: Option<Arc<crate::tenant::Connection>>,
    /// The inner event as Slack sent it (`type`, `user`, `channel`, …).
    pub event: serde_json::Value,
    /// The envelope.
    pub callback: EventCallback,
}

/// Slack's `app_rate_limited` notice for one workspace: its events are
/// being dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppRateLimit {
    /// The workspace.
    pub team_id: String,
    /// Its tenant, when connected.
    pub tenant: Option<crate::tenant::TenantId>,
    /// The minute the limiting began.
    pub since: chrono::DateTime<Utc>,
    /// The app.
    pub api_app_id: Option<String>,
}
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

/// Slack's answer to a request from a workspace that has no connection.
pub const NOT_INSTALLED_TEXT: &str = "This Slack workspace is not connected yet: ask an admin to install the app from the product's settings page.";

struct Inner {
    signing_secret: SecretString,
    body_limit: usize,
    commands: HashMap<String, CommandHandler>,
    capture_commands: HashSet<String>,
    capture_shortcuts: HashSet<String>,
    client: SlackClient,
    token: Option<BotToken>,
    rotation: Option<Arc<TokenRotation>>,
    switchboard: Option<Switchboard>,
    store: Option<Arc<dyn Store>>,
    destination: String,
    deadline: Duration,
    clock: Clock,
    on_event: Option<EventHook>,
    event_handlers: HashMap<String, EventHandler>,
    actions: HashMap<String, interactivity::ActionHandler>,
    views: HashMap<String, interactivity::ViewHandler>,
    options: HashMap<String, interactivity::OptionsHandler>,
    rate_limits: std::sync::Mutex<HashMap<String, AppRateLimit>>,
}

/// Framework-agnostic handlers for Slack's requests: each takes an
/// [`InboundRequest`] (the raw body plus headers) and returns an
/// [`InboundResponse`].
///
/// Every handler checks the body size and verifies the signature
/// ([`verify_signature`]) before it parses anything; a failure is a bare `401`.
///
/// One `SlackInbound` serves every workspace the app is installed in. Each
/// request is authorized as Bolt does: its team id (or, for an org-wide
/// install, its enterprise id) selects the stored Slack connection, which
/// gives the tenant and the bot token used for `views.open`; slash command
/// handlers see the tenant in [`SlashCommand::tenant`], captured insights are
/// published for that tenant, and `app_uninstalled` / `tokens_revoked`
/// disconnect that connection only ([`Switchboard::disconnect_connection`]).
/// A workspace without a connection is answered with [`NOT_INSTALLED_TEXT`]
/// (for a single-workspace host with a fixed [`BotToken`], or one without a
/// store that only answers commands, requests without a connection are the
/// default tenant's instead).
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
    rotation: Option<Arc<TokenRotation>>,
    switchboard: Option<Switchboard>,
    store: Option<Arc<dyn Store>>,
    deadline: Duration,
    clock: Clock,
    on_event: Option<EventHook>,
    event_handlers: HashMap<String, EventHandler>,
    actions: HashMap<String, interactivity::ActionHandler>,
    views: HashMap<String, interactivity::ViewHandler>,
    options: HashMap<String, interactivity::OptionsHandler>,
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
    /// A fixed bot token for a single-workspace host: requests from a
    /// workspace without a stored connection are then the default tenant's,
    /// and `views.open` uses this token for them.
    pub fn token(mut self, token: BotToken) -> Self {
        self.token = Some(token);
        self
    }
    /// Refreshes rotating connection tokens before `views.open` (see [`TokenRotation`]).
    pub fn rotation(mut self, rotation: Arc<TokenRotation>) -> Self {
        self.rotation = Some(rotation);
        self
    }
    /// Publishes captured insights into this switchboard and disconnects a
    /// workspace's connection when the app is uninstalled there; its store
    /// (connections, links, event de-duplication) is used unless
    /// [`SlackInboundBuilder::store`] is given.
    pub fn switchboard(mut self, switchboard: Switchboard) -> Self {
        self.switchboard = Some(switchboard);
        self
    }
    /// The store for connections, event de-duplication and identity links.
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
    /// Handles Events API events of `event_type` (e.g. `app_mention`,
    /// `message`, `app_home_opened`, `team_join`, `user_change`), once per
    /// event id, in a background task after the event was published to the
    /// outbox and acknowledged.
    pub fn on<F, Fut>(mut self, event_type: &str, handler: F) -> Self
    where
        F: Fn(SlackEventContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let handler: EventHandler = Arc::new(move |cx| Box::pin(handler(cx)));
        self.event_handlers.insert(event_type.to_owned(), handler);
        self
    }
    /// Handles `block_actions` for elements with `action_id` (Bolt's
    /// `app.action`): the request is acknowledged at once (Slack waits 3 s)
    /// and `handler` runs in the background with the typed [`BlockAction`].
    pub fn action<F, Fut>(mut self, action_id: &str, handler: F) -> Self
    where
        F: Fn(BlockAction) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let handler: interactivity::ActionHandler = Arc::new(move |a| Box::pin(handler(a)));
        self.actions.insert(action_id.to_owned(), handler);
        self
    }
    /// Handles `view_submission` and `view_closed` for views opened with
    /// `callback_id` (Bolt's `app.view`). A submission is answered with the
    /// handler's [`ViewResponse`] (`update`, `push`, `clear`, `errors`, or an
    /// empty 200 to close) within the command deadline; for `view_closed`
    /// the answer is ignored. The capture modal's callback id stays the
    /// capture's.
    pub fn view<F, Fut>(mut self, callback_id: &str, handler: F) -> Self
    where
        F: Fn(ViewInteraction) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ViewResponse>> + Send + 'static,
    {
        let handler: interactivity::ViewHandler = Arc::new(move |v| Box::pin(handler(v)));
        self.views.insert(callback_id.to_owned(), handler);
        self
    }
    /// Answers `block_suggestion` for external selects with `action_id`
    /// (Bolt's `app.options`) with `{"options": [...]}`; no handler, a
    /// failure or a late answer gives an empty list.
    pub fn options<F, Fut>(mut self, action_id: &str, handler: F) -> Self
    where
        F: Fn(OptionsRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<SlackOption>>> + Send + 'static,
    {
        let handler: interactivity::OptionsHandler = Arc::new(move |o| Box::pin(handler(o)));
        self.options.insert(action_id.to_owned(), handler);
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
        if captures && self.switchboard.is_none() {
            return Err(Error::new(
                ErrorKind::Config,
                "capturing insights needs a switchboard (to publish, and its store for the workspaces' connections)",
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
                rotation: self.rotation,
                switchboard: self.switchboard,
                store,
                destination: self.config.destination_name().to_owned(),
                deadline: self.deadline,
                clock: self.clock,
                on_event: self.on_event,
                event_handlers: self.event_handlers,
                actions: self.actions,
                views: self.views,
                options: self.options,
                rate_limits: std::sync::Mutex::new(HashMap::new()),
            }),
        })
    }
}

fn system_now() -> i64 {
    Utc::now().timestamp()
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
            rotation: None,
            switchboard: None,
            store: None,
            deadline: DEFAULT_DEADLINE,
            clock: Arc::new(system_now),
            on_event: None,
            event_handlers: HashMap::new(),
            actions: HashMap::new(),
            views: HashMap::new(),
            options: HashMap::new(),
        }
    }

    /// The workspaces Slack currently rate-limits the Events API for (from
    /// `app_rate_limited`), most recent notice per workspace.
    pub fn app_rate_limits(&self) -> Vec<AppRateLimit> {
        let mut all: Vec<AppRateLimit> = self
            .inner
            .rate_limits
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by(|a, b| a.team_id.cmp(&b.team_id));
        all
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
            return self.events(body, header(request, RETRY_NUM_HEADER)).await;
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
            Ok(body) => self.events(body, header(request, RETRY_NUM_HEADER)).await,
            Err(e) => error_response(&e),
        }
    }
}
