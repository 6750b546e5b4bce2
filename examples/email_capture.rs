//! Capture forwarded mail: issues a personal forwarding address for a person, reads `.eml` files from a folder and prints one JSON line per message (accepted, or the rejection reason) and a summary line.
//!
//! ```sh
//! cargo run --example email_capture --features email                 # the shipped samples
//! cargo run --example email_capture --features email -- path/to/mail # your own .eml files
//! ```
//!
//! Each file is handed over as the inbound MX would: addressed (SMTP `RCPT TO`)
//! to the person's freshly issued address. Authenticity is checked offline
//! against the TXT records in `dns.txt` beside the mail (zone-file lines
//! `name IN TXT "..."`), and `Authentication-Results` are trusted only from the
//! receiver `mx.in.switchboard.example`. Without a `dns.txt` the system resolver
//! is used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};
use switchboard::email::{
    Authenticator, CaptureOutcome, DnsRecords, EmailCapture, ForwardingAddresses, InboundEmail,
    MemoryAddressRegistry, MemoryDirectory,
};
use switchboard::{Person, TenantId};

const INBOUND_DOMAIN: &str = "in.switchboard.example";
const RECEIVER: &str = "mx.in.switchboard.example";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let folder = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/mail"));

    // The tenant's people: Ada forwards; Bob and Grace are colleagues.
    let acme = TenantId::new("acme")?;
    let people = MemoryDirectory::new();
    people.add(
        &acme,
        Person::new("u-ada")
            .name("Ada Lovelace")
            .email("ada@acme.example"),
    );
    people.add(
        &acme,
        Person::new("u-bob")
            .name("Bob Kahn")
            .email("bob@acme.example"),
    );
    people.add(
        &acme,
        Person::new("u-grace")
            .name("Grace Hopper")
            .email("grace@acme.example"),
    );

    let addresses =
        ForwardingAddresses::new(INBOUND_DOMAIN, Arc::new(MemoryAddressRegistry::new()))?;
    let address = addresses.address_for(&acme, "u-ada").await?;
    eprintln!("Ada's forwarding address: {address}");

    let dns = folder.join("dns.txt");
    let authenticator = if dns.exists() {
        Authenticator::offline(read_zone(&dns)?)?
    } else {
        Authenticator::system_dns(DnsRecords::new())?
    }
    .trust_receiver(RECEIVER);
    let capture = EmailCapture::new(addresses, Arc::new(people), authenticator);

    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .map_err(|e| format!("cannot read {}: {e}", folder.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("eml")))
        .collect();
    files.sort();

    let (mut accepted, mut rejected) = (0usize, 0usize);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for path in &files {
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let raw = std::fs::read(path)?;
        let line = match capture
            .process(&raw, std::slice::from_ref(&address), None)
            .await?
        {
            CaptureOutcome::Accepted { event } => {
                accepted += 1;
                Line {
                    file,
                    outcome: "accepted",
                    reason: None,
                    message: None,
                    subject: event.data["subject"].as_str().map(str::to_owned),
                    participants: Some(event.data["participants"].clone()),
                    authentication: Some(event.data["authentication"].clone()),
                    event_id: Some(event.id.clone()),
                }
            }
            CaptureOutcome::Rejected { rejection } => {
                rejected += 1;
                let reason = serde_json::to_value(&rejection)?["reason"]
                    .as_str()
                    .unwrap_or("rejected")
                    .to_owned();
                *reasons.entry(reason.clone()).or_default() += 1;
                Line {
                    file,
                    outcome: "rejected",
                    reason: Some(reason),
                    message: Some(rejection.to_string()),
                    subject: InboundEmail::parse(&raw).ok().and_then(|m| m.subject),
                    participants: None,
                    authentication: None,
                    event_id: None,
                }
            }
        };
        let line = serde_json::to_string(&line)?;
        println!("{line}");
    }
    println!(
        "{}",
        json!({ "summary": { "messages": files.len(), "accepted": accepted, "rejected": rejected, "reasons": reasons } })
    );
    Ok(())
}

/// One output line, fields in this order.
#[derive(Serialize)]
struct Line {
    file: Option<String>,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    participants: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authentication: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
}

/// Reads zone-file TXT lines (`name [ttl] [IN] TXT "part" "part" ...`); `;`
/// and `#` start comments.
fn read_zone(path: &Path) -> Result<DnsRecords, Box<dyn std::error::Error>> {
    let mut records = DnsRecords::new();
    for (n, line) in std::fs::read_to_string(path)?.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        let (head, quoted) = line
            .split_once('"')
            .ok_or_else(|| format!("{}:{}: no quoted TXT value", path.display(), n + 1))?;
        let mut words = head.split_whitespace();
        let name = words.next().unwrap_or_default();
        if !words.any(|w| w.eq_ignore_ascii_case("TXT")) {
            return Err(format!("{}:{}: not a TXT record", path.display(), n + 1).into());
        }
        // Every other piece between quotes is a string; join them.
        let value: String = format!("\"{quoted}")
            .split('"')
            .skip(1)
            .step_by(2)
            .collect();
        records = records.txt(name, &value)?;
    }
    Ok(records)
}
