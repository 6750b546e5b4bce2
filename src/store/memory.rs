//! `MemoryStore`: the whole `Store` in process memory, for tests and throwaway use.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    ClaimedDelivery, Completion, DeadLetter, DeliveryState, DestinationStats, EnqueueOutcome,
    Installation, LogEntry, LogStatus, NewDelivery, Outcome, Store,
};
use crate::attributes::{
    AttributeRecord, AttributeStore, Attributes, DEFAULT_ATTRIBUTE_CAP, Filter, UpsertStats,
    check_attribute_cap,
};
use crate::destination::{DeliveryError, DeliveryId};
use crate::event::Event;
use crate::identity::{IdentityLink, LinkOrigin};
use crate::integration::{IntegrationConfig, RunOutcome, RunRecord};
use crate::message::Target;
use crate::{Error, ErrorKind, Result};

#[derive(Debug, Clone)]
struct Row {
    event: Arc<Event>,
    route: String,
    destination: String,
    target: Target,
    state: DeliveryState,
    attempts: u32,
    due: DateTime<Utc>,
    lease: i64,
    lease_until: Option<DateTime<Utc>>,
    error: Option<DeliveryError>,
    died_at: Option<DateTime<Utc>>,
    log: Vec<LogEntry>,
}

/// Deliveries by id; ids are handed out densely from 1, so a `Vec` indexes them.
#[derive(Default)]
struct Rows(Vec<Row>);

impl Rows {
    fn index(id: DeliveryId) -> Option<usize> {
        usize::try_from(id).ok()?.checked_sub(1)
    }
    fn get(&self, id: &DeliveryId) -> Option<&Row> {
        self.0.get(Self::index(*id)?)
    }
    fn get_mut(&mut self, id: &DeliveryId) -> Option<&mut Row> {
        let i = Self::index(*id)?;
        self.0.get_mut(i)
    }
    fn push(&mut self, row: Row) -> DeliveryId {
        self.0.push(row);
        self.0.len() as DeliveryId
    }
    fn iter(&self) -> impl Iterator<Item = (DeliveryId, &Row)> {
        self.0
            .iter()
            .enumerate()
            .map(|(i, r)| (i as DeliveryId + 1, r))
    }
    fn values(&self) -> impl Iterator<Item = &Row> {
        self.0.iter()
    }
}

#[derive(Debug, Default, Clone)]
struct DestState {
    connected: bool,
    reason: Option<String>,
    last_success_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    last_error_at: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct State {
    events: HashSet<String>,
    rows: Rows,
    /// (due, id) of queued deliveries.
    due_index: BTreeSet<(DateTime<Utc>, DeliveryId)>,
    /// (lease_until, id) of in-flight deliveries.
    lease_index: BTreeSet<(DateTime<Utc>, DeliveryId)>,
    next_lease: i64,
    dest: HashMap<String, DestState>,
    links: BTreeMap<(String, String), IdentityLink>,
    attributes: BTreeMap<String, Attributes>,
    attribute_names: BTreeSet<String>,
    integrations: BTreeMap<String, IntegrationConfig>,
    runs: Vec<(RunRecord, Option<DateTime<Utc>>)>,
    installations: HashMap<(String, String), Installation>,
    once: HashMap<(String, String), DateTime<Utc>>,
}

impl State {
    fn log(
        &mut self,
        id: DeliveryId,
        attempt: u32,
        at: DateTime<Utc>,
        status: LogStatus,
        detail: Option<String>,
    ) {
        let Some(row) = self.rows.get_mut(&id) else {
            return;
        };
        row.log.push(LogEntry {
            delivery_id: id,
            attempt,
            at,
            status,
            detail,
        });
    }

    fn dest(&mut self, name: &str) -> &mut DestState {
        self.dest
            .entry(name.to_owned())
            .or_insert_with(|| DestState {
                connected: true,
                ..DestState::default()
            })
    }

    fn set_state(
        &mut self,
        id: DeliveryId,
        state: DeliveryState,
        due: DateTime<Utc>,
        lease_until: Option<DateTime<Utc>>,
    ) {
        let Some(row) = self.rows.get_mut(&id) else {
            return;
        };
        match row.state {
            DeliveryState::Queued => {
                self.due_index.remove(&(row.due, id));
            }
            DeliveryState::InFlight => {
                if let Some(until) = row.lease_until {
                    self.lease_index.remove(&(until, id));
                }
            }
            _ => {}
        }
        row.state = state;
        row.due = due;
        row.lease_until = lease_until;
        match state {
            DeliveryState::Queued => {
                self.due_index.insert((due, id));
            }
            DeliveryState::InFlight => {
                if let Some(until) = lease_until {
                    self.lease_index.insert((until, id));
                }
            }
            _ => {}
        }
    }
}

/// A [`Store`] kept in memory: fast, and gone when the process exits.
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    attribute_cap: usize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store with the default attribute cap.
    pub fn new() -> Self {
        MemoryStore {
            state: Arc::new(Mutex::new(State {
                next_lease: 1,
                ..State::default()
            })),
            attribute_cap: DEFAULT_ATTRIBUTE_CAP,
        }
    }

    /// Sets the cap on distinct attribute names.
    #[must_use]
    pub fn with_attribute_cap(mut self, cap: usize) -> Self {
        self.attribute_cap = cap;
        self
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::store("memory store lock poisoned"))
    }
}

fn expires(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    crate::clock::later(now, lease)
}

#[async_trait]
impl Store for MemoryStore {
    async fn enqueue(
        &self,
        event: &Event,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
    ) -> Result<EnqueueOutcome> {
        let mut s = self.lock()?;
        if s.events.contains(&event.id) {
            return Ok(EnqueueOutcome::Duplicate);
        }
        let event = Arc::new(event.clone());
        s.events.insert(event.id.clone());
        for d in deliveries {
            let id = s.rows.push(Row {
                event: event.clone(),
                route: d.route.clone(),
                destination: d.destination.clone(),
                target: d.target.clone(),
                state: DeliveryState::Queued,
                attempts: 0,
                due: now,
                lease: 0,
                lease_until: None,
                error: None,
                died_at: None,
                log: Vec::with_capacity(2),
            });
            s.due_index.insert((now, id));
            s.log(id, 0, now, LogStatus::Queued, None);
            s.dest(&d.destination);
        }
        Ok(EnqueueOutcome::Accepted {
            deliveries: deliveries.len(),
        })
    }

    async fn claim(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>> {
        let mut s = self.lock()?;
        let mut picked: Vec<(DateTime<Utc>, DeliveryId)> = Vec::new();
        for &(due, id) in s.due_index.iter() {
            if due > now || picked.len() >= limit {
                break;
            }
            picked.push((due, id));
        }
        for &(until, id) in s.lease_index.iter() {
            if until > now || picked.len() >= limit.saturating_mul(2) {
                break;
            }
            picked.push((until, id));
        }
        picked.sort();
        picked.truncate(limit);
        let until = expires(now, lease);
        let mut out = Vec::with_capacity(picked.len());
        for (_, id) in picked {
            let token = s.next_lease;
            s.next_lease += 1;
            s.set_state(id, DeliveryState::InFlight, now, Some(until));
            let Some(row) = s.rows.get_mut(&id) else {
                continue;
            };
            row.lease = token;
            out.push(ClaimedDelivery {
                id,
                lease: token,
                event: row.event.clone(),
                route: row.route.clone(),
                destination: row.destination.clone(),
                target: row.target.clone(),
                attempts: row.attempts,
            });
        }
        Ok(out)
    }

    async fn complete(&self, completions: &[Completion], now: DateTime<Utc>) -> Result<()> {
        let mut s = self.lock()?;
        for c in completions {
            let Some(row) = s.rows.get(&c.id) else {
                continue;
            };
            if row.state != DeliveryState::InFlight || row.lease != c.lease {
                continue;
            }
            let attempts = row.attempts;
            let destination = row.destination.clone();
            match &c.outcome {
                Outcome::Sent(receipt) => {
                    s.set_state(c.id, DeliveryState::Sent, now, None);
                    if let Some(r) = s.rows.get_mut(&c.id) {
                        r.attempts = attempts + 1;
                    }
                    s.log(
                        c.id,
                        attempts + 1,
                        now,
                        LogStatus::Sent,
                        receipt.remote_id.clone(),
                    );
                    s.dest(&destination).last_success_at = Some(now);
                }
                Outcome::Retry { at, error } => {
                    s.set_state(c.id, DeliveryState::Queued, *at, None);
                    if let Some(r) = s.rows.get_mut(&c.id) {
                        r.attempts = attempts + 1;
                    }
                    s.log(
                        c.id,
                        attempts + 1,
                        now,
                        LogStatus::Failed,
                        Some(error.to_string()),
                    );
                    let d = s.dest(&destination);
                    d.last_error = Some(error.to_string());
                    d.last_error_at = Some(now);
                }
                Outcome::Defer { until } => {
                    s.set_state(c.id, DeliveryState::Queued, *until, None);
                }
                Outcome::Dead { error, attempted } => {
                    let n = if *attempted { attempts + 1 } else { attempts };
                    s.set_state(c.id, DeliveryState::Dead, now, None);
                    if let Some(r) = s.rows.get_mut(&c.id) {
                        r.attempts = n;
                        r.error = Some(error.clone());
                        r.died_at = Some(now);
                    }
                    s.log(c.id, n, now, LogStatus::Dead, Some(error.to_string()));
                    let d = s.dest(&destination);
                    d.last_error = Some(error.to_string());
                    d.last_error_at = Some(now);
                }
                Outcome::Parked { reason } => {
                    s.set_state(c.id, DeliveryState::Parked, now, None);
                    s.log(c.id, 0, now, LogStatus::Parked, Some(reason.clone()));
                }
            }
        }
        Ok(())
    }

    async fn set_connected(
        &self,
        destination: &str,
        connected: bool,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let mut s = self.lock()?;
        {
            let d = s.dest(destination);
            d.connected = connected;
            d.reason = if connected {
                None
            } else {
                reason.map(str::to_owned)
            };
        }
        let (from, to, status) = if connected {
            (
                DeliveryState::Parked,
                DeliveryState::Queued,
                LogStatus::Queued,
            )
        } else {
            (
                DeliveryState::Queued,
                DeliveryState::Parked,
                LogStatus::Parked,
            )
        };
        let ids: Vec<DeliveryId> = s
            .rows
            .iter()
            .filter(|(_, r)| r.destination == destination && r.state == from)
            .map(|(id, _)| id)
            .collect();
        for id in &ids {
            s.set_state(*id, to, now, None);
            s.log(*id, 0, now, status, reason.map(str::to_owned));
        }
        Ok(ids.len() as u64)
    }

    async fn disconnected(&self) -> Result<Vec<String>> {
        let s = self.lock()?;
        let mut out: Vec<String> = s
            .dest
            .iter()
            .filter(|(_, d)| !d.connected)
            .map(|(k, _)| k.clone())
            .collect();
        out.sort();
        Ok(out)
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        let s = self.lock()?;
        let a = s.due_index.iter().next().map(|(t, _)| *t);
        let b = s.lease_index.iter().next().map(|(t, _)| *t);
        Ok(match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let s = self.lock()?;
        let mut out: Vec<DeadLetter> = s
            .rows
            .iter()
            .filter(|(_, r)| r.state == DeliveryState::Dead)
            .map(|(id, r)| DeadLetter {
                id,
                event_id: r.event.id.clone(),
                event_kind: r.event.kind.clone(),
                route: r.route.clone(),
                destination: r.destination.clone(),
                target: r.target.clone(),
                attempts: r.attempts,
                error: r
                    .error
                    .clone()
                    .unwrap_or_else(|| DeliveryError::permanent("unknown")),
                died_at: r.died_at.unwrap_or(r.due),
            })
            .collect();
        out.sort_by_key(|d| (d.died_at, d.id));
        out.truncate(limit);
        Ok(out)
    }

    async fn replay(&self, id: DeliveryId, now: DateTime<Utc>) -> Result<()> {
        let mut s = self.lock()?;
        match s.rows.get_mut(&id) {
            Some(r) if r.state == DeliveryState::Dead => {
                r.attempts = 0;
                r.error = None;
                r.died_at = None;
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("delivery {id} is not a dead letter"),
                ));
            }
        }
        s.set_state(id, DeliveryState::Queued, now, None);
        s.log(id, 0, now, LogStatus::Queued, Some("replayed".to_owned()));
        Ok(())
    }

    async fn delivery_log(&self, id: DeliveryId) -> Result<Vec<LogEntry>> {
        Ok(self
            .lock()?
            .rows
            .get(&id)
            .map(|r| r.log.clone())
            .unwrap_or_default())
    }

    async fn delivery_state(&self, id: DeliveryId) -> Result<Option<DeliveryState>> {
        Ok(self.lock()?.rows.get(&id).map(|r| r.state))
    }

    async fn destination_stats(&self) -> Result<Vec<DestinationStats>> {
        let s = self.lock()?;
        let mut map: BTreeMap<String, DestinationStats> = BTreeMap::new();
        for (name, d) in &s.dest {
            map.insert(
                name.clone(),
                DestinationStats {
                    destination: name.clone(),
                    connected: d.connected,
                    disconnected_reason: d.reason.clone(),
                    last_success_at: d.last_success_at,
                    last_error: d.last_error.clone(),
                    last_error_at: d.last_error_at,
                    ..DestinationStats::default()
                },
            );
        }
        for r in s.rows.values() {
            let e = map
                .entry(r.destination.clone())
                .or_insert_with(|| DestinationStats {
                    destination: r.destination.clone(),
                    connected: true,
                    ..DestinationStats::default()
                });
            match r.state {
                DeliveryState::Queued | DeliveryState::InFlight => e.queued += 1,
                DeliveryState::Parked => e.parked += 1,
                DeliveryState::Dead => e.dead += 1,
                DeliveryState::Sent => e.sent += 1,
            }
        }
        Ok(map.into_values().collect())
    }

    async fn put_link(&self, link: &IdentityLink) -> Result<()> {
        let mut s = self.lock()?;
        let key = (link.platform.clone(), link.user_id.clone());
        if let Some(existing) = s.links.get(&key) {
            if existing.origin == LinkOrigin::Manual && link.origin != LinkOrigin::Manual {
                return Ok(());
            }
        }
        s.links.insert(key, link.clone());
        Ok(())
    }

    async fn link(&self, platform: &str, user_id: &str) -> Result<Option<IdentityLink>> {
        Ok(self
            .lock()?
            .links
            .get(&(platform.to_owned(), user_id.to_owned()))
            .cloned())
    }

    async fn links(&self, platform: &str) -> Result<Vec<IdentityLink>> {
        Ok(self
            .lock()?
            .links
            .values()
            .filter(|l| l.platform == platform)
            .cloned()
            .collect())
    }

    async fn delete_link(&self, platform: &str, user_id: &str) -> Result<bool> {
        Ok(self
            .lock()?
            .links
            .remove(&(platform.to_owned(), user_id.to_owned()))
            .is_some())
    }

    async fn put_integration(&self, config: &IntegrationConfig) -> Result<()> {
        self.lock()?
            .integrations
            .insert(config.name.clone(), config.clone());
        Ok(())
    }

    async fn integrations(&self) -> Result<Vec<IntegrationConfig>> {
        Ok(self.lock()?.integrations.values().cloned().collect())
    }

    async fn start_run(
        &self,
        integration: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<RunRecord>> {
        let mut s = self.lock()?;
        for (run, lease_until) in s.runs.iter_mut() {
            if run.integration == integration && run.outcome == RunOutcome::Running {
                if lease_until.is_some_and(|t| t > now) {
                    return Ok(None);
                }
                run.outcome = RunOutcome::Failed;
                run.finished_at = Some(now);
                run.error = Some("abandoned: lease expired (process died?)".to_owned());
                *lease_until = None;
            }
        }
        let run = RunRecord {
            id: s.runs.len() as i64 + 1,
            integration: integration.to_owned(),
            started_at: now,
            finished_at: None,
            outcome: RunOutcome::Running,
            rows_read: 0,
            rows_imported: 0,
            rows_rejected: 0,
            row_errors: Vec::new(),
            properties_imported: 0,
            error: None,
            details: serde_json::Value::Null,
        };
        s.runs.push((run.clone(), Some(expires(now, lease))));
        Ok(Some(run))
    }

    async fn renew_run(&self, run_id: i64, now: DateTime<Utc>, lease: Duration) -> Result<bool> {
        let mut s = self.lock()?;
        match s
            .runs
            .iter_mut()
            .find(|(r, _)| r.id == run_id && r.outcome == RunOutcome::Running)
        {
            Some((_, until)) => {
                *until = Some(expires(now, lease));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn finish_run(&self, run: &RunRecord) -> Result<()> {
        let mut s = self.lock()?;
        match s.runs.iter_mut().find(|(r, _)| r.id == run.id) {
            Some(slot) => {
                *slot = (run.clone(), None);
                Ok(())
            }
            None => Err(Error::new(
                ErrorKind::NotFound,
                format!("run {} not found", run.id),
            )),
        }
    }

    async fn runs(&self, integration: &str, limit: usize) -> Result<Vec<RunRecord>> {
        let s = self.lock()?;
        Ok(s.runs
            .iter()
            .rev()
            .filter(|(r, _)| r.integration == integration)
            .take(limit)
            .map(|(r, _)| r.clone())
            .collect())
    }

    async fn put_installation(&self, installation: &Installation) -> Result<()> {
        self.lock()?.installations.insert(
            (installation.platform.clone(), installation.key.clone()),
            installation.clone(),
        );
        Ok(())
    }

    async fn installation(&self, platform: &str, key: &str) -> Result<Option<Installation>> {
        Ok(self
            .lock()?
            .installations
            .get(&(platform.to_owned(), key.to_owned()))
            .cloned())
    }

    async fn delete_installation(&self, platform: &str, key: &str) -> Result<bool> {
        Ok(self
            .lock()?
            .installations
            .remove(&(platform.to_owned(), key.to_owned()))
            .is_some())
    }

    async fn remember_once(
        &self,
        scope: &str,
        key: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut s = self.lock()?;
        let k = (scope.to_owned(), key.to_owned());
        if s.once.get(&k).is_some_and(|&exp| exp > now) {
            return Ok(false);
        }
        s.once.insert(k, expires_at);
        Ok(true)
    }
}

#[async_trait]
impl AttributeStore for MemoryStore {
    async fn upsert(&self, batch: &[AttributeRecord]) -> Result<crate::attributes::UpsertStats> {
        let mut s = self.lock()?;
        let new_names = check_attribute_cap(&s.attribute_names, batch, self.attribute_cap)?;
        let mut stats = UpsertStats {
            new_attribute_names: new_names.len(),
            ..UpsertStats::default()
        };
        s.attribute_names.extend(new_names);
        let mut seen = BTreeSet::new();
        for record in batch {
            let first_in_batch = seen.insert(record.user_id.as_str());
            match s.attributes.get_mut(&record.user_id) {
                Some(attrs) => {
                    if first_in_batch {
                        stats.users_updated += 1;
                    }
                    attrs.extend(
                        record
                            .attributes
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone())),
                    );
                }
                None => {
                    stats.users_created += 1;
                    s.attributes
                        .insert(record.user_id.clone(), record.attributes.clone());
                }
            }
        }
        Ok(stats)
    }

    async fn get(&self, user_id: &str) -> Result<Option<Attributes>> {
        Ok(self.lock()?.attributes.get(user_id).cloned())
    }

    async fn query(&self, filter: &Filter) -> Result<Vec<String>> {
        let s = self.lock()?;
        Ok(s.attributes
            .iter()
            .filter(|(_, a)| filter.matches(a))
            .map(|(u, _)| u.clone())
            .collect())
    }
}
