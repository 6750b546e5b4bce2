//! The handlers behind `SlackInbound`: each request authorized to its workspace's connection, then slash commands, shortcuts, the capture modal and Events API (uninstall, revoked tokens) for that tenant only.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde_json::{Value, json};

use super::events::{EventCallback, EventsRequest, SlackEvent};
use super::payloads::{
    ChannelType, CommandReply, Interaction, SlashCommand, ViewSubmission, WorkspaceRef,
};
use super::{AppRateLimit, EVENT_ID_PREFIX, EVENT_KIND_PREFIX, SlackEventContext};
use super::{
    CAPTURE_CALLBACK_ID, CAPTURE_SUBJECT_BLOCK, CAPTURE_TEXT_BLOCK, CaptureContext, CaptureSource,
    EVENT_MEMORY, EVENT_SCOPE, GENERIC_FAILURE, INSIGHT_EVENT_KIND, MAX_INPUT_CHARS,
    NOT_INSTALLED_TEXT, SUBJECT_ACTION, SlackInbound, TEXT_ACTION, command_key,
};
use crate::event::{Event, Person};
use crate::identity::LinkOrigin;
use crate::identity::ResolveContext;
use crate::inbound::{InboundResponse, error_response, json_response, response};
use crate::slack::SlackUser;
use crate::slack::config::PLATFORM;
use crate::slack::connection::{SlackConnectionData, authorize};
use crate::slack::token::stored_token;
use crate::store::ScopeChange;
use crate::template::unescape_mrkdwn;
use crate::tenant::{Connection, ConnectionState, TenantId};
use crate::{Error, ErrorKind, Result};

/// Who a request is from, once authorized: the tenant, and its connection
/// (`None` for the default tenant of a host with a fixed token).
pub(super) struct Authorized {
    tenant: TenantId,
    connection: Option<Arc<Connection>>,
}

impl Authorized {
    pub(super) fn parts(self) -> (TenantId, Option<Arc<Connection>>) {
        (self.tenant, self.connection)
    }
    fn context(&self) -> ResolveContext {
        ResolveContext {
            tenant: self.tenant.clone(),
            connection: self.connection.clone(),
        }
    }
}

pub(super) fn empty_ok() -> InboundResponse {
    response(http::StatusCode::OK, "text/plain; charset=utf-8", "")
}

fn reply(r: &CommandReply) -> InboundResponse {
    json_response(http::StatusCode::OK, &r.to_json())
}

/// `<@U123>` or `<@U123|name>` at the start of a command's text.
pub(super) fn leading_mention(text: &str) -> Option<String> {
    let rest = text.trim_start().strip_prefix("<@")?;
    let end = rest.find('>')?;
    let id = rest[..end].split('|').next()?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| id.to_owned())
}

fn clip(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

pub(super) fn capture_view(
    prefill: &str,
    subject: Option<&str>,
    context: &CaptureContext,
) -> Value {
    let mut text_input = json!({
        "type": "plain_text_input",
        "action_id": TEXT_ACTION,
        "multiline": true,
        "max_length": MAX_INPUT_CHARS,
    });
    let prefill = clip(prefill.trim(), MAX_INPUT_CHARS);
    if !prefill.is_empty() {
        text_input["initial_value"] = json!(prefill);
    }
    let mut user_select = json!({
        "type": "users_select",
        "action_id": SUBJECT_ACTION,
        "placeholder": { "type": "plain_text", "text": "Choose a person" },
    });
    if let Some(u) = subject {
        user_select["initial_user"] = json!(u);
    }
    json!({
        "type": "modal",
        "callback_id": CAPTURE_CALLBACK_ID,
        "title": { "type": "plain_text", "text": "Capture insight" },
        "submit": { "type": "plain_text", "text": "Save" },
        "close": { "type": "plain_text", "text": "Cancel" },
        "private_metadata": serde_json::to_string(context).unwrap_or_default(),
        "blocks": [
            {
                "type": "input",
                "block_id": CAPTURE_TEXT_BLOCK,
                "label": { "type": "plain_text", "text": "Insight" },
                "element": text_input,
            },
            {
                "type": "input",
                "block_id": CAPTURE_SUBJECT_BLOCK,
                "optional": true,
                "label": { "type": "plain_text", "text": "About whom" },
                "element": user_select,
            }
        ]
    })
}

fn not_installed() -> InboundResponse {
    reply(&CommandReply::ephemeral(NOT_INSTALLED_TEXT))
}

impl SlackInbound {
    /// Finds the request's connection (Bolt's `authorize`): by team id, or by
    /// enterprise id for an org-wide install. `None`: not installed there.
    pub(super) async fn authorize(&self, workspace: &WorkspaceRef) -> Result<Option<Authorized>> {
        if let Some(store) = &self.inner.store {
            let org = workspace.is_enterprise_install.filter(|org| *org);
            if let Some(c) = authorize(
                store.as_ref(),
                workspace.team_id.as_deref(),
                workspace.enterprise_id.as_deref(),
                org,
            )
            .await?
            {
                return Ok(Some(Authorized {
                    tenant: c.tenant.clone(),
                    connection: Some(Arc::new(c)),
                }));
            }
        }
        // A single-workspace host: a fixed token, or no store to look
        // connections up in (commands only). Requests are the default tenant's.
        if self.inner.token.is_some() || self.inner.store.is_none() {
            return Ok(Some(Authorized {
                tenant: TenantId::default_tenant(),
                connection: None,
            }));
        }
        Ok(None)
    }

    async fn token(&self, who: &Authorized) -> Result<SecretString> {
        match (&who.connection, &self.inner.rotation, &self.inner.token) {
            (Some(c), Some(r), _) => Ok(r.token(c).await?),
            (Some(c), None, _) => Ok(stored_token(c)?),
            (None, _, Some(t)) => Ok(t.secret().clone()),
            (None, _, None) => Err(Error::new(
                ErrorKind::Unauthorized,
                "this Slack workspace is not connected",
            )),
        }
    }

    pub(super) async fn command(&self, body: &[u8]) -> InboundResponse {
        let mut cmd = match SlashCommand::parse(body) {
            Ok(c) => c,
            Err(e) => return error_response(&e),
        };
        let workspace = WorkspaceRef {
            team_id: Some(cmd.team_id.clone()).filter(|t| !t.is_empty()),
            enterprise_id: cmd.enterprise_id.clone(),
            is_enterprise_install: Some(cmd.is_enterprise_install),
        };
        let who = match self.authorize(&workspace).await {
            Ok(Some(who)) => who,
            Ok(None) => {
                tracing::info!(team = %cmd.team_id, "Slack command from a workspace with no connection");
                return not_installed();
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not look up the Slack connection");
                return reply(&CommandReply::ephemeral(GENERIC_FAILURE));
            }
        };
        cmd.tenant = who.tenant.clone();
        let key = command_key(&cmd.command);
        if self.inner.capture_commands.contains(&key) {
            let context = CaptureContext {
                source: CaptureSource::SlashCommand,
                channel: Some(cmd.channel()),
                message_ts: None,
                team_id: workspace.team_id.clone(),
            };
            let subject = leading_mention(&cmd.text);
            let prefill = unescape_mrkdwn(&cmd.text);
            return match self
                .open_capture(
                    &who,
                    &cmd.trigger_id,
                    &prefill,
                    subject.as_deref(),
                    &context,
                )
                .await
            {
                Ok(()) => empty_ok(),
                Err(e) => {
                    tracing::warn!(error = %e, "could not open the Slack capture modal");
                    reply(&CommandReply::ephemeral(
                        "Sorry, the form could not be opened. Please try again.",
                    ))
                }
            };
        }
        let Some(handler) = self.inner.commands.get(&key) else {
            return reply(&CommandReply::ephemeral(format!(
                "Sorry, `{}` is not a command I know.",
                crate::template::escape_mrkdwn(&cmd.command)
            )));
        };
        let response_url = cmd.response_url.clone();
        let mut task = tokio::spawn(handler(cmd));
        match tokio::time::timeout(self.inner.deadline, &mut task).await {
            Ok(Ok(Ok(r))) => reply(&r),
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "Slack command handler failed");
                reply(&CommandReply::ephemeral(GENERIC_FAILURE))
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "Slack command handler panicked");
                reply(&CommandReply::ephemeral(GENERIC_FAILURE))
            }
            Err(_) => {
                // Slack waits 3 seconds: acknowledge now, answer through response_url.
                let client = self.inner.client.clone();
                tokio::spawn(async move {
                    let answer = match task.await {
                        Ok(Ok(r)) => r,
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "Slack command handler failed");
                            CommandReply::ephemeral(GENERIC_FAILURE)
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "Slack command handler panicked");
                            CommandReply::ephemeral(GENERIC_FAILURE)
                        }
                    };
                    if response_url.is_empty() {
                        tracing::warn!("slow Slack command has no response_url; answer dropped");
                        return;
                    }
                    if let Err(e) = client.respond(&response_url, &answer.to_json()).await {
                        tracing::warn!(error = %e, "could not post to the Slack response_url");
                    }
                });
                empty_ok()
            }
        }
    }

    async fn open_capture(
        &self,
        who: &Authorized,
        trigger_id: &str,
        prefill: &str,
        subject: Option<&str>,
        context: &CaptureContext,
    ) -> Result<()> {
        let view = capture_view(prefill, subject, context);
        // The trigger_id is only good for about 3 seconds, and so is Slack's patience.
        let open = async {
            let token = self.token(who).await?;
            self.inner
                .client
                .views_open(&token, trigger_id, &view)
                .await
                .map_err(Error::from)
        };
        match tokio::time::timeout(self.inner.deadline, open).await {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(Error::new(ErrorKind::Network, "views.open took too long").temporary()),
        }
    }

    pub(super) async fn interaction(&self, body: &[u8]) -> InboundResponse {
        let interaction = match Interaction::parse(body) {
            Ok(i) => i,
            Err(e) => return error_response(&e),
        };
        let interaction = match interaction {
            Interaction::ViewSubmission(v) if v.view.callback_id != CAPTURE_CALLBACK_ID => {
                return match Interaction::parse_value(body) {
                    Some(payload) => self.interactivity("view_submission", payload).await,
                    None => empty_ok(),
                };
            }
            Interaction::Unknown { kind, payload } => {
                if SlackInbound::handles_interactivity(&kind) {
                    return self.interactivity(&kind, payload).await;
                }
                return empty_ok();
            }
            other => other,
        };
        let (workspace, response_url) = match &interaction {
            Interaction::MessageShortcut(s) => (s.workspace(), s.response_url.clone()),
            Interaction::Shortcut(s) => (s.workspace(), None),
            Interaction::ViewSubmission(v) => (v.workspace(), None),
            Interaction::Unknown { .. } => return empty_ok(),
        };
        let who = match self.authorize(&workspace).await {
            Ok(Some(who)) => who,
            Ok(None) => return self.interaction_not_installed(&interaction, response_url),
            Err(e) => {
                tracing::warn!(error = %e, "could not look up the Slack connection");
                return error_response(&e);
            }
        };
        match interaction {
            Interaction::MessageShortcut(s)
                if self.inner.capture_shortcuts.contains(&s.callback_id) =>
            {
                let message = s.message.unwrap_or_default();
                let channel = s.channel.map(|mut c| {
                    c.kind = ChannelType::infer(&c.id, c.name.as_deref());
                    c
                });
                let context = CaptureContext {
                    source: CaptureSource::MessageShortcut,
                    channel,
                    message_ts: Some(message.ts).filter(|t| !t.is_empty()),
                    team_id: workspace.team_id.clone(),
                };
                let prefill = unescape_mrkdwn(&message.text);
                self.capture_ack(&who, &s.trigger_id, &prefill, &context)
                    .await
            }
            Interaction::Shortcut(s) if self.inner.capture_shortcuts.contains(&s.callback_id) => {
                let context = CaptureContext {
                    source: CaptureSource::GlobalShortcut,
                    channel: None,
                    message_ts: None,
                    team_id: workspace.team_id.clone(),
                };
                self.capture_ack(&who, &s.trigger_id, "", &context).await
            }
            Interaction::ViewSubmission(v) if v.view.callback_id == CAPTURE_CALLBACK_ID => {
                self.capture_submitted(&who, v).await
            }
            _ => empty_ok(),
        }
    }

    /// A shortcut or submission from a workspace with no connection: tell the
    /// person (ephemerally, through the `response_url` when there is one).
    fn interaction_not_installed(
        &self,
        interaction: &Interaction,
        response_url: Option<String>,
    ) -> InboundResponse {
        tracing::info!("Slack interaction from a workspace with no connection");
        if let Interaction::ViewSubmission(_) = interaction {
            return json_response(
                http::StatusCode::OK,
                &json!({
                    "response_action": "errors",
                    "errors": { CAPTURE_TEXT_BLOCK: NOT_INSTALLED_TEXT }
                }),
            );
        }
        if let Some(url) = response_url.filter(|u| !u.is_empty()) {
            let client = self.inner.client.clone();
            tokio::spawn(async move {
                let body = CommandReply::ephemeral(NOT_INSTALLED_TEXT).to_json();
                if let Err(e) = client.respond(&url, &body).await {
                    tracing::warn!(error = %e, "could not post to the Slack response_url");
                }
            });
        }
        empty_ok()
    }

    async fn capture_ack(
        &self,
        who: &Authorized,
        trigger_id: &str,
        prefill: &str,
        context: &CaptureContext,
    ) -> InboundResponse {
        match self
            .open_capture(who, trigger_id, prefill, None, context)
            .await
        {
            Ok(()) => empty_ok(),
            Err(e) => {
                tracing::warn!(error = %e, "could not open the Slack capture modal");
                error_response(&e)
            }
        }
    }

    /// The host user of `who`'s tenant linked to `slack_user` in that
    /// workspace; never another tenant's.
    async fn host_user(&self, who: &Authorized, slack_user: &str) -> Option<String> {
        let store = self.inner.store.as_ref()?;
        let platform = who.context().link_platform(&self.inner.destination);
        let links = store.links(&who.tenant, &platform).await.ok()?;
        links
            .into_iter()
            .find(|l| l.platform_id == slack_user)
            .map(|l| l.user_id)
    }

    async fn capture_submitted(
        &self,
        who: &Authorized,
        submission: ViewSubmission,
    ) -> InboundResponse {
        let view = &submission.view;
        let text = view
            .element(CAPTURE_TEXT_BLOCK, TEXT_ACTION)
            .and_then(|e| e.value.as_deref())
            .map(str::trim)
            .unwrap_or("");
        if text.is_empty() {
            return json_response(
                http::StatusCode::OK,
                &json!({
                    "response_action": "errors",
                    "errors": { CAPTURE_TEXT_BLOCK: "Please write something to capture." }
                }),
            );
        }
        let subject = view
            .element(CAPTURE_SUBJECT_BLOCK, SUBJECT_ACTION)
            .and_then(|e| e.selected_user.clone())
            .filter(|u| !u.is_empty());
        let context: CaptureContext =
            serde_json::from_str(&view.private_metadata).unwrap_or_default();
        let author = &submission.user;
        let author_host = self.host_user(who, &author.id).await;
        let subject_host = match &subject {
            Some(s) => self.host_user(who, s).await,
            None => None,
        };
        let now: DateTime<Utc> = Utc::now();
        let event_id = if view.id.is_empty() {
            format!("slack:view:{}:{}", author.id, now.timestamp_millis())
        } else {
            format!("slack:view:{}", view.id)
        };
        let data = json!({
            "text": text,
            "author": {
                "slack_user_id": author.id,
                "name": author.username.clone().or_else(|| author.name.clone()),
                "user_id": author_host,
            },
            "subject": subject.as_ref().map(|s| json!({
                "slack_user_id": s,
                "user_id": subject_host,
            })),
            "channel": context.channel.as_ref().map(|c| json!({
                "id": c.id,
                "name": c.name,
                "type": c.kind,
            })),
            "source": context.source,
            "message_ts": context.message_ts,
            "team_id": submission.team.as_ref().map(|t| t.id.clone()).or(context.team_id.clone()),
            "captured_at": now.to_rfc3339(),
        });
        let mut builder = Event::builder(event_id, INSIGHT_EVENT_KIND)
            .tenant(who.tenant.as_str())
            .source(PLATFORM)
            .occurred_at(now)
            .data(data);
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
            Ok(_) => empty_ok(),
            Err(e) => {
                tracing::error!(error = %e, "could not publish a captured insight");
                error_response(&e)
            }
        }
    }

    /// An Events API body; `retry` is Slack's redelivery count (the
    /// `X-Slack-Retry-Num` header, or a Socket Mode envelope's `retry_attempt`).
    pub(super) async fn events(&self, body: &[u8], retry: Option<&str>) -> InboundResponse {
        let parsed = match EventsRequest::parse(body) {
            Ok(p) => p,
            Err(e) => return error_response(&e),
        };
        let callback = match parsed {
            EventsRequest::UrlVerification { challenge } => {
                return json_response(http::StatusCode::OK, &json!({ "challenge": challenge }));
            }
            EventsRequest::AppRateLimited {
                team_id,
                minute_rate_limited,
                api_app_id,
            } => {
                return self
                    .app_rate_limited(team_id, minute_rate_limited, api_app_id)
                    .await;
            }
            EventsRequest::Unknown { .. } => return empty_ok(),
            EventsRequest::EventCallback(cb) => cb,
        };
        let Some(store) = &self.inner.store else {
            return error_response(&Error::new(
                ErrorKind::Config,
                "the Slack events handler needs a store",
            ));
        };
        let now = Utc::now();
        // Which tenant it belongs to; on a store error Slack retries.
        let who = match self.authorize(&callback.workspace()).await {
            Ok(who) => who,
            Err(e) => {
                tracing::warn!(error = %e, "could not look up the Slack connection");
                return error_response(&e);
            }
        };
        // 1. Durably into the outbox before acknowledging. Publishing is
        //    idempotent by event id, so Slack's retries create nothing new.
        if let (Some(sb), Some(who)) = (&self.inner.switchboard, &who) {
            if let Err(e) = self.publish_event(sb, who, &callback).await {
                tracing::error!(error = %e, event_id = %callback.event_id, "could not publish a Slack event; Slack will retry");
                return error_response(&e);
            }
        }
        // 2. Idempotent side effects.
        let lost = match &callback.event {
            SlackEvent::AppUninstalled => Some(("the Slack app was uninstalled", None)),
            SlackEvent::TokensRevoked { bot, .. } if !bot.is_empty() => {
                Some(("the Slack bot token was revoked", Some(bot.clone())))
            }
            _ => None,
        };
        if let Some((what, revoked)) = lost {
            let reason = format!(
                "{what}: reinstall the Slack app; queued messages are kept and sent after reconnecting"
            );
            match &who {
                Some(who) => self.disconnect(who, revoked.as_deref(), &reason, now).await,
                None => tracing::debug!("Slack uninstall for a workspace with no connection"),
            }
        }
        if let Some(who) = &who {
            self.refresh_links(who, &callback).await;
        }
        // 3. Only now remember the id: a crash before this point makes
        //    Slack's retry run everything again (and publish nothing twice).
        let until = now + chrono::Duration::from_std(EVENT_MEMORY).unwrap_or_default();
        match store
            .remember_once(EVENT_SCOPE, &callback.event_id, until, now)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(
                    event_id = %callback.event_id,
                    retry = retry.unwrap_or("-"),
                    "duplicate Slack event ignored"
                );
                return empty_ok();
            }
            Err(e) => return error_response(&e),
        }
        // 4. Handlers run once per event id, after the ack is certain.
        self.run_event_handlers(who.as_ref(), callback);
        empty_ok()
    }

    async fn publish_event(
        &self,
        sb: &crate::engine::Switchboard,
        who: &Authorized,
        callback: &EventCallback,
    ) -> Result<()> {
        let occurred =
            DateTime::<Utc>::from_timestamp(callback.event_time, 0).unwrap_or_else(Utc::now);
        let event = Event::builder(
            format!("{EVENT_ID_PREFIX}{}", callback.event_id),
            format!("{EVENT_KIND_PREFIX}{}", callback.event.kind()),
        )
        .tenant(who.tenant.as_str())
        .source(PLATFORM)
        .occurred_at(occurred)
        .data(json!({
            "event_id": callback.event_id,
            "team_id": callback.team_id,
            "enterprise_id": callback.enterprise_id,
            "event": callback.event_json,
        }))
        .build()?;
        sb.publish(event).await.map(|_| ())
    }

    async fn app_rate_limited(
        &self,
        team_id: Option<String>,
        minute: i64,
        api_app_id: Option<String>,
    ) -> InboundResponse {
        let team = team_id.clone().unwrap_or_default();
        tracing::warn!(team = %team, minute_rate_limited = minute, "Slack is rate-limiting this app's events for the workspace (more than 30,000 an hour): events are being dropped");
        let since = DateTime::<Utc>::from_timestamp(minute, 0).unwrap_or_else(Utc::now);
        let workspace = WorkspaceRef {
            team_id: team_id.clone(),
            enterprise_id: None,
            is_enterprise_install: None,
        };
        let who = self.authorize(&workspace).await.ok().flatten();
        let notice = AppRateLimit {
            team_id: team.clone(),
            tenant: who.as_ref().map(|w| w.tenant.clone()),
            since,
            api_app_id,
        };
        if let Ok(mut m) = self.inner.rate_limits.lock() {
            m.insert(team.clone(), notice);
        }
        if let (Some(sb), Some(who)) = (&self.inner.switchboard, &who) {
            sb.record_notice(
                &who.tenant,
                &self.inner.destination,
                crate::engine::StatusNotice {
                    kind: format!("{EVENT_KIND_PREFIX}app_rate_limited"),
                    since,
                    detail: format!(
                        "Slack is dropping this app's Events API events for workspace {team} (more than 30,000 an hour, or too few answered in time); they resume within the hour"
                    ),
                },
            );
            let event = Event::builder(
                format!("{EVENT_ID_PREFIX}app_rate_limited:{team}:{minute}"),
                format!("{EVENT_KIND_PREFIX}app_rate_limited"),
            )
            .tenant(who.tenant.as_str())
            .source(PLATFORM)
            .occurred_at(since)
            .data(json!({ "team_id": team_id, "minute_rate_limited": minute }))
            .build();
            let published = match event {
                Ok(e) => sb.publish(e).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = published {
                return error_response(&e);
            }
        }
        empty_ok()
    }

    /// `user_change` for someone deleted, invited again, or turned into a
    /// bot or guest: their email-matched links in that workspace go (manual
    /// links stay).
    async fn refresh_links(&self, who: &Authorized, callback: &EventCallback) {
        if !matches!(callback.event.kind(), "user_change" | "team_join") {
            return;
        }
        let Some(store) = &self.inner.store else {
            return;
        };
        let Some(user) = callback
            .event_json
            .get("user")
            .cloned()
            .and_then(|u| serde_json::from_value::<SlackUser>(u).ok())
        else {
            return;
        };
        if !user.is_skipped() {
            return;
        }
        let platform = who.context().link_platform(&self.inner.destination);
        let Ok(links) = store.links(&who.tenant, &platform).await else {
            return;
        };
        for l in links
            .into_iter()
            .filter(|l| l.platform_id == user.id && l.origin != LinkOrigin::Manual)
        {
            if let Err(e) = store.delete_link(&who.tenant, &platform, &l.user_id).await {
                tracing::warn!(error = %e, "could not remove a stale Slack identity link");
            }
        }
    }

    fn run_event_handlers(&self, who: Option<&Authorized>, callback: EventCallback) {
        let kind = callback.event.kind().to_owned();
        if let (Some(handler), Some(who)) = (self.inner.event_handlers.get(&kind), who) {
            let cx = SlackEventContext {
                tenant: who.tenant.clone(),
                connection: who.connection.clone(),
                event: callback.event_json.clone(),
                callback: callback.clone(),
            };
            let fut = handler(cx);
            tokio::spawn(async move {
                if let Err(e) = fut.await {
                    tracing::warn!(error = %e, "Slack event handler failed");
                }
            });
        }
        if let Some(hook) = &self.inner.on_event {
            let hook = hook.clone();
            tokio::spawn(async move { hook(callback) });
        }
    }

    /// Marks `who`'s connection disconnected (its tenant's Slack deliveries
    /// are parked, no other tenant's). For `tokens_revoked`, only when the
    /// revoked bot is this connection's (or its bot is not known).
    async fn disconnect(
        &self,
        who: &Authorized,
        revoked_bots: Option<&[String]>,
        reason: &str,
        now: DateTime<Utc>,
    ) {
        let Some(connection) = &who.connection else {
            // A fixed-token host: park the default tenant's Slack deliveries.
            if let Some(store) = &self.inner.store {
                let change = ScopeChange::Disconnect {
                    reason: reason.to_owned(),
                    epoch: None,
                };
                if let Err(e) = store.set_scope(&who.tenant, PLATFORM, change, now).await {
                    tracing::warn!(error = %e, "could not mark Slack disconnected");
                }
            }
            return;
        };
        if let Some(bots) = revoked_bots {
            let ours = SlackConnectionData::from_connection(connection).bot_user_id;
            if ours.is_some_and(|b| !bots.contains(&b)) {
                return;
            }
        }
        let result = match &self.inner.switchboard {
            Some(sb) => sb
                .disconnect_connection(&connection.key, reason)
                .await
                .map(|_| ()),
            None => match &self.inner.store {
                Some(store) => {
                    let state = ConnectionState::Disconnected {
                        reason: reason.to_owned(),
                        since: now,
                    };
                    store
                        .set_connection_state(&connection.key, &state, now)
                        .await
                        .map(|_| ())
                }
                None => Ok(()),
            },
        };
        match result {
            Ok(()) => {
                tracing::info!(connection = %connection.key, tenant = %who.tenant, "Slack connection disconnected")
            }
            Err(e) => {
                tracing::warn!(error = %e, connection = %connection.key, "could not mark the Slack connection disconnected")
            }
        }
    }
}
