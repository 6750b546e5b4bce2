//! Zendesk calls → tickets: warm-cache caller lookup latency (p50/p99), and a burst of calls against a loopback Zendesk that enforces a per-minute budget (0 × 429 expected; time beside the budget's minimum).
//!
//! `cargo bench --bench zendesk --features zendesk`. `ZENDESK_BENCH_RPM` (default
//! 3000) is both the loopback's enforced limit and the client's budget;
//! `ZENDESK_BENCH_CALLS` (default 500) the burst size. With `ZENDESK_BENCH_RPM=200`
//! the 500-call burst takes the budget's ~7.5 minutes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use secrecy::SecretString;
use serde_json::json;
use switchboard::zendesk::{
    CallConfig, CallFlow, UnknownCallerStrategy, ZendeskAccount, ZendeskAuth, ZendeskClient,
    ZendeskConfig,
};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Answers `inner`, or 429 once more than `limit` requests arrived in the
/// current fixed 60-second window (shared by every mock through `window`).
struct Budget {
    window: &'static Mutex<(Instant, u64)>,
    limit: u64,
    rejected: &'static AtomicU64,
    inner: ResponseTemplate,
}

impl Respond for Budget {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut w = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if w.0.elapsed() >= Duration::from_secs(60) {
            *w = (Instant::now(), 0);
        }
        w.1 += 1;
        if w.1 > self.limit {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return ResponseTemplate::new(429).insert_header("Retry-After", "60");
        }
        self.inner.clone()
    }
}

fn leak<T>(v: T) -> &'static T {
    Box::leak(Box::new(v))
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn server(limit: u64, rejected: &'static AtomicU64) -> MockServer {
    let server = MockServer::start().await;
    let window = leak(Mutex::new((Instant::now(), 0u64)));
    let budget = |inner: ResponseTemplate| Budget {
        window,
        limit,
        rejected,
        inner,
    };
    Mock::given(method("GET"))
        .and(path("/api/v2/users.json"))
        .respond_with(budget(ResponseTemplate::new(200).set_body_json(json!({
            "users": [{"id": 1, "email": "agent@acme.test", "role": "agent"}], "meta": {"has_more": false}
        }))))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/groups.json"))
        .respond_with(budget(ResponseTemplate::new(200).set_body_json(json!({
            "groups": [{"id": 2, "name": "Support"}], "meta": {"has_more": false}
        }))))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/search.json"))
        .and(query_param("query", "type:user email:default@acme.test"))
        .respond_with(budget(ResponseTemplate::new(200).set_body_json(json!({
            "results": [{"id": 3, "email": "default@acme.test", "result_type": "user"}]
        }))))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/search.json"))
        .respond_with(budget(ResponseTemplate::new(200).set_body_json(json!({
            "results": [{"id": 4, "result_type": "user"}], "count": 1
        }))))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/tickets.json"))
        .respond_with(budget(
            ResponseTemplate::new(200).set_body_json(json!({"tickets": []})),
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/tickets.json"))
        .respond_with(budget(
            ResponseTemplate::new(201).set_body_json(json!({"ticket": {"id": 5}})),
        ))
        .mount(&server)
        .await;
    server
}

fn flow(server: &MockServer, rpm: u32) -> CallFlow {
    let cfg = ZendeskConfig::new()
        .base_url(&server.uri())
        .unwrap_or_else(|e| panic!("{e}"))
        .requests_per_minute(rpm);
    let auth = ZendeskAuth::api_token("agent@acme.test", SecretString::from("t"));
    let account = ZendeskAccount::new(&cfg, "acme", auth).unwrap_or_else(|e| panic!("{e}"));
    let mut calls = CallConfig::new(["Support"], UnknownCallerStrategy::DefaultUser, "DE");
    calls.default_user_email = Some("default@acme.test".into());
    calls.display_ticket = false;
    calls.lookup_wait = Duration::from_secs(600);
    CallFlow::new(
        ZendeskClient::new(&cfg).unwrap_or_else(|e| panic!("{e}")),
        account,
        calls,
    )
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let rpm = env("ZENDESK_BENCH_RPM", 3000);
        let n = env("ZENDESK_BENCH_CALLS", 500);

        // Warm-cache lookups.
        let rejected = leak(AtomicU64::new(0));
        let s = server(u64::MAX, rejected).await;
        let f = flow(&s, 100_000);
        f.lookup_caller("+4930123456").await;
        let mut samples = Vec::with_capacity(100_000);
        for _ in 0..100_000 {
            let t = Instant::now();
            std::hint::black_box(f.lookup_caller("030 123456").await);
            samples.push(t.elapsed());
        }
        samples.sort();
        println!(
            "zendesk warm-cache lookup (normalise + cache hit): p50 {:?}, p99 {:?} over {} lookups",
            percentile(&samples, 0.50),
            percentile(&samples, 0.99),
            samples.len()
        );

        // A burst of calls against the enforced budget.
        let rejected = leak(AtomicU64::new(0));
        let s = server(rpm, rejected).await;
        let f = flow(&s, u32::try_from(rpm).unwrap_or(u32::MAX));
        f.start(&["agent@acme.test".into()]).await.unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        let before = s.received_requests().await.map_or(0, |r| r.len());
        let mut tasks = Vec::new();
        for i in 0..n {
            let f = f.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("b{i}");
                let number = format!("+49301{:06}", i);
                f.ring(&id, "Support", &number, Utc::now()).await?;
                f.answer(&id, "agent@acme.test", Utc::now()).await
            }));
        }
        let mut failed = 0;
        for t in tasks {
            if !matches!(t.await, Ok(Ok(_))) {
                failed += 1;
            }
        }
        let took = started.elapsed();
        let total = s.received_requests().await.map_or(0, |r| r.len());
        let requests = (total - before) as u64;
        // Spread evenly, the budget allows `rpm` requests per minute.
        let minimum = Duration::from_secs_f64(requests as f64 * 60.0 / rpm as f64);
        println!(
            "zendesk burst: {n} calls, {requests} requests at {rpm}/min in {took:.1?} (even pace at the budget: {minimum:.1?}); 429s: {}, failed calls: {failed}, tickets: {}",
            rejected.load(Ordering::Relaxed),
            f.stats().tickets_created
        );
    });
}
