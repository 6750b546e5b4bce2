//! Admin console over real HTTP: every route scoped to the session's tenants (ids guessed from another tenant included), CSRF, idempotent replay, manual mapping, rule toggles, integrations, JSON via Accept; and the DeliveryQueryStore per store.

mod admin_common;

use admin_common::{Host, start};
use reqwest::StatusCode;
use serde_json::Value;
use switchboard::store::{DeliveryQuery, DeliveryQueryStore, DeliveryState};
use switchboard::{ConnectionKey, Event, MemoryStore, SqliteStore, TenantId};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn acme() -> TenantId {
    TenantId::new("acme").expect("tenant")
}
fn globex() -> TenantId {
    TenantId::new("globex").expect("tenant")
}

async fn memory_host() -> Host {
    start(MemoryStore::new().with_keyring(admin_common::keyring())).await
}

async fn get(h: &Host, tenant: Option<&str>, path: &str, json: bool) -> (StatusCode, String) {
    let mut req = client().get(h.url(path));
    if let Some(t) = tenant {
        req = req.header("x-demo-tenant", t);
    }
    if json {
        req = req.header("accept", "application/json");
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    (status, resp.text().await.expect("body"))
}

async fn get_json(h: &Host, tenant: &str, path: &str) -> Value {
    let (status, body) = get(h, Some(tenant), path, true).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    serde_json::from_str(&body).expect("json")
}

async fn post(
    h: &Host,
    tenant: Option<&str>,
    path: &str,
    form: &[(&str, &str)],
    json: bool,
) -> (StatusCode, String) {
    let mut req = client().post(h.url(path)).form(form);
    if let Some(t) = tenant {
        req = req.header("x-demo-tenant", t);
    }
    if json {
        req = req.header("accept", "application/json");
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    (status, resp.text().await.expect("body"))
}

/// The CSRF token of `tenant`'s session, read from a rendered form.
async fn csrf(h: &Host, tenant: &str) -> String {
    let (status, html) = get(h, Some(tenant), &format!("/{tenant}/rules"), false).await;
    assert_eq!(status, StatusCode::OK);
    let start = html.find("name=\"csrf\" value=\"").expect("csrf field") + 19;
    let end = start + html[start..].find('"').expect("end");
    html[start..end].to_owned()
}

const GET_PAGES: &[&str] = &[
    "/",
    "/connections",
    "/rules",
    "/mapping",
    "/mapping?destination=chat&q=acme",
    "/deliveries",
    "/deliveries?status=dead",
    "/dead-letters",
    "/integrations",
    "/integrations/hr-import",
    "/integrations/hr-import?discover=1",
    "/charts/deliveries.svg",
];

const POSTS: &[&str] = &[
    "/connections/disconnect",
    "/rules/wallet-updates",
    "/mapping/sync",
    "/mapping/link",
    "/mapping/unlink",
    "/dead-letters/1/replay",
    "/dead-letters/replay-reason",
    "/integrations/hr-import/enabled",
    "/integrations/hr-import/run",
];

#[tokio::test]
async fn no_session_is_401_everywhere() {
    let h = memory_host().await;
    let (s, _) = get(&h, None, "", false).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    for page in GET_PAGES {
        let (s, body) = get(&h, None, &format!("/acme{page}"), false).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{page}");
        assert!(!body.contains("ACME-"), "{page}");
    }
    for p in POSTS {
        let (s, _) = post(&h, None, &format!("/acme{p}"), &[], false).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{p}");
    }
}

#[tokio::test]
async fn another_tenants_pages_and_actions_are_forbidden() {
    let h = memory_host().await;
    let token = csrf(&h, "acme").await;
    for page in GET_PAGES {
        for json in [false, true] {
            let (s, body) = get(&h, Some("acme"), &format!("/globex{page}"), json).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{page}");
            assert!(!body.to_lowercase().contains("globex-"), "{page}: {body}");
        }
    }
    for p in POSTS {
        let form = [
            ("csrf", token.as_str()),
            ("enabled", "off"),
            ("destination", "chat"),
        ];
        let (s, _) = post(&h, Some("acme"), &format!("/globex{p}"), &form, false).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{p}");
    }
    // Nothing of globex changed.
    assert!(h.sb.rules(&globex()).await.expect("rules").is_empty());
    assert_eq!(
        h.sb.tenant_dead_letters(&globex(), 100)
            .await
            .expect("dead")
            .len(),
        3
    );
}

#[tokio::test]
async fn acme_pages_show_acme_and_never_globex() {
    let h = memory_host().await;
    for page in GET_PAGES {
        for json in [false, true] {
            let (s, body) = get(&h, Some("acme"), &format!("/acme{page}"), json).await;
            assert_eq!(s, StatusCode::OK, "{page}: {body}");
            let lower = body.to_lowercase();
            assert!(!lower.contains("globex"), "{page} shows globex: {body}");
        }
    }
    let (_, dead) = get(&h, Some("acme"), "/acme/dead-letters", false).await;
    assert!(dead.contains("acme-dead-1") && dead.contains("channel_not_found"));
    assert_eq!(dead.matches("class=\"dead-letter\"").count(), 3);
    let (_, root) = get(&h, Some("acme"), "", false).await;
    assert!(root.is_empty(), "a single tenant redirects");
    let resp = client()
        .get(h.url(""))
        .header("x-demo-tenant", "acme")
        .send()
        .await
        .expect("root");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/admin/acme/");
}

#[tokio::test]
async fn ids_guessed_from_another_tenant_are_not_found() {
    let h = memory_host().await;
    let token = csrf(&h, "acme").await;
    let theirs = h.sb.tenant_dead_letters(&globex(), 10).await.expect("dead");
    let victim = &theirs[0];
    let died = victim.died_at.timestamp_millis().to_string();
    // Reading one of globex's deliveries through acme's console.
    for json in [false, true] {
        let (s, body) = get(
            &h,
            Some("acme"),
            &format!("/acme/deliveries/{}", victim.id),
            json,
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(!body.contains("GLOBEX") && !body.contains("globex"));
    }
    // Replaying it.
    let (s, _) = post(
        &h,
        Some("acme"),
        &format!("/acme/dead-letters/{}/replay", victim.id),
        &[("csrf", &token), ("died_at", &died)],
        false,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        h.store.delivery_state(victim.id).await.expect("state"),
        Some(DeliveryState::Dead)
    );
    // Replaying globex's reason from acme replays acme's only.
    let (s, body) = post(
        &h,
        Some("acme"),
        "/acme/dead-letters/replay-reason",
        &[
            ("csrf", &token),
            ("reason", "permanent failure: channel_not_found"),
            ("as_of", &i64::MAX.to_string()),
        ],
        true,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let as_of = h.sb.now().timestamp_millis().to_string();
    let (s, body) = post(
        &h,
        Some("acme"),
        "/acme/dead-letters/replay-reason",
        &[
            ("csrf", &token),
            ("reason", "permanent failure: channel_not_found"),
            ("as_of", &as_of),
        ],
        true,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["data"]["replayed"], 3);
    assert_eq!(
        h.sb.tenant_dead_letters(&globex(), 10)
            .await
            .expect("dead")
            .len(),
        3
    );
    // Disconnecting globex's connection.
    let (s, _) = post(
        &h,
        Some("acme"),
        "/acme/connections/disconnect",
        &[
            ("csrf", &token),
            ("platform", "chat"),
            ("account", "globex-ws"),
        ],
        false,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let c = h
        .store
        .connection(&ConnectionKey::new("chat", "globex-ws"))
        .await
        .expect("connection")
        .expect("exists");
    assert!(c.is_connected());
    // Mapping a globex person from acme.
    let (s, _) = post(
        &h,
        Some("acme"),
        "/acme/mapping/link",
        &[
            ("csrf", &token),
            ("destination", "chat"),
            ("user_id", "globex-hank"),
            ("platform_id", "UX"),
        ],
        false,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        h.store
            .links(&globex(), "chat:globex-ws")
            .await
            .expect("links")
            .iter()
            .all(|l| l.user_id != "globex-hank")
    );
    // The same integration name runs acme's integration only.
    let before = h
        .store
        .runs(&globex(), "hr-import", 100)
        .await
        .expect("runs")
        .len();
    let (s, _) = post(
        &h,
        Some("acme"),
        "/acme/integrations/hr-import/run",
        &[("csrf", &token)],
        false,
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(
        h.store
            .runs(&globex(), "hr-import", 100)
            .await
            .expect("runs")
            .len(),
        before
    );
    assert_eq!(
        h.store
            .runs(&acme(), "hr-import", 100)
            .await
            .expect("runs")
            .len(),
        2
    );
    // Unknown ids and names.
    let (s, _) = get(&h, Some("acme"), "/acme/deliveries/999999", false).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = get(&h, Some("acme"), "/acme/integrations/globex-only", false).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_post_needs_the_sessions_csrf_token() {
    let h = memory_host().await;
    let good = csrf(&h, "acme").await;
    let dead = h.sb.tenant_dead_letters(&acme(), 10).await.expect("dead");
    let died = dead[0].died_at.timestamp_millis().to_string();
    let replay = format!("/acme/dead-letters/{}/replay", dead[0].id);
    for p in POSTS
        .iter()
        .map(|p| format!("/acme{p}"))
        .chain([replay.clone()])
    {
        let (s, _) = post(
            &h,
            Some("acme"),
            &p,
            &[("enabled", "off"), ("died_at", &died)],
            false,
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{p} without a token");
        let (s, _) = post(
            &h,
            Some("acme"),
            &p,
            &[("csrf", "bm9wZQ"), ("enabled", "off")],
            false,
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{p} with a wrong token");
    }
    // A token of another session (same tenant) is refused too.
    let resp = client()
        .post(h.url(&replay))
        .header("x-demo-tenant", "acme")
        .header("x-session", "someone-else")
        .form(&[("csrf", good.as_str()), ("died_at", died.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        h.sb.tenant_dead_letters(&acme(), 10)
            .await
            .expect("dead")
            .len(),
        3
    );
    // The header works for non-browser clients.
    let resp = client()
        .post(h.url(&replay))
        .header("x-demo-tenant", "acme")
        .header("x-csrf-token", good.as_str())
        .header("accept", "application/json")
        .form(&[("died_at", died.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        h.sb.tenant_dead_letters(&acme(), 10)
            .await
            .expect("dead")
            .len(),
        2
    );
}

#[tokio::test]
async fn replay_twice_replays_once() {
    let h = memory_host().await;
    let token = csrf(&h, "acme").await;
    let page = get_json(&h, "acme", "/acme/dead-letters").await;
    let first = &page["dead_letters"][0];
    let id = first["id"].as_i64().expect("id");
    let died = first["died_at_ms"].as_i64().expect("died").to_string();
    let path = format!("/acme/dead-letters/{id}/replay");
    let (s, body) = post(
        &h,
        Some("acme"),
        &path,
        &[("csrf", &token), ("died_at", &died)],
        false,
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    let (s, body) = post(
        &h,
        Some("acme"),
        &path,
        &[("csrf", &token), ("died_at", &died)],
        true,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["notice"], "already_replayed");
    assert_eq!(v["data"]["replayed"], 0);
    // It fails again and dies again; the old form still does nothing.
    h.sb.run_until_idle().await.expect("run");
    assert_eq!(
        h.store.delivery_state(id).await.expect("state"),
        Some(DeliveryState::Dead)
    );
    let (_, body) = post(
        &h,
        Some("acme"),
        &path,
        &[("csrf", &token), ("died_at", &died)],
        true,
    )
    .await;
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["data"]["replayed"], 0);
    assert_eq!(
        h.store.delivery_state(id).await.expect("state"),
        Some(DeliveryState::Dead)
    );
    let log = h.store.delivery_log(id).await.expect("log");
    let queued = log
        .iter()
        .filter(|e| e.status == switchboard::store::LogStatus::Queued)
        .count();
    assert_eq!(queued, 2, "enqueued once and replayed once: {log:?}");
    // The redirect lands on a page with the notice.
    let (_, html) = get(
        &h,
        Some("acme"),
        "/acme/dead-letters?notice=replayed",
        false,
    )
    .await;
    assert!(html.contains("The delivery was queued again."));
    let (_, html) = get(
        &h,
        Some("acme"),
        "/acme/dead-letters?notice=<script>x</script>",
        false,
    )
    .await;
    assert!(!html.contains("<script>x"));
}

#[tokio::test]
async fn unmatched_person_is_mapped_by_hand() {
    let h = memory_host().await;
    let token = csrf(&h, "acme").await;
    let (_, html) = get(&h, Some("acme"), "/acme/mapping", false).await;
    assert!(html.contains("data-user=\"acme-bob\""), "{html}");
    assert!(html.contains("<strong>1</strong> matched"));
    let found = get_json(&h, "acme", "/acme/mapping?destination=chat&q=carol").await;
    assert_eq!(found["sections"][0]["results"][0]["id"], "UACME3");
    let (s, _) = post(
        &h,
        Some("acme"),
        "/acme/mapping/link",
        &[
            ("csrf", &token),
            ("destination", "chat"),
            ("user_id", "acme-bob"),
            ("platform_id", "UACME3"),
        ],
        false,
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let link = h
        .store
        .link(&acme(), "chat:acme-ws", "acme-bob")
        .await
        .expect("link")
        .expect("stored");
    assert_eq!(link.platform_id, "UACME3");
    assert_eq!(link.origin, switchboard::identity::LinkOrigin::Manual);
    let page = get_json(&h, "acme", "/acme/mapping").await;
    let section = &page["sections"][0];
    assert!(section["unmatched"].as_array().expect("list").is_empty());
    assert_eq!(section["manual"][0]["user_id"], "acme-bob");
    // An ambiguous person is mapped to one candidate.
    assert_eq!(section["ambiguous"][0]["user_id"], "acme-dup");
    let (s, _) = post(
        &h,
        Some("acme"),
        "/acme/mapping/link",
        &[
            ("csrf", &token),
            ("destination", "chat"),
            ("user_id", "acme-dup"),
            ("platform_id", "UACME5"),
        ],
        true,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // A re-sync keeps the manual links and the page stays consistent.
    let (s, _) = post(
        &h,
        Some("acme"),
        "/acme/mapping/sync",
        &[("csrf", &token), ("destination", "chat")],
        false,
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let page = get_json(&h, "acme", "/acme/mapping").await;
    assert!(
        page["sections"][0]["ambiguous"]
            .as_array()
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        page["sections"][0]["manual"]
            .as_array()
            .expect("list")
            .len(),
        2
    );
    // Unlink.
    let (s, _) = post(
        &h,
        Some("acme"),
        "/acme/mapping/unlink",
        &[
            ("csrf", &token),
            ("destination", "chat"),
            ("user_id", "acme-bob"),
        ],
        false,
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(
        h.store
            .link(&acme(), "chat:acme-ws", "acme-bob")
            .await
            .expect("link")
            .is_none()
    );
    // Bad input.
    let (s, _) = post(
        &h,
        Some("acme"),
        "/acme/mapping/link",
        &[
            ("csrf", &token),
            ("destination", "chat"),
            ("user_id", "acme-bob"),
        ],
        false,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = post(
        &h,
        Some("acme"),
        "/acme/mapping/link",
        &[
            ("csrf", &token),
            ("destination", "nope"),
            ("user_id", "acme-bob"),
            ("platform_id", "U1"),
        ],
        false,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rules_switch_off_and_retarget_per_tenant() {
    let h = memory_host().await;
    let token = csrf(&h, "acme").await;
    let (s, _) = post(
        &h,
        Some("acme"),
        "/acme/rules/wallet-updates",
        &[("csrf", &token), ("enabled", "off")],
        false,
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let page = get_json(&h, "acme", "/acme/rules").await;
    let wallet = page["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["route"] == "wallet-updates")
        .expect("rule")
        .clone();
    assert_eq!(wallet["enabled"], false);
    let theirs = get_json(&h, "globex", "/globex/rules").await;
    assert_eq!(theirs["rules"][1]["enabled"], true, "{theirs}");
    let out =
        h.sb.publish(
            Event::builder("acme-w-2", "wallet.funded")
                .tenant("acme")
                .build()
                .expect("event"),
        )
        .await
        .expect("publish");
    assert_eq!(out.deliveries, 0, "switched off for acme");
    let out =
        h.sb.publish(
            Event::builder("globex-w-2", "wallet.funded")
                .tenant("globex")
                .build()
                .expect("event"),
        )
        .await
        .expect("publish");
    assert_eq!(out.deliveries, 1, "still on for globex");
    // Retarget; the channel is shown escaped.
    let (s, _) = post(
        &h,
        Some("acme"),
        "/acme/rules/perk-news",
        &[("csrf", &token), ("channel", "<i>x</i>")],
        false,
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, html) = get(&h, Some("acme"), "/acme/rules", false).await;
    assert!(
        html.contains("#&lt;i&gt;x&lt;&#x2f;i&gt;") || html.contains("#&lt;i&gt;x&lt;/i&gt;"),
        "{html}"
    );
    assert!(!html.contains("<i>x</i>"));
    let (s, _) = post(
        &h,
        Some("acme"),
        "/acme/rules/perk-news",
        &[("csrf", &token), ("channel", "two words")],
        false,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = post(
        &h,
        Some("acme"),
        "/acme/rules/no-such-route",
        &[("csrf", &token), ("enabled", "off")],
        false,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Back on, default target.
    let (s, _) = post(
        &h,
        Some("acme"),
        "/acme/rules/wallet-updates",
        &[("csrf", &token), ("enabled", "default"), ("channel", "")],
        true,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        h.sb.rules(&acme())
            .await
            .expect("rules")
            .iter()
            .all(|r| r.route != "wallet-updates")
    );
}

#[tokio::test]
async fn integrations_toggle_run_now_and_history() {
    let h = memory_host().await;
    let token = csrf(&h, "acme").await;
    let page = get_json(&h, "acme", "/acme/integrations").await;
    assert_eq!(page["integrations"][0]["name"], "hr-import");
    assert_eq!(page["integrations"][0]["last_outcome"], "partial");
    assert_eq!(page["integrations"][0]["properties_imported"], 2);
    let (s, _) = post(
        &h,
        Some("acme"),
        "/acme/integrations/hr-import/enabled",
        &[("csrf", &token), ("enabled", "false")],
        false,
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (s, _) = post(
        &h,
        Some("acme"),
        "/acme/integrations/hr-import/run",
        &[("csrf", &token)],
        true,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "disabled integrations do not run");
    let (s, _) = post(
        &h,
        Some("acme"),
        "/acme/integrations/hr-import/enabled",
        &[("csrf", &token), ("enabled", "true")],
        false,
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (s, body) = post(
        &h,
        Some("acme"),
        "/acme/integrations/hr-import/run",
        &[("csrf", &token)],
        true,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let detail = get_json(&h, "acme", "/acme/integrations/hr-import?discover=1").await;
    assert_eq!(detail["runs"].as_array().expect("runs").len(), 2);
    assert_eq!(
        detail["runs"][0]["row_errors"][0],
        "line 4: missing user id"
    );
    assert_eq!(detail["discovered"]["header"][1], "plan");
    let (_, html) = get(&h, Some("acme"), "/acme/integrations/hr-import", false).await;
    assert!(html.contains("<svg") && html.contains("class=\"partial\""));
    // globex's integration stayed as it was.
    let theirs = get_json(&h, "globex", "/globex/integrations/hr-import").await;
    assert_eq!(theirs["runs"].as_array().expect("runs").len(), 1);
}

#[tokio::test]
async fn deliveries_filter_and_json() {
    let h = memory_host().await;
    let all = get_json(&h, "acme", "/acme/deliveries").await;
    assert_eq!(all["deliveries"].as_array().expect("rows").len(), 4);
    let dead = get_json(&h, "acme", "/acme/deliveries?status=dead").await;
    assert_eq!(dead["deliveries"].as_array().expect("rows").len(), 3);
    let kind = get_json(&h, "acme", "/acme/deliveries?kind=perk.redeemed").await;
    assert_eq!(kind["deliveries"][0]["state"], "sent");
    let person = get_json(&h, "acme", "/acme/deliveries?person=acme-bob").await;
    assert_eq!(person["deliveries"].as_array().expect("rows").len(), 1);
    let (s, _) = get(&h, Some("acme"), "/acme/deliveries?status=bogus", true).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let id = dead["deliveries"][0]["id"].as_i64().expect("id");
    let detail = get_json(&h, "acme", &format!("/acme/deliveries/{id}")).await;
    assert!(
        detail["log"]
            .as_array()
            .expect("log")
            .iter()
            .any(|e| e["status"] == "dead")
    );
    let overview = get_json(&h, "acme", "/acme/").await;
    assert_eq!(overview["dead_letters"], 3);
    let buckets = overview["deliveries_per_hour"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 24);
    let dead_total: u64 = buckets
        .iter()
        .map(|b| b["dead"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(dead_total, 3);
    let resp = client()
        .get(h.url("/acme/charts/deliveries.svg"))
        .header("x-demo-tenant", "acme")
        .send()
        .await
        .expect("svg");
    assert_eq!(resp.headers()["content-type"], "image/svg+xml");
    assert!(resp.text().await.expect("body").contains("3 dead"));
    let conns = get_json(&h, "acme", "/acme/connections").await;
    assert_eq!(conns["connections"][0]["key"], "chat:acme-ws");
    assert!(
        !conns.to_string().contains("token-acme"),
        "secrets never shown"
    );
    let (_, html) = get(&h, Some("acme"), "/acme/connections", false).await;
    assert!(!html.contains("token-acme"));
    assert!(
        html.contains("chat.example") && html.contains("install?state=acme"),
        "{html}"
    );
}

#[tokio::test]
async fn disconnect_parks_and_shows_the_reason() {
    let h = memory_host().await;
    let token = csrf(&h, "acme").await;
    let (s, _) = post(
        &h,
        Some("acme"),
        "/acme/connections/disconnect",
        &[
            ("csrf", &token),
            ("platform", "chat"),
            ("account", "acme-ws"),
        ],
        false,
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, html) = get(&h, Some("acme"), "/acme/connections", false).await;
    assert!(
        html.contains("disconnected — disconnected by an admin"),
        "{html}"
    );
    assert!(html.contains("Reconnect"));
    let theirs = h
        .store
        .connection(&ConnectionKey::new("chat", "globex-ws"))
        .await
        .expect("c")
        .expect("c");
    assert!(theirs.is_connected());
}

#[tokio::test]
async fn an_admin_of_two_tenants_switches_between_them() {
    let h = memory_host().await;
    let (s, html) = get(&h, Some("acme,globex"), "", false).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("/admin/acme/") && html.contains("/admin/globex/"),
        "{html}"
    );
    let (s, html) = get(&h, Some("acme,globex"), "/globex/dead-letters", false).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("globex-dead-1") && !html.contains("acme-dead"));
}

#[tokio::test]
async fn the_console_works_on_sqlite() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path().join("admin.db"))
        .expect("open")
        .with_keyring(admin_common::keyring())
        .expect("keyring");
    let h = start(store).await;
    let token = csrf(&h, "acme").await;
    let page = get_json(&h, "acme", "/acme/dead-letters").await;
    let id = page["dead_letters"][0]["id"].as_i64().expect("id");
    let died = page["dead_letters"][0]["died_at_ms"]
        .as_i64()
        .expect("ms")
        .to_string();
    let path = format!("/acme/dead-letters/{id}/replay");
    let (_, a) = post(
        &h,
        Some("acme"),
        &path,
        &[("csrf", &token), ("died_at", &died)],
        true,
    )
    .await;
    let (_, b) = post(
        &h,
        Some("acme"),
        &path,
        &[("csrf", &token), ("died_at", &died)],
        true,
    )
    .await;
    assert!(
        a.contains("\"replayed\":1") && b.contains("\"replayed\":0"),
        "{a} {b}"
    );
    let person = get_json(&h, "acme", "/acme/deliveries?person=acme-bob").await;
    assert_eq!(person["deliveries"].as_array().expect("rows").len(), 1);
    for page in GET_PAGES {
        let (s, body) = get(&h, Some("acme"), &format!("/acme{page}"), false).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        assert!(!body.to_lowercase().contains("globex"), "{page}");
    }
}

// --- DeliveryQueryStore, per store ---

async fn query_suite(store: &(impl DeliveryQueryStore + switchboard::Store)) {
    use switchboard::store::NewDelivery;
    let now = chrono::Utc::now();
    let mk = |tenant: &str, id: &str, kind: &str, who: &str| {
        Event::builder(id, kind)
            .tenant(tenant)
            .subject(switchboard::Person::new(who))
            .build()
            .expect("event")
    };
    let nd = |tenant: &str| NewDelivery {
        route: "r".into(),
        destination: "d".into(),
        target: switchboard::Target::channel("general"),
        scope: "destination:d".into(),
        key: format!("{tenant}:d:general"),
    };
    for i in 0..5 {
        store
            .enqueue(
                &mk(
                    "acme",
                    &format!("a{i}"),
                    if i % 2 == 0 { "x.even" } else { "x.odd" },
                    &format!("p{i}"),
                ),
                &[nd("acme")],
                now,
            )
            .await
            .expect("enqueue");
        store
            .enqueue(
                &mk("globex", &format!("g{i}"), "x.even", "p0"),
                &[nd("globex")],
                now,
            )
            .await
            .expect("enqueue");
    }
    let q = |f: fn(&mut DeliveryQuery)| {
        let mut q = DeliveryQuery::tenant(acme());
        f(&mut q);
        q
    };
    let all = store.query_deliveries(&q(|_| {})).await.expect("query");
    assert_eq!(all.len(), 5);
    assert!(all.iter().all(|r| r.tenant == acme()));
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let even = store
        .query_deliveries(&q(|q| q.kind = Some("x.even".into())))
        .await
        .expect("q");
    assert_eq!(even.len(), 3);
    let p0 = store
        .query_deliveries(&q(|q| q.person = Some("p0".into())))
        .await
        .expect("q");
    assert_eq!(p0.len(), 1);
    assert_eq!(p0[0].event_id, "a0");
    assert_eq!(p0[0].person.as_deref(), Some("p0"));
    let queued = store
        .query_deliveries(&q(|q| q.status = Some(DeliveryState::Queued)))
        .await
        .expect("q");
    assert_eq!(queued.len(), 5);
    let sent = store
        .query_deliveries(&q(|q| q.status = Some(DeliveryState::Sent)))
        .await
        .expect("q");
    assert!(sent.is_empty());
    let mut page = DeliveryQuery::tenant(acme());
    page.limit = 2;
    let first = store.query_deliveries(&page).await.expect("q");
    assert_eq!(first.len(), 2);
    page.before_id = Some(first[1].id);
    let second = store.query_deliveries(&page).await.expect("q");
    assert_eq!(second.len(), 2);
    assert!(second[0].id < first[1].id);
    // A globex id is not acme's.
    let theirs = store
        .query_deliveries(&DeliveryQuery::tenant(globex()))
        .await
        .expect("q");
    assert!(
        store
            .tenant_delivery(&acme(), theirs[0].id)
            .await
            .expect("one")
            .is_none()
    );
    assert_eq!(
        store
            .tenant_delivery(&globex(), theirs[0].id)
            .await
            .expect("one")
            .map(|r| r.event_id),
        Some(theirs[0].event_id.clone())
    );
    // Histogram: enqueue entries are not outcomes; claims and sends are.
    let claimed = store
        .claim(now, std::time::Duration::from_secs(60), 100)
        .await
        .expect("claim");
    let completions: Vec<_> = claimed
        .iter()
        .map(|c| switchboard::store::Completion {
            id: c.id,
            lease: c.lease,
            outcome: switchboard::store::Outcome::Sent(switchboard::Receipt::default()),
        })
        .collect();
    store.complete(&completions, now).await.expect("complete");
    let hist = store
        .delivery_histogram(&acme(), now, 24)
        .await
        .expect("hist");
    assert_eq!(hist.len(), 24);
    assert_eq!(
        hist.iter().map(|b| b.sent).sum::<u64>(),
        1,
        "one head per key was sent: {hist:?}"
    );
    assert_eq!(hist.last().map(|b| b.sent), Some(1));
    let sent = store
        .query_deliveries(&q(|q| q.status = Some(DeliveryState::Sent)))
        .await
        .expect("q");
    assert_eq!(sent.len(), 1);
}

#[tokio::test]
async fn query_store_memory() {
    query_suite(&MemoryStore::new()).await;
}

#[tokio::test]
async fn query_store_sqlite() {
    let dir = tempfile::tempdir().expect("dir");
    query_suite(&SqliteStore::open(dir.path().join("q.db")).expect("open")).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn query_store_postgres() {
    let Ok(url) = std::env::var("SWITCHBOARD_POSTGRES_URL") else {
        eprintln!("query_store_postgres skipped: SWITCHBOARD_POSTGRES_URL is not set");
        return;
    };
    let schema = format!("admin_q_{}", rand::random::<u32>());
    let store = switchboard::PostgresStore::connect_with_schema(&url, &schema)
        .await
        .expect("connect");
    query_suite(&store).await;
}
