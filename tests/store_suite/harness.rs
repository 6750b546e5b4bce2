//! The suite's harness: which store a test runs against, and small builders for events, deliveries and completions.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use switchboard::attributes::{AttributeRecord, Attributes, DEFAULT_ATTRIBUTE_CAP};
use switchboard::destination::{DeliveryId, Receipt};
use switchboard::secret::Keyring;
use switchboard::store::{
    ClaimedDelivery, Completion, DeliveryState, EnqueueOutcome, LogStatus, MemoryStore,
    NewDelivery, Outcome, Store,
};
use switchboard::tenant::TenantId;
use switchboard::{Event, Person, Target};

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    #[cfg(feature = "sqlite")]
    Sqlite,
    #[cfg(feature = "sqlite")]
    SqliteInMemory,
    /// PostgreSQL at SWITCHBOARD_POSTGRES_URL, each test in a fresh schema.
    #[cfg(feature = "postgres")]
    Postgres,
}

/// The database URL for the Postgres backend, if the environment names one.
/// Postgres tests return early (pass) when it is unset.
#[allow(dead_code)]
pub fn postgres_url() -> Option<String> {
    std::env::var("SWITCHBOARD_POSTGRES_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// Makes another handle on the same data with a different keyring.
type Rekey = Box<dyn Fn(Keyring) -> Arc<dyn Store> + Send + Sync>;

/// A store plus whatever must outlive it (the SQLite file's directory).
pub struct Harness {
    pub store: Arc<dyn Store>,
    pub dir: Option<tempfile::TempDir>,
    rekey: Rekey,
}

impl Deref for Harness {
    type Target = dyn Store;
    fn deref(&self) -> &(dyn Store + 'static) {
        &*self.store
    }
}

impl Harness {
    /// Another handle on the same data whose keyring is `keyring`.
    pub fn with_keyring(&self, keyring: Keyring) -> Arc<dyn Store> {
        (self.rekey)(keyring)
    }

    /// The SQLite database file, for backends that have one.
    #[allow(dead_code)]
    pub fn file(&self) -> Option<std::path::PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("sb.db"))
    }
}

pub fn keyring() -> Keyring {
    Keyring::generate("test-key").expect("keyring")
}

impl Backend {
    /// A fresh store with a generated keyring and the default attribute cap.
    pub fn open(self) -> Harness {
        self.build(DEFAULT_ATTRIBUTE_CAP, true)
    }

    /// A fresh store with a generated keyring and attribute cap `cap`.
    pub fn open_with_cap(self, cap: usize) -> Harness {
        self.build(cap, true)
    }

    /// A fresh store without a keyring.
    pub fn open_without_keyring(self) -> Harness {
        self.build(DEFAULT_ATTRIBUTE_CAP, false)
    }

    fn build(self, cap: usize, with_key: bool) -> Harness {
        match self {
            Backend::Memory => {
                let base = MemoryStore::new().with_attribute_cap(cap);
                let store = if with_key {
                    base.clone().with_keyring(keyring())
                } else {
                    base.clone()
                };
                Harness {
                    store: Arc::new(store),
                    dir: None,
                    rekey: Box::new(move |k| Arc::new(base.clone().with_keyring(k))),
                }
            }
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => {
                use switchboard::store::SqliteStore;
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("sb.db");
                let base = SqliteStore::open(&path)
                    .expect("open sqlite")
                    .with_attribute_cap(cap);
                let store = if with_key {
                    base.clone().with_keyring(keyring()).expect("keyring")
                } else {
                    base.clone()
                };
                Harness {
                    store: Arc::new(store),
                    dir: Some(dir),
                    rekey: Box::new(move |k| {
                        Arc::new(base.clone().with_keyring(k).expect("keyring"))
                    }),
                }
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres => open_postgres(cap, with_key),
            #[cfg(feature = "sqlite")]
            Backend::SqliteInMemory => {
                use switchboard::store::SqliteStore;
                let base = SqliteStore::open_in_memory()
                    .expect("open sqlite in memory")
                    .with_attribute_cap(cap);
                let store = if with_key {
                    base.clone().with_keyring(keyring()).expect("keyring")
                } else {
                    base.clone()
                };
                Harness {
                    store: Arc::new(store),
                    dir: None,
                    rekey: Box::new(move |k| {
                        Arc::new(base.clone().with_keyring(k).expect("keyring"))
                    }),
                }
            }
        }
    }
}

/// A PostgresStore in a schema of its own (random name, so tests run in
/// parallel) on the server at SWITCHBOARD_POSTGRES_URL, with leases on the
/// caller's clock like the other backends (the suite drives time). Schemas
/// left by test runs more than an hour old are dropped first.
#[cfg(feature = "postgres")]
fn open_postgres(cap: usize, with_key: bool) -> Harness {
    use switchboard::store::{LeaseClock, PostgresStore};
    let url = postgres_url().expect("SWITCHBOARD_POSTGRES_URL is set");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let schema = format!("sb_test_{now}_{:016x}", rand::random::<u64>());
    // The suite's `build` is synchronous; its tests run on a multi-threaded
    // runtime, so the connection is made in place.
    let base = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(async {
            drop_old_test_schemas(&url, now).await;
            PostgresStore::connect_with_schema(&url, &schema).await
        })
    })
    .expect("connect to PostgreSQL")
    .with_attribute_cap(cap)
    .with_lease_clock(LeaseClock::Caller);
    let store = if with_key {
        base.clone().with_keyring(keyring())
    } else {
        base.clone()
    };
    Harness {
        store: Arc::new(store),
        dir: None,
        rekey: Box::new(move |k| Arc::new(base.clone().with_keyring(k))),
    }
}

#[cfg(feature = "postgres")]
async fn drop_old_test_schemas(url: &str, now: u64) {
    let Ok((client, conn)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await else {
        return;
    };
    tokio::spawn(conn);
    let Ok(rows) = client
        .query(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'sb\\_test\\_%'",
            &[],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let created = name
            .split('_')
            .nth(2)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(now);
        if now.saturating_sub(created) > 3600 {
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                .await;
        }
    }
}

/// `secs` seconds after a fixed instant (whole seconds, as stores keep them).
pub fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("valid time")
}

pub const LEASE: Duration = Duration::from_secs(30);

pub fn tenant(id: &str) -> TenantId {
    TenantId::new(id).expect("valid tenant")
}

pub fn default_tenant() -> TenantId {
    TenantId::default_tenant()
}

/// An event of the default tenant.
pub fn event(id: &str) -> Event {
    event_in("default", id)
}

/// An event of `tenant`.
pub fn event_in(tenant: &str, id: &str) -> Event {
    Event::builder(id, "wallet.funded")
        .occurred_at(t(-100))
        .subject(Person::new("u1").email(" Ada@Example.com "))
        .data(serde_json::json!({"amount": 25, "currency": "EUR", "note": "ünïcode ✓"}))
        .tenant(tenant)
        .build()
        .expect("valid event")
}

/// A delivery to `destination` (scope = the destination's name) with its own key.
pub fn keyed(destination: &str, target: Target, key: &str) -> NewDelivery {
    NewDelivery {
        route: format!("route-{destination}"),
        destination: destination.to_owned(),
        target,
        scope: destination.to_owned(),
        key: key.to_owned(),
    }
}

/// A delivery to `destination` whose key is the destination and target.
pub fn to(destination: &str, target: Target) -> NewDelivery {
    let key = format!("{destination}/{target:?}");
    keyed(destination, target, &key)
}

pub fn dm(destination: &str) -> NewDelivery {
    to(destination, Target::SubjectDm)
}

/// Enqueues one event of the default tenant with one delivery to `destination`
/// (on a key of its own) at `now`; returns nothing, claims tell the id.
pub async fn enqueue_one(s: &Harness, id: &str, destination: &str, now: DateTime<Utc>) {
    enqueue_in(s, "default", id, destination, now).await;
}

/// Like [`enqueue_one`] for `tenant`.
pub async fn enqueue_in(
    s: &Harness,
    tenant: &str,
    id: &str,
    destination: &str,
    now: DateTime<Utc>,
) {
    let d = keyed(
        destination,
        Target::SubjectDm,
        &format!("{tenant}/{destination}/{id}"),
    );
    let outcome = s.enqueue(&event_in(tenant, id), &[d], now).await.unwrap();
    assert_eq!(outcome, EnqueueOutcome::Accepted { deliveries: 1 });
}

/// Enqueues one event with one delivery on `key` of `destination`.
pub async fn enqueue_on_key(
    s: &Harness,
    id: &str,
    destination: &str,
    key: &str,
    now: DateTime<Utc>,
) {
    let outcome = s
        .enqueue(
            &event(id),
            &[keyed(destination, Target::SubjectDm, key)],
            now,
        )
        .await
        .unwrap();
    assert_eq!(outcome, EnqueueOutcome::Accepted { deliveries: 1 });
}

/// Claims everything due at `now`.
pub async fn claim_all(s: &Harness, now: DateTime<Utc>) -> Vec<ClaimedDelivery> {
    s.claim(now, LEASE, 1000).await.unwrap()
}

/// Claims exactly one delivery due at `now`.
pub async fn claim_one(s: &Harness, now: DateTime<Utc>) -> ClaimedDelivery {
    let mut claimed = s.claim(now, LEASE, 1).await.unwrap();
    assert_eq!(claimed.len(), 1, "expected one due delivery at {now}");
    claimed.remove(0)
}

pub fn completion(c: &ClaimedDelivery, outcome: Outcome) -> Completion {
    Completion {
        id: c.id,
        lease: c.lease,
        outcome,
    }
}

pub async fn complete(s: &Harness, c: &ClaimedDelivery, outcome: Outcome, now: DateTime<Utc>) {
    s.complete(&[completion(c, outcome)], now).await.unwrap();
}

pub fn sent(remote_id: &str) -> Outcome {
    Outcome::Sent(Receipt {
        remote_id: Some(remote_id.to_owned()),
        location: None,
    })
}

pub async fn state(s: &Harness, id: DeliveryId) -> DeliveryState {
    s.delivery_state(id)
        .await
        .unwrap()
        .expect("delivery exists")
}

pub async fn statuses(s: &Harness, id: DeliveryId) -> Vec<(LogStatus, u32)> {
    s.delivery_log(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.status, e.attempt))
        .collect()
}

pub fn ids(claimed: &[ClaimedDelivery]) -> Vec<DeliveryId> {
    claimed.iter().map(|c| c.id).collect()
}

pub fn event_ids(claimed: &[ClaimedDelivery]) -> Vec<String> {
    claimed.iter().map(|c| c.event.id.clone()).collect()
}

pub fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub fn record(user: &str, pairs: &[(&str, &str)]) -> AttributeRecord {
    AttributeRecord {
        user_id: user.to_owned(),
        attributes: attrs(pairs),
    }
}
