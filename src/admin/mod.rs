//! The admin console (feature `admin`): an embeddable axum router with the pages each tenant's admin needs — connections, event rules, user mapping, deliveries and dead letters, integrations — scoped per tenant by the host.
//!
//! ```no_run
//! # #[cfg(feature = "sqlite")]
//! # async fn f(switchboard: switchboard::Switchboard, store: switchboard::SqliteStore) {
//! use std::sync::Arc;
//! use switchboard::TenantId;
//! use switchboard::admin::{AdminConfig, AdminSession};
//!
//! let config = AdminConfig::new(
//!     // The host's own authentication put its claims into the request.
//!     |parts: &http::request::Parts| {
//!         let tenant = parts.headers.get("x-tenant")?.to_str().ok()?;
//!         Some(AdminSession::new(format!("session-of-{tenant}"), [TenantId::new(tenant).ok()?]))
//!     },
//!     Arc::new(store),
//! );
//! let app = axum::Router::new().nest("/admin", switchboard::admin::router(switchboard, config));
//! # let _ = app; }
//! ```
//!
//! Every route below `/{tenant}/` checks the tenant against the session's
//! tenants, and every lookup by id is made within that tenant, so an admin of
//! one tenant can never read or change another's data. Every state change is
//! a POST carrying a CSRF token bound to the session (form field `csrf`, or the
//! `X-CSRF-Token` header). Pages are server-rendered HTML (minijinja,
//! escaped); with `Accept: application/json` each returns its data as JSON.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::engine::Switchboard;
use crate::identity::SyncReport;
use crate::tenant::TenantId;

mod config;
mod csrf;
mod json;
mod pages;
mod scope;
mod svg;

pub use config::{
    AdminConfig, AdminSession, DiscoveredSource, MappingTarget, PeopleDirectory, PlatformUser,
    SessionFn, SourceDiscovery,
};
pub use scope::CSRF_HEADER;

use json::AdminError;
use scope::Scope;

/// The last "Sync users" of one (tenant, destination).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LastSync {
    pub(crate) at: DateTime<Utc>,
    pub(crate) report: SyncReport,
}

pub(crate) struct AppInner {
    pub(crate) sb: Switchboard,
    pub(crate) cfg: AdminConfig,
    pub(crate) env: minijinja::Environment<'static>,
    /// Sync reports by (tenant, destination), kept in this process.
    pub(crate) reports: Mutex<HashMap<(TenantId, String), LastSync>>,
}

/// The console's shared state.
#[derive(Clone)]
pub(crate) struct App(Arc<AppInner>);

impl std::ops::Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// A handle on the console's state, for hosts that also act outside requests
/// (e.g. run "Sync users" at startup or from their own job).
#[derive(Clone)]
pub struct Admin {
    app: App,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("config", &self.app.cfg)
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// The console of `switchboard`, scoped and configured by `config`.
    pub fn new(switchboard: Switchboard, config: AdminConfig) -> Admin {
        Admin {
            app: App(Arc::new(AppInner {
                sb: switchboard,
                cfg: config,
                env: pages::environment(),
                reports: Mutex::new(HashMap::new()),
            })),
        }
    }

    /// The router; nest it under the host's own path, behind its authentication.
    pub fn router(&self) -> Router {
        routes().with_state(self.app.clone())
    }

    /// Runs "Sync users" of `tenant` for `destination` (one of
    /// [`AdminConfig::mapping`]) with the host's [`PeopleDirectory`], keeps the
    /// report for the mapping page and returns it.
    pub async fn sync_users(
        &self,
        tenant: &TenantId,
        destination: &str,
    ) -> crate::Result<SyncReport> {
        pages::mapping::sync_users(&self.app, tenant, destination).await
    }
}

/// The console of `switchboard` as a router: [`Admin::new`] then [`Admin::router`].
pub fn router(switchboard: Switchboard, config: AdminConfig) -> Router {
    Admin::new(switchboard, config).router()
}

fn routes() -> Router<App> {
    use pages::{connections, dead_letters, deliveries, integrations, mapping, overview, rules};
    Router::new()
        .route("/", get(overview::index))
        .route("/{tenant}", get(overview::overview))
        .route("/{tenant}/", get(overview::overview))
        .route("/{tenant}/connections", get(connections::page))
        .route(
            "/{tenant}/connections/disconnect",
            post(connections::disconnect),
        )
        .route("/{tenant}/rules", get(rules::page))
        .route("/{tenant}/rules/{route}", post(rules::update))
        .route("/{tenant}/mapping", get(mapping::page))
        .route("/{tenant}/mapping/sync", post(mapping::sync))
        .route("/{tenant}/mapping/link", post(mapping::link))
        .route("/{tenant}/mapping/unlink", post(mapping::unlink))
        .route("/{tenant}/deliveries", get(deliveries::page))
        .route("/{tenant}/deliveries/{id}", get(deliveries::detail))
        .route("/{tenant}/dead-letters", get(dead_letters::page))
        .route(
            "/{tenant}/dead-letters/{id}/replay",
            post(dead_letters::replay),
        )
        .route(
            "/{tenant}/dead-letters/replay-reason",
            post(dead_letters::replay_reason),
        )
        .route("/{tenant}/integrations", get(integrations::page))
        .route("/{tenant}/integrations/{name}", get(integrations::detail))
        .route(
            "/{tenant}/integrations/{name}/enabled",
            post(integrations::set_enabled),
        )
        .route(
            "/{tenant}/integrations/{name}/run",
            post(integrations::run_now),
        )
        .route(
            "/{tenant}/charts/deliveries.svg",
            get(overview::deliveries_chart),
        )
}

/// Texts of the notices a POST redirects back with (codes only, so a link
/// cannot put arbitrary text on the page).
fn notice_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "replayed" => "The delivery was queued again.",
        "already_replayed" => "Nothing to do: that dead letter was already replayed.",
        "replayed_reason" => "The dead letters with that reason were queued again.",
        "rule_saved" => "The event rule was saved.",
        "synced" => "Users were synced.",
        "linked" => "The person was mapped.",
        "unlinked" => "The mapping was removed.",
        "enabled" => "The integration was switched on.",
        "disabled" => "The integration was switched off.",
        "ran" => "The integration ran.",
        "disconnected" => "The connection was disconnected.",
        _ => return None,
    })
}

/// What every page's layout shows.
#[derive(Serialize)]
struct Layout<'a> {
    title: &'a str,
    heading: &'a str,
    tenant: &'a str,
    /// The tenant's pages start here (`/admin/acme/`).
    root: String,
    tenants: Vec<NavLink>,
    nav: Vec<NavLink>,
    csrf: &'a str,
    notice: Option<&'static str>,
    user: Option<&'a str>,
}

#[derive(Serialize)]
struct NavLink {
    label: String,
    href: String,
    active: bool,
}

/// Renders a tenant page: JSON of `data` when asked for, else `template`
/// with the layout.
pub(crate) fn render<T: Serialize, E: Serialize>(
    app: &App,
    scope: &Scope,
    template: &str,
    heading: &str,
    notice: Option<&str>,
    data: T,
    extra: E,
) -> Result<Response, AdminError> {
    if scope.json {
        return Ok(Json(data).into_response());
    }
    let sections = [
        ("Overview", ""),
        ("Connections", "connections"),
        ("Event rules", "rules"),
        ("User mapping", "mapping"),
        ("Deliveries", "deliveries"),
        ("Dead letters", "dead-letters"),
        ("Integrations", "integrations"),
    ];
    let layout = Layout {
        title: &app.cfg.title,
        heading,
        tenant: scope.tenant.as_str(),
        root: scope.path(""),
        tenants: scope
            .session
            .tenants
            .iter()
            .map(|t| NavLink {
                label: t.as_str().to_owned(),
                href: scope::tenant_path(&scope.base, t, ""),
                active: t == &scope.tenant,
            })
            .collect(),
        nav: sections
            .iter()
            .map(|(label, rest)| NavLink {
                label: (*label).to_owned(),
                href: scope.path(rest),
                active: template.starts_with(if rest.is_empty() { "overview" } else { rest }),
            })
            .collect(),
        csrf: &scope.csrf,
        notice: notice.and_then(notice_text),
        user: scope.session.display_name.as_deref(),
    };
    let tmpl = app
        .env
        .get_template(template)
        .map_err(|e| template_error(&e, scope.json))?;
    let html = tmpl
        .render(minijinja::context! { layout => layout, data => data, extra => extra })
        .map_err(|e| template_error(&e, scope.json))?;
    Ok(Html(html).into_response())
}

fn template_error(e: &minijinja::Error, json: bool) -> AdminError {
    tracing::error!(error = %e, "admin console template failed");
    AdminError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "the page could not be rendered",
        json,
    )
}
