//! Socket Mode against a WebSocket server the test runs on loopback and a wiremock `apps.connections.open`: hello, envelopes acknowledged by id (with response payloads), refresh on disconnect, reconnect on drops, de-duplication across connections.

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request as WsRequest, Response};

use super::common::*;

const APP_TOKEN: &str = "xapp-1-A111-222-3b4c5d6e";
const WAIT: Duration = Duration::from_secs(20);

/// One accepted WebSocket connection and the path it asked for.
struct Conn {
    path: String,
    ws: WebSocketStream<TcpStream>,
}

impl Conn {
    async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }
    async fn hello(&mut self) {
        self.send(json!({
            "type": "hello",
            "num_connections": 1,
            "debug_info": { "host": "applink-1", "build_number": 10, "approximate_connection_time": 18060 },
            "connection_info": { "app_id": "A111" }
        }))
        .await;
    }
    /// The next text frame, as JSON.
    async fn next_json(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("the connection is open")
                .unwrap();
            if let Message::Text(t) = msg {
                return serde_json::from_str(t.as_str()).unwrap();
            }
        }
    }
    /// Waits for the client to close this connection.
    async fn closed(&mut self) {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("closed in time")
            {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    }
}

/// A WebSocket server on 127.0.0.1 handing each connection to the test.
struct WsServer {
    addr: std::net::SocketAddr,
    conns: mpsc::UnboundedReceiver<Conn>,
}

impl WsServer {
    async fn start() -> WsServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, conns) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let path = Arc::new(Mutex::new(String::new()));
                    let seen = path.clone();
                    // The signature is tungstenite's handshake callback.
                    #[allow(clippy::result_large_err)]
                    let callback = move |req: &WsRequest, resp: Response| {
                        *seen.lock().unwrap() = req.uri().to_string();
                        Ok(resp)
                    };
                    if let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await {
                        let path = path.lock().unwrap().clone();
                        let _ = tx.send(Conn { path, ws });
                    }
                });
            }
        });
        WsServer { addr, conns }
    }
    fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }
    async fn accept(&mut self) -> Conn {
        tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .expect("a connection in time")
            .unwrap()
    }
}

/// `apps.connections.open` answering `urls` in turn (the last one from then on).
async fn connections_open(server: &MockServer, urls: &[String]) {
    for (i, url) in urls.iter().enumerate() {
        let mock = Mock::given(method("POST"))
            .and(path("/apps.connections.open"))
            .and(bearer_token(APP_TOKEN))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({ "ok": true, "url": url })),
            );
        let mock = if i + 1 < urls.len() {
            mock.up_to_n_times(1)
        } else {
            mock
        };
        mock.with_priority(u8::try_from(i + 1).unwrap())
            .mount(server)
            .await;
    }
}

fn socket(server: &MockServer, inbound: SlackInbound, connections: usize) -> SocketMode {
    SocketMode::builder(secret(APP_TOKEN), inbound)
        .client(SlackClient::new(&config(server)).unwrap())
        .connections(connections)
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .allow_plain_websocket()
        .build()
        .unwrap()
}

fn perks_command(calls: Arc<AtomicUsize>) -> SlackInbound {
    SlackInbound::builder(secret(SIGNING_SECRET))
        .command("/perks", move |cmd| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, switchboard::Error>(format!("<@{}>, your balance is *42 EUR*", cmd.user_id))
            }
        })
        .build()
        .unwrap()
}

fn slash_envelope(id: &str) -> Value {
    json!({
        "envelope_id": id,
        "type": "slash_commands",
        "accepts_response_payload": true,
        "payload": {
            "token": "bHKJ2n9AW6Ju3MjciOHfbA1b",
            "team_id": "T0123ABC",
            "team_domain": "acme",
            "channel_id": "C0123ABC",
            "channel_name": "general",
            "user_id": "U2CERLKJA",
            "user_name": "roadrunner",
            "command": "/perks",
            "text": "balance",
            "api_app_id": "A111",
            "is_enterprise_install": "false",
            "response_url": "https://hooks.slack.com/commands/T0123ABC/1/2",
            "trigger_id": "398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
        }
    })
}

#[tokio::test]
async fn hello_then_an_event_runs_its_handler_and_is_acknowledged_by_envelope_id() {
    let slack = MockServer::start().await;
    let mut ws = WsServer::start().await;
    connections_open(&slack, &[ws.url("/link/?ticket=1")]).await;
    let (tx, mut mentions) = mpsc::unbounded_channel();
    let inbound = SlackInbound::builder(secret(SIGNING_SECRET))
        .store(Arc::new(MemoryStore::new()))
        .token(BotToken::new(secret(TOKEN)))
        .on("app_mention", move |cx| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((cx.tenant.clone(), cx.event["text"].clone()));
                Ok(())
            }
        })
        .build()
        .unwrap();
    let receiver = socket(&slack, inbound, 1);
    let handle = receiver.start();
    let mut conn = ws.accept().await;
    assert_eq!(conn.path, "/link/?ticket=1");
    conn.hello().await;
    conn.send(json!({
        "envelope_id": "57d12c34-e2e2-4223-8a9e-2c803925bf02",
        "type": "events_api",
        "accepts_response_payload": false,
        "retry_attempt": 0,
        "retry_reason": "",
        "payload": {
            "token": "XXYYZZ",
            "team_id": "T0123ABC",
            "api_app_id": "A111",
            "event": {
                "type": "app_mention",
                "user": "U2CERLKJA",
                "text": "<@U0LAN0Z89> is it everything a river should be?",
                "ts": "1515449522.000016",
                "channel": "C0LAN2Q65",
                "event_ts": "1515449522000016"
            },
            "type": "event_callback",
            "event_id": "Ev0LAN670R",
            "event_time": 1515449522
        }
    }))
    .await;
    assert_eq!(
        conn.next_json().await,
        json!({ "envelope_id": "57d12c34-e2e2-4223-8a9e-2c803925bf02" })
    );
    let (tenant, text) = tokio::time::timeout(WAIT, mentions.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tenant, TenantId::default_tenant());
    assert_eq!(text, "<@U0LAN0Z89> is it everything a river should be?");
    let stats = handle.stats();
    assert_eq!((stats.hellos, stats.connected, stats.envelopes), (1, 1, 1));
    // The documented request: POST with the app-level token.
    let opened = requests(&slack, "/apps.connections.open").await;
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].method.as_str(), "POST");
    handle.shutdown().await;
    conn.closed().await;
}

#[tokio::test]
async fn a_slash_command_is_answered_in_the_acknowledgement_payload() {
    let slack = MockServer::start().await;
    let mut ws = WsServer::start().await;
    connections_open(&slack, &[ws.url("/link")]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let handle = socket(&slack, perks_command(calls.clone()), 1).start();
    let mut conn = ws.accept().await;
    conn.hello().await;
    conn.send(slash_envelope("dbdd0ef3-1543-4f94-bfb4-133d0e6c1545"))
        .await;
    assert_eq!(
        conn.next_json().await,
        json!({
            "envelope_id": "dbdd0ef3-1543-4f94-bfb4-133d0e6c1545",
            "payload": { "response_type": "ephemeral", "text": "<@U2CERLKJA>, your balance is *42 EUR*" }
        })
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    handle.shutdown().await;
}

#[tokio::test]
async fn disconnect_opens_a_new_connection_before_closing_the_old_one() {
    let slack = MockServer::start().await;
    let mut ws = WsServer::start().await;
    connections_open(&slack, &[ws.url("/one"), ws.url("/two")]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let handle = socket(&slack, perks_command(calls.clone()), 1).start();
    let mut one = ws.accept().await;
    assert_eq!(one.path, "/one");
    one.hello().await;
    one.send(json!({
        "type": "disconnect",
        "reason": "refresh_requested",
        "debug_info": { "host": "applink-1" }
    }))
    .await;
    let mut two = ws.accept().await;
    assert_eq!(two.path, "/two");
    two.hello().await;
    // Only once the new connection is there is the old one closed.
    one.closed().await;
    two.send(slash_envelope("env-after-refresh")).await;
    assert_eq!(two.next_json().await["envelope_id"], "env-after-refresh");
    assert_eq!(requests(&slack, "/apps.connections.open").await.len(), 2);
    let stats = handle.stats();
    assert_eq!((stats.refreshes, stats.reconnects), (1, 0));
    handle.shutdown().await;
}

#[tokio::test]
async fn a_dropped_connection_is_reopened() {
    let slack = MockServer::start().await;
    let mut ws = WsServer::start().await;
    connections_open(&slack, &[ws.url("/one"), ws.url("/two")]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let handle = socket(&slack, perks_command(calls.clone()), 1).start();
    let mut one = ws.accept().await;
    one.hello().await;
    drop(one);
    let mut two = ws.accept().await;
    assert_eq!(two.path, "/two");
    two.hello().await;
    two.send(slash_envelope("env-after-drop")).await;
    assert_eq!(two.next_json().await["envelope_id"], "env-after-drop");
    assert_eq!(handle.stats().reconnects, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    handle.shutdown().await;
}

#[tokio::test]
async fn the_same_envelope_on_two_connections_is_handled_once() {
    let slack = MockServer::start().await;
    let mut ws = WsServer::start().await;
    connections_open(&slack, &[ws.url("/a"), ws.url("/b")]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let handle = socket(&slack, perks_command(calls.clone()), 2).start();
    let mut first = ws.accept().await;
    let mut second = ws.accept().await;
    let mut paths = vec![first.path.clone(), second.path.clone()];
    paths.sort();
    assert_eq!(paths, ["/a", "/b"]);
    first.hello().await;
    second.hello().await;
    first.send(slash_envelope("env-twice")).await;
    let ack = first.next_json().await;
    second.send(slash_envelope("env-twice")).await;
    // The second delivery is acknowledged with the same answer, not run again.
    assert_eq!(second.next_json().await, ack);
    assert_eq!(
        ack["payload"]["text"],
        "<@U2CERLKJA>, your balance is *42 EUR*"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = handle.stats();
    assert_eq!((stats.envelopes, stats.duplicates), (1, 1));
    handle.shutdown().await;
}

#[tokio::test]
async fn an_event_that_could_not_be_handled_is_not_acknowledged() {
    // No store: the events handler cannot remember or publish, answers a
    // server error, and the envelope stays unacknowledged for Slack to redeliver.
    let slack = MockServer::start().await;
    let inbound = SlackInbound::builder(secret(SIGNING_SECRET))
        .build()
        .unwrap();
    let receiver = socket(&slack, inbound, 1);
    let envelope = SocketMessage::parse(
        json!({
            "envelope_id": "e1",
            "type": "events_api",
            "payload": { "type": "event_callback", "event_id": "Ev1", "event": { "type": "app_mention" } }
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let SocketMessage::Envelope(envelope) = envelope else {
        panic!("not an envelope")
    };
    assert_eq!(receiver.handle_envelope(&envelope).await, None);
    assert_eq!(receiver.handle_envelope(&envelope).await, None);
    assert_eq!(receiver.stats().envelopes, 2);
}

#[test]
fn socket_mode_needs_the_app_level_token() {
    let inbound = SlackInbound::builder(secret(SIGNING_SECRET))
        .build()
        .unwrap();
    let err = SocketMode::builder(secret(TOKEN), inbound.clone())
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), switchboard::ErrorKind::Config);
    assert!(
        SocketMode::builder(secret(APP_TOKEN), inbound)
            .connections(11)
            .build()
            .is_err()
    );
}
