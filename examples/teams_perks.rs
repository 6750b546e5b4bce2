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

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use secrecy::SecretString;
use serde_json::{Value, json};
use switchboard::store::RouteRule;
use switchboard::teams::{
    TeamsConfig, TeamsCredentials, TeamsDestination, TeamsIdentity, TokenProvider,
};
use switchboard::{Connection, ConsoleDestination, Route, SqliteStore, Store, Switchboard, Target};

#[path = "common/perks.rs"]
mod perks;
use perks::non_empty;

const USAGE: &str =
    "usage: teams_perks --input FILE [--store sqlite://PATH] [--channel-conversation ID]";
const CATALOG_ROUTE: &str = "catalog";
const DESTINATION: &str = "teams";

pub use perks::BoxError;

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
    let input = perks::read_input(&args.input)?;
    let people = perks::People::new(&input.people);

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
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&db)?
            .with_keyring(perks::keyring("teams_perks", env("SWITCHBOARD_KEY"))?)?,
    );

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
    let mut run = perks::Run::new(&input.tenants);
    for t in &input.tenants {
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
    if app.is_some() {
        let platform = perks::Platform {
            destination: DESTINATION,
            name: "Teams",
            users: "Entra users",
            calls: "Graph calls",
        };
        run.sync(&sb, &people, &platform, fixed.is_some()).await?;
    }
    run.publish(&sb, &people, input.events).await?;
    run.finish(&sb).await
}
