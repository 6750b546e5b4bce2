//! Connections: secrets sealed at rest and never shown, keyring refusal and wrong keys, owner conflicts, default selection and compare-and-swap rotation.

use secrecy::{ExposeSecret, SecretString};
use switchboard::ErrorKind;
use switchboard::tenant::{Connection, ConnectionKey, ConnectionState, Secrets};

use crate::harness::*;

pub const TOKEN: &str = "xoxb-very-secret-token-4711";

pub fn conn(tn: &str, platform: &str, account: &str, token: &str) -> Connection {
    Connection::builder(tenant(tn), platform, account)
        .access_token(SecretString::from(token.to_owned()))
        .refresh_token(SecretString::from(format!("refresh-{token}")))
        .expires_at(t(3600))
        .data(serde_json::json!({"team_id": account, "bot_user_id": "B1"}))
        .at(t(-50))
        .build()
        .expect("valid connection")
}

fn token_of(c: &Connection) -> String {
    c.access_token()
        .map(|s| s.expose_secret().to_owned())
        .unwrap_or_default()
}

pub async fn connections_round_trip_with_secrets(b: Backend) {
    let s = b.open();
    let key = ConnectionKey::new("slack", "T1");
    assert!(s.connection(&key).await.unwrap().is_none());
    let stored = s
        .put_connection(&conn("acme", "slack", "T1", TOKEN), t(0))
        .await
        .unwrap();
    assert_eq!(stored.revision, 1, "the first write is revision 1");
    assert_eq!(token_of(&stored), TOKEN);

    let got = s.connection(&key).await.unwrap().expect("stored");
    assert_eq!(got.tenant, tenant("acme"));
    assert_eq!(got.key, key);
    assert_eq!(token_of(&got), TOKEN);
    assert_eq!(
        got.secret("refresh_token")
            .map(|s| s.expose_secret().to_owned()),
        Some(format!("refresh-{TOKEN}"))
    );
    assert_eq!(got.secrets.len(), 2);
    assert_eq!(got.expires_at, Some(t(3600)));
    assert_eq!(got.data_str("bot_user_id"), Some("B1"));
    assert!(got.is_connected());
    assert!(got.is_default);
    assert_eq!(got.revision, 1);
    assert_eq!((got.created_at, got.updated_at), (t(0), t(0)));

    // Never shown: Debug and Serialize name the secrets, not their values.
    let debug = format!("{got:?}");
    assert!(!debug.contains(TOKEN), "Debug leaks the token: {debug}");
    assert!(debug.contains("access_token") && debug.contains("T1"));
    let json = serde_json::to_string(&got).unwrap();
    assert!(!json.contains(TOKEN), "Serialize leaks the token: {json}");
    assert!(json.contains("access_token"));

    // Replace: new secrets, revision bumped, created_at kept.
    let mut replaced = conn("acme", "slack", "T1", "xoxb-second");
    replaced.secrets = Secrets::new().with("access_token", SecretString::from("xoxb-second"));
    replaced.expires_at = None;
    let stored = s.put_connection(&replaced, t(5)).await.unwrap();
    assert_eq!(stored.revision, 2);
    let got = s.connection(&key).await.unwrap().expect("stored");
    assert_eq!(token_of(&got), "xoxb-second");
    assert!(got.secret("refresh_token").is_none());
    assert_eq!(got.expires_at, None);
    assert_eq!((got.created_at, got.updated_at), (t(0), t(5)));
    assert!(
        s.connection(&ConnectionKey::new("teams", "T1"))
            .await
            .unwrap()
            .is_none()
    );

    // State changes.
    let off = ConnectionState::Disconnected {
        reason: "token_revoked".to_owned(),
        since: t(7),
    };
    assert!(s.set_connection_state(&key, &off, t(7)).await.unwrap());
    let got = s.connection(&key).await.unwrap().expect("stored");
    assert_eq!(got.state, off);
    assert_eq!(got.updated_at, t(7));
    assert_eq!(
        token_of(&got),
        "xoxb-second",
        "a state change keeps the secrets"
    );
    assert!(
        !s.set_connection_state(&ConnectionKey::new("slack", "nope"), &off, t(7))
            .await
            .unwrap()
    );

    assert!(s.delete_connection(&key).await.unwrap());
    assert!(!s.delete_connection(&key).await.unwrap());
    assert!(s.connection(&key).await.unwrap().is_none());
}

pub async fn connections_list_per_tenant_by_key(b: Backend) {
    let s = b.open();
    for (tn, platform, account) in [
        ("globex", "slack", "T9"),
        ("acme", "zendesk", "acme-help"),
        ("acme", "slack", "T2"),
    ] {
        s.put_connection(&conn(tn, platform, account, TOKEN), t(0))
            .await
            .unwrap();
    }
    let keys = |v: Vec<Connection>| v.into_iter().map(|c| c.key.to_string()).collect::<Vec<_>>();
    assert_eq!(
        keys(s.connections(Some(&tenant("acme"))).await.unwrap()),
        ["slack:T2", "zendesk:acme-help"]
    );
    assert_eq!(
        keys(s.connections(None).await.unwrap()),
        ["slack:T2", "slack:T9", "zendesk:acme-help"]
    );
    assert!(
        s.connections(Some(&tenant("initech")))
            .await
            .unwrap()
            .is_empty()
    );
    let all = s.connections(None).await.unwrap();
    assert!(all.iter().all(|c| token_of(c) == TOKEN), "secrets opened");
}

pub async fn store_without_keyring_refuses_secrets(b: Backend) {
    let s = b.open_without_keyring();
    let err = s
        .put_connection(&conn("acme", "slack", "T1", TOKEN), t(0))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Secret);
    assert!(
        s.connection(&ConnectionKey::new("slack", "T1"))
            .await
            .unwrap()
            .is_none(),
        "nothing was written"
    );
    // Without secrets there is nothing to seal.
    let plain = Connection::builder(tenant("acme"), "s3", "bucket")
        .build()
        .unwrap();
    let stored = s.put_connection(&plain, t(0)).await.unwrap();
    assert!(stored.secrets.is_empty());
    let got = s
        .connection(&ConnectionKey::new("s3", "bucket"))
        .await
        .unwrap()
        .expect("stored");
    assert!(got.secrets.is_empty());
    // Nor may secrets be swapped in.
    let secrets = Secrets::new().with("access_token", SecretString::from(TOKEN));
    let err = s
        .swap_secrets(&got.key, got.revision, &secrets, None, t(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Secret);
}

pub async fn wrong_key_cannot_open_secrets(b: Backend) {
    let s = b.open();
    let key = ConnectionKey::new("slack", "T1");
    s.put_connection(&conn("acme", "slack", "T1", TOKEN), t(0))
        .await
        .unwrap();
    let other = s.with_keyring(keyring());
    let err = other.connection(&key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Secret);
    assert!(!err.to_string().contains(TOKEN));
    let err = other
        .default_connection(&tenant("acme"), "slack")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Secret);
    let err = other.connections(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Secret);
    // The right key still opens it.
    let got = s.connection(&key).await.unwrap().expect("stored");
    assert_eq!(token_of(&got), TOKEN);
}

/// One platform account belongs to one tenant.
pub async fn connection_owned_by_another_tenant_conflicts(b: Backend) {
    let s = b.open();
    s.put_connection(&conn("acme", "slack", "T1", TOKEN), t(0))
        .await
        .unwrap();
    let err = s
        .put_connection(&conn("globex", "slack", "T1", "xoxb-globex"), t(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let got = s
        .connection(&ConnectionKey::new("slack", "T1"))
        .await
        .unwrap()
        .expect("kept");
    assert_eq!(got.tenant, tenant("acme"));
    assert_eq!(token_of(&got), TOKEN);
    assert_eq!(got.revision, 1);
}

pub async fn default_connection_selection(b: Backend) {
    let s = b.open();
    let acme = tenant("acme");
    assert!(
        s.default_connection(&acme, "slack")
            .await
            .unwrap()
            .is_none()
    );
    // The only one is the default even if not marked.
    let mut only = conn("acme", "slack", "T1", "t1");
    only.is_default = false;
    s.put_connection(&only, t(0)).await.unwrap();
    let got = s
        .default_connection(&acme, "slack")
        .await
        .unwrap()
        .expect("only one");
    assert_eq!(got.key.account, "T1");
    // Two unmarked: none is the default.
    let mut second = conn("acme", "slack", "T2", "t2");
    second.is_default = false;
    s.put_connection(&second, t(1)).await.unwrap();
    assert!(
        s.default_connection(&acme, "slack")
            .await
            .unwrap()
            .is_none()
    );
    // A marked one wins; marking another unmarks it.
    s.put_connection(&conn("acme", "slack", "T2", "t2"), t(2))
        .await
        .unwrap();
    let got = s
        .default_connection(&acme, "slack")
        .await
        .unwrap()
        .expect("marked");
    assert_eq!(
        (got.key.account.as_str(), token_of(&got).as_str()),
        ("T2", "t2")
    );
    s.put_connection(&conn("acme", "slack", "T1", "t1"), t(3))
        .await
        .unwrap();
    let got = s
        .default_connection(&acme, "slack")
        .await
        .unwrap()
        .expect("marked");
    assert_eq!(got.key.account, "T1");
    let t2 = s
        .connection(&ConnectionKey::new("slack", "T2"))
        .await
        .unwrap()
        .expect("T2");
    assert!(!t2.is_default, "marking T1 default unmarked T2");
    // Other tenants and platforms are separate.
    s.put_connection(&conn("globex", "slack", "G1", "g1"), t(4))
        .await
        .unwrap();
    s.put_connection(&conn("acme", "zendesk", "acme", "z1"), t(4))
        .await
        .unwrap();
    let got = s
        .default_connection(&acme, "slack")
        .await
        .unwrap()
        .expect("acme");
    assert_eq!(got.key.account, "T1");
    let got = s
        .default_connection(&tenant("globex"), "slack")
        .await
        .unwrap()
        .expect("globex");
    assert_eq!(got.key.account, "G1");
    assert!(
        s.default_connection(&tenant("globex"), "zendesk")
            .await
            .unwrap()
            .is_none()
    );
}

/// Token rotation across instances: the swap applies only on the revision read.
pub async fn swap_secrets_compares_revision(b: Backend) {
    let s = b.open();
    let key = ConnectionKey::new("slack", "T1");
    let stored = s
        .put_connection(&conn("acme", "slack", "T1", TOKEN), t(0))
        .await
        .unwrap();
    let rotated = Secrets::new()
        .with("access_token", SecretString::from("xoxe-rotated"))
        .with("refresh_token", SecretString::from("refresh-rotated"));
    let swapped = s
        .swap_secrets(&key, stored.revision, &rotated, Some(t(7200)), t(10))
        .await
        .unwrap()
        .expect("first writer wins");
    assert_eq!(swapped.revision, stored.revision + 1);
    assert_eq!(token_of(&swapped), "xoxe-rotated");
    assert_eq!(swapped.expires_at, Some(t(7200)));

    // A second instance that read the old revision loses.
    let late = Secrets::new().with("access_token", SecretString::from("xoxe-late"));
    assert!(
        s.swap_secrets(&key, stored.revision, &late, None, t(11))
            .await
            .unwrap()
            .is_none()
    );
    let got = s.connection(&key).await.unwrap().expect("stored");
    assert_eq!(token_of(&got), "xoxe-rotated");
    assert_eq!(got.revision, stored.revision + 1);
    assert_eq!(got.expires_at, Some(t(7200)));
    assert_eq!(got.updated_at, t(10));
    assert_eq!(got.data_str("bot_user_id"), Some("B1"), "data untouched");
    assert_eq!(got.tenant, tenant("acme"));
}
