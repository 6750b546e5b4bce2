//! `MemoryStore`: the whole `Store` in process memory, for tests, benchmarks and throwaway use.
//!
//! One mutex guards everything, so every method is atomic. The outbox keeps an
//! index of the claimable head of each ordering key, so claims cost
//! `O(claimed · log n)` rather than a scan. Connection secrets are kept sealed
//! with the store's [`Keyring`] exactly as a durable store would keep them, and
//! opened on read.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::attributes::DEFAULT_ATTRIBUTE_CAP;
use crate::secret::Keyring;
use crate::{Error, Result};

mod outbox;
mod outbox_store;
mod query;
mod records;

/// A [`crate::Store`] kept in memory: fast, and gone when the process exits.
///
/// Clones share the same data. Secrets are sealed with the keyring given to
/// [`MemoryStore::with_keyring`]; without one, writing a connection with
/// secrets fails with [`crate::ErrorKind::Secret`], as with every store.
#[derive(Clone)]
pub struct MemoryStore {
    outbox: Arc<Mutex<outbox::Outbox>>,
    records: Arc<Mutex<records::Records>>,
    attribute_cap: usize,
    keyring: Option<Arc<Keyring>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("attribute_cap", &self.attribute_cap)
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store with the default attribute cap and no keyring.
    pub fn new() -> Self {
        MemoryStore {
            outbox: Arc::new(Mutex::new(outbox::Outbox::default())),
            records: Arc::new(Mutex::new(records::Records::default())),
            attribute_cap: DEFAULT_ATTRIBUTE_CAP,
            keyring: None,
        }
    }

    /// Sets the cap on distinct attribute names per tenant.
    #[must_use]
    pub fn with_attribute_cap(mut self, cap: usize) -> Self {
        self.attribute_cap = cap;
        self
    }

    /// Seals connection secrets with `keyring` (required to store secrets).
    #[must_use]
    pub fn with_keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = Some(Arc::new(keyring));
        self
    }

    fn outbox(&self) -> Result<MutexGuard<'_, outbox::Outbox>> {
        self.outbox
            .lock()
            .map_err(|_| Error::store("memory store lock poisoned"))
    }

    fn records(&self) -> Result<MutexGuard<'_, records::Records>> {
        self.records
            .lock()
            .map_err(|_| Error::store("memory store lock poisoned"))
    }
}

fn expires(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    crate::clock::later(now, lease)
}
