//! The email connector: notifications over SMTP (or `.eml` files), and forwarded mail captured into a person's inbox through a personal, resettable address.
#![doc = include_str!("docs.md")]

mod addresses;
mod auth;
mod capture;
mod config;
mod file;
mod message;
mod parse;
mod smtp;

pub use addresses::{
    AddressRecord, AddressRegistry, AddressRejection, AddressStyle, ForwardingAddresses,
    MemoryAddressRegistry, TOKEN_BYTES,
};
pub use auth::{Authentic, Authenticator, DnsRecords, SmtpSession, trusted_dmarc_pass};
pub use capture::{
    CaptureOutcome, EmailCapture, INSIGHT_EVENT_KIND, MemoryDirectory, PersonDirectory, Rejection,
    SOURCE,
};
pub use config::{
    IMPLICIT_TLS_PORT, PLATFORM, STARTTLS_PORT, SmtpAccount, SmtpOptions, SmtpSecurity,
};
pub use file::EmlFileDestination;
pub use message::{DEFAULT_SUBJECT, UnsubscribeFn, bodies, message_id};
pub use parse::{
    EmailAddress, ForwardedMessage, InboundEmail, MAX_FORWARD_DEPTH, MAX_MESSAGE_BYTES,
};
pub use smtp::{SmtpDestination, classify, classify_reply};
