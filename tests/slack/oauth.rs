//! OAuth install per tenant: the state carries the tenant and is bound to the browser; replayed, expired and reused states are refused; the callback connects the tenant and resumes its parked deliveries.

use super::common::*;

const CLIENT_ID: &str = "2141029472.691202649728";
const CLIENT_SECRET: &str = "e1b9e11dfcd19c1982d5de12921e17e8c";
const REDIRECT: &str = "https://perks.example.com/slack/oauth/callback";

/// Slack's documented `oauth.v2.access` answer for a workspace install.
fn access_ok(team: &str, token: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "ok": true,
        "access_token": token,
        "token_type": "bot",
        "scope": "commands,incoming-webhook",
        "bot_user_id": "U0KRQLJ9H",
        "app_id": "A0KRD7HC3",
        "team": { "name": "Slack Softball Team", "id": team },
        "enterprise": null,
        "is_enterprise_install": false,
        "authed_user": { "id": "U1234", "scope": "chat:write", "access_token": "xoxp-1234", "token_type": "user" }
    }))
}

fn oauth(server: &MockServer, sb: &Switchboard) -> SlackOAuth {
    SlackOAuth::builder(CLIENT_ID, secret(CLIENT_SECRET))
        .config(config(server))
        .redirect_uri(REDIRECT)
        .switchboard(sb.clone())
        .tenant_of(|r: &InboundRequest| {
            // The host's session says which tenant the admin belongs to.
            r.headers()
                .get("x-test-tenant")
                .and_then(|v| v.to_str().ok())
                .and_then(|t| TenantId::new(t).ok())
        })
        .build()
        .unwrap()
}

/// The browser's view of `GET /slack/install`: the state and the cookie.
async fn start(oauth: &SlackOAuth, tenant_id: &str) -> (String, String) {
    let request = http::Request::builder()
        .uri("/slack/install")
        .header("x-test-tenant", tenant_id)
        .body(Bytes::new())
        .unwrap();
    let resp = oauth.handle_install(&request).await;
    assert_eq!(resp.status(), 302);
    let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(location.path(), "/oauth/v2/authorize");
    let q: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["redirect_uri"], REDIRECT);
    assert!(q["scope"].contains("chat:write"));
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("Secure") && cookie.contains("Max-Age=600")
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    (q["state"].clone(), pair)
}

fn callback(state: &str, cookie: Option<&str>) -> InboundRequest {
    let uri = format!(
        "/slack/oauth/callback?code=4724469134.4644010092847.232b4e6d82c3&state={}",
        url::form_urlencoded::byte_serialize(state.as_bytes()).collect::<String>()
    );
    let mut b = http::Request::builder().uri(uri);
    if let Some(c) = cookie {
        b = b.header("cookie", format!("theme=dark; {c}"));
    }
    b.body(Bytes::new()).unwrap()
}

fn board(server: &MockServer, store: Arc<dyn Store>) -> Switchboard {
    Switchboard::builder()
        .store_arc(store)
        .destination(SlackDestination::for_connections(config(server)).unwrap())
        .route(
            Route::on("x")
                .to("slack", Target::ChannelId { id: "C1".into() })
                .template("hi {{ id }}"),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_install_carries_the_tenant_connects_it_and_resumes_its_parked_deliveries() {
    let server = MockServer::start().await;
    let slack = Workspaces::default();
    slack.token("xoxb-new", "T9TK3CUKW");
    slack.mount(&server).await;
    Mock::given(method("POST"))
        .and(path("/oauth.v2.access"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .respond_with(access_ok("T9TK3CUKW", "xoxb-new"))
        .expect(1)
        .mount(&server)
        .await;
    let store = keyed_store();
    let sb = board(&server, store.clone());
    sb.publish(tenant_event("acme", "e1", "x", None, json!({})))
        .await
        .unwrap();
    sb.publish(tenant_event("acme", "e2", "x", None, json!({})))
        .await
        .unwrap();
    assert_eq!(
        sb.run_until_idle().await.unwrap().delivered,
        0,
        "acme is not connected yet"
    );

    let oauth = oauth(&server, &sb);
    let (state, cookie) = start(&oauth, "acme").await;
    let resp = oauth
        .handle_callback(&callback(&state, Some(&cookie)))
        .await;
    assert_eq!(resp.status(), 200, "{:?}", resp.body());
    assert_eq!(resp.headers()[TENANT_HEADER], "acme");
    assert!(
        resp.headers()
            .get_all("set-cookie")
            .iter()
            .any(|v| v.to_str().unwrap().contains("Max-Age=0")),
        "the cookie is cleared"
    );
    let form: Vec<(String, String)> =
        url::form_urlencoded::parse(&requests(&server, "/oauth.v2.access").await[0].body)
            .into_owned()
            .collect();
    for (k, v) in [
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("code", "4724469134.4644010092847.232b4e6d82c3"),
        ("redirect_uri", REDIRECT),
    ] {
        assert!(
            form.contains(&(k.to_owned(), v.to_owned())),
            "{k} in {form:?}"
        );
    }
    let stored = store
        .connection(&ConnectionKey::new("slack", "T9TK3CUKW"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.tenant.as_str(), "acme", "tenant carried through");
    assert_eq!(stored.access_token().unwrap().expose_secret(), "xoxb-new");
    assert_eq!(stored.data["team_id"], "T9TK3CUKW");
    assert_eq!(stored.data["bot_user_id"], "U0KRQLJ9H");
    assert_eq!(stored.data["app_id"], "A0KRD7HC3");
    assert_eq!(stored.data["is_enterprise_install"], false);
    assert_eq!(
        stored.data["scopes"],
        json!(["commands", "incoming-webhook"])
    );
    assert!(!format!("{stored:?}").contains("xoxb-new"));

    // Reused: refused, and nothing more is exchanged.
    assert_eq!(
        oauth
            .handle_callback(&callback(&state, Some(&cookie)))
            .await
            .status(),
        401
    );

    // Connected: acme's parked deliveries go out with its new token, in order.
    sb.drain(Duration::from_secs(10)).await.unwrap();
    let sent: Vec<(String, String)> = posts(&server)
        .await
        .into_iter()
        .map(|(t, _, text)| (t, text))
        .collect();
    assert_eq!(
        sent,
        vec![
            ("xoxb-new".to_owned(), "hi e1".to_owned()),
            ("xoxb-new".to_owned(), "hi e2".to_owned())
        ]
    );
}

#[tokio::test]
async fn a_state_replayed_from_another_browser_is_refused() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth.v2.access"))
        .respond_with(access_ok("TATTACKER", "xoxb-attacker"))
        .expect(0)
        .mount(&server)
        .await;
    let store = keyed_store();
    let sb = board(&server, store.clone());
    let oauth = oauth(&server, &sb);
    // The victim's admin starts an install for "victim"; the link leaks.
    let (victim_state, _victim_cookie) = start(&oauth, "victim").await;
    // The attacker completes it in their own browser: no cookie, or the
    // cookie of an install they started themselves.
    let (_, attacker_cookie) = start(&oauth, "attacker").await;
    for cookie in [None, Some(attacker_cookie.as_str())] {
        let resp = oauth
            .handle_callback(&callback(&victim_state, cookie))
            .await;
        assert_eq!(resp.status(), 401);
    }
    assert!(store.connections(None).await.unwrap().is_empty());
    server.verify().await;
}

#[tokio::test]
async fn an_expired_state_is_refused() {
    let server = MockServer::start().await;
    let store = keyed_store();
    let sb = board(&server, store.clone());
    let oauth = oauth(&server, &sb);
    let minted = Utc::now() - chrono::Duration::minutes(11);
    let started = oauth.start_install(&tenant("acme"), minted).unwrap();
    let url = url::Url::parse(&started.url).unwrap();
    let state = url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let cookie = started.set_cookie.split(';').next().unwrap().to_owned();
    let err = oauth
        .complete_install("code", &state, cookie.split_once('=').map(|(_, v)| v))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), switchboard::ErrorKind::Unauthorized);
    assert!(err.to_string().contains("expired"), "{err}");
    // Nine minutes old is still fine as far as the state goes.
    let fresh = oauth
        .start_install(&tenant("acme"), Utc::now() - chrono::Duration::minutes(9))
        .unwrap();
    let state = url::Url::parse(&fresh.url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let cookie = fresh
        .set_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned();
    assert_eq!(
        oauth
            .verify_state(&state, Some(&cookie), Utc::now())
            .await
            .unwrap(),
        tenant("acme")
    );
}

#[tokio::test]
async fn an_install_without_a_tenant_is_refused() {
    let server = MockServer::start().await;
    let sb = board(&server, keyed_store());
    let oauth = oauth(&server, &sb);
    let request = http::Request::builder()
        .uri("/slack/install")
        .body(Bytes::new())
        .unwrap();
    assert_eq!(oauth.handle_install(&request).await.status(), 401);
}

#[tokio::test]
async fn an_org_wide_install_is_stored_by_enterprise_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth.v2.access"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true,
            "access_token": "xoxb-org",
            "token_type": "bot",
            "scope": "chat:write,users:read",
            "bot_user_id": "W0XXXX",
            "app_id": "A0UXXXX",
            "team": null,
            "enterprise": { "id": "E1XXX", "name": "Starship" },
            "is_enterprise_install": true,
            "authed_user": { "id": "WXXXX", "access_token": "xoxp-XXXX" }
        })))
        .mount(&server)
        .await;
    let store = keyed_store();
    let sb = board(&server, store.clone());
    let oauth = oauth(&server, &sb);
    let (state, cookie) = start(&oauth, "starship").await;
    let connection = oauth
        .callback(&callback(&state, Some(&cookie)))
        .await
        .unwrap();
    assert_eq!(connection.key.to_string(), "slack:E1XXX");
    assert_eq!(connection.tenant.as_str(), "starship");
    assert_eq!(connection.data["is_enterprise_install"], true);
    assert_eq!(connection.data["enterprise_id"], "E1XXX");
}
