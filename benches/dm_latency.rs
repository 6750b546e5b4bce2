//! Latency of a DM published behind a 128-post channel backlog paced at 1 post/s (issue 9, item 10), p50 and p99 over 40 trials, in tokio's paused (virtual) time so the figure is the engine's scheduling, not the machine's speed.
//!
//! Run: `cargo bench --bench dm_latency`. The same file runs unchanged against
//! the engine before the v2 rewrite (it uses only API common to both).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use switchboard::{
    Capabilities, Delivery, DeliveryError, Destination, Event, MemoryStore, Person, RateLimit,
    Receipt, Route, Switchboard, Target,
};

#[derive(Clone, Default)]
struct Recorder {
    dm_at: Arc<Mutex<Option<tokio::time::Instant>>>,
}

#[async_trait]
impl Destination for Recorder {
    fn name(&self) -> &str {
        "chat"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            target_limits: vec![RateLimit::per_second(1)],
            ..Capabilities::default()
        }
    }
    async fn deliver(&self, d: &Delivery) -> Result<Receipt, DeliveryError> {
        if d.event.kind == "dm.note" {
            if let Ok(mut slot) = self.dm_at.lock() {
                slot.get_or_insert(tokio::time::Instant::now());
            }
        }
        Ok(Receipt::default())
    }
}

async fn trial(offset: Duration) -> Duration {
    let dest = Recorder::default();
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .destination(dest.clone())
        .route(Route::on("channel.*").to("chat", Target::channel("general")))
        .route(Route::on("dm.*").to("chat", Target::SubjectDm).named("dm"))
        .build()
        .expect("wiring");
    for i in 0..128 {
        let e = Event::builder(format!("c{i}"), "channel.post")
            .build()
            .expect("event");
        sb.publish(e).await.expect("publish");
    }
    let (trigger, shutdown) = switchboard::Shutdown::new();
    let run = {
        let sb = sb.clone();
        tokio::spawn(async move { sb.run(shutdown).await })
    };
    tokio::time::sleep(offset).await;
    let published = tokio::time::Instant::now();
    let dm = Event::builder("dm", "dm.note")
        .subject(Person::new("u1"))
        .build()
        .expect("event");
    sb.publish(dm).await.expect("publish");
    let mut waited = Duration::ZERO;
    let latency = loop {
        if let Some(at) = *dest.dm_at.lock().expect("lock") {
            break at - published;
        }
        if waited > Duration::from_secs(1_000) {
            break waited;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    };
    trigger.trigger();
    let _ = run.await;
    latency
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let mut latencies: Vec<Duration> = rt.block_on(async {
        let mut out = Vec::new();
        for k in 0..40u64 {
            out.push(trial(Duration::from_millis(250 + k * 1_000)).await);
        }
        out
    });
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "dm_latency behind a 128-post channel backlog: p50 {:.3} s, p99 {:.3} s (40 trials, virtual time)",
        p(0.5).as_secs_f64(),
        p(0.99).as_secs_f64()
    );
}
