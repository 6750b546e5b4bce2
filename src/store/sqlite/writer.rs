//! The SQLite writer thread: group commit of queued write requests, each in its own savepoint.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, mpsc};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::outbox_rows::{Apply, complete_rows};
use super::{Db, DbError, is_busy, lock, with_context};
use crate::{Error, ErrorKind, Result};

/// The most requests committed in one transaction.
const MAX_BATCH: usize = 256;

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
    /// A completion request's completions and time: the writer applies a run
    /// of consecutive completion requests together, in one pass.
    fn completions(&self) -> Option<(&[Apply], i64)> {
        None
    }
    /// Answers a completion request whose completions were applied together
    /// with others' (so successfully); other requests just run.
    fn applied(self: Box<Self>, conn: &Connection) -> Box<dyn Ran> {
        self.run(conn)
    }
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

/// `OutboxStore::complete`: its completions, encoded off the writer thread.
pub(super) struct CompleteJob {
    applies: Vec<Apply>,
    now: i64,
    reply: oneshot::Sender<Result<()>>,
}

impl CompleteJob {
    pub(super) fn new(applies: Vec<Apply>, now: i64, reply: oneshot::Sender<Result<()>>) -> Self {
        CompleteJob {
            applies,
            now,
            reply,
        }
    }

    fn answer(self, result: Result<()>) -> Box<dyn Ran> {
        Box::new(Done {
            what: "complete",
            result,
            reply: self.reply,
        })
    }
}

impl Queued for CompleteJob {
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Ran> {
        let result = catch_unwind(AssertUnwindSafe(|| {
            complete_rows(conn, &[(&self.applies, self.now)])
        }));
        let result = match result {
            Ok(result) => result.map_err(|e| with_context(e.into(), "complete")),
            Err(_) => Err(Error::new(
                ErrorKind::Store,
                "complete: panicked on the store's writer thread",
            )),
        };
        self.answer(result)
    }

    fn abort(self: Box<Self>, failure: &BatchFailure) {
        // The caller may have given up waiting; nothing to do then.
        let _ = self.reply.send(Err(failure.error("complete")));
    }

    fn completions(&self) -> Option<(&[Apply], i64)> {
        Some((&self.applies, self.now))
    }

    fn applied(self: Box<Self>, _: &Connection) -> Box<dyn Ran> {
        self.answer(Ok(()))
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

/// The writer thread's body: sleeps until a request comes, then takes it and
/// every request queued meanwhile and commits them together. Neither side
/// polls: on a machine shared with other work a spinning thread steals the
/// core the other side needs, and concurrent callers are batched anyway.
pub(super) fn writer_loop(conn: &Mutex<Connection>, queue: &mpsc::Receiver<Box<dyn Queued>>) {
    while let Ok(first) = queue.recv() {
        let mut batch = Vec::with_capacity(16);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&lock(conn), batch);
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

/// Runs `f` in its own transaction on the caller's thread if the write lock
/// can be taken at once (the writer thread idle and no other connection
/// writing): `Err(f)` hands it back otherwise, for the writer thread. A lone
/// request thus costs no hop to the writer thread and back; concurrent ones
/// still queue and are committed together.
pub(super) fn try_inline<R, F>(conn: &Connection, f: F) -> std::result::Result<Db<R>, F>
where
    F: FnOnce(&Connection) -> Db<R>,
{
    rollback(conn);
    let began = conn
        .busy_timeout(std::time::Duration::ZERO)
        .and_then(|()| exec(conn, "BEGIN IMMEDIATE"));
    if let Err(e) = conn.busy_timeout(super::BUSY_TIMEOUT) {
        tracing::error!(error = %e, "SQLite store: could not restore the busy timeout");
    }
    if began.is_err() {
        return Err(f);
    }
    let result = match catch_unwind(AssertUnwindSafe(|| f(conn))) {
        Ok(result) => result,
        Err(_) => Err(DbError::from(Error::new(
            ErrorKind::Store,
            "panicked inside a store transaction",
        ))),
    };
    Ok(match result {
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
    })
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
/// lone request needs none), commits, then answers every caller. A run of
/// consecutive completion requests is first applied together in one
/// savepoint (one pass, one health update per destination); only if that
/// fails is each applied on its own, so one bad request fails alone.
fn run_batch(conn: &Connection, batch: Vec<Box<dyn Queued>>) {
    rollback(conn);
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        let failure = BatchFailure::new(&e);
        for job in batch {
            job.abort(&failure);
        }
        return;
    }
    let single = batch.len() == 1;
    let mut ran: Vec<Box<dyn Ran>> = Vec::with_capacity(batch.len());
    let mut broken: Option<BatchFailure> = None;
    let mut jobs = batch.into_iter().peekable();
    while let Some(job) = jobs.next() {
        if let Some(failure) = &broken {
            job.abort(failure);
            continue;
        }
        if single {
            ran.push(job.run(conn));
            continue;
        }
        let mut group = vec![job];
        if group[0].completions().is_some() {
            while let Some(next) = jobs.next_if(|j| j.completions().is_some()) {
                group.push(next);
            }
        }
        if group.len() > 1 {
            match apply_together(conn, &group) {
                Ok(true) => {
                    ran.extend(group.into_iter().map(|j| j.applied(conn)));
                    continue;
                }
                Ok(false) => {}
                Err(failure) => {
                    for job in group {
                        job.abort(&failure);
                    }
                    broken = Some(failure);
                    continue;
                }
            }
        }
        for job in group {
            if let Some(failure) = &broken {
                job.abort(failure);
                continue;
            }
            match run_in_savepoint(conn, job) {
                Ok(done) => ran.push(done),
                Err((done, failure)) => {
                    ran.extend(done);
                    broken = Some(failure);
                }
            }
        }
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
    for done in ran {
        done.finish(failure.as_ref());
    }
}

/// Applies the completions of several completion requests in one savepoint:
/// `Ok(true)` if they all applied, `Ok(false)` if they failed (and were rolled
/// back), `Err` if the savepoint itself failed (the transaction is broken).
fn apply_together(
    conn: &Connection,
    group: &[Box<dyn Queued>],
) -> std::result::Result<bool, BatchFailure> {
    let all: Vec<(&[Apply], i64)> = group.iter().filter_map(|j| j.completions()).collect();
    exec(conn, "SAVEPOINT completions").map_err(|e| BatchFailure::new(&e))?;
    let applied = matches!(
        catch_unwind(AssertUnwindSafe(|| complete_rows(conn, &all))),
        Ok(Ok(()))
    );
    let end = if applied {
        exec(conn, "RELEASE completions")
    } else {
        exec(conn, "ROLLBACK TO completions").and_then(|()| exec(conn, "RELEASE completions"))
    };
    end.map_err(|e| BatchFailure::new(&e))?;
    Ok(applied)
}

/// Runs one request in its own savepoint. `Err` when the savepoint itself
/// failed: the transaction is broken (the request, if it ran, is returned to
/// be answered with that failure).
/// A savepoint that failed: the request (if it ran) and the failure.
type SavepointFailure = (Option<Box<dyn Ran>>, BatchFailure);

fn run_in_savepoint(
    conn: &Connection,
    job: Box<dyn Queued>,
) -> std::result::Result<Box<dyn Ran>, SavepointFailure> {
    if let Err(e) = exec(conn, "SAVEPOINT job") {
        let failure = BatchFailure::new(&e);
        job.abort(&failure);
        return Err((None, failure));
    }
    let done = job.run(conn);
    let end = if done.succeeded() {
        exec(conn, "RELEASE job")
    } else {
        exec(conn, "ROLLBACK TO job").and_then(|()| exec(conn, "RELEASE job"))
    };
    match end {
        Ok(()) => Ok(done),
        Err(e) => Err((Some(done), BatchFailure::new(&e))),
    }
}
