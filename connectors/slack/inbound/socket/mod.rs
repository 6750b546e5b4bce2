//! The Socket Mode receiver: `apps.connections.open` with the app-level token, WebSocket connections (rustls), envelopes dispatched to the same handlers as the HTTP receiver and acknowledged by `envelope_id`, refresh on `disconnect`, reconnects with backoff and envelope de-duplication across connections.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::SlackInbound;
use crate::slack::api::SlackClient;
use crate::{Error, ErrorKind, Result};

mod envelope;

pub use envelope::{DisconnectReason, EnvelopeKind, SocketEnvelope, SocketMessage};

/// Slack allows an app up to 10 Socket Mode connections at once.
pub const MAX_SOCKET_CONNECTIONS: usize = 10;
/// How long envelope ids are remembered for de-duplication (Slack retries
/// an unacknowledged envelope a few times within minutes).
const ENVELOPE_MEMORY: Duration = Duration::from_secs(3_600);
/// Acknowledgements still pending on a replaced connection get this long.
const RETIRE_GRACE: Duration = Duration::from_secs(4);

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;
type Opening = Pin<Box<dyn Future<Output = Result<Ws>> + Send>>;

/// Counters of a running [`SocketMode`] receiver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketModeStats {
    /// Connections open now (those that said `hello`).
    pub connected: usize,
    /// `hello` messages received.
    pub hellos: u64,
    /// Connections opened to replace one Slack asked to close (`disconnect`).
    pub refreshes: u64,
    /// Reconnects after a connection dropped without `disconnect`.
    pub reconnects: u64,
    /// Envelopes handled (once per `envelope_id`).
    pub envelopes: u64,
    /// Envelopes seen again (another connection, or a retry) and not handled twice.
    pub duplicates: u64,
}

#[derive(Default)]
struct Counters {
    connected: AtomicUsize,
    hellos: AtomicU64,
    refreshes: AtomicU64,
    reconnects: AtomicU64,
    envelopes: AtomicU64,
    duplicates: AtomicU64,
}

enum Seen {
    InFlight,
    Done(Option<Value>),
}

struct Inner {
    inbound: SlackInbound,
    client: SlackClient,
    app_token: SecretString,
    connections: usize,
    backoff_min: Duration,
    backoff_max: Duration,
    allow_plain: bool,
    seen: std::sync::Mutex<HashMap<String, (Instant, Seen)>>,
    counters: Counters,
}

/// Builder for [`SocketMode`].
#[must_use]
pub struct SocketModeBuilder {
    inbound: SlackInbound,
    app_token: SecretString,
    client: Option<SlackClient>,
    connections: usize,
    backoff_min: Duration,
    backoff_max: Duration,
    allow_plain: bool,
}

impl std::fmt::Debug for SocketModeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketModeBuilder")
            .field("app_token", &"[redacted]")
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl SocketModeBuilder {
    /// The client for `apps.connections.open` (default: the inbound handlers' client).
    pub fn client(mut self, client: SlackClient) -> Self {
        self.client = Some(client);
        self
    }
    /// How many connections to keep open for redundancy (default 1, at most
    /// [`MAX_SOCKET_CONNECTIONS`]). Slack delivers each envelope on one of
    /// them; retries may come on another and are handled once.
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n;
        self
    }
    /// The reconnect backoff: doubling from `min` up to `max`, with jitter
    /// (default 1 s to 60 s).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }
    /// Accepts `ws://` URLs from `apps.connections.open` (local test servers
    /// only; Slack answers `wss://`, and by default nothing else is accepted).
    pub fn allow_plain_websocket(mut self) -> Self {
        self.allow_plain = true;
        self
    }

    /// Validates and builds (nothing connects until [`SocketMode::start`]).
    pub fn build(self) -> Result<SocketMode> {
        if !self.app_token.expose_secret().starts_with("xapp-") {
            return Err(Error::new(
                ErrorKind::Config,
                "Socket Mode needs the app-level token (xapp-…, scope connections:write), not a bot token",
            ));
        }
        if self.connections == 0 || self.connections > MAX_SOCKET_CONNECTIONS {
            return Err(Error::new(
                ErrorKind::Config,
                format!("Socket Mode connections must be 1 to {MAX_SOCKET_CONNECTIONS}"),
            ));
        }
        let client = self
            .client
            .unwrap_or_else(|| self.inbound.inner.client.clone());
        Ok(SocketMode {
            inner: Arc::new(Inner {
                inbound: self.inbound,
                client,
                app_token: self.app_token,
                connections: self.connections,
                backoff_min: self.backoff_min,
                backoff_max: self.backoff_max,
                allow_plain: self.allow_plain,
                seen: std::sync::Mutex::new(HashMap::new()),
                counters: Counters::default(),
            }),
        })
    }
}

/// Socket Mode: receives Slack's events, slash commands and interactions
/// over WebSocket connections the app opens (no public request URL), and
/// hands them to the same [`SlackInbound`] handlers as the HTTP receiver.
///
/// Each envelope is acknowledged by its `envelope_id` once its handler
/// answered (events after they were published durably to the outbox, as
/// over HTTP; a slash command's reply or a view submission's
/// `response_action` travel in the acknowledgement's `payload`). An envelope
/// whose handler failed with a server-side error is not acknowledged, so
/// Slack delivers it again.
///
/// On `disconnect` a new connection is opened before the old one is closed;
/// a dropped connection is reopened with backoff. Cheap to clone.
#[derive(Clone)]
pub struct SocketMode {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SocketMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketMode")
            .field("app_token", &"[redacted]")
            .field("connections", &self.inner.connections)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A running receiver; [`SocketModeHandle::shutdown`] closes its connections.
#[derive(Debug)]
pub struct SocketModeHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    receiver: SocketMode,
}

impl SocketModeHandle {
    /// The receiver's counters.
    pub fn stats(&self) -> SocketModeStats {
        self.receiver.stats()
    }
    /// Closes every connection and waits for the connection tasks to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

impl SocketMode {
    /// Starts a builder: `app_token` is the app-level token (`xapp-…`);
    /// `inbound` the handlers (its signing secret is not used by Socket Mode).
    pub fn builder(app_token: SecretString, inbound: SlackInbound) -> SocketModeBuilder {
        SocketModeBuilder {
            inbound,
            app_token,
            client: None,
            connections: 1,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            allow_plain: false,
        }
    }

    /// The counters.
    pub fn stats(&self) -> SocketModeStats {
        let c = &self.inner.counters;
        SocketModeStats {
            connected: c.connected.load(Ordering::Relaxed),
            hellos: c.hellos.load(Ordering::Relaxed),
            refreshes: c.refreshes.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            envelopes: c.envelopes.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
        }
    }

    /// Opens the connections (each in its own task) and keeps them open
    /// until [`SocketModeHandle::shutdown`]. Needs a Tokio runtime.
    pub fn start(&self) -> SocketModeHandle {
        let (stop, _) = watch::channel(false);
        let tasks = (0..self.inner.connections)
            .map(|slot| {
                let inner = self.inner.clone();
                let stop = stop.subscribe();
                tokio::spawn(async move { inner.run(slot, stop).await })
            })
            .collect();
        SocketModeHandle {
            stop,
            tasks,
            receiver: self.clone(),
        }
    }

    /// Handles one envelope as a connection would, and returns the
    /// acknowledgement frame to send (`None`: not acknowledged, so that
    /// Slack redelivers it; or a duplicate still being handled).
    pub async fn handle_envelope(&self, envelope: &SocketEnvelope) -> Option<String> {
        self.inner.handle(envelope).await
    }
}

/// How a connection ended.
enum Ended {
    Stopped,
    Dropped,
}

/// What the connection loop does next.
enum Step {
    Stop,
    Outgoing(Option<String>),
    Incoming(Option<std::result::Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Replaced(Result<Box<Ws>>),
}

fn jitter(d: Duration) -> Duration {
    let spread = d.as_millis() as u64 / 4;
    let extra = if spread == 0 {
        0
    } else {
        rand::random::<u64>() % spread
    };
    d + Duration::from_millis(extra)
}

impl Inner {
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.min(16));
        jitter(
            self.backoff_min
                .saturating_mul(factor)
                .min(self.backoff_max),
        )
    }

    /// `apps.connections.open`, then the WebSocket handshake.
    async fn open(self: Arc<Self>) -> Result<Ws> {
        let url = self
            .client
            .apps_connections_open(&self.app_token)
            .await
            .map_err(Error::from)?;
        let parsed = url::Url::parse(&url)
            .map_err(|_| Error::new(ErrorKind::Network, "apps.connections.open gave a bad URL"))?;
        match parsed.scheme() {
            "wss" => {}
            "ws" if self.allow_plain => {}
            other => {
                return Err(Error::new(
                    ErrorKind::Network,
                    format!("apps.connections.open gave a {other}:// URL; only wss:// is used"),
                ));
            }
        }
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Network, "the Socket Mode connection failed")
                    .with_source(e)
                    .temporary()
            })?;
        Ok(ws)
    }

    async fn run(self: Arc<Self>, slot: usize, mut stop: watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            if *stop.borrow() {
                return;
            }
            let opened = tokio::select! {
                _ = stop.changed() => return,
                r = self.clone().open() => r,
            };
            match opened {
                Ok(ws) => {
                    failures = 0;
                    if let Ended::Stopped = self.clone().serve(slot, ws, &mut stop).await {
                        return;
                    }
                    self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(slot, "Socket Mode connection dropped; reconnecting");
                }
                Err(e) => {
                    tracing::warn!(slot, error = %e, "could not open a Socket Mode connection");
                    let wait = self.backoff(failures);
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Serves one connection slot until it drops (or the receiver stops);
    /// a `disconnect` swaps in a new connection without a gap.
    async fn serve(
        self: Arc<Self>,
        slot: usize,
        ws: Ws,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended {
        let (mut sink, mut stream) = ws.split();
        let (mut tx, mut rx) = mpsc::channel::<String>(64);
        let mut replacement: Option<Opening> = None;
        let mut said_hello = false;
        let ended = loop {
            let step = tokio::select! {
                _ = stop.changed() => Step::Stop,
                out = rx.recv() => Step::Outgoing(out),
                msg = stream.next() => Step::Incoming(msg),
                new = async {
                    match replacement.as_mut() {
                        Some(f) => f.await,
                        None => std::future::pending().await,
                    }
                }, if replacement.is_some() => Step::Replaced(new.map(Box::new)),
            };
            match step {
                Step::Stop => {
                    let _ = sink.send(Message::Close(None)).await;
                    break Ended::Stopped;
                }
                Step::Outgoing(Some(frame)) => {
                    if sink.send(Message::text(frame)).await.is_err() {
                        break Ended::Dropped;
                    }
                }
                Step::Outgoing(None) => {}
                Step::Incoming(Some(Ok(Message::Text(text)))) => {
                    match SocketMessage::parse(text.as_str().as_bytes()) {
                        Ok(SocketMessage::Hello { .. }) => {
                            self.counters.hellos.fetch_add(1, Ordering::Relaxed);
                            if !said_hello {
                                said_hello = true;
                                self.counters.connected.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(SocketMessage::Disconnect { reason }) => {
                            if reason == DisconnectReason::LinkDisabled {
                                tracing::error!(
                                    slot,
                                    "Slack closed Socket Mode: it was turned off in the app's settings"
                                );
                            } else {
                                tracing::debug!(
                                    slot,
                                    ?reason,
                                    "Slack asked to refresh the Socket Mode connection"
                                );
                            }
                            if replacement.is_none() {
                                replacement = Some(Box::pin(self.clone().open()));
                            }
                        }
                        Ok(SocketMessage::Envelope(envelope)) => {
                            let inner = self.clone();
                            let tx = tx.clone();
                            tokio::spawn(async move {
                                if let Some(ack) = inner.handle(&envelope).await {
                                    let _ = tx.send(ack).await;
                                }
                            });
                        }
                        Ok(SocketMessage::Unknown { kind }) => {
                            tracing::debug!(slot, kind = %kind, "unknown Socket Mode message ignored");
                        }
                        Err(e) => {
                            tracing::warn!(slot, error = %e, "bad Socket Mode message ignored")
                        }
                    }
                }
                Step::Incoming(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => {
                    // The old connection is gone; a replacement being
                    // opened takes over.
                    let Some(pending) = replacement.take() else {
                        break Ended::Dropped;
                    };
                    match pending.await {
                        Ok(new) => {
                            (sink, stream, tx, rx) = self.swap(slot, new, &mut said_hello, None);
                        }
                        Err(e) => {
                            tracing::warn!(slot, error = %e, "could not open the replacement Socket Mode connection");
                            break Ended::Dropped;
                        }
                    }
                }
                Step::Incoming(Some(Ok(_))) => {}
                Step::Replaced(Ok(new)) => {
                    replacement = None;
                    let old = (sink, rx);
                    (sink, stream, tx, rx) = self.swap(slot, *new, &mut said_hello, Some(old));
                }
                Step::Replaced(Err(e)) => {
                    tracing::warn!(slot, error = %e, "could not open the replacement Socket Mode connection");
                    replacement = None;
                }
            }
        };
        if said_hello {
            self.counters.connected.fetch_sub(1, Ordering::Relaxed);
        }
        ended
    }

    /// Puts `new` in place of the current connection; the old one (if still
    /// open) gets a moment to send pending acknowledgements, then is closed.
    #[allow(clippy::type_complexity)]
    fn swap(
        &self,
        slot: usize,
        new: Ws,
        said_hello: &mut bool,
        old: Option<(
            futures::stream::SplitSink<Ws, Message>,
            mpsc::Receiver<String>,
        )>,
    ) -> (
        futures::stream::SplitSink<Ws, Message>,
        futures::stream::SplitStream<Ws>,
        mpsc::Sender<String>,
        mpsc::Receiver<String>,
    ) {
        self.counters.refreshes.fetch_add(1, Ordering::Relaxed);
        if *said_hello {
            self.counters.connected.fetch_sub(1, Ordering::Relaxed);
            *said_hello = false;
        }
        tracing::debug!(slot, "Socket Mode connection replaced");
        if let Some((mut sink, mut rx)) = old {
            tokio::spawn(async move {
                let grace = tokio::time::sleep(RETIRE_GRACE);
                tokio::pin!(grace);
                loop {
                    tokio::select! {
                        _ = &mut grace => break,
                        frame = rx.recv() => match frame {
                            Some(f) => { let _ = sink.send(Message::text(f)).await; }
                            None => break,
                        },
                    }
                }
                let _ = sink.send(Message::Close(None)).await;
            });
        }
        let (sink, stream) = new.split();
        let (tx, rx) = mpsc::channel::<String>(64);
        (sink, stream, tx, rx)
    }

    /// Dispatches one envelope to the HTTP receiver's handlers, once per
    /// `envelope_id`; returns the acknowledgement (`None`: do not ack).
    async fn handle(&self, envelope: &SocketEnvelope) -> Option<String> {
        let id = envelope.envelope_id.clone();
        {
            let mut seen = self.seen.lock().ok()?;
            if let Some((_, state)) = seen.get(&id) {
                self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                return match state {
                    // The first delivery is still being handled; it acks.
                    Seen::InFlight => None,
                    Seen::Done(payload) => Some(envelope.ack(payload.clone())),
                };
            }
            if seen.len() > 1_024 {
                let now = Instant::now();
                seen.retain(|_, (at, _)| now.duration_since(*at) < ENVELOPE_MEMORY);
            }
            seen.insert(id.clone(), (Instant::now(), Seen::InFlight));
        }
        self.counters.envelopes.fetch_add(1, Ordering::Relaxed);
        let answer = self.inbound.socket_dispatch(envelope).await;
        let mut seen = self.seen.lock().ok()?;
        match answer {
            Some(payload) => {
                seen.insert(id, (Instant::now(), Seen::Done(payload.clone())));
                Some(envelope.ack(payload))
            }
            None => {
                // Not acknowledged: Slack's redelivery is handled afresh.
                seen.remove(&id);
                None
            }
        }
    }
}

impl SlackInbound {
    /// The Socket Mode side of the shared dispatch: the envelope's payload
    /// goes through the same handler as over HTTP (without the signature
    /// check: the connection itself is authenticated by the app token).
    /// `Some(payload)`: acknowledge, with the handler's JSON answer if any;
    /// `None`: a server-side failure, leave it for Slack to redeliver.
    pub(crate) async fn socket_dispatch(&self, envelope: &SocketEnvelope) -> Option<Option<Value>> {
        let body = envelope.http_body();
        if body.len() > self.inner.body_limit {
            tracing::warn!(envelope = %envelope.envelope_id, "Socket Mode payload over the body limit; acknowledged and dropped");
            return Some(None);
        }
        let response = match envelope.kind {
            EnvelopeKind::EventsApi => {
                let retry = envelope.retry_attempt.map(|n| n.to_string());
                self.events(&body, retry.as_deref()).await
            }
            EnvelopeKind::SlashCommands => self.command(&body).await,
            EnvelopeKind::Interactive => self.interaction(&body).await,
        };
        if response.status().is_server_error() {
            tracing::warn!(envelope = %envelope.envelope_id, kind = envelope.kind.as_str(), status = %response.status(), "Socket Mode envelope not acknowledged; Slack will redeliver it");
            return None;
        }
        Some(serde_json::from_slice::<Value>(response.body()).ok())
    }
}
