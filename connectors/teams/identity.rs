//! `TeamsIdentity`: "Sync users" in one paged Microsoft Graph sweep of `/users` matched by mail, UPN and otherMails, and `$filter` lookups only for people the last sync missed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::api::{FailureClass, Service, TeamsApiError, read_json};
use super::auth::{TeamsCredentials, TokenProvider};
use super::config::{GRAPH_SCOPE, TeamsConfig};
use crate::event::Person;
use crate::identity::{
    AccountStatus, DirectoryEntry, DirectoryPager, IdentityLink, IdentityResolver, LastSyncs,
    LinkOrigin, MatchBy, Resolution, ResolutionCache, ResolveContext, SyncOptions, SyncReport,
    normalize_email, sync_directory,
};
use crate::store::Store;
use crate::{Error, ErrorKind, Result};

/// The properties a sync selects.
pub const USER_SELECT: &str = "id,mail,userPrincipalName,otherMails,accountEnabled,userType";
/// The largest page Graph serves for `/users`.
pub const MAX_PAGE_SIZE: u32 = 999;
const MAX_PAGE_RETRIES: u32 = 5;
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(10);

/// A Graph user as `/users` returns it with [`USER_SELECT`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphUser {
    /// The Entra object id.
    pub id: String,
    /// The primary SMTP address.
    #[serde(default)]
    pub mail: Option<String>,
    /// The sign-in name (usually an address).
    #[serde(rename = "userPrincipalName", default)]
    pub user_principal_name: Option<String>,
    /// Additional addresses.
    #[serde(rename = "otherMails", default)]
    pub other_mails: Option<Vec<String>>,
    /// False for disabled accounts.
    #[serde(rename = "accountEnabled", default)]
    pub account_enabled: Option<bool>,
    /// `Member` or `Guest`.
    #[serde(rename = "userType", default)]
    pub user_type: Option<String>,
}

impl GraphUser {
    /// The directory entry: disabled → deactivated, guests → guest; mail, UPN
    /// (when it is an address, and not a guest's `#EXT#` name) and otherMails
    /// are all identifiers.
    pub fn entry(self) -> DirectoryEntry {
        let status = if self.account_enabled == Some(false) {
            AccountStatus::Deactivated
        } else if self
            .user_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("guest"))
        {
            AccountStatus::Guest
        } else {
            AccountStatus::Active
        };
        let mut entry = DirectoryEntry::new(self.id).status(status);
        let mut add = |e: String| {
            if !e.trim().is_empty() && !e.contains("#EXT#") && !entry.emails.contains(&e) {
                entry.emails.push(e);
            }
        };
        if let Some(m) = self.mail {
            add(m);
        }
        if let Some(u) = self.user_principal_name.filter(|u| u.contains('@')) {
            add(u);
        }
        for m in self.other_mails.unwrap_or_default() {
            add(m);
        }
        entry
    }
}

fn graph_error(op: &str, message: &str) -> TeamsApiError {
    TeamsApiError::new(
        FailureClass::Temporary,
        Service::Graph,
        op,
        None,
        None,
        message,
    )
}

async fn get_page(
    http: &reqwest::Client,
    token: &SecretString,
    url: &str,
) -> std::result::Result<(Vec<GraphUser>, Option<String>), TeamsApiError> {
    const OP: &str = "list users";
    let response = http
        .get(url)
        .bearer_auth(token.expose_secret())
        .send()
        .await
        .map_err(|e| TeamsApiError::network(Service::Graph, OP, &e))?;
    let body = read_json(Service::Graph, OP, response).await?;
    let users: Vec<GraphUser> = body
        .get("value")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|_| graph_error(OP, "the users page is malformed"))?
        .unwrap_or_default();
    let next = body
        .get("@odata.nextLink")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    Ok((users, next))
}

/// The tenant's directory read page by page: `GET {graph}/v1.0/users?$select=…&$top=999`,
/// then each `@odata.nextLink` as given, until a page has none. A throttled page
/// is retried after Graph's `Retry-After`.
pub struct GraphUsersPager {
    http: reqwest::Client,
    token: SecretString,
    next: Option<String>,
    calls: usize,
}

impl std::fmt::Debug for GraphUsersPager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphUsersPager")
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

impl GraphUsersPager {
    /// A sweep from the first page of `{graph_url}/v1.0/users`.
    pub fn new(
        http: reqwest::Client,
        token: SecretString,
        graph_url: &str,
        page_size: u32,
    ) -> Self {
        let first = format!(
            "{graph_url}/v1.0/users?$select={USER_SELECT}&$top={}",
            page_size.clamp(1, MAX_PAGE_SIZE)
        );
        GraphUsersPager {
            http,
            token,
            next: Some(first),
            calls: 0,
        }
    }

    /// HTTP calls made (retries included).
    pub fn calls(&self) -> usize {
        self.calls
    }
}

#[async_trait]
impl DirectoryPager for GraphUsersPager {
    async fn next_page(&mut self) -> Result<Option<Vec<DirectoryEntry>>> {
        let Some(url) = self.next.clone() else {
            return Ok(None);
        };
        let mut retries = 0;
        let (users, next) = loop {
            self.calls += 1;
            match get_page(&self.http, &self.token, &url).await {
                Ok(page) => break page,
                Err(e) => match e.class() {
                    FailureClass::RateLimited { retry_after } if retries < MAX_PAGE_RETRIES => {
                        retries += 1;
                        tokio::time::sleep(retry_after.unwrap_or(DEFAULT_RETRY_AFTER)).await;
                    }
                    _ => return Err(e.into()),
                },
            }
        };
        self.next = next;
        Ok(Some(users.into_iter().map(GraphUser::entry).collect()))
    }
}

/// Host people ↔ Entra object ids through Microsoft Graph (application
/// permission `User.Read.All`), within one tenant's Teams connection.
///
/// * Each call gets a [`ResolveContext`]: the tenant and its Teams connection,
///   whose app credentials ([`TeamsCredentials::from_connection`]) are used to
///   get a Graph token from the customer's Entra tenant; the default tenant
///   without a connection uses the credentials given to
///   [`TeamsIdentity::with_fixed_credentials`]. Links are stored per tenant
///   under [`ResolveContext::link_platform`] (`teams:{entra tenant id}` with a
///   connection), so two customer tenants never share them.
/// * [`IdentityResolver::sync`] reads the directory once (`$top=999`,
///   following `@odata.nextLink`); [`IdentityResolver::resolve`] answers from
///   the stored link first and only looks up (and caches per connection)
///   people the last sync did not find.
pub struct TeamsIdentity {
    platform: String,
    graph_url: String,
    graph_scope: String,
    http: reqwest::Client,
    tokens: Arc<TokenProvider>,
    store: Arc<dyn Store>,
    page_size: u32,
    fixed: Option<TeamsCredentials>,
    lookups: ResolutionCache,
    last_sync: LastSyncs,
}

impl std::fmt::Debug for TeamsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeamsIdentity")
            .field("platform", &self.platform)
            .field("graph_url", &self.graph_url)
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

impl TeamsIdentity {
    /// A multi-tenant resolver: every call uses the context's connection;
    /// without one, links are stored under `config`'s destination name.
    pub fn new(
        config: &TeamsConfig,
        tokens: Arc<TokenProvider>,
        store: Arc<dyn Store>,
    ) -> Result<Self> {
        Ok(TeamsIdentity {
            platform: config.destination_name().to_owned(),
            graph_url: config.graph_base_url().to_owned(),
            graph_scope: GRAPH_SCOPE.to_owned(),
            http: config.http_client()?,
            tokens,
            store,
            page_size: MAX_PAGE_SIZE,
            fixed: None,
            lookups: ResolutionCache::new(10_000, Duration::from_secs(3_600))
                .negative_ttl(Duration::from_secs(600)),
            last_sync: LastSyncs::default(),
        })
    }

    /// Credentials for the default tenant when it has no connection
    /// (single-tenant hosts).
    #[must_use]
    pub fn with_fixed_credentials(mut self, credentials: TeamsCredentials) -> Self {
        self.fixed = Some(credentials);
        self
    }

    /// The Graph token scope (default `https://graph.microsoft.com/.default`;
    /// `https://graph.microsoft.us/.default` in GCC High).
    #[must_use]
    pub fn graph_scope(mut self, scope: &str) -> Self {
        self.graph_scope = scope.to_owned();
        self
    }

    /// Users per page (default and maximum 999).
    #[must_use]
    pub fn page_size(mut self, size: u32) -> Self {
        self.page_size = size.clamp(1, MAX_PAGE_SIZE);
        self
    }

    /// The platform links are stored under without a connection (the
    /// destination's name); with one, [`ResolveContext::link_platform`].
    pub fn platform(&self) -> &str {
        &self.platform
    }

    /// The app credentials for `cx`: its connection's, else the fixed ones
    /// for the default tenant. A missing or incomplete connection is
    /// [`ErrorKind::Unauthorized`].
    pub fn credentials(&self, cx: &ResolveContext) -> Result<TeamsCredentials> {
        match (&cx.connection, &self.fixed) {
            (Some(c), _) => {
                if !c.is_connected() {
                    return Err(Error::new(
                        ErrorKind::Unauthorized,
                        format!(
                            "the Teams connection {} is disconnected: reconnect it",
                            c.key
                        ),
                    ));
                }
                TeamsCredentials::from_connection(c)
            }
            (None, Some(f)) if cx.tenant.is_default() => Ok(f.clone()),
            (None, _) => Err(Error::new(
                ErrorKind::Unauthorized,
                format!(
                    "tenant {} has no Teams connection: connect Teams for it first",
                    cx.tenant
                ),
            )),
        }
    }

    /// Maps a host user of the context's tenant to an Entra object id by hand
    /// (an admin's override; survives syncs).
    pub async fn map_manually(
        &self,
        cx: &ResolveContext,
        user_id: &str,
        aad_object_id: &str,
    ) -> Result<()> {
        self.store
            .put_link(&IdentityLink {
                tenant: cx.tenant.clone(),
                platform: cx.link_platform(&self.platform),
                user_id: user_id.to_owned(),
                platform_id: aad_object_id.to_owned(),
                origin: LinkOrigin::Manual,
                linked_at: Utc::now(),
            })
            .await
    }

    async fn token(&self, credentials: &TeamsCredentials) -> Result<SecretString> {
        Ok(self.tokens.token(credentials, &self.graph_scope).await?)
    }

    /// `GET {graph}/v1.0/users?$filter=mail eq '…' or userPrincipalName eq '…'`
    /// in `cx`'s tenant: enabled members only; two accounts → ambiguous.
    pub async fn lookup_email(&self, cx: &ResolveContext, email: &str) -> Result<Resolution> {
        let credentials = self.credentials(cx)?;
        let token = self.token(&credentials).await?;
        let quoted = email.replace('\'', "''");
        let mut url = url::Url::parse(&format!("{}/v1.0/users", self.graph_url))
            .map_err(|e| Error::new(ErrorKind::Config, "invalid Graph URL").with_source(e))?;
        url.query_pairs_mut()
            .append_pair(
                "$filter",
                &format!("mail eq '{quoted}' or userPrincipalName eq '{quoted}'"),
            )
            .append_pair("$select", USER_SELECT);
        let (users, _) = get_page(&self.http, &token, url.as_str()).await?;
        let mut ids: Vec<String> = users
            .into_iter()
            .map(GraphUser::entry)
            .filter(|e| e.status == AccountStatus::Active)
            .map(|e| e.platform_id)
            .collect();
        ids.dedup();
        Ok(match ids.len() {
            0 => Resolution::NotFound,
            1 => Resolution::Matched(ids.remove(0)),
            _ => Resolution::Ambiguous(ids),
        })
    }
}

#[async_trait]
impl IdentityResolver for TeamsIdentity {
    async fn resolve(&self, cx: &ResolveContext, person: &Person) -> Result<Resolution> {
        let platform = cx.link_platform(&self.platform);
        let known = self.last_sync.known(&*self.store, cx, &platform, person);
        if let Some(answer) = known.await? {
            return Ok(answer);
        }
        let mut found: Vec<String> = Vec::new();
        for email in person.emails.iter().filter_map(|e| normalize_email(e)) {
            match self
                .lookups
                .get_or_resolve(cx, &email, || self.lookup_email(cx, &email))
                .await?
            {
                Resolution::Matched(id) if !found.contains(&id) => found.push(id),
                Resolution::Ambiguous(ids) => return Ok(Resolution::Ambiguous(ids)),
                _ => {}
            }
        }
        crate::identity::settle_email_lookup(&*self.store, cx, platform, person, found).await
    }

    async fn sync(&self, cx: &ResolveContext, people: &[Person]) -> Result<SyncReport> {
        let credentials = self.credentials(cx)?;
        let token = self.token(&credentials).await?;
        let platform = cx.link_platform(&self.platform);
        let mut pager =
            GraphUsersPager::new(self.http.clone(), token, &self.graph_url, self.page_size);
        let mut report = sync_directory(
            self.store.as_ref(),
            cx,
            &self.platform,
            people,
            &mut pager,
            &SyncOptions::new(MatchBy::Email),
        )
        .await?;
        report.api_calls = pager.calls();
        self.last_sync.record(&cx.tenant, platform, &report);
        // The directory was just read: earlier single answers may be stale.
        self.lookups.invalidate_context(cx);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_skip_disabled_and_guests_and_collect_all_addresses() {
        let u: GraphUser = serde_json::from_value(serde_json::json!({
            "id": "a", "mail": "Ann@Example.com", "userPrincipalName": "ann@example.com",
            "otherMails": ["ann.b@example.org"], "accountEnabled": true, "userType": "Member"
        }))
        .unwrap();
        let e = u.entry();
        assert_eq!(e.status, AccountStatus::Active);
        assert_eq!(e.emails.len(), 3);
        let g = GraphUser {
            id: "g".into(),
            user_principal_name: Some("x_ext.com#EXT#@t.onmicrosoft.com".into()),
            user_type: Some("Guest".into()),
            ..Default::default()
        }
        .entry();
        assert_eq!(g.status, AccountStatus::Guest);
        assert!(g.emails.is_empty());
        let d = GraphUser {
            id: "d".into(),
            account_enabled: Some(false),
            ..Default::default()
        }
        .entry();
        assert_eq!(d.status, AccountStatus::Deactivated);
    }
}
