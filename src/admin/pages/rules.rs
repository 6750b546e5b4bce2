//! Event rules: each route with the tenant's on/off switch and target (which channel), editable.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Serialize;

use super::{Params, checked, field, target_text};
use crate::admin::json::{AdminError, done};
use crate::admin::scope::{Scope, segment};
use crate::admin::{App, render};
use crate::message::Target;
use crate::store::RouteRule;

#[derive(Debug, Serialize)]
struct RuleView {
    route: String,
    pattern: String,
    destination: String,
    /// Whether the route is on for this tenant (its rule, else the default).
    enabled: bool,
    /// The tenant's own choice, if any.
    tenant_enabled: Option<bool>,
    default_enabled: bool,
    /// Where it goes for this tenant.
    target: Target,
    target_text: String,
    /// The tenant's channel, if it replaced the default target with one.
    channel: Option<String>,
    default_target_text: String,
    /// Where its forms post.
    action: String,
}

#[derive(Debug, Serialize)]
struct Page {
    rules: Vec<RuleView>,
}

/// `GET /{tenant}/rules`.
pub(crate) async fn page(
    State(app): State<App>,
    scope: Scope,
    Query(q): Query<Params>,
) -> Result<Response, AdminError> {
    let json = scope.json;
    let rules = app
        .sb
        .rules(&scope.tenant)
        .await
        .map_err(|e| AdminError::from_error(&e, json))?;
    let views = app
        .sb
        .routes()
        .into_iter()
        .map(|r| {
            let rule = rules
                .iter()
                .find(|x| x.route == r.name && x.tenant == scope.tenant);
            let tenant_enabled = rule.and_then(|x| x.enabled);
            let target = rule
                .and_then(|x| x.target.clone())
                .unwrap_or_else(|| r.target.clone());
            let channel = match rule.and_then(|x| x.target.as_ref()) {
                Some(Target::ChannelName { name }) => Some(name.clone()),
                Some(Target::ChannelId { id }) => Some(id.clone()),
                _ => None,
            };
            RuleView {
                action: scope.path(&format!("rules/{}", segment(&r.name))),
                enabled: tenant_enabled.unwrap_or(r.enabled) && r.enabled,
                tenant_enabled,
                default_enabled: r.enabled,
                target_text: target_text(&target),
                default_target_text: target_text(&r.target),
                target,
                channel,
                route: r.name,
                pattern: r.pattern,
                destination: r.destination,
            }
        })
        .collect();
    render(
        &app,
        &scope,
        "rules.html",
        "Event rules",
        q.get("notice").map(String::as_str),
        Page { rules: views },
        (),
    )
}

/// `POST /{tenant}/rules/{route}`: `enabled` = `on` / `off` / `default`
/// (absent: unchanged); `channel` = a channel name, or empty for the route's
/// default target (absent: unchanged).
pub(crate) async fn update(
    State(app): State<App>,
    scope: Scope,
    Path((_, route)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, AdminError> {
    scope.check_csrf(&form)?;
    let json = scope.json;
    if !app.sb.routes().iter().any(|r| r.name == route) {
        return Err(AdminError::not_found(json));
    }
    let current = app
        .sb
        .rules(&scope.tenant)
        .await
        .map_err(|e| AdminError::from_error(&e, json))?
        .into_iter()
        .find(|r| r.route == route);
    let enabled = match field(&form, "enabled") {
        None => current.as_ref().and_then(|r| r.enabled),
        Some("on") => Some(true),
        Some("off") => Some(false),
        Some("default") => None,
        Some(_) => {
            return Err(AdminError::bad_request(
                "enabled must be on, off or default",
                json,
            ));
        }
    };
    let target = match form.get("channel") {
        None => current.as_ref().and_then(|r| r.target.clone()),
        Some(c) if c.trim().is_empty() => None,
        Some(c) => {
            let c = checked(c.trim(), "channel", json)?;
            let t = Target::channel(c);
            if matches!(&t, Target::ChannelName { name } if name.is_empty() || name.contains(char::is_whitespace))
            {
                return Err(AdminError::bad_request(
                    "a channel name cannot be empty or contain spaces",
                    json,
                ));
            }
            Some(t)
        }
    };
    let rule = RouteRule {
        tenant: scope.tenant.clone(),
        route: route.clone(),
        enabled,
        target,
        updated_at: app.sb.now(),
    };
    app.sb
        .set_rule(rule.clone())
        .await
        .map_err(|e| AdminError::from_error(&e, json))?;
    Ok(done(json, &scope.path("rules"), "rule_saved", rule))
}
