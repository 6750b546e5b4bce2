//! Zendesk API client and destination against wiremock: exact requests (paths, query, auth, JSON bodies) and Zendesk's documented answers and errors.
#![cfg(feature = "zendesk")]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use secrecy::SecretString;
use serde_json::{Value, json};
use switchboard::tenant::Connection;
use switchboard::zendesk::{
    Comment, FailureClass, MAX_UPLOAD_BYTES, NewTicket, ZendeskAccount, ZendeskAuth, ZendeskClient,
    ZendeskConfig, ZendeskDestination,
};
use switchboard::{
    Delivery, DeliveryError, Destination, Event, Message, MessageFormat, Person, Target, TenantId,
};
use wiremock::matchers::{body_bytes, body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// base64("agent@acme.test/token:tok123")
const BASIC: &str = "Basic YWdlbnRAYWNtZS50ZXN0L3Rva2VuOnRvazEyMw==";

fn config(server: &MockServer) -> ZendeskConfig {
    ZendeskConfig::new().base_url(&server.uri()).unwrap()
}

fn account(server: &MockServer) -> ZendeskAccount {
    let auth = ZendeskAuth::api_token("agent@acme.test", SecretString::from("tok123"));
    ZendeskAccount::new(&config(server), "acme", auth).unwrap()
}

fn client(server: &MockServer) -> ZendeskClient {
    ZendeskClient::new(&config(server)).unwrap()
}

async fn received(server: &MockServer) -> Vec<wiremock::Request> {
    server.received_requests().await.unwrap_or_default()
}

#[tokio::test]
async fn phone_search_uses_the_search_api_with_digits_only() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/search.json"))
        .and(query_param("query", "type:user phone:4930123456"))
        .and(header("authorization", BASIC))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "results": [
                {"id": 35436, "name": "Robert Jones", "phone": "+49 30 123456", "role": "end-user", "result_type": "user", "active": true}
            ],
            "facets": null, "next_page": null, "previous_page": null, "count": 1
        })))
        .expect(1)
        .mount(&server)
        .await;
    let users = client(&server)
        .search_users_by_phone(&account(&server), "+4930123456")
        .await
        .unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].id, 35436);
    assert_eq!(users[0].phone.as_deref(), Some("+49 30 123456"));
}

#[tokio::test]
async fn oauth_tokens_go_in_a_bearer_header() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/tickets/9.json"))
        .and(header("authorization", "Bearer oauth-xyz"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ticket": {"id": 9, "requester_id": 5, "status": "open"}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let acct = ZendeskAccount::new(
        &config(&server),
        "acme",
        ZendeskAuth::oauth(SecretString::from("oauth-xyz")),
    )
    .unwrap();
    let t = client(&server).get_ticket(&acct, 9).await.unwrap();
    assert_eq!(t.requester_id, Some(5));
}

#[tokio::test]
async fn end_users_and_phone_identities_are_created_with_documented_bodies() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v2/users.json"))
        .and(body_json(json!({"user": {"name": "Caller +49 30 123456", "role": "end-user", "phone": "+4930123456"}})))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"user": {"id": 9000, "name": "Caller +49 30 123456", "role": "end-user", "phone": "+4930123456"}})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/users/9000/identities.json"))
        .and(body_json(json!({"identity": {"type": "phone_number", "value": "+4930999999"}})))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"identity": {"id": 77, "user_id": 9000, "type": "phone_number", "value": "+4930999999", "verified": true, "primary": false}})))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let a = account(&server);
    let u = c
        .create_end_user(&a, "Caller +49 30 123456", Some("+4930123456"), None)
        .await
        .unwrap();
    assert_eq!(u.id, 9000);
    let id = c.add_phone_identity(&a, 9000, "+4930999999").await.unwrap();
    assert_eq!((id.id, id.kind.as_str()), (77, "phone_number"));
}

#[tokio::test]
async fn agents_are_listed_with_cursor_pagination_to_the_end() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users.json"))
        .and(query_param("role[]", "agent"))
        .and(query_param("role[]", "admin"))
        .and(query_param("page[size]", "100"))
        .and(query_param("page[after]", "xxx"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "users": [{"id": 3, "name": "C", "email": "c@acme.test", "role": "agent"}],
            "meta": {"has_more": false, "after_cursor": "zzz", "before_cursor": "yyy"},
            "links": {"next": null, "prev": null}
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users.json"))
        .and(query_param("page[size]", "100"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "users": [{"id": 1, "name": "A", "email": "a@acme.test", "role": "admin"}, {"id": 2, "name": "B", "email": null, "role": "agent"}],
            "meta": {"has_more": true, "after_cursor": "xxx", "before_cursor": null},
            "links": {"next": "https://acme.zendesk.com/api/v2/users.json?page[size]=100&page[after]=xxx", "prev": null}
        })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let agents = client(&server)
        .list_agents(&account(&server))
        .await
        .unwrap();
    let ids: Vec<u64> = agents.iter().map(|u| u.id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(received(&server).await.len(), 2);
}

#[tokio::test]
async fn tickets_are_created_with_the_exact_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v2/tickets.json"))
        .and(header("authorization", BASIC))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({"ticket": {
            "subject": "Call", "comment": {"body": "Hi", "public": false},
            "requester_id": 5, "group_id": 6, "assignee_id": 7,
            "tags": ["phone_call"], "external_id": "switchboard-call:c1"
        }})))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"ticket": {"id": 35436, "requester_id": 5, "group_id": 6, "assignee_id": 7, "status": "open", "subject": "Call"}})))
        .expect(1)
        .mount(&server)
        .await;
    let t = client(&server)
        .create_ticket(
            &account(&server),
            &NewTicket {
                subject: Some("Call".into()),
                comment: Some(Comment::internal("Hi")),
                requester_id: Some(5),
                group_id: Some(6),
                assignee_id: Some(7),
                tags: vec!["phone_call".into()],
                external_id: Some("switchboard-call:c1".into()),
                ..NewTicket::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(t.id, 35436);
}

#[tokio::test]
async fn validation_errors_are_permanent_and_name_the_field() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v2/tickets.json"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "details": {"requester_id": [{"description": "Requester: is suspended.", "error": "InvalidValue"}]},
            "description": "Record validation errors",
            "error": "RecordInvalid"
        })))
        .mount(&server)
        .await;
    let e = client(&server)
        .create_ticket(&account(&server), &NewTicket::default())
        .await
        .unwrap_err();
    assert_eq!(e.class(), FailureClass::Permanent);
    assert_eq!(e.code(), Some("RecordInvalid"));
    assert_eq!(e.fields(), ["requester_id"]);
    assert!(e.message().contains("Requester: is suspended."), "{e}");
    assert!(matches!(
        e.to_delivery_error(),
        DeliveryError::Permanent { .. }
    ));
}

#[tokio::test]
async fn rate_limits_carry_retry_after_and_outages_are_temporary() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/tickets/1.json"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "93")
                .set_body_string("Too Many Requests"),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/tickets/2.json"))
        .respond_with(
            ResponseTemplate::new(503).set_body_string("<html>Service Unavailable</html>"),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/tickets/3.json"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"error": "RecordNotFound", "description": "Not found"})),
        )
        .mount(&server)
        .await;
    let (c, a) = (client(&server), account(&server));
    let e = c.get_ticket(&a, 1).await.unwrap_err();
    assert_eq!(
        e.to_delivery_error(),
        DeliveryError::RateLimited {
            retry_after: Some(Duration::from_secs(93)),
            reason: e.to_string()
        }
    );
    assert_eq!(
        c.get_ticket(&a, 2).await.unwrap_err().class(),
        FailureClass::Temporary
    );
    let nf = c.get_ticket(&a, 3).await.unwrap_err();
    assert!(nf.is_not_found());
    assert_eq!(nf.class(), FailureClass::Permanent);
}

#[tokio::test]
async fn uploads_send_raw_bytes_and_refuse_files_over_50_mb() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v2/uploads.json"))
        .and(query_param("filename", "call-1.mp3"))
        .and(header("content-type", "audio/mpeg"))
        .and(body_bytes(b"ID3audio".to_vec()))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"upload": {
            "token": "6bk3gql82em5nmf",
            "attachments": [{"id": 498483, "file_name": "call-1.mp3", "content_url": "https://acme.zendesk.com/attachments/call-1.mp3", "content_type": "audio/mpeg", "size": 8, "thumbnails": []}]
        }})))
        .expect(1)
        .mount(&server)
        .await;
    let (c, a) = (client(&server), account(&server));
    let up = c
        .upload(
            &a,
            "call-1.mp3",
            "audio/mpeg",
            Bytes::from_static(b"ID3audio"),
        )
        .await
        .unwrap();
    assert_eq!(up.token, "6bk3gql82em5nmf");
    assert_eq!(up.attachments[0].id, 498483);
    let big = Bytes::from(vec![0u8; usize::try_from(MAX_UPLOAD_BYTES).unwrap() + 1]);
    let e = c.upload(&a, "big.wav", "audio/wav", big).await.unwrap_err();
    assert_eq!(e.class(), FailureClass::Permanent);
    assert_eq!(
        received(&server).await.len(),
        1,
        "the oversized file was never sent"
    );
}

fn delivery(tenant: &str, connection: Option<Connection>, target: Target) -> Delivery {
    let event = Event::builder("evt-1", "feedback.received")
        .tenant(tenant)
        .subject(Person::new("u1").name("Ada").email("Ada@Example.com"))
        .build()
        .unwrap();
    Delivery {
        id: 1,
        tenant: TenantId::new(tenant).unwrap(),
        connection: connection.map(Arc::new),
        event: Arc::new(event),
        route: "r".into(),
        target,
        recipient: None,
        recipient_user_id: None,
        message: Message {
            text: "Great app".into(),
            title: Some("Feedback".into()),
            format: MessageFormat::Plain,
        },
        attempt: 1,
    }
}

fn connection(tenant: &str, email: Option<&str>, token: &str) -> Connection {
    let mut b = Connection::builder(TenantId::new(tenant).unwrap(), "zendesk", "acme")
        .access_token(SecretString::from(token.to_owned()));
    if let Some(e) = email {
        b = b.data(json!({"email": e}));
    }
    b.build().unwrap()
}

#[tokio::test]
async fn the_destination_creates_a_ticket_with_the_tenants_credentials() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/tickets.json"))
        .and(query_param("external_id", "switchboard-delivery:evt-1"))
        .and(header("authorization", BASIC))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"tickets": [], "next_page": null, "count": 0})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/tickets.json"))
        .and(header("authorization", BASIC))
        .and(body_json(json!({"ticket": {
            "subject": "Feedback", "comment": {"body": "Great app", "public": true},
            "requester": {"name": "Ada", "email": "ada@example.com"},
            "tags": ["switchboard"], "external_id": "switchboard-delivery:evt-1"
        }})))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"ticket": {"id": 501}})))
        .expect(1)
        .mount(&server)
        .await;
    let dest = ZendeskDestination::new(config(&server)).unwrap();
    assert_eq!(dest.platform(), Some("zendesk"));
    assert!(!dest.has_fixed_credentials());
    let r = dest
        .deliver(&delivery(
            "t1",
            Some(connection("t1", Some("agent@acme.test"), "tok123")),
            Target::Ticket { id: None },
        ))
        .await
        .unwrap();
    assert_eq!(r.remote_id.as_deref(), Some("501"));
}

#[tokio::test]
async fn a_revoked_token_disconnects_only_that_delivery() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/api/v2/tickets/42.json"))
        .and(header("authorization", "Bearer revoked"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"error": "Couldn't authenticate you"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api/v2/tickets/42.json"))
        .and(header("authorization", "Bearer good"))
        .and(body_json(
            json!({"ticket": {"comment": {"body": "Great app", "public": false}}}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ticket": {"id": 42}})))
        .mount(&server)
        .await;
    let dest = ZendeskDestination::new(config(&server)).unwrap();
    let target = Target::Ticket {
        id: Some("42".into()),
    };
    let e = dest
        .deliver(&delivery(
            "t1",
            Some(connection("t1", None, "revoked")),
            target.clone(),
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, DeliveryError::Disconnected { .. }), "{e:?}");
    assert!(!e.reason().contains("revoked"), "no token in the reason");
    let ok = dest
        .deliver(&delivery(
            "t2",
            Some(connection("t2", None, "good")),
            target.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(ok.remote_id.as_deref(), Some("42"));
    // No connection and no fixed credentials: parked, not dropped.
    let none = dest
        .deliver(&delivery("t3", None, target))
        .await
        .unwrap_err();
    assert!(matches!(none, DeliveryError::Disconnected { .. }));
}

#[tokio::test]
async fn fixed_credentials_serve_only_the_default_tenant() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/api/v2/tickets/7.json"))
        .and(header("authorization", BASIC))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ticket": {"id": 7}})))
        .expect(1)
        .mount(&server)
        .await;
    let dest = ZendeskDestination::with_fixed_account(
        config(&server),
        "acme",
        ZendeskAuth::api_token("agent@acme.test", SecretString::from("tok123")),
    )
    .unwrap();
    assert!(dest.has_fixed_credentials());
    let target = Target::Ticket {
        id: Some("7".into()),
    };
    dest.deliver(&delivery("default", None, target.clone()))
        .await
        .unwrap();
    assert!(
        dest.deliver(&delivery("other", None, target))
            .await
            .is_err()
    );
    assert!(!format!("{dest:?}").contains("tok123"));
}

#[test]
fn connections_of_other_platforms_or_without_tokens_are_refused() {
    let cfg = ZendeskConfig::new();
    let slack = Connection::builder(TenantId::new("t").unwrap(), "slack", "T1")
        .access_token(SecretString::from("x"))
        .build()
        .unwrap();
    assert!(ZendeskAccount::from_connection(&cfg, &slack).is_err());
    let no_token = Connection::builder(TenantId::new("t").unwrap(), "zendesk", "acme")
        .build()
        .unwrap();
    assert_eq!(
        ZendeskAccount::from_connection(&cfg, &no_token)
            .unwrap_err()
            .kind(),
        switchboard::ErrorKind::Unauthorized
    );
    let evil = Connection::builder(TenantId::new("t").unwrap(), "zendesk", "evil.com/")
        .access_token(SecretString::from("x"))
        .build()
        .unwrap();
    assert!(ZendeskAccount::from_connection(&cfg, &evil).is_err());
    let ok = connection("t", None, "x");
    assert_eq!(
        ZendeskAccount::from_connection(&cfg, &ok).unwrap().base_url,
        "https://acme.zendesk.com"
    );
    let _: Value = json!(null);
}

mod properties {
    use proptest::prelude::*;
    use switchboard::zendesk::{FailureClass, base_url_for, classify, validate_subdomain};

    proptest! {
        #[test]
        fn a_valid_subdomain_always_yields_its_own_zendesk_host(raw in "\\PC{0,70}") {
            if let Ok(sub) = validate_subdomain(&raw) {
                let url = url::Url::parse(&base_url_for(&sub).unwrap()).unwrap();
                prop_assert_eq!(url.scheme(), "https");
                let host = format!("{sub}.zendesk.com");
                prop_assert_eq!(url.host_str(), Some(host.as_str()));
                prop_assert_eq!(url.path(), "/");
                prop_assert!(url.port().is_none());
            }
        }

        #[test]
        fn labels_are_accepted(sub in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?") {
            prop_assert_eq!(validate_subdomain(&sub).unwrap(), sub);
        }

        #[test]
        fn classification_follows_the_status_for_any_body(
            status in 400u16..600,
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let e = classify("op", status, None, &body);
            let expected = match status {
                429 => FailureClass::RateLimited { retry_after: None },
                401 | 403 => FailureClass::Disconnected,
                409 => FailureClass::Temporary,
                s if s >= 500 => FailureClass::Temporary,
                _ => FailureClass::Permanent,
            };
            prop_assert_eq!(e.class(), expected);
            prop_assert_eq!(e.status(), status);
        }

        #[test]
        fn every_detail_field_is_named(fields in proptest::collection::btree_set("[a-z_]{1,12}", 1..5)) {
            let details: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|f| (f.clone(), serde_json::json!([{"description": format!("{f} is invalid"), "error": "InvalidValue"}])))
                .collect();
            let body = serde_json::json!({"error": "RecordInvalid", "description": "Record validation errors", "details": details});
            let e = classify("op", 422, None, body.to_string().as_bytes());
            let named: Vec<String> = e.fields().to_vec();
            prop_assert_eq!(named, fields.iter().cloned().collect::<Vec<_>>());
            for f in &fields {
                let needle = format!("{f}: {f} is invalid");
                prop_assert!(e.message().contains(&needle));
            }
        }
    }
}

mod identity {
    use super::*;
    use switchboard::identity::{Resolution, ResolveContext};
    use switchboard::zendesk::ZendeskIdentity;

    fn cx() -> ResolveContext {
        ResolveContext::default_tenant()
    }
    use switchboard::{IdentityResolver, MemoryStore, Store};

    fn resolver(server: &MockServer) -> ZendeskIdentity {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        ZendeskIdentity::new(client(server), account(server), store, "DE")
    }

    #[tokio::test]
    async fn people_resolve_by_phone_then_email_and_shared_numbers_stay_ambiguous() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/v2/search.json"))
            .and(query_param("query", "type:user phone:4930111111"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"results": [], "count": 0})),
            )
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v2/search.json"))
            .and(query_param("query", "type:user email:ada@example.com"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": [
                {"id": 8, "email": "ADA@example.com", "result_type": "user"},
                {"id": 9, "email": "ada.lovelace@example.com", "result_type": "user"}
            ], "count": 2})))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v2/search.json"))
            .and(query_param("query", "type:user phone:4930222222"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": [
                {"id": 1, "result_type": "user"}, {"id": 2, "result_type": "user"}
            ], "count": 2})))
            .mount(&server)
            .await;
        let r = resolver(&server);
        let ada = Person::new("u1")
            .email("ada@example.com")
            .phone("030 111111", "DE");
        assert_eq!(
            r.resolve(&cx(), &ada).await.unwrap(),
            Resolution::Matched("8".into())
        );
        assert_eq!(
            r.resolve(&cx(), &ada).await.unwrap(),
            Resolution::Matched("8".into()),
            "cached"
        );
        let shared = Person::new("u2").phone("+49 30 222222", "DE");
        assert_eq!(
            r.resolve(&cx(), &shared).await.unwrap(),
            Resolution::Ambiguous(vec!["1".into(), "2".into()])
        );
    }

    #[tokio::test]
    async fn sync_is_one_cursor_paginated_pass() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/v2/users.json"))
            .and(query_param("page[after]", "c2"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "users": [{"id": 3, "email": "bob@example.com", "active": false}, {"id": 4, "phone": "+49 30 123456"}],
                "meta": {"has_more": false, "after_cursor": null}
            })))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v2/users.json"))
            .and(query_param("page[size]", "100"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "users": [{"id": 1, "email": "ada@example.com"}, {"id": 2, "email": "ADA@example.com"}, {"id": 5, "email": "cy@example.com"}],
                "meta": {"has_more": true, "after_cursor": "c2"}
            })))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        let people = [
            Person::new("ada").email("ada@example.com"),
            Person::new("bob").email("bob@example.com"),
            Person::new("cy").email("cy@example.com"),
            Person::new("dee").phone("030 123456", "DE"),
        ];
        let report = resolver(&server).sync(&cx(), &people).await.unwrap();
        let mut matched = report.matched.clone();
        matched.sort();
        assert_eq!(
            matched,
            [
                ("cy".to_owned(), "5".to_owned()),
                ("dee".to_owned(), "4".to_owned())
            ]
        );
        assert_eq!(
            report.ambiguous.len(),
            1,
            "two Zendesk users share ada's email"
        );
        assert_eq!(report.unmatched.len(), 1, "bob's account is deactivated");
        assert_eq!(report.skipped.deactivated, 1);
        assert_eq!((report.directory_size, report.api_calls), (5, 2));
    }
}
