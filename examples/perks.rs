//! HR perks → Slack: syncs people by email, then sends wallet and perk events to
//! each person's DM and new catalog perks to a channel.
//!
//! ```text
//! cargo run --example perks --features slack -- [--input FILE] [--channel NAME] [--store sqlite://PATH]
//! ```
//!
//! * `--input` (default `examples/data/perks.json`):
//!   `{"people":[{"id","email","name"}], "events":[{"id","kind","subject","data"}]}`
//! * `--channel` (default `general`): where `catalog.perk_added` goes.
//! * `--store` (default: a temporary file): the SQLite outbox.
//! * `SLACK_BOT_TOKEN`: the bot token; unset, messages are printed instead.
//! * `SLACK_API_URL`: overrides `https://slack.com/api` (proxies, a local fake).
//!
//! The last line of output is one JSON object: `published`, `delivered`,
//! `dead_letters`, `parked` and `unmatched` (the emails not found in Slack).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use switchboard::slack::{BotToken, SlackConfig, SlackDestination, SlackIdentity};
use switchboard::{
    ConsoleDestination, Event, IdentityResolver, MessageFormat, Person, Route, SqliteStore, Store,
    Switchboard, Target,
};

const USAGE: &str = "usage: perks [--input FILE] [--channel NAME] [--store sqlite://PATH]";

struct Args {
    input: PathBuf,
    channel: String,
    store: Option<PathBuf>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        input: PathBuf::from("examples/data/perks.json"),
        channel: "general".to_owned(),
        store: None,
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
    people: Vec<InputPerson>,
    #[serde(default)]
    events: Vec<InputEvent>,
}

#[derive(Deserialize)]
struct InputPerson {
    id: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct InputEvent {
    id: String,
    kind: String,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    data: serde_json::Value,
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
    let input: Input = serde_json::from_slice(
        &std::fs::read(&args.input)
            .map_err(|e| format!("cannot read {}: {e}", args.input.display()))?,
    )?;

    let people: Vec<Person> = input
        .people
        .iter()
        .map(|p| {
            let mut person = Person::new(&p.id);
            if let Some(e) = &p.email {
                person = person.email(e);
            }
            if let Some(n) = &p.name {
                person = person.name(n);
            }
            person
        })
        .collect();
    let by_id: HashMap<&str, &Person> = people.iter().map(|p| (p.id.as_str(), p)).collect();

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
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db)?);

    let mut builder = Switchboard::builder().store_arc(store.clone());
    let mut unmatched: Vec<String> = Vec::new();
    match std::env::var("SLACK_BOT_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        Some(token) => {
            let mut config = SlackConfig::new();
            if let Ok(url) = std::env::var("SLACK_API_URL") {
                config = config.base_url(&url)?;
            }
            let token = BotToken::new(SecretString::from(token));
            let slack = SlackDestination::new(config.clone(), token.clone())?;
            let identity =
                SlackIdentity::with_client(&config, slack.client().clone(), token, store.clone());
            let report = identity.sync(&people).await?;
            eprintln!(
                "synced {} people against {} Slack users in {} calls: {} matched, {} unmatched, {} ambiguous",
                people.len(),
                report.directory_size,
                report.api_calls,
                report.matched.len(),
                report.unmatched.len(),
                report.ambiguous.len()
            );
            unmatched = report
                .unmatched
                .iter()
                .flat_map(|u| u.identifiers.iter().cloned())
                .collect();
            builder = builder.destination(slack).resolver("slack", identity);
        }
        None => {
            eprintln!("SLACK_BOT_TOKEN is not set: printing what would be posted instead");
            builder = builder.destination(
                ConsoleDestination::new("slack").with_format(MessageFormat::SlackMrkdwn),
            );
        }
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
                .to("slack", Target::channel(&args.channel))
                .template(":sparkles: New in the perks catalog: *{{ data.title }}*"),
        )
        .build()?;

    let mut published = 0u64;
    for e in input.events {
        let mut event = Event::builder(e.id, e.kind).data(e.data);
        if let Some(subject) = e.subject {
            let person = by_id
                .get(subject.as_str())
                .map(|p| (*p).clone())
                .unwrap_or_else(|| Person::new(subject));
            event = event.subject(person);
        }
        if !sb.publish(event.build()?).await?.duplicate {
            published += 1;
        }
    }

    let summary = sb.drain(Duration::from_secs(120)).await?;
    let status = sb.status().await?;
    let dead_letters: u64 = status.iter().map(|s| s.dead_letters).sum();
    let parked: u64 = status.iter().map(|s| s.parked).sum();
    for d in sb.dead_letters(100).await? {
        eprintln!("dead letter {} ({}): {}", d.id, d.event_kind, d.error);
    }
    println!(
        "{}",
        serde_json::json!({
            "published": published,
            "delivered": summary.delivered,
            "dead_letters": dead_letters,
            "parked": parked,
            "unmatched": unmatched,
        })
    );
    Ok(())
}
