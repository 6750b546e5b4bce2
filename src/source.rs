//! The `EventSource` trait, the `Emitter` sources publish through, and the `Shutdown` signal.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::Result;
use crate::engine::{Inner, PublishOutcome};
use crate::event::Event;

/// Something that produces events (a webhook receiver, a poller, a mailbox…).
#[async_trait]
pub trait EventSource: Send + Sync {
    /// The source's name (for logs and status).
    fn name(&self) -> &str;
    /// Produces events until `shutdown` fires, pushing them through `emitter`.
    async fn run(&self, emitter: Emitter, shutdown: Shutdown) -> Result<()>;
}

/// Publishes events into the switchboard that owns it; handed to [`EventSource::run`].
#[derive(Clone)]
pub struct Emitter {
    pub(crate) inner: Arc<Inner>,
}

impl Emitter {
    /// Publishes durably (see [`crate::Switchboard::publish`]).
    pub async fn emit(&self, event: Event) -> Result<PublishOutcome> {
        self.inner.publish(event).await
    }
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Emitter")
    }
}

/// A cloneable signal that tells workers and sources to stop.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The sending half of [`Shutdown`]; dropping it also signals shutdown.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

impl Shutdown {
    /// A new signal and its trigger.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger { tx }, Shutdown { rx })
    }

    /// True once shutdown was requested.
    pub fn is_requested(&self) -> bool {
        *self.rx.borrow() || self.rx.has_changed().is_err()
    }

    /// Resolves when shutdown is requested.
    pub async fn wait(&mut self) {
        let _ = self.rx.wait_for(|stop| *stop).await;
    }
}

impl ShutdownTrigger {
    /// Requests shutdown.
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}
