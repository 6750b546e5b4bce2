//! A third-party connector written only against switchboard's public API: a
//! generic JSON-webhook destination with its own retry classification, wired into
//! a `Switchboard` and delivering to a local HTTP server this example starts.
//!
//! Run: `cargo run --example custom_connector`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Json;
use axum::http::StatusCode;
use axum::routing::post;
use switchboard::{
    Capabilities, Delivery, DeliveryError, Destination, Event, MemoryStore, Person, RateLimit,
    Receipt, Route, Switchboard, Target,
};

/// POSTs `{"event": …, "text": …}` to a URL.
struct JsonWebhook {
    name: String,
    url: String,
    http: reqwest::Client,
}

impl JsonWebhook {
    /// The connector's one place that maps responses into switchboard's classification.
    fn classify(
        status: reqwest::StatusCode,
        retry_after: Option<&str>,
        body: &str,
    ) -> Result<(), DeliveryError> {
        match status.as_u16() {
            200..=299 => Ok(()),
            429 => Err(DeliveryError::rate_limited(
                retry_after
                    .and_then(|s| s.trim().parse().ok())
                    .map(Duration::from_secs),
                "webhook asked us to slow down",
            )),
            401 | 403 | 410 => Err(DeliveryError::disconnected(format!(
                "webhook refused us ({status}); re-create it"
            ))),
            500..=599 | 408 => Err(DeliveryError::temporary(format!(
                "webhook failed ({status})"
            ))),
            _ => Err(DeliveryError::permanent(format!(
                "webhook rejected the payload ({status}): {body}"
            ))),
        }
    }
}

#[async_trait]
impl Destination for JsonWebhook {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dm: false,
            global_limits: vec![RateLimit::per_second(20)],
            ..Capabilities::default()
        }
    }

    async fn deliver(&self, d: &Delivery) -> Result<Receipt, DeliveryError> {
        let response = self
            .http
            .post(&self.url)
            .header("Idempotency-Key", d.id.to_string())
            .json(&serde_json::json!({
                "event": *d.event,
                "text": d.message.text,
                "attempt": d.attempt,
            }))
            .send()
            .await
            .map_err(|e| DeliveryError::temporary(format!("network: {e}")))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.unwrap_or_default();
        Self::classify(status, retry_after.as_deref(), &body)?;
        Ok(Receipt {
            remote_id: Some(body),
            location: Some(self.url.clone()),
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A local webhook receiver that fails the first request with 503.
    let hits = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let app = {
        let hits = hits.clone();
        let received = received.clone();
        axum::Router::new().route(
            "/hook",
            post(move |Json(body): Json<serde_json::Value>| async move {
                if hits.fetch_add(1, Ordering::SeqCst) == 0 {
                    return (StatusCode::SERVICE_UNAVAILABLE, "try again".to_owned());
                }
                received.lock().map(|mut r| r.push(body)).ok();
                (StatusCode::OK, "accepted".to_owned())
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(JsonWebhook {
            name: "webhook".into(),
            url,
            http: reqwest::Client::new(),
        })
        .route(
            Route::on("perk.*")
                .to("webhook", Target::ChannelId { id: "hook".into() })
                .template("{{ subject.name }} redeemed {{ data.perk }}"),
        )
        .retry(switchboard::engine::RetryPolicy {
            base: Duration::from_millis(200),
            ..Default::default()
        })
        .build()?;

    sb.publish(
        Event::builder("r-1", "perk.redeemed")
            .subject(Person::new("u1").name("Ada"))
            .data(serde_json::json!({"perk": "Yoga"}))
            .build()?,
    )
    .await?;
    let summary = sb.drain(Duration::from_secs(10)).await?;
    let got = received.lock().map(|r| r.clone()).unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({
            "delivered": summary.delivered,
            "retried": summary.retried,
            "server_requests": hits.load(Ordering::SeqCst),
            "received_text": got.first().map(|b| b["text"].clone()),
        })
    );
    Ok(())
}
