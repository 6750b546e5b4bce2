//! `ZendeskIdentity`: who a person is in Zendesk, by phone (the caller lookup) or email, and a bulk sync over the cursor-paginated user list.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::api::ZendeskClient;
use super::config::{PLATFORM, ZendeskAccount, ZendeskConfig};
use crate::event::Person;
use crate::identity::{
    AccountStatus, DirectoryEntry, DirectoryPager, IdentityResolver, MatchBy, Resolution,
    ResolutionCache, ResolveContext, SyncOptions, SyncReport, normalize_email, normalize_phone,
    sync_directory,
};
use crate::store::Store;
use crate::{Error, ErrorKind, Result};

/// The Zendesk user directory, read page by page with cursor pagination
/// (`GET /api/v2/users?page[size]=100`, following `meta.after_cursor`).
/// Each user contributes their primary email and phone.
pub struct UsersPager {
    client: ZendeskClient,
    account: ZendeskAccount,
    after: Option<String>,
    done: bool,
}

impl std::fmt::Debug for UsersPager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsersPager")
            .field("account", &self.account.subdomain)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl UsersPager {
    /// A sweep from the first page.
    pub fn new(client: ZendeskClient, account: ZendeskAccount) -> Self {
        UsersPager {
            client,
            account,
            after: None,
            done: false,
        }
    }
}

#[async_trait]
impl DirectoryPager for UsersPager {
    async fn next_page(&mut self) -> Result<Option<Vec<DirectoryEntry>>> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .client
            .list_users_page(&self.account, self.after.as_deref())
            .await?;
        match page.after {
            Some(a) if self.after.as_deref() != Some(a.as_str()) => self.after = Some(a),
            _ => self.done = true,
        }
        Ok(Some(
            page.items
                .into_iter()
                .map(|u| {
                    let mut e = DirectoryEntry::new(u.id.to_string());
                    if let Some(m) = u.email {
                        e = e.email(m);
                    }
                    if let Some(p) = u.phone {
                        e = e.phone(p);
                    }
                    if !u.active {
                        e = e.status(AccountStatus::Deactivated);
                    }
                    e
                })
                .collect(),
        ))
    }
}

/// The Zendesk [`IdentityResolver`] (platform `zendesk`): `resolve` looks a
/// person up by each phone (Search API, as for callers), then by email; several
/// users for one identifier are `Ambiguous`, never guessed. Answers are cached
/// per tenant and connection. `sync` is one pass over the user list matched by
/// email, then phone.
///
/// Every call uses the [`ResolveContext`]'s connection (that tenant's subdomain
/// and credentials, see [`ZendeskAccount::from_connection`]); only the default
/// tenant without a connection falls back to the fixed account given to
/// [`ZendeskIdentity::new`]. Links are stored under
/// [`ResolveContext::link_platform`] (`zendesk:{subdomain}` with a connection).
pub struct ZendeskIdentity {
    client: ZendeskClient,
    config: ZendeskConfig,
    fixed: Option<ZendeskAccount>,
    store: Arc<dyn Store>,
    default_region: String,
    cache: ResolutionCache,
}

impl std::fmt::Debug for ZendeskIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZendeskIdentity")
            .field("fixed", &self.fixed.as_ref().map(|a| a.subdomain.as_str()))
            .field("default_region", &self.default_region)
            .finish_non_exhaustive()
    }
}

impl ZendeskIdentity {
    /// A resolver with one fixed `account` for the default tenant (other
    /// tenants use their connection), writing sync links into `store`; phones
    /// without a country code are read in `default_region`.
    pub fn new(
        client: ZendeskClient,
        account: ZendeskAccount,
        store: Arc<dyn Store>,
        default_region: impl Into<String>,
    ) -> Self {
        let mut s = Self::for_connections(client, ZendeskConfig::new(), store, default_region);
        s.fixed = Some(account);
        s
    }

    /// A multi-tenant resolver: every call uses the context's connection,
    /// read with `config` (its base-URL override applies).
    pub fn for_connections(
        client: ZendeskClient,
        config: ZendeskConfig,
        store: Arc<dyn Store>,
        default_region: impl Into<String>,
    ) -> Self {
        ZendeskIdentity {
            client,
            config,
            fixed: None,
            store,
            default_region: default_region.into(),
            cache: ResolutionCache::new(10_000, Duration::from_secs(600))
                .negative_ttl(Duration::from_secs(60)),
        }
    }

    /// The lookup cache (hits, misses).
    pub fn cache(&self) -> &ResolutionCache {
        &self.cache
    }

    fn account(&self, cx: &ResolveContext) -> Result<ZendeskAccount> {
        match (&cx.connection, &self.fixed) {
            (Some(c), _) => ZendeskAccount::from_connection(&self.config, c),
            (None, Some(a)) if cx.tenant.is_default() => Ok(a.clone()),
            _ => Err(Error::new(
                ErrorKind::Unauthorized,
                format!(
                    "tenant {} has no Zendesk connection: connect Zendesk first",
                    cx.tenant
                ),
            )),
        }
    }

    fn decide(ids: Vec<String>) -> Resolution {
        match ids.len() {
            0 => Resolution::NotFound,
            1 => Resolution::Matched(ids.into_iter().next().unwrap_or_default()),
            _ => Resolution::Ambiguous(ids),
        }
    }
}

#[async_trait]
impl IdentityResolver for ZendeskIdentity {
    async fn resolve(&self, cx: &ResolveContext, person: &Person) -> Result<Resolution> {
        let account = self.account(cx)?;
        for raw in &person.phones {
            let Some(e164) = normalize_phone(raw, &self.default_region) else {
                continue;
            };
            let r = self
                .cache
                .get_or_resolve(cx, &format!("phone:{e164}"), || async {
                    let users = self.client.search_users_by_phone(&account, &e164).await?;
                    Ok(Self::decide(
                        users
                            .iter()
                            .filter(|u| u.active)
                            .map(|u| u.id.to_string())
                            .collect(),
                    ))
                })
                .await?;
            if r != Resolution::NotFound {
                return Ok(r);
            }
        }
        for raw in &person.emails {
            let Some(email) = normalize_email(raw) else {
                continue;
            };
            let r = self
                .cache
                .get_or_resolve(cx, &format!("email:{email}"), || async {
                    let users = self.client.search_users_by_email(&account, &email).await?;
                    Ok(Self::decide(
                        users
                            .iter()
                            .filter(|u| u.active)
                            .filter(|u| {
                                u.email.as_deref().and_then(normalize_email).as_deref()
                                    == Some(email.as_str())
                            })
                            .map(|u| u.id.to_string())
                            .collect(),
                    ))
                })
                .await?;
            if r != Resolution::NotFound {
                return Ok(r);
            }
        }
        Ok(Resolution::NotFound)
    }

    async fn sync(&self, cx: &ResolveContext, people: &[Person]) -> Result<SyncReport> {
        let account = self.account(cx)?;
        let mut pager = UsersPager::new(self.client.clone(), account);
        let options =
            SyncOptions::new(MatchBy::EmailThenPhone).default_region(self.default_region.clone());
        let report = sync_directory(&*self.store, cx, PLATFORM, people, &mut pager, &options).await;
        // Links may have moved: forget this connection's cached answers.
        self.cache.invalidate_context(cx);
        report
    }
}
