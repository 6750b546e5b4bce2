//! The worker loop: claims deliveries continuously as slots free up (one per target key), attempts each under a timeout with panic isolation, records each outcome as soon as it is known, renews leases, and stops promptly on shutdown.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::connections::Lookup;
use super::retry::RetryDecision;
use super::route::CompiledRoute;
use super::{DestinationEntry, Inner, RunSummary};
use crate::clock::later;
use crate::destination::{Delivery, DeliveryError, DeliveryId};
use crate::event::{Event, Person};
use crate::identity::{Resolution, ResolveContext};
use crate::message::{Message, Target};
use crate::source::Shutdown;
use crate::store::{ClaimedDelivery, Completion, Outcome};
use crate::tenant::Connection;
use crate::{ErrorKind, Result};

/// How often `run` evicts idle pacing keys.
const EVICT_EVERY: Duration = Duration::from_secs(60);
/// How often `run` prunes old deliveries.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Store-error backoff bounds for the worker loop.
const STORE_BACKOFF_MIN: Duration = Duration::from_millis(100);
const STORE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What one delivery's work ended as, for the summary.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Delivered,
    Retried,
    Dead,
    Parked,
    Deferred,
}

impl Kind {
    fn of(o: &Outcome) -> Kind {
        match o {
            Outcome::Sent(_) => Kind::Delivered,
            Outcome::Retry { .. } => Kind::Retried,
            Outcome::Dead { .. } => Kind::Dead,
            Outcome::Parked { .. } => Kind::Parked,
            Outcome::Defer { .. } | Outcome::Snooze { .. } => Kind::Deferred,
        }
    }
    fn add_to(self, s: &mut RunSummary) {
        match self {
            Kind::Delivered => s.delivered += 1,
            Kind::Retried => s.retried += 1,
            Kind::Dead => s.dead += 1,
            Kind::Parked => s.parked += 1,
            Kind::Deferred => s.deferred += 1,
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

impl Inner {
    fn note_store_error(&self, e: &crate::Error) {
        tracing::warn!(error = %e, "store call failed; retrying with backoff");
        if let Ok(mut slot) = self.store_error.lock() {
            *slot = Some((self.clock.now(), e.to_string()));
        }
    }

    fn clear_store_error(&self) {
        if let Ok(mut slot) = self.store_error.lock() {
            if slot.is_some() {
                *slot = None;
            }
        }
    }

    /// The worker loop. Without `shutdown` it returns once nothing is due
    /// (`run_until_idle`); with it, it runs until shutdown.
    ///
    /// Each outcome is recorded as soon as it is known: the outcomes that are
    /// known at one moment (typically every delivery of a batch that finished
    /// together) are written in one `complete` call before anything else
    /// happens, so the store sees one transaction for them, not one each, and
    /// a crash repeats at most the deliveries that were in flight.
    pub(crate) async fn pump(&self, shutdown: Option<Shutdown>) -> Result<RunSummary> {
        let until_idle = shutdown.is_none();
        let mut sd = shutdown.clone();
        let mut summary = RunSummary::default();
        let mut inflight = FuturesUnordered::new();
        let mut held: HashMap<DeliveryId, i64> = HashMap::new();
        let mut done: Vec<(Completion, Kind)> = Vec::new();
        let lease = self.worker.lease;
        let renew_every = (lease / 3).max(Duration::from_millis(100));
        let mut renew_at = tokio::time::Instant::now() + renew_every;
        let mut evict_at = tokio::time::Instant::now() + EVICT_EVERY;
        let mut prune_at = tokio::time::Instant::now();
        let mut backoff = STORE_BACKOFF_MIN;
        let stopping = |sd: &Option<Shutdown>| sd.as_ref().is_some_and(Shutdown::is_requested);
        loop {
            // Outcomes first: a key's next delivery is claimable only once its
            // head's outcome is recorded.
            self.record(&mut done, &mut inflight, &mut held, &mut summary)
                .await;
            if stopping(&sd) {
                break;
            }
            let room = self.worker.concurrency.saturating_sub(inflight.len());
            // Claim in batches: when a quarter of the slots are free (or nothing
            // is in flight), so the store sees few large claims, not one per
            // completion.
            let threshold = (self.worker.concurrency / 4).max(1);
            if room > 0 && (room >= threshold || inflight.is_empty()) {
                let claim =
                    self.store
                        .claim(self.clock.now(), lease, room.min(self.worker.batch_size));
                // Keep the deliveries in flight moving while the store answers:
                // they may hold store connections (a pool) the claim waits for.
                match while_working(claim, &mut inflight, &mut done).await {
                    Ok(claims) => {
                        self.clear_store_error();
                        backoff = STORE_BACKOFF_MIN;
                        for c in claims {
                            held.insert(c.id, c.lease);
                            inflight.push(self.work(c));
                        }
                    }
                    Err(e) if until_idle => {
                        self.record(&mut done, &mut inflight, &mut held, &mut summary)
                            .await;
                        return Err(e);
                    }
                    Err(e) => {
                        self.note_store_error(&e);
                        let wait = backoff;
                        backoff = (backoff * 2).min(STORE_BACKOFF_MAX);
                        if inflight.is_empty() && done.is_empty() {
                            tokio::select! {
                                _ = wait_for(&mut sd) => {}
                                _ = tokio::time::sleep(wait) => {}
                            }
                            continue;
                        }
                    }
                }
            }
            if !done.is_empty() {
                continue;
            }
            if !until_idle {
                let now = tokio::time::Instant::now();
                if now >= evict_at {
                    evict_at = now + EVICT_EVERY;
                    for d in self.destinations.values() {
                        d.pacer.evict_idle();
                    }
                }
                if now >= prune_at {
                    prune_at = now + PRUNE_EVERY;
                    while_working(self.prune(), &mut inflight, &mut done).await;
                    continue;
                }
            }
            if inflight.is_empty() {
                if until_idle {
                    break;
                }
                let mut wait = self.worker.poll_interval;
                match self.store.next_due().await {
                    Ok(Some(next)) => wait = wait.min(self.clock.until(next)),
                    Ok(None) => {}
                    Err(e) => self.note_store_error(&e),
                }
                tokio::select! {
                    _ = wait_for(&mut sd) => {}
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            let has_room = inflight.len() < self.worker.concurrency;
            tokio::select! {
                finished = inflight.next() => {
                    done.extend(finished);
                    // Take every other finished one before recording.
                    while let Some(Some(f)) = inflight.next().now_or_never() {
                        done.push(f);
                    }
                }
                _ = self.wake.notified(), if has_room => {}
                _ = tokio::time::sleep_until(renew_at) => {
                    renew_at = tokio::time::Instant::now() + renew_every;
                    let claims: Vec<(DeliveryId, i64)> =
                        held.iter().map(|(k, v)| (*k, *v)).collect();
                    while_working(self.renew(claims), &mut inflight, &mut done).await;
                }
                _ = wait_for(&mut sd) => {}
            }
        }
        // Shutdown: finish what is in flight within the grace period, give the
        // rest back unattempted.
        if !inflight.is_empty() {
            let grace = self.worker.shutdown_grace;
            let _ = tokio::time::timeout(grace, async {
                while let Some(f) = inflight.next().await {
                    done.push(f);
                }
            })
            .await;
            drop(inflight);
            let mut none = FuturesUnordered::<std::future::Ready<(Completion, Kind)>>::new();
            self.record(&mut done, &mut none, &mut held, &mut summary)
                .await;
            if !held.is_empty() {
                let claims: Vec<(DeliveryId, i64)> = held.into_iter().collect();
                if let Err(e) = self.store.release(&claims, self.clock.now()).await {
                    tracing::warn!(error = %e, "could not give claims back on shutdown; their leases will lapse");
                }
            }
        }
        Ok(summary)
    }

    /// Records every known outcome in one `complete` call (retried with
    /// backoff while the deliveries in flight keep moving). Outcomes that
    /// cannot be recorded after several tries are given up: their leases lapse
    /// and the deliveries are attempted again (at least once).
    async fn record<W>(
        &self,
        done: &mut Vec<(Completion, Kind)>,
        inflight: &mut FuturesUnordered<W>,
        held: &mut HashMap<DeliveryId, i64>,
        summary: &mut RunSummary,
    ) where
        W: std::future::Future<Output = (Completion, Kind)>,
    {
        if done.is_empty() {
            return;
        }
        let batch = std::mem::take(done);
        let completions: Vec<Completion> = batch.iter().map(|(c, _)| c.clone()).collect();
        let mut delay = Duration::from_millis(50);
        for _ in 0..6 {
            let call = self.store.complete(&completions, self.clock.now());
            match while_working(call, inflight, done).await {
                Ok(()) => break,
                Err(e) => {
                    self.note_store_error(&e);
                    while_working(tokio::time::sleep(delay), inflight, done).await;
                    delay *= 2;
                }
            }
        }
        for (c, kind) in batch {
            held.remove(&c.id);
            kind.add_to(summary);
        }
    }

    async fn renew(&self, claims: Vec<(DeliveryId, i64)>) {
        if claims.is_empty() {
            return;
        }
        if let Err(e) = self
            .store
            .renew(&claims, self.clock.now(), self.worker.lease)
            .await
        {
            self.note_store_error(&e);
        }
    }

    async fn prune(&self) {
        let Some(keep) = self.worker.retention else {
            return;
        };
        let cutoff = match chrono::Duration::from_std(keep) {
            Ok(d) => self.clock.now().checked_sub_signed(d),
            Err(_) => None,
        };
        let Some(cutoff) = cutoff else { return };
        match self.store.prune(cutoff).await {
            Ok(stats) if stats.deliveries > 0 || stats.events > 0 => {
                tracing::info!(
                    deliveries = stats.deliveries,
                    events = stats.events,
                    "pruned delivered deliveries past retention"
                );
            }
            Ok(_) => {}
            Err(e) => self.note_store_error(&e),
        }
    }

    /// Attempts one claimed delivery; the pump records its outcome at once.
    async fn work(&self, c: ClaimedDelivery) -> (Completion, Kind) {
        let outcome = match AssertUnwindSafe(self.attempt(&c)).catch_unwind().await {
            Ok(o) => o,
            Err(panic) => {
                let msg = panic_message(&*panic);
                tracing::error!(delivery = c.id, destination = %c.destination, panic = %msg, "delivery panicked");
                self.after_failure(
                    &c,
                    DeliveryError::temporary(format!("the delivery panicked: {msg}")),
                )
            }
        };
        let kind = Kind::of(&outcome);
        let completion = Completion {
            id: c.id,
            lease: c.lease,
            outcome,
        };
        (completion, kind)
    }

    fn parked(&self, c: &ClaimedDelivery, reason: String) -> Outcome {
        Outcome::Parked {
            reason,
            epoch: c.scope_epoch,
        }
    }

    async fn attempt(&self, c: &ClaimedDelivery) -> Outcome {
        if c.attempt > self.retry.max_attempts {
            return Outcome::Dead {
                error: DeliveryError::permanent(format!(
                    "gave up after {} attempts; the last ones never finished (the worker crashed or was killed while sending)",
                    c.attempt - 1
                )),
                attempted: false,
            };
        }
        let Some(entry) = self.destinations.get(&c.destination) else {
            return Outcome::Dead {
                error: DeliveryError::permanent(format!(
                    "destination {:?} is not configured in this switchboard",
                    c.destination
                )),
                attempted: false,
            };
        };
        let Some(route) = self.routes.iter().find(|r| r.name == c.route) else {
            return Outcome::Dead {
                error: DeliveryError::permanent(format!(
                    "route {:?} is no longer configured; add it back and replay",
                    c.route
                )),
                attempted: false,
            };
        };
        let connection = match self.lookup_connection(c).await {
            Ok(Lookup::Use(conn)) => conn,
            Ok(Lookup::Park(reason)) => return self.parked(c, reason),
            Err(e) => {
                self.note_store_error(&e);
                return Outcome::Defer {
                    until: later(self.clock.now(), Duration::from_secs(1)),
                };
            }
        };
        // Recipient first: an unknown recipient must not take a rate-limit slot.
        let (recipient, recipient_user_id) =
            match self.resolve_recipient(c, entry, connection.clone()).await {
                Ok(r) => r,
                Err(DeliveryError::Disconnected { reason }) => {
                    return self.disconnected(c, connection.as_deref(), reason).await;
                }
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
        // Pace: wait briefly in the worker, or hand the delivery back to the
        // store (it stays the head of its key, so order holds).
        let tenant_key = c.event.tenant.as_str();
        loop {
            match entry.pacer.try_acquire(tenant_key, &c.key) {
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
        if let Some(shared) = &self.shared_pacing {
            match self.shared_acquire(shared.as_ref(), entry, c).await {
                Ok(None) => {}
                Ok(Some(wait)) => {
                    return Outcome::Defer {
                        until: later(self.clock.now(), wait),
                    };
                }
                Err(e) => {
                    self.note_store_error(&e);
                    return Outcome::Defer {
                        until: later(self.clock.now(), Duration::from_secs(1)),
                    };
                }
            }
        }
        let delivery = Delivery {
            id: c.id,
            tenant: c.event.tenant.clone(),
            connection: connection.clone(),
            event: c.event.clone(),
            route: c.route.clone(),
            target: c.target.clone(),
            recipient,
            recipient_user_id,
            message,
            attempt: c.attempt,
        };
        let answer =
            match tokio::time::timeout(entry.timeout, entry.destination.deliver(&delivery)).await {
                Ok(answer) => answer,
                Err(_) => Err(DeliveryError::temporary(format!(
                    "no answer within {:?}; the platform may or may not have received it",
                    entry.timeout
                ))),
            };
        match answer {
            Ok(receipt) => Outcome::Sent(receipt),
            Err(DeliveryError::Disconnected { reason }) => {
                self.disconnected(c, connection.as_deref(), reason).await
            }
            Err(e) => self.after_failure(c, e),
        }
    }

    /// Takes the delivery's slots from the shared pacer (per target key, then
    /// per connection), waiting briefly; `Some(wait)` when it must be deferred.
    async fn shared_acquire(
        &self,
        shared: &dyn super::SharedPacing,
        entry: &DestinationEntry,
        c: &ClaimedDelivery,
    ) -> Result<Option<Duration>> {
        let margin = self.worker.pacing_margin;
        let keys = entry
            .target_limits
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("t{i}|{}", c.key), *l))
            .chain(
                entry
                    .global_limits
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (format!("g{i}|{}|{}", c.event.tenant, c.destination), *l)),
            );
        for (key, limit) in keys {
            let limit = super::pace::with_margin(limit, margin);
            loop {
                match shared.try_acquire(&key, limit).await? {
                    None => break,
                    Some(wait) if wait <= self.worker.max_pacing_wait => {
                        tokio::time::sleep(wait).await;
                    }
                    Some(wait) => return Ok(Some(wait)),
                }
            }
        }
        Ok(None)
    }

    async fn disconnected(
        &self,
        c: &ClaimedDelivery,
        connection: Option<&Connection>,
        reason: String,
    ) -> Outcome {
        if let Some(conn) = connection {
            self.connection_failed(conn, &reason).await;
        }
        self.parked(c, reason)
    }

    pub(crate) fn after_failure(&self, c: &ClaimedDelivery, error: DeliveryError) -> Outcome {
        match self.retry.decide(c.attempt, &error) {
            RetryDecision::RetryAfter(delay) => Outcome::Retry {
                at: later(self.clock.now(), delay),
                error,
            },
            RetryDecision::Snooze(delay) => Outcome::Snooze {
                until: later(self.clock.now(), delay),
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
        entry: &DestinationEntry,
        connection: Option<Arc<Connection>>,
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
        let cx = ResolveContext {
            tenant: c.event.tenant.clone(),
            connection,
        };
        let answer = match tokio::time::timeout(entry.timeout, resolver.resolve(&cx, person)).await
        {
            Ok(a) => a,
            Err(_) => {
                return Err(DeliveryError::temporary(format!(
                    "identity lookup gave no answer within {:?}",
                    entry.timeout
                )));
            }
        };
        match answer {
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
            // A revoked token seen while resolving is the connection's problem:
            // park and disconnect, exactly like a destination's answer.
            Err(e) if e.kind() == ErrorKind::Unauthorized => Err(DeliveryError::disconnected(
                format!("identity lookup was refused: {e}"),
            )),
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

/// Awaits `fut` while still driving the deliveries in flight (keeping the
/// outcomes of the ones that finish, to be recorded next), so a store call
/// never waits on work it stopped polling.
async fn while_working<F, W>(
    fut: F,
    inflight: &mut FuturesUnordered<W>,
    done: &mut Vec<(Completion, Kind)>,
) -> F::Output
where
    F: std::future::Future,
    W: std::future::Future<Output = (Completion, Kind)>,
{
    tokio::pin!(fut);
    loop {
        tokio::select! {
            biased;
            out = &mut fut => return out,
            Some(f) = inflight.next(), if !inflight.is_empty() => done.push(f),
        }
    }
}

/// Resolves when shutdown is requested; never without a signal.
async fn wait_for(sd: &mut Option<Shutdown>) {
    match sd {
        Some(s) => s.wait().await,
        None => std::future::pending().await,
    }
}
