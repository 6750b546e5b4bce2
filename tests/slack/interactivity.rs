//! Bolt-style interactivity: `block_actions`, `view_submission` / `view_closed` answers, and `block_suggestion` options, each from a signed request.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::common::*;

fn handlers(builder: SlackInboundBuilder) -> SlackInbound {
    builder.token(BotToken::new(secret(TOKEN))).build().unwrap()
}

fn base() -> SlackInboundBuilder {
    SlackInbound::builder(secret(SIGNING_SECRET))
}

fn payload(v: &Value) -> InboundRequest {
    signed_form(&[("payload", &v.to_string())])
}

// Slack's documented block_actions payload, trimmed.
fn block_actions(action_id: &str) -> Value {
    json!({
        "type": "block_actions",
        "team": { "id": "T9TK3CUKW", "domain": "example" },
        "user": { "id": "UA8RXUSPL", "username": "jtorrance", "team_id": "T9TK3CUKW" },
        "api_app_id": "AABA1ABCD",
        "token": "9s8d9as89d8as9d8as989",
        "container": { "type": "message_attachment", "message_ts": "1548261231.000200", "attachment_id": 1, "channel_id": "CBR2V3XEX", "is_ephemeral": false, "is_app_unfurl": false },
        "trigger_id": "12321423423.333649436676.d8c1bb837935619ccad0f624c448ffb3",
        "channel": { "id": "CBR2V3XEX", "name": "review-updates" },
        "message": { "type": "message", "text": "Approve?", "ts": "1548261231.000200" },
        "response_url": "https://hooks.slack.com/actions/AABA1ABCD/1232321423432/D09sSasdasdAS9091209",
        "actions": [ {
            "action_id": action_id,
            "block_id": "=qXel",
            "text": { "type": "plain_text", "text": "View", "emoji": true },
            "value": "click_me_123",
            "type": "button",
            "action_ts": "1548426417.840180"
        } ]
    })
}

#[tokio::test]
async fn a_button_click_reaches_its_action_handler_and_is_acked_empty() {
    let seen: Arc<Mutex<Vec<BlockAction>>> = Arc::default();
    let s = seen.clone();
    let inbound = handlers(base().action("approve", move |a| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(a);
            Ok(())
        }
    }));
    let resp = inbound.handle(&payload(&block_actions("approve"))).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.body().is_empty());
    for _ in 0..100 {
        if !seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let a = seen.lock().unwrap()[0].clone();
    assert_eq!(a.action_id, "approve");
    assert_eq!(a.block_id, "=qXel");
    assert_eq!(a.kind, "button");
    assert_eq!(a.value.as_deref(), Some("click_me_123"));
    assert_eq!(a.user.id, "UA8RXUSPL");
    assert_eq!(a.team_id.as_deref(), Some("T9TK3CUKW"));
    assert_eq!(a.tenant, TenantId::default_tenant());
    assert!(
        a.response_url
            .as_deref()
            .unwrap()
            .starts_with("https://hooks.slack.com/actions/")
    );
    let debug = format!("{a:?}");
    assert!(!debug.contains("hooks.slack.com"), "{debug}");
    assert!(debug.contains("[redacted]"));
    assert!(
        !serde_json::to_string(&a)
            .unwrap()
            .contains("hooks.slack.com")
    );
}

#[tokio::test]
async fn an_action_without_a_handler_is_acked_and_runs_nothing() {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let inbound = handlers(base().action("approve", move |_| {
        c.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    }));
    let resp = inbound.handle(&payload(&block_actions("other"))).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.body().is_empty());
    assert_eq!(count.load(Ordering::SeqCst), 0);
}

fn view_payload(kind: &str, callback_id: &str) -> Value {
    json!({
        "type": kind,
        "team": { "id": "T1DC2JH3J", "domain": "testteamnow" },
        "user": { "id": "U0ANN", "username": "ann", "team_id": "T1DC2JH3J" },
        "api_app_id": "A0F7XDUAZ",
        "view": {
            "id": "VNHU13V36",
            "type": "modal",
            "callback_id": callback_id,
            "private_metadata": "order-7",
            "state": { "values": { "qty": { "qty_input": { "type": "plain_text_input", "value": "0" } } } }
        },
        "is_cleared": false
    })
}

async fn answer_to(response: ViewResponse) -> (u16, Value) {
    let inbound = handlers(base().view("order", move |v: ViewInteraction| {
        let response = response.clone();
        async move {
            assert_eq!(v.kind, ViewEventKind::Submission);
            assert_eq!(v.view.private_metadata, "order-7");
            Ok(response)
        }
    }));
    let resp = inbound
        .handle(&payload(&view_payload("view_submission", "order")))
        .await;
    let status = resp.status().as_u16();
    let body = if resp.body().is_empty() {
        Value::Null
    } else {
        json_of(&resp)
    };
    (status, body)
}

#[tokio::test]
async fn view_submissions_are_answered_with_each_response_action() {
    let modal =
        json!({ "type": "modal", "title": { "type": "plain_text", "text": "Done" }, "blocks": [] });
    assert_eq!(
        answer_to(ViewResponse::Update(modal.clone())).await,
        (200, json!({ "response_action": "update", "view": modal }))
    );
    assert_eq!(
        answer_to(ViewResponse::Push(modal.clone())).await,
        (200, json!({ "response_action": "push", "view": modal }))
    );
    assert_eq!(
        answer_to(ViewResponse::Clear).await,
        (200, json!({ "response_action": "clear" }))
    );
    let errors = BTreeMap::from([("qty".to_owned(), "Order at least one.".to_owned())]);
    assert_eq!(
        answer_to(ViewResponse::Errors(errors)).await,
        (
            200,
            json!({ "response_action": "errors", "errors": { "qty": "Order at least one." } })
        )
    );
    assert_eq!(answer_to(ViewResponse::Close).await, (200, Value::Null));
}

#[tokio::test]
async fn view_closed_reaches_the_view_handler_and_is_acked_empty() {
    let seen: Arc<Mutex<Vec<ViewEventKind>>> = Arc::default();
    let s = seen.clone();
    let inbound = handlers(base().view("order", move |v: ViewInteraction| {
        s.lock().unwrap().push(v.kind);
        async { Ok(ViewResponse::Clear) }
    }));
    let resp = inbound
        .handle(&payload(&view_payload("view_closed", "order")))
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.body().is_empty());
    assert_eq!(*seen.lock().unwrap(), vec![ViewEventKind::Closed]);
}

#[tokio::test]
async fn block_suggestion_is_answered_with_options() {
    let inbound = handlers(base().options("pick_perk", |o: OptionsRequest| async move {
        assert_eq!(o.value, "cof");
        Ok(vec![
            SlackOption::new("Coffee", "perk-1"),
            SlackOption::new("Cake", "perk-2"),
        ])
    }));
    // Slack's block_suggestion payload, trimmed.
    let p = json!({
        "type": "block_suggestion",
        "user": { "id": "U0ANN", "name": "ann", "team_id": "T1DC2JH3J" },
        "container": { "type": "view", "view_id": "V1" },
        "api_app_id": "A0F7XDUAZ",
        "token": "x",
        "action_id": "pick_perk",
        "block_id": "perk",
        "value": "cof",
        "team": { "id": "T1DC2JH3J", "domain": "testteamnow" }
    });
    let resp = inbound.handle(&payload(&p)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        json_of(&resp),
        json!({ "options": [
            { "text": { "type": "plain_text", "text": "Coffee" }, "value": "perk-1" },
            { "text": { "type": "plain_text", "text": "Cake" }, "value": "perk-2" }
        ] })
    );
    let mut other = p.clone();
    other["action_id"] = json!("unknown");
    let resp = inbound.handle(&payload(&other)).await;
    assert_eq!(json_of(&resp), json!({ "options": [] }));
}

#[tokio::test]
async fn unsigned_interactions_are_rejected_before_any_handler() {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let inbound = handlers(base().action("approve", move |_| {
        c.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    }));
    let body = format!(
        "payload={}",
        url::form_urlencoded::byte_serialize(block_actions("approve").to_string().as_bytes())
            .collect::<String>()
    );
    let mut req = signed_form(&[("payload", &block_actions("approve").to_string())]);
    *req.body_mut() = Bytes::from(body.replace("click_me", "click_you"));
    assert_eq!(inbound.handle(&req).await.status(), 401);
    assert_eq!(count.load(Ordering::SeqCst), 0);
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z_]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("actions".to_owned()),
                    Just("action_id".to_owned()),
                    Just("value".to_owned()),
                    Just("user".to_owned()),
                    Just("team".to_owned()),
                    Just("selected_option".to_owned()),
                    "[a-z_]{1,8}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_block_actions_json_never_panics(mut v in json_value(), actions in json_value()) {
        if let Value::Object(m) = &mut v {
            m.insert("type".into(), json!("block_actions"));
            m.insert("actions".into(), actions);
        }
        let _ = BlockAction::parse_all(&v);
        let body = format!(
            "payload={}",
            url::form_urlencoded::byte_serialize(v.to_string().as_bytes()).collect::<String>()
        );
        let _ = Interaction::parse(body.as_bytes());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let inbound = handlers(base().action("action_id", |_| async { Ok(()) }));
        let resp = rt.block_on(inbound.handle(&signed_form(&[("payload", &v.to_string())])));
        let status = resp.status().as_u16();
        prop_assert!(status == 200 || status == 400, "status {}", status);
    }
}
