//! The Slack connector against a wiremock Slack: exact requests, Slack's documented answers and errors, pacing, parking, identity sync, inbound handlers and OAuth.
#![cfg(feature = "slack")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use switchboard::identity::{IdentityLink, LinkOrigin};
use switchboard::inbound::{InboundRequest, hmac_sha256};
use switchboard::slack::{
    BotToken, CAPTURE_CALLBACK_ID, SlackConfig, SlackDestination, SlackIdentity, SlackInbound,
    SlackOAuth, verify_signature,
};
use switchboard::store::{Installation, LogStatus};
use switchboard::{
    Capabilities, Delivery, DeliveryError, Destination, Event, IdentityResolver, MemoryStore,
    Person, Receipt, Resolution, Route, Store, Switchboard, Target,
};
use wiremock::matchers::{
    bearer_token, body_partial_json, header, method, path, query_param, query_param_is_missing,
};
use wiremock::{Mock, MockBuilder, MockServer, Request, ResponseTemplate};

const TOKEN: &str = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy";
const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

fn config(server: &MockServer) -> SlackConfig {
    SlackConfig::new().base_url(&server.uri()).unwrap()
}

fn destination(server: &MockServer) -> SlackDestination {
    SlackDestination::new(config(server), BotToken::new(secret(TOKEN))).unwrap()
}

/// Slack's documented `chat.postMessage` success.
fn posted(channel: &str) -> ResponseTemplate {
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

fn slack_error(code: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({ "ok": false, "error": code }))
}

fn post_message() -> MockBuilder {
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .and(bearer_token(TOKEN))
        .and(header("content-type", "application/json; charset=utf-8"))
}

fn event(id: &str, kind: &str, subject: Option<&str>, data: Value) -> Event {
    let mut b = Event::builder(id, kind).data(data);
    if let Some(s) = subject {
        b = b.subject(Person::new(s));
    }
    b.build().unwrap()
}

async fn bodies(server: &MockServer, p: &str) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path() == p)
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

async fn requests(server: &MockServer, p: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path() == p)
        .collect()
}

// ---------------------------------------------------------------- outbound

#[tokio::test]
async fn posts_to_a_channel_by_id_with_escaped_text_and_blocks() {
    let server = MockServer::start().await;
    post_message()
        .and(body_partial_json(json!({
            "channel": "C123ABC456",
            "text": "New perk: *&lt;!channel&gt; &amp; yoga*",
        })))
        .respond_with(posted("C123ABC456"))
        .expect(1)
        .mount(&server)
        .await;
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(destination(&server))
        .route(
            Route::on("catalog.perk_added")
                .to(
                    "slack",
                    Target::ChannelId {
                        id: "C123ABC456".into(),
                    },
                )
                .template("New perk: *{{ data.title }}*"),
        )
        .build()
        .unwrap();
    sb.publish(event(
        "e1",
        "catalog.perk_added",
        None,
        json!({"title": "<!channel> & yoga"}),
    ))
    .await
    .unwrap();
    let s = sb.run_until_idle().await.unwrap();
    assert_eq!(s.delivered, 1);

    let body = &bodies(&server, "/chat.postMessage").await[0];
    assert_eq!(
        body["blocks"],
        json!([{ "type": "section", "text": { "type": "mrkdwn", "text": "New perk: *&lt;!channel&gt; &amp; yoga*" } }])
    );
    // Never ask Slack to turn names into mentions or to re-parse the text.
    assert!(body.get("link_names").is_none());
    assert!(body.get("parse").is_none());
}

#[tokio::test]
async fn long_text_is_split_into_sections_and_truncated_not_rejected() {
    let server = MockServer::start().await;
    post_message()
        .respond_with(posted("C1"))
        .expect(1)
        .mount(&server)
        .await;
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(destination(&server))
        .route(
            Route::on("report")
                .to("slack", Target::ChannelId { id: "C1".into() })
                .template("{{ data.body }}"),
        )
        .build()
        .unwrap();
    let line = format!("{}\n", "a".repeat(99));
    sb.publish(event(
        "e1",
        "report",
        None,
        json!({"body": line.repeat(500)}),
    ))
    .await
    .unwrap();
    assert_eq!(sb.run_until_idle().await.unwrap().delivered, 1);
    let body = &bodies(&server, "/chat.postMessage").await[0];
    let text = body["text"].as_str().unwrap();
    assert!(text.chars().count() <= 40_000);
    assert!(text.ends_with('…'));
    let blocks = body["blocks"].as_array().unwrap();
    assert!(blocks.len() > 1 && blocks.len() <= 50);
    for b in blocks {
        let t = b["text"]["text"].as_str().unwrap();
        assert!(t.chars().count() <= 3_000);
        // Split at line breaks: every chunk is made of whole lines.
        assert!(
            t.split('\n')
                .all(|l| l.len() == 99 || l == "…" || l.ends_with('…'))
        );
    }
}

#[tokio::test]
async fn blocks_slack_refuses_fall_back_to_plain_text() {
    let server = MockServer::start().await;
    post_message()
        .and(wiremock::matchers::body_string_contains("\"blocks\""))
        .respond_with(slack_error("invalid_blocks"))
        .expect(1)
        .mount(&server)
        .await;
    post_message()
        .respond_with(posted("C1"))
        .expect(1)
        .mount(&server)
        .await;
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(destination(&server))
        .route(
            Route::on("x")
                .to("slack", Target::ChannelId { id: "C1".into() })
                .template("hi"),
        )
        .build()
        .unwrap();
    sb.publish(event("e1", "x", None, json!({}))).await.unwrap();
    assert_eq!(sb.run_until_idle().await.unwrap().delivered, 1);
    let sent = bodies(&server, "/chat.postMessage").await;
    assert!(sent[1].get("blocks").is_none());
    assert_eq!(sent[1]["text"], "hi");
}

/// `conversations.list` as Slack documents it, with a short first page.
fn channels_page(channels: &[(&str, &str)], next_cursor: &str) -> ResponseTemplate {
    let channels: Vec<Value> = channels
        .iter()
        .map(|(id, name)| {
            json!({
                "id": id, "name": name, "is_channel": true, "is_group": false, "is_im": false,
                "created": 1449252889, "creator": "U012A3CDE", "is_archived": false,
                "is_general": false, "name_normalized": name, "is_shared": false,
                "is_private": false, "is_member": true, "num_members": 4
            })
        })
        .collect();
    ResponseTemplate::new(200).set_body_json(json!({
        "ok": true,
        "channels": channels,
        "response_metadata": { "next_cursor": next_cursor }
    }))
}

#[tokio::test]
async fn channel_names_are_resolved_once_across_short_pages() {
    let server = MockServer::start().await;
    let list = || {
        Mock::given(method("GET"))
            .and(path("/conversations.list"))
            .and(bearer_token(TOKEN))
            .and(query_param("types", "public_channel,private_channel"))
            .and(query_param("exclude_archived", "true"))
            .and(query_param("limit", "200"))
    };
    list()
        .and(query_param_is_missing("cursor"))
        .respond_with(channels_page(
            &[("C0RANDOM1", "random")],
            "dGVhbTpDMDYxRkE1UEI=",
        ))
        .expect(1)
        .mount(&server)
        .await;
    list()
        .and(query_param("cursor", "dGVhbTpDMDYxRkE1UEI="))
        .respond_with(channels_page(&[], "dGVhbTpDMDYxRkE1UEJ="))
        .expect(1)
        .mount(&server)
        .await;
    list()
        .and(query_param("cursor", "dGVhbTpDMDYxRkE1UEJ="))
        .respond_with(channels_page(&[("C0GENERAL", "general")], ""))
        .expect(1)
        .mount(&server)
        .await;
    post_message()
        .and(body_partial_json(json!({"channel": "C0GENERAL"})))
        .respond_with(posted("C0GENERAL"))
        .expect(2)
        .mount(&server)
        .await;
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(destination(&server))
        .route(
            Route::on("catalog.perk_added")
                .to("slack", Target::channel("#general"))
                .template("{{ data.title }}"),
        )
        .build()
        .unwrap();
    for i in 0..2 {
        sb.publish(event(
            &format!("e{i}"),
            "catalog.perk_added",
            None,
            json!({"title": i}),
        ))
        .await
        .unwrap();
    }
    let s = sb.drain(Duration::from_secs(10)).await.unwrap();
    assert_eq!(s.delivered, 2);
}

#[tokio::test]
async fn an_unknown_channel_name_is_a_dead_letter_that_says_what_to_do() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/conversations.list"))
        .respond_with(channels_page(&[("C0RANDOM1", "random")], ""))
        .expect(1)
        .mount(&server)
        .await;
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(destination(&server))
        .route(
            Route::on("x")
                .to("slack", Target::channel("secret-club"))
                .template("hi"),
        )
        .build()
        .unwrap();
    sb.publish(event("e1", "x", None, json!({}))).await.unwrap();
    assert_eq!(sb.run_until_idle().await.unwrap().dead, 1);
    let dead = sb.dead_letters(10).await.unwrap();
    assert!(matches!(dead[0].error, DeliveryError::Permanent { .. }));
    assert!(dead[0].error.reason().contains("invite the bot"));
}

async fn store_with_link(user: &str, slack_id: &str) -> Arc<dyn Store> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    store
        .put_link(&IdentityLink {
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

#[tokio::test]
async fn dms_open_the_conversation_once_and_post_there() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/conversations.open"))
        .and(bearer_token(TOKEN))
        .and(header("content-type", "application/json; charset=utf-8"))
        .and(body_partial_json(json!({"users": "W012A3CDE"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true, "channel": { "id": "D069C7QFK" }
        })))
        .expect(1)
        .mount(&server)
        .await;
    post_message()
        .and(body_partial_json(json!({"channel": "D069C7QFK"})))
        .respond_with(posted("D069C7QFK"))
        .expect(2)
        .mount(&server)
        .await;
    let store = store_with_link("u-egon", "W012A3CDE").await;
    let identity = SlackIdentity::new(
        &config(&server),
        BotToken::new(secret(TOKEN)),
        store.clone(),
    )
    .unwrap();
    let sb = Switchboard::builder()
        .store_arc(store)
        .destination(destination(&server))
        .resolver("slack", identity)
        .route(
            Route::on("wallet.funded")
                .to("slack", Target::SubjectDm)
                .template("Your wallet was funded with *{{ data.amount }}*"),
        )
        .build()
        .unwrap();
    for i in 0..2 {
        sb.publish(event(
            &format!("e{i}"),
            "wallet.funded",
            Some("u-egon"),
            json!({"amount": 25}),
        ))
        .await
        .unwrap();
    }
    let s = sb.drain(Duration::from_secs(10)).await.unwrap();
    assert_eq!(s.delivered, 2);
    let body = &bodies(&server, "/chat.postMessage").await[0];
    assert_eq!(body["text"], "Your wallet was funded with *25*");
}

#[tokio::test]
async fn a_user_slack_does_not_know_is_a_recipient_problem() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/conversations.open"))
        .respond_with(slack_error("user_not_found"))
        .expect(1)
        .mount(&server)
        .await;
    let store = store_with_link("u-gone", "U0GONE").await;
    let identity = SlackIdentity::new(
        &config(&server),
        BotToken::new(secret(TOKEN)),
        store.clone(),
    )
    .unwrap();
    let sb = Switchboard::builder()
        .store_arc(store)
        .destination(destination(&server))
        .resolver("slack", identity)
        .route(Route::on("x").to("slack", Target::SubjectDm).template("hi"))
        .build()
        .unwrap();
    sb.publish(event("e1", "x", Some("u-gone"), json!({})))
        .await
        .unwrap();
    assert_eq!(sb.run_until_idle().await.unwrap().dead, 1);
    let dead = sb.dead_letters(10).await.unwrap();
    assert!(matches!(
        dead[0].error,
        DeliveryError::RecipientUnknown { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn rate_limited_posts_wait_for_retry_after() {
    let wall = std::time::Instant::now();
    let server = MockServer::start().await;
    post_message()
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "30")
                .set_body_json(json!({"ok": false, "error": "ratelimited"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    post_message()
        .respond_with(posted("C1"))
        .expect(1)
        .mount(&server)
        .await;
    // No client timeout: under a paused clock a pending timer fires while a
    // request waits for the network.
    let dest =
        SlackDestination::new(config(&server).timeout(None), BotToken::new(secret(TOKEN))).unwrap();
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(dest)
        .route(
            Route::on("x")
                .to("slack", Target::ChannelId { id: "C1".into() })
                .template("hi"),
        )
        .build()
        .unwrap();
    sb.publish(event("e1", "x", None, json!({}))).await.unwrap();
    let s = sb.drain(Duration::from_secs(600)).await.unwrap();
    assert_eq!((s.delivered, s.retried), (1, 1));
    let log = sb.store().delivery_log(1).await.unwrap();
    let failed = log.iter().find(|e| e.status == LogStatus::Failed).unwrap();
    let sent = log.iter().find(|e| e.status == LogStatus::Sent).unwrap();
    assert!(
        failed
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("ratelimited")
    );
    assert!(sent.at - failed.at >= chrono::Duration::seconds(30));
    assert!(
        wall.elapsed() < Duration::from_secs(20),
        "the clock was paused"
    );
}

#[tokio::test]
async fn not_in_channel_is_a_dead_letter_with_an_actionable_reason() {
    let server = MockServer::start().await;
    post_message()
        .respond_with(slack_error("not_in_channel"))
        .expect(1)
        .mount(&server)
        .await;
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(destination(&server))
        .route(
            Route::on("x")
                .to(
                    "slack",
                    Target::ChannelId {
                        id: "G0PRIVATE".into(),
                    },
                )
                .template("hi"),
        )
        .build()
        .unwrap();
    sb.publish(event("e1", "x", None, json!({}))).await.unwrap();
    let s = sb.run_until_idle().await.unwrap();
    assert_eq!((s.dead, s.retried), (1, 0));
    let dead = sb.dead_letters(10).await.unwrap();
    let DeliveryError::Permanent { reason } = &dead[0].error else {
        panic!("{:?}", dead[0].error)
    };
    assert!(reason.contains("not_in_channel"), "{reason}");
    assert!(reason.contains("invite the bot"), "{reason}");
}

fn installation(team: &str, token: &str) -> Installation {
    Installation {
        platform: "slack".into(),
        key: team.into(),
        token: secret(token),
        refresh_token: None,
        expires_at: None,
        data: json!({}),
        updated_at: Utc::now(),
    }
}

#[tokio::test]
async fn token_revoked_parks_everything_until_a_reinstall_reconnects() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .and(bearer_token("xoxb-old"))
        .respond_with(slack_error("token_revoked"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .and(bearer_token("xoxb-new"))
        .respond_with(posted("C1"))
        .expect(2)
        .mount(&server)
        .await;
    // Slack's documented oauth.v2.access answer.
    Mock::given(method("POST"))
        .and(path("/oauth.v2.access"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true,
            "access_token": "xoxb-new",
            "token_type": "bot",
            "scope": "commands,incoming-webhook",
            "bot_user_id": "U0KRQLJ9H",
            "app_id": "A0KRD7HC3",
            "team": { "name": "Slack Softball Team", "id": "T9TK3CUKW" },
            "enterprise": null,
            "authed_user": { "id": "U1234", "scope": "chat:write", "access_token": "xoxp-1234", "token_type": "user" }
        })))
        .expect(1)
        .mount(&server)
        .await;

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    store
        .put_installation(&installation("T9TK3CUKW", "xoxb-old"))
        .await
        .unwrap();
    let dest = SlackDestination::new(
        config(&server),
        BotToken::installed(store.clone(), "T9TK3CUKW"),
    )
    .unwrap();
    let sb = Switchboard::builder()
        .store_arc(store.clone())
        .destination(dest)
        .route(
            Route::on("x")
                .to("slack", Target::ChannelId { id: "C1".into() })
                .template("hi {{ id }}"),
        )
        .build()
        .unwrap();
    sb.publish(event("e1", "x", None, json!({}))).await.unwrap();
    sb.publish(event("e2", "x", None, json!({}))).await.unwrap();
    let s = sb.run_until_idle().await.unwrap();
    assert_eq!((s.delivered, s.parked, s.dead), (0, 2, 0));
    let status = sb.status().await.unwrap();
    assert!(!status[0].connected);
    assert_eq!(status[0].parked, 2);
    assert!(
        status[0]
            .disconnected_reason
            .as_deref()
            .unwrap()
            .contains("reinstall")
    );

    // Parked stays parked.
    assert_eq!(sb.run_until_idle().await.unwrap().delivered, 0);

    // Reinstall through the OAuth callback.
    let oauth = SlackOAuth::builder(
        "2141029472.691202649728",
        secret("e1b9e11dfcd19c1982d5de12921e17e8c"),
    )
    .config(config(&server))
    .redirect_uri("https://perks.example.com/slack/oauth/callback")
    .switchboard(sb.clone())
    .build()
    .unwrap();
    let install = url::Url::parse(&oauth.install_url().unwrap()).unwrap();
    let state = install
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let callback = |state: &str| {
        let uri = format!(
            "/slack/oauth/callback?code=4724469134.4644010092847.232b4e6d82c3&state={}",
            url::form_urlencoded::byte_serialize(state.as_bytes()).collect::<String>()
        );
        http::Request::builder()
            .uri(uri)
            .body(Bytes::new())
            .unwrap()
    };
    let resp = oauth.handle_callback(&callback(&state)).await;
    assert_eq!(resp.status(), 200);

    let form: Vec<(String, String)> =
        url::form_urlencoded::parse(&requests(&server, "/oauth.v2.access").await[0].body)
            .into_owned()
            .collect();
    for (k, v) in [
        ("client_id", "2141029472.691202649728"),
        ("client_secret", "e1b9e11dfcd19c1982d5de12921e17e8c"),
        ("code", "4724469134.4644010092847.232b4e6d82c3"),
        (
            "redirect_uri",
            "https://perks.example.com/slack/oauth/callback",
        ),
    ] {
        assert!(
            form.contains(&(k.to_owned(), v.to_owned())),
            "{k} in {form:?}"
        );
    }
    let stored = store
        .installation("slack", "T9TK3CUKW")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.token.expose_secret(), "xoxb-new");
    assert_eq!(stored.data["bot_user_id"], "U0KRQLJ9H");
    assert_eq!(
        stored.data["scopes"],
        json!(["commands", "incoming-webhook"])
    );
    assert!(!format!("{stored:?}").contains("xoxb-new"));

    // The state is single use.
    assert_eq!(oauth.handle_callback(&callback(&state)).await.status(), 401);

    // Reconnected: the parked deliveries flow with the new token, in order.
    assert!(sb.status().await.unwrap()[0].connected);
    let s = sb.drain(Duration::from_secs(10)).await.unwrap();
    assert_eq!(s.delivered, 2);
    let texts: Vec<Value> = bodies(&server, "/chat.postMessage")
        .await
        .into_iter()
        .skip(1)
        .map(|b| b["text"].clone())
        .collect();
    assert_eq!(texts, vec![json!("hi e1"), json!("hi e2")]);
}

#[tokio::test]
async fn rotating_tokens_are_refreshed_before_they_expire() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth.v2.access"))
        .and(wiremock::matchers::body_string_contains(
            "grant_type=refresh_token",
        ))
        .and(wiremock::matchers::body_string_contains(
            "refresh_token=xoxe-1-old",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true,
            "app_id": "A0KRD7HC3",
            "scope": "chat:write",
            "token_type": "bot",
            "access_token": "xoxe.xoxb-new",
            "bot_user_id": "U0KRQLJ9H",
            "refresh_token": "xoxe-1-new",
            "expires_in": 43200,
            "team": { "id": "T1", "name": "T" },
            "enterprise": null
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .and(bearer_token("xoxe.xoxb-new"))
        .respond_with(posted("C1"))
        .expect(2)
        .mount(&server)
        .await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut inst = installation("T1", "xoxe.xoxb-old");
    inst.refresh_token = Some(secret("xoxe-1-old"));
    inst.expires_at = Some(Utc::now() + chrono::Duration::seconds(60));
    store.put_installation(&inst).await.unwrap();
    let token = BotToken::installed(store.clone(), "T1").with_refresh("123.456", secret("shh"));
    let sb = Switchboard::builder()
        .store_arc(store.clone())
        .destination(SlackDestination::new(config(&server), token).unwrap())
        .route(
            Route::on("x")
                .to("slack", Target::ChannelId { id: "C1".into() })
                .template("hi"),
        )
        .build()
        .unwrap();
    sb.publish(event("e1", "x", None, json!({}))).await.unwrap();
    sb.publish(event("e2", "x", None, json!({}))).await.unwrap();
    assert_eq!(
        sb.drain(Duration::from_secs(10)).await.unwrap().delivered,
        2
    );
    let stored = store.installation("slack", "T1").await.unwrap().unwrap();
    assert_eq!(stored.refresh_token.unwrap().expose_secret(), "xoxe-1-new");
    let left = stored.expires_at.unwrap() - Utc::now();
    assert!(left > chrono::Duration::hours(11));
}

// ---------------------------------------------------------------- identity

fn member(id: &str, email: Option<&str>) -> Value {
    json!({
        "id": id,
        "team_id": "T012AB3C4",
        "name": id.to_lowercase(),
        "deleted": false,
        "color": "9f69e7",
        "real_name": "spengler",
        "tz": "America/Los_Angeles",
        "profile": {
            "avatar_hash": "ge3b51ca72de",
            "real_name": "Egon Spengler",
            "display_name": "spengler",
            "email": email,
            "image_24": "https://.../avatar/e3b51ca72dee4ef87916ae2b9240df50.jpg",
            "team": "T012AB3C4"
        },
        "is_admin": false,
        "is_owner": false,
        "is_primary_owner": false,
        "is_restricted": false,
        "is_ultra_restricted": false,
        "is_bot": false,
        "updated": 1502138686,
        "is_app_user": false,
        "has_2fa": false
    })
}

fn with(mut m: Value, flag: &str) -> Value {
    m[flag] = json!(true);
    m
}

fn users_page(members: Vec<Value>, next_cursor: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "ok": true,
        "members": members,
        "cache_ts": 1498777272,
        "response_metadata": { "next_cursor": next_cursor }
    }))
}

fn users_list() -> MockBuilder {
    Mock::given(method("GET"))
        .and(path("/users.list"))
        .and(bearer_token(TOKEN))
        .and(query_param("limit", "200"))
}

#[tokio::test]
async fn sync_sweeps_short_pages_matches_by_email_and_skips_what_it_must() {
    let server = MockServer::start().await;
    let pages: Vec<(Vec<Value>, &str)> = vec![
        (
            vec![
                member("W0ADA", Some("Ada@Example.com ")),
                with(member("W0OLD", Some("old@example.com")), "deleted"),
                with(member("B0BOT", Some("bot@example.com")), "is_bot"),
            ],
            "c1",
        ),
        (vec![], "c2"),
        (
            vec![
                member("USLACKBOT", Some("slackbot@example.com")),
                with(
                    member("W0GUEST", Some("guest@example.com")),
                    "is_restricted",
                ),
            ],
            "c3",
        ),
        (
            vec![with(
                member("W0SINGLE", Some("single@example.com")),
                "is_ultra_restricted",
            )],
            "c4",
        ),
        (
            vec![
                member("W0TWIN1", Some("twin@example.com")),
                member("W0TWIN2", Some("TWIN@example.com")),
            ],
            "",
        ),
    ];
    let mut cursor: Option<&str> = None;
    for (members, next) in pages {
        let m = users_list();
        let m = match cursor {
            None => m.and(query_param_is_missing("cursor")),
            Some(c) => m.and(query_param("cursor", c)),
        };
        m.respond_with(users_page(members, next))
            .expect(1)
            .mount(&server)
            .await;
        cursor = Some(next);
    }
    Mock::given(path("/users.lookupByEmail"))
        .respond_with(slack_error("users_not_found"))
        .expect(0)
        .named("no lookups during a sync")
        .mount(&server)
        .await;

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let identity = SlackIdentity::new(
        &config(&server),
        BotToken::new(secret(TOKEN)),
        store.clone(),
    )
    .unwrap();
    let people = vec![
        Person::new("u-ada").email("ada@example.com"),
        Person::new("u-old").email("old@example.com"),
        Person::new("u-guest").email("guest@example.com"),
        Person::new("u-twin").email("twin@example.com"),
        Person::new("u-new").email("new@example.com"),
    ];
    let report = identity.sync(&people).await.unwrap();
    assert_eq!(
        report.matched,
        vec![("u-ada".to_owned(), "W0ADA".to_owned())]
    );
    let unmatched: Vec<_> = report
        .unmatched
        .iter()
        .map(|u| u.user_id.as_str())
        .collect();
    assert_eq!(unmatched, vec!["u-old", "u-guest", "u-new"]);
    assert_eq!(report.ambiguous.len(), 1);
    assert_eq!(report.ambiguous[0].user_id, "u-twin");
    assert_eq!(report.ambiguous[0].candidates, vec!["W0TWIN1", "W0TWIN2"]);
    assert_eq!(
        (
            report.skipped.deleted,
            report.skipped.bots,
            report.skipped.guests
        ),
        (1, 2, 2)
    );
    assert_eq!(report.directory_size, 8);
    assert_eq!(report.api_calls, 5);
    assert_eq!(
        store
            .link("slack", "u-ada")
            .await
            .unwrap()
            .unwrap()
            .platform_id,
        "W0ADA"
    );
    server.verify().await;

    // Resolution: the link answers; ambiguity is never guessed; no lookups.
    assert_eq!(
        identity.resolve(&people[0]).await.unwrap(),
        Resolution::Matched("W0ADA".into())
    );
    assert!(matches!(
        identity.resolve(&people[3]).await.unwrap(),
        Resolution::Ambiguous(_)
    ));
    assert!(requests(&server, "/users.lookupByEmail").await.is_empty());
}

#[tokio::test]
async fn lookup_by_email_only_for_someone_the_sync_did_not_find_and_cached() {
    let server = MockServer::start().await;
    users_list()
        .respond_with(users_page(
            vec![member("W0ADA", Some("ada@example.com"))],
            "",
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/users.lookupByEmail"))
        .and(bearer_token(TOKEN))
        .and(query_param("email", "new@example.com"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true,
            "user": member("W0NEW", Some("new@example.com"))
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/users.lookupByEmail"))
        .and(query_param("email", "nobody@example.com"))
        .respond_with(slack_error("users_not_found"))
        .expect(1)
        .mount(&server)
        .await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let identity = SlackIdentity::new(
        &config(&server),
        BotToken::new(secret(TOKEN)),
        store.clone(),
    )
    .unwrap();
    let ada = Person::new("u-ada").email("ada@example.com");
    let newbie = Person::new("u-new").email("New@Example.com");
    let nobody = Person::new("u-nobody").email("nobody@example.com");
    identity
        .sync(&[ada.clone(), newbie.clone(), nobody.clone()])
        .await
        .unwrap();

    for _ in 0..2 {
        assert_eq!(
            identity.resolve(&ada).await.unwrap(),
            Resolution::Matched("W0ADA".into())
        );
        assert_eq!(
            identity.resolve(&newbie).await.unwrap(),
            Resolution::Matched("W0NEW".into())
        );
        assert_eq!(
            identity.resolve(&nobody).await.unwrap(),
            Resolution::NotFound
        );
    }
    // The single lookup's match became a link.
    assert_eq!(
        store
            .link("slack", "u-new")
            .await
            .unwrap()
            .unwrap()
            .platform_id,
        "W0NEW"
    );
}

#[tokio::test]
async fn ten_thousand_users_take_at_most_51_calls_and_no_lookups() {
    let server = MockServer::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    for page in 0..50 {
        let members: Vec<Value> = (0..200)
            .map(|i| {
                let n = page * 200 + i;
                member(&format!("W{n:07}"), Some(&format!("person{n}@example.com")))
            })
            .collect();
        let next = if page == 49 {
            String::new()
        } else {
            format!("cursor-{}", page + 1)
        };
        let m = users_list();
        let m = if page == 0 {
            m.and(query_param_is_missing("cursor"))
        } else {
            m.and(query_param("cursor", format!("cursor-{page}")))
        };
        let calls = calls.clone();
        let body =
            json!({"ok": true, "members": members, "response_metadata": {"next_cursor": next}});
        m.respond_with(move |_: &Request| {
            calls.fetch_add(1, Ordering::SeqCst);
            ResponseTemplate::new(200).set_body_json(body.clone())
        })
        .mount(&server)
        .await;
    }
    Mock::given(path("/users.lookupByEmail"))
        .respond_with(slack_error("users_not_found"))
        .expect(0)
        .mount(&server)
        .await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let identity = SlackIdentity::new(
        &config(&server),
        BotToken::new(secret(TOKEN)),
        store.clone(),
    )
    .unwrap();
    let people: Vec<Person> = (0..10_000)
        .map(|n| Person::new(format!("u{n}")).email(&format!("Person{n}@Example.com")))
        .collect();
    let report = identity.sync(&people).await.unwrap();
    assert_eq!(report.matched.len(), 10_000);
    assert!(report.unmatched.is_empty());
    let n = calls.load(Ordering::SeqCst);
    assert!(n <= 51, "{n} calls");
    assert_eq!(n, 50);
    assert_eq!(report.api_calls, 50);
    assert_eq!(
        identity.resolve(&people[9_999]).await.unwrap(),
        Resolution::Matched("W0009999".into())
    );
}

// ---------------------------------------------------------------- inbound

fn now() -> i64 {
    Utc::now().timestamp()
}

fn signed_at(body: &str, content_type: &str, ts: i64) -> InboundRequest {
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

fn signed_form(pairs: &[(&str, &str)]) -> InboundRequest {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    signed_at(&body, "application/x-www-form-urlencoded", now())
}

fn signed_json(v: &Value) -> InboundRequest {
    signed_at(&v.to_string(), "application/json", now())
}

fn json_of(resp: &http::Response<Bytes>) -> Value {
    serde_json::from_slice(resp.body()).unwrap()
}

const DOC_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const DOC_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
const DOC_TS: i64 = 1_531_420_618;

#[test]
fn slacks_documented_signature_example_verifies() {
    verify_signature(
        SIGNING_SECRET,
        "1531420618",
        DOC_BODY.as_bytes(),
        DOC_SIG,
        DOC_TS,
    )
    .unwrap();
}

#[test]
fn the_signature_window_is_five_minutes_both_ways() {
    let v = |now: i64| {
        verify_signature(
            SIGNING_SECRET,
            "1531420618",
            DOC_BODY.as_bytes(),
            DOC_SIG,
            now,
        )
    };
    assert!(v(DOC_TS + 300).is_ok());
    assert!(v(DOC_TS - 300).is_ok());
    assert!(v(DOC_TS + 301).is_err());
    assert!(v(DOC_TS - 301).is_err());
}

#[test]
fn tampering_is_rejected() {
    let ok = |secret: &str, ts: &str, body: &str, sig: &str| {
        verify_signature(secret, ts, body.as_bytes(), sig, DOC_TS).is_ok()
    };
    let tampered = DOC_BODY.replace("roadrunner", "coyote");
    assert!(!ok(SIGNING_SECRET, "1531420618", &tampered, DOC_SIG));
    assert!(!ok("another-secret", "1531420618", DOC_BODY, DOC_SIG));
    assert!(!ok(SIGNING_SECRET, "1531420619", DOC_BODY, DOC_SIG));
    assert!(!ok(
        SIGNING_SECRET,
        "1531420618",
        DOC_BODY,
        &DOC_SIG.replace("v0=", "v1=")
    ));
    assert!(!ok(SIGNING_SECRET, "1531420618", DOC_BODY, "v0=zz"));
    assert!(!ok(
        SIGNING_SECRET,
        "1531420618",
        DOC_BODY,
        &DOC_SIG[..DOC_SIG.len() - 2]
    ));
    assert!(!ok(SIGNING_SECRET, "soon", DOC_BODY, DOC_SIG));
    assert!(!ok(SIGNING_SECRET, "", DOC_BODY, ""));
    let e = verify_signature(
        SIGNING_SECRET,
        "1531420618",
        tampered.as_bytes(),
        DOC_SIG,
        DOC_TS,
    )
    .unwrap_err();
    assert_eq!(e.kind(), switchboard::ErrorKind::Unauthorized);
}

fn inbound() -> switchboard::slack::SlackInboundBuilder {
    SlackInbound::builder(secret(SIGNING_SECRET))
}

#[tokio::test]
async fn slash_commands_are_verified_then_answered_ephemerally() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let handlers = inbound()
        .command("/perks", move |cmd| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                let reply = match cmd.args().first().copied() {
                    Some("balance") => format!("<@{}>, your balance is *42 EUR*", cmd.user_id),
                    _ => "Try `/perks balance`".to_owned(),
                };
                Ok::<_, switchboard::Error>(reply)
            }
        })
        .build()
        .unwrap();
    let pairs = [
        ("command", "/perks"),
        ("text", "balance"),
        ("user_id", "U2CERLKJA"),
        ("user_name", "roadrunner"),
        ("channel_id", "C1"),
        ("team_id", "T1DC2JH3J"),
        ("response_url", "https://hooks.slack.com/commands/1/2/3"),
        (
            "trigger_id",
            "398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c",
        ),
    ];
    let resp = handlers.handle_command(&signed_form(&pairs)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        json_of(&resp),
        json!({"response_type": "ephemeral", "text": "<@U2CERLKJA>, your balance is *42 EUR*"})
    );

    // Forged, stale and unsigned requests: 401 without detail, handler untouched.
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&pairs)
        .finish();
    let mut forged = signed_at(&body, "application/x-www-form-urlencoded", now());
    *forged.body_mut() = Bytes::from(body.replace("balance", "transfer"));
    let stale = signed_at(&body, "application/x-www-form-urlencoded", now() - 301);
    let mut unsigned = signed_at(&body, "application/x-www-form-urlencoded", now());
    unsigned.headers_mut().remove("x-slack-signature");
    for req in [forged, stale, unsigned] {
        let resp = handlers.handle(&req).await;
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.body().as_ref(), b"Unauthorized");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn slow_commands_are_acknowledged_then_answered_via_response_url() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/commands/T1/1/abc"))
        .and(header("content-type", "application/json; charset=utf-8"))
        .and(body_partial_json(
            json!({"response_type": "ephemeral", "text": "Your report is ready"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(1)
        .mount(&server)
        .await;
    let handlers = inbound()
        .command_deadline(Duration::from_millis(100))
        .command("/perks", |_cmd| async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            Ok::<_, switchboard::Error>("Your report is ready")
        })
        .build()
        .unwrap();
    let response_url = format!("{}/commands/T1/1/abc", server.uri());
    let started = std::time::Instant::now();
    let resp = handlers
        .handle(&signed_form(&[
            ("command", "/perks"),
            ("text", "report"),
            ("response_url", &response_url),
        ]))
        .await;
    assert!(started.elapsed() < Duration::from_millis(350));
    assert_eq!(resp.status(), 200);
    assert!(resp.body().is_empty());
    for _ in 0..50 {
        if !requests(&server, "/commands/T1/1/abc").await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.verify().await;
}

/// Records every delivered event.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Event>>>);

#[async_trait]
impl Destination for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    async fn deliver(&self, d: &Delivery) -> Result<Receipt, DeliveryError> {
        self.0.lock().unwrap().push((*d.event).clone());
        Ok(Receipt::default())
    }
}

fn views_open_ok() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "ok": true,
        "view": {
            "id": "VMHU10V25", "team_id": "T8N4K1JN", "type": "modal",
            "private_metadata": "", "callback_id": CAPTURE_CALLBACK_ID,
            "state": { "values": {} }, "hash": "156772938.1827394",
            "root_view_id": "VMHU10V25", "app_id": "AA4928AQ", "bot_id": "BA13894H"
        }
    }))
}

async fn capture_setup(server: &MockServer) -> (SlackInbound, Switchboard, Recorder) {
    let store = store_with_link("u-ann", "U0ANN").await;
    store
        .put_link(&IdentityLink {
            platform: "slack".into(),
            user_id: "u-bob".into(),
            platform_id: "U0BOB".into(),
            origin: LinkOrigin::EmailMatch,
            linked_at: Utc::now(),
        })
        .await
        .unwrap();
    let recorder = Recorder::default();
    let sb = Switchboard::builder()
        .store_arc(store)
        .destination(recorder.clone())
        .route(Route::on("insight.captured").to("recorder", Target::ChannelId { id: "x".into() }))
        .build()
        .unwrap();
    let handlers = inbound()
        .config(config(server))
        .token(BotToken::new(secret(TOKEN)))
        .switchboard(sb.clone())
        .capture_command("/insight")
        .capture_shortcut("capture_message")
        .build()
        .unwrap();
    (handlers, sb, recorder)
}

fn submission(view_id: &str, metadata: &str, text: &str, subject: Option<&str>) -> InboundRequest {
    let payload = json!({
        "type": "view_submission",
        "team": { "id": "T1DC2JH3J", "domain": "testteamnow" },
        "user": { "id": "U0ANN", "username": "ann", "name": "ann", "team_id": "T1DC2JH3J" },
        "api_app_id": "A0F7XDUAZ",
        "token": "Shh_its_a_seekrit",
        "trigger_id": "12466734323.1395872398",
        "view": {
            "id": view_id,
            "type": "modal",
            "callback_id": CAPTURE_CALLBACK_ID,
            "private_metadata": metadata,
            "hash": "156663117.cd33ad1f",
            "state": { "values": {
                "capture_text": { "text": { "type": "plain_text_input", "value": text } },
                "capture_subject": { "subject": { "type": "users_select", "selected_user": subject } }
            } }
        },
        "response_urls": [],
        "is_enterprise_install": false
    });
    signed_form(&[("payload", &payload.to_string())])
}

#[tokio::test]
async fn a_capture_command_opens_a_prefilled_modal_and_the_submission_becomes_an_event() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/views.open"))
        .and(bearer_token(TOKEN))
        .and(header("content-type", "application/json; charset=utf-8"))
        .and(body_partial_json(json!({
            "trigger_id": "13345224609.738474920.8088930838d88f008e0",
            "view": { "type": "modal", "callback_id": CAPTURE_CALLBACK_ID }
        })))
        .respond_with(views_open_ok())
        .expect(1)
        .mount(&server)
        .await;
    let (handlers, sb, recorder) = capture_setup(&server).await;

    let resp = handlers
        .handle(&signed_form(&[
            ("command", "/insight"),
            ("text", "<@U0BOB|bob> customers want &lt;dark mode&gt;"),
            ("user_id", "U0ANN"),
            ("channel_id", "C0FEEDBACK"),
            ("channel_name", "feedback"),
            ("team_id", "T1DC2JH3J"),
            ("trigger_id", "13345224609.738474920.8088930838d88f008e0"),
        ]))
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.body().is_empty());

    let opened = &bodies(&server, "/views.open").await[0];
    let view = &opened["view"];
    let text_input = &view["blocks"][0]["element"];
    assert_eq!(text_input["type"], "plain_text_input");
    assert_eq!(
        text_input["initial_value"],
        "<@U0BOB|bob> customers want <dark mode>"
    );
    assert_eq!(view["blocks"][1]["element"]["type"], "users_select");
    assert_eq!(view["blocks"][1]["element"]["initial_user"], "U0BOB");
    assert_eq!(view["blocks"][1]["optional"], true);
    let metadata = view["private_metadata"].as_str().unwrap().to_owned();

    // An empty submission is refused inline; nothing is published.
    let resp = handlers
        .handle(&submission("VMHU10V25", &metadata, "  ", None))
        .await;
    assert_eq!(json_of(&resp)["response_action"], "errors");

    let resp = handlers
        .handle(&submission(
            "VMHU10V25",
            &metadata,
            "Customers want dark mode",
            Some("U0BOB"),
        ))
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.body().is_empty(), "an empty 200 closes the modal");
    // A double submit of the same view is the same event.
    handlers
        .handle(&submission(
            "VMHU10V25",
            &metadata,
            "Customers want dark mode",
            Some("U0BOB"),
        ))
        .await;

    assert_eq!(sb.run_until_idle().await.unwrap().delivered, 1);
    let events = recorder.0.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.kind, "insight.captured");
    assert_eq!(e.source, "slack");
    assert_eq!(e.actor.as_ref().unwrap().id, "u-ann");
    assert_eq!(e.subject.as_ref().unwrap().id, "u-bob");
    assert_eq!(e.data["text"], "Customers want dark mode");
    assert_eq!(e.data["author"]["slack_user_id"], "U0ANN");
    assert_eq!(e.data["author"]["name"], "ann");
    assert_eq!(e.data["subject"]["slack_user_id"], "U0BOB");
    assert_eq!(
        e.data["channel"],
        json!({"id": "C0FEEDBACK", "name": "feedback", "type": "channel"})
    );
    assert_eq!(e.data["source"], "slash_command");
    assert_eq!(e.data["team_id"], "T1DC2JH3J");
    assert!(e.data["captured_at"].as_str().is_some());
}

#[tokio::test]
async fn a_message_shortcut_prefills_the_modal_with_the_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/views.open"))
        .respond_with(views_open_ok())
        .expect(1)
        .mount(&server)
        .await;
    let (handlers, sb, recorder) = capture_setup(&server).await;
    // Slack's documented message shortcut payload, trimmed.
    let payload = json!({
        "type": "message_action",
        "token": "XXXXXXXXXXXXX",
        "action_ts": "1581106241.371594",
        "team": { "id": "TXXXXXXXX", "domain": "shortcuts-test" },
        "user": { "id": "U0ANN", "username": "ann", "team_id": "TXXXXXXXX" },
        "channel": { "id": "G0PRIVATE", "name": "privategroup" },
        "callback_id": "capture_message",
        "trigger_id": "944799105734.773906753841.38b5894552bdd4a780554ee59d1f3638",
        "message_ts": "1581106239.002100",
        "message": { "type": "message", "text": "The export is slow &amp; buggy", "user": "U0BOB", "ts": "1581106239.002100" },
        "response_url": "https://hooks.slack.com/app/T/1/x"
    });
    let resp = handlers
        .handle(&signed_form(&[("payload", &payload.to_string())]))
        .await;
    assert_eq!(resp.status(), 200);
    let view = bodies(&server, "/views.open").await[0]["view"].clone();
    assert_eq!(
        view["blocks"][0]["element"]["initial_value"],
        "The export is slow & buggy"
    );
    let metadata = view["private_metadata"].as_str().unwrap().to_owned();
    handlers
        .handle(&submission("V2", &metadata, "Export is slow", None))
        .await;
    sb.run_until_idle().await.unwrap();
    let e = recorder.0.lock().unwrap()[0].clone();
    assert_eq!(e.data["source"], "message_shortcut");
    assert_eq!(e.data["message_ts"], "1581106239.002100");
    assert_eq!(e.data["channel"]["type"], "private_channel");
    assert!(e.subject.is_none());
}

#[tokio::test]
async fn url_verification_echoes_the_challenge() {
    let handlers = inbound()
        .store(Arc::new(MemoryStore::new()))
        .build()
        .unwrap();
    let resp = handlers
        .handle_event(&signed_json(&json!({
            "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification"
        })))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        json_of(&resp),
        json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );
}

#[tokio::test]
async fn duplicate_event_deliveries_are_processed_once() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hook = seen.clone();
    let handlers = inbound()
        .store(Arc::new(MemoryStore::new()))
        .on_event(move |e| hook.lock().unwrap().push(e.event_id))
        .build()
        .unwrap();
    let body = json!({
        "token": "XXYYZZ",
        "team_id": "T123ABC456",
        "api_app_id": "A123ABC456",
        "event": {
            "type": "reaction_added",
            "user": "U123ABC456",
            "reaction": "thumbsup",
            "item": { "type": "message", "channel": "C123ABC456", "ts": "1464196127.000002" },
            "event_ts": "1465244570.336841"
        },
        "type": "event_callback",
        "authed_users": ["U123ABC456"],
        "event_id": "Ev123ABC456",
        "event_time": 1234567890
    });
    assert_eq!(handlers.handle(&signed_json(&body)).await.status(), 200);
    let mut retry = signed_json(&body);
    retry
        .headers_mut()
        .insert("x-slack-retry-num", http::HeaderValue::from_static("1"));
    retry.headers_mut().insert(
        "x-slack-retry-reason",
        http::HeaderValue::from_static("http_timeout"),
    );
    assert_eq!(handlers.handle(&retry).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(*seen.lock().unwrap(), vec!["Ev123ABC456".to_owned()]);
}

#[tokio::test]
async fn app_uninstalled_disconnects_and_forgets_the_installation() {
    let server = MockServer::start().await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    store
        .put_installation(&installation("TXXXXXXXX", TOKEN))
        .await
        .unwrap();
    let token = BotToken::installed(store.clone(), "TXXXXXXXX");
    let sb = Switchboard::builder()
        .store_arc(store.clone())
        .destination(SlackDestination::new(config(&server), token.clone()).unwrap())
        .route(
            Route::on("x")
                .to("slack", Target::ChannelId { id: "C1".into() })
                .template("hi"),
        )
        .build()
        .unwrap();
    let handlers = inbound()
        .token(token)
        .switchboard(sb.clone())
        .build()
        .unwrap();
    let resp = handlers
        .handle(&signed_json(&json!({
            "token": "XXYYZZ",
            "team_id": "TXXXXXXXX",
            "api_app_id": "AXXXXXXXXX",
            "event": { "type": "app_uninstalled" },
            "type": "event_callback",
            "event_id": "EvXXXXXXXX",
            "event_time": 1234567890
        })))
        .await;
    assert_eq!(resp.status(), 200);
    assert!(
        store
            .installation("slack", "TXXXXXXXX")
            .await
            .unwrap()
            .is_none()
    );
    let status = sb.status().await.unwrap();
    assert!(!status[0].connected);
    // Published while disconnected: parked, not lost, no call to Slack.
    sb.publish(event("e1", "x", None, json!({}))).await.unwrap();
    assert_eq!(sb.run_until_idle().await.unwrap().parked, 1);
    assert!(requests(&server, "/chat.postMessage").await.is_empty());
}

mod parsers {
    use proptest::prelude::*;
    use switchboard::slack::{EventsRequest, Interaction, SlashCommand};

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[a-z_]{0,12}".prop_map(serde_json::Value::from),
            prop_oneof![
                Just("view_submission"),
                Just("message_action"),
                Just("shortcut"),
                Just("event_callback"),
                Just("url_verification"),
                Just("tokens_revoked"),
            ]
            .prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("type".to_owned()),
                        Just("view".to_owned()),
                        Just("state".to_owned()),
                        Just("values".to_owned()),
                        Just("user".to_owned()),
                        Just("event".to_owned()),
                        Just("event_id".to_owned()),
                        Just("tokens".to_owned()),
                        Just("channel".to_owned()),
                        Just("message".to_owned()),
                        "[a-z_]{1,8}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn parsers_never_panic_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = SlashCommand::parse(&body);
            let _ = Interaction::parse(&body);
            let _ = EventsRequest::parse(&body);
        }

        #[test]
        fn parsers_never_panic_on_arbitrary_json(v in json_value()) {
            let text = v.to_string();
            let _ = EventsRequest::parse(text.as_bytes());
            let form = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("payload", &text)
                .finish();
            let _ = Interaction::parse(form.as_bytes());
            let _ = Interaction::from_json(v);
        }
    }
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn the_axum_router_serves_the_handlers() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let handlers = inbound()
        .store(store.clone())
        .command("/perks", |_cmd| async { Ok::<_, switchboard::Error>("hi") })
        .build()
        .unwrap();
    let oauth = SlackOAuth::builder("123.456", secret("client-secret"))
        .store(store)
        .build()
        .unwrap();
    let app = switchboard::slack::router(handlers, Some(Arc::new(oauth)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let send = |path: &str, req: InboundRequest| {
        client
            .post(format!("http://{addr}{path}"))
            .headers(req.headers().clone())
            .body(req.body().clone())
            .send()
    };

    let challenge = json!({"type": "url_verification", "challenge": "abc", "token": "x"});
    let resp = send("/slack/events", signed_json(&challenge))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"challenge": "abc"})
    );

    let resp = send(
        "/slack/commands",
        signed_form(&[("command", "/perks"), ("text", "")]),
    )
    .await
    .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["text"], "hi");

    let mut forged = signed_json(&challenge);
    *forged.body_mut() =
        Bytes::from_static(b"{\"type\":\"url_verification\",\"challenge\":\"evil\"}");
    assert_eq!(send("/slack/events", forged).await.unwrap().status(), 401);

    let resp = client
        .get(format!("http://{addr}/slack/install"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(
            "https://slack.com/oauth/v2/authorize?client_id=123.456&scope=chat%3Awrite"
        )
    );
    assert!(location.contains("&state="));
}
