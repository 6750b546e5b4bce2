//! The Slack connector: DMs and channel posts per tenant workspace, user sync by email, slash commands, shortcuts, modals and the OAuth install per tenant.
#![doc = include_str!("docs.md")]

mod api;
pub(crate) mod config;
pub(crate) mod connection;
mod destination;
mod errors;
mod identity;
mod inbound;
mod oauth;
pub(crate) mod token;

pub use api::{
    AuthIdentity, Conversation, OAuthAccess, Page, PostMessage, PostedMessage, SlackClient,
    SlackProfile, SlackUser,
};
pub use config::{DEFAULT_AUTHORIZE_URL, DEFAULT_BASE_URL, PLATFORM, SlackConfig};
pub use connection::{
    SlackConnectionData, authorize, connection_from_access, connection_from_token, connection_key,
    list_workspaces,
};
pub use destination::{
    MAX_BLOCKS, MAX_SECTION_CHARS, MAX_TEXT_CHARS, SlackDestination, SlackMessage,
};
pub use errors::{FailureClass, SlackApiError, classify};
pub use identity::{SlackIdentity, UsersListPager};
pub use inbound::{
    CAPTURE_CALLBACK_ID, CAPTURE_SUBJECT_BLOCK, CAPTURE_TEXT_BLOCK, ChannelRef, ChannelType,
    CommandReply, ElementState, EnterpriseRef, EventCallback, EventsRequest, INSIGHT_EVENT_KIND,
    Interaction, InteractionUser, MessageShortcut, NOT_INSTALLED_TEXT, RETRY_NUM_HEADER,
    SIGNATURE_HEADER, Shortcut, ShortcutMessage, SlackEvent, SlackInbound, SlackInboundBuilder,
    SlashCommand, TIMESTAMP_HEADER, TeamRef, View, ViewState, ViewSubmission, Visibility,
    WorkspaceRef, verify_signature,
};
pub use oauth::{
    DEFAULT_BOT_SCOPES, InstallStart, STATE_COOKIE, STATE_TTL, SlackOAuth, SlackOAuthBuilder,
    TENANT_HEADER, state_cookie,
};
pub use token::{BotToken, REFRESH_MARGIN, TokenRotation};

#[cfg(feature = "axum")]
pub use inbound::router;
