//! Bolt-style interactivity handlers: `block_actions` (buttons, selects), `view_submission` / `view_closed` with typed `response_action` answers, and `block_suggestion` (external select options).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

use super::SlackInbound;
use super::handlers::empty_ok;
use super::payloads::{EnterpriseRef, InteractionUser, TeamRef, View, WorkspaceRef};
use crate::inbound::{InboundResponse, error_response, json_response};
use crate::tenant::{Connection, TenantId};
use crate::{Error, ErrorKind, Result};

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T>> + Send>>;
pub(super) type ActionHandler = Arc<dyn Fn(BlockAction) -> BoxFuture<()> + Send + Sync>;
pub(super) type ViewHandler = Arc<dyn Fn(ViewInteraction) -> BoxFuture<ViewResponse> + Send + Sync>;
pub(super) type OptionsHandler =
    Arc<dyn Fn(OptionsRequest) -> BoxFuture<Vec<SlackOption>> + Send + Sync>;

fn text(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_owned)
}

fn typed<T: serde::de::DeserializeOwned + Default>(v: &Value, k: &str) -> T {
    v.get(k)
        .cloned()
        .and_then(|x| serde_json::from_value(x).ok())
        .unwrap_or_default()
}

fn workspace_of(payload: &Value) -> WorkspaceRef {
    let team: Option<TeamRef> = payload
        .get("team")
        .cloned()
        .and_then(|t| serde_json::from_value(t).ok());
    let user: InteractionUser = typed(payload, "user");
    let enterprise: Option<EnterpriseRef> = payload
        .get("enterprise")
        .cloned()
        .and_then(|e| serde_json::from_value(e).ok());
    let team_id = team
        .as_ref()
        .map(|t| t.id.clone())
        .or(user.team_id)
        .filter(|t| !t.is_empty());
    let enterprise_id = enterprise
        .map(|e| e.id)
        .or_else(|| team.and_then(|t| t.enterprise_id))
        .filter(|e| !e.is_empty());
    WorkspaceRef {
        team_id,
        enterprise_id,
        is_enterprise_install: Some(
            payload
                .get("is_enterprise_install")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        ),
    }
}

/// One action of a `block_actions` payload (a button click, a select
/// choice, …), for the handler registered with
/// [`super::SlackInboundBuilder::action`]. `response_url` is redacted in
/// `Debug` and skipped by `Serialize`.
#[derive(Clone, Default, Serialize)]
pub struct BlockAction {
    /// The element's `action_id`.
    pub action_id: String,
    /// The block's `block_id`.
    pub block_id: String,
    /// The element type (`button`, `static_select`, …).
    pub kind: String,
    /// A button's `value`, or a select's chosen option's `value`.
    pub value: Option<String>,
    /// Who acted.
    pub user: InteractionUser,
    /// The workspace (and organisation) it came from.
    pub team_id: Option<String>,
    /// The Enterprise Grid organisation, if any.
    pub enterprise_id: Option<String>,
    /// The tenant whose Slack connection it came through.
    pub tenant: TenantId,
    /// That connection (`None` for a fixed-token host).
    #[serde(skip)]
    pub connection: Option<Arc<Connection>>,
    /// Opens a modal (about 3 seconds).
    pub trigger_id: Option<String>,
    /// Where replies to the message can be posted (30 minutes). Never
    /// serialized or printed.
    #[serde(skip)]
    pub response_url: Option<String>,
    /// The action object as Slack sent it.
    pub action: Value,
    /// The whole payload (`container`, `message`, `view`, `state`, …).
    #[serde(skip)]
    pub payload: Value,
}

impl std::fmt::Debug for BlockAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockAction")
            .field("action_id", &self.action_id)
            .field("block_id", &self.block_id)
            .field("kind", &self.kind)
            .field("value", &self.value)
            .field("user", &self.user)
            .field("team_id", &self.team_id)
            .field("enterprise_id", &self.enterprise_id)
            .field("tenant", &self.tenant)
            .field("trigger_id", &self.trigger_id)
            .field(
                "response_url",
                &self.response_url.as_ref().map(|_| "[redacted]"),
            )
            .finish_non_exhaustive()
    }
}

impl BlockAction {
    /// The actions of a `block_actions` payload. Never panics; a payload
    /// without an `actions` array has none.
    pub fn parse_all(payload: &Value) -> Vec<BlockAction> {
        let workspace = workspace_of(payload);
        let user: InteractionUser = typed(payload, "user");
        let response_url = text(payload, "response_url").or_else(|| {
            payload
                .get("response_urls")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|u| text(u, "response_url"))
        });
        let actions = payload
            .get("actions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        actions
            .into_iter()
            .filter(|a| a.is_object())
            .map(|a| {
                let value = text(&a, "value")
                    .or_else(|| a.get("selected_option").and_then(|o| text(o, "value")));
                BlockAction {
                    action_id: text(&a, "action_id").unwrap_or_default(),
                    block_id: text(&a, "block_id").unwrap_or_default(),
                    kind: text(&a, "type").unwrap_or_default(),
                    value,
                    user: user.clone(),
                    team_id: workspace.team_id.clone(),
                    enterprise_id: workspace.enterprise_id.clone(),
                    tenant: TenantId::default_tenant(),
                    connection: None,
                    trigger_id: text(payload, "trigger_id"),
                    response_url: response_url.clone(),
                    action: a,
                    payload: payload.clone(),
                }
            })
            .collect()
    }
}

/// Whether a view was submitted or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewEventKind {
    /// `view_submission`: the answer ([`ViewResponse`]) is sent to Slack.
    Submission,
    /// `view_closed` (only with `notify_on_close`): the answer is ignored.
    Closed,
}

/// A `view_submission` or `view_closed` for the handler registered with
/// [`super::SlackInboundBuilder::view`].
#[derive(Debug, Clone)]
pub struct ViewInteraction {
    /// Submitted or closed.
    pub kind: ViewEventKind,
    /// Who.
    pub user: InteractionUser,
    /// The workspace.
    pub team_id: Option<String>,
    /// The Enterprise Grid organisation, if any.
    pub enterprise_id: Option<String>,
    /// The tenant whose Slack connection it came through.
    pub tenant: TenantId,
    /// That connection (`None` for a fixed-token host).
    pub connection: Option<Arc<Connection>>,
    /// The view (callback id, private metadata, input state).
    pub view: View,
    /// For `view_closed`: whether the whole stack was closed.
    pub is_cleared: bool,
    /// The whole payload.
    pub payload: Value,
}

impl ViewInteraction {
    /// Parses a `view_submission` or `view_closed` payload (the JSON in
    /// `payload=`); `None` for any other type. Never panics; missing fields
    /// are empty. The tenant is the default one and there is no connection
    /// until the request is authorized.
    pub fn parse(payload: Value) -> Option<ViewInteraction> {
        let kind = match payload.get("type").and_then(Value::as_str) {
            Some("view_submission") => ViewEventKind::Submission,
            Some("view_closed") => ViewEventKind::Closed,
            _ => return None,
        };
        let workspace = workspace_of(&payload);
        Some(ViewInteraction {
            kind,
            user: typed(&payload, "user"),
            team_id: workspace.team_id,
            enterprise_id: workspace.enterprise_id,
            tenant: TenantId::default_tenant(),
            connection: None,
            view: typed(&payload, "view"),
            is_cleared: payload
                .get("is_cleared")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            payload,
        })
    }
}

/// The answer to a `view_submission` (Slack's `response_action`).
#[derive(Debug, Clone, PartialEq)]
pub enum ViewResponse {
    /// Close this view (an empty 200).
    Close,
    /// Replace the view with this one (`update`).
    Update(Value),
    /// Push this view onto the stack (`push`).
    Push(Value),
    /// Close every view of the stack (`clear`).
    Clear,
    /// Show these messages under the inputs: `block_id` → message (`errors`).
    Errors(BTreeMap<String, String>),
}

impl ViewResponse {
    /// The JSON document Slack expects, or `None` for [`ViewResponse::Close`].
    pub fn to_json(&self) -> Option<Value> {
        Some(match self {
            ViewResponse::Close => return None,
            ViewResponse::Update(view) => json!({ "response_action": "update", "view": view }),
            ViewResponse::Push(view) => json!({ "response_action": "push", "view": view }),
            ViewResponse::Clear => json!({ "response_action": "clear" }),
            ViewResponse::Errors(errors) => {
                json!({ "response_action": "errors", "errors": errors })
            }
        })
    }
}

/// A `block_suggestion` (an external select asking for options) for the
/// handler registered with [`super::SlackInboundBuilder::options`].
#[derive(Debug, Clone)]
pub struct OptionsRequest {
    /// The select's `action_id`.
    pub action_id: String,
    /// Its `block_id`.
    pub block_id: String,
    /// What the person typed so far.
    pub value: String,
    /// Who.
    pub user: InteractionUser,
    /// The workspace.
    pub team_id: Option<String>,
    /// The tenant whose Slack connection it came through.
    pub tenant: TenantId,
    /// That connection (`None` for a fixed-token host).
    pub connection: Option<Arc<Connection>>,
    /// The whole payload.
    pub payload: Value,
}

impl OptionsRequest {
    /// Parses a `block_suggestion` payload; `None` for any other type.
    /// Never panics; missing fields are empty. The tenant is the default
    /// one until the request is authorized.
    pub fn parse(payload: Value) -> Option<OptionsRequest> {
        if payload.get("type").and_then(Value::as_str) != Some("block_suggestion") {
            return None;
        }
        Some(OptionsRequest {
            action_id: text(&payload, "action_id").unwrap_or_default(),
            block_id: text(&payload, "block_id").unwrap_or_default(),
            value: text(&payload, "value").unwrap_or_default(),
            user: typed(&payload, "user"),
            team_id: workspace_of(&payload).team_id,
            tenant: TenantId::default_tenant(),
            connection: None,
            payload,
        })
    }
}

/// One option of an external select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackOption {
    /// The label shown (plain text).
    pub text: String,
    /// The value sent back when chosen.
    pub value: String,
}

impl SlackOption {
    /// An option labelled `text` with `value`.
    pub fn new(text: impl Into<String>, value: impl Into<String>) -> Self {
        SlackOption {
            text: text.into(),
            value: value.into(),
        }
    }
    /// Slack's option object.
    pub fn to_json(&self) -> Value {
        json!({ "text": { "type": "plain_text", "text": self.text }, "value": self.value })
    }
}

/// `{"options": [...]}` for a `block_suggestion`.
pub fn options_json(options: &[SlackOption]) -> Value {
    json!({ "options": options.iter().map(SlackOption::to_json).collect::<Vec<_>>() })
}

impl SlackInbound {
    /// Whether an interaction of `kind` is one of the Bolt-style handlers'.
    pub(super) fn handles_interactivity(kind: &str) -> bool {
        matches!(
            kind,
            "block_actions" | "view_submission" | "view_closed" | "block_suggestion"
        )
    }

    /// Dispatches `block_actions`, `view_submission` (not the capture
    /// modal's), `view_closed` and `block_suggestion` to their handlers.
    pub(super) async fn interactivity(&self, kind: &str, payload: Value) -> InboundResponse {
        let workspace = workspace_of(&payload);
        let who = match self.authorize(&workspace).await {
            Ok(Some(who)) => who,
            Ok(None) => {
                tracing::info!("Slack interaction from a workspace with no connection");
                return empty_ok();
            }
            Err(e) => return error_response(&e),
        };
        let (tenant, connection) = who.parts();
        match kind {
            "block_actions" => {
                for mut action in BlockAction::parse_all(&payload) {
                    let Some(handler) = self.inner.actions.get(&action.action_id) else {
                        continue;
                    };
                    action.tenant = tenant.clone();
                    action.connection = connection.clone();
                    // Acknowledged at once (Slack waits 3 s); the handler
                    // runs in the background.
                    let fut = handler(action);
                    tokio::spawn(async move {
                        if let Err(e) = fut.await {
                            tracing::warn!(error = %e, "Slack action handler failed");
                        }
                    });
                }
                empty_ok()
            }
            "view_submission" | "view_closed" => {
                let Some(mut interaction) = ViewInteraction::parse(payload) else {
                    return empty_ok();
                };
                let Some(handler) = self.inner.views.get(&interaction.view.callback_id) else {
                    return empty_ok();
                };
                let closed = interaction.kind == ViewEventKind::Closed;
                interaction.tenant = tenant;
                interaction.connection = connection;
                let fut = handler(interaction);
                if closed {
                    tokio::spawn(async move {
                        if let Err(e) = fut.await {
                            tracing::warn!(error = %e, "Slack view_closed handler failed");
                        }
                    });
                    return empty_ok();
                }
                match self.within_deadline(fut).await {
                    Ok(answer) => match answer.to_json() {
                        Some(doc) => json_response(http::StatusCode::OK, &doc),
                        None => empty_ok(),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "Slack view handler failed");
                        error_response(&e)
                    }
                }
            }
            "block_suggestion" => {
                let Some(mut request) = OptionsRequest::parse(payload) else {
                    return json_response(http::StatusCode::OK, &options_json(&[]));
                };
                request.tenant = tenant;
                request.connection = connection;
                let Some(handler) = self.inner.options.get(&request.action_id) else {
                    return json_response(http::StatusCode::OK, &options_json(&[]));
                };
                match self.within_deadline(handler(request)).await {
                    Ok(options) => json_response(http::StatusCode::OK, &options_json(&options)),
                    Err(e) => {
                        tracing::warn!(error = %e, "Slack options handler failed");
                        json_response(http::StatusCode::OK, &options_json(&[]))
                    }
                }
            }
            _ => empty_ok(),
        }
    }

    async fn within_deadline<T: Send + 'static>(&self, fut: BoxFuture<T>) -> Result<T> {
        let task = tokio::spawn(fut);
        match tokio::time::timeout(self.inner.deadline, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::new(
                ErrorKind::Platform,
                "the Slack handler panicked",
            )),
            Err(_) => Err(Error::new(
                ErrorKind::Network,
                "the Slack handler took longer than Slack waits",
            )
            .temporary()),
        }
    }
}
