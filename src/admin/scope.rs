//! Tenant scoping from the request: the host's session function, the `{tenant}` path segment checked against the session's tenants, and the CSRF check of POSTs.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, OriginalUri, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;

use super::App;
use super::config::AdminSession;
use super::csrf;
use super::json::{AdminError, wants_json};
use crate::tenant::TenantId;

/// The header a non-browser client may send the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The signed-in admin (any route).
pub(crate) struct Session {
    pub(crate) session: AdminSession,
    pub(crate) json: bool,
    pub(crate) csrf: String,
    /// Where the console is mounted (`/admin`; empty at the root).
    pub(crate) base: String,
}

/// The signed-in admin looking at one of their tenants (every `/{tenant}/…` route).
pub(crate) struct Scope {
    pub(crate) session: AdminSession,
    pub(crate) tenant: TenantId,
    pub(crate) json: bool,
    pub(crate) csrf: String,
    /// Where the console is mounted (`/admin`; empty at the root).
    pub(crate) base: String,
    csrf_header: Option<String>,
    key: [u8; 32],
}

impl Scope {
    /// Checks the CSRF token of a state change (form field `csrf` or the
    /// `X-CSRF-Token` header).
    pub(crate) fn check_csrf(&self, form: &HashMap<String, String>) -> Result<(), AdminError> {
        let presented = form
            .get("csrf")
            .map(String::as_str)
            .or(self.csrf_header.as_deref())
            .unwrap_or("");
        if csrf::verify(&self.key, &self.session.id, presented) {
            Ok(())
        } else {
            Err(AdminError::new(
                StatusCode::FORBIDDEN,
                "the form's security token is missing or invalid; reload the page and try again",
                self.json,
            ))
        }
    }

    /// The absolute path of a page of this tenant.
    pub(crate) fn path(&self, rest: &str) -> String {
        tenant_path(&self.base, &self.tenant, rest)
    }
}

/// `{base}/{tenant}/{rest}` with the tenant percent-encoded.
pub(crate) fn tenant_path(base: &str, tenant: &TenantId, rest: &str) -> String {
    format!("{base}/{}/{rest}", segment(tenant.as_str()))
}

/// Percent-encodes one path segment (everything but unreserved characters).
pub(crate) fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where the console is mounted: the original path minus the path the nested
/// router sees.
fn base_of(parts: &Parts) -> String {
    let inner = parts.uri.path();
    let original = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(inner, |o| o.0.path());
    if inner == "/" {
        return original.trim_end_matches('/').to_owned();
    }
    original
        .strip_suffix(inner)
        .unwrap_or("")
        .trim_end_matches('/')
        .to_owned()
}

fn session_of(parts: &Parts, app: &App) -> Result<Session, AdminError> {
    let json = wants_json(&parts.headers);
    let Some(session) = (app.cfg.session)(parts) else {
        return Err(AdminError::new(
            StatusCode::UNAUTHORIZED,
            "sign in to see this page",
            json,
        ));
    };
    let csrf = csrf::token(&app.cfg.csrf_key, &session.id);
    Ok(Session {
        session,
        json,
        csrf,
        base: base_of(parts),
    })
}

impl FromRequestParts<App> for Session {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        session_of(parts, app)
    }
}

impl FromRequestParts<App> for Scope {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let Session {
            session,
            json,
            csrf,
            base,
        } = session_of(parts, app)?;
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, app)
            .await
            .map_err(|_| AdminError::not_found(json))?;
        let tenant = params
            .get("tenant")
            .and_then(|t| TenantId::new(t).ok())
            .ok_or_else(|| AdminError::not_found(json))?;
        if !session.may_see(&tenant) {
            return Err(AdminError::new(
                StatusCode::FORBIDDEN,
                "you are not an admin of this organisation",
                json,
            ));
        }
        let csrf_header = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Scope {
            session,
            tenant,
            json,
            csrf,
            base,
            csrf_header,
            key: app.cfg.csrf_key,
        })
    }
}
