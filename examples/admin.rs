//! Admin console: two tenants, `acme` and `globex`, each with dead letters (their
//! events' `data.title` are `ACME-secret-1…` and `GLOBEX-secret-1…`), an unmatched
//! person and an integration with run history, served on 127.0.0.1.
//!
//! The request header `X-Demo-Tenant: acme` stands in for the host's session: it
//! makes the request an admin of acme (no header: 401).
//!
//! Run: `cargo run --example admin --features admin -- [--port N]`, then
//! `curl -H 'X-Demo-Tenant: acme' http://127.0.0.1:N/admin/acme/dead-letters`
//! (add `-H 'Accept: application/json'` for JSON).

use std::sync::Arc;

use async_trait::async_trait;
use secrecy::SecretString;
use switchboard::admin::{
    Admin, AdminConfig, AdminSession, DiscoveredSource, PeopleDirectory, PlatformUser,
    SourceDiscovery,
};
use switchboard::identity::{AmbiguousMatch, ResolveContext, Unmatched};
use switchboard::integration::{IntegrationConfig, Schedule};
use switchboard::schedule::{RunContext, ScheduledJob, Scheduler};
use switchboard::secret::Keyring;
use switchboard::{
    Capabilities, Connection, Delivery, DeliveryError, Destination, Event, IdentityResolver,
    MemoryStore, Person, Receipt, Resolution, Route, Store, SyncReport, Target, TenantId,
};

/// Fails events whose `data.fail` is true (a permanent `channel_not_found`).
struct Chat;

#[async_trait]
impl Destination for Chat {
    fn name(&self) -> &str {
        "chat"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    fn platform(&self) -> Option<&str> {
        Some("chat")
    }
    async fn deliver(&self, delivery: &Delivery) -> Result<Receipt, DeliveryError> {
        if delivery.event.data.get("fail") == Some(&serde_json::Value::Bool(true)) {
            return Err(DeliveryError::permanent("channel_not_found"));
        }
        Ok(Receipt::default())
    }
}

/// Each tenant's chat directory: emails → platform ids.
fn directory(tenant: &str) -> Vec<(&'static str, &'static str, &'static str)> {
    match tenant {
        "acme" => vec![
            ("alice@acme.test", "UACME1", "Alice Acme"),
            ("carol@acme.test", "UACME3", "Carol Acme"),
            ("dup@acme.test", "UACME4", "Dup One"),
            ("dup@acme.test", "UACME5", "Dup Two"),
        ],
        "globex" => vec![("gina@globex.test", "UGLOBEX1", "Gina Globex")],
        _ => vec![],
    }
}

fn people(tenant: &str) -> Vec<Person> {
    match tenant {
        "acme" => vec![
            Person::new("acme-alice").email("alice@acme.test"),
            Person::new("acme-bob").email("bob@acme.test"),
            Person::new("acme-dup").email("dup@acme.test"),
        ],
        "globex" => vec![
            Person::new("globex-gina").email("gina@globex.test"),
            Person::new("globex-hank").email("hank@globex.test"),
        ],
        _ => vec![],
    }
}

/// Matches people by email in the tenant's directory.
struct ChatResolver;

#[async_trait]
impl IdentityResolver for ChatResolver {
    async fn resolve(
        &self,
        cx: &ResolveContext,
        person: &Person,
    ) -> switchboard::Result<Resolution> {
        let dir = directory(cx.tenant.as_str());
        let ids: Vec<String> = dir
            .iter()
            .filter(|(e, _, _)| person.emails.iter().any(|p| p == e))
            .map(|(_, id, _)| (*id).to_owned())
            .collect();
        Ok(match ids.len() {
            0 => Resolution::NotFound,
            1 => Resolution::Matched(ids[0].clone()),
            _ => Resolution::Ambiguous(ids),
        })
    }
    async fn sync(
        &self,
        cx: &ResolveContext,
        people: &[Person],
    ) -> switchboard::Result<SyncReport> {
        let mut report = SyncReport::default();
        for p in people {
            match self.resolve(cx, p).await? {
                Resolution::Matched(id) => report.matched.push((p.id.clone(), id)),
                Resolution::NotFound => report.unmatched.push(Unmatched {
                    user_id: p.id.clone(),
                    identifiers: p.emails.clone(),
                }),
                Resolution::Ambiguous(candidates) => report.ambiguous.push(AmbiguousMatch {
                    user_id: p.id.clone(),
                    candidates,
                }),
            }
        }
        report.directory_size = directory(cx.tenant.as_str()).len();
        report.api_calls = 1;
        Ok(report)
    }
}

struct People;

#[async_trait]
impl PeopleDirectory for People {
    async fn people(&self, tenant: &TenantId) -> switchboard::Result<Vec<Person>> {
        Ok(people(tenant.as_str()))
    }
    async fn search_platform_users(
        &self,
        tenant: &TenantId,
        _destination: &str,
        query: &str,
    ) -> switchboard::Result<Vec<PlatformUser>> {
        let q = query.to_lowercase();
        Ok(directory(tenant.as_str())
            .into_iter()
            .filter(|(e, _, n)| e.contains(&q) || n.to_lowercase().contains(&q))
            .map(|(e, id, n)| PlatformUser {
                id: id.to_owned(),
                label: format!("{n} <{e}>"),
            })
            .collect())
    }
}

struct Discovery;

#[async_trait]
impl SourceDiscovery for Discovery {
    async fn discover(&self, config: &IntegrationConfig) -> switchboard::Result<DiscoveredSource> {
        Ok(DiscoveredSource {
            header: vec!["user_id".into(), "plan".into()],
            rows: vec![vec![format!("{}-u1", config.tenant), "Premium".into()]],
            location: Some(config.source.clone()),
        })
    }
}

/// Reads 10 rows, rejects one.
struct Import;

#[async_trait]
impl ScheduledJob for Import {
    fn name(&self) -> &str {
        "hr-import"
    }
    async fn run(&self, ctx: &mut RunContext) -> switchboard::Result<()> {
        ctx.add_rows_read(10);
        ctx.add_rows_imported(9);
        ctx.reject_row("line 4: missing user id");
        ctx.add_properties(["plan", "team"]);
        Ok(())
    }
}

/// `X-Demo-Tenant: acme` is an admin of acme; nothing else is signed in.
fn session(parts: &http::request::Parts) -> Option<AdminSession> {
    let tenant = parts.headers.get("x-demo-tenant")?.to_str().ok()?.trim();
    let id = TenantId::new(tenant).ok()?;
    Some(
        AdminSession::new(format!("demo-session-{tenant}"), [id])
            .display_name(format!("admin of {tenant}")),
    )
}

fn port() -> switchboard::Result<u16> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(0),
        [flag, n] if flag == "--port" => n.parse().map_err(|_| {
            switchboard::Error::new(
                switchboard::ErrorKind::InvalidInput,
                format!("--port {n:?} is not a port number"),
            )
        }),
        _ => Err(switchboard::Error::new(
            switchboard::ErrorKind::InvalidInput,
            "usage: admin [--port N]",
        )),
    }
}

#[tokio::main]
async fn main() -> switchboard::Result<()> {
    let port = port()?;
    let store = MemoryStore::new().with_keyring(Keyring::generate("demo")?);
    let dyn_store: Arc<dyn Store> = Arc::new(store.clone());
    let scheduler = Scheduler::new(dyn_store.clone()).job(Arc::new(Import));
    let sb = switchboard::Switchboard::builder()
        .store_arc(dyn_store.clone())
        .destination(Chat)
        .resolver("chat", ChatResolver)
        .route(
            Route::on("wallet.*")
                .to("chat", Target::channel("general"))
                .named("wallet-updates")
                .template("{{ data.title }}"),
        )
        .route(
            Route::on("perk.redeemed")
                .to("chat", Target::channel("perks"))
                .named("perk-news")
                .template("{{ data.title }}"),
        )
        .build()?;
    for (tenant, upper) in [("acme", "ACME"), ("globex", "GLOBEX")] {
        let t = TenantId::new(tenant)?;
        sb.connect(
            Connection::builder(t.clone(), "chat", format!("{tenant}-ws"))
                .access_token(SecretString::from(format!("token-{tenant}")))
                .build()?,
        )
        .await?;
        for i in 1..=3 {
            let e = Event::builder(format!("{tenant}-dead-{i}"), "wallet.funded")
                .tenant(tenant)
                .subject(Person::new(format!("{tenant}-alice")))
                .data(serde_json::json!({ "title": format!("{upper}-secret-{i}"), "fail": true }))
                .build()?;
            sb.publish(e).await?;
        }
        let ok = Event::builder(format!("{tenant}-ok-1"), "perk.redeemed")
            .tenant(tenant)
            .subject(Person::new(format!("{tenant}-bob")))
            .data(serde_json::json!({ "title": format!("{upper}-perk") }))
            .build()?;
        sb.publish(ok).await?;
        scheduler
            .put_integration(&IntegrationConfig {
                tenant: t.clone(),
                name: "hr-import".into(),
                source: format!("s3://{tenant}-bucket/hr/*.csv"),
                schedule: Schedule::Cron("0 6 * * *".into()),
                enabled: true,
                settings: serde_json::Value::Null,
            })
            .await?;
        scheduler.run_now(&t, "hr-import").await?;
        scheduler.run_now(&t, "hr-import").await?;
    }
    sb.run_until_idle().await?;
    let config = AdminConfig::new(session, Arc::new(store))
        .people(People)
        .discovery(Discovery)
        .mapping("chat", Some("chat"))
        .install_link("chat", "https://chat.example/install?state={tenant}")
        .scheduler(scheduler)
        .title("Perks integrations (demo)");
    let admin = Admin::new(sb.clone(), config);
    for tenant in ["acme", "globex"] {
        admin.sync_users(&TenantId::new(tenant)?, "chat").await?;
    }
    let app = axum::Router::new().nest("/admin", admin.router());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("admin console: http://{addr}/admin/acme/  (send the header X-Demo-Tenant: acme)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
