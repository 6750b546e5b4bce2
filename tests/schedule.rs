//! Schedules and runs: next fire times, outcomes, no overlap, disabled integrations, config changes, the run loop and the admin table.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use switchboard::attributes::{CsvMapping, ImportCollector, read_csv};
use switchboard::integration::{IntegrationConfig, RunOutcome, Schedule};
use switchboard::schedule::{MAX_ROW_ERRORS, RunContext, ScheduledJob, Scheduler, next_fire};
use switchboard::store::RunStore;
use switchboard::tenant::TenantId;
use switchboard::{Error, ErrorKind, MemoryStore, Shutdown};
use tokio::sync::Notify;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 10, 30, 0).unwrap()
}

/// What the test job does on each run.
#[derive(Clone, Copy)]
enum Behaviour {
    Import { read: u64, rejected: u64 },
    Fail,
    Panic,
}

struct TestJob {
    name: String,
    behaviour: Mutex<Behaviour>,
    runs: AtomicUsize,
    seen: Mutex<Vec<IntegrationConfig>>,
    /// When set, each run waits for a notification before finishing.
    gate: Option<Arc<Notify>>,
    started: Arc<Notify>,
}

impl TestJob {
    fn new(name: &str, behaviour: Behaviour) -> Arc<Self> {
        Arc::new(TestJob {
            name: name.into(),
            behaviour: Mutex::new(behaviour),
            runs: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            gate: None,
            started: Arc::new(Notify::new()),
        })
    }

    fn gated(name: &str, gate: Arc<Notify>) -> Arc<Self> {
        Arc::new(TestJob {
            name: name.into(),
            behaviour: Mutex::new(Behaviour::Import {
                read: 1,
                rejected: 0,
            }),
            runs: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            gate: Some(gate),
            started: Arc::new(Notify::new()),
        })
    }

    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ScheduledJob for TestJob {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, ctx: &mut RunContext) -> switchboard::Result<()> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().unwrap().push(ctx.config().clone());
        self.started.notify_one();
        if let Some(gate) = &self.gate {
            gate.notified().await;
        }
        let behaviour = *self.behaviour.lock().unwrap();
        match behaviour {
            Behaviour::Import { read, rejected } => {
                ctx.add_rows_read(read);
                ctx.add_rows_imported(read - rejected);
                for i in 0..rejected {
                    ctx.reject_row(format!("line {}: bad row", i + 2));
                }
                ctx.add_properties(["plan", "seats", "plan"]);
                ctx.set_detail("moved_to", "success/file.csv".into());
                Ok(())
            }
            Behaviour::Fail => Err(Error::new(ErrorKind::Platform, "bucket not found")),
            Behaviour::Panic => panic!("job bug"),
        }
    }
}

/// The default tenant.
fn d() -> TenantId {
    TenantId::default()
}

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).unwrap()
}

fn config(name: &str, schedule: Schedule) -> IntegrationConfig {
    tenant_config(d(), name, schedule)
}

fn tenant_config(tenant: TenantId, name: &str, schedule: Schedule) -> IntegrationConfig {
    IntegrationConfig {
        tenant,
        name: name.into(),
        source: format!("s3://bucket/{name}/*.csv"),
        schedule,
        enabled: true,
        settings: serde_json::json!({"version": 1}),
    }
}

fn hourly() -> Schedule {
    Schedule::Interval(Duration::from_secs(3600))
}

/// A clock at `t0()` that follows tokio's (paused) clock.
fn test_clock() -> impl Fn() -> DateTime<Utc> + Send + Sync + 'static {
    let start = tokio::time::Instant::now();
    move || t0() + chrono::Duration::from_std(start.elapsed()).unwrap()
}

async fn setup(configs: &[IntegrationConfig]) -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::new());
    for c in configs {
        store.put_integration(c).await.unwrap();
    }
    store
}

#[test]
fn next_fire_for_intervals_and_cron() {
    assert_eq!(
        next_fire(&hourly(), t0()).unwrap(),
        Some(t0() + chrono::Duration::hours(1))
    );
    assert_eq!(
        next_fire(&Schedule::Cron("0 6 * * *".into()), t0()).unwrap(),
        Some(Utc.with_ymd_and_hms(2025, 3, 2, 6, 0, 0).unwrap())
    );
    assert_eq!(
        next_fire(&Schedule::Cron("*/15 * * * *".into()), t0()).unwrap(),
        Some(Utc.with_ymd_and_hms(2025, 3, 1, 10, 45, 0).unwrap())
    );
    // six fields: seconds first
    assert_eq!(
        next_fire(&Schedule::Cron("30 0 11 * * *".into()), t0()).unwrap(),
        Some(Utc.with_ymd_and_hms(2025, 3, 1, 11, 0, 30).unwrap())
    );
    // strictly after
    let six = Utc.with_ymd_and_hms(2025, 3, 2, 6, 0, 0).unwrap();
    assert_eq!(
        next_fire(&Schedule::Cron("0 6 * * *".into()), six).unwrap(),
        Some(six + chrono::Duration::days(1))
    );
    for bad in ["", "not cron", "61 * * * *", "* * *"] {
        let err = next_fire(&Schedule::Cron(bad.into()), t0()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{bad:?}");
    }
    assert_eq!(
        next_fire(&Schedule::Interval(Duration::ZERO), t0())
            .unwrap_err()
            .kind(),
        ErrorKind::Config
    );
}

#[tokio::test]
async fn a_successful_run_is_recorded() {
    let store = setup(&[config("crm", hourly())]).await;
    let job = TestJob::new(
        "crm",
        Behaviour::Import {
            read: 10,
            rejected: 0,
        },
    );
    let scheduler = Scheduler::new(store.clone()).job(job.clone());
    let record = scheduler.run_now(&d(), "crm").await.unwrap();
    assert_eq!(record.outcome, RunOutcome::Success);
    assert_eq!(
        (record.rows_read, record.rows_imported, record.rows_rejected),
        (10, 10, 0)
    );
    assert_eq!(record.properties_imported, 2);
    assert_eq!(record.details["moved_to"], "success/file.csv");
    assert!(record.finished_at.is_some_and(|f| f >= record.started_at));
    assert_eq!(store.runs(&d(), "crm", 10).await.unwrap(), vec![record]);
}

#[tokio::test]
async fn rejected_rows_make_a_run_partial_and_only_the_first_errors_are_kept() {
    let store = setup(&[config("crm", hourly())]).await;
    let job = TestJob::new(
        "crm",
        Behaviour::Import {
            read: 100,
            rejected: 30,
        },
    );
    let scheduler = Scheduler::new(store.clone()).job(job.clone());
    let record = scheduler.run_now(&d(), "crm").await.unwrap();
    assert_eq!(record.outcome, RunOutcome::Partial);
    assert_eq!(record.rows_rejected, 30);
    assert_eq!(record.row_errors.len(), MAX_ROW_ERRORS);
    assert_eq!(record.row_errors[0], "line 2: bad row");
    assert_eq!(record.error, None);

    *job.behaviour.lock().unwrap() = Behaviour::Import {
        read: 5,
        rejected: 5,
    };
    let record = scheduler.run_now(&d(), "crm").await.unwrap();
    assert_eq!(record.outcome, RunOutcome::Failed, "nothing imported");
    assert_eq!(record.error.as_deref(), Some("all 5 rows were rejected"));
}

#[tokio::test]
async fn a_failing_or_panicking_job_fails_its_run_and_releases_it() {
    let store = setup(&[config("crm", hourly())]).await;
    let job = TestJob::new("crm", Behaviour::Fail);
    let scheduler = Scheduler::new(store.clone()).job(job.clone());
    let record = scheduler.run_now(&d(), "crm").await.unwrap();
    assert_eq!(record.outcome, RunOutcome::Failed);
    assert!(
        record
            .error
            .as_deref()
            .unwrap()
            .contains("bucket not found")
    );

    *job.behaviour.lock().unwrap() = Behaviour::Panic;
    let record = scheduler.run_now(&d(), "crm").await.unwrap();
    assert_eq!(record.outcome, RunOutcome::Failed);
    assert_eq!(record.error.as_deref(), Some("the job panicked"));

    *job.behaviour.lock().unwrap() = Behaviour::Import {
        read: 1,
        rejected: 0,
    };
    assert_eq!(
        scheduler.run_now(&d(), "crm").await.unwrap().outcome,
        RunOutcome::Success
    );
    assert_eq!(store.runs(&d(), "crm", 10).await.unwrap().len(), 3);
}

#[tokio::test]
async fn unknown_and_disabled_integrations_do_not_run() {
    let mut disabled = config("crm", hourly());
    disabled.enabled = false;
    let store = setup(&[disabled]).await;
    let job = TestJob::new(
        "crm",
        Behaviour::Import {
            read: 1,
            rejected: 0,
        },
    );
    let orphan = TestJob::new(
        "orphan",
        Behaviour::Import {
            read: 1,
            rejected: 0,
        },
    );
    let scheduler = Scheduler::new(store.clone())
        .job(job.clone())
        .job(orphan.clone());

    assert!(scheduler.run_due(t0()).await.unwrap().is_empty());
    assert!(
        scheduler
            .run_due(t0() + chrono::Duration::days(2))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        scheduler.run_now(&d(), "crm").await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(
        scheduler.run_now(&d(), "orphan").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        scheduler.run_now(&d(), "nope").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(job.runs() + orphan.runs(), 0);
    assert!(store.runs(&d(), "crm", 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn runs_never_overlap() {
    let store = setup(&[config("crm", hourly())]).await;
    let gate = Arc::new(Notify::new());
    let job = TestJob::gated("crm", gate.clone());
    // A lease longer than the jump in time below, so the store still holds it.
    let lease = Duration::from_secs(6 * 3600);
    let scheduler = Scheduler::new(store.clone()).job(job.clone()).lease(lease);
    // A second scheduler on the same store stands in for another instance.
    let other = Scheduler::new(store.clone()).job(job.clone()).lease(lease);

    let first = tokio::spawn({
        let scheduler = scheduler.clone();
        async move { scheduler.run_now(&d(), "crm").await }
    });
    job.started.notified().await;

    assert_eq!(
        scheduler.run_now(&d(), "crm").await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(
        other.run_now(&d(), "crm").await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    let later = Utc::now() + chrono::Duration::hours(5);
    assert!(scheduler.run_due(later).await.unwrap().is_empty());
    assert!(other.run_due(later).await.unwrap().is_empty());
    let table = scheduler.integrations(None).await.unwrap();
    assert_eq!(table[0].last_outcome, Some(RunOutcome::Running));
    assert_eq!(job.runs(), 1);

    gate.notify_one();
    assert_eq!(first.await.unwrap().unwrap().outcome, RunOutcome::Success);
    // Released: it may run again.
    let again = tokio::spawn({
        let scheduler = scheduler.clone();
        async move { scheduler.run_now(&d(), "crm").await }
    });
    job.started.notified().await;
    gate.notify_one();
    assert_eq!(again.await.unwrap().unwrap().outcome, RunOutcome::Success);
    assert_eq!(job.runs(), 2);
}

#[tokio::test]
async fn run_due_follows_interval_and_cron_schedules() {
    let store = setup(&[
        config("interval", hourly()),
        config("cron", Schedule::Cron("0 6 * * *".into())),
    ])
    .await;
    let interval = TestJob::new(
        "interval",
        Behaviour::Import {
            read: 1,
            rejected: 0,
        },
    );
    let cron = TestJob::new(
        "cron",
        Behaviour::Import {
            read: 1,
            rejected: 0,
        },
    );
    let scheduler = Scheduler::new(store.clone())
        .job(interval.clone())
        .job(cron.clone());

    // An interval integration that never ran is due at once; a cron one waits for
    // its next occurrence.
    let ran = scheduler.run_due(t0()).await.unwrap();
    assert_eq!(
        ran.iter()
            .map(|r| r.integration.as_str())
            .collect::<Vec<_>>(),
        ["interval"]
    );
    assert_eq!(ran[0].started_at, t0());

    let minutes = |m| t0() + chrono::Duration::minutes(m);
    assert!(scheduler.run_due(minutes(59)).await.unwrap().is_empty());
    let ran = scheduler.run_due(minutes(60)).await.unwrap();
    assert_eq!(ran.len(), 1);

    // 06:00 the next day: the cron fires once; the interval fires once for the
    // many hours missed.
    let six = Utc.with_ymd_and_hms(2025, 3, 2, 6, 0, 0).unwrap();
    let ran = scheduler.run_due(six).await.unwrap();
    let names: Vec<_> = ran.iter().map(|r| r.integration.as_str()).collect();
    assert_eq!(names, ["cron", "interval"]);
    assert!(
        scheduler
            .run_due(six + chrono::Duration::minutes(1))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!((interval.runs(), cron.runs()), (3, 1));
}

#[tokio::test]
async fn configuration_changes_take_effect_on_the_next_run() {
    let store = setup(&[config("crm", hourly())]).await;
    let job = TestJob::new(
        "crm",
        Behaviour::Import {
            read: 1,
            rejected: 0,
        },
    );
    let scheduler = Scheduler::new(store.clone()).job(job.clone());
    scheduler.run_due(t0()).await.unwrap();

    let mut changed = config("crm", Schedule::Interval(Duration::from_secs(600)));
    changed.settings = serde_json::json!({"version": 2});
    changed.source = "s3://other/*.csv".into();
    scheduler.put_integration(&changed).await.unwrap();

    let ran = scheduler
        .run_due(t0() + chrono::Duration::minutes(10))
        .await
        .unwrap();
    assert_eq!(ran.len(), 1, "the new 10-minute interval applies");
    let seen = job.seen.lock().unwrap().clone();
    assert_eq!(seen[0].settings["version"], 1);
    assert_eq!(seen[1].settings["version"], 2);
    assert_eq!(seen[1].source, "s3://other/*.csv");

    changed.enabled = false;
    scheduler.put_integration(&changed).await.unwrap();
    assert!(
        scheduler
            .run_due(t0() + chrono::Duration::days(1))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(job.runs(), 2);

    let mut bad = changed.clone();
    bad.schedule = Schedule::Cron("every tuesday".into());
    assert_eq!(
        scheduler.put_integration(&bad).await.unwrap_err().kind(),
        ErrorKind::Config
    );
}

#[tokio::test(start_paused = true)]
async fn the_run_loop_fires_on_schedule_until_shutdown() {
    let mut disabled = config("off", hourly());
    disabled.enabled = false;
    let store = setup(&[
        config("hourly", hourly()),
        config("cron", Schedule::Cron("15 * * * *".into())),
        disabled,
    ])
    .await;
    let hourly_job = TestJob::new(
        "hourly",
        Behaviour::Import {
            read: 1,
            rejected: 0,
        },
    );
    let cron_job = TestJob::new(
        "cron",
        Behaviour::Import {
            read: 1,
            rejected: 0,
        },
    );
    let off_job = TestJob::new(
        "off",
        Behaviour::Import {
            read: 1,
            rejected: 0,
        },
    );
    let scheduler = Scheduler::new(store.clone())
        .clock(test_clock())
        .job(hourly_job.clone())
        .job(cron_job.clone())
        .job(off_job.clone());

    let (trigger, shutdown) = Shutdown::new();
    let task = tokio::spawn({
        let scheduler = scheduler.clone();
        async move { scheduler.run(shutdown).await }
    });
    // t0 is 10:30. Over 3h10m: hourly at 10:30, 11:30, 12:30, 13:30; cron at
    // 11:15, 12:15, 13:15.
    tokio::time::sleep(Duration::from_secs(3 * 3600 + 600)).await;
    trigger.trigger();
    task.await.unwrap().unwrap();

    assert_eq!(hourly_job.runs(), 4);
    assert_eq!(cron_job.runs(), 3);
    assert_eq!(off_job.runs(), 0);
    let cron_runs = store.runs(&d(), "cron", 10).await.unwrap();
    let times: Vec<_> = cron_runs
        .iter()
        .rev()
        .map(|r| r.started_at.format("%H:%M").to_string())
        .collect();
    assert_eq!(times, ["11:15", "12:15", "13:15"]);
    assert!(cron_runs.iter().all(|r| r.outcome == RunOutcome::Success));

    // After shutdown nothing more runs.
    tokio::time::sleep(Duration::from_secs(7200)).await;
    assert_eq!(hourly_job.runs(), 4);
}

#[tokio::test(start_paused = true)]
async fn the_run_loop_waits_for_a_run_in_progress_at_shutdown() {
    let store = setup(&[config("slow", hourly())]).await;
    let gate = Arc::new(Notify::new());
    let job = TestJob::gated("slow", gate.clone());
    let scheduler = Scheduler::new(store.clone())
        .clock(test_clock())
        .job(job.clone());
    let (trigger, shutdown) = Shutdown::new();
    let task = tokio::spawn({
        let scheduler = scheduler.clone();
        async move { scheduler.run(shutdown).await }
    });
    job.started.notified().await;
    trigger.trigger();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!task.is_finished(), "the run in progress is awaited");
    gate.notify_one();
    task.await.unwrap().unwrap();
    let runs = store.runs(&d(), "slow", 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].outcome, RunOutcome::Success);
}

#[tokio::test(start_paused = true)]
async fn the_admin_table() {
    let mut off = config("b-off", Schedule::Cron("0 6 * * *".into()));
    off.enabled = false;
    let store = setup(&[
        config("a-crm", hourly()),
        off,
        config("c-broken", Schedule::Cron("nope".into())),
    ])
    .await;
    let job = TestJob::new(
        "a-crm",
        Behaviour::Import {
            read: 10,
            rejected: 2,
        },
    );
    let scheduler = Scheduler::new(store.clone())
        .clock(test_clock())
        .job(job.clone());

    let table = scheduler.integrations(None).await.unwrap();
    assert_eq!(table.len(), 3);
    assert_eq!(table[0].name, "a-crm");
    assert_eq!(table[0].last_run, None);
    assert_eq!(table[0].next_run, Some(t0()), "due at once");
    assert!(table[0].has_job);

    let record = scheduler.run_now(&d(), "a-crm").await.unwrap();
    let table = scheduler.integrations(None).await.unwrap();
    let crm = &table[0];
    assert_eq!(crm.source, "s3://bucket/a-crm/*.csv");
    assert_eq!(crm.schedule, hourly());
    assert_eq!(crm.properties_imported, 2);
    assert_eq!(crm.last_run, Some(record.started_at));
    assert_eq!(crm.last_outcome, Some(RunOutcome::Partial));
    assert_eq!(
        crm.next_run,
        Some(record.started_at + chrono::Duration::hours(1))
    );
    assert!(crm.enabled);

    let off = &table[1];
    assert!(!off.enabled);
    assert_eq!(
        (off.next_run, off.last_run, off.has_job),
        (None, None, false)
    );

    let broken = &table[2];
    assert_eq!(broken.next_run, None);
    assert!(broken.schedule_error.as_deref().unwrap().contains("nope"));

    let json = serde_json::to_value(crm).unwrap();
    assert_eq!(json["last_outcome"], "partial");
}

/// A job that imports a CSV through the attribute pipeline, as the S3 importer does.
struct CsvJob {
    store: Arc<MemoryStore>,
    csv: &'static str,
}

#[async_trait]
impl ScheduledJob for CsvJob {
    fn name(&self) -> &str {
        "csv"
    }
    async fn run(&self, ctx: &mut RunContext) -> switchboard::Result<()> {
        let mapping = CsvMapping::new("id").attribute("plan", "plan");
        let rows = read_csv(self.csv.as_bytes(), &mapping)?;
        let summary = switchboard::attributes::import_rows(
            rows,
            self.store.as_ref(),
            ctx.tenant(),
            ImportCollector::new(),
        )
        .await?;
        ctx.record_import(&summary);
        Ok(())
    }
}

#[tokio::test]
async fn a_csv_import_job_records_its_summary() {
    let store = setup(&[config("csv", hourly())]).await;
    let job = Arc::new(CsvJob {
        store: store.clone(),
        csv: "id,plan\nu1,basic\n,broken\nu2,pro\nu1,premium\n",
    });
    let scheduler = Scheduler::new(store.clone()).job(job);
    let record = scheduler.run_now(&d(), "csv").await.unwrap();
    assert_eq!(record.outcome, RunOutcome::Partial);
    assert_eq!(
        (record.rows_read, record.rows_imported, record.rows_rejected),
        (4, 3, 1)
    );
    assert_eq!(
        record.row_errors,
        ["line 3: the user id (column \"id\") is empty"]
    );
    assert_eq!(record.properties_imported, 1);
    assert_eq!(record.details["duplicate_user_ids"], 1);
}

#[tokio::test(start_paused = true)]
async fn a_run_longer_than_its_lease_keeps_it_by_heartbeat() {
    let store = setup(&[config("crm", hourly())]).await;
    let gate = Arc::new(Notify::new());
    let job = TestJob::gated("crm", gate.clone());
    let lease = Duration::from_secs(30);
    let scheduler = Scheduler::new(store.clone()).job(job.clone()).lease(lease);
    // Another instance on the same store, whose clock follows tokio's.
    let other = Scheduler::new(store.clone()).job(job.clone()).lease(lease);
    let first = tokio::spawn({
        let scheduler = scheduler.clone();
        async move { scheduler.run_now(&d(), "crm").await }
    });
    job.started.notified().await;
    // Four leases later the run is still held: the heartbeat renewed it.
    tokio::time::sleep(lease * 4).await;
    assert_eq!(
        other.run_now(&d(), "crm").await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(job.runs(), 1);
    gate.notify_one();
    assert_eq!(first.await.unwrap().unwrap().outcome, RunOutcome::Success);
}

#[tokio::test(start_paused = true)]
async fn a_run_whose_lease_was_taken_over_is_stopped() {
    let store = setup(&[config("crm", hourly())]).await;
    let gate = Arc::new(Notify::new());
    let job = TestJob::gated("crm", gate.clone());
    let lease = Duration::from_secs(30);
    let scheduler = Scheduler::new(store.clone()).job(job.clone()).lease(lease);
    let first = tokio::spawn({
        let scheduler = scheduler.clone();
        async move { scheduler.run_now(&d(), "crm").await }
    });
    job.started.notified().await;
    let run_id = store.runs(&d(), "crm", 1).await.unwrap()[0].id;
    // Another instance declares the run dead (as if this process had stalled past
    // its lease) and takes over.
    let far = Utc::now() + chrono::Duration::days(1);
    let takeover = store.start_run(&d(), "crm", far, lease).await.unwrap();
    assert!(takeover.is_some());
    let record = first.await.unwrap().unwrap();
    assert_eq!(record.id, run_id);
    assert_eq!(record.outcome, RunOutcome::Failed);
    assert!(record.error.unwrap().contains("lease was lost"));
}

#[tokio::test]
async fn each_tenants_integration_runs_on_its_own_schedule_and_history() {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let mut a = tenant_config(acme.clone(), "crm", hourly());
    a.settings = serde_json::json!({"bucket": "acme"});
    let mut b = tenant_config(
        globex.clone(),
        "crm",
        Schedule::Interval(Duration::from_secs(600)),
    );
    b.settings = serde_json::json!({"bucket": "globex"});
    let store = setup(&[a.clone(), b]).await;
    // One job serves the "crm" integration of every tenant.
    let job = TestJob::new(
        "crm",
        Behaviour::Import {
            read: 1,
            rejected: 0,
        },
    );
    let scheduler = Scheduler::new(store.clone()).job(job.clone());

    let ran = scheduler.run_due(t0()).await.unwrap();
    let tenants: Vec<_> = ran.iter().map(|r| r.tenant.as_str()).collect();
    assert_eq!(tenants, ["acme", "globex"]);
    let mut seen: Vec<_> = job
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|c| (c.tenant.to_string(), c.settings["bucket"].to_string()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("acme".to_owned(), "\"acme\"".to_owned()),
            ("globex".to_owned(), "\"globex\"".to_owned())
        ],
        "each run sees its own tenant's settings"
    );

    // Ten minutes later only globex's 10-minute interval is due.
    let ran = scheduler
        .run_due(t0() + chrono::Duration::minutes(10))
        .await
        .unwrap();
    assert_eq!(ran.len(), 1);
    assert_eq!(ran[0].tenant, globex);
    assert_eq!(store.runs(&acme, "crm", 10).await.unwrap().len(), 1);
    assert_eq!(store.runs(&globex, "crm", 10).await.unwrap().len(), 2);
    assert!(store.runs(&d(), "crm", 10).await.unwrap().is_empty());

    // Disabling acme's leaves globex's running.
    a.enabled = false;
    scheduler.put_integration(&a).await.unwrap();
    let ran = scheduler
        .run_due(t0() + chrono::Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(ran.len(), 1);
    assert_eq!(ran[0].tenant, globex);

    // run_now and the admin table are per tenant.
    assert_eq!(
        scheduler.run_now(&acme, "crm").await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(
        scheduler.run_now(&d(), "crm").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let globex_rows = scheduler.integrations(Some(&globex)).await.unwrap();
    assert_eq!(globex_rows.len(), 1);
    assert_eq!(
        (globex_rows[0].tenant.as_str(), globex_rows[0].enabled),
        ("globex", true)
    );
    let all = scheduler.integrations(None).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|r| (r.tenant.as_str(), r.enabled))
            .collect::<Vec<_>>(),
        [("acme", false), ("globex", true)]
    );
}

#[tokio::test]
async fn a_run_of_one_tenant_does_not_block_the_same_integration_of_another() {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let store = setup(&[
        tenant_config(acme.clone(), "crm", hourly()),
        tenant_config(globex.clone(), "crm", hourly()),
    ])
    .await;
    let gate = Arc::new(Notify::new());
    let job = TestJob::gated("crm", gate.clone());
    let scheduler = Scheduler::new(store.clone()).job(job.clone());
    let first = tokio::spawn({
        let scheduler = scheduler.clone();
        let acme = acme.clone();
        async move { scheduler.run_now(&acme, "crm").await }
    });
    job.started.notified().await;
    assert_eq!(
        scheduler.run_now(&acme, "crm").await.unwrap_err().kind(),
        ErrorKind::Conflict,
        "acme's own run is in progress"
    );
    let second = tokio::spawn({
        let scheduler = scheduler.clone();
        let globex = globex.clone();
        async move { scheduler.run_now(&globex, "crm").await }
    });
    job.started.notified().await;
    assert_eq!(job.runs(), 2, "globex's run started beside acme's");
    gate.notify_one();
    gate.notify_one();
    let (a, b) = (
        first.await.unwrap().unwrap(),
        second.await.unwrap().unwrap(),
    );
    assert_eq!((a.tenant, b.tenant), (acme, globex));
    assert_eq!(
        (a.outcome, b.outcome),
        (RunOutcome::Success, RunOutcome::Success)
    );
}

/// A job that stops when told to shut down, as a long import should.
struct Cooperative {
    started: Arc<Notify>,
}

#[async_trait]
impl ScheduledJob for Cooperative {
    fn name(&self) -> &str {
        "coop"
    }
    async fn run(&self, ctx: &mut RunContext) -> switchboard::Result<()> {
        ctx.add_rows_read(7);
        self.started.notify_one();
        let mut shutdown = ctx.shutdown().clone();
        tokio::select! {
            () = shutdown.wait() => Err(Error::new(ErrorKind::Shutdown, "stopped by shutdown after 7 rows")),
            () = tokio::time::sleep(Duration::from_secs(24 * 3600)) => Ok(()),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_reaches_running_jobs_which_end_abandoned() {
    let store = setup(&[config("coop", hourly())]).await;
    let started = Arc::new(Notify::new());
    let scheduler = Scheduler::new(store.clone())
        .clock(test_clock())
        .job(Arc::new(Cooperative {
            started: started.clone(),
        }));
    let (trigger, shutdown) = Shutdown::new();
    let task = tokio::spawn({
        let scheduler = scheduler.clone();
        async move { scheduler.run(shutdown).await }
    });
    started.notified().await;
    trigger.trigger();
    // The job sees the signal at once; the scheduler does not wait out the grace.
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("run returns as soon as the job stopped")
        .unwrap()
        .unwrap();
    let runs = store.runs(&d(), "coop", 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].outcome, RunOutcome::Abandoned);
    assert_eq!(runs[0].rows_read, 7, "what it did before stopping is kept");
    assert!(runs[0].finished_at.is_some());
    assert!(runs[0].error.as_deref().unwrap().contains("shutdown"));
}

#[tokio::test(start_paused = true)]
async fn a_job_ignoring_shutdown_is_cancelled_after_the_grace_period() {
    let store = setup(&[config("stuck", hourly())]).await;
    let gate = Arc::new(Notify::new()); // never notified
    let job = TestJob::gated("stuck", gate);
    let grace = Duration::from_secs(10);
    assert_eq!(Scheduler::DEFAULT_SHUTDOWN_GRACE, grace);
    let scheduler = Scheduler::new(store.clone())
        .clock(test_clock())
        .job(job.clone());
    let (trigger, shutdown) = Shutdown::new();
    let mut task = tokio::spawn({
        let scheduler = scheduler.clone();
        async move { scheduler.run(shutdown).await }
    });
    job.started.notified().await;
    trigger.trigger();
    // Within the grace period the scheduler waits for the job.
    assert!(
        tokio::time::timeout(grace - Duration::from_secs(1), &mut task)
            .await
            .is_err(),
        "the run in progress is given the grace period"
    );
    assert_eq!(
        store.runs(&d(), "stuck", 1).await.unwrap()[0].outcome,
        RunOutcome::Running
    );
    // Then it is cancelled and recorded; run returns.
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("run returns after the grace period")
        .unwrap()
        .unwrap();
    let runs = store.runs(&d(), "stuck", 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].outcome, RunOutcome::Abandoned);
    assert!(runs[0].error.as_deref().unwrap().contains("grace period"));
    // Not "running" any more: another instance may run it at once.
    let other = Scheduler::new(store.clone()).job(job.clone());
    let again = tokio::spawn(async move { other.run_now(&TenantId::default(), "stuck").await });
    job.started.notified().await;
    assert!(!again.is_finished());
    again.abort();
}

#[tokio::test(start_paused = true)]
async fn the_shutdown_grace_is_configurable() {
    let store = setup(&[config("stuck", hourly())]).await;
    let job = TestJob::gated("stuck", Arc::new(Notify::new()));
    let scheduler = Scheduler::new(store.clone())
        .clock(test_clock())
        .shutdown_grace(Duration::from_secs(60))
        .job(job.clone());
    let (trigger, shutdown) = Shutdown::new();
    let mut task = tokio::spawn({
        let scheduler = scheduler.clone();
        async move { scheduler.run(shutdown).await }
    });
    job.started.notified().await;
    trigger.trigger();
    assert!(
        tokio::time::timeout(Duration::from_secs(59), &mut task)
            .await
            .is_err()
    );
    tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("returns after 60 s")
        .unwrap()
        .unwrap();
    assert_eq!(
        store.runs(&d(), "stuck", 1).await.unwrap()[0].outcome,
        RunOutcome::Abandoned
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_left_by_a_dead_process_is_taken_over_within_minutes() {
    let store = setup(&[config("crm", Schedule::Interval(Duration::from_secs(60)))]).await;
    assert!(
        Scheduler::DEFAULT_LEASE <= Duration::from_secs(10 * 60),
        "the run lease is a few minutes"
    );
    // A process started a run with the default lease and died: no heartbeat.
    let dead = store
        .start_run(&d(), "crm", t0(), Scheduler::DEFAULT_LEASE)
        .await
        .unwrap()
        .unwrap();
    let job = TestJob::new(
        "crm",
        Behaviour::Import {
            read: 1,
            rejected: 0,
        },
    );
    let scheduler = Scheduler::new(store.clone()).job(job.clone());
    // Due again after a minute, but still held by the dead run's lease.
    let soon = t0() + chrono::Duration::minutes(2);
    assert!(scheduler.run_due(soon).await.unwrap().is_empty());
    // Once the lease ran out (and the backoff after the refused start), it runs.
    let later = t0()
        + chrono::Duration::from_std(Scheduler::DEFAULT_LEASE).unwrap()
        + chrono::Duration::minutes(2);
    let ran = scheduler.run_due(later).await.unwrap();
    assert_eq!(ran.len(), 1);
    assert_ne!(ran[0].id, dead.id);
    assert_eq!(job.runs(), 1);
}
