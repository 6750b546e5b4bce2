//! The email connector: notifications over SMTP (or `.eml` files), and forwarded mail captured into a person's inbox through a personal, resettable address.
#![doc = include_str!("docs.md")]

mod addresses;
mod addresses_store;
mod auth;
#[cfg(feature = "s3")]
mod bucket;
mod capture;
mod config;
mod file;
mod http;
#[cfg(feature = "email-imap")]
mod imap;
mod message;
mod parse;
#[cfg(any(feature = "s3", feature = "email-imap"))]
mod progress;
mod smtp;

pub use addresses::{
    AddressRecord, AddressRegistry, AddressRejection, AddressStyle, ForwardingAddresses,
    MemoryAddressRegistry, TOKEN_BYTES,
};
pub use addresses_store::{
    FORWARD_PLATFORM, StoreAddressRegistry, TOKEN_INDEX_PLATFORM, TOKEN_INDEX_TENANT,
};
pub use auth::{Authentic, Authenticator, DnsRecords, SmtpSession, trusted_dmarc_pass};
#[cfg(feature = "s3")]
pub use bucket::{BucketPoll, EmailBucketSource, PROCESSED_FOLDER, REJECTED_FOLDER};
pub use capture::{
    CaptureOutcome, EmailCapture, INSIGHT_EVENT_KIND, MemoryDirectory, PersonDirectory, Rejection,
    SOURCE,
};
pub use config::{
    IMPLICIT_TLS_PORT, PLATFORM, STARTTLS_PORT, SmtpAccount, SmtpOptions, SmtpSecurity,
};
pub use file::EmlFileDestination;
#[cfg(feature = "axum")]
pub use http::router;
pub use http::{
    AUTHORIZATION_HEADER, EmailHttpSource, HttpAuth, RECIPIENTS_HEADER, SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
};
#[cfg(feature = "email-imap")]
pub use imap::{
    AfterProcessing, EmailImapSource, IMAP_PORT, IMAPS_PORT, ImapConfig, ImapPoll, ImapSecurity,
};
pub use message::{DEFAULT_SUBJECT, UnsubscribeFn, bodies, message_id};
pub use parse::{
    EmailAddress, ForwardedMessage, InboundEmail, MAX_FORWARD_DEPTH, MAX_MESSAGE_BYTES,
};
pub use smtp::{SmtpDestination, classify, classify_reply};
