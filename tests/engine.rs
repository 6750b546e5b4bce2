//! Engine behaviour under a paused tokio clock: retries, pacing, idempotency, dead letters, parking and crash recovery.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use switchboard::engine::{RetryPolicy, WorkerConfig};
use switchboard::store::{DeliveryState, OutboxStore};
use switchboard::{
    Capabilities, Delivery, DeliveryError, Destination, Event, MemoryStore, MessageFormat, Person,
    RateLimit, Receipt, Route, Store, Switchboard, Target,
};

/// A destination that answers from a script (then succeeds) and records what it got.
#[derive(Clone, Default)]
struct Scripted {
    name: String,
    script: Arc<Mutex<VecDeque<Result<(), DeliveryError>>>>,
    calls: Arc<Mutex<Vec<(tokio::time::Instant, Delivery)>>>,
    caps: Capabilities,
}

impl Scripted {
    fn new(name: &str) -> Self {
        Scripted {
            name: name.to_owned(),
            ..Default::default()
        }
    }
    fn then(self, r: Result<(), DeliveryError>) -> Self {
        self.script.lock().unwrap().push_back(r);
        self
    }
    fn with_caps(mut self, caps: Capabilities) -> Self {
        self.caps = caps;
        self
    }
    fn calls(&self) -> Vec<(tokio::time::Instant, Delivery)> {
        self.calls.lock().unwrap().clone()
    }
    fn texts(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .map(|(_, d)| d.message.text)
            .collect()
    }
}

#[async_trait]
impl Destination for Scripted {
    fn name(&self) -> &str {
        &self.name
    }
    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }
    async fn deliver(&self, d: &Delivery) -> Result<Receipt, DeliveryError> {
        self.calls
            .lock()
            .unwrap()
            .push((tokio::time::Instant::now(), d.clone()));
        let next = self.script.lock().unwrap().pop_front();
        match next {
            Some(Err(e)) => Err(e),
            _ => Ok(Receipt {
                remote_id: Some(format!("r{}", d.id)),
                location: None,
            }),
        }
    }
}

fn person(id: &str) -> Person {
    Person::new(id).email(&format!("{id}@example.com"))
}

fn event(id: &str, kind: &str) -> Event {
    Event::builder(id, kind)
        .subject(person("u1"))
        .data(serde_json::json!({"amount": 25, "note": "hi"}))
        .build()
        .unwrap()
}

fn board(store: impl Store, dest: &Scripted, target: Target) -> Switchboard {
    Switchboard::builder()
        .store(store)
        .destination(dest.clone())
        .route(
            Route::on("wallet.*")
                .to(dest.name.clone(), target)
                .template("{{ kind }} {{ data.amount }} {{ data.note }}"),
        )
        .retry(RetryPolicy {
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_attempts: 4,
            ..RetryPolicy::default()
        })
        .build()
        .unwrap()
}

#[test]
fn backoff_is_full_jitter_within_exponential_ceiling() {
    let p = RetryPolicy {
        base: Duration::from_millis(500),
        max_delay: Duration::from_secs(30),
        max_attempts: 10,
        ..RetryPolicy::default()
    };
    assert_eq!(p.ceiling(1), Duration::from_millis(500));
    assert_eq!(p.ceiling(2), Duration::from_secs(1));
    assert_eq!(p.ceiling(4), Duration::from_secs(4));
    assert_eq!(p.ceiling(10), Duration::from_secs(30));
    assert_eq!(p.ceiling(100), Duration::from_secs(30));
    let mut below_half = 0;
    for _ in 0..2000 {
        let d = p.backoff(3);
        assert!(d <= Duration::from_secs(2), "{d:?} above the ceiling");
        if d < Duration::from_secs(1) {
            below_half += 1;
        }
    }
    // Full jitter is uniform over [0, ceiling]: about half fall below the midpoint.
    assert!(
        (800..1200).contains(&below_half),
        "{below_half} of 2000 below the midpoint"
    );
}

#[tokio::test(start_paused = true)]
async fn temporary_failure_is_retried_after_jittered_backoff() {
    let dest = Scripted::new("d").then(Err(DeliveryError::temporary("503")));
    let sb = board(MemoryStore::new(), &dest, Target::channel("general"));
    sb.publish(event("e1", "wallet.funded")).await.unwrap();
    let s = sb.run_until_idle().await.unwrap();
    assert_eq!((s.delivered, s.retried), (0, 1));
    let next = sb.store().next_due().await.unwrap().unwrap();
    let wait = next - sb.now();
    assert!(
        wait <= chrono::Duration::seconds(1),
        "first backoff ceiling is base: {wait}"
    );
    let s = sb.drain(Duration::from_secs(5)).await.unwrap();
    assert_eq!(s.delivered, 1);
    assert_eq!(dest.calls().len(), 2);
    assert_eq!(dest.calls()[1].1.attempt, 2);
}

#[tokio::test(start_paused = true)]
async fn retry_after_from_the_platform_wins() {
    let dest = Scripted::new("d").then(Err(DeliveryError::rate_limited(
        Some(Duration::from_secs(30)),
        "ratelimited",
    )));
    let sb = board(MemoryStore::new(), &dest, Target::channel("general"));
    sb.publish(event("e1", "wallet.funded")).await.unwrap();
    // A throttle with Retry-After is a snooze: no attempt is counted.
    assert_eq!(sb.run_until_idle().await.unwrap().deferred, 1);
    tokio::time::advance(Duration::from_millis(29_900)).await;
    assert_eq!(sb.run_until_idle().await.unwrap().delivered, 0);
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_eq!(sb.run_until_idle().await.unwrap().delivered, 1);
    let calls = dest.calls();
    assert_eq!(calls[1].0 - calls[0].0, Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn pacing_keeps_one_message_per_second_per_channel_in_order() {
    let dest = Scripted::new("d").with_caps(Capabilities {
        target_limits: vec![RateLimit::per_second(1)],
        ..Capabilities::default()
    });
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(dest.clone())
        .route(
            Route::on("wallet.*")
                .to("d", Target::channel("general"))
                .template("{{ id }}"),
        )
        .route(
            Route::on("wallet.*")
                .to("d", Target::SubjectDm)
                .template("dm {{ id }}")
                .named("dm"),
        )
        .worker(WorkerConfig {
            max_pacing_wait: Duration::from_secs(2),
            ..WorkerConfig::default()
        })
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    for i in 0..10 {
        let e = Event::builder(format!("e{i}"), "wallet.funded")
            .subject(person(&format!("u{i}")))
            .build()
            .unwrap();
        sb.publish(e).await.unwrap();
    }
    let s = sb.drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(s.delivered, 20);
    let calls = dest.calls();
    let channel: Vec<_> = calls
        .iter()
        .filter(|(_, d)| !d.message.text.starts_with("dm"))
        .collect();
    let texts: Vec<_> = channel
        .iter()
        .map(|(_, d)| d.message.text.clone())
        .collect();
    let expected: Vec<_> = (0..10).map(|i| format!("e{i}")).collect();
    assert_eq!(texts, expected, "one channel's messages stay in order");
    for w in channel.windows(2) {
        assert!(
            w[1].0 - w[0].0 >= Duration::from_secs(1),
            "two sends to one channel within a second"
        );
    }
    // Ten sends at 1/s with the default 10 % margin take 9 × 1.1 s: the limiter
    // paces, it does not over-wait.
    let last = channel.last().unwrap().0 - start;
    assert!(
        last >= Duration::from_millis(9_900) && last <= Duration::from_millis(10_400),
        "{last:?}"
    );
    // DMs to ten different people are not held back by the channel.
    let dms: Vec<_> = calls
        .iter()
        .filter(|(_, d)| d.message.text.starts_with("dm"))
        .collect();
    assert_eq!(dms.len(), 10);
    assert!(
        dms.iter()
            .all(|(t, _)| *t - start < Duration::from_millis(10))
    );
}

#[tokio::test(start_paused = true)]
async fn global_limit_paces_the_whole_destination() {
    let dest = Scripted::new("d").with_caps(Capabilities {
        global_limits: vec![RateLimit::per_minute(60).with_burst(1)],
        ..Capabilities::default()
    });
    let sb = board(MemoryStore::new(), &dest, Target::SubjectDm);
    for i in 0..4 {
        let e = Event::builder(format!("e{i}"), "wallet.funded")
            .subject(person(&format!("u{i}")))
            .build()
            .unwrap();
        sb.publish(e).await.unwrap();
    }
    sb.drain(Duration::from_secs(60)).await.unwrap();
    let calls = dest.calls();
    assert_eq!(calls.len(), 4);
    assert!(
        calls
            .windows(2)
            .all(|w| w[1].0 - w[0].0 >= Duration::from_secs(1))
    );
}

#[tokio::test(start_paused = true)]
async fn publishing_the_same_event_twice_delivers_once() {
    let dest = Scripted::new("d");
    let sb = board(MemoryStore::new(), &dest, Target::channel("general"));
    let first = sb.publish(event("same", "wallet.funded")).await.unwrap();
    let second = sb.publish(event("same", "wallet.funded")).await.unwrap();
    assert_eq!((first.deliveries, first.duplicate), (1, false));
    assert_eq!((second.deliveries, second.duplicate), (0, true));
    sb.drain(Duration::from_secs(5)).await.unwrap();
    assert_eq!(dest.calls().len(), 1);
    // And after delivery, too.
    assert!(
        sb.publish(event("same", "wallet.funded"))
            .await
            .unwrap()
            .duplicate
    );
}

#[tokio::test(start_paused = true)]
async fn permanent_error_dead_letters_and_replay_delivers() {
    let dest = Scripted::new("d").then(Err(DeliveryError::permanent("channel_not_found")));
    let sb = board(MemoryStore::new(), &dest, Target::channel("nope"));
    sb.publish(event("e1", "wallet.funded")).await.unwrap();
    let s = sb.run_until_idle().await.unwrap();
    assert_eq!(s.dead, 1);
    let dead = sb.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event_id, "e1");
    assert_eq!(dead[0].error, DeliveryError::permanent("channel_not_found"));
    assert_eq!(dead[0].attempts, 1);
    let status = sb.status().await.unwrap();
    assert_eq!(status[0].dead_letters, 1);
    assert!(
        status[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("channel_not_found")
    );

    sb.replay(dead[0].id).await.unwrap();
    assert_eq!(sb.run_until_idle().await.unwrap().delivered, 1);
    assert!(sb.dead_letters(10).await.unwrap().is_empty());
    let log: Vec<_> = sb
        .store()
        .delivery_log(dead[0].id)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.status.as_str())
        .collect();
    assert_eq!(log, ["queued", "dead", "queued", "sent"]);
    assert!(
        sb.replay(dead[0].id).await.is_err(),
        "only dead letters can be replayed"
    );
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_become_dead_letters() {
    let mut dest = Scripted::new("d");
    for _ in 0..10 {
        dest = dest.then(Err(DeliveryError::temporary("timeout")));
    }
    let sb = board(MemoryStore::new(), &dest, Target::channel("general"));
    sb.publish(event("e1", "wallet.funded")).await.unwrap();
    let s = sb.drain(Duration::from_secs(600)).await.unwrap();
    assert_eq!((s.retried, s.dead), (3, 1));
    assert_eq!(dest.calls().len(), 4, "max_attempts is 4");
    assert_eq!(sb.dead_letters(10).await.unwrap()[0].attempts, 4);
}

#[tokio::test(start_paused = true)]
async fn disconnected_parks_everything_then_reconnect_delivers_in_order() {
    let dest = Scripted::new("d").then(Err(DeliveryError::disconnected("token_revoked")));
    let sb = board(MemoryStore::new(), &dest, Target::channel("general"));
    for i in 0..3 {
        sb.publish(event(&format!("e{i}"), "wallet.funded"))
            .await
            .unwrap();
    }
    let s = sb.drain(Duration::from_secs(60)).await.unwrap();
    // The head of the channel's queue is parked by its answer; the store parks
    // the rest of the tenant's queued deliveries with it.
    assert_eq!((s.delivered, s.parked), (0, 1));
    assert_eq!(
        dest.calls().len(),
        1,
        "no attempts are burnt while disconnected"
    );
    // Published while disconnected: parked too, not attempted.
    sb.publish(event("e3", "wallet.funded")).await.unwrap();
    sb.drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(dest.calls().len(), 1);
    let st = &sb.status().await.unwrap()[0];
    assert!(!st.connected);
    assert_eq!(st.disconnected_reason.as_deref(), Some("token_revoked"));
    assert_eq!(st.parked, 4);
    assert_eq!(st.queue_depth, 0);
    assert!(
        sb.dead_letters(10).await.unwrap().is_empty(),
        "nothing is dropped"
    );

    assert_eq!(sb.reconnect("d").await.unwrap(), 4);
    let s = sb.drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(s.delivered, 4);
    let ids: Vec<_> = dest.calls()[1..]
        .iter()
        .map(|(_, d)| d.event.id.clone())
        .collect();
    assert_eq!(ids, ["e0", "e1", "e2", "e3"]);
    assert!(sb.status().await.unwrap()[0].connected);
    // The parked deliveries were attempted once each after reconnecting.
    assert!(dest.calls()[1..].iter().all(|(_, d)| d.attempt <= 2));
}

#[tokio::test(start_paused = true)]
async fn user_data_cannot_become_a_slack_mention() {
    let dest = Scripted::new("slack").with_caps(Capabilities {
        format: MessageFormat::SlackMrkdwn,
        ..Capabilities::default()
    });
    let sb = board(MemoryStore::new(), &dest, Target::channel("general"));
    let e = Event::builder("e1", "wallet.funded")
        .data(serde_json::json!({"amount": "<!channel>", "note": "a & b <@U1>"}))
        .build()
        .unwrap();
    sb.publish(e).await.unwrap();
    sb.run_until_idle().await.unwrap();
    assert_eq!(
        dest.texts(),
        ["wallet.funded &lt;!channel&gt; a &amp; b &lt;@U1&gt;"]
    );
}

#[tokio::test(start_paused = true)]
async fn routes_match_by_prefix_and_can_be_switched_off() {
    let dest = Scripted::new("d");
    let sb = board(MemoryStore::new(), &dest, Target::channel("general"));
    assert_eq!(
        sb.publish(event("a", "perk.redeemed"))
            .await
            .unwrap()
            .deliveries,
        0
    );
    assert_eq!(
        sb.publish(event("b", "wallet.low_balance"))
            .await
            .unwrap()
            .deliveries,
        1
    );
    let name = sb.routes()[0].name.clone();
    sb.set_route_enabled(&name, false).unwrap();
    assert_eq!(
        sb.publish(event("c", "wallet.funded"))
            .await
            .unwrap()
            .deliveries,
        0
    );
    sb.set_route_enabled(&name, true).unwrap();
    assert_eq!(
        sb.publish(event("d", "wallet.funded"))
            .await
            .unwrap()
            .deliveries,
        1
    );
    assert!(sb.set_route_enabled("nope", true).is_err());
}

#[tokio::test(start_paused = true)]
async fn building_rejects_bad_wiring() {
    let dest = Scripted::new("d");
    let err = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(dest.clone())
        .route(Route::on("x").to("missing", Target::SubjectDm))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), switchboard::ErrorKind::Config);
    let err = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(dest)
        .route(
            Route::on("x")
                .to("d", Target::SubjectDm)
                .template("{{ unclosed"),
        )
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), switchboard::ErrorKind::Template);
}

/// A destination that never answers: a worker that hangs (or whose process dies).
struct Hang;

#[async_trait]
impl Destination for Hang {
    fn name(&self) -> &str {
        "d"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    async fn deliver(&self, _: &Delivery) -> Result<Receipt, DeliveryError> {
        std::future::pending().await
    }
}

async fn crash_then_recover(first: Arc<dyn Store>, reopen: impl FnOnce() -> Arc<dyn Store>) {
    let store_probe = first.clone();
    let crashed = Switchboard::builder()
        .store_arc(first)
        .destination(Hang)
        .route(Route::on("wallet.*").to("d", Target::channel("general")))
        .build()
        .unwrap();
    crashed.publish(event("e1", "wallet.funded")).await.unwrap();
    let worker = {
        let c = crashed.clone();
        tokio::spawn(async move { c.run_until_idle().await })
    };
    // Wait until the worker holds the claim (the SQLite store answers from a
    // blocking thread, so poll rather than assume).
    for _ in 0..10_000 {
        if store_probe.delivery_state(1).await.unwrap() == Some(DeliveryState::InFlight) {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        store_probe.delivery_state(1).await.unwrap(),
        Some(DeliveryState::InFlight)
    );
    worker.abort(); // the worker dies holding the lease
    drop(crashed);
    drop(store_probe);

    let dest = Scripted::new("d");
    let sb = Switchboard::builder()
        .store_arc(reopen())
        .destination(dest.clone())
        .route(Route::on("wallet.*").to("d", Target::channel("general")))
        .build()
        .unwrap();
    assert_eq!(
        sb.run_until_idle().await.unwrap().delivered,
        0,
        "lease still held"
    );
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(
        sb.run_until_idle().await.unwrap().delivered,
        1,
        "reclaimed after the lease"
    );
    assert_eq!(dest.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn lease_expiry_recovers_a_crashed_worker_memory() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let again = store.clone();
    crash_then_recover(store, move || again).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(start_paused = true)]
async fn lease_expiry_recovers_a_crashed_worker_sqlite_reopened_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sb.db");
    let store: Arc<dyn Store> = Arc::new(switchboard::SqliteStore::open(&path).unwrap());
    let p2 = path.clone();
    crash_then_recover(store, move || {
        Arc::new(switchboard::SqliteStore::open(&p2).unwrap())
    })
    .await;
    let reopened = switchboard::SqliteStore::open(&path).unwrap();
    assert_eq!(
        reopened.delivery_state(1).await.unwrap(),
        Some(DeliveryState::Sent)
    );
}

#[tokio::test(start_paused = true)]
async fn recipient_unknown_is_dead_lettered_without_calling_the_platform() {
    use switchboard::identity::{IdentityResolver, Resolution, ResolveContext, SyncReport};
    struct Nobody;
    #[async_trait]
    impl IdentityResolver for Nobody {
        async fn resolve(&self, _: &ResolveContext, _: &Person) -> switchboard::Result<Resolution> {
            Ok(Resolution::NotFound)
        }
        async fn sync(&self, _: &ResolveContext, _: &[Person]) -> switchboard::Result<SyncReport> {
            Ok(SyncReport::default())
        }
    }
    let dest = Scripted::new("d");
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(dest.clone())
        .resolver("d", Nobody)
        .route(Route::on("wallet.*").to("d", Target::SubjectDm))
        .build()
        .unwrap();
    sb.publish(event("e1", "wallet.funded")).await.unwrap();
    assert_eq!(sb.run_until_idle().await.unwrap().dead, 1);
    assert!(dest.calls().is_empty());
    let dead = sb.dead_letters(1).await.unwrap();
    assert_eq!(dead[0].error.class(), "recipient_unknown");
}

/// A source that emits a few events, then waits for shutdown.
struct Ticker;

#[async_trait]
impl switchboard::EventSource for Ticker {
    fn name(&self) -> &str {
        "ticker"
    }
    async fn run(
        &self,
        emitter: switchboard::Emitter,
        mut shutdown: switchboard::Shutdown,
    ) -> switchboard::Result<()> {
        for i in 0..3 {
            emitter
                .emit(event(&format!("t{i}"), "wallet.funded"))
                .await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        shutdown.wait().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn run_drives_sources_and_workers_until_shutdown() {
    let dest = Scripted::new("d");
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(dest.clone())
        .source(Ticker)
        .route(Route::on("wallet.*").to("d", Target::channel("general")))
        .build()
        .unwrap();
    let (trigger, shutdown) = switchboard::Shutdown::new();
    let handle = {
        let sb = sb.clone();
        tokio::spawn(async move { sb.run(shutdown).await })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        dest.calls().len(),
        3,
        "events emitted by the source were delivered"
    );
    trigger.trigger();
    handle.await.unwrap().unwrap();
}

/// A scheduled job that counts its runs.
struct CountingJob(Arc<std::sync::atomic::AtomicUsize>);

#[async_trait]
impl switchboard::schedule::ScheduledJob for CountingJob {
    fn name(&self) -> &str {
        "nightly"
    }
    async fn run(&self, ctx: &mut switchboard::schedule::RunContext) -> switchboard::Result<()> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ctx.add_rows_read(1);
        ctx.add_rows_imported(1);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn run_drives_scheduled_integrations() {
    use switchboard::integration::{IntegrationConfig, RunOutcome, Schedule};
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let scheduler = switchboard::schedule::Scheduler::new(store.clone())
        .job(Arc::new(CountingJob(runs.clone())));
    scheduler
        .put_integration(&IntegrationConfig {
            tenant: switchboard::TenantId::default(),
            name: "nightly".into(),
            source: "test".into(),
            schedule: Schedule::Interval(Duration::from_secs(600)),
            enabled: true,
            settings: serde_json::Value::Null,
        })
        .await
        .unwrap();
    let sb = Switchboard::builder()
        .store_arc(store.clone())
        .destination(Scripted::new("d"))
        .scheduler(scheduler)
        .build()
        .unwrap();
    let (trigger, shutdown) = switchboard::Shutdown::new();
    let handle = {
        let sb = sb.clone();
        tokio::spawn(async move { sb.run(shutdown).await })
    };
    // Due at once (never run), then every 10 minutes.
    tokio::time::sleep(Duration::from_secs(1_250)).await;
    trigger.trigger();
    handle.await.unwrap().unwrap();
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 3);
    let history = store
        .runs(&switchboard::TenantId::default(), "nightly", 10)
        .await
        .unwrap();
    assert_eq!(history.len(), 3);
    assert!(history.iter().all(|r| r.outcome == RunOutcome::Success));
    let table = sb.scheduler().unwrap().integrations(None).await.unwrap();
    assert_eq!(table[0].name, "nightly");
}
