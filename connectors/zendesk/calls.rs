//! Calls → tickets: caller lookup by phone on ring, a ticket when the call is answered (per the unknown-caller strategy), the recording on hang-up and the number backfilled after wrap-up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::watch;
use tokio::time::Instant;

use super::api::ZendeskClient;
use super::call_types::{
    AnswerOutcome, CallConfig, CallStats, CallerLookup, DisplayOutcome, RequesterKind, RingOutcome,
    SetupReport, UnknownCallerStrategy,
};
use super::config::{ZendeskAccount, ZendeskConfig};
use super::errors::{FailureClass, ZendeskApiError};
use super::models::{Comment, NewTicket};
use crate::identity::{
    Resolution, ResolutionCache, ResolveContext, normalize_email, normalize_phone,
};
use crate::tenant::Connection;

pub(super) type StepResult<T> = std::result::Result<T, ZendeskApiError>;

#[derive(Debug, Default)]
struct Setup {
    agents: HashMap<String, u64>,
    groups: HashMap<String, (String, u64)>,
    default_user_id: Option<u64>,
}

pub(super) struct CallState {
    group: String,
    group_id: u64,
    dialled: String,
    e164: Option<String>,
    rang_at: DateTime<Utc>,
    lookup: watch::Receiver<Option<CallerLookup>>,
    new_user_id: Option<u64>,
    pub(super) answer: Option<AnswerOutcome>,
    /// The call's ticket found by its external id (its answer ran before a restart).
    pub(super) recovered_ticket: Option<u64>,
    pub(super) upload: Option<(String, Instant)>,
    pub(super) recording_attached: bool,
    wrapped: bool,
    tracked_at: Instant,
}

/// How long a call's state is kept after it rang (late or retried steps find it).
const CALL_RETENTION: Duration = Duration::from_secs(6 * 60 * 60);

pub(super) struct Inner {
    pub(super) client: ZendeskClient,
    account: RwLock<ZendeskAccount>,
    pub(super) config: CallConfig,
    cache: ResolutionCache,
    /// The flow's own cache is per account; one context keys it.
    cx: ResolveContext,
    setup: RwLock<Setup>,
    pub(super) calls: Mutex<HashMap<String, CallState>>,
    pub(super) ignored: Mutex<HashMap<String, Instant>>,
    pub(super) stats: Mutex<CallStats>,
}

impl Inner {
    pub(super) fn account(&self) -> ZendeskAccount {
        self.account
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The calls → tickets flow of one tenant's Zendesk account. Cheap to clone.
///
/// Feed it the telephony events: [`CallFlow::ring`], [`CallFlow::answer`],
/// [`CallFlow::hangup`], [`CallFlow::wrap_up_end`] (directly, or as durable
/// deliveries through the engine with [`super::CallStep`] events and a
/// [`super::ZendeskDestination`]). Every step is idempotent per call id.
#[derive(Clone)]
pub struct CallFlow {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for CallFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallFlow")
            .field("account", &self.inner.account().subdomain)
            .finish_non_exhaustive()
    }
}

pub(super) fn local(
    class: FailureClass,
    operation: &str,
    message: impl Into<String>,
) -> ZendeskApiError {
    ZendeskApiError::new(class, 0, operation, message)
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

const WITHHELD: &[&str] = &[
    "",
    "anonymous",
    "unknown",
    "private",
    "restricted",
    "withheld",
    "unavailable",
];

/// The external id a call's ticket carries (idempotency across retries).
pub fn call_external_id(call_id: &str) -> String {
    format!("switchboard-call:{call_id}")
}

/// `+49 30 123456` for `+4930123456`.
fn international(e164: &str) -> String {
    phonenumber::parse(None, e164)
        .map(|n| {
            n.format()
                .mode(phonenumber::Mode::International)
                .to_string()
        })
        .unwrap_or_else(|_| e164.to_owned())
}

impl CallFlow {
    /// A flow for a tenant's Zendesk connection (see
    /// [`ZendeskAccount::from_connection`]).
    pub fn for_connection(
        client: ZendeskClient,
        zendesk: &ZendeskConfig,
        connection: &Connection,
        config: CallConfig,
    ) -> crate::Result<Self> {
        let account = ZendeskAccount::from_connection(zendesk, connection)?;
        Ok(Self::new(client, account, config))
    }

    /// A flow for `account` (one active configuration per tenant).
    pub fn new(client: ZendeskClient, account: ZendeskAccount, config: CallConfig) -> Self {
        let cache = ResolutionCache::new(10_000, config.cache_ttl)
            .negative_ttl(config.cache_ttl.min(Duration::from_secs(60)));
        CallFlow {
            inner: Arc::new(Inner {
                client,
                account: RwLock::new(account),
                config,
                cache,
                cx: ResolveContext::default_tenant(),
                setup: RwLock::new(Setup::default()),
                calls: Mutex::new(HashMap::new()),
                ignored: Mutex::new(HashMap::new()),
                stats: Mutex::new(CallStats::default()),
            }),
        }
    }

    /// Uses `account` from now on (the tenant's connection as the engine
    /// passed it with the latest delivery: rotated credentials take effect at
    /// once). Another subdomain also forgets the cached caller lookups.
    pub fn set_account(&self, account: ZendeskAccount) {
        let mut current = self
            .inner
            .account
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.subdomain != account.subdomain {
            self.inner.cache.clear();
        }
        *current = account;
    }

    /// The account requests go to (its subdomain and base URL).
    pub fn account(&self) -> ZendeskAccount {
        self.inner.account()
    }

    /// The configuration.
    pub fn config(&self) -> &CallConfig {
        &self.inner.config
    }

    /// The counters so far.
    pub fn stats(&self) -> CallStats {
        *lock(&self.inner.stats)
    }

    /// The lookup cache (hits, misses).
    pub fn cache(&self) -> &ResolutionCache {
        &self.inner.cache
    }

    /// Start-up: matches telephony users (their emails) to Zendesk agents, the
    /// configured groups to Zendesk groups by name, and finds (or creates) the
    /// default user. Returns what did not match; calling it again refreshes.
    pub async fn start(&self, telephony_user_emails: &[String]) -> StepResult<SetupReport> {
        let i = &self.inner;
        tracing::info!(account = %i.account().subdomain, "zendesk calls: listing agents");
        let agents = i.client.list_agents(&i.account()).await?;
        let by_email: HashMap<String, u64> = agents
            .iter()
            .filter(|a| a.active)
            .filter_map(|a| {
                a.email
                    .as_deref()
                    .and_then(normalize_email)
                    .map(|e| (e, a.id))
            })
            .collect();
        let mut report = SetupReport::default();
        let mut agents_map = HashMap::new();
        for raw in telephony_user_emails {
            match normalize_email(raw).and_then(|e| by_email.get(&e).map(|id| (e, *id))) {
                Some((e, id)) => {
                    agents_map.insert(e, id);
                    report.agents_matched += 1;
                }
                None => report.agents_unmatched.push(raw.clone()),
            }
        }
        tracing::info!(
            matched = report.agents_matched,
            unmatched = report.agents_unmatched.len(),
            "zendesk calls: agents matched by email"
        );
        let groups = i.client.list_groups(&i.account()).await?;
        let mut groups_map = HashMap::new();
        for name in &i.config.groups {
            let key = name.trim().to_lowercase();
            match groups.iter().find(|g| g.name.trim().to_lowercase() == key) {
                Some(g) => {
                    groups_map.insert(key, (name.clone(), g.id));
                    report.groups_matched.push((name.clone(), g.id));
                }
                None => report.groups_unmatched.push(name.clone()),
            }
        }
        tracing::info!(
            matched = report.groups_matched.len(),
            unmatched = report.groups_unmatched.len(),
            "zendesk calls: groups matched by name"
        );
        let mut default_user_id = None;
        if let Some(email) = i
            .config
            .default_user_email
            .as_deref()
            .and_then(normalize_email)
        {
            let found = i.client.search_users_by_email(&i.account(), &email).await?;
            let exact: Vec<_> = found
                .iter()
                .filter(|u| u.email.as_deref().and_then(normalize_email).as_deref() == Some(&email))
                .collect();
            default_user_id = match exact.first() {
                Some(u) => Some(u.id),
                None => {
                    let u = i
                        .client
                        .create_end_user(
                            &i.account(),
                            &i.config.default_user_name,
                            None,
                            Some(&email),
                        )
                        .await?;
                    report.default_user_created = true;
                    Some(u.id)
                }
            };
            tracing::info!(
                created = report.default_user_created,
                "zendesk calls: default user ready"
            );
        } else if i.config.strategy == UnknownCallerStrategy::DefaultUser {
            return Err(local(
                FailureClass::Permanent,
                "start",
                "the default_user strategy needs default_user_email",
            ));
        }
        report.default_user_id = default_user_id;
        let mut setup = i
            .setup
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *setup = Setup {
            agents: agents_map,
            groups: groups_map,
            default_user_id,
        };
        Ok(report)
    }

    /// The Zendesk agent id of a telephony user's email, if matched at start.
    pub fn agent_id(&self, email: &str) -> Option<u64> {
        let e = normalize_email(email)?;
        let setup = self
            .inner
            .setup
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        setup.agents.get(&e).copied()
    }

    async fn lookup(inner: Arc<Inner>, e164: String) -> CallerLookup {
        let resolved = inner
            .cache
            .get_or_resolve(&inner.cx, &e164, || async {
                let users = inner
                    .client
                    .search_users_by_phone(&inner.account(), &e164)
                    .await
                    .map_err(crate::Error::from)?;
                let ids: Vec<String> = users
                    .iter()
                    .filter(|u| u.active)
                    .map(|u| u.id.to_string())
                    .collect();
                Ok(match ids.len() {
                    0 => Resolution::NotFound,
                    1 => Resolution::Matched(ids[0].clone()),
                    _ => Resolution::Ambiguous(ids),
                })
            })
            .await;
        match resolved {
            Ok(Resolution::Matched(id)) => id
                .parse()
                .map_or(CallerLookup::NotFound, CallerLookup::Matched),
            Ok(Resolution::NotFound) => CallerLookup::NotFound,
            Ok(Resolution::Ambiguous(ids)) => {
                CallerLookup::Ambiguous(ids.iter().filter_map(|i| i.parse().ok()).collect())
            }
            Err(e) => CallerLookup::Failed(e.to_string()),
        }
    }

    /// Looks a caller up now (through the cache): the E.164 number, or any
    /// number in the configured default region.
    pub async fn lookup_caller(&self, number: &str) -> CallerLookup {
        let raw = number.trim();
        if WITHHELD.contains(&raw.to_ascii_lowercase().as_str()) {
            return CallerLookup::Withheld;
        }
        match normalize_phone(raw, &self.inner.config.default_region) {
            Some(e164) => Self::lookup(Arc::clone(&self.inner), e164).await,
            None => CallerLookup::Withheld,
        }
    }

    /// A call rang in `group`: unless the group is not configured, normalises
    /// the number (withheld/anonymous → unknown) and starts the lookup in the background.
    pub async fn ring(
        &self,
        call_id: &str,
        group: &str,
        caller_number: &str,
        at: DateTime<Utc>,
    ) -> StepResult<RingOutcome> {
        let i = &self.inner;
        let Some((group_name, group_id)) = ({
            let setup = i
                .setup
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            setup.groups.get(&group.trim().to_lowercase()).cloned()
        }) else {
            let mut ignored = lock(&i.ignored);
            ignored.retain(|_, at| at.elapsed() < CALL_RETENTION);
            ignored.insert(call_id.to_owned(), Instant::now());
            return Ok(RingOutcome::IgnoredGroup);
        };
        let mut calls = lock(&i.calls);
        if calls.contains_key(call_id) {
            return Ok(RingOutcome::Duplicate);
        }
        calls.retain(|_, c| c.tracked_at.elapsed() < CALL_RETENTION);
        let raw = caller_number.trim();
        let e164 = if WITHHELD.contains(&raw.to_ascii_lowercase().as_str()) {
            None
        } else {
            normalize_phone(raw, &i.config.default_region)
        };
        let (tx, rx) = watch::channel(None);
        match &e164 {
            Some(n) => {
                let inner = Arc::clone(i);
                let n = n.clone();
                tokio::spawn(async move {
                    let r = Self::lookup(inner, n).await;
                    let _ = tx.send(Some(r));
                });
            }
            None => {
                let _ = tx.send(Some(CallerLookup::Withheld));
            }
        }
        calls.insert(
            call_id.to_owned(),
            CallState {
                group: group_name,
                group_id,
                dialled: raw.to_owned(),
                e164: e164.clone(),
                rang_at: at,
                lookup: rx,
                new_user_id: None,
                answer: None,
                recovered_ticket: None,
                upload: None,
                recording_attached: false,
                wrapped: false,
                tracked_at: Instant::now(),
            },
        );
        lock(&i.stats).calls += 1;
        tracing::debug!(call_id, "zendesk calls: ringing");
        Ok(RingOutcome::Tracked { e164 })
    }

    /// The call was answered by `agent_email`: creates (once) the ticket with
    /// the requester chosen per strategy and the agent assigned, then opens it
    /// in the agent's browser where the account supports it. `None` for a call
    /// that rang in a group that is not configured (it is ignored). Before the
    /// call rang this is a temporary failure (steps may arrive out of order).
    pub async fn answer(
        &self,
        call_id: &str,
        agent_email: &str,
        at: DateTime<Utc>,
    ) -> StepResult<Option<AnswerOutcome>> {
        let i = &self.inner;
        let snapshot = {
            let calls = lock(&i.calls);
            match calls.get(call_id) {
                Some(c) => {
                    if let Some(done) = &c.answer {
                        return Ok(Some(done.clone()));
                    }
                    Some((
                        c.lookup.clone(),
                        c.group.clone(),
                        c.group_id,
                        c.dialled.clone(),
                        c.e164.clone(),
                        c.rang_at,
                        c.new_user_id,
                    ))
                }
                None => None,
            }
        };
        let Some((mut rx, group, group_id, dialled, e164, rang_at, new_user_id)) = snapshot else {
            if lock(&i.ignored).contains_key(call_id) {
                return Ok(None);
            }
            // A process that never saw the ring (a restart) and got no ring
            // details: the ticket may exist already.
            if let Some(t) = self.existing_ticket(call_id).await? {
                return Ok(Some(AnswerOutcome {
                    ticket_id: t.id,
                    created: false,
                    requester_id: t.requester_id.unwrap_or_default(),
                    requester: RequesterKind::Existing,
                    lookup: CallerLookup::NotLookedUp,
                    assignee_id: t.assignee_id,
                    display: DisplayOutcome::Disabled,
                }));
            }
            return Err(local(
                FailureClass::Temporary,
                "answer",
                format!("call {call_id} has not rung (yet)"),
            ));
        };
        let lookup =
            match tokio::time::timeout(i.config.lookup_wait, rx.wait_for(Option::is_some)).await {
                Ok(Ok(v)) => v.clone().unwrap_or(CallerLookup::TimedOut),
                Ok(Err(_)) => CallerLookup::Failed("the lookup task ended".to_owned()),
                Err(_) => CallerLookup::TimedOut,
            };
        // A lookup that failed at ring time (an outage, a 429) is tried once more,
        // within the same bound, before the caller is treated as unknown.
        let lookup = match (lookup, &e164) {
            (CallerLookup::Failed(_), Some(n)) => {
                let retry = Self::lookup(Arc::clone(i), n.clone());
                tokio::time::timeout(i.config.lookup_wait, retry)
                    .await
                    .unwrap_or(CallerLookup::TimedOut)
            }
            (other, _) => other,
        };
        let (default_user_id, assignee_id) = {
            let setup = i
                .setup
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (
                setup.default_user_id,
                normalize_email(agent_email).and_then(|e| setup.agents.get(&e).copied()),
            )
        };
        let external_id = call_external_id(call_id);
        let existing = i
            .client
            .tickets_by_external_id(&i.account(), &external_id)
            .await?;
        let (requester_id, requester, note) = match (&lookup, existing.first()) {
            (CallerLookup::Matched(id), _) => (*id, RequesterKind::Matched, None),
            (other, found) => {
                let note = match other {
                    CallerLookup::Ambiguous(ids) => format!(
                        "Several Zendesk users have this number (ids {}); the caller was not guessed: set the requester by hand.",
                        ids.iter()
                            .map(u64::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    CallerLookup::Withheld => "The caller's number was withheld.".to_owned(),
                    CallerLookup::TimedOut => {
                        "The caller lookup did not finish in time; treated as unknown.".to_owned()
                    }
                    CallerLookup::Failed(_) => {
                        "The caller lookup failed; treated as unknown.".to_owned()
                    }
                    _ => "No Zendesk user has this number.".to_owned(),
                };
                let id = match (i.config.strategy, found) {
                    (_, Some(t)) => t.requester_id.unwrap_or_default(),
                    (UnknownCallerStrategy::DefaultUser, None) => {
                        default_user_id.ok_or_else(|| {
                            local(
                                FailureClass::Permanent,
                                "answer",
                                "no default user: run start() with default_user_email",
                            )
                        })?
                    }
                    (UnknownCallerStrategy::NewUser, None) => match new_user_id {
                        Some(id) => id,
                        None => {
                            let name = match &e164 {
                                Some(n) => format!("Caller {}", international(n)),
                                None => "Caller (number withheld)".to_owned(),
                            };
                            let u = i
                                .client
                                .create_end_user(&i.account(), &name, e164.as_deref(), None)
                                .await?;
                            if let Some(c) = lock(&i.calls).get_mut(call_id) {
                                c.new_user_id = Some(u.id);
                            }
                            if let Some(n) = &e164 {
                                i.cache.insert(
                                    &i.cx,
                                    n.clone(),
                                    Resolution::Matched(u.id.to_string()),
                                );
                            }
                            u.id
                        }
                    },
                };
                let kind = match i.config.strategy {
                    UnknownCallerStrategy::DefaultUser => RequesterKind::DefaultUser,
                    UnknownCallerStrategy::NewUser => RequesterKind::NewUser,
                };
                (id, kind, Some(note))
            }
        };
        let (ticket_id, created) = match existing.first() {
            Some(t) => (t.id, false),
            None => {
                let shown = e164
                    .as_deref()
                    .map(international)
                    .unwrap_or_else(|| "withheld".to_owned());
                let mut body = format!(
                    "Incoming call to {group}.\nCaller as dialled: {}\nCaller (E.164): {}\nRang at: {}\nAnswered at: {} by {}",
                    if dialled.is_empty() {
                        "(none)"
                    } else {
                        &dialled
                    },
                    e164.as_deref().unwrap_or("withheld"),
                    rang_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                    at.to_rfc3339_opts(SecondsFormat::Secs, true),
                    agent_email.trim(),
                );
                if let Some(n) = &note {
                    body.push_str("\n\n");
                    body.push_str(n);
                }
                let mut tags = vec!["switchboard".to_owned(), "phone_call".to_owned()];
                tags.push(
                    match &lookup {
                        CallerLookup::Matched(_) => "caller_matched",
                        CallerLookup::Ambiguous(_) => "caller_ambiguous",
                        CallerLookup::Withheld => "caller_withheld",
                        _ => "caller_unknown",
                    }
                    .to_owned(),
                );
                let ticket = NewTicket {
                    subject: Some(format!(
                        "Call from {shown} to {group} at {}",
                        at.format("%Y-%m-%d %H:%M UTC")
                    )),
                    comment: Some(Comment::internal(body)),
                    requester_id: Some(requester_id),
                    group_id: Some(group_id),
                    assignee_id,
                    tags,
                    external_id: Some(external_id),
                    ..NewTicket::default()
                };
                let t = i.client.create_ticket(&i.account(), &ticket).await?;
                (t.id, true)
            }
        };
        let display = match (i.config.display_ticket, assignee_id) {
            (false, _) => DisplayOutcome::Disabled,
            (true, None) => DisplayOutcome::NoAgent,
            (true, Some(agent)) => {
                match i
                    .client
                    .display_ticket(&i.account(), agent, ticket_id)
                    .await
                {
                    Ok(()) => DisplayOutcome::Opened,
                    Err(e) => DisplayOutcome::NotSupported(e.to_string()),
                }
            }
        };
        let outcome = AnswerOutcome {
            ticket_id,
            created,
            requester_id,
            requester,
            lookup: lookup.clone(),
            assignee_id,
            display,
        };
        {
            let mut s = lock(&i.stats);
            if created {
                s.tickets_created += 1;
            }
            match &lookup {
                CallerLookup::Matched(_) => s.matched += 1,
                CallerLookup::Ambiguous(_) => s.ambiguous += 1,
                _ => s.unknown += 1,
            }
        }
        if let Some(c) = lock(&i.calls).get_mut(call_id) {
            c.answer = Some(outcome.clone());
        }
        tracing::info!(call_id, ticket_id, created, "zendesk calls: ticket ready");
        Ok(Some(outcome))
    }

    /// The call's ticket as Zendesk has it, found by its external id.
    pub(super) async fn existing_ticket(
        &self,
        call_id: &str,
    ) -> StepResult<Option<super::models::Ticket>> {
        let i = &self.inner;
        Ok(i.client
            .tickets_by_external_id(&i.account(), &call_external_id(call_id))
            .await?
            .into_iter()
            .next())
    }

    /// The ticket of a tracked call whose answer this process did not see:
    /// found by external id and remembered, or a temporary failure (the
    /// answer step is still being retried).
    pub(super) async fn recover_ticket(&self, call_id: &str, operation: &str) -> StepResult<u64> {
        match self.existing_ticket(call_id).await? {
            Some(t) => {
                if let Some(c) = lock(&self.inner.calls).get_mut(call_id) {
                    c.recovered_ticket = Some(t.id);
                }
                Ok(t.id)
            }
            None => Err(local(
                FailureClass::Temporary,
                operation,
                format!("call {call_id} has no ticket yet; this step waits for it"),
            )),
        }
    }

    /// Wrap-up ended: reads the ticket; if the agent set another, real user as
    /// requester and that user lacks the number, adds it as a phone identity
    /// (so the next call matches). Never adds a number to the default user.
    /// Returns the user the number was added to, if any; a repeated wrap-up does
    /// nothing. Call state is kept for 6 hours after the ring, so a late
    /// recording still finds its ticket.
    /// Before the call's ticket exists this is a temporary failure.
    pub async fn wrap_up_end(&self, call_id: &str, _at: DateTime<Utc>) -> StepResult<Option<u64>> {
        let i = &self.inner;
        let known = {
            let calls = lock(&i.calls);
            let Some(c) = calls.get(call_id) else {
                return Ok(None);
            };
            if c.wrapped {
                return Ok(None);
            }
            (
                c.answer.as_ref().map(|a| (a.ticket_id, a.requester_id)),
                c.recovered_ticket,
                c.e164.clone(),
            )
        };
        let (ticket_id, original, e164) = match known {
            (Some((t, r)), _, e164) => (t, Some(r), e164),
            // Found after a restart: the original requester is not known, so
            // only the identity check below decides.
            (None, Some(t), e164) => (t, None, e164),
            (None, None, e164) => (self.recover_ticket(call_id, "wrap up").await?, None, e164),
        };
        let mut added = None;
        if let Some(e164) = e164 {
            let ticket = i.client.get_ticket(&i.account(), ticket_id).await?;
            let default_user = i
                .setup
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .default_user_id;
            if let Some(now) = ticket
                .requester_id
                .filter(|r| Some(*r) != original && Some(*r) != default_user)
            {
                let identities = i.client.list_identities(&i.account(), now).await?;
                let region = &i.config.default_region;
                let has = identities.iter().any(|id| {
                    id.kind == "phone_number"
                        && normalize_phone(&id.value, region).as_deref() == Some(e164.as_str())
                });
                if !has {
                    i.client
                        .add_phone_identity(&i.account(), now, &e164)
                        .await?;
                    lock(&i.stats).numbers_backfilled += 1;
                    added = Some(now);
                }
                i.cache.invalidate(&i.cx, &e164);
            }
        }
        if let Some(c) = lock(&i.calls).get_mut(call_id) {
            c.wrapped = true;
        }
        Ok(added)
    }
}
