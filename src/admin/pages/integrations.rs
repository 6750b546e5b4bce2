//! Integrations: the table of scheduled imports with their run history (rows read/imported/rejected, row errors, outcome), enable/disable, "run now" and the discovered header and sample rows of a source.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Serialize;

use super::{Params, field, required};
use crate::Error;
use crate::admin::config::DiscoveredSource;
use crate::admin::json::{AdminError, done};
use crate::admin::scope::{Scope, segment};
use crate::admin::{App, render, svg};
use crate::integration::{IntegrationConfig, RunRecord};
use crate::schedule::{IntegrationRow, Scheduler};

/// Runs shown per integration.
const RUNS: usize = 20;

fn scheduler(app: &App) -> Scheduler {
    app.cfg
        .scheduler
        .clone()
        .or_else(|| app.sb.scheduler().cloned())
        .unwrap_or_else(|| Scheduler::new(app.sb.store().clone()))
}

#[derive(Debug, Serialize)]
struct RowView {
    #[serde(flatten)]
    row: IntegrationRow,
    href: String,
}

#[derive(Debug, Serialize)]
struct Page {
    integrations: Vec<RowView>,
}

/// `GET /{tenant}/integrations`.
pub(crate) async fn page(
    State(app): State<App>,
    scope: Scope,
    Query(q): Query<Params>,
) -> Result<Response, AdminError> {
    let json = scope.json;
    let rows = scheduler(&app)
        .integrations(Some(&scope.tenant))
        .await
        .map_err(|e| AdminError::from_error(&e, json))?;
    let integrations = rows
        .into_iter()
        .filter(|r| r.tenant == scope.tenant)
        .map(|row| RowView {
            href: scope.path(&format!("integrations/{}", segment(&row.name))),
            row,
        })
        .collect();
    render(
        &app,
        &scope,
        "integrations.html",
        "Integrations",
        q.get("notice").map(String::as_str),
        Page { integrations },
        (),
    )
}

async fn config_of(app: &App, scope: &Scope, name: &str) -> Result<IntegrationConfig, AdminError> {
    app.sb
        .store()
        .integrations(Some(&scope.tenant))
        .await
        .map_err(|e| AdminError::from_error(&e, scope.json))?
        .into_iter()
        .find(|c| c.name == name && c.tenant == scope.tenant)
        .ok_or_else(|| AdminError::not_found(scope.json))
}

#[derive(Debug, Serialize)]
struct Detail {
    integration: IntegrationConfig,
    row: Option<IntegrationRow>,
    runs: Vec<RunRecord>,
    discovered: Option<DiscoveredSource>,
    discovery_error: Option<String>,
    can_discover: bool,
}

/// `GET /{tenant}/integrations/{name}` (`?discover=1` reads the source's
/// header and sample rows).
pub(crate) async fn detail(
    State(app): State<App>,
    scope: Scope,
    Path((_, name)): Path<(String, String)>,
    Query(q): Query<Params>,
) -> Result<Response, AdminError> {
    let json = scope.json;
    let err = |e: Error| AdminError::from_error(&e, json);
    let config = config_of(&app, &scope, &name).await?;
    let runs = app
        .sb
        .store()
        .runs(&scope.tenant, &name, RUNS)
        .await
        .map_err(err)?;
    let row = scheduler(&app)
        .integrations(Some(&scope.tenant))
        .await
        .map_err(err)?
        .into_iter()
        .find(|r| r.name == name && r.tenant == scope.tenant);
    let (discovered, discovery_error) = match (&app.cfg.discovery, field(&q, "discover")) {
        (Some(d), Some(_)) => match d.discover(&config).await {
            Ok(found) => (Some(found), None),
            Err(e) => (None, Some(e.message().to_owned())),
        },
        _ => (None, None),
    };
    let chart = svg::runs_chart(&runs);
    render(
        &app,
        &scope,
        "integrations_detail.html",
        &config.name.clone(),
        q.get("notice").map(String::as_str),
        Detail {
            integration: config,
            row,
            runs,
            discovered,
            discovery_error,
            can_discover: app.cfg.discovery.is_some(),
        },
        serde_json::json!({ "chart": chart }),
    )
}

/// `POST /{tenant}/integrations/{name}/enabled` (`enabled` = `true` / `false`).
pub(crate) async fn set_enabled(
    State(app): State<App>,
    scope: Scope,
    Path((_, name)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, AdminError> {
    scope.check_csrf(&form)?;
    let json = scope.json;
    let enabled = match required(&form, "enabled", json)? {
        "true" | "on" => true,
        "false" | "off" => false,
        _ => {
            return Err(AdminError::bad_request(
                "enabled must be true or false",
                json,
            ));
        }
    };
    let mut config = config_of(&app, &scope, &name).await?;
    config.enabled = enabled;
    scheduler(&app)
        .put_integration(&config)
        .await
        .map_err(|e| AdminError::from_error(&e, json))?;
    Ok(done(
        json,
        &scope.path("integrations"),
        if enabled { "enabled" } else { "disabled" },
        config,
    ))
}

/// `POST /{tenant}/integrations/{name}/run`: runs it now and records the run.
pub(crate) async fn run_now(
    State(app): State<App>,
    scope: Scope,
    Path((_, name)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, AdminError> {
    scope.check_csrf(&form)?;
    let json = scope.json;
    let config = config_of(&app, &scope, &name).await?;
    let run = scheduler(&app)
        .run_now(&scope.tenant, &config.name)
        .await
        .map_err(|e| AdminError::from_error(&e, json))?;
    let back = scope.path(&format!("integrations/{}", segment(&name)));
    Ok(done(json, &back, "ran", run))
}
