//! `PostgresStore`: a [`crate::Store`] in PostgreSQL, shared by several replicas of the host (feature `postgres`).
//!
//! Built on `tokio-postgres` with a `deadpool-postgres` pool rather than
//! `sqlx`: it compiles a fraction of the code (no macros, no offline query
//! cache, no other databases' drivers), every query is plain SQL prepared and
//! cached per pooled connection, and the pool is a small, well-kept crate.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::attributes::DEFAULT_ATTRIBUTE_CAP;
use crate::secret::Keyring;
use crate::tenant::TenantId;
use crate::{Error, ErrorKind, Result};

mod attributes;
mod connections;
mod links;
mod outbox;
mod pacing;
mod query;
mod runs;
mod schema;

pub use pacing::{PaceDecision, SharedPacer};

/// Whose clock decides when a lease has expired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum LeaseClock {
    /// The database server's clock (`now()`), the default: a lease taken by
    /// one replica expires at the same instant for every replica, however far
    /// their own clocks drift. The `now` the engine passes is still used for
    /// due times (retries, deferrals), which the engine computes itself.
    #[default]
    Database,
    /// The `now` the caller passes, like the embedded stores: for tests that
    /// drive the engine with a paused or simulated clock.
    Caller,
}

/// A [`crate::Store`] in PostgreSQL, for hosts that run several replicas on one
/// database (feature `postgres`).
///
/// - [`PostgresStore::connect`] opens a connection pool and migrates the schema
///   (versions kept in code, [`PostgresStore::SCHEMA_VERSION`]) under a session advisory lock,
///   so replicas starting together migrate once; a database whose schema is
///   newer than this version knows is refused.
/// - Claims take only the head of each ordering key from `key_heads` (kept by
///   statement triggers; an in-flight delivery stays its key's head until it
///   completes), due heads through an index with `FOR UPDATE SKIP LOCKED`:
///   two replicas never work one key at once, a replica never waits for
///   another's claim, and a claim reads O(claimed) rows whatever the backlog.
/// - Leases run on the database's clock ([`LeaseClock::Database`]) by default.
/// - Enqueue is idempotent per (tenant, event id) with `ON CONFLICT DO NOTHING`,
///   whichever replica publishes.
/// - Connection secrets are sealed with the store's [`Keyring`]; the attribute
///   cap is checked in the writing transaction under a row lock on the
///   tenant's name registry; runs of one integration never overlap (row lock
///   on the integration while starting).
/// - Pacing shared by all replicas: [`PostgresStore::pacer`].
///
/// Cheap to clone; usable as `Arc<dyn Store>`.
///
/// ```no_run
/// # async fn f() -> switchboard::Result<()> {
/// use switchboard::secret::Keyring;
/// use switchboard::store::PostgresStore;
/// let store = PostgresStore::connect("postgres://app@db.internal/switchboard")
///     .await?
///     .with_keyring(Keyring::generate("k1")?)
///     .with_attribute_cap(200);
/// # let _ = store; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    attribute_cap: usize,
    keyring: Option<Arc<Keyring>>,
    lease_clock: LeaseClock,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("attribute_cap", &self.attribute_cap)
            .field("keyring", &self.keyring)
            .field("lease_clock", &self.lease_clock)
            .finish_non_exhaustive()
    }
}

/// Connections kept by the pool of one store handle (and its clones).
const POOL_SIZE: usize = 16;

impl PostgresStore {
    /// The schema version this version of switchboard writes and understands.
    pub const SCHEMA_VERSION: i32 = schema::SCHEMA_VERSION;

    /// Connects to the database at `url` (`postgres://user@host:5432/db`) and
    /// migrates its schema in the connection's default schema (`public`, or the
    /// first of `search_path`).
    pub async fn connect(url: &str) -> Result<PostgresStore> {
        Self::open(url, None).await
    }

    /// Like [`PostgresStore::connect`], in the PostgreSQL schema `schema`
    /// (created if missing; every pooled connection sets `search_path` to it).
    /// Lets several stores share one database, e.g. one per test.
    pub async fn connect_with_schema(url: &str, schema: &str) -> Result<PostgresStore> {
        if schema.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || schema.len() > 63
        {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a schema name is 1 to 63 ASCII letters, digits or underscores",
            ));
        }
        Self::open(url, Some(schema)).await
    }

    async fn open(url: &str, schema: Option<&str>) -> Result<PostgresStore> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            Error::new(ErrorKind::Config, "invalid PostgreSQL connection URL").with_source(e)
        })?;
        if let Some(schema) = schema {
            config.options(format!("-c search_path={schema}"));
        }
        if config.get_application_name().is_none() {
            config.application_name("switchboard");
        }
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Config, "could not build the connection pool").with_source(e)
            })?;
        let store = PostgresStore {
            pool,
            attribute_cap: DEFAULT_ATTRIBUTE_CAP,
            keyring: None,
            lease_clock: LeaseClock::Database,
        };
        let mut client = store.client().await?;
        schema::migrate(&mut client, schema)
            .await
            .map_err(|e| e.context("migrating the PostgreSQL schema"))?;
        Ok(store)
    }

    /// Sets the keyring that seals connection secrets (and opens them, with
    /// its older keys too). Without one the store refuses to write secrets.
    #[must_use]
    pub fn with_keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = Some(Arc::new(keyring));
        self
    }

    /// Sets the cap on distinct attribute names per tenant (default
    /// [`DEFAULT_ATTRIBUTE_CAP`]).
    #[must_use]
    pub fn with_attribute_cap(mut self, cap: usize) -> Self {
        self.attribute_cap = cap;
        self
    }

    /// Sets whose clock expires leases (default [`LeaseClock::Database`]).
    #[must_use]
    pub fn with_lease_clock(mut self, clock: LeaseClock) -> Self {
        self.lease_clock = clock;
        self
    }

    /// A rate limiter whose state lives in this database, so its limits hold
    /// for the sum of all replicas (see [`SharedPacer`]).
    pub fn pacer(&self) -> SharedPacer {
        SharedPacer::new(self.pool.clone())
    }

    fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_deref()
    }

    /// The caller's `now` when leases run on the caller's clock, else `None`
    /// (SQL then uses the database's `now()`).
    fn lease_now(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.lease_clock {
            LeaseClock::Database => None,
            LeaseClock::Caller => Some(now),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            Error::new(
                ErrorKind::Store,
                "could not get a PostgreSQL connection from the pool",
            )
            .with_source(e)
            .temporary()
        })
    }
}

/// Maps a database error to the crate's error; connection trouble, deadlocks
/// and serialization failures are temporary.
pub(super) fn db_error(what: &str, e: tokio_postgres::Error) -> Error {
    let temporary = e.is_closed()
        || e.code().is_some_and(|c| {
            let c = c.code();
            c.starts_with("08") || c == "40001" || c == "40P01" || c.starts_with("53")
        })
        || e.code().is_none();
    let err = Error::new(ErrorKind::Store, format!("{what}: {e}")).with_source(e);
    if temporary { err.temporary() } else { err }
}

/// `.map_err(db(what))`.
pub(super) fn db(what: &'static str) -> impl Fn(tokio_postgres::Error) -> Error {
    move |e| db_error(what, e)
}

pub(super) fn corrupt(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Store, message.into())
}

pub(super) fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| Error::new(ErrorKind::InvalidInput, "could not encode as JSON").with_source(e))
}

pub(super) fn from_json<T: DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| corrupt(format!("a stored JSON value cannot be decoded: {e}")))
}

pub(super) fn tenant(id: String) -> Result<TenantId> {
    TenantId::new(&id).map_err(|_| corrupt(format!("invalid stored tenant id {id:?}")))
}

/// A count or counter read from an `int8` column.
pub(super) fn count64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A count or counter for an `int8` parameter.
pub(super) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A `usize` limit for SQL.
pub(super) fn sql_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Longest lease or interval passed to SQL (100 years), so `now + lease` stays
/// in PostgreSQL's range whatever the caller passes.
const MAX_INTERVAL_MICROS: i64 = 100 * 366 * 24 * 3600 * 1_000_000;

/// A duration as microseconds for SQL (`$n * interval '1 microsecond'`).
pub(super) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros())
        .unwrap_or(i64::MAX)
        .min(MAX_INTERVAL_MICROS)
}
