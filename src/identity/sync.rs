//! The generic directory sync connectors reuse: one paginated pass over a platform's users, matched to the host's people by email or phone.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    AmbiguousMatch, IdentityLink, LinkOrigin, ResolveContext, SkippedCounts, SyncReport, Unmatched,
    normalize_email, normalize_phone,
};
use crate::Result;
use crate::event::Person;
use crate::store::Store;

/// What kind of account a directory entry is; only active members are matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// A regular, active member.
    #[default]
    Active,
    /// Deleted; skipped.
    Deleted,
    /// Deactivated or suspended; skipped.
    Deactivated,
    /// A bot or app user; skipped.
    Bot,
    /// A guest or restricted account; skipped.
    Guest,
}

/// One user in a platform's directory, as its list API returned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    /// The platform's user id.
    pub platform_id: String,
    /// Email addresses, raw (the sync normalises them).
    #[serde(default)]
    pub emails: Vec<String>,
    /// Phone numbers, raw (the sync normalises them with the default region).
    #[serde(default)]
    pub phones: Vec<String>,
    /// What kind of account it is.
    #[serde(default)]
    pub status: AccountStatus,
}

impl DirectoryEntry {
    /// An active entry with no identifiers yet.
    pub fn new(platform_id: impl Into<String>) -> Self {
        DirectoryEntry {
            platform_id: platform_id.into(),
            emails: Vec::new(),
            phones: Vec::new(),
            status: AccountStatus::Active,
        }
    }
    /// Adds an email address.
    #[must_use]
    pub fn email(mut self, email: impl Into<String>) -> Self {
        self.emails.push(email.into());
        self
    }
    /// Adds a phone number.
    #[must_use]
    pub fn phone(mut self, phone: impl Into<String>) -> Self {
        self.phones.push(phone.into());
        self
    }
    /// Sets the account status.
    #[must_use]
    pub fn status(mut self, status: AccountStatus) -> Self {
        self.status = status;
        self
    }
}

/// A platform directory read page by page (one list call per page).
#[async_trait]
pub trait DirectoryPager: Send {
    /// The next page, or `None` after the last one.
    async fn next_page(&mut self) -> Result<Option<Vec<DirectoryEntry>>>;
}

/// A directory held in memory, served in pages (tests, or a directory fetched
/// some other way).
#[derive(Debug, Clone, Default)]
pub struct StaticDirectory {
    pages: std::collections::VecDeque<Vec<DirectoryEntry>>,
}

impl StaticDirectory {
    /// Serves `pages` in order.
    pub fn new(pages: Vec<Vec<DirectoryEntry>>) -> Self {
        StaticDirectory {
            pages: pages.into(),
        }
    }
    /// Splits `entries` into pages of `page_size` entries.
    pub fn paged(entries: Vec<DirectoryEntry>, page_size: usize) -> Self {
        let size = page_size.max(1);
        let mut pages = std::collections::VecDeque::new();
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            pages.push_back(entries.by_ref().take(size).collect());
        }
        StaticDirectory { pages }
    }
}

#[async_trait]
impl DirectoryPager for StaticDirectory {
    async fn next_page(&mut self) -> Result<Option<Vec<DirectoryEntry>>> {
        Ok(self.pages.pop_front())
    }
}

/// Which identifiers match people to platform users.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchBy {
    /// Normalised email (Slack, Teams).
    #[default]
    Email,
    /// E.164 phone number (telephony, Zendesk).
    Phone,
    /// Email; phone only for people whose emails match nobody.
    EmailThenPhone,
}

/// Settings for [`sync_directory`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOptions {
    /// Which identifiers to match on.
    pub match_by: MatchBy,
    /// Region for directory phone numbers without a country code (ISO 3166 alpha-2).
    pub default_region: String,
    /// The time recorded on new links.
    pub now: DateTime<Utc>,
    /// Remove automatic links of people who no longer match (their platform
    /// account is gone or became ambiguous). Manual links are never removed.
    pub prune_stale_links: bool,
}

impl SyncOptions {
    /// Match by `match_by`, default region `US`, now, pruning stale automatic links.
    pub fn new(match_by: MatchBy) -> Self {
        SyncOptions {
            match_by,
            default_region: "US".to_owned(),
            now: Utc::now(),
            prune_stale_links: true,
        }
    }
    /// Sets the default phone region.
    #[must_use]
    pub fn default_region(mut self, region: impl Into<String>) -> Self {
        self.default_region = region.into();
        self
    }
    /// Sets the time recorded on new links.
    #[must_use]
    pub fn at(mut self, now: DateTime<Utc>) -> Self {
        self.now = now;
        self
    }
    /// Whether to remove automatic links of people who no longer match.
    #[must_use]
    pub fn prune_stale_links(mut self, yes: bool) -> Self {
        self.prune_stale_links = yes;
        self
    }
}

/// Candidates found for one person, by kind of identifier.
#[derive(Default)]
struct Candidates {
    by_email: Vec<String>,
    by_phone: Vec<String>,
}

fn push_unique(list: &mut Vec<String>, id: &str) {
    if !list.iter().any(|x| x == id) {
        list.push(id.to_owned());
    }
}

/// Syncs `people` of one tenant against a platform directory (the tenant's
/// connection's) in one pass and updates that tenant's links.
///
/// Links are stored under `cx.tenant` and [`ResolveContext::link_platform`]
/// (the connection key, e.g. `slack:T0123`, or `platform` when `cx` has no
/// connection), so two tenants — or two workspaces of one tenant — never share
/// or overwrite each other's links.
///
/// The people are indexed by their normalised identifiers; the directory is then
/// streamed page by page (one list call each, no lookup per person), each active
/// entry's identifiers looked up in the index. Deleted, deactivated, bot and guest
/// accounts are skipped and counted. A person whose identifiers match two or more
/// platform users is reported as ambiguous and never linked, and so is each of
/// two or more people whose identifiers (a shared email or phone) find the same
/// single platform user. With
/// [`MatchBy::EmailThenPhone`], phones are consulted only for people no email matched.
///
/// Manual links always win: such people are reported as matched to their manual
/// link and their link is left untouched. Other matches are written as
/// [`LinkOrigin::EmailMatch`] / [`LinkOrigin::PhoneMatch`] links (unchanged links
/// are not rewritten). `api_calls` in the report counts the pages fetched.
pub async fn sync_directory(
    store: &dyn Store,
    cx: &ResolveContext,
    platform: &str,
    people: &[Person],
    directory: &mut dyn DirectoryPager,
    options: &SyncOptions,
) -> Result<SyncReport> {
    let use_email = matches!(options.match_by, MatchBy::Email | MatchBy::EmailThenPhone);
    let use_phone = matches!(options.match_by, MatchBy::Phone | MatchBy::EmailThenPhone);

    // Normalised identifiers per person, and the index identifier → people.
    let mut identifiers: Vec<(Vec<String>, Vec<String>)> = Vec::with_capacity(people.len());
    let mut index: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, person) in people.iter().enumerate() {
        let mut emails = Vec::new();
        let mut phones = Vec::new();
        if use_email {
            for e in person.emails.iter().filter_map(|e| normalize_email(e)) {
                if !emails.contains(&e) {
                    emails.push(e);
                }
            }
        }
        if use_phone {
            for p in person
                .phones
                .iter()
                .filter_map(|p| normalize_phone(p, &options.default_region))
            {
                if !phones.contains(&p) {
                    phones.push(p);
                }
            }
        }
        for key in emails.iter().chain(phones.iter()) {
            let slot = index.entry(key.clone()).or_default();
            if slot.last() != Some(&i) {
                slot.push(i);
            }
        }
        identifiers.push((emails, phones));
    }

    // One pass over the directory.
    let mut candidates: Vec<Candidates> = Vec::new();
    candidates.resize_with(people.len(), Candidates::default);
    let mut skipped = SkippedCounts::default();
    let mut directory_size = 0usize;
    let mut api_calls = 0usize;
    while let Some(page) = directory.next_page().await? {
        api_calls += 1;
        directory_size += page.len();
        for entry in page {
            match entry.status {
                AccountStatus::Active => {}
                AccountStatus::Deleted => {
                    skipped.deleted += 1;
                    continue;
                }
                AccountStatus::Deactivated => {
                    skipped.deactivated += 1;
                    continue;
                }
                AccountStatus::Bot => {
                    skipped.bots += 1;
                    continue;
                }
                AccountStatus::Guest => {
                    skipped.guests += 1;
                    continue;
                }
            }
            if use_email {
                for email in entry.emails.iter().filter_map(|e| normalize_email(e)) {
                    for &i in index.get(&email).into_iter().flatten() {
                        push_unique(&mut candidates[i].by_email, &entry.platform_id);
                    }
                }
            }
            if use_phone {
                for phone in entry
                    .phones
                    .iter()
                    .filter_map(|p| normalize_phone(p, &options.default_region))
                {
                    for &i in index.get(&phone).into_iter().flatten() {
                        push_unique(&mut candidates[i].by_phone, &entry.platform_id);
                    }
                }
            }
        }
    }

    let tenant = &cx.tenant;
    let platform = cx.link_platform(platform);
    let platform = platform.as_str();
    let existing: HashMap<String, IdentityLink> = store
        .links(tenant, platform)
        .await?
        .into_iter()
        .map(|l| (l.user_id.clone(), l))
        .collect();

    let mut report = SyncReport {
        skipped,
        directory_size,
        api_calls,
        ..SyncReport::default()
    };
    // Reverse ambiguity: a platform user found for two or more host people
    // (sharing an email or a phone) is linked to none of them.
    let mut claimed: HashMap<String, HashSet<&str>> = HashMap::new();
    for (person, found) in people.iter().zip(&candidates) {
        if existing
            .get(&person.id)
            .is_some_and(|l| l.origin == LinkOrigin::Manual)
        {
            continue;
        }
        let ids = if !found.by_email.is_empty() {
            &found.by_email
        } else {
            &found.by_phone
        };
        if let [only] = ids.as_slice() {
            claimed
                .entry(only.clone())
                .or_default()
                .insert(person.id.as_str());
        }
    }
    let mut seen = HashSet::new();
    for ((person, found), (emails, phones)) in people.iter().zip(candidates).zip(identifiers) {
        if !seen.insert(person.id.as_str()) {
            continue;
        }
        let current = existing.get(&person.id);
        if let Some(link) = current.filter(|l| l.origin == LinkOrigin::Manual) {
            report
                .matched
                .push((person.id.clone(), link.platform_id.clone()));
            continue;
        }
        let (ids, origin) = if !found.by_email.is_empty() {
            (found.by_email, LinkOrigin::EmailMatch)
        } else {
            (found.by_phone, LinkOrigin::PhoneMatch)
        };
        let shared = ids.len() == 1 && claimed.get(&ids[0]).is_some_and(|p| p.len() > 1);
        match ids.len() {
            1 if !shared => {
                let platform_id = ids.into_iter().next().unwrap_or_default();
                let unchanged =
                    current.is_some_and(|l| l.platform_id == platform_id && l.origin == origin);
                if !unchanged {
                    store
                        .put_link(&IdentityLink {
                            tenant: tenant.clone(),
                            platform: platform.to_owned(),
                            user_id: person.id.clone(),
                            platform_id: platform_id.clone(),
                            origin,
                            linked_at: options.now,
                        })
                        .await?;
                }
                report.matched.push((person.id.clone(), platform_id));
            }
            0 => {
                if options.prune_stale_links && current.is_some() {
                    store.delete_link(tenant, platform, &person.id).await?;
                }
                let mut tried = emails;
                tried.extend(phones);
                report.unmatched.push(Unmatched {
                    user_id: person.id.clone(),
                    identifiers: tried,
                });
            }
            _ => {
                if options.prune_stale_links && current.is_some() {
                    store.delete_link(tenant, platform, &person.id).await?;
                }
                report.ambiguous.push(AmbiguousMatch {
                    user_id: person.id.clone(),
                    candidates: ids,
                });
            }
        }
    }
    Ok(report)
}
