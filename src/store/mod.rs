//! The `Store` abstraction: outbox, delivery log, dead letters, identity links, attributes, integration runs and installations.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::attributes::AttributeStore;
use crate::destination::{DeliveryError, DeliveryId, Receipt};
use crate::event::Event;
use crate::identity::IdentityLink;
use crate::integration::{IntegrationConfig, RunRecord};
use crate::message::Target;
use crate::tenant::{Connection, ConnectionKey, ConnectionState, Secrets, TenantId};

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
pub mod query;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{LeaseClock, PaceDecision, PostgresStore, SharedPacer};
pub use query::{DeliveryQuery, DeliveryQueryStore, DeliveryRow, HourBucket};
#[cfg(feature = "sqlite")]
pub use sqlite::{Durability, SqliteStore};

/// The state of one delivery in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its due time.
    Queued,
    /// Claimed by a worker under a lease.
    InFlight,
    /// Delivered.
    Sent,
    /// Given up on; see the dead letters.
    Dead,
    /// Held because its destination is disconnected.
    Parked,
}

impl DeliveryState {
    /// Stable name for storage.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Queued => "queued",
            DeliveryState::InFlight => "in_flight",
            DeliveryState::Sent => "sent",
            DeliveryState::Dead => "dead",
            DeliveryState::Parked => "parked",
        }
    }
    /// Parses [`DeliveryState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "queued" => Some(DeliveryState::Queued),
            "in_flight" => Some(DeliveryState::InFlight),
            "sent" => Some(DeliveryState::Sent),
            "dead" => Some(DeliveryState::Dead),
            "parked" => Some(DeliveryState::Parked),
            _ => None,
        }
    }
}

/// The status recorded in the delivery log for one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStatus {
    /// Enqueued (or re-queued by replay / reconnect).
    Queued,
    /// Delivered.
    Sent,
    /// An attempt failed and will be retried.
    Failed,
    /// Dead-lettered.
    Dead,
    /// Parked while disconnected.
    Parked,
}

impl LogStatus {
    /// Stable name for storage.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStatus::Queued => "queued",
            LogStatus::Sent => "sent",
            LogStatus::Failed => "failed",
            LogStatus::Dead => "dead",
            LogStatus::Parked => "parked",
        }
    }
    /// Parses [`LogStatus::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "queued" => Some(LogStatus::Queued),
            "sent" => Some(LogStatus::Sent),
            "failed" => Some(LogStatus::Failed),
            "dead" => Some(LogStatus::Dead),
            "parked" => Some(LogStatus::Parked),
            _ => None,
        }
    }
}

/// A delivery to create when an event is enqueued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDelivery {
    /// The route's name.
    pub route: String,
    /// The destination's name.
    pub destination: String,
    /// Where it goes (after the tenant's rule override, if any).
    pub target: Target,
    /// The parking scope within the event's tenant: the destination's platform
    /// (`slack`) for destinations that use connections, `destination:<name>`
    /// otherwise. Parking, reconnecting and "not connected" apply per
    /// (tenant, scope).
    pub scope: String,
    /// The ordering and pacing key (tenant, destination and target): at most one
    /// delivery per key is in flight at a time, the oldest first.
    pub key: String,
}

/// The result of enqueueing one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum EnqueueOutcome {
    /// New event; this many deliveries were created.
    Accepted {
        /// Deliveries created (parked ones included).
        deliveries: usize,
    },
    /// The event id was already known; nothing was created.
    Duplicate,
}

/// A delivery claimed by a worker under a lease.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// The delivery's id.
    pub id: DeliveryId,
    /// Identifies this claim; a completion with a stale token is ignored.
    pub lease: i64,
    /// The event (shared by the deliveries of one event in a batch).
    pub event: std::sync::Arc<Event>,
    /// The route's name.
    pub route: String,
    /// The destination's name.
    pub destination: String,
    /// Where it goes.
    pub target: Target,
    /// The parking scope (see [`NewDelivery::scope`]).
    pub scope: String,
    /// The ordering and pacing key (see [`NewDelivery::key`]).
    pub key: String,
    /// The attempt this claim is (1 for the first): attempts are counted when
    /// claimed, so a delivery whose worker crashes every time still ends as a
    /// dead letter. Completions that were not attempts ([`Outcome::Defer`],
    /// [`Outcome::Snooze`], [`Outcome::Parked`], unattempted [`Outcome::Dead`],
    /// [`OutboxStore::release`]) give it back.
    pub attempt: u32,
    /// The epoch of the delivery's (tenant, scope) when it was claimed (0 if the
    /// scope has no recorded state); an [`Outcome::Parked`] from an older epoch
    /// than the scope's current one re-queues instead of parking.
    pub scope_epoch: u64,
}

/// What happened to a claimed delivery.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Delivered.
    Sent(Receipt),
    /// An attempt failed; try again at `at`. Later deliveries of the same key
    /// wait behind it (order).
    Retry {
        /// When to retry.
        at: DateTime<Utc>,
        /// Why it failed.
        error: DeliveryError,
    },
    /// Not attempted (paced by the rate limiter); due again at `until`. Gives the
    /// claim's attempt back.
    Defer {
        /// When it may go.
        until: DateTime<Utc>,
    },
    /// The platform throttled it with a `Retry-After`: due again at `until`
    /// without burning an attempt (a snooze); logged as failed with the error.
    /// Gives the claim's attempt back.
    Snooze {
        /// When it may go.
        until: DateTime<Utc>,
        /// The platform's answer.
        error: DeliveryError,
    },
    /// Given up on.
    Dead {
        /// Why.
        error: DeliveryError,
        /// False if the delivery was not attempted (gives the claim's attempt back).
        attempted: bool,
    },
    /// Not delivered: its (tenant, scope) is disconnected or not connected. In the
    /// same transaction the store marks the scope disconnected with `reason`
    /// (if it is not already) and parks the scope's queued deliveries and this
    /// one, unless the scope's epoch moved past `epoch` (reconnected
    /// meanwhile): then this delivery is re-queued, due now, and the scope is
    /// left as it is. Gives the claim's attempt back.
    Parked {
        /// Why.
        reason: String,
        /// The scope epoch the worker saw ([`ClaimedDelivery::scope_epoch`]).
        epoch: u64,
    },
}

/// A worker's report for one claimed delivery.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The delivery.
    pub id: DeliveryId,
    /// The claim's lease token.
    pub lease: i64,
    /// What happened.
    pub outcome: Outcome,
}

/// One row of the delivery log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// The attempt number this entry belongs to (0 for enqueue/park/replay).
    pub attempt: u32,
    /// When.
    pub at: DateTime<Utc>,
    /// What.
    pub status: LogStatus,
    /// Error text or remote id.
    pub detail: Option<String>,
}

/// A delivery that was given up on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The delivery's id (pass it to `replay`).
    pub id: DeliveryId,
    /// The event's tenant.
    pub tenant: TenantId,
    /// The event's id.
    pub event_id: String,
    /// The event's kind.
    pub event_kind: String,
    /// The route's name.
    pub route: String,
    /// The destination's name.
    pub destination: String,
    /// Where it was going.
    pub target: Target,
    /// Attempts made.
    pub attempts: u32,
    /// The classified reason.
    pub error: DeliveryError,
    /// When it died.
    pub died_at: DateTime<Utc>,
}

/// Counts and health for one (tenant, destination), as the store knows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationStats {
    /// The tenant.
    pub tenant: TenantId,
    /// The destination's name.
    pub destination: String,
    /// The parking scope of the destination's deliveries.
    pub scope: String,
    /// Waiting (queued or in flight).
    pub queued: u64,
    /// Parked while disconnected.
    pub parked: u64,
    /// Dead letters.
    pub dead: u64,
    /// Delivered.
    pub sent: u64,
    /// Last successful delivery.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Last error.
    pub last_error: Option<String>,
    /// When the last error happened.
    pub last_error_at: Option<DateTime<Utc>>,
}

/// The parking state of one (tenant, scope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeStatus {
    /// The tenant.
    pub tenant: TenantId,
    /// The scope (see [`NewDelivery::scope`]).
    pub scope: String,
    /// False while disconnected / not connected.
    pub connected: bool,
    /// Why it is disconnected.
    pub reason: Option<String>,
    /// Since when it is in its current state.
    pub since: DateTime<Utc>,
    /// Bumped on every reconnect; fences late `Parked` answers.
    pub epoch: u64,
}

/// A change to a (tenant, scope)'s parking state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeChange {
    /// Marks it disconnected and parks its queued deliveries (new ones are
    /// enqueued parked). With `epoch: Some(e)`, nothing happens unless the
    /// scope's epoch is still `e` (a late answer from before a reconnect).
    Disconnect {
        /// Why.
        reason: String,
        /// The epoch the caller saw, to fence against a reconnect since.
        epoch: Option<u64>,
    },
    /// Marks it connected, bumps its epoch and re-queues its parked deliveries,
    /// due now, in their original order.
    Connect,
}

/// A tenant's override of one route ("which events sync", "which channel").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRule {
    /// The tenant.
    pub tenant: TenantId,
    /// The route's name.
    pub route: String,
    /// `Some(false)` switches the route off for this tenant; `None` keeps the
    /// route's default.
    pub enabled: Option<bool>,
    /// Replaces the route's target for this tenant; `None` keeps the default.
    pub target: Option<Target>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

/// What [`OutboxStore::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneStats {
    /// Delivered deliveries removed (with their log).
    pub deliveries: u64,
    /// Events removed (no delivery of theirs left).
    pub events: u64,
}

/// The outbox: events, their deliveries, claims under leases, outcomes, parking
/// per (tenant, scope), dead letters and the delivery log.
///
/// Times are passed in by the caller (the engine's clock), never read by the
/// store, so the engine can be tested with a paused clock.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Writes the event (once, however many deliveries it has) and its
    /// deliveries in one transaction; deliveries whose (tenant, scope) is
    /// disconnected are created parked. Event ids are unique per tenant: an
    /// (event tenant, event id) already stored makes this a no-op returning
    /// [`EnqueueOutcome::Duplicate`], while two tenants may use the same id
    /// (hosts with per-tenant sequences never lose one tenant's event to
    /// another's).
    async fn enqueue(
        &self,
        event: &Event,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
    ) -> Result<EnqueueOutcome>;

    /// Claims up to `limit` deliveries, at most one per key: the oldest pending
    /// (queued or in flight) delivery of each key, if it is queued and due at
    /// `now` or in flight with a lease that expired. So a key's deliveries go
    /// out one at a time and in order, and a retrying or deferred head holds
    /// back the rest of its key. Leases them until `now + lease` and counts the
    /// attempt. A row that cannot be decoded is dead-lettered with the reason
    /// instead of being returned; the others are claimed as usual.
    async fn claim(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>>;

    /// Records what happened to claimed deliveries, in one transaction.
    /// Completions whose lease token no longer matches (the lease expired and
    /// someone else claimed it) are ignored.
    async fn complete(&self, completions: &[Completion], now: DateTime<Utc>) -> Result<()>;

    /// Extends the leases of claims still being worked to `now + lease`; returns
    /// how many were still held.
    async fn renew(
        &self,
        claims: &[(DeliveryId, i64)],
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<u64>;

    /// Gives claims back unattempted (shutdown): queued, due at `now`, attempt
    /// given back.
    async fn release(&self, claims: &[(DeliveryId, i64)], now: DateTime<Utc>) -> Result<()>;

    /// Changes the parking state of a (tenant, scope); returns how many
    /// deliveries changed state (parked, or re-queued).
    async fn set_scope(
        &self,
        tenant: &TenantId,
        scope: &str,
        change: ScopeChange,
        now: DateTime<Utc>,
    ) -> Result<u64>;

    /// Every (tenant, scope) that has a recorded state.
    async fn scopes(&self) -> Result<Vec<ScopeStatus>>;

    /// The earliest time something becomes due (a queued delivery, or a lease that
    /// expires), if anything is pending.
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>>;

    /// How many deliveries are queued or in flight (all tenants).
    async fn pending(&self) -> Result<u64>;

    /// Dead letters, oldest first; only `tenant`'s when given.
    async fn dead_letters(
        &self,
        tenant: Option<&TenantId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>>;

    /// Re-queues a dead letter (attempts reset, due at `now`). `NotFound` if `id`
    /// is not a dead letter.
    async fn replay(&self, id: DeliveryId, now: DateTime<Utc>) -> Result<()>;

    /// The log of one delivery, oldest first.
    async fn delivery_log(&self, id: DeliveryId) -> Result<Vec<LogEntry>>;

    /// The state of one delivery.
    async fn delivery_state(&self, id: DeliveryId) -> Result<Option<DeliveryState>>;

    /// Counts and health per (tenant, destination).
    async fn destination_stats(&self) -> Result<Vec<DestinationStats>>;

    /// Removes delivered deliveries (and their log) last changed before
    /// `sent_before`, and events with no delivery left. Dead letters and
    /// pending deliveries are kept.
    async fn prune(&self, sent_before: DateTime<Utc>) -> Result<PruneStats>;
}

/// Tenants' connections to platform accounts, with secrets sealed by the
/// store's [`crate::secret::Keyring`]. A store without a keyring refuses to
/// write secrets.
#[async_trait]
pub trait ConnectionStore: Send + Sync {
    /// Creates or replaces a connection (by key), bumping its revision, and
    /// returns it as stored. A key owned by another tenant is a `Conflict`. A
    /// default connection makes the tenant's other connections of that
    /// platform non-default.
    async fn put_connection(
        &self,
        connection: &Connection,
        now: DateTime<Utc>,
    ) -> Result<Connection>;
    /// One connection by key.
    async fn connection(&self, key: &ConnectionKey) -> Result<Option<Connection>>;
    /// The tenant's default connection for `platform` (the one marked default,
    /// else the only one), if any.
    async fn default_connection(
        &self,
        tenant: &TenantId,
        platform: &str,
    ) -> Result<Option<Connection>>;
    /// All connections, of one tenant when given, by key.
    async fn connections(&self, tenant: Option<&TenantId>) -> Result<Vec<Connection>>;
    /// Removes a connection; true if there was one.
    async fn delete_connection(&self, key: &ConnectionKey) -> Result<bool>;
    /// Records a connection's state (connected, or disconnected with a reason);
    /// false if there is no such connection.
    async fn set_connection_state(
        &self,
        key: &ConnectionKey,
        state: &ConnectionState,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Compare-and-swap of a connection's secrets (token rotation across
    /// instances): replaces them only if the stored revision is still
    /// `expected_revision`, and returns the updated connection; `None` when
    /// another writer got there first (re-read it).
    async fn swap_secrets(
        &self,
        key: &ConnectionKey,
        expected_revision: u64,
        secrets: &Secrets,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<Connection>>;
}

/// Identity links per (tenant, platform, host user).
#[async_trait]
pub trait LinkStore: Send + Sync {
    /// Creates or replaces a link. An automatic link never replaces a manual one.
    async fn put_link(&self, link: &IdentityLink) -> Result<()>;
    /// The link of one host user of a tenant on a platform (connection key text).
    async fn link(
        &self,
        tenant: &TenantId,
        platform: &str,
        user_id: &str,
    ) -> Result<Option<IdentityLink>>;
    /// All of a tenant's links on a platform.
    async fn links(&self, tenant: &TenantId, platform: &str) -> Result<Vec<IdentityLink>>;
    /// Removes a link; true if there was one.
    async fn delete_link(&self, tenant: &TenantId, platform: &str, user_id: &str) -> Result<bool>;
}

/// Scheduled integrations and their runs, per tenant.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Creates or replaces an integration's configuration (by tenant and name).
    async fn put_integration(&self, config: &IntegrationConfig) -> Result<()>;
    /// Integrations by (tenant, name); one tenant's when given.
    async fn integrations(&self, tenant: Option<&TenantId>) -> Result<Vec<IntegrationConfig>>;
    /// Removes an integration (its runs stay); true if there was one.
    async fn delete_integration(&self, tenant: &TenantId, name: &str) -> Result<bool>;
    /// Starts a run unless one of the same integration is running with an
    /// unexpired lease (then `None`): runs never overlap.
    async fn start_run(
        &self,
        tenant: &TenantId,
        integration: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<RunRecord>>;
    /// Extends a running run's lease to `now + lease` (the run's heartbeat). False
    /// if the run is no longer running (it finished, or another instance took it
    /// over after its lease expired).
    async fn renew_run(&self, run_id: i64, now: DateTime<Utc>, lease: Duration) -> Result<bool>;
    /// Records a finished run (outcome, counts) and releases its lease.
    async fn finish_run(&self, run: &RunRecord) -> Result<()>;
    /// The latest runs of an integration, newest first.
    async fn runs(
        &self,
        tenant: &TenantId,
        integration: &str,
        limit: usize,
    ) -> Result<Vec<RunRecord>>;
}

/// Per-tenant route rules.
#[async_trait]
pub trait RuleStore: Send + Sync {
    /// Creates or replaces a tenant's rule for a route; a rule with neither
    /// `enabled` nor `target` set removes it.
    async fn put_rule(&self, rule: &RouteRule) -> Result<()>;
    /// A tenant's rules, by route name.
    async fn rules(&self, tenant: &TenantId) -> Result<Vec<RouteRule>>;
}

/// Single-use keys (OAuth states, duplicate webhook deliveries).
#[async_trait]
pub trait OnceStore: Send + Sync {
    /// Remembers `key` in `scope` until `expires_at`; true the first time, false if
    /// it is already remembered (single-use tokens, duplicate webhook deliveries).
    async fn remember_once(
        &self,
        scope: &str,
        key: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool>;
}

/// Durable state behind a [`crate::Switchboard`]: every concern's trait. Any type
/// implementing them all is a `Store`.
///
/// Every method that changes more than one row does so atomically.
/// Implementations: [`MemoryStore`], [`SqliteStore`]; all pass the same
/// behaviour suite (`tests/store_suite.rs`).
pub trait Store:
    OutboxStore
    + ConnectionStore
    + LinkStore
    + RunStore
    + RuleStore
    + OnceStore
    + AttributeStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: OutboxStore
        + ConnectionStore
        + LinkStore
        + RunStore
        + RuleStore
        + OnceStore
        + AttributeStore
        + Send
        + Sync
        + 'static
{
}
