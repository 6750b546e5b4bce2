#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "admin")]
pub mod admin;
pub mod attributes;
mod clock;
pub mod console;
pub mod destination;
pub mod engine;
mod error;
pub mod event;
pub mod identity;
pub mod inbound;
pub mod integration;
pub mod message;
pub mod schedule;
pub mod secret;
pub mod source;
pub mod store;
pub mod template;
pub mod tenant;

#[cfg(feature = "slack")]
#[path = "../connectors/slack/mod.rs"]
pub mod slack;

#[cfg(feature = "s3")]
#[path = "../connectors/s3/mod.rs"]
pub mod s3;

#[cfg(feature = "teams")]
#[path = "../connectors/teams/mod.rs"]
pub mod teams;

#[cfg(feature = "email")]
#[path = "../connectors/email/mod.rs"]
pub mod email;

#[cfg(feature = "zendesk")]
#[path = "../connectors/zendesk/mod.rs"]
pub mod zendesk;

pub use attributes::{AttributeRecord, AttributeStore, Attributes, Filter};
pub use console::ConsoleDestination;
pub use destination::{Capabilities, Delivery, DeliveryError, Destination, RateLimit, Receipt};
pub use engine::{PublishOutcome, Route, Switchboard};
pub use error::{Error, ErrorKind, Result};
pub use event::{Event, Person};
pub use identity::{IdentityResolver, Resolution, SyncReport};
pub use message::{Message, MessageFormat, Target};
pub use source::{Emitter, EventSource, Shutdown, ShutdownTrigger};
#[cfg(feature = "postgres")]
pub use store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{MemoryStore, Store};
pub use tenant::{Connection, ConnectionKey, ConnectionState, TenantId};
