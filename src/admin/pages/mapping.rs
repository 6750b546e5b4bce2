//! User mapping: the last sync report (matched, unmatched, ambiguous, skipped), "Sync users", and manual mapping of a person to a platform user (searchable).

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Params, checked, field, required};
use crate::admin::config::{MappingTarget, PlatformUser};
use crate::admin::json::{AdminError, done};
use crate::admin::scope::Scope;
use crate::admin::{App, LastSync, render};
use crate::identity::{IdentityLink, LinkOrigin, SkippedCounts, SyncReport};
use crate::tenant::TenantId;
use crate::{Error, ErrorKind, Result};

/// The text links of `target` are stored under for `tenant`: its default
/// connection's key, else the platform (or destination) name.
async fn link_platform(app: &App, tenant: &TenantId, target: &MappingTarget) -> Result<String> {
    match &target.platform {
        Some(p) => Ok(app
            .sb
            .store()
            .default_connection(tenant, p)
            .await?
            .map_or_else(|| p.clone(), |c| c.key.to_string())),
        None => Ok(target.destination.clone()),
    }
}

fn mapping_target<'a>(app: &'a App, destination: &str) -> Option<&'a MappingTarget> {
    app.cfg
        .mapping
        .iter()
        .find(|m| m.destination == destination)
}

/// Runs "Sync users" and keeps the report.
pub(crate) async fn sync_users(
    app: &App,
    tenant: &TenantId,
    destination: &str,
) -> Result<SyncReport> {
    if mapping_target(app, destination).is_none() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("{destination:?} is not offered for user mapping"),
        ));
    }
    let people = app
        .cfg
        .people
        .as_ref()
        .ok_or_else(|| Error::config("the admin console has no PeopleDirectory"))?
        .people(tenant)
        .await?;
    let report = app.sb.sync_identities(tenant, destination, &people).await?;
    if let Ok(mut reports) = app.reports.lock() {
        reports.insert(
            (tenant.clone(), destination.to_owned()),
            LastSync {
                at: app.sb.now(),
                report: report.clone(),
            },
        );
    }
    Ok(report)
}

#[derive(Debug, Serialize)]
struct PersonView {
    user_id: String,
    identifiers: Vec<String>,
    candidates: Vec<String>,
}

#[derive(Debug, Serialize)]
struct LinkView {
    user_id: String,
    platform_id: String,
    origin: LinkOrigin,
    linked_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
struct Counts {
    matched: usize,
    unmatched: usize,
    ambiguous: usize,
    skipped: SkippedCounts,
}

#[derive(Debug, Serialize)]
struct Section {
    destination: String,
    platform: String,
    synced_at: Option<DateTime<Utc>>,
    counts: Option<Counts>,
    /// Unmatched people not mapped since.
    unmatched: Vec<PersonView>,
    /// Ambiguous people not mapped since.
    ambiguous: Vec<PersonView>,
    /// Links made by hand.
    manual: Vec<LinkView>,
    /// Platform users matching the search, if one was made for this destination.
    search: Option<String>,
    results: Vec<PlatformUser>,
}

#[derive(Debug, Serialize)]
struct Page {
    sections: Vec<Section>,
    can_sync: bool,
}

/// `GET /{tenant}/mapping` (`?destination=…&q=…` searches platform users).
pub(crate) async fn page(
    State(app): State<App>,
    scope: Scope,
    Query(q): Query<Params>,
) -> Result<Response, AdminError> {
    let json = scope.json;
    let err = |e: Error| AdminError::from_error(&e, json);
    let mut sections = Vec::new();
    for target in &app.cfg.mapping {
        let platform = link_platform(&app, &scope.tenant, target)
            .await
            .map_err(err)?;
        let links: HashMap<String, IdentityLink> = app
            .sb
            .store()
            .links(&scope.tenant, &platform)
            .await
            .map_err(err)?
            .into_iter()
            .filter(|l| l.tenant == scope.tenant)
            .map(|l| (l.user_id.clone(), l))
            .collect();
        let last = app.reports.lock().ok().and_then(|r| {
            r.get(&(scope.tenant.clone(), target.destination.clone()))
                .cloned()
        });
        let (synced_at, counts, unmatched, ambiguous) = match &last {
            Some(LastSync { at, report }) => (
                Some(*at),
                Some(Counts {
                    matched: report.matched.len(),
                    unmatched: report.unmatched.len(),
                    ambiguous: report.ambiguous.len(),
                    skipped: report.skipped,
                }),
                report
                    .unmatched
                    .iter()
                    .filter(|u| !links.contains_key(&u.user_id))
                    .map(|u| PersonView {
                        user_id: u.user_id.clone(),
                        identifiers: u.identifiers.clone(),
                        candidates: Vec::new(),
                    })
                    .collect(),
                report
                    .ambiguous
                    .iter()
                    .filter(|a| {
                        links
                            .get(&a.user_id)
                            .is_none_or(|l| l.origin != LinkOrigin::Manual)
                    })
                    .map(|a| PersonView {
                        user_id: a.user_id.clone(),
                        identifiers: Vec::new(),
                        candidates: a.candidates.clone(),
                    })
                    .collect(),
            ),
            None => (None, None, Vec::new(), Vec::new()),
        };
        let mut manual: Vec<LinkView> = links
            .values()
            .filter(|l| l.origin == LinkOrigin::Manual)
            .map(|l| LinkView {
                user_id: l.user_id.clone(),
                platform_id: l.platform_id.clone(),
                origin: l.origin,
                linked_at: l.linked_at,
            })
            .collect();
        manual.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        let search = (q.get("destination") == Some(&target.destination))
            .then(|| field(&q, "q").map(str::to_owned))
            .flatten();
        let results = match (&search, &app.cfg.people) {
            (Some(text), Some(people)) => {
                let text = checked(text, "q", json)?;
                people
                    .search_platform_users(&scope.tenant, &target.destination, text)
                    .await
                    .map_err(err)?
            }
            _ => Vec::new(),
        };
        sections.push(Section {
            destination: target.destination.clone(),
            platform,
            synced_at,
            counts,
            unmatched,
            ambiguous,
            manual,
            search,
            results,
        });
    }
    render(
        &app,
        &scope,
        "mapping.html",
        "User mapping",
        q.get("notice").map(String::as_str),
        Page {
            sections,
            can_sync: app.cfg.people.is_some(),
        },
        (),
    )
}

/// `POST /{tenant}/mapping/sync` (`destination`).
pub(crate) async fn sync(
    State(app): State<App>,
    scope: Scope,
    Form(form): Form<HashMap<String, String>>,
) -> std::result::Result<Response, AdminError> {
    scope.check_csrf(&form)?;
    let json = scope.json;
    let destination = required(&form, "destination", json)?;
    let report = sync_users(&app, &scope.tenant, destination)
        .await
        .map_err(|e| AdminError::from_error(&e, json))?;
    Ok(done(json, &scope.path("mapping"), "synced", report))
}

/// `POST /{tenant}/mapping/link` (`destination`, `user_id`, `platform_id`):
/// maps a person by hand; manual links win over automatic matches.
pub(crate) async fn link(
    State(app): State<App>,
    scope: Scope,
    Form(form): Form<HashMap<String, String>>,
) -> std::result::Result<Response, AdminError> {
    scope.check_csrf(&form)?;
    let json = scope.json;
    let err = |e: Error| AdminError::from_error(&e, json);
    let destination = required(&form, "destination", json)?;
    let user_id = required(&form, "user_id", json)?;
    let platform_id = required(&form, "platform_id", json)?;
    let target = mapping_target(&app, destination).ok_or_else(|| AdminError::not_found(json))?;
    if let Some(people) = &app.cfg.people {
        let known = people
            .people(&scope.tenant)
            .await
            .map_err(err)?
            .iter()
            .any(|p| p.id == user_id);
        if !known {
            return Err(AdminError::not_found(json));
        }
    }
    let link = IdentityLink {
        tenant: scope.tenant.clone(),
        platform: link_platform(&app, &scope.tenant, target)
            .await
            .map_err(err)?,
        user_id: user_id.to_owned(),
        platform_id: platform_id.to_owned(),
        origin: LinkOrigin::Manual,
        linked_at: app.sb.now(),
    };
    app.sb.store().put_link(&link).await.map_err(err)?;
    Ok(done(json, &scope.path("mapping"), "linked", link))
}

/// `POST /{tenant}/mapping/unlink` (`destination`, `user_id`).
pub(crate) async fn unlink(
    State(app): State<App>,
    scope: Scope,
    Form(form): Form<HashMap<String, String>>,
) -> std::result::Result<Response, AdminError> {
    scope.check_csrf(&form)?;
    let json = scope.json;
    let err = |e: Error| AdminError::from_error(&e, json);
    let destination = required(&form, "destination", json)?;
    let user_id = required(&form, "user_id", json)?;
    let target = mapping_target(&app, destination).ok_or_else(|| AdminError::not_found(json))?;
    let platform = link_platform(&app, &scope.tenant, target)
        .await
        .map_err(err)?;
    let removed = app
        .sb
        .store()
        .delete_link(&scope.tenant, &platform, user_id)
        .await
        .map_err(err)?;
    if !removed {
        return Err(AdminError::not_found(json));
    }
    Ok(done(
        json,
        &scope.path("mapping"),
        "unlinked",
        serde_json::json!({ "user_id": user_id }),
    ))
}
