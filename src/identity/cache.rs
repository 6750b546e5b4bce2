//! A bounded, expiring cache of single resolutions (identifier → `Resolution`) for lookups that must answer in milliseconds.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::Resolution;
use crate::Result;

struct Entry {
    resolution: Resolution,
    expires_at: Instant,
    generation: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    /// Keys in insertion order with the generation they were inserted with;
    /// stale pairs (re-inserted or removed keys) are skipped when popped.
    order: VecDeque<(String, u64)>,
    next_generation: u64,
    hits: u64,
    misses: u64,
}

impl Inner {
    /// Drops expired entries from the front of the insertion order.
    fn purge_front(&mut self, now: Instant) {
        while let Some((key, generation)) = self.order.front() {
            match self.map.get(key) {
                Some(e) if e.generation == *generation && e.expires_at > now => break,
                Some(e) if e.generation == *generation => {
                    self.map.remove(key);
                }
                _ => {}
            }
            self.order.pop_front();
        }
    }

    /// Evicts the oldest live entry.
    fn evict_oldest(&mut self) {
        while let Some((key, generation)) = self.order.pop_front() {
            if self
                .map
                .get(&key)
                .is_some_and(|e| e.generation == generation)
            {
                self.map.remove(&key);
                return;
            }
        }
    }
}

/// Cache statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Entries currently held (some may have expired and not been purged yet).
    pub entries: usize,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that were not.
    pub misses: u64,
}

/// A cache of resolutions keyed by identifier (an E.164 number, an email), with a
/// time to live and a bounded number of entries (the oldest go first).
///
/// `NotFound` answers may get a shorter time to live ([`ResolutionCache::negative_ttl`])
/// so a user created on the platform is found soon. Expiry follows `tokio::time`,
/// so a paused test clock controls it. Cheap per call: one mutex, one hash lookup
/// and a clone of the answer.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use switchboard::Resolution;
/// use switchboard::identity::ResolutionCache;
/// let cache = ResolutionCache::new(10_000, Duration::from_secs(300));
/// let r = cache
///     .get_or_resolve("+4930123456", || async { Ok(Resolution::Matched("U1".into())) })
///     .await
///     .unwrap();
/// assert_eq!(r, Resolution::Matched("U1".into()));
/// assert_eq!(cache.get("+4930123456"), Some(Resolution::Matched("U1".into())));
/// # });
/// ```
pub struct ResolutionCache {
    inner: Mutex<Inner>,
    capacity: usize,
    ttl: Duration,
    negative_ttl: Duration,
}

impl std::fmt::Debug for ResolutionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolutionCache")
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .field("negative_ttl", &self.negative_ttl)
            .field("stats", &self.stats())
            .finish()
    }
}

impl ResolutionCache {
    /// At most `capacity` entries (at least 1), each kept for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        ResolutionCache {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            ttl,
            negative_ttl: ttl,
        }
    }

    /// Keeps `NotFound` answers only for `ttl` (default: the same as matches).
    #[must_use]
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached resolution for `key`, if present and not expired.
    pub fn get(&self, key: &str) -> Option<Resolution> {
        let now = Instant::now();
        let mut inner = self.lock();
        let found = match inner.map.get(key) {
            Some(e) if e.expires_at > now => Some(e.resolution.clone()),
            Some(_) => {
                inner.map.remove(key);
                None
            }
            None => None,
        };
        if found.is_some() {
            inner.hits += 1;
        } else {
            inner.misses += 1;
        }
        found
    }

    /// Caches `resolution` for `key`, evicting expired entries, then the oldest
    /// one if the cache is full.
    pub fn insert(&self, key: impl Into<String>, resolution: Resolution) {
        let now = Instant::now();
        let ttl = if resolution == Resolution::NotFound {
            self.negative_ttl
        } else {
            self.ttl
        };
        let key = key.into();
        let mut inner = self.lock();
        inner.purge_front(now);
        if !inner.map.contains_key(&key) && inner.map.len() >= self.capacity {
            inner.evict_oldest();
        }
        let generation = inner.next_generation;
        inner.next_generation += 1;
        inner.order.push_back((key.clone(), generation));
        inner.map.insert(
            key,
            Entry {
                resolution,
                expires_at: now + ttl,
                generation,
            },
        );
        // Re-inserted keys leave stale pairs behind; compact now and then.
        if inner.order.len() > 2 * self.capacity + 16 {
            let Inner { map, order, .. } = &mut *inner;
            order.retain(|(k, g)| map.get(k).is_some_and(|e| e.generation == *g));
        }
    }

    /// Forgets `key` (e.g. after the platform user changed).
    pub fn invalidate(&self, key: &str) {
        self.lock().map.remove(key);
    }

    /// Forgets everything.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.order.clear();
    }

    /// Entry count, hits and misses.
    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            entries: inner.map.len(),
            hits: inner.hits,
            misses: inner.misses,
        }
    }

    /// The cached answer for `key`, or `resolve()`'s answer, which is cached.
    /// Errors are not cached. Concurrent misses for the same key may each call
    /// `resolve`.
    pub async fn get_or_resolve<F, Fut>(&self, key: &str, resolve: F) -> Result<Resolution>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Resolution>>,
    {
        if let Some(hit) = self.get(key) {
            return Ok(hit);
        }
        let resolution = resolve().await?;
        self.insert(key, resolution.clone());
        Ok(resolution)
    }
}
