//! `EmailBucketSource` (features `email` + `s3`): raw MIME objects under a bucket prefix (the SES receipt-rule pattern) captured once each, then moved to `processed/` or `rejected/` beside them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore};

use super::capture::EmailCapture;
use super::http::{Intake, intake};
use super::parse::MAX_MESSAGE_BYTES;
use super::progress::Progress;
use crate::source::{Emitter, EventSource, Shutdown};
use crate::store::Store;
use crate::{Error, ErrorKind, Result};

/// The folder (under the prefix) accepted messages are moved to.
pub const PROCESSED_FOLDER: &str = "processed";
/// The folder (under the prefix) rejected messages are moved to.
pub const REJECTED_FOLDER: &str = "rejected";

/// What one [`EmailBucketSource::poll`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BucketPoll {
    /// Objects captured and published (moved to `processed/`).
    pub accepted: usize,
    /// Objects rejected (moved to `rejected/`).
    pub rejected: usize,
    /// Objects already processed before (a restart after a crash mid-move):
    /// moved without being processed again.
    pub resumed: usize,
    /// Objects left in place for the next poll (a store or bucket error).
    pub failed: usize,
}

/// Raw MIME objects under `prefix` in a bucket, as an [`EventSource`]. Each
/// object is captured through an [`EmailCapture`] and published, then moved to
/// `<prefix>/processed/` (or `<prefix>/rejected/`); objects already in those
/// folders are never listed as input.
///
/// Once per object: the object's location and ETag are remembered in the
/// store ([`crate::store::OnceStore`]) after its item is published and before
/// it is moved, so a restart after a crash mid-move finishes the move without
/// processing it again; a crash before that point processes it again, and
/// the event's id (derived from its `Message-ID`) makes the second publish a
/// duplicate that creates nothing. Two replicas polling one prefix are safe for
/// the same reasons.
///
/// The object store is the S3 connector's client (`object_store`'s
/// `AmazonS3Builder`, or any other [`ObjectStore`]), e.g. for an SES receipt
/// rule's S3 action writing under `inbound/`:
///
/// ```no_run
/// # fn demo(capture: std::sync::Arc<switchboard::email::EmailCapture>,
/// #         store: std::sync::Arc<dyn switchboard::Store>) -> switchboard::Result<()> {
/// use std::sync::Arc;
/// use object_store::aws::AmazonS3Builder;
/// let bucket = AmazonS3Builder::from_env().with_bucket_name("mail").build()
///     .map_err(|e| switchboard::Error::new(switchboard::ErrorKind::Config, e.to_string()))?;
/// let source = switchboard::email::EmailBucketSource::new(Arc::new(bucket), "inbound", capture, store);
/// # let _ = source; Ok(()) }
/// ```
#[derive(Clone)]
pub struct EmailBucketSource {
    objects: Arc<dyn ObjectStore>,
    prefix: String,
    capture: Arc<EmailCapture>,
    progress: Progress,
    interval: Duration,
}

impl std::fmt::Debug for EmailBucketSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailBucketSource")
            .field("prefix", &self.prefix)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl EmailBucketSource {
    /// A source reading `objects` under `prefix` (no leading or trailing `/`
    /// needed; empty for the whole bucket), polling every 30 seconds.
    pub fn new(
        objects: Arc<dyn ObjectStore>,
        prefix: &str,
        capture: Arc<EmailCapture>,
        store: Arc<dyn Store>,
    ) -> Self {
        let prefix = prefix.trim_matches('/').to_owned();
        EmailBucketSource {
            objects,
            progress: Progress::new(store, "email-bucket"),
            prefix,
            capture,
            interval: Duration::from_secs(30),
        }
    }

    /// Polls every `interval` while running.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    fn folder(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// Where an input object goes: `<prefix>/<folder>/<rest of its key>`.
    fn destination(&self, location: &ObjectPath, folder: &str) -> ObjectPath {
        let key = location.as_ref();
        let rest = key
            .strip_prefix(self.prefix.as_str())
            .map(|r| r.trim_start_matches('/'))
            .unwrap_or(key);
        ObjectPath::from(format!("{}/{rest}", self.folder(folder)))
    }

    fn is_output(&self, location: &ObjectPath) -> bool {
        let key = location.as_ref();
        [PROCESSED_FOLDER, REJECTED_FOLDER]
            .iter()
            .any(|f| key.starts_with(&format!("{}/", self.folder(f))))
    }

    /// Processes every object waiting under the prefix, oldest first.
    pub async fn poll(&self, emitter: &Emitter) -> Result<BucketPoll> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let mut waiting: Vec<ObjectMeta> = self
            .objects
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(|e| bucket_error("listing", &self.prefix, e))?;
        waiting.retain(|m| !self.is_output(&m.location));
        waiting.sort_by(|a, b| {
            a.last_modified
                .cmp(&b.last_modified)
                .then_with(|| a.location.cmp(&b.location))
        });
        let mut poll = BucketPoll::default();
        for meta in waiting {
            match self.one(&meta, emitter).await {
                Ok(Done::Accepted) => poll.accepted += 1,
                Ok(Done::Rejected) => poll.rejected += 1,
                Ok(Done::Resumed) => poll.resumed += 1,
                Err(e) => {
                    tracing::warn!(object = %meta.location, error = %e, "email object left for the next poll");
                    poll.failed += 1;
                }
            }
        }
        Ok(poll)
    }

    async fn one(&self, meta: &ObjectMeta, emitter: &Emitter) -> Result<Done> {
        // S3 lists ETags; a store whose listing lacks them is asked per object.
        let e_tag = match &meta.e_tag {
            Some(t) => Some(t.clone()),
            None => match self.objects.head(&meta.location).await {
                Ok(m) => m.e_tag,
                Err(object_store::Error::NotFound { .. }) => return Ok(Done::Resumed),
                Err(e) => return Err(bucket_error("checking", meta.location.as_ref(), e)),
            },
        };
        let key = format!(
            "{}|{}",
            meta.location,
            e_tag.unwrap_or_else(|| {
                format!("{}@{}", meta.size, meta.last_modified.timestamp_millis())
            })
        );
        if let Some(folder) = self
            .progress
            .outcome(&key, &[PROCESSED_FOLDER, REJECTED_FOLDER])
            .await?
        {
            self.finish(&meta.location, &folder).await?;
            return Ok(Done::Resumed);
        }
        let (folder, done) = if meta.size > MAX_MESSAGE_BYTES as u64 {
            // Never downloaded: the parser would refuse it anyway.
            (REJECTED_FOLDER, Done::Rejected)
        } else {
            let raw = self
                .objects
                .get(&meta.location)
                .await
                .map_err(|e| bucket_error("reading", meta.location.as_ref(), e))?
                .bytes()
                .await
                .map_err(|e| bucket_error("reading", meta.location.as_ref(), e))?;
            match intake(&self.capture, emitter, &raw, &[]).await? {
                Intake::Published { .. } => (PROCESSED_FOLDER, Done::Accepted),
                Intake::Rejected(rejection) => {
                    tracing::info!(object = %meta.location, %rejection, "email object rejected");
                    (REJECTED_FOLDER, Done::Rejected)
                }
            }
        };
        self.progress.mark(&key, folder).await?;
        self.finish(&meta.location, folder).await?;
        Ok(done)
    }

    /// Copies the object into `folder` and deletes the original (a missing
    /// original means another replica finished first).
    async fn finish(&self, location: &ObjectPath, folder: &str) -> Result<()> {
        let to = self.destination(location, folder);
        match self.objects.copy(location, &to).await {
            Ok(()) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(bucket_error("copying", location.as_ref(), e)),
        }
        match self.objects.delete(location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(bucket_error("deleting", location.as_ref(), e)),
        }
    }
}

enum Done {
    Accepted,
    Rejected,
    Resumed,
}

fn bucket_error(op: &str, what: &str, e: object_store::Error) -> Error {
    let kind = match e {
        object_store::Error::NotFound { .. } => ErrorKind::NotFound,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => ErrorKind::Unauthorized,
        _ => ErrorKind::Network,
    };
    let err = Error::new(
        kind,
        format!("{op} {what:?} in the mail bucket failed: {e}"),
    );
    if kind == ErrorKind::Network {
        err.temporary()
    } else {
        err
    }
}

#[async_trait]
impl EventSource for EmailBucketSource {
    fn name(&self) -> &str {
        "email-bucket"
    }

    async fn run(&self, emitter: Emitter, mut shutdown: Shutdown) -> Result<()> {
        loop {
            if shutdown.is_requested() {
                return Ok(());
            }
            if let Err(e) = self.poll(&emitter).await {
                tracing::warn!(error = %e, prefix = %self.prefix, "mail bucket poll failed");
            }
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}
