//! Channel names → ids per connection, resolved outside any lock held across a call: `conversations.list` page by page with resumable cursors, paced by the method's tier, `Retry-After` honoured per page, names cached with an expiry; plus the per-method pacer `conversations.open` uses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::api::SlackClient;
use super::errors::{FailureClass, SlackApiError};

/// Page size for `conversations.list`.
const CHANNEL_PAGE: u32 = 200;
/// A name missing from a complete listing triggers a fresh listing at most this often.
const NEGATIVE_RELIST: Duration = Duration::from_secs(5 * 60);
/// Wait used when Slack rate-limits without a `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Spaces calls of one Web API method per connection: each call reserves the
/// next free slot (no lock is held while waiting), and a `Retry-After`
/// pushes every later slot back.
#[derive(Debug, Default)]
pub(super) struct MethodPacer {
    next: Mutex<HashMap<String, Instant>>,
}

impl MethodPacer {
    /// How long the caller must wait before its call, having reserved the slot.
    pub(super) fn reserve(&self, key: &str, interval: Duration) -> Duration {
        let now = Instant::now();
        let mut next = lock(&self.next);
        let slot = next.get(key).copied().filter(|t| *t > now).unwrap_or(now);
        next.insert(key.to_owned(), slot + interval);
        slot - now
    }

    /// Slack asked to wait `after`: no call for `key` before then.
    pub(super) fn back_off(&self, key: &str, after: Duration) {
        let until = Instant::now() + after;
        let mut next = lock(&self.next);
        let e = next.entry(key.to_owned()).or_insert(until);
        if *e < until {
            *e = until;
        }
    }

    /// Reserves a slot and sleeps until it.
    pub(super) async fn wait(&self, key: &str, interval: Duration) {
        let d = self.reserve(key, interval);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

/// A sweep in progress: which workspace, where in it, what it found so far.
#[derive(Debug, Default)]
struct Sweep {
    team: usize,
    cursor: Option<String>,
    found: HashMap<String, String>,
}

#[derive(Debug, Default)]
struct State {
    names: HashMap<String, String>,
    complete_at: Option<Instant>,
    sweep: Option<Sweep>,
    busy: bool,
}

#[derive(Debug, Default)]
struct Entry {
    state: Mutex<State>,
    changed: Notify,
}

enum Step {
    Answer(Option<String>),
    Wait,
    Read { team: usize, cursor: Option<String> },
}

/// Clears `busy` and wakes waiters even if the page call is cancelled.
struct Busy<'a>(&'a Entry);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        lock(&self.0.state).busy = false;
        self.0.changed.notify_waiters();
    }
}

/// Channel names of every connection (see the module docs).
#[derive(Debug)]
pub(super) struct ChannelDirectory {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    pacer: MethodPacer,
    ttl: Duration,
    page_interval: Duration,
}

/// What one resolution needs: the token and the workspaces to list.
pub(super) struct Listing<'a> {
    pub(super) client: &'a SlackClient,
    pub(super) token: &'a SecretString,
    pub(super) teams: &'a [Option<String>],
}

pub(super) fn normalize(name: &str) -> String {
    name.trim().trim_start_matches('#').to_lowercase()
}

impl ChannelDirectory {
    pub(super) fn new(ttl: Duration, page_interval: Duration) -> Self {
        ChannelDirectory {
            entries: Mutex::new(HashMap::new()),
            pacer: MethodPacer::default(),
            ttl,
            page_interval,
        }
    }

    fn entry(&self, key: &str) -> Arc<Entry> {
        lock(&self.entries)
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    /// Forgets what is known about `name` (after `channel_not_found`): the
    /// next resolution lists the channels again.
    pub(super) fn invalidate(&self, key: &str, name: &str) {
        let entry = self.entry(key);
        let mut st = lock(&entry.state);
        st.names.remove(&normalize(name));
        st.complete_at = None;
    }

    fn next_step(&self, entry: &Entry, name: &str) -> Step {
        let mut st = lock(&entry.state);
        let fresh = st.complete_at.is_some_and(|t| t.elapsed() < self.ttl);
        if fresh {
            if let Some(id) = st.names.get(name) {
                return Step::Answer(Some(id.clone()));
            }
        }
        if let Some(id) = st.sweep.as_ref().and_then(|s| s.found.get(name)) {
            return Step::Answer(Some(id.clone()));
        }
        if st.sweep.is_none()
            && st
                .complete_at
                .is_some_and(|t| t.elapsed() < NEGATIVE_RELIST.min(self.ttl))
        {
            return Step::Answer(None);
        }
        if st.busy {
            return Step::Wait;
        }
        st.busy = true;
        let sweep = st.sweep.get_or_insert_with(Sweep::default);
        Step::Read {
            team: sweep.team,
            cursor: sweep.cursor.clone(),
        }
    }

    /// The id of `name` in connection `key`'s workspaces, listing pages as
    /// needed. A listing interrupted (by a 429 or an error) resumes from its
    /// cursor on the next call; a name found on an early page is answered
    /// without reading the rest.
    pub(super) async fn resolve(
        &self,
        key: &str,
        name: &str,
        listing: &Listing<'_>,
    ) -> Result<Option<String>, SlackApiError> {
        let name = normalize(name);
        let entry = self.entry(key);
        let pace_key = format!("conversations.list:{key}");
        loop {
            let notified = entry.changed.notified();
            let next = self.next_step(&entry, &name);
            let (team, cursor) = match next {
                Step::Answer(a) => return Ok(a),
                Step::Wait => {
                    // Another delivery is reading a page: wait for it.
                    notified.await;
                    continue;
                }
                Step::Read { team, cursor } => (team, cursor),
            };
            let busy = Busy(&entry);
            self.pacer.wait(&pace_key, self.page_interval).await;
            let team_id = listing.teams.get(team).cloned().flatten();
            let page = listing
                .client
                .conversations_list(
                    listing.token,
                    team_id.as_deref(),
                    cursor.as_deref(),
                    CHANNEL_PAGE,
                )
                .await;
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    if let FailureClass::RateLimited { retry_after } = e.class() {
                        self.pacer
                            .back_off(&pace_key, retry_after.unwrap_or(DEFAULT_RETRY_AFTER));
                    }
                    // The sweep keeps its cursor: the retry resumes there.
                    drop(busy);
                    return Err(e);
                }
            };
            {
                let mut st = lock(&entry.state);
                let sweep = st.sweep.get_or_insert_with(Sweep::default);
                for c in page.items {
                    if let Some(n) = c.name {
                        sweep.found.entry(n.to_lowercase()).or_insert(c.id);
                    }
                }
                match page.next_cursor {
                    Some(next) => sweep.cursor = Some(next),
                    None => {
                        sweep.team += 1;
                        sweep.cursor = None;
                    }
                }
                if sweep.team >= listing.teams.len().max(1) {
                    let done = st.sweep.take().unwrap_or_default();
                    st.names = done.found;
                    st.complete_at = Some(Instant::now());
                }
            }
            drop(busy);
        }
    }
}
