//! `ConsoleDestination`: prints exactly what would be sent, for running without credentials.

use std::io::Write;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::destination::{Capabilities, Delivery, DeliveryError, Destination, Receipt};
use crate::message::MessageFormat;

/// A destination that writes each delivery as one JSON line to stdout (or a
/// shared buffer), standing in for a platform when no credentials are given.
#[derive(Clone)]
pub struct ConsoleDestination {
    name: String,
    format: MessageFormat,
    sink: Option<Arc<Mutex<Vec<String>>>>,
}

impl std::fmt::Debug for ConsoleDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleDestination")
            .field("name", &self.name)
            .field("format", &self.format)
            .finish()
    }
}

impl ConsoleDestination {
    /// A console destination named `name` rendering plain text.
    pub fn new(name: impl Into<String>) -> Self {
        ConsoleDestination {
            name: name.into(),
            format: MessageFormat::Plain,
            sink: None,
        }
    }

    /// Renders templates in `format` (e.g. Slack mrkdwn, to preview Slack output).
    #[must_use]
    pub fn with_format(mut self, format: MessageFormat) -> Self {
        self.format = format;
        self
    }

    /// Collects lines in memory instead of printing them; returns the buffer.
    pub fn capture(mut self) -> (Self, Arc<Mutex<Vec<String>>>) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        self.sink = Some(buf.clone());
        (self, buf)
    }

    /// The JSON line printed for `delivery`.
    pub fn line(&self, delivery: &Delivery) -> String {
        serde_json::json!({
            "destination": self.name,
            "delivery_id": delivery.id,
            "event_id": delivery.event.id,
            "kind": delivery.event.kind,
            "target": delivery.target,
            "recipient": delivery.recipient.as_deref().or(delivery.recipient_user_id.as_deref()),
            "title": delivery.message.title,
            "text": delivery.message.text,
        })
        .to_string()
    }
}

#[async_trait]
impl Destination for ConsoleDestination {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            format: self.format,
            ..Capabilities::default()
        }
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<Receipt, DeliveryError> {
        let line = self.line(delivery);
        match &self.sink {
            Some(buf) => buf
                .lock()
                .map_err(|_| DeliveryError::temporary("console buffer poisoned"))?
                .push(line),
            None => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{line}").map_err(DeliveryError::temporary)?;
            }
        }
        Ok(Receipt {
            remote_id: Some(format!("console-{}", delivery.id)),
            location: None,
        })
    }
}
