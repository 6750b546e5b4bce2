//! `SqliteStore`: the embedded default [`crate::Store`], kept in one SQLite file (feature `sqlite`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode, OpenFlags};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::attributes::DEFAULT_ATTRIBUTE_CAP;
use crate::secret::Keyring;
use crate::store::DeliveryState;
use crate::{Error, ErrorKind, Result};

mod attribute_rows;
mod attributes;
mod connections;
mod links;
mod outbox;
mod outbox_rows;
mod packed;
mod query;
mod runs;
mod schema;
mod writer;

use writer::{Job, Queued, writer_loop};

/// How hard SQLite works to make each commit durable.
///
/// Both settings use the write-ahead log (WAL) and are atomic: a crash never
/// corrupts the database nor leaves half a transaction. They differ in what a
/// commit that was acknowledged (the `Store` call returned `Ok`) survives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// `synchronous = NORMAL` (the default): an acknowledged commit survives the
    /// process crashing, panicking or being killed (`kill -9`), because it is in
    /// the write-ahead log in the operating system's file cache. It does **not**
    /// necessarily survive a power loss or an operating-system crash: the
    /// commits made since the write-ahead log was last synced to disk (SQLite
    /// syncs it at every checkpoint, i.e. about every 1000 pages written) may be
    /// rolled back, leaving the database as it was at an earlier commit. An
    /// event whose `publish` returned `Ok` can then be lost; the host cannot
    /// tell. No `fsync` per commit, so several times faster.
    #[default]
    Normal,
    /// `synchronous = FULL`: every commit is synced to disk before it is
    /// acknowledged, so it also survives power loss and OS crashes (on disks
    /// that honour `fsync`). Concurrent writers still share one sync per group
    /// commit, but a single caller in a loop is bound by the disk's sync latency.
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

/// A [`crate::Store`] in one SQLite file: the embedded default (feature `sqlite`).
///
/// - The file is created on [`SqliteStore::open`] and its schema is migrated
///   (`PRAGMA user_version`) in one transaction; a file written by an older
///   version is upgraded (its rows belong to the default tenant), a file
///   written by a newer version of switchboard is refused rather than guessed at.
/// - Write-ahead logging; durability per [`Durability`] (default
///   [`Durability::Normal`]: acknowledged commits survive process crashes and
///   `kill -9`, not necessarily power loss — see there for the exact guarantee).
/// - No SQLite call runs on an async worker thread. Writes go to one dedicated
///   writer thread that commits the requests waiting at that moment together
///   (group commit): each request runs in its own savepoint, so it succeeds or
///   fails on its own, and its caller is answered only after the commit. Reads
///   run on Tokio's blocking pool, on a second connection for files (the
///   write-ahead log lets it read while the writer writes).
/// - Several processes may open the same file: writes take the database lock
///   up front (`BEGIN IMMEDIATE`) and wait up to 5 seconds for it; a database
///   that stays busy is reported as a temporary [`ErrorKind::Store`] error.
/// - Each event's JSON is stored once, however many deliveries it has. Claims
///   take the head of each ordering key from a small table of key heads kept by
///   triggers, so a claim costs the same with 100,000 rows queued behind one key.
/// - Connection secrets are sealed with the store's [`Keyring`]
///   ([`SqliteStore::with_keyring`]); without one the store refuses to write
///   secrets. Opening a keyring also seals, and deletes, the plain-text tokens
///   of installations left by a schema-1 database.
/// - Times are stored as Unix milliseconds; the store never reads the clock.
///
/// Cheap to clone (an `Arc` inside); usable as `Arc<dyn Store>`. The writer
/// thread stops and the file is closed when the last clone is dropped.
///
/// ```no_run
/// # fn main() -> switchboard::Result<()> {
/// use switchboard::secret::Keyring;
/// use switchboard::store::{Durability, SqliteStore};
/// let store = SqliteStore::open("switchboard.db")?
///     .with_durability(Durability::Full)?
///     .with_keyring(Keyring::new("k1", [7; 32])?)?
///     .with_attribute_cap(200);
/// # let _ = store; Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    attribute_cap: usize,
    keyring: Option<Arc<Keyring>>,
}

struct Inner {
    /// Feeds the writer thread; `None` once dropping.
    jobs: Option<mpsc::Sender<Box<dyn Queued>>>,
    writer_thread: Option<JoinHandle<()>>,
    /// The writer connection: used by the writer thread, and for reads of
    /// in-memory databases (which cannot have a second connection).
    writer: Arc<Mutex<Connection>>,
    /// A second connection for reads (files only).
    reader: Option<Mutex<Connection>>,
    path: Option<PathBuf>,
    /// The attribute column indexes known to exist (built on first use).
    attribute_indexes: Mutex<std::collections::HashSet<String>>,
}

/// Locks a connection. Poisoning is ignored: requests run under
/// `catch_unwind`, reads hold no transaction, and the writer rolls back any
/// transaction it finds open before starting a batch.
fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Locks a set (poisoning ignored: it only caches what the database holds).
fn lock_set<T>(set: &Mutex<T>) -> MutexGuard<'_, T> {
    set.lock().unwrap_or_else(PoisonError::into_inner)
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
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const STATEMENT_CACHE: usize = 96;

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates its
    /// schema. Uses [`Durability::Normal`], [`DEFAULT_ATTRIBUTE_CAP`] and no
    /// keyring (see [`SqliteStore::with_keyring`]).
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        let opening = |e: DbError| Error::from(e).context(format!("opening {}", path.display()));
        let mut writer = Connection::open(&path).map_err(|e| opening(e.into()))?;
        schema::configure(&writer, true).map_err(opening)?;
        schema::migrate(&mut writer).map_err(opening)?;
        let reader = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(|e| opening(e.into()))?;
        schema::configure(&reader, false).map_err(opening)?;
        Self::start(writer, Some(reader), Some(path.clone())).map_err(opening)
    }

    /// A private in-memory database (gone when the last clone is dropped); for
    /// tests. Same schema and behaviour as a file.
    pub fn open_in_memory() -> Result<SqliteStore> {
        let opening = |e: DbError| Error::from(e).context("opening an in-memory database");
        let mut writer = Connection::open_in_memory().map_err(|e| opening(e.into()))?;
        schema::configure(&writer, true).map_err(opening)?;
        schema::migrate(&mut writer).map_err(opening)?;
        Self::start(writer, None, None).map_err(opening)
    }

    fn start(
        writer: Connection,
        reader: Option<Connection>,
        path: Option<PathBuf>,
    ) -> Db<SqliteStore> {
        let writer = Arc::new(Mutex::new(writer));
        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("switchboard-sqlite".to_owned())
            .spawn({
                let writer = Arc::clone(&writer);
                move || writer_loop(&writer, &queue)
            })
            .map_err(|e| {
                Error::new(ErrorKind::Store, "could not start the writer thread").with_source(e)
            })?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                jobs: Some(jobs),
                writer_thread: Some(thread),
                writer,
                reader: reader.map(Mutex::new),
                path,
                attribute_indexes: Mutex::default(),
            }),
            attribute_cap: DEFAULT_ATTRIBUTE_CAP,
            keyring: None,
        })
    }

    /// Sets the cap on distinct attribute names per tenant, across all its
    /// integrations (default [`DEFAULT_ATTRIBUTE_CAP`]). Applies to this handle
    /// and clones made from it afterwards.
    #[must_use]
    pub fn with_attribute_cap(mut self, cap: usize) -> Self {
        self.attribute_cap = cap;
        self
    }

    /// Sets the keyring that seals connection secrets (and opens them, with its
    /// older keys too). Without one the store refuses to write secrets. Applies
    /// to this handle and clones made from it afterwards.
    ///
    /// Installations left in plain text by a schema-1 database are sealed into
    /// connections of the default tenant now, and their plain text deleted.
    pub fn with_keyring(mut self, keyring: Keyring) -> Result<Self> {
        let keyring = Arc::new(keyring);
        connections::seal_legacy_installations(&self, &keyring)?;
        self.keyring = Some(keyring);
        Ok(self)
    }

    /// Sets how durable commits are (default [`Durability::Normal`]). Applies to
    /// the shared writer connection, so to every clone.
    pub fn with_durability(self, durability: Durability) -> Result<Self> {
        lock(&self.inner.writer)
            .pragma_update(None, "synchronous", durability.pragma())
            .map_err(|e| Error::from(DbError::from(e)).context("setting durability"))?;
        Ok(self)
    }

    /// The database file, or `None` for an in-memory database.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_deref()
    }

    /// Runs `f` atomically and waits for the commit: on the caller's thread if
    /// the write lock is free at once, else on the writer thread.
    /// `what` names the operation in errors.
    async fn write<R, F>(&self, what: &'static str, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Db<R> + Send + 'static,
    {
        // Short requests run on the caller's thread when the write lock is
        // free at once (a few dozen microseconds of SQL, no thread hops);
        // otherwise they queue for the writer thread's group commit.
        let f = match self.inner.writer.try_lock() {
            Ok(conn) => match writer::try_inline(&conn, f) {
                Ok(result) => return result.map_err(|e| with_context(e.into(), what)),
                Err(f) => f,
            },
            Err(_) => f,
        };
        self.queue(what, f).await
    }

    /// [`SqliteStore::write`] for requests that take long (big batches):
    /// always on the writer thread, never blocking the caller's thread.
    async fn write_long<R, F>(&self, what: &'static str, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Db<R> + Send + 'static,
    {
        self.queue(what, f).await
    }

    /// Queues `f` for the writer thread.
    async fn queue<R, F>(&self, what: &'static str, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Db<R> + Send + 'static,
    {
        self.send_job(what, |reply| Box::new(Job::new(what, f, reply)))
            .await
    }

    /// Runs `f` in its own transaction directly on the writer connection, from
    /// a synchronous context (configuration, before the store is shared); the
    /// connection's mutex keeps it apart from the writer thread's batches.
    fn write_now<R, F>(&self, what: &'static str, f: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Db<R>,
    {
        let conn = lock(&self.inner.writer);
        writer::in_transaction(&conn, f).map_err(|e| with_context(e.into(), what))
    }

    /// Queues the request `job` builds around its reply channel and waits
    /// (without polling) for the answer, sent after the commit.
    async fn send_job<R>(
        &self,
        what: &'static str,
        job: impl FnOnce(oneshot::Sender<Result<R>>) -> Box<dyn Queued>,
    ) -> Result<R> {
        let stopped = || {
            Error::new(
                ErrorKind::Store,
                format!("{what}: the store's writer thread has stopped"),
            )
        };
        let (reply, answer) = oneshot::channel();
        let jobs = self.inner.jobs.as_ref().ok_or_else(stopped)?;
        if jobs.send(job(reply)).is_err() {
            return Err(stopped());
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

fn count64(n: i64) -> Db<u64> {
    u64::try_from(n).map_err(|_| corrupt(format!("invalid stored count {n}")))
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn changed(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn state(s: &str) -> Db<DeliveryState> {
    DeliveryState::parse(s).ok_or_else(|| corrupt(format!("unknown stored delivery state {s:?}")))
}

fn tenant(s: String) -> Db<crate::tenant::TenantId> {
    crate::tenant::TenantId::new(s).map_err(|e| corrupt(format!("invalid stored tenant id: {e}")))
}

#[cfg(test)]
mod attribute_tests;
#[cfg(test)]
mod tests;
