//! Telephony → Zendesk: replays a call script in real time; every step is a durable delivery that looks callers up, opens tickets, attaches recordings and backfills numbers.
//!
//! ```text
//! cargo run --example call_to_ticket --features zendesk,sqlite -- --script FILE [--store sqlite://PATH]
//! ```
//!
//! * `--script` (default `examples/data/calls.json`): `{"tenant", "config": {"groups",
//!   "strategy": "default_user" | "new_user", "default_user_email", "default_region"},
//!   "agents": [{"email"}], "calls": [{"id", "group", "caller", "agent", "events":
//!   [{"at_ms", "type": "ring" | "answer" | "hangup" | "wrap_up_end", "recording"?}]}]}`;
//!   `recording` is a file path. Each event is published `at_ms` after the start.
//! * `--store` (default: a temporary file): the SQLite outbox.
//! * `ZENDESK_URL` (e.g. `https://acme.zendesk.com`), `ZENDESK_EMAIL`, `ZENDESK_TOKEN`:
//!   the account and API token; without them the steps are printed instead.
//!
//! It waits until every step is delivered, then prints one JSON line: `calls`
//! (rung in a configured group; without credentials, the calls in the script),
//! `tickets_created`, `matched`, `unknown`, `ambiguous`, `numbers_backfilled`,
//! `recordings_attached`, `dead_letters`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use secrecy::SecretString;
use serde::Deserialize;
use switchboard::zendesk::{
    CallConfig, CallFlow, CallStep, RingInfo, UnknownCallerStrategy, ZendeskAccount, ZendeskAuth,
    ZendeskConfig, ZendeskDestination,
};
use switchboard::{ConsoleDestination, Route, SqliteStore, Store, Switchboard, Target, TenantId};

const USAGE: &str = "usage: call_to_ticket --script FILE [--store sqlite://PATH]";

struct Args {
    script: PathBuf,
    store: Option<PathBuf>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        script: PathBuf::from("examples/data/calls.json"),
        store: None,
    };
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--script" => parsed.script = PathBuf::from(value()?),
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
struct Script {
    tenant: String,
    config: ScriptConfig,
    #[serde(default)]
    agents: Vec<Agent>,
    calls: Vec<Call>,
}

#[derive(Deserialize)]
struct ScriptConfig {
    groups: Vec<String>,
    strategy: UnknownCallerStrategy,
    #[serde(default)]
    default_user_email: Option<String>,
    default_region: String,
}

#[derive(Deserialize)]
struct Agent {
    email: String,
}

#[derive(Deserialize)]
struct Call {
    id: String,
    group: String,
    caller: String,
    agent: String,
    events: Vec<CallEvent>,
}

#[derive(Deserialize)]
struct CallEvent {
    at_ms: u64,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    recording: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("call_to_ticket: {e}");
            ExitCode::FAILURE
        }
    }
}

fn credentials() -> Option<(String, String, String)> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    Some((
        get("ZENDESK_URL")?,
        get("ZENDESK_EMAIL")?,
        get("ZENDESK_TOKEN")?,
    ))
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args(std::env::args().skip(1))?;
    let script: Script = serde_json::from_slice(
        &std::fs::read(&args.script)
            .map_err(|e| format!("cannot read {}: {e}", args.script.display()))?,
    )?;
    let tenant = TenantId::new(&script.tenant)?;

    let mut _temp = None;
    let db = match args.store {
        Some(path) => path,
        None => {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("calls.db");
            _temp = Some(dir);
            path
        }
    };
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db)?);
    let mut builder = Switchboard::builder().store_arc(store);

    let mut flow = None;
    match credentials() {
        Some((url, email, token)) => {
            let config = ZendeskConfig::new().base_url(&url)?;
            // The account key is the subdomain; the URL wins for requests.
            let host = url::Url::parse(&url)?
                .host_str()
                .unwrap_or("zendesk")
                .to_owned();
            let subdomain: String = host
                .split('.')
                .next()
                .unwrap_or("zendesk")
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            let subdomain = if subdomain.is_empty() {
                "zendesk".to_owned()
            } else {
                subdomain
            };
            let auth = ZendeskAuth::api_token(email, SecretString::from(token));
            let account = ZendeskAccount::new(&config, &subdomain, auth.clone())?;
            let dest = ZendeskDestination::with_fixed_account(config, &subdomain, auth)?;
            let mut call_config = CallConfig::new(
                script.config.groups.clone(),
                script.config.strategy,
                script.config.default_region.clone(),
            );
            call_config.default_user_email = script.config.default_user_email.clone();
            let f = CallFlow::new(dest.client().clone(), account, call_config);
            let emails: Vec<String> = script.agents.iter().map(|a| a.email.clone()).collect();
            let report = f.start(&emails).await.map_err(switchboard::Error::from)?;
            eprintln!("start-up: {}", serde_json::to_string(&report)?);
            dest.with_call_flow(tenant.clone(), f.clone());
            flow = Some(f);
            builder = builder.destination(dest);
        }
        None => {
            eprintln!(
                "ZENDESK_URL / ZENDESK_EMAIL / ZENDESK_TOKEN are not set: printing the steps instead"
            );
            builder = builder.destination(ConsoleDestination::new("zendesk"));
        }
    }
    let sb = Arc::new(
        builder
            .route(
                Route::on("zendesk.call.*")
                    .to("zendesk", Target::Ticket { id: None })
                    .template("{{ data.step }} {{ data.call_id }}"),
            )
            .build()?,
    );

    // Every event of every call, in time order.
    let mut steps: Vec<(u64, CallStep)> = Vec::new();
    for call in &script.calls {
        for e in &call.events {
            let at = Utc::now();
            let step = match e.kind.as_str() {
                "ring" => CallStep::Ring {
                    call_id: call.id.clone(),
                    group: call.group.clone(),
                    caller: call.caller.clone(),
                    at,
                },
                "answer" => CallStep::Answer {
                    call_id: call.id.clone(),
                    agent: call.agent.clone(),
                    at,
                    ring: None,
                },
                "hangup" => CallStep::Hangup {
                    call_id: call.id.clone(),
                    at,
                    recording: e.recording.clone(),
                    ring: None,
                },
                "wrap_up_end" => CallStep::WrapUpEnd {
                    call_id: call.id.clone(),
                    at,
                    ring: None,
                },
                other => {
                    return Err(format!("call {}: unknown event type {other:?}", call.id).into());
                }
            };
            steps.push((e.at_ms, step));
        }
    }
    steps.sort_by_key(|(at, _)| *at);

    let start = tokio::time::Instant::now();
    let publisher = {
        let sb = Arc::clone(&sb);
        let tenant = tenant.clone();
        tokio::spawn(async move {
            // Later steps carry the ring's details, so each is self-sufficient
            // (a restart between ring and answer loses nothing).
            let mut rings: std::collections::HashMap<String, RingInfo> = Default::default();
            for (at_ms, step) in steps {
                tokio::time::sleep_until(start + Duration::from_millis(at_ms)).await;
                let step = match step {
                    CallStep::Ring {
                        call_id,
                        group,
                        caller,
                        ..
                    } => {
                        let ring = RingInfo {
                            group,
                            caller,
                            at: Utc::now(),
                        };
                        rings.insert(call_id.clone(), ring.clone());
                        CallStep::Ring {
                            call_id,
                            group: ring.group,
                            caller: ring.caller,
                            at: ring.at,
                        }
                    }
                    CallStep::Answer { call_id, agent, .. } => CallStep::Answer {
                        ring: rings.get(&call_id).cloned(),
                        call_id,
                        agent,
                        at: Utc::now(),
                    },
                    CallStep::Hangup {
                        call_id, recording, ..
                    } => CallStep::Hangup {
                        ring: rings.get(&call_id).cloned(),
                        call_id,
                        recording,
                        at: Utc::now(),
                    },
                    CallStep::WrapUpEnd { call_id, .. } => CallStep::WrapUpEnd {
                        ring: rings.get(&call_id).cloned(),
                        call_id,
                        at: Utc::now(),
                    },
                };
                sb.publish(step.to_event(&tenant)?).await?;
            }
            Ok::<(), switchboard::Error>(())
        })
    };
    while !publisher.is_finished() {
        sb.run_until_idle().await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publisher.await??;
    sb.drain(Duration::from_secs(600)).await?;

    let status = sb.status().await?;
    let dead_letters: u64 = status.iter().map(|s| s.dead_letters).sum();
    for d in sb.dead_letters(100).await? {
        eprintln!("dead letter {} ({}): {}", d.id, d.event_kind, d.error);
    }
    let stats = flow.as_ref().map(CallFlow::stats).unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({
            "calls": if flow.is_some() { stats.calls } else { script.calls.len() as u64 },
            "tickets_created": stats.tickets_created,
            "matched": stats.matched,
            "unknown": stats.unknown,
            "ambiguous": stats.ambiguous,
            "numbers_backfilled": stats.numbers_backfilled,
            "recordings_attached": stats.recordings_attached,
            "dead_letters": dead_letters,
        })
    );
    Ok(())
}
