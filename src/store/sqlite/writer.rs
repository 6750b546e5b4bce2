//! The SQLite writer thread: group commit of queued write requests, each in its own savepoint.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{Db, DbError, is_busy, lock, with_context};
use crate::{Error, ErrorKind, Result};

/// The most requests committed in one transaction.
const MAX_BATCH: usize = 256;

/// How long the writer thread polls for the next request before sleeping, and
/// how long a caller polls for a short request's answer before sleeping. Waking a
/// sleeping thread costs more than a small commit.
const WRITER_POLL: Duration = Duration::from_micros(50);
pub(super) const ANSWER_POLL: Duration = Duration::from_micros(50);

/// Why a whole batch failed (shared by every request in it).
pub(super) struct BatchFailure {
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
pub(super) trait Queued: Send {
    /// Runs it (inside the open transaction).
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Ran>;
    /// Answers it with the batch's failure without running it.
    fn abort(self: Box<Self>, failure: &BatchFailure);
}

/// A request that ran and waits for its transaction's outcome.
pub(super) trait Ran: Send {
    fn succeeded(&self) -> bool;
    /// Answers the caller: its own result, or the commit's failure.
    fn finish(self: Box<Self>, failure: Option<&BatchFailure>);
}

pub(super) struct Job<R, F> {
    what: &'static str,
    f: F,
    reply: oneshot::Sender<Result<R>>,
}

impl<R, F> Job<R, F> {
    pub(super) fn new(what: &'static str, f: F, reply: oneshot::Sender<Result<R>>) -> Self {
        Job { what, f, reply }
    }
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

/// The writer thread's body: takes what is waiting, commits it together.
pub(super) fn writer_loop(
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

pub(super) fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
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

/// Runs `f` in one `BEGIN IMMEDIATE` transaction on `conn` (outside the writer
/// thread, holding the connection's lock), committing only if it succeeds.
pub(super) fn in_transaction<R>(conn: &Connection, f: impl FnOnce(&Connection) -> Db<R>) -> Db<R> {
    rollback(conn);
    exec(conn, "BEGIN IMMEDIATE")?;
    match f(conn) {
        Ok(r) => match exec(conn, "COMMIT") {
            Ok(()) => Ok(r),
            Err(e) => {
                rollback(conn);
                Err(DbError::from(e))
            }
        },
        Err(e) => {
            rollback(conn);
            Err(e)
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
