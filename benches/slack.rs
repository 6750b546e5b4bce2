//! Slack pacing against a local fake `chat.postMessage` that enforces 1 message per second per channel with 429s:
//! 20 messages to one channel plus 200 DMs to 200 people through the Switchboard, timed beside the minimum the limits allow.
//!
//! One measured run (it takes about 20 s of real time): `cargo bench --bench slack --features slack`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use secrecy::SecretString;
use serde_json::{Value, json};
use switchboard::identity::{IdentityLink, LinkOrigin};
use switchboard::slack::{BotToken, SlackConfig, SlackDestination, SlackIdentity};
use switchboard::{Event, MemoryStore, Person, Route, Store, Switchboard, Target, TenantId};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const CHANNEL_MESSAGES: usize = 20;
const DMS: usize = 200;
/// Arrival times are measured at the fake, after the network: allow this much
/// jitter between two sends the engine spaced exactly one second apart.
const JITTER: Duration = Duration::from_millis(25);

/// The fake's view of Slack's posting limit: at most one message per channel per second.
#[derive(Default)]
struct FakeSlack {
    last: Mutex<HashMap<String, Instant>>,
    posted: AtomicU64,
    rejected: AtomicU64,
}

impl FakeSlack {
    fn post(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let channel = body["channel"].as_str().unwrap_or("").to_owned();
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(prev) = last.get(&channel) {
            if now.duration_since(*prev) + JITTER < Duration::from_secs(1) {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                return ResponseTemplate::new(429)
                    .insert_header("Retry-After", "1")
                    .set_body_json(json!({"ok": false, "error": "ratelimited"}));
            }
        }
        last.insert(channel.clone(), now);
        let n = self.posted.fetch_add(1, Ordering::Relaxed);
        ResponseTemplate::new(200).set_body_json(json!({
            "ok": true, "channel": channel, "ts": format!("1503435956.{n:06}"),
        }))
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let server = MockServer::start().await;
    let fake = Arc::new(FakeSlack::default());
    let f = fake.clone();
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .respond_with(move |r: &Request| f.post(r))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/conversations.open"))
        .respond_with(|r: &Request| {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let user = body["users"].as_str().unwrap_or("U0").to_owned();
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": true, "channel": {"id": format!("D{user}")}}))
        })
        .mount(&server)
        .await;

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    for i in 0..DMS {
        store
            .put_link(&IdentityLink {
                tenant: TenantId::default(),
                platform: "slack".into(),
                user_id: format!("u{i}"),
                platform_id: format!("W{i:07}"),
                origin: LinkOrigin::EmailMatch,
                linked_at: Utc::now(),
            })
            .await?;
    }
    let config = SlackConfig::new().base_url(&server.uri())?;
    let token = BotToken::new(SecretString::from("xoxb-bench".to_owned()));
    let slack = SlackDestination::new(config.clone(), token.clone())?;
    let identity =
        SlackIdentity::with_client(&config, slack.client().clone(), token, store.clone());
    let sb = Switchboard::builder()
        .store_arc(store)
        .destination(slack)
        .resolver("slack", identity)
        .route(
            Route::on("catalog.perk_added")
                .to(
                    "slack",
                    Target::ChannelId {
                        id: "C0GENERAL".into(),
                    },
                )
                .template("New perk: *{{ data.title }}*"),
        )
        .route(
            Route::on("wallet.funded")
                .to("slack", Target::SubjectDm)
                .template("Your wallet was funded with *{{ data.amount }}*"),
        )
        .build()?;

    let started = Instant::now();
    for i in 0..CHANNEL_MESSAGES {
        sb.publish(
            Event::builder(format!("perk-{i}"), "catalog.perk_added")
                .data(json!({"title": format!("Perk #{i}")}))
                .build()?,
        )
        .await?;
    }
    for i in 0..DMS {
        sb.publish(
            Event::builder(format!("fund-{i}"), "wallet.funded")
                .subject(Person::new(format!("u{i}")))
                .data(json!({"amount": 10 + i}))
                .build()?,
        )
        .await?;
    }
    let summary = sb.drain(Duration::from_secs(300)).await?;
    let total = started.elapsed();

    // 20 messages to one channel at 1/s (burst 1) need 19 s; the 200 DMs go to 200
    // different channels and fit the workspace budget (300/min), so they add nothing.
    let minimum = Duration::from_secs((CHANNEL_MESSAGES - 1) as u64);
    let ratio = total.as_secs_f64() / minimum.as_secs_f64();
    let rejected = fake.rejected.load(Ordering::Relaxed);
    println!("slack pacing: {CHANNEL_MESSAGES} channel messages + {DMS} DMs");
    println!("  delivered      {}", summary.delivered);
    println!("  posted (fake)  {}", fake.posted.load(Ordering::Relaxed));
    println!("  total          {:.3} s", total.as_secs_f64());
    println!(
        "  minimum        {:.3} s (limits: 1/s per channel, 300/min per workspace)",
        minimum.as_secs_f64()
    );
    println!("  ratio          {ratio:.3}x (goal <= 1.1x)");
    println!("  429s received  {rejected} (goal 0)");
    if summary.delivered != (CHANNEL_MESSAGES + DMS) as u64 {
        return Err(format!(
            "only {} of {} delivered",
            summary.delivered,
            CHANNEL_MESSAGES + DMS
        )
        .into());
    }
    Ok(())
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too, so keep
    // it to one measured iteration either way.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slack bench: cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run()) {
        eprintln!("slack bench failed: {e}");
        std::process::exit(1);
    }
}
