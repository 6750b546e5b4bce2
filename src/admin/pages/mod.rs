//! The console's pages, one file each, and the template environment they render with.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::json::AdminError;

pub(crate) mod connections;
pub(crate) mod dead_letters;
pub(crate) mod deliveries;
pub(crate) mod integrations;
pub(crate) mod mapping;
pub(crate) mod overview;
pub(crate) mod rules;

/// Query parameters of a GET.
pub(crate) type Params = HashMap<String, String>;

/// The templates, compiled into the binary; `.html` templates auto-escape.
pub(crate) fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    let templates: [(&str, &str); 11] = [
        ("base.html", include_str!("../templates/base.html")),
        ("index.html", include_str!("../templates/index.html")),
        ("overview.html", include_str!("../templates/overview.html")),
        (
            "connections.html",
            include_str!("../templates/connections.html"),
        ),
        ("rules.html", include_str!("../templates/rules.html")),
        ("mapping.html", include_str!("../templates/mapping.html")),
        (
            "deliveries.html",
            include_str!("../templates/deliveries.html"),
        ),
        (
            "deliveries_detail.html",
            include_str!("../templates/deliveries_detail.html"),
        ),
        (
            "dead-letters.html",
            include_str!("../templates/dead-letters.html"),
        ),
        (
            "integrations.html",
            include_str!("../templates/integrations.html"),
        ),
        (
            "integrations_detail.html",
            include_str!("../templates/integrations_detail.html"),
        ),
    ];
    for (name, source) in templates {
        if let Err(e) = env.add_template(name, source) {
            // A template that does not compile is a bug caught by the tests;
            // the page using it answers 500.
            tracing::error!(template = name, error = %e, "admin template does not compile");
        }
    }
    env.add_filter("when", when);
    env
}

/// Formats an RFC 3339 time as `2025-03-01 10:30 UTC` (other text unchanged).
fn when(value: String) -> String {
    DateTime::parse_from_rfc3339(&value)
        .map(|t| {
            t.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()
        })
        .unwrap_or(value)
}

/// A form field, trimmed; empty counts as absent.
pub(crate) fn field<'a>(form: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    form.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// A required, reasonably short form field without control characters.
pub(crate) fn required<'a>(
    form: &'a HashMap<String, String>,
    name: &str,
    json: bool,
) -> Result<&'a str, AdminError> {
    let v = field(form, name)
        .ok_or_else(|| AdminError::bad_request(format!("{name} is required"), json))?;
    checked(v, name, json)
}

/// Rejects over-long values and control characters.
pub(crate) fn checked<'a>(v: &'a str, name: &str, json: bool) -> Result<&'a str, AdminError> {
    if v.len() > 500 || v.chars().any(char::is_control) {
        return Err(AdminError::bad_request(
            format!("{name} is too long or contains control characters"),
            json,
        ));
    }
    Ok(v)
}

/// A target as an admin reads it.
pub(crate) fn target_text(target: &crate::message::Target) -> String {
    use crate::message::Target;
    match target {
        Target::SubjectDm => "the person's direct messages".to_owned(),
        Target::UserDm { user_id } => format!("direct messages of {user_id}"),
        Target::ChannelName { name } => format!("#{name}"),
        Target::ChannelId { id } => format!("channel {id}"),
        Target::Email { address } => address.clone(),
        Target::Ticket { id: Some(id) } => format!("ticket {id}"),
        Target::Ticket { id: None } => "a new ticket".to_owned(),
    }
}
