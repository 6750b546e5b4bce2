//! Building the outgoing MIME message of a delivery: recipient, subject, HTML and plain-text alternatives, `Message-ID`, `Date` and `List-Unsubscribe` headers.

use std::sync::Arc;
use std::time::SystemTime;

use lettre::message::header::{ContentTransferEncoding, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};

use crate::destination::{Delivery, DeliveryError};
use crate::identity::normalize_email;
use crate::message::{MessageFormat, Target};
use crate::template::escape_html;

/// Picks the `List-Unsubscribe` URL of a delivery (or none).
pub type UnsubscribeFn = Arc<dyn Fn(&Delivery) -> Option<String> + Send + Sync>;

/// The subject used when the route has no title.
pub const DEFAULT_SUBJECT: &str = "Notification";

/// `List-Unsubscribe` (RFC 2369): `<url>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListUnsubscribe(pub String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribe(
            s.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned(),
        ))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), format!("<{}>", self.0))
    }
}

/// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribePost)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_owned())
    }
}

/// The recipient address of a delivery: the `Email` target's address, else the
/// address the identity resolver matched, else the subject's primary email.
pub(crate) fn recipient(delivery: &Delivery) -> Result<String, DeliveryError> {
    let raw = match &delivery.target {
        Target::Email { address } => Some(address.clone()),
        Target::SubjectDm | Target::UserDm { .. } => delivery.recipient.clone().or_else(|| {
            let subject = delivery.event.subject.as_ref()?;
            let same = match &delivery.recipient_user_id {
                Some(id) => *id == subject.id,
                None => matches!(delivery.target, Target::SubjectDm),
            };
            if same {
                subject.primary_email().map(str::to_owned)
            } else {
                None
            }
        }),
        Target::ChannelName { .. } | Target::ChannelId { .. } | Target::Ticket { .. } => {
            return Err(DeliveryError::permanent(
                "the email destination delivers to email addresses and people only; use Target::Email for a list address",
            ));
        }
    };
    let raw = raw.ok_or_else(|| {
        DeliveryError::recipient_unknown("no email address is known for the recipient")
    })?;
    normalize_email(&raw).ok_or_else(|| {
        DeliveryError::recipient_unknown(format!("{raw:?} is not a valid email address"))
    })
}

/// The stable `Message-ID` of a delivery (the same on every retry, so receivers
/// can drop duplicates): `<switchboard.{delivery id}.{hash of event id}@{sender domain}>`.
pub fn message_id(delivery: &Delivery, from: &Mailbox) -> String {
    use sha2::Digest;
    let digest =
        sha2::Sha256::digest(format!("{}\u{0}{}", delivery.tenant, delivery.event.id).as_bytes());
    let short = hex::encode(&digest[..8]);
    format!(
        "<switchboard.{}.{short}@{}>",
        delivery.id,
        from.email.domain()
    )
}

/// Makes the HTML and plain-text bodies of a delivery's rendered message.
///
/// HTML messages (the destination renders templates as
/// [`MessageFormat::Html`], so interpolated values are already escaped) get a
/// plain alternative converted from the HTML; plain messages get an HTML
/// alternative with the text escaped and line breaks kept.
pub fn bodies(text: &str, format: MessageFormat) -> (String, String) {
    match format {
        MessageFormat::Html | MessageFormat::TeamsMarkdown => {
            let plain = mail_parser::decoders::html::html_to_text(text);
            (html_document(text), plain)
        }
        MessageFormat::Plain | MessageFormat::SlackMrkdwn => {
            let escaped = escape_html(text).replace('\n', "<br>\n");
            (html_document(&escaped), text.to_owned())
        }
    }
}

fn html_document(body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body>\n{body}\n</body></html>\n"
    )
}

/// Builds the message of one delivery.
pub(crate) fn build(
    delivery: &Delivery,
    from: &Mailbox,
    reply_to: Option<&Mailbox>,
    unsubscribe: Option<String>,
) -> Result<(lettre::Message, String, String), DeliveryError> {
    let to_addr = recipient(delivery)?;
    let to: Mailbox = to_addr.parse().map_err(|_| {
        DeliveryError::recipient_unknown(format!("{to_addr:?} is not a valid email address"))
    })?;
    let subject = delivery
        .message
        .title
        .as_deref()
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| DEFAULT_SUBJECT.to_owned());
    let id = message_id(delivery, from);
    let mut builder = lettre::Message::builder()
        .from(from.clone())
        .to(to)
        .subject(subject)
        .message_id(Some(id.clone()))
        .date(SystemTime::now());
    if let Some(r) = reply_to {
        builder = builder.reply_to(r.clone());
    }
    if let Some(url) = unsubscribe.filter(|u| valid_unsubscribe_url(u)) {
        let one_click = url.starts_with("https://");
        builder = builder.header(ListUnsubscribe(url));
        if one_click {
            builder = builder.header(ListUnsubscribePost);
        }
    }
    let (html, plain) = bodies(&delivery.message.text, delivery.message.format);
    let multipart = MultiPart::alternative()
        .singlepart(
            SinglePart::builder()
                .header(lettre::message::header::ContentType::TEXT_PLAIN)
                .header(ContentTransferEncoding::QuotedPrintable)
                .body(plain),
        )
        .singlepart(
            SinglePart::builder()
                .header(lettre::message::header::ContentType::TEXT_HTML)
                .header(ContentTransferEncoding::QuotedPrintable)
                .body(html),
        );
    let message = builder
        .multipart(multipart)
        .map_err(|e| DeliveryError::permanent(format!("could not build the email: {e}")))?;
    Ok((message, id, to_addr))
}

/// An unsubscribe URL must be `https:`, `http:` or `mailto:` and free of
/// characters that could break out of the header's angle brackets.
fn valid_unsubscribe_url(url: &str) -> bool {
    let ok_scheme =
        url.starts_with("https://") || url.starts_with("http://") || url.starts_with("mailto:");
    ok_scheme
        && url.len() <= 2048
        && !url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
}

/// The default unsubscribe URL: the event's `data.unsubscribe_url`, if a string.
pub(crate) fn default_unsubscribe(delivery: &Delivery) -> Option<String> {
    delivery
        .event
        .data
        .get("unsubscribe_url")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
}
