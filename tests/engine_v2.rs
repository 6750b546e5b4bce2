//! Delivery engine v2 (issue 9): one test per defect, under a paused clock — fenced parking, resolver revocations, leases, per-delivery completions, timeouts and panics, snoozes, shutdown, head-of-line blocking, pacing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{Scripted, event, person};
use switchboard::engine::{RetryPolicy, WorkerConfig};
use switchboard::identity::{IdentityResolver, Resolution, ResolveContext, SyncReport};
use switchboard::store::{DeliveryState, OutboxStore};
use switchboard::{
    Capabilities, DeliveryError, Error, ErrorKind, Event, MemoryStore, Person, RateLimit, Route,
    Store, Switchboard, Target,
};

fn board_with(
    store: Arc<dyn Store>,
    dest: &Scripted,
    target: Target,
    worker: WorkerConfig,
) -> Switchboard {
    Switchboard::builder()
        .store_arc(store)
        .destination(dest.clone())
        .route(
            Route::on("wallet.*")
                .to(dest.name.clone(), target)
                .template("{{ kind }}"),
        )
        .retry(RetryPolicy {
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_attempts: 4,
            ..RetryPolicy::default()
        })
        .worker(worker)
        .build()
        .unwrap()
}

fn board(dest: &Scripted, target: Target) -> Switchboard {
    board_with(
        Arc::new(MemoryStore::new()),
        dest,
        target,
        WorkerConfig::default(),
    )
}

fn per_channel_1s() -> Capabilities {
    Capabilities {
        target_limits: vec![RateLimit::per_second(1)],
        ..Capabilities::default()
    }
}

async fn publish_n(sb: &Switchboard, n: usize, prefix: &str) {
    for i in 0..n {
        sb.publish(event(&format!("{prefix}{i:03}"), "wallet.funded"))
            .await
            .unwrap();
    }
}

/// 1. A late `Disconnected` from before a reconnect must not park anything.
#[tokio::test(start_paused = true)]
async fn late_disconnected_answer_after_reconnect_is_a_retry_not_a_park() {
    let dest = Scripted::new("d").then_after(
        Duration::from_secs(2),
        Err(DeliveryError::disconnected("token_revoked")),
    );
    let sb = board(&dest, Target::channel("general"));
    publish_n(&sb, 3, "e").await;
    let drain = {
        let sb = sb.clone();
        tokio::spawn(async move { sb.drain(Duration::from_secs(60)).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    sb.reconnect("d").await.unwrap();
    let summary = drain.await.unwrap().unwrap();
    assert_eq!(summary.delivered, 3, "{summary:?}");
    let st = &sb.status().await.unwrap()[0];
    assert!(st.connected, "{st:?}");
    assert_eq!((st.parked, st.queue_depth, st.dead_letters), (0, 0, 0));
    assert_eq!(dest.ids(), ["e000", "e000", "e001", "e002"]);
}

struct Revoked;

#[async_trait]
impl IdentityResolver for Revoked {
    async fn resolve(&self, _: &ResolveContext, _: &Person) -> switchboard::Result<Resolution> {
        Err(Error::new(ErrorKind::Unauthorized, "invalid_auth"))
    }
    async fn sync(&self, _: &ResolveContext, _: &[Person]) -> switchboard::Result<SyncReport> {
        Ok(SyncReport::default())
    }
}

/// 2. A revoked token seen by the resolver parks and disconnects; nothing dies.
#[tokio::test(start_paused = true)]
async fn revoked_token_in_the_resolver_parks_and_disconnects() {
    let dest = Scripted::new("d");
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(dest.clone())
        .resolver("d", Revoked)
        .route(Route::on("wallet.*").to("d", Target::SubjectDm))
        .build()
        .unwrap();
    for i in 0..3 {
        let e = Event::builder(format!("e{i}"), "wallet.funded")
            .subject(person(&format!("u{i}")))
            .build()
            .unwrap();
        sb.publish(e).await.unwrap();
    }
    sb.drain(Duration::from_secs(60)).await.unwrap();
    assert!(
        sb.dead_letters(10).await.unwrap().is_empty(),
        "nothing is dead-lettered"
    );
    let st = &sb.status().await.unwrap()[0];
    assert!(!st.connected);
    assert!(
        st.disconnected_reason
            .as_deref()
            .unwrap_or("")
            .contains("invalid_auth"),
        "{st:?}"
    );
    assert_eq!(st.parked, 3);
    assert!(dest.calls().is_empty());
}

/// 4. A long paced backlog for one channel is never reclaimed mid-way: each
/// post goes out once, in order, at the channel's pace, although it takes far
/// longer than the lease.
#[tokio::test(start_paused = true)]
async fn paced_backlog_longer_than_the_lease_is_sent_once_in_order() {
    let dest = Scripted::new("d").caps(per_channel_1s());
    let worker = WorkerConfig {
        lease: Duration::from_secs(10),
        ..WorkerConfig::default()
    };
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let sb = board_with(store.clone(), &dest, Target::channel("general"), worker);
    // A second instance on the same store, working at the same time.
    let other_dest = dest.clone();
    let other = board_with(store, &other_dest, Target::channel("general"), worker);
    publish_n(&sb, 30, "e").await;
    let a = {
        let sb = sb.clone();
        tokio::spawn(async move { sb.drain(Duration::from_secs(120)).await })
    };
    let b = tokio::spawn(async move { other.drain(Duration::from_secs(120)).await });
    let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    assert_eq!(a.delivered + b.delivered, 30);
    let ids = dest.ids();
    let expected: Vec<String> = (0..30).map(|i| format!("e{i:03}")).collect();
    assert_eq!(ids, expected, "once each, in order");
    let calls = dest.calls();
    for w in calls.windows(2) {
        assert!(w[1].at > w[0].at, "never two posts to the channel at once");
    }
}

/// 5. Outcomes are recorded per delivery: a crash repeats only what was in flight.
#[tokio::test(start_paused = true)]
async fn a_crash_repeats_only_the_delivery_in_flight() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let dest = Scripted::new("d")
        .then(Ok(()))
        .then(Ok(()))
        .then_after(Duration::from_secs(3600), Ok(()));
    let sb = board_with(
        store.clone(),
        &dest,
        Target::channel("general"),
        WorkerConfig::default(),
    );
    publish_n(&sb, 5, "e").await;
    let worker = {
        let sb = sb.clone();
        tokio::spawn(async move { sb.run_until_idle().await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(dest.calls().len(), 3, "two sent, the third hangs");
    worker.abort(); // the process dies
    drop(sb);
    tokio::time::sleep(Duration::from_secs(61)).await;
    let after = Scripted::new("d");
    let sb = board_with(
        store.clone(),
        &after,
        Target::channel("general"),
        WorkerConfig::default(),
    );
    sb.drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        after.ids(),
        ["e002", "e003", "e004"],
        "only e002 is sent twice"
    );
}

/// 6a. A hung `deliver()` times out as a failed attempt and does not stall others.
#[tokio::test(start_paused = true)]
async fn a_hung_call_times_out_and_other_targets_flow() {
    let dest = Scripted::new("d").then_after(Duration::from_secs(3600), Ok(()));
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(dest.clone())
        .destination_timeout("d", Duration::from_secs(5))
        .route(Route::on("wallet.*").to("d", Target::SubjectDm))
        .build()
        .unwrap();
    for i in 0..3 {
        let e = Event::builder(format!("e{i}"), "wallet.funded")
            .subject(person(&format!("u{i}")))
            .build()
            .unwrap();
        sb.publish(e).await.unwrap();
    }
    let start = tokio::time::Instant::now();
    let s = sb.run_until_idle().await.unwrap();
    assert!(
        start.elapsed() <= Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    assert_eq!((s.delivered, s.retried), (2, 1), "{s:?}");
    let log = sb.store().delivery_log(1).await.unwrap();
    assert!(
        log.iter().any(|l| l
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("no answer within")),
        "{log:?}"
    );
}

/// 6b. A panicking destination is a failed attempt; `run` survives; the crash
/// loop ends in a dead letter.
#[tokio::test(start_paused = true)]
async fn a_panic_is_a_failed_attempt_and_ends_as_a_dead_letter() {
    let dest = Scripted::new("d")
        .then_panic()
        .then_panic()
        .then_panic()
        .then_panic();
    let sb = board(&dest, Target::channel("general"));
    sb.publish(event("e1", "wallet.funded")).await.unwrap();
    let s = sb.drain(Duration::from_secs(600)).await.unwrap();
    assert_eq!(s.dead, 1, "{s:?}");
    let dead = sb.dead_letters(10).await.unwrap();
    assert!(dead[0].error.reason().contains("panicked"), "{:?}", dead[0]);
    assert_eq!(dead[0].attempts, 4);
}

/// 6c. Attempts are counted at claim: a delivery whose worker dies every time
/// ends as a dead letter instead of looping forever.
#[tokio::test(start_paused = true)]
async fn a_crash_loop_ends_as_a_dead_letter() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let dest = Scripted::new("d");
    let sb = board_with(
        store.clone(),
        &dest,
        Target::channel("general"),
        WorkerConfig::default(),
    );
    sb.publish(event("e1", "wallet.funded")).await.unwrap();
    // Four workers each claim it and die.
    for _ in 0..4 {
        let claimed = store
            .claim(sb.now(), Duration::from_secs(60), 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        tokio::time::advance(Duration::from_secs(61)).await;
    }
    let s = sb.run_until_idle().await.unwrap();
    assert_eq!(s.dead, 1);
    assert!(dest.calls().is_empty(), "not attempted a fifth time");
    assert_eq!(
        store.delivery_state(1).await.unwrap(),
        Some(DeliveryState::Dead)
    );
}

/// 7. A 429 with Retry-After holds back the rest of that target, keeps order,
/// and does not burn an attempt; an absurd Retry-After is capped.
#[tokio::test(start_paused = true)]
async fn rate_limited_head_holds_back_its_key_without_burning_attempts() {
    let dest = Scripted::new("d")
        .then(Err(DeliveryError::rate_limited(
            Some(Duration::from_secs(30)),
            "429",
        )))
        .then(Err(DeliveryError::rate_limited(
            Some(Duration::from_secs(30)),
            "429",
        )))
        .then(Err(DeliveryError::rate_limited(
            Some(Duration::from_secs(30)),
            "429",
        )))
        .then(Err(DeliveryError::rate_limited(
            Some(Duration::from_secs(30)),
            "429",
        )))
        .then(Err(DeliveryError::rate_limited(
            Some(Duration::from_secs(30)),
            "429",
        )));
    let sb = board(&dest, Target::channel("general"));
    publish_n(&sb, 3, "e").await;
    let start = tokio::time::Instant::now();
    let s = sb.drain(Duration::from_secs(600)).await.unwrap();
    assert_eq!(s.delivered, 3);
    assert_eq!(s.dead, 0, "five 429s are not five attempts (max is 4)");
    let calls = dest.calls();
    assert_eq!(
        calls
            .iter()
            .map(|c| c.event_id.as_str())
            .collect::<Vec<_>>(),
        [
            "e000", "e000", "e000", "e000", "e000", "e000", "e001", "e002"
        ]
    );
    assert!(
        calls[6].at - start >= Duration::from_secs(150),
        "the rest waited behind the head"
    );
    assert!(
        calls.iter().all(|c| c.attempt == 1),
        "snoozes burn no attempt"
    );

    let capped = Scripted::new("d").then(Err(DeliveryError::rate_limited(
        Some(Duration::from_secs(10 * 24 * 3600)),
        "429",
    )));
    let sb = board(&capped, Target::channel("general"));
    sb.publish(event("x", "wallet.funded")).await.unwrap();
    sb.run_until_idle().await.unwrap();
    let next = sb.store().next_due().await.unwrap().unwrap();
    assert!(
        next - sb.now() <= chrono::Duration::hours(1),
        "capped at one hour"
    );
}

/// 8. Shutdown is honoured while a backlog drains, and the rest stays queued.
#[tokio::test(start_paused = true)]
async fn shutdown_returns_promptly_during_a_backlog() {
    let dest = Scripted::new("d").caps(per_channel_1s());
    let sb = board(&dest, Target::channel("general"));
    publish_n(&sb, 200, "e").await;
    let (trigger, shutdown) = switchboard::Shutdown::new();
    let run = {
        let sb = sb.clone();
        tokio::spawn(async move { sb.run(shutdown).await })
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    let asked = tokio::time::Instant::now();
    trigger.trigger();
    run.await.unwrap().unwrap();
    assert!(
        asked.elapsed() <= Duration::from_secs(7),
        "{:?}",
        asked.elapsed()
    );
    let sent = dest.calls().len() as u64;
    assert!(sent < 200);
    assert_eq!(
        sb.store().pending().await.unwrap(),
        200 - sent,
        "the rest is still queued"
    );
}

/// A store whose claims fail a few times.
struct Flaky {
    inner: MemoryStore,
    failures: std::sync::atomic::AtomicU32,
}

/// 8b. Store errors are retried with backoff and surfaced; they do not end `run`.
#[tokio::test(start_paused = true)]
async fn store_errors_are_retried_and_surfaced_not_fatal() {
    let dest = Scripted::new("d");
    let flaky = Arc::new(Flaky {
        inner: MemoryStore::new(),
        failures: std::sync::atomic::AtomicU32::new(3),
    });
    let sb = Switchboard::builder()
        .store_arc(flaky.clone())
        .destination(dest.clone())
        .route(Route::on("wallet.*").to("d", Target::channel("general")))
        .build()
        .unwrap();
    sb.publish(event("e1", "wallet.funded")).await.unwrap();
    let (trigger, shutdown) = switchboard::Shutdown::new();
    let run = {
        let sb = sb.clone();
        tokio::spawn(async move { sb.run(shutdown).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(sb.last_store_error().is_some(), "the failure is visible");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(dest.ids(), ["e1"], "delivered once the store recovered");
    assert!(sb.last_store_error().is_none(), "cleared after recovery");
    trigger.trigger();
    run.await.unwrap().unwrap();
}

/// 10. No head-of-line blocking: a DM published behind a 128-post channel
/// backlog is delivered within about a second.
#[tokio::test(start_paused = true)]
async fn a_dm_is_not_stuck_behind_a_channel_backlog() {
    let dest = Scripted::new("d").caps(per_channel_1s());
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(dest.clone())
        .route(Route::on("channel.*").to("d", Target::channel("general")))
        .route(Route::on("dm.*").to("d", Target::SubjectDm))
        .build()
        .unwrap();
    for i in 0..128 {
        sb.publish(event(&format!("c{i:03}"), "channel.post"))
            .await
            .unwrap();
    }
    let (trigger, shutdown) = switchboard::Shutdown::new();
    let run = {
        let sb = sb.clone();
        tokio::spawn(async move { sb.run(shutdown).await })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let published = tokio::time::Instant::now();
    sb.publish(event("dm1", "dm.note")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dm = dest
        .calls()
        .into_iter()
        .find(|c| c.event_id == "dm1")
        .expect("DM delivered");
    assert!(
        dm.at - published <= Duration::from_secs(1),
        "{:?}",
        dm.at - published
    );
    trigger.trigger();
    run.await.unwrap().unwrap();
}

/// 11. The pacer forgets idle keys.
#[tokio::test(start_paused = true)]
async fn idle_pacing_keys_are_evicted() {
    let dest = Scripted::new("d").caps(per_channel_1s());
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(dest.clone())
        .route(Route::on("wallet.*").to("d", Target::SubjectDm))
        .build()
        .unwrap();
    for i in 0..50 {
        let e = Event::builder(format!("e{i}"), "wallet.funded")
            .subject(person(&format!("u{i}")))
            .build()
            .unwrap();
        sb.publish(e).await.unwrap();
    }
    sb.run_until_idle().await.unwrap();
    assert_eq!(sb.pacing_keys("d").unwrap(), 50);
    tokio::time::advance(Duration::from_secs(5)).await;
    sb.evict_idle_pacing();
    assert_eq!(sb.pacing_keys("d").unwrap(), 0);
}

/// 12. Pacing keeps a margin over the platform's limit.
#[tokio::test(start_paused = true)]
async fn pacing_keeps_a_margin_over_the_platform_limit() {
    let dest = Scripted::new("d").caps(per_channel_1s());
    let sb = board(&dest, Target::channel("general"));
    publish_n(&sb, 5, "e").await;
    sb.drain(Duration::from_secs(60)).await.unwrap();
    let calls = dest.calls();
    assert_eq!(calls.len(), 5);
    for w in calls.windows(2) {
        assert!(
            w[1].at - w[0].at >= Duration::from_millis(1_100),
            "{:?}",
            w[1].at - w[0].at
        );
    }
}

// --- the flaky store: claims fail while `failures` > 0, everything else delegates ---

mod flaky_impl {
    use super::*;
    use chrono::{DateTime, Utc};
    use std::sync::atomic::Ordering;
    use switchboard::TenantId;
    use switchboard::attributes::{
        AttributeRecord, AttributeStore, Attributes, Filter, UpsertStats,
    };
    use switchboard::destination::DeliveryId;
    use switchboard::identity::IdentityLink;
    use switchboard::integration::{IntegrationConfig, RunRecord};
    use switchboard::store::*;
    use switchboard::tenant::{Connection, ConnectionKey, ConnectionState, Secrets};

    #[async_trait]
    impl OutboxStore for Flaky {
        async fn enqueue(
            &self,
            e: &Event,
            d: &[NewDelivery],
            now: DateTime<Utc>,
        ) -> switchboard::Result<EnqueueOutcome> {
            self.inner.enqueue(e, d, now).await
        }
        async fn claim(
            &self,
            now: DateTime<Utc>,
            lease: Duration,
            limit: usize,
        ) -> switchboard::Result<Vec<ClaimedDelivery>> {
            if self.failures.load(Ordering::SeqCst) > 0 {
                self.failures.fetch_sub(1, Ordering::SeqCst);
                return Err(Error::new(ErrorKind::Store, "database is locked"));
            }
            self.inner.claim(now, lease, limit).await
        }
        async fn complete(&self, c: &[Completion], now: DateTime<Utc>) -> switchboard::Result<()> {
            self.inner.complete(c, now).await
        }
        async fn renew(
            &self,
            c: &[(DeliveryId, i64)],
            now: DateTime<Utc>,
            lease: Duration,
        ) -> switchboard::Result<u64> {
            self.inner.renew(c, now, lease).await
        }
        async fn release(
            &self,
            c: &[(DeliveryId, i64)],
            now: DateTime<Utc>,
        ) -> switchboard::Result<()> {
            self.inner.release(c, now).await
        }
        async fn set_scope(
            &self,
            t: &TenantId,
            s: &str,
            c: ScopeChange,
            now: DateTime<Utc>,
        ) -> switchboard::Result<u64> {
            self.inner.set_scope(t, s, c, now).await
        }
        async fn scopes(&self) -> switchboard::Result<Vec<ScopeStatus>> {
            self.inner.scopes().await
        }
        async fn next_due(&self) -> switchboard::Result<Option<DateTime<Utc>>> {
            self.inner.next_due().await
        }
        async fn pending(&self) -> switchboard::Result<u64> {
            self.inner.pending().await
        }
        async fn dead_letters(
            &self,
            t: Option<&TenantId>,
            limit: usize,
        ) -> switchboard::Result<Vec<DeadLetter>> {
            self.inner.dead_letters(t, limit).await
        }
        async fn replay(&self, id: DeliveryId, now: DateTime<Utc>) -> switchboard::Result<()> {
            self.inner.replay(id, now).await
        }
        async fn delivery_log(&self, id: DeliveryId) -> switchboard::Result<Vec<LogEntry>> {
            self.inner.delivery_log(id).await
        }
        async fn delivery_state(
            &self,
            id: DeliveryId,
        ) -> switchboard::Result<Option<DeliveryState>> {
            self.inner.delivery_state(id).await
        }
        async fn destination_stats(&self) -> switchboard::Result<Vec<DestinationStats>> {
            self.inner.destination_stats().await
        }
        async fn prune(&self, before: DateTime<Utc>) -> switchboard::Result<PruneStats> {
            self.inner.prune(before).await
        }
    }

    #[async_trait]
    impl ConnectionStore for Flaky {
        async fn put_connection(
            &self,
            c: &Connection,
            now: DateTime<Utc>,
        ) -> switchboard::Result<Connection> {
            self.inner.put_connection(c, now).await
        }
        async fn connection(&self, k: &ConnectionKey) -> switchboard::Result<Option<Connection>> {
            self.inner.connection(k).await
        }
        async fn default_connection(
            &self,
            t: &TenantId,
            p: &str,
        ) -> switchboard::Result<Option<Connection>> {
            self.inner.default_connection(t, p).await
        }
        async fn connections(&self, t: Option<&TenantId>) -> switchboard::Result<Vec<Connection>> {
            self.inner.connections(t).await
        }
        async fn delete_connection(&self, k: &ConnectionKey) -> switchboard::Result<bool> {
            self.inner.delete_connection(k).await
        }
        async fn set_connection_state(
            &self,
            k: &ConnectionKey,
            s: &ConnectionState,
            now: DateTime<Utc>,
        ) -> switchboard::Result<bool> {
            self.inner.set_connection_state(k, s, now).await
        }
        async fn swap_secrets(
            &self,
            k: &ConnectionKey,
            r: u64,
            s: &Secrets,
            e: Option<DateTime<Utc>>,
            now: DateTime<Utc>,
        ) -> switchboard::Result<Option<Connection>> {
            self.inner.swap_secrets(k, r, s, e, now).await
        }
    }

    #[async_trait]
    impl LinkStore for Flaky {
        async fn put_link(&self, l: &IdentityLink) -> switchboard::Result<()> {
            self.inner.put_link(l).await
        }
        async fn link(
            &self,
            t: &TenantId,
            p: &str,
            u: &str,
        ) -> switchboard::Result<Option<IdentityLink>> {
            self.inner.link(t, p, u).await
        }
        async fn links(&self, t: &TenantId, p: &str) -> switchboard::Result<Vec<IdentityLink>> {
            self.inner.links(t, p).await
        }
        async fn delete_link(&self, t: &TenantId, p: &str, u: &str) -> switchboard::Result<bool> {
            self.inner.delete_link(t, p, u).await
        }
    }

    #[async_trait]
    impl RunStore for Flaky {
        async fn put_integration(&self, c: &IntegrationConfig) -> switchboard::Result<()> {
            self.inner.put_integration(c).await
        }
        async fn integrations(
            &self,
            t: Option<&TenantId>,
        ) -> switchboard::Result<Vec<IntegrationConfig>> {
            self.inner.integrations(t).await
        }
        async fn delete_integration(&self, t: &TenantId, n: &str) -> switchboard::Result<bool> {
            self.inner.delete_integration(t, n).await
        }
        async fn start_run(
            &self,
            t: &TenantId,
            i: &str,
            now: DateTime<Utc>,
            lease: Duration,
        ) -> switchboard::Result<Option<RunRecord>> {
            self.inner.start_run(t, i, now, lease).await
        }
        async fn renew_run(
            &self,
            id: i64,
            now: DateTime<Utc>,
            lease: Duration,
        ) -> switchboard::Result<bool> {
            self.inner.renew_run(id, now, lease).await
        }
        async fn finish_run(&self, r: &RunRecord) -> switchboard::Result<()> {
            self.inner.finish_run(r).await
        }
        async fn runs(
            &self,
            t: &TenantId,
            i: &str,
            limit: usize,
        ) -> switchboard::Result<Vec<RunRecord>> {
            self.inner.runs(t, i, limit).await
        }
    }

    #[async_trait]
    impl RuleStore for Flaky {
        async fn put_rule(&self, r: &RouteRule) -> switchboard::Result<()> {
            self.inner.put_rule(r).await
        }
        async fn rules(&self, t: &TenantId) -> switchboard::Result<Vec<RouteRule>> {
            self.inner.rules(t).await
        }
    }

    #[async_trait]
    impl OnceStore for Flaky {
        async fn remember_once(
            &self,
            s: &str,
            k: &str,
            e: DateTime<Utc>,
            now: DateTime<Utc>,
        ) -> switchboard::Result<bool> {
            self.inner.remember_once(s, k, e, now).await
        }
    }

    #[async_trait]
    impl AttributeStore for Flaky {
        async fn upsert(
            &self,
            t: &TenantId,
            b: &[AttributeRecord],
        ) -> switchboard::Result<UpsertStats> {
            self.inner.upsert(t, b).await
        }
        async fn get(&self, t: &TenantId, u: &str) -> switchboard::Result<Option<Attributes>> {
            self.inner.get(t, u).await
        }
        async fn query(&self, t: &TenantId, f: &Filter) -> switchboard::Result<Vec<String>> {
            self.inner.query(t, f).await
        }
        async fn write_import(
            &self,
            t: &TenantId,
            run: &switchboard::attributes::ImportRun,
            b: &[AttributeRecord],
        ) -> switchboard::Result<UpsertStats> {
            self.inner.write_import(t, run, b).await
        }
        async fn begin_import(
            &self,
            t: &TenantId,
            integration: &str,
            mode: switchboard::attributes::ImportMode,
            names: &[String],
        ) -> switchboard::Result<switchboard::attributes::ImportRun> {
            self.inner.begin_import(t, integration, mode, names).await
        }
        async fn finish_import(
            &self,
            t: &TenantId,
            run: &switchboard::attributes::ImportRun,
        ) -> switchboard::Result<switchboard::attributes::RemovedAttributes> {
            self.inner.finish_import(t, run).await
        }
        async fn release_names(
            &self,
            t: &TenantId,
            integration: &str,
            keep: &[String],
        ) -> switchboard::Result<switchboard::attributes::RemovedAttributes> {
            self.inner.release_names(t, integration, keep).await
        }
        async fn delete_user(&self, t: &TenantId, u: &str) -> switchboard::Result<u64> {
            self.inner.delete_user(t, u).await
        }
        async fn delete_value(&self, t: &TenantId, u: &str, n: &str) -> switchboard::Result<bool> {
            self.inner.delete_value(t, u, n).await
        }
        async fn delete_name(
            &self,
            t: &TenantId,
            n: &str,
        ) -> switchboard::Result<switchboard::attributes::RemovedAttributes> {
            self.inner.delete_name(t, n).await
        }
        async fn names(
            &self,
            t: &TenantId,
        ) -> switchboard::Result<Vec<switchboard::attributes::AttributeName>> {
            self.inner.names(t).await
        }
        async fn query_page(
            &self,
            t: &TenantId,
            f: &Filter,
            after: Option<&str>,
            limit: usize,
        ) -> switchboard::Result<switchboard::attributes::AttributePage> {
            self.inner.query_page(t, f, after, limit).await
        }
    }
}

/// A shared pacer (as `PostgresStore::pacer()` provides) in memory: one GCRA
/// timestamp per key, used by several switchboards at once.
#[derive(Default)]
struct FakeShared {
    next: std::sync::Mutex<std::collections::HashMap<String, tokio::time::Instant>>,
}

#[async_trait]
impl switchboard::engine::SharedPacing for FakeShared {
    async fn try_acquire(
        &self,
        key: &str,
        limit: RateLimit,
    ) -> switchboard::Result<Option<Duration>> {
        let now = tokio::time::Instant::now();
        let mut next = self.next.lock().unwrap();
        let slot = next.entry(key.to_owned()).or_insert(now);
        if *slot > now {
            return Ok(Some(*slot - now));
        }
        *slot = now + limit.per / limit.burst.max(1);
        Ok(None)
    }
}

/// Two instances sharing a pacer never exceed one channel's limit between them.
#[tokio::test(start_paused = true)]
async fn a_shared_pacer_holds_the_limit_across_instances() {
    let shared: Arc<FakeShared> = Arc::new(FakeShared::default());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let dest = Scripted::new("d").caps(per_channel_1s());
    let build = |d: &Scripted| {
        Switchboard::builder()
            .store_arc(store.clone())
            .destination(d.clone())
            .shared_pacing(shared.clone())
            .route(Route::on("wallet.*").to("d", Target::channel("general")))
            .build()
            .unwrap()
    };
    let a = build(&dest);
    let b = build(&dest);
    publish_n(&a, 8, "e").await;
    let ta = {
        let a = a.clone();
        tokio::spawn(async move { a.drain(Duration::from_secs(60)).await })
    };
    let tb = tokio::spawn(async move { b.drain(Duration::from_secs(60)).await });
    let (ra, rb) = (ta.await.unwrap().unwrap(), tb.await.unwrap().unwrap());
    assert_eq!(ra.delivered + rb.delivered, 8);
    let calls = dest.calls();
    assert_eq!(calls.len(), 8);
    for w in calls.windows(2) {
        assert!(
            w[1].at - w[0].at >= Duration::from_millis(1_100),
            "{:?}",
            w[1].at - w[0].at
        );
    }
}
