//! Message lifecycle by receipt against a wiremock Slack: chat.update, chat.delete, thread replies, chat.postEphemeral and views.publish, with the documented request bodies.

use super::common::*;

fn ok(extra: Value) -> ResponseTemplate {
    let mut v = json!({ "ok": true });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    ResponseTemplate::new(200).set_body_json(v)
}

fn call(p: &str) -> MockBuilder {
    Mock::given(method("POST"))
        .and(path(p))
        .and(bearer_token(TOKEN))
        .and(header("content-type", "application/json; charset=utf-8"))
}

#[tokio::test]
async fn update_delete_reply_ephemeral_and_home_by_receipt() {
    let server = MockServer::start().await;
    let dest = destination(&server);
    let receipt = SlackReceipt::from_receipt(&Receipt {
        remote_id: Some("1503435956.000247".into()),
        location: Some("C123ABC456".into()),
    })
    .unwrap();
    let message = SlackMessage::from_blocks(
        "Redemption approved",
        &[
            Block::section("*Approved*"),
            Block::actions(vec![Button::new("open", "Open").value("r1")]),
        ],
    );
    call("/chat.update")
        .and(body_partial_json(json!({
            "channel": "C123ABC456", "ts": "1503435956.000247", "text": "Redemption approved",
            "blocks": [
                { "type": "section", "text": { "type": "mrkdwn", "text": "*Approved*", "verbatim": true } },
                { "type": "actions", "elements": [{ "type": "button", "action_id": "open",
                    "text": { "type": "plain_text", "text": "Open", "emoji": true }, "value": "r1" }] }
            ]
        })))
        .respond_with(ok(json!({ "channel": "C123ABC456", "ts": "1503435956.000247", "text": "Redemption approved" })))
        .expect(1)
        .mount(&server)
        .await;
    call("/chat.postMessage")
        .and(body_partial_json(json!({
            "channel": "C123ABC456", "thread_ts": "1503435956.000247", "reply_broadcast": true
        })))
        .respond_with(posted("C123ABC456"))
        .expect(1)
        .mount(&server)
        .await;
    call("/chat.postEphemeral")
        .and(body_partial_json(
            json!({ "channel": "C123ABC456", "user": "U0BPQUNTA" }),
        ))
        .respond_with(ok(json!({ "message_ts": "1502210682.580145" })))
        .expect(1)
        .mount(&server)
        .await;
    call("/views.publish")
        .and(body_partial_json(
            json!({ "user_id": "U0BPQUNTA", "view": { "type": "home" } }),
        ))
        .respond_with(ok(json!({ "view": { "id": "VMHU10V25", "type": "home" } })))
        .expect(1)
        .mount(&server)
        .await;
    call("/chat.delete")
        .and(body_partial_json(
            json!({ "channel": "C123ABC456", "ts": "1503435956.000247" }),
        ))
        .respond_with(ok(
            json!({ "channel": "C123ABC456", "ts": "1503435956.000247" }),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let updated = dest.update(None, &receipt, &message).await.unwrap();
    assert_eq!(updated, receipt);
    let reply = dest.reply(None, &receipt, &message, true).await.unwrap();
    assert_eq!(reply.channel, "C123ABC456");
    let ts = dest
        .post_ephemeral(None, "C123ABC456", "U0BPQUNTA", &message)
        .await
        .unwrap();
    assert_eq!(ts, "1502210682.580145");
    let view = home_view(&[Block::header("Your balance"), Block::section("*42 EUR*")]);
    assert_eq!(
        dest.publish_home(None, "U0BPQUNTA", &view).await.unwrap(),
        "VMHU10V25"
    );
    dest.delete(None, &receipt).await.unwrap();
}

#[tokio::test]
async fn deleting_a_message_already_gone_is_not_an_error() {
    let server = MockServer::start().await;
    call("/chat.delete")
        .respond_with(slack_error("message_not_found"))
        .expect(1)
        .mount(&server)
        .await;
    let receipt = SlackReceipt {
        channel: "C1".into(),
        ts: "1.2".into(),
    };
    destination(&server).delete(None, &receipt).await.unwrap();
}
