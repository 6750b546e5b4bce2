//! `EmlFileDestination`: the file transport — each delivery is written as a complete `.eml` message into a folder (the embedded default and the examples' outbox).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use lettre::message::Mailbox;

use super::config::parse_mailbox;
use super::message::{self, UnsubscribeFn};
use crate::Result;
use crate::destination::{Capabilities, Delivery, DeliveryError, Destination, Receipt};
use crate::message::MessageFormat;

/// Writes each delivery as `<dir>/<delivery id>.eml` (written to a temporary
/// name and renamed, so a reader never sees half a file). A retry of the same
/// delivery overwrites its file, so the folder holds each delivery once.
pub struct EmlFileDestination {
    name: String,
    dir: PathBuf,
    from: Mailbox,
    unsubscribe: UnsubscribeFn,
}

impl std::fmt::Debug for EmlFileDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmlFileDestination")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl EmlFileDestination {
    /// Writes into `dir` (created if missing) as sender `from`; named `email`.
    pub fn new(dir: impl Into<PathBuf>, from: &str) -> Result<EmlFileDestination> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(EmlFileDestination {
            name: "email".to_owned(),
            dir,
            from: parse_mailbox(from, "from")?,
            unsubscribe: Arc::new(message::default_unsubscribe),
        })
    }

    /// Renames the destination (default `email`).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Chooses the `List-Unsubscribe` URL of each delivery, as
    /// [`crate::email::SmtpDestination::unsubscribe_url`].
    #[must_use]
    pub fn unsubscribe_url(
        mut self,
        f: impl Fn(&Delivery) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.unsubscribe = Arc::new(f);
        self
    }

    /// The folder written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[async_trait]
impl Destination for EmlFileDestination {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dm: true,
            channel: false,
            format: MessageFormat::Html,
            ..Capabilities::default()
        }
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<Receipt, DeliveryError> {
        let (email, id, to) =
            message::build(delivery, &self.from, None, (self.unsubscribe)(delivery))?;
        let bytes = email.formatted();
        let path = self.dir.join(format!("{}.eml", delivery.id));
        let tmp = self.dir.join(format!(".{}.eml.tmp", delivery.id));
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<PathBuf> {
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, &path)?;
            Ok(path)
        })
        .await
        .map_err(|e| DeliveryError::temporary(format!("the file writer stopped: {e}")))?
        .map_err(|e| DeliveryError::temporary(format!("could not write the .eml file: {e}")))?;
        Ok(Receipt {
            remote_id: Some(id),
            location: Some(format!("{} ({to})", written.display())),
        })
    }
}
