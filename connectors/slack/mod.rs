//! The Slack connector: DMs and channel posts per tenant workspace, user sync by email, slash commands, shortcuts, modals and the OAuth install per tenant.
#![doc = include_str!("docs.md")]

mod api;
mod block_template;
mod blocks;
mod channels;
pub(crate) mod config;
pub(crate) mod connection;
mod destination;
mod errors;
mod identity;
mod inbound;
mod layout;
mod lifecycle;
mod oauth;
mod threads;
pub(crate) mod token;

pub use api::{
    AuthIdentity, Conversation, OAuthAccess, Page, PostMessage, PostedMessage, SlackClient,
    SlackProfile, SlackUser,
};
pub use block_template::{BlockTemplate, parse_blocks};
pub use blocks::{
    Block, Button, ButtonStyle, MAX_BUTTON_TEXT_CHARS, MAX_HEADER_CHARS, Text, blocks_json,
};
pub use config::{
    CHANNEL_NAME_TTL, DEFAULT_AUTHORIZE_URL, DEFAULT_BASE_URL, PLATFORM, SlackConfig,
    TIER2_INTERVAL, TIER3_INTERVAL,
};
pub use connection::{
    SlackConnectionData, authorize, connection_from_access, connection_from_token, connection_key,
    list_workspaces,
};
pub use destination::SlackDestination;
pub use errors::{FailureClass, SlackApiError, classify};
pub use identity::{SlackIdentity, UsersListPager};
pub use inbound::{
    AppRateLimit, BlockAction, CAPTURE_CALLBACK_ID, CAPTURE_SUBJECT_BLOCK, CAPTURE_TEXT_BLOCK,
    ChannelRef, ChannelType, CommandReply, DisconnectReason, EVENT_ID_PREFIX, EVENT_KIND_PREFIX,
    ElementState, EnterpriseRef, EnvelopeKind, EventCallback, EventsRequest, INSIGHT_EVENT_KIND,
    Interaction, InteractionUser, MAX_SOCKET_CONNECTIONS, MessageShortcut, NOT_INSTALLED_TEXT,
    OptionsRequest, RETRY_NUM_HEADER, SIGNATURE_HEADER, Shortcut, ShortcutMessage, SlackEvent,
    SlackEventContext, SlackInbound, SlackInboundBuilder, SlackOption, SlashCommand,
    SocketEnvelope, SocketMessage, SocketMode, SocketModeBuilder, SocketModeHandle,
    SocketModeStats, TIMESTAMP_HEADER, TeamRef, View, ViewEventKind, ViewInteraction, ViewResponse,
    ViewState, ViewSubmission, Visibility, WorkspaceRef, options_json, verify_signature,
};
pub use layout::{MAX_BLOCKS, MAX_SECTION_CHARS, MAX_TEXT_CHARS, SlackMessage};
pub use lifecycle::{SlackReceipt, home_view};
pub use oauth::{
    DEFAULT_BOT_SCOPES, InstallStart, STATE_COOKIE, STATE_TTL, SlackOAuth, SlackOAuthBuilder,
    TENANT_HEADER, state_cookie,
};
pub use threads::{THREAD_LINK_PLATFORM, ThreadFollowUps};
pub use token::{BotToken, REFRESH_MARGIN, TokenRotation};

#[cfg(feature = "axum")]
pub use inbound::router;
