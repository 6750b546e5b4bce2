//! What `examples/perks.rs` (Slack) and `examples/teams_perks.rs` (Teams) share: the input file, people per tenant, syncing them, publishing the events and the closing summary line.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use switchboard::secret::Keyring;
use switchboard::{Event, Person, Switchboard, TenantId};

/// Errors of these examples.
pub type BoxError = Box<dyn std::error::Error>;

/// The input file (`examples/data/perks.json`).
#[derive(Deserialize)]
pub struct Input {
    /// The customer organisations and their connections.
    #[serde(default)]
    pub tenants: Vec<InputTenant>,
    /// The host's people.
    #[serde(default)]
    pub people: Vec<InputPerson>,
    /// The events to publish.
    #[serde(default)]
    pub events: Vec<InputEvent>,
}

/// One tenant of the input: each example reads its own platform's fields.
#[derive(Deserialize)]
#[allow(dead_code)] // each example reads only its own platform's fields
pub struct InputTenant {
    /// The tenant id.
    pub id: TenantId,
    /// Slack: the workspace's bot token.
    #[serde(default)]
    pub slack_token: Option<String>,
    /// Slack: the catalog channel's name.
    #[serde(default)]
    pub channel: Option<String>,
    /// Teams: the customer's Entra tenant id.
    #[serde(default)]
    pub teams_tenant_id: Option<String>,
    /// Teams: the catalog channel's conversation id.
    #[serde(default)]
    pub channel_conversation: Option<String>,
}

/// One person of the input.
#[derive(Deserialize)]
pub struct InputPerson {
    id: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tenant: TenantId,
}

/// One event of the input.
#[derive(Deserialize)]
pub struct InputEvent {
    id: String,
    kind: String,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    tenant: TenantId,
}

/// Reads and parses the input file.
pub fn read_input(path: &Path) -> Result<Input, BoxError> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// `s` trimmed, if not blank.
pub fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

/// The keyring sealing secrets in the store: from `SWITCHBOARD_KEY` (base64
/// of 32 bytes) if set, else a new one for this run.
pub fn keyring(id: &str, key: Option<String>) -> Result<Keyring, BoxError> {
    Ok(match non_empty(key) {
        Some(key) => Keyring::from_base64(id, &secrecy::SecretString::from(key))?,
        None => Keyring::generate(id)?,
    })
}

/// The people of the input, per tenant: an event's subject is looked up in
/// its own tenant only.
pub struct People {
    by_tenant: BTreeMap<TenantId, Vec<Person>>,
}

impl People {
    /// Groups the input's people by tenant.
    pub fn new(people: &[InputPerson]) -> People {
        let mut by_tenant: BTreeMap<TenantId, Vec<Person>> = BTreeMap::new();
        for p in people {
            let mut person = Person::new(&p.id);
            if let Some(e) = &p.email {
                person = person.email(e);
            }
            if let Some(n) = &p.name {
                person = person.name(n);
            }
            by_tenant.entry(p.tenant.clone()).or_default().push(person);
        }
        People { by_tenant }
    }
}

/// What the closing line reports per tenant.
#[derive(Default)]
pub struct TenantSummary {
    delivered: u64,
    parked: u64,
    dead_letters: u64,
    unmatched: Vec<String>,
}

/// How one example's platform is named in what it prints.
pub struct Platform {
    /// The destination and resolver name (`slack`, `teams`).
    pub destination: &'static str,
    /// The platform (`Slack`, `Teams`).
    pub name: &'static str,
    /// Its directory's users (`Slack users`, `Entra users`).
    pub users: &'static str,
    /// Its API calls (`calls`, `Graph calls`).
    pub calls: &'static str,
}

/// One run's per-tenant figures and the unmatched emails, towards the
/// closing line.
pub struct Run {
    summaries: BTreeMap<TenantId, TenantSummary>,
    unmatched: Vec<String>,
    published: u64,
}

impl Run {
    /// A run reporting every tenant of the input, even one without events.
    pub fn new(tenants: &[InputTenant]) -> Run {
        Run {
            summaries: tenants
                .iter()
                .map(|t| (t.id.clone(), TenantSummary::default()))
                .collect(),
            unmatched: Vec::new(),
            published: 0,
        }
    }

    /// "Sync users": matches each tenant's people by email in its own
    /// directory; a tenant without a connection (the default tenant may use
    /// fixed credentials, `default_fixed`) is skipped, saying so.
    pub async fn sync(
        &mut self,
        sb: &Switchboard,
        people: &People,
        platform: &Platform,
        default_fixed: bool,
    ) -> Result<(), BoxError> {
        for (tenant, members) in &people.by_tenant {
            let connected = sb
                .store()
                .default_connection(tenant, platform.destination)
                .await?
                .is_some();
            if !(connected || (tenant.is_default() && default_fixed)) {
                eprintln!(
                    "tenant {tenant}: no {} connection; its people are not synced",
                    platform.name
                );
                continue;
            }
            let report = sb
                .sync_identities(tenant, platform.destination, members)
                .await?;
            eprintln!(
                "tenant {tenant}: synced {} people against {} {} in {} {}: {} matched, {} unmatched, {} ambiguous",
                members.len(),
                report.directory_size,
                platform.users,
                report.api_calls,
                platform.calls,
                report.matched.len(),
                report.unmatched.len(),
                report.ambiguous.len()
            );
            let missing: Vec<String> = report
                .unmatched
                .iter()
                .flat_map(|u| u.identifiers.iter().cloned())
                .collect();
            self.unmatched.extend(missing.iter().cloned());
            self.summaries.entry(tenant.clone()).or_default().unmatched = missing;
        }
        Ok(())
    }

    /// Publishes the input's events, each subject resolved in its event's tenant.
    pub async fn publish(
        &mut self,
        sb: &Switchboard,
        people: &People,
        events: Vec<InputEvent>,
    ) -> Result<(), BoxError> {
        let by_id: HashMap<(&TenantId, &str), &Person> = people
            .by_tenant
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| ((t, p.id.as_str()), p)))
            .collect();
        for e in events {
            let mut event = Event::builder(e.id, e.kind)
                .data(e.data)
                .tenant(e.tenant.as_str());
            if let Some(subject) = e.subject {
                let person = by_id
                    .get(&(&e.tenant, subject.as_str()))
                    .map(|p| (*p).clone())
                    .unwrap_or_else(|| Person::new(subject));
                event = event.subject(person);
            }
            if !sb.publish(event.build()?).await?.duplicate {
                self.published += 1;
            }
            self.summaries.entry(e.tenant).or_default();
        }
        Ok(())
    }

    /// Drains the deliveries (up to two minutes), prints what was parked or
    /// dead-lettered and returns the closing line: `published`, `delivered`,
    /// `dead_letters`, `parked`, `unmatched` and `by_tenant`.
    pub async fn finish(mut self, sb: &Switchboard) -> Result<Value, BoxError> {
        let summary = sb.drain(Duration::from_secs(120)).await?;
        let status = sb.status().await?;
        let dead_letters: u64 = status.iter().map(|s| s.dead_letters).sum();
        let parked: u64 = status.iter().map(|s| s.parked).sum();
        for s in &status {
            let t = self.summaries.entry(s.tenant.clone()).or_default();
            t.delivered += s.sent;
            t.parked += s.parked;
            t.dead_letters += s.dead_letters;
            if let (false, Some(reason)) = (s.connected, &s.disconnected_reason) {
                eprintln!("tenant {}: {} parked ({reason})", s.tenant, s.parked);
            }
        }
        for d in sb.dead_letters(100).await? {
            eprintln!(
                "dead letter {} ({}, tenant {}): {}",
                d.id, d.event_kind, d.tenant, d.error
            );
        }
        let by_tenant: serde_json::Map<String, Value> = self
            .summaries
            .into_iter()
            .map(|(tenant, s)| {
                (
                    tenant.to_string(),
                    json!({
                        "delivered": s.delivered,
                        "parked": s.parked,
                        "dead_letters": s.dead_letters,
                        "unmatched": s.unmatched,
                    }),
                )
            })
            .collect();
        Ok(json!({
            "published": self.published,
            "delivered": summary.delivered,
            "dead_letters": dead_letters,
            "parked": parked,
            "unmatched": self.unmatched,
            "by_tenant": by_tenant,
        }))
    }
}
