//! [`S3Connector`]: credentials and connection options, "test connection and discover", and opening objects for reading.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::client::{Bucket, ClientSettings, Op};
use super::config::{AfterImport, Credentials, RetryPolicy, S3Config};
use super::connection::resolve as resolve_connection;
use super::import::S3Import;
use super::reader::{Capture, StreamReader, delimiter_hint, not_csv_reason, with_prefix};
use super::source::Location;
use crate::attributes::{ImportCollector, discover_csv_encoded, read_csv};
use crate::store::Store;
use crate::tenant::Connection;
use crate::{Error, ErrorKind, Result};

/// How many bytes of a discovered file are kept to check the header against the mapping.
const DISCOVERY_CAPTURE_BYTES: usize = 8 << 20;

/// Credentials and connection options shared by discovery and import jobs; the
/// per-integration settings live in [`S3Config`].
///
/// ```
/// use std::time::Duration;
/// use switchboard::s3::{Credentials, RetryPolicy, S3Connector};
/// let connector = S3Connector::new(Credentials::access_key("AKIDEXAMPLE", "secret"))
///     .timeout(Duration::from_secs(60))
///     .retry(RetryPolicy { max_retries: 3, ..RetryPolicy::default() });
/// # let _ = connector;
/// ```
#[derive(Debug, Clone)]
pub struct S3Connector {
    pub(super) client: ClientSettings,
    pub(super) batch_size: usize,
    pub(super) spool_dir: Option<PathBuf>,
}

impl S3Connector {
    /// The default number of records per store write.
    pub const DEFAULT_BATCH_SIZE: usize = ImportCollector::DEFAULT_BATCH_SIZE;

    /// A connector authenticating with `credentials`.
    ///
    /// Defaults: [`RetryPolicy::default`], a 5-minute timeout for metadata
    /// requests, no overall timeout for downloads but a 60-second idle timeout, a
    /// 10-second connect timeout, batches of 5,000 records and the system's
    /// temporary folder for staging downloads.
    pub fn new(credentials: Credentials) -> Self {
        S3Connector {
            client: ClientSettings {
                credentials,
                retry: RetryPolicy::default(),
                timeout: Duration::from_secs(300),
                connect_timeout: Duration::from_secs(10),
                read_idle_timeout: Duration::from_secs(60),
            },
            batch_size: Self::DEFAULT_BATCH_SIZE,
            spool_dir: None,
        }
    }

    /// A connector using the environment's standard AWS credential chain.
    pub fn from_env() -> Self {
        Self::new(Credentials::Environment)
    }

    /// Sets how S3 requests are retried.
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.client.retry = retry;
        self
    }

    /// Sets the timeout of one metadata request (HEAD, LIST, COPY, DELETE).
    /// Downloads have no overall timeout — a large file may take long — but see
    /// [`S3Connector::read_idle_timeout`].
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.client.timeout = timeout;
        self
    }

    /// Sets how long a download may go without receiving data before it fails
    /// (default 60 s); the run fails as temporary and the file stays in place.
    #[must_use]
    pub fn read_idle_timeout(mut self, timeout: Duration) -> Self {
        self.client.read_idle_timeout = timeout;
        self
    }

    /// Sets the connect timeout.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.client.connect_timeout = timeout;
        self
    }

    /// Records per store write (at least 1).
    #[must_use]
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// The folder where S3 objects are staged during a run (an unnamed temporary
    /// file, removed when the run ends; default: the system's temporary folder).
    /// It needs room for the largest file.
    #[must_use]
    pub fn spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }

    /// The import job of the integration `integration` — of every tenant that
    /// has one of that name — writing into `store`. Its settings are read from
    /// the tenant's integration configuration at every run, and its credentials
    /// from the tenant's S3 connection (see [`S3Import`]).
    pub fn job(&self, integration: impl Into<String>, store: Arc<dyn Store>) -> S3Import {
        S3Import {
            name: integration.into(),
            store,
            connector: self.clone(),
        }
    }

    /// "Test connection and discover": finds the file the next run would import
    /// (the oldest match) and returns its header and first `sample_rows` rows.
    ///
    /// When `config` names a user-id column, the header is checked against the
    /// mapping too. The error says what is wrong and how to fix it:
    /// [`ErrorKind::NotFound`] for a missing bucket, folder or key (or no file
    /// matching the glob), [`ErrorKind::Unauthorized`] for denied access (wrong
    /// secret, unknown key, missing permission), [`ErrorKind::InvalidInput`] for a
    /// file that is not CSV or lacks a mapped column, [`ErrorKind::Network`]
    /// (temporary) when S3 could not be reached after retries.
    ///
    /// This uses the connector's own credentials (the default tenant's); use
    /// [`S3Connector::discover_with`] for a tenant's connection.
    pub async fn discover(&self, config: &S3Config, sample_rows: usize) -> Result<Discovery> {
        self.discover_in(config, &self.client, sample_rows).await
    }

    /// [`S3Connector::discover`] with a tenant's S3 connection (see
    /// [`crate::s3::S3Connection`]): its credentials, and its region, endpoint
    /// and bucket where `config` leaves them unset.
    pub async fn discover_with(
        &self,
        config: &S3Config,
        connection: &Connection,
        sample_rows: usize,
    ) -> Result<Discovery> {
        let (config, client) = self.with_connection(config, connection)?;
        self.discover_in(&config, &client, sample_rows).await
    }

    /// The settings and client settings for reading with `connection`.
    pub(super) fn with_connection(
        &self,
        config: &S3Config,
        connection: &Connection,
    ) -> Result<(S3Config, ClientSettings)> {
        let resolved = resolve_connection(connection)?;
        let config = config.with_connection(&connection.key, &resolved)?;
        let mut client = self.client.clone();
        client.credentials = resolved.credentials;
        Ok((config, client))
    }

    async fn discover_in(
        &self,
        config: &S3Config,
        client: &ClientSettings,
        sample_rows: usize,
    ) -> Result<Discovery> {
        let bucket = Bucket::open(config, client)?;
        let candidates = bucket.candidates().await?;
        let matching_files = candidates.len();
        let Some(meta) = candidates.into_iter().next() else {
            let source = config.source();
            return Err(Error::new(
                ErrorKind::NotFound,
                if source.is_glob() {
                    format!(
                        "no file matches {source}: upload a file whose name matches {:?}, or fix the pattern",
                        source.pattern()
                    )
                } else {
                    format!(
                        "no such key: nothing at {source}; check the path (a previous run may have moved the file to success/ or failed/)"
                    )
                },
            ));
        };
        let url = bucket.url_of(&meta.location);
        let delimiter = config.mapping_delimiter();
        let encoding = config.text_encoding();
        let mapping = (!config.user_id_column().trim().is_empty()).then(|| config.mapping());
        if config.after() == AfterImport::Move && bucket.is_s3() {
            bucket.check_move_permissions().await?;
        }
        let input = self.open(&bucket, &meta).await?;
        let failure = input.failure.clone();
        let reader = input.reader;
        let checked = tokio::task::spawn_blocking(move || {
            let (prefix, reader) = with_prefix(reader)?;
            if let Some(reason) = not_csv_reason(&prefix) {
                return Ok(Err(format!("it does not look like a CSV file: {reason}")));
            }
            let mut capture = Capture {
                inner: reader,
                captured: Vec::new(),
                limit: DISCOVERY_CAPTURE_BYTES,
            };
            let sample = match discover_csv_encoded(&mut capture, sample_rows, delimiter, encoding)
            {
                Ok(sample) => sample,
                Err(e) => return Ok(Err(e.message().to_owned())),
            };
            if let Some(mapping) = mapping {
                if let Err(e) = read_csv(capture.captured.as_slice(), &mapping) {
                    let hint = delimiter_hint(&prefix, delimiter)
                        .map(|h| format!("; {h}"))
                        .unwrap_or_default();
                    return Ok(Err(format!("{}{hint}", e.message())));
                }
            }
            Ok::<_, std::io::Error>(Ok(sample))
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("discovery task failed: {e}")))?;
        let sample = match checked {
            Ok(Ok(sample)) => sample,
            Ok(Err(reason)) => {
                return Err(Error::invalid_input(format!(
                    "{url} cannot be imported: {reason}"
                )));
            }
            Err(io) => return Err(read_failure(&bucket, &meta, failure, io)),
        };
        Ok(Discovery {
            object: url,
            size: meta.size,
            etag: meta.e_tag.clone(),
            last_modified: meta.last_modified,
            matching_files,
            headers: sample.headers,
            rows: sample.rows,
            more_rows: sample.more,
        })
    }

    /// Opens an object for streaming: a local file directly, an S3 object as a GET
    /// stream bridged into a blocking reader.
    pub(super) async fn open(&self, bucket: &Bucket, meta: &ObjectMeta) -> Result<Opened> {
        match bucket.source.location() {
            Location::Local { folder } => {
                let path = folder.join(meta.location.as_ref());
                let file = File::open(&path).map_err(|e| {
                    Error::new(
                        ErrorKind::Io,
                        format!("cannot open {}: {e}", path.display()),
                    )
                    .with_source(e)
                })?;
                Ok(Opened {
                    reader: Box::new(file),
                    meta: meta.clone(),
                    failure: None,
                })
            }
            Location::S3 { .. } => {
                let result = bucket
                    .downloads
                    .get(&meta.location)
                    .await
                    .map_err(|e| bucket.error(e, Op::Read, &meta.location))?;
                let actual = result.meta.clone();
                let reader = StreamReader::spawn(result.into_stream(), bucket.read_idle_timeout);
                Ok(Opened {
                    failure: Some(reader.failure()),
                    reader: Box::new(reader),
                    meta: actual,
                })
            }
        }
    }
}

/// An object opened for reading, with the metadata of the version being read.
pub(super) struct Opened {
    pub(super) reader: Box<dyn Read + Send>,
    pub(super) meta: ObjectMeta,
    pub(super) failure: Option<super::reader::FailureSlot>,
}

/// Turns an I/O error from reading an object into the object-store error behind
/// it (if there is one), mapped.
pub(super) fn read_failure(
    bucket: &Bucket,
    meta: &ObjectMeta,
    failure: Option<super::reader::FailureSlot>,
    io: std::io::Error,
) -> Error {
    let source_error = failure.and_then(|slot| slot.lock().ok().and_then(|mut s| s.take()));
    match source_error {
        Some(e) => bucket.error(e, Op::Read, &meta.location),
        None => Error::new(
            ErrorKind::Io,
            format!("reading {} failed: {io}", bucket.url_of(&meta.location)),
        )
        .with_source(io),
    }
}

/// What "test connection and discover" found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    /// The sampled file (`s3://bucket/key` or `file:///path`).
    pub object: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its ETag.
    pub etag: Option<String>,
    /// When it was last modified.
    pub last_modified: DateTime<Utc>,
    /// How many files match the source (the oldest is sampled and imported next).
    pub matching_files: usize,
    /// The header row.
    pub headers: Vec<String>,
    /// The first data rows.
    pub rows: Vec<Vec<String>>,
    /// True if the file has more rows than were sampled.
    pub more_rows: bool,
}
