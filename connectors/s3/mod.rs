//! The S3 connector: scheduled CSV attribute import from S3-compatible storage or a local folder, with run history and success/failed folders.
#![doc = include_str!("docs.md")]

mod client;
mod config;
mod connection;
mod import;
mod reader;

pub use config::{AfterImport, AttributeColumn, Credentials, RetryPolicy, S3Config, SourceUrl};
pub use connection::{ACCESS_KEY_ID, S3_PLATFORM, S3Connection, SECRET_ACCESS_KEY, SESSION_TOKEN};
pub use import::{Discovery, FAILED_FOLDER, S3Connector, S3Import, S3RunDetails, SUCCESS_FOLDER};
