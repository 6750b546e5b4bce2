//! `TeamsInbound`: the bot's messaging endpoint — JWT-verified activities, the capture message action (fetchTask → prefilled form, submitAction → `insight.captured`), conversation references collected from installs, and a host hook answering bot messages.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::Utc;
use serde_json::{Value, json};

use super::activity::{Activity, html_to_text};
use super::api::{BotConnectorClient, ConversationReference};
use super::auth::{TeamsCredentials, TokenProvider};
use super::card::{ADAPTIVE_CARD_CONTENT_TYPE, CARD_VERSION};
use super::config::{BOT_FRAMEWORK_SCOPE, PLATFORM, TeamsConfig};
use super::destination::ConversationBook;
use super::jwt::BotAuthenticator;
use crate::event::{Event, Person};
use crate::inbound::{
    DEFAULT_BODY_LIMIT, InboundRequest, InboundResponse, check_body_size, error_response, header,
    json_response, unauthorized,
};
use crate::store::Store;
use crate::tenant::{ConnectionKey, TenantId};
use crate::{Error, ErrorKind, Result, Switchboard};

/// The kind of the event a submitted capture form becomes.
pub const INSIGHT_EVENT_KIND: &str = "insight.captured";
/// The message-action command id that opens the capture form (as in the app manifest).
pub const CAPTURE_COMMAND_ID: &str = "captureInsight";
/// The capture form's text input id.
pub const CAPTURE_TEXT_INPUT: &str = "text";
/// The capture form's people-picker input id.
pub const CAPTURE_SUBJECT_INPUT: &str = "subject";
/// Longest insight text accepted from the form.
const MAX_INSIGHT_CHARS: usize = 4_000;

/// A bot message for the host to answer ("how many points do I have?").
#[derive(Debug, Clone, PartialEq)]
pub struct BotQuestion {
    /// The host tenant the Entra tenant maps to.
    pub tenant: TenantId,
    /// The sender's Entra object id.
    pub aad_object_id: Option<String>,
    /// The sender's host user id, when an identity link exists.
    pub user_id: Option<String>,
    /// The message text without `<at>` mentions.
    pub text: String,
    /// Where the answer goes.
    pub conversation: ConversationReference,
}

/// A change of the conversations the bot can post to, for the host to persist
/// (e.g. into the tenant's connection `data.conversations`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceChange {
    /// The bot was installed in (or spoke in) this conversation.
    Added(ConversationReference),
    /// The bot was removed from it.
    Removed(ConversationReference),
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type AnswerFn = Arc<dyn Fn(BotQuestion) -> BoxFut<Option<String>> + Send + Sync>;
type ReferenceHook = Arc<dyn Fn(ReferenceChange) + Send + Sync>;
type TenantFn = Arc<dyn Fn(&str) -> Option<TenantId> + Send + Sync>;
type CredentialsFn = Arc<dyn Fn(&str) -> Option<TeamsCredentials> + Send + Sync>;

struct Inner {
    auth: BotAuthenticator,
    platform: String,
    book: ConversationBook,
    switchboard: Option<Switchboard>,
    store: Option<Arc<dyn Store>>,
    tenant_of: TenantFn,
    answer: Option<AnswerFn>,
    on_reference: Option<ReferenceHook>,
    credentials: Option<CredentialsFn>,
    tokens: Arc<TokenProvider>,
    client: BotConnectorClient,
    capture_commands: Vec<String>,
    body_limit: usize,
}

/// The Teams messaging endpoint, framework-agnostic: [`TeamsInbound::handle`]
/// takes an `http::Request<Bytes>` and returns the response. Cheap to clone.
///
/// Every request must carry a valid Bot Framework token ([`BotAuthenticator`]);
/// anything else gets 401 with no detail.
#[derive(Clone)]
pub struct TeamsInbound {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TeamsInbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeamsInbound")
            .field("auth", &self.inner.auth)
            .field("capture_commands", &self.inner.capture_commands)
            .finish_non_exhaustive()
    }
}

/// Builder for [`TeamsInbound`].
#[must_use]
pub struct TeamsInboundBuilder {
    config: TeamsConfig,
    app_id: String,
    auth: Option<BotAuthenticator>,
    book: ConversationBook,
    switchboard: Option<Switchboard>,
    store: Option<Arc<dyn Store>>,
    tenant_of: TenantFn,
    answer: Option<AnswerFn>,
    on_reference: Option<ReferenceHook>,
    credentials: Option<CredentialsFn>,
    tokens: Option<Arc<TokenProvider>>,
    capture_commands: Vec<String>,
    body_limit: usize,
}

impl std::fmt::Debug for TeamsInboundBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeamsInboundBuilder")
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl TeamsInboundBuilder {
    /// Replaces the token validator (e.g. one with extra issuers or audiences).
    pub fn authenticator(mut self, auth: BotAuthenticator) -> Self {
        self.auth = Some(auth);
        self
    }
    /// Shares the conversation book with the destination.
    pub fn conversation_book(mut self, book: ConversationBook) -> Self {
        self.book = book;
        self
    }
    /// Where captured insights are published.
    pub fn switchboard(mut self, switchboard: Switchboard) -> Self {
        self.switchboard = Some(switchboard);
        self
    }
    /// The store whose identity links map Entra object ids to host users, and
    /// where learned conversation references are persisted: into the Entra
    /// tenant's connection (`teams:{tenant id}`) `data.conversations`, keyed by
    /// conversation id (the destination reads them from there). The
    /// [`TeamsInboundBuilder::on_reference`] hook is still called.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }
    /// Maps a customer's Entra tenant id to the host tenant (default: every
    /// Entra tenant belongs to the default tenant). `None` refuses the tenant.
    pub fn tenant_resolver(
        mut self,
        f: impl Fn(&str) -> Option<TenantId> + Send + Sync + 'static,
    ) -> Self {
        self.tenant_of = Arc::new(f);
        self
    }
    /// Answers bot messages: the returned text is sent back into the conversation.
    pub fn on_message<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(BotQuestion) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<String>> + Send + 'static,
    {
        self.answer = Some(Arc::new(move |q| Box::pin(f(q))));
        self
    }
    /// Called when the bot is installed in or removed from a conversation.
    pub fn on_reference(mut self, f: impl Fn(ReferenceChange) + Send + Sync + 'static) -> Self {
        self.on_reference = Some(Arc::new(f));
        self
    }
    /// The app credentials for replies, per Entra tenant id.
    pub fn credentials(
        mut self,
        f: impl Fn(&str) -> Option<TeamsCredentials> + Send + Sync + 'static,
    ) -> Self {
        self.credentials = Some(Arc::new(f));
        self
    }
    /// Shares a token provider with the destination.
    pub fn token_provider(mut self, tokens: Arc<TokenProvider>) -> Self {
        self.tokens = Some(tokens);
        self
    }
    /// Also treats this message-action command id as the capture command.
    pub fn capture_command(mut self, command_id: &str) -> Self {
        self.capture_commands.push(command_id.to_owned());
        self
    }
    /// The body cap (default 1 MiB).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }
    /// Validates and builds.
    pub fn build(self) -> Result<TeamsInbound> {
        let auth = match self.auth {
            Some(a) => a,
            None => BotAuthenticator::new(&self.config, &self.app_id)?,
        };
        let tokens = match self.tokens {
            Some(t) => t,
            None => Arc::new(TokenProvider::new(&self.config)?),
        };
        Ok(TeamsInbound {
            inner: Arc::new(Inner {
                auth,
                platform: self.config.destination_name().to_owned(),
                book: self.book,
                switchboard: self.switchboard,
                store: self.store,
                tenant_of: self.tenant_of,
                answer: self.answer,
                on_reference: self.on_reference,
                credentials: self.credentials,
                tokens,
                client: BotConnectorClient::new(&self.config)?,
                capture_commands: self.capture_commands,
                body_limit: self.body_limit,
            }),
        })
    }
}

/// Applies a reference change to a connection's `data.conversations` (an
/// object keyed by conversation id; created when absent, an array is turned
/// into one). Returns whether anything changed.
pub fn apply_reference_change(data: &mut Value, change: &ReferenceChange) -> bool {
    if !data.is_object() {
        *data = json!({});
    }
    let Some(obj) = data.as_object_mut() else {
        return false;
    };
    let convs = obj.entry("conversations").or_insert_with(|| json!({}));
    if let Value::Array(items) = convs {
        let mut map = serde_json::Map::new();
        for item in items.drain(..) {
            if let Ok(r) = serde_json::from_value::<ConversationReference>(item.clone()) {
                map.insert(r.conversation_id, item);
            }
        }
        *convs = Value::Object(map);
    }
    if !convs.is_object() {
        *convs = json!({});
    }
    let Value::Object(map) = convs else {
        return false;
    };
    match change {
        ReferenceChange::Added(r) => {
            let Ok(value) = serde_json::to_value(r) else {
                return false;
            };
            if map.get(&r.conversation_id) == Some(&value) {
                return false;
            }
            map.insert(r.conversation_id.clone(), value);
            true
        }
        ReferenceChange::Removed(r) => {
            let before = map.len();
            map.retain(|k, v| {
                k != &r.conversation_id
                    && v.get("conversationId").and_then(Value::as_str)
                        != Some(r.conversation_id.as_str())
            });
            map.len() != before
        }
    }
}

fn ok_empty() -> InboundResponse {
    json_response(http::StatusCode::OK, &json!({}))
}

fn task_message(text: &str) -> InboundResponse {
    json_response(
        http::StatusCode::OK,
        &json!({ "task": { "type": "message", "value": text } }),
    )
}

/// The capture form: the message's text prefilled, a people picker for whom
/// it is about (prefilled with the message's author), and a submit button.
pub fn capture_form(
    prefill: &str,
    about_aad_object_id: Option<&str>,
    message_id: Option<&str>,
) -> Value {
    let mut picker = json!({
        "type": "Input.ChoiceSet",
        "id": CAPTURE_SUBJECT_INPUT,
        "label": "About whom",
        "isMultiSelect": false,
        "style": "filtered",
        "choices": [],
        "choices.data": { "type": "Data.Query", "dataset": "graph.microsoft.com/users" },
    });
    if let Some(a) = about_aad_object_id {
        picker["value"] = json!(a);
    }
    let prefill: String = prefill.chars().take(MAX_INSIGHT_CHARS).collect();
    json!({
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": CARD_VERSION,
        "body": [
            {
                "type": "Input.Text",
                "id": CAPTURE_TEXT_INPUT,
                "label": "Insight",
                "isMultiline": true,
                "isRequired": true,
                "errorMessage": "Please write something to capture.",
                "maxLength": MAX_INSIGHT_CHARS,
                "value": prefill,
            },
            picker,
        ],
        "actions": [{
            "type": "Action.Submit",
            "title": "Capture",
            "data": { "messageId": message_id },
        }],
    })
}

impl TeamsInbound {
    /// Starts a handler for the bot `app_id` (the audience of incoming tokens).
    pub fn builder(config: TeamsConfig, app_id: &str) -> TeamsInboundBuilder {
        TeamsInboundBuilder {
            config,
            app_id: app_id.to_owned(),
            auth: None,
            book: ConversationBook::new(),
            switchboard: None,
            store: None,
            tenant_of: Arc::new(|_| Some(TenantId::default_tenant())),
            answer: None,
            on_reference: None,
            credentials: None,
            tokens: None,
            capture_commands: vec![CAPTURE_COMMAND_ID.to_owned()],
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }

    /// The conversation book references are recorded in.
    pub fn conversation_book(&self) -> &ConversationBook {
        &self.inner.book
    }

    /// Verifies and parses a request: body cap, then the Bot Framework token
    /// checked against the activity's `serviceUrl` and `channelId`.
    pub async fn verify(&self, request: &InboundRequest) -> Result<Activity> {
        let body = request.body();
        check_body_size(body.len(), self.inner.body_limit)?;
        let authorization = header(request, "authorization")
            .ok_or_else(|| unauthorized("no Authorization header"))?;
        let activity = Activity::parse(body).map_err(|_| unauthorized("unparseable activity"))?;
        self.inner
            .auth
            .validate(authorization, &activity.service_url, &activity.channel_id)
            .await?;
        Ok(activity)
    }

    /// Handles one request to the messaging endpoint.
    pub async fn handle(&self, request: &InboundRequest) -> InboundResponse {
        let activity = match self.verify(request).await {
            Ok(a) => a,
            Err(e) => {
                tracing::info!(reason = e.message(), "Teams request rejected");
                let e = if e.kind() == ErrorKind::PayloadTooLarge {
                    e
                } else {
                    unauthorized("rejected")
                };
                return error_response(&e);
            }
        };
        self.track_reference(&activity).await;
        match (activity.kind.as_str(), activity.name.as_deref()) {
            ("invoke", Some("composeExtension/fetchTask")) => self.fetch_task(&activity),
            ("invoke", Some("composeExtension/submitAction")) => {
                self.submit_action(&activity).await
            }
            ("message", _) => self.message(&activity).await,
            _ => ok_empty(),
        }
    }

    async fn track_reference(&self, activity: &Activity) {
        let Some(reference) = activity.conversation_reference() else {
            return;
        };
        if activity.bot_removed() {
            self.inner
                .book
                .remove(&reference.tenant_id, &reference.conversation_id);
            self.persist(&ReferenceChange::Removed(reference.clone()))
                .await;
            if let Some(hook) = &self.inner.on_reference {
                hook(ReferenceChange::Removed(reference));
            }
            return;
        }
        let known = self
            .inner
            .book
            .get(&reference.tenant_id, &reference.conversation_id)
            .is_some_and(|r| r == reference);
        if !known {
            self.inner.book.insert(reference.clone());
            self.persist(&ReferenceChange::Added(reference.clone()))
                .await;
            if let Some(hook) = &self.inner.on_reference {
                hook(ReferenceChange::Added(reference));
            }
        }
    }

    /// Writes a reference change into the Entra tenant's connection
    /// (`teams:{tenant id}`) `data.conversations`, keyed by conversation id,
    /// when a store is set and the connection exists. Failures are logged:
    /// the in-memory book still has the reference.
    async fn persist(&self, change: &ReferenceChange) {
        let Some(store) = &self.inner.store else {
            return;
        };
        let reference = match change {
            ReferenceChange::Added(r) | ReferenceChange::Removed(r) => r,
        };
        let key = ConnectionKey::new(PLATFORM, reference.tenant_id.as_str());
        let result: Result<()> = async {
            let Some(mut connection) = store.connection(&key).await? else {
                return Ok(());
            };
            if !apply_reference_change(&mut connection.data, change) {
                return Ok(());
            }
            store.put_connection(&connection, Utc::now()).await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(connection = %key, error = %e, "could not store a Teams conversation reference");
        }
    }
    fn is_capture(&self, activity: &Activity) -> bool {
        let command = activity.value.get("commandId").and_then(Value::as_str);
        command.is_some_and(|c| self.inner.capture_commands.iter().any(|x| x == c))
    }

    fn fetch_task(&self, activity: &Activity) -> InboundResponse {
        if !self.is_capture(activity) {
            return task_message("This command is not available.");
        }
        let payload = activity.value.get("messagePayload");
        let html = payload
            .and_then(|p| p.pointer("/body/content"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let is_html = payload
            .and_then(|p| p.pointer("/body/contentType"))
            .and_then(Value::as_str)
            .is_none_or(|t| t.eq_ignore_ascii_case("html"));
        let text = if is_html {
            html_to_text(html)
        } else {
            html.trim().to_owned()
        };
        let author = payload
            .and_then(|p| p.pointer("/from/user/id"))
            .and_then(Value::as_str);
        let message_id = payload.and_then(|p| p.get("id")).and_then(Value::as_str);
        let card = capture_form(&text, author, message_id);
        json_response(
            http::StatusCode::OK,
            &json!({
                "task": {
                    "type": "continue",
                    "value": {
                        "title": "Capture an insight",
                        "height": "medium",
                        "width": "medium",
                        "card": { "contentType": ADAPTIVE_CARD_CONTENT_TYPE, "content": card },
                    }
                }
            }),
        )
    }

    /// The host user linked to an Entra object id in the activity's tenant:
    /// links of the tenant's connection (`teams:{entra tenant}`) first, then
    /// links stored without a connection (single-tenant hosts).
    async fn host_user(&self, activity: &Activity, aad_object_id: &str) -> Option<String> {
        let store = self.inner.store.as_ref()?;
        let tenant = self.tenant(activity)?;
        let mut platforms = Vec::with_capacity(2);
        if let Some(entra) = activity.tenant_id() {
            platforms.push(ConnectionKey::new(PLATFORM, entra).to_string());
        }
        platforms.push(self.inner.platform.clone());
        for platform in platforms {
            let Ok(links) = store.links(&tenant, &platform).await else {
                continue;
            };
            if let Some(l) = links.into_iter().find(|l| l.platform_id == aad_object_id) {
                return Some(l.user_id);
            }
        }
        None
    }

    fn tenant(&self, activity: &Activity) -> Option<TenantId> {
        activity.tenant_id().and_then(|t| (self.inner.tenant_of)(t))
    }

    async fn submit_action(&self, activity: &Activity) -> InboundResponse {
        if !self.is_capture(activity) {
            return ok_empty();
        }
        let data = activity.value.get("data").cloned().unwrap_or(Value::Null);
        let text: String = data
            .get(CAPTURE_TEXT_INPUT)
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or("")
            .chars()
            .take(MAX_INSIGHT_CHARS)
            .collect();
        if text.is_empty() {
            return task_message("Please write something to capture.");
        }
        let Some(tenant) = self.tenant(activity) else {
            return task_message("This Microsoft Teams organisation is not connected.");
        };
        let subject = data
            .get(CAPTURE_SUBJECT_INPUT)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned);
        let author_aad = activity.from.aad_object_id.clone();
        let author_host = match &author_aad {
            Some(a) => self.host_user(activity, a).await,
            None => None,
        };
        let subject_host = match &subject {
            Some(s) => self.host_user(activity, s).await,
            None => None,
        };
        let now = Utc::now();
        let event_id = match activity.id.as_deref().filter(|i| !i.is_empty()) {
            Some(id) => format!("teams:submit:{id}"),
            None => format!(
                "teams:submit:{}:{}",
                activity.from.id,
                now.timestamp_millis()
            ),
        };
        let event_data = json!({
            "text": text,
            "author": {
                "aad_object_id": author_aad,
                "teams_user_id": activity.from.id,
                "name": activity.from.name,
                "user_id": author_host,
            },
            "subject": subject.as_ref().map(|s| json!({ "aad_object_id": s, "user_id": subject_host })),
            "conversation": {
                "id": activity.conversation.id,
                "type": activity.conversation.conversation_type,
            },
            "message_id": data.get("messageId").cloned().unwrap_or(Value::Null),
            "entra_tenant_id": activity.tenant_id(),
            "captured_at": now.to_rfc3339(),
        });
        let mut builder = Event::builder(event_id, INSIGHT_EVENT_KIND)
            .tenant(tenant.as_str())
            .source(PLATFORM)
            .occurred_at(now)
            .data(event_data);
        if let Some(a) = author_host {
            builder = builder.actor(Person::new(a));
        }
        if let Some(s) = subject_host {
            builder = builder.subject(Person::new(s));
        }
        let Some(sb) = &self.inner.switchboard else {
            return error_response(&Error::new(ErrorKind::Config, "no switchboard"));
        };
        let published = match builder.build() {
            Ok(event) => sb.publish(event).await,
            Err(e) => Err(e),
        };
        match published {
            Ok(_) => ok_empty(),
            Err(e) => {
                tracing::error!(error = %e, "could not publish a captured Teams insight");
                error_response(&e)
            }
        }
    }

    async fn message(&self, activity: &Activity) -> InboundResponse {
        let (Some(answer), Some(conversation)) =
            (&self.inner.answer, activity.conversation_reference())
        else {
            return ok_empty();
        };
        let Some(tenant) = self.tenant(activity) else {
            return ok_empty();
        };
        let user_id = match &activity.from.aad_object_id {
            Some(a) => self.host_user(activity, a).await,
            None => None,
        };
        let question = BotQuestion {
            tenant,
            aad_object_id: activity.from.aad_object_id.clone(),
            user_id,
            text: activity.text_without_mentions(),
            conversation: conversation.clone(),
        };
        let Some(reply) = answer(question).await.filter(|r| !r.trim().is_empty()) else {
            return ok_empty();
        };
        if let Err(e) = self.reply(activity, &conversation, &reply).await {
            tracing::warn!(error = %e, "could not answer a Teams message");
        }
        ok_empty()
    }

    async fn reply(
        &self,
        activity: &Activity,
        conversation: &ConversationReference,
        text: &str,
    ) -> Result<()> {
        let credentials = self
            .inner
            .credentials
            .as_ref()
            .and_then(|f| f(&conversation.tenant_id))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    "no Teams credentials for the conversation's tenant",
                )
            })?;
        let token = self
            .inner
            .tokens
            .token(&credentials, BOT_FRAMEWORK_SCOPE)
            .await?;
        let mut body = json!({
            "type": "message",
            "text": text,
            "textFormat": "plain",
            "from": activity.recipient,
            "recipient": activity.from,
            "conversation": { "id": conversation.conversation_id },
        });
        if let Some(id) = &activity.id {
            body["replyToId"] = json!(id);
        }
        self.inner
            .client
            .send_activity(
                &token,
                &conversation.service_url,
                &conversation.conversation_id,
                &body,
            )
            .await?;
        Ok(())
    }
}

/// An axum router serving the messaging endpoint at `POST /api/messages`.
#[cfg(feature = "axum")]
pub fn router(inbound: TeamsInbound) -> axum::Router {
    use axum::routing::post;
    async fn messages(
        axum::extract::State(inbound): axum::extract::State<TeamsInbound>,
        request: axum::extract::Request,
    ) -> axum::response::Response {
        let (parts, body) = request.into_parts();
        let limit = inbound.inner.body_limit;
        let bytes = match axum::body::to_bytes(body, limit.saturating_add(1)).await {
            Ok(b) => b,
            Err(_) => {
                let e = Error::new(ErrorKind::PayloadTooLarge, "body too large");
                return error_response(&e).map(axum::body::Body::from);
            }
        };
        let request = http::Request::from_parts(parts, bytes);
        inbound.handle(&request).await.map(axum::body::Body::from)
    }
    axum::Router::new()
        .route("/api/messages", post(messages))
        .with_state(inbound)
}
