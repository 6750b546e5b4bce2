//! `Destination::exact_limits`: limits a destination keeps exactly itself are not paced a second time by the engine in process, and are still paced across instances through shared pacing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use switchboard::{
    Capabilities, Delivery, DeliveryError, Destination, Event, MemoryStore, RateLimit, Receipt,
    Route, Switchboard, Target,
};

/// One send per 10 s per channel: longer than the engine waits in a worker
/// (`max_pacing_wait`, 5 s), so a second post is deferred if the engine paces it.
fn slow() -> RateLimit {
    RateLimit {
        burst: 1,
        per: Duration::from_secs(10),
    }
}

#[derive(Clone)]
struct Windowed {
    exact: bool,
    sent: Arc<Mutex<u32>>,
}

#[async_trait]
impl Destination for Windowed {
    fn name(&self) -> &str {
        "windowed"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            target_limits: vec![slow()],
            ..Capabilities::default()
        }
    }
    fn exact_limits(&self) -> Vec<RateLimit> {
        if self.exact { vec![slow()] } else { Vec::new() }
    }
    async fn deliver(&self, _: &Delivery) -> Result<Receipt, DeliveryError> {
        *self.sent.lock().unwrap() += 1;
        Ok(Receipt::default())
    }
}

/// Records which keys and limits the engine asked for.
#[derive(Default)]
struct Recorder {
    asked: Mutex<Vec<(String, RateLimit)>>,
}

#[async_trait]
impl switchboard::engine::SharedPacing for Recorder {
    async fn try_acquire(
        &self,
        key: &str,
        limit: RateLimit,
    ) -> switchboard::Result<Option<Duration>> {
        self.asked.lock().unwrap().push((key.to_owned(), limit));
        Ok(None)
    }
}

async fn run(exact: bool, shared: Option<Arc<Recorder>>) -> u32 {
    let dest = Windowed {
        exact,
        sent: Arc::default(),
    };
    let mut builder = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(dest.clone())
        .route(Route::on("perk.*").to("windowed", Target::channel("general")));
    if let Some(shared) = shared {
        builder = builder.shared_pacing(shared);
    }
    let sb = builder.build().unwrap();
    for i in 0..3 {
        sb.publish(
            Event::builder(format!("e{i}"), "perk.added")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    }
    sb.run_until_idle().await.unwrap();
    *dest.sent.lock().unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_engine_paces_a_limit_the_destination_does_not_keep() {
    assert_eq!(run(false, None).await, 1, "the second post waits 10 s");
}

#[tokio::test(start_paused = true)]
async fn a_limit_the_destination_keeps_is_not_paced_twice_in_process() {
    assert_eq!(run(true, None).await, 3);
}

#[tokio::test(start_paused = true)]
async fn a_kept_limit_is_still_shared_across_instances() {
    let shared = Arc::new(Recorder::default());
    assert_eq!(run(true, Some(shared.clone())).await, 3);
    let asked = shared.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 3, "{asked:?}");
    assert!(
        asked
            .iter()
            .all(|(_, l)| l.per > slow().per && l.per <= slow().per.mul_f64(1.2)),
        "the limit with the engine's margin: {asked:?}"
    );
}
