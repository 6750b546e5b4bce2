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

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use secrecy::SecretString;
use switchboard::slack::{
    BotToken, SlackConfig, SlackDestination, SlackIdentity, connection_from_token,
};
use switchboard::store::RouteRule;
use switchboard::{
    ConsoleDestination, MessageFormat, Route, SqliteStore, Store, Switchboard, Target,
};

#[path = "common/perks.rs"]
mod perks;
use perks::non_empty;

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

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args(std::env::args().skip(1))?;
    let input = perks::read_input(&args.input)?;
    let people = perks::People::new(&input.people);

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
                .with_keyring(perks::keyring(
                    "perks",
                    std::env::var("SWITCHBOARD_KEY").ok(),
                )?);
            let pacer: Arc<dyn switchboard::engine::SharedPacing> = Arc::new(pg.pacer());
            (Arc::new(pg), Some(pacer))
        }
        #[cfg(not(feature = "postgres"))]
        Some(_) => return Err("--store postgres://… needs --features postgres".into()),
        None => (
            Arc::new(SqliteStore::open(&db)?.with_keyring(perks::keyring(
                "perks",
                std::env::var("SWITCHBOARD_KEY").ok(),
            )?)?),
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
    let mut run = perks::Run::new(&input.tenants);
    for t in &input.tenants {
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
    if uses_slack {
        let platform = perks::Platform {
            destination: "slack",
            name: "Slack",
            users: "Slack users",
            calls: "calls",
        };
        run.sync(&sb, &people, &platform, default_token.is_some())
            .await?;
    }
    run.publish(&sb, &people, input.events).await?;
    println!("{}", run.finish(&sb).await?);
    Ok(())
}
