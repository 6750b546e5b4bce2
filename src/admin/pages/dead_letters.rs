//! Dead letters: the tenant's dead letters with their reason and last response, replay of one (idempotent) or of all with one reason.

use std::collections::{BTreeMap, HashMap};

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Params, required, target_text};
use crate::admin::json::{AdminError, done};
use crate::admin::scope::Scope;
use crate::admin::{App, render};
use crate::destination::DeliveryId;
use crate::store::{DeadLetter, DeliveryState};
use crate::{Error, ErrorKind};

/// Dead letters listed (and replayed by reason) at most.
const MAX_DEAD: usize = 500;

#[derive(Debug, Serialize)]
struct DeadView {
    #[serde(flatten)]
    dead: DeadLetter,
    reason: String,
    target_text: String,
    /// The last response recorded in the delivery log.
    last_response: Option<String>,
    /// Pass back to replay (makes a repeated replay a no-op).
    died_at_ms: i64,
}

#[derive(Debug, Serialize)]
struct Reason {
    reason: String,
    count: usize,
}

#[derive(Debug, Serialize)]
struct Page {
    dead_letters: Vec<DeadView>,
    reasons: Vec<Reason>,
    /// Pass back to replay-by-reason: only letters dead by then are replayed.
    as_of_ms: i64,
}

/// `GET /{tenant}/dead-letters`.
pub(crate) async fn page(
    State(app): State<App>,
    scope: Scope,
    Query(q): Query<Params>,
) -> Result<Response, AdminError> {
    let json = scope.json;
    let err = |e: Error| AdminError::from_error(&e, json);
    let as_of_ms = app.sb.now().timestamp_millis();
    let dead = app
        .sb
        .tenant_dead_letters(&scope.tenant, MAX_DEAD)
        .await
        .map_err(err)?;
    let mut views = Vec::with_capacity(dead.len());
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for d in dead.into_iter().filter(|d| d.tenant == scope.tenant) {
        let log = app.sb.store().delivery_log(d.id).await.map_err(err)?;
        let reason = d.error.to_string();
        *reasons.entry(reason.clone()).or_default() += 1;
        views.push(DeadView {
            last_response: log.iter().rev().find_map(|e| e.detail.clone()),
            died_at_ms: d.died_at.timestamp_millis(),
            target_text: target_text(&d.target),
            reason,
            dead: d,
        });
    }
    views.reverse();
    render(
        &app,
        &scope,
        "dead-letters.html",
        "Dead letters",
        q.get("notice").map(String::as_str),
        Page {
            dead_letters: views,
            reasons: reasons
                .into_iter()
                .map(|(reason, count)| Reason { reason, count })
                .collect(),
            as_of_ms,
        },
        (),
    )
}

fn millis_field(form: &HashMap<String, String>, name: &str, json: bool) -> Result<i64, AdminError> {
    required(form, name, json)?
        .parse()
        .map_err(|_| AdminError::bad_request(format!("{name} must be a number"), json))
}

/// `POST /{tenant}/dead-letters/{id}/replay` (`died_at` = the listed
/// `died_at_ms`): replays it once; repeating the same POST does nothing.
pub(crate) async fn replay(
    State(app): State<App>,
    scope: Scope,
    Path((_, id)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, AdminError> {
    scope.check_csrf(&form)?;
    let json = scope.json;
    let id: DeliveryId = id.parse().map_err(|_| AdminError::not_found(json))?;
    let died_at = millis_field(&form, "died_at", json)?;
    let row = app
        .cfg
        .queries
        .tenant_delivery(&scope.tenant, id)
        .await
        .map_err(|e| AdminError::from_error(&e, json))?
        .filter(|r| r.tenant == scope.tenant)
        .ok_or_else(|| AdminError::not_found(json))?;
    let back = scope.path("dead-letters");
    let same_death = row.state == DeliveryState::Dead
        && row.died_at.map(|t| t.timestamp_millis()) == Some(died_at);
    if !same_death {
        return Ok(done(
            json,
            &back,
            "already_replayed",
            serde_json::json!({ "replayed": 0 }),
        ));
    }
    match app.sb.replay(id).await {
        Ok(()) => Ok(done(
            json,
            &back,
            "replayed",
            serde_json::json!({ "replayed": 1 }),
        )),
        // Replayed meanwhile by someone else.
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(done(
            json,
            &back,
            "already_replayed",
            serde_json::json!({ "replayed": 0 }),
        )),
        Err(e) => Err(AdminError::from_error(&e, json)),
    }
}

/// `POST /{tenant}/dead-letters/replay-reason` (`reason`, `as_of` = the
/// page's `as_of_ms`): replays the tenant's dead letters with that reason that
/// were dead by then.
pub(crate) async fn replay_reason(
    State(app): State<App>,
    scope: Scope,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, AdminError> {
    scope.check_csrf(&form)?;
    let json = scope.json;
    let reason = required(&form, "reason", json)?;
    let as_of = millis_field(&form, "as_of", json)?;
    let as_of = DateTime::<Utc>::from_timestamp_millis(as_of)
        .ok_or_else(|| AdminError::bad_request("as_of is out of range", json))?;
    let dead = app
        .sb
        .tenant_dead_letters(&scope.tenant, MAX_DEAD)
        .await
        .map_err(|e| AdminError::from_error(&e, json))?;
    let mut replayed = 0u64;
    for d in dead
        .iter()
        .filter(|d| d.tenant == scope.tenant && d.died_at <= as_of && d.error.to_string() == reason)
    {
        match app.sb.replay(d.id).await {
            Ok(()) => replayed += 1,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(AdminError::from_error(&e, json)),
        }
    }
    Ok(done(
        json,
        &scope.path("dead-letters"),
        "replayed_reason",
        serde_json::json!({ "replayed": replayed }),
    ))
}
