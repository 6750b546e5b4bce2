//! `SlackIdentity`: "Sync users" in one sweep of `users.list` matched by email, and `users.lookupByEmail` only for someone the last sync did not find.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use secrecy::SecretString;

use super::api::{FailureClass, SlackClient, SlackUser};
use super::config::SlackConfig;
use super::oauth::BotToken;
use crate::Result;
use crate::event::Person;
use crate::identity::{
    AccountStatus, DirectoryEntry, DirectoryPager, IdentityLink, IdentityResolver, LinkOrigin,
    MatchBy, Resolution, ResolutionCache, SyncOptions, SyncReport, normalize_email, sync_directory,
};
use crate::store::Store;

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
    cursor: Option<String>,
    done: bool,
    calls: usize,
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
            cursor: None,
            done: false,
            calls: 0,
        }
    }

    /// HTTP calls made so far (rate-limited retries included).
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// The directory entry for one Slack user: deleted → deleted; bots, apps and
    /// Slackbot → bot; multi- and single-channel guests → guest; the email is
    /// `profile.email`.
    pub fn entry(user: SlackUser) -> DirectoryEntry {
        let status = if user.deleted {
            AccountStatus::Deleted
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
            return Ok(None);
        }
        let mut retries = 0;
        let page = loop {
            self.calls += 1;
            match self
                .client
                .users_list(&self.token, self.cursor.as_deref(), self.limit)
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
            None => self.done = true,
        }
        Ok(Some(page.items.into_iter().map(Self::entry).collect()))
    }
}

#[derive(Default)]
struct LastSync {
    ambiguous: HashMap<String, Vec<String>>,
}

/// The Slack [`IdentityResolver`]: host people ↔ Slack user ids by email.
///
/// * [`IdentityResolver::sync`] reads the whole directory once with `users.list`
///   (10,000 users take 50 calls) and matches normalised `profile.email`; deleted
///   users, bots, Slackbot and guests are skipped; two Slack users with one email
///   make the person ambiguous (never guessed). Links are written to the store;
///   manual links always win.
/// * [`IdentityResolver::resolve`] answers from the store's link first. Only for
///   someone the last sync did not find (e.g. who joined since) does it call
///   `users.lookupByEmail`; the answer is cached (and a match stored as a link).
pub struct SlackIdentity {
    platform: String,
    client: SlackClient,
    token: BotToken,
    store: Arc<dyn Store>,
    page_size: u32,
    lookups: ResolutionCache,
    last_sync: RwLock<Option<LastSync>>,
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
    /// A resolver for the destination named in `config`, storing links in `store`.
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
        SlackIdentity {
            platform: config.destination_name().to_owned(),
            client,
            token,
            store,
            page_size: DEFAULT_PAGE_SIZE,
            lookups: ResolutionCache::new(10_000, Duration::from_secs(3_600))
                .negative_ttl(Duration::from_secs(600)),
            last_sync: RwLock::new(None),
        }
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

    /// The platform name links are stored under (the destination's name).
    pub fn platform(&self) -> &str {
        &self.platform
    }

    /// Maps a host user to a Slack user by hand (an admin's override; survives syncs).
    pub async fn map_manually(&self, user_id: &str, slack_user_id: &str) -> Result<()> {
        self.store
            .put_link(&IdentityLink {
                platform: self.platform.clone(),
                user_id: user_id.to_owned(),
                platform_id: slack_user_id.to_owned(),
                origin: LinkOrigin::Manual,
                linked_at: Utc::now(),
            })
            .await
    }

    async fn lookup(&self, email: &str) -> Result<Resolution> {
        let token = self.token.get(&self.client).await?;
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
    async fn resolve(&self, person: &Person) -> Result<Resolution> {
        if let Some(link) = self.store.link(&self.platform, &person.id).await? {
            return Ok(Resolution::Matched(link.platform_id));
        }
        let ambiguous = self.last_sync.read().ok().and_then(|s| {
            s.as_ref()
                .and_then(|s| s.ambiguous.get(&person.id).cloned())
        });
        if let Some(candidates) = ambiguous {
            return Ok(Resolution::Ambiguous(candidates));
        }
        // Everyone the last sync matched has a link; only people it did not find
        // (or who were never synced) are looked up one by one.
        let mut found: Vec<String> = Vec::new();
        for email in person.emails.iter().filter_map(|e| normalize_email(e)) {
            let answer = self
                .lookups
                .get_or_resolve(&email, || self.lookup(&email))
                .await?;
            if let Resolution::Matched(id) = answer {
                if !found.contains(&id) {
                    found.push(id);
                }
            }
        }
        match found.len() {
            0 => Ok(Resolution::NotFound),
            1 => {
                let id = found.remove(0);
                self.store
                    .put_link(&IdentityLink {
                        platform: self.platform.clone(),
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

    async fn sync(&self, people: &[Person]) -> Result<SyncReport> {
        let token = self.token.get(&self.client).await?;
        let mut pager = UsersListPager::new(self.client.clone(), token, self.page_size);
        let mut report = sync_directory(
            self.store.as_ref(),
            &self.platform,
            people,
            &mut pager,
            &SyncOptions::new(MatchBy::Email),
        )
        .await?;
        report.api_calls = pager.calls();
        let last = LastSync {
            ambiguous: report
                .ambiguous
                .iter()
                .map(|a| (a.user_id.clone(), a.candidates.clone()))
                .collect(),
        };
        if let Ok(mut s) = self.last_sync.write() {
            *s = Some(last);
        }
        // The directory was just read: earlier single answers may be stale.
        self.lookups.clear();
        Ok(report)
    }
}
