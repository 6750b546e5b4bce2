//! Issue 10, four replicas: four processes, each a `Switchboard` on one PostgreSQL database with shared pacing and the Slack destination, publish the same input to a loopback Slack that enforces 1 message/s per channel; each (event, route) is posted once, never faster than 1/s per channel, and a replica killed with SIGKILL mid-run loses nothing and repeats only what it had in flight.
#![cfg(all(feature = "postgres", feature = "slack", unix))]

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use switchboard::engine::WorkerConfig;
use switchboard::slack::{BotToken, SlackConfig, SlackDestination};
use switchboard::store::{OutboxStore, PostgresStore};
use switchboard::{Event, Route, Switchboard, Target};

const REPLICAS: usize = 4;
/// Events per kind; three kinds, each routed to two channels of its own.
const PER_KIND: usize = 4;
const KINDS: [&str; 3] = ["alpha", "beta", "gamma"];
/// Requests a replica has in flight at most.
const CONCURRENCY: usize = 4;

fn url() -> Option<String> {
    std::env::var("SWITCHBOARD_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

fn channels(kind: &str) -> [String; 2] {
    [
        format!("C{kind}1").to_uppercase(),
        format!("C{kind}2").to_uppercase(),
    ]
}

fn events() -> Vec<Event> {
    let mut out = Vec::new();
    for kind in KINDS {
        for i in 0..PER_KIND {
            let id = format!("{kind}-{i}");
            out.push(
                Event::builder(id.clone(), format!("{kind}.happened"))
                    .data(serde_json::json!({ "id": id }))
                    .build()
                    .unwrap(),
            );
        }
    }
    out
}

/// One replica: publishes every event, delivers, and ends when the database
/// has nothing queued or in flight.
#[test]
#[ignore = "run by four_replicas_* as a child process"]
fn replica_child() {
    let (Ok(db), Ok(schema), Ok(slack), Ok(token)) = (
        std::env::var("REPLICA_DB"),
        std::env::var("REPLICA_SCHEMA"),
        std::env::var("REPLICA_SLACK"),
        std::env::var("REPLICA_TOKEN"),
    ) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let store = PostgresStore::connect_with_schema(&db, &schema)
            .await
            .unwrap();
        let pacer = Arc::new(store.pacer());
        let destination = SlackDestination::new(
            SlackConfig::new().base_url(&slack).unwrap(),
            BotToken::new(SecretString::from(token)),
        )
        .unwrap();
        let mut builder = Switchboard::builder()
            .store(store)
            .destination(destination)
            .shared_pacing(pacer)
            .worker(WorkerConfig {
                concurrency: CONCURRENCY,
                lease: Duration::from_secs(2),
                poll_interval: Duration::from_millis(50),
                ..WorkerConfig::default()
            });
        for kind in KINDS {
            for (n, channel) in channels(kind).into_iter().enumerate() {
                builder = builder.route(
                    Route::on(format!("{kind}.*"))
                        .to("slack", Target::ChannelId { id: channel })
                        .template("{{ data.id }}")
                        .named(format!("{kind}-{n}")),
                );
            }
        }
        let sb = builder.build().unwrap();
        for e in events() {
            sb.publish(e).await.unwrap();
        }
        loop {
            sb.run_until_idle().await.unwrap();
            if sb.store().pending().await.unwrap() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// One `chat.postMessage` as the fake Slack saw it.
#[derive(Debug, Clone)]
struct Post {
    channel: String,
    text: String,
    replica: usize,
    at: Instant,
}

#[derive(Default)]
struct Slack {
    posts: Vec<Post>,
    limited: usize,
    /// Posts that arrived less than 1 s after the previous one to their channel.
    too_fast: Vec<(String, Duration)>,
    last: HashMap<String, Instant>,
    /// Kill the replica whose post arrives once this many posts have
    /// arrived (whichever replica that is: the work is not split evenly).
    kill_after: Option<usize>,
    kill: Option<tokio::sync::oneshot::Sender<usize>>,
    /// The replica that was killed.
    victim: Option<usize>,
}

/// A loopback Slack: `chat.postMessage` at most 1/s per channel, else 429
/// with `Retry-After: 1`; records every accepted post and which replica
/// (by its token) sent it.
async fn fake_slack(state: Arc<Mutex<Slack>>) -> String {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/chat.postMessage",
        post(
            move |headers: HeaderMap, axum::Json(body): axum::Json<serde_json::Value>| {
                let state = state.clone();
                async move {
                    let replica = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer xoxb-replica-"))
                        .and_then(|n| n.parse::<usize>().ok())
                        .unwrap_or(usize::MAX);
                    let channel = body["channel"].as_str().unwrap_or_default().to_owned();
                    let text = body["text"].as_str().unwrap_or_default().to_owned();
                    let now = Instant::now();
                    let hold = {
                        let mut s = state.lock().unwrap();
                        if let Some(prev) = s.last.get(&channel).copied() {
                            let gap = now - prev;
                            if gap < Duration::from_secs(1) {
                                s.limited += 1;
                                s.too_fast.push((channel.clone(), gap));
                                return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")])
                                    .into_response();
                            }
                        }
                        s.last.insert(channel.clone(), now);
                        s.posts.push(Post {
                            channel: channel.clone(),
                            text,
                            replica,
                            at: now,
                        });
                        match s.kill_after {
                            Some(after) if s.posts.len() >= after => {
                                s.kill_after = None;
                                s.victim = Some(replica);
                                if let Some(k) = s.kill.take() {
                                    let _ = k.send(replica);
                                }
                                true
                            }
                            _ => false,
                        }
                    };
                    if hold {
                        // The victim dies while this request is in flight.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    axum::Json(serde_json::json!({
                        "ok": true, "channel": channel, "ts": "1503435956.000247"
                    }))
                    .into_response()
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn spawn_replica(db: &str, schema: &str, slack: &str, n: usize) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "replica_child", "--ignored", "--nocapture"])
        .env("REPLICA_DB", db)
        .env("REPLICA_SCHEMA", schema)
        .env("REPLICA_SLACK", slack)
        .env("REPLICA_TOKEN", format!("xoxb-replica-{n}"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

async fn drop_schema(db: &str, schema: &str) {
    if let Ok((client, conn)) = tokio_postgres::connect(db, tokio_postgres::NoTls).await {
        tokio::spawn(conn);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await;
    }
}

/// Runs four replicas to the end (killing `victim` mid-run if given) and
/// returns what the fake Slack saw.
async fn run(db: &str, kill_one: bool) -> Slack {
    let schema = format!("sb_replicas_{:016x}", rand::random::<u64>());
    // Migrate once up front so the children start on a ready schema.
    drop(
        PostgresStore::connect_with_schema(db, &schema)
            .await
            .unwrap(),
    );
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel();
    let state = Arc::new(Mutex::new(Slack {
        kill_after: kill_one.then_some(2),
        kill: Some(kill_tx),
        ..Slack::default()
    }));
    let slack = fake_slack(state.clone()).await;
    let mut children: Vec<Child> = (0..REPLICAS)
        .map(|n| spawn_replica(db, &schema, &slack, n))
        .collect();
    let mut victim = None;
    if kill_one {
        let v = tokio::time::timeout(Duration::from_secs(60), kill_rx)
            .await
            .expect("a replica posted before the timeout")
            .unwrap();
        // SIGKILL: no chance to finish or release anything.
        children[v].kill().unwrap();
        victim = Some(v);
    }
    let waited = tokio::task::spawn_blocking(move || {
        let mut codes = Vec::new();
        for c in &mut children {
            codes.push(c.wait().unwrap());
        }
        codes
    });
    let codes = tokio::time::timeout(Duration::from_secs(120), waited)
        .await
        .expect("replicas end when the database is drained")
        .unwrap();
    for (n, code) in codes.iter().enumerate() {
        if Some(n) != victim {
            assert!(code.success(), "replica {n} failed: {code}");
        }
    }
    let store = PostgresStore::connect_with_schema(db, &schema)
        .await
        .unwrap();
    assert_eq!(store.pending().await.unwrap(), 0);
    assert!(store.dead_letters(None, 10).await.unwrap().is_empty());
    drop(store);
    drop_schema(db, &schema).await;
    let mut s = state.lock().unwrap();
    std::mem::take(&mut *s)
}

/// Every (channel, event) pair the routes make.
fn expected() -> HashSet<(String, String)> {
    let mut out = HashSet::new();
    for kind in KINDS {
        for channel in channels(kind) {
            for i in 0..PER_KIND {
                out.insert((channel.clone(), format!("{kind}-{i}")));
            }
        }
    }
    out
}

fn assert_paced(s: &Slack) {
    assert_eq!(s.limited, 0, "429s answered: {:?}", s.too_fast);
    let mut by_channel: HashMap<&str, Vec<Instant>> = HashMap::new();
    for p in &s.posts {
        by_channel.entry(&p.channel).or_default().push(p.at);
    }
    for (channel, times) in by_channel {
        for w in times.windows(2) {
            assert!(
                w[1] - w[0] >= Duration::from_secs(1),
                "{channel}: posts {:?} apart",
                w[1] - w[0]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn four_replicas_post_every_event_once_at_slacks_pace_and_survive_a_kill9() {
    let Some(db) = url() else {
        println!("skipped: SWITCHBOARD_POSTGRES_URL not set (PostgreSQL replica test)");
        return;
    };

    // A clean run: every (event, route) posted exactly once, at Slack's pace.
    let clean = run(&db, false).await;
    assert_paced(&clean);
    let mut seen = HashMap::new();
    for p in &clean.posts {
        *seen
            .entry((p.channel.clone(), p.text.clone()))
            .or_insert(0usize) += 1;
    }
    assert_eq!(seen.keys().cloned().collect::<HashSet<_>>(), expected());
    assert!(seen.values().all(|&n| n == 1), "duplicates: {seen:?}");
    let mut senders: HashMap<usize, usize> = HashMap::new();
    for p in &clean.posts {
        *senders.entry(p.replica).or_default() += 1;
    }
    println!("posts per replica in the clean run: {senders:?}");
    assert!(senders.len() > 1, "the work was shared: {senders:?}");

    // A replica killed with SIGKILL while one of its posts is in flight.
    let killed = run(&db, true).await;
    let victim = killed.victim.expect("a replica was killed");
    assert_paced(&killed);
    println!(
        "killed run: {} posts, replicas {:?}",
        killed.posts.len(),
        killed.posts.iter().map(|p| p.replica).collect::<Vec<_>>()
    );
    let mut first: HashMap<(String, String), usize> = HashMap::new();
    let mut duplicates = Vec::new();
    for p in &killed.posts {
        let pair = (p.channel.clone(), p.text.clone());
        match first.get(&pair) {
            None => {
                first.insert(pair, p.replica);
            }
            Some(&by) => duplicates.push((pair, by)),
        }
    }
    assert_eq!(
        first.keys().cloned().collect::<HashSet<_>>(),
        expected(),
        "nothing lost"
    );
    assert!(
        !duplicates.is_empty(),
        "the post in flight at the kill is posted again"
    );
    assert!(
        duplicates.len() <= CONCURRENCY,
        "at most the victim's in-flight requests repeat: {duplicates:?}"
    );
    for (pair, by) in &duplicates {
        assert_eq!(*by, victim, "{pair:?} was first posted by replica {by}");
    }
}
