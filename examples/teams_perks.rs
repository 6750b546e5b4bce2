//! HR perks → Microsoft Teams, for one or many customer organisations
//! (tenants): syncs people by email in each tenant's Entra directory (Graph),
//! then sends wallet and perk events to each person's Teams DM and new catalog
//! perks to a Teams channel.
//!
//! ```text
//! cargo run --example teams_perks --features teams -- --input FILE [--store sqlite://PATH] [--channel-conversation ID]
//! ```
//!
//! * `--input`: the input file of `examples/perks.rs`:
//!   `{"people":[{"id","email","name","tenant"}], "events":[{"id","kind","subject","data","tenant"}],
//!   "tenants":[{"id","teams_tenant_id","channel_conversation"}]}`; `tenant` and
//!   `tenants` are optional: without them everything belongs to the default
//!   tenant. A tenant's `teams_tenant_id` is its customer's Entra tenant id (its
//!   Teams connection); its `channel_conversation` overrides where its catalog
//!   posts go (a per-tenant route rule). Other fields (`slack_token`, `channel`)
//!   are ignored.
//! * `--channel-conversation` (default: the conversation named `General` the bot
//!   has learned): the Teams channel conversation id (`19:…@thread.tacv2`)
//!   `catalog.perk_added` goes to.
//! * `--store` (default: a temporary file): the SQLite outbox.
//! * `TEAMS_APP_ID`, `TEAMS_APP_PASSWORD`: the bot's app id and client secret.
//!   With `TEAMS_TENANT_ID` (the Entra tenant the single-tenant app is
//!   registered in) they serve the default tenant. Without app id and password,
//!   messages are printed instead.
//! * `TEAMS_SERVICE_URL`: the Bot Framework service URL the conversations live
//!   on (default `https://smba.trafficmanager.net/teams`).
//! * `TEAMS_LOGIN_URL`: the identity platform host (default
//!   `https://login.microsoftonline.com`; tokens at `{login}/{tenant}/oauth2/v2.0/token`).
//! * `TEAMS_GRAPH_URL`: the Graph host (default `https://graph.microsoft.com`;
//!   users at `{graph}/v1.0/users`).
//! * `SWITCHBOARD_KEY`: base64 of the 32-byte key sealing secrets in the store
//!   (default: a fresh key per run, fine for a temporary store).
//!
//! The last line of output is one JSON object, as in `examples/perks.rs`:
//! `published`, `delivered`, `dead_letters`, `parked`, `unmatched` (the emails
//! not found in the directory) and `by_tenant`
//! (`{"acme": {"delivered", "parked", "dead_letters", "unmatched"}}`). A tenant
//! listed without a `teams_tenant_id` has its deliveries parked as "not
//! connected" until it connects.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard::secret::Keyring;
use switchboard::store::RouteRule;
use switchboard::teams::{
    TeamsConfig, TeamsCredentials, TeamsDestination, TeamsIdentity, TokenProvider,
};
use switchboard::{
    Connection, ConsoleDestination, Event, Person, Route, SqliteStore, Store, Switchboard, Target,
    TenantId,
};

const USAGE: &str =
    "usage: teams_perks --input FILE [--store sqlite://PATH] [--channel-conversation ID]";
const CATALOG_ROUTE: &str = "catalog";
const DESTINATION: &str = "teams";

/// Errors of this example.
pub type BoxError = Box<dyn std::error::Error>;

struct Args {
    input: PathBuf,
    channel_conversation: Option<String>,
    store: Option<PathBuf>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut input = None;
    let mut parsed = Args {
        input: PathBuf::new(),
        channel_conversation: None,
        store: None,
    };
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--input" => input = Some(PathBuf::from(value()?)),
            "--channel-conversation" => {
                let v = value()?.trim().to_owned();
                if v.is_empty() {
                    return Err(format!("--channel-conversation needs an id\n{USAGE}"));
                }
                parsed.channel_conversation = Some(v);
            }
            "--store" => {
                let v = value()?;
                let path = v
                    .strip_prefix("sqlite://")
                    .ok_or_else(|| format!("--store must look like sqlite://PATH, got {v:?}"))?;
                parsed.store = Some(PathBuf::from(path));
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    parsed.input = input.ok_or_else(|| format!("--input is required\n{USAGE}"))?;
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
    teams_tenant_id: Option<String>,
    #[serde(default)]
    channel_conversation: Option<String>,
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
    data: Value,
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

#[allow(dead_code)] // unused where a test includes this file as a module
#[tokio::main]
async fn main() -> ExitCode {
    let env = |name: &str| std::env::var(name).ok();
    match run(std::env::args().skip(1), &env).await {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("teams_perks: {e}");
            ExitCode::FAILURE
        }
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

fn keyring(env: &dyn Fn(&str) -> Option<String>) -> Result<Keyring, BoxError> {
    Ok(match non_empty(env("SWITCHBOARD_KEY")) {
        Some(key) => Keyring::from_base64("teams_perks", &SecretString::from(key))?,
        None => Keyring::generate("teams_perks")?,
    })
}

/// The Teams configuration from the `TEAMS_*_URL` overrides.
fn config(env: &dyn Fn(&str) -> Option<String>) -> Result<TeamsConfig, BoxError> {
    let mut config = TeamsConfig::new().name(DESTINATION);
    if let Some(url) = non_empty(env("TEAMS_SERVICE_URL")) {
        config = config.default_service_url(&url)?;
    }
    if let Some(url) = non_empty(env("TEAMS_LOGIN_URL")) {
        config = config.login_url(&url)?;
    }
    if let Some(url) = non_empty(env("TEAMS_GRAPH_URL")) {
        config = config.graph_url(&url)?;
    }
    Ok(config)
}

/// Runs the example with `args` (without the program name) and environment
/// lookups through `env`; returns the closing summary line.
pub async fn run(
    args: impl Iterator<Item = String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Value, BoxError> {
    let args = parse_args(args)?;
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
            let path = dir.path().join("teams_perks.db");
            _temp = Some(dir);
            path
        }
    };
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db)?.with_keyring(keyring(env)?)?);

    let app_id = non_empty(env("TEAMS_APP_ID"));
    let password = non_empty(env("TEAMS_APP_PASSWORD"));
    let service_url = non_empty(env("TEAMS_SERVICE_URL"));
    let config = config(env)?;
    let app = app_id.zip(password);
    // The default tenant's fixed credentials (single-tenant hosts).
    let fixed = match (&app, non_empty(env("TEAMS_TENANT_ID"))) {
        (Some((id, secret)), Some(tenant)) => Some(TeamsCredentials::new(
            id,
            &tenant,
            SecretString::from(secret.clone()),
        )?),
        _ => None,
    };

    let mut builder = Switchboard::builder().store_arc(store.clone());
    if app.is_some() {
        let tokens = Arc::new(TokenProvider::new(&config)?);
        let mut teams = TeamsDestination::new(config.clone())?.with_token_provider(tokens.clone());
        let mut identity = TeamsIdentity::new(&config, tokens, store.clone())?;
        if let Some(credentials) = &fixed {
            teams = teams.with_fixed_credentials(credentials.clone(), service_url.clone());
            identity = identity.with_fixed_credentials(credentials.clone());
        }
        builder = builder.destination(teams).resolver(DESTINATION, identity);
    } else {
        eprintln!(
            "TEAMS_APP_ID / TEAMS_APP_PASSWORD are not set: printing what would be posted instead"
        );
        builder = builder.destination(ConsoleDestination::new(DESTINATION));
    }

    let catalog_target = match &args.channel_conversation {
        Some(id) => Target::ChannelId { id: id.clone() },
        None => Target::channel("General"),
    };
    let sb = builder
        .route(
            Route::on("wallet.funded")
                .to(DESTINATION, Target::SubjectDm)
                .template(
                    "Your perks wallet was funded with {{ data.amount }} {{ data.currency }}.",
                ),
        )
        .route(
            Route::on("perk.redeemed")
                .to(DESTINATION, Target::SubjectDm)
                .template("You redeemed {{ data.perk }}. Enjoy!"),
        )
        .route(
            Route::on("wallet.low_balance")
                .to(DESTINATION, Target::SubjectDm)
                .template(
                    "Your wallet balance is low: {{ data.balance }} {{ data.currency }} left.",
                ),
        )
        .route(
            Route::on("catalog.perk_added")
                .named(CATALOG_ROUTE)
                .to(DESTINATION, catalog_target)
                .template("New in the perks catalog: {{ data.title }}"),
        )
        .build()?;

    // Each tenant: its Teams connection (the customer's Entra tenant, the app's
    // credentials) and its catalog conversation as a route rule.
    let mut summaries: BTreeMap<TenantId, TenantSummary> = BTreeMap::new();
    for t in &input.tenants {
        summaries.entry(t.id.clone()).or_default();
        if let Some(id) = non_empty(t.channel_conversation.clone()) {
            sb.set_rule(RouteRule {
                tenant: t.id.clone(),
                route: CATALOG_ROUTE.to_owned(),
                enabled: None,
                target: Some(Target::ChannelId { id }),
                updated_at: chrono::Utc::now(),
            })
            .await?;
        }
        if let (Some((app_id, secret)), Some(entra)) = (&app, non_empty(t.teams_tenant_id.clone()))
        {
            let mut data = json!({ "app_id": app_id });
            if let Some(url) = &service_url {
                data["service_url"] = json!(url);
            }
            let connection = Connection::builder(t.id.clone(), "teams", &entra)
                .secret("client_secret", SecretString::from(secret.clone()))
                .data(data)
                .build()?;
            let stored = sb.connect(connection).await?;
            eprintln!(
                "tenant {}: connected to Entra tenant {}",
                t.id, stored.key.account
            );
        }
    }

    // "Sync users" in each tenant's own directory.
    let mut unmatched: Vec<String> = Vec::new();
    if app.is_some() {
        for (tenant, members) in &people {
            let connected = sb
                .store()
                .default_connection(tenant, "teams")
                .await?
                .is_some();
            if !(connected || (tenant.is_default() && fixed.is_some())) {
                eprintln!("tenant {tenant}: no Teams connection; its people are not synced");
                continue;
            }
            let report = sb.sync_identities(tenant, DESTINATION, members).await?;
            eprintln!(
                "tenant {tenant}: synced {} people against {} Entra users in {} Graph calls: {} matched, {} unmatched, {} ambiguous",
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
    let by_tenant: serde_json::Map<String, Value> = summaries
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
        "published": published,
        "delivered": summary.delivered,
        "dead_letters": dead_letters,
        "parked": parked,
        "unmatched": unmatched,
        "by_tenant": by_tenant,
    }))
}
