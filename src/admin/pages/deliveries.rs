//! Deliveries: the tenant's recent deliveries filterable by status, kind and person, and one delivery's attempt log.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Serialize;

use super::{Params, checked, field, target_text};
use crate::admin::json::AdminError;
use crate::admin::scope::Scope;
use crate::admin::{App, render};
use crate::destination::DeliveryId;
use crate::store::{DeliveryQuery, DeliveryRow, DeliveryState, LogEntry};

/// Rows per page.
const PAGE_ROWS: usize = 50;

#[derive(Debug, Serialize)]
struct RowView {
    #[serde(flatten)]
    row: DeliveryRow,
    target_text: String,
}

#[derive(Debug, Serialize)]
struct Filters {
    status: Option<String>,
    kind: Option<String>,
    person: Option<String>,
}

#[derive(Debug, Serialize)]
struct Page {
    filters: Filters,
    deliveries: Vec<RowView>,
    /// `before` for the next page, if there may be one.
    next_before: Option<DeliveryId>,
    statuses: [&'static str; 5],
}

/// `GET /{tenant}/deliveries?status=&kind=&person=&before=`.
pub(crate) async fn page(
    State(app): State<App>,
    scope: Scope,
    Query(q): Query<Params>,
) -> Result<Response, AdminError> {
    let json = scope.json;
    let status = match field(&q, "status") {
        None => None,
        Some(s) => Some(
            DeliveryState::parse(s)
                .ok_or_else(|| AdminError::bad_request(format!("unknown status {s:?}"), json))?,
        ),
    };
    let kind = field(&q, "kind")
        .map(|k| checked(k, "kind", json).map(str::to_owned))
        .transpose()?;
    let person = field(&q, "person")
        .map(|p| checked(p, "person", json).map(str::to_owned))
        .transpose()?;
    let before_id = field(&q, "before")
        .map(|b| {
            b.parse::<DeliveryId>()
                .map_err(|_| AdminError::bad_request("before must be a delivery id", json))
        })
        .transpose()?;
    let query = DeliveryQuery {
        tenant: scope.tenant.clone(),
        status,
        kind: kind.clone(),
        person: person.clone(),
        limit: PAGE_ROWS,
        before_id,
    };
    let rows = app
        .cfg
        .queries
        .query_deliveries(&query)
        .await
        .map_err(|e| AdminError::from_error(&e, json))?;
    let next_before = (rows.len() == PAGE_ROWS)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let deliveries = rows
        .into_iter()
        .filter(|r| r.tenant == scope.tenant)
        .map(|row| RowView {
            target_text: target_text(&row.target),
            row,
        })
        .collect();
    render(
        &app,
        &scope,
        "deliveries.html",
        "Deliveries",
        q.get("notice").map(String::as_str),
        Page {
            filters: Filters {
                status: status.map(|s| s.as_str().to_owned()),
                kind,
                person,
            },
            deliveries,
            next_before,
            statuses: ["queued", "in_flight", "sent", "dead", "parked"],
        },
        (),
    )
}

#[derive(Debug, Serialize)]
struct Detail {
    delivery: RowView,
    log: Vec<LogEntry>,
}

/// `GET /{tenant}/deliveries/{id}`: the delivery and its attempt log (404 for
/// another tenant's id).
pub(crate) async fn detail(
    State(app): State<App>,
    scope: Scope,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, AdminError> {
    let json = scope.json;
    let id: DeliveryId = id.parse().map_err(|_| AdminError::not_found(json))?;
    let row = app
        .cfg
        .queries
        .tenant_delivery(&scope.tenant, id)
        .await
        .map_err(|e| AdminError::from_error(&e, json))?
        .filter(|r| r.tenant == scope.tenant)
        .ok_or_else(|| AdminError::not_found(json))?;
    let log = app
        .sb
        .store()
        .delivery_log(id)
        .await
        .map_err(|e| AdminError::from_error(&e, json))?;
    render(
        &app,
        &scope,
        "deliveries_detail.html",
        "Delivery",
        None,
        Detail {
            delivery: RowView {
                target_text: target_text(&row.target),
                row,
            },
            log,
        },
        (),
    )
}
