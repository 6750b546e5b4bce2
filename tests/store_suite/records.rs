//! Records beside the outbox: identity links, integrations and runs, route rules and single-use keys, all per tenant.

use std::time::Duration;

use switchboard::identity::{IdentityLink, LinkOrigin};
use switchboard::integration::{IntegrationConfig, RunOutcome, RunRecord, Schedule};
use switchboard::store::RouteRule;
use switchboard::{ErrorKind, Target};

use crate::harness::*;

pub fn link(platform: &str, user: &str, platform_id: &str, origin: LinkOrigin) -> IdentityLink {
    link_in("default", platform, user, platform_id, origin)
}

pub fn link_in(
    tn: &str,
    platform: &str,
    user: &str,
    platform_id: &str,
    origin: LinkOrigin,
) -> IdentityLink {
    IdentityLink {
        tenant: tenant(tn),
        platform: platform.to_owned(),
        user_id: user.to_owned(),
        platform_id: platform_id.to_owned(),
        origin,
        linked_at: t(1),
    }
}

pub async fn identity_links_and_manual_wins(b: Backend) {
    let s = b.open();
    let d = default_tenant();
    assert_eq!(s.link(&d, "slack:T1", "u1").await.unwrap(), None);
    let auto = link("slack:T1", "u1", "U111", LinkOrigin::EmailMatch);
    s.put_link(&auto).await.unwrap();
    s.put_link(&link("slack:T1", "u0", "U000", LinkOrigin::PhoneMatch))
        .await
        .unwrap();
    s.put_link(&link("teams", "u1", "29:abc", LinkOrigin::EmailMatch))
        .await
        .unwrap();
    assert_eq!(
        s.link(&d, "slack:T1", "u1").await.unwrap(),
        Some(auto.clone())
    );

    // Automatic replaces automatic.
    let auto2 = link("slack:T1", "u1", "U112", LinkOrigin::PhoneMatch);
    s.put_link(&auto2).await.unwrap();
    assert_eq!(s.link(&d, "slack:T1", "u1").await.unwrap(), Some(auto2));

    // Manual replaces automatic; automatic never replaces manual.
    let manual = IdentityLink {
        linked_at: t(2),
        ..link("slack:T1", "u1", "U999", LinkOrigin::Manual)
    };
    s.put_link(&manual).await.unwrap();
    s.put_link(&link("slack:T1", "u1", "U113", LinkOrigin::EmailMatch))
        .await
        .unwrap();
    assert_eq!(s.link(&d, "slack:T1", "u1").await.unwrap(), Some(manual));
    // A manual put replaces a manual link.
    let manual2 = link("slack:T1", "u1", "U998", LinkOrigin::Manual);
    s.put_link(&manual2).await.unwrap();
    assert_eq!(
        s.link(&d, "slack:T1", "u1").await.unwrap(),
        Some(manual2.clone())
    );

    let slack = s.links(&d, "slack:T1").await.unwrap();
    let users: Vec<&str> = slack.iter().map(|l| l.user_id.as_str()).collect();
    assert_eq!(users, ["u0", "u1"]);
    assert_eq!(slack[1], manual2);
    assert_eq!(s.links(&d, "teams").await.unwrap().len(), 1);
    assert!(s.links(&d, "zendesk").await.unwrap().is_empty());

    assert!(s.delete_link(&d, "slack:T1", "u1").await.unwrap());
    assert!(!s.delete_link(&d, "slack:T1", "u1").await.unwrap());
    assert_eq!(s.link(&d, "slack:T1", "u1").await.unwrap(), None);
    assert_eq!(
        s.link(&d, "teams", "u1")
            .await
            .unwrap()
            .map(|l| l.platform_id),
        Some("29:abc".to_owned())
    );
    // After deleting a manual link, an automatic one may be stored again.
    s.put_link(&auto).await.unwrap();
    assert_eq!(s.link(&d, "slack:T1", "u1").await.unwrap(), Some(auto));
}

/// Two tenants' links for the same platform text and user id never mix.
pub async fn identity_links_are_per_tenant(b: Backend) {
    let s = b.open();
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    s.put_link(&link_in("acme", "slack", "u1", "UACME", LinkOrigin::Manual))
        .await
        .unwrap();
    // globex's automatic link is not blocked by acme's manual one.
    s.put_link(&link_in(
        "globex",
        "slack",
        "u1",
        "UGLOBEX",
        LinkOrigin::EmailMatch,
    ))
    .await
    .unwrap();
    assert_eq!(
        s.link(&acme, "slack", "u1")
            .await
            .unwrap()
            .map(|l| l.platform_id),
        Some("UACME".to_owned())
    );
    assert_eq!(
        s.link(&globex, "slack", "u1")
            .await
            .unwrap()
            .map(|l| l.platform_id),
        Some("UGLOBEX".to_owned())
    );
    assert_eq!(s.links(&acme, "slack").await.unwrap().len(), 1);
    assert_eq!(
        s.links(&globex, "slack").await.unwrap()[0].tenant,
        globex,
        "links carry their tenant"
    );
    assert!(
        s.link(&tenant("initech"), "slack", "u1")
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.delete_link(&globex, "slack", "u1").await.unwrap());
    assert!(
        s.link(&acme, "slack", "u1").await.unwrap().is_some(),
        "acme's kept"
    );
}

pub fn integration(tn: &str, name: &str) -> IntegrationConfig {
    IntegrationConfig {
        tenant: tenant(tn),
        name: name.to_owned(),
        source: format!("s3://bucket/{name}/*.csv"),
        schedule: Schedule::Interval(Duration::from_secs(3600)),
        enabled: true,
        settings: serde_json::json!({"user_id_column": "Email"}),
    }
}

pub async fn integrations_per_tenant_by_name(b: Backend) {
    let s = b.open();
    assert!(s.integrations(None).await.unwrap().is_empty());
    s.put_integration(&integration("default", "zeta"))
        .await
        .unwrap();
    s.put_integration(&integration("default", "alpha"))
        .await
        .unwrap();
    s.put_integration(&integration("acme", "zeta"))
        .await
        .unwrap();
    let replaced = IntegrationConfig {
        enabled: false,
        schedule: Schedule::Cron("0 3 * * *".to_owned()),
        ..integration("default", "zeta")
    };
    s.put_integration(&replaced).await.unwrap();
    assert_eq!(
        s.integrations(Some(&default_tenant())).await.unwrap(),
        [integration("default", "alpha"), replaced.clone()]
    );
    assert_eq!(
        s.integrations(Some(&tenant("acme"))).await.unwrap(),
        [integration("acme", "zeta")],
        "acme's zeta is its own, not replaced"
    );
    let all = s.integrations(None).await.unwrap();
    assert_eq!(all.len(), 3);

    assert!(s.delete_integration(&tenant("acme"), "zeta").await.unwrap());
    assert!(!s.delete_integration(&tenant("acme"), "zeta").await.unwrap());
    assert_eq!(
        s.integrations(Some(&default_tenant())).await.unwrap(),
        [integration("default", "alpha"), replaced],
        "the other tenant's zeta stays"
    );
}

pub async fn runs_never_overlap(b: Backend) {
    let s = b.open();
    let d = default_tenant();
    let lease = Duration::from_secs(60);
    let run = s
        .start_run(&d, "csv", t(0), lease)
        .await
        .unwrap()
        .expect("first run");
    assert_eq!(run.integration, "csv");
    assert_eq!(run.tenant, d);
    assert_eq!(run.outcome, RunOutcome::Running);
    assert_eq!(run.started_at, t(0));
    assert_eq!(run.finished_at, None);
    assert!(
        s.start_run(&d, "csv", t(10), lease)
            .await
            .unwrap()
            .is_none(),
        "overlap refused"
    );
    assert!(
        s.start_run(&d, "csv", t(59), lease)
            .await
            .unwrap()
            .is_none()
    );
    // Another integration is independent.
    let other = s
        .start_run(&d, "other", t(10), lease)
        .await
        .unwrap()
        .expect("other");
    assert_ne!(other.id, run.id);

    let mut finished = run.clone();
    finished.outcome = RunOutcome::Partial;
    finished.finished_at = Some(t(20));
    finished.rows_read = 10;
    finished.rows_imported = 9;
    finished.rows_rejected = 1;
    finished.row_errors = vec!["line 4: missing user id".to_owned()];
    finished.properties_imported = 3;
    finished.details = serde_json::json!({"moved_to": "success/a.csv"});
    s.finish_run(&finished).await.unwrap();

    let next = s
        .start_run(&d, "csv", t(30), lease)
        .await
        .unwrap()
        .expect("after finish");
    assert!(next.id > run.id);
    let runs = s.runs(&d, "csv", 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].id, next.id, "newest first");
    assert_eq!(runs[1], finished);
    assert_eq!(s.runs(&d, "csv", 1).await.unwrap().len(), 1);
    assert!(s.runs(&d, "nothing", 10).await.unwrap().is_empty());

    let missing = RunRecord {
        id: 424_242,
        ..finished.clone()
    };
    let err = s.finish_run(&missing).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// The same integration name in two tenants is two integrations: their runs
/// neither block nor list each other.
pub async fn runs_are_per_tenant(b: Backend) {
    let s = b.open();
    let lease = Duration::from_secs(60);
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let a = s
        .start_run(&acme, "csv", t(0), lease)
        .await
        .unwrap()
        .expect("acme");
    let g = s
        .start_run(&globex, "csv", t(1), lease)
        .await
        .unwrap()
        .expect("globex runs while acme's csv runs");
    assert_ne!(a.id, g.id);
    assert!(
        s.start_run(&acme, "csv", t(2), lease)
            .await
            .unwrap()
            .is_none()
    );
    let acme_runs = s.runs(&acme, "csv", 10).await.unwrap();
    assert_eq!(acme_runs.len(), 1);
    assert_eq!((acme_runs[0].id, &acme_runs[0].tenant), (a.id, &acme));
    let globex_runs = s.runs(&globex, "csv", 10).await.unwrap();
    assert_eq!(globex_runs.len(), 1);
    assert_eq!(globex_runs[0].id, g.id);
    assert!(
        s.runs(&tenant("initech"), "csv", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn abandoned_run_is_taken_over_after_lease_expiry(b: Backend) {
    let s = b.open();
    let d = default_tenant();
    let lease = Duration::from_secs(60);
    let dead = s
        .start_run(&d, "csv", t(0), lease)
        .await
        .unwrap()
        .expect("run");
    // The process died; the lease expires at t(60).
    let taken = s
        .start_run(&d, "csv", t(61), lease)
        .await
        .unwrap()
        .expect("takeover");
    assert_ne!(taken.id, dead.id);
    let runs = s.runs(&d, "csv", 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].id, taken.id);
    assert_eq!(runs[0].outcome, RunOutcome::Running);
    let old = &runs[1];
    assert_eq!(old.id, dead.id);
    assert_eq!(old.outcome, RunOutcome::Failed);
    assert_eq!(
        old.error.as_deref(),
        Some("abandoned: lease expired (process died?)")
    );
    assert!(old.finished_at.is_some());
    // The new run holds its own lease.
    assert!(
        s.start_run(&d, "csv", t(62), lease)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn renewed_run_lease_keeps_the_run(b: Backend) {
    let s = b.open();
    let d = default_tenant();
    let lease = Duration::from_secs(60);
    let run = s
        .start_run(&d, "csv", t(0), lease)
        .await
        .unwrap()
        .expect("run");
    // Heartbeats at t(50) and t(100) push the lease to t(160).
    assert!(s.renew_run(run.id, t(50), lease).await.unwrap());
    assert!(s.renew_run(run.id, t(100), lease).await.unwrap());
    assert!(
        s.start_run(&d, "csv", t(150), lease)
            .await
            .unwrap()
            .is_none()
    );
    // Unrenewed, it is taken over once the lease ends.
    let taken = s
        .start_run(&d, "csv", t(161), lease)
        .await
        .unwrap()
        .expect("takeover");
    // The old run is no longer running: its heartbeat says so.
    assert!(!s.renew_run(run.id, t(162), lease).await.unwrap());
    assert!(s.renew_run(taken.id, t(162), lease).await.unwrap());
    assert!(!s.renew_run(9_999, t(162), lease).await.unwrap());
}

fn rule(tn: &str, route: &str, enabled: Option<bool>, target: Option<Target>) -> RouteRule {
    RouteRule {
        tenant: tenant(tn),
        route: route.to_owned(),
        enabled,
        target,
        updated_at: t(1),
    }
}

pub async fn rules_put_get_remove(b: Backend) {
    let s = b.open();
    let acme = tenant("acme");
    assert!(s.rules(&acme).await.unwrap().is_empty());
    let off = rule("acme", "wallet-alerts", Some(false), None);
    let elsewhere = rule("acme", "big-deals", None, Some(Target::channel("#sales")));
    s.put_rule(&off).await.unwrap();
    s.put_rule(&elsewhere).await.unwrap();
    s.put_rule(&rule("globex", "wallet-alerts", Some(true), None))
        .await
        .unwrap();
    assert_eq!(
        s.rules(&acme).await.unwrap(),
        [elsewhere.clone(), off.clone()],
        "by route name"
    );
    assert_eq!(s.rules(&tenant("globex")).await.unwrap().len(), 1);

    // Replace.
    let both = RouteRule {
        updated_at: t(5),
        ..rule(
            "acme",
            "wallet-alerts",
            Some(true),
            Some(Target::channel("#finance")),
        )
    };
    s.put_rule(&both).await.unwrap();
    assert_eq!(s.rules(&acme).await.unwrap(), [elsewhere, both]);

    // Neither enabled nor target: removed.
    s.put_rule(&rule("acme", "big-deals", None, None))
        .await
        .unwrap();
    let left = s.rules(&acme).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].route, "wallet-alerts");
    assert_eq!(
        s.rules(&tenant("globex")).await.unwrap().len(),
        1,
        "other tenants untouched"
    );
}

pub async fn remember_once_respects_expiry(b: Backend) {
    let s = b.open();
    assert!(
        s.remember_once("slack", "evt-1", t(300), t(0))
            .await
            .unwrap()
    );
    assert!(
        !s.remember_once("slack", "evt-1", t(300), t(1))
            .await
            .unwrap()
    );
    assert!(
        !s.remember_once("slack", "evt-1", t(900), t(299))
            .await
            .unwrap()
    );
    assert!(
        s.remember_once("zendesk", "evt-1", t(300), t(1))
            .await
            .unwrap(),
        "per scope"
    );
    assert!(
        s.remember_once("slack", "evt-2", t(300), t(1))
            .await
            .unwrap()
    );
    // Expired: it may be remembered again, with the new expiry.
    assert!(
        s.remember_once("slack", "evt-1", t(1000), t(301))
            .await
            .unwrap()
    );
    assert!(
        !s.remember_once("slack", "evt-1", t(2000), t(999))
            .await
            .unwrap()
    );
    assert!(
        s.remember_once("slack", "evt-1", t(2000), t(1001))
            .await
            .unwrap()
    );
}
