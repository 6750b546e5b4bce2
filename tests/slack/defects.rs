//! Issue 14's defects, each pinned by a test that failed before its fix: verbatim sections, error classes, channel-name paging, DM pacing, durable Events API, identity sync guards, redacted response URLs, header titles.

use std::time::Instant;

use super::common::*;

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

fn board(server: &MockServer, target: Target, title: Option<&str>) -> Switchboard {
    let mut route = Route::on("x")
        .to("slack", target)
        .template("{{ data.text }}");
    if let Some(t) = title {
        route = route.title(t);
    }
    Switchboard::builder()
        .store(MemoryStore::new())
        .destination(
            SlackDestination::new(
                config(server).tier2_interval(Duration::from_millis(1)),
                BotToken::new(secret(TOKEN)),
            )
            .unwrap(),
        )
        .route(route)
        .build()
        .unwrap()
}

// 1 ---------------------------------------------------------------- verbatim

#[tokio::test]
async fn user_text_sections_are_verbatim_so_slack_links_nothing() {
    let server = MockServer::start().await;
    post_message()
        .respond_with(posted("C1"))
        .expect(1)
        .mount(&server)
        .await;
    let sb = board(&server, Target::ChannelId { id: "C1".into() }, None);
    sb.publish(event(
        "e1",
        "x",
        None,
        json!({"text": "see https://evil.example and #general @here"}),
    ))
    .await
    .unwrap();
    assert_eq!(sb.run_until_idle().await.unwrap().delivered, 1);
    let body = &bodies(&server, "/chat.postMessage").await[0];
    assert_eq!(
        body["blocks"],
        json!([{ "type": "section", "text": {
            "type": "mrkdwn",
            "text": "see https://evil.example and #general @here",
            "verbatim": true
        } }])
    );
}

// 8 ---------------------------------------------------------------- titles

#[tokio::test]
async fn a_title_with_stars_and_line_breaks_is_a_header_block() {
    let server = MockServer::start().await;
    post_message()
        .respond_with(posted("C1"))
        .expect(1)
        .mount(&server)
        .await;
    let sb = board(
        &server,
        Target::ChannelId { id: "C1".into() },
        Some("{{ data.title }}"),
    );
    sb.publish(event(
        "e1",
        "x",
        None,
        json!({"text": "body", "title": "5 * 3 & co\nsecond line"}),
    ))
    .await
    .unwrap();
    assert_eq!(sb.run_until_idle().await.unwrap().delivered, 1);
    let body = &bodies(&server, "/chat.postMessage").await[0];
    assert_eq!(
        body["blocks"],
        json!([
            { "type": "header", "text": { "type": "plain_text", "text": "5 * 3 & co second line", "emoji": true } },
            { "type": "section", "text": { "type": "mrkdwn", "text": "body", "verbatim": true } }
        ])
    );
}

// 2 ---------------------------------------------------------------- error classes

#[test]
fn error_classes_follow_slacks_meaning() {
    use FailureClass::*;
    assert_eq!(classify(200, Some("no_permission"), None).0, Permanent);
    assert_eq!(classify(200, Some("team_added_to_org"), None).0, Temporary);
    assert_eq!(classify(200, Some("org_login_required"), None).0, Temporary);
    let (class, message) = classify(200, Some("fatal_error"), None);
    assert_eq!(class, Temporary);
    assert!(message.contains("partly succeeded"), "{message}");
}

#[tokio::test]
async fn no_permission_dead_letters_the_delivery_without_parking_slack() {
    let server = MockServer::start().await;
    post_message()
        .respond_with(slack_error("no_permission"))
        .expect(1)
        .mount(&server)
        .await;
    let sb = board(&server, Target::ChannelId { id: "C1".into() }, None);
    sb.publish(event("e1", "x", None, json!({"text": "hi"})))
        .await
        .unwrap();
    sb.run_until_idle().await.unwrap();
    let status = sb.status().await.unwrap();
    let slack = status.iter().find(|s| s.name == "slack").unwrap();
    assert!(slack.connected, "{slack:?}");
    assert_eq!(slack.dead_letters, 1);
    assert_eq!(slack.parked, 0);
}

#[tokio::test]
async fn missing_scope_names_the_scope_and_what_to_do() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/conversations.list"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": false, "error": "missing_scope", "needed": "groups:read", "provided": "chat:write"
        })))
        .mount(&server)
        .await;
    let dest = SlackDestination::new(config(&server), BotToken::new(secret(TOKEN))).unwrap();
    let e = dest.channel_id(None, "perks").await.unwrap_err();
    assert!(e.is_disconnected());
    assert!(e.message().contains("groups:read"), "{}", e.message());
    assert!(e.message().contains("reinstall"), "{}", e.message());
}

// 3 ---------------------------------------------------------------- channel names

fn channels(list: &[(&str, &str)], next: &str) -> ResponseTemplate {
    let channels: Vec<Value> = list
        .iter()
        .map(|(id, name)| json!({ "id": id, "name": name, "is_channel": true, "is_member": true }))
        .collect();
    ResponseTemplate::new(200).set_body_json(json!({
        "ok": true, "channels": channels, "response_metadata": { "next_cursor": next }
    }))
}

#[tokio::test]
async fn a_rate_limited_page_resumes_from_its_cursor() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/conversations.list"))
        .and(query_param_is_missing("cursor"))
        .respond_with(channels(&[("C1", "general")], "dGVhbTpDMDYxRkE1UEI="))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/conversations.list"))
        .and(query_param("cursor", "dGVhbTpDMDYxRkE1UEI="))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(json!({"ok": false, "error": "ratelimited"})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/conversations.list"))
        .and(query_param("cursor", "dGVhbTpDMDYxRkE1UEI="))
        .respond_with(channels(&[("C2", "perks")], ""))
        .mount(&server)
        .await;
    let dest = SlackDestination::new(
        config(&server).tier2_interval(Duration::from_millis(1)),
        BotToken::new(secret(TOKEN)),
    )
    .unwrap();
    let e = dest.channel_id(None, "perks").await.unwrap_err();
    assert!(matches!(e.class(), FailureClass::RateLimited { .. }));
    let started = Instant::now();
    assert_eq!(
        dest.channel_id(None, "#perks").await.unwrap().as_deref(),
        Some("C2")
    );
    // Retry-After was honoured before the page was asked for again.
    assert!(started.elapsed() >= Duration::from_millis(900));
    // The first page was not read again.
    let cursors: Vec<Option<String>> = requests(&server, "/conversations.list")
        .await
        .iter()
        .map(|r| {
            r.url
                .query_pairs()
                .find(|(k, _)| k == "cursor")
                .map(|(_, v)| v.into_owned())
        })
        .collect();
    assert_eq!(
        cursors,
        vec![
            None,
            Some("dGVhbTpDMDYxRkE1UEI=".to_owned()),
            Some("dGVhbTpDMDYxRkE1UEI=".to_owned())
        ]
    );
    // Cached: no further calls.
    assert_eq!(
        dest.channel_id(None, "general").await.unwrap().as_deref(),
        Some("C1")
    );
    assert_eq!(requests(&server, "/conversations.list").await.len(), 3);
}

#[tokio::test]
async fn list_pages_are_spaced_by_the_methods_tier() {
    let server = MockServer::start().await;
    let seen = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let s2 = seen.clone();
    Mock::given(method("GET"))
        .and(path("/conversations.list"))
        .respond_with(move |r: &Request| {
            s2.lock().unwrap().push(Instant::now());
            match r.url.query_pairs().find(|(k, _)| k == "cursor") {
                None => channels(&[("C1", "a")], "p2"),
                Some(_) => channels(&[("C2", "b")], ""),
            }
        })
        .mount(&server)
        .await;
    let dest = SlackDestination::new(
        config(&server).tier2_interval(Duration::from_millis(400)),
        BotToken::new(secret(TOKEN)),
    )
    .unwrap();
    assert_eq!(
        dest.channel_id(None, "b").await.unwrap().as_deref(),
        Some("C2")
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert!(seen[1] - seen[0] >= Duration::from_millis(350));
}

#[tokio::test]
async fn channel_not_found_for_a_name_refreshes_it_and_retries() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/conversations.list"))
        .respond_with(channels(&[("COLD", "perks")], ""))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/conversations.list"))
        .respond_with(channels(&[("CNEW", "perks")], ""))
        .mount(&server)
        .await;
    post_message()
        .and(body_partial_json(json!({"channel": "COLD"})))
        .respond_with(slack_error("channel_not_found"))
        .expect(1)
        .mount(&server)
        .await;
    post_message()
        .and(body_partial_json(json!({"channel": "CNEW"})))
        .respond_with(posted("CNEW"))
        .expect(1)
        .mount(&server)
        .await;
    let sb = board(&server, Target::channel("#perks"), None);
    sb.publish(event("e1", "x", None, json!({"text": "hi"})))
        .await
        .unwrap();
    assert_eq!(sb.run_until_idle().await.unwrap().delivered, 1);
}

// 4 ---------------------------------------------------------------- DM pacing

#[tokio::test]
async fn conversations_open_is_paced_by_its_tier_per_connection() {
    let server = MockServer::start().await;
    let seen = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let s2 = seen.clone();
    Mock::given(method("POST"))
        .and(path("/conversations.open"))
        .and(bearer_token(TOKEN))
        .respond_with(move |r: &Request| {
            s2.lock().unwrap().push(Instant::now());
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            ResponseTemplate::new(200).set_body_json(json!({
                "ok": true, "channel": { "id": format!("D{}", body["users"].as_str().unwrap()) }
            }))
        })
        .mount(&server)
        .await;
    post_message()
        .respond_with(posted("D1"))
        .mount(&server)
        .await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    for (u, s) in [("u1", "U1"), ("u2", "U2"), ("u3", "U3")] {
        store
            .put_link(&IdentityLink {
                tenant: TenantId::default(),
                platform: "slack".into(),
                user_id: u.into(),
                platform_id: s.into(),
                origin: LinkOrigin::Manual,
                linked_at: Utc::now(),
            })
            .await
            .unwrap();
    }
    let dest = SlackDestination::new(
        config(&server).tier3_interval(Duration::from_millis(300)),
        BotToken::new(secret(TOKEN)),
    )
    .unwrap();
    let identity = SlackIdentity::with_client(
        &config(&server),
        dest.client().clone(),
        BotToken::new(secret(TOKEN)),
        store.clone(),
    );
    let sb = Switchboard::builder()
        .store_arc(store)
        .destination(dest)
        .resolver("slack", identity)
        .route(Route::on("x").to("slack", Target::SubjectDm).template("hi"))
        .build()
        .unwrap();
    for u in ["u1", "u2", "u3"] {
        sb.publish(event(&format!("e-{u}"), "x", Some(u), json!({})))
            .await
            .unwrap();
    }
    assert_eq!(sb.run_until_idle().await.unwrap().delivered, 3);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for pair in seen.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(250));
    }
}

// 5 ---------------------------------------------------------------- Events API

fn mention(id: &str) -> Value {
    json!({
        "token": "XXYYZZ",
        "team_id": "T123ABC456",
        "api_app_id": "A123ABC456",
        "event": {
            "type": "app_mention",
            "user": "U061F7AUR",
            "text": "<@U0LAN0Z89> is it everything a river should be?",
            "ts": "1515449522.000016",
            "channel": "C123ABC456",
            "event_ts": "1515449522000016"
        },
        "type": "event_callback",
        "event_id": id,
        "event_time": 1515449522
    })
}

#[tokio::test]
async fn events_are_published_through_the_outbox_before_the_ack_once_per_id() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(Recorder(got.clone()))
        .route(
            Route::on("slack.app_mention")
                .to("recorder", Target::ChannelId { id: "x".into() })
                .template("{{ data.event.text }}"),
        )
        .build()
        .unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let inbound = SlackInbound::builder(secret(SIGNING_SECRET))
        .switchboard(sb.clone())
        .token(BotToken::new(secret(TOKEN)))
        .on("app_mention", move |cx| {
            let h = h.clone();
            async move {
                assert_eq!(cx.event["channel"], "C123ABC456");
                h.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .unwrap();
    assert_eq!(
        inbound
            .handle(&signed_json(&mention("Ev0PV52K21")))
            .await
            .status(),
        200
    );
    // Already in the outbox when Slack got its 200.
    assert_eq!(sb.store().pending().await.unwrap(), 1);
    assert_eq!(
        inbound
            .handle(&signed_json(&mention("Ev0PV52K21")))
            .await
            .status(),
        200
    );
    assert_eq!(sb.run_until_idle().await.unwrap().delivered, 1);
    {
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, "slack:Ev0PV52K21");
        assert_eq!(got[0].kind, "slack.app_mention");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(handled.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_event_whose_id_was_published_but_not_remembered_is_processed_on_retry() {
    // A crash between publishing and remembering: Slack's retry must not be
    // taken for a duplicate (the id is remembered only after publishing).
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(Recorder(Arc::new(Mutex::new(Vec::new()))))
        .route(
            Route::on("slack.*")
                .to("recorder", Target::ChannelId { id: "x".into() })
                .template("x"),
        )
        .build()
        .unwrap();
    sb.publish(
        Event::builder("slack:Ev1", "slack.app_mention")
            .data(json!({}))
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let inbound = SlackInbound::builder(secret(SIGNING_SECRET))
        .switchboard(sb.clone())
        .token(BotToken::new(secret(TOKEN)))
        .on("app_mention", move |_| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .unwrap();
    assert_eq!(
        inbound.handle(&signed_json(&mention("Ev1"))).await.status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    assert_eq!(sb.store().pending().await.unwrap(), 1);
}

#[tokio::test]
async fn app_rate_limited_is_surfaced() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let inbound = SlackInbound::builder(secret(SIGNING_SECRET))
        .store(store)
        .token(BotToken::new(secret(TOKEN)))
        .build()
        .unwrap();
    let body = json!({
        "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
        "type": "app_rate_limited",
        "team_id": "T123456",
        "minute_rate_limited": 1518467820,
        "api_app_id": "A123456"
    });
    assert_eq!(inbound.handle(&signed_json(&body)).await.status(), 200);
    let limits = inbound.app_rate_limits();
    assert_eq!(limits.len(), 1);
    assert_eq!(limits[0].team_id, "T123456");
    assert_eq!(limits[0].since.timestamp(), 1518467820);
}

#[tokio::test]
async fn app_rate_limited_shows_in_the_tenants_status() {
    let server = MockServer::start().await;
    let sb = Switchboard::builder()
        .store_arc(keyed_store())
        .destination(destination(&server))
        .build()
        .unwrap();
    sb.connect(slack_connection("acme", "T123456", TOKEN))
        .await
        .unwrap();
    let inbound = SlackInbound::builder(secret(SIGNING_SECRET))
        .switchboard(sb.clone())
        .build()
        .unwrap();
    let before = sb.tenant_status(&tenant("acme")).await.unwrap();
    assert!(before.iter().all(|s| s.notices.is_empty()));
    let body = json!({
        "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
        "type": "app_rate_limited",
        "team_id": "T123456",
        "minute_rate_limited": 1518467820,
        "api_app_id": "A123456"
    });
    assert_eq!(inbound.handle(&signed_json(&body)).await.status(), 200);
    let status = sb.tenant_status(&tenant("acme")).await.unwrap();
    let slack = status.iter().find(|s| s.name == "slack").unwrap();
    assert_eq!(slack.notices.len(), 1);
    assert_eq!(slack.notices[0].kind, "slack.app_rate_limited");
    assert_eq!(slack.notices[0].since.timestamp(), 1518467820);
    assert!(slack.notices[0].detail.contains("T123456"));
    // Only that tenant's row carries it.
    let others = sb.tenant_status(&TenantId::default_tenant()).await.unwrap();
    assert!(others.iter().all(|s| s.notices.is_empty()));
    assert!(sb.clear_notice(&tenant("acme"), "slack", "slack.app_rate_limited"));
}

// 6 ---------------------------------------------------------------- identity

fn member(id: &str, email: Option<&str>) -> Value {
    json!({
        "id": id, "team_id": "T012AB3C4", "name": id.to_lowercase(), "deleted": false,
        "profile": { "real_name": "Egon Spengler", "email": email },
        "is_restricted": false, "is_ultra_restricted": false, "is_bot": false, "is_app_user": false
    })
}

fn users(members: Vec<Value>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "ok": true, "members": members, "cache_ts": 1498777272,
        "response_metadata": { "next_cursor": "" }
    }))
}

async fn sync_with(
    server: &MockServer,
    store: Arc<dyn Store>,
    people: &[Person],
) -> switchboard::Result<switchboard::identity::SyncReport> {
    let identity =
        SlackIdentity::new(&config(server), BotToken::new(secret(TOKEN)), store).unwrap();
    let cx = ResolveContext {
        tenant: TenantId::default(),
        connection: None,
    };
    identity.sync(&cx, people).await
}

#[tokio::test]
async fn invited_users_who_never_signed_in_are_skipped_and_counted() {
    let server = MockServer::start().await;
    let mut invited = member("U2", Some("bob@example.com"));
    invited["is_invited_user"] = json!(true);
    Mock::given(method("GET"))
        .and(path("/users.list"))
        .respond_with(users(vec![member("U1", Some("ada@example.com")), invited]))
        .mount(&server)
        .await;
    let people = [
        Person::new("ada").email("ada@example.com"),
        Person::new("bob").email("bob@example.com"),
    ];
    let report = sync_with(&server, Arc::new(MemoryStore::new()), &people)
        .await
        .unwrap();
    assert_eq!(report.matched, vec![("ada".to_owned(), "U1".to_owned())]);
    assert_eq!(report.skipped.deactivated, 1);
}

#[tokio::test]
async fn a_directory_without_emails_prunes_no_links_and_names_the_scope() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/users.list"))
        .respond_with(users(vec![member("U1", None), member("U2", None)]))
        .mount(&server)
        .await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    store
        .put_link(&IdentityLink {
            tenant: TenantId::default(),
            platform: "slack".into(),
            user_id: "ada".into(),
            platform_id: "U1".into(),
            origin: LinkOrigin::EmailMatch,
            linked_at: Utc::now(),
        })
        .await
        .unwrap();
    let people = [Person::new("ada").email("ada@example.com")];
    let e = sync_with(&server, store.clone(), &people)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("users:read.email"), "{e}");
    assert!(
        store
            .link(&TenantId::default(), "slack", "ada")
            .await
            .unwrap()
            .is_some()
    );
}

// 7 ---------------------------------------------------------------- response_url

#[test]
fn response_urls_are_redacted_in_debug_and_never_serialized() {
    let url = "https://hooks.slack.com/commands/T1DC2JH3J/397700885554/96rGlfmibIGlgcZRskXaIFfN";
    let body = format!(
        "command=%2Fperks&team_id=T1&response_url={}",
        url::form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>()
    );
    let cmd = SlashCommand::parse(body.as_bytes()).unwrap();
    assert_eq!(cmd.response_url, url);
    assert!(!format!("{cmd:?}").contains("hooks.slack.com"));
    assert!(
        !serde_json::to_string(&cmd)
            .unwrap()
            .contains("hooks.slack.com")
    );
    let shortcut = MessageShortcut {
        response_url: Some(url.to_owned()),
        ..MessageShortcut::default()
    };
    assert!(!format!("{shortcut:?}").contains("hooks.slack.com"));
    assert!(
        !serde_json::to_string(&shortcut)
            .unwrap()
            .contains("hooks.slack.com")
    );
}
