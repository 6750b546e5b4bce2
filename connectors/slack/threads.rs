//! Thread follow-ups: events sharing a key (e.g. one redemption's `created` and `updated`) are posted as replies under the first message of that key, whose `ts` is kept in the store so restarts and other replicas find it.

use std::sync::Arc;

use chrono::Utc;
use serde_json::Value;

use super::errors::{FailureClass, SlackApiError};
use crate::destination::Delivery;
use crate::identity::{IdentityLink, LinkOrigin};
use crate::store::Store;

/// The link-table platform under which thread parents are kept: one row per
/// (tenant, `destination|channel|key`), whose platform id is the parent's `ts`.
pub const THREAD_LINK_PLATFORM: &str = "slack-thread";

/// The option behind [`super::SlackDestination::with_thread_follow_ups`]:
/// which value of an event's `data` makes follow-ups, and how they reply.
///
/// The first delivery of a key to a channel is posted as usual and its `ts`
/// is stored (in the store's identity-link table, platform
/// [`THREAD_LINK_PLATFORM`], per tenant); later deliveries of the same key
/// to the same channel are posted with `thread_ts` set to it. Because it is
/// in the store, it survives restarts and is shared by every replica on that
/// store. Deliveries without the key are posted as usual.
///
/// Two first deliveries of one key racing each other (before either was
/// posted) both start a thread; the later one's `ts` is kept.
#[derive(Clone)]
pub struct ThreadFollowUps {
    path: Vec<String>,
    store: Arc<dyn Store>,
    reply_broadcast: bool,
    routes: Option<Vec<String>>,
}

impl std::fmt::Debug for ThreadFollowUps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadFollowUps")
            .field("path", &self.path.join("."))
            .field("reply_broadcast", &self.reply_broadcast)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl ThreadFollowUps {
    /// Threads by the value at `path` in the event's `data` (dot-separated,
    /// e.g. `redemption_id` or `redemption.id`; strings and numbers count),
    /// keeping thread parents in `store` (the switchboard's, for sharing
    /// across replicas).
    pub fn by_data(path: &str, store: Arc<dyn Store>) -> Self {
        ThreadFollowUps {
            path: path
                .split('.')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            store,
            reply_broadcast: false,
            routes: None,
        }
    }
    /// Also shows follow-ups in the channel (`reply_broadcast`).
    #[must_use]
    pub fn reply_broadcast(mut self, broadcast: bool) -> Self {
        self.reply_broadcast = broadcast;
        self
    }
    /// Threads only deliveries of these routes (by name; default: all).
    #[must_use]
    pub fn only_routes<I, S>(mut self, routes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.routes = Some(routes.into_iter().map(Into::into).collect());
        self
    }

    pub(super) fn broadcast(&self) -> bool {
        self.reply_broadcast
    }

    /// The key of a delivery to `channel` on `destination`, if it has one.
    pub(super) fn key(
        &self,
        destination: &str,
        channel: &str,
        delivery: &Delivery,
    ) -> Option<String> {
        if let Some(routes) = &self.routes {
            if !routes.iter().any(|r| r == &delivery.route) {
                return None;
            }
        }
        if self.path.is_empty() {
            return None;
        }
        let mut at = &delivery.event.data;
        for part in &self.path {
            at = at.get(part)?;
        }
        let value = match at {
            Value::String(s) if !s.is_empty() => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        Some(format!("{destination}|{channel}|{value}"))
    }

    /// The stored parent `ts` of `key`; a store failure is temporary (the
    /// delivery is retried rather than posted outside its thread).
    pub(super) async fn parent(
        &self,
        delivery: &Delivery,
        key: &str,
    ) -> Result<Option<String>, SlackApiError> {
        match self
            .store
            .link(&delivery.tenant, THREAD_LINK_PLATFORM, key)
            .await
        {
            Ok(link) => Ok(link.map(|l| l.platform_id).filter(|ts| !ts.is_empty())),
            Err(e) => Err(SlackApiError::new(
                FailureClass::Temporary,
                "chat.postMessage",
                None,
                format!("could not read the thread of this follow-up from the store: {e}"),
            )),
        }
    }

    /// Keeps `ts` as the parent of `key` (the message is posted either way).
    pub(super) async fn remember(&self, delivery: &Delivery, key: &str, ts: &str) {
        let link = IdentityLink {
            tenant: delivery.tenant.clone(),
            platform: THREAD_LINK_PLATFORM.to_owned(),
            user_id: key.to_owned(),
            platform_id: ts.to_owned(),
            origin: LinkOrigin::Manual,
            linked_at: Utc::now(),
        };
        if let Err(e) = self.store.put_link(&link).await {
            tracing::warn!(error = %e, "could not keep the Slack thread of a follow-up key; later follow-ups start a new thread");
        }
    }
}
