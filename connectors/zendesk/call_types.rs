//! The vocabulary of the calls → tickets flow: its configuration, the unknown-caller strategy, step outcomes, recordings and counters.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What to do when the caller is not exactly one Zendesk user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownCallerStrategy {
    /// Use the configured default user as requester.
    DefaultUser,
    /// Create a new end user carrying only the number.
    NewUser,
}

/// One tenant's calls → tickets configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallConfig {
    /// Telephony groups (by name) whose calls become tickets; matched to Zendesk groups by name.
    pub groups: Vec<String>,
    /// The unknown-caller strategy.
    pub strategy: UnknownCallerStrategy,
    /// The default user's email (required for `DefaultUser`; found or created at start).
    #[serde(default)]
    pub default_user_email: Option<String>,
    /// The default user's name, used if it has to be created.
    #[serde(default = "default_user_name")]
    pub default_user_name: String,
    /// ISO country for numbers dialled without a country code.
    pub default_region: String,
    /// How long `answer` waits for a lookup still running (then: unknown caller).
    #[serde(default = "default_wait", with = "millis")]
    pub lookup_wait: Duration,
    /// How long a lookup answer is cached.
    #[serde(default = "default_ttl", with = "millis")]
    pub cache_ttl: Duration,
    /// Open the ticket in the answering agent's browser (Talk Partner Edition).
    #[serde(default = "yes")]
    pub display_ticket: bool,
    /// Also archive recordings under `{archive_dir}/RecordedCalls/`.
    #[serde(default)]
    pub archive_dir: Option<PathBuf>,
}

fn default_user_name() -> String {
    "Phone caller (default)".to_owned()
}
fn default_wait() -> Duration {
    Duration::from_secs(3)
}
fn default_ttl() -> Duration {
    Duration::from_secs(10 * 60)
}
fn yes() -> bool {
    true
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl CallConfig {
    /// A configuration for `groups` with `strategy` and `default_region`; other
    /// settings at their defaults (3 s lookup wait, 10 min cache, display on).
    pub fn new(
        groups: impl IntoIterator<Item = impl Into<String>>,
        strategy: UnknownCallerStrategy,
        default_region: impl Into<String>,
    ) -> Self {
        CallConfig {
            groups: groups.into_iter().map(Into::into).collect(),
            strategy,
            default_user_email: None,
            default_user_name: default_user_name(),
            default_region: default_region.into(),
            lookup_wait: default_wait(),
            cache_ttl: default_ttl(),
            display_ticket: true,
            archive_dir: None,
        }
    }
}

/// What `start` matched and what it did not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupReport {
    /// Telephony users matched to a Zendesk agent by email.
    pub agents_matched: usize,
    /// Telephony users' emails with no Zendesk agent.
    pub agents_unmatched: Vec<String>,
    /// Configured groups found in Zendesk (name → id).
    pub groups_matched: Vec<(String, u64)>,
    /// Configured groups Zendesk does not have.
    pub groups_unmatched: Vec<String>,
    /// The default user's id.
    pub default_user_id: Option<u64>,
    /// True if the default user had to be created.
    pub default_user_created: bool,
}

/// The result of looking a caller up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "lookup", content = "ids", rename_all = "snake_case")]
pub enum CallerLookup {
    /// Exactly one user has the number.
    Matched(u64),
    /// Nobody has it.
    NotFound,
    /// Several users share it: never guessed.
    Ambiguous(Vec<u64>),
    /// The number was withheld, anonymous or not a valid number.
    Withheld,
    /// The lookup had not finished within the configured wait.
    TimedOut,
    /// The lookup failed (the reason).
    Failed(String),
    /// No lookup was made: the call's ticket already existed when its answer
    /// step ran in a process that had not seen the ring (after a restart).
    NotLookedUp,
}

/// Who became the requester.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequesterKind {
    /// The unique match.
    Matched,
    /// The configured default user.
    DefaultUser,
    /// A user created for this caller.
    NewUser,
    /// The requester of a ticket that already existed (found by the call's
    /// external id after a restart), whoever it is.
    Existing,
}

/// Whether the ticket was opened in the agent's browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "display", content = "reason", rename_all = "snake_case")]
pub enum DisplayOutcome {
    /// Zendesk delivered it to the agent's browser.
    Opened,
    /// The account refused (no Talk Partner Edition, agent offline…): the reason.
    NotSupported(String),
    /// The answering agent is not a matched Zendesk agent.
    NoAgent,
    /// Display is turned off in the configuration, or was not attempted (a
    /// ticket found after a restart).
    Disabled,
}

/// What the ring step knew, carried by the later steps of a call
/// ([`super::CallStep`]'s `ring` field) so that each step is self-sufficient:
/// a process that never saw the ring (it restarted, or another replica took
/// the ring) replays it — the lookup is redone — before the step runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingInfo {
    /// The telephony group the call rang in.
    pub group: String,
    /// The caller's number as delivered by the network.
    pub caller: String,
    /// When it rang.
    pub at: chrono::DateTime<chrono::Utc>,
}

/// What `ring` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RingOutcome {
    /// The call is tracked and its lookup started (the E.164 number, if any).
    Tracked {
        /// The caller in E.164, or none when withheld.
        e164: Option<String>,
    },
    /// The group is not configured: the call is ignored.
    IgnoredGroup,
    /// The call was already ringing (a retry).
    Duplicate,
}

/// What `answer` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerOutcome {
    /// The ticket.
    pub ticket_id: u64,
    /// True if this call created it (false: it existed, found by the call's external id).
    pub created: bool,
    /// The requester.
    pub requester_id: u64,
    /// Why that requester.
    pub requester: RequesterKind,
    /// The lookup result used.
    pub lookup: CallerLookup,
    /// The assignee (the answering agent), if matched.
    pub assignee_id: Option<u64>,
    /// Display in the agent's browser.
    pub display: DisplayOutcome,
}

/// A call recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recording {
    /// A file on disk.
    Path(PathBuf),
    /// Bytes in memory.
    Bytes {
        /// The file name shown on the ticket (its extension must match the type).
        filename: String,
        /// The MIME type (e.g. `audio/mpeg`).
        content_type: String,
        /// The audio.
        data: Bytes,
    },
}

/// Counters over all calls handled by one flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallStats {
    /// Calls tracked (rung in a configured group).
    pub calls: u64,
    /// Tickets created.
    pub tickets_created: u64,
    /// Callers matched to one user.
    pub matched: u64,
    /// Callers unknown (not found, withheld, timed out, failed).
    pub unknown: u64,
    /// Callers whose number several users share.
    pub ambiguous: u64,
    /// Numbers added to a user after wrap-up.
    pub numbers_backfilled: u64,
    /// Recordings attached.
    pub recordings_attached: u64,
}
