//! The in-memory outbox's reports and upkeep: scope states, stats, dead letters, the log, replay, pruning, lease renewal and release, and read-only row views.

use super::*;

impl Outbox {
    pub(in crate::store::memory) fn scopes(&self) -> Vec<ScopeStatus> {
        let mut out: Vec<ScopeStatus> = self
            .scopes
            .iter()
            .filter_map(|s| {
                let st = s.status.as_ref()?;
                Some(ScopeStatus {
                    tenant: s.tenant.clone(),
                    scope: s.name.clone(),
                    connected: st.connected,
                    reason: st.reason.clone(),
                    since: st.since,
                    epoch: st.epoch,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.tenant, &a.scope).cmp(&(&b.tenant, &b.scope)));
        out
    }

    fn dead_letter(&self, id: DeliveryId) -> Option<DeadLetter> {
        let r = self.row(id)?;
        Some(DeadLetter {
            id,
            tenant: r.event.tenant.clone(),
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
            died_at: r.died_at.unwrap_or(r.changed_at),
        })
    }

    pub(in crate::store::memory) fn replay(
        &mut self,
        id: DeliveryId,
        now: DateTime<Utc>,
    ) -> Result<()> {
        match self.row_mut(id) {
            Some(r) if r.state == DeliveryState::Dead => {
                r.attempts = 0;
                r.error = None;
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("delivery {id} is not a dead letter"),
                ));
            }
        }
        self.log(id, 0, now, LogStatus::Queued, Some("replayed".to_owned()));
        self.transition(id, DeliveryState::Queued, now, None, now);
        Ok(())
    }

    pub(in crate::store::memory) fn destination_stats(&self) -> Vec<DestinationStats> {
        let mut out: Vec<DestinationStats> = self
            .dests
            .iter()
            .map(|d| DestinationStats {
                tenant: d.tenant.clone(),
                destination: d.destination.clone(),
                scope: d.scope.clone(),
                queued: d.counts[0] + d.counts[1],
                sent: d.counts[2],
                dead: d.counts[3],
                parked: d.counts[4],
                last_success_at: d.last_success_at,
                last_error: d.last_error.clone(),
                last_error_at: d.last_error_at,
            })
            .collect();
        out.sort_by(|a, b| (&a.tenant, &a.destination).cmp(&(&b.tenant, &b.destination)));
        out
    }

    pub(in crate::store::memory) fn prune(&mut self, sent_before: DateTime<Utc>) -> PruneStats {
        let mut stats = PruneStats::default();
        for i in 0..self.rows.len() {
            let old = matches!(
                self.rows.get(i),
                Some(Some(r)) if r.state == DeliveryState::Sent && r.changed_at < sent_before
            );
            if !old {
                continue;
            }
            let Some(row) = self.rows.get_mut(i).and_then(Option::take) else {
                continue;
            };
            stats.deliveries += 1;
            if let Some(d) = self.dests.get_mut(row.dest) {
                d.counts[2] = d.counts[2].saturating_sub(1);
            }
            if let Some(n) = self
                .events
                .get_mut(&row.event.tenant)
                .and_then(|ids| ids.get_mut(&row.event.id))
            {
                *n = n.saturating_sub(1);
            }
        }
        for ids in self.events.values_mut() {
            let before = ids.len();
            ids.retain(|_, n| *n > 0);
            stats.events += (before - ids.len()) as u64;
        }
        self.events.retain(|_, ids| !ids.is_empty());
        stats
    }

    pub(in crate::store::memory) fn renew(
        &mut self,
        claims: &[(DeliveryId, i64)],
        now: DateTime<Utc>,
        lease: Duration,
    ) -> u64 {
        let until = expires(now, lease);
        let mut held = 0;
        for &(id, token) in claims {
            let Some(due) = self
                .row(id)
                .filter(|r| r.state == DeliveryState::InFlight && r.lease == token)
                .map(|r| r.due)
            else {
                continue;
            };
            self.transition(id, DeliveryState::InFlight, due, Some(until), now);
            held += 1;
        }
        held
    }

    pub(in crate::store::memory) fn release(
        &mut self,
        claims: &[(DeliveryId, i64)],
        now: DateTime<Utc>,
    ) {
        for &(id, token) in claims {
            if self
                .row(id)
                .is_some_and(|r| r.state == DeliveryState::InFlight && r.lease == token)
            {
                self.give_attempt_back(id);
                self.transition(id, DeliveryState::Queued, now, None, now);
            }
        }
    }

    pub(in crate::store::memory) fn next_due(&self) -> Option<DateTime<Utc>> {
        let a = self.head_due.first().map(|(t, _)| *t);
        let b = self.head_lease.first().map(|(t, _)| *t);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(in crate::store::memory) fn pending(&self) -> u64 {
        self.pending
    }

    pub(in crate::store::memory) fn dead_letters(
        &self,
        tenant: Option<&TenantId>,
        limit: usize,
    ) -> Vec<DeadLetter> {
        self.dead
            .iter()
            .filter_map(|&(_, id)| self.dead_letter(id))
            .filter(|d| tenant.is_none_or(|t| &d.tenant == t))
            .take(limit)
            .collect()
    }

    pub(in crate::store::memory) fn delivery_log(&self, id: DeliveryId) -> Vec<LogEntry> {
        self.row(id).map(|r| r.log.clone()).unwrap_or_default()
    }

    pub(in crate::store::memory) fn delivery_state(&self, id: DeliveryId) -> Option<DeliveryState> {
        self.row(id).map(|r| r.state)
    }
}

/// A read-only view of one delivery, for the admin console's queries
/// (`memory/query.rs`).
pub(in crate::store::memory) struct RowView<'a> {
    pub(in crate::store::memory) id: DeliveryId,
    pub(in crate::store::memory) event: &'a Event,
    pub(in crate::store::memory) route: &'a str,
    pub(in crate::store::memory) destination: &'a str,
    pub(in crate::store::memory) target: &'a Target,
    pub(in crate::store::memory) state: DeliveryState,
    pub(in crate::store::memory) attempts: u32,
    pub(in crate::store::memory) changed_at: DateTime<Utc>,
    pub(in crate::store::memory) error: Option<&'a DeliveryError>,
    pub(in crate::store::memory) died_at: Option<DateTime<Utc>>,
    pub(in crate::store::memory) log: &'a [LogEntry],
}

impl Outbox {
    /// The stored deliveries with an id below `before` (all when `None`),
    /// newest first.
    pub(in crate::store::memory) fn rows_newest_first(
        &self,
        before: Option<DeliveryId>,
    ) -> impl Iterator<Item = RowView<'_>> {
        let end = match before {
            None => self.rows.len(),
            Some(b) => slot(b).map_or(0, |s| s.min(self.rows.len())),
        };
        self.rows[..end]
            .iter()
            .enumerate()
            .rev()
            .filter_map(|(i, r)| {
                let r = r.as_deref()?;
                Some(RowView {
                    id: i64::try_from(i + 1).unwrap_or(i64::MAX),
                    event: &r.event,
                    route: &r.route,
                    destination: &r.destination,
                    target: &r.target,
                    state: r.state,
                    attempts: r.attempts,
                    changed_at: r.changed_at,
                    error: r.error.as_ref(),
                    died_at: r.died_at,
                    log: &r.log,
                })
            })
    }
}
