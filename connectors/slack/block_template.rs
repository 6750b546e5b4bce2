//! Templates producing Block Kit: a minijinja template renders a JSON blocks array (values escaped for mrkdwn and for JSON strings), validated into the typed builders or rejected with a typed error.

use std::collections::HashMap;

use minijinja::{AutoEscape, Environment};
use serde_json::Value;

use super::blocks::{Block, Button, ButtonStyle, Text};
use super::layout::MAX_BLOCKS;
use crate::template::{EventContext, escape_mrkdwn};
use crate::{Error, ErrorKind, Result};

const ESCAPE: &str = "slack-block-json";
const NAME: &str = "blocks";

fn rejected(why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Template,
        format!("the Slack block template's output was rejected: {why}"),
    )
}

/// A JSON string's content (without its quotes).
fn json_string_body(text: &str) -> String {
    let quoted = Value::String(text.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

/// A template rendering a Block Kit `blocks` array, for routes whose Slack
/// messages need more than text ([`super::SlackDestination::with_block_template`]).
///
/// The template is JSON with minijinja expressions inside strings, with the
/// route's context (`event`, `kind`, `data`, `subject`, `actor`, …). Every
/// interpolated value is escaped for mrkdwn (`&`, `<`, `>`) and for a JSON
/// string, so user text can neither break the JSON nor form a link or
/// mention; `|safe` or `|tojson` output is inserted as it is. The result
/// must be an array of the blocks [`Block`] models (`section`, `header`,
/// `context`, `divider`, `actions` with buttons, at most 50); it is parsed
/// into them and sent as they serialize (mrkdwn always `verbatim: true`).
/// Anything else is an [`ErrorKind::Template`] error naming what is wrong.
///
/// ```
/// use switchboard::slack::BlockTemplate;
/// let t = BlockTemplate::new(r#"[
///   {"type": "header", "text": {"type": "plain_text", "text": "Perk redeemed"}},
///   {"type": "section", "text": {"type": "mrkdwn", "text": "*{{ data.perk }}* for {{ data.name }}"}}
/// ]"#).unwrap();
/// let blocks = t.render(&serde_json::json!({"data": {"perk": "Yoga", "name": "<!channel>"}})).unwrap();
/// assert_eq!(blocks[1].to_json()["text"]["text"], "*Yoga* for &lt;!channel&gt;");
/// ```
pub struct BlockTemplate {
    env: Environment<'static>,
}

impl std::fmt::Debug for BlockTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockTemplate").finish_non_exhaustive()
    }
}

impl BlockTemplate {
    /// Compiles `source`; a syntax error is an [`ErrorKind::Template`] error.
    pub fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::Custom(ESCAPE));
        env.set_formatter(|out, _state, value| {
            let text = if value.is_none() || value.is_undefined() {
                String::new()
            } else {
                value.to_string()
            };
            let escaped = if value.is_safe() {
                text
            } else {
                json_string_body(&escape_mrkdwn(&text))
            };
            out.write_str(&escaped).map_err(minijinja::Error::from)
        });
        env.add_template_owned(NAME, source.to_owned())
            .map_err(|e| Error::from(e).context("Slack block template"))?;
        Ok(BlockTemplate { env })
    }

    /// Renders with `context` and validates the blocks.
    pub fn render(&self, context: &impl serde::Serialize) -> Result<Vec<Block>> {
        self.render_value(minijinja::Value::from_serialize(context))
    }

    /// Renders for an event (the context routes' templates get).
    pub fn render_event(&self, event: std::sync::Arc<crate::event::Event>) -> Result<Vec<Block>> {
        self.render_value(EventContext::value(event))
    }

    fn render_value(&self, context: minijinja::Value) -> Result<Vec<Block>> {
        let rendered = self.env.get_template(NAME)?.render(context)?;
        let value: Value = serde_json::from_str(&rendered)
            .map_err(|e| rejected(format!("it is not JSON ({e})")))?;
        parse_blocks(&value)
    }
}

/// Validates a Block Kit `blocks` array (or `{"blocks": [...]}`) into the
/// typed [`Block`]s; anything they do not model is an
/// [`ErrorKind::Template`] error naming the block.
pub fn parse_blocks(value: &Value) -> Result<Vec<Block>> {
    let list = match value {
        Value::Array(list) => list,
        Value::Object(o) => match o.get("blocks") {
            Some(Value::Array(list)) => list,
            _ => return Err(rejected("expected an array of blocks")),
        },
        _ => return Err(rejected("expected an array of blocks")),
    };
    if list.is_empty() {
        return Err(rejected("there are no blocks"));
    }
    if list.len() > MAX_BLOCKS {
        return Err(rejected(format!(
            "{} blocks, Slack takes at most {MAX_BLOCKS}",
            list.len()
        )));
    }
    list.iter()
        .enumerate()
        .map(|(i, b)| parse_block(b).map_err(|why| rejected(format!("block {i}: {why}"))))
        .collect()
}

fn str_field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn parse_text(v: Option<&Value>) -> std::result::Result<Text, String> {
    let v = v.ok_or("a text object is missing")?;
    let text = str_field(v, "text").ok_or("a text object has no text")?;
    if text.trim().is_empty() {
        return Err("a text object is empty".into());
    }
    match str_field(v, "type") {
        Some("mrkdwn") => Ok(Text::mrkdwn(text)),
        Some("plain_text") => Ok(Text::plain(text)),
        other => Err(format!(
            "text type {other:?} is neither mrkdwn nor plain_text"
        )),
    }
}

fn parse_button(v: &Value) -> std::result::Result<Button, String> {
    if str_field(v, "type") != Some("button") {
        return Err("only button elements are supported".into());
    }
    let action_id = str_field(v, "action_id").ok_or("a button has no action_id")?;
    let label = match parse_text(v.get("text"))? {
        Text::Plain(t) => t,
        Text::Mrkdwn(_) => return Err("a button's text must be plain_text".into()),
    };
    let mut b = Button::new(action_id, label);
    if let Some(x) = str_field(v, "value") {
        b = b.value(x);
    }
    if let Some(x) = str_field(v, "url") {
        b = b.url(x);
    }
    match str_field(v, "style") {
        None => {}
        Some("primary") => b = b.style(ButtonStyle::Primary),
        Some("danger") => b = b.style(ButtonStyle::Danger),
        Some(other) => return Err(format!("button style {other:?} is unknown")),
    }
    Ok(b)
}

fn parse_block(v: &Value) -> std::result::Result<Block, String> {
    let block_id = str_field(v, "block_id").map(str::to_owned);
    match str_field(v, "type") {
        Some("section") => Ok(Block::Section {
            text: parse_text(v.get("text"))?,
            block_id,
            accessory: v.get("accessory").map(parse_button).transpose()?,
        }),
        Some("header") => match parse_text(v.get("text"))? {
            Text::Plain(text) => Ok(Block::Header { text }),
            Text::Mrkdwn(_) => Err("a header's text must be plain_text".into()),
        },
        Some("context") => {
            let elements = v
                .get("elements")
                .and_then(Value::as_array)
                .ok_or("a context block has no elements")?
                .iter()
                .map(|e| parse_text(Some(e)))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            if elements.is_empty() {
                return Err("a context block has no elements".into());
            }
            Ok(Block::Context { elements })
        }
        Some("divider") => Ok(Block::Divider),
        Some("actions") => {
            let elements = v
                .get("elements")
                .and_then(Value::as_array)
                .ok_or("an actions block has no elements")?
                .iter()
                .map(parse_button)
                .collect::<std::result::Result<Vec<_>, _>>()?;
            if elements.is_empty() {
                return Err("an actions block has no elements".into());
            }
            Ok(Block::Actions { block_id, elements })
        }
        Some(other) => Err(format!("block type {other:?} is not supported")),
        None => Err("a block has no type".into()),
    }
}

/// Block templates by route name.
pub(super) type BlockTemplates = HashMap<String, std::sync::Arc<BlockTemplate>>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_text_cannot_break_the_json_or_form_mentions() {
        let t = BlockTemplate::new(
            r#"[{"type":"section","text":{"type":"mrkdwn","text":"Hi {{ name }}"}}]"#,
        )
        .unwrap();
        let b = t
            .render(&json!({"name": "\"}]},{\"type\":\"divider\" <@U1> & <!here>\n"}))
            .unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(
            b[0].to_json()["text"],
            json!({"type": "mrkdwn", "verbatim": true, "text": "Hi \"}]},{\"type\":\"divider\" &lt;@U1&gt; &amp; &lt;!here&gt;\n"})
        );
    }

    #[test]
    fn unsupported_output_is_a_template_error() {
        for source in [
            "not json",
            "{}",
            "[]",
            r#"[{"type":"image","image_url":"x"}]"#,
            r#"[{"type":"header","text":{"type":"mrkdwn","text":"x"}}]"#,
            r#"[{"type":"actions","elements":[{"type":"button","text":{"type":"plain_text","text":"x"}}]}]"#,
        ] {
            let e = BlockTemplate::new(source)
                .unwrap()
                .render(&json!({}))
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Template, "{source}");
        }
        assert_eq!(
            BlockTemplate::new("{{ unclosed").unwrap_err().kind(),
            ErrorKind::Template
        );
    }
}
