//! The calls → tickets flow against wiremock: known, unknown (each strategy), ambiguous, withheld and slow lookups, agent reassignment and backfill, recordings, and a 503 during ticket creation.
#![cfg(feature = "zendesk")]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use secrecy::SecretString;
use serde_json::{Value, json};
use switchboard::zendesk::{
    CallConfig, CallFlow, CallStep, CallerLookup, DisplayOutcome, FailureClass, Recording,
    RequesterKind, RingOutcome, UnknownCallerStrategy, ZendeskAccount, ZendeskAuth, ZendeskClient,
    ZendeskConfig, ZendeskDestination,
};
use switchboard::{Delivery, DeliveryError, Destination, Message, MessageFormat, TenantId};
use wiremock::matchers::{body_json, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const AGENT: u64 = 100;
const GROUP: u64 = 200;
const DEFAULT_USER: u64 = 300;
const TICKET: u64 = 400;

fn at(s: i64) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap() + chrono::Duration::seconds(s)
}

async fn zendesk() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "users": [{"id": AGENT, "name": "Agent", "email": "Agent@Acme.test", "role": "agent", "active": true}],
            "meta": {"has_more": false, "after_cursor": null, "before_cursor": null}
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/groups.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "groups": [{"id": GROUP, "name": "Support", "deleted": false}, {"id": 201, "name": "Sales", "deleted": true}],
            "meta": {"has_more": false, "after_cursor": null}
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/search.json"))
        .and(query_param("query", "type:user email:default@acme.test"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "results": [{"id": DEFAULT_USER, "name": "Default", "email": "default@acme.test", "result_type": "user"}], "count": 1
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

async fn no_existing_ticket(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/api/v2/tickets.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"tickets": [], "count": 0})))
        .mount(server)
        .await;
}

async fn ticket_created(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/api/v2/tickets.json"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"ticket": {"id": TICKET, "status": "open"}})),
        )
        .mount(server)
        .await;
}

async fn phone_search(server: &MockServer, digits: &str, ids: &[u64], delay: Duration) {
    let results: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "name": format!("U{id}"), "phone": "+49 30 123456", "result_type": "user", "active": true}))
        .collect();
    Mock::given(method("GET"))
        .and(path("/api/v2/search.json"))
        .and(query_param("query", format!("type:user phone:{digits}")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"results": results, "count": ids.len()}))
                .set_delay(delay),
        )
        .mount(server)
        .await;
}

fn flow(server: &MockServer, strategy: UnknownCallerStrategy, wait: Duration) -> CallFlow {
    let cfg = ZendeskConfig::new().base_url(&server.uri()).unwrap();
    let account = ZendeskAccount::new(
        &cfg,
        "acme",
        ZendeskAuth::api_token("agent@acme.test", SecretString::from("tok")),
    )
    .unwrap();
    let mut config = CallConfig::new(["Support", "Sales", "Nope"], strategy, "DE");
    config.default_user_email = Some("default@acme.test".into());
    config.lookup_wait = wait;
    CallFlow::new(ZendeskClient::new(&cfg).unwrap(), account, config)
}

async fn started(server: &MockServer, strategy: UnknownCallerStrategy) -> CallFlow {
    let f = flow(server, strategy, Duration::from_secs(5));
    let report = f
        .start(&["agent@acme.test".into(), "ghost@acme.test".into()])
        .await
        .unwrap();
    assert_eq!(report.agents_matched, 1);
    assert_eq!(report.agents_unmatched, ["ghost@acme.test"]);
    assert_eq!(report.groups_matched, [("Support".to_owned(), GROUP)]);
    assert_eq!(
        report.groups_unmatched,
        ["Sales", "Nope"],
        "deleted groups do not match"
    );
    assert_eq!(report.default_user_id, Some(DEFAULT_USER));
    f
}

async fn created_ticket(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path() == "/api/v2/tickets.json")
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["ticket"].clone())
        .collect()
}

async fn count(server: &MockServer, m: &str, p: &str) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() == m && r.url.path() == p)
        .count()
}

#[tokio::test]
async fn a_known_caller_gets_a_ticket_assigned_to_the_answering_agent() {
    let server = zendesk().await;
    phone_search(&server, "4930123456", &[555], Duration::ZERO).await;
    no_existing_ticket(&server).await;
    ticket_created(&server).await;
    let f = started(&server, UnknownCallerStrategy::DefaultUser).await;
    assert_eq!(
        f.ring("c1", "Other", "030 123456", at(0)).await.unwrap(),
        RingOutcome::IgnoredGroup
    );
    assert_eq!(
        f.ring("c1", "support", "030 123456", at(0)).await.unwrap(),
        RingOutcome::Tracked {
            e164: Some("+4930123456".into())
        }
    );
    assert_eq!(
        f.ring("c1", "support", "030 123456", at(0)).await.unwrap(),
        RingOutcome::Duplicate
    );
    let a = f
        .answer("c1", "agent@acme.test", at(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (a.ticket_id, a.created, a.requester_id, a.requester),
        (TICKET, true, 555, RequesterKind::Matched)
    );
    assert_eq!(a.assignee_id, Some(AGENT));
    assert_eq!(a.display, DisplayOutcome::Opened);
    let t = &created_ticket(&server).await[0];
    assert_eq!(t["requester_id"], 555);
    assert_eq!(t["group_id"], GROUP);
    assert_eq!(t["assignee_id"], AGENT);
    assert_eq!(t["external_id"], "switchboard-call:c1");
    assert_eq!(
        t["tags"],
        json!(["switchboard", "phone_call", "caller_matched"])
    );
    assert_eq!(
        t["subject"],
        "Call from +49 30 123456 to Support at 2026-03-02 09:00 UTC"
    );
    let body = t["comment"]["body"].as_str().unwrap();
    assert!(body.contains("Caller as dialled: 030 123456"), "{body}");
    assert!(body.contains("Caller (E.164): +4930123456"), "{body}");
    assert!(
        body.contains("Answered at: 2026-03-02T09:00:05Z by agent@acme.test"),
        "{body}"
    );
    assert_eq!(t["comment"]["public"], false);
    // A second answer (a retry) creates nothing new.
    assert_eq!(
        f.answer("c1", "agent@acme.test", at(6))
            .await
            .unwrap()
            .unwrap(),
        a
    );
    assert_eq!(created_ticket(&server).await.len(), 1);
    let s = f.stats();
    assert_eq!(
        (s.calls, s.tickets_created, s.matched, s.unknown),
        (1, 1, 1, 0)
    );
}

#[tokio::test]
async fn an_unknown_caller_gets_the_default_user() {
    let server = zendesk().await;
    phone_search(&server, "4930123456", &[], Duration::ZERO).await;
    no_existing_ticket(&server).await;
    ticket_created(&server).await;
    let f = started(&server, UnknownCallerStrategy::DefaultUser).await;
    f.ring("c2", "Support", "+49 30 123456", at(0))
        .await
        .unwrap();
    let a = f
        .answer("c2", "nobody@acme.test", at(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (a.requester_id, a.requester),
        (DEFAULT_USER, RequesterKind::DefaultUser)
    );
    assert_eq!(a.lookup, CallerLookup::NotFound);
    assert_eq!(a.display, DisplayOutcome::NoAgent);
    let t = &created_ticket(&server).await[0];
    assert!(t.get("assignee_id").is_none());
    assert!(
        t["comment"]["body"]
            .as_str()
            .unwrap()
            .contains("No Zendesk user has this number.")
    );
    assert_eq!(f.stats().unknown, 1);
}

#[tokio::test]
async fn an_unknown_caller_becomes_a_new_user_carrying_only_the_number() {
    let server = zendesk().await;
    phone_search(&server, "4930123456", &[], Duration::ZERO).await;
    no_existing_ticket(&server).await;
    ticket_created(&server).await;
    Mock::given(method("POST"))
        .and(path("/api/v2/users.json"))
        .and(body_json(json!({"user": {"name": "Caller +49 30 123456", "role": "end-user", "phone": "+4930123456"}})))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"user": {"id": 777, "name": "Caller +49 30 123456"}})))
        .expect(1)
        .mount(&server)
        .await;
    let f = started(&server, UnknownCallerStrategy::NewUser).await;
    f.ring("c3", "Support", "030123456", at(0)).await.unwrap();
    let a = f
        .answer("c3", "agent@acme.test", at(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a.requester_id, a.requester), (777, RequesterKind::NewUser));
    assert_eq!(created_ticket(&server).await[0]["requester_id"], 777);
    // The next call from that number matches the new user from the cache, without a search.
    let searches = count(&server, "GET", "/api/v2/search.json").await;
    f.ring("c3b", "Support", "030123456", at(9)).await.unwrap();
    let b = f
        .answer("c3b", "agent@acme.test", at(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((b.requester_id, b.requester), (777, RequesterKind::Matched));
    assert_eq!(count(&server, "GET", "/api/v2/search.json").await, searches);
}

#[tokio::test]
async fn a_number_shared_by_several_users_is_never_guessed() {
    let server = zendesk().await;
    phone_search(&server, "4930123456", &[11, 12], Duration::ZERO).await;
    no_existing_ticket(&server).await;
    ticket_created(&server).await;
    let f = started(&server, UnknownCallerStrategy::DefaultUser).await;
    f.ring("c4", "Support", "030 123456", at(0)).await.unwrap();
    let a = f
        .answer("c4", "agent@acme.test", at(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.lookup, CallerLookup::Ambiguous(vec![11, 12]));
    assert_eq!(a.requester_id, DEFAULT_USER);
    let t = &created_ticket(&server).await[0];
    assert!(
        t["comment"]["body"]
            .as_str()
            .unwrap()
            .contains("Several Zendesk users have this number (ids 11, 12)")
    );
    assert_eq!(t["tags"][2], "caller_ambiguous");
    assert_eq!(f.stats().ambiguous, 1);
}

#[tokio::test]
async fn a_withheld_number_is_unknown_without_a_lookup() {
    let server = zendesk().await;
    no_existing_ticket(&server).await;
    ticket_created(&server).await;
    let f = started(&server, UnknownCallerStrategy::DefaultUser).await;
    // A call to a group that is not configured is ignored at every step.
    assert_eq!(
        f.ring("x1", "Sales", "030 1", at(0)).await.unwrap(),
        RingOutcome::IgnoredGroup
    );
    assert_eq!(
        f.answer("x1", "agent@acme.test", at(1)).await.unwrap(),
        None
    );
    assert!(!f.hangup("x1", at(2), None).await.unwrap());
    assert_eq!(f.wrap_up_end("x1", at(3)).await.unwrap(), None);
    let before = count(&server, "GET", "/api/v2/search.json").await;
    assert_eq!(
        f.ring("c5", "Support", "anonymous", at(0)).await.unwrap(),
        RingOutcome::Tracked { e164: None }
    );
    let a = f
        .answer("c5", "agent@acme.test", at(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.lookup, CallerLookup::Withheld);
    assert_eq!(a.requester_id, DEFAULT_USER);
    assert_eq!(count(&server, "GET", "/api/v2/search.json").await, before);
    let t = &created_ticket(&server).await[0];
    assert_eq!(t["tags"][2], "caller_withheld");
    assert!(
        t["subject"]
            .as_str()
            .unwrap()
            .starts_with("Call from withheld")
    );
}

#[tokio::test]
async fn a_slow_lookup_is_waited_for_up_to_the_bound_then_unknown() {
    let server = zendesk().await;
    phone_search(&server, "4930123456", &[555], Duration::from_secs(3)).await;
    no_existing_ticket(&server).await;
    ticket_created(&server).await;
    let f = flow(
        &server,
        UnknownCallerStrategy::DefaultUser,
        Duration::from_millis(100),
    );
    f.start(&["agent@acme.test".into()]).await.unwrap();
    f.ring("c6", "Support", "030 123456", at(0)).await.unwrap();
    let a = f
        .answer("c6", "agent@acme.test", at(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.lookup, CallerLookup::TimedOut);
    assert_eq!(a.requester_id, DEFAULT_USER);
    assert!(
        created_ticket(&server).await[0]["comment"]["body"]
            .as_str()
            .unwrap()
            .contains("did not finish in time")
    );
}

#[tokio::test]
async fn after_wrap_up_the_number_is_added_to_the_user_the_agent_picked() {
    let server = zendesk().await;
    phone_search(&server, "4930123456", &[], Duration::ZERO).await;
    no_existing_ticket(&server).await;
    ticket_created(&server).await;
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
                {"id": 1, "user_id": 888, "type": "email", "value": "ada@example.com"},
                {"id": 2, "user_id": 888, "type": "phone_number", "value": "+49 30 999999"}
            ]})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/users/888/identities.json"))
        .and(body_json(json!({"identity": {"type": "phone_number", "value": "+4930123456"}})))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"identity": {"id": 3, "user_id": 888, "type": "phone_number", "value": "+4930123456"}})))
        .expect(1)
        .mount(&server)
        .await;
    let f = started(&server, UnknownCallerStrategy::DefaultUser).await;
    f.ring("c7", "Support", "030 123456", at(0)).await.unwrap();
    f.answer("c7", "agent@acme.test", at(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.wrap_up_end("c7", at(60)).await.unwrap(), Some(888));
    assert_eq!(f.stats().numbers_backfilled, 1);
    // A repeated wrap-up does nothing.
    assert_eq!(f.wrap_up_end("c7", at(61)).await.unwrap(), None);
}

#[tokio::test]
async fn the_default_user_never_gets_the_number() {
    let server = zendesk().await;
    phone_search(&server, "4930123456", &[555], Duration::ZERO).await;
    no_existing_ticket(&server).await;
    ticket_created(&server).await;
    Mock::given(method("GET"))
        .and(path(format!("/api/v2/tickets/{TICKET}.json")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ticket": {"id": TICKET, "requester_id": DEFAULT_USER}})),
        )
        .mount(&server)
        .await;
    let f = started(&server, UnknownCallerStrategy::DefaultUser).await;
    f.ring("c8", "Support", "030 123456", at(0)).await.unwrap();
    f.answer("c8", "agent@acme.test", at(1))
        .await
        .unwrap()
        .unwrap();
    // The agent moved the ticket from the matched user to the default user.
    assert_eq!(f.wrap_up_end("c8", at(60)).await.unwrap(), None);
    assert_eq!(
        count(
            &server,
            "POST",
            &format!("/api/v2/users/{DEFAULT_USER}/identities.json")
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &server,
            "GET",
            &format!("/api/v2/users/{DEFAULT_USER}/identities.json")
        )
        .await,
        0
    );
}

#[tokio::test]
async fn the_recording_is_uploaded_attached_and_archived() {
    let server = zendesk().await;
    phone_search(&server, "4930123456", &[555], Duration::ZERO).await;
    no_existing_ticket(&server).await;
    ticket_created(&server).await;
    Mock::given(method("POST"))
        .and(path("/api/v2/uploads.json"))
        .and(query_param("filename", "c9.mp3"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"upload": {"token": "tok-up-1", "attachments": []}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(format!("/api/v2/tickets/{TICKET}.json")))
        .and(body_json(json!({"ticket": {"comment": {"body": "Call recording: c9.mp3", "public": false, "uploads": ["tok-up-1"]}}})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ticket": {"id": TICKET}})))
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = ZendeskConfig::new().base_url(&server.uri()).unwrap();
    let account =
        ZendeskAccount::new(&cfg, "acme", ZendeskAuth::oauth(SecretString::from("o"))).unwrap();
    let mut config = CallConfig::new(["Support"], UnknownCallerStrategy::DefaultUser, "DE");
    config.default_user_email = Some("default@acme.test".into());
    config.archive_dir = Some(dir.path().to_owned());
    let f = CallFlow::new(ZendeskClient::new(&cfg).unwrap(), account, config);
    f.start(&[]).await.unwrap();
    // No ticket yet: nothing to attach to.
    let rec = || Recording::Bytes {
        filename: "c9.mp3".into(),
        content_type: "audio/mpeg".into(),
        data: Bytes::from_static(b"ID3"),
    };
    assert!(!f.hangup("c9", at(0), Some(rec())).await.unwrap());
    f.ring("c9", "Support", "030 123456", at(0)).await.unwrap();
    f.answer("c9", "agent@acme.test", at(1))
        .await
        .unwrap()
        .unwrap();
    assert!(f.hangup("c9", at(30), Some(rec())).await.unwrap());
    assert!(
        f.hangup("c9", at(31), Some(rec())).await.unwrap(),
        "idempotent"
    );
    assert_eq!(f.stats().recordings_attached, 1);
    let archived = std::fs::read(dir.path().join("RecordedCalls").join("c9-c9.mp3")).unwrap();
    assert_eq!(archived, b"ID3");
}

#[tokio::test]
async fn a_503_during_ticket_creation_is_retried_into_one_ticket() {
    let server = zendesk().await;
    phone_search(&server, "4930123456", &[555], Duration::ZERO).await;
    // First answer: Zendesk fails with 503 (and, as happens, created the ticket anyway).
    Mock::given(method("GET"))
        .and(path("/api/v2/tickets.json"))
        .and(query_param("external_id", "switchboard-call:c10"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"tickets": [], "count": 0})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/tickets.json"))
        .respond_with(ResponseTemplate::new(503).set_body_string("Service Unavailable"))
        .mount(&server)
        .await;
    let f = started(&server, UnknownCallerStrategy::DefaultUser).await;
    f.ring("c10", "Support", "030 123456", at(0)).await.unwrap();
    let e = f.answer("c10", "agent@acme.test", at(1)).await.unwrap_err();
    assert_eq!(e.class(), FailureClass::Temporary);
    assert!(matches!(
        e.to_delivery_error(),
        DeliveryError::Temporary { .. }
    ));
    // The retry finds the ticket by the call's external id and creates no second one.
    Mock::given(method("GET"))
        .and(path("/api/v2/tickets.json"))
        .and(query_param("external_id", "switchboard-call:c10"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"tickets": [{"id": TICKET, "requester_id": 555, "external_id": "switchboard-call:c10"}], "count": 1})))
        .mount(&server)
        .await;
    let a = f
        .answer("c10", "agent@acme.test", at(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a.ticket_id, a.created), (TICKET, false));
    assert_eq!(created_ticket(&server).await.len(), 1, "one POST in total");
}

fn step_delivery(tenant: &str, step: &CallStep) -> Delivery {
    let tenant = TenantId::new(tenant).unwrap();
    let event = step.to_event(&tenant).unwrap();
    Delivery {
        id: 1,
        tenant,
        connection: None,
        event: Arc::new(event),
        route: "calls".into(),
        target: switchboard::Target::Ticket {
            id: Some(step.call_id().into()),
        },
        recipient: None,
        recipient_user_id: None,
        message: Message {
            text: String::new(),
            title: None,
            format: MessageFormat::Plain,
        },
        attempt: 1,
    }
}

#[tokio::test]
async fn call_steps_run_as_deliveries_on_the_tenants_flow() {
    let server = zendesk().await;
    phone_search(&server, "4930123456", &[555], Duration::ZERO).await;
    no_existing_ticket(&server).await;
    ticket_created(&server).await;
    let dest =
        ZendeskDestination::new(ZendeskConfig::new().base_url(&server.uri()).unwrap()).unwrap();
    let ring = CallStep::Ring {
        call_id: "c11".into(),
        group: "Support".into(),
        caller: "030 123456".into(),
        at: at(0),
    };
    let answer = CallStep::Answer {
        call_id: "c11".into(),
        agent: "agent@acme.test".into(),
        at: at(1),
        ring: None,
    };
    let ev = ring.to_event(&TenantId::new("acme").unwrap()).unwrap();
    assert_eq!(
        (ev.id.as_str(), ev.kind.as_str()),
        ("c11:ring", "zendesk.call.ring")
    );
    // No flow registered for the tenant yet: retried, not lost.
    let e = dest
        .deliver(&step_delivery("acme", &ring))
        .await
        .unwrap_err();
    assert!(matches!(e, DeliveryError::Temporary { .. }));
    let f = started(&server, UnknownCallerStrategy::DefaultUser).await;
    dest.with_call_flow(TenantId::new("acme").unwrap(), f.clone());
    // Answer before ring (out of order): retried.
    assert!(matches!(
        dest.deliver(&step_delivery("acme", &answer))
            .await
            .unwrap_err(),
        DeliveryError::Temporary { .. }
    ));
    dest.deliver(&step_delivery("acme", &ring)).await.unwrap();
    let r = dest.deliver(&step_delivery("acme", &answer)).await.unwrap();
    assert_eq!(r.remote_id.as_deref(), Some("400"));
    // Another tenant's steps never reach this flow.
    assert!(dest.deliver(&step_delivery("other", &ring)).await.is_err());
    assert_eq!(f.stats().tickets_created, 1);
}

#[tokio::test]
async fn through_the_engine_a_503_loses_no_ticket_and_makes_no_second_one() {
    use switchboard::engine::RetryPolicy;
    use switchboard::{MemoryStore, Route, Switchboard};
    let server = zendesk().await;
    phone_search(&server, "4930123456", &[555], Duration::ZERO).await;
    no_existing_ticket(&server).await;
    Mock::given(method("POST"))
        .and(path("/api/v2/tickets.json"))
        .respond_with(ResponseTemplate::new(503).set_body_string("Service Unavailable"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    ticket_created(&server).await;
    Mock::given(method("POST"))
        .and(path("/api/v2/uploads.json"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"upload": {"token": "tk", "attachments": []}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(format!("/api/v2/tickets/{TICKET}.json")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ticket": {"id": TICKET}})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/api/v2/tickets/{TICKET}.json")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ticket": {"id": TICKET, "requester_id": 555}})),
        )
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("c12.wav");
    std::fs::write(&rec, b"RIFF....WAVE").unwrap();

    let cfg = ZendeskConfig::new().base_url(&server.uri()).unwrap();
    let auth = ZendeskAuth::api_token("agent@acme.test", SecretString::from("tok"));
    let dest = ZendeskDestination::with_fixed_account(cfg, "acme", auth).unwrap();
    let f = started(&server, UnknownCallerStrategy::DefaultUser).await;
    dest.with_call_flow(TenantId::default_tenant(), f.clone());
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(dest)
        .retry(RetryPolicy {
            base: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_attempts: 20,
            ..RetryPolicy::default()
        })
        .route(
            Route::on("zendesk.call.*")
                .to("zendesk", switchboard::Target::Ticket { id: None })
                .template("{{ kind }}"),
        )
        .build()
        .unwrap();
    let t = TenantId::default_tenant();
    let steps = [
        CallStep::Ring {
            call_id: "c12".into(),
            group: "Support".into(),
            caller: "030 123456".into(),
            at: at(0),
        },
        CallStep::Answer {
            call_id: "c12".into(),
            agent: "agent@acme.test".into(),
            at: at(2),
            ring: None,
        },
        CallStep::Hangup {
            call_id: "c12".into(),
            at: at(30),
            recording: Some(rec),
            ring: None,
        },
        CallStep::WrapUpEnd {
            call_id: "c12".into(),
            at: at(40),
            ring: None,
        },
    ];
    for s in &steps {
        sb.publish(s.to_event(&t).unwrap()).await.unwrap();
        // The same step published twice is delivered once.
        assert!(sb.publish(s.to_event(&t).unwrap()).await.unwrap().duplicate);
    }
    sb.drain(Duration::from_secs(30)).await.unwrap();
    assert!(sb.dead_letters(10).await.unwrap().is_empty());
    let s = f.stats();
    assert_eq!(
        (s.tickets_created, s.recordings_attached, s.matched),
        (1, 1, 1)
    );
    assert_eq!(
        created_ticket(&server).await.len(),
        2,
        "one 503, one success"
    );
}

#[tokio::test]
async fn without_talk_partner_edition_the_ticket_stands_and_the_result_says_so() {
    let server = MockServer::start().await;
    // Mounted first, so it wins over the default display mock.
    Mock::given(method("POST"))
        .and(path(format!(
            "/api/v2/channels/voice/agents/{AGENT}/tickets/{TICKET}/display.json"
        )))
        .respond_with(ResponseTemplate::new(403).set_body_json(
            json!({"error": "Forbidden", "description": "You do not have access to this page."}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "users": [{"id": AGENT, "email": "agent@acme.test", "role": "agent"}], "meta": {"has_more": false}
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/groups.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"groups": [{"id": GROUP, "name": "Support"}], "meta": {"has_more": false}}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/search.json"))
        .and(query_param("query", "type:user email:default@acme.test"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": [], "count": 0})))
        .mount(&server)
        .await;
    // The default user does not exist yet: start() creates it.
    Mock::given(method("POST"))
        .and(path("/api/v2/users.json"))
        .and(body_json(json!({"user": {"name": "Phone caller (default)", "role": "end-user", "email": "default@acme.test"}})))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"user": {"id": DEFAULT_USER}})))
        .expect(1)
        .mount(&server)
        .await;
    phone_search(&server, "4930123456", &[555], Duration::ZERO).await;
    no_existing_ticket(&server).await;
    ticket_created(&server).await;
    let f = flow(
        &server,
        UnknownCallerStrategy::DefaultUser,
        Duration::from_secs(5),
    );
    let report = f.start(&["agent@acme.test".into()]).await.unwrap();
    assert!(report.default_user_created);
    assert_eq!(report.default_user_id, Some(DEFAULT_USER));
    f.ring("c13", "Support", "030 123456", at(0)).await.unwrap();
    let a = f
        .answer("c13", "agent@acme.test", at(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.ticket_id, TICKET);
    match &a.display {
        DisplayOutcome::NotSupported(reason) => assert!(reason.contains("403"), "{reason}"),
        other => panic!("expected NotSupported, got {other:?}"),
    }
}

#[tokio::test]
async fn a_lookup_that_failed_at_ring_is_retried_at_answer() {
    let server = zendesk().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/search.json"))
        .and(query_param("query", "type:user phone:4930123456"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"error": "InternalError"})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    phone_search(&server, "4930123456", &[555], Duration::ZERO).await;
    no_existing_ticket(&server).await;
    ticket_created(&server).await;
    let cfg = ZendeskConfig::new().base_url(&server.uri()).unwrap();
    let conn =
        switchboard::tenant::Connection::builder(TenantId::new("acme").unwrap(), "zendesk", "acme")
            .access_token(SecretString::from("oauth"))
            .build()
            .unwrap();
    let mut config = CallConfig::new(["Support"], UnknownCallerStrategy::DefaultUser, "DE");
    config.default_user_email = Some("default@acme.test".into());
    let f =
        CallFlow::for_connection(ZendeskClient::new(&cfg).unwrap(), &cfg, &conn, config).unwrap();
    f.start(&["agent@acme.test".into()]).await.unwrap();
    f.ring("c14", "Support", "030 123456", at(0)).await.unwrap();
    let a = f
        .answer("c14", "agent@acme.test", at(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (a.requester_id, a.lookup),
        (555, CallerLookup::Matched(555))
    );
    let auth: Vec<String> = server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| {
            r.headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .collect();
    assert!(
        auth.iter().all(|h| h == "Bearer oauth"),
        "the connection's OAuth token is used"
    );
}
