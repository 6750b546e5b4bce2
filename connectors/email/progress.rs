//! `Progress`: "this message was processed" marks for the mail sources, kept as long-lived keys in the store's `OnceStore`.

use std::sync::Arc;

use chrono::{Duration, Utc};

use crate::Result;
use crate::store::Store;

/// How long a processed mark is kept (far longer than any redelivery).
const KEEP_DAYS: i64 = 400;

/// Processed marks of one source kind (`scope`) in the store.
#[derive(Clone)]
pub(crate) struct Progress {
    store: Arc<dyn Store>,
    scope: &'static str,
}

impl Progress {
    pub(crate) fn new(store: Arc<dyn Store>, scope: &'static str) -> Self {
        Progress { store, scope }
    }

    /// True if `key` is marked. Reads without marking: a key remembered until
    /// `now` is already forgotten (every store treats `expires_at <= now` as
    /// expired), so the probe leaves nothing behind.
    pub(crate) async fn is_marked(&self, key: &str) -> Result<bool> {
        let now = Utc::now();
        Ok(!self.store.remember_once(self.scope, key, now, now).await?)
    }

    /// Marks `key` processed.
    pub(crate) async fn set_mark(&self, key: &str) -> Result<()> {
        let now = Utc::now();
        self.store
            .remember_once(self.scope, key, now + Duration::days(KEEP_DAYS), now)
            .await?;
        Ok(())
    }

    /// The outcome remembered for `key`, one of `outcomes`.
    pub(crate) async fn outcome(&self, key: &str, outcomes: &[&str]) -> Result<Option<String>> {
        for o in outcomes {
            if self.is_marked(&format!("{key}|{o}")).await? {
                return Ok(Some((*o).to_owned()));
            }
        }
        Ok(None)
    }

    /// Remembers `outcome` for `key`.
    pub(crate) async fn mark(&self, key: &str, outcome: &str) -> Result<()> {
        self.set_mark(&format!("{key}|{outcome}")).await
    }
}
