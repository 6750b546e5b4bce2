//! The `Store` abstraction: outbox, delivery log, dead letters, identity links, attributes, integration runs and installations.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::attributes::AttributeStore;
use crate::destination::{DeliveryError, DeliveryId, Receipt};
use crate::event::Event;
use crate::identity::IdentityLink;
use crate::integration::{IntegrationConfig, RunRecord};
use crate::message::Target;

mod memory;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use memory::MemoryStore;
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
    /// Where it goes.
    pub target: Target,
}

/// The result of enqueueing one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum EnqueueOutcome {
    /// New event; this many deliveries were created.
    Accepted {
        /// Deliveries created.
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
    /// Attempts already made.
    pub attempts: u32,
}

/// What happened to a claimed delivery.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Delivered.
    Sent(Receipt),
    /// An attempt failed; try again at `at`.
    Retry {
        /// When to retry.
        at: DateTime<Utc>,
        /// Why it failed.
        error: DeliveryError,
    },
    /// Not attempted (paced by the rate limiter); due again at `until`.
    Defer {
        /// When it may go.
        until: DateTime<Utc>,
    },
    /// Given up on.
    Dead {
        /// Why.
        error: DeliveryError,
        /// True if this completion was an attempt (counts toward attempts).
        attempted: bool,
    },
    /// Not attempted: its destination is disconnected.
    Parked {
        /// Why.
        reason: String,
    },
}

/// A worker's report for one claimed delivery.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The delivery.
    pub id: DeliveryId,
    /// The claim's lease token.
    pub lease: i64,
    /// The destination (for per-destination status).
    pub destination: String,
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

/// Counts and health for one destination, as the store knows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationStats {
    /// The destination's name.
    pub destination: String,
    /// False after a `Disconnected` answer until reconnected.
    pub connected: bool,
    /// Why it was disconnected.
    pub disconnected_reason: Option<String>,
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

/// A connector installation (e.g. a Slack workspace's bot token).
#[derive(Clone, Serialize, Deserialize)]
pub struct Installation {
    /// Platform (e.g. `slack`).
    pub platform: String,
    /// Key within the platform (e.g. the Slack team id).
    pub key: String,
    /// The access token.
    #[serde(serialize_with = "expose_secret")]
    pub token: SecretString,
    /// The refresh token for rotating tokens.
    #[serde(serialize_with = "expose_opt_secret", default)]
    pub refresh_token: Option<SecretString>,
    /// When the access token expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Non-secret details (bot user id, scopes…).
    pub data: serde_json::Value,
    /// When it was installed or last refreshed.
    pub updated_at: DateTime<Utc>,
}

fn expose_secret<S: serde::Serializer>(s: &SecretString, ser: S) -> Result<S::Ok, S::Error> {
    use secrecy::ExposeSecret;
    ser.serialize_str(s.expose_secret())
}

fn expose_opt_secret<S: serde::Serializer>(
    s: &Option<SecretString>,
    ser: S,
) -> Result<S::Ok, S::Error> {
    use secrecy::ExposeSecret;
    match s {
        Some(s) => ser.serialize_some(s.expose_secret()),
        None => ser.serialize_none(),
    }
}

impl std::fmt::Debug for Installation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Installation")
            .field("platform", &self.platform)
            .field("key", &self.key)
            .field("token", &"[redacted]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires_at", &self.expires_at)
            .field("data", &self.data)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// Durable state behind a [`crate::Switchboard`].
///
/// Every method that changes more than one row does so atomically. Times are
/// passed in by the caller (the engine's clock), never read by the store, so the
/// engine can be tested with a paused clock.
///
/// Implementations: [`MemoryStore`], [`SqliteStore`]; all pass the same behaviour
/// suite (`tests/store_suite.rs`).
#[async_trait]
pub trait Store: AttributeStore + Send + Sync + 'static {
    // --- outbox ---

    /// Writes the event and its deliveries in one transaction. An event id already
    /// stored makes this a no-op returning [`EnqueueOutcome::Duplicate`].
    async fn enqueue(
        &self,
        event: &Event,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
    ) -> Result<EnqueueOutcome>;

    /// Claims up to `limit` deliveries that are due at `now` (queued and due, or in
    /// flight with an expired lease), oldest first, leasing them until `now + lease`.
    async fn claim(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>>;

    /// Records what happened to claimed deliveries, in one transaction. Completions
    /// whose lease token no longer matches (the lease expired and someone else
    /// claimed it) are ignored.
    async fn complete(&self, completions: &[Completion], now: DateTime<Utc>) -> Result<()>;

    /// Marks a destination connected or disconnected. Disconnecting parks every
    /// queued delivery of the destination; connecting re-queues every parked one,
    /// due at `now`, in their original order. Returns how many changed state.
    async fn set_connected(
        &self,
        destination: &str,
        connected: bool,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<u64>;

    /// Destinations currently marked disconnected.
    async fn disconnected(&self) -> Result<Vec<String>>;

    /// The earliest time something becomes due (a queued delivery, or a lease that
    /// expires), if anything is pending.
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>>;

    /// Dead letters, oldest first.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>>;

    /// Re-queues a dead letter (attempts reset, due at `now`). `NotFound` if `id`
    /// is not a dead letter.
    async fn replay(&self, id: DeliveryId, now: DateTime<Utc>) -> Result<()>;

    /// The log of one delivery, oldest first.
    async fn delivery_log(&self, id: DeliveryId) -> Result<Vec<LogEntry>>;

    /// The state of one delivery.
    async fn delivery_state(&self, id: DeliveryId) -> Result<Option<DeliveryState>>;

    /// Counts and health per destination.
    async fn destination_stats(&self) -> Result<Vec<DestinationStats>>;

    // --- identity links ---

    /// Creates or replaces a link. An automatic link never replaces a manual one.
    async fn put_link(&self, link: &IdentityLink) -> Result<()>;
    /// The link of one host user on a platform.
    async fn link(&self, platform: &str, user_id: &str) -> Result<Option<IdentityLink>>;
    /// All links on a platform.
    async fn links(&self, platform: &str) -> Result<Vec<IdentityLink>>;
    /// Removes a link; true if there was one.
    async fn delete_link(&self, platform: &str, user_id: &str) -> Result<bool>;

    // --- integrations and runs ---

    /// Creates or replaces an integration's configuration.
    async fn put_integration(&self, config: &IntegrationConfig) -> Result<()>;
    /// All integrations, by name.
    async fn integrations(&self) -> Result<Vec<IntegrationConfig>>;
    /// Starts a run unless one of the same integration is running with an unexpired
    /// lease (then `None`): runs never overlap.
    async fn start_run(
        &self,
        integration: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<RunRecord>>;
    /// Extends a running run's lease to `now + lease` (the run's heartbeat, so a
    /// long run is not taken for dead). False if the run is no longer running
    /// (it finished, or another instance took it over after its lease expired).
    async fn renew_run(&self, run_id: i64, now: DateTime<Utc>, lease: Duration) -> Result<bool>;
    /// Records a finished run (outcome, counts) and releases its lease.
    async fn finish_run(&self, run: &RunRecord) -> Result<()>;
    /// The latest runs of an integration, newest first.
    async fn runs(&self, integration: &str, limit: usize) -> Result<Vec<RunRecord>>;

    // --- installations and one-time keys ---

    /// Creates or replaces an installation.
    async fn put_installation(&self, installation: &Installation) -> Result<()>;
    /// One installation.
    async fn installation(&self, platform: &str, key: &str) -> Result<Option<Installation>>;
    /// Removes an installation; true if there was one.
    async fn delete_installation(&self, platform: &str, key: &str) -> Result<bool>;

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
