//! `SharedPacer`: GCRA rate limiting whose state lives in PostgreSQL, so a limit holds for the sum of all replicas.

use std::time::Duration;

use deadpool_postgres::Pool;

use super::{db, micros};
use crate::destination::RateLimit;
use crate::{Error, ErrorKind, Result};

/// The answer to one [`SharedPacer::acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaceDecision {
    /// A slot was taken: send now.
    Go,
    /// No slot: nothing was taken; try again after this long.
    Wait(Duration),
}

/// A rate limiter shared by every replica on one database (from
/// [`super::PostgresStore::pacer`]).
///
/// The generic cell rate algorithm keeps one timestamp per key (its
/// "theoretical arrival time") in the `pacing` table. Each
/// [`SharedPacer::acquire`] is **one** atomic `INSERT … ON CONFLICT DO UPDATE …
/// RETURNING` statement on the database's clock: it takes a slot if the key
/// has one and says how long to wait otherwise, so four replicas pacing a
/// channel at 1 message/s send 1 message/s between them. The cost is one
/// round trip to the database per acquire (a fraction of a millisecond on a
/// local network), on top of the delivery's own claim and completion.
///
/// The engine does not use it yet (its in-process pacer is per replica):
/// hosts can call it from a destination, or the engine can wire it in later.
#[derive(Clone)]
pub struct SharedPacer {
    pool: Pool,
}

impl std::fmt::Debug for SharedPacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPacer").finish_non_exhaustive()
    }
}

/// $1 key, $2 emission interval (µs), $3 tolerance (µs): a slot is taken when
/// the key's arrival time is at most the tolerance ahead of now. The second
/// column (the key's arrival time before this statement, relative to now, in
/// µs) says how long to wait when nothing was taken.
const ACQUIRE: &str = "WITH c AS (SELECT clock_timestamp() AS t), \
     up AS ( \
       INSERT INTO pacing AS p (key, tat) \
       SELECT $1, c.t + $2::int8 * interval '1 microsecond' FROM c \
       ON CONFLICT (key) DO UPDATE SET \
         tat = greatest(p.tat, excluded.tat - $2::int8 * interval '1 microsecond') \
               + $2::int8 * interval '1 microsecond' \
       WHERE greatest(p.tat, excluded.tat - $2::int8 * interval '1 microsecond') \
             - (excluded.tat - $2::int8 * interval '1 microsecond') <= $3::int8 * interval '1 microsecond' \
       RETURNING 1) \
     SELECT EXISTS (SELECT 1 FROM up), \
       (SELECT (extract(epoch FROM (p.tat - c.t)) * 1000000)::int8 \
        FROM pacing p, c WHERE p.key = $1)";

impl SharedPacer {
    pub(super) fn new(pool: Pool) -> SharedPacer {
        SharedPacer { pool }
    }

    /// Takes one slot of `limit` for `key` (e.g. the delivery's pacing key,
    /// or a workspace's key for a budget shared by its channels), or says how
    /// long to wait.
    pub async fn acquire(&self, key: &str, limit: RateLimit) -> Result<PaceDecision> {
        let burst = limit.burst.max(1);
        let interval = micros(limit.per / burst).max(1);
        let tolerance = interval.saturating_mul(i64::from(burst - 1));
        let client = self.pool.get().await.map_err(|e| {
            Error::new(ErrorKind::Store, "could not get a PostgreSQL connection")
                .with_source(e)
                .temporary()
        })?;
        let stmt = client.prepare_cached(ACQUIRE).await.map_err(db("pacing"))?;
        let row = client
            .query_one(&stmt, &[&key, &interval, &tolerance])
            .await
            .map_err(db("pacing"))?;
        if row.get::<_, bool>(0) {
            return Ok(PaceDecision::Go);
        }
        let ahead: i64 = row.get::<_, Option<i64>>(1).unwrap_or(0);
        let wait = ahead.saturating_sub(tolerance).max(1);
        Ok(PaceDecision::Wait(Duration::from_micros(
            u64::try_from(wait).unwrap_or(1),
        )))
    }

    /// Waits until a slot of `limit` for `key` is free and takes it.
    pub async fn until_ready(&self, key: &str, limit: RateLimit) -> Result<()> {
        loop {
            match self.acquire(key, limit).await? {
                PaceDecision::Go => return Ok(()),
                PaceDecision::Wait(d) => tokio::time::sleep(d).await,
            }
        }
    }
}

#[async_trait::async_trait]
impl crate::engine::SharedPacing for SharedPacer {
    async fn try_acquire(&self, key: &str, limit: RateLimit) -> Result<Option<Duration>> {
        Ok(match self.acquire(key, limit).await? {
            PaceDecision::Go => None,
            PaceDecision::Wait(d) => Some(d),
        })
    }
}
