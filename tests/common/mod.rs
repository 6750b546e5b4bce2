//! Shared test doubles for engine tests: a scripted destination that records what it got, with optional platform and delays.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use secrecy::ExposeSecret;
use switchboard::{Capabilities, Delivery, DeliveryError, Destination, Event, Person, Receipt};

/// One scripted answer: wait, then answer.
#[derive(Clone)]
pub struct Step {
    pub delay: Duration,
    pub answer: Result<(), DeliveryError>,
    pub panic: bool,
}

/// A destination that answers from a script (then succeeds) and records calls.
#[derive(Clone, Default)]
pub struct Scripted {
    pub name: String,
    pub platform: Option<String>,
    pub fixed: bool,
    pub script: Arc<Mutex<VecDeque<Step>>>,
    /// Tokens (access_token of the delivery's connection) that answer `Disconnected`.
    pub revoked: Arc<Mutex<Vec<String>>>,
    pub calls: Arc<Mutex<Vec<Call>>>,
    pub caps: Capabilities,
}

/// What the destination saw.
#[derive(Clone, Debug)]
pub struct Call {
    pub at: tokio::time::Instant,
    pub event_id: String,
    pub tenant: String,
    pub token: Option<String>,
    pub target: switchboard::Target,
    pub attempt: u32,
    pub text: String,
}

impl Scripted {
    pub fn new(name: &str) -> Self {
        Scripted {
            name: name.to_owned(),
            ..Default::default()
        }
    }
    pub fn platform(mut self, platform: &str) -> Self {
        self.platform = Some(platform.to_owned());
        self
    }
    pub fn fixed_credentials(mut self) -> Self {
        self.fixed = true;
        self
    }
    pub fn caps(mut self, caps: Capabilities) -> Self {
        self.caps = caps;
        self
    }
    pub fn then(self, answer: Result<(), DeliveryError>) -> Self {
        self.then_after(Duration::ZERO, answer)
    }
    pub fn then_after(self, delay: Duration, answer: Result<(), DeliveryError>) -> Self {
        self.script.lock().unwrap().push_back(Step {
            delay,
            answer,
            panic: false,
        });
        self
    }
    pub fn then_panic(self) -> Self {
        self.script.lock().unwrap().push_back(Step {
            delay: Duration::ZERO,
            answer: Ok(()),
            panic: true,
        });
        self
    }
    pub fn revoke(&self, token: &str) {
        self.revoked.lock().unwrap().push(token.to_owned());
    }
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
    pub fn ids(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.event_id).collect()
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
    fn platform(&self) -> Option<&str> {
        self.platform.as_deref()
    }
    fn has_fixed_credentials(&self) -> bool {
        self.fixed
    }
    async fn deliver(&self, d: &Delivery) -> Result<Receipt, DeliveryError> {
        let token = d
            .connection
            .as_ref()
            .and_then(|c| c.access_token())
            .map(|t| t.expose_secret().to_owned());
        self.calls.lock().unwrap().push(Call {
            at: tokio::time::Instant::now(),
            event_id: d.event.id.clone(),
            tenant: d.tenant.to_string(),
            token: token.clone(),
            target: d.target.clone(),
            attempt: d.attempt,
            text: d.message.text.clone(),
        });
        let step = self.script.lock().unwrap().pop_front();
        if let Some(step) = step {
            if !step.delay.is_zero() {
                tokio::time::sleep(step.delay).await;
            }
            if step.panic {
                panic!("scripted panic");
            }
            step.answer?;
        }
        if let Some(t) = &token {
            if self.revoked.lock().unwrap().contains(t) {
                return Err(DeliveryError::disconnected("token_revoked"));
            }
        }
        Ok(Receipt {
            remote_id: Some(format!("r{}", d.id)),
            location: None,
        })
    }
}

pub fn person(id: &str) -> Person {
    Person::new(id).email(&format!("{id}@example.com"))
}

pub fn event(id: &str, kind: &str) -> Event {
    Event::builder(id, kind)
        .subject(person("u1"))
        .data(serde_json::json!({"amount": 25}))
        .build()
        .unwrap()
}

pub fn tenant_event(tenant: &str, id: &str, kind: &str, subject: &str) -> Event {
    Event::builder(id, kind)
        .tenant(tenant)
        .subject(person(subject))
        .data(serde_json::json!({"amount": 25}))
        .build()
        .unwrap()
}
