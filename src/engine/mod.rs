//! The `Switchboard` engine: routes, durable publish, workers with leases, retries, pacing, parking and dead letters.

mod pace;
mod retry;
mod route;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::Notify;

pub use retry::{RetryDecision, RetryPolicy};
pub use route::{Route, RouteInfo};

use self::pace::Pacer;
use self::route::{CompiledRoute, Pattern};
use crate::clock::{EngineClock, later};
use crate::destination::{Capabilities, Delivery, DeliveryError, DeliveryId, Destination};
use crate::event::{Event, Person};
use crate::identity::{IdentityResolver, Resolution};
use crate::message::{Message, Target};
use crate::source::{Emitter, EventSource, Shutdown};
use crate::store::{
    ClaimedDelivery, Completion, DeadLetter, EnqueueOutcome, NewDelivery, Outcome, Store,
};
use crate::template::Templates;
use crate::{Error, ErrorKind, Result};

/// Worker tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Deliveries claimed per batch.
    pub batch_size: usize,
    /// How long a claim is held before another worker may take it over.
    pub lease: Duration,
    /// Target keys processed concurrently within a batch.
    pub concurrency: usize,
    /// A paced delivery waits in the worker up to this long; longer waits are
    /// written back to the store as a deferral.
    pub max_pacing_wait: Duration,
    /// How often an idle `run` polls the store (for work written by other instances).
    pub poll_interval: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            batch_size: 128,
            lease: Duration::from_secs(60),
            concurrency: 32,
            max_pacing_wait: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
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
    /// Parked (destination disconnected).
    pub parked: u64,
    /// Paced: written back to wait for a rate-limit slot.
    pub deferred: u64,
}

impl RunSummary {
    fn add(&mut self, o: &Outcome) {
        match o {
            Outcome::Sent(_) => self.delivered += 1,
            Outcome::Retry { .. } => self.retried += 1,
            Outcome::Dead { .. } => self.dead += 1,
            Outcome::Parked { .. } => self.parked += 1,
            Outcome::Defer { .. } => self.deferred += 1,
        }
    }
    fn merge(&mut self, o: RunSummary) {
        self.delivered += o.delivered;
        self.retried += o.retried;
        self.dead += o.dead;
        self.parked += o.parked;
        self.deferred += o.deferred;
    }
}

/// The health of one destination, for an admin page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestinationStatus {
    /// The destination's name.
    pub name: String,
    /// False after the platform said the credentials are revoked, until `reconnect`.
    pub connected: bool,
    /// Why it was disconnected.
    pub disconnected_reason: Option<String>,
    /// Deliveries waiting (queued or in flight).
    pub queue_depth: u64,
    /// Deliveries parked while disconnected.
    pub parked: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Delivered so far.
    pub sent: u64,
    /// Last successful delivery.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Last error.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<DateTime<Utc>>,
}

struct DestinationEntry {
    destination: Arc<dyn Destination>,
    format: crate::message::MessageFormat,
    pacer: Pacer,
}

pub(crate) struct Inner {
    store: Arc<dyn Store>,
    destinations: HashMap<String, DestinationEntry>,
    resolvers: HashMap<String, Arc<dyn IdentityResolver>>,
    sources: Vec<Arc<dyn EventSource>>,
    scheduler: Option<Arc<crate::schedule::Scheduler>>,
    routes: Vec<CompiledRoute>,
    templates: Templates,
    retry: RetryPolicy,
    worker: WorkerConfig,
    clock: EngineClock,
    disconnected: RwLock<HashSet<String>>,
    wake: Notify,
}

/// The handle a host keeps: publish events, run workers, inspect and repair.
///
/// Built with [`Switchboard::builder`]. Cheap to clone.
#[derive(Clone)]
pub struct Switchboard {
    inner: Arc<Inner>,
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
    resolvers: Vec<(String, Arc<dyn IdentityResolver>)>,
    sources: Vec<Arc<dyn EventSource>>,
    scheduler: Option<Arc<crate::schedule::Scheduler>>,
    routes: Vec<Route>,
    retry: RetryPolicy,
    worker: WorkerConfig,
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
            resolvers: Vec::new(),
            sources: Vec::new(),
            scheduler: None,
            routes: Vec::new(),
            retry: RetryPolicy::default(),
            worker: WorkerConfig::default(),
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

    /// Validates the wiring (every route's destination exists, templates compile,
    /// names are unique) and returns the handle.
    pub fn build(self) -> Result<Switchboard> {
        let store = self
            .store
            .ok_or_else(|| Error::config("a store is required"))?;
        let clock = EngineClock::new();
        let mut destinations = HashMap::new();
        let mut formats = HashMap::new();
        for d in self.destinations {
            let name = d.name().to_owned();
            let caps: Capabilities = d.capabilities();
            formats.insert(name.clone(), caps.format);
            let pacer = Pacer::new(clock, &caps.global_limits, &caps.target_limits);
            if destinations
                .insert(
                    name.clone(),
                    DestinationEntry {
                        destination: d,
                        format: caps.format,
                        pacer,
                    },
                )
                .is_some()
            {
                return Err(Error::config(format!(
                    "two destinations are named {name:?}"
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
        let mut worker = self.worker;
        worker.batch_size = worker.batch_size.max(1);
        worker.concurrency = worker.concurrency.max(1);
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
                disconnected: RwLock::new(HashSet::new()),
                wake: Notify::new(),
            }),
        })
    }
}

impl Switchboard {
    /// Publishes an event: the event and its fan-out (one delivery per enabled
    /// matching route) are written to the store in one transaction before this
    /// returns. Publishing an id that was published before creates nothing.
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
        self.inner.refresh_disconnected().await?;
        let mut summary = RunSummary::default();
        loop {
            let n = self.inner.process_batch(&mut summary).await?;
            if n == 0 {
                return Ok(summary);
            }
        }
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
            let wait = self.inner.clock.until(next);
            let now = tokio::time::Instant::now();
            if now + wait > deadline {
                return Ok(summary);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// The scheduler of integrations, if one was configured.
    pub fn scheduler(&self) -> Option<&crate::schedule::Scheduler> {
        self.inner.scheduler.as_deref()
    }

    /// Runs sources, schedules and workers until `shutdown` fires. Work written by other
    /// instances sharing the store is picked up within `poll_interval`.
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
        let mut sd = shutdown.clone();
        let result = loop {
            if shutdown.is_requested() {
                break Ok(());
            }
            match self.run_until_idle().await {
                Ok(_) => {}
                Err(e) if e.is_temporary() => {
                    tracing::warn!(error = %e, "worker cycle failed; retrying");
                }
                Err(e) => break Err(e),
            }
            let mut wait = self.inner.worker.poll_interval;
            if let Ok(Some(next)) = self.inner.store.next_due().await {
                wait = wait.min(self.inner.clock.until(next));
            }
            tokio::select! {
                _ = sd.wait() => break Ok(()),
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        };
        tasks.shutdown().await;
        result
    }

    /// Dead letters, oldest first (at most `limit`).
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        self.inner.store.dead_letters(limit).await
    }

    /// Re-queues a dead letter; it is due at once with its attempts reset.
    pub async fn replay(&self, id: DeliveryId) -> Result<()> {
        self.inner.store.replay(id, self.inner.clock.now()).await?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Marks `destination` connected again (e.g. after a reinstall) and re-queues
    /// its parked deliveries in their original order. Returns how many resumed.
    pub async fn reconnect(&self, destination: &str) -> Result<u64> {
        self.inner.known_destination(destination)?;
        let n = self
            .inner
            .store
            .set_connected(destination, true, None, self.inner.clock.now())
            .await?;
        if let Ok(mut set) = self.inner.disconnected.write() {
            set.remove(destination);
        }
        self.inner.wake.notify_one();
        Ok(n)
    }

    /// Marks `destination` disconnected (e.g. the host learnt the app was
    /// uninstalled) and parks its queued deliveries.
    pub async fn disconnect(&self, destination: &str, reason: &str) -> Result<u64> {
        self.inner.known_destination(destination)?;
        self.inner.disconnect(destination, reason).await
    }

    /// The health of every destination.
    pub async fn status(&self) -> Result<Vec<DestinationStatus>> {
        let stats = self.inner.store.destination_stats().await?;
        let mut by_name: BTreeMap<String, DestinationStatus> = self
            .inner
            .destinations
            .keys()
            .map(|n| {
                (
                    n.clone(),
                    DestinationStatus {
                        name: n.clone(),
                        connected: true,
                        disconnected_reason: None,
                        queue_depth: 0,
                        parked: 0,
                        dead_letters: 0,
                        sent: 0,
                        last_success_at: None,
                        last_error: None,
                        last_error_at: None,
                    },
                )
            })
            .collect();
        for s in stats {
            by_name.insert(
                s.destination.clone(),
                DestinationStatus {
                    name: s.destination,
                    connected: s.connected,
                    disconnected_reason: s.disconnected_reason,
                    queue_depth: s.queued,
                    parked: s.parked,
                    dead_letters: s.dead,
                    sent: s.sent,
                    last_success_at: s.last_success_at,
                    last_error: s.last_error,
                    last_error_at: s.last_error_at,
                },
            );
        }
        Ok(by_name.into_values().collect())
    }

    /// Every route and whether it is switched on.
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

    /// Switches a route on or off (the admin's "which events to sync"). Takes
    /// effect for events published afterwards.
    pub fn set_route_enabled(&self, name: &str, enabled: bool) -> Result<()> {
        let route = self
            .inner
            .routes
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no route named {name:?}")))?;
        route.enabled.store(enabled, Ordering::Relaxed);
        Ok(())
    }

    /// Runs a bulk identity sync for `destination` with its registered resolver.
    pub async fn sync_identities(
        &self,
        destination: &str,
        people: &[Person],
    ) -> Result<crate::identity::SyncReport> {
        let resolver = self.inner.resolvers.get(destination).ok_or_else(|| {
            Error::config(format!(
                "no identity resolver for destination {destination:?}"
            ))
        })?;
        resolver.sync(people).await
    }

    /// The engine's current time (follows tokio's clock; pausable in tests).
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }
}

/// A claimed delivery after routing lookups, ready to attempt.
struct Work {
    claimed: ClaimedDelivery,
    key: String,
}

impl Inner {
    pub(crate) async fn publish(&self, event: Event) -> Result<PublishOutcome> {
        if event.id.is_empty() || event.kind.is_empty() {
            return Err(Error::invalid_input("event id and kind must not be empty"));
        }
        let deliveries: Vec<NewDelivery> = self
            .routes
            .iter()
            .filter(|r| r.is_enabled() && r.pattern.matches(&event.kind))
            .map(|r| NewDelivery {
                route: r.name.clone(),
                destination: r.destination.clone(),
                target: r.target.clone(),
            })
            .collect();
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

    fn known_destination(&self, name: &str) -> Result<()> {
        if self.destinations.contains_key(name) {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::NotFound,
                format!("no destination named {name:?}"),
            ))
        }
    }

    async fn refresh_disconnected(&self) -> Result<()> {
        let list = self.store.disconnected().await?;
        if let Ok(mut set) = self.disconnected.write() {
            *set = list.into_iter().collect();
        }
        Ok(())
    }

    fn is_disconnected(&self, destination: &str) -> bool {
        self.disconnected
            .read()
            .map(|s| s.contains(destination))
            .unwrap_or(false)
    }

    async fn disconnect(&self, destination: &str, reason: &str) -> Result<u64> {
        if let Ok(mut set) = self.disconnected.write() {
            set.insert(destination.to_owned());
        }
        self.store
            .set_connected(destination, false, Some(reason), self.clock.now())
            .await
    }

    /// Claims one batch and processes it; returns how many were claimed.
    async fn process_batch(&self, summary: &mut RunSummary) -> Result<usize> {
        let now = self.clock.now();
        let claimed = self
            .store
            .claim(now, self.worker.lease, self.worker.batch_size)
            .await?;
        let n = claimed.len();
        if n == 0 {
            return Ok(0);
        }
        // Group by pacing key, keeping claim order within each group, so one
        // target's deliveries go out in order and at its pace while other targets
        // proceed concurrently.
        let mut groups: Vec<Vec<Work>> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for c in claimed {
            let key = format!(
                "{}|{}",
                c.destination,
                c.target
                    .rate_key(c.event.subject.as_ref().map(|p| p.id.as_str()))
            );
            let slot = *index.entry(key.clone()).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[slot].push(Work { claimed: c, key });
        }
        // Groups run concurrently on this task; completions are recorded in
        // batches as groups finish, so a paced group does not hold up the rest.
        let mut finished = futures::stream::iter(groups)
            .map(|group| self.process_group(group))
            .buffer_unordered(self.worker.concurrency)
            .ready_chunks(64);
        let mut buf = Vec::new();
        while let Some(chunk) = finished.next().await {
            buf.extend(chunk.into_iter().flatten());
            self.record(&mut buf, summary).await?;
        }
        Ok(n)
    }

    async fn record(&self, buf: &mut Vec<Completion>, summary: &mut RunSummary) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        for c in buf.iter() {
            summary.add(&c.outcome);
        }
        self.store.complete(buf, self.clock.now()).await?;
        buf.clear();
        Ok(())
    }

    async fn process_group(&self, group: Vec<Work>) -> Vec<Completion> {
        let mut out = Vec::with_capacity(group.len());
        let mut deferred_until: Option<DateTime<Utc>> = None;
        for work in group {
            let outcome = match deferred_until {
                // Something earlier in this group is waiting for a slot: keep order.
                Some(until) => Outcome::Defer { until },
                None => {
                    let o = self.process_one(&work).await;
                    if let Outcome::Defer { until } = &o {
                        deferred_until = Some(*until);
                    }
                    o
                }
            };
            out.push(Completion {
                id: work.claimed.id,
                lease: work.claimed.lease,
                destination: work.claimed.destination.clone(),
                outcome,
            });
        }
        out
    }

    async fn process_one(&self, work: &Work) -> Outcome {
        let c = &work.claimed;
        let Some(entry) = self.destinations.get(&c.destination) else {
            return Outcome::Dead {
                error: DeliveryError::permanent(format!(
                    "destination {:?} is not configured in this switchboard",
                    c.destination
                )),
                attempted: false,
            };
        };
        if self.is_disconnected(&c.destination) {
            return Outcome::Parked {
                reason: "destination disconnected".to_owned(),
            };
        }
        let Some(route) = self.routes.iter().find(|r| r.name == c.route) else {
            return Outcome::Dead {
                error: DeliveryError::permanent(format!(
                    "route {:?} is no longer configured; add it back and replay",
                    c.route
                )),
                attempted: false,
            };
        };
        // Recipient first: an unknown recipient must not take a rate-limit slot.
        let (recipient, recipient_user_id) = match self.resolve_recipient(c).await {
            Ok(r) => r,
            Err(e) => return self.after_failure(c, e),
        };
        let message = match self.render(route, &c.event) {
            Ok(m) => m,
            Err(e) => {
                return Outcome::Dead {
                    error: DeliveryError::permanent(format!("template failed: {e}")),
                    attempted: false,
                };
            }
        };
        // Pace: wait briefly in the worker, or hand the delivery back to the store.
        loop {
            match entry.pacer.try_acquire(&work.key) {
                Ok(()) => break,
                Err(wait) if wait <= self.worker.max_pacing_wait => {
                    tokio::time::sleep(wait).await;
                }
                Err(wait) => {
                    return Outcome::Defer {
                        until: later(self.clock.now(), wait),
                    };
                }
            }
        }
        let delivery = Delivery {
            id: c.id,
            tenant: c.event.tenant.clone(),
            connection: None,
            event: c.event.clone(),
            route: c.route.clone(),
            target: c.target.clone(),
            recipient,
            recipient_user_id,
            message,
            attempt: c.attempts + 1,
        };
        match entry.destination.deliver(&delivery).await {
            Ok(receipt) => Outcome::Sent(receipt),
            Err(DeliveryError::Disconnected { reason }) => {
                if let Err(e) = self.disconnect(&c.destination, &reason).await {
                    tracing::error!(error = %e, "could not record disconnection");
                }
                Outcome::Parked { reason }
            }
            Err(e) => self.after_failure(c, e),
        }
    }

    fn after_failure(&self, c: &ClaimedDelivery, error: DeliveryError) -> Outcome {
        match self.retry.decide(c.attempts + 1, &error) {
            RetryDecision::RetryAfter(delay) => Outcome::Retry {
                at: later(self.clock.now(), delay),
                error,
            },
            RetryDecision::GiveUp => Outcome::Dead {
                error,
                attempted: true,
            },
        }
    }

    async fn resolve_recipient(
        &self,
        c: &ClaimedDelivery,
    ) -> Result<(Option<String>, Option<String>), DeliveryError> {
        let owned;
        let person: &Person = match &c.target {
            Target::SubjectDm => match &c.event.subject {
                Some(p) => p,
                None => {
                    return Err(DeliveryError::permanent(
                        "the route targets the subject's DM but the event has no subject",
                    ));
                }
            },
            Target::UserDm { user_id } => {
                owned = Person::new(user_id.clone());
                &owned
            }
            _ => return Ok((None, None)),
        };
        let Some(resolver) = self.resolvers.get(&c.destination) else {
            return Ok((None, Some(person.id.clone())));
        };
        match resolver.resolve(person).await {
            Ok(Resolution::Matched(id)) => Ok((Some(id), Some(person.id.clone()))),
            Ok(Resolution::NotFound) => Err(DeliveryError::recipient_unknown(format!(
                "user {:?} was not found on {}; map them by hand or invite them, then replay",
                person.id, c.destination
            ))),
            Ok(Resolution::Ambiguous(ids)) => Err(DeliveryError::recipient_unknown(format!(
                "user {:?} matches several {} accounts ({}); map them by hand, then replay",
                person.id,
                c.destination,
                ids.join(", ")
            ))),
            Err(e) if e.kind() == ErrorKind::Unauthorized => {
                Err(DeliveryError::disconnected(e.to_string()))
            }
            Err(e) if e.is_temporary() || e.kind() == ErrorKind::Network => Err(
                DeliveryError::temporary(format!("identity lookup failed: {e}")),
            ),
            Err(e) => Err(DeliveryError::permanent(format!(
                "identity lookup failed permanently: {e}"
            ))),
        }
    }

    fn render(&self, route: &CompiledRoute, event: &Arc<Event>) -> Result<Message> {
        let ctx = crate::template::EventContext::value(event.clone());
        let format = self
            .destinations
            .get(&route.destination)
            .map_or(crate::message::MessageFormat::Plain, |d| d.format);
        let text = self.templates.render_value(&route.text_key, ctx.clone())?;
        let title = match &route.title_key {
            Some(k) => Some(self.templates.render_value(k, ctx)?),
            None => None,
        };
        Ok(Message {
            text,
            title,
            format,
        })
    }
}
