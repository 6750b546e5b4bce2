//! The event model: what happened in the host (`Event`) and who it is about (`Person`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::identity::{normalize_email, normalize_phone};
use crate::tenant::TenantId;

/// Something that happened in the host application, e.g. `wallet.funded`.
///
/// `id` is the idempotency key: publishing the same id twice creates one set of
/// deliveries. Build one with [`Event::builder`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id; the idempotency key.
    pub id: String,
    /// Dotted kind, e.g. `wallet.funded`.
    pub kind: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The person the event is about (the recipient of DM routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Person>,
    /// The person who caused it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Person>,
    /// Arbitrary payload, available to templates as `data`.
    #[serde(default)]
    pub data: serde_json::Value,
    /// Which system produced it (`host`, `slack`, `email`, …).
    pub source: String,
    /// The tenant (customer organisation) it belongs to; the default tenant
    /// when none was given.
    #[serde(default, skip_serializing_if = "TenantId::is_default")]
    pub tenant: TenantId,
}

impl Event {
    /// Starts an event with its idempotency key and kind.
    pub fn builder(id: impl Into<String>, kind: impl Into<String>) -> EventBuilder {
        EventBuilder {
            event: Event {
                id: id.into(),
                kind: kind.into(),
                occurred_at: Utc::now(),
                subject: None,
                actor: None,
                data: serde_json::Value::Null,
                source: "host".to_owned(),
                tenant: TenantId::default_tenant(),
            },
            tenant_error: None,
        }
    }
}

/// Builder for [`Event`].
#[derive(Debug, Clone)]
#[must_use]
pub struct EventBuilder {
    event: Event,
    tenant_error: Option<String>,
}

impl EventBuilder {
    /// Sets when the event happened (default: now).
    pub fn occurred_at(mut self, at: DateTime<Utc>) -> Self {
        self.event.occurred_at = at;
        self
    }
    /// Sets the person the event is about.
    pub fn subject(mut self, person: Person) -> Self {
        self.event.subject = Some(person);
        self
    }
    /// Sets the person who caused the event.
    pub fn actor(mut self, person: Person) -> Self {
        self.event.actor = Some(person);
        self
    }
    /// Sets the JSON payload.
    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.event.data = data;
        self
    }
    /// Sets the producing system (default `host`).
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.event.source = source.into();
        self
    }
    /// Sets the tenant (default: [`TenantId::DEFAULT`]). An invalid id makes
    /// [`EventBuilder::build`] fail.
    pub fn tenant(mut self, tenant: impl AsRef<str>) -> Self {
        match TenantId::new(tenant) {
            Ok(t) => self.event.tenant = t,
            Err(e) => self.tenant_error = Some(e.to_string()),
        }
        self
    }
    /// Validates and returns the event.
    pub fn build(self) -> crate::Result<Event> {
        if let Some(e) = self.tenant_error {
            return Err(crate::Error::invalid_input(e));
        }
        if self.event.id.trim().is_empty() {
            return Err(crate::Error::invalid_input("event id must not be empty"));
        }
        if self.event.kind.trim().is_empty() {
            return Err(crate::Error::invalid_input("event kind must not be empty"));
        }
        Ok(self.event)
    }
}

/// A person in the host application and what identifies them elsewhere.
///
/// Emails are trimmed and lower-cased and phones converted to E.164 on the way in;
/// values that do not normalise are dropped rather than guessed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// The host's own user id.
    pub id: String,
    /// Display name, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Normalised email addresses, primary first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
    /// E.164 phone numbers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<String>,
}

impl Person {
    /// A person known by the host's user id only.
    pub fn new(id: impl Into<String>) -> Self {
        Person {
            id: id.into(),
            name: None,
            emails: Vec::new(),
            phones: Vec::new(),
        }
    }
    /// Adds a display name.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Adds an email; invalid addresses are ignored. Duplicates are kept once.
    #[must_use]
    pub fn email(mut self, email: &str) -> Self {
        if let Some(e) = normalize_email(email) {
            if !self.emails.contains(&e) {
                self.emails.push(e);
            }
        }
        self
    }
    /// Adds a phone number, parsed with `default_region` (ISO 3166 alpha-2) when it
    /// has no country code; numbers that are not valid are ignored.
    #[must_use]
    pub fn phone(mut self, raw: &str, default_region: &str) -> Self {
        if let Some(p) = normalize_phone(raw, default_region) {
            if !self.phones.contains(&p) {
                self.phones.push(p);
            }
        }
        self
    }
    /// The primary email, if any.
    pub fn primary_email(&self) -> Option<&str> {
        self.emails.first().map(String::as_str)
    }
}
