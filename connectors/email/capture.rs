//! Capture: mail sent to a person's forwarding address, from that person's own linked and authenticated address, becomes an `insight.captured` event pending in their inbox; anything else is rejected with a typed reason and nothing is stored.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::json;

use super::addresses::{AddressRejection, ForwardingAddresses};
use super::auth::{Authentic, Authenticator, SmtpSession};
use super::parse::InboundEmail;
use crate::event::{Event, Person};
use crate::tenant::TenantId;
use crate::{Error, ErrorKind, Result, Switchboard};

/// The kind of captured-item events.
pub const INSIGHT_EVENT_KIND: &str = "insight.captured";
/// The `source` of events made from email.
pub const SOURCE: &str = "email";

/// The tenant's known people, for matching senders and participants.
#[async_trait]
pub trait PersonDirectory: Send + Sync {
    /// A person by the host's user id.
    async fn person(&self, tenant: &TenantId, id: &str) -> Result<Option<Person>>;
    /// The person with this normalised email, if exactly one has it.
    async fn by_email(&self, tenant: &TenantId, email: &str) -> Result<Option<Person>>;
}

/// An in-memory [`PersonDirectory`].
#[derive(Debug, Default)]
pub struct MemoryDirectory {
    people: Mutex<HashMap<TenantId, Vec<Person>>>,
}

impl MemoryDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds (or replaces) a person of a tenant.
    pub fn add(&self, tenant: &TenantId, person: Person) {
        if let Ok(mut map) = self.people.lock() {
            let list = map.entry(tenant.clone()).or_default();
            list.retain(|p| p.id != person.id);
            list.push(person);
        }
    }
}

#[async_trait]
impl PersonDirectory for MemoryDirectory {
    async fn person(&self, tenant: &TenantId, id: &str) -> Result<Option<Person>> {
        let map = self
            .people
            .lock()
            .map_err(|_| Error::new(ErrorKind::Store, "the directory lock is poisoned"))?;
        Ok(map
            .get(tenant)
            .and_then(|l| l.iter().find(|p| p.id == id).cloned()))
    }
    async fn by_email(&self, tenant: &TenantId, email: &str) -> Result<Option<Person>> {
        let map = self
            .people
            .lock()
            .map_err(|_| Error::new(ErrorKind::Store, "the directory lock is poisoned"))?;
        let mut found = map
            .get(tenant)
            .into_iter()
            .flatten()
            .filter(|p| p.emails.iter().any(|e| e == email));
        let first = found.next().cloned();
        Ok(if found.next().is_some() { None } else { first })
    }
}

/// Why a message was not captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Rejection {
    /// The bytes are not a usable email.
    #[error("malformed email: {detail}")]
    Malformed {
        /// What is wrong.
        detail: String,
    },
    /// No recipient is a forwarding address.
    #[error("not sent to a forwarding address")]
    NotAddressed,
    /// Sent to an address that was never issued.
    #[error("unknown forwarding address")]
    UnknownAddress,
    /// Sent to an address that was reset.
    #[error("the forwarding address was reset")]
    RevokedAddress,
    /// The address's person is no longer known.
    #[error("the address's person is unknown")]
    UnknownPerson,
    /// `From` is not one of the person's own linked addresses.
    #[error("the sender {sender} is not the person's linked address")]
    SenderNotLinked {
        /// The `From` address.
        sender: String,
    },
    /// The sender could not be authenticated (forged `From`, missing or broken
    /// signature, untrusted `Authentication-Results`).
    #[error("the sender is not authentic: {detail}")]
    NotAuthentic {
        /// What failed.
        detail: String,
    },
}

/// The result of [`EmailCapture::process`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CaptureOutcome {
    /// Captured: the event (already published when a switchboard is set).
    Accepted {
        /// The `insight.captured` event.
        event: Box<Event>,
    },
    /// Not captured; nothing was stored.
    Rejected {
        /// Why.
        rejection: Rejection,
    },
}

/// Turns forwarded mail into captured items.
pub struct EmailCapture {
    addresses: ForwardingAddresses,
    directory: std::sync::Arc<dyn PersonDirectory>,
    authenticator: Authenticator,
    switchboard: Option<Switchboard>,
}

impl std::fmt::Debug for EmailCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailCapture")
            .field("addresses", &self.addresses)
            .field("authenticator", &self.authenticator)
            .finish_non_exhaustive()
    }
}

impl EmailCapture {
    /// A capture pipeline; events are returned, not published, until
    /// [`EmailCapture::publish_to`] is set.
    pub fn new(
        addresses: ForwardingAddresses,
        directory: std::sync::Arc<dyn PersonDirectory>,
        authenticator: Authenticator,
    ) -> Self {
        EmailCapture {
            addresses,
            directory,
            authenticator,
            switchboard: None,
        }
    }

    /// Publishes accepted items through `switchboard`.
    #[must_use]
    pub fn publish_to(mut self, switchboard: Switchboard) -> Self {
        self.switchboard = Some(switchboard);
        self
    }

    /// The forwarding addresses.
    pub fn addresses(&self) -> &ForwardingAddresses {
        &self.addresses
    }

    /// Processes one raw message. `envelope_recipients` are the SMTP `RCPT TO`
    /// addresses when known (else the message's `To` and `Cc` are used);
    /// `session` enables SPF. Errors are infrastructure failures (store,
    /// publish); every property of the message itself is an outcome.
    pub async fn process(
        &self,
        raw: &[u8],
        envelope_recipients: &[String],
        session: Option<&SmtpSession>,
    ) -> Result<CaptureOutcome> {
        let outcome = self.evaluate(raw, envelope_recipients, session).await?;
        if let (CaptureOutcome::Accepted { event }, Some(sb)) = (&outcome, &self.switchboard) {
            sb.publish(event.as_ref().clone()).await?;
        }
        Ok(outcome)
    }

    /// Like [`EmailCapture::process`] but never publishes: the caller (a
    /// source with its own [`crate::source::Emitter`]) publishes the event.
    pub async fn evaluate(
        &self,
        raw: &[u8],
        envelope_recipients: &[String],
        session: Option<&SmtpSession>,
    ) -> Result<CaptureOutcome> {
        Ok(match self.check(raw, envelope_recipients, session).await? {
            Err(rejection) => CaptureOutcome::Rejected { rejection },
            Ok(event) => CaptureOutcome::Accepted {
                event: Box::new(event),
            },
        })
    }

    async fn check(
        &self,
        raw: &[u8],
        envelope_recipients: &[String],
        session: Option<&SmtpSession>,
    ) -> Result<std::result::Result<Event, Rejection>> {
        let mail = match InboundEmail::parse(raw) {
            Ok(m) => m,
            Err(e) => {
                return Ok(Err(Rejection::Malformed {
                    detail: e.message().to_owned(),
                }));
            }
        };
        let candidates: Vec<String> = if envelope_recipients.is_empty() {
            mail.to
                .iter()
                .chain(&mail.cc)
                .map(|a| a.email.clone())
                .collect()
        } else {
            envelope_recipients.to_vec()
        };
        let mut rejection = Rejection::NotAddressed;
        let mut record = None;
        for c in &candidates {
            match self.addresses.resolve(c).await? {
                Ok(r) => {
                    record = Some((r, c.clone()));
                    break;
                }
                Err(AddressRejection::NotForwardingAddress) => {}
                Err(AddressRejection::UnknownAddress) => rejection = Rejection::UnknownAddress,
                Err(AddressRejection::RevokedAddress) => {
                    if rejection != Rejection::UnknownAddress {
                        rejection = Rejection::RevokedAddress;
                    }
                }
            }
        }
        let Some((record, address)) = record else {
            return Ok(Err(rejection));
        };
        let Some(person) = self
            .directory
            .person(&record.tenant, &record.person_id)
            .await?
        else {
            return Ok(Err(Rejection::UnknownPerson));
        };
        let Some(sender) = mail.from.clone() else {
            return Ok(Err(Rejection::Malformed {
                detail: "no From address".into(),
            }));
        };
        if !person.emails.contains(&sender.email) {
            return Ok(Err(Rejection::SenderNotLinked {
                sender: sender.email,
            }));
        }
        let domain = sender.email.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        let authentic: Authentic = match self.authenticator.verify(raw, domain, session).await {
            Ok(a) => a,
            Err(detail) => return Ok(Err(Rejection::NotAuthentic { detail })),
        };
        let mut participants = Vec::new();
        for p in mail.participants() {
            // Neither the sender nor any forwarding address is a participant.
            if p.email == address
                || p.email == sender.email
                || self.addresses.token_of(&p.email).is_some()
            {
                continue;
            }
            let matched = self.directory.by_email(&record.tenant, &p.email).await?;
            participants.push(json!({
                "email": p.email,
                "name": p.name,
                "user_id": matched.as_ref().map(|m| m.id.clone()),
                "matched": matched.is_some(),
            }));
        }
        let key = match &mail.message_id {
            Some(id) => id.clone(),
            None => {
                use sha2::Digest;
                hex::encode(sha2::Sha256::digest(raw))
            }
        };
        let event_id = format!("email:{}:{}:{key}", record.tenant, record.person_id);
        let data = json!({
            "status": "pending",
            "subject": mail.subject,
            "date": mail.date,
            "text": mail.text,
            "message_id": mail.message_id,
            "from": sender,
            "participants": participants,
            "attachments_ignored": mail.attachments_ignored,
            "authentication": authentic,
            "captured_at": chrono::Utc::now().to_rfc3339(),
        });
        let event = Event::builder(event_id, INSIGHT_EVENT_KIND)
            .source(SOURCE)
            .tenant(record.tenant.as_str())
            .subject(person.clone())
            .actor(person)
            .data(data)
            .build()?;
        Ok(Ok(event))
    }
}
