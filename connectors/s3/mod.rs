//! The S3 connector: scheduled CSV attribute import from S3-compatible storage or a local folder, with run history and success/failed folders.
#![doc = include_str!("docs.md")]

mod client;
mod config;
mod connection;
mod connector;
mod import;
mod reader;
mod report;
mod source;

pub use config::{
    AfterImport, AttributeColumn, Credentials, DEFAULT_ERROR_REPORT_FOLDER, RetryPolicy, S3Config,
};
pub use connection::{ACCESS_KEY_ID, S3_PLATFORM, S3Connection, SECRET_ACCESS_KEY, SESSION_TOKEN};
pub use connector::{Discovery, S3Connector};
pub use import::{FAILED_FOLDER, S3Import, S3RunDetails, SUCCESS_FOLDER};
pub use source::SourceUrl;

/// object_store's credential hook and its AWS types, for [`Credentials::provider`].
pub use object_store::CredentialProvider;
pub use object_store::aws::{AwsCredential, AwsCredentialProvider};
