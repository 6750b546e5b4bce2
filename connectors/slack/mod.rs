//! The Slack connector: DMs and channel posts, user sync by email, slash commands, shortcuts, modals and OAuth install.
#![doc = include_str!("docs.md")]

mod api;
mod config;
mod destination;
mod identity;
mod inbound;
mod oauth;

pub use api::{
    Conversation, FailureClass, OAuthAccess, Page, PostMessage, PostedMessage, SlackApiError,
    SlackClient, SlackProfile, SlackUser, classify,
};
pub use config::{DEFAULT_AUTHORIZE_URL, DEFAULT_BASE_URL, PLATFORM, SlackConfig};
pub use destination::{
    MAX_BLOCKS, MAX_SECTION_CHARS, MAX_TEXT_CHARS, SlackDestination, SlackMessage,
};
pub use identity::{SlackIdentity, UsersListPager};
pub use inbound::{
    CAPTURE_CALLBACK_ID, CAPTURE_SUBJECT_BLOCK, CAPTURE_TEXT_BLOCK, ChannelRef, ChannelType,
    CommandReply, ElementState, EventCallback, EventsRequest, INSIGHT_EVENT_KIND, Interaction,
    InteractionUser, MessageShortcut, RETRY_NUM_HEADER, SIGNATURE_HEADER, Shortcut,
    ShortcutMessage, SlackEvent, SlackInbound, SlackInboundBuilder, SlashCommand, TIMESTAMP_HEADER,
    TeamRef, View, ViewState, ViewSubmission, Visibility, verify_signature,
};
pub use oauth::{BotToken, DEFAULT_BOT_SCOPES, STATE_TTL, SlackOAuth, SlackOAuthBuilder};

#[cfg(feature = "axum")]
pub use inbound::router;
