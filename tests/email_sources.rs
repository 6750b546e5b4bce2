//! The email sources: the HTTP endpoint for raw MIME POSTs (shared secret and HMAC, body cap, 2xx only once published or rejected) and the bucket source against an in-process S3 server (`s3s-fs`), with objects moved after processing and processed once across restarts.

use std::sync::Arc;

use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use secrecy::SecretString;
use switchboard::email::{
    Authenticator, CaptureOutcome, EmailBucketSource, EmailCapture, EmailHttpSource,
    ForwardingAddresses, HttpAuth, MemoryDirectory, StoreAddressRegistry,
};
use switchboard::source::{EventSource, Shutdown};
use switchboard::store::{MemoryStore, Store};
use switchboard::{Person, Switchboard, TenantId};

const DOMAIN: &str = "in.switchboard.test";
const RECEIVER: &str = "mx.switchboard.test";

struct World {
    sb: Switchboard,
    store: Arc<dyn Store>,
    capture: Arc<EmailCapture>,
    to: String,
}

async fn world() -> World {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let addresses = ForwardingAddresses::new(
        DOMAIN,
        Arc::new(StoreAddressRegistry::new(Arc::clone(&store))),
    )
    .unwrap();
    let acme = TenantId::new("acme").unwrap();
    let to = addresses.address_for(&acme, "u1").await.unwrap();
    let people = MemoryDirectory::new();
    people.add(&acme, Person::new("u1").email("ada@acme.test"));
    let capture = Arc::new(EmailCapture::new(
        addresses,
        Arc::new(people),
        Authenticator::trusting_receiver(RECEIVER),
    ));
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .build()
        .unwrap();
    World {
        sb,
        store,
        capture,
        to,
    }
}

/// A forward from Ada, authenticated by the trusted receiver's header.
fn forward(to: &str, id: &str) -> String {
    format!(
        "Authentication-Results: {RECEIVER}; dmarc=pass header.from=acme.test\r\nFrom: Ada <ada@acme.test>\r\nTo: {to}\r\nSubject: Fwd: {id}\r\nMessage-ID: <{id}@acme.test>\r\nDate: Tue, 4 Mar 2025 09:12:44 +0100\r\n\r\nSee below.\r\n"
    )
}

/// The same, but from a foreign receiver: not authentic.
fn forged(to: &str) -> String {
    forward(to, "forged").replace(RECEIVER, "mx.evil.test")
}

/// True if `raw` was already published (publishing it again is a duplicate).
async fn was_published(w: &World, raw: &str) -> bool {
    let CaptureOutcome::Accepted { event } =
        w.capture.evaluate(raw.as_bytes(), &[], None).await.unwrap()
    else {
        panic!("not an acceptable message");
    };
    w.sb.publish(*event).await.unwrap().duplicate
}

fn post(body: &str) -> http::request::Builder {
    let _ = body;
    http::Request::builder()
        .method("POST")
        .uri("/email/inbound")
        .header("content-type", "message/rfc822")
}

fn json(r: &http::Response<Bytes>) -> serde_json::Value {
    serde_json::from_slice(r.body()).unwrap()
}

async fn running(
    source: &EmailHttpSource,
    sb: &Switchboard,
) -> switchboard::source::ShutdownTrigger {
    let (trigger, shutdown) = Shutdown::new();
    let s = source.clone();
    let emitter = sb.emitter();
    tokio::spawn(async move { s.run(emitter, shutdown).await });
    for _ in 0..100 {
        if source.is_running() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(source.is_running());
    trigger
}

#[tokio::test]
async fn http_shared_secret_publishes_then_answers_2xx() {
    let w = world().await;
    let source = EmailHttpSource::new(
        Arc::clone(&w.capture),
        HttpAuth::SharedSecret(SecretString::from("s3cret-token")),
    );
    let raw = forward(&w.to, "h1");
    let req = |auth: Option<&str>, body: &str| {
        let mut b = post(body);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(Bytes::from(body.to_owned())).unwrap()
    };
    // Not running yet: 503, so the provider retries.
    let early = source.handle(&req(Some("Bearer s3cret-token"), &raw)).await;
    assert_eq!(early.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    let _trigger = running(&source, &w.sb).await;

    assert_eq!(
        source.handle(&req(None, &raw)).await.status(),
        http::StatusCode::UNAUTHORIZED
    );
    let wrong = source.handle(&req(Some("Bearer s3cret-tokeN"), &raw)).await;
    assert_eq!(wrong.status(), http::StatusCode::UNAUTHORIZED);
    assert!(!String::from_utf8_lossy(wrong.body()).contains("secret"));

    let ok = source.handle(&req(Some("Bearer s3cret-token"), &raw)).await;
    assert_eq!(ok.status(), http::StatusCode::ACCEPTED);
    let body = json(&ok);
    assert_eq!(body["outcome"], "accepted");
    assert_eq!(body["event_id"], "email:acme:u1:h1@acme.test");
    assert_eq!(body["duplicate"], false);
    assert!(was_published(&w, &raw).await, "published before the 2xx");
    // A provider's redelivery: same event, nothing new.
    let again = source.handle(&req(Some("Bearer s3cret-token"), &raw)).await;
    assert_eq!(again.status(), http::StatusCode::ACCEPTED);
    assert_eq!(json(&again)["duplicate"], true);

    // A forged message is rejected for good (2xx, typed reason).
    let no = source
        .handle(&req(Some("Bearer s3cret-token"), &forged(&w.to)))
        .await;
    assert_eq!(no.status(), http::StatusCode::OK);
    assert_eq!(json(&no)["outcome"], "rejected");
    assert_eq!(json(&no)["reason"], "not_authentic");

    // Not MIME: 415.
    let mut b = http::Request::builder()
        .method("POST")
        .header("content-type", "application/json")
        .header("authorization", "Bearer s3cret-token");
    b = b.uri("/email/inbound");
    assert_eq!(
        source
            .handle(&b.body(Bytes::from("{}")).unwrap())
            .await
            .status(),
        http::StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
}

#[tokio::test]
async fn http_hmac_binds_body_and_time_and_caps_the_body() {
    let w = world().await;
    let key = "hmac-key-for-tests";
    let source = EmailHttpSource::new(
        Arc::clone(&w.capture),
        HttpAuth::hmac(SecretString::from(key)),
    )
    .body_limit(4096);
    let _trigger = running(&source, &w.sb).await;
    let raw = forward(&w.to, "h2");
    let signed_to = |ts: i64, body: &str, signed_body: &str, rcpt: &str| {
        let mac = switchboard::inbound::hmac_sha256(
            key.as_bytes(),
            &[ts.to_string().as_bytes(), b".", signed_body.as_bytes()],
        );
        post(body)
            .header("x-switchboard-timestamp", ts.to_string())
            .header(
                "x-switchboard-signature",
                format!("sha256={}", hex::encode(mac)),
            )
            .header("x-switchboard-recipients", rcpt)
            .body(Bytes::from(body.to_owned()))
            .unwrap()
    };
    let signed = |ts: i64, body: &str, signed_body: &str| signed_to(ts, body, signed_body, &w.to);
    let now = chrono::Utc::now().timestamp();
    // A body changed after signing, and a stale timestamp: 401.
    let tampered = raw.replace("See below.", "Wire money.");
    assert_eq!(
        source.handle(&signed(now, &tampered, &raw)).await.status(),
        http::StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        source
            .handle(&signed(now - 3600, &raw, &raw))
            .await
            .status(),
        http::StatusCode::UNAUTHORIZED
    );
    let ok = source.handle(&signed(now, &raw, &raw)).await;
    assert_eq!(ok.status(), http::StatusCode::ACCEPTED, "{:?}", ok.body());
    assert!(was_published(&w, &raw).await);
    // Over the cap: 413 before anything else.
    let big = format!("{raw}{}", "x".repeat(5000));
    assert_eq!(
        source.handle(&signed(now, &big, &big)).await.status(),
        http::StatusCode::PAYLOAD_TOO_LARGE
    );
    // The envelope recipients header wins over To: an unknown envelope
    // address is a typed rejection, although To names the live one.
    let unknown = format!("{}@{DOMAIN}", "a".repeat(26));
    let r = source.handle(&signed_to(now, &raw, &raw, &unknown)).await;
    assert_eq!(r.status(), http::StatusCode::OK);
    assert_eq!(json(&r)["outcome"], "rejected");
    assert_eq!(json(&r)["reason"], "unknown_address");
}

#[tokio::test]
async fn http_router_over_a_real_socket() {
    let w = world().await;
    let source = EmailHttpSource::new(
        Arc::clone(&w.capture),
        HttpAuth::SharedSecret(SecretString::from("tok")),
    )
    .body_limit(2048);
    let _trigger = running(&source, &w.sb).await;
    let app = switchboard::email::router(source);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/email/inbound");
    let raw = forward(&w.to, "r1");
    let r = client
        .post(&url)
        .header("authorization", "Bearer tok")
        .header("content-type", "message/rfc822")
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["outcome"],
        "accepted"
    );
    let r = client
        .post(&url)
        .header("authorization", "Bearer tok")
        .body("x".repeat(3000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

// ---------------------------------------------------------------------------
// The bucket source against s3s-fs.

const ACCESS_KEY: &str = "AKIAEMAILTEST";
const SECRET_KEY: &str = "email-test-secret-key-123";
const BUCKET: &str = "mail";

struct S3 {
    endpoint: String,
    _root: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn s3() -> S3 {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join(BUCKET)).unwrap();
    let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    S3 {
        endpoint,
        _root: root,
        task,
    }
}

impl S3 {
    fn client(&self) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_bucket_name(BUCKET)
                .with_region("us-east-1")
                .with_access_key_id(ACCESS_KEY)
                .with_secret_access_key(SECRET_KEY)
                .build()
                .unwrap(),
        )
    }

    async fn put(&self, key: &str, body: &str) {
        self.client()
            .put(&ObjectPath::from(key), body.as_bytes().to_vec().into())
            .await
            .unwrap();
    }

    async fn keys(&self) -> Vec<String> {
        use futures::TryStreamExt;
        let mut keys: Vec<String> = self
            .client()
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        keys.sort();
        keys
    }
}

#[tokio::test]
async fn bucket_objects_are_captured_once_and_moved() {
    let w = world().await;
    let server = s3().await;
    let good = forward(&w.to, "b1");
    server.put("inbound/b1", &good).await;
    server.put("inbound/forged", &forged(&w.to)).await;
    server
        .put("inbound/AMAZON_SES_SETUP_NOTIFICATION", "not a mail")
        .await;
    server.put("elsewhere/b9", &forward(&w.to, "b9")).await;
    let source = EmailBucketSource::new(
        server.client(),
        "inbound/",
        Arc::clone(&w.capture),
        Arc::clone(&w.store),
    );
    let poll = source.poll(&w.sb.emitter()).await.unwrap();
    assert_eq!(
        (poll.accepted, poll.rejected, poll.resumed, poll.failed),
        (1, 2, 0, 0)
    );
    assert_eq!(
        server.keys().await,
        [
            "elsewhere/b9",
            "inbound/processed/b1",
            "inbound/rejected/AMAZON_SES_SETUP_NOTIFICATION",
            "inbound/rejected/forged",
        ]
    );
    assert!(was_published(&w, &good).await);
    // Nothing left: a second poll does nothing (the output folders are not input).
    assert_eq!(
        source.poll(&w.sb.emitter()).await.unwrap(),
        Default::default()
    );

    // A crash after the item was published and marked, before the move: the
    // object is back in the input. A restarted source (a new instance on the
    // same store) finishes the move without processing it again.
    let good2 = forward(&w.to, "b2");
    server.put("inbound/b2", &good2).await;
    let before = EmailBucketSource::new(
        server.client(),
        "inbound",
        Arc::clone(&w.capture),
        Arc::clone(&w.store),
    );
    assert_eq!(before.poll(&w.sb.emitter()).await.unwrap().accepted, 1);
    // Put the very same object back (same bytes, so the same ETag).
    server.put("inbound/b2", &good2).await;
    let restarted = EmailBucketSource::new(
        server.client(),
        "inbound",
        Arc::clone(&w.capture),
        Arc::clone(&w.store),
    );
    let poll = restarted.poll(&w.sb.emitter()).await.unwrap();
    assert_eq!(
        (poll.accepted, poll.resumed),
        (0, 1),
        "moved, not processed again"
    );
    assert!(!server.keys().await.contains(&"inbound/b2".to_owned()));
}

#[tokio::test]
async fn bucket_source_runs_until_shutdown() {
    let w = world().await;
    let server = s3().await;
    let source = EmailBucketSource::new(
        server.client(),
        "inbound",
        Arc::clone(&w.capture),
        Arc::clone(&w.store),
    )
    .interval(std::time::Duration::from_millis(50));
    let (trigger, shutdown) = Shutdown::new();
    let s = source.clone();
    let emitter = w.sb.emitter();
    let task = tokio::spawn(async move { s.run(emitter, shutdown).await });
    let raw = forward(&w.to, "run1");
    server.put("inbound/run1", &raw).await;
    let mut moved = false;
    for _ in 0..200 {
        if server.keys().await == ["inbound/processed/run1"] {
            moved = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(moved, "the running source picked the object up");
    assert!(was_published(&w, &raw).await);
    trigger.trigger();
    task.await.unwrap().unwrap();
}

/// A registry whose store is down.
struct DownRegistry;

#[async_trait::async_trait]
impl switchboard::email::AddressRegistry for DownRegistry {
    async fn insert(&self, _: &switchboard::email::AddressRecord) -> switchboard::Result<bool> {
        Err(down())
    }
    async fn by_token(
        &self,
        _: &str,
    ) -> switchboard::Result<Option<switchboard::email::AddressRecord>> {
        Err(down())
    }
    async fn current(
        &self,
        _: &TenantId,
        _: &str,
    ) -> switchboard::Result<Option<switchboard::email::AddressRecord>> {
        Err(down())
    }
    async fn revoke(&self, _: &str, _: chrono::DateTime<chrono::Utc>) -> switchboard::Result<()> {
        Err(down())
    }
}

fn down() -> switchboard::Error {
    switchboard::Error::new(switchboard::ErrorKind::Store, "database is down").temporary()
}

#[tokio::test]
async fn http_store_failure_is_503_so_the_provider_retries() {
    let w = world().await;
    let capture = Arc::new(EmailCapture::new(
        ForwardingAddresses::new(DOMAIN, Arc::new(DownRegistry)).unwrap(),
        Arc::new(MemoryDirectory::new()),
        Authenticator::trusting_receiver(RECEIVER),
    ));
    let source = EmailHttpSource::new(capture, HttpAuth::SharedSecret(SecretString::from("t")));
    let _trigger = running(&source, &w.sb).await;
    let raw = forward(&w.to, "down1");
    let r = source
        .handle(
            &post(&raw)
                .header("authorization", "Bearer t")
                .body(Bytes::from(raw.clone()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(!String::from_utf8_lossy(r.body()).contains("database"));
}
