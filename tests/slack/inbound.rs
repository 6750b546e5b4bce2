//! SlackInbound: signatures, commands, the capture modal, Events API, and the axum router.

use super::common::*;

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
            tenant: TenantId::default(),
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
async fn app_uninstalled_disconnects_the_connection_and_parks_its_deliveries() {
    let server = MockServer::start().await;
    let store = keyed_store();
    let sb = Switchboard::builder()
        .store_arc(store.clone())
        .destination(SlackDestination::for_connections(config(&server)).unwrap())
        .route(
            Route::on("x")
                .to("slack", Target::ChannelId { id: "C1".into() })
                .template("hi"),
        )
        .build()
        .unwrap();
    sb.connect(slack_connection("acme", "TXXXXXXXX", TOKEN))
        .await
        .unwrap();
    let handlers = inbound().switchboard(sb.clone()).build().unwrap();
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
    let stored = store
        .connection(&ConnectionKey::new("slack", "TXXXXXXXX"))
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.is_connected());
    // Published while disconnected: parked, not lost, no call to Slack.
    sb.publish(tenant_event("acme", "e1", "x", None, json!({})))
        .await
        .unwrap();
    sb.run_until_idle().await.unwrap();
    assert!(requests(&server, "/chat.postMessage").await.is_empty());
    let status = sb.tenant_status(&tenant("acme")).await.unwrap();
    assert!(!status[0].connected);
    assert_eq!(status[0].parked, 1);
    assert!(
        status[0]
            .disconnected_reason
            .as_deref()
            .unwrap()
            .contains("uninstalled")
    );
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn the_axum_router_serves_the_handlers() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let handlers = inbound()
        .store(store.clone())
        .token(BotToken::new(secret(TOKEN)))
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
