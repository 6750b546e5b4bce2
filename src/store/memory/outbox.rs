//! The in-memory outbox: deliveries, per-key head index, per-(tenant, scope) parking with epochs, dead letters and the delivery log.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::expires;
use crate::destination::{DeliveryError, DeliveryId};
use crate::event::Event;
use crate::message::Target;
use crate::store::{
    ClaimedDelivery, Completion, DeadLetter, DeliveryState, DestinationStats, EnqueueOutcome,
    LogEntry, LogStatus, NewDelivery, Outcome, PruneStats, ScopeChange, ScopeStatus,
};
use crate::tenant::TenantId;
use crate::{Error, ErrorKind, Result};

mod upkeep;

pub(super) use upkeep::RowView;

/// One delivery.
struct Row {
    event: Arc<Event>,
    route: String,
    destination: String,
    target: Target,
    key: usize,
    scope: usize,
    dest: usize,
    state: DeliveryState,
    attempts: u32,
    due: DateTime<Utc>,
    lease: i64,
    lease_until: Option<DateTime<Utc>>,
    error: Option<DeliveryError>,
    died_at: Option<DateTime<Utc>>,
    changed_at: DateTime<Utc>,
    log: Vec<LogEntry>,
}

/// Where a key's head is indexed.
#[derive(Clone, Copy)]
enum Head {
    /// In `head_due` as (due, id).
    Due(DateTime<Utc>, DeliveryId),
    /// In `head_lease` as (lease_until, id).
    Lease(DateTime<Utc>, DeliveryId),
}

/// One ordering key.
struct KeySlot {
    name: Arc<str>,
    /// Its queued and in-flight deliveries; the first is the head.
    pending: BTreeSet<DeliveryId>,
    /// The head's entry in the claim indexes.
    indexed: Option<Head>,
}

/// The recorded state of a (tenant, scope).
struct ScopeState {
    connected: bool,
    reason: Option<String>,
    since: DateTime<Utc>,
    epoch: u64,
}

/// One (tenant, scope).
struct ScopeSlot {
    tenant: TenantId,
    name: String,
    status: Option<ScopeState>,
    /// Its queued, in-flight and parked deliveries.
    live: BTreeSet<DeliveryId>,
}

impl ScopeSlot {
    fn epoch(&self) -> u64 {
        self.status.as_ref().map_or(0, |s| s.epoch)
    }
    fn disconnected_reason(&self) -> Option<&str> {
        match &self.status {
            Some(s) if !s.connected => Some(s.reason.as_deref().unwrap_or("disconnected")),
            _ => None,
        }
    }
}

/// One (tenant, destination) with its counters and health.
struct DestSlot {
    tenant: TenantId,
    destination: String,
    scope: String,
    counts: [u64; 5],
    last_success_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    last_error_at: Option<DateTime<Utc>>,
}

fn state_index(state: DeliveryState) -> usize {
    match state {
        DeliveryState::Queued => 0,
        DeliveryState::InFlight => 1,
        DeliveryState::Sent => 2,
        DeliveryState::Dead => 3,
        DeliveryState::Parked => 4,
    }
}

fn is_pending(state: DeliveryState) -> bool {
    matches!(state, DeliveryState::Queued | DeliveryState::InFlight)
}

fn is_live(state: DeliveryState) -> bool {
    matches!(
        state,
        DeliveryState::Queued | DeliveryState::InFlight | DeliveryState::Parked
    )
}

/// Interns `(tenant, name)` pairs as dense indexes.
fn intern<T>(
    ids: &mut HashMap<TenantId, HashMap<String, usize>>,
    slots: &mut Vec<T>,
    tenant: &TenantId,
    name: &str,
    make: impl FnOnce() -> T,
) -> usize {
    if let Some(&i) = ids.get(tenant).and_then(|m| m.get(name)) {
        return i;
    }
    let i = slots.len();
    slots.push(make());
    ids.entry(tenant.clone())
        .or_default()
        .insert(name.to_owned(), i);
    i
}

/// Everything the outbox holds.
#[derive(Default)]
pub(super) struct Outbox {
    /// Tenant → event id → how many of its deliveries are stored.
    events: HashMap<TenantId, HashMap<String, usize>>,
    /// Deliveries by id - 1 (ids are dense from 1; pruned ones are `None`).
    rows: Vec<Option<Box<Row>>>,
    keys: Vec<KeySlot>,
    key_ids: HashMap<Arc<str>, usize>,
    scopes: Vec<ScopeSlot>,
    scope_ids: HashMap<TenantId, HashMap<String, usize>>,
    dests: Vec<DestSlot>,
    dest_ids: HashMap<TenantId, HashMap<String, usize>>,
    /// (due, id) of every key head that is queued.
    head_due: BTreeSet<(DateTime<Utc>, DeliveryId)>,
    /// (lease_until, id) of every key head that is in flight.
    head_lease: BTreeSet<(DateTime<Utc>, DeliveryId)>,
    /// (died_at, id) of dead letters.
    dead: BTreeSet<(DateTime<Utc>, DeliveryId)>,
    pending: u64,
    last_lease: i64,
}

fn slot(id: DeliveryId) -> Option<usize> {
    usize::try_from(id).ok()?.checked_sub(1)
}

impl Outbox {
    fn row(&self, id: DeliveryId) -> Option<&Row> {
        self.rows.get(slot(id)?)?.as_deref()
    }

    fn row_mut(&mut self, id: DeliveryId) -> Option<&mut Row> {
        self.rows.get_mut(slot(id)?)?.as_deref_mut()
    }

    fn log(
        &mut self,
        id: DeliveryId,
        attempt: u32,
        at: DateTime<Utc>,
        status: LogStatus,
        detail: Option<String>,
    ) {
        if let Some(row) = self.row_mut(id) {
            row.log.push(LogEntry {
                delivery_id: id,
                attempt,
                at,
                status,
                detail,
            });
        }
    }

    fn key_id(&mut self, name: &str) -> usize {
        if let Some(&i) = self.key_ids.get(name) {
            return i;
        }
        let name: Arc<str> = Arc::from(name);
        let i = self.keys.len();
        self.keys.push(KeySlot {
            name: name.clone(),
            pending: BTreeSet::new(),
            indexed: None,
        });
        self.key_ids.insert(name, i);
        i
    }

    fn scope_id(&mut self, tenant: &TenantId, scope: &str) -> usize {
        intern(&mut self.scope_ids, &mut self.scopes, tenant, scope, || {
            ScopeSlot {
                tenant: tenant.clone(),
                name: scope.to_owned(),
                status: None,
                live: BTreeSet::new(),
            }
        })
    }

    fn dest_id(&mut self, tenant: &TenantId, destination: &str, scope: &str) -> usize {
        let i = intern(
            &mut self.dest_ids,
            &mut self.dests,
            tenant,
            destination,
            || DestSlot {
                tenant: tenant.clone(),
                destination: destination.to_owned(),
                scope: scope.to_owned(),
                counts: [0; 5],
                last_success_at: None,
                last_error: None,
                last_error_at: None,
            },
        );
        if let Some(d) = self.dests.get_mut(i) {
            if d.scope != scope {
                d.scope = scope.to_owned();
            }
        }
        i
    }

    /// Removes a key's head from the claim indexes.
    fn unindex(&mut self, key: usize) {
        let Some(slot) = self.keys.get_mut(key) else {
            return;
        };
        match slot.indexed.take() {
            Some(Head::Due(at, id)) => {
                self.head_due.remove(&(at, id));
            }
            Some(Head::Lease(at, id)) => {
                self.head_lease.remove(&(at, id));
            }
            None => {}
        }
    }

    /// Puts a key's current head into the claim indexes.
    fn reindex(&mut self, key: usize) {
        let Some(&head) = self.keys.get(key).and_then(|k| k.pending.first()) else {
            return;
        };
        let entry = match self.row(head) {
            Some(r) if r.state == DeliveryState::Queued => Head::Due(r.due, head),
            Some(r) if r.state == DeliveryState::InFlight => {
                Head::Lease(r.lease_until.unwrap_or(r.due), head)
            }
            _ => return,
        };
        match entry {
            Head::Due(at, id) => self.head_due.insert((at, id)),
            Head::Lease(at, id) => self.head_lease.insert((at, id)),
        };
        if let Some(slot) = self.keys.get_mut(key) {
            slot.indexed = Some(entry);
        }
    }

    /// Moves a delivery to `state`, keeping every index and counter right.
    fn transition(
        &mut self,
        id: DeliveryId,
        state: DeliveryState,
        due: DateTime<Utc>,
        lease_until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) {
        let Some(row) = self.row(id) else {
            return;
        };
        let (old, key, scope, dest, died_at) =
            (row.state, row.key, row.scope, row.dest, row.died_at);
        self.unindex(key);
        if let Some(k) = self.keys.get_mut(key) {
            match (is_pending(old), is_pending(state)) {
                (true, false) => {
                    k.pending.remove(&id);
                    self.pending = self.pending.saturating_sub(1);
                }
                (false, true) => {
                    k.pending.insert(id);
                    self.pending += 1;
                }
                _ => {}
            }
        }
        if let Some(s) = self.scopes.get_mut(scope) {
            match (is_live(old), is_live(state)) {
                (true, false) => {
                    s.live.remove(&id);
                }
                (false, true) => {
                    s.live.insert(id);
                }
                _ => {}
            }
        }
        if let Some(d) = self.dests.get_mut(dest) {
            let o = &mut d.counts[state_index(old)];
            *o = o.saturating_sub(1);
            d.counts[state_index(state)] += 1;
        }
        if old == DeliveryState::Dead {
            if let Some(at) = died_at {
                self.dead.remove(&(at, id));
            }
        }
        if state == DeliveryState::Dead {
            self.dead.insert((now, id));
        }
        if let Some(row) = self.row_mut(id) {
            row.state = state;
            row.due = due;
            row.lease_until = lease_until;
            row.changed_at = now;
            row.died_at = (state == DeliveryState::Dead).then_some(now);
        }
        self.reindex(key);
    }

    fn note_error(&mut self, dest: usize, error: &DeliveryError, now: DateTime<Utc>) {
        if let Some(d) = self.dests.get_mut(dest) {
            d.last_error = Some(error.to_string());
            d.last_error_at = Some(now);
        }
    }

    /// Marks a scope disconnected (keeping `since` if it already was).
    fn mark_disconnected(&mut self, scope: usize, reason: &str, now: DateTime<Utc>) {
        let Some(s) = self.scopes.get_mut(scope) else {
            return;
        };
        match &mut s.status {
            Some(st) if !st.connected => st.reason = Some(reason.to_owned()),
            Some(st) => {
                st.connected = false;
                st.reason = Some(reason.to_owned());
                st.since = now;
            }
            None => {
                s.status = Some(ScopeState {
                    connected: false,
                    reason: Some(reason.to_owned()),
                    since: now,
                    epoch: 0,
                });
            }
        }
    }

    /// The ids of a scope's deliveries in `state`, oldest first.
    fn scope_rows(&self, scope: usize, state: DeliveryState) -> Vec<DeliveryId> {
        let Some(s) = self.scopes.get(scope) else {
            return Vec::new();
        };
        s.live
            .iter()
            .copied()
            .filter(|&id| self.row(id).is_some_and(|r| r.state == state))
            .collect()
    }

    /// Parks a scope's queued deliveries; returns how many.
    fn park_queued(&mut self, scope: usize, reason: &str, now: DateTime<Utc>) -> u64 {
        let ids = self.scope_rows(scope, DeliveryState::Queued);
        for &id in &ids {
            self.log(id, 0, now, LogStatus::Parked, Some(reason.to_owned()));
            let due = self.row(id).map_or(now, |r| r.due);
            self.transition(id, DeliveryState::Parked, due, None, now);
        }
        ids.len() as u64
    }

    fn give_attempt_back(&mut self, id: DeliveryId) {
        if let Some(r) = self.row_mut(id) {
            r.attempts = r.attempts.saturating_sub(1);
        }
    }

    pub(super) fn enqueue(
        &mut self,
        event: &Event,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
    ) -> EnqueueOutcome {
        let ids = self.events.entry(event.tenant.clone()).or_default();
        if ids.contains_key(&event.id) {
            return EnqueueOutcome::Duplicate;
        }
        ids.insert(event.id.clone(), deliveries.len());
        let shared = Arc::new(event.clone());
        for d in deliveries {
            let scope = self.scope_id(&event.tenant, &d.scope);
            let parked = self
                .scopes
                .get(scope)
                .and_then(ScopeSlot::disconnected_reason)
                .map(str::to_owned);
            let key = self.key_id(&d.key);
            let dest = self.dest_id(&event.tenant, &d.destination, &d.scope);
            let state = if parked.is_some() {
                DeliveryState::Parked
            } else {
                DeliveryState::Queued
            };
            let (status, detail) = match parked {
                Some(reason) => (LogStatus::Parked, Some(reason)),
                None => (LogStatus::Queued, None),
            };
            self.rows.push(Some(Box::new(Row {
                event: shared.clone(),
                route: d.route.clone(),
                destination: d.destination.clone(),
                target: d.target.clone(),
                key,
                scope,
                dest,
                state,
                attempts: 0,
                due: now,
                lease: 0,
                lease_until: None,
                error: None,
                died_at: None,
                changed_at: now,
                log: Vec::with_capacity(2),
            })));
            let id = self.rows.len() as DeliveryId;
            self.log(id, 0, now, status, detail);
            if let Some(s) = self.scopes.get_mut(scope) {
                s.live.insert(id);
            }
            if let Some(dd) = self.dests.get_mut(dest) {
                dd.counts[state_index(state)] += 1;
            }
            if state == DeliveryState::Queued {
                self.pending += 1;
                let first = self.keys.get_mut(key).is_some_and(|k| {
                    let was_empty = k.pending.is_empty();
                    k.pending.insert(id);
                    was_empty
                });
                if first {
                    self.reindex(key);
                }
            }
        }
        EnqueueOutcome::Accepted {
            deliveries: deliveries.len(),
        }
    }

    pub(super) fn claim(
        &mut self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Vec<ClaimedDelivery> {
        let mut picked = Vec::with_capacity(limit.min(1024));
        {
            let mut due = self
                .head_due
                .iter()
                .take_while(|(at, _)| *at <= now)
                .peekable();
            let mut held = self
                .head_lease
                .iter()
                .take_while(|(at, _)| *at <= now)
                .peekable();
            while picked.len() < limit {
                let next = match (due.peek(), held.peek()) {
                    (Some(a), Some(b)) if b < a => held.next(),
                    (Some(_), _) => due.next(),
                    (None, Some(_)) => held.next(),
                    (None, None) => None,
                };
                match next {
                    Some(&(_, id)) => picked.push(id),
                    None => break,
                }
            }
        }
        let until = expires(now, lease);
        let mut out = Vec::with_capacity(picked.len());
        for id in picked {
            self.last_lease += 1;
            let token = self.last_lease;
            let Some(row) = self.row_mut(id) else {
                continue;
            };
            row.attempts = row.attempts.saturating_add(1);
            row.lease = token;
            let due = row.due;
            self.transition(id, DeliveryState::InFlight, due, Some(until), now);
            let Some(row) = self.row(id) else {
                continue;
            };
            let scope = self.scopes.get(row.scope);
            out.push(ClaimedDelivery {
                id,
                lease: token,
                event: row.event.clone(),
                route: row.route.clone(),
                destination: row.destination.clone(),
                target: row.target.clone(),
                scope: scope.map(|s| s.name.clone()).unwrap_or_default(),
                key: self
                    .keys
                    .get(row.key)
                    .map(|k| k.name.to_string())
                    .unwrap_or_default(),
                attempt: row.attempts,
                scope_epoch: scope.map_or(0, ScopeSlot::epoch),
            });
        }
        out
    }

    pub(super) fn complete(&mut self, c: &Completion, now: DateTime<Utc>) {
        let Some(row) = self.row(c.id) else {
            return;
        };
        if row.state != DeliveryState::InFlight || row.lease != c.lease {
            return;
        }
        let (id, attempt, dest, scope, due) = (c.id, row.attempts, row.dest, row.scope, row.due);
        match &c.outcome {
            Outcome::Sent(receipt) => {
                self.log(id, attempt, now, LogStatus::Sent, receipt.remote_id.clone());
                self.transition(id, DeliveryState::Sent, due, None, now);
                if let Some(d) = self.dests.get_mut(dest) {
                    d.last_success_at = Some(now);
                }
            }
            Outcome::Retry { at, error } => {
                self.log(id, attempt, now, LogStatus::Failed, Some(error.to_string()));
                self.transition(id, DeliveryState::Queued, *at, None, now);
                self.note_error(dest, error, now);
            }
            Outcome::Defer { until } => {
                self.give_attempt_back(id);
                self.transition(id, DeliveryState::Queued, *until, None, now);
            }
            Outcome::Snooze { until, error } => {
                self.log(id, attempt, now, LogStatus::Failed, Some(error.to_string()));
                self.give_attempt_back(id);
                self.transition(id, DeliveryState::Queued, *until, None, now);
                self.note_error(dest, error, now);
            }
            Outcome::Dead { error, attempted } => {
                if !attempted {
                    self.give_attempt_back(id);
                }
                let n = self.row(id).map_or(attempt, |r| r.attempts);
                if let Some(r) = self.row_mut(id) {
                    r.error = Some(error.clone());
                }
                self.log(id, n, now, LogStatus::Dead, Some(error.to_string()));
                self.transition(id, DeliveryState::Dead, due, None, now);
                self.note_error(dest, error, now);
            }
            Outcome::Parked { reason, epoch } => {
                self.give_attempt_back(id);
                let current = self.scopes.get(scope).map_or(0, ScopeSlot::epoch);
                if current > *epoch {
                    // Reconnected since the worker looked: try again now.
                    self.transition(id, DeliveryState::Queued, now, None, now);
                } else {
                    self.mark_disconnected(scope, reason, now);
                    self.park_queued(scope, reason, now);
                    self.log(id, 0, now, LogStatus::Parked, Some(reason.clone()));
                    self.transition(id, DeliveryState::Parked, due, None, now);
                }
            }
        }
    }

    pub(super) fn set_scope(
        &mut self,
        tenant: &TenantId,
        scope: &str,
        change: ScopeChange,
        now: DateTime<Utc>,
    ) -> u64 {
        let scope = self.scope_id(tenant, scope);
        match change {
            ScopeChange::Disconnect { reason, epoch } => {
                let current = self.scopes.get(scope).map_or(0, ScopeSlot::epoch);
                if epoch.is_some_and(|e| e != current) {
                    return 0;
                }
                self.mark_disconnected(scope, &reason, now);
                self.park_queued(scope, &reason, now)
            }
            ScopeChange::Connect => {
                if let Some(s) = self.scopes.get_mut(scope) {
                    match &mut s.status {
                        Some(st) => {
                            if !st.connected {
                                st.since = now;
                            }
                            st.connected = true;
                            st.reason = None;
                            st.epoch += 1;
                        }
                        None => {
                            s.status = Some(ScopeState {
                                connected: true,
                                reason: None,
                                since: now,
                                epoch: 1,
                            });
                        }
                    }
                }
                let ids = self.scope_rows(scope, DeliveryState::Parked);
                for &id in &ids {
                    self.log(
                        id,
                        0,
                        now,
                        LogStatus::Queued,
                        Some("reconnected".to_owned()),
                    );
                    self.transition(id, DeliveryState::Queued, now, None, now);
                }
                ids.len() as u64
            }
        }
    }
}
