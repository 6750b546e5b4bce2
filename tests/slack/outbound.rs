//! SlackDestination against a wiremock Slack: exact requests, layout within limits, channel names, DMs, rate limits and failure classes.

use super::common::*;

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
        json!([{ "type": "section", "text": { "type": "mrkdwn", "text": "New perk: *&lt;!channel&gt; &amp; yoga*", "verbatim": true } }])
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

// Real time: under a paused clock the engine's attempt timeout would fire while
// a request waits for the (real) network.
#[tokio::test]
async fn rate_limited_posts_wait_for_retry_after() {
    let server = MockServer::start().await;
    post_message()
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
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
    let s = sb.drain(Duration::from_secs(30)).await.unwrap();
    // A throttled attempt is snoozed for Slack's Retry-After, not retried.
    assert_eq!((s.delivered, s.dead), (1, 0));
    let log = sb.store().delivery_log(1).await.unwrap();
    let failed = log
        .iter()
        .find(|e| e.status == LogStatus::Failed)
        .expect("the 429 is logged");
    assert!(
        failed
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("ratelimited"),
        "{log:?}"
    );
    let sent = log.iter().find(|e| e.status == LogStatus::Sent).unwrap();
    assert!(
        sent.at - failed.at >= chrono::Duration::milliseconds(990),
        "{log:?}"
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
