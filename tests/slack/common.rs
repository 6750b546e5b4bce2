//! Shared helpers for the Slack suites: a wiremock Slack, Slack's documented answers, signed inbound requests, stores with a keyring, and Slack connections.
#![allow(dead_code)]

pub use std::sync::atomic::{AtomicUsize, Ordering};
pub use std::sync::{Arc, Mutex};
pub use std::time::Duration;

pub use async_trait::async_trait;
pub use bytes::Bytes;
pub use chrono::Utc;
pub use secrecy::{ExposeSecret, SecretString};
pub use serde_json::{Value, json};
pub use switchboard::identity::{IdentityLink, LinkOrigin, ResolveContext};
pub use switchboard::inbound::{InboundRequest, hmac_sha256};
pub use switchboard::slack::*;
pub use switchboard::store::LogStatus;
pub use switchboard::{
    Capabilities, Connection, ConnectionKey, Delivery, DeliveryError, Destination, Event,
    IdentityResolver, MemoryStore, Person, RateLimit, Receipt, Resolution, Route, Store,
    Switchboard, Target, TenantId,
};
pub use wiremock::matchers::{
    bearer_token, body_partial_json, header, method, path, query_param, query_param_is_missing,
};
pub use wiremock::{Mock, MockBuilder, MockServer, Request, ResponseTemplate};

pub const TOKEN: &str = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy";
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

pub fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

pub fn config(server: &MockServer) -> SlackConfig {
    SlackConfig::new().base_url(&server.uri()).unwrap()
}

pub fn destination(server: &MockServer) -> SlackDestination {
    SlackDestination::new(config(server), BotToken::new(secret(TOKEN))).unwrap()
}

/// Slack's documented `chat.postMessage` success.
pub fn posted(channel: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "ok": true,
        "channel": channel,
        "ts": "1503435956.000247",
        "message": {
            "text": "Here's a message for you",
            "username": "ecto1",
            "bot_id": "B123ABC456",
            "type": "message",
            "subtype": "bot_message",
            "ts": "1503435956.000247"
        }
    }))
}

pub fn slack_error(code: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({ "ok": false, "error": code }))
}

pub fn post_message() -> MockBuilder {
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .and(bearer_token(TOKEN))
        .and(header("content-type", "application/json; charset=utf-8"))
}

pub fn event(id: &str, kind: &str, subject: Option<&str>, data: Value) -> Event {
    let mut b = Event::builder(id, kind).data(data);
    if let Some(s) = subject {
        b = b.subject(Person::new(s));
    }
    b.build().unwrap()
}

pub async fn bodies(server: &MockServer, p: &str) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path() == p)
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

pub async fn requests(server: &MockServer, p: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path() == p)
        .collect()
}

// ---------------------------------------------------------------- outbound

pub fn now() -> i64 {
    Utc::now().timestamp()
}

pub fn signed_at(body: &str, content_type: &str, ts: i64) -> InboundRequest {
    let ts = ts.to_string();
    let mac = hmac_sha256(
        SIGNING_SECRET.as_bytes(),
        &[b"v0:", ts.as_bytes(), b":", body.as_bytes()],
    );
    http::Request::builder()
        .method("POST")
        .uri("/slack")
        .header("content-type", content_type)
        .header("X-Slack-Request-Timestamp", ts)
        .header("X-Slack-Signature", format!("v0={}", hex::encode(mac)))
        .body(Bytes::from(body.to_owned()))
        .unwrap()
}

pub fn signed_form(pairs: &[(&str, &str)]) -> InboundRequest {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    signed_at(&body, "application/x-www-form-urlencoded", now())
}

pub fn signed_json(v: &Value) -> InboundRequest {
    signed_at(&v.to_string(), "application/json", now())
}

pub fn json_of(resp: &http::Response<Bytes>) -> Value {
    serde_json::from_slice(resp.body()).unwrap()
}

/// A store that can hold secrets (connections need a keyring).
pub fn keyed_store() -> Arc<dyn Store> {
    Arc::new(
        MemoryStore::new().with_keyring(switchboard::secret::Keyring::generate("test").unwrap()),
    )
}

pub fn tenant(id: &str) -> TenantId {
    TenantId::new(id).unwrap()
}

/// A Slack workspace connection of `tenant_id` for team `team` with a bot token.
pub fn slack_connection(tenant_id: &str, team: &str, token: &str) -> Connection {
    Connection::builder(tenant(tenant_id), "slack", team)
        .access_token(secret(token))
        .data(json!({ "team_id": team, "bot_user_id": format!("UB{team}"), "scopes": ["chat:write"] }))
        .build()
        .unwrap()
}

pub fn tenant_event(
    tenant_id: &str,
    id: &str,
    kind: &str,
    subject: Option<&str>,
    data: Value,
) -> Event {
    let mut b = Event::builder(id, kind).tenant(tenant_id).data(data);
    if let Some(s) = subject {
        b = b.subject(Person::new(s));
    }
    b.build().unwrap()
}

/// Requests to `p` made with bearer token `token`.
pub async fn requests_with(server: &MockServer, p: &str, token: &str) -> Vec<Request> {
    let auth = format!("Bearer {token}");
    requests(server, p)
        .await
        .into_iter()
        .filter(|r| {
            r.headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(auth.as_str())
        })
        .collect()
}

/// A fake Slack serving several workspaces on one server: each bot token
/// belongs to a team; `chat.postMessage`, `conversations.open`,
/// `conversations.list` and `views.open` answer per token (`invalid_auth`
/// for an unknown token, `token_revoked` for a revoked one).
#[derive(Clone, Default)]
pub struct Workspaces {
    teams: Arc<Mutex<std::collections::HashMap<String, String>>>,
    revoked: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Workspaces {
    pub fn token(&self, token: &str, team: &str) -> &Self {
        self.teams
            .lock()
            .unwrap()
            .insert(token.to_owned(), team.to_owned());
        self
    }

    pub fn revoke(&self, token: &str) {
        self.revoked.lock().unwrap().insert(token.to_owned());
    }

    #[allow(clippy::result_large_err)]
    fn team_of(&self, r: &Request) -> Result<String, ResponseTemplate> {
        self.team_code(r).map_err(slack_error)
    }

    fn team_code(&self, r: &Request) -> Result<String, &'static str> {
        let token = r
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("")
            .to_owned();
        if self.revoked.lock().unwrap().contains(&token) {
            return Err("token_revoked");
        }
        self.teams
            .lock()
            .unwrap()
            .get(&token)
            .cloned()
            .ok_or("invalid_auth")
    }

    pub async fn mount(&self, server: &MockServer) {
        let me = self.clone();
        Mock::given(method("POST"))
            .and(path("/chat.postMessage"))
            .and(header("content-type", "application/json; charset=utf-8"))
            .respond_with(move |r: &Request| match me.team_of(r) {
                Ok(_) => {
                    let body: Value = serde_json::from_slice(&r.body).unwrap();
                    posted(body["channel"].as_str().unwrap())
                }
                Err(e) => e,
            })
            .mount(server)
            .await;
        let me = self.clone();
        Mock::given(method("POST"))
            .and(path("/conversations.open"))
            .respond_with(move |r: &Request| match me.team_of(r) {
                Ok(team) => {
                    let body: Value = serde_json::from_slice(&r.body).unwrap();
                    let user = body["users"].as_str().unwrap().to_owned();
                    ResponseTemplate::new(200).set_body_json(json!({
                        "ok": true, "channel": { "id": format!("D{team}{user}") }
                    }))
                }
                Err(e) => e,
            })
            .mount(server)
            .await;
        let me = self.clone();
        Mock::given(method("GET"))
            .and(path("/conversations.list"))
            .respond_with(move |r: &Request| match me.team_of(r) {
                Ok(team) => ResponseTemplate::new(200).set_body_json(json!({
                    "ok": true,
                    "channels": [
                        { "id": format!("C{team}GEN"), "name": "general", "is_private": false },
                        { "id": format!("C{team}PRK"), "name": "perks", "is_private": false }
                    ],
                    "response_metadata": { "next_cursor": "" }
                })),
                Err(e) => e,
            })
            .mount(server)
            .await;
        let me = self.clone();
        Mock::given(method("POST"))
            .and(path("/views.open"))
            .respond_with(move |r: &Request| match me.team_of(r) {
                Ok(team) => ResponseTemplate::new(200).set_body_json(json!({
                    "ok": true, "view": { "id": format!("V{team}") }
                })),
                Err(e) => e,
            })
            .mount(server)
            .await;
    }
}

/// `(token, channel, text)` of every `chat.postMessage` the server received.
pub async fn posts(server: &MockServer) -> Vec<(String, String, String)> {
    requests(server, "/chat.postMessage")
        .await
        .into_iter()
        .map(|r| {
            let token = r
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .trim_start_matches("Bearer ")
                .to_owned();
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            (
                token,
                body["channel"].as_str().unwrap_or("").to_owned(),
                body["text"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Links a tenant's host user to a Slack user in the workspace `team`.
pub async fn link(store: &Arc<dyn Store>, tenant_id: &str, team: &str, user: &str, slack: &str) {
    store
        .put_link(&IdentityLink {
            tenant: tenant(tenant_id),
            platform: format!("slack:{team}"),
            user_id: user.to_owned(),
            platform_id: slack.to_owned(),
            origin: LinkOrigin::Manual,
            linked_at: Utc::now(),
        })
        .await
        .unwrap();
}

pub async fn store_with_link(user: &str, slack_id: &str) -> Arc<dyn Store> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    store
        .put_link(&IdentityLink {
            tenant: TenantId::default(),
            platform: "slack".into(),
            user_id: user.into(),
            platform_id: slack_id.into(),
            origin: LinkOrigin::Manual,
            linked_at: Utc::now(),
        })
        .await
        .unwrap();
    store
}

/// `chat.postMessage` with bearer `token`.
pub fn post_message_as(token: &str) -> MockBuilder {
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .and(bearer_token(token))
        .and(header("content-type", "application/json; charset=utf-8"))
}
