//! `SqliteStore`: the embedded default [`Store`], kept in one SQLite file (feature `sqlite`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params,
    params_from_iter,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use super::{
    ClaimedDelivery, Completion, DeadLetter, DeliveryState, DestinationStats, EnqueueOutcome,
    Installation, LogEntry, LogStatus, NewDelivery, Outcome, Store,
};
use crate::attributes::{
    AttributeRecord, AttributeStore, Attributes, DEFAULT_ATTRIBUTE_CAP, Filter, UpsertStats,
    check_attribute_cap,
};
use crate::destination::{DeliveryError, DeliveryId};
use crate::event::Event;
use crate::identity::{IdentityLink, LinkOrigin};
use crate::integration::{IntegrationConfig, RunOutcome, RunRecord};
use crate::message::Target;
use crate::{Error, ErrorKind, Result};

/// How hard SQLite works to make each commit durable.
///
/// Both settings use the write-ahead log (WAL); the database is never corrupted
/// by a crash, the difference is whether the last commits can be lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// `synchronous = NORMAL`: a commit survives the process crashing or being
    /// killed; the last commits before a power loss or OS crash may be lost.
    /// Much faster (no `fsync` per commit).
    #[default]
    Normal,
    /// `synchronous = FULL`: every commit is `fsync`ed; it also survives power loss.
    Full,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        }
    }
}

/// A [`Store`] in one SQLite file: the embedded default (feature `sqlite`).
///
/// - The file is created on [`SqliteStore::open`] and its schema is migrated
///   (`PRAGMA user_version`) in a transaction; opening a file written by a newer
///   version of switchboard fails rather than guessing.
/// - Write-ahead logging; durability per [`Durability`] (default
///   [`Durability::Normal`]: survives process crashes).
/// - No SQLite call runs on an async worker thread. Writes go to one dedicated
///   writer thread that commits the requests waiting at that moment together
///   (group commit): each request runs in its own savepoint, so it succeeds or
///   fails on its own, and its caller is answered only after the commit. Reads
///   run on Tokio's blocking pool, on a second connection for files (the
///   write-ahead log lets it read while the writer writes).
/// - Round trips are kept short by polling instead of sleeping for a moment:
///   the writer thread polls for the next request for 50 µs after each batch,
///   and a caller whose short request found the writer idle polls for the
///   answer for up to 50 µs before yielding (not with [`Durability::Full`],
///   whose commits wait for the disk). Waking a sleeping thread costs more than
///   a small commit; this doubles the rate of a caller that publishes in a loop.
/// - Several processes may open the same file: writes take the database lock
///   up front (`BEGIN IMMEDIATE`) and wait up to 5 seconds for it; a database
///   that stays busy is reported as a temporary [`ErrorKind::Store`] error.
/// - Times are stored as Unix milliseconds; the store never reads the clock.
/// - **Installation tokens are stored in plain text** in the `installations`
///   table (columns `token`, `refresh_token`): protect the file like any other
///   credential store (file permissions, disk encryption). They never appear in
///   `Debug` output or errors.
///
/// Cheap to clone (an `Arc` inside); usable as `Arc<dyn Store>`. The writer
/// thread stops and the file is closed when the last clone is dropped.
///
/// ```no_run
/// # fn main() -> switchboard::Result<()> {
/// use switchboard::store::{Durability, SqliteStore};
/// let store = SqliteStore::open("switchboard.db")?
///     .with_durability(Durability::Full)?
///     .with_attribute_cap(200);
/// # let _ = store; Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    attribute_cap: usize,
}

struct Inner {
    /// Feeds the writer thread; `None` once dropping.
    jobs: Option<mpsc::Sender<Box<dyn Queued>>>,
    writer_thread: Option<JoinHandle<()>>,
    /// Requests sent to the writer thread and not yet answered.
    pending: Arc<AtomicUsize>,
    /// Whether callers briefly poll for the answer (off with [`Durability::Full`],
    /// whose commits wait for the disk).
    poll_answers: AtomicBool,
    /// The writer connection: used by the writer thread, and for reads of
    /// in-memory databases (which cannot have a second connection).
    writer: Arc<Mutex<Connection>>,
    /// A second connection for reads (files only).
    reader: Option<Mutex<Connection>>,
    path: Option<PathBuf>,
}

/// Locks a connection. Poisoning is ignored: requests run under
/// `catch_unwind`, reads hold no transaction, and the writer rolls back any
/// transaction it finds open before starting a batch.
fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn read(&self) -> MutexGuard<'_, Connection> {
        lock(self.reader.as_ref().unwrap_or(&self.writer))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer thread after its last batch; waiting
        // for it means the file is closed when the last handle is gone.
        drop(self.jobs.take());
        if let Some(thread) = self.writer_thread.take() {
            if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
                tracing::error!("the SQLite store's writer thread panicked");
            }
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("attribute_cap", &self.attribute_cap)
            .finish_non_exhaustive()
    }
}

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const STATEMENT_CACHE: usize = 64;

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates its
    /// schema. Uses [`Durability::Normal`] and [`DEFAULT_ATTRIBUTE_CAP`].
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        let opening = |e: DbError| Error::from(e).context(format!("opening {}", path.display()));
        let mut writer = Connection::open(&path).map_err(|e| opening(e.into()))?;
        configure(&writer, true).map_err(opening)?;
        migrate(&mut writer).map_err(opening)?;
        let reader = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(|e| opening(e.into()))?;
        configure(&reader, false).map_err(opening)?;
        Self::start(writer, Some(reader), Some(path.clone())).map_err(opening)
    }

    /// A private in-memory database (gone when the last clone is dropped); for
    /// tests. Same schema and behaviour as a file.
    pub fn open_in_memory() -> Result<SqliteStore> {
        let opening = |e: DbError| Error::from(e).context("opening an in-memory database");
        let mut writer = Connection::open_in_memory().map_err(|e| opening(e.into()))?;
        configure(&writer, true).map_err(opening)?;
        migrate(&mut writer).map_err(opening)?;
        Self::start(writer, None, None).map_err(opening)
    }

    fn start(
        writer: Connection,
        reader: Option<Connection>,
        path: Option<PathBuf>,
    ) -> Db<SqliteStore> {
        let writer = Arc::new(Mutex::new(writer));
        let pending = Arc::new(AtomicUsize::new(0));
        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("switchboard-sqlite".to_owned())
            .spawn({
                let writer = Arc::clone(&writer);
                let pending = Arc::clone(&pending);
                move || writer_loop(&writer, &queue, &pending)
            })
            .map_err(|e| {
                Error::new(ErrorKind::Store, "could not start the writer thread").with_source(e)
            })?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                jobs: Some(jobs),
                writer_thread: Some(thread),
                pending,
                poll_answers: AtomicBool::new(true),
                writer,
                reader: reader.map(Mutex::new),
                path,
            }),
            attribute_cap: DEFAULT_ATTRIBUTE_CAP,
        })
    }

    /// Sets the cap on distinct attribute names across all integrations
    /// (default [`DEFAULT_ATTRIBUTE_CAP`]). Applies to this handle and clones
    /// made from it afterwards.
    #[must_use]
    pub fn with_attribute_cap(mut self, cap: usize) -> Self {
        self.attribute_cap = cap;
        self
    }

    /// Sets how durable commits are (default [`Durability::Normal`]). Applies to
    /// the shared writer connection, so to every clone.
    pub fn with_durability(self, durability: Durability) -> Result<Self> {
        lock(&self.inner.writer)
            .pragma_update(None, "synchronous", durability.pragma())
            .map_err(|e| Error::from(DbError::from(e)).context("setting durability"))?;
        self.inner
            .poll_answers
            .store(durability == Durability::Normal, Ordering::Relaxed);
        Ok(self)
    }

    /// The database file, or `None` for an in-memory database.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Runs `f` on the writer thread, atomically, and waits for the commit.
    /// `what` names the operation in errors.
    async fn write<R, F>(&self, what: &'static str, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Db<R> + Send + 'static,
    {
        self.send(what, f, true).await
    }

    /// [`SqliteStore::write`] for requests that take long (big batches): the
    /// caller does not poll for the answer.
    async fn write_long<R, F>(&self, what: &'static str, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Db<R> + Send + 'static,
    {
        self.send(what, f, false).await
    }

    async fn send<R, F>(&self, what: &'static str, f: F, short: bool) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Db<R> + Send + 'static,
    {
        let stopped = || {
            Error::new(
                ErrorKind::Store,
                format!("{what}: the store's writer thread has stopped"),
            )
        };
        let (reply, mut answer) = oneshot::channel();
        let jobs = self.inner.jobs.as_ref().ok_or_else(stopped)?;
        let queued_before = self.inner.pending.fetch_add(1, Ordering::AcqRel);
        if jobs.send(Box::new(Job { what, f, reply })).is_err() {
            self.inner.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(stopped());
        }
        // A short request to an idle writer (which is polling for work) is
        // answered within tens of microseconds, well before this task could be
        // put to sleep and woken again: poll for the answer for a moment first.
        // This doubles the rate of a caller that writes in a loop; the task never
        // spends longer than ANSWER_POLL here.
        if short && queued_before == 0 && self.inner.poll_answers.load(Ordering::Relaxed) {
            let deadline = Instant::now() + ANSWER_POLL;
            loop {
                match answer.try_recv() {
                    Ok(result) => return result,
                    Err(oneshot::error::TryRecvError::Closed) => return Err(stopped()),
                    Err(oneshot::error::TryRecvError::Empty) => {}
                }
                if Instant::now() >= deadline {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        answer.await.map_err(|_| stopped())?
    }

    /// Runs `f` on the blocking thread pool with the reader connection.
    async fn read<R, F>(&self, what: &'static str, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Db<R> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        match tokio::task::spawn_blocking(move || f(&inner.read())).await {
            Ok(result) => result.map_err(|e| with_context(e.into(), what)),
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(join) => Err(Error::new(
                ErrorKind::Store,
                format!("{what}: the store's blocking task was cancelled"),
            )
            .with_source(join)),
        }
    }
}

/// Names the operation in store errors; other kinds (NotFound, AttributeCap…)
/// keep their message as is.
fn with_context(e: Error, what: &str) -> Error {
    if e.kind() == ErrorKind::Store {
        e.context(what)
    } else {
        e
    }
}

// --- the writer thread ---

/// The most requests committed in one transaction.
const MAX_BATCH: usize = 256;

/// How long the writer thread polls for the next request before sleeping, and
/// how long a caller polls for a short request's answer before sleeping. Waking a
/// sleeping thread costs more than a small commit.
const WRITER_POLL: Duration = Duration::from_micros(50);
const ANSWER_POLL: Duration = Duration::from_micros(50);

/// Why a whole batch failed (shared by every request in it).
struct BatchFailure {
    message: String,
    temporary: bool,
}

impl BatchFailure {
    fn new(e: &rusqlite::Error) -> Self {
        BatchFailure {
            message: e.to_string(),
            temporary: is_busy(e),
        }
    }

    fn error(&self, what: &str) -> Error {
        let e = Error::new(
            ErrorKind::Store,
            format!("{what}: the transaction failed: {}", self.message),
        );
        if self.temporary { e.temporary() } else { e }
    }
}

/// A write request waiting for the writer thread.
trait Queued: Send {
    /// Runs it (inside the open transaction).
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Ran>;
    /// Answers it with the batch's failure without running it.
    fn abort(self: Box<Self>, failure: &BatchFailure);
}

/// A request that ran and waits for its transaction's outcome.
trait Ran: Send {
    fn succeeded(&self) -> bool;
    /// Answers the caller: its own result, or the commit's failure.
    fn finish(self: Box<Self>, failure: Option<&BatchFailure>);
}

struct Job<R, F> {
    what: &'static str,
    f: F,
    reply: oneshot::Sender<Result<R>>,
}

struct Done<R> {
    what: &'static str,
    result: Result<R>,
    reply: oneshot::Sender<Result<R>>,
}

impl<R, F> Queued for Job<R, F>
where
    R: Send + 'static,
    F: FnOnce(&Connection) -> Db<R> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Ran> {
        let Job { what, f, reply } = *self;
        let result = match catch_unwind(AssertUnwindSafe(|| f(conn))) {
            Ok(result) => result.map_err(|e| with_context(e.into(), what)),
            Err(_) => Err(Error::new(
                ErrorKind::Store,
                format!("{what}: panicked on the store's writer thread"),
            )),
        };
        Box::new(Done {
            what,
            result,
            reply,
        })
    }

    fn abort(self: Box<Self>, failure: &BatchFailure) {
        // The caller may have given up waiting; nothing to do then.
        let _ = self.reply.send(Err(failure.error(self.what)));
    }
}

impl<R: Send + 'static> Ran for Done<R> {
    fn succeeded(&self) -> bool {
        self.result.is_ok()
    }

    fn finish(self: Box<Self>, failure: Option<&BatchFailure>) {
        let result = match (self.result, failure) {
            (Ok(_), Some(failure)) => Err(failure.error(self.what)),
            (result, _) => result,
        };
        // The caller may have given up waiting; nothing to do then.
        let _ = self.reply.send(result);
    }
}

/// Waits for the next request, polling for a moment before sleeping.
fn next_job(queue: &mpsc::Receiver<Box<dyn Queued>>) -> Option<Box<dyn Queued>> {
    let deadline = Instant::now() + WRITER_POLL;
    loop {
        match queue.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        if Instant::now() >= deadline {
            return queue.recv().ok();
        }
        std::hint::spin_loop();
    }
}

fn writer_loop(
    conn: &Mutex<Connection>,
    queue: &mpsc::Receiver<Box<dyn Queued>>,
    pending: &AtomicUsize,
) {
    while let Some(first) = next_job(queue) {
        let mut batch = Vec::with_capacity(16);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&lock(conn), batch, pending);
    }
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        if let Err(e) = exec(conn, "ROLLBACK") {
            tracing::error!(error = %e, "SQLite store: rollback failed");
        }
    }
}

/// Runs a batch of requests in one transaction, each in its own savepoint (a
/// lone request needs none), commits, then answers every caller.
fn run_batch(conn: &Connection, batch: Vec<Box<dyn Queued>>, pending: &AtomicUsize) {
    // Counted as answered just before the answers go out, so a caller that
    // writes again at once finds the writer idle.
    let answered = batch.len();
    rollback(conn);
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        let failure = BatchFailure::new(&e);
        pending.fetch_sub(answered, Ordering::AcqRel);
        for job in batch {
            job.abort(&failure);
        }
        return;
    }
    let single = batch.len() == 1;
    let mut ran: Vec<Box<dyn Ran>> = Vec::with_capacity(batch.len());
    let mut broken: Option<BatchFailure> = None;
    for job in batch {
        if let Some(failure) = &broken {
            job.abort(failure);
            continue;
        }
        if single {
            ran.push(job.run(conn));
            continue;
        }
        if let Err(e) = exec(conn, "SAVEPOINT job") {
            let failure = BatchFailure::new(&e);
            job.abort(&failure);
            broken = Some(failure);
            continue;
        }
        let done = job.run(conn);
        let end = if done.succeeded() {
            exec(conn, "RELEASE job")
        } else {
            exec(conn, "ROLLBACK TO job").and_then(|()| exec(conn, "RELEASE job"))
        };
        if let Err(e) = end {
            broken = Some(BatchFailure::new(&e));
        }
        ran.push(done);
    }
    let failure = if broken.is_some() {
        rollback(conn);
        broken
    } else if single && !ran.iter().all(|r| r.succeeded()) {
        rollback(conn);
        None
    } else {
        match exec(conn, "COMMIT") {
            Ok(()) => None,
            Err(e) => {
                rollback(conn);
                Some(BatchFailure::new(&e))
            }
        }
    };
    pending.fetch_sub(answered, Ordering::AcqRel);
    for done in ran {
        done.finish(failure.as_ref());
    }
}

// --- errors and conversions ---

/// Errors inside the blocking closures; `?` works on rusqlite and serde_json errors.
enum DbError {
    Sql(rusqlite::Error),
    Json(serde_json::Error),
    Other(Error),
}

type Db<T> = std::result::Result<T, DbError>;

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sql(e)
    }
}

impl From<rusqlite::types::FromSqlError> for DbError {
    fn from(e: rusqlite::types::FromSqlError) -> Self {
        DbError::Other(Error::new(ErrorKind::Store, "unexpected stored value").with_source(e))
    }
}

impl From<serde_json::Error> for DbError {
    fn from(e: serde_json::Error) -> Self {
        DbError::Json(e)
    }
}

impl From<Error> for DbError {
    fn from(e: Error) -> Self {
        DbError::Other(e)
    }
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Sql(e) => {
                let busy = is_busy(&e);
                let err = Error::new(ErrorKind::Store, "SQLite failed").with_source(e);
                if busy { err.temporary() } else { err }
            }
            DbError::Json(e) => {
                Error::new(ErrorKind::Store, "stored JSON is invalid").with_source(e)
            }
            DbError::Other(e) => e,
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn corrupt(message: impl Into<String>) -> DbError {
    DbError::Other(Error::new(ErrorKind::Store, message))
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| Error::new(ErrorKind::Store, "could not encode JSON").with_source(e))
}

fn from_json<T: DeserializeOwned>(text: &str) -> Db<T> {
    Ok(serde_json::from_str(text)?)
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(ms: i64) -> Db<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt(format!("invalid stored time {ms}")))
}

fn opt_time(ms: Option<i64>) -> Db<Option<DateTime<Utc>>> {
    ms.map(time).transpose()
}

/// `start + d` in milliseconds, capped at the latest time `DateTime` can hold
/// (a huge lease means "forever", not an error).
fn plus(start: i64, d: Duration) -> i64 {
    let d = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    start
        .saturating_add(d)
        .min(DateTime::<Utc>::MAX_UTC.timestamp_millis())
}

fn count(n: i64) -> Db<u32> {
    u32::try_from(n).map_err(|_| corrupt(format!("invalid stored count {n}")))
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn state(s: &str) -> Db<DeliveryState> {
    DeliveryState::parse(s).ok_or_else(|| corrupt(format!("unknown stored delivery state {s:?}")))
}

// --- schema ---

/// Migrations, applied in order; entry `i` takes the schema from version `i` to
/// `i + 1` (`PRAGMA user_version`). Append only; never edit a released entry.
const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    "
    -- One row per event id ever enqueued: the idempotency check.
    CREATE TABLE events (
        id          TEXT PRIMARY KEY,
        enqueued_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE deliveries (
        id          INTEGER PRIMARY KEY,
        event_id    TEXT NOT NULL,
        event_kind  TEXT NOT NULL,
        event       TEXT NOT NULL,           -- the Event as JSON, in each of its deliveries
        route       TEXT NOT NULL,
        destination TEXT NOT NULL,
        target      TEXT NOT NULL,           -- the Target as JSON
        state       TEXT NOT NULL,           -- DeliveryState::as_str
        -- queued: when it is due; in_flight: when its lease expires;
        -- otherwise: when it reached its state.
        due_at      INTEGER NOT NULL,
        lease       INTEGER NOT NULL DEFAULT 0,  -- the current claim's token
        attempts    INTEGER NOT NULL DEFAULT 0,
        log_steps   INTEGER NOT NULL DEFAULT 0,  -- entries in delivery_log
        error       TEXT,                    -- dead: the DeliveryError as JSON
        died_at     INTEGER
    );
    -- Partial indexes hold only the rows in their states, so sent deliveries
    -- (the bulk of the table over time) are in none of them.
    -- claim and next_due walk this one in (due_at, id) order; destination and
    -- state make it cover counting and parking.
    CREATE INDEX deliveries_pending ON deliveries (due_at, id, destination, state)
        WHERE state IN ('queued', 'in_flight');
    CREATE INDEX deliveries_parked ON deliveries (destination) WHERE state = 'parked';
    CREATE INDEX deliveries_dead ON deliveries (died_at, id, destination) WHERE state = 'dead';
    -- Clustered by delivery: one B-tree, no second index to write.
    CREATE TABLE delivery_log (
        delivery_id INTEGER NOT NULL,
        step        INTEGER NOT NULL,        -- 1, 2, … (deliveries.log_steps)
        attempt     INTEGER NOT NULL,
        at          INTEGER NOT NULL,
        status      TEXT NOT NULL,           -- LogStatus::as_str
        detail      TEXT,
        PRIMARY KEY (delivery_id, step)
    ) WITHOUT ROWID;
    CREATE TABLE destinations (
        name                TEXT PRIMARY KEY,
        connected           INTEGER NOT NULL DEFAULT 1,
        disconnected_reason TEXT,
        last_success_at     INTEGER,
        last_error          TEXT,
        last_error_at       INTEGER,
        sent                INTEGER NOT NULL DEFAULT 0  -- deliveries sent, ever
    ) WITHOUT ROWID;
    CREATE TABLE identity_links (
        platform    TEXT NOT NULL,
        user_id     TEXT NOT NULL,
        platform_id TEXT NOT NULL,
        origin      TEXT NOT NULL,           -- LinkOrigin::as_str
        linked_at   INTEGER NOT NULL,
        PRIMARY KEY (platform, user_id)
    ) WITHOUT ROWID;
    CREATE TABLE integrations (
        name        TEXT PRIMARY KEY,
        config      TEXT NOT NULL            -- the IntegrationConfig as JSON
    ) WITHOUT ROWID;
    CREATE TABLE runs (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        integration TEXT NOT NULL,
        started_at  INTEGER NOT NULL,
        finished_at INTEGER,
        outcome     TEXT NOT NULL,           -- RunOutcome::as_str
        lease_until INTEGER,                 -- running runs only
        record      TEXT NOT NULL            -- the RunRecord as JSON (columns above win)
    );
    CREATE INDEX runs_integration ON runs (integration, id);
    CREATE TABLE installations (
        platform      TEXT NOT NULL,
        key           TEXT NOT NULL,
        token         TEXT NOT NULL,         -- plain text: protect the file
        refresh_token TEXT,                  -- plain text: protect the file
        expires_at    INTEGER,
        data          TEXT NOT NULL,
        updated_at    INTEGER NOT NULL,
        PRIMARY KEY (platform, key)
    ) WITHOUT ROWID;
    CREATE TABLE remembered (
        scope       TEXT NOT NULL,
        key         TEXT NOT NULL,
        expires_at  INTEGER NOT NULL,
        PRIMARY KEY (scope, key)
    ) WITHOUT ROWID;
    CREATE INDEX remembered_expiry ON remembered (expires_at);
    CREATE TABLE attributes (
        user_id     TEXT PRIMARY KEY,
        attrs       TEXT NOT NULL,           -- JSON object of strings
        updates     INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE TABLE attribute_names (
        name        TEXT PRIMARY KEY
    ) WITHOUT ROWID;
    ",
];

fn configure(conn: &Connection, writer: bool) -> Db<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    if writer {
        // Returns the resulting mode ("memory" for in-memory databases).
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.pragma_update(None, "synchronous", Durability::Normal.pragma())?;
    }
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // 16 MiB of page cache per connection.
    conn.pragma_update(None, "cache_size", -16_000)?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Db<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len();
    let current = usize::try_from(version).unwrap_or(usize::MAX);
    if current > known {
        return Err(corrupt(format!(
            "the database's schema version is {version}, newer than this version of \
             switchboard understands ({known})"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", sql_limit(i + 1))?;
    }
    tx.commit()?;
    Ok(())
}

const INSERT_LOG: &str = "INSERT INTO delivery_log (delivery_id, step, attempt, at, status, detail) \
                          VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

// --- outbox ---

struct RawClaim {
    id: DeliveryId,
    lease: i64,
    event_id: String,
    event: String,
    route: String,
    destination: String,
    target: String,
    attempts: i64,
}

fn claim_rows(conn: &Connection, now: i64, until: i64, limit: i64) -> Db<Vec<RawClaim>> {
    let mut claims = Vec::new();
    let mut select = conn.prepare_cached(
        "SELECT id, event_id, event, route, destination, target, attempts FROM deliveries \
         WHERE state IN ('queued', 'in_flight') AND due_at <= ?1 \
         ORDER BY due_at, id LIMIT ?2",
    )?;
    let mut rows = select.query(params![now, limit])?;
    while let Some(row) = rows.next()? {
        claims.push(RawClaim {
            id: row.get(0)?,
            lease: 0,
            event_id: row.get(1)?,
            event: row.get(2)?,
            route: row.get(3)?,
            destination: row.get(4)?,
            target: row.get(5)?,
            attempts: row.get(6)?,
        });
    }
    drop(rows);
    let mut update = conn.prepare_cached(
        "UPDATE deliveries SET state = 'in_flight', due_at = ?2, lease = lease + 1 \
         WHERE id = ?1 RETURNING lease",
    )?;
    for claim in &mut claims {
        claim.lease = update.query_row(params![claim.id, until], |r| r.get(0))?;
    }
    Ok(claims)
}

fn decode_claims(raw: Vec<RawClaim>) -> Db<Vec<ClaimedDelivery>> {
    // Deliveries of one event share one decoded copy.
    let mut events: HashMap<String, Arc<Event>> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for r in raw {
        let event = match events.get(&r.event_id) {
            Some(e) => Arc::clone(e),
            None => {
                let e: Arc<Event> = Arc::new(from_json(&r.event)?);
                events.insert(r.event_id, Arc::clone(&e));
                e
            }
        };
        out.push(ClaimedDelivery {
            id: r.id,
            lease: r.lease,
            event,
            route: r.route,
            destination: r.destination,
            target: from_json(&r.target)?,
            attempts: count(r.attempts)?,
        });
    }
    Ok(out)
}

/// A completion, encoded for the blocking thread.
struct Apply {
    id: DeliveryId,
    lease: i64,
    kind: ApplyKind,
}

enum ApplyKind {
    Sent {
        remote_id: Option<String>,
    },
    Retry {
        at: i64,
        error: String,
    },
    Defer {
        until: i64,
    },
    Dead {
        json: String,
        text: String,
        attempted: bool,
    },
    Parked {
        reason: String,
    },
}

impl Apply {
    fn new(c: &Completion) -> Result<Apply> {
        let kind = match &c.outcome {
            Outcome::Sent(receipt) => ApplyKind::Sent {
                remote_id: receipt.remote_id.clone(),
            },
            Outcome::Retry { at, error } => ApplyKind::Retry {
                at: millis(*at),
                error: error.to_string(),
            },
            Outcome::Defer { until } => ApplyKind::Defer {
                until: millis(*until),
            },
            Outcome::Dead { error, attempted } => ApplyKind::Dead {
                json: to_json(error)?,
                text: error.to_string(),
                attempted: *attempted,
            },
            Outcome::Parked { reason } => ApplyKind::Parked {
                reason: reason.clone(),
            },
        };
        Ok(Apply {
            id: c.id,
            lease: c.lease,
            kind,
        })
    }
}

#[derive(Default)]
struct DestinationUpdate {
    sent: i64,
    error: Option<String>,
}

const COMPLETE_SENT: &str = "UPDATE deliveries SET state = 'sent', attempts = attempts + 1, \
     due_at = ?3, log_steps = log_steps + 1 \
     WHERE id = ?1 AND lease = ?2 AND state = 'in_flight' \
     RETURNING attempts, destination, log_steps";
const COMPLETE_RETRY: &str = "UPDATE deliveries SET state = 'queued', attempts = attempts + 1, \
     due_at = ?3, log_steps = log_steps + 1 \
     WHERE id = ?1 AND lease = ?2 AND state = 'in_flight' \
     RETURNING attempts, destination, log_steps";
const COMPLETE_DEFER: &str = "UPDATE deliveries SET state = 'queued', due_at = ?3 \
     WHERE id = ?1 AND lease = ?2 AND state = 'in_flight' \
     RETURNING attempts, destination, log_steps";
const COMPLETE_DEAD: &str = "UPDATE deliveries SET state = 'dead', attempts = attempts + ?3, \
     error = ?4, died_at = ?5, due_at = ?5, log_steps = log_steps + 1 \
     WHERE id = ?1 AND lease = ?2 AND state = 'in_flight' \
     RETURNING attempts, destination, log_steps";
const COMPLETE_PARKED: &str = "UPDATE deliveries SET state = 'parked', due_at = ?3, \
     log_steps = log_steps + 1 \
     WHERE id = ?1 AND lease = ?2 AND state = 'in_flight' \
     RETURNING attempts, destination, log_steps";

/// What a completion's UPDATE returns: attempts, destination, log step.
type Completed = (i64, String, i64);

fn completed(row: &rusqlite::Row<'_>) -> rusqlite::Result<Completed> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
}

fn complete_rows(conn: &Connection, applies: &[Apply], now: i64) -> Db<()> {
    let mut log = conn.prepare_cached(INSERT_LOG)?;
    let mut updates: BTreeMap<String, DestinationUpdate> = BTreeMap::new();
    for a in applies {
        // Each UPDATE only matches an in-flight row still holding this lease;
        // `None` means the completion is stale and is ignored.
        match &a.kind {
            ApplyKind::Sent { remote_id } => {
                let row = conn
                    .prepare_cached(COMPLETE_SENT)?
                    .query_row(params![a.id, a.lease, now], completed)
                    .optional()?;
                if let Some((attempts, destination, step)) = row {
                    log.execute(params![a.id, step, attempts, now, "sent", remote_id])?;
                    updates.entry(destination).or_default().sent += 1;
                }
            }
            ApplyKind::Retry { at, error } => {
                let row = conn
                    .prepare_cached(COMPLETE_RETRY)?
                    .query_row(params![a.id, a.lease, at], completed)
                    .optional()?;
                if let Some((attempts, destination, step)) = row {
                    log.execute(params![a.id, step, attempts, now, "failed", error])?;
                    updates.entry(destination).or_default().error = Some(error.clone());
                }
            }
            ApplyKind::Defer { until } => {
                conn.prepare_cached(COMPLETE_DEFER)?
                    .query_row(params![a.id, a.lease, until], completed)
                    .optional()?;
            }
            ApplyKind::Dead {
                json,
                text,
                attempted,
            } => {
                let row = conn
                    .prepare_cached(COMPLETE_DEAD)?
                    .query_row(
                        params![a.id, a.lease, i64::from(*attempted), json, now],
                        completed,
                    )
                    .optional()?;
                if let Some((attempts, destination, step)) = row {
                    log.execute(params![a.id, step, attempts, now, "dead", text])?;
                    updates.entry(destination).or_default().error = Some(text.clone());
                }
            }
            ApplyKind::Parked { reason } => {
                let row = conn
                    .prepare_cached(COMPLETE_PARKED)?
                    .query_row(params![a.id, a.lease, now], completed)
                    .optional()?;
                if let Some((_, _, step)) = row {
                    log.execute(params![a.id, step, 0, now, "parked", reason])?;
                }
            }
        }
    }
    let mut upsert = conn.prepare_cached(
        "INSERT INTO destinations (name, last_success_at, last_error, last_error_at, sent) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (name) DO UPDATE SET \
           sent = sent + excluded.sent, \
           last_success_at = coalesce(excluded.last_success_at, last_success_at), \
           last_error = CASE WHEN excluded.last_error_at IS NULL THEN last_error \
                             ELSE excluded.last_error END, \
           last_error_at = coalesce(excluded.last_error_at, last_error_at)",
    )?;
    for (name, u) in &updates {
        let success = (u.sent > 0).then_some(now);
        let error_at = u.error.as_ref().map(|_| now);
        upsert.execute(params![name, success, u.error, error_at, u.sent])?;
    }
    Ok(())
}

fn set_connected_rows(
    conn: &Connection,
    destination: &str,
    connected: bool,
    reason: Option<&str>,
    now: i64,
) -> Db<u64> {
    conn.prepare_cached(
        "INSERT INTO destinations (name, connected, disconnected_reason) VALUES (?1, ?2, ?3) \
         ON CONFLICT (name) DO UPDATE SET connected = excluded.connected, \
         disconnected_reason = excluded.disconnected_reason",
    )?
    .execute(params![
        destination,
        connected,
        if connected { None } else { reason }
    ])?;
    // The repeated state terms let SQLite use the partial indexes.
    let (log, update) = if connected {
        (
            "INSERT INTO delivery_log (delivery_id, step, attempt, at, status, detail) \
             SELECT id, log_steps + 1, 0, ?2, 'queued', ?3 FROM deliveries \
             WHERE state = 'parked' AND destination = ?1",
            "UPDATE deliveries SET state = 'queued', due_at = ?2, log_steps = log_steps + 1 \
             WHERE state = 'parked' AND destination = ?1",
        )
    } else {
        (
            "INSERT INTO delivery_log (delivery_id, step, attempt, at, status, detail) \
             SELECT id, log_steps + 1, 0, ?2, 'parked', ?3 FROM deliveries \
             WHERE state IN ('queued', 'in_flight') AND state = 'queued' AND destination = ?1",
            "UPDATE deliveries SET state = 'parked', due_at = ?2, log_steps = log_steps + 1 \
             WHERE state IN ('queued', 'in_flight') AND state = 'queued' AND destination = ?1",
        )
    };
    conn.prepare_cached(log)?
        .execute(params![destination, now, reason])?;
    let changed = conn
        .prepare_cached(update)?
        .execute(params![destination, now])?;
    Ok(u64::try_from(changed).unwrap_or(u64::MAX))
}

fn destination_stats_rows(conn: &Connection) -> Db<Vec<DestinationStats>> {
    let mut map: BTreeMap<String, DestinationStats> = BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT name, connected, disconnected_reason, last_success_at, last_error, \
         last_error_at, sent FROM destinations",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        let sent: i64 = row.get(6)?;
        map.insert(
            name.clone(),
            DestinationStats {
                destination: name,
                connected: row.get(1)?,
                disconnected_reason: row.get(2)?,
                last_success_at: opt_time(row.get(3)?)?,
                last_error: row.get(4)?,
                last_error_at: opt_time(row.get(5)?)?,
                sent: u64::try_from(sent).map_err(|_| corrupt("negative sent count"))?,
                ..DestinationStats::default()
            },
        );
    }
    // Counted from the partial indexes: proportional to what is pending, parked
    // or dead, not to the history of sent deliveries.
    let mut stmt = conn.prepare_cached(
        "SELECT destination, 'queued', count(*) FROM deliveries \
           WHERE state IN ('queued', 'in_flight') GROUP BY destination \
         UNION ALL SELECT destination, 'parked', count(*) FROM deliveries \
           WHERE state = 'parked' GROUP BY destination \
         UNION ALL SELECT destination, 'dead', count(*) FROM deliveries \
           WHERE state = 'dead' GROUP BY destination",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        let s: String = row.get(1)?;
        let n: i64 = row.get(2)?;
        let n = u64::try_from(n).map_err(|_| corrupt("negative count"))?;
        let entry = map.entry(name.clone()).or_insert_with(|| DestinationStats {
            destination: name,
            connected: true,
            ..DestinationStats::default()
        });
        match state(&s)? {
            DeliveryState::Queued | DeliveryState::InFlight => entry.queued += n,
            DeliveryState::Parked => entry.parked += n,
            DeliveryState::Dead => entry.dead += n,
            DeliveryState::Sent => entry.sent += n,
        }
    }
    Ok(map.into_values().collect())
}

fn dead_letter_rows(conn: &Connection, limit: i64) -> Db<Vec<DeadLetter>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, event_id, event_kind, route, destination, target, attempts, error, died_at \
         FROM deliveries WHERE state = 'dead' ORDER BY died_at, id LIMIT ?1",
    )?;
    let mut rows = stmt.query(params![limit])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let id: DeliveryId = row.get(0)?;
        let target: String = row.get(5)?;
        let error: Option<String> = row.get(7)?;
        let died_at: Option<i64> = row.get(8)?;
        out.push(DeadLetter {
            id,
            event_id: row.get(1)?,
            event_kind: row.get(2)?,
            route: row.get(3)?,
            destination: row.get(4)?,
            target: from_json::<Target>(&target)?,
            attempts: count(row.get(6)?)?,
            error: match error {
                Some(e) => from_json::<DeliveryError>(&e)?,
                None => return Err(corrupt(format!("dead letter {id} has no error"))),
            },
            died_at: match died_at {
                Some(t) => time(t)?,
                None => return Err(corrupt(format!("dead letter {id} has no time of death"))),
            },
        });
    }
    Ok(out)
}

// --- integrations and runs ---

const ABANDONED: &str = "abandoned: lease expired (process died?)";

fn new_run(integration: &str, started_at: DateTime<Utc>) -> RunRecord {
    RunRecord {
        id: 0,
        integration: integration.to_owned(),
        started_at,
        finished_at: None,
        outcome: RunOutcome::Running,
        rows_read: 0,
        rows_imported: 0,
        rows_rejected: 0,
        row_errors: Vec::new(),
        properties_imported: 0,
        error: None,
        details: serde_json::Value::Null,
    }
}

fn start_run_rows(
    conn: &Connection,
    integration: &str,
    now: DateTime<Utc>,
    lease: Duration,
) -> Db<Option<RunRecord>> {
    let now_ms = millis(now);
    let found: Vec<(i64, Option<i64>, String)> = conn
        .prepare_cached(
            "SELECT id, lease_until, record FROM runs \
             WHERE integration = ?1 AND outcome = 'running'",
        )?
        .query_map(params![integration], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    if found
        .iter()
        .any(|(_, until, _)| until.is_some_and(|t| t > now_ms))
    {
        return Ok(None);
    }
    let mut abandon = conn.prepare_cached(
        "UPDATE runs SET outcome = 'failed', finished_at = ?2, lease_until = NULL, \
         record = ?3 WHERE id = ?1",
    )?;
    for (id, _, record) in found {
        let mut run: RunRecord = from_json(&record)?;
        run.id = id;
        run.outcome = RunOutcome::Failed;
        run.finished_at = Some(now);
        run.error = Some(ABANDONED.to_owned());
        abandon.execute(params![id, now_ms, to_json(&run)?])?;
    }
    let mut run = new_run(integration, now);
    let until = plus(now_ms, lease);
    run.id = conn
        .prepare_cached(
            "INSERT INTO runs (integration, started_at, outcome, lease_until, record) \
             VALUES (?1, ?2, 'running', ?3, ?4) RETURNING id",
        )?
        .query_row(params![integration, now_ms, until, to_json(&run)?], |r| {
            r.get(0)
        })?;
    Ok(Some(run))
}

fn run_from_row(row: &rusqlite::Row<'_>) -> Db<RunRecord> {
    let record: String = row.get(5)?;
    let mut run: RunRecord = from_json(&record)?;
    run.id = row.get(0)?;
    run.integration = row.get(1)?;
    run.started_at = time(row.get(2)?)?;
    run.finished_at = opt_time(row.get(3)?)?;
    let outcome: String = row.get(4)?;
    run.outcome = RunOutcome::parse(&outcome)
        .ok_or_else(|| corrupt(format!("unknown stored run outcome {outcome:?}")))?;
    Ok(run)
}

// --- identity links ---

fn link_from_row(row: &rusqlite::Row<'_>) -> Db<IdentityLink> {
    let origin: String = row.get(3)?;
    Ok(IdentityLink {
        platform: row.get(0)?,
        user_id: row.get(1)?,
        platform_id: row.get(2)?,
        origin: LinkOrigin::parse(&origin)
            .ok_or_else(|| corrupt(format!("unknown stored link origin {origin:?}")))?,
        linked_at: time(row.get(4)?)?,
    })
}

// --- attributes ---

fn upsert_rows(
    conn: &Connection,
    users: &[(String, String)],
    names: &AttributeRecord,
    cap: usize,
) -> Db<UpsertStats> {
    let mut stats = UpsertStats::default();
    let registered: BTreeSet<String> = conn
        .prepare_cached("SELECT name FROM attribute_names")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    // Fails before anything is written.
    let new_names = check_attribute_cap(&registered, [names], cap)?;
    stats.new_attribute_names = new_names.len();
    let mut register =
        conn.prepare_cached("INSERT OR IGNORE INTO attribute_names (name) VALUES (?1)")?;
    for name in &new_names {
        register.execute(params![name])?;
    }
    // Users are distinct within `users`, so many fit in one statement: a chunk of
    // rows per INSERT amortises statement overhead over the batch.
    let mut chunks = users.chunks_exact(UPSERT_CHUNK);
    let mut tally = |updates: i64| {
        if updates == 0 {
            stats.users_created += 1;
        } else {
            stats.users_updated += 1;
        }
    };
    if chunks.len() > 0 {
        let mut upsert = conn.prepare_cached(&upsert_sql(UPSERT_CHUNK))?;
        for chunk in &mut chunks {
            let values = chunk
                .iter()
                .flat_map(|(u, j)| [u as &dyn rusqlite::ToSql, j as &dyn rusqlite::ToSql]);
            let mut rows = upsert.query(rusqlite::params_from_iter(values))?;
            while let Some(row) = rows.next()? {
                tally(row.get(0)?);
            }
        }
    }
    let mut upsert = conn.prepare_cached(&upsert_sql(1))?;
    for (user_id, json) in chunks.remainder() {
        tally(upsert.query_row(params![user_id, json], |r| r.get(0))?);
    }
    Ok(stats)
}

/// Rows per multi-row attribute upsert statement.
const UPSERT_CHUNK: usize = 64;

/// `INSERT … VALUES (?, ?), … ON CONFLICT … RETURNING updates` for `rows` users.
fn upsert_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|i| format!("(?{}, ?{})", 2 * i + 1, 2 * i + 2))
        .collect();
    format!(
        "INSERT INTO attributes (user_id, attrs) VALUES {} \
         ON CONFLICT (user_id) DO UPDATE SET attrs = json_patch(attrs, excluded.attrs), \
         updates = updates + 1 RETURNING updates",
        values.join(", ")
    )
}

/// A JSON path selecting the top-level key `name`, or `None` if the name cannot be
/// quoted in SQLite's path syntax (the caller then skips SQL pre-filtering).
fn json_path(name: &str) -> Option<String> {
    if name.is_empty() || name.contains(['"', '\\']) || name.chars().any(char::is_control) {
        return None;
    }
    Some(format!("$.\"{name}\""))
}

/// Binds `value` as the next parameter; returns its placeholder.
fn bind(params: &mut Vec<String>, value: String) -> String {
    params.push(value);
    format!("?{}", params.len())
}

/// "attribute `attr` is present".
fn present(params: &mut Vec<String>, attr: &str) -> Option<String> {
    let path = bind(params, json_path(attr)?);
    Some(format!("json_type(attrs, {path}) IS NOT NULL"))
}

fn is_number(s: &str) -> bool {
    s.trim().parse::<f64>().is_ok()
}

/// Maximum bound parameters in a pre-filter (SQLite allows 32766).
const MAX_FILTER_PARAMS: usize = 1000;

/// Translates `filter` into a SQL condition on `attrs` that every matching row
/// satisfies (a necessary condition, possibly weaker); `None` means "no
/// condition". Rows passing it are checked exactly with [`Filter::matches`].
fn prefilter(filter: &Filter, params: &mut Vec<String>) -> Option<String> {
    if params.len() > MAX_FILTER_PARAMS {
        return None;
    }
    match filter {
        Filter::Eq { attr, value } => {
            if is_number(value) {
                present(params, attr)
            } else {
                // A non-numeric value only equals the identical text.
                let path = json_path(attr)?;
                let p = bind(params, path);
                let v = bind(params, value.clone());
                Some(format!("json_extract(attrs, {p}) = {v}"))
            }
        }
        Filter::In { attr, values } => {
            if values.is_empty() {
                Some("0".to_owned())
            } else if values.iter().any(|v| is_number(v)) {
                present(params, attr)
            } else {
                let path = json_path(attr)?;
                let p = bind(params, path);
                let list: Vec<String> = values.iter().map(|v| bind(params, v.clone())).collect();
                Some(format!("json_extract(attrs, {p}) IN ({})", list.join(", ")))
            }
        }
        Filter::Ne { attr, .. }
        | Filter::Contains { attr, .. }
        | Filter::Cmp { attr, .. }
        | Filter::Exists { attr } => present(params, attr),
        Filter::And(filters) => {
            let parts: Vec<String> = filters
                .iter()
                .filter_map(|f| prefilter(f, params))
                .collect();
            if parts.is_empty() {
                None
            } else {
                Some(format!("({})", parts.join(" AND ")))
            }
        }
        Filter::Or(filters) => {
            if filters.is_empty() {
                return Some("0".to_owned());
            }
            let mut parts = Vec::with_capacity(filters.len());
            for f in filters {
                parts.push(prefilter(f, params)?);
            }
            Some(format!("({})", parts.join(" OR ")))
        }
        Filter::Not(_) => None,
    }
}

/// The attribute names `filter` looks at.
fn referenced<'f>(filter: &'f Filter, names: &mut BTreeSet<&'f str>) {
    match filter {
        Filter::Eq { attr, .. }
        | Filter::Ne { attr, .. }
        | Filter::In { attr, .. }
        | Filter::Contains { attr, .. }
        | Filter::Cmp { attr, .. }
        | Filter::Exists { attr } => {
            names.insert(attr);
        }
        Filter::And(filters) | Filter::Or(filters) => {
            for f in filters {
                referenced(f, names);
            }
        }
        Filter::Not(f) => referenced(f, names),
    }
}

/// Most attributes extracted in SQL for a query; beyond, whole rows are decoded.
const MAX_EXTRACTED: usize = 32;

fn query_rows(conn: &Connection, filter: &Filter) -> Db<Vec<String>> {
    let mut params = Vec::new();
    let condition = match prefilter(filter, &mut params) {
        Some(cond) if params.len() <= MAX_FILTER_PARAMS => format!("WHERE {cond}"),
        _ => {
            params.clear();
            String::new()
        }
    };
    // Only the attributes the filter looks at are read (SQLite extracts them),
    // unless a name cannot be written as a JSON path.
    let mut names = BTreeSet::new();
    referenced(filter, &mut names);
    let paths: Option<Vec<String>> = if names.len() <= MAX_EXTRACTED {
        names.iter().map(|n| json_path(n)).collect()
    } else {
        None
    };
    let columns = match &paths {
        Some(paths) => paths
            .iter()
            .map(|p| format!(", json_extract(attrs, {})", bind(&mut params, p.clone())))
            .collect::<String>(),
        None => ", attrs".to_owned(),
    };
    let sql = format!("SELECT user_id{columns} FROM attributes {condition} ORDER BY user_id");
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(params_from_iter(params.iter()))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let attrs: Attributes = if paths.is_some() {
            let mut attrs = Attributes::new();
            for (i, name) in names.iter().enumerate() {
                if let Some(value) = row.get::<_, Option<String>>(i + 1)? {
                    attrs.insert((*name).to_owned(), value);
                }
            }
            attrs
        } else {
            from_json(row.get_ref(1)?.as_str()?)?
        };
        if filter.matches(&attrs) {
            out.push(row.get(0)?);
        }
    }
    Ok(out)
}

// --- the traits ---

#[async_trait]
impl Store for SqliteStore {
    async fn enqueue(
        &self,
        event: &Event,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
    ) -> Result<EnqueueOutcome> {
        let body = to_json(event)?;
        let id = event.id.clone();
        let kind = event.kind.clone();
        let rows: Vec<(String, String, String)> = deliveries
            .iter()
            .map(|d| Ok((d.route.clone(), d.destination.clone(), to_json(&d.target)?)))
            .collect::<Result<_>>()?;
        let now = millis(now);
        self.write("enqueue", move |conn| {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO events (id, enqueued_at) VALUES (?1, ?2) \
                     ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![id, now])?;
            if inserted == 0 {
                return Ok(EnqueueOutcome::Duplicate);
            }
            let mut insert = conn.prepare_cached(
                "INSERT INTO deliveries (event_id, event_kind, event, route, destination, \
                   target, state, due_at, log_steps) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, 1)",
            )?;
            let mut log = conn.prepare_cached(INSERT_LOG)?;
            for (route, destination, target) in &rows {
                insert.execute(params![id, kind, body, route, destination, target, now])?;
                let delivery = conn.last_insert_rowid();
                log.execute(params![delivery, 1, 0, now, "queued", None::<String>])?;
            }
            Ok(EnqueueOutcome::Accepted {
                deliveries: rows.len(),
            })
        })
        .await
    }

    async fn claim(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = millis(now);
        let until = plus(now, lease);
        let limit = sql_limit(limit);
        let raw = self
            .write("claim", move |conn| claim_rows(conn, now, until, limit))
            .await?;
        // Decoded here, keeping the writer thread free for SQL.
        decode_claims(raw).map_err(|e| with_context(e.into(), "claim"))
    }

    async fn complete(&self, completions: &[Completion], now: DateTime<Utc>) -> Result<()> {
        if completions.is_empty() {
            return Ok(());
        }
        let applies: Vec<Apply> = completions.iter().map(Apply::new).collect::<Result<_>>()?;
        let now = millis(now);
        self.write("complete", move |conn| complete_rows(conn, &applies, now))
            .await
    }

    async fn set_connected(
        &self,
        destination: &str,
        connected: bool,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let destination = destination.to_owned();
        let reason = reason.map(str::to_owned);
        let now = millis(now);
        self.write("set_connected", move |conn| {
            set_connected_rows(conn, &destination, connected, reason.as_deref(), now)
        })
        .await
    }

    async fn disconnected(&self) -> Result<Vec<String>> {
        self.read("disconnected", |conn| {
            let names = conn
                .prepare_cached("SELECT name FROM destinations WHERE connected = 0 ORDER BY name")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(names)
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        self.read("next_due", |conn| {
            let due: Option<i64> = conn
                .prepare_cached(
                    "SELECT due_at FROM deliveries WHERE state IN ('queued', 'in_flight') \
                     ORDER BY due_at LIMIT 1",
                )?
                .query_row([], |r| r.get(0))
                .optional()?;
            opt_time(due)
        })
        .await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let limit = sql_limit(limit);
        self.read("dead_letters", move |conn| dead_letter_rows(conn, limit))
            .await
    }

    async fn replay(&self, id: DeliveryId, now: DateTime<Utc>) -> Result<()> {
        let now = millis(now);
        self.write("replay", move |conn| {
            let step: Option<i64> = conn
                .prepare_cached(
                    "UPDATE deliveries SET state = 'queued', attempts = 0, due_at = ?2, \
                     error = NULL, died_at = NULL, log_steps = log_steps + 1 \
                     WHERE id = ?1 AND state = 'dead' RETURNING log_steps",
                )?
                .query_row(params![id, now], |r| r.get(0))
                .optional()?;
            let Some(step) = step else {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("delivery {id} is not a dead letter"),
                )
                .into());
            };
            conn.prepare_cached(INSERT_LOG)?
                .execute(params![id, step, 0, now, "queued", "replayed"])?;
            Ok(())
        })
        .await
    }

    async fn delivery_log(&self, id: DeliveryId) -> Result<Vec<LogEntry>> {
        self.read("delivery_log", move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT attempt, at, status, detail FROM delivery_log \
                 WHERE delivery_id = ?1 ORDER BY step",
            )?;
            let mut rows = stmt.query(params![id])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let status: String = row.get(2)?;
                out.push(LogEntry {
                    delivery_id: id,
                    attempt: count(row.get(0)?)?,
                    at: time(row.get(1)?)?,
                    status: LogStatus::parse(&status)
                        .ok_or_else(|| corrupt(format!("unknown stored log status {status:?}")))?,
                    detail: row.get(3)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn delivery_state(&self, id: DeliveryId) -> Result<Option<DeliveryState>> {
        self.read("delivery_state", move |conn| {
            let s: Option<String> = conn
                .prepare_cached("SELECT state FROM deliveries WHERE id = ?1")?
                .query_row(params![id], |r| r.get(0))
                .optional()?;
            s.as_deref().map(state).transpose()
        })
        .await
    }

    async fn destination_stats(&self) -> Result<Vec<DestinationStats>> {
        self.read("destination_stats", destination_stats_rows).await
    }

    async fn put_link(&self, link: &IdentityLink) -> Result<()> {
        let link = link.clone();
        self.write("put_link", move |conn| {
            // A manual link replaces anything; an automatic one never replaces a manual one.
            conn.prepare_cached(
                "INSERT INTO identity_links (platform, user_id, platform_id, origin, linked_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (platform, user_id) DO UPDATE SET \
                   platform_id = excluded.platform_id, origin = excluded.origin, \
                   linked_at = excluded.linked_at \
                 WHERE excluded.origin = 'manual' OR identity_links.origin <> 'manual'",
            )?
            .execute(params![
                link.platform,
                link.user_id,
                link.platform_id,
                link.origin.as_str(),
                millis(link.linked_at)
            ])?;
            Ok(())
        })
        .await
    }

    async fn link(&self, platform: &str, user_id: &str) -> Result<Option<IdentityLink>> {
        let platform = platform.to_owned();
        let user_id = user_id.to_owned();
        self.read("link", move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT platform, user_id, platform_id, origin, linked_at FROM identity_links \
                 WHERE platform = ?1 AND user_id = ?2",
            )?;
            let mut rows = stmt.query(params![platform, user_id])?;
            match rows.next()? {
                Some(row) => Ok(Some(link_from_row(row)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn links(&self, platform: &str) -> Result<Vec<IdentityLink>> {
        let platform = platform.to_owned();
        self.read("links", move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT platform, user_id, platform_id, origin, linked_at FROM identity_links \
                 WHERE platform = ?1 ORDER BY user_id",
            )?;
            let mut rows = stmt.query(params![platform])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(link_from_row(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn delete_link(&self, platform: &str, user_id: &str) -> Result<bool> {
        let platform = platform.to_owned();
        let user_id = user_id.to_owned();
        self.write("delete_link", move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM identity_links WHERE platform = ?1 AND user_id = ?2")?
                .execute(params![platform, user_id])?;
            Ok(n > 0)
        })
        .await
    }

    async fn put_integration(&self, config: &IntegrationConfig) -> Result<()> {
        let name = config.name.clone();
        let json = to_json(config)?;
        self.write("put_integration", move |conn| {
            conn.prepare_cached(
                "INSERT INTO integrations (name, config) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET config = excluded.config",
            )?
            .execute(params![name, json])?;
            Ok(())
        })
        .await
    }

    async fn integrations(&self) -> Result<Vec<IntegrationConfig>> {
        self.read("integrations", |conn| {
            let mut stmt = conn.prepare_cached("SELECT config FROM integrations ORDER BY name")?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(from_json(row.get_ref(0)?.as_str()?)?);
            }
            Ok(out)
        })
        .await
    }

    async fn start_run(
        &self,
        integration: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<RunRecord>> {
        let integration = integration.to_owned();
        self.write("start_run", move |conn| {
            start_run_rows(conn, &integration, now, lease)
        })
        .await
    }

    async fn renew_run(&self, run_id: i64, now: DateTime<Utc>, lease: Duration) -> Result<bool> {
        let until = plus(millis(now), lease);
        self.write("renew_run", move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE runs SET lease_until = ?2 WHERE id = ?1 AND outcome = 'running'",
                )?
                .execute(params![run_id, until])?;
            Ok(n == 1)
        })
        .await
    }

    async fn finish_run(&self, run: &RunRecord) -> Result<()> {
        let json = to_json(run)?;
        let id = run.id;
        let integration = run.integration.clone();
        let finished_at = run.finished_at.map(millis);
        let outcome = run.outcome.as_str();
        self.write("finish_run", move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE runs SET finished_at = ?3, outcome = ?4, lease_until = NULL, \
                     record = ?5 WHERE id = ?1 AND integration = ?2",
                )?
                .execute(params![id, integration, finished_at, outcome, json])?;
            if n == 0 {
                return Err(Error::new(ErrorKind::NotFound, format!("run {id} not found")).into());
            }
            Ok(())
        })
        .await
    }

    async fn runs(&self, integration: &str, limit: usize) -> Result<Vec<RunRecord>> {
        let integration = integration.to_owned();
        let limit = sql_limit(limit);
        self.read("runs", move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, integration, started_at, finished_at, outcome, record FROM runs \
                 WHERE integration = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let mut rows = stmt.query(params![integration, limit])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(run_from_row(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn put_installation(&self, installation: &Installation) -> Result<()> {
        let i = installation.clone();
        let data = to_json(&i.data)?;
        self.write("put_installation", move |conn| {
            conn.prepare_cached(
                "INSERT INTO installations \
                   (platform, key, token, refresh_token, expires_at, data, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (platform, key) DO UPDATE SET token = excluded.token, \
                   refresh_token = excluded.refresh_token, expires_at = excluded.expires_at, \
                   data = excluded.data, updated_at = excluded.updated_at",
            )?
            .execute(params![
                i.platform,
                i.key,
                i.token.expose_secret(),
                i.refresh_token.as_ref().map(|t| t.expose_secret()),
                i.expires_at.map(millis),
                data,
                millis(i.updated_at)
            ])?;
            Ok(())
        })
        .await
    }

    async fn installation(&self, platform: &str, key: &str) -> Result<Option<Installation>> {
        let platform = platform.to_owned();
        let key = key.to_owned();
        self.read("installation", move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT platform, key, token, refresh_token, expires_at, data, updated_at \
                 FROM installations WHERE platform = ?1 AND key = ?2",
            )?;
            let mut rows = stmt.query(params![platform, key])?;
            let Some(row) = rows.next()? else {
                return Ok(None);
            };
            let token: String = row.get(2)?;
            let refresh: Option<String> = row.get(3)?;
            Ok(Some(Installation {
                platform: row.get(0)?,
                key: row.get(1)?,
                token: SecretString::from(token),
                refresh_token: refresh.map(SecretString::from),
                expires_at: opt_time(row.get(4)?)?,
                data: from_json(row.get_ref(5)?.as_str()?)?,
                updated_at: time(row.get(6)?)?,
            }))
        })
        .await
    }

    async fn delete_installation(&self, platform: &str, key: &str) -> Result<bool> {
        let platform = platform.to_owned();
        let key = key.to_owned();
        self.write("delete_installation", move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM installations WHERE platform = ?1 AND key = ?2")?
                .execute(params![platform, key])?;
            Ok(n > 0)
        })
        .await
    }

    async fn remember_once(
        &self,
        scope: &str,
        key: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let scope = scope.to_owned();
        let key = key.to_owned();
        let expires_at = millis(expires_at);
        let now = millis(now);
        self.write("remember_once", move |conn| {
            // Forget a few expired keys on the way (bounded work per call).
            conn.prepare_cached(
                "DELETE FROM remembered WHERE (scope, key) IN \
                 (SELECT scope, key FROM remembered WHERE expires_at <= ?1 LIMIT 64)",
            )?
            .execute(params![now])?;
            // Inserts, or takes over a key whose memory has expired.
            let fresh = conn
                .prepare_cached(
                    "INSERT INTO remembered (scope, key, expires_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (scope, key) DO UPDATE SET expires_at = excluded.expires_at \
                     WHERE remembered.expires_at <= ?4",
                )?
                .execute(params![scope, key, expires_at, now])?;
            Ok(fresh > 0)
        })
        .await
    }
}

#[async_trait]
impl AttributeStore for SqliteStore {
    async fn upsert(&self, batch: &[AttributeRecord]) -> Result<UpsertStats> {
        // Group the records by user (first-seen order); JSON is encoded here, so
        // only SQL runs on the writer thread.
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
        // Per user: the first record, and any later ones.
        let mut groups: Vec<(&AttributeRecord, Vec<&Attributes>)> = Vec::with_capacity(batch.len());
        let mut names: HashSet<&str> = HashSet::new();
        for record in batch {
            names.extend(record.attributes.keys().map(String::as_str));
            match index.get(record.user_id.as_str()) {
                Some(&i) => groups[i].1.push(&record.attributes),
                None => {
                    index.insert(&record.user_id, groups.len());
                    groups.push((record, Vec::new()));
                }
            }
        }
        drop(index);
        let users: Vec<(String, String)> = groups
            .iter()
            .map(|(first, later)| {
                let json = if later.is_empty() {
                    to_json(&first.attributes)?
                } else {
                    // Later records for the same user win, attribute by attribute.
                    let merged: BTreeMap<&str, &str> = std::iter::once(&first.attributes)
                        .chain(later.iter().copied())
                        .flat_map(|a| a.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                        .collect();
                    to_json(&merged)?
                };
                Ok((first.user_id.clone(), json))
            })
            .collect::<Result<_>>()?;
        // Every name in the batch, as one record: all the cap check needs.
        let names = AttributeRecord {
            user_id: String::new(),
            attributes: names
                .into_iter()
                .map(|k| (k.to_owned(), String::new()))
                .collect(),
        };
        let cap = self.attribute_cap;
        self.write_long("upsert", move |conn| upsert_rows(conn, &users, &names, cap))
            .await
    }

    async fn get(&self, user_id: &str) -> Result<Option<Attributes>> {
        let user_id = user_id.to_owned();
        self.read("get", move |conn| {
            let json: Option<String> = conn
                .prepare_cached("SELECT attrs FROM attributes WHERE user_id = ?1")?
                .query_row(params![user_id], |r| r.get(0))
                .optional()?;
            json.as_deref().map(from_json).transpose()
        })
        .await
    }

    async fn query(&self, filter: &Filter) -> Result<Vec<String>> {
        let filter = filter.clone();
        self.read("query", move |conn| query_rows(conn, &filter))
            .await
    }
}
