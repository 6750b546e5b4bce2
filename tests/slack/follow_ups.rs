//! Thread follow-ups against a wiremock Slack: the first message of a key starts the thread, later events of that key reply in it (`thread_ts` from the first answer), across a restart on the same store.

use super::common::*;

fn redemption(id: &str, kind: &str, redemption: &str) -> Event {
    event(id, kind, None, json!({ "redemption_id": redemption, "perk": "Yoga" }))
}

fn threaded(server: &MockServer, store: &Arc<dyn Store>, broadcast: bool) -> Switchboard {
    let threads = ThreadFollowUps::by_data("redemption_id", store.clone()).reply_broadcast(broadcast);
    Switchboard::builder()
        .store_arc(store.clone())
        .destination(destination(server).with_thread_follow_ups(threads))
        .route(
            Route::on("redemption.*")
                .to("slack", Target::ChannelId { id: "C123ABC456".into() })
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
    sb.publish(redemption("e1", "redemption.created", "r1")).await.unwrap();
    assert_eq!(sb.run_until_idle().await.unwrap().delivered, 1);
    sb.publish(redemption("e2", "redemption.updated", "r1")).await.unwrap();
    sb.publish(redemption("e3", "redemption.created", "r2")).await.unwrap();
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
    again.publish(redemption("e4", "redemption.fulfilled", "r1")).await.unwrap();
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
    post_message().respond_with(posted("C123ABC456")).expect(2).mount(&server).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let sb = threaded(&server, &store, false);
    sb.publish(event("e1", "redemption.created", None, json!({ "perk": "Yoga" }))).await.unwrap();
    sb.publish(event("e2", "redemption.updated", None, json!({ "perk": "Yoga" }))).await.unwrap();
    assert_eq!(sb.run_until_idle().await.unwrap().delivered, 2);
    for b in bodies(&server, "/chat.postMessage").await {
        assert!(b.get("thread_ts").is_none());
    }
}
