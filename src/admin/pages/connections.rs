//! Connections: each platform connection of the tenant with its state and a reconnect/install link, and each destination's health (queue depth, parked, dead letters, last success and error).

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Params, required};
use crate::admin::json::{AdminError, done};
use crate::admin::scope::Scope;
use crate::admin::{App, render};
use crate::engine::DestinationStatus;
use crate::tenant::{ConnectionKey, ConnectionState, TenantId};

/// One connection as the page shows it (never its secrets).
#[derive(Debug, Serialize)]
pub(crate) struct ConnectionView {
    platform: String,
    account: String,
    key: String,
    connected: bool,
    reason: Option<String>,
    since: Option<DateTime<Utc>>,
    is_default: bool,
    updated_at: DateTime<Utc>,
    install_url: Option<String>,
}

#[derive(Debug, Serialize)]
struct NotConnected {
    platform: String,
    install_url: String,
}

#[derive(Debug, Serialize)]
struct Page {
    connections: Vec<ConnectionView>,
    not_connected: Vec<NotConnected>,
    destinations: Vec<DestinationStatus>,
}

fn install_url(app: &App, tenant: &TenantId, platform: &str) -> Option<String> {
    let t: String = url::form_urlencoded::byte_serialize(tenant.as_str().as_bytes()).collect();
    app.cfg
        .install_links
        .get(platform)
        .map(|u| u.replace("{tenant}", &t))
}

/// `GET /{tenant}/connections`.
pub(crate) async fn page(
    State(app): State<App>,
    scope: Scope,
    Query(q): Query<Params>,
) -> Result<Response, AdminError> {
    let json = scope.json;
    let err = |e: crate::Error| AdminError::from_error(&e, json);
    let stored = app
        .sb
        .store()
        .connections(Some(&scope.tenant))
        .await
        .map_err(err)?;
    let connections: Vec<ConnectionView> = stored
        .into_iter()
        .filter(|c| c.tenant == scope.tenant)
        .map(|c| {
            let (connected, reason, since) = match &c.state {
                ConnectionState::Connected => (true, None, None),
                ConnectionState::Disconnected { reason, since } => {
                    (false, Some(reason.clone()), Some(*since))
                }
            };
            ConnectionView {
                install_url: install_url(&app, &scope.tenant, c.platform()),
                platform: c.key.platform.clone(),
                account: c.key.account.clone(),
                key: c.key.to_string(),
                connected,
                reason,
                since,
                is_default: c.is_default,
                updated_at: c.updated_at,
            }
        })
        .collect();
    let not_connected = app
        .cfg
        .install_links
        .keys()
        .filter(|p| !connections.iter().any(|c| &c.platform == *p))
        .filter_map(|p| {
            Some(NotConnected {
                platform: p.clone(),
                install_url: install_url(&app, &scope.tenant, p)?,
            })
        })
        .collect();
    let destinations = app.sb.tenant_status(&scope.tenant).await.map_err(err)?;
    render(
        &app,
        &scope,
        "connections.html",
        "Connections",
        q.get("notice").map(String::as_str),
        Page {
            connections,
            not_connected,
            destinations,
        },
        (),
    )
}

/// `POST /{tenant}/connections/disconnect` (`platform`, `account`): marks the
/// tenant's connection disconnected and parks its deliveries.
pub(crate) async fn disconnect(
    State(app): State<App>,
    scope: Scope,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, AdminError> {
    scope.check_csrf(&form)?;
    let json = scope.json;
    let key = ConnectionKey::new(
        required(&form, "platform", json)?,
        required(&form, "account", json)?,
    );
    let found = app
        .sb
        .store()
        .connection(&key)
        .await
        .map_err(|e| AdminError::from_error(&e, json))?;
    // Another tenant's connection is answered exactly like a missing one.
    let Some(c) = found.filter(|c| c.tenant == scope.tenant) else {
        return Err(AdminError::not_found(json));
    };
    let parked = if c.is_connected() {
        app.sb
            .disconnect_connection(&key, "disconnected by an admin")
            .await
            .map_err(|e| AdminError::from_error(&e, json))?
    } else {
        0
    };
    Ok(done(
        json,
        &scope.path("connections"),
        "disconnected",
        serde_json::json!({ "parked": parked }),
    ))
}
