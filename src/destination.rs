//! The `Destination` trait and its vocabulary: deliveries, receipts, capabilities and the delivery-error classification.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::message::{Message, MessageFormat, Target};

/// The store's id of one delivery (one event routed to one destination and target).
pub type DeliveryId = i64;

/// A rate limit: `burst` sends at once, refilled at one per `per / burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// How many sends may happen back to back.
    pub burst: u32,
    /// The window in which `burst` sends replenish.
    pub per: Duration,
}

impl RateLimit {
    /// `n` sends per second.
    pub fn per_second(n: u32) -> Self {
        RateLimit {
            burst: n.max(1),
            per: Duration::from_secs(1),
        }
    }
    /// `n` sends per minute.
    pub fn per_minute(n: u32) -> Self {
        RateLimit {
            burst: n.max(1),
            per: Duration::from_secs(60),
        }
    }
    /// `n` sends per hour.
    pub fn per_hour(n: u32) -> Self {
        RateLimit {
            burst: n.max(1),
            per: Duration::from_secs(3600),
        }
    }
    /// Sets the burst (how many may go back to back) while keeping the average rate.
    #[must_use]
    pub fn with_burst(self, burst: u32) -> Self {
        let burst = burst.max(1);
        let per = self.per.mul_f64(f64::from(burst) / f64::from(self.burst));
        RateLimit { burst, per }
    }
}

/// What a destination can do and how fast; the engine paces itself from this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Can deliver to a person's direct messages.
    pub dm: bool,
    /// Can deliver to channels.
    pub channel: bool,
    /// Supports threaded replies.
    pub threads: bool,
    /// Longest text the platform accepts (characters); longer text is split or truncated by the destination.
    pub max_text: Option<usize>,
    /// Text format; decides template escaping.
    pub format: MessageFormat,
    /// Limits for the whole destination (e.g. a workspace budget).
    pub global_limits: Vec<RateLimit>,
    /// Limits per target key (e.g. 1 message/second per Slack channel).
    pub target_limits: Vec<RateLimit>,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            dm: true,
            channel: true,
            threads: false,
            max_text: None,
            format: MessageFormat::Plain,
            global_limits: Vec::new(),
            target_limits: Vec::new(),
        }
    }
}

/// One delivery handed to a destination: the event, its rendered message and its target.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The store's id (stable across retries; use it as an idempotency key downstream).
    pub id: DeliveryId,
    /// The tenant the event belongs to.
    pub tenant: crate::tenant::TenantId,
    /// The tenant's connection to this destination's platform (credentials and
    /// platform ids), for destinations whose [`Destination::platform`] is set.
    /// `None` for connection-less destinations, and for the default tenant of a
    /// destination built with fixed credentials.
    pub connection: Option<Arc<crate::tenant::Connection>>,
    /// The event being delivered.
    pub event: Arc<Event>,
    /// The route that produced this delivery.
    pub route: String,
    /// Where it goes.
    pub target: Target,
    /// For DM targets: the platform user id the identity resolver matched, if a
    /// resolver is registered for this destination.
    pub recipient: Option<String>,
    /// The host user id of the DM recipient (the subject, or the `UserDm` user).
    pub recipient_user_id: Option<String>,
    /// The rendered message.
    pub message: Message,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// Proof of a successful delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The platform's id for what was created (Slack `ts`, ticket id, message id…).
    pub remote_id: Option<String>,
    /// Where it ended up (channel id, conversation id, address…).
    pub location: Option<String>,
}

/// How a failed delivery is classified; decides what the engine does next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum DeliveryError {
    /// May succeed later: retried with exponential backoff and jitter.
    #[error("temporary failure: {reason}")]
    Temporary {
        /// What happened.
        reason: String,
    },
    /// The platform asked us to slow down; retried after `retry_after` if given.
    #[error("rate limited (retry after {retry_after:?}): {reason}")]
    RateLimited {
        /// The platform's `Retry-After`; it always wins over computed backoff.
        retry_after: Option<Duration>,
        /// What happened.
        reason: String,
    },
    /// Will never succeed as is: dead-lettered at once.
    #[error("permanent failure: {reason}")]
    Permanent {
        /// What happened and what the admin can do.
        reason: String,
    },
    /// The recipient cannot be identified on the platform (identity problem).
    #[error("recipient unknown: {reason}")]
    RecipientUnknown {
        /// What happened.
        reason: String,
    },
    /// Credentials were revoked or the integration uninstalled: every delivery of
    /// this destination is parked until it is reconnected.
    #[error("integration disconnected: {reason}")]
    Disconnected {
        /// What happened.
        reason: String,
    },
}

impl DeliveryError {
    /// A temporary failure.
    pub fn temporary(reason: impl fmt::Display) -> Self {
        DeliveryError::Temporary {
            reason: reason.to_string(),
        }
    }
    /// A permanent failure.
    pub fn permanent(reason: impl fmt::Display) -> Self {
        DeliveryError::Permanent {
            reason: reason.to_string(),
        }
    }
    /// A rate-limit answer.
    pub fn rate_limited(retry_after: Option<Duration>, reason: impl fmt::Display) -> Self {
        DeliveryError::RateLimited {
            retry_after,
            reason: reason.to_string(),
        }
    }
    /// An unknown recipient.
    pub fn recipient_unknown(reason: impl fmt::Display) -> Self {
        DeliveryError::RecipientUnknown {
            reason: reason.to_string(),
        }
    }
    /// Revoked credentials.
    pub fn disconnected(reason: impl fmt::Display) -> Self {
        DeliveryError::Disconnected {
            reason: reason.to_string(),
        }
    }
    /// The reason text.
    pub fn reason(&self) -> &str {
        match self {
            DeliveryError::Temporary { reason }
            | DeliveryError::RateLimited { reason, .. }
            | DeliveryError::Permanent { reason }
            | DeliveryError::RecipientUnknown { reason }
            | DeliveryError::Disconnected { reason } => reason,
        }
    }
    /// A stable name of the class (`temporary`, `rate_limited`, …).
    pub fn class(&self) -> &'static str {
        match self {
            DeliveryError::Temporary { .. } => "temporary",
            DeliveryError::RateLimited { .. } => "rate_limited",
            DeliveryError::Permanent { .. } => "permanent",
            DeliveryError::RecipientUnknown { .. } => "recipient_unknown",
            DeliveryError::Disconnected { .. } => "disconnected",
        }
    }
}

/// A place deliveries go: Slack, Teams, email, a ticket system, a webhook…
///
/// Implementations classify every failure into a [`DeliveryError`] in one place;
/// the engine owns retries, pacing, parking and dead letters.
#[async_trait]
pub trait Destination: Send + Sync {
    /// The destination's unique name, used in routes, status and the store.
    fn name(&self) -> &str;
    /// What it supports and its rate limits.
    fn capabilities(&self) -> Capabilities;
    /// The platform whose connections this destination uses (`"slack"`), or `None`
    /// (the default) if it needs none. With a platform, the engine looks up the
    /// delivery's tenant connection before each attempt and parks the tenant's
    /// deliveries while it has none or it is disconnected.
    fn platform(&self) -> Option<&str> {
        None
    }
    /// True if the destination carries its own credentials for the default
    /// tenant (a destination built with one fixed token): the default tenant's
    /// deliveries then go out with `connection: None` when it has no stored
    /// connection, instead of being parked as not connected.
    fn has_fixed_credentials(&self) -> bool {
        false
    }
    /// The limits among [`Capabilities::global_limits`] and
    /// [`Capabilities::target_limits`] that this destination keeps exactly
    /// itself within the process (e.g. sliding windows answered with
    /// `RateLimited` and the exact wait). The engine's in-process pacer skips
    /// them — pacing them twice, once approximately, only sends slower — and
    /// applies them only across instances, through
    /// [`SharedPacing`](crate::engine::SharedPacing) when one is configured.
    fn exact_limits(&self) -> Vec<RateLimit> {
        Vec::new()
    }
    /// Delivers one message.
    async fn deliver(&self, delivery: &Delivery) -> Result<Receipt, DeliveryError>;
}
