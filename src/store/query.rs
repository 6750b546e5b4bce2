//! Read-only delivery queries for admin pages: recent deliveries of one tenant filtered by status, kind and person, and an hourly histogram of outcomes.

use async_trait::async_trait;
use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::destination::{DeliveryError, DeliveryId};
use crate::message::Target;
use crate::store::{DeliveryState, LogStatus};
use crate::tenant::TenantId;

/// The most rows one [`DeliveryQuery`] returns, whatever its `limit`.
pub const MAX_QUERY_ROWS: usize = 500;

/// Which deliveries of one tenant to list, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryQuery {
    /// The tenant (always required: a query never spans tenants).
    pub tenant: TenantId,
    /// Only deliveries in this state.
    pub status: Option<DeliveryState>,
    /// Only deliveries of events of exactly this kind.
    pub kind: Option<String>,
    /// Only deliveries of events whose subject is this host user id.
    pub person: Option<String>,
    /// At most this many rows (capped at [`MAX_QUERY_ROWS`]).
    pub limit: usize,
    /// Only deliveries with a smaller id (the next page after the last row seen).
    pub before_id: Option<DeliveryId>,
}

impl DeliveryQuery {
    /// The latest 50 deliveries of `tenant`, unfiltered.
    pub fn tenant(tenant: TenantId) -> Self {
        DeliveryQuery {
            tenant,
            status: None,
            kind: None,
            person: None,
            limit: 50,
            before_id: None,
        }
    }

    /// The effective limit: `limit` capped at [`MAX_QUERY_ROWS`].
    pub fn capped_limit(&self) -> usize {
        self.limit.min(MAX_QUERY_ROWS)
    }

    /// Whether a row with these fields matches the filters (tenant included);
    /// used by stores that filter in Rust.
    pub fn matches(
        &self,
        tenant: &TenantId,
        state: DeliveryState,
        kind: &str,
        person: Option<&str>,
    ) -> bool {
        &self.tenant == tenant
            && self.status.is_none_or(|s| s == state)
            && self.kind.as_deref().is_none_or(|k| k == kind)
            && self.person.as_deref().is_none_or(|p| person == Some(p))
    }
}

/// One delivery as an admin page lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRow {
    /// The delivery's id.
    pub id: DeliveryId,
    /// The event's tenant.
    pub tenant: TenantId,
    /// The event's id.
    pub event_id: String,
    /// The event's kind.
    pub event_kind: String,
    /// The host user id of the event's subject, if it has one.
    pub person: Option<String>,
    /// The route's name.
    pub route: String,
    /// The destination's name.
    pub destination: String,
    /// Where it goes.
    pub target: Target,
    /// Its current state.
    pub state: DeliveryState,
    /// Attempts made (counted at claim).
    pub attempts: u32,
    /// When it last changed state (for a queued delivery: when it is due).
    pub updated_at: DateTime<Utc>,
    /// The classified reason, for a dead letter.
    pub error: Option<DeliveryError>,
    /// When it died, for a dead letter.
    pub died_at: Option<DateTime<Utc>>,
}

/// Delivery-log outcomes of one tenant within one hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourBucket {
    /// The start of the hour (UTC).
    pub hour: DateTime<Utc>,
    /// Deliveries sent.
    pub sent: u64,
    /// Attempts that failed and were retried.
    pub failed: u64,
    /// Deliveries dead-lettered.
    pub dead: u64,
    /// Deliveries parked while disconnected.
    pub parked: u64,
}

impl HourBucket {
    /// All outcomes of the hour.
    pub fn total(&self) -> u64 {
        self.sent + self.failed + self.dead + self.parked
    }
}

/// The start of the hour `t` falls in.
pub fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(ChronoDuration::hours(1)).unwrap_or(t)
}

/// `hours` empty buckets, oldest first, the last one being the hour of `until`.
pub fn empty_buckets(until: DateTime<Utc>, hours: u32) -> Vec<HourBucket> {
    let last = hour_of(until);
    (0..hours)
        .rev()
        .map(|back| HourBucket {
            hour: last - ChronoDuration::hours(i64::from(back)),
            ..HourBucket::default()
        })
        .collect()
}

/// Adds `n` log entries of `status` at hour `hour` to the bucket of that hour,
/// if there is one (entries outside the window, and enqueue entries, are
/// ignored).
pub fn add_to_buckets(buckets: &mut [HourBucket], hour: DateTime<Utc>, status: LogStatus, n: u64) {
    let Some(b) = buckets.iter_mut().find(|b| b.hour == hour) else {
        return;
    };
    match status {
        LogStatus::Sent => b.sent += n,
        LogStatus::Failed => b.failed += n,
        LogStatus::Dead => b.dead += n,
        LogStatus::Parked => b.parked += n,
        LogStatus::Queued => {}
    }
}

/// Read-only queries over one tenant's deliveries, for admin pages
/// (implemented by [`crate::MemoryStore`], `SqliteStore` and `PostgresStore`).
///
/// Every method takes the tenant and never returns another tenant's rows.
#[async_trait]
pub trait DeliveryQueryStore: Send + Sync {
    /// The deliveries matching `query`, newest (highest id) first.
    async fn query_deliveries(&self, query: &DeliveryQuery) -> Result<Vec<DeliveryRow>>;

    /// One delivery, only if it belongs to `tenant`.
    async fn tenant_delivery(
        &self,
        tenant: &TenantId,
        id: DeliveryId,
    ) -> Result<Option<DeliveryRow>>;

    /// The tenant's delivery-log outcomes (sent, failed, dead, parked) per
    /// hour: `hours` buckets, oldest first, ending with the hour of `until`.
    async fn delivery_histogram(
        &self,
        tenant: &TenantId,
        until: DateTime<Utc>,
        hours: u32,
    ) -> Result<Vec<HourBucket>>;
}
