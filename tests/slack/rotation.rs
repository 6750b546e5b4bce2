//! Token rotation per connection, safe across instances: a store lease and compare-and-swap make exactly one refresh; `token_expired` refreshes and retries.

use super::common::*;
use switchboard::engine::WorkerConfig;

fn rotating(
    tenant_id: &str,
    team: &str,
    token: &str,
    refresh: &str,
    expires_in: i64,
) -> Connection {
    Connection::builder(tenant(tenant_id), "slack", team)
        .access_token(secret(token))
        .refresh_token(secret(refresh))
        .expires_at(Utc::now() + chrono::Duration::seconds(expires_in))
        .data(json!({ "team_id": team }))
        .build()
        .unwrap()
}

/// Slack's refresh answer (`grant_type=refresh_token`).
fn refreshed(token: &str, refresh: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "ok": true,
        "app_id": "A0KRD7HC3",
        "scope": "chat:write",
        "token_type": "bot",
        "access_token": token,
        "bot_user_id": "U0KRQLJ9H",
        "refresh_token": refresh,
        "expires_in": 43200,
        "team": { "id": "T1", "name": "T" },
        "enterprise": null,
        "is_enterprise_install": false
    }))
}

fn refresh_mock(old_refresh: &str) -> MockBuilder {
    Mock::given(method("POST"))
        .and(path("/oauth.v2.access"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(wiremock::matchers::body_string_contains(
            "grant_type=refresh_token",
        ))
        .and(wiremock::matchers::body_string_contains(format!(
            "refresh_token={old_refresh}"
        )))
        .and(wiremock::matchers::body_string_contains(
            "client_id=123.456",
        ))
}

fn rotation(server: &MockServer, store: &Arc<dyn Store>) -> Arc<TokenRotation> {
    Arc::new(TokenRotation::new(&config(server), store.clone(), "123.456", secret("shh")).unwrap())
}

fn instance(server: &MockServer, store: &Arc<dyn Store>) -> (Switchboard, Arc<SlackDestination>) {
    let dest = Arc::new(
        SlackDestination::for_connections(config(server))
            .unwrap()
            .with_rotation(rotation(server, store)),
    );
    let sb = Switchboard::builder()
        .store_arc(store.clone())
        .destination_arc(dest.clone())
        .worker(WorkerConfig {
            batch_size: 1,
            ..WorkerConfig::default()
        })
        .route(
            Route::on("x")
                .to("slack", Target::channel("general"))
                .template("hi {{ id }}"),
        )
        .build()
        .unwrap();
    (sb, dest)
}

#[tokio::test]
async fn two_switchboards_on_one_store_refresh_exactly_once() {
    let server = MockServer::start().await;
    let slack = Workspaces::default();
    slack.token("xoxe.xoxb-new", "T1");
    slack.mount(&server).await;
    refresh_mock("xoxe-1-old")
        .respond_with(
            refreshed("xoxe.xoxb-new", "xoxe-1-new").set_delay(Duration::from_millis(300)),
        )
        .expect(1)
        .mount(&server)
        .await;
    let store = keyed_store();
    let (sb1, d1) = instance(&server, &store);
    let (sb2, d2) = instance(&server, &store);
    // Expires within the refresh margin: both instances want to refresh at once.
    let stale = sb1
        .connect(rotating("acme", "T1", "xoxe.xoxb-old", "xoxe-1-old", 60))
        .await
        .unwrap();
    let (t1, t2) = tokio::join!(d1.token_for(Some(&stale)), d2.token_for(Some(&stale)));
    assert_eq!(t1.unwrap().expose_secret(), "xoxe.xoxb-new");
    assert_eq!(t2.unwrap().expose_secret(), "xoxe.xoxb-new");

    for i in 0..6 {
        sb1.publish(tenant_event("acme", &format!("e{i}"), "x", None, json!({})))
            .await
            .unwrap();
    }
    let (a, b) = tokio::join!(
        sb1.drain(Duration::from_secs(30)),
        sb2.drain(Duration::from_secs(30))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.delivered + b.delivered, 6);
    assert_eq!(a.parked + b.parked, 0, "nothing parked");
    let sent = posts(&server).await;
    assert_eq!(sent.len(), 6);
    assert!(
        sent.iter().all(|(t, _, _)| t == "xoxe.xoxb-new"),
        "{sent:?}"
    );
    let stored = store
        .connection(&ConnectionKey::new("slack", "T1"))
        .await
        .unwrap()
        .unwrap();
    assert!(stored.is_connected());
    assert_eq!(
        stored.access_token().unwrap().expose_secret(),
        "xoxe.xoxb-new"
    );
    assert_eq!(
        stored.secret("refresh_token").unwrap().expose_secret(),
        "xoxe-1-new"
    );
    assert!(stored.expires_at.unwrap() - Utc::now() > chrono::Duration::hours(11));
    assert!(stored.revision > stale.revision);
    server.verify().await;
}

#[tokio::test]
async fn the_loser_of_a_refresh_race_rereads_the_store_instead_of_disconnecting() {
    let server = MockServer::start().await;
    refresh_mock("xoxe-1-old")
        .respond_with(refreshed("xoxe.xoxb-new", "xoxe-1-new"))
        .expect(1)
        .mount(&server)
        .await;
    let store = keyed_store();
    let (sb, _) = instance(&server, &store);
    let stale = sb
        .connect(rotating("acme", "T1", "xoxe.xoxb-old", "xoxe-1-old", 3_600))
        .await
        .unwrap();
    // Instance A refreshes (e.g. after token_expired); instance B still holds
    // the old revision and asks too: it gets A's token, Slack is asked once.
    let a = rotation(&server, &store).refresh(&stale).await.unwrap();
    let b = rotation(&server, &store).refresh(&stale).await.unwrap();
    assert_eq!(a.revision, b.revision);
    assert_eq!(b.access_token().unwrap().expose_secret(), "xoxe.xoxb-new");
    server.verify().await;
}

#[tokio::test]
async fn token_expired_forces_a_refresh_and_a_retry() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .and(bearer_token("xoxe.xoxb-old"))
        .respond_with(slack_error("token_expired"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .and(bearer_token("xoxe.xoxb-new"))
        .respond_with(posted("C1"))
        .expect(1)
        .mount(&server)
        .await;
    refresh_mock("xoxe-1-old")
        .respond_with(refreshed("xoxe.xoxb-new", "xoxe-1-new"))
        .expect(1)
        .mount(&server)
        .await;
    let store = keyed_store();
    let dest = SlackDestination::for_connections(config(&server))
        .unwrap()
        .with_rotation(rotation(&server, &store));
    let sb = Switchboard::builder()
        .store_arc(store.clone())
        .destination(dest)
        .route(
            Route::on("x")
                .to("slack", Target::ChannelId { id: "C1".into() })
                .template("hi"),
        )
        .build()
        .unwrap();
    // Slack says it expired although we thought it had an hour left.
    sb.connect(rotating("acme", "T1", "xoxe.xoxb-old", "xoxe-1-old", 3_600))
        .await
        .unwrap();
    sb.publish(tenant_event("acme", "e1", "x", None, json!({})))
        .await
        .unwrap();
    let s = sb.drain(Duration::from_secs(10)).await.unwrap();
    assert_eq!((s.delivered, s.parked, s.retried), (1, 0, 0));
    let stored = store
        .connection(&ConnectionKey::new("slack", "T1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.access_token().unwrap().expose_secret(),
        "xoxe.xoxb-new"
    );
    server.verify().await;
}

#[tokio::test]
async fn a_rejected_refresh_token_nobody_else_used_disconnects_that_tenant() {
    let server = MockServer::start().await;
    refresh_mock("xoxe-1-bad")
        .respond_with(slack_error("invalid_refresh_token"))
        .expect(1)
        .mount(&server)
        .await;
    let store = keyed_store();
    let dest = SlackDestination::for_connections(config(&server))
        .unwrap()
        .with_rotation(rotation(&server, &store));
    let sb = Switchboard::builder()
        .store_arc(store.clone())
        .destination(dest)
        .route(
            Route::on("x")
                .to("slack", Target::ChannelId { id: "C1".into() })
                .template("hi"),
        )
        .build()
        .unwrap();
    sb.connect(rotating("acme", "T1", "xoxe.xoxb-old", "xoxe-1-bad", 10))
        .await
        .unwrap();
    sb.publish(tenant_event("acme", "e1", "x", None, json!({})))
        .await
        .unwrap();
    let s = sb.drain(Duration::from_secs(10)).await.unwrap();
    assert_eq!((s.delivered, s.parked), (0, 1));
    let st = sb.tenant_status(&tenant("acme")).await.unwrap();
    assert!(!st[0].connected);
    assert!(
        st[0]
            .disconnected_reason
            .as_deref()
            .unwrap()
            .contains("refresh token")
    );
}
