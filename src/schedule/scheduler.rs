//! The [`Scheduler`]: runs jobs on their integrations' schedules and records every run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{IntegrationRow, RunContext, ScheduledJob, next_fire};
use crate::integration::{IntegrationConfig, RunOutcome, RunRecord, Schedule};
use crate::source::{Shutdown, ShutdownTrigger};
use crate::store::Store;
use crate::tenant::TenantId;
use crate::{Error, ErrorKind, Result};

type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// An integration: (tenant, name).
type RunKey = (TenantId, String);

fn run_key(config: &IntegrationConfig) -> RunKey {
    (config.tenant.clone(), config.name.clone())
}

#[derive(Default)]
struct State {
    /// Integrations with a run in progress in this process.
    running: HashSet<RunKey>,
    /// When this scheduler first saw each integration (anchors cron schedules
    /// that never ran).
    first_seen: HashMap<RunKey, DateTime<Utc>>,
    /// Integrations not to try again before a time (another instance holds the
    /// run, or starting failed).
    backoff_until: HashMap<RunKey, DateTime<Utc>>,
}

/// Removes an integration from the running set when the run ends, however it ends.
struct RunningGuard {
    state: Arc<Mutex<State>>,
    key: RunKey,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        lock(&self.state).running.remove(&self.key);
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How long [`Scheduler::run`] waits, beyond the grace period, for cancelled
/// runs to write their records.
const RECORD_SLACK: Duration = Duration::from_secs(2);

/// Runs [`ScheduledJob`]s on the schedules of their integrations, for every
/// tenant, and records every run.
///
/// - The configurations of all tenants are read from the store before every
///   round, so changes take effect on the next run; a disabled integration does
///   not run. Each tenant's integration runs on its own schedule with its own
///   run history, even when one job serves several tenants.
/// - Runs of one integration (tenant and name) never overlap: a process-local
///   guard plus the store's run lease ([`crate::store::RunStore::start_run`])
///   across processes. The lease is short (5 minutes by default) and renewed
///   by a heartbeat while the job works, so a run whose process died is taken
///   over within minutes.
/// - An interval schedule counts from the start of the last run (an integration
///   that never ran is due at once); a cron schedule fires at its next occurrence
///   after the last run (or after the scheduler first saw it). Missed occurrences
///   collapse into one run.
/// - Outcome: `failed` if the job returned an error (or panicked) or every row read
///   was rejected, `partial` if some rows were rejected, `abandoned` if it was
///   stopped by shutdown, `success` otherwise.
/// - Shutdown ([`Scheduler::run`]): running jobs see the signal in
///   [`RunContext::shutdown`] and get a grace period (10 s by default,
///   [`Scheduler::shutdown_grace`]) to finish; those still running are then
///   cancelled and recorded as `abandoned`, so no run stays "running" after the
///   process exits.
///
/// Time comes from a clock that follows `tokio::time` (so a paused test clock
/// drives it) unless [`Scheduler::clock`] sets another.
#[derive(Clone)]
pub struct Scheduler {
    store: Arc<dyn Store>,
    jobs: BTreeMap<String, Arc<dyn ScheduledJob>>,
    lease: Duration,
    poll: Duration,
    grace: Duration,
    clock: Clock,
    state: Arc<Mutex<State>>,
    /// Never triggered: the shutdown signal for runs outside [`Scheduler::run`].
    idle: Arc<(ShutdownTrigger, Shutdown)>,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("jobs", &self.jobs.keys().collect::<Vec<_>>())
            .field("lease", &self.lease)
            .field("poll", &self.poll)
            .field("shutdown_grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// The default run lease: how long a run may go without a heartbeat before
    /// another instance may consider it dead and start a new one. The heartbeat
    /// renews it every third of it while the job works.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(5 * 60);
    /// The default longest sleep between checks of the store.
    pub const DEFAULT_POLL: Duration = Duration::from_secs(60);
    /// The default time [`Scheduler::run`] gives running jobs to finish after
    /// shutdown before cancelling them.
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

    /// A scheduler over `store`, with no jobs yet.
    pub fn new(store: Arc<dyn Store>) -> Self {
        let engine_clock = crate::clock::EngineClock::new();
        let clock: Clock = Arc::new(move || engine_clock.now());
        Scheduler {
            store,
            jobs: BTreeMap::new(),
            lease: Self::DEFAULT_LEASE,
            poll: Self::DEFAULT_POLL,
            grace: Self::DEFAULT_SHUTDOWN_GRACE,
            clock,
            state: Arc::new(Mutex::new(State::default())),
            idle: Arc::new(Shutdown::new()),
        }
    }

    /// Registers a job under its name (replacing a job of the same name).
    #[must_use]
    pub fn job(mut self, job: Arc<dyn ScheduledJob>) -> Self {
        self.jobs.insert(job.name().to_owned(), job);
        self
    }

    /// Sets the run lease (default 5 minutes). The heartbeat renews it every
    /// third of it, so it only needs to exceed the longest stall of this process
    /// (not the longest run).
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets the longest sleep between checks of the store (default 60 s), which
    /// bounds how late a configuration change is noticed.
    #[must_use]
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(10));
        self
    }

    /// Sets how long [`Scheduler::run`] lets running jobs finish after shutdown
    /// before cancelling them (default 10 s). Cancelled runs are recorded as
    /// [`RunOutcome::Abandoned`].
    #[must_use]
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How long [`Scheduler::run`] waits for running jobs on shutdown.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Replaces the clock ("now") the scheduler uses.
    #[must_use]
    pub fn clock(mut self, clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Validates the schedule and saves the integration's configuration (under
    /// its tenant); it takes effect on the next run. Refuses a configuration its
    /// job rejects ([`ScheduledJob::check_config`], e.g. an attribute another
    /// integration imports, named in the error) or an invalid
    /// [`crate::attributes::ImportMode`] setting. Attribute names the
    /// integration no longer maps are freed, their values deleted.
    pub async fn put_integration(&self, config: &IntegrationConfig) -> Result<()> {
        crate::attributes::import_mode_of(&config.settings)?;
        if config.name.trim().is_empty() {
            return Err(Error::config("an integration needs a name"));
        }
        if config.name.chars().any(char::is_control) {
            return Err(Error::config(
                "an integration's name must not contain control characters",
            ));
        }
        next_fire(&config.schedule, (self.clock)())?;
        if let Some(job) = self.job_for(config) {
            let others: Vec<IntegrationConfig> = self
                .store
                .integrations(Some(&config.tenant))
                .await?
                .into_iter()
                .filter(|c| c.tenant == config.tenant && c.name != config.name)
                .collect();
            job.check_config(config, &others)?;
            for other in &others {
                if let Some(theirs) = self.job_for(other) {
                    if !Arc::ptr_eq(&theirs, &job) {
                        theirs.check_config(config, std::slice::from_ref(other))?;
                    }
                }
            }
        }
        self.store.put_integration(config).await?;
        if let Some(names) = self.job_for(config).and_then(|j| j.attribute_names(config)) {
            self.store
                .release_names(&config.tenant, &config.name, &names)
                .await?;
        }
        Ok(())
    }

    /// Deletes the integration (under its tenant) with its attribute names
    /// (freed under the cap) and their values; true if it existed.
    pub async fn delete_integration(&self, tenant: &TenantId, name: &str) -> Result<bool> {
        self.store.delete_integration(tenant, name).await
    }

    /// Runs due jobs of every tenant until `shutdown` fires, then gives runs in
    /// progress the grace period ([`Scheduler::shutdown_grace`]) to finish: they
    /// see the signal in [`RunContext::shutdown`]; those still running after it
    /// are cancelled and recorded as [`RunOutcome::Abandoned`]. Returns within
    /// the grace period (plus a moment to write the records).
    pub async fn run(&self, shutdown: Shutdown) -> Result<()> {
        let mut shutdown = shutdown;
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            if shutdown.is_requested() {
                break;
            }
            let now = (self.clock)();
            let wake = match self.plan(now).await {
                Ok(plan) => {
                    for (job, config, guard) in plan.due {
                        let this = self.clone();
                        let signal = shutdown.clone();
                        tasks.spawn(async move {
                            let name = config.name.clone();
                            let tenant = config.tenant.clone();
                            if let Err(e) = this.execute(job, config, now, signal, guard).await {
                                tracing::warn!(tenant = %tenant, integration = %name, error = %e, "scheduled run did not happen");
                            }
                        });
                    }
                    plan.wake
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler could not read integrations");
                    None
                }
            };
            let sleep_for = wake
                .map(|at| (at - (self.clock)()).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(self.poll)
                .min(self.poll);
            tokio::select! {
                () = tokio::time::sleep(sleep_for) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                () = shutdown.wait() => break,
            }
        }
        // Each run gives its job the grace period, then cancels it and records
        // it as abandoned; this bound only guards against a store that hangs
        // while those records are written.
        let drained = tokio::time::timeout(self.grace + RECORD_SLACK, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                runs = tasks.len(),
                "scheduled runs did not finish after shutdown; cancelling them"
            );
            tasks.abort_all();
        }
        Ok(())
    }

    /// Runs every enabled job that is due at `now`, concurrently, and returns their
    /// records (sorted by tenant and integration). Jobs already running (here or
    /// in another instance) are left alone.
    pub async fn run_due(&self, now: DateTime<Utc>) -> Result<Vec<RunRecord>> {
        let plan = self.plan(now).await?;
        let mut tasks = tokio::task::JoinSet::new();
        for (job, config, guard) in plan.due {
            let this = self.clone();
            let signal = self.idle.1.clone();
            tasks.spawn(async move { this.execute(job, config, now, signal, guard).await });
        }
        let mut records = Vec::new();
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(record)) => records.push(record),
                Ok(Err(e)) if e.kind() == ErrorKind::Conflict => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(join) => {
                    first_error.get_or_insert(Error::new(
                        ErrorKind::Store,
                        format!("a scheduled run's task failed: {join}"),
                    ));
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        records.sort_by(|a, b| (&a.tenant, &a.integration).cmp(&(&b.tenant, &b.integration)));
        Ok(records)
    }

    /// Runs one integration of `tenant` now, whatever its schedule, and returns
    /// its record.
    ///
    /// [`ErrorKind::NotFound`] if the tenant has no integration of that name or
    /// no job runs it, [`ErrorKind::Conflict`] if it is disabled or a run of it
    /// is in progress.
    pub async fn run_now(&self, tenant: &TenantId, name: &str) -> Result<RunRecord> {
        let config = self
            .store
            .integrations(Some(tenant))
            .await?
            .into_iter()
            .find(|c| c.name == name && &c.tenant == tenant)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("integration {name:?} of tenant {tenant} is not configured"),
                )
            })?;
        let job = self.job_for(&config).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("no job is registered for integration {name:?}"),
            )
        })?;
        if !config.enabled {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("integration {name:?} of tenant {tenant} is disabled"),
            ));
        }
        let guard = self
            .claim_local(&config)
            .ok_or_else(|| Self::in_progress(&config))?;
        let now = (self.clock)();
        self.execute(job, config, now, self.idle.1.clone(), guard)
            .await
    }

    /// The admin table: the configured integrations (of one tenant when given,
    /// else of all) with their schedule, last run and outcome, properties
    /// imported and enabled switch, by tenant and name.
    pub async fn integrations(&self, tenant: Option<&TenantId>) -> Result<Vec<IntegrationRow>> {
        let now = (self.clock)();
        let mut rows = Vec::new();
        for config in self.store.integrations(tenant).await? {
            if tenant.is_some_and(|t| t != &config.tenant) {
                continue;
            }
            let runs = self.store.runs(&config.tenant, &config.name, 200).await?;
            let latest = runs.first();
            let last_finished = runs.iter().find(|r| r.outcome != RunOutcome::Running);
            let last_import = runs.iter().find(|r| r.outcome.is_import());
            let (next_run, schedule_error) = if config.enabled {
                match self.next_due(&config, latest, now) {
                    Ok(next) => (next, None),
                    Err(e) => (None, Some(e.message().to_owned())),
                }
            } else {
                (
                    None,
                    next_fire(&config.schedule, now)
                        .err()
                        .map(|e| e.message().to_owned()),
                )
            };
            rows.push(IntegrationRow {
                has_job: self.job_for(&config).is_some(),
                properties_imported: last_import.map_or(0, |r| r.properties_imported),
                last_import: last_import.map(|r| r.started_at),
                rows_imported: last_import.map_or(0, |r| r.rows_imported),
                last_run: latest.map(|r| r.started_at),
                last_outcome: latest.map(|r| r.outcome),
                last_error: last_finished.and_then(|r| r.error.clone()),
                next_run,
                schedule_error,
                tenant: config.tenant,
                name: config.name,
                source: config.source,
                schedule: config.schedule,
                enabled: config.enabled,
            });
        }
        rows.sort_by(|a, b| (&a.tenant, &a.name).cmp(&(&b.tenant, &b.name)));
        Ok(rows)
    }

    /// The job that runs `config`: the one registered under its name if it
    /// handles it, else the first (by name) that does.
    fn job_for(&self, config: &IntegrationConfig) -> Option<Arc<dyn ScheduledJob>> {
        if let Some(job) = self.jobs.get(&config.name).filter(|j| j.handles(config)) {
            return Some(Arc::clone(job));
        }
        self.jobs.values().find(|j| j.handles(config)).cloned()
    }

    fn in_progress(config: &IntegrationConfig) -> Error {
        Error::new(
            ErrorKind::Conflict,
            format!(
                "a run of integration {:?} of tenant {} is already in progress",
                config.name, config.tenant
            ),
        )
    }

    fn claim_local(&self, config: &IntegrationConfig) -> Option<RunningGuard> {
        let key = run_key(config);
        let mut state = lock(&self.state);
        if !state.running.insert(key.clone()) {
            return None;
        }
        Some(RunningGuard {
            state: Arc::clone(&self.state),
            key,
        })
    }

    /// When `config` is due next, given its latest run.
    fn next_due(
        &self,
        config: &IntegrationConfig,
        latest: Option<&RunRecord>,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>> {
        match (latest, &config.schedule) {
            (Some(run), schedule) => next_fire(schedule, run.started_at),
            (None, Schedule::Interval(_)) => {
                next_fire(&config.schedule, now)?;
                Ok(Some(now))
            }
            (None, schedule) => {
                let anchor = *lock(&self.state)
                    .first_seen
                    .entry(run_key(config))
                    .or_insert(now);
                next_fire(schedule, anchor)
            }
        }
    }

    /// The jobs due at `now` (claimed locally), of every tenant, and when to
    /// look again.
    async fn plan(&self, now: DateTime<Utc>) -> Result<Plan> {
        let mut configs = self.store.integrations(None).await?;
        configs.sort_by(|a, b| (&a.tenant, &a.name).cmp(&(&b.tenant, &b.name)));
        let mut plan = Plan {
            due: Vec::new(),
            wake: None,
        };
        let mut wake_at = |at: DateTime<Utc>| {
            plan.wake = Some(plan.wake.map_or(at, |w: DateTime<Utc>| w.min(at)));
        };
        let mut due = Vec::new();
        for config in configs {
            if !config.enabled {
                continue;
            }
            let Some(job) = self.job_for(&config) else {
                continue;
            };
            let key = run_key(&config);
            if lock(&self.state).running.contains(&key) {
                continue; // its completion wakes the loop
            }
            let backoff = lock(&self.state).backoff_until.get(&key).copied();
            if let Some(until) = backoff.filter(|u| *u > now) {
                wake_at(until);
                continue;
            }
            let latest = self.store.runs(&config.tenant, &config.name, 1).await?;
            let next = match self.next_due(&config, latest.first(), now) {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(tenant = %config.tenant, integration = %config.name, error = %e, "integration has an unusable schedule");
                    continue;
                }
            };
            match next {
                Some(at) if at <= now => {
                    if let Some(guard) = self.claim_local(&config) {
                        due.push((job, config, guard));
                    }
                }
                Some(at) => wake_at(at),
                None => {}
            }
        }
        plan.due = due;
        Ok(plan)
    }

    /// Starts, runs and records one run. `guard` holds the local no-overlap claim.
    async fn execute(
        &self,
        job: Arc<dyn ScheduledJob>,
        config: IntegrationConfig,
        now: DateTime<Utc>,
        shutdown: Shutdown,
        guard: RunningGuard,
    ) -> Result<RunRecord> {
        let key = run_key(&config);
        let started = match self
            .store
            .start_run(&config.tenant, &config.name, now, self.lease)
            .await
        {
            Ok(Some(run)) => run,
            Ok(None) => {
                self.back_off(&key, now);
                return Err(Self::in_progress(&config));
            }
            Err(e) => {
                self.back_off(&key, now);
                return Err(e);
            }
        };
        lock(&self.state).backoff_until.remove(&key);
        let (tenant, name) = key;
        let ctx = RunContext::new(config, started.id, started.started_at, shutdown.clone());
        let clock_start = tokio::time::Instant::now();
        let mut handle = tokio::spawn(async move {
            let mut ctx = ctx;
            let result = job.run(&mut ctx).await;
            (ctx, result)
        });
        // Heartbeat: renew the run's lease while the job works, so a long run is
        // never taken for dead by another instance. If the lease was lost anyway
        // (this process stalled past it and another instance took over), stop the
        // job rather than let two runs overlap. On shutdown the job gets the
        // grace period, then is cancelled.
        let beat = (self.lease / 3).max(Duration::from_millis(100));
        let mut shutdown = shutdown;
        let mut stopping_at: Option<tokio::time::Instant> = None;
        let mut stop = Stop::No;
        let joined = loop {
            tokio::select! {
                joined = &mut handle => break joined,
                _ = tokio::time::sleep(beat) => {
                    match self.store.renew_run(started.id, (self.clock)(), self.lease).await {
                        Ok(true) => {}
                        Ok(false) => {
                            stop = Stop::LeaseLost;
                            handle.abort();
                        }
                        Err(e) => tracing::warn!(tenant = %tenant, integration = %name, error = %e, "could not renew the run's lease"),
                    }
                }
                () = shutdown.wait(), if stopping_at.is_none() => {
                    stopping_at = Some(tokio::time::Instant::now() + self.grace);
                }
                () = sleep_until_some(stopping_at), if stopping_at.is_some() && stop == Stop::No => {
                    tracing::warn!(tenant = %tenant, integration = %name, grace = ?self.grace, "a scheduled run did not stop within the shutdown grace period; cancelling it");
                    stop = Stop::Shutdown;
                    handle.abort();
                }
            }
        };
        // The job's end: `Ok`, or the outcome and error to record.
        let (ctx, result) = match joined {
            Ok((ctx, Ok(()))) => (Some(ctx), Ok(())),
            Ok((ctx, Err(e))) if e.kind() == ErrorKind::Shutdown => (
                Some(ctx),
                Err((RunOutcome::Abandoned, e.message().to_owned())),
            ),
            Ok((ctx, Err(e))) => (Some(ctx), Err((RunOutcome::Failed, e.to_string()))),
            Err(join) if join.is_panic() => (
                None,
                Err((RunOutcome::Failed, "the job panicked".to_owned())),
            ),
            Err(_) => (
                None,
                Err(match stop {
                    Stop::LeaseLost => (
                        RunOutcome::Failed,
                        "stopped: the run's lease was lost to another instance".to_owned(),
                    ),
                    Stop::Shutdown => (
                        RunOutcome::Abandoned,
                        format!(
                            "cancelled by shutdown after a grace period of {:?}; the next run starts over",
                            self.grace
                        ),
                    ),
                    Stop::No => (RunOutcome::Failed, "the job was cancelled".to_owned()),
                }),
            ),
        };
        let mut record = started.clone();
        record.finished_at = Some(crate::clock::later(
            started.started_at,
            clock_start.elapsed(),
        ));
        let mut ctx_outcome = None;
        if let Some(ctx) = ctx {
            ctx_outcome = ctx.outcome;
            record.rows_read = ctx.rows_read;
            record.rows_imported = ctx.rows_imported;
            record.rows_rejected = ctx.rows_rejected;
            record.row_errors = ctx.row_errors;
            record.properties_imported = ctx.properties.len() as u64;
            record.details = serde_json::Value::Object(ctx.details);
        }
        let (outcome, error) = match (result, ctx_outcome) {
            (Err((outcome, message)), _) => (outcome, Some(message)),
            (Ok(()), Some(asked)) => asked,
            (Ok(()), None) if record.rows_rejected > 0 && record.rows_imported == 0 => (
                RunOutcome::Failed,
                Some(format!("all {} rows were rejected", record.rows_rejected)),
            ),
            (Ok(()), None) if record.rows_rejected > 0 => (RunOutcome::Partial, None),
            (Ok(()), None) => (RunOutcome::Success, None),
        };
        record.outcome = outcome;
        record.error = error;
        self.store.finish_run(&record).await?;
        drop(guard);
        Ok(record)
    }

    fn back_off(&self, key: &RunKey, now: DateTime<Utc>) {
        let until = crate::clock::later(now, self.poll);
        lock(&self.state).backoff_until.insert(key.clone(), until);
    }
}

/// Why the scheduler stopped a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    No,
    LeaseLost,
    Shutdown,
}

/// Sleeps until `at` (never resolves for `None`).
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct Plan {
    due: Vec<(Arc<dyn ScheduledJob>, IntegrationConfig, RunningGuard)>,
    wake: Option<DateTime<Utc>>,
}
