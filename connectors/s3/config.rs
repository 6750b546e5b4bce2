//! S3 import configuration: the source URL, credentials, endpoint, column mapping and what happens to a file after its run.

use std::fmt;
use std::time::Duration;

use object_store::aws::AwsCredentialProvider;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::attributes::{CsvMapping, TextEncoding, UserIdFormat};
use crate::integration::{IntegrationConfig, Schedule};
use crate::tenant::TenantId;
use crate::{Error, ErrorKind, Result};

use super::source::{Location, SourceUrl};

/// How the connector authenticates to S3. Secrets never appear in `Debug`.
#[derive(Clone, Default)]
pub enum Credentials {
    /// The environment's standard AWS chain as `object_store` implements it:
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, web
    /// identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`), the ECS container
    /// endpoint, then EC2 instance metadata. Other `AWS_*` variables
    /// (`AWS_REGION`, `AWS_ENDPOINT_URL`, …) are read too; the configuration's own
    /// region and endpoint win. Shared profile files (`~/.aws/credentials`) are not
    /// read.
    #[default]
    Environment,
    /// A static access key, optionally with a session token (temporary credentials).
    AccessKey {
        /// The access key id (not secret, e.g. `AKIA…`).
        access_key_id: String,
        /// The secret access key.
        secret_access_key: SecretString,
        /// The session token of temporary (STS) credentials.
        session_token: Option<SecretString>,
    },
    /// A credential provider of the host's own, asked for credentials before
    /// requests (and again when they expire): e.g. one that assumes an IAM role
    /// with STS and caches the temporary keys. See [`Credentials::provider`].
    Provider(AwsCredentialProvider),
}

impl Credentials {
    /// A static access key and secret.
    pub fn access_key(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        Credentials::AccessKey {
            access_key_id: access_key_id.into(),
            secret_access_key: SecretString::from(secret_access_key.into()),
            session_token: None,
        }
    }

    /// Credentials from `provider` — object_store's [`CredentialProvider`](object_store::CredentialProvider)
    /// hook, for role assumption or any other source of temporary keys. The
    /// provider is asked when a request needs credentials; it should cache them
    /// until they expire. Its errors fail the run (the next run asks again).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use switchboard::s3::{AwsCredential, CredentialProvider, Credentials, S3Connector};
    ///
    /// #[derive(Debug)]
    /// struct AssumeRole; // would call STS AssumeRole and cache the answer
    ///
    /// #[async_trait::async_trait]
    /// impl CredentialProvider for AssumeRole {
    ///     type Credential = AwsCredential;
    ///     async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
    ///         Ok(Arc::new(AwsCredential {
    ///             key_id: "ASIAEXAMPLE".into(),
    ///             secret_key: "secret".into(),
    ///             token: Some("session-token".into()),
    ///         }))
    ///     }
    /// }
    ///
    /// let connector = S3Connector::new(Credentials::provider(Arc::new(AssumeRole)));
    /// # let _ = connector;
    /// ```
    pub fn provider(provider: AwsCredentialProvider) -> Self {
        Credentials::Provider(provider)
    }

    /// Adds a session token to static credentials (no effect on [`Credentials::Environment`]).
    #[must_use]
    pub fn with_session_token(self, token: impl Into<String>) -> Self {
        match self {
            Credentials::AccessKey {
                access_key_id,
                secret_access_key,
                ..
            } => Credentials::AccessKey {
                access_key_id,
                secret_access_key,
                session_token: Some(SecretString::from(token.into())),
            },
            other => other,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Environment => f.write_str("Environment"),
            Credentials::AccessKey {
                access_key_id,
                session_token,
                ..
            } => f
                .debug_struct("AccessKey")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"[redacted]")
                .field(
                    "session_token",
                    &session_token.as_ref().map(|_| "[redacted]"),
                )
                .finish(),
            // The provider's own Debug may show what it holds.
            Credentials::Provider(_) => f.write_str("Provider([redacted])"),
        }
    }
}

/// What happens to a file once a run has imported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterImport {
    /// Move it under `success/` or `failed/` beside it, adding the run's timestamp
    /// to its name (copy, verify the copy, then delete the original).
    #[default]
    Move,
    /// Leave it where it is and remember its ETag for this integration, so the same
    /// version is not imported twice and several integrations can read one file.
    KeepInPlace,
}

/// One mapped column: the CSV column and the attribute it is imported as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeColumn {
    /// The CSV header of the column.
    pub column: String,
    /// The attribute name; the column's name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename: Option<String>,
}

impl AttributeColumn {
    /// The attribute's name.
    pub fn name(&self) -> &str {
        self.rename.as_deref().unwrap_or(&self.column)
    }
}

/// An S3 import integration's settings — everything but the secrets, so it can be
/// stored in [`IntegrationConfig::settings`] and edited between runs.
///
/// A consuming builder:
///
/// ```
/// use switchboard::s3::{AfterImport, S3Config};
/// let config = S3Config::new("s3://acme-exports/hr/*.csv", "Email")
///     .unwrap()
///     .region("eu-central-1")
///     .attribute("Plan")
///     .attribute_as("Support Tickets", "support_tickets")
///     .after_import(AfterImport::Move);
/// assert_eq!(config.mapping().attributes().count(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Config {
    source: SourceUrl,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_style: Option<bool>,
    user_id_column: String,
    #[serde(default)]
    attributes: Vec<AttributeColumn>,
    #[serde(default)]
    after_import: AfterImport,
    #[serde(default = "default_delimiter")]
    delimiter: char,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    connection: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    newest_only: bool,
    #[serde(default)]
    encoding: TextEncoding,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    null_values: Vec<String>,
    #[serde(default)]
    user_id_format: UserIdFormat,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    recursive: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error_report_folder: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    no_error_reports: bool,
}

/// The default folder, beside the source's files, for error reports.
pub const DEFAULT_ERROR_REPORT_FOLDER: &str = "reports";

fn default_delimiter() -> char {
    ','
}

impl S3Config {
    /// Settings reading `source` (see [`SourceUrl`]) with user ids from `user_id_column`.
    pub fn new(source: &str, user_id_column: impl Into<String>) -> Result<Self> {
        Ok(S3Config {
            source: SourceUrl::parse(source)?,
            region: None,
            endpoint: None,
            path_style: None,
            user_id_column: user_id_column.into(),
            attributes: Vec::new(),
            after_import: AfterImport::Move,
            delimiter: ',',
            connection: None,
            newest_only: false,
            encoding: TextEncoding::Utf8,
            null_values: Vec::new(),
            user_id_format: UserIdFormat::AsIs,
            recursive: false,
            error_report_folder: None,
            no_error_reports: false,
        })
    }

    /// The AWS region (default: `AWS_REGION`/`AWS_DEFAULT_REGION` with
    /// [`Credentials::Environment`], else `us-east-1`).
    #[must_use]
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// An endpoint override for S3-compatible services (MinIO, Cloudflare R2,
    /// Ceph, a proxy, a test server), e.g. `http://127.0.0.1:9000`. Requests then
    /// use path-style addressing (`endpoint/bucket/key`) unless
    /// [`S3Config::path_style`] says otherwise; `http://` endpoints are allowed.
    #[must_use]
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Forces path-style (`true`) or virtual-hosted-style (`false`) addressing.
    #[must_use]
    pub fn path_style(mut self, path_style: bool) -> Self {
        self.path_style = Some(path_style);
        self
    }

    /// Imports `column` under its own name.
    #[must_use]
    pub fn attribute(mut self, column: impl Into<String>) -> Self {
        self.attributes.push(AttributeColumn {
            column: column.into(),
            rename: None,
        });
        self
    }

    /// Imports `column` as the attribute `name`.
    #[must_use]
    pub fn attribute_as(mut self, column: impl Into<String>, name: impl Into<String>) -> Self {
        self.attributes.push(AttributeColumn {
            column: column.into(),
            rename: Some(name.into()),
        });
        self
    }

    /// What happens to a file after its run (default [`AfterImport::Move`]).
    #[must_use]
    pub fn after_import(mut self, after: AfterImport) -> Self {
        self.after_import = after;
        self
    }

    /// The field delimiter (default `,`); must be one ASCII character.
    #[must_use]
    pub fn delimiter(mut self, delimiter: char) -> Self {
        self.delimiter = delimiter;
        self
    }

    /// Reads the bucket with the tenant's S3 connection named `account` (see
    /// [`crate::s3::S3Connection`]) instead of the tenant's default S3
    /// connection. The connection must belong to the integration's tenant.
    #[must_use]
    pub fn connection(mut self, account: impl Into<String>) -> Self {
        self.connection = Some(account.into());
        self
    }

    /// Imports only the newest matching file at each run (default: the oldest
    /// not yet imported, one per run). Older files are left where they are,
    /// untouched, and counted in [`crate::s3::S3RunDetails::skipped_older`].
    #[must_use]
    pub fn newest_file_only(mut self, yes: bool) -> Self {
        self.newest_only = yes;
        self
    }

    /// Whether only the newest file is imported.
    pub fn newest_only(&self) -> bool {
        self.newest_only
    }

    /// The files' text encoding (default UTF-8); gzipped files (`.csv.gz`)
    /// are recognised by their content.
    #[must_use]
    pub fn encoding(mut self, encoding: TextEncoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Cell values meaning "no value" (e.g. `NULL`, `n/a`): see
    /// [`CsvMapping::null_values`].
    #[must_use]
    pub fn null_values<I, S>(mut self, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.null_values = values.into_iter().map(Into::into).collect();
        self
    }

    /// How the user-id column is normalised (see [`UserIdFormat`]).
    #[must_use]
    pub fn user_id_format(mut self, format: UserIdFormat) -> Self {
        self.user_id_format = format;
        self
    }

    /// The files' text encoding.
    pub fn text_encoding(&self) -> TextEncoding {
        self.encoding
    }

    /// Lists the source's folder recursively (default: only the files directly
    /// in it): the file-name glob then matches files in every folder below it,
    /// except `success/`, `failed/` and the error-report folder at any depth. A
    /// file imported from a sub-folder moves to that sub-folder's `success/` or
    /// `failed/`. Needs a folder or glob source, not a single object.
    #[must_use]
    pub fn recursive(mut self, yes: bool) -> Self {
        self.recursive = yes;
        self
    }

    /// Whether the folder is listed recursively.
    pub fn is_recursive(&self) -> bool {
        self.recursive
    }

    /// The folder, beside the source's files (under the source's folder), that
    /// receives each run's full error report: `<folder>/<name>/run-<run id>.csv`
    /// with every rejected row (see [`crate::attributes::ErrorReport`]). Default
    /// [`DEFAULT_ERROR_REPORT_FOLDER`]; one folder name, no `/`.
    #[must_use]
    pub fn error_report_folder(mut self, name: impl Into<String>) -> Self {
        self.error_report_folder = Some(name.into());
        self
    }

    /// Writes an error report for runs that reject rows (default: yes).
    #[must_use]
    pub fn error_reports(mut self, yes: bool) -> Self {
        self.no_error_reports = !yes;
        self
    }

    /// The error-report folder name, or `None` if error reports are off.
    pub fn report_folder(&self) -> Option<&str> {
        if self.no_error_reports {
            return None;
        }
        Some(
            self.error_report_folder
                .as_deref()
                .unwrap_or(DEFAULT_ERROR_REPORT_FOLDER),
        )
    }

    /// The account of the S3 connection these settings name, if any.
    pub fn configured_connection(&self) -> Option<&str> {
        self.connection.as_deref()
    }

    /// These settings completed by a connection: its region and endpoint fill
    /// in what the settings leave unset, and its bucket (if it names one) must
    /// be the source's.
    pub(crate) fn with_connection(
        &self,
        key: &crate::tenant::ConnectionKey,
        resolved: &super::connection::Resolved,
    ) -> Result<S3Config> {
        let mut config = self.clone();
        if let (Some(bucket), Some(source)) = (&resolved.bucket, self.source.bucket()) {
            if bucket != source {
                return Err(Error::new(
                    ErrorKind::Unauthorized,
                    format!(
                        "the S3 connection {key} is for the bucket {bucket:?}, but the source {} reads {source:?}; fix the source or use another connection",
                        self.source
                    ),
                ));
            }
        }
        if config.region.is_none() {
            config.region.clone_from(&resolved.region);
        }
        if config.endpoint.is_none() {
            config.endpoint.clone_from(&resolved.endpoint);
        }
        config.validate_connection()?;
        Ok(config)
    }

    /// The source.
    pub fn source(&self) -> &SourceUrl {
        &self.source
    }

    /// The configured region.
    pub fn configured_region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The configured endpoint override.
    pub fn configured_endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// The user-id column.
    pub fn user_id_column(&self) -> &str {
        &self.user_id_column
    }

    /// The mapped columns.
    pub fn attributes(&self) -> &[AttributeColumn] {
        &self.attributes
    }

    /// What happens to a file after its run.
    pub fn after(&self) -> AfterImport {
        self.after_import
    }

    /// True when requests use path-style addressing: the default with an
    /// endpoint override, and for bucket names with dots (AWS's wildcard TLS
    /// certificate does not cover `a.b.s3.amazonaws.com`), unless
    /// [`S3Config::path_style`] says otherwise.
    pub fn uses_path_style(&self) -> bool {
        self.path_style
            .unwrap_or(self.endpoint.is_some() || self.has_dotted_bucket())
    }

    /// True if the bucket's name contains a dot.
    pub(crate) fn has_dotted_bucket(&self) -> bool {
        self.source.bucket().is_some_and(|b| b.contains('.'))
    }

    pub(crate) fn path_style_setting(&self) -> Option<bool> {
        self.path_style
    }

    /// The delimiter as a byte (`,` if it is not ASCII; `validate` rejects that).
    pub(crate) fn mapping_delimiter(&self) -> u8 {
        u8::try_from(self.delimiter).unwrap_or(b',')
    }

    /// The CSV mapping these settings describe.
    pub fn mapping(&self) -> CsvMapping {
        let mut mapping = CsvMapping::new(self.user_id_column.clone());
        for a in &self.attributes {
            mapping = mapping.attribute(a.column.clone(), a.name().to_owned());
        }
        mapping
            .delimiter(self.mapping_delimiter())
            .encoding(self.encoding)
            .null_values(self.null_values.iter().cloned())
            .user_id_format(self.user_id_format.clone())
    }

    /// Checks the settings; the error says what to fix.
    pub fn validate(&self) -> Result<()> {
        self.validate_connection()?;
        if let Some(folder) = &self.error_report_folder {
            let reserved = [
                crate::s3::SUCCESS_FOLDER,
                crate::s3::FAILED_FOLDER,
                ".",
                "..",
            ];
            if folder.trim().is_empty()
                || folder.contains(['/', '\\', '*', '?'])
                || reserved.contains(&folder.as_str())
            {
                return Err(Error::config(format!(
                    "the error-report folder {folder:?} must be one folder name (no `/`, `*` or `?`), other than success and failed"
                )));
            }
        }
        if self.recursive && !self.source.is_glob() {
            return Err(Error::config(format!(
                "the source {} is one object, so it cannot be listed recursively: give a folder (s3://bucket/folder/) or a glob",
                self.source
            )));
        }
        if self.attributes.is_empty() {
            return Err(Error::config(
                "no attributes are mapped: choose at least one column to import",
            ));
        }
        self.mapping()
            .validate()
            .map_err(|e| Error::new(ErrorKind::Config, e.message().to_owned()))
    }

    /// Checks what is needed to connect and read (not the mapping), so a
    /// discovery step can run before columns are chosen.
    pub(crate) fn validate_connection(&self) -> Result<()> {
        if !self.delimiter.is_ascii() {
            return Err(Error::config(format!(
                "the delimiter {:?} is not one ASCII character",
                self.delimiter
            )));
        }
        if let Some(endpoint) = &self.endpoint {
            check_endpoint(endpoint)?;
        }
        if matches!(self.source.location(), Location::Local { .. })
            && (self.endpoint.is_some() || self.region.is_some() || self.connection.is_some())
        {
            return Err(Error::config(
                "a file:// source takes no region, endpoint or connection; remove them or use an s3:// source",
            ));
        }
        Ok(())
    }

    /// An [`IntegrationConfig`] (enabled) of the default tenant holding these
    /// settings, for [`crate::schedule::Scheduler::put_integration`].
    pub fn integration(
        &self,
        name: impl Into<String>,
        schedule: Schedule,
    ) -> Result<IntegrationConfig> {
        self.tenant_integration(TenantId::default_tenant(), name, schedule)
    }

    /// An [`IntegrationConfig`] (enabled) of `tenant` holding these settings.
    pub fn tenant_integration(
        &self,
        tenant: TenantId,
        name: impl Into<String>,
        schedule: Schedule,
    ) -> Result<IntegrationConfig> {
        self.validate()?;
        Ok(IntegrationConfig {
            tenant,
            name: name.into(),
            source: self.source.to_string(),
            schedule,
            enabled: true,
            settings: serde_json::to_value(self)?,
        })
    }

    /// Reads the settings back from an [`IntegrationConfig`].
    pub fn from_integration(config: &IntegrationConfig) -> Result<Self> {
        let settings: S3Config = serde_json::from_value(config.settings.clone()).map_err(|e| {
            Error::config(format!(
                "integration {:?} does not hold valid S3 settings: {e}",
                config.name
            ))
        })?;
        settings.validate()?;
        Ok(settings)
    }
}

/// Checks an endpoint override: an `http://` or `https://` URL with a host.
pub(crate) fn check_endpoint(endpoint: &str) -> Result<()> {
    let url = url::Url::parse(endpoint).map_err(|e| {
        Error::config(format!(
            "the endpoint {endpoint:?} is not a URL ({e}); write it like https://s3.example.com or http://127.0.0.1:9000"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Error::config(format!(
            "the endpoint {endpoint:?} must be an http:// or https:// URL with a host"
        )));
    }
    Ok(())
}

/// How S3 requests are retried: exponential backoff with jitter on throttling
/// (`503 SlowDown`), other 5xx answers, dropped connections and timeouts. Access
/// denied, missing buckets and missing keys are never retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: usize,
    /// The first backoff.
    pub initial_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// No retry starts after this long since the first attempt.
    pub total_timeout: Duration,
}

impl Default for RetryPolicy {
    /// 10 retries, 100 ms doubling to 15 s, within 3 minutes.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            total_timeout: Duration::from_secs(180),
        }
    }
}

impl RetryPolicy {
    pub(crate) fn to_object_store(self) -> object_store::RetryConfig {
        object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: self.initial_backoff,
                max_backoff: self.max_backoff,
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: self.total_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_an_integration() {
        let config = S3Config::new("s3://bucket/exports/*.csv", "Email")
            .unwrap()
            .endpoint("http://127.0.0.1:9000")
            .attribute("Plan")
            .attribute_as("Seats", "seats")
            .after_import(AfterImport::KeepInPlace);
        assert!(config.uses_path_style());
        let integration = config
            .integration("hr", Schedule::Interval(Duration::from_secs(3600)))
            .unwrap();
        assert_eq!(integration.source, "s3://bucket/exports/*.csv");
        assert_eq!(S3Config::from_integration(&integration).unwrap(), config);
    }

    #[test]
    fn validation_says_what_to_fix() {
        let base = S3Config::new("s3://bucket/x.csv", "id").unwrap();
        assert!(
            base.validate()
                .unwrap_err()
                .message()
                .contains("no attributes")
        );
        let e = base
            .clone()
            .attribute("a")
            .endpoint("localhost:9000")
            .validate()
            .unwrap_err();
        assert!(e.message().contains("http://"), "{e}");
        let e = base
            .clone()
            .attribute("a")
            .attribute_as("b", "a")
            .validate()
            .unwrap_err();
        assert!(e.message().contains("more than once"), "{e}");
        let e = base.attribute("a").delimiter('é').validate().unwrap_err();
        assert!(e.message().contains("ASCII"), "{e}");
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let c =
            Credentials::access_key("AKIDEXAMPLE", "wJalrXUtnFEMI").with_session_token("tok-123");
        let debug = format!("{c:?}");
        assert!(debug.contains("AKIDEXAMPLE"));
        assert!(
            !debug.contains("wJalrXUtnFEMI") && !debug.contains("tok-123"),
            "{debug}"
        );
    }
}
