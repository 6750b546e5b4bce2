//! `examples/teams_perks.rs` end to end against a wiremock fake of the identity platform, Graph and the Bot Connector: two tenants, DMs, channel posts and the closing JSON line.

use std::collections::HashMap;

use serde_json::{Value, json};
use wiremock::matchers::{
    body_partial_json, body_string_contains, header, method, path, query_param,
};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/teams_perks.rs"]
mod teams_perks;

const APP: &str = "00000000-0000-0000-0000-0000000000a1";

fn token_body(token: &str) -> Value {
    json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token})
}

async fn tokens(server: &MockServer, entra: &str, bot: &str, graph: &str) {
    for (scope, token) in [
        ("scope=https%3A%2F%2Fapi.botframework.com%2F.default", bot),
        ("scope=https%3A%2F%2Fgraph.microsoft.com%2F.default", graph),
    ] {
        Mock::given(method("POST"))
            .and(path(format!("/{entra}/oauth2/v2.0/token")))
            .and(header("content-type", "application/x-www-form-urlencoded"))
            .and(body_string_contains("grant_type=client_credentials"))
            .and(body_string_contains(format!("client_id={APP}")))
            .and(body_string_contains("client_secret=s3cret"))
            .and(body_string_contains(scope))
            .respond_with(ResponseTemplate::new(200).set_body_json(token_body(token)))
            .expect(1)
            .mount(server)
            .await;
    }
}

async fn directory(server: &MockServer, graph_token: &str, users: Value) {
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(query_param("$top", "999"))
        .and(query_param(
            "$select",
            "id,mail,userPrincipalName,otherMails,accountEnabled,userType",
        ))
        .and(header(
            "authorization",
            format!("Bearer {graph_token}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "value": users })))
        .expect(1)
        .mount(server)
        .await;
}

fn user(id: &str, mail: &str) -> Value {
    json!({"id": id, "mail": mail, "userPrincipalName": mail, "otherMails": [], "accountEnabled": true, "userType": "Member"})
}

async fn dm(server: &MockServer, bot_token: &str, entra: &str, aad: &str, conversation: &str) {
    Mock::given(method("POST"))
        .and(path("/svc/v3/conversations"))
        .and(header(
            "authorization",
            format!("Bearer {bot_token}").as_str(),
        ))
        .and(body_partial_json(json!({
            "isGroup": false,
            "members": [{"id": aad}],
            "channelData": {"tenant": {"id": entra}},
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": conversation})))
        .expect(1)
        .mount(server)
        .await;
    activity(server, bot_token, conversation, None).await;
}

async fn activity(server: &MockServer, bot_token: &str, conversation: &str, text: Option<&str>) {
    let mut mock = Mock::given(method("POST"))
        .and(path(format!(
            "/svc/v3/conversations/{conversation}/activities"
        )))
        .and(header(
            "authorization",
            format!("Bearer {bot_token}").as_str(),
        ))
        .and(body_partial_json(json!({"type": "message"})));
    if let Some(t) = text {
        mock = mock.and(body_partial_json(json!({"summary": t})));
    }
    mock.respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "1:act"})))
        .expect(1)
        .mount(server)
        .await;
}

#[tokio::test]
async fn the_example_notifies_two_tenants_through_the_bot_framework() {
    let server = MockServer::start().await;
    tokens(&server, "entra-default", "bot-default", "graph-default").await;
    tokens(&server, "entra-acme", "bot-acme", "graph-acme").await;
    directory(
        &server,
        "graph-default",
        json!([
            user("aad-ada", "ada@example.com"),
            user("aad-grace", "grace@example.com")
        ]),
    )
    .await;
    // Linus is not in the directory: after the sync missed him, one `$filter`
    // lookup (Graph answers an empty page), then he is reported unknown.
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(query_param(
            "$filter",
            "mail eq 'linus@example.com' or userPrincipalName eq 'linus@example.com'",
        ))
        .and(header("authorization", "Bearer graph-default"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "value": [] })))
        .expect(1)
        .mount(&server)
        .await;
    directory(
        &server,
        "graph-acme",
        json!([user("aad-kim", "kim@acme.example")]),
    )
    .await;
    dm(
        &server,
        "bot-default",
        "entra-default",
        "aad-ada",
        "a:dm-ada",
    )
    .await;
    dm(
        &server,
        "bot-default",
        "entra-default",
        "aad-grace",
        "a:dm-grace",
    )
    .await;
    dm(&server, "bot-acme", "entra-acme", "aad-kim", "a:dm-kim").await;
    activity(
        &server,
        "bot-default",
        "19:general@thread.tacv2",
        Some("New in the perks catalog: Yoga"),
    )
    .await;
    activity(
        &server,
        "bot-acme",
        "19:acme@thread.tacv2",
        Some("New in the perks catalog: Sauna"),
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(
        &input,
        json!({
            "people": [
                {"id": "u-ada", "email": "ada@example.com", "name": "Ada"},
                {"id": "u-grace", "email": "Grace@Example.com"},
                {"id": "u-linus", "email": "linus@example.com"},
                {"id": "u-kim", "email": "kim@acme.example", "tenant": "acme"}
            ],
            "events": [
                {"id": "e1", "kind": "wallet.funded", "subject": "u-ada", "data": {"amount": 50, "currency": "EUR"}},
                {"id": "e2", "kind": "perk.redeemed", "subject": "u-grace", "data": {"perk": "Gym"}},
                {"id": "e3", "kind": "wallet.low_balance", "subject": "u-linus", "data": {"balance": 3, "currency": "EUR"}},
                {"id": "e4", "kind": "catalog.perk_added", "data": {"title": "Yoga"}},
                {"id": "e5", "kind": "wallet.funded", "subject": "u-kim", "tenant": "acme", "data": {"amount": 5, "currency": "EUR"}},
                {"id": "e6", "kind": "catalog.perk_added", "tenant": "acme", "data": {"title": "Sauna"}}
            ],
            "tenants": [
                {"id": "acme", "teams_tenant_id": "entra-acme", "channel_conversation": "19:acme@thread.tacv2", "slack_token": "ignored"}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let uri = server.uri();
    let env: HashMap<&str, String> = HashMap::from([
        ("TEAMS_APP_ID", APP.to_owned()),
        ("TEAMS_APP_PASSWORD", "s3cret".to_owned()),
        ("TEAMS_TENANT_ID", "entra-default".to_owned()),
        ("TEAMS_SERVICE_URL", format!("{uri}/svc")),
        ("TEAMS_LOGIN_URL", uri.clone()),
        ("TEAMS_GRAPH_URL", uri.clone()),
    ]);
    let lookup = |name: &str| env.get(name).cloned();
    let args = [
        "--input",
        input.to_str().unwrap(),
        "--store",
        &format!("sqlite://{}", dir.path().join("out.db").display()),
        "--channel-conversation",
        "19:general@thread.tacv2",
    ]
    .map(str::to_owned);
    let summary = teams_perks::run(args.into_iter(), &lookup).await.unwrap();
    assert_eq!(summary["published"], 6);
    assert_eq!(summary["delivered"], 5);
    assert_eq!(summary["dead_letters"], 1);
    assert_eq!(summary["unmatched"], json!(["linus@example.com"]));
    assert_eq!(summary["by_tenant"]["acme"]["delivered"], 2);
    assert_eq!(summary["by_tenant"]["acme"]["unmatched"], json!([]));
    assert_eq!(summary["by_tenant"]["default"]["delivered"], 3);
    assert_eq!(
        summary["by_tenant"]["default"]["unmatched"],
        json!(["linus@example.com"])
    );
    // Every mock's `expect` is checked when the server drops.
}

#[tokio::test]
async fn without_credentials_the_example_prints_to_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(
        &input,
        json!({
            "people": [{"id": "u-ada", "email": "ada@example.com"}],
            "events": [
                {"id": "e1", "kind": "wallet.funded", "subject": "u-ada", "data": {"amount": 50, "currency": "EUR"}},
                {"id": "e2", "kind": "catalog.perk_added", "data": {"title": "Yoga"}}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let lookup = |_: &str| None;
    let args = ["--input", input.to_str().unwrap()].map(str::to_owned);
    let summary = teams_perks::run(args.into_iter(), &lookup).await.unwrap();
    assert_eq!(summary["published"], 2);
    assert_eq!(summary["delivered"], 2);
    assert_eq!(summary["dead_letters"], 0);
}

#[tokio::test]
async fn the_input_flag_is_required() {
    let lookup = |_: &str| None;
    let err = teams_perks::run(std::iter::empty(), &lookup)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--input is required"), "{err}");
    let err = teams_perks::run(
        ["--input", "x", "--store", "/tmp/x"]
            .map(str::to_owned)
            .into_iter(),
        &lookup,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("sqlite://"), "{err}");
}
