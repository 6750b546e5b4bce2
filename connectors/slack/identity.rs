//! `SlackIdentity`: "Sync users" per tenant connection in one sweep of `users.list` matched by email, and `users.lookupByEmail` only for someone the last sync did not find.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use secrecy::SecretString;

use super::api::{SlackClient, SlackUser};
use super::config::SlackConfig;
use super::connection::list_workspaces;
use super::errors::FailureClass;
use super::token::{BotToken, TokenRotation, stored_token};
use crate::event::Person;
use crate::identity::{
    AccountStatus, DirectoryEntry, DirectoryPager, IdentityLink, IdentityResolver, LastSyncs,
    LinkOrigin, MatchBy, Resolution, ResolutionCache, ResolveContext, SyncOptions, SyncReport,
    normalize_email, sync_directory,
};
use crate::store::Store;
use crate::{Error, ErrorKind, Result};

/// Slack's recommended page size for `users.list`.
const DEFAULT_PAGE_SIZE: u32 = 200;
/// How often a rate-limited page is retried (after Slack's `Retry-After`).
const MAX_PAGE_RETRIES: u32 = 5;
/// Wait used when Slack rate-limits without a `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The Slack workspace directory, read page by page with `users.list`
/// (`limit=200`, cursor pagination). It stops only when
/// `response_metadata.next_cursor` is empty or missing: short or even empty pages
/// with a cursor do not end the sweep. A rate-limited page is retried after
/// Slack's `Retry-After`.
pub struct UsersListPager {
    client: SlackClient,
    token: SecretString,
    limit: u32,
    /// Workspaces still to sweep (`None`: the token's own, without `team_id`).
    teams: Vec<Option<String>>,
    cursor: Option<String>,
    done: bool,
    calls: usize,
    invited: usize,
    active: usize,
    emails: usize,
}

impl std::fmt::Debug for UsersListPager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsersListPager")
            .field("limit", &self.limit)
            .field("done", &self.done)
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

impl UsersListPager {
    /// A sweep from the first page, `limit` users per call.
    pub fn new(client: SlackClient, token: SecretString, limit: u32) -> Self {
        UsersListPager {
            client,
            token,
            limit: limit.clamp(1, 999),
            teams: vec![None],
            cursor: None,
            done: false,
            calls: 0,
            invited: 0,
            active: 0,
            emails: 0,
        }
    }

    /// Sweeps these workspaces one after the other, naming each with
    /// `team_id` (as Slack requires for an org-wide install's token); `None`
    /// is the token's own workspace.
    #[must_use]
    pub fn teams(mut self, teams: Vec<Option<String>>) -> Self {
        self.teams = if teams.is_empty() { vec![None] } else { teams };
        self
    }

    /// HTTP calls made so far (rate-limited retries included).
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Invited accounts (never signed in) skipped so far; the report counts
    /// them as deactivated.
    pub fn invited(&self) -> usize {
        self.invited
    }

    /// The directory entry for one Slack user: deleted → deleted; invited
    /// but never signed in (`is_invited_user`) → deactivated; bots, apps and
    /// Slackbot → bot; multi- and single-channel guests → guest; the email is
    /// `profile.email`.
    pub fn entry(user: SlackUser) -> DirectoryEntry {
        let status = if user.deleted {
            AccountStatus::Deleted
        } else if user.is_invited_user {
            AccountStatus::Deactivated
        } else if user.is_bot || user.is_app_user || user.id == SlackUser::SLACKBOT {
            AccountStatus::Bot
        } else if user.is_restricted || user.is_ultra_restricted {
            AccountStatus::Guest
        } else {
            AccountStatus::Active
        };
        let mut entry = DirectoryEntry::new(user.id).status(status);
        if let Some(email) = user.profile.email.filter(|e| !e.trim().is_empty()) {
            entry = entry.email(email);
        }
        entry
    }
}

#[async_trait]
impl DirectoryPager for UsersListPager {
    async fn next_page(&mut self) -> Result<Option<Vec<DirectoryEntry>>> {
        if self.done {
            if self.active > 0 && self.emails == 0 {
                // Without users:read.email every profile lacks its email:
                // matching would find nobody and prune every link.
                return Err(Error::new(
                    ErrorKind::Unauthorized,
                    "users.list returned no email addresses: the Slack app's token lacks the users:read.email scope; add it to the bot token scopes and reinstall the app. No identity links were changed.",
                ));
            }
            return Ok(None);
        }
        let mut retries = 0;
        let team = self.teams.first().cloned().flatten();
        let page = loop {
            self.calls += 1;
            match self
                .client
                .users_list(
                    &self.token,
                    team.as_deref(),
                    self.cursor.as_deref(),
                    self.limit,
                )
                .await
            {
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
        match page.next_cursor {
            Some(next) => self.cursor = Some(next),
            None => {
                // This workspace is done; on to the next, if any.
                self.cursor = None;
                if !self.teams.is_empty() {
                    self.teams.remove(0);
                }
                self.done = self.teams.is_empty();
            }
        }
        let entries: Vec<DirectoryEntry> = page
            .items
            .into_iter()
            .map(|u| {
                if u.is_invited_user && !u.deleted {
                    self.invited += 1;
                }
                let e = Self::entry(u);
                if e.status == AccountStatus::Active {
                    self.active += 1;
                    if !e.emails.is_empty() {
                        self.emails += 1;
                    }
                }
                e
            })
            .collect();
        Ok(Some(entries))
    }
}

/// The Slack [`IdentityResolver`]: host people ↔ Slack user ids by email,
/// within one tenant's Slack connection.
///
/// * Each call gets a [`ResolveContext`]: the tenant and its Slack
///   connection, whose bot token is used (or, for the default tenant without
///   a connection, the fixed token given to [`SlackIdentity::new`]). Links are
///   stored per tenant under [`ResolveContext::link_platform`] (the
///   connection key, e.g. `slack:T0123`), so two workspaces never share them.
/// * [`IdentityResolver::sync`] reads the whole directory once with `users.list`
///   (10,000 users take 50 calls; for an org-wide install each workspace, with
///   `team_id`) and matches normalised `profile.email`; deleted users, bots,
///   Slackbot and guests are skipped; two Slack users with one email make the
///   person ambiguous (never guessed). Manual links always win.
/// * [`IdentityResolver::resolve`] answers from the stored link first. Only for
///   someone the last sync did not find (e.g. who joined since) does it call
///   `users.lookupByEmail`; the answer is cached per connection (and a match
///   stored as a link).
pub struct SlackIdentity {
    platform: String,
    client: SlackClient,
    fixed: Option<BotToken>,
    rotation: Option<Arc<TokenRotation>>,
    store: Arc<dyn Store>,
    page_size: u32,
    lookups: ResolutionCache,
    last_sync: LastSyncs,
}

impl std::fmt::Debug for SlackIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackIdentity")
            .field("platform", &self.platform)
            .field("page_size", &self.page_size)
            .field("lookups", &self.lookups)
            .finish_non_exhaustive()
    }
}

impl SlackIdentity {
    /// A resolver with one fixed `token` for the default tenant, and each
    /// other tenant's connection, storing links in `store`.
    pub fn new(config: &SlackConfig, token: BotToken, store: Arc<dyn Store>) -> Result<Self> {
        Ok(Self::with_client(
            config,
            SlackClient::new(config)?,
            token,
            store,
        ))
    }

    /// Like [`SlackIdentity::new`], sharing a client.
    pub fn with_client(
        config: &SlackConfig,
        client: SlackClient,
        token: BotToken,
        store: Arc<dyn Store>,
    ) -> Self {
        let mut s = Self::for_connections_with_client(config, client, store);
        s.fixed = Some(token);
        s
    }

    /// A multi-tenant resolver: every call uses the context's connection.
    pub fn for_connections(config: &SlackConfig, store: Arc<dyn Store>) -> Result<Self> {
        Ok(Self::for_connections_with_client(
            config,
            SlackClient::new(config)?,
            store,
        ))
    }

    /// Like [`SlackIdentity::for_connections`], sharing a client.
    pub fn for_connections_with_client(
        config: &SlackConfig,
        client: SlackClient,
        store: Arc<dyn Store>,
    ) -> Self {
        SlackIdentity {
            platform: config.destination_name().to_owned(),
            client,
            fixed: None,
            rotation: None,
            store,
            page_size: DEFAULT_PAGE_SIZE,
            lookups: ResolutionCache::new(10_000, Duration::from_secs(3_600))
                .negative_ttl(Duration::from_secs(600)),
            last_sync: LastSyncs::default(),
        }
    }

    /// Refreshes rotating connection tokens (see [`TokenRotation`]).
    #[must_use]
    pub fn with_rotation(mut self, rotation: Arc<TokenRotation>) -> Self {
        self.rotation = Some(rotation);
        self
    }

    /// Users per `users.list` call (default 200, Slack's recommendation).
    #[must_use]
    pub fn page_size(mut self, size: u32) -> Self {
        self.page_size = size.clamp(1, 999);
        self
    }

    /// Replaces the cache of single lookups (default: 10,000 entries, 1 hour,
    /// "not found" for 10 minutes).
    #[must_use]
    pub fn lookup_cache(mut self, cache: ResolutionCache) -> Self {
        self.lookups = cache;
        self
    }

    /// The platform name links are stored under without a connection (the
    /// destination's name); with one, [`ResolveContext::link_platform`].
    pub fn platform(&self) -> &str {
        &self.platform
    }

    /// Maps a host user of the context's tenant to a Slack user by hand (an
    /// admin's override; survives syncs).
    pub async fn map_manually(
        &self,
        cx: &ResolveContext,
        user_id: &str,
        slack_user_id: &str,
    ) -> Result<()> {
        self.store
            .put_link(&IdentityLink {
                tenant: cx.tenant.clone(),
                platform: cx.link_platform(&self.platform),
                user_id: user_id.to_owned(),
                platform_id: slack_user_id.to_owned(),
                origin: LinkOrigin::Manual,
                linked_at: Utc::now(),
            })
            .await
    }

    async fn token(&self, cx: &ResolveContext) -> Result<SecretString> {
        match (&cx.connection, &self.rotation, &self.fixed) {
            (Some(c), Some(r), _) => Ok(r.token(c).await?),
            (Some(c), None, _) => Ok(stored_token(c)?),
            (None, _, Some(t)) if cx.tenant.is_default() => Ok(t.secret().clone()),
            (None, _, _) => Err(Error::new(
                ErrorKind::Unauthorized,
                format!(
                    "tenant {} has no Slack connection: install the Slack app first",
                    cx.tenant
                ),
            )),
        }
    }

    async fn lookup(&self, cx: &ResolveContext, email: &str) -> Result<Resolution> {
        let token = self.token(cx).await?;
        match self.client.users_lookup_by_email(&token, email).await {
            Ok(user) if user.is_skipped() => Ok(Resolution::NotFound),
            Ok(user) => Ok(Resolution::Matched(user.id)),
            Err(e) if e.class() == FailureClass::RecipientUnknown => Ok(Resolution::NotFound),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait]
impl IdentityResolver for SlackIdentity {
    async fn resolve(&self, cx: &ResolveContext, person: &Person) -> Result<Resolution> {
        let platform = cx.link_platform(&self.platform);
        let known = self.last_sync.known(&*self.store, cx, &platform, person);
        if let Some(answer) = known.await? {
            return Ok(answer);
        }
        // Everyone the last sync matched has a link; only people it did not find
        // (or who were never synced) are looked up one by one.
        let mut found: Vec<String> = Vec::new();
        for email in person.emails.iter().filter_map(|e| normalize_email(e)) {
            let answer = self
                .lookups
                .get_or_resolve(cx, &email, || self.lookup(cx, &email))
                .await?;
            if let Resolution::Matched(id) = answer {
                if !found.contains(&id) {
                    found.push(id);
                }
            }
        }
        crate::identity::settle_email_lookup(&*self.store, cx, platform, person, found).await
    }

    async fn sync(&self, cx: &ResolveContext, people: &[Person]) -> Result<SyncReport> {
        let token = self.token(cx).await?;
        let platform = cx.link_platform(&self.platform);
        let teams = match &cx.connection {
            Some(c) => list_workspaces(&self.client, c, &token).await?,
            None => vec![None],
        };
        let mut pager =
            UsersListPager::new(self.client.clone(), token, self.page_size).teams(teams);
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
        self.lookups.clear();
        Ok(report)
    }
}
