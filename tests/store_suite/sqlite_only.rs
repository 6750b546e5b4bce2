//! SQLite-only behaviour: persistence across reopen, shared files, schema checks, undecodable rows, and secrets never in clear on disk.

use std::sync::Arc;

use secrecy::ExposeSecret;
use switchboard::ErrorKind;
use switchboard::attributes::AttributeStore;
use switchboard::identity::LinkOrigin;
use switchboard::store::{
    ConnectionStore, DeliveryState, Durability, EnqueueOutcome, LinkStore, OutboxStore,
    SqliteStore, Store,
};
use switchboard::tenant::ConnectionKey;

use crate::connections::{TOKEN, conn};
use crate::harness::*;
use crate::records::link;

fn open(path: &std::path::Path, key: [u8; 32]) -> SqliteStore {
    SqliteStore::open(path)
        .unwrap()
        .with_keyring(switchboard::secret::Keyring::new("k1", key).unwrap())
        .unwrap()
}

#[tokio::test]
async fn persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    let e = event("persisted");
    let d = default_tenant();
    let held = {
        let store = open(&path, [1; 32]);
        let outcome = store
            .enqueue(&e, &[dm("slack"), dm("teams")], t(0))
            .await
            .unwrap();
        assert_eq!(outcome, EnqueueOutcome::Accepted { deliveries: 2 });
        // One is claimed and then the process "dies" holding the lease.
        let claimed = store.claim(t(0), LEASE, 1).await.unwrap();
        assert_eq!(claimed.len(), 1);
        store
            .put_link(&link("slack", "u1", "U1", LinkOrigin::Manual))
            .await
            .unwrap();
        store
            .upsert(&d, &[record("u1", &[("plan", "Premium")])])
            .await
            .unwrap();
        store
            .put_connection(&conn("default", "slack", "T1", TOKEN), t(0))
            .await
            .unwrap();
        claimed[0].id
    };
    let store = open(&path, [1; 32]);
    assert_eq!(
        store.enqueue(&e, &[dm("slack")], t(1)).await.unwrap(),
        EnqueueOutcome::Duplicate,
        "event ids survive a restart"
    );
    let now_due = store.claim(t(1), LEASE, 10).await.unwrap();
    assert_eq!(now_due.len(), 1, "the unclaimed one");
    assert_eq!(*now_due[0].event, e);
    assert_ne!(now_due[0].id, held);
    // The dead worker's lease (taken at t(0)) expires at t(30).
    assert!(store.claim(t(29), LEASE, 10).await.unwrap().is_empty());
    let reclaimed = store.claim(t(30), LEASE, 10).await.unwrap();
    assert_eq!(
        ids(&reclaimed),
        [held],
        "the dead worker's delivery is reclaimed"
    );
    assert_eq!(reclaimed[0].attempt, 2, "the crashed claim counted");
    assert_eq!(
        store
            .link(&d, "slack", "u1")
            .await
            .unwrap()
            .map(|l| l.origin),
        Some(LinkOrigin::Manual)
    );
    assert_eq!(
        store.get(&d, "u1").await.unwrap(),
        Some(attrs(&[("plan", "Premium")]))
    );
    let c = store
        .connection(&ConnectionKey::new("slack", "T1"))
        .await
        .unwrap()
        .expect("connection");
    assert_eq!(
        c.access_token().map(|s| s.expose_secret().to_owned()),
        Some(TOKEN.to_owned())
    );
    assert_eq!(store.path(), Some(path.as_path()));
}

/// Reopening with another key: the secrets do not open, and say why.
#[tokio::test]
async fn reopening_with_a_wrong_key_is_a_secret_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    open(&path, [1; 32])
        .put_connection(&conn("acme", "slack", "T1", TOKEN), t(0))
        .await
        .unwrap();
    let wrong = open(&path, [2; 32]);
    let err = wrong
        .connection(&ConnectionKey::new("slack", "T1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Secret);
    assert!(!err.to_string().contains(TOKEN));
    let keyless = SqliteStore::open(&path).unwrap();
    let err = keyless
        .connection(&ConnectionKey::new("slack", "T1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Secret);
}

/// The token never reaches the disk in clear: not in the database file, not
/// in its write-ahead log.
#[tokio::test]
async fn tokens_are_not_in_the_file_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sealed.db");
    let store = open(&path, [3; 32]);
    store
        .put_connection(&conn("acme", "slack", "T1", TOKEN), t(0))
        .await
        .unwrap();
    let rotated = switchboard::tenant::Secrets::new().with(
        "access_token",
        secrecy::SecretString::from(format!("{TOKEN}-rotated")),
    );
    store
        .swap_secrets(&ConnectionKey::new("slack", "T1"), 1, &rotated, None, t(1))
        .await
        .unwrap()
        .expect("swapped");
    let mut bytes = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        bytes.extend(std::fs::read(&p).unwrap());
        files += 1;
    }
    assert!(files >= 1);
    let needle = b"very-secret-token";
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle),
        "a token is in clear in the database files"
    );
    // Sanity: the non-secret data is there in clear, so the scan sees rows.
    let team = b"bot_user_id";
    assert!(bytes.windows(team.len()).any(|w| w == team));
}

/// A row that cannot be decoded is dead-lettered at claim with the reason;
/// the others are claimed as usual.
#[tokio::test]
async fn undecodable_row_is_dead_lettered_at_claim() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.db");
    let store = open(&path, [4; 32]);
    for id in ["good-1", "bad", "good-2"] {
        store
            .enqueue(
                &event(id),
                &[keyed("slack", switchboard::Target::SubjectDm, id)],
                t(0),
            )
            .await
            .unwrap();
    }
    {
        let raw = rusqlite::Connection::open(&path).unwrap();
        let changed = raw
            .execute(
                "UPDATE deliveries SET target = '{not json' WHERE key = 'bad'",
                [],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }
    let claimed = store.claim(t(1), LEASE, 10).await.unwrap();
    assert_eq!(event_ids(&claimed), ["good-1", "good-2"]);
    let dead = store.dead_letters(None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event_id, "bad");
    assert!(!dead[0].error.to_string().is_empty());
    assert_eq!(
        store.delivery_state(dead[0].id).await.unwrap(),
        Some(DeliveryState::Dead)
    );
    assert!(store.claim(t(2), LEASE, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn clones_share_one_database_and_work_as_dyn_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("a.db"))
        .unwrap()
        .with_durability(Durability::Full)
        .unwrap();
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let outcome = shared
        .enqueue(&event("x"), &[dm("slack")], t(0))
        .await
        .unwrap();
    assert_eq!(outcome, EnqueueOutcome::Accepted { deliveries: 1 });
    assert_eq!(store.claim(t(0), LEASE, 10).await.unwrap().len(), 1);
    assert!(format!("{store:?}").contains("a.db"));
}

#[tokio::test]
async fn two_handles_on_one_file_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = SqliteStore::open(&path).unwrap();
    let b = SqliteStore::open(&path).unwrap();
    a.enqueue(&event("e"), &[dm("slack")], t(0)).await.unwrap();
    assert_eq!(
        b.enqueue(&event("e"), &[dm("slack")], t(0)).await.unwrap(),
        EnqueueOutcome::Duplicate
    );
    let claimed = b.claim(t(0), LEASE, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(a.claim(t(0), LEASE, 10).await.unwrap().is_empty());
    a.complete(&[completion(&claimed[0], sent("r"))], t(1))
        .await
        .unwrap();
    assert_eq!(
        b.delivery_state(claimed[0].id).await.unwrap(),
        Some(DeliveryState::Sent)
    );
}

#[tokio::test]
async fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    drop(SqliteStore::open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
    }
    let err = SqliteStore::open(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store);
    assert!(err.to_string().contains("999"), "{err}");
}

#[tokio::test]
async fn open_fails_cleanly_on_a_bad_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteStore::open(dir.path().join("missing-dir").join("x.db")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store);
}
