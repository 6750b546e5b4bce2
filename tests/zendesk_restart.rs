//! Call steps across a process restart: the in-memory call state is gone, the outbox (a shared store) is not; later steps carry the ring's details, redo the lookup and find the ticket by its external id, and no second ticket is created.
#![cfg(feature = "zendesk")]

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use secrecy::SecretString;
use serde_json::{Value, json};
use switchboard::engine::RetryPolicy;
use switchboard::zendesk::{
    CallConfig, CallFlow, CallStep, CallerLookup, FailureClass, RequesterKind, RingInfo,
    UnknownCallerStrategy, ZendeskAccount, ZendeskAuth, ZendeskConfig, ZendeskDestination,
};
use switchboard::{MemoryStore, Route, Store, Switchboard, Target, TenantId};
use wiremock::matchers::{body_json, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const AGENT: u64 = 100;
const GROUP: u64 = 200;
const DEFAULT_USER: u64 = 300;
const TICKET: u64 = 400;
const CALLER: u64 = 7;

fn at(s: i64) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap() + chrono::Duration::seconds(s)
}

fn ring_info() -> RingInfo {
    RingInfo {
        group: "Support".into(),
        caller: "030 123456".into(),
        at: at(0),
    }
}

/// Agents, groups, the default user, the caller (one user) and display.
async fn zendesk() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "users": [{"id": AGENT, "email": "agent@acme.test", "role": "agent", "active": true}],
            "meta": {"has_more": false, "after_cursor": null}
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/groups.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "groups": [{"id": GROUP, "name": "Support", "deleted": false}],
            "meta": {"has_more": false, "after_cursor": null}
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/search.json"))
        .and(query_param("query", "type:user email:default@acme.test"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "results": [{"id": DEFAULT_USER, "email": "default@acme.test", "result_type": "user"}], "count": 1
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/search.json"))
        .and(query_param("query", "type:user phone:4930123456"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "results": [{"id": CALLER, "phone": "+49 30 123456", "result_type": "user", "active": true}], "count": 1
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/api/v2/channels/voice/agents/{AGENT}/tickets/{TICKET}/display.json"
        )))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

/// `GET /api/v2/tickets?external_id=…` finds nothing until the ticket is created.
async fn tickets_by_external_id(server: &MockServer, empty_times: u64) {
    Mock::given(method("GET"))
        .and(path("/api/v2/tickets.json"))
        .and(query_param("external_id", "switchboard-call:c1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"tickets": [], "count": 0})))
        .up_to_n_times(empty_times)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/tickets.json"))
        .and(query_param("external_id", "switchboard-call:c1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"tickets": [
            {"id": TICKET, "requester_id": CALLER, "assignee_id": AGENT, "external_id": "switchboard-call:c1"}
        ], "count": 1})))
        .mount(server)
        .await;
}

async fn ticket_created_once(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/api/v2/tickets.json"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"ticket": {"id": TICKET, "requester_id": CALLER}})),
        )
        .expect(1)
        .mount(server)
        .await;
}

async fn requests(server: &MockServer, m: &str, p: &str) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.method.as_str() == m && r.url.path() == p)
        .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
        .collect()
}

/// One "process": a freshly started flow (empty memory) on a destination.
async fn process(server: &MockServer, store: Arc<dyn Store>) -> (Switchboard, CallFlow) {
    let cfg = ZendeskConfig::new().base_url(&server.uri()).unwrap();
    let auth = ZendeskAuth::api_token("agent@acme.test", SecretString::from("tok"));
    let dest = ZendeskDestination::with_fixed_account(cfg.clone(), "acme", auth.clone()).unwrap();
    let mut config = CallConfig::new(["Support"], UnknownCallerStrategy::DefaultUser, "DE");
    config.default_user_email = Some("default@acme.test".into());
    let flow = CallFlow::new(
        dest.client().clone(),
        ZendeskAccount::new(&cfg, "acme", auth).unwrap(),
        config,
    );
    flow.start(&["agent@acme.test".into()]).await.unwrap();
    dest.with_call_flow(TenantId::default_tenant(), flow.clone());
    let sb = Switchboard::builder()
        .store_arc(store)
        .destination(dest)
        .retry(RetryPolicy {
            base: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_attempts: 20,
            ..RetryPolicy::default()
        })
        .route(
            Route::on("zendesk.call.*")
                .to("zendesk", Target::Ticket { id: None })
                .template("{{ kind }}"),
        )
        .build()
        .unwrap();
    (sb, flow)
}

#[tokio::test]
async fn an_answer_after_a_restart_redoes_the_lookup_and_creates_the_ticket() {
    let server = zendesk().await;
    tickets_by_external_id(&server, 1).await;
    ticket_created_once(&server).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let t = TenantId::default_tenant();

    let (sb, flow) = process(&server, store.clone()).await;
    let ring = CallStep::Ring {
        call_id: "c1".into(),
        group: "Support".into(),
        caller: "030 123456".into(),
        at: at(0),
    };
    sb.publish(ring.to_event(&t).unwrap()).await.unwrap();
    sb.drain(Duration::from_secs(30)).await.unwrap();
    assert_eq!(flow.stats().calls, 1);
    drop((sb, flow)); // the process restarts: its call state is gone

    let (sb, flow) = process(&server, store).await;
    let answer = CallStep::Answer {
        call_id: "c1".into(),
        agent: "agent@acme.test".into(),
        at: at(3),
        ring: Some(ring_info()),
    };
    sb.publish(answer.to_event(&t).unwrap()).await.unwrap();
    sb.drain(Duration::from_secs(30)).await.unwrap();
    assert!(sb.dead_letters(10).await.unwrap().is_empty());

    let created = requests(&server, "POST", "/api/v2/tickets.json").await;
    assert_eq!(created.len(), 1);
    let ticket = &created[0]["ticket"];
    assert_eq!(
        ticket["requester_id"],
        json!(CALLER),
        "the lookup was redone"
    );
    assert_eq!(ticket["assignee_id"], json!(AGENT));
    assert_eq!(ticket["external_id"], json!("switchboard-call:c1"));
    let s = flow.stats();
    assert_eq!((s.calls, s.tickets_created, s.matched), (1, 1, 1));

    // A repeated answer in a third process without the ring's details finds
    // the ticket by its external id and creates nothing.
    let (_sb, third) = process(&server, Arc::new(MemoryStore::new())).await;
    let again = third
        .answer("c1", "agent@acme.test", at(4))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            again.ticket_id,
            again.created,
            again.requester,
            again.lookup
        ),
        (
            TICKET,
            false,
            RequesterKind::Existing,
            CallerLookup::NotLookedUp
        )
    );
    assert_eq!(
        requests(&server, "POST", "/api/v2/tickets.json")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn an_answer_without_ring_details_or_ticket_after_a_restart_is_retried() {
    let server = zendesk().await;
    tickets_by_external_id(&server, 100).await;
    let (_sb, flow) = process(&server, Arc::new(MemoryStore::new())).await;
    let err = flow
        .answer("c1", "agent@acme.test", at(3))
        .await
        .unwrap_err();
    assert_eq!(err.class(), FailureClass::Temporary);
    assert!(
        requests(&server, "POST", "/api/v2/tickets.json")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn recording_and_backfill_after_a_restart_find_the_ticket_by_external_id() {
    let server = zendesk().await;
    tickets_by_external_id(&server, 1).await;
    ticket_created_once(&server).await;
    Mock::given(method("POST"))
        .and(path("/api/v2/uploads.json"))
        .and(query_param("filename", "c1.wav"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"upload": {"token": "tok-up", "attachments": []}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(format!("/api/v2/tickets/{TICKET}.json")))
        .and(body_json(json!({"ticket": {"comment": {
            "body": "Call recording: c1.wav", "public": false, "uploads": ["tok-up"]
        }}})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ticket": {"id": TICKET}})))
        .expect(1)
        .mount(&server)
        .await;
    // The agent picked another user as requester during wrap-up.
    Mock::given(method("GET"))
        .and(path(format!("/api/v2/tickets/{TICKET}.json")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ticket": {"id": TICKET, "requester_id": 888}})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users/888/identities.json"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"identities": [
                {"id": 1, "user_id": 888, "type": "email", "value": "ada@example.com"}
            ]})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/users/888/identities.json"))
        .and(body_json(
            json!({"identity": {"type": "phone_number", "value": "+4930123456"}}),
        ))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"identity": {
                "id": 2, "user_id": 888, "type": "phone_number", "value": "+4930123456"
            }})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let t = TenantId::default_tenant();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("c1.wav");
    std::fs::write(&rec, b"RIFF....WAVE").unwrap();

    let (sb, _flow) = process(&server, store.clone()).await;
    for step in [
        CallStep::Ring {
            call_id: "c1".into(),
            group: "Support".into(),
            caller: "030 123456".into(),
            at: at(0),
        },
        CallStep::Answer {
            call_id: "c1".into(),
            agent: "agent@acme.test".into(),
            at: at(3),
            ring: Some(ring_info()),
        },
    ] {
        sb.publish(step.to_event(&t).unwrap()).await.unwrap();
    }
    sb.drain(Duration::from_secs(30)).await.unwrap();
    drop(sb); // restart after the ticket was created

    let (sb, flow) = process(&server, store).await;
    for step in [
        CallStep::Hangup {
            call_id: "c1".into(),
            at: at(60),
            recording: Some(rec),
            ring: Some(ring_info()),
        },
        CallStep::WrapUpEnd {
            call_id: "c1".into(),
            at: at(90),
            ring: Some(ring_info()),
        },
    ] {
        sb.publish(step.to_event(&t).unwrap()).await.unwrap();
    }
    sb.drain(Duration::from_secs(30)).await.unwrap();
    assert!(sb.dead_letters(10).await.unwrap().is_empty());
    let s = flow.stats();
    assert_eq!(
        (
            s.tickets_created,
            s.recordings_attached,
            s.numbers_backfilled
        ),
        (0, 1, 1),
        "the second process created nothing, attached and backfilled once"
    );
    assert_eq!(
        requests(&server, "POST", "/api/v2/tickets.json")
            .await
            .len(),
        1
    );
}
