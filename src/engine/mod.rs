//! The `Switchboard` engine: routes with per-tenant rules, durable publish, workers with leases, retries, pacing, per-connection parking and dead letters.
//!
//! The worker loop lives in `worker.rs`; tenants' connections and parking in
//! `connections.rs`; status in `status.rs`.

mod connections;
mod pace;
mod retry;
mod route;
mod status;
mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Notify;

pub use pace::SharedPacing;
pub use retry::{RetryDecision, RetryPolicy};
pub use route::{Route, RouteInfo};
pub use status::{DestinationStatus, StatusNotice};

use self::connections::ConnectionCache;
use self::pace::Pacer;
use self::route::{CompiledRoute, Pattern};
use crate::clock::EngineClock;
use crate::destination::{Capabilities, DeliveryId, Destination};
use crate::event::{Event, Person};
use crate::identity::{IdentityResolver, ResolveContext};
use crate::source::{Emitter, EventSource, Shutdown};
use crate::store::{DeadLetter, EnqueueOutcome, NewDelivery, RouteRule, Store};
use crate::template::Templates;
use crate::tenant::TenantId;
use crate::{Error, ErrorKind, Result};

/// Worker tuning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkerConfig {
    /// Most deliveries claimed in one store call.
    pub batch_size: usize,
    /// How long a claim is held before another worker may take it over; renewed
    /// while the delivery is being worked.
    pub lease: Duration,
    /// Deliveries worked at once (each a different target key).
    pub concurrency: usize,
    /// A paced delivery waits in the worker up to this long; longer waits are
    /// written back to the store as a deferral.
    pub max_pacing_wait: Duration,
    /// How often an idle `run` polls the store (for work written by other instances).
    pub poll_interval: Duration,
    /// The longest one `deliver()` or `resolve()` call may take before it counts
    /// as a failed (temporary) attempt; per destination with
    /// [`SwitchboardBuilder::destination_timeout`].
    pub call_timeout: Duration,
    /// On shutdown, how long `run` waits for deliveries in flight before giving
    /// the rest back to the store unattempted.
    pub shutdown_grace: Duration,
    /// Extra spacing over every platform limit (0.1 = each interval 10 % longer),
    /// so jitter between switchboard and the platform cannot cause a 429.
    pub pacing_margin: f64,
    /// Delivered deliveries (and their log) are pruned this long after they
    /// were delivered; `None` keeps them forever. Dead letters are kept until
    /// replayed.
    pub retention: Option<Duration>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            batch_size: 128,
            lease: Duration::from_secs(60),
            concurrency: 32,
            max_pacing_wait: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            call_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            pacing_margin: 0.1,
            retention: Some(Duration::from_secs(30 * 24 * 3600)),
        }
    }
}

/// What `publish` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishOutcome {
    /// The event's id.
    pub event_id: String,
    /// Deliveries created (0 for a duplicate).
    pub deliveries: usize,
    /// True if the event id had been published before (nothing new was created).
    pub duplicate: bool,
}

/// Counts from [`Switchboard::run_until_idle`] and [`Switchboard::drain`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// Delivered.
    pub delivered: u64,
    /// Attempts that failed and were scheduled for retry.
    pub retried: u64,
    /// Dead-lettered.
    pub dead: u64,
    /// Parked (connection disconnected or missing).
    pub parked: u64,
    /// Paced: written back to wait for a rate-limit slot, or snoozed after a
    /// platform's `Retry-After`.
    pub deferred: u64,
}

impl RunSummary {
    fn merge(&mut self, o: RunSummary) {
        self.delivered += o.delivered;
        self.retried += o.retried;
        self.dead += o.dead;
        self.parked += o.parked;
        self.deferred += o.deferred;
    }
}

pub(crate) struct DestinationEntry {
    pub(crate) destination: Arc<dyn Destination>,
    pub(crate) format: crate::message::MessageFormat,
    pub(crate) pacer: Pacer,
    /// The platform whose connections it uses.
    pub(crate) platform: Option<String>,
    pub(crate) fixed_credentials: bool,
    pub(crate) timeout: Duration,
    /// Its limits, for the shared pacer.
    pub(crate) global_limits: Vec<crate::destination::RateLimit>,
    pub(crate) target_limits: Vec<crate::destination::RateLimit>,
    /// The parking scope of its deliveries.
    pub(crate) scope: String,
}

/// A tenant's rules by route name, and when they were read.
type CachedRules = (tokio::time::Instant, Arc<HashMap<String, RouteRule>>);

/// How long a tenant's rules are cached before they are read again (changes
/// made through this handle apply at once).
const RULES_TTL: Duration = Duration::from_secs(1);

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) destinations: HashMap<String, DestinationEntry>,
    pub(crate) resolvers: HashMap<String, Arc<dyn IdentityResolver>>,
    sources: Vec<Arc<dyn EventSource>>,
    scheduler: Option<Arc<crate::schedule::Scheduler>>,
    pub(crate) routes: Vec<CompiledRoute>,
    pub(crate) templates: Templates,
    pub(crate) retry: RetryPolicy,
    pub(crate) worker: WorkerConfig,
    pub(crate) clock: EngineClock,
    pub(crate) wake: Notify,
    pub(crate) connections: ConnectionCache,
    rules: Mutex<HashMap<TenantId, CachedRules>>,
    pub(crate) store_error: Mutex<Option<(DateTime<Utc>, String)>>,
    pub(crate) shared_pacing: Option<Arc<dyn SharedPacing>>,
    pub(crate) notices: status::Notices,
}

/// The handle a host keeps: publish events, run workers, inspect and repair.
///
/// Built with [`Switchboard::builder`]. Cheap to clone.
#[derive(Clone)]
pub struct Switchboard {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Switchboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Switchboard")
            .field(
                "destinations",
                &self.inner.destinations.keys().collect::<Vec<_>>(),
            )
            .field("routes", &self.inner.routes.len())
            .finish_non_exhaustive()
    }
}

/// Builder for [`Switchboard`].
#[must_use]
pub struct SwitchboardBuilder {
    store: Option<Arc<dyn Store>>,
    destinations: Vec<Arc<dyn Destination>>,
    timeouts: HashMap<String, Duration>,
    resolvers: Vec<(String, Arc<dyn IdentityResolver>)>,
    sources: Vec<Arc<dyn EventSource>>,
    scheduler: Option<Arc<crate::schedule::Scheduler>>,
    routes: Vec<Route>,
    retry: RetryPolicy,
    worker: WorkerConfig,
    shared_pacing: Option<Arc<dyn SharedPacing>>,
}

impl std::fmt::Debug for SwitchboardBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwitchboardBuilder").finish_non_exhaustive()
    }
}

impl Switchboard {
    /// Starts building a switchboard.
    pub fn builder() -> SwitchboardBuilder {
        SwitchboardBuilder {
            store: None,
            destinations: Vec::new(),
            timeouts: HashMap::new(),
            resolvers: Vec::new(),
            sources: Vec::new(),
            scheduler: None,
            routes: Vec::new(),
            retry: RetryPolicy::default(),
            worker: WorkerConfig::default(),
            shared_pacing: None,
        }
    }
}

impl SwitchboardBuilder {
    /// The store (required).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }
    /// The store, already shared.
    pub fn store_arc(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }
    /// Adds a destination (its `name()` is what routes refer to).
    pub fn destination(mut self, destination: impl Destination + 'static) -> Self {
        self.destinations.push(Arc::new(destination));
        self
    }
    /// Adds a shared destination.
    pub fn destination_arc(mut self, destination: Arc<dyn Destination>) -> Self {
        self.destinations.push(destination);
        self
    }
    /// The longest one `deliver()` / `resolve()` call of `destination` may take
    /// (default [`WorkerConfig::call_timeout`]).
    pub fn destination_timeout(
        mut self,
        destination: impl Into<String>,
        timeout: Duration,
    ) -> Self {
        self.timeouts.insert(destination.into(), timeout);
        self
    }
    /// The identity resolver for DM targets of destination `destination`.
    pub fn resolver(
        mut self,
        destination: impl Into<String>,
        resolver: impl IdentityResolver + 'static,
    ) -> Self {
        self.resolvers
            .push((destination.into(), Arc::new(resolver)));
        self
    }
    /// A shared identity resolver for destination `destination`.
    pub fn resolver_arc(
        mut self,
        destination: impl Into<String>,
        resolver: Arc<dyn IdentityResolver>,
    ) -> Self {
        self.resolvers.push((destination.into(), resolver));
        self
    }
    /// Adds an event source, run by [`Switchboard::run`].
    pub fn source(mut self, source: impl EventSource + 'static) -> Self {
        self.sources.push(Arc::new(source));
        self
    }
    /// Scheduled integrations (e.g. CSV imports), run by [`Switchboard::run`].
    pub fn scheduler(mut self, scheduler: crate::schedule::Scheduler) -> Self {
        self.scheduler = Some(Arc::new(scheduler));
        self
    }
    /// Adds a route.
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }
    /// The retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }
    /// Worker tuning.
    pub fn worker(mut self, config: WorkerConfig) -> Self {
        self.worker = config;
        self
    }
    /// Pacing shared by every instance on the store (e.g.
    /// `PostgresStore::pacer()`): platform limits then hold for the sum of all
    /// replicas, at the cost of one store round trip per limit and delivery.
    pub fn shared_pacing(mut self, pacer: Arc<dyn SharedPacing>) -> Self {
        self.shared_pacing = Some(pacer);
        self
    }

    /// Validates the wiring (every route's destination exists, templates compile,
    /// names are unique, timeouts fit in the lease) and returns the handle.
    pub fn build(self) -> Result<Switchboard> {
        let store = self
            .store
            .ok_or_else(|| Error::config("a store is required"))?;
        let mut worker = self.worker;
        worker.batch_size = worker.batch_size.max(1);
        worker.concurrency = worker.concurrency.max(1);
        if worker.lease < Duration::from_secs(1) {
            return Err(Error::config("the worker lease must be at least 1 second"));
        }
        let clock = EngineClock::new();
        let mut destinations = HashMap::new();
        let mut formats = HashMap::new();
        for d in self.destinations {
            let name = d.name().to_owned();
            let caps: Capabilities = d.capabilities();
            formats.insert(name.clone(), caps.format);
            // Limits the destination keeps exactly itself are paced only
            // across instances (shared pacing), not a second time here.
            let exact = d.exact_limits();
            let local = |limits: &[crate::destination::RateLimit]| {
                limits
                    .iter()
                    .copied()
                    .filter(|l| !exact.contains(l))
                    .collect::<Vec<_>>()
            };
            let pacer = Pacer::new(
                clock,
                &local(&caps.global_limits),
                &local(&caps.target_limits),
                worker.pacing_margin,
            );
            let platform = d.platform().map(str::to_owned);
            let scope = match &platform {
                Some(p) => p.clone(),
                None => format!("destination:{name}"),
            };
            let timeout = self
                .timeouts
                .get(&name)
                .copied()
                .unwrap_or(worker.call_timeout);
            let entry = DestinationEntry {
                global_limits: caps.global_limits.clone(),
                target_limits: caps.target_limits.clone(),
                fixed_credentials: d.has_fixed_credentials(),
                destination: d,
                format: caps.format,
                pacer,
                platform,
                timeout,
                scope,
            };
            if destinations.insert(name.clone(), entry).is_some() {
                return Err(Error::config(format!(
                    "two destinations are named {name:?}"
                )));
            }
        }
        for name in self.timeouts.keys() {
            if !destinations.contains_key(name) {
                return Err(Error::config(format!(
                    "timeout set for unknown destination {name:?}"
                )));
            }
        }
        let mut resolvers = HashMap::new();
        for (name, r) in self.resolvers {
            if !destinations.contains_key(&name) {
                return Err(Error::config(format!(
                    "resolver registered for unknown destination {name:?}"
                )));
            }
            resolvers.insert(name, r);
        }
        let mut templates = Templates::new();
        let mut routes = Vec::new();
        let mut names = HashSet::new();
        for r in self.routes {
            let name = r.resolved_name();
            if !names.insert(name.clone()) {
                return Err(Error::config(format!(
                    "two routes are named {name:?}; give one a name with .named()"
                )));
            }
            let Some(format) = formats.get(&r.destination).copied() else {
                return Err(Error::config(format!(
                    "route {name:?} sends to unknown destination {:?}",
                    r.destination
                )));
            };
            let text_key = templates.add(&format!("{name}#text"), format, &r.template)?;
            let title_key = match &r.title {
                Some(t) => Some(templates.add(&format!("{name}#title"), format, t)?),
                None => None,
            };
            routes.push(CompiledRoute {
                name,
                pattern: Pattern::parse(&r.pattern),
                pattern_text: r.pattern,
                destination: r.destination,
                target: r.target,
                text_key,
                title_key,
                enabled: Arc::new(std::sync::atomic::AtomicBool::new(r.enabled)),
            });
        }
        Ok(Switchboard {
            inner: Arc::new(Inner {
                store,
                destinations,
                resolvers,
                sources: self.sources,
                scheduler: self.scheduler,
                routes,
                templates,
                retry: self.retry,
                worker,
                clock,
                wake: Notify::new(),
                connections: ConnectionCache::default(),
                rules: Mutex::new(HashMap::new()),
                store_error: Mutex::new(None),
                shared_pacing: self.shared_pacing,
                notices: status::Notices::default(),
            }),
        })
    }
}

impl Switchboard {
    /// Publishes an event: the event and its fan-out (one delivery per matching
    /// route that is on for the event's tenant, to the tenant's target) are
    /// written to the store in one transaction before this returns. Publishing
    /// an id that was published before creates nothing.
    pub async fn publish(&self, event: Event) -> Result<PublishOutcome> {
        self.inner.publish(event).await
    }

    /// An [`Emitter`] that publishes into this switchboard.
    pub fn emitter(&self) -> Emitter {
        Emitter {
            inner: self.inner.clone(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Processes every delivery that is due now (waiting out short pacing delays)
    /// and returns what happened. Deliveries scheduled later (backoff, long pacing)
    /// are left for a later call.
    pub async fn run_until_idle(&self) -> Result<RunSummary> {
        self.inner.pump(None).await
    }

    /// Processes deliveries, sleeping until the next one is due, until nothing is
    /// queued or in flight (sent, dead and parked deliveries remain) or `timeout`
    /// passes.
    pub async fn drain(&self, timeout: Duration) -> Result<RunSummary> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut summary = RunSummary::default();
        loop {
            summary.merge(self.run_until_idle().await?);
            let Some(next) = self.inner.store.next_due().await? else {
                return Ok(summary);
            };
            let wait = self
                .inner
                .clock
                .until(next)
                .min(self.inner.worker.poll_interval);
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(summary);
            }
            tokio::time::sleep(wait.min(deadline - now)).await;
        }
    }

    /// The scheduler of integrations, if one was configured.
    pub fn scheduler(&self) -> Option<&crate::schedule::Scheduler> {
        self.inner.scheduler.as_deref()
    }

    /// Runs sources, schedules and workers until `shutdown` fires, then returns
    /// within about [`WorkerConfig::shutdown_grace`]: deliveries still in flight
    /// are given back to the store unattempted, scheduled runs get the signal.
    /// Work written by other instances sharing the store is picked up within
    /// `poll_interval`. Store errors are retried with backoff and shown by
    /// [`Switchboard::last_store_error`]; they never end `run`.
    pub async fn run(&self, shutdown: Shutdown) -> Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for source in &self.inner.sources {
            let source = source.clone();
            let emitter = self.emitter();
            let sd = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = source.run(emitter, sd).await {
                    tracing::error!(source = source.name(), error = %e, "event source failed");
                }
            });
        }
        if let Some(scheduler) = &self.inner.scheduler {
            let scheduler = scheduler.clone();
            let sd = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = scheduler.run(sd).await {
                    tracing::error!(error = %e, "scheduler failed");
                }
            });
        }
        let result = self.inner.pump(Some(shutdown)).await.map(|_| ());
        // Sources and the scheduler got the same signal; give them the grace
        // period to finish (the scheduler records cancelled runs), then stop.
        let scheduler_grace = self
            .inner
            .scheduler
            .as_ref()
            .map_or(Duration::ZERO, |s| s.grace());
        let grace = self.inner.worker.shutdown_grace.max(scheduler_grace) + Duration::from_secs(3);
        let _ =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        tasks.shutdown().await;
        result
    }

    /// The last store error the workers met (they retry with backoff), with its
    /// time; cleared by the next successful store call of the worker loop.
    pub fn last_store_error(&self) -> Option<(DateTime<Utc>, String)> {
        self.inner
            .store_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or(None)
    }

    /// Dead letters of every tenant, oldest first (at most `limit`).
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        self.inner.store.dead_letters(None, limit).await
    }

    /// One tenant's dead letters, oldest first (at most `limit`).
    pub async fn tenant_dead_letters(
        &self,
        tenant: &TenantId,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        self.inner.store.dead_letters(Some(tenant), limit).await
    }

    /// Re-queues a dead letter; it is due at once with its attempts reset.
    pub async fn replay(&self, id: DeliveryId) -> Result<()> {
        self.inner.store.replay(id, self.inner.clock.now()).await?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Every route and whether it is switched on (globally).
    pub fn routes(&self) -> Vec<RouteInfo> {
        self.inner
            .routes
            .iter()
            .map(|r| RouteInfo {
                name: r.name.clone(),
                pattern: r.pattern_text.clone(),
                destination: r.destination.clone(),
                target: r.target.clone(),
                enabled: r.is_enabled(),
            })
            .collect()
    }

    /// Switches a route on or off for every tenant, in this process (tenants'
    /// own choices are [`Switchboard::set_rule`]). Takes effect for events
    /// published afterwards.
    pub fn set_route_enabled(&self, name: &str, enabled: bool) -> Result<()> {
        let route = self.inner.route(name)?;
        route.enabled.store(enabled, Ordering::Relaxed);
        Ok(())
    }

    /// Stores a tenant's rule for a route (on/off, target override); every
    /// instance sharing the store applies it within a second, this one at once.
    /// A rule with neither field set restores the route's defaults.
    pub async fn set_rule(&self, rule: RouteRule) -> Result<()> {
        self.inner.route(&rule.route)?;
        self.inner.store.put_rule(&rule).await?;
        if let Ok(mut cache) = self.inner.rules.lock() {
            cache.remove(&rule.tenant);
        }
        Ok(())
    }

    /// A tenant's rules.
    pub async fn rules(&self, tenant: &TenantId) -> Result<Vec<RouteRule>> {
        self.inner.store.rules(tenant).await
    }

    /// Runs a bulk identity sync of one tenant for `destination` with its
    /// registered resolver and the tenant's connection.
    pub async fn sync_identities(
        &self,
        tenant: &TenantId,
        destination: &str,
        people: &[Person],
    ) -> Result<crate::identity::SyncReport> {
        let resolver = self.inner.resolvers.get(destination).ok_or_else(|| {
            Error::config(format!(
                "no identity resolver for destination {destination:?}"
            ))
        })?;
        let entry = self.inner.entry(destination)?;
        let connection = match &entry.platform {
            Some(p) => {
                let c = self.inner.store.default_connection(tenant, p).await?;
                match c {
                    Some(c) => Some(Arc::new(c)),
                    None if entry.fixed_credentials && tenant.is_default() => None,
                    None => {
                        return Err(Error::new(
                            ErrorKind::NotFound,
                            format!("tenant {tenant} has no {p} connection"),
                        ));
                    }
                }
            }
            None => None,
        };
        let cx = ResolveContext {
            tenant: tenant.clone(),
            connection,
        };
        resolver.sync(&cx, people).await
    }

    /// The engine's current time (follows tokio's clock; pausable in tests).
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Pacing keys currently tracked by `destination`'s limiters (idle keys are
    /// evicted periodically by `run`, or by [`Switchboard::evict_idle_pacing`]).
    pub fn pacing_keys(&self, destination: &str) -> Result<usize> {
        Ok(self.inner.entry(destination)?.pacer.tracked_keys())
    }

    /// Forgets pacing state of keys that are idle (back at full capacity).
    pub fn evict_idle_pacing(&self) {
        for d in self.inner.destinations.values() {
            d.pacer.evict_idle();
        }
    }
}

impl Inner {
    pub(crate) fn route(&self, name: &str) -> Result<&CompiledRoute> {
        self.routes
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no route named {name:?}")))
    }

    pub(crate) fn entry(&self, name: &str) -> Result<&DestinationEntry> {
        self.destinations.get(name).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("no destination named {name:?}"),
            )
        })
    }

    async fn tenant_rules(&self, tenant: &TenantId) -> Result<Arc<HashMap<String, RouteRule>>> {
        let now = tokio::time::Instant::now();
        if let Ok(cache) = self.rules.lock() {
            if let Some((at, rules)) = cache.get(tenant) {
                if now.saturating_duration_since(*at) < RULES_TTL {
                    return Ok(rules.clone());
                }
            }
        }
        let rules: HashMap<String, RouteRule> = self
            .store
            .rules(tenant)
            .await?
            .into_iter()
            .map(|r| (r.route.clone(), r))
            .collect();
        let rules = Arc::new(rules);
        if let Ok(mut cache) = self.rules.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(tenant.clone(), (now, rules.clone()));
        }
        Ok(rules)
    }

    pub(crate) async fn publish(&self, event: Event) -> Result<PublishOutcome> {
        if event.id.is_empty() || event.kind.is_empty() {
            return Err(Error::invalid_input("event id and kind must not be empty"));
        }
        let rules = self.tenant_rules(&event.tenant).await?;
        let subject = event.subject.as_ref().map(|p| p.id.as_str());
        let mut deliveries = Vec::new();
        for r in &self.routes {
            if !r.pattern.matches(&event.kind) {
                continue;
            }
            let rule = rules.get(&r.name);
            let enabled = rule
                .and_then(|x| x.enabled)
                .unwrap_or_else(|| r.is_enabled());
            if !enabled {
                continue;
            }
            let target = rule
                .and_then(|x| x.target.clone())
                .unwrap_or_else(|| r.target.clone());
            let scope = self.destinations.get(&r.destination).map_or_else(
                || format!("destination:{}", r.destination),
                |d| d.scope.clone(),
            );
            let key = format!(
                "{}|{}|{}",
                event.tenant,
                r.destination,
                target.rate_key(subject)
            );
            deliveries.push(NewDelivery {
                route: r.name.clone(),
                destination: r.destination.clone(),
                target,
                scope,
                key,
            });
        }
        let outcome = self
            .store
            .enqueue(&event, &deliveries, self.clock.now())
            .await?;
        let (n, duplicate) = match outcome {
            EnqueueOutcome::Accepted { deliveries } => (deliveries, false),
            EnqueueOutcome::Duplicate => (0, true),
        };
        if n > 0 {
            self.wake.notify_one();
        }
        Ok(PublishOutcome {
            event_id: event.id,
            deliveries: n,
            duplicate,
        })
    }
}
