//! Teams inbound: Bot Framework JWT validation with keys generated here (valid, wrong audience/issuer, expired, serviceUrl mismatch, unknown kid then refetch, missing endorsement), message-action capture, conversation references and bot answers.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use secrecy::SecretString;
use serde_json::{Value, json};
use switchboard::teams::{ReferenceChange, TeamsConfig, TeamsCredentials, TeamsInbound};
use switchboard::{
    Capabilities, Delivery, DeliveryError, Destination, Event, MemoryStore, Receipt, Route,
    Switchboard, Target, TenantId,
};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const APP: &str = "00000000-0000-0000-0000-0000000000a1";

struct TestKey {
    kid: &'static str,
    encoding: EncodingKey,
    jwk_n: String,
    jwk_e: String,
}

fn make_key(kid: &'static str) -> TestKey {
    let mut rng = rand_core_rng();
    let private = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let der = private.to_pkcs1_der().unwrap();
    TestKey {
        kid,
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        jwk_n: URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
        jwk_e: URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
    }
}

fn rand_core_rng() -> impl rsa::rand_core::CryptoRngCore {
    rsa::rand_core::OsRng
}

fn keys() -> &'static (TestKey, TestKey) {
    static KEYS: OnceLock<(TestKey, TestKey)> = OnceLock::new();
    KEYS.get_or_init(|| (make_key("key-1"), make_key("key-2")))
}

fn jwk(k: &TestKey, endorsements: &[&str]) -> Value {
    json!({"kty": "RSA", "use": "sig", "kid": k.kid, "n": k.jwk_n, "e": k.jwk_e, "endorsements": endorsements})
}

async fn openid(server: &MockServer, jwks: Vec<Value>, times: Option<u64>) {
    Mock::given(method("GET"))
        .and(path("/v1/.well-known/openidconfiguration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "issuer": "https://api.botframework.com",
            "authorization_endpoint": "https://invalid.botframework.com",
            "jwks_uri": format!("{}/v1/.well-known/keys", server.uri()),
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"]
        })))
        .mount(server)
        .await;
    let mut m = Mock::given(method("GET"))
        .and(path("/v1/.well-known/keys"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "keys": jwks })));
    if let Some(n) = times {
        m = m.up_to_n_times(n);
    }
    m.mount(server).await;
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn token(key: &TestKey, claims: Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(key.kid.to_owned());
    encode(&h, &claims, &key.encoding).unwrap()
}

fn claims(service_url: &str) -> Value {
    json!({
        "iss": "https://api.botframework.com",
        "aud": APP,
        "exp": now() + 3600,
        "nbf": now() - 60,
        "serviceurl": service_url,
    })
}

fn config(server: &MockServer) -> TeamsConfig {
    TeamsConfig::new()
        .openid_metadata_url(&format!(
            "{}/v1/.well-known/openidconfiguration",
            server.uri()
        ))
        .unwrap()
        .login_url(&server.uri())
        .unwrap()
        .timeout(None)
}

fn request(token: Option<&str>, body: &Value) -> http::Request<Bytes> {
    let mut b = http::Request::builder()
        .method("POST")
        .uri("/api/messages")
        .header("content-type", "application/json");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Bytes::from(body.to_string())).unwrap()
}

fn install_activity(service_url: &str) -> Value {
    json!({
        "type": "conversationUpdate",
        "id": "f:install-1",
        "channelId": "msteams",
        "serviceUrl": service_url,
        "timestamp": "2026-01-01T00:00:00.000Z",
        "from": {"id": "29:user", "aadObjectId": "aad-admin"},
        "recipient": {"id": "28:app", "name": "Perks"},
        "conversation": {"id": "19:general@thread.tacv2", "conversationType": "channel", "tenantId": "entra-1", "isGroup": true},
        "membersAdded": [{"id": "28:app"}],
        "channelData": {"tenant": {"id": "entra-1"}, "team": {"id": "19:general@thread.tacv2", "name": "Sales"}, "eventType": "teamMemberAdded"}
    })
}

#[tokio::test]
async fn a_valid_token_is_accepted_and_the_install_is_recorded() {
    let server = MockServer::start().await;
    let (k1, _) = keys();
    openid(&server, vec![jwk(k1, &["msteams"])], None).await;
    let changes = Arc::new(Mutex::new(Vec::new()));
    let seen = changes.clone();
    let inbound = TeamsInbound::builder(config(&server), APP)
        .on_reference(move |c| seen.lock().unwrap().push(c))
        .build()
        .unwrap();
    let su = "https://smba.trafficmanager.net/emea/";
    let response = inbound
        .handle(&request(
            Some(&token(k1, claims(su))),
            &install_activity(su),
        ))
        .await;
    assert_eq!(response.status(), 200);
    let r = inbound
        .conversation_book()
        .get("entra-1", "sales")
        .expect("recorded by team name");
    assert_eq!(r.conversation_id, "19:general@thread.tacv2");
    assert_eq!(r.service_url, su);
    assert!(matches!(
        changes.lock().unwrap()[0],
        ReferenceChange::Added(_)
    ));

    // Uninstall removes it.
    let mut removed = install_activity(su);
    removed["membersAdded"] = json!([]);
    removed["membersRemoved"] = json!([{"id": "28:app"}]);
    let response = inbound
        .handle(&request(Some(&token(k1, claims(su))), &removed))
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        inbound
            .conversation_book()
            .get("entra-1", "19:general@thread.tacv2")
            .is_none()
    );
    assert!(matches!(
        changes.lock().unwrap()[1],
        ReferenceChange::Removed(_)
    ));
}

#[tokio::test]
async fn bad_tokens_get_401_without_detail() {
    let server = MockServer::start().await;
    let (k1, k2) = keys();
    openid(
        &server,
        vec![jwk(k1, &["msteams"]), jwk(k2, &["skype"])],
        None,
    )
    .await;
    let inbound = TeamsInbound::builder(config(&server), APP).build().unwrap();
    let su = "https://smba.trafficmanager.net/emea/";
    let body = install_activity(su);
    let mut cases: Vec<(&str, Option<String>)> = Vec::new();
    let mut c = claims(su);
    c["aud"] = json!("someone-else");
    cases.push(("wrong audience", Some(token(k1, c))));
    let mut c = claims(su);
    c["iss"] = json!("https://evil.example");
    cases.push(("wrong issuer", Some(token(k1, c))));
    let mut c = claims(su);
    c["exp"] = json!(now() - 600);
    cases.push(("expired beyond the skew", Some(token(k1, c))));
    cases.push((
        "serviceUrl mismatch",
        Some(token(k1, claims("https://attacker.example/"))),
    ));
    cases.push(("key not endorsed for msteams", Some(token(k2, claims(su)))));
    cases.push(("no token", None));
    cases.push(("garbage", Some("not.a.jwt".to_owned())));
    for (what, t) in cases {
        let response = inbound.handle(&request(t.as_deref(), &body)).await;
        assert_eq!(response.status(), 401, "{what}");
        assert_eq!(&response.body()[..], b"Unauthorized", "{what}");
    }
    // Within the 5-minute skew an expired token still passes.
    let mut c = claims(su);
    c["exp"] = json!(now() - 120);
    let response = inbound.handle(&request(Some(&token(k1, c)), &body)).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_kid_refetches_the_keys_at_most_once_a_minute() {
    let server = MockServer::start().await;
    let (k1, k2) = keys();
    // The first key set has only key-1; after rotation both.
    openid(&server, vec![jwk(k1, &["msteams"])], Some(1)).await;
    Mock::given(method("GET"))
        .and(path("/v1/.well-known/keys"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "keys": [jwk(k1, &["msteams"]), jwk(k2, &["msteams"])]
        })))
        .mount(&server)
        .await;
    let inbound = TeamsInbound::builder(config(&server), APP).build().unwrap();
    let su = "https://smba.trafficmanager.net/emea/";
    let body = install_activity(su);
    let ok = inbound
        .handle(&request(Some(&token(k1, claims(su))), &body))
        .await;
    assert_eq!(ok.status(), 200);
    // key-2 is unknown and the keys were fetched just now: no refetch yet.
    let early = inbound
        .handle(&request(Some(&token(k2, claims(su))), &body))
        .await;
    assert_eq!(early.status(), 401);
    tokio::time::advance(Duration::from_secs(61)).await;
    let later = inbound
        .handle(&request(Some(&token(k2, claims(su))), &body))
        .await;
    assert_eq!(later.status(), 200);
    let key_fetches = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/v1/.well-known/keys")
        .count();
    assert_eq!(key_fetches, 2);
}

struct Recorder(Arc<Mutex<Vec<Event>>>);

#[async_trait]
impl Destination for Recorder {
    fn name(&self) -> &str {
        "rec"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    async fn deliver(&self, d: &Delivery) -> Result<Receipt, DeliveryError> {
        self.0.lock().unwrap().push((*d.event).clone());
        Ok(Receipt::default())
    }
}

fn invoke(name: &str, value: Value, su: &str) -> Value {
    json!({
        "type": "invoke",
        "name": name,
        "id": "f:invoke-7",
        "channelId": "msteams",
        "serviceUrl": su,
        "from": {"id": "29:author", "name": "Ann", "aadObjectId": "aad-ann"},
        "recipient": {"id": "28:app"},
        "conversation": {"id": "19:general@thread.tacv2", "conversationType": "channel", "tenantId": "entra-1"},
        "channelData": {"tenant": {"id": "entra-1"}},
        "value": value
    })
}

#[tokio::test]
async fn the_message_action_opens_a_prefilled_form_and_publishes_the_submission() {
    let server = MockServer::start().await;
    let (k1, _) = keys();
    openid(&server, vec![jwk(k1, &["msteams"])], None).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(Recorder(events.clone()))
        .route(
            Route::on("insight.captured")
                .to("rec", Target::channel("insights"))
                .template("{{ data.text }}"),
        )
        .build()
        .unwrap();
    let inbound = TeamsInbound::builder(config(&server), APP)
        .switchboard(sb.clone())
        .tenant_resolver(|entra| (entra == "entra-1").then(|| TenantId::new("acme").unwrap()))
        .build()
        .unwrap();
    let su = "https://smba.trafficmanager.net/emea/";
    let fetch = invoke(
        "composeExtension/fetchTask",
        json!({
            "commandId": "captureInsight",
            "commandContext": "message",
            "messagePayload": {
                "id": "1700000000000",
                "body": {"contentType": "html", "content": "<p>Customer wants &amp; needs SSO</p>"},
                "from": {"user": {"id": "aad-bob", "displayName": "Bob"}}
            }
        }),
        su,
    );
    let response = inbound
        .handle(&request(Some(&token(k1, claims(su))), &fetch))
        .await;
    assert_eq!(response.status(), 200);
    let v: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(v["task"]["type"], "continue");
    let card = &v["task"]["value"]["card"]["content"];
    assert_eq!(
        v["task"]["value"]["card"]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["body"][0]["value"], "Customer wants & needs SSO");
    assert_eq!(card["body"][1]["value"], "aad-bob");
    assert_eq!(
        card["body"][1]["choices.data"]["dataset"],
        "graph.microsoft.com/users"
    );

    let submit = invoke(
        "composeExtension/submitAction",
        json!({
            "commandId": "captureInsight",
            "commandContext": "message",
            "data": {"text": " Customer wants SSO ", "subject": "aad-bob", "messageId": "1700000000000"}
        }),
        su,
    );
    let response = inbound
        .handle(&request(Some(&token(k1, claims(su))), &submit))
        .await;
    assert_eq!(response.status(), 200);
    sb.run_until_idle().await.unwrap();
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.kind, "insight.captured");
    assert_eq!(e.id, "teams:submit:f:invoke-7");
    assert_eq!(e.tenant.as_str(), "acme");
    assert_eq!(e.source, "teams");
    assert_eq!(e.data["text"], "Customer wants SSO");
    assert_eq!(e.data["author"]["aad_object_id"], "aad-ann");
    assert_eq!(e.data["subject"]["aad_object_id"], "aad-bob");
    assert_eq!(e.data["conversation"]["type"], "channel");
    assert_eq!(e.data["entra_tenant_id"], "entra-1");
}

#[tokio::test]
async fn an_empty_submission_is_refused_politely() {
    let server = MockServer::start().await;
    let (k1, _) = keys();
    openid(&server, vec![jwk(k1, &["msteams"])], None).await;
    let inbound = TeamsInbound::builder(config(&server), APP).build().unwrap();
    let su = "https://smba.trafficmanager.net/emea/";
    let submit = invoke(
        "composeExtension/submitAction",
        json!({"commandId": "captureInsight", "data": {"text": "  "}}),
        su,
    );
    let response = inbound
        .handle(&request(Some(&token(k1, claims(su))), &submit))
        .await;
    let v: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(v["task"]["type"], "message");
}

#[tokio::test]
async fn a_bot_question_is_answered_in_the_conversation() {
    let server = MockServer::start().await;
    let (k1, _) = keys();
    openid(&server, vec![jwk(k1, &["msteams"])], None).await;
    Mock::given(method("POST"))
        .and(path("/entra-1/oauth2/v2.0/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token_type": "Bearer", "expires_in": 3599, "access_token": "reply-tok"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let su = format!("{}/amer/", server.uri());
    Mock::given(method("POST"))
        .and(path("/amer/v3/conversations/a:personal-1/activities"))
        .and(header("authorization", "Bearer reply-tok"))
        .and(body_partial_json(json!({
            "type": "message",
            "text": "You have 120 points.",
            "replyToId": "m-1",
            "conversation": {"id": "a:personal-1"}
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "r-1"})))
        .expect(1)
        .mount(&server)
        .await;
    let asked = Arc::new(Mutex::new(None));
    let seen = asked.clone();
    let inbound = TeamsInbound::builder(config(&server), APP)
        .credentials(|tenant| TeamsCredentials::new(APP, tenant, SecretString::from("s3cret")).ok())
        .on_message(move |q| {
            *seen.lock().unwrap() = Some(q.text.clone());
            async move {
                q.text
                    .contains("points")
                    .then(|| "You have 120 points.".to_owned())
            }
        })
        .build()
        .unwrap();
    let message = json!({
        "type": "message",
        "id": "m-1",
        "channelId": "msteams",
        "serviceUrl": su,
        "text": "<at>Perks</at> how many points do I have?",
        "from": {"id": "29:ann", "aadObjectId": "aad-ann"},
        "recipient": {"id": "28:app", "name": "Perks"},
        "conversation": {"id": "a:personal-1", "conversationType": "personal", "tenantId": "entra-1"},
        "channelData": {"tenant": {"id": "entra-1"}}
    });
    let response = inbound
        .handle(&request(Some(&token(k1, claims(&su))), &message))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        asked.lock().unwrap().as_deref(),
        Some("how many points do I have?")
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused_before_anything_else() {
    let server = MockServer::start().await;
    let inbound = TeamsInbound::builder(config(&server), APP)
        .body_limit(64)
        .build()
        .unwrap();
    let body = json!({"type": "message", "text": "x".repeat(100)});
    let response = inbound.handle(&request(Some("t"), &body)).await;
    assert_eq!(response.status(), 413);
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn learned_references_are_persisted_into_the_tenant_connection() {
    use switchboard::secret::Keyring;
    use switchboard::store::ConnectionStore;
    use switchboard::{Connection, ConnectionKey, Store};
    let server = MockServer::start().await;
    let (k1, _) = keys();
    openid(&server, vec![jwk(k1, &["msteams"])], None).await;
    let store = Arc::new(MemoryStore::new().with_keyring(Keyring::new("k1", [7u8; 32]).unwrap()));
    let acme = TenantId::new("acme").unwrap();
    let conn = Connection::builder(acme.clone(), "teams", "entra-1")
        .secret("client_secret", SecretString::from("s3cret"))
        .data(json!({"app_id": APP, "service_url": "https://smba.example/"}))
        .build()
        .unwrap();
    store
        .put_connection(&conn, chrono::Utc::now())
        .await
        .unwrap();
    let changes = Arc::new(Mutex::new(Vec::new()));
    let seen = changes.clone();
    let dyn_store: Arc<dyn Store> = store.clone();
    let inbound = TeamsInbound::builder(config(&server), APP)
        .store(dyn_store)
        .tenant_resolver(|_| TenantId::new("acme").ok())
        .on_reference(move |c| seen.lock().unwrap().push(c))
        .build()
        .unwrap();
    let su = "https://smba.trafficmanager.net/emea/";
    let response = inbound
        .handle(&request(
            Some(&token(k1, claims(su))),
            &install_activity(su),
        ))
        .await;
    assert_eq!(response.status(), 200);
    let key = ConnectionKey::new("teams", "entra-1");
    let stored = store.connection(&key).await.unwrap().unwrap();
    let r = &stored.data["conversations"]["19:general@thread.tacv2"];
    assert_eq!(r["serviceUrl"], su);
    assert_eq!(r["tenantId"], "entra-1");
    assert_eq!(r["name"], "Sales");
    // The rest of the connection is kept (data, secrets) and the hook still runs.
    assert_eq!(stored.data["app_id"], APP);
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(stored.secret("client_secret").unwrap()),
        "s3cret"
    );
    assert_eq!(changes.lock().unwrap().len(), 1);
    let revision = stored.revision;

    // The same activity again writes nothing.
    inbound
        .handle(&request(
            Some(&token(k1, claims(su))),
            &install_activity(su),
        ))
        .await;
    assert_eq!(
        store.connection(&key).await.unwrap().unwrap().revision,
        revision
    );

    // Uninstall removes it from the connection.
    let mut removed = install_activity(su);
    removed["membersAdded"] = json!([]);
    removed["membersRemoved"] = json!([{"id": "28:app"}]);
    inbound
        .handle(&request(Some(&token(k1, claims(su))), &removed))
        .await;
    let stored = store.connection(&key).await.unwrap().unwrap();
    assert_eq!(stored.data["conversations"], json!({}));

    // An Entra tenant without a connection is only kept in memory.
    let mut other = install_activity(su);
    other["conversation"]["tenantId"] = json!("entra-2");
    other["channelData"]["tenant"]["id"] = json!("entra-2");
    let response = inbound
        .handle(&request(Some(&token(k1, claims(su))), &other))
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        inbound
            .conversation_book()
            .get("entra-2", "sales")
            .is_some()
    );
    assert!(
        store
            .connection(&ConnectionKey::new("teams", "entra-2"))
            .await
            .unwrap()
            .is_none()
    );
}
