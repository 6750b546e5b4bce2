//! Status per (tenant, destination): connection state, queue depth, parked, dead letters, last success and error.

use std::collections::{BTreeMap, HashMap};

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
}

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

    /// The status rows of one tenant.
    pub async fn tenant_status(&self, tenant: &TenantId) -> Result<Vec<DestinationStatus>> {
        let mut all = self.status().await?;
        all.retain(|s| &s.tenant == tenant);
        Ok(all)
    }
}
