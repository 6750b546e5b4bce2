//! Status per (tenant, destination): connection state, queue depth, parked, dead letters, last success and error, and platform notices (e.g. Slack's `app_rate_limited`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Switchboard;
use crate::Result;
use crate::tenant::TenantId;

/// The health of one destination for one tenant, for an admin page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestinationStatus {
    /// The tenant.
    pub tenant: TenantId,
    /// The destination's name.
    pub name: String,
    /// False while the tenant's connection is disconnected or missing, until
    /// reconnected.
    pub connected: bool,
    /// Why it is disconnected ("not connected", "token revoked — reinstall").
    pub disconnected_reason: Option<String>,
    /// Since when it is disconnected.
    pub disconnected_since: Option<DateTime<Utc>>,
    /// Deliveries waiting (queued or in flight).
    pub queue_depth: u64,
    /// Deliveries parked while disconnected.
    pub parked: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Delivered so far (within the retention period).
    pub sent: u64,
    /// Last successful delivery.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Last error.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// Notices the platform sent about this tenant's integration (e.g.
    /// Slack's `app_rate_limited`: its Events API events are being dropped),
    /// the latest of each kind, oldest first.
    pub notices: Vec<StatusNotice>,
}

/// A platform's notice about one tenant's integration, recorded with
/// [`Switchboard::record_notice`] and shown in [`Switchboard::status`]
/// (kept in memory by this process; it also arrives as an event in the
/// outbox where the connector publishes one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusNotice {
    /// A stable kind, e.g. `slack.app_rate_limited`.
    pub kind: String,
    /// Since when it applies.
    pub since: DateTime<Utc>,
    /// What it means and what to do.
    pub detail: String,
}

/// Notices by (tenant, destination).
#[derive(Debug, Default)]
pub(crate) struct Notices(Mutex<HashMap<(TenantId, String), Vec<StatusNotice>>>);

impl DestinationStatus {
    fn empty(tenant: TenantId, name: String) -> Self {
        DestinationStatus {
            tenant,
            name,
            connected: true,
            disconnected_reason: None,
            disconnected_since: None,
            queue_depth: 0,
            parked: 0,
            dead_letters: 0,
            sent: 0,
            last_success_at: None,
            last_error: None,
            last_error_at: None,
            notices: Vec::new(),
        }
    }
}

impl Switchboard {
    /// The health of every destination for every tenant that has deliveries or
    /// a recorded state (and for the default tenant, every destination), sorted
    /// by tenant then destination.
    pub async fn status(&self) -> Result<Vec<DestinationStatus>> {
        let stats = self.inner.store.destination_stats().await?;
        let scopes = self.inner.store.scopes().await?;
        let scope_state: HashMap<(TenantId, String), _> = scopes
            .into_iter()
            .map(|s| ((s.tenant.clone(), s.scope.clone()), s))
            .collect();
        let mut out: BTreeMap<(TenantId, String), DestinationStatus> = BTreeMap::new();
        let default = TenantId::default_tenant();
        for name in self.inner.destinations.keys() {
            out.insert(
                (default.clone(), name.clone()),
                DestinationStatus::empty(default.clone(), name.clone()),
            );
        }
        for s in stats {
            let row = out
                .entry((s.tenant.clone(), s.destination.clone()))
                .or_insert_with(|| {
                    DestinationStatus::empty(s.tenant.clone(), s.destination.clone())
                });
            row.queue_depth = s.queued;
            row.parked = s.parked;
            row.dead_letters = s.dead;
            row.sent = s.sent;
            row.last_success_at = s.last_success_at;
            row.last_error = s.last_error;
            row.last_error_at = s.last_error_at;
        }
        // Scopes recorded for tenants without deliveries yet still show.
        for ((tenant, scope), _) in scope_state.iter() {
            for (name, entry) in &self.inner.destinations {
                if &entry.scope == scope {
                    out.entry((tenant.clone(), name.clone()))
                        .or_insert_with(|| DestinationStatus::empty(tenant.clone(), name.clone()));
                }
            }
        }
        let notices = self
            .inner
            .notices
            .0
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        for ((tenant, name), list) in notices {
            if self.inner.destinations.contains_key(&name) {
                out.entry((tenant.clone(), name.clone()))
                    .or_insert_with(|| DestinationStatus::empty(tenant, name))
                    .notices = list;
            }
        }
        for ((tenant, name), row) in out.iter_mut() {
            let Some(entry) = self.inner.destinations.get(name) else {
                continue;
            };
            if let Some(s) = scope_state.get(&(tenant.clone(), entry.scope.clone())) {
                row.connected = s.connected;
                if !s.connected {
                    row.disconnected_reason = s.reason.clone();
                    row.disconnected_since = Some(s.since);
                }
            }
        }
        Ok(out.into_values().collect())
    }

    /// Records a platform notice for `tenant`'s `destination` (replacing an
    /// earlier one of the same kind); [`Switchboard::status`] shows it.
    pub fn record_notice(&self, tenant: &TenantId, destination: &str, notice: StatusNotice) {
        if let Ok(mut m) = self.inner.notices.0.lock() {
            let list = m
                .entry((tenant.clone(), destination.to_owned()))
                .or_default();
            list.retain(|n| n.kind != notice.kind);
            list.push(notice);
            list.sort_by_key(|n| n.since);
        }
    }

    /// Clears `tenant`'s notice of `kind` on `destination`; true if there was one.
    pub fn clear_notice(&self, tenant: &TenantId, destination: &str, kind: &str) -> bool {
        let Ok(mut m) = self.inner.notices.0.lock() else {
            return false;
        };
        let Some(list) = m.get_mut(&(tenant.clone(), destination.to_owned())) else {
            return false;
        };
        let before = list.len();
        list.retain(|n| n.kind != kind);
        before != list.len()
    }

    /// The status rows of one tenant.
    pub async fn tenant_status(&self, tenant: &TenantId) -> Result<Vec<DestinationStatus>> {
        let mut all = self.status().await?;
        all.retain(|s| &s.tenant == tenant);
        Ok(all)
    }
}
