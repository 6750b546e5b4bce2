//! A bounded, expiring cache of resolutions keyed by (tenant, connection, person), and a resolver wrapper that uses it, for lookups that must answer in milliseconds.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{IdentityResolver, Resolution, ResolveContext, SyncReport};
use crate::Result;
use crate::event::Person;
use crate::tenant::{ConnectionKey, TenantId};

struct Entry {
    resolution: Resolution,
    expires_at: Instant,
    generation: u64,
}

/// Entries of one tenant: per connection (the empty key for none), per key.
type TenantEntries = HashMap<ConnectionKey, HashMap<String, Entry>>;

/// Where an entry lives, in insertion order.
struct Slot {
    tenant: TenantId,
    connection: ConnectionKey,
    key: String,
    generation: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<TenantId, TenantEntries>,
    len: usize,
    /// Entries in insertion order with the generation they were inserted with;
    /// stale slots (re-inserted or removed keys) are skipped when popped.
    order: VecDeque<Slot>,
    next_generation: u64,
    hits: u64,
    misses: u64,
}

impl Inner {
    fn entry(&self, tenant: &TenantId, connection: &ConnectionKey, key: &str) -> Option<&Entry> {
        self.map.get(tenant)?.get(connection)?.get(key)
    }

    fn remove(&mut self, tenant: &TenantId, connection: &ConnectionKey, key: &str) -> bool {
        let Some(connections) = self.map.get_mut(tenant) else {
            return false;
        };
        let Some(entries) = connections.get_mut(connection) else {
            return false;
        };
        let removed = entries.remove(key).is_some();
        if entries.is_empty() {
            connections.remove(connection);
            if connections.is_empty() {
                self.map.remove(tenant);
            }
        }
        if removed {
            self.len -= 1;
        }
        removed
    }

    fn is_live(&self, slot: &Slot) -> bool {
        self.entry(&slot.tenant, &slot.connection, &slot.key)
            .is_some_and(|e| e.generation == slot.generation)
    }

    /// Drops expired entries from the front of the insertion order.
    fn purge_front(&mut self, now: Instant) {
        while let Some(slot) = self.order.front() {
            match self.entry(&slot.tenant, &slot.connection, &slot.key) {
                Some(e) if e.generation == slot.generation && e.expires_at > now => break,
                Some(e) if e.generation == slot.generation => {
                    if let Some(slot) = self.order.pop_front() {
                        self.remove(&slot.tenant, &slot.connection, &slot.key);
                    }
                    continue;
                }
                _ => {}
            }
            self.order.pop_front();
        }
    }

    /// Evicts the oldest live entry.
    fn evict_oldest(&mut self) {
        while let Some(slot) = self.order.pop_front() {
            if self.is_live(&slot) {
                self.remove(&slot.tenant, &slot.connection, &slot.key);
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

/// The connection part of a cache key: the context's connection key, or an
/// empty key (no allocation) when it has none.
fn connection_of(cx: &ResolveContext) -> std::borrow::Cow<'_, ConnectionKey> {
    match &cx.connection {
        Some(c) => std::borrow::Cow::Borrowed(&c.key),
        None => std::borrow::Cow::Owned(ConnectionKey {
            platform: String::new(),
            account: String::new(),
        }),
    }
}

/// A cache of resolutions keyed by **(tenant, connection, identifier)** — an
/// E.164 number, an email, a person id — with a time to live and a bounded
/// number of entries (the oldest go first, whichever tenant they belong to).
///
/// The tenant and connection come from the [`ResolveContext`], so one tenant's
/// answer is never served to another tenant, nor one workspace's to another
/// workspace of the same tenant. `NotFound` answers may get a shorter time to
/// live ([`ResolutionCache::negative_ttl`]) so a user created on the platform is
/// found soon. Expiry follows `tokio::time`, so a paused test clock controls it.
/// Cheap per call: one mutex, three hash lookups and a clone of the answer.
///
/// [`CachedResolver`] wraps an [`IdentityResolver`] with one.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use switchboard::Resolution;
/// use switchboard::identity::{ResolutionCache, ResolveContext};
/// use switchboard::tenant::TenantId;
/// let cache = ResolutionCache::new(10_000, Duration::from_secs(300));
/// let acme = ResolveContext::tenant(TenantId::new("acme").unwrap());
/// let r = cache
///     .get_or_resolve(&acme, "+4930123456", || async { Ok(Resolution::Matched("U1".into())) })
///     .await
///     .unwrap();
/// assert_eq!(r, Resolution::Matched("U1".into()));
/// assert_eq!(cache.get(&acme, "+4930123456"), Some(Resolution::Matched("U1".into())));
/// // Another tenant does not see it.
/// assert_eq!(cache.get(&ResolveContext::default_tenant(), "+4930123456"), None);
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

    /// The cached resolution of `key` within `cx`'s tenant and connection, if
    /// present and not expired.
    pub fn get(&self, cx: &ResolveContext, key: &str) -> Option<Resolution> {
        let now = Instant::now();
        let connection = connection_of(cx);
        let mut inner = self.lock();
        let found = match inner.entry(&cx.tenant, &connection, key) {
            Some(e) if e.expires_at > now => Some(e.resolution.clone()),
            Some(_) => {
                inner.remove(&cx.tenant, &connection, key);
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

    /// Caches `resolution` of `key` within `cx`'s tenant and connection,
    /// evicting expired entries, then the oldest one if the cache is full.
    pub fn insert(&self, cx: &ResolveContext, key: impl Into<String>, resolution: Resolution) {
        let now = Instant::now();
        let ttl = if resolution == Resolution::NotFound {
            self.negative_ttl
        } else {
            self.ttl
        };
        let key = key.into();
        let connection = connection_of(cx).into_owned();
        let mut inner = self.lock();
        inner.purge_front(now);
        if inner.entry(&cx.tenant, &connection, &key).is_none() && inner.len >= self.capacity {
            inner.evict_oldest();
        }
        let generation = inner.next_generation;
        inner.next_generation += 1;
        inner.order.push_back(Slot {
            tenant: cx.tenant.clone(),
            connection: connection.clone(),
            key: key.clone(),
            generation,
        });
        let previous = inner
            .map
            .entry(cx.tenant.clone())
            .or_default()
            .entry(connection)
            .or_default()
            .insert(
                key,
                Entry {
                    resolution,
                    expires_at: now + ttl,
                    generation,
                },
            );
        if previous.is_none() {
            inner.len += 1;
        }
        // Re-inserted keys leave stale slots behind; compact now and then.
        if inner.order.len() > 2 * self.capacity + 16 {
            let mut order = std::mem::take(&mut inner.order);
            order.retain(|slot| inner.is_live(slot));
            inner.order = order;
        }
    }

    /// Forgets `key` within `cx`'s tenant and connection (e.g. after the
    /// platform user changed).
    pub fn invalidate(&self, cx: &ResolveContext, key: &str) {
        let connection = connection_of(cx);
        self.lock().remove(&cx.tenant, &connection, key);
    }

    /// Forgets everything cached for `cx`'s tenant and connection (e.g. after
    /// a directory sync or a reinstall).
    pub fn invalidate_context(&self, cx: &ResolveContext) {
        let connection = connection_of(cx);
        let mut inner = self.lock();
        let removed = match inner.map.get_mut(&cx.tenant) {
            Some(connections) => {
                let removed = connections.remove(&*connection).map_or(0, |m| m.len());
                if connections.is_empty() {
                    inner.map.remove(&cx.tenant);
                }
                removed
            }
            None => 0,
        };
        inner.len -= removed;
    }

    /// Forgets everything.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.order.clear();
        inner.len = 0;
    }

    /// Entry count, hits and misses.
    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            entries: inner.len,
            hits: inner.hits,
            misses: inner.misses,
        }
    }

    /// The cached answer for `key` within `cx`'s tenant and connection, or
    /// `resolve()`'s answer, which is cached. Errors are not cached. Concurrent
    /// misses for the same key may each call `resolve`.
    pub async fn get_or_resolve<F, Fut>(
        &self,
        cx: &ResolveContext,
        key: &str,
        resolve: F,
    ) -> Result<Resolution>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Resolution>>,
    {
        if let Some(hit) = self.get(cx, key) {
            return Ok(hit);
        }
        let resolution = resolve().await?;
        self.insert(cx, key, resolution.clone());
        Ok(resolution)
    }
}

/// An [`IdentityResolver`] that answers repeated lookups from a
/// [`ResolutionCache`], keyed by (tenant, connection, person), and asks the
/// wrapped resolver otherwise.
///
/// A person is keyed by their id and identifiers (emails, phones), so a person
/// whose email changed is resolved again. Errors are never cached. A
/// [`IdentityResolver::sync`] goes to the wrapped resolver and then forgets the
/// cached answers of that tenant's connection, since the links may have moved.
pub struct CachedResolver {
    inner: Arc<dyn IdentityResolver>,
    cache: ResolutionCache,
}

impl std::fmt::Debug for CachedResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedResolver")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl CachedResolver {
    /// Wraps `inner` with `cache`.
    pub fn new(inner: Arc<dyn IdentityResolver>, cache: ResolutionCache) -> Self {
        CachedResolver { inner, cache }
    }

    /// The cache (statistics, invalidation).
    pub fn cache(&self) -> &ResolutionCache {
        &self.cache
    }

    /// The cache key of a person: id and identifiers, separated by a control
    /// character no id or identifier contains once trimmed.
    fn person_key(person: &Person) -> String {
        let mut key = String::with_capacity(person.id.len() + 32);
        key.push_str(&person.id);
        for email in &person.emails {
            key.push('\u{1f}');
            key.push_str(email.trim());
        }
        key.push('\u{1e}');
        for phone in &person.phones {
            key.push('\u{1f}');
            key.push_str(phone.trim());
        }
        key
    }
}

#[async_trait]
impl IdentityResolver for CachedResolver {
    async fn resolve(&self, cx: &ResolveContext, person: &Person) -> Result<Resolution> {
        let key = Self::person_key(person);
        self.cache
            .get_or_resolve(cx, &key, || self.inner.resolve(cx, person))
            .await
    }

    async fn sync(&self, cx: &ResolveContext, people: &[Person]) -> Result<SyncReport> {
        let report = self.inner.sync(cx, people).await;
        self.cache.invalidate_context(cx);
        report
    }
}
