//! Message templates (minijinja) with the escaping each target format needs, and the escapers themselves.

use std::borrow::Cow;

use minijinja::{AutoEscape, Environment, Value};
use serde::Serialize;

use crate::Result;
use crate::message::MessageFormat;

/// Escapes text for Slack mrkdwn: `&` → `&amp;`, `<` → `&lt;`, `>` → `&gt;`.
///
/// These are the three characters Slack's docs require escaping; with them
/// escaped, user text can never form a link, a mention or `<!channel>`.
/// ```
/// assert_eq!(switchboard::template::escape_mrkdwn("<!channel> & co"), "&lt;!channel&gt; &amp; co");
/// ```
pub fn escape_mrkdwn(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Reverses [`escape_mrkdwn`] (for reading text Slack sends us).
pub fn unescape_mrkdwn(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
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
    Cow::Owned(out)
}

/// Escapes `text` for `format`.
pub fn escape(format: MessageFormat, text: &str) -> Cow<'_, str> {
    match format {
        MessageFormat::Plain => Cow::Borrowed(text),
        MessageFormat::SlackMrkdwn => escape_mrkdwn(text),
        MessageFormat::Html | MessageFormat::TeamsMarkdown => escape_html(text),
    }
}

fn suffix(format: MessageFormat) -> &'static str {
    match format {
        MessageFormat::Plain => "txt",
        MessageFormat::SlackMrkdwn => "mrkdwn",
        MessageFormat::Html => "html",
        MessageFormat::TeamsMarkdown => "teams",
    }
}

fn format_of(name: &str) -> MessageFormat {
    match name.rsplit('.').next() {
        Some("mrkdwn") => MessageFormat::SlackMrkdwn,
        Some("html") => MessageFormat::Html,
        Some("teams") => MessageFormat::TeamsMarkdown,
        _ => MessageFormat::Plain,
    }
}

/// A set of compiled templates. Literal template text is trusted (it is the
/// host's); every interpolated value is escaped for the template's format unless
/// marked `|safe`.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    /// An empty set.
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|name| match format_of(name) {
            MessageFormat::Plain => AutoEscape::None,
            MessageFormat::Html | MessageFormat::TeamsMarkdown => AutoEscape::Html,
            MessageFormat::SlackMrkdwn => AutoEscape::Custom("mrkdwn"),
        });
        env.set_formatter(|out, state, value| {
            if let AutoEscape::Custom("mrkdwn") = state.auto_escape() {
                if value.is_safe() {
                    return out
                        .write_str(&value.to_string())
                        .map_err(minijinja::Error::from);
                }
                let text = if value.is_none() || value.is_undefined() {
                    String::new()
                } else {
                    value.to_string()
                };
                return out
                    .write_str(&escape_mrkdwn(&text))
                    .map_err(minijinja::Error::from);
            }
            if value.is_none() {
                return Ok(());
            }
            minijinja::escape_formatter(out, state, value)
        });
        Templates { env }
    }

    /// Compiles `source` under `name` for `format`; returns the key to render it by.
    pub fn add(&mut self, name: &str, format: MessageFormat, source: &str) -> Result<String> {
        let key = format!("{name}.{}", suffix(format));
        self.env
            .add_template_owned(key.clone(), source.to_owned())
            .map_err(|e| crate::Error::from(e).context(format!("template {name:?}")))?;
        Ok(key)
    }

    /// True if a template was added under `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.env.get_template(key).is_ok()
    }

    /// Renders the template added under `key` with `context`.
    pub fn render(&self, key: &str, context: &impl Serialize) -> Result<String> {
        self.render_value(key, Value::from_serialize(context))
    }

    /// Renders with a context that is already a template value (e.g. [`EventContext`]).
    pub fn render_value(&self, key: &str, context: Value) -> Result<String> {
        let template = self.env.get_template(key)?;
        Ok(template.render(context)?)
    }
}

/// The template context of an event, converted lazily: only the fields a template
/// reads are converted (`event`, `id`, `kind`, `source`, `data`, `subject`,
/// `actor`, `occurred_at`), so a large payload costs nothing unless used.
#[derive(Debug)]
pub struct EventContext(pub std::sync::Arc<crate::event::Event>);

impl EventContext {
    /// The context as a template value.
    pub fn value(event: std::sync::Arc<crate::event::Event>) -> Value {
        Value::from_object(EventContext(event))
    }
}

impl minijinja::value::Object for EventContext {
    fn get_value(self: &std::sync::Arc<Self>, key: &Value) -> Option<Value> {
        let e = &self.0;
        Some(match key.as_str()? {
            "id" => Value::from(e.id.as_str()),
            "kind" => Value::from(e.kind.as_str()),
            "source" => Value::from(e.source.as_str()),
            "data" => Value::from_serialize(&e.data),
            "subject" => Value::from_serialize(&e.subject),
            "actor" => Value::from_serialize(&e.actor),
            "occurred_at" => Value::from(e.occurred_at.to_rfc3339()),
            "event" => Value::from_dyn_object(self.clone()),
            _ => return None,
        })
    }

    fn enumerate(self: &std::sync::Arc<Self>) -> minijinja::value::Enumerator {
        minijinja::value::Enumerator::Str(&[
            "event",
            "id",
            "kind",
            "source",
            "data",
            "subject",
            "actor",
            "occurred_at",
        ])
    }
}

/// Compiles and renders one template for `format` (convenience for one-offs).
pub fn render_str(source: &str, format: MessageFormat, context: &impl Serialize) -> Result<String> {
    let mut t = Templates::new();
    let key = t.add("inline", format, source)?;
    t.render(&key, context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_per_format() {
        let ctx = serde_json::json!({"name": "<!channel> & <@U123>"});
        let mrkdwn = render_str("*Hi* {{ name }}", MessageFormat::SlackMrkdwn, &ctx).unwrap();
        assert_eq!(mrkdwn, "*Hi* &lt;!channel&gt; &amp; &lt;@U123&gt;");
        let html = render_str("<b>{{ name }}</b>", MessageFormat::Html, &ctx).unwrap();
        assert_eq!(html, "<b>&lt;!channel&gt; &amp; &lt;@U123&gt;</b>");
        let plain = render_str("{{ name }}", MessageFormat::Plain, &ctx).unwrap();
        assert_eq!(plain, "<!channel> & <@U123>");
        let safe = render_str("{{ name|safe }}", MessageFormat::SlackMrkdwn, &ctx).unwrap();
        assert_eq!(safe, "<!channel> & <@U123>");
    }

    #[test]
    fn numbers_and_missing_values() {
        let ctx = serde_json::json!({"data": {"amount": 25.5, "n": null}});
        let s = render_str(
            "{{ data.amount }}|{{ data.n }}|{{ data.missing }}",
            MessageFormat::SlackMrkdwn,
            &ctx,
        )
        .unwrap();
        assert_eq!(s, "25.5||");
    }
}
