//! The object-store client: building S3 or local-folder stores, listing source files, moving them, and mapping their errors in one place.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectMeta, ObjectStore};
use secrecy::ExposeSecret;

use super::config::{Credentials, RetryPolicy, S3Config};
use super::source::{Location, SourceUrl};
use crate::{Error, ErrorKind, Result};

/// What the client was doing when an error happened; picks the advice in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    List,
    Read,
    Head,
    Copy,
    Delete,
}

impl Op {
    fn verb(self) -> &'static str {
        match self {
            Op::List => "listing",
            Op::Read => "reading",
            Op::Head => "checking",
            Op::Copy => "copying",
            Op::Delete => "deleting",
        }
    }

    fn permission(self) -> &'static str {
        match self {
            Op::List => "s3:ListBucket",
            Op::Read | Op::Head => "s3:GetObject",
            Op::Copy => "s3:GetObject and s3:PutObject",
            Op::Delete => "s3:DeleteObject",
        }
    }
}

/// Connection options that are not part of the stored settings.
#[derive(Debug, Clone)]
pub(crate) struct ClientSettings {
    pub(crate) credentials: Credentials,
    pub(crate) retry: RetryPolicy,
    /// Timeout of one metadata request (HEAD, LIST, COPY, DELETE).
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    /// Longest wait for the next chunk of a download.
    pub(crate) read_idle_timeout: Duration,
}

/// An opened source: the object store and the URL it serves.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    /// For metadata requests (HEAD, LIST, COPY, DELETE), with a request timeout.
    pub(crate) store: Arc<dyn ObjectStore>,
    /// For downloads: no timeout on the whole request (a large file may take
    /// long); the reader enforces an idle timeout between chunks instead.
    pub(crate) downloads: Arc<dyn ObjectStore>,
    pub(crate) source: SourceUrl,
    pub(crate) read_idle_timeout: Duration,
    /// List the folder and every folder below it.
    pub(crate) recursive: bool,
    /// Folders never listed: `success/`, `failed/` and the error-report folder.
    pub(crate) skipped_folders: Vec<String>,
}

impl Bucket {
    /// Builds the stores for `config` (no request is made yet), its date
    /// placeholders resolved for now.
    pub(crate) fn open(config: &S3Config, settings: &ClientSettings) -> Result<Bucket> {
        Self::open_at(config, settings, Utc::now())
    }

    /// Builds the stores for `config` for a run at `run_at` (the source's date
    /// placeholders resolved against it; see [`SourceUrl::resolve`]).
    pub(crate) fn open_at(
        config: &S3Config,
        settings: &ClientSettings,
        run_at: DateTime<Utc>,
    ) -> Result<Bucket> {
        config.validate_connection()?;
        let source = config.source().resolve(run_at)?;
        let (store, downloads): (Arc<dyn ObjectStore>, Arc<dyn ObjectStore>) = match source
            .location()
        {
            Location::S3 { bucket } => {
                let mut builder = match &settings.credentials {
                    Credentials::Environment => AmazonS3Builder::from_env(),
                    Credentials::AccessKey {
                        access_key_id,
                        secret_access_key,
                        session_token,
                    } => {
                        let mut b = AmazonS3Builder::new()
                            .with_access_key_id(access_key_id)
                            .with_secret_access_key(secret_access_key.expose_secret());
                        if let Some(token) = session_token {
                            b = b.with_token(token.expose_secret());
                        }
                        b
                    }
                    Credentials::Provider(provider) => {
                        AmazonS3Builder::new().with_credentials(Arc::clone(provider))
                    }
                };
                builder = builder.with_bucket_name(bucket);
                if let Some(region) = config.configured_region() {
                    builder = builder.with_region(region);
                }
                // The endpoint in use: the configuration's, else (with
                // environment credentials) `AWS_ENDPOINT_URL` / `AWS_ENDPOINT`.
                let env_endpoint = match settings.credentials {
                    Credentials::Environment => std::env::var("AWS_ENDPOINT_URL")
                        .or_else(|_| std::env::var("AWS_ENDPOINT"))
                        .ok()
                        .filter(|e| !e.is_empty()),
                    Credentials::AccessKey { .. } | Credentials::Provider(_) => None,
                };
                let endpoint = config
                    .configured_endpoint()
                    .map(str::to_owned)
                    .or(env_endpoint);
                if let Some(endpoint) = &endpoint {
                    builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
                }
                let allow_http = endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://"));
                // Dotted bucket names never use virtual-hosted addressing: the
                // wildcard certificate does not cover them.
                let path_style = config
                    .path_style_setting()
                    .unwrap_or(endpoint.is_some() || config.has_dotted_bucket());
                builder = builder
                    .with_virtual_hosted_style_request(!path_style)
                    .with_retry(settings.retry.to_object_store());
                let client = ClientOptions::new()
                    .with_allow_http(allow_http)
                    .with_connect_timeout(settings.connect_timeout);
                let build = |client: ClientOptions| {
                    builder
                        .clone()
                        .with_client_options(client)
                        .build()
                        .map_err(|e| {
                            Error::config(format!("cannot set up the S3 client for {source}: {e}"))
                        })
                };
                let store = build(client.clone().with_timeout(settings.timeout))?;
                let downloads = build(client.with_timeout_disabled())?;
                (Arc::new(store), Arc::new(downloads))
            }
            Location::Local { folder } => {
                let fs = LocalFileSystem::new_with_prefix(folder).map_err(|e| {
                        Error::new(
                            ErrorKind::NotFound,
                            format!(
                                "the local folder {} cannot be opened ({e}); create it or fix the file:// source",
                                folder.display()
                            ),
                        )
                    })?;
                let fs: Arc<dyn ObjectStore> = Arc::new(fs);
                (Arc::clone(&fs), fs)
            }
        };
        let mut skipped_folders = vec![
            super::import::SUCCESS_FOLDER.to_owned(),
            super::import::FAILED_FOLDER.to_owned(),
        ];
        skipped_folders.extend(config.report_folder().map(str::to_owned));
        Ok(Bucket {
            store,
            downloads,
            source,
            read_idle_timeout: settings.read_idle_timeout,
            recursive: config.is_recursive(),
            skipped_folders,
        })
    }

    /// True for an S3 bucket, false for a local folder.
    pub(crate) fn is_s3(&self) -> bool {
        matches!(self.source.location(), Location::S3 { .. })
    }

    /// A printable URL for an object.
    pub(crate) fn url_of(&self, path: &ObjectPath) -> String {
        match self.source.location() {
            Location::S3 { bucket } => format!("s3://{bucket}/{path}"),
            Location::Local { folder } => {
                format!("file://{}", folder.join(path.as_ref()).display())
            }
        }
    }

    /// The source's candidate files, oldest first (then by name). An exact source
    /// that does not exist yields none; a missing bucket or folder is an error.
    pub(crate) async fn candidates(&self) -> Result<Vec<ObjectMeta>> {
        if let Some(path) = self.source.exact_path() {
            return match self.store.head(&path).await {
                Ok(meta) => Ok(vec![meta]),
                Err(object_store::Error::NotFound { .. }) => {
                    // HEAD answers carry no body: tell a missing key from a missing bucket.
                    self.list_folder().await?;
                    Ok(Vec::new())
                }
                Err(
                    e @ (object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }),
                ) => {
                    // Same for a denial: a one-byte GET brings back the reason (wrong
                    // secret, unknown key, missing permission).
                    match self.store.get_range(&path, 0..1).await {
                        Err(detailed) => Err(self.error(detailed, Op::Read, &path)),
                        Ok(_) => Err(self.error(e, Op::Head, &path)),
                    }
                }
                Err(e) => Err(self.error(e, Op::Head, &path)),
            };
        }
        let mut objects: Vec<ObjectMeta> = self
            .list_folder()
            .await?
            .into_iter()
            .filter(|m| {
                m.location
                    .filename()
                    .is_some_and(|n| self.source.matches(n))
                    && !self.in_skipped_folder(&m.location)
            })
            .collect();
        objects.sort_by(|a, b| {
            a.last_modified
                .cmp(&b.last_modified)
                .then_with(|| a.location.cmp(&b.location))
        });
        Ok(objects)
    }

    /// True if `path` is below the source folder in a `success/`, `failed/` or
    /// error-report folder (at any depth), so it is never a candidate.
    fn in_skipped_folder(&self, path: &ObjectPath) -> bool {
        let depth = self.source.folder_path().parts().count();
        let parts: Vec<_> = path.parts().collect();
        let folders = parts.len().saturating_sub(1);
        parts
            .get(depth.min(folders)..folders)
            .unwrap_or_default()
            .iter()
            .any(|p| self.skipped_folders.iter().any(|s| s == p.as_ref()))
    }

    async fn list_folder(&self) -> Result<Vec<ObjectMeta>> {
        let folder = self.source.folder_path();
        let prefix = (!folder.as_ref().is_empty()).then_some(&folder);
        if self.recursive {
            use futures::TryStreamExt as _;
            return self
                .store
                .list(prefix)
                .try_collect()
                .await
                .map_err(|e| self.error(e, Op::List, &folder));
        }
        match self.store.list_with_delimiter(prefix).await {
            Ok(listing) => Ok(listing.objects),
            Err(e) => Err(self.error(e, Op::List, &folder)),
        }
    }

    /// Moves `meta` to `<folder>/<dest_folder>/<stem>-<timestamp>.<ext>`: copy,
    /// verify the copy (its size, and that the original is still the version read), then delete the
    /// original. Returns the new path. Never overwrites an existing object.
    pub(crate) async fn move_to(
        &self,
        meta: &ObjectMeta,
        dest_folder: &str,
        run_at: DateTime<Utc>,
        run_id: i64,
    ) -> Result<ObjectPath> {
        let from = &meta.location;
        let name = from.filename().unwrap_or("file.csv");
        let (stem, ext) = match name.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => (stem, Some(ext)),
            _ => (name, None),
        };
        let stamp = run_at.format("%Y%m%dT%H%M%SZ").to_string();
        let parent: ObjectPath = from
            .parts()
            .take(from.parts().count().saturating_sub(1))
            .collect();
        let folder = parent.child(dest_folder);
        let mut to = None;
        for attempt in 0..10u32 {
            let suffix = match attempt {
                0 => stamp.clone(),
                1 => format!("{stamp}-run{run_id}"),
                n => format!("{stamp}-run{run_id}-{n}"),
            };
            let file = match ext {
                Some(ext) => format!("{stem}-{suffix}.{ext}"),
                None => format!("{stem}-{suffix}"),
            };
            let candidate = folder.child(file.as_str());
            match self.store.head(&candidate).await {
                Err(object_store::Error::NotFound { .. }) => {
                    to = Some(candidate);
                    break;
                }
                Ok(_) => continue,
                Err(e) => return Err(self.error(e, Op::Head, &candidate)),
            }
        }
        let to = to.ok_or_else(|| {
            Error::new(
                ErrorKind::Conflict,
                format!(
                    "no free name under {} for {}",
                    self.url_of(&folder),
                    self.url_of(from)
                ),
            )
        })?;
        self.store
            .copy(from, &to)
            .await
            .map_err(|e| self.error(e, Op::Copy, from))?;
        // Verify by size (ETags of SSE-KMS / SSE-C objects are not MD5s and
        // change on copy), and that the original is still the version read
        // (its ETag compared with itself, which is meaningful whatever the
        // encryption): otherwise the copy is not what was imported.
        let check = async {
            let copy = self
                .store
                .head(&to)
                .await
                .map_err(|e| self.error(e, Op::Head, &to))?;
            if copy.size != meta.size {
                return Err(Error::new(
                    ErrorKind::Platform,
                    format!(
                        "the copy {} has {} bytes, the original {}; the original was kept",
                        self.url_of(&to),
                        copy.size,
                        meta.size
                    ),
                ));
            }
            let original = self
                .store
                .head(from)
                .await
                .map_err(|e| self.error(e, Op::Head, from))?;
            if original.e_tag != meta.e_tag || original.size != meta.size {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "{} changed while it was being moved; the original was kept and the next run imports the new version",
                        self.url_of(from)
                    ),
                )
                .temporary());
            }
            Ok(())
        };
        if let Err(e) = check.await {
            // Never leave a bad copy behind.
            return Err(match self.store.delete(&to).await {
                Ok(()) => e,
                Err(d) => {
                    let d = self.error(d, Op::Delete, &to);
                    e.context(format!(
                        "and the bad copy {} could not be deleted ({}); delete it by hand",
                        self.url_of(&to),
                        d.message()
                    ))
                }
            });
        }
        self.store
            .delete(from)
            .await
            .map_err(|e| self.error(e, Op::Delete, from))?;
        Ok(to)
    }

    /// Checks that the credentials may write and delete beside the source
    /// (what moving a file after its import needs): writes an empty probe
    /// object under `success/` and deletes it.
    pub(crate) async fn check_move_permissions(&self) -> Result<()> {
        let folder = self.source.folder_path();
        let probe = folder
            .child(super::import::SUCCESS_FOLDER)
            .child(format!(".switchboard-permission-check-{}", rand::random::<u64>()).as_str());
        self.store
            .put(&probe, object_store::PutPayload::new())
            .await
            .map_err(|e| {
                self.error(e, Op::Copy, &probe).context(
                    "the import could not move files after importing them (to keep files in place, choose keep-in-place)",
                )
            })?;
        self.store.delete(&probe).await.map_err(|e| {
            self.error(e, Op::Delete, &probe).context(
                "the import could not delete files after copying them (to keep files in place, choose keep-in-place)",
            )
        })
    }

    /// Maps an object-store error into a switchboard error saying what is wrong and
    /// how to fix it. The one place where S3 answers become error kinds.
    pub(crate) fn error(&self, e: object_store::Error, op: Op, path: &ObjectPath) -> Error {
        let url = self.url_of(path);
        let text = error_text(&e);
        let code = s3_code(&text);
        let what = match self.source.location() {
            Location::S3 { bucket } => format!("bucket {bucket:?}"),
            Location::Local { folder } => format!("folder {}", folder.display()),
        };
        let mapped = match classify(&e, &text, code.as_deref()) {
            Class::NotFound => {
                if code.as_deref() == Some("NoSuchBucket") || op == Op::List {
                    Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "the {what} does not exist: check its name{}",
                            if self.is_s3() {
                                ", the region and the endpoint"
                            } else {
                                ""
                            }
                        ),
                    )
                } else {
                    Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "no such key: nothing at {url}; check the path (a previous run may have moved the file to success/ or failed/)"
                        ),
                    )
                }
            }
            Class::Denied => {
                let advice = match code.as_deref() {
                    Some("SignatureDoesNotMatch") => {
                        "the secret access key is wrong: check the secret that belongs to the access key id"
                            .to_owned()
                    }
                    Some("InvalidAccessKeyId") | Some("NotSignedUp") => {
                        "the access key id is unknown: check the access key id (and the endpoint)"
                            .to_owned()
                    }
                    Some("ExpiredToken") | Some("InvalidToken") | Some("TokenRefreshRequired") => {
                        "the session token is expired or invalid: renew the temporary credentials"
                            .to_owned()
                    }
                    _ if self.is_s3() => format!(
                        "check the access key id and secret, and that their policy allows {} on {url}",
                        op.permission()
                    ),
                    _ => format!("check the file permissions of {url}"),
                };
                Error::new(
                    ErrorKind::Unauthorized,
                    format!(
                        "access denied {} {url}{}: {advice}",
                        op.verb(),
                        code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default()
                    ),
                )
            }
            Class::Changed => Error::new(
                ErrorKind::Conflict,
                format!("{url} changed while it was being read; the next run reads the new version"),
            )
            .temporary(),
            Class::Transient => Error::new(
                ErrorKind::Network,
                format!(
                    "{} {url} failed after retries (throttling, timeouts or an unreachable endpoint); the next run tries again",
                    op.verb()
                ),
            )
            .temporary(),
            Class::Tls => Error::config(format!(
                "{} {url} failed: the TLS certificate was refused ({}); for a bucket name with dots use path-style addressing, or check the endpoint",
                op.verb(),
                text.chars().take(200).collect::<String>()
            )),
            Class::Other => Error::new(
                ErrorKind::Platform,
                format!(
                    "{} {url} failed{}",
                    op.verb(),
                    code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default()
                ),
            ),
        };
        mapped.with_source(e)
    }
}

/// How an object-store error is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    NotFound,
    Denied,
    Changed,
    Transient,
    Tls,
    Other,
}

/// True for TLS handshake / certificate failures: retrying will not cure them.
fn is_tls_failure(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("certificate")
        || lower.contains("invalid peer")
        || lower.contains("tls handshake")
}

/// Classifies by variant, then by S3 error code and HTTP status (list requests
/// come back as `Generic` errors whatever their status).
fn classify(e: &object_store::Error, text: &str, code: Option<&str>) -> Class {
    match e {
        object_store::Error::NotFound { .. } => return Class::NotFound,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => return Class::Denied,
        object_store::Error::Precondition { .. } | object_store::Error::NotModified { .. } => {
            return Class::Changed;
        }
        _ => {}
    }
    match code {
        Some("NoSuchBucket" | "NoSuchKey") => return Class::NotFound,
        Some(
            "AccessDenied"
            | "SignatureDoesNotMatch"
            | "InvalidAccessKeyId"
            | "NotSignedUp"
            | "ExpiredToken"
            | "InvalidToken"
            | "TokenRefreshRequired"
            | "AllAccessDisabled"
            | "AccountProblem",
        ) => return Class::Denied,
        _ => {}
    }
    if is_tls_failure(text) {
        return Class::Tls;
    }
    if text.contains("status code: 404") {
        Class::NotFound
    } else if text.contains("status code: 403") || text.contains("status code: 401") {
        Class::Denied
    } else if is_transient(text) {
        Class::Transient
    } else {
        Class::Other
    }
}

/// The error's text with all its sources (S3 error bodies end up in there).
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The S3 error code (`<Code>NoSuchBucket</Code>`) in an error's text.
fn s3_code(text: &str) -> Option<String> {
    let start = text.find("<Code>")? + "<Code>".len();
    let end = text[start..].find("</Code>")? + start;
    let code = &text[start..end];
    (!code.is_empty() && code.len() < 64 && code.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| code.to_owned())
}

/// True for failures retrying may cure: HTTP-level failures (connect, timeout,
/// reset), 5xx answers, `429` and S3's `SlowDown` / `InternalError` bodies.
fn is_transient(text: &str) -> bool {
    text.contains("HTTP error:")
        || text.contains("status code: 5")
        || text.contains("status code: 429")
        || [
            "SlowDown",
            "InternalError",
            "ServiceUnavailable",
            "RequestTimeout",
        ]
        .iter()
        .any(|code| text.contains(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_s3_error_codes() {
        assert_eq!(
            s3_code(
                "404 Not Found: <?xml?><Error><Code>NoSuchBucket</Code><Message>x</Message></Error>"
            )
            .as_deref(),
            Some("NoSuchBucket")
        );
        assert_eq!(s3_code("no body"), None);
        assert_eq!(s3_code("<Code></Code>"), None);
    }

    #[test]
    fn certificate_failures_are_permanent() {
        let text = "Error performing GET in 1s - HTTP error: error sending request: invalid peer certificate: NotValidForName";
        assert!(is_tls_failure(text));
        assert_eq!(classify_text(text), Class::Tls);
    }

    fn classify_text(text: &str) -> Class {
        let e = object_store::Error::Generic {
            store: "S3",
            source: text.to_owned().into(),
        };
        classify(&e, text, None)
    }

    #[test]
    fn recognises_transient_failures() {
        assert!(is_transient(
            "Server returned non-2xx status code: 503 Service Unavailable: <Code>SlowDown</Code>"
        ));
        assert!(is_transient(
            "Error performing GET in 30s - HTTP error: error sending request"
        ));
        assert!(!is_transient(
            "Error performing GET in 1.500ms - Server returned non-2xx status code: 403 Forbidden"
        ));
        assert!(!is_transient(
            "400 Bad Request: <Code>InvalidArgument</Code>"
        ));
    }
}
