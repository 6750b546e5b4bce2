//! Two tenants with two Slack workspaces on one server: each post with its own workspace's token, parking per tenant, reinstall, and "not connected".

use super::common::*;

fn multi_tenant_board(server: &MockServer, store: Arc<dyn Store>) -> Switchboard {
    // Real time: quick pacing so the test does not wait a second per post.
    let config = config(server).channel_limit(RateLimit::per_second(50).with_burst(10));
    let dest = SlackDestination::for_connections(config.clone()).unwrap();
    let identity =
        SlackIdentity::for_connections_with_client(&config, dest.client().clone(), store.clone());
    Switchboard::builder()
        .store_arc(store)
        .destination(dest)
        .resolver("slack", identity)
        .route(
            Route::on("wallet.funded")
                .named("funded")
                .to("slack", Target::SubjectDm)
                .template("funded {{ id }}"),
        )
        .route(
            Route::on("catalog.perk_added")
                .named("catalog")
                .to("slack", Target::channel("general"))
                .template("perk {{ id }}"),
        )
        .build()
        .unwrap()
}

async fn publish_both(sb: &Switchboard, tenant_id: &str, prefix: &str, n: usize) {
    for i in 0..n {
        sb.publish(tenant_event(
            tenant_id,
            &format!("{prefix}-dm{i}"),
            "wallet.funded",
            Some("u1"),
            json!({}),
        ))
        .await
        .unwrap();
        sb.publish(tenant_event(
            tenant_id,
            &format!("{prefix}-ch{i}"),
            "catalog.perk_added",
            None,
            json!({}),
        ))
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn each_tenant_posts_with_its_own_workspace_and_a_revoked_one_parks_alone() {
    let server = MockServer::start().await;
    let slack = Workspaces::default();
    slack
        .token("xoxb-acme", "TACME")
        .token("xoxb-globex", "TGLOBEX")
        .token("xoxb-globex-2", "TGLOBEX");
    slack.mount(&server).await;
    let store = keyed_store();
    // The same host user id in both tenants maps to different Slack users.
    link(&store, "acme", "TACME", "u1", "UA1").await;
    link(&store, "globex", "TGLOBEX", "u1", "UG1").await;
    let sb = multi_tenant_board(&server, store.clone());
    sb.connect(slack_connection("acme", "TACME", "xoxb-acme"))
        .await
        .unwrap();
    sb.connect(slack_connection("globex", "TGLOBEX", "xoxb-globex"))
        .await
        .unwrap();

    publish_both(&sb, "acme", "a1", 1).await;
    publish_both(&sb, "globex", "g1", 1).await;
    sb.drain(Duration::from_secs(60)).await.unwrap();
    let mut sent = posts(&server).await;
    sent.sort();
    assert_eq!(
        sent,
        vec![
            ("xoxb-acme".into(), "CTACMEGEN".into(), "perk a1-ch0".into()),
            (
                "xoxb-acme".into(),
                "DTACMEUA1".into(),
                "funded a1-dm0".into()
            ),
            (
                "xoxb-globex".into(),
                "CTGLOBEXGEN".into(),
                "perk g1-ch0".into()
            ),
            (
                "xoxb-globex".into(),
                "DTGLOBEXUG1".into(),
                "funded g1-dm0".into()
            ),
        ],
        "each DM and channel post goes out with its own workspace's token"
    );
    // Channel names and DMs were resolved in each workspace with its token.
    assert_eq!(
        requests_with(&server, "/conversations.list", "xoxb-acme")
            .await
            .len(),
        1
    );
    assert_eq!(
        requests_with(&server, "/conversations.list", "xoxb-globex")
            .await
            .len(),
        1
    );
    let opened: Vec<Value> = bodies(&server, "/conversations.open").await;
    assert_eq!(opened.len(), 2);

    // Globex's token is revoked: only globex's deliveries park.
    slack.revoke("xoxb-globex");
    publish_both(&sb, "acme", "a2", 3).await;
    publish_both(&sb, "globex", "g2", 3).await;
    sb.drain(Duration::from_secs(60)).await.unwrap();
    let acme_sent = posts(&server)
        .await
        .into_iter()
        .filter(|(t, _, _)| t == "xoxb-acme")
        .count();
    assert_eq!(acme_sent, 2 + 6, "all of acme's arrive");
    let globex = sb.tenant_status(&tenant("globex")).await.unwrap();
    assert_eq!(globex.len(), 1);
    assert!(!globex[0].connected);
    assert!(
        globex[0]
            .disconnected_reason
            .as_deref()
            .unwrap_or("")
            .contains("token_revoked"),
        "{globex:?}"
    );
    assert_eq!(globex[0].parked, 6);
    let acme = sb.tenant_status(&tenant("acme")).await.unwrap();
    assert!(acme[0].connected);
    assert_eq!(acme[0].parked, 0);
    let stored = store
        .connection(&ConnectionKey::new("slack", "TGLOBEX"))
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.is_connected());
    assert!(
        store
            .connection(&ConnectionKey::new("slack", "TACME"))
            .await
            .unwrap()
            .unwrap()
            .is_connected()
    );

    // Globex reinstalls: its parked deliveries go out with the new token, in order.
    sb.connect(slack_connection("globex", "TGLOBEX", "xoxb-globex-2"))
        .await
        .unwrap();
    sb.drain(Duration::from_secs(60)).await.unwrap();
    let resumed: Vec<(String, String)> = posts(&server)
        .await
        .into_iter()
        .filter(|(t, _, _)| t == "xoxb-globex-2")
        .map(|(_, c, text)| (c, text))
        .collect();
    let dms: Vec<&str> = resumed
        .iter()
        .filter(|(c, _)| c.starts_with('D'))
        .map(|(_, t)| t.as_str())
        .collect();
    let channel: Vec<&str> = resumed
        .iter()
        .filter(|(c, _)| c.starts_with('C'))
        .map(|(_, t)| t.as_str())
        .collect();
    // The revoked head was retried too; each target keeps its order.
    assert_eq!(dms, ["funded g2-dm0", "funded g2-dm1", "funded g2-dm2"]);
    assert_eq!(channel, ["perk g2-ch0", "perk g2-ch1", "perk g2-ch2"]);
    assert!(sb.dead_letters(10).await.unwrap().is_empty());
    assert!(sb.tenant_status(&tenant("globex")).await.unwrap()[0].connected);
}

#[tokio::test]
async fn a_tenant_with_no_slack_connection_is_parked_then_delivered_after_it_connects() {
    let server = MockServer::start().await;
    let slack = Workspaces::default();
    slack.token("xoxb-initech", "TINI");
    slack.mount(&server).await;
    let store = keyed_store();
    link(&store, "initech", "TINI", "u1", "UI1").await;
    let sb = multi_tenant_board(&server, store.clone());
    publish_both(&sb, "initech", "i", 2).await;
    sb.drain(Duration::from_secs(60)).await.unwrap();
    assert!(
        posts(&server).await.is_empty(),
        "nothing goes out without a connection"
    );
    let st = sb.tenant_status(&tenant("initech")).await.unwrap();
    assert!(!st[0].connected);
    assert!(
        st[0]
            .disconnected_reason
            .as_deref()
            .unwrap_or("")
            .contains("not connected"),
        "{st:?}"
    );
    assert_eq!(st[0].parked, 4);
    assert!(
        sb.dead_letters(10).await.unwrap().is_empty(),
        "parked, not dead"
    );

    sb.connect(slack_connection("initech", "TINI", "xoxb-initech"))
        .await
        .unwrap();
    sb.drain(Duration::from_secs(60)).await.unwrap();
    let texts: Vec<String> = posts(&server)
        .await
        .into_iter()
        .map(|(token, _, text)| {
            assert_eq!(token, "xoxb-initech");
            text
        })
        .collect();
    assert_eq!(texts.len(), 4);
    assert!(texts.contains(&"funded i-dm1".to_owned()));
}

#[tokio::test]
async fn the_fixed_token_serves_only_the_default_tenant() {
    let server = MockServer::start().await;
    let slack = Workspaces::default();
    slack.token(TOKEN, "TDEF").token("xoxb-acme", "TACME");
    slack.mount(&server).await;
    let store = keyed_store();
    let sb = Switchboard::builder()
        .store_arc(store)
        .destination(destination(&server))
        .route(
            Route::on("x")
                .to("slack", Target::ChannelId { id: "C1".into() })
                .template("hi {{ id }}"),
        )
        .build()
        .unwrap();
    sb.publish(event("d1", "x", None, json!({}))).await.unwrap();
    sb.publish(tenant_event("acme", "a1", "x", None, json!({})))
        .await
        .unwrap();
    sb.drain(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        posts(&server).await,
        vec![(TOKEN.to_owned(), "C1".to_owned(), "hi d1".to_owned())],
        "acme has no connection: parked, never sent with the host's fixed token"
    );
    sb.connect(slack_connection("acme", "TACME", "xoxb-acme"))
        .await
        .unwrap();
    sb.drain(Duration::from_secs(10)).await.unwrap();
    assert_eq!(posts(&server).await[1].0, "xoxb-acme");
}

#[tokio::test]
async fn an_org_wide_install_names_the_workspace_in_list_calls() {
    let server = MockServer::start().await;
    // Slack requires team_id on conversations.list and users.list for an org token.
    Mock::given(method("GET"))
        .and(path("/auth.teams.list"))
        .and(bearer_token("xoxb-org"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true,
            "teams": [
                { "name": "Shinichi's workspace", "id": "T12345678" },
                { "name": "Migi's workspace", "id": "T12345679" }
            ],
            "response_metadata": { "next_cursor": "" }
        })))
        // Once for the sync, once for the destination (then cached).
        .expect(2)
        .mount(&server)
        .await;
    for (team, channels) in [
        ("T12345678", json!([{ "id": "C0ONE", "name": "general" }])),
        ("T12345679", json!([{ "id": "C0TWO", "name": "perks" }])),
    ] {
        Mock::given(method("GET"))
            .and(path("/conversations.list"))
            .and(query_param("team_id", team))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "ok": true, "channels": channels, "response_metadata": { "next_cursor": "" }
            })))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/users.list"))
            .and(query_param("team_id", team))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "ok": true,
                "members": [{ "id": format!("W{team}"), "profile": { "email": format!("{team}@starship.example") } }],
                "response_metadata": { "next_cursor": "" }
            })))
            .expect(1)
            .mount(&server)
            .await;
    }
    post_message_as("xoxb-org")
        .respond_with(posted("C0TWO"))
        .expect(1)
        .mount(&server)
        .await;
    let store = keyed_store();
    let config = config(&server);
    let dest = SlackDestination::for_connections(config.clone()).unwrap();
    let identity =
        SlackIdentity::for_connections_with_client(&config, dest.client().clone(), store.clone());
    let sb = Switchboard::builder()
        .store_arc(store)
        .destination(dest)
        .resolver("slack", identity)
        .route(
            Route::on("x")
                .to("slack", Target::channel("perks"))
                .template("hi"),
        )
        .build()
        .unwrap();
    let org = Connection::builder(tenant("starship"), "slack", "E1XXX")
        .access_token(secret("xoxb-org"))
        .data(json!({ "enterprise_id": "E1XXX", "is_enterprise_install": true }))
        .build()
        .unwrap();
    sb.connect(org).await.unwrap();
    let people = [
        Person::new("u1").email("T12345678@starship.example"),
        Person::new("u2").email("T12345679@starship.example"),
    ];
    let report = sb
        .sync_identities(&tenant("starship"), "slack", &people)
        .await
        .unwrap();
    assert_eq!(report.matched.len(), 2, "{report:?}");
    sb.publish(tenant_event("starship", "e1", "x", None, json!({})))
        .await
        .unwrap();
    sb.drain(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        posts(&server).await[0].1,
        "C0TWO",
        "found in the second workspace"
    );
    server.verify().await;
}
