//! The tenant list and each tenant's overview: connection health, dead letters and the deliveries-per-hour chart.

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Serialize;

use super::Params;
use crate::admin::json::AdminError;
use crate::admin::scope::{Scope, Session, tenant_path};
use crate::admin::{App, render, svg};
use crate::engine::DestinationStatus;
use crate::store::HourBucket;

/// Hours shown by the deliveries chart.
pub(crate) const CHART_HOURS: u32 = 24;

#[derive(Serialize)]
struct TenantLink {
    tenant: String,
    href: String,
}

/// `/`: the admin's tenants (straight to the only one).
pub(crate) async fn index(State(_app): State<App>, s: Session) -> Result<Response, AdminError> {
    let links: Vec<TenantLink> = s
        .session
        .tenants
        .iter()
        .map(|t| TenantLink {
            tenant: t.as_str().to_owned(),
            href: tenant_path(&s.base, t, ""),
        })
        .collect();
    if s.json {
        return Ok(axum::Json(serde_json::json!({ "tenants": links })).into_response());
    }
    if let [only] = links.as_slice() {
        return Ok(Redirect::to(&only.href).into_response());
    }
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Organisations</title></head><body><main><h1>Organisations</h1><ul>",
    );
    for l in &links {
        html.push_str(&format!(
            "<li><a href=\"{}\">{}</a></li>",
            crate::admin::json::escape(&l.href),
            crate::admin::json::escape(&l.tenant)
        ));
    }
    html.push_str("</ul></main></body></html>");
    Ok(Html(html).into_response())
}

#[derive(Serialize)]
pub(crate) struct Overview {
    tenant: String,
    destinations: Vec<DestinationStatus>,
    dead_letters: u64,
    parked: u64,
    queued: u64,
    deliveries_per_hour: Vec<HourBucket>,
}

/// `/{tenant}/`.
pub(crate) async fn overview(
    State(app): State<App>,
    scope: Scope,
    Query(q): Query<Params>,
) -> Result<Response, AdminError> {
    let json = scope.json;
    let destinations = app
        .sb
        .tenant_status(&scope.tenant)
        .await
        .map_err(|e| AdminError::from_error(&e, json))?;
    let buckets = app
        .cfg
        .queries
        .delivery_histogram(&scope.tenant, app.sb.now(), CHART_HOURS)
        .await
        .map_err(|e| AdminError::from_error(&e, json))?;
    let chart = svg::deliveries_chart(&buckets);
    let data = Overview {
        tenant: scope.tenant.as_str().to_owned(),
        dead_letters: destinations.iter().map(|d| d.dead_letters).sum(),
        parked: destinations.iter().map(|d| d.parked).sum(),
        queued: destinations.iter().map(|d| d.queue_depth).sum(),
        destinations,
        deliveries_per_hour: buckets,
    };
    render(
        &app,
        &scope,
        "overview.html",
        "Overview",
        q.get("notice").map(String::as_str),
        data,
        serde_json::json!({ "chart": chart }),
    )
}

/// `/{tenant}/charts/deliveries.svg`.
pub(crate) async fn deliveries_chart(
    State(app): State<App>,
    scope: Scope,
) -> Result<Response, AdminError> {
    let buckets = app
        .cfg
        .queries
        .delivery_histogram(&scope.tenant, app.sb.now(), CHART_HOURS)
        .await
        .map_err(|e| AdminError::from_error(&e, scope.json))?;
    Ok((
        [(header::CONTENT_TYPE, "image/svg+xml")],
        svg::deliveries_chart(&buckets),
    )
        .into_response())
}
