//! The Zendesk webhook intake as an `EventSource` behind its axum router: per-tenant secrets, 503 before the switchboard runs, published once.
#![cfg(all(feature = "zendesk", feature = "axum"))]

use base64::Engine as _;
use secrecy::SecretString;
use switchboard::zendesk::{
    SIGNATURE_HEADER, SIGNATURE_TIMESTAMP_HEADER, ZendeskWebhook, ZendeskWebhookSource, router,
};
use switchboard::{MemoryStore, Shutdown, Switchboard, TenantId};

const BODY: &str = r#"{"type":"zen:event-type:ticket.created","id":"evt-1","subject":"zen:ticket:1","detail":{"id":"1"}}"#;

fn sign(secret: &str, ts: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(switchboard::inbound::hmac_sha256(
        secret.as_bytes(),
        &[ts.as_bytes(), BODY.as_bytes()],
    ))
}

#[tokio::test]
async fn each_tenants_webhooks_are_verified_with_its_secret_and_published_once() {
    let acme = TenantId::new("acme").unwrap();
    let hooks = ZendeskWebhookSource::new([
        ZendeskWebhook::new(SecretString::from("default-secret")),
        ZendeskWebhook::new(SecretString::from("acme-secret")).tenant(acme.clone()),
    ]);
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .source(hooks.clone())
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(hooks.clone(), 1 << 20);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let http = reqwest::Client::new();
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let post = |path: &str, secret: &str| {
        http.post(format!("http://{addr}{path}"))
            .header(SIGNATURE_TIMESTAMP_HEADER, ts.as_str())
            .header(SIGNATURE_HEADER, sign(secret, &ts))
            .body(BODY)
            .send()
    };
    // Before the switchboard runs the source: Zendesk is asked to retry.
    assert_eq!(
        post("/zendesk/webhook/acme", "acme-secret")
            .await
            .unwrap()
            .status(),
        503
    );

    let (trigger, shutdown) = Shutdown::new();
    let running = tokio::spawn({
        let sb = sb.clone();
        async move { sb.run(shutdown).await }
    });
    while !hooks.is_running() {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        post("/zendesk/webhook/acme", "acme-secret")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post("/zendesk/webhook/acme", "default-secret")
            .await
            .unwrap()
            .status(),
        401,
        "another tenant's secret does not verify"
    );
    assert_eq!(
        post("/zendesk/webhook", "default-secret")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post("/zendesk/webhook/globex", "acme-secret")
            .await
            .unwrap()
            .status(),
        404
    );
    // The acme event was stored under acme: publishing it again is a duplicate.
    let req = http::Request::builder()
        .method("POST")
        .uri("/zendesk/webhook/acme")
        .header(SIGNATURE_TIMESTAMP_HEADER, ts.as_str())
        .header(SIGNATURE_HEADER, sign("acme-secret", &ts))
        .body(bytes::Bytes::from(BODY))
        .unwrap();
    let event = ZendeskWebhook::new(SecretString::from("acme-secret"))
        .tenant(acme)
        .to_event(&req, chrono::Utc::now().timestamp())
        .unwrap();
    assert_eq!(event.kind, "zendesk.ticket.created");
    assert!(sb.publish(event).await.unwrap().duplicate);
    drop(trigger);
    running.await.unwrap().unwrap();
}
