//! Tenants and connections in the engine (issue 8): each tenant's deliveries go out with its own connection, parking is per tenant, "not connected" parks until the tenant connects, and per-tenant rules switch routes and targets.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Scripted, tenant_event};
use secrecy::SecretString;
use switchboard::secret::Keyring;
use switchboard::store::RouteRule;
use switchboard::{Connection, MemoryStore, Route, Store, Switchboard, Target, TenantId};

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).unwrap()
}

fn connection(t: &str, account: &str, token: &str) -> Connection {
    Connection::builder(tenant(t), "chat", account)
        .access_token(SecretString::from(token.to_owned()))
        .build()
        .unwrap()
}

fn store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new().with_keyring(Keyring::generate("test").unwrap()))
}

fn board(store: Arc<dyn Store>, dest: &Scripted) -> Switchboard {
    Switchboard::builder()
        .store_arc(store)
        .destination(dest.clone())
        .route(
            Route::on("wallet.*")
                .named("wallet")
                .to("chat", Target::SubjectDm)
                .template("{{ kind }}"),
        )
        .route(
            Route::on("perk.redeemed")
                .named("redeemed")
                .to("chat", Target::channel("general")),
        )
        .route(
            Route::on("catalog.*")
                .named("catalog")
                .to("chat", Target::channel("general")),
        )
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn each_tenant_delivers_with_its_own_connection_and_parks_alone() {
    let dest = Scripted::new("chat").platform("chat");
    let sb = board(store(), &dest);
    sb.connect(connection("acme", "T-A", "xoxb-a"))
        .await
        .unwrap();
    sb.connect(connection("globex", "T-B", "xoxb-b"))
        .await
        .unwrap();
    dest.revoke("xoxb-b");
    for i in 0..3 {
        sb.publish(tenant_event(
            "acme",
            &format!("a{i}"),
            "wallet.funded",
            &format!("u{i}"),
        ))
        .await
        .unwrap();
        sb.publish(tenant_event(
            "globex",
            &format!("b{i}"),
            "catalog.perk_added",
            "u9",
        ))
        .await
        .unwrap();
    }
    sb.drain(Duration::from_secs(60)).await.unwrap();
    let calls = dest.calls();
    let acme: Vec<_> = calls.iter().filter(|c| c.tenant == "acme").collect();
    assert_eq!(acme.len(), 3, "all of acme's arrive");
    assert!(acme.iter().all(|c| c.token.as_deref() == Some("xoxb-a")));
    let globex: Vec<_> = calls.iter().filter(|c| c.tenant == "globex").collect();
    assert_eq!(
        globex.len(),
        1,
        "globex's head was refused, the rest parked unattempted"
    );
    assert_eq!(globex[0].token.as_deref(), Some("xoxb-b"));

    let status = sb.status().await.unwrap();
    let b = status
        .iter()
        .find(|s| s.tenant.as_str() == "globex")
        .unwrap();
    assert!(!b.connected);
    assert_eq!(b.parked, 3);
    let a = status.iter().find(|s| s.tenant.as_str() == "acme").unwrap();
    assert!(a.connected);
    assert_eq!(a.sent, 3);
    let stored = sb
        .store()
        .connection(&switchboard::ConnectionKey::new("chat", "T-B"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        !stored.is_connected(),
        "the revoked connection is marked disconnected"
    );

    // Globex reinstalls: a new token; its parked deliveries go out in order.
    sb.connect(connection("globex", "T-B", "xoxb-b2"))
        .await
        .unwrap();
    sb.drain(Duration::from_secs(60)).await.unwrap();
    let after: Vec<_> = dest
        .calls()
        .into_iter()
        .filter(|c| c.tenant == "globex" && c.token.as_deref() == Some("xoxb-b2"))
        .map(|c| c.event_id)
        .collect();
    assert_eq!(after, ["b0", "b1", "b2"]);
    assert!(sb.dead_letters(10).await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_tenant_without_a_connection_is_parked_until_it_connects() {
    let dest = Scripted::new("chat").platform("chat");
    let sb = board(store(), &dest);
    sb.publish(tenant_event("initech", "i1", "wallet.funded", "u1"))
        .await
        .unwrap();
    sb.publish(tenant_event("initech", "i2", "wallet.funded", "u2"))
        .await
        .unwrap();
    sb.drain(Duration::from_secs(60)).await.unwrap();
    assert!(dest.calls().is_empty());
    let st = sb.tenant_status(&tenant("initech")).await.unwrap();
    assert_eq!(st.len(), 1);
    assert!(!st[0].connected);
    assert!(
        st[0]
            .disconnected_reason
            .as_deref()
            .unwrap()
            .contains("not connected"),
        "{st:?}"
    );
    assert_eq!(st[0].parked, 2);
    assert!(
        sb.dead_letters(10).await.unwrap().is_empty(),
        "never dead-lettered"
    );

    sb.connect(connection("initech", "T-I", "xoxb-i"))
        .await
        .unwrap();
    sb.drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(dest.ids(), ["i1", "i2"]);
}

#[tokio::test(start_paused = true)]
async fn a_fixed_credential_destination_serves_the_default_tenant() {
    let dest = Scripted::new("chat").platform("chat").fixed_credentials();
    let sb = board(store(), &dest);
    sb.publish(common::event("d1", "wallet.funded"))
        .await
        .unwrap();
    sb.publish(tenant_event("acme", "a1", "wallet.funded", "u1"))
        .await
        .unwrap();
    sb.drain(Duration::from_secs(60)).await.unwrap();
    let calls = dest.calls();
    assert_eq!(
        calls.len(),
        1,
        "only the default tenant goes without a connection"
    );
    assert_eq!(
        (calls[0].event_id.as_str(), calls[0].token.as_deref()),
        ("d1", None)
    );
}

#[tokio::test(start_paused = true)]
async fn per_tenant_rules_switch_routes_and_targets() {
    let dest = Scripted::new("chat").platform("chat");
    let store = store();
    let sb = board(store.clone(), &dest);
    sb.connect(connection("acme", "T-A", "xoxb-a"))
        .await
        .unwrap();
    sb.connect(connection("globex", "T-B", "xoxb-b"))
        .await
        .unwrap();
    let now = sb.now();
    sb.set_rule(RouteRule {
        tenant: tenant("acme"),
        route: "redeemed".into(),
        enabled: Some(false),
        target: None,
        updated_at: now,
    })
    .await
    .unwrap();
    sb.set_rule(RouteRule {
        tenant: tenant("acme"),
        route: "catalog".into(),
        enabled: None,
        target: Some(Target::channel("perks")),
        updated_at: now,
    })
    .await
    .unwrap();
    // An unknown route is refused.
    assert!(
        sb.set_rule(RouteRule {
            tenant: tenant("acme"),
            route: "nope".into(),
            enabled: Some(false),
            target: None,
            updated_at: now,
        })
        .await
        .is_err()
    );
    for t in ["acme", "globex"] {
        let r = sb
            .publish(tenant_event(t, &format!("{t}-r"), "perk.redeemed", "u1"))
            .await
            .unwrap();
        assert_eq!(r.deliveries, usize::from(t == "globex"), "{t}");
        sb.publish(tenant_event(
            t,
            &format!("{t}-c"),
            "catalog.perk_added",
            "u1",
        ))
        .await
        .unwrap();
    }
    sb.drain(Duration::from_secs(60)).await.unwrap();
    let targets: Vec<(String, Target)> = dest
        .calls()
        .into_iter()
        .map(|c| (c.event_id, c.target))
        .collect();
    assert!(targets.contains(&("acme-c".into(), Target::channel("perks"))));
    assert!(targets.contains(&("globex-c".into(), Target::channel("general"))));
    assert!(targets.contains(&("globex-r".into(), Target::channel("general"))));
    assert!(!targets.iter().any(|(id, _)| id == "acme-r"));

    // Another instance on the same store applies acme's rules too.
    let other_dest = Scripted::new("chat").platform("chat");
    let other = board(store, &other_dest);
    let r = other
        .publish(tenant_event("acme", "acme-r2", "perk.redeemed", "u1"))
        .await
        .unwrap();
    assert_eq!(r.deliveries, 0);
    let rules = other.rules(&tenant("acme")).await.unwrap();
    assert_eq!(rules.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn event_ids_are_per_tenant_and_pacing_is_per_tenant() {
    let dest = Scripted::new("chat")
        .platform("chat")
        .caps(switchboard::Capabilities {
            target_limits: vec![switchboard::RateLimit::per_second(1)],
            ..switchboard::Capabilities::default()
        });
    let sb = board(store(), &dest);
    sb.connect(connection("acme", "T-A", "a")).await.unwrap();
    sb.connect(connection("globex", "T-B", "b")).await.unwrap();
    sb.publish(tenant_event("acme", "x1", "catalog.perk_added", "u1"))
        .await
        .unwrap();
    sb.publish(tenant_event("globex", "y1", "catalog.perk_added", "u1"))
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    sb.run_until_idle().await.unwrap();
    let calls = dest.calls();
    assert_eq!(calls.len(), 2);
    // Both tenants' #general got their post at once: budgets are not shared.
    assert!(
        calls
            .iter()
            .all(|c| c.at - start < Duration::from_millis(100))
    );
    // Event ids are unique per tenant: the same id in another tenant is a
    // different event, the same id in the same tenant a duplicate.
    let other = sb
        .publish(tenant_event("globex", "x1", "catalog.perk_added", "u1"))
        .await
        .unwrap();
    assert!(!other.duplicate);
    let dup = sb
        .publish(tenant_event("globex", "y1", "catalog.perk_added", "u1"))
        .await
        .unwrap();
    assert!(dup.duplicate);
}
