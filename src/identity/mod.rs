//! Identity: normalising emails and phones, links between host users and platform users, resolution and bulk sync.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::event::Person;
use crate::tenant::{Connection, TenantId};

mod cache;
mod normalize;
mod sync;

pub use cache::{CacheStats, CachedResolver, ResolutionCache};
pub use normalize::{PhoneNumber, normalize_email, normalize_phone, parse_phone};
pub use sync::{
    AccountStatus, DirectoryEntry, DirectoryPager, MatchBy, StaticDirectory, SyncOptions,
    sync_directory,
};

/// The answer to "who is this person on that platform?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", content = "ids", rename_all = "snake_case")]
pub enum Resolution {
    /// Exactly one platform user.
    Matched(String),
    /// Nobody.
    NotFound,
    /// More than one platform user shares the identifier; never guessed between.
    Ambiguous(Vec<String>),
}

/// How an identity link came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkOrigin {
    /// Matched automatically by email.
    EmailMatch,
    /// Matched automatically by phone number.
    PhoneMatch,
    /// Mapped by hand by an admin; wins over automatic matches and survives re-syncs.
    Manual,
}

impl LinkOrigin {
    /// Stable name for storage.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkOrigin::EmailMatch => "email_match",
            LinkOrigin::PhoneMatch => "phone_match",
            LinkOrigin::Manual => "manual",
        }
    }
    /// Parses [`LinkOrigin::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "email_match" => Some(LinkOrigin::EmailMatch),
            "phone_match" => Some(LinkOrigin::PhoneMatch),
            "manual" => Some(LinkOrigin::Manual),
            _ => None,
        }
    }
}

/// (host user, platform) → platform user id, with provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityLink {
    /// The tenant whose host user this is.
    #[serde(default)]
    pub tenant: TenantId,
    /// The platform connection the platform id belongs to, as text: the
    /// connection key (`slack:T0123`), or the platform name for a destination
    /// without connections.
    pub platform: String,
    /// The host's user id.
    pub user_id: String,
    /// The platform's user id.
    pub platform_id: String,
    /// How the link was made.
    pub origin: LinkOrigin,
    /// When it was made.
    pub linked_at: DateTime<Utc>,
}

/// One person the sync could not match, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unmatched {
    /// The host's user id.
    pub user_id: String,
    /// The identifiers that were tried (emails or phones).
    pub identifiers: Vec<String>,
}

/// One person whose identifier matched several platform users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmbiguousMatch {
    /// The host's user id.
    pub user_id: String,
    /// The platform ids that share the identifier.
    pub candidates: Vec<String>,
}

/// The outcome of a bulk identity sync, for the admin's review page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// Host user id → platform id, for everyone matched (manual links included).
    pub matched: Vec<(String, String)>,
    /// People nobody matched.
    pub unmatched: Vec<Unmatched>,
    /// People matched by several platform accounts.
    pub ambiguous: Vec<AmbiguousMatch>,
    /// Platform accounts skipped: deleted, deactivated, bots and guests.
    pub skipped: SkippedCounts,
    /// Platform directory entries read.
    pub directory_size: usize,
    /// API calls made.
    pub api_calls: usize,
}

/// Platform accounts a sync skipped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedCounts {
    /// Deleted accounts.
    pub deleted: usize,
    /// Deactivated / suspended accounts.
    pub deactivated: usize,
    /// Bots and apps.
    pub bots: usize,
    /// Guests / restricted accounts.
    pub guests: usize,
}

/// Whose directory a resolver looks in: the tenant, and its connection to the
/// platform (credentials and ids) when the destination uses connections.
#[derive(Debug, Clone)]
pub struct ResolveContext {
    /// The tenant the person belongs to.
    pub tenant: TenantId,
    /// The tenant's connection to the platform, if the destination uses
    /// connections (`None` for the default tenant of a destination with fixed
    /// credentials).
    pub connection: Option<std::sync::Arc<Connection>>,
}

impl ResolveContext {
    /// A context for `tenant` with no connection.
    pub fn tenant(tenant: TenantId) -> Self {
        ResolveContext {
            tenant,
            connection: None,
        }
    }
    /// The default tenant with no connection (single-tenant hosts).
    pub fn default_tenant() -> Self {
        Self::tenant(TenantId::default_tenant())
    }
    /// The text links are stored under: the connection key (`slack:T0123`) when
    /// there is a connection, else `platform`.
    pub fn link_platform(&self, platform: &str) -> String {
        match &self.connection {
            Some(c) => c.key.to_string(),
            None => platform.to_owned(),
        }
    }
}

/// Maps host people to platform users, within one tenant's connection.
#[async_trait]
pub trait IdentityResolver: Send + Sync {
    /// Who is this person on that platform?
    async fn resolve(&self, cx: &ResolveContext, person: &Person) -> Result<Resolution>;
    /// Bulk sync: one pass over the platform directory (paginated list calls),
    /// returning who matched, who did not and who is ambiguous.
    async fn sync(&self, cx: &ResolveContext, people: &[Person]) -> Result<SyncReport>;
}

/// Per (tenant, link platform), what the last directory sync found
/// ambiguous: host user id → the candidates.
#[cfg(any(feature = "slack", feature = "teams"))]
type Ambiguities =
    std::collections::HashMap<(TenantId, String), std::collections::HashMap<String, Vec<String>>>;

/// The people each tenant's last directory sync (per link platform) found
/// ambiguous: resolving one of them answers `Ambiguous` from memory instead
/// of looking the person up again. Shared by the connectors' resolvers.
#[cfg(any(feature = "slack", feature = "teams"))]
#[derive(Debug, Default)]
pub(crate) struct LastSyncs {
    ambiguous: std::sync::RwLock<Ambiguities>,
}

#[cfg(any(feature = "slack", feature = "teams"))]
impl LastSyncs {
    /// Remembers what `report`, a sync of `tenant` under `platform`, found
    /// ambiguous (replacing the previous sync's answer).
    pub(crate) fn record(&self, tenant: &TenantId, platform: String, report: &SyncReport) {
        let ambiguous = report
            .ambiguous
            .iter()
            .map(|a| (a.user_id.clone(), a.candidates.clone()))
            .collect();
        if let Ok(mut syncs) = self.ambiguous.write() {
            syncs.insert((tenant.clone(), platform), ambiguous);
        }
    }

    /// What is known about `person` under `platform` before any lookup: a
    /// stored link (`Matched`), or the ambiguity the last sync found.
    pub(crate) async fn known(
        &self,
        store: &dyn crate::store::LinkStore,
        cx: &ResolveContext,
        platform: &str,
        person: &Person,
    ) -> Result<Option<Resolution>> {
        if let Some(link) = store.link(&cx.tenant, platform, &person.id).await? {
            return Ok(Some(Resolution::Matched(link.platform_id)));
        }
        let key = (cx.tenant.clone(), platform.to_owned());
        Ok(self.ambiguous.read().ok().and_then(|syncs| {
            syncs
                .get(&key)
                .and_then(|s| s.get(&person.id).cloned())
                .map(Resolution::Ambiguous)
        }))
    }
}

/// Settles the platform ids an email lookup found for `person`: none is
/// `NotFound`; exactly one is stored as an email-matched link under
/// `platform` (a manual link still wins in the store) and `Matched`; several
/// are `Ambiguous`, never guessed between. Shared by the connectors' resolvers.
#[cfg(any(feature = "slack", feature = "teams"))]
pub(crate) async fn settle_email_lookup(
    store: &dyn crate::store::LinkStore,
    cx: &ResolveContext,
    platform: String,
    person: &Person,
    mut found: Vec<String>,
) -> Result<Resolution> {
    match found.len() {
        0 => Ok(Resolution::NotFound),
        1 => {
            let id = found.remove(0);
            store
                .put_link(&IdentityLink {
                    tenant: cx.tenant.clone(),
                    platform,
                    user_id: person.id.clone(),
                    platform_id: id.clone(),
                    origin: LinkOrigin::EmailMatch,
                    linked_at: Utc::now(),
                })
                .await?;
            Ok(Resolution::Matched(id))
        }
        _ => Ok(Resolution::Ambiguous(found)),
    }
}
