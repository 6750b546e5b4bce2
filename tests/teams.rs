//! Teams outbound and Graph identity against wiremock: token requests, conversation creation, activities, Graph pages and Microsoft's documented errors.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Value, json};
use switchboard::teams::{
    ADAPTIVE_CARD_CONTENT_TYPE, TeamsConfig, TeamsCredentials, TeamsDestination, TeamsIdentity,
    TokenProvider,
};
use switchboard::{
    Connection, Delivery, DeliveryError, Destination, Event, IdentityResolver, MemoryStore,
    Message, MessageFormat, Person, Resolution, Store, Target, TenantId, identity::ResolveContext,
};
use wiremock::matchers::{
    body_json, body_string_contains, header, method, path, path_regex, query_param,
};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn config(server: &MockServer) -> TeamsConfig {
    TeamsConfig::new()
        .login_url(&server.uri())
        .unwrap()
        .graph_url(&server.uri())
        .unwrap()
        .default_service_url(&format!("{}/teams", server.uri()))
        .unwrap()
}

fn token_body(token: &str) -> Value {
    // The documented client-credentials answer.
    json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token})
}

async fn mock_token(server: &MockServer, tenant: &str, app: &str, token: &str, times: u64) {
    Mock::given(method("POST"))
        .and(path(format!("/{tenant}/oauth2/v2.0/token")))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string_contains("grant_type=client_credentials"))
        .and(body_string_contains(format!("client_id={app}")))
        .and(body_string_contains("client_secret=s3cret"))
        .and(body_string_contains(
            "scope=https%3A%2F%2Fapi.botframework.com%2F.default",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body(token)))
        .expect(times)
        .mount(server)
        .await;
}

fn connection(tenant: &str, entra: &str, app: &str, data: Value) -> Arc<Connection> {
    let mut data = data;
    data["app_id"] = json!(app);
    Arc::new(
        Connection::builder(TenantId::new(tenant).unwrap(), "teams", entra)
            .secret("client_secret", SecretString::from("s3cret"))
            .data(data)
            .build()
            .unwrap(),
    )
}

fn delivery(
    connection: Option<Arc<Connection>>,
    target: Target,
    recipient: Option<&str>,
) -> Delivery {
    let event = Event::builder("e1", "wallet.funded").build().unwrap();
    Delivery {
        id: 1,
        tenant: connection
            .as_ref()
            .map_or_else(TenantId::default_tenant, |c| c.tenant.clone()),
        connection,
        event: Arc::new(event),
        route: "r".to_owned(),
        target,
        recipient: recipient.map(str::to_owned),
        recipient_user_id: Some("u1".to_owned()),
        message: Message {
            text: "You got 50 points [claim](https://evil.example) <at>all</at>".to_owned(),
            title: Some("Wallet funded".to_owned()),
            format: MessageFormat::Plain,
        },
        attempt: 1,
    }
}

#[tokio::test]
async fn dm_creates_the_personal_conversation_once_and_sends_an_adaptive_card() {
    let server = MockServer::start().await;
    mock_token(&server, "tenant-1", "app-1", "tok-1", 1).await;
    Mock::given(method("POST"))
        .and(path("/amer/v3/conversations"))
        .and(header("authorization", "Bearer tok-1"))
        .and(body_json(json!({
            "isGroup": false,
            "bot": {"id": "app-1"},
            "members": [{"id": "aad-1"}],
            "tenantId": "tenant-1",
            "channelData": {"tenant": {"id": "tenant-1"}}
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "a:1xyz"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/amer/v3/conversations/a:1xyz/activities"))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "1:act"})))
        .expect(2)
        .mount(&server)
        .await;
    let dest = TeamsDestination::new(config(&server)).unwrap();
    assert_eq!(dest.platform(), Some("teams"));
    let conn = connection(
        "acme",
        "tenant-1",
        "app-1",
        json!({"service_url": format!("{}/amer/", server.uri())}),
    );
    for _ in 0..2 {
        let receipt = dest
            .deliver(&delivery(
                Some(conn.clone()),
                Target::SubjectDm,
                Some("aad-1"),
            ))
            .await
            .unwrap();
        assert_eq!(receipt.remote_id.as_deref(), Some("1:act"));
        assert_eq!(receipt.location.as_deref(), Some("a:1xyz"));
    }
    let requests = server.received_requests().await.unwrap();
    let sent = requests
        .iter()
        .find(|r| r.url.path().ends_with("/activities"))
        .unwrap();
    let activity: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(activity["type"], "message");
    let attachment = &activity["attachments"][0];
    assert_eq!(attachment["contentType"], ADAPTIVE_CARD_CONTENT_TYPE);
    assert_eq!(attachment["content"]["type"], "AdaptiveCard");
    assert_eq!(attachment["content"]["version"], "1.5");
    let body_text = attachment["content"]["body"][1]["text"].as_str().unwrap();
    // User text can form neither a link nor a mention.
    assert!(body_text.contains(r"\[claim\]"), "{body_text}");
    assert!(!body_text.contains("://"), "{body_text}");
    assert!(body_text.contains(r"\<at\>"), "{body_text}");
    assert!(
        activity["summary"]
            .as_str()
            .unwrap()
            .starts_with("Wallet funded")
    );
}

#[tokio::test]
async fn channel_posts_go_to_the_stored_conversation_reference() {
    let server = MockServer::start().await;
    mock_token(&server, "tenant-1", "app-1", "tok-1", 1).await;
    Mock::given(method("POST"))
        .and(path(
            "/emea/v3/conversations/19:abc@thread.tacv2/activities",
        ))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "1:post"})))
        .expect(2)
        .mount(&server)
        .await;
    let dest = TeamsDestination::new(config(&server)).unwrap();
    let conn = connection(
        "acme",
        "tenant-1",
        "app-1",
        json!({"conversations": {"general": {
            "serviceUrl": format!("{}/emea/", server.uri()),
            "conversationId": "19:abc@thread.tacv2",
            "tenantId": "tenant-1",
            "name": "General"
        }}}),
    );
    let by_name = dest
        .deliver(&delivery(
            Some(conn.clone()),
            Target::channel("#General"),
            None,
        ))
        .await
        .unwrap();
    assert_eq!(by_name.location.as_deref(), Some("19:abc@thread.tacv2"));
    let by_id = dest
        .deliver(&delivery(
            Some(conn.clone()),
            Target::ChannelId {
                id: "19:abc@thread.tacv2".into(),
            },
            None,
        ))
        .await
        .unwrap();
    assert_eq!(by_id.remote_id.as_deref(), Some("1:post"));
    let unknown = dest
        .deliver(&delivery(Some(conn), Target::channel("random"), None))
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, DeliveryError::Permanent { .. }),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn a_burst_makes_one_token_request() {
    let server = MockServer::start().await;
    mock_token(&server, "tenant-1", "app-1", "tok-1", 1).await;
    Mock::given(method("POST"))
        .and(path_regex(
            r"^/teams/v3/conversations/19:c[0-9]+@thread.tacv2/activities$",
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "x"})))
        .expect(20)
        .mount(&server)
        .await;
    let dest = Arc::new(TeamsDestination::new(config(&server)).unwrap());
    let conn = connection("acme", "tenant-1", "app-1", json!({}));
    // 20 conversations (one conversation's windows allow 7 per second).
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let dest = dest.clone();
            let target = Target::ChannelId {
                id: format!("19:c{i}@thread.tacv2"),
            };
            let d = delivery(Some(conn.clone()), target, None);
            tokio::spawn(async move { dest.deliver(&d).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(dest.token_provider().requests(), 1);
}

#[tokio::test]
async fn the_eighth_send_to_one_conversation_in_a_second_waits_for_the_window() {
    let server = MockServer::start().await;
    mock_token(&server, "tenant-1", "app-1", "tok-1", 1).await;
    Mock::given(method("POST"))
        .and(path("/teams/v3/conversations/19:c@thread.tacv2/activities"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "x"})))
        .expect(7)
        .mount(&server)
        .await;
    let dest = TeamsDestination::new(config(&server)).unwrap();
    let conn = connection("acme", "tenant-1", "app-1", json!({}));
    let target = Target::ChannelId {
        id: "19:c@thread.tacv2".into(),
    };
    for _ in 0..7 {
        dest.deliver(&delivery(Some(conn.clone()), target.clone(), None))
            .await
            .unwrap();
    }
    // Not sent (the mock expects exactly 7): snoozed until the second is over.
    match dest
        .deliver(&delivery(Some(conn.clone()), target.clone(), None))
        .await
    {
        Err(DeliveryError::RateLimited {
            retry_after: Some(wait),
            ..
        }) => assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_millis(1_040),
            "{wait:?}"
        ),
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

#[tokio::test]
async fn two_tenants_use_separate_tokens() {
    let server = MockServer::start().await;
    mock_token(&server, "tenant-a", "app-1", "tok-a", 1).await;
    mock_token(&server, "tenant-b", "app-1", "tok-b", 1).await;
    for (tok, conv) in [
        ("tok-a", "19:a@thread.tacv2"),
        ("tok-b", "19:b@thread.tacv2"),
    ] {
        Mock::given(method("POST"))
            .and(path(format!("/teams/v3/conversations/{conv}/activities")))
            .and(header("authorization", format!("Bearer {tok}").as_str()))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": tok})))
            .expect(1)
            .mount(&server)
            .await;
    }
    let dest = TeamsDestination::new(config(&server)).unwrap();
    let a = connection("acme", "tenant-a", "app-1", json!({}));
    let b = connection("globex", "tenant-b", "app-1", json!({}));
    let ra = dest
        .deliver(&delivery(
            Some(a),
            Target::ChannelId {
                id: "19:a@thread.tacv2".into(),
            },
            None,
        ))
        .await
        .unwrap();
    let rb = dest
        .deliver(&delivery(
            Some(b),
            Target::ChannelId {
                id: "19:b@thread.tacv2".into(),
            },
            None,
        ))
        .await
        .unwrap();
    assert_eq!(ra.remote_id.as_deref(), Some("tok-a"));
    assert_eq!(rb.remote_id.as_deref(), Some("tok-b"));
}

async fn failing_send(status: u16, body: Value, retry_after: Option<&str>) -> DeliveryError {
    let server = MockServer::start().await;
    mock_token(&server, "tenant-1", "app-1", "tok-1", 1).await;
    let mut response = ResponseTemplate::new(status).set_body_json(body);
    if let Some(r) = retry_after {
        response = response.insert_header("Retry-After", r);
    }
    Mock::given(method("POST"))
        .and(path("/teams/v3/conversations/19:c@thread.tacv2/activities"))
        .respond_with(response)
        .expect(1)
        .mount(&server)
        .await;
    let dest = TeamsDestination::new(config(&server)).unwrap();
    let conn = connection("acme", "tenant-1", "app-1", json!({}));
    dest.deliver(&delivery(
        Some(conn),
        Target::ChannelId {
            id: "19:c@thread.tacv2".into(),
        },
        None,
    ))
    .await
    .unwrap_err()
}

#[tokio::test]
async fn documented_errors_are_classified() {
    let e = failing_send(
        403,
        json!({"error": {"code": "BotNotInConversationRoster", "message": "The bot is not part of the conversation roster."}}),
        None,
    )
    .await;
    assert!(matches!(e, DeliveryError::RecipientUnknown { .. }), "{e:?}");
    assert!(e.reason().contains("not installed"), "{e}");
    let e = failing_send(
        403,
        json!({"error": {"code": "Forbidden", "message": "Forbidden"}, "subCode": "MessageWritesBlocked"}),
        None,
    )
    .await;
    assert!(matches!(e, DeliveryError::RecipientUnknown { .. }), "{e:?}");
    let e = failing_send(
        404,
        json!({"error": {"code": "ConversationNotFound", "message": "Conversation not found."}}),
        None,
    )
    .await;
    assert!(matches!(e, DeliveryError::Permanent { .. }), "{e:?}");
    let e = failing_send(
        401,
        json!({"message": "Authorization has been denied for this request."}),
        None,
    )
    .await;
    assert!(matches!(e, DeliveryError::Disconnected { .. }), "{e:?}");
    let e = failing_send(
        429,
        json!({"error": {"code": "Throttled", "message": "x"}}),
        Some("7"),
    )
    .await;
    assert_eq!(
        e,
        DeliveryError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            reason: e.reason().to_owned()
        }
    );
    for status in [412, 502, 504, 500] {
        let e = failing_send(status, Value::Null, None).await;
        assert!(
            matches!(e, DeliveryError::Temporary { .. }),
            "{status}: {e:?}"
        );
    }
}

#[tokio::test]
async fn a_refused_client_secret_disconnects_only_that_connection() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/tenant-1/oauth2/v2.0/token"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
            "error_codes": [7000215],
            "timestamp": "2026-01-01 00:00:00Z",
            "trace_id": "t",
            "correlation_id": "c"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let dest = TeamsDestination::new(config(&server)).unwrap();
    let conn = connection("acme", "tenant-1", "app-1", json!({}));
    let e = dest
        .deliver(&delivery(Some(conn), Target::SubjectDm, Some("aad-1")))
        .await
        .unwrap_err();
    assert!(matches!(e, DeliveryError::Disconnected { .. }), "{e:?}");
    assert!(e.reason().contains("AADSTS7000215"), "{e}");
    assert!(!e.reason().contains("s3cret"));
}

#[tokio::test]
async fn without_a_connection_only_fixed_credentials_deliver() {
    let server = MockServer::start().await;
    let dest = TeamsDestination::new(config(&server)).unwrap();
    assert!(!dest.has_fixed_credentials());
    let e = dest
        .deliver(&delivery(None, Target::SubjectDm, Some("aad-1")))
        .await
        .unwrap_err();
    assert!(matches!(e, DeliveryError::Disconnected { .. }), "{e:?}");

    mock_token(&server, "tenant-1", "app-1", "tok-1", 1).await;
    Mock::given(method("POST"))
        .and(path("/teams/v3/conversations"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "a:9"})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/teams/v3/conversations/a:9/activities"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "ok"})))
        .expect(1)
        .mount(&server)
        .await;
    let creds = TeamsCredentials::new("app-1", "tenant-1", SecretString::from("s3cret")).unwrap();
    assert!(!format!("{creds:?}").contains("s3cret"));
    let dest = TeamsDestination::new(config(&server))
        .unwrap()
        .with_fixed_credentials(creds, None);
    assert!(dest.has_fixed_credentials());
    let r = dest
        .deliver(&delivery(None, Target::SubjectDm, Some("aad-1")))
        .await
        .unwrap();
    assert_eq!(r.remote_id.as_deref(), Some("ok"));
    let e = dest
        .deliver(&delivery(None, Target::SubjectDm, None))
        .await
        .unwrap_err();
    assert!(matches!(e, DeliveryError::RecipientUnknown { .. }), "{e:?}");
}

fn graph_user(id: &str, mail: &str) -> Value {
    json!({"id": id, "mail": mail, "userPrincipalName": mail, "otherMails": [], "accountEnabled": true, "userType": "Member"})
}

#[tokio::test]
async fn graph_sync_follows_next_links_and_never_guesses() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/tenant-1/oauth2/v2.0/token"))
        .and(body_string_contains(
            "scope=https%3A%2F%2Fgraph.microsoft.com%2F.default",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("graph-tok")))
        .expect(1)
        .mount(&server)
        .await;
    let next = format!("{}/v1.0/users?$skiptoken=page2", server.uri());
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(query_param(
            "$select",
            "id,mail,userPrincipalName,otherMails,accountEnabled,userType",
        ))
        .and(query_param("$top", "999"))
        .and(header("authorization", "Bearer graph-tok"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users(id,mail)",
            "@odata.nextLink": next,
            "value": [graph_user("id-ann", "Ann@Example.com"), graph_user("id-bob1", "bob@example.com")]
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(query_param("$skiptoken", "page2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [
                graph_user("id-bob2", "bob@example.com"),
                {"id": "id-guest", "mail": "carol@example.com", "userPrincipalName": "carol_example.com#EXT#@t.onmicrosoft.com", "accountEnabled": true, "userType": "Guest"},
                {"id": "id-off", "mail": "dan@example.com", "accountEnabled": false, "userType": "Member"},
                {"id": "id-eve", "mail": null, "userPrincipalName": "eve@example.com", "otherMails": ["EVE.alt@example.org"], "accountEnabled": true, "userType": "Member"}
            ]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let cfg = config(&server);
    let tokens = Arc::new(TokenProvider::new(&cfg).unwrap());
    let creds = TeamsCredentials::new("app-1", "tenant-1", SecretString::from("s3cret")).unwrap();
    let identity = TeamsIdentity::new(&cfg, tokens, store.clone())
        .unwrap()
        .with_fixed_credentials(creds);
    let people = vec![
        Person::new("u-ann").email("ann@example.com"),
        Person::new("u-bob").email("bob@example.com"),
        Person::new("u-carol").email("carol@example.com"),
        Person::new("u-dan").email("dan@example.com"),
        Person::new("u-eve").email("eve.alt@example.org"),
    ];
    let cx = ResolveContext::default_tenant();
    let report = identity.sync(&cx, &people).await.unwrap();
    let mut matched = report.matched.clone();
    matched.sort();
    assert_eq!(
        matched,
        vec![
            ("u-ann".to_owned(), "id-ann".to_owned()),
            ("u-eve".to_owned(), "id-eve".to_owned())
        ]
    );
    assert_eq!(report.ambiguous.len(), 1);
    assert_eq!(report.ambiguous[0].user_id, "u-bob");
    assert_eq!(report.skipped.guests, 1);
    assert_eq!(report.skipped.deactivated, 1);
    assert_eq!(report.api_calls, 2);
    assert_eq!(report.directory_size, 6);
    assert_eq!(
        identity.resolve(&cx, &people[0]).await.unwrap(),
        Resolution::Matched("id-ann".into())
    );
    assert!(matches!(
        identity.resolve(&cx, &people[1]).await.unwrap(),
        Resolution::Ambiguous(_)
    ));
}

#[tokio::test]
async fn people_the_sync_missed_are_looked_up_once_by_filter() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/tenant-1/oauth2/v2.0/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("graph-tok")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(query_param(
            "$filter",
            "mail eq 'o''brien@example.com' or userPrincipalName eq 'o''brien@example.com'",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [graph_user("id-ob", "o'brien@example.com")]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let cfg = config(&server);
    let tokens = Arc::new(TokenProvider::new(&cfg).unwrap());
    let identity = TeamsIdentity::new(&cfg, tokens, store.clone()).unwrap();
    // The tenant's connection carries the credentials (tokens from tenant-1).
    let acme = TenantId::new("acme").unwrap();
    let cx = ResolveContext {
        tenant: acme.clone(),
        connection: Some(connection("acme", "tenant-1", "app-1", json!({}))),
    };
    let p = Person::new("u-ob").email("o'brien@example.com");
    assert_eq!(
        identity.resolve(&cx, &p).await.unwrap(),
        Resolution::Matched("id-ob".into())
    );
    // Now linked: no second lookup.
    assert_eq!(
        identity.resolve(&cx, &p).await.unwrap(),
        Resolution::Matched("id-ob".into())
    );
    // Stored under the tenant and the connection key.
    assert_eq!(
        store
            .link(&acme, "teams:tenant-1", "u-ob")
            .await
            .unwrap()
            .unwrap()
            .platform_id,
        "id-ob"
    );
    assert!(store.link(&acme, "teams", "u-ob").await.unwrap().is_none());
    // Another tenant without a connection (and no fixed credentials) is refused.
    let other = ResolveContext::tenant(TenantId::new("globex").unwrap());
    let err = identity.resolve(&other, &p).await.unwrap_err();
    assert_eq!(err.kind(), switchboard::ErrorKind::Unauthorized);
}

#[test]
fn the_app_package_zip_holds_a_valid_manifest_and_icons() {
    use std::io::Read;
    use switchboard::teams::AppPackage;
    let bytes = AppPackage::new(
        "00000000-0000-0000-0000-0000000000a1",
        "Perks",
        "Acme Inc.",
        "https://perks.example",
        "https://perks.example/privacy",
        "https://perks.example/terms",
    )
    .valid_domain("perks.example")
    .build()
    .unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut names: Vec<String> = zip.file_names().map(str::to_owned).collect();
    names.sort();
    assert_eq!(names, ["color.png", "manifest.json", "outline.png"]);
    let mut manifest = String::new();
    zip.by_name("manifest.json")
        .unwrap()
        .read_to_string(&mut manifest)
        .unwrap();
    let m: Value = serde_json::from_str(&manifest).unwrap();
    // The schema's required top-level fields and their required members.
    for field in [
        "manifestVersion",
        "version",
        "id",
        "developer",
        "name",
        "description",
        "icons",
        "accentColor",
    ] {
        assert!(m.get(field).is_some(), "missing {field}");
    }
    for field in ["name", "websiteUrl", "privacyUrl", "termsOfUseUrl"] {
        assert!(m["developer"][field].is_string(), "developer.{field}");
    }
    assert!(m["name"]["short"].is_string());
    assert!(m["description"]["short"].is_string() && m["description"]["full"].is_string());
    assert_eq!(m["manifestVersion"], "1.22");
    assert_eq!(
        m["bots"][0]["botId"],
        "00000000-0000-0000-0000-0000000000a1"
    );
    let command = &m["composeExtensions"][0]["commands"][0];
    assert_eq!(command["id"], "captureInsight");
    assert_eq!(command["type"], "action");
    assert_eq!(command["context"], json!(["message"]));
    assert_eq!(command["fetchTask"], true);
    assert_eq!(m["validDomains"], json!(["perks.example"]));
    for (file, size) in [("color.png", 192u32), ("outline.png", 32)] {
        let mut png = Vec::new();
        zip.by_name(file).unwrap().read_to_end(&mut png).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), size);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), size);
    }
}
