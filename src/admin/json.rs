//! Content negotiation (`Accept: application/json` gets the page's data as JSON), the console's error type and its responses.

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Serialize;

use crate::{Error, ErrorKind};

/// Whether the client asked for JSON.
pub(crate) fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json"))
}

/// An error answered as JSON (`{"error": …, "status": …}`) or as a small page.
#[derive(Debug)]
pub(crate) struct AdminError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) json: bool,
}

impl AdminError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>, json: bool) -> Self {
        AdminError {
            status,
            message: message.into(),
            json,
        }
    }
    pub(crate) fn not_found(json: bool) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not found", json)
    }
    pub(crate) fn bad_request(message: impl Into<String>, json: bool) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, json)
    }
    /// Maps a library error: lookups that fail are 404, bad input 400,
    /// conflicts 409; anything else is logged and answered without details.
    pub(crate) fn from_error(e: &Error, json: bool) -> Self {
        match e.kind() {
            ErrorKind::NotFound => Self::not_found(json),
            ErrorKind::InvalidInput | ErrorKind::Config => {
                Self::bad_request(e.message().to_owned(), json)
            }
            ErrorKind::Conflict => Self::new(StatusCode::CONFLICT, e.message().to_owned(), json),
            _ => {
                tracing::error!(error = %e, "admin console request failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "something went wrong; see the server log",
                    json,
                )
            }
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    status: u16,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        if self.json {
            let body = ErrorBody {
                error: &self.message,
                status: self.status.as_u16(),
            };
            return (self.status, Json(body)).into_response();
        }
        let title = self.status.canonical_reason().unwrap_or("Error");
        let page = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title></head>\
             <body><main><h1>{t}</h1><p class=\"error\">{m}</p></main></body></html>",
            t = escape(title),
            m = escape(&self.message)
        );
        (self.status, Html(page)).into_response()
    }
}

/// Escapes text for HTML.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// The result of a POST: JSON `{"ok": true, "notice": …, "data": …}`, or a
/// redirect (303) back to `back` with the notice.
pub(crate) fn done<T: Serialize>(json: bool, back: &str, notice: &str, data: T) -> Response {
    if json {
        return Json(serde_json::json!({ "ok": true, "notice": notice, "data": data }))
            .into_response();
    }
    let sep = if back.contains('?') { '&' } else { '?' };
    let url = format!(
        "{back}{sep}notice={}",
        url::form_urlencoded::byte_serialize(notice.as_bytes()).collect::<String>()
    );
    Redirect::to(&url).into_response()
}
