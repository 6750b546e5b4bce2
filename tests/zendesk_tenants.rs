//! Two tenants' Zendesk connections through a real `Switchboard`: each tenant's tickets, call steps and identity sync use that tenant's own credentials (API-token Basic or OAuth Bearer), and links are stored per connection.
#![cfg(feature = "zendesk")]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{TimeZone, Utc};
use secrecy::SecretString;
use serde_json::json;
use switchboard::identity::ResolveContext;
use switchboard::secret::Keyring;
use switchboard::tenant::Connection;
use switchboard::zendesk::{
    CallConfig, CallFlow, CallStep, UnknownCallerStrategy, ZendeskAccount, ZendeskAuth,
    ZendeskClient, ZendeskConfig, ZendeskDestination, ZendeskIdentity,
};
use switchboard::{Event, MemoryStore, Person, Route, Store, Switchboard, Target, TenantId};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const ACME_BASIC_RAW: &str = "agent@acme.test/token:acme-api-token";
const GLOBEX_BEARER: &str = "Bearer globex-oauth-token";

fn acme_basic() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(ACME_BASIC_RAW)
    )
}

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).unwrap()
}

/// acme connects with an API token (data `email`), globex with OAuth.
fn connections() -> [Connection; 2] {
    [
        Connection::builder(tenant("acme"), "zendesk", "acme")
            .access_token(SecretString::from("acme-api-token"))
            .data(json!({"email": "agent@acme.test"}))
            .build()
            .unwrap(),
        Connection::builder(tenant("globex"), "zendesk", "globex")
            .access_token(SecretString::from("globex-oauth-token"))
            .build()
            .unwrap(),
    ]
}

fn store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new().with_keyring(Keyring::generate("t").unwrap()))
}

fn config(server: &MockServer) -> ZendeskConfig {
    ZendeskConfig::new().base_url(&server.uri()).unwrap()
}

async fn authorizations(server: &MockServer, m: &str, p: &str) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() == m && r.url.path() == p)
        .map(|r: &Request| {
            r.headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

async fn no_ticket_yet(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/api/v2/tickets.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"tickets": [], "count": 0})))
        .mount(server)
        .await;
}

async fn ticket_for(server: &MockServer, auth: String, id: u64) {
    Mock::given(method("POST"))
        .and(path("/api/v2/tickets.json"))
        .and(header("authorization", auth.as_str()))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"ticket": {
            "id": id, "status": "new", "requester_id": 1
        }})))
        .expect(1)
        .mount(server)
        .await;
}

#[tokio::test]
async fn each_tenants_tickets_use_its_own_connection() {
    let server = MockServer::start().await;
    no_ticket_yet(&server).await;
    ticket_for(&server, acme_basic(), 11).await;
    ticket_for(&server, GLOBEX_BEARER.to_owned(), 22).await;

    let dest = ZendeskDestination::new(config(&server)).unwrap();
    let sb = Switchboard::builder()
        .store_arc(store())
        .destination(dest)
        .route(
            Route::on("feedback.received")
                .to("zendesk", Target::Ticket { id: None })
                .template("{{ data.text }}"),
        )
        .build()
        .unwrap();
    for c in connections() {
        sb.connect(c).await.unwrap();
    }
    for t in ["acme", "globex"] {
        let e = Event::builder(format!("fb-{t}"), "feedback.received")
            .tenant(t)
            .subject(Person::new("u1").email(&format!("ada@{t}.test")))
            .data(json!({"text": format!("hello from {t}")}))
            .build()
            .unwrap();
        sb.publish(e).await.unwrap();
    }
    sb.drain(Duration::from_secs(30)).await.unwrap();

    let mut auths = authorizations(&server, "POST", "/api/v2/tickets.json").await;
    auths.sort();
    assert_eq!(auths, [acme_basic(), GLOBEX_BEARER.to_owned()]);
    // The external-id checks before creating also went out per tenant.
    let mut lookups = authorizations(&server, "GET", "/api/v2/tickets.json").await;
    lookups.sort();
    assert_eq!(lookups, [acme_basic(), GLOBEX_BEARER.to_owned()]);
}

async fn call_setup_mocks(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/api/v2/users.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "users": [{"id": 100, "email": "agent@shared.test", "role": "agent", "active": true}],
            "meta": {"has_more": false, "after_cursor": null}
        })))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/groups.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "groups": [{"id": 200, "name": "Support", "deleted": false}],
            "meta": {"has_more": false, "after_cursor": null}
        })))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/search.json"))
        .and(query_param("query", "type:user email:default@shared.test"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "results": [{"id": 300, "email": "default@shared.test", "result_type": "user"}], "count": 1
        })))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/search.json"))
        .and(query_param("query", "type:user phone:4930123456"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "results": [{"id": 7, "phone": "+4930123456", "result_type": "user"}], "count": 1
        })))
        .mount(server)
        .await;
}

#[tokio::test]
async fn call_steps_use_the_connection_the_engine_passes_not_a_stale_one() {
    let server = MockServer::start().await;
    call_setup_mocks(&server).await;
    no_ticket_yet(&server).await;
    ticket_for(&server, acme_basic(), 11).await;
    ticket_for(&server, GLOBEX_BEARER.to_owned(), 22).await;

    let cfg = config(&server);
    let client = ZendeskClient::new(&cfg).unwrap();
    let dest = ZendeskDestination::with_client(cfg.clone(), client.clone());
    // Both flows are built with stale credentials: the stored connections win.
    for t in ["acme", "globex"] {
        let stale =
            ZendeskAccount::new(&cfg, t, ZendeskAuth::oauth(SecretString::from("stale"))).unwrap();
        let mut calls = CallConfig::new(["Support"], UnknownCallerStrategy::DefaultUser, "DE");
        calls.default_user_email = Some("default@shared.test".into());
        calls.display_ticket = false;
        let flow = CallFlow::new(client.clone(), stale, calls);
        flow.start(&["agent@shared.test".into()]).await.unwrap();
        dest.with_call_flow(tenant(t), flow);
    }
    let sb = Switchboard::builder()
        .store_arc(store())
        .destination(dest)
        .route(
            Route::on("zendesk.call.*")
                .to("zendesk", Target::Ticket { id: None })
                .template("{{ kind }}"),
        )
        .build()
        .unwrap();
    for c in connections() {
        sb.connect(c).await.unwrap();
    }
    let at = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap();
    for t in ["acme", "globex"] {
        let ring = CallStep::Ring {
            call_id: format!("{t}-c1"),
            group: "Support".into(),
            caller: "030 123456".into(),
            at,
        };
        sb.publish(ring.to_event(&tenant(t)).unwrap())
            .await
            .unwrap();
    }
    sb.drain(Duration::from_secs(30)).await.unwrap();
    for t in ["acme", "globex"] {
        let answer = CallStep::Answer {
            call_id: format!("{t}-c1"),
            agent: "agent@shared.test".into(),
            at: at + chrono::Duration::seconds(5),
            ring: None,
        };
        sb.publish(answer.to_event(&tenant(t)).unwrap())
            .await
            .unwrap();
    }
    sb.drain(Duration::from_secs(30)).await.unwrap();
    let mut auths = authorizations(&server, "POST", "/api/v2/tickets.json").await;
    auths.sort();
    assert_eq!(auths, [acme_basic(), GLOBEX_BEARER.to_owned()]);
    assert!(
        authorizations(&server, "GET", "/api/v2/tickets.json")
            .await
            .iter()
            .all(|a| a != "Bearer stale"),
        "after a delivery, the flow no longer uses the stale credentials"
    );
}

#[tokio::test]
async fn identity_sync_per_tenant_uses_its_connection_and_stores_links_under_it() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users.json"))
        .and(header("authorization", acme_basic().as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "users": [{"id": 1, "email": "ada@acme.test", "active": true}],
            "meta": {"has_more": false, "after_cursor": null}
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users.json"))
        .and(header("authorization", GLOBEX_BEARER))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "users": [{"id": 2, "email": "ada@acme.test", "active": true}],
            "meta": {"has_more": false, "after_cursor": null}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let cfg = config(&server);
    let client = ZendeskClient::new(&cfg).unwrap();
    let store = store();
    let identity =
        ZendeskIdentity::for_connections(client.clone(), cfg.clone(), store.clone(), "DE");
    let sb = Switchboard::builder()
        .store_arc(store.clone())
        .destination(ZendeskDestination::with_client(cfg, client))
        .resolver("zendesk", identity)
        .build()
        .unwrap();
    for c in connections() {
        sb.connect(c).await.unwrap();
    }
    let people = [Person::new("ada").email("ada@acme.test")];
    for (t, id) in [("acme", "1"), ("globex", "2")] {
        let report = sb
            .sync_identities(&tenant(t), "zendesk", &people)
            .await
            .unwrap();
        assert_eq!(report.matched, [("ada".to_owned(), id.to_owned())]);
        let links = store
            .links(&tenant(t), &format!("zendesk:{t}"))
            .await
            .unwrap();
        assert_eq!(links.len(), 1, "{t}'s link is stored under its connection");
        assert_eq!(links[0].platform_id, id);
    }
    // A tenant without a connection is refused, not served another's credentials.
    let other = ResolveContext::tenant(tenant("initech"));
    let r = ZendeskIdentity::for_connections(
        ZendeskClient::new(&config(&server)).unwrap(),
        config(&server),
        store,
        "DE",
    );
    use switchboard::IdentityResolver as _;
    assert_eq!(
        r.resolve(&other, &people[0]).await.unwrap_err().kind(),
        switchboard::ErrorKind::Unauthorized
    );
}
