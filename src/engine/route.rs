//! Routes: which event kinds go to which destination and target, with which template.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::message::Target;

/// A kind pattern: exact (`wallet.funded`), prefix wildcard (`wallet.*`) or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
}

impl Pattern {
    pub(crate) fn parse(s: &str) -> Pattern {
        let s = s.trim();
        if s == "*" {
            Pattern::Any
        } else if let Some(prefix) = s.strip_suffix('*') {
            Pattern::Prefix(prefix.to_owned())
        } else {
            Pattern::Exact(s.to_owned())
        }
    }

    pub(crate) fn matches(&self, kind: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(k) => k == kind,
            Pattern::Prefix(p) => kind.starts_with(p.as_str()),
        }
    }
}

/// A rule: events whose kind matches go to a destination's target, rendered with a template.
///
/// ```
/// use switchboard::{Route, Target};
/// let r = Route::on("wallet.*").to("slack", Target::SubjectDm).template("Your wallet: {{ kind }}");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Route {
    pub(crate) name: Option<String>,
    pub(crate) pattern: String,
    pub(crate) destination: String,
    pub(crate) target: Target,
    pub(crate) template: String,
    pub(crate) title: Option<String>,
    pub(crate) enabled: bool,
}

impl Route {
    /// Starts a route for kinds matching `pattern` (`wallet.funded`, `wallet.*`, `*`).
    pub fn on(pattern: impl Into<String>) -> Self {
        Route {
            name: None,
            pattern: pattern.into(),
            destination: String::new(),
            target: Target::SubjectDm,
            template: "{{ kind }}".to_owned(),
            title: None,
            enabled: true,
        }
    }
    /// Sends to `target` on the destination named `destination`.
    pub fn to(mut self, destination: impl Into<String>, target: Target) -> Self {
        self.destination = destination.into();
        self.target = target;
        self
    }
    /// The body template (minijinja). The context has `event`, `kind`, `data`,
    /// `subject` and `actor`; values are escaped for the destination's format.
    pub fn template(mut self, source: impl Into<String>) -> Self {
        self.template = source.into();
        self
    }
    /// A title / email-subject template.
    pub fn title(mut self, source: impl Into<String>) -> Self {
        self.title = Some(source.into());
        self
    }
    /// Names the route (default `"<pattern> -> <destination>"`); names must be unique.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Starts the route switched off.
    pub fn disabled(mut self) -> Self {
        self.enabled = false;
        self
    }

    pub(crate) fn resolved_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{} -> {}", self.pattern, self.destination))
    }
}

/// A compiled route inside the engine.
pub(crate) struct CompiledRoute {
    pub(crate) name: String,
    pub(crate) pattern_text: String,
    pub(crate) pattern: Pattern,
    pub(crate) destination: String,
    pub(crate) target: Target,
    pub(crate) text_key: String,
    pub(crate) title_key: Option<String>,
    pub(crate) enabled: Arc<AtomicBool>,
}

impl CompiledRoute {
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }
}

/// A route as listed by [`crate::Switchboard::routes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteInfo {
    /// The route's name.
    pub name: String,
    /// The kind pattern.
    pub pattern: String,
    /// The destination's name.
    pub destination: String,
    /// Where it goes.
    pub target: Target,
    /// Whether it is switched on.
    pub enabled: bool,
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    #[test]
    fn patterns() {
        assert!(Pattern::parse("wallet.*").matches("wallet.funded"));
        assert!(!Pattern::parse("wallet.*").matches("walletx"));
        assert!(!Pattern::parse("wallet.*").matches("perk.redeemed"));
        assert!(Pattern::parse("wallet.funded").matches("wallet.funded"));
        assert!(!Pattern::parse("wallet.funded").matches("wallet.funded.x"));
        assert!(Pattern::parse("*").matches("anything"));
    }
}
