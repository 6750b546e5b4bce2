//! HR perks → Slack, for one or many customer organisations (tenants): syncs
//! people by email in each tenant's workspace, then sends wallet and perk
//! events to each person's DM and new catalog perks to the tenant's channel.
//!
//! ```text
//! cargo run --example perks --features slack -- [--input FILE] [--channel NAME] [--store sqlite://PATH|postgres://…]
//! ```
//!
//! * `--input` (default `examples/data/perks.json`):
//!   `{"people":[{"id","email","name","tenant"}], "events":[{"id","kind","subject","data","tenant"}],
//!   "tenants":[{"id","slack_token","channel"}]}`; `tenant` and `tenants` are
//!   optional: without them everything belongs to the default tenant.
//! * `--channel` (default `general`): where `catalog.perk_added` goes, unless a
//!   tenant names its own `channel` (a per-tenant route rule).
//! * `--store` (default: a temporary file): the SQLite outbox, or a PostgreSQL
//!   database shared by several replicas (`postgres://…`, needs `--features postgres`;
//!   limits are then paced across replicas).
//! * `SLACK_BOT_TOKEN`: the default tenant's bot token. With neither it nor any
//!   tenant's `slack_token`, messages are printed instead.
//! * `SLACK_API_URL`: overrides `https://slack.com/api` (proxies, a local fake).
//! * `SWITCHBOARD_KEY`: base64 of the 32-byte key sealing tokens in the store
//!   (default: a fresh key per run, fine for a temporary store).
//!
//! The last line of output is one JSON object: `published`, `delivered`,
//! `dead_letters`, `parked`, `unmatched` (the emails not found in Slack) and
//! `by_tenant` (`{"acme": {"delivered", "parked", "dead_letters", "unmatched"}}`).
//! A tenant listed without a `slack_token` has its deliveries parked as "not
//! connected" until it connects.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use switchboard::secret::Keyring;
use switchboard::slack::{
    BotToken, SlackConfig, SlackDestination, SlackIdentity, connection_from_token,
};
use switchboard::store::RouteRule;
use switchboard::{
    ConsoleDestination, Event, MessageFormat, Person, Route, SqliteStore, Store, Switchboard,
    Target, TenantId,
};

const USAGE: &str =
    "usage: perks [--input FILE] [--channel NAME] [--store sqlite://PATH|postgres://URL]";
const CATALOG_ROUTE: &str = "catalog";

struct Args {
    input: PathBuf,
    channel: String,
    store: Option<PathBuf>,
    postgres: Option<String>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        input: PathBuf::from("examples/data/perks.json"),
        channel: "general".to_owned(),
        store: None,
        postgres: None,
    };
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--input" => parsed.input = PathBuf::from(value()?),
            "--channel" => parsed.channel = value()?.trim_start_matches('#').to_owned(),
            "--store" => {
                let v = value()?;
                if v.starts_with("postgres://") || v.starts_with("postgresql://") {
                    parsed.postgres = Some(v);
                    continue;
                }
                let path = v
                    .strip_prefix("sqlite://")
                    .ok_or_else(|| format!("--store must look like sqlite://PATH, got {v:?}"))?;
                parsed.store = Some(PathBuf::from(path));
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(parsed)
}

#[derive(Deserialize)]
struct Input {
    #[serde(default)]
    tenants: Vec<InputTenant>,
    #[serde(default)]
    people: Vec<InputPerson>,
    #[serde(default)]
    events: Vec<InputEvent>,
}

#[derive(Deserialize)]
struct InputTenant {
    id: TenantId,
    #[serde(default)]
    slack_token: Option<String>,
    #[serde(default)]
    channel: Option<String>,
}

#[derive(Deserialize)]
struct InputPerson {
    id: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tenant: TenantId,
}

#[derive(Deserialize)]
struct InputEvent {
    id: String,
    kind: String,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    data: serde_json::Value,
    #[serde(default)]
    tenant: TenantId,
}

#[derive(Default)]
struct TenantSummary {
    delivered: u64,
    parked: u64,
    dead_letters: u64,
    unmatched: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("perks: {e}");
            ExitCode::FAILURE
        }
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

fn keyring() -> Result<Keyring, Box<dyn std::error::Error>> {
    Ok(match non_empty(std::env::var("SWITCHBOARD_KEY").ok()) {
        Some(key) => Keyring::from_base64("perks", &SecretString::from(key))?,
        None => Keyring::generate("perks")?,
    })
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args(std::env::args().skip(1))?;
    let input: Input = serde_json::from_slice(
        &std::fs::read(&args.input)
            .map_err(|e| format!("cannot read {}: {e}", args.input.display()))?,
    )?;

    // People per tenant; a subject is looked up in its event's tenant only.
    let mut people: BTreeMap<TenantId, Vec<Person>> = BTreeMap::new();
    for p in &input.people {
        let mut person = Person::new(&p.id);
        if let Some(e) = &p.email {
            person = person.email(e);
        }
        if let Some(n) = &p.name {
            person = person.name(n);
        }
        people.entry(p.tenant.clone()).or_default().push(person);
    }
    let by_id: HashMap<(&TenantId, &str), &Person> = people
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| ((t, p.id.as_str()), p)))
        .collect();

    // Keep the temporary directory alive until the end.
    let mut _temp = None;
    let db = match args.store {
        Some(path) => path,
        None => {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("perks.db");
            _temp = Some(dir);
            path
        }
    };
    type Pacing = Option<Arc<dyn switchboard::engine::SharedPacing>>;
    let (store, shared_pacing): (Arc<dyn Store>, Pacing) = match &args.postgres {
        #[cfg(feature = "postgres")]
        Some(url) => {
            let pg = switchboard::PostgresStore::connect(url)
                .await?
                .with_keyring(keyring()?);
            let pacer: Arc<dyn switchboard::engine::SharedPacing> = Arc::new(pg.pacer());
            (Arc::new(pg), Some(pacer))
        }
        #[cfg(not(feature = "postgres"))]
        Some(_) => return Err("--store postgres://… needs --features postgres".into()),
        None => (
            Arc::new(SqliteStore::open(&db)?.with_keyring(keyring()?)?),
            None,
        ),
    };

    let default_token = non_empty(std::env::var("SLACK_BOT_TOKEN").ok());
    let uses_slack = default_token.is_some()
        || input
            .tenants
            .iter()
            .any(|t| non_empty(t.slack_token.clone()).is_some());
    let mut config = SlackConfig::new();
    if let Ok(url) = std::env::var("SLACK_API_URL") {
        config = config.base_url(&url)?;
    }
    let mut builder = Switchboard::builder().store_arc(store.clone());
    if let Some(pacer) = shared_pacing {
        builder = builder.shared_pacing(pacer);
    }
    if uses_slack {
        let slack = match &default_token {
            Some(t) => {
                SlackDestination::new(config.clone(), BotToken::new(SecretString::from(t.clone())))?
            }
            None => SlackDestination::for_connections(config.clone())?,
        };
        let identity = match &default_token {
            Some(t) => SlackIdentity::with_client(
                &config,
                slack.client().clone(),
                BotToken::new(SecretString::from(t.clone())),
                store.clone(),
            ),
            None => SlackIdentity::for_connections_with_client(
                &config,
                slack.client().clone(),
                store.clone(),
            ),
        };
        builder = builder.destination(slack).resolver("slack", identity);
    } else {
        eprintln!(
            "SLACK_BOT_TOKEN is not set and no tenant has a slack_token: printing what would be posted instead"
        );
        builder = builder
            .destination(ConsoleDestination::new("slack").with_format(MessageFormat::SlackMrkdwn));
    }

    let sb = builder
        .route(
            Route::on("wallet.funded")
                .to("slack", Target::SubjectDm)
                .template(":moneybag: Your perks wallet was funded with *{{ data.amount }} {{ data.currency }}*."),
        )
        .route(
            Route::on("perk.redeemed")
                .to("slack", Target::SubjectDm)
                .template(":tada: You redeemed *{{ data.perk }}*. Enjoy!"),
        )
        .route(
            Route::on("wallet.low_balance")
                .to("slack", Target::SubjectDm)
                .template(":warning: Your wallet balance is low: *{{ data.balance }} {{ data.currency }}* left."),
        )
        .route(
            Route::on("catalog.perk_added")
                .named(CATALOG_ROUTE)
                .to("slack", Target::channel(&args.channel))
                .template(":sparkles: New in the perks catalog: *{{ data.title }}*"),
        )
        .build()?;

    // Each tenant: its Slack connection (the workspace comes from auth.test)
    // and its catalog channel as a route rule.
    let mut summaries: BTreeMap<TenantId, TenantSummary> = BTreeMap::new();
    for t in &input.tenants {
        summaries.entry(t.id.clone()).or_default();
        if let Some(ch) = non_empty(t.channel.clone()) {
            sb.set_rule(RouteRule {
                tenant: t.id.clone(),
                route: CATALOG_ROUTE.to_owned(),
                enabled: None,
                target: Some(Target::channel(ch.trim_start_matches('#'))),
                updated_at: chrono::Utc::now(),
            })
            .await?;
        }
        if let (true, Some(token)) = (uses_slack, non_empty(t.slack_token.clone())) {
            let client = switchboard::slack::SlackClient::new(&config)?;
            let connection =
                connection_from_token(&client, t.id.clone(), SecretString::from(token)).await?;
            let stored = sb.connect(connection).await?;
            eprintln!(
                "tenant {}: connected to Slack workspace {}",
                t.id, stored.key.account
            );
        }
    }

    // "Sync users" in each tenant's own workspace.
    let mut unmatched: Vec<String> = Vec::new();
    if uses_slack {
        for (tenant, members) in &people {
            let connected = sb
                .store()
                .default_connection(tenant, "slack")
                .await?
                .is_some();
            if !(connected || (tenant.is_default() && default_token.is_some())) {
                eprintln!("tenant {tenant}: no Slack connection; its people are not synced");
                continue;
            }
            let report = sb.sync_identities(tenant, "slack", members).await?;
            eprintln!(
                "tenant {tenant}: synced {} people against {} Slack users in {} calls: {} matched, {} unmatched, {} ambiguous",
                members.len(),
                report.directory_size,
                report.api_calls,
                report.matched.len(),
                report.unmatched.len(),
                report.ambiguous.len()
            );
            let missing: Vec<String> = report
                .unmatched
                .iter()
                .flat_map(|u| u.identifiers.iter().cloned())
                .collect();
            unmatched.extend(missing.iter().cloned());
            summaries.entry(tenant.clone()).or_default().unmatched = missing;
        }
    }

    let mut published = 0u64;
    for e in input.events {
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
            published += 1;
        }
        summaries.entry(e.tenant).or_default();
    }

    let summary = sb.drain(Duration::from_secs(120)).await?;
    let status = sb.status().await?;
    let dead_letters: u64 = status.iter().map(|s| s.dead_letters).sum();
    let parked: u64 = status.iter().map(|s| s.parked).sum();
    for s in &status {
        let t = summaries.entry(s.tenant.clone()).or_default();
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
    let by_tenant: serde_json::Map<String, serde_json::Value> = summaries
        .into_iter()
        .map(|(tenant, s)| {
            (
                tenant.to_string(),
                serde_json::json!({
                    "delivered": s.delivered,
                    "parked": s.parked,
                    "dead_letters": s.dead_letters,
                    "unmatched": s.unmatched,
                }),
            )
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "published": published,
            "delivered": summary.delivered,
            "dead_letters": dead_letters,
            "parked": parked,
            "unmatched": unmatched,
            "by_tenant": by_tenant,
        })
    );
    Ok(())
}
