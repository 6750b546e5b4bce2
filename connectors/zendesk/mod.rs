//! The Zendesk connector: API client (users by phone, agents, groups, tickets, uploads), webhook verification, a ticket destination and the calls → tickets flow.
#![doc = include_str!("docs.md")]

mod api;
mod call_types;
mod calls;
mod config;
mod destination;
mod errors;
mod identity;
mod intake;
mod models;
mod recording;
mod webhook;

pub use api::{MAX_UPLOAD_BYTES, PAGE_SIZE, UPLOAD_TOKEN_TTL, ZendeskClient};
pub use call_types::{
    AnswerOutcome, CallConfig, CallStats, CallerLookup, DisplayOutcome, Recording, RequesterKind,
    RingInfo, RingOutcome, SetupReport, UnknownCallerStrategy,
};
pub use calls::{CallFlow, call_external_id};
pub use config::{
    DEFAULT_REQUESTS_PER_MINUTE, EMAIL_FIELD, PLATFORM, TICKET_UPDATE_WINDOW,
    TICKET_UPDATES_PER_WINDOW, ZendeskAccount, ZendeskAuth, ZendeskConfig, base_url_for,
    validate_subdomain,
};
pub use destination::{CALL_EVENT_PREFIX, CallStep, ZendeskDestination};
pub use errors::{FailureClass, ZendeskApiError, classify};
pub use identity::{UsersPager, ZendeskIdentity};
pub use intake::ZendeskWebhookSource;
#[cfg(feature = "axum")]
pub use intake::router;
pub use models::{
    Attachment, Comment, Group, Identity, NewTicket, Page, RequesterRef, Ticket, TicketUpdate,
    Upload, User,
};
pub use webhook::{
    SIGNATURE_HEADER, SIGNATURE_TIMESTAMP_HEADER, WEBHOOK_EVENT_KIND, WebhookPayload,
    ZendeskWebhook, parse_webhook, verify_webhook,
};
