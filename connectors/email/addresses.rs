//! Personal forwarding addresses: one random, resettable `<token>@<domain>` (or `inbox+<token>@<domain>`) per person per tenant, kept behind the small `AddressRegistry` storage trait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;

use crate::identity::normalize_email;
use crate::tenant::TenantId;
use crate::{Error, ErrorKind, Result};

/// Random bytes in a token: 128 bits, written as 26 base32 characters.
pub const TOKEN_BYTES: usize = 16;

/// One issued address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddressRecord {
    /// The random token (the address's secret part).
    pub token: String,
    /// The tenant the person belongs to.
    pub tenant: TenantId,
    /// The host's user id of the person.
    pub person_id: String,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it was reset (revoked); mail to it is rejected from then on.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Where forwarding addresses are kept. [`MemoryAddressRegistry`] is the
/// in-process one; [`super::StoreAddressRegistry`] keeps them in the
/// switchboard's store (durable, shared by replicas).
#[async_trait]
pub trait AddressRegistry: Send + Sync {
    /// Stores a new record; `false` (and nothing stored) if the token exists.
    async fn insert(&self, record: &AddressRecord) -> Result<bool>;
    /// The record of a token, revoked or not.
    async fn by_token(&self, token: &str) -> Result<Option<AddressRecord>>;
    /// The person's current (unrevoked) record.
    async fn current(&self, tenant: &TenantId, person_id: &str) -> Result<Option<AddressRecord>>;
    /// Marks a token revoked at `at`.
    async fn revoke(&self, token: &str, at: DateTime<Utc>) -> Result<()>;
}

/// An in-memory [`AddressRegistry`] (tests, single-process hosts).
#[derive(Debug, Default)]
pub struct MemoryAddressRegistry {
    records: Mutex<HashMap<String, AddressRecord>>,
}

impl MemoryAddressRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, AddressRecord>>> {
        self.records
            .lock()
            .map_err(|_| Error::new(ErrorKind::Store, "the address registry lock is poisoned"))
    }
}

#[async_trait]
impl AddressRegistry for MemoryAddressRegistry {
    async fn insert(&self, record: &AddressRecord) -> Result<bool> {
        let mut map = self.lock()?;
        if map.contains_key(&record.token) {
            return Ok(false);
        }
        map.insert(record.token.clone(), record.clone());
        Ok(true)
    }
    async fn by_token(&self, token: &str) -> Result<Option<AddressRecord>> {
        Ok(self.lock()?.get(token).cloned())
    }
    async fn current(&self, tenant: &TenantId, person_id: &str) -> Result<Option<AddressRecord>> {
        Ok(self
            .lock()?
            .values()
            .find(|r| r.tenant == *tenant && r.person_id == person_id && r.revoked_at.is_none())
            .cloned())
    }
    async fn revoke(&self, token: &str, at: DateTime<Utc>) -> Result<()> {
        if let Some(r) = self.lock()?.get_mut(token) {
            r.revoked_at.get_or_insert(at);
        }
        Ok(())
    }
}

/// How addresses are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressStyle {
    /// `<token>@<domain>` (a catch-all inbound domain).
    Token,
    /// `<mailbox>+<token>@<domain>` (plus addressing on one mailbox, e.g. `inbox`).
    Plus {
        /// The mailbox's local part.
        mailbox: String,
    },
}

/// Why a recipient address does not lead to a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum AddressRejection {
    /// Not on the inbound domain, or not shaped like a forwarding address.
    #[error("not a forwarding address")]
    NotForwardingAddress,
    /// No such token was ever issued.
    #[error("unknown forwarding address")]
    UnknownAddress,
    /// The token was reset; its mail is rejected.
    #[error("the forwarding address was reset")]
    RevokedAddress,
}

/// Issues, resolves and resets personal forwarding addresses.
///
/// ```
/// # tokio_test_block_on(async {
/// use std::sync::Arc;
/// use switchboard::TenantId;
/// use switchboard::email::{ForwardingAddresses, MemoryAddressRegistry, AddressRejection};
/// let addresses = ForwardingAddresses::new("in.example.com", Arc::new(MemoryAddressRegistry::new())).unwrap();
/// let acme = TenantId::new("acme").unwrap();
/// let first = addresses.address_for(&acme, "u1").await.unwrap();
/// assert_eq!(addresses.address_for(&acme, "u1").await.unwrap(), first);
/// assert_eq!(addresses.resolve(&first).await.unwrap().unwrap().person_id, "u1");
/// let second = addresses.reset(&acme, "u1").await.unwrap();
/// assert_ne!(first, second);
/// assert_eq!(addresses.resolve(&first).await.unwrap(), Err(AddressRejection::RevokedAddress));
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone)]
pub struct ForwardingAddresses {
    domain: String,
    style: AddressStyle,
    registry: Arc<dyn AddressRegistry>,
}

impl std::fmt::Debug for ForwardingAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardingAddresses")
            .field("domain", &self.domain)
            .field("style", &self.style)
            .finish_non_exhaustive()
    }
}

impl ForwardingAddresses {
    /// Addresses `<token>@<domain>` kept in `registry`.
    pub fn new(domain: &str, registry: Arc<dyn AddressRegistry>) -> Result<Self> {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        if normalize_email(&format!("x@{domain}")).is_none() {
            return Err(Error::new(
                ErrorKind::Config,
                format!("{domain:?} is not a valid inbound domain"),
            ));
        }
        Ok(ForwardingAddresses {
            domain,
            style: AddressStyle::Token,
            registry,
        })
    }

    /// Uses plus addressing on `mailbox` (`inbox+<token>@<domain>`).
    pub fn plus_addressing(mut self, mailbox: &str) -> Result<Self> {
        let mailbox = mailbox.trim().to_ascii_lowercase();
        if mailbox.is_empty()
            || mailbox.contains('+')
            || normalize_email(&format!("{mailbox}@{}", self.domain)).is_none()
        {
            return Err(Error::new(
                ErrorKind::Config,
                "the mailbox is not a valid local part",
            ));
        }
        self.style = AddressStyle::Plus { mailbox };
        Ok(self)
    }

    /// The inbound domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn format(&self, token: &str) -> String {
        match &self.style {
            AddressStyle::Token => format!("{token}@{}", self.domain),
            AddressStyle::Plus { mailbox } => format!("{mailbox}+{token}@{}", self.domain),
        }
    }

    /// The person's current address, issuing one on first use.
    pub async fn address_for(&self, tenant: &TenantId, person_id: &str) -> Result<String> {
        match self.registry.current(tenant, person_id).await? {
            Some(r) => Ok(self.format(&r.token)),
            None => self.issue(tenant, person_id).await,
        }
    }

    /// Revokes the person's current address at once and issues a new one.
    pub async fn reset(&self, tenant: &TenantId, person_id: &str) -> Result<String> {
        if let Some(r) = self.registry.current(tenant, person_id).await? {
            self.registry.revoke(&r.token, Utc::now()).await?;
        }
        self.issue(tenant, person_id).await
    }

    async fn issue(&self, tenant: &TenantId, person_id: &str) -> Result<String> {
        if person_id.trim().is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "the person id is empty",
            ));
        }
        for _ in 0..8 {
            let record = AddressRecord {
                token: new_token(),
                tenant: tenant.clone(),
                person_id: person_id.to_owned(),
                issued_at: Utc::now(),
                revoked_at: None,
            };
            if self.registry.insert(&record).await? {
                // Two replicas issuing at once: both answer with the one that
                // ended up current.
                return Ok(match self.registry.current(tenant, person_id).await? {
                    Some(current) => self.format(&current.token),
                    None => self.format(&record.token),
                });
            }
        }
        Err(Error::new(
            ErrorKind::Conflict,
            "could not issue a unique forwarding address",
        ))
    }

    /// The token of an address on this inbound domain, if it is shaped like one.
    pub fn token_of(&self, address: &str) -> Option<String> {
        let address = normalize_email(address)?;
        let (local, domain) = address.rsplit_once('@')?;
        if domain != self.domain {
            return None;
        }
        let token = match &self.style {
            AddressStyle::Token => local,
            AddressStyle::Plus { mailbox } => {
                local.strip_prefix(mailbox.as_str())?.strip_prefix('+')?
            }
        };
        let valid = token.len() == 26 && token.chars().all(|c| matches!(c, 'a'..='z' | '2'..='7'));
        valid.then(|| token.to_owned())
    }

    /// Resolves a recipient address to its active record.
    pub async fn resolve(
        &self,
        address: &str,
    ) -> Result<std::result::Result<AddressRecord, AddressRejection>> {
        let Some(token) = self.token_of(address) else {
            return Ok(Err(AddressRejection::NotForwardingAddress));
        };
        Ok(match self.registry.by_token(&token).await? {
            None => Err(AddressRejection::UnknownAddress),
            Some(r) if r.revoked_at.is_some() => Err(AddressRejection::RevokedAddress),
            Some(r) => Ok(r),
        })
    }
}

/// 128 random bits from the thread's CSPRNG, lower-case RFC 4648 base32, no padding.
fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(26);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_26_base32_chars_and_differ() {
        let a = super::new_token();
        let b = super::new_token();
        assert_eq!(a.len(), 26);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| matches!(c, 'a'..='z' | '2'..='7')));
    }
}
