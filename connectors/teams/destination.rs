//! `TeamsDestination`: proactive Bot Framework messages — channel posts to stored conversation references and 1:1 DMs via a created (and cached) personal conversation — with per-tenant credentials.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::Value;

use super::api::{BotConnectorClient, ConversationReference, FailureClass, TeamsApiError};
use super::auth::{TeamsCredentials, TokenProvider};
use super::card::{MAX_TEXT_CHARS, TeamsMessage};
use super::config::{BOT_FRAMEWORK_SCOPE, PLATFORM, TeamsConfig};
use super::pacing::{ConversationWindows, DEFAULT_WINDOW_GUARD, EXACT_WINDOW_MAX};
use crate::Result;
use crate::destination::{Capabilities, Delivery, DeliveryError, Destination, RateLimit, Receipt};
use crate::message::{MessageFormat, Target};
use crate::tenant::Connection;

/// Conversation references the bot has collected (from `conversationUpdate`
/// and other incoming activities), by Entra tenant id and by conversation id
/// and name. Shared between [`super::TeamsInbound`] (which records) and
/// [`TeamsDestination`] (which looks up what a connection's `data` lacks).
/// Cheap to clone; in memory: persist references through the inbound
/// handler's hook into the tenant's connection `data.conversations`.
#[derive(Debug, Clone, Default)]
pub struct ConversationBook {
    inner: Arc<RwLock<HashMap<String, HashMap<String, ConversationReference>>>>,
}

impl ConversationBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a reference under its conversation id (and its name, lower-cased, if any).
    pub fn insert(&self, reference: ConversationReference) {
        if let Ok(mut m) = self.inner.write() {
            let tenant = m.entry(reference.tenant_id.clone()).or_default();
            if let Some(name) = &reference.name {
                tenant.insert(format!("name:{}", name.to_lowercase()), reference.clone());
            }
            tenant.insert(reference.conversation_id.clone(), reference);
        }
    }

    /// Forgets a conversation (the app was removed from it).
    pub fn remove(&self, tenant_id: &str, conversation_id: &str) {
        if let Ok(mut m) = self.inner.write() {
            if let Some(t) = m.get_mut(tenant_id) {
                t.retain(|_, r| r.conversation_id != conversation_id);
            }
        }
    }

    /// The reference for a conversation id or a name in `tenant_id`.
    pub fn get(&self, tenant_id: &str, id_or_name: &str) -> Option<ConversationReference> {
        let m = self.inner.read().ok()?;
        let t = m.get(tenant_id)?;
        t.get(id_or_name)
            .or_else(|| t.get(&format!("name:{}", id_or_name.to_lowercase())))
            .cloned()
    }

    /// Every reference of a tenant.
    pub fn all(&self, tenant_id: &str) -> Vec<ConversationReference> {
        let Ok(m) = self.inner.read() else {
            return Vec::new();
        };
        let mut out: Vec<ConversationReference> = m
            .get(tenant_id)
            .map(|t| {
                t.iter()
                    .filter(|(k, _)| !k.starts_with("name:"))
                    .map(|(_, r)| r.clone())
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.conversation_id.cmp(&b.conversation_id));
        out
    }
}

/// A reference stored in a connection's `data.conversations` (an object keyed by
/// conversation id or by a name, or an array of references).
fn reference_in_data(data: &Value, id_or_name: &str) -> Option<ConversationReference> {
    let convs = data.get("conversations")?;
    let parse = |v: &Value| serde_json::from_value::<ConversationReference>(v.clone()).ok();
    let matches = |r: &ConversationReference| {
        r.conversation_id == id_or_name
            || r.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(id_or_name))
    };
    match convs {
        Value::Object(map) => map
            .get(id_or_name)
            .and_then(parse)
            .or_else(|| map.values().filter_map(parse).find(matches)),
        Value::Array(items) => items.iter().filter_map(parse).find(matches),
        _ => None,
    }
}

/// Whose credentials and which ids a delivery uses.
struct Context {
    key: String,
    credentials: TeamsCredentials,
    tenant_id: String,
    service_url: Option<String>,
    data: Value,
}

/// The Teams [`Destination`] (platform `teams`): Bot Framework proactive messages.
///
/// * Credentials come from the delivery's tenant connection (`account` = the
///   customer's Entra tenant id, secret `client_secret`, `data.app_id`,
///   optional `data.service_url`); a destination built with
///   [`TeamsDestination::with_fixed_credentials`] uses its own for the default
///   tenant. Tokens are cached per connection and refreshed once per burst.
/// * Channel targets (by id or name) go to a stored conversation reference
///   (`data.conversations`, else the shared [`ConversationBook`]); an id that
///   looks like a Teams conversation id (`19:…`) is used directly.
/// * DM targets use the Entra object id the identity resolver matched
///   ([`Delivery::recipient`]); the 1:1 conversation is created once with
///   `POST /v3/conversations` and cached per connection.
/// * Pacing: each conversation's windows up to 30 s (7 per 1 s, 8 per 2 s, 60
///   per 30 s) are kept exactly by a send log ([`super::ConversationWindows`]):
///   a send that would exceed one is answered `RateLimited` with the wait until
///   the window has room (a snooze, never an attempt); so is the 50 per second
///   per app per tenant ([`Destination::exact_limits`]). The engine paces the
///   hour window in process, and every window and the tenant budget across
///   instances when shared pacing is configured.
/// * The message is an Adaptive Card 1.5 with a text fallback
///   ([`TeamsMessage`]); failures are classified by [`super::classify`].
pub struct TeamsDestination {
    config: TeamsConfig,
    client: BotConnectorClient,
    tokens: Arc<TokenProvider>,
    fixed: Option<(TeamsCredentials, Option<String>)>,
    book: ConversationBook,
    dms: Mutex<HashMap<String, (String, String)>>,
    windows: ConversationWindows,
}

impl std::fmt::Debug for TeamsDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeamsDestination")
            .field("name", &self.config.destination_name())
            .field("fixed", &self.fixed.as_ref().map(|(c, _)| c))
            .finish_non_exhaustive()
    }
}

impl TeamsDestination {
    /// A multi-tenant destination: credentials come from each delivery's connection.
    pub fn new(config: TeamsConfig) -> Result<Self> {
        let tokens = Arc::new(TokenProvider::new(&config)?);
        Ok(TeamsDestination {
            client: BotConnectorClient::new(&config)?,
            tokens,
            fixed: None,
            book: ConversationBook::new(),
            dms: Mutex::new(HashMap::new()),
            windows: ConversationWindows::new(
                config.per_conversation_limits(),
                &[config.per_tenant_limit()],
                DEFAULT_WINDOW_GUARD,
            ),
            config,
        })
    }

    /// Also carries one app identity for the default tenant (single-tenant hosts),
    /// with the service URL its conversations live on (else the configured default).
    #[must_use]
    pub fn with_fixed_credentials(
        mut self,
        credentials: TeamsCredentials,
        service_url: Option<String>,
    ) -> Self {
        self.fixed = Some((credentials, service_url));
        self
    }

    /// Shares a conversation book (give the same one to [`super::TeamsInbound`]).
    #[must_use]
    pub fn with_conversation_book(mut self, book: ConversationBook) -> Self {
        self.book = book;
        self
    }

    /// Shares a token provider (e.g. with the Graph identity resolver).
    #[must_use]
    pub fn with_token_provider(mut self, tokens: Arc<TokenProvider>) -> Self {
        self.tokens = tokens;
        self
    }

    /// The conversation book.
    pub fn conversation_book(&self) -> &ConversationBook {
        &self.book
    }

    /// The token provider.
    pub fn token_provider(&self) -> &Arc<TokenProvider> {
        &self.tokens
    }

    fn context(&self, delivery: &Delivery) -> std::result::Result<Context, DeliveryError> {
        match &delivery.connection {
            Some(c) => Self::connection_context(c),
            None => match &self.fixed {
                Some((credentials, service_url)) => Ok(Context {
                    key: "fixed".to_owned(),
                    tenant_id: credentials.tenant_id().to_owned(),
                    credentials: credentials.clone(),
                    service_url: service_url.clone(),
                    data: Value::Null,
                }),
                None => Err(DeliveryError::disconnected(format!(
                    "tenant {} has no Teams connection: connect Teams for it; queued messages are kept",
                    delivery.tenant
                ))),
            },
        }
    }

    fn connection_context(c: &Connection) -> std::result::Result<Context, DeliveryError> {
        if !c.is_connected() {
            return Err(DeliveryError::disconnected(format!(
                "the Teams connection {} is disconnected: reconnect it; queued messages are kept",
                c.key
            )));
        }
        let credentials = TeamsCredentials::from_connection(c)
            .map_err(|e| DeliveryError::disconnected(e.message()))?;
        Ok(Context {
            key: c.key.to_string(),
            tenant_id: c.account().to_owned(),
            credentials,
            service_url: c.data_str("service_url").map(str::to_owned),
            data: c.data.clone(),
        })
    }

    async fn token(&self, ctx: &Context) -> std::result::Result<SecretString, DeliveryError> {
        self.tokens
            .token(&ctx.credentials, BOT_FRAMEWORK_SCOPE)
            .await
            .map_err(|e| {
                if e.class() == FailureClass::Disconnected {
                    tracing::warn!(destination = self.name(), error = %e, "Teams credentials refused");
                }
                e.to_delivery_error()
            })
    }

    fn service_url(&self, ctx: &Context) -> String {
        ctx.service_url
            .clone()
            .unwrap_or_else(|| self.config.fallback_service_url().to_owned())
    }

    fn channel_reference(
        &self,
        ctx: &Context,
        id_or_name: &str,
        by_name: bool,
    ) -> std::result::Result<ConversationReference, DeliveryError> {
        if let Some(r) = reference_in_data(&ctx.data, id_or_name) {
            return Ok(r);
        }
        if let Some(r) = self.book.get(&ctx.tenant_id, id_or_name) {
            return Ok(r);
        }
        if !by_name && id_or_name.starts_with("19:") {
            return Ok(ConversationReference {
                service_url: self.service_url(ctx),
                conversation_id: id_or_name.to_owned(),
                tenant_id: ctx.tenant_id.clone(),
                conversation_type: Some("channel".to_owned()),
                name: None,
            });
        }
        Err(DeliveryError::permanent(format!(
            "no Teams conversation reference for {id_or_name:?} in tenant {}: add the app to that team or chat (so the bot learns the conversation) or store its reference in the connection's data.conversations, then replay",
            ctx.tenant_id
        )))
    }

    async fn personal_conversation(
        &self,
        ctx: &Context,
        token: &SecretString,
        aad_object_id: &str,
    ) -> std::result::Result<(String, String), TeamsApiError> {
        let cache_key = format!("{}\u{1f}{aad_object_id}", ctx.key);
        if let Some(hit) = self
            .dms
            .lock()
            .ok()
            .and_then(|m| m.get(&cache_key).cloned())
        {
            return Ok(hit);
        }
        let service_url = self.service_url(ctx);
        let created = self
            .client
            .create_personal_conversation(
                token,
                &service_url,
                ctx.credentials.app_id(),
                aad_object_id,
                &ctx.tenant_id,
            )
            .await?;
        let entry = (
            created
                .service_url
                .filter(|s| !s.is_empty())
                .unwrap_or(service_url),
            created.id,
        );
        if let Ok(mut m) = self.dms.lock() {
            m.insert(cache_key, entry.clone());
        }
        Ok(entry)
    }

    async fn resolve(
        &self,
        ctx: &Context,
        token: &SecretString,
        delivery: &Delivery,
    ) -> std::result::Result<(String, String, Option<String>), DeliveryError> {
        match &delivery.target {
            Target::ChannelId { id } => {
                let r = self.channel_reference(ctx, id, false)?;
                Ok((r.service_url, r.conversation_id, None))
            }
            Target::ChannelName { name } => {
                let r = self.channel_reference(ctx, name, true)?;
                Ok((r.service_url, r.conversation_id, None))
            }
            Target::SubjectDm | Target::UserDm { .. } => {
                let Some(user) = delivery.recipient.as_deref().filter(|u| !u.is_empty()) else {
                    return Err(DeliveryError::recipient_unknown(
                        "no Microsoft Entra object id for the recipient: register the Teams identity resolver (Graph user sync) for this destination or map the person by hand, then replay",
                    ));
                };
                let (service_url, id) = self
                    .personal_conversation(ctx, token, user)
                    .await
                    .map_err(|e| e.to_delivery_error())?;
                let cache_key = format!("{}\u{1f}{user}", ctx.key);
                Ok((service_url, id, Some(cache_key)))
            }
            other => Err(DeliveryError::permanent(format!(
                "Teams cannot deliver to {}: route it to a channel or a DM",
                other.rate_key(None)
            ))),
        }
    }
}

#[async_trait]
impl Destination for TeamsDestination {
    fn name(&self) -> &str {
        self.config.destination_name()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dm: true,
            channel: true,
            threads: false,
            max_text: Some(MAX_TEXT_CHARS),
            format: MessageFormat::Plain,
            global_limits: vec![self.config.per_tenant_limit()],
            target_limits: self.config.per_conversation_limits().to_vec(),
        }
    }

    /// Windows up to 30 s (and the tenant's second) are kept exactly by the
    /// destination's send log (a token bucket can only approximate them by
    /// sending slower): the engine paces them only across instances, and
    /// paces the hour itself.
    fn exact_limits(&self) -> Vec<RateLimit> {
        self.config
            .per_conversation_limits()
            .iter()
            .copied()
            .chain([self.config.per_tenant_limit()])
            .filter(|l| l.per <= EXACT_WINDOW_MAX)
            .collect()
    }

    fn platform(&self) -> Option<&str> {
        Some(PLATFORM)
    }

    fn has_fixed_credentials(&self) -> bool {
        self.fixed.is_some()
    }

    async fn deliver(&self, delivery: &Delivery) -> std::result::Result<Receipt, DeliveryError> {
        if delivery.message.text.trim().is_empty() && delivery.message.title.is_none() {
            return Err(DeliveryError::permanent(
                "the route's template rendered an empty message: fix the template, then replay",
            ));
        }
        let ctx = self.context(delivery)?;
        let token = self.token(&ctx).await?;
        let (service_url, conversation_id, dm_key) = self.resolve(&ctx, &token, delivery).await?;
        let window_key = format!("{}\u{1f}{conversation_id}", ctx.key);
        if let Err(wait) =
            self.windows
                .try_acquire(&ctx.key, &window_key, tokio::time::Instant::now())
        {
            return Err(DeliveryError::rate_limited(
                Some(wait),
                "Teams send window full (per conversation 7/1 s, 8/2 s, 60/30 s; 50/s per tenant): paced locally",
            ));
        }
        let activity = TeamsMessage::from_message(&delivery.message).to_activity();
        match self
            .client
            .send_activity(&token, &service_url, &conversation_id, &activity)
            .await
        {
            Ok(id) => Ok(Receipt {
                remote_id: id,
                location: Some(conversation_id),
            }),
            Err(e) => {
                if e.class() == FailureClass::Disconnected {
                    self.tokens
                        .invalidate(&ctx.credentials, BOT_FRAMEWORK_SCOPE);
                    tracing::warn!(destination = self.name(), error = %e, "Teams disconnected");
                }
                if e.status() == Some(404) {
                    if let (Some(k), Ok(mut m)) = (dm_key, self.dms.lock()) {
                        m.remove(&k);
                    }
                }
                Err(e.to_delivery_error())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_are_found_in_connection_data_by_id_or_name() {
        let data = json!({"conversations": {
            "general": {"serviceUrl": "https://s/", "conversationId": "19:a@thread.tacv2", "tenantId": "t"},
            "x": {"serviceUrl": "https://s/", "conversationId": "19:b@thread.tacv2", "tenantId": "t", "name": "Perks"}
        }});
        assert_eq!(
            reference_in_data(&data, "general").unwrap().conversation_id,
            "19:a@thread.tacv2"
        );
        assert_eq!(
            reference_in_data(&data, "perks").unwrap().conversation_id,
            "19:b@thread.tacv2"
        );
        assert_eq!(
            reference_in_data(&data, "19:b@thread.tacv2")
                .unwrap()
                .name
                .as_deref(),
            Some("Perks")
        );
        assert!(reference_in_data(&data, "nope").is_none());
        assert!(reference_in_data(&json!({"conversations": 3}), "x").is_none());
    }

    #[test]
    fn the_book_is_per_tenant() {
        let book = ConversationBook::new();
        book.insert(ConversationReference {
            service_url: "https://s/".into(),
            conversation_id: "19:c".into(),
            tenant_id: "t1".into(),
            conversation_type: Some("channel".into()),
            name: Some("General".into()),
        });
        assert!(book.get("t1", "general").is_some());
        assert!(book.get("t2", "general").is_none());
        assert_eq!(book.all("t1").len(), 1);
        book.remove("t1", "19:c");
        assert!(book.get("t1", "19:c").is_none());
    }
}
