//! One SlackInbound serving two workspaces: each request authorized to its own connection (token, tenant), uninstall per workspace, "not installed" answers, capture authors mapped within the tenant only.

use super::common::*;

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

struct Setup {
    server: MockServer,
    inbound: SlackInbound,
    sb: Switchboard,
    store: Arc<dyn Store>,
    recorder: Recorder,
    commands: Arc<Mutex<Vec<(String, String)>>>,
}

async fn setup() -> Setup {
    let server = MockServer::start().await;
    let slack = Workspaces::default();
    slack
        .token("xoxb-acme", "TACME")
        .token("xoxb-globex", "TGLOBEX");
    slack.mount(&server).await;
    let store = keyed_store();
    let recorder = Recorder::default();
    let sb = Switchboard::builder()
        .store_arc(store.clone())
        .destination(recorder.clone())
        .route(Route::on("insight.captured").to("recorder", Target::ChannelId { id: "x".into() }))
        .build()
        .unwrap();
    sb.connect(slack_connection("acme", "TACME", "xoxb-acme"))
        .await
        .unwrap();
    sb.connect(slack_connection("globex", "TGLOBEX", "xoxb-globex"))
        .await
        .unwrap();
    // Slack user U0ANN exists in both workspaces' link tables, as different people.
    link(&store, "acme", "TACME", "ann-at-acme", "U0ANN").await;
    link(&store, "globex", "TGLOBEX", "ann-at-globex", "U0ANN").await;
    let commands = Arc::new(Mutex::new(Vec::new()));
    let seen = commands.clone();
    let inbound = SlackInbound::builder(secret(SIGNING_SECRET))
        .config(config(&server))
        .switchboard(sb.clone())
        .capture_command("/insight")
        .capture_shortcut("capture_message")
        .command("/perks", move |cmd: SlashCommand| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push((cmd.tenant.to_string(), cmd.team_id.clone()));
                Ok::<_, switchboard::Error>(format!("balance for {}", cmd.tenant))
            }
        })
        .build()
        .unwrap();
    Setup {
        server,
        inbound,
        sb,
        store,
        recorder,
        commands,
    }
}

fn command(team: &str, name: &str, trigger: &str) -> InboundRequest {
    signed_form(&[
        ("command", name),
        ("text", "great call"),
        ("user_id", "U0ANN"),
        ("channel_id", "C0FEEDBACK"),
        ("channel_name", "feedback"),
        ("team_id", team),
        ("response_url", "https://hooks.slack.com/commands/1/2/3"),
        ("trigger_id", trigger),
        ("is_enterprise_install", "false"),
    ])
}

fn message_shortcut(team: &str, trigger: &str) -> InboundRequest {
    let payload = json!({
        "type": "message_action",
        "callback_id": "capture_message",
        "trigger_id": trigger,
        "team": { "id": team, "domain": "x" },
        "user": { "id": "U0ANN", "username": "ann", "team_id": team },
        "channel": { "id": "C0FEEDBACK", "name": "feedback" },
        "message": { "type": "message", "text": "ship it", "ts": "1503435956.000247", "user": "U0BOB" },
        "response_url": "https://hooks.slack.com/app/T/1/2",
        "is_enterprise_install": false,
        "enterprise": null
    });
    signed_form(&[("payload", &payload.to_string())])
}

fn submission(team: &str, view_id: &str) -> InboundRequest {
    let payload = json!({
        "type": "view_submission",
        "team": { "id": team, "domain": "x" },
        "user": { "id": "U0ANN", "username": "ann", "team_id": team },
        "view": {
            "id": view_id,
            "type": "modal",
            "callback_id": CAPTURE_CALLBACK_ID,
            "private_metadata": "{\"source\":\"slash_command\"}",
            "state": { "values": {
                "capture_text": { "text": { "type": "plain_text_input", "value": "insight" } }
            } }
        },
        "is_enterprise_install": false
    });
    signed_form(&[("payload", &payload.to_string())])
}

fn uninstalled(team: &str, event_id: &str) -> InboundRequest {
    signed_json(&json!({
        "token": "XXYYZZ",
        "team_id": team,
        "api_app_id": "AXXXXXXXXX",
        "event": { "type": "app_uninstalled" },
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1234567890,
        "authorizations": [
            { "enterprise_id": null, "team_id": team, "user_id": "UB", "is_bot": true, "is_enterprise_install": false }
        ]
    }))
}

#[tokio::test]
async fn commands_and_shortcuts_from_each_workspace_open_modals_with_their_own_token() {
    let s = setup().await;
    for (team, trigger) in [("TACME", "trig-acme-cmd"), ("TGLOBEX", "trig-globex-cmd")] {
        let resp = s.inbound.handle(&command(team, "/insight", trigger)).await;
        assert_eq!(resp.status(), 200);
        assert!(resp.body().is_empty(), "{:?}", resp.body());
    }
    for (team, trigger) in [("TACME", "trig-acme-sc"), ("TGLOBEX", "trig-globex-sc")] {
        let resp = s.inbound.handle(&message_shortcut(team, trigger)).await;
        assert_eq!(resp.status(), 200);
    }
    let mut opened: Vec<(String, String)> = requests(&s.server, "/views.open")
        .await
        .into_iter()
        .map(|r| {
            let token = r.headers["authorization"].to_str().unwrap().to_owned();
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            (token, body["trigger_id"].as_str().unwrap().to_owned())
        })
        .collect();
    opened.sort();
    assert_eq!(
        opened,
        vec![
            ("Bearer xoxb-acme".into(), "trig-acme-cmd".into()),
            ("Bearer xoxb-acme".into(), "trig-acme-sc".into()),
            ("Bearer xoxb-globex".into(), "trig-globex-cmd".into()),
            ("Bearer xoxb-globex".into(), "trig-globex-sc".into()),
        ]
    );

    // Host command handlers are told the tenant.
    let resp = s.inbound.handle(&command("TGLOBEX", "/perks", "t")).await;
    assert_eq!(json_of(&resp)["text"], "balance for globex");
    assert_eq!(
        s.commands.lock().unwrap().clone(),
        vec![("globex".to_owned(), "TGLOBEX".to_owned())]
    );
}

#[tokio::test]
async fn a_captured_insight_belongs_to_its_workspaces_tenant_and_people() {
    let s = setup().await;
    for (team, view) in [("TACME", "VA"), ("TGLOBEX", "VG")] {
        let resp = s.inbound.handle(&submission(team, view)).await;
        assert_eq!(resp.status(), 200, "{:?}", resp.body());
    }
    s.sb.drain(Duration::from_secs(10)).await.unwrap();
    let mut got: Vec<(String, String)> = s
        .recorder
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e.tenant.to_string(),
                e.actor.as_ref().map(|a| a.id.clone()).unwrap_or_default(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("acme".to_owned(), "ann-at-acme".to_owned()),
            ("globex".to_owned(), "ann-at-globex".to_owned()),
        ],
        "the same Slack user id maps to each tenant's own person"
    );
}

#[tokio::test]
async fn app_uninstalled_from_one_workspace_leaves_the_other_connected() {
    let s = setup().await;
    let resp = s.inbound.handle(&uninstalled("TGLOBEX", "Ev1")).await;
    assert_eq!(resp.status(), 200);
    let globex = s
        .store
        .connection(&ConnectionKey::new("slack", "TGLOBEX"))
        .await
        .unwrap()
        .unwrap();
    assert!(!globex.is_connected());
    let acme = s
        .store
        .connection(&ConnectionKey::new("slack", "TACME"))
        .await
        .unwrap()
        .unwrap();
    assert!(acme.is_connected());

    // Acme keeps working; globex is now told it is not installed.
    let resp = s.inbound.handle(&command("TACME", "/insight", "t-a")).await;
    assert!(resp.body().is_empty());
    assert_eq!(requests(&s.server, "/views.open").await.len(), 1);
    let resp = s
        .inbound
        .handle(&command("TGLOBEX", "/insight", "t-g"))
        .await;
    let answer = json_of(&resp);
    assert_eq!(answer["response_type"], "ephemeral");
    assert_eq!(answer["text"], NOT_INSTALLED_TEXT);
    assert_eq!(requests(&s.server, "/views.open").await.len(), 1);
}

#[tokio::test]
async fn a_workspace_with_no_connection_gets_a_clear_not_installed_answer() {
    let s = setup().await;
    let resp = s.inbound.handle(&command("TSTRANGER", "/perks", "t")).await;
    assert_eq!(resp.status(), 200);
    let answer = json_of(&resp);
    assert_eq!(answer["response_type"], "ephemeral");
    assert!(answer["text"].as_str().unwrap().contains("not connected"));
    assert!(
        s.commands.lock().unwrap().is_empty(),
        "the host handler is not called"
    );
    let resp = s.inbound.handle(&submission("TSTRANGER", "VX")).await;
    assert_eq!(json_of(&resp)["response_action"], "errors");
    assert!(requests(&s.server, "/views.open").await.is_empty());
}

#[tokio::test]
async fn an_org_wide_install_is_found_by_its_enterprise_id() {
    let s = setup().await;
    let org = Connection::builder(tenant("umbrella"), "slack", "E0ORG")
        .access_token(secret("xoxb-org"))
        .data(json!({ "enterprise_id": "E0ORG", "is_enterprise_install": true }))
        .build()
        .unwrap();
    s.sb.connect(org).await.unwrap();
    let body = signed_form(&[
        ("command", "/perks"),
        ("team_id", "TWS1"),
        ("enterprise_id", "E0ORG"),
        ("is_enterprise_install", "true"),
        ("user_id", "U1"),
    ]);
    let resp = s.inbound.handle(&body).await;
    assert_eq!(json_of(&resp)["text"], "balance for umbrella");
}
