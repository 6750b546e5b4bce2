//! `StoreAddressRegistry`: forwarding addresses kept in the switchboard's own store (identity links plus a single-use key), so they survive restarts and every replica sees a reset at once.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::addresses::{AddressRecord, AddressRegistry};
use crate::identity::{IdentityLink, LinkOrigin};
use crate::store::{LinkStore, OnceStore};
use crate::tenant::TenantId;
use crate::{Error, ErrorKind, Result};

/// The link platform of a person's current forwarding token: one link per
/// (tenant, person), `platform_id` = the token.
pub const FORWARD_PLATFORM: &str = "email-forward";
/// The link platform of the token index: one link per token, under
/// [`TOKEN_INDEX_TENANT`], `user_id` = the token.
pub const TOKEN_INDEX_PLATFORM: &str = "email-forward-token";
/// The reserved tenant that holds the token index (tokens are global: an
/// address does not name its tenant). Not a tenant of the host's.
pub const TOKEN_INDEX_TENANT: &str = "switchboard.email-forward";
/// The [`OnceStore`] scope that makes a token unique across tenants.
const TOKEN_SCOPE: &str = "email-forward-token";

/// What the token index link carries in its `platform_id`.
#[derive(Serialize, Deserialize)]
struct IndexEntry {
    tenant: String,
    person: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_at: Option<DateTime<Utc>>,
}

/// An [`AddressRegistry`] in the switchboard's store (memory, SQLite or
/// PostgreSQL), with no table of its own:
///
/// * the person's current token is the identity link (tenant, `email-forward`,
///   person) → token;
/// * the token index is the link ([`TOKEN_INDEX_TENANT`],
///   `email-forward-token`, token) → tenant and person;
/// * uniqueness of a token is an [`OnceStore::remember_once`] key.
///
/// Resolving a token is two primary-key lookups on `identity_links`
/// (`(tenant, platform, user_id)`): the index entry, then the person's current
/// link, which must still name the token. A reset replaces that one row, so
/// the old address is rejected on every replica from the moment `reset`
/// returns; nothing is cached. The links sit on platforms no destination or
/// admin mapping uses, so they never show up in identity syncs or the
/// mapping review.
///
/// ```
/// # tokio_block_on(async {
/// use std::sync::Arc;
/// use switchboard::TenantId;
/// use switchboard::email::{ForwardingAddresses, StoreAddressRegistry};
/// use switchboard::store::MemoryStore;
/// let store = Arc::new(MemoryStore::new());
/// let addresses = ForwardingAddresses::new(
///     "in.example.com",
///     Arc::new(StoreAddressRegistry::new(store.clone())),
/// ).unwrap();
/// let acme = TenantId::new("acme").unwrap();
/// let address = addresses.address_for(&acme, "u1").await.unwrap();
/// // Another handle on the same store (another replica) resolves it.
/// let replica = ForwardingAddresses::new(
///     "in.example.com",
///     Arc::new(StoreAddressRegistry::new(store)),
/// ).unwrap();
/// assert_eq!(replica.resolve(&address).await.unwrap().unwrap().person_id, "u1");
/// # });
/// # fn tokio_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
pub struct StoreAddressRegistry<S: ?Sized> {
    store: Arc<S>,
    index_tenant: TenantId,
}

impl<S: ?Sized> std::fmt::Debug for StoreAddressRegistry<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreAddressRegistry")
            .finish_non_exhaustive()
    }
}

impl<S: ?Sized> Clone for StoreAddressRegistry<S> {
    fn clone(&self) -> Self {
        StoreAddressRegistry {
            store: Arc::clone(&self.store),
            index_tenant: self.index_tenant.clone(),
        }
    }
}

impl<S: LinkStore + OnceStore + ?Sized> StoreAddressRegistry<S> {
    /// A registry in `store` (any [`crate::Store`], e.g. the switchboard's
    /// `Arc<dyn Store>`).
    pub fn new(store: Arc<S>) -> Self {
        StoreAddressRegistry {
            store,
            index_tenant: TenantId::new(TOKEN_INDEX_TENANT).unwrap_or_default(),
        }
    }

    async fn index(&self, token: &str) -> Result<Option<(IndexEntry, DateTime<Utc>)>> {
        let Some(link) = self
            .store
            .link(&self.index_tenant, TOKEN_INDEX_PLATFORM, token)
            .await?
        else {
            return Ok(None);
        };
        let entry: IndexEntry = serde_json::from_str(&link.platform_id).map_err(|e| {
            Error::new(
                ErrorKind::Store,
                format!("a stored forwarding-address index entry is unreadable: {e}"),
            )
        })?;
        Ok(Some((entry, link.linked_at)))
    }

    async fn put_index(&self, token: &str, entry: &IndexEntry, at: DateTime<Utc>) -> Result<()> {
        let platform_id = serde_json::to_string(entry)
            .map_err(|e| Error::new(ErrorKind::Store, format!("index entry: {e}")))?;
        self.store
            .put_link(&IdentityLink {
                tenant: self.index_tenant.clone(),
                platform: TOKEN_INDEX_PLATFORM.to_owned(),
                user_id: token.to_owned(),
                platform_id,
                origin: LinkOrigin::Manual,
                linked_at: at,
            })
            .await
    }
}

/// Far enough ahead that a token's uniqueness key never expires.
fn forever() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[async_trait]
impl<S: LinkStore + OnceStore + ?Sized + 'static> AddressRegistry for StoreAddressRegistry<S> {
    /// Reserves the token (unique across tenants), writes its index entry,
    /// then makes it the person's current token (replacing any other).
    async fn insert(&self, record: &AddressRecord) -> Result<bool> {
        if !self
            .store
            .remember_once(TOKEN_SCOPE, &record.token, forever(), Utc::now())
            .await?
        {
            return Ok(false);
        }
        let entry = IndexEntry {
            tenant: record.tenant.as_str().to_owned(),
            person: record.person_id.clone(),
            revoked_at: record.revoked_at,
        };
        self.put_index(&record.token, &entry, record.issued_at)
            .await?;
        if record.revoked_at.is_none() {
            self.store
                .put_link(&IdentityLink {
                    tenant: record.tenant.clone(),
                    platform: FORWARD_PLATFORM.to_owned(),
                    user_id: record.person_id.clone(),
                    platform_id: record.token.clone(),
                    origin: LinkOrigin::Manual,
                    linked_at: record.issued_at,
                })
                .await?;
        }
        Ok(true)
    }

    async fn by_token(&self, token: &str) -> Result<Option<AddressRecord>> {
        let Some((entry, issued_at)) = self.index(token).await? else {
            return Ok(None);
        };
        let tenant = TenantId::new(&entry.tenant)?;
        let current = self
            .store
            .link(&tenant, FORWARD_PLATFORM, &entry.person)
            .await?;
        // Live only while the person's current link still names this token.
        let revoked_at = match (&current, entry.revoked_at) {
            (_, Some(at)) => Some(at),
            (Some(link), None) if link.platform_id == token => None,
            (Some(link), None) => Some(link.linked_at),
            (None, None) => Some(issued_at),
        };
        Ok(Some(AddressRecord {
            token: token.to_owned(),
            tenant,
            person_id: entry.person,
            issued_at,
            revoked_at,
        }))
    }

    async fn current(&self, tenant: &TenantId, person_id: &str) -> Result<Option<AddressRecord>> {
        let Some(link) = self.store.link(tenant, FORWARD_PLATFORM, person_id).await? else {
            return Ok(None);
        };
        Ok(Some(AddressRecord {
            token: link.platform_id,
            tenant: tenant.clone(),
            person_id: person_id.to_owned(),
            issued_at: link.linked_at,
            revoked_at: None,
        }))
    }

    /// Removes the person's current link when it names the token (that alone
    /// revokes it), then stamps the index entry.
    async fn revoke(&self, token: &str, at: DateTime<Utc>) -> Result<()> {
        let Some((mut entry, issued_at)) = self.index(token).await? else {
            return Ok(());
        };
        let tenant = TenantId::new(&entry.tenant)?;
        let current = self
            .store
            .link(&tenant, FORWARD_PLATFORM, &entry.person)
            .await?;
        if current.is_some_and(|link| link.platform_id == token) {
            self.store
                .delete_link(&tenant, FORWARD_PLATFORM, &entry.person)
                .await?;
        }
        if entry.revoked_at.is_none() {
            entry.revoked_at = Some(at);
            self.put_index(token, &entry, issued_at).await?;
        }
        Ok(())
    }
}
