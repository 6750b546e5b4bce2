//! Crash safety across processes (issue 9): a worker process on a SQLite file is killed with SIGKILL twenty times mid-delivery against a loopback HTTP server; every event is delivered and every duplicate the server sees was a request in flight at a kill.
#![cfg(all(feature = "sqlite", unix))]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use switchboard::engine::WorkerConfig;
use switchboard::store::OutboxStore;
use switchboard::{
    Capabilities, Delivery, DeliveryError, Destination, Event, Person, Receipt, Route, SqliteStore,
    Switchboard, Target,
};

const EVENTS: usize = 240;
const KILLS: usize = 20;
const PER_ROUND: usize = 8;

/// Posts `{"event_id": …}` to the loopback server, with the round of the
/// process that sent it.
struct Http {
    client: reqwest::Client,
    url: String,
    round: String,
}

#[async_trait]
impl Destination for Http {
    fn name(&self) -> &str {
        "http"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    async fn deliver(&self, d: &Delivery) -> Result<Receipt, DeliveryError> {
        let r = self
            .client
            .post(&self.url)
            .header(ROUND, &self.round)
            .json(&serde_json::json!({"event_id": d.event.id}))
            .send()
            .await
            .map_err(|e| DeliveryError::temporary(e.to_string()))?;
        if r.status().is_success() {
            Ok(Receipt::default())
        } else {
            Err(DeliveryError::temporary(r.status().to_string()))
        }
    }
}

/// The worker process: runs until killed, or (FINAL) until nothing is pending.
#[test]
#[ignore = "run by kill9_mid_delivery_loses_nothing_and_repeats_only_in_flight as a child process"]
fn kill9_child() {
    let (Ok(db), Ok(url), Ok(round)) = (
        std::env::var("KILL9_DB"),
        std::env::var("KILL9_URL"),
        std::env::var("KILL9_ROUND"),
    ) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let store = Arc::new(SqliteStore::open(&db).unwrap());
        let sb = Switchboard::builder()
            .store_arc(store.clone())
            .destination(Http {
                client: reqwest::Client::new(),
                url,
                round,
            })
            .route(Route::on("wallet.*").to("http", Target::SubjectDm))
            .worker(WorkerConfig {
                concurrency: 4,
                lease: Duration::from_secs(2),
                poll_interval: Duration::from_millis(50),
                ..WorkerConfig::default()
            })
            .build()
            .unwrap();
        if std::env::var("KILL9_FINAL").is_ok() {
            sb.drain(Duration::from_secs(60)).await.unwrap();
        } else {
            let (_trigger, shutdown) = switchboard::Shutdown::new();
            sb.run(shutdown).await.unwrap();
        }
    });
}

#[derive(Default)]
struct Server {
    received: Vec<String>,
    answered: usize,
    quota: usize,
    held: Vec<String>,
    /// The round whose process may be answered.
    round: usize,
    /// Requests a killed process sent that arrived after it was killed
    /// (in flight at that kill): refused, never answered.
    late: Vec<String>,
}

/// The header carrying the sending process's round.
const ROUND: &str = "x-kill9-round";

async fn serve(state: Arc<Mutex<Server>>, release: tokio::sync::watch::Receiver<u64>) -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/",
        post(
            move |headers: axum::http::HeaderMap,
                  axum::Json(body): axum::Json<serde_json::Value>| {
                let state = state.clone();
                let mut release = release.clone();
                async move {
                    let id = body["event_id"].as_str().unwrap_or_default().to_owned();
                    let round: Option<usize> = headers
                        .get(ROUND)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    let generation = {
                        let mut s = state.lock().unwrap();
                        s.received.push(id.clone());
                        if round != Some(s.round) {
                            // Sent before its process was killed: nobody reads
                            // the answer, so it must not count as answered.
                            s.late.push(id);
                            return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        if s.answered < s.quota {
                            s.answered += 1;
                            return axum::http::StatusCode::OK;
                        }
                        s.held.push(id);
                        *release.borrow()
                    };
                    let _ = release.wait_for(|g| *g > generation).await;
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

fn child(db: &PathBuf, url: &str, round: usize, last: bool) -> std::process::Child {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "kill9_child",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("KILL9_DB", db)
    .env("KILL9_URL", url)
    .env("KILL9_ROUND", round.to_string())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    if last {
        cmd.env("KILL9_FINAL", "1");
    }
    cmd.spawn().unwrap()
}

async fn sent(store: &SqliteStore) -> u64 {
    store
        .destination_stats()
        .await
        .unwrap()
        .iter()
        .map(|s| s.sent)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_delivery_loses_nothing_and_repeats_only_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kill9.db");
    let state = Arc::new(Mutex::new(Server::default()));
    let (release_tx, release_rx) = tokio::sync::watch::channel(0u64);
    let url = serve(state.clone(), release_rx).await;

    let store = SqliteStore::open(&db).unwrap();
    {
        let sb = Switchboard::builder()
            .store(store.clone())
            .destination(Http {
                client: reqwest::Client::new(),
                url: url.clone(),
                round: String::new(),
            })
            .route(Route::on("wallet.*").to("http", Target::SubjectDm))
            .build()
            .unwrap();
        for i in 0..EVENTS {
            let e = Event::builder(format!("e{i:03}"), "wallet.funded")
                .subject(Person::new(format!("u{i}")))
                .build()
                .unwrap();
            sb.publish(e).await.unwrap();
        }
    }

    let mut in_flight_at_kills: Vec<Vec<String>> = Vec::new();
    for round in 1..=KILLS {
        {
            let mut s = state.lock().unwrap();
            s.quota = round * PER_ROUND;
            s.round = round;
        }
        let mut proc = child(&db, &url, round, false);
        // Wait until this round's answers are recorded and the worker is
        // holding requests the server has not answered.
        let mut ready = false;
        for _ in 0..1200 {
            let (answered, held) = {
                let s = state.lock().unwrap();
                (s.answered, s.held.len())
            };
            if answered == round * PER_ROUND && held > 0 && sent(&store).await == answered as u64 {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        if !ready {
            let (answered, held, received) = {
                let s = state.lock().unwrap();
                (s.answered, s.held.clone(), s.received.len())
            };
            panic!(
                "round {round}: answered {answered} of {}, {received} received, holding {held:?}, {} recorded sent, {} pending",
                round * PER_ROUND,
                sent(&store).await,
                store.pending().await.unwrap()
            );
        }
        let held = std::mem::take(&mut state.lock().unwrap().held);
        proc.kill().unwrap(); // SIGKILL
        proc.wait().unwrap();
        in_flight_at_kills.push(held);
        release_tx.send_modify(|g| *g += 1);
    }

    {
        let mut s = state.lock().unwrap();
        s.quota = usize::MAX;
        s.round = KILLS + 1;
    }
    let mut last = child(&db, &url, KILLS + 1, true);
    let status = tokio::task::spawn_blocking(move || last.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert_eq!(store.pending().await.unwrap(), 0);

    let received = state.lock().unwrap().received.clone();
    let mut times: HashMap<&str, usize> = HashMap::new();
    for id in &received {
        *times.entry(id.as_str()).or_default() += 1;
    }
    assert_eq!(times.len(), EVENTS, "every event reached the server");
    assert_eq!(
        sent(&store).await,
        EVENTS as u64,
        "every delivery is recorded as sent"
    );
    let late = state.lock().unwrap().late.clone();
    let mut held_count: HashMap<&str, usize> = HashMap::new();
    for id in in_flight_at_kills.iter().flatten().chain(&late) {
        *held_count.entry(id.as_str()).or_default() += 1;
    }
    let mut duplicates = 0;
    for (id, n) in &times {
        let extra = n - 1;
        duplicates += extra;
        let allowed = held_count.get(id).copied().unwrap_or(0);
        assert!(
            extra <= allowed,
            "{id} was sent {n} times but was in flight at only {allowed} kills"
        );
    }
    let in_flight: usize = in_flight_at_kills.iter().map(Vec::len).sum::<usize>() + late.len();
    let distinct: HashSet<&str> = held_count.keys().copied().collect();
    assert!(duplicates <= in_flight);
    println!(
        "kill -9 x{KILLS}: {EVENTS} events delivered; {duplicates} duplicates, {in_flight} requests in flight at the kills ({} distinct)",
        distinct.len()
    );
}
