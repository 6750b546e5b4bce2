//! Thread follow-ups and block templates against a wiremock Slack: the first message of a key starts the thread, later events of that key reply in it (`thread_ts` from the first answer) across a restart; templates rendering Block Kit send exactly the validated blocks, or dead-letter with the reason.

use super::common::*;

fn redemption(id: &str, kind: &str, redemption: &str) -> Event {
    event(
        id,
        kind,
        None,
        json!({ "redemption_id": redemption, "perk": "Yoga" }),
    )
}

fn threaded(server: &MockServer, store: &Arc<dyn Store>, broadcast: bool) -> Switchboard {
    let threads =
        ThreadFollowUps::by_data("redemption_id", store.clone()).reply_broadcast(broadcast);
    Switchboard::builder()
        .store_arc(store.clone())
        .destination(destination(server).with_thread_follow_ups(threads))
        .route(
            Route::on("redemption.*")
                .to(
                    "slack",
                    Target::ChannelId {
                        id: "C123ABC456".into(),
                    },
                )
                .template("{{ kind }}: {{ data.perk }}"),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn follow_ups_of_one_key_reply_in_the_thread_of_its_first_message() {
    let server = MockServer::start().await;
    // Slack's answers: each post gets its own ts.
    let n = Arc::new(AtomicUsize::new(0));
    let counter = n.clone();
    post_message()
        .respond_with(move |_: &Request| {
            let i = counter.fetch_add(1, Ordering::SeqCst);
            ResponseTemplate::new(200).set_body_json(json!({
                "ok": true,
                "channel": "C123ABC456",
                "ts": format!("1503435956.00024{i}"),
                "message": { "type": "message", "text": "x", "ts": format!("1503435956.00024{i}") }
            }))
        })
        .mount(&server)
        .await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let sb = threaded(&server, &store, true);
    sb.publish(redemption("e1", "redemption.created", "r1"))
        .await
        .unwrap();
    assert_eq!(sb.run_until_idle().await.unwrap().delivered, 1);
    sb.publish(redemption("e2", "redemption.updated", "r1"))
        .await
        .unwrap();
    sb.publish(redemption("e3", "redemption.created", "r2"))
        .await
        .unwrap();
    assert_eq!(sb.run_until_idle().await.unwrap().delivered, 2);

    let bodies = bodies(&server, "/chat.postMessage").await;
    assert_eq!(bodies.len(), 3);
    // The first of r1 starts the thread.
    assert!(bodies[0].get("thread_ts").is_none());
    let by_text = |t: &str| {
        bodies
            .iter()
            .find(|b| b["text"].as_str() == Some(t))
            .cloned()
            .unwrap()
    };
    let update = by_text("redemption.updated: Yoga");
    assert_eq!(update["thread_ts"], "1503435956.000240");
    assert_eq!(update["reply_broadcast"], true);
    // Another redemption is a message of its own.
    let r2 = bodies
        .iter()
        .skip(1)
        .find(|b| b["text"] == "redemption.created: Yoga")
        .unwrap();
    assert!(r2.get("thread_ts").is_none());

    // A restart (a new switchboard and destination on the same store) keeps the thread.
    drop(sb);
    let again = threaded(&server, &store, false);
    again
        .publish(redemption("e4", "redemption.fulfilled", "r1"))
        .await
        .unwrap();
    assert_eq!(again.run_until_idle().await.unwrap().delivered, 1);
    let last = bodies_last(&server).await;
    assert_eq!(last["text"], "redemption.fulfilled: Yoga");
    assert_eq!(last["thread_ts"], "1503435956.000240");
    assert!(last.get("reply_broadcast").is_none());
}

async fn bodies_last(server: &MockServer) -> Value {
    bodies(server, "/chat.postMessage").await.pop().unwrap()
}

#[tokio::test]
async fn events_without_the_key_are_posted_as_usual() {
    let server = MockServer::start().await;
    post_message()
        .respond_with(posted("C123ABC456"))
        .expect(2)
        .mount(&server)
        .await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let sb = threaded(&server, &store, false);
    sb.publish(event(
        "e1",
        "redemption.created",
        None,
        json!({ "perk": "Yoga" }),
    ))
    .await
    .unwrap();
    sb.publish(event(
        "e2",
        "redemption.updated",
        None,
        json!({ "perk": "Yoga" }),
    ))
    .await
    .unwrap();
    assert_eq!(sb.run_until_idle().await.unwrap().delivered, 2);
    for b in bodies(&server, "/chat.postMessage").await {
        assert!(b.get("thread_ts").is_none());
    }
}

const REDEEMED_BLOCKS: &str = r#"[
  {"type": "header", "text": {"type": "plain_text", "text": "Perk redeemed"}},
  {"type": "section", "text": {"type": "mrkdwn", "text": "*{{ data.perk }}* for {{ data.name }}"},
   "accessory": {"type": "button", "action_id": "open_redemption", "value": "{{ data.redemption_id }}",
                 "text": {"type": "plain_text", "text": "Open"}}},
  {"type": "context", "elements": [{"type": "mrkdwn", "text": "{{ kind }}"}]}
]"#;

fn with_blocks(server: &MockServer, template: &str) -> Switchboard {
    let template = BlockTemplate::new(template).unwrap();
    Switchboard::builder()
        .store(MemoryStore::new())
        .destination(destination(server).with_block_template("redeemed", template))
        .route(
            Route::on("redemption.created")
                .named("redeemed")
                .to(
                    "slack",
                    Target::ChannelId {
                        id: "C123ABC456".into(),
                    },
                )
                .template("{{ data.perk }} redeemed by {{ data.name }}"),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_block_template_sends_exactly_its_blocks_with_user_values_escaped() {
    let server = MockServer::start().await;
    post_message()
        .respond_with(posted("C123ABC456"))
        .expect(1)
        .mount(&server)
        .await;
    let sb = with_blocks(&server, REDEEMED_BLOCKS);
    sb.publish(event(
        "e1",
        "redemption.created",
        None,
        json!({ "redemption_id": "r-1", "perk": "Yoga & \"more\"", "name": "<!channel> <https://evil.example|click>" }),
    ))
    .await
    .unwrap();
    assert_eq!(sb.run_until_idle().await.unwrap().delivered, 1);
    let body = &bodies(&server, "/chat.postMessage").await[0];
    assert_eq!(
        body["text"],
        "Yoga &amp; \"more\" redeemed by &lt;!channel&gt; &lt;https://evil.example|click&gt;"
    );
    assert_eq!(
        body["blocks"],
        json!([
            { "type": "header", "text": { "type": "plain_text", "text": "Perk redeemed", "emoji": true } },
            {
                "type": "section",
                "text": { "type": "mrkdwn", "text": "*Yoga &amp; \"more\"* for &lt;!channel&gt; &lt;https://evil.example|click&gt;", "verbatim": true },
                "accessory": { "type": "button", "action_id": "open_redemption", "value": "r-1", "text": { "type": "plain_text", "text": "Open", "emoji": true } }
            },
            { "type": "context", "elements": [{ "type": "mrkdwn", "text": "redemption.created", "verbatim": true }] }
        ])
    );
}

#[tokio::test]
async fn a_block_template_rendering_unsupported_blocks_is_a_dead_letter_saying_why() {
    let server = MockServer::start().await;
    post_message()
        .respond_with(posted("C123ABC456"))
        .expect(0)
        .mount(&server)
        .await;
    let sb = with_blocks(
        &server,
        r#"[{"type": "image", "image_url": "{{ data.url }}", "alt_text": "x"}]"#,
    );
    sb.publish(event(
        "e1",
        "redemption.created",
        None,
        json!({ "url": "https://x.example/a.png" }),
    ))
    .await
    .unwrap();
    assert_eq!(sb.run_until_idle().await.unwrap().dead, 1);
    let dead = sb.dead_letters(10).await.unwrap();
    let reason = dead[0].error.reason();
    assert!(
        reason.contains("block 0: block type \"image\" is not supported"),
        "{reason}"
    );
}
