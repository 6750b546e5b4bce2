//! Store-backed forwarding addresses: issue, resolve, reset and tenants on every store, surviving a restart and seen at once by a second replica (SQLite file, PostgreSQL at SWITCHBOARD_POSTGRES_URL).

use std::sync::Arc;

use switchboard::TenantId;
use switchboard::email::{
    AddressRegistry, AddressRejection, FORWARD_PLATFORM, ForwardingAddresses, StoreAddressRegistry,
    TOKEN_INDEX_PLATFORM, TOKEN_INDEX_TENANT,
};
use switchboard::store::{MemoryStore, SqliteStore, Store};

const DOMAIN: &str = "in.switchboard.test";

fn tenant(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn addresses(store: Arc<dyn Store>) -> ForwardingAddresses {
    ForwardingAddresses::new(DOMAIN, Arc::new(StoreAddressRegistry::new(store))).unwrap()
}

/// The behaviour every store must show; `a` and `b` are two handles on the
/// same data (two replicas).
async fn behaves(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let one = addresses(Arc::clone(&a));
    let two = addresses(Arc::clone(&b));
    let acme = tenant("acme");
    let globex = tenant("globex");

    let first = one.address_for(&acme, "u1").await.unwrap();
    assert_eq!(first.split('@').next().unwrap().len(), 26);
    // The replica sees the same address, and does not issue another.
    assert_eq!(two.address_for(&acme, "u1").await.unwrap(), first);
    let r = two.resolve(&first).await.unwrap().unwrap();
    assert_eq!((r.tenant.as_str(), r.person_id.as_str()), ("acme", "u1"));
    assert_eq!(r.revoked_at, None);

    // The same user id in another tenant: another address, resolving there.
    let other = one.address_for(&globex, "u1").await.unwrap();
    assert_ne!(other, first);
    assert_eq!(
        two.resolve(&other).await.unwrap().unwrap().tenant.as_str(),
        "globex"
    );

    // A reset on one replica revokes at once on the other.
    let second = one.reset(&acme, "u1").await.unwrap();
    assert_ne!(second, first);
    assert_eq!(
        two.resolve(&first).await.unwrap(),
        Err(AddressRejection::RevokedAddress)
    );
    assert_eq!(two.resolve(&second).await.unwrap().unwrap().person_id, "u1");
    assert_eq!(two.address_for(&acme, "u1").await.unwrap(), second);
    // Globex's address is untouched by Acme's reset.
    assert!(two.resolve(&other).await.unwrap().is_ok());

    // The revoked record keeps its tenant, person and revocation time.
    let token = one.token_of(&first).unwrap();
    let registry = StoreAddressRegistry::new(Arc::clone(&b));
    let old = registry.by_token(&token).await.unwrap().unwrap();
    assert_eq!(old.person_id, "u1");
    assert!(old.revoked_at.is_some());

    let unknown = format!("{}@{DOMAIN}", "a".repeat(26));
    assert_eq!(
        two.resolve(&unknown).await.unwrap(),
        Err(AddressRejection::UnknownAddress)
    );

    // The person's link is the only one on the tenant's platform, and the
    // token index sits under the reserved tenant, not the host's.
    let links = a.links(&acme, FORWARD_PLATFORM).await.unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].platform_id, one.token_of(&second).unwrap());
    assert!(
        a.links(&acme, TOKEN_INDEX_PLATFORM)
            .await
            .unwrap()
            .is_empty()
    );
    let index = a
        .links(&tenant(TOKEN_INDEX_TENANT), TOKEN_INDEX_PLATFORM)
        .await
        .unwrap();
    assert_eq!(index.len(), 3, "first, second and globex's tokens");

    // A token already taken is refused by insert (unique across tenants).
    let taken = registry.by_token(&token).await.unwrap().unwrap();
    let mut clash = taken.clone();
    clash.tenant = globex.clone();
    clash.person_id = "u9".into();
    clash.revoked_at = None;
    assert!(!registry.insert(&clash).await.unwrap());
    assert_eq!(
        two.address_for(&globex, "u9").await.unwrap().len(),
        26 + 1 + DOMAIN.len()
    );
    assert_ne!(
        one.token_of(&two.address_for(&globex, "u9").await.unwrap()),
        Some(token)
    );
}

#[tokio::test]
async fn memory_store() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    behaves(Arc::clone(&store), store).await;
}

#[tokio::test]
async fn sqlite_two_handles_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sb.db");
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    behaves(a, b).await;
    // Restart: a fresh handle resolves the surviving addresses.
    let reopened: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    let again = addresses(Arc::clone(&reopened));
    let current = again.address_for(&tenant("acme"), "u1").await.unwrap();
    assert_eq!(
        again.resolve(&current).await.unwrap().unwrap().person_id,
        "u1"
    );
    assert_eq!(
        reopened
            .links(&tenant(TOKEN_INDEX_TENANT), TOKEN_INDEX_PLATFORM)
            .await
            .unwrap()
            .len(),
        4
    );
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_replicas_and_a_restart() {
    use switchboard::store::PostgresStore;
    let Some(url) = std::env::var("SWITCHBOARD_POSTGRES_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    else {
        eprintln!("skipped: SWITCHBOARD_POSTGRES_URL not set");
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let schema = format!("sb_test_{now}_{:016x}", rand::random::<u64>());
    let a: Arc<dyn Store> = Arc::new(
        PostgresStore::connect_with_schema(&url, &schema)
            .await
            .unwrap(),
    );
    let b: Arc<dyn Store> = Arc::new(
        PostgresStore::connect_with_schema(&url, &schema)
            .await
            .unwrap(),
    );
    behaves(a, b).await;
    let reopened: Arc<dyn Store> = Arc::new(
        PostgresStore::connect_with_schema(&url, &schema)
            .await
            .unwrap(),
    );
    let again = addresses(reopened);
    let current = again.address_for(&tenant("acme"), "u1").await.unwrap();
    assert_eq!(
        again.resolve(&current).await.unwrap().unwrap().person_id,
        "u1"
    );
    if let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        tokio::spawn(conn);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await;
    }
}
