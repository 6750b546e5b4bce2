//! `EmailHttpSource`: an HTTP endpoint for providers that POST raw MIME (framework-agnostic on `http` types, plus an axum router), authenticated by a shared secret or an HMAC signature, answering 2xx only once the item is durably published or rejected for good.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::capture::{CaptureOutcome, EmailCapture, Rejection};
use super::parse::MAX_MESSAGE_BYTES;
use crate::Result;
use crate::inbound::{self, InboundRequest, InboundResponse};
use crate::source::{Emitter, EventSource, Shutdown};
#[cfg(feature = "axum")]
use crate::{Error, ErrorKind};

/// The header carrying the shared secret (`Authorization: Bearer <secret>`).
pub const AUTHORIZATION_HEADER: &str = "authorization";
/// The header carrying the HMAC signature: `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-switchboard-signature";
/// The header carrying the request's unix time, covered by the signature.
pub const TIMESTAMP_HEADER: &str = "x-switchboard-timestamp";
/// The optional header with the envelope recipients (`RCPT TO`), comma-separated.
pub const RECIPIENTS_HEADER: &str = "x-switchboard-recipients";

/// How a POST proves it comes from the configured provider.
pub enum HttpAuth {
    /// `Authorization: Bearer <secret>`, compared in constant time. Simple and
    /// what most providers' "custom header" settings can send; it relies on
    /// TLS for the secret's confidentiality and does not bind the body.
    SharedSecret(SecretString),
    /// `X-Switchboard-Signature: sha256=<hex of HMAC-SHA256(key, timestamp + "." + body)>`
    /// with `X-Switchboard-Timestamp: <unix seconds>` within a window (5
    /// minutes by default): binds the body and limits replays, for a relay the
    /// host controls (e.g. a Lambda behind an SES receipt rule).
    Hmac {
        /// The signing key.
        key: SecretString,
        /// Allowed clock skew either way.
        window: Duration,
    },
}

impl HttpAuth {
    /// HMAC with the default 5-minute window.
    pub fn hmac(key: SecretString) -> Self {
        HttpAuth::Hmac {
            key,
            window: inbound::DEFAULT_WINDOW,
        }
    }

    fn verify(&self, request: &InboundRequest, now_unix: i64) -> Result<()> {
        match self {
            HttpAuth::SharedSecret(secret) => {
                let given = inbound::header(request, AUTHORIZATION_HEADER)
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or_else(|| inbound::unauthorized("no bearer secret"))?;
                if inbound::constant_time_eq(
                    given.trim().as_bytes(),
                    secret.expose_secret().as_bytes(),
                ) {
                    Ok(())
                } else {
                    Err(inbound::unauthorized("wrong shared secret"))
                }
            }
            HttpAuth::Hmac { key, window } => {
                let ts_raw = inbound::header(request, TIMESTAMP_HEADER)
                    .ok_or_else(|| inbound::unauthorized("no timestamp"))?;
                let ts = inbound::parse_timestamp(ts_raw)?;
                inbound::check_timestamp(ts, now_unix, *window)?;
                let signature = inbound::header(request, SIGNATURE_HEADER)
                    .and_then(|v| v.trim().strip_prefix("sha256="))
                    .and_then(|h| hex::decode(h).ok())
                    .ok_or_else(|| inbound::unauthorized("no or malformed signature"))?;
                let parts: [&[u8]; 3] = [ts_raw.trim().as_bytes(), b".", request.body()];
                if inbound::verify_hmac_sha256(key.expose_secret().as_bytes(), &parts, &signature) {
                    Ok(())
                } else {
                    Err(inbound::unauthorized("bad signature"))
                }
            }
        }
    }
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpAuth::SharedSecret(_) => f.write_str("SharedSecret([redacted])"),
            HttpAuth::Hmac { window, .. } => f
                .debug_struct("Hmac")
                .field("key", &"[redacted]")
                .field("window", window)
                .finish(),
        }
    }
}

/// What one message became in a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Intake {
    /// Published (or already published before: `duplicate`).
    Published { event_id: String, duplicate: bool },
    /// Rejected for good; nothing stored.
    Rejected(Rejection),
}

/// Captures one raw message and publishes it through `emitter`; an `Err` is
/// an infrastructure failure (retry later), every property of the message an
/// [`Intake`].
pub(crate) async fn intake(
    capture: &EmailCapture,
    emitter: &Emitter,
    raw: &[u8],
    recipients: &[String],
) -> Result<Intake> {
    match capture.evaluate(raw, recipients, None).await? {
        CaptureOutcome::Rejected { rejection } => Ok(Intake::Rejected(rejection)),
        CaptureOutcome::Accepted { event } => {
            let outcome = emitter.emit(*event).await?;
            Ok(Intake::Published {
                event_id: outcome.event_id,
                duplicate: outcome.duplicate,
            })
        }
    }
}

/// Raw MIME POSTed by a mail provider, as an [`EventSource`]: register it with
/// the switchboard's builder (`.source(…)`) and hand its clones to the HTTP
/// layer ([`EmailHttpSource::handle`], or `email::router` with the `axum` feature).
///
/// Answers: `202` with `{"outcome":"accepted","event_id":…}` once the item is
/// durably published (a redelivery answers the same, `duplicate: true`);
/// `200` with `{"outcome":"rejected","reason":…}` for a message that will never
/// be accepted (so the provider does not retry it); `401` for a failed
/// [`HttpAuth`], `413` over the body cap, `415` for a non-MIME content type,
/// `503` before the source runs or when the store fails (the provider retries).
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct EmailHttpSource {
    capture: Arc<EmailCapture>,
    auth: Arc<HttpAuth>,
    body_limit: usize,
    emitter: Arc<OnceLock<Emitter>>,
}

impl EmailHttpSource {
    /// An endpoint capturing through `capture`, authenticated by `auth`, with
    /// a body cap of [`MAX_MESSAGE_BYTES`].
    pub fn new(capture: Arc<EmailCapture>, auth: HttpAuth) -> Self {
        EmailHttpSource {
            capture,
            auth: Arc::new(auth),
            body_limit: MAX_MESSAGE_BYTES,
            emitter: Arc::new(OnceLock::new()),
        }
    }

    /// Caps bodies at `bytes` (answered `413` above it).
    #[must_use]
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The body cap in bytes.
    pub fn limit(&self) -> usize {
        self.body_limit
    }

    /// True once the switchboard runs this source.
    pub fn is_running(&self) -> bool {
        self.emitter.get().is_some()
    }

    /// Handles one POST (see the type's docs for the answers).
    pub async fn handle(&self, request: &InboundRequest) -> InboundResponse {
        if let Err(e) = inbound::check_body_size(request.body().len(), self.body_limit) {
            return inbound::error_response(&e);
        }
        let now = chrono::Utc::now().timestamp();
        if let Err(e) = self.auth.verify(request, now) {
            tracing::warn!(error = %e, "email POST refused");
            return inbound::error_response(&e);
        }
        if let Some(ct) = inbound::header(request, "content-type") {
            let ct = ct.trim().to_ascii_lowercase();
            if !(ct.starts_with("message/rfc822")
                || ct.starts_with("application/octet-stream")
                || ct.starts_with("text/plain"))
            {
                return inbound::response(
                    http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "text/plain; charset=utf-8",
                    "expected message/rfc822",
                );
            }
        }
        let Some(emitter) = self.emitter.get() else {
            return inbound::response(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                "not ready",
            );
        };
        let recipients: Vec<String> = inbound::header(request, RECIPIENTS_HEADER)
            .map(|v| {
                v.split(',')
                    .map(|r| r.trim().to_owned())
                    .filter(|r| !r.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        match intake(&self.capture, emitter, request.body(), &recipients).await {
            Ok(Intake::Published {
                event_id,
                duplicate,
            }) => inbound::json_response(
                http::StatusCode::ACCEPTED,
                &json!({"outcome": "accepted", "event_id": event_id, "duplicate": duplicate}),
            ),
            Ok(Intake::Rejected(rejection)) => {
                tracing::info!(%rejection, "email POST rejected");
                let mut body = serde_json::to_value(&rejection).unwrap_or_else(|_| json!({}));
                if let Some(map) = body.as_object_mut() {
                    map.insert("outcome".into(), json!("rejected"));
                    map.insert("message".into(), json!(rejection.to_string()));
                }
                inbound::json_response(http::StatusCode::OK, &body)
            }
            Err(e) => {
                tracing::warn!(error = %e, "email POST not captured; the provider should retry");
                inbound::response(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    "try again later",
                )
            }
        }
    }
}

#[async_trait]
impl EventSource for EmailHttpSource {
    fn name(&self) -> &str {
        "email-http"
    }

    async fn run(&self, emitter: Emitter, mut shutdown: Shutdown) -> Result<()> {
        let _ = self.emitter.set(emitter);
        shutdown.wait().await;
        Ok(())
    }
}

/// An axum router for the endpoint: `POST /email/inbound`. Bodies over the
/// source's cap are refused with `413` before authentication.
#[cfg(feature = "axum")]
pub fn router(source: EmailHttpSource) -> axum::Router {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::routing::post;

    axum::Router::new().route(
        "/email/inbound",
        post(move |request: Request| {
            let source = source.clone();
            async move {
                let (parts, body) = request.into_parts();
                let response = match axum::body::to_bytes(body, source.limit()).await {
                    Ok(bytes) => {
                        source
                            .handle(&http::Request::from_parts(parts, bytes))
                            .await
                    }
                    Err(_) => inbound::error_response(&Error::new(
                        ErrorKind::PayloadTooLarge,
                        "body too large",
                    )),
                };
                response.map(Body::from)
            }
        }),
    )
}
