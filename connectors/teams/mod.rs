//! The Microsoft Teams connector: proactive DMs and channel posts through the Bot Framework, Graph user sync, message actions and signed inbound requests.
#![doc = include_str!("docs.md")]

mod activity;
mod api;
mod auth;
mod card;
mod config;
mod destination;
mod identity;
mod inbound;
mod jwt;
mod pacing;
mod package;
mod webhook;
mod workflows;

pub use activity::{
    Activity, ChannelAccount, ConversationAccount, MAX_ACTIVITY_BYTES, html_to_text,
};
pub use api::{
    BotConnectorClient, ConversationReference, ConversationResource, FailureClass, Service,
    TeamsApiError, classify, conversations_url, error_code,
};
pub use auth::{TeamsCredentials, TokenProvider};
pub use card::{
    ADAPTIVE_CARD_CONTENT_TYPE, CARD_VERSION, MAX_SUMMARY_CHARS, MAX_TEXT_CHARS, TeamsMessage,
    escape_markdown,
};
pub use config::{
    BOT_FRAMEWORK_ISSUER, BOT_FRAMEWORK_SCOPE, BOT_FRAMEWORK_TENANT, DEFAULT_GRAPH_URL,
    DEFAULT_LOGIN_URL, DEFAULT_OPENID_METADATA_URL, DEFAULT_SERVICE_URL, GRAPH_SCOPE, PLATFORM,
    TeamsConfig,
};
pub use destination::{ConversationBook, TeamsDestination};
pub use identity::{GraphUser, GraphUsersPager, MAX_PAGE_SIZE, TeamsIdentity, USER_SELECT};
pub use inbound::{
    BotQuestion, CAPTURE_COMMAND_ID, CAPTURE_SUBJECT_INPUT, CAPTURE_TEXT_INPUT, INSIGHT_EVENT_KIND,
    ReferenceChange, TeamsInbound, TeamsInboundBuilder, apply_reference_change, capture_form,
};
pub use jwt::{BotAuthenticator, BotClaims, CLOCK_SKEW, KEYS_TTL, MIN_REFETCH};
pub use pacing::{ConversationWindows, DEFAULT_WINDOW_GUARD, EXACT_WINDOW_MAX};
pub use webhook::{outgoing_webhook_authorization, verify_outgoing_webhook};
pub use workflows::{
    WEBHOOK_SECRET_PREFIX, WORKFLOWS_PLATFORM, WorkflowsDestination, workflows_payload,
};

#[cfg(feature = "axum")]
pub use inbound::router;
pub use package::{
    AppPackage, COLOR_ICON_FILE, MANIFEST_FILE, MANIFEST_SCHEMA, MANIFEST_VERSION,
    OUTLINE_ICON_FILE,
};
