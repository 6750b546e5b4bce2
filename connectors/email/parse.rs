//! Parsing inbound MIME mail into an [`InboundEmail`]: decoded headers, normalised addresses, the text (or the HTML turned into text), the forwarded thread, attachments counted and dropped.

use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

use chrono::{FixedOffset, TimeZone};
use mail_parser::{Address, Message, MessageParser, PartType};
use serde::Serialize;

use crate::identity::normalize_email;
use crate::{Error, ErrorKind, Result};

/// The largest message [`InboundEmail::parse`] accepts (25 MiB, a common
/// provider limit for a whole message including attachments).
pub const MAX_MESSAGE_BYTES: usize = 25 * 1024 * 1024;

/// How deep nested forwarded messages (`message/rfc822` parts) are followed.
pub const MAX_FORWARD_DEPTH: usize = 8;

/// The parser, configured once: only the headers [`InboundEmail`] reads (the
/// MIME headers, `From`, `To`, `Cc`, `Reply-To`, `Bcc`, `Subject`, `Date`,
/// `Message-ID`) are parsed; every other header (`Received`, `DKIM-Signature`,
/// `X-…`) is skipped without building a value. DKIM and DMARC verification
/// reads the raw bytes separately.
static PARSER: LazyLock<MessageParser> = LazyLock::new(|| {
    MessageParser::new()
        .with_minimal_headers()
        .header_id(mail_parser::HeaderName::MessageId)
        .default_header_ignore()
});

/// One mailbox of an address header: the decoded display name and the
/// normalised address (trimmed, lower-cased, validated by
/// [`crate::identity::normalize_email`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmailAddress {
    /// The display name, RFC 2047 encoded words decoded; `None` when absent.
    pub name: Option<String>,
    /// The normalised address.
    pub email: String,
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} <{}>", self.email),
            None => f.write_str(&self.email),
        }
    }
}

/// The header summary of a message forwarded inside the inbound one (an attached
/// `message/rfc822`, as Outlook and Apple Mail send "forward as attachment").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForwardedMessage {
    /// `Message-ID` without angle brackets.
    pub message_id: Option<String>,
    /// The decoded subject.
    pub subject: Option<String>,
    /// The first `From` mailbox.
    pub from: Option<EmailAddress>,
    /// `To` mailboxes, groups flattened.
    pub to: Vec<EmailAddress>,
    /// `Cc` mailboxes, groups flattened.
    pub cc: Vec<EmailAddress>,
    /// `Date` as RFC 3339.
    pub date: Option<String>,
}

/// A parsed inbound email, ready to become a captured item.
///
/// Serialises with exactly the fields `message_id`, `subject`, `from`, `to`,
/// `cc`, `date` (RFC 3339), `text` and `attachments_ignored`.
///
/// ```
/// use switchboard::email::InboundEmail;
/// let raw = b"From: =?UTF-8?Q?Ad=C3=A1?= <Ada@Example.com>\r\n\
/// To: team: bob@example.com, carol@example.com;\r\n\
/// Subject: =?UTF-8?B?SGVsbG8=?=\r\n\
/// Date: Fri, 21 Nov 1997 09:55:06 -0600\r\n\
/// Message-ID: <1234@local.machine.example>\r\n\
/// \r\n\
/// Hi there\r\n";
/// let mail = InboundEmail::parse(raw).unwrap();
/// assert_eq!(mail.from.as_ref().unwrap().email, "ada@example.com");
/// assert_eq!(mail.from.as_ref().unwrap().name.as_deref(), Some("Adá"));
/// assert_eq!(mail.to.len(), 2);
/// assert_eq!(mail.subject.as_deref(), Some("Hello"));
/// assert_eq!(mail.date.as_deref(), Some("1997-11-21T09:55:06-06:00"));
/// assert_eq!(mail.text.trim(), "Hi there");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InboundEmail {
    /// `Message-ID` without angle brackets.
    pub message_id: Option<String>,
    /// The decoded subject.
    pub subject: Option<String>,
    /// The first `From` mailbox (the author).
    pub from: Option<EmailAddress>,
    /// `To` mailboxes, groups flattened, invalid addresses dropped.
    pub to: Vec<EmailAddress>,
    /// `Cc` mailboxes, groups flattened, invalid addresses dropped.
    pub cc: Vec<EmailAddress>,
    /// `Date` as RFC 3339 with the message's own offset; `None` when absent or invalid.
    pub date: Option<String>,
    /// The plain text: every inline text part in order (an HTML part converted
    /// to text where the message has no plain alternative), followed by the text
    /// of attached forwarded messages, each under a header block.
    pub text: String,
    /// How many attachments were dropped (never stored).
    pub attachments_ignored: usize,
    /// Forwarded messages: `message/rfc822` attachments and the header blocks
    /// of inline forwards in the text (not serialised).
    #[serde(skip)]
    pub forwarded: Vec<ForwardedMessage>,
}

impl InboundEmail {
    /// Parses a raw RFC 5322 / MIME message.
    ///
    /// Errors (never panics): [`ErrorKind::InvalidInput`] for empty input, input
    /// that has no header section, or a message without a valid `From` address;
    /// [`ErrorKind::PayloadTooLarge`] above [`MAX_MESSAGE_BYTES`].
    pub fn parse(raw: &[u8]) -> Result<InboundEmail> {
        if raw.len() > MAX_MESSAGE_BYTES {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "the email is {} bytes; at most {MAX_MESSAGE_BYTES} are accepted",
                    raw.len()
                ),
            ));
        }
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::new(ErrorKind::InvalidInput, "the email is empty"));
        }
        let message = PARSER
            .parse(raw)
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "the input is not an email"))?;
        if message.headers().is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "the input is not an email: it has no header fields",
            ));
        }
        let from = message.from().and_then(first_address).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                "the email has no valid From address",
            )
        })?;
        let mut out = InboundEmail {
            message_id: clean_message_id(message.message_id()),
            subject: message.subject().map(clean_header_text),
            from: Some(from),
            to: addresses(message.to()),
            cc: addresses(message.cc()),
            date: message.date().and_then(rfc3339),
            text: String::new(),
            attachments_ignored: 0,
            forwarded: Vec::new(),
        };
        let mut text = String::new();
        collect(&message, 0, &mut text, &mut out);
        out.text = text;
        Ok(out)
    }

    /// Every distinct address named in `From`, `To` and `Cc` of this message and
    /// of the messages forwarded inside it, in order of appearance.
    pub fn participants(&self) -> Vec<EmailAddress> {
        let mut seen: Vec<EmailAddress> = Vec::new();
        let mut add = |a: &EmailAddress| {
            if !seen.iter().any(|s| s.email == a.email) {
                seen.push(a.clone());
            }
        };
        for a in self.from.iter().chain(&self.to).chain(&self.cc) {
            add(a);
        }
        for f in &self.forwarded {
            for a in f.from.iter().chain(&f.to).chain(&f.cc) {
                add(a);
            }
        }
        seen
    }
}

/// Appends the text of `message` (and of forwarded messages inside it) and
/// counts its attachments.
fn collect(message: &Message<'_>, depth: usize, text: &mut String, out: &mut InboundEmail) {
    let mut bodies = 0usize;
    for part in message.text_bodies() {
        let body: Option<Cow<'_, str>> = match &part.body {
            PartType::Text(t) => Some(Cow::Borrowed(t.as_ref())),
            PartType::Html(h) => Some(Cow::Owned(mail_parser::decoders::html::html_to_text(h))),
            _ => None,
        };
        if let Some(body) = body {
            if bodies > 0 && !text.ends_with('\n') {
                text.push('\n');
            }
            // Appended with newlines normalised in place, then scanned there:
            // no copy of the body of its own.
            let start = text.len();
            push_normalised(text, &body);
            inline_forwards(&text[start..], &mut out.forwarded);
            bodies += 1;
        }
    }
    for part in message.attachments() {
        match &part.body {
            PartType::Message(inner) if depth < MAX_FORWARD_DEPTH => {
                let forwarded = ForwardedMessage {
                    message_id: clean_message_id(inner.message_id()),
                    subject: inner.subject().map(clean_header_text),
                    from: inner.from().and_then(first_address),
                    to: addresses(inner.to()),
                    cc: addresses(inner.cc()),
                    date: inner.date().and_then(rfc3339),
                };
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str("\n---------- Forwarded message ----------\n");
                if let Some(f) = &forwarded.from {
                    text.push_str(&format!("From: {f}\n"));
                }
                if let Some(d) = &forwarded.date {
                    text.push_str(&format!("Date: {d}\n"));
                }
                if let Some(s) = &forwarded.subject {
                    text.push_str(&format!("Subject: {s}\n"));
                }
                if !forwarded.to.is_empty() {
                    text.push_str(&format!("To: {}\n", join(&forwarded.to)));
                }
                if !forwarded.cc.is_empty() {
                    text.push_str(&format!("Cc: {}\n", join(&forwarded.cc)));
                }
                text.push('\n');
                out.forwarded.push(forwarded);
                collect(inner, depth + 1, text, out);
            }
            _ => {
                // Inline images referenced from the HTML are attachments too:
                // never stored, counted.
                out.attachments_ignored += 1;
            }
        }
    }
}

/// At most this many inline-forwarded header blocks are read per message.
const MAX_INLINE_FORWARDS: usize = 32;

/// True for the line a mail client writes above an inline-forwarded or quoted
/// message: Gmail's `---------- Forwarded message ---------`, Apple Mail's
/// `Begin forwarded message:`, Outlook's `-----Original Message-----` or its
/// underscore rule.
fn is_forward_marker(line: &str) -> bool {
    let t = unquote(line);
    // Cheap first-byte test: almost every line of a body is not a marker, and
    // this runs on every line.
    match t.as_bytes().first() {
        Some(b'-') => {
            t.starts_with("-----")
                && (contains_ignore_ascii_case(t, "forwarded message")
                    || contains_ignore_ascii_case(t, "original message"))
        }
        Some(b'B' | b'b') => t.eq_ignore_ascii_case("begin forwarded message:"),
        Some(b'_') => t.len() >= 16 && t.bytes().all(|b| b == b'_'),
        _ => false,
    }
}

/// ASCII case-insensitive substring test, without allocating.
fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// A line without its `>` quoting and surrounding blanks.
fn unquote(line: &str) -> &str {
    line.trim_start_matches(['>', ' ', '\t']).trim()
}

/// Reads the header block under each inline-forward marker in `body` (`From:`,
/// `To:`, `Cc:`, `Date:`/`Sent:`, `Subject:` lines, as Gmail, Outlook and Apple
/// Mail write them) into `out`, so the forwarded message's people become
/// participants.
fn inline_forwards(body: &str, out: &mut Vec<ForwardedMessage>) {
    let mut lines = body.lines().peekable();
    let mut found = 0usize;
    while let Some(line) = lines.next() {
        if found >= MAX_INLINE_FORWARDS {
            break;
        }
        if !is_forward_marker(line) {
            continue;
        }
        while lines.peek().is_some_and(|l| unquote(l).is_empty()) {
            lines.next();
        }
        let mut block = String::new();
        while let Some(l) = lines.peek() {
            let t = unquote(l).trim_start_matches('*');
            let Some((name, value)) = t.split_once(':') else {
                break;
            };
            let header = match name
                .trim_end_matches('*')
                .trim()
                .to_ascii_lowercase()
                .as_str()
            {
                "from" => "From",
                "to" => "To",
                "cc" => "Cc",
                "date" | "sent" => "Date",
                "subject" => "Subject",
                _ => break,
            };
            block.push_str(header);
            block.push_str(": ");
            block.push_str(value.trim_start_matches('*').trim());
            block.push_str("\r\n");
            lines.next();
        }
        if block.is_empty() {
            continue;
        }
        block.push_str("\r\n");
        let Some(m) = PARSER.parse(block.as_bytes()) else {
            continue;
        };
        let forwarded = ForwardedMessage {
            message_id: None,
            subject: m.subject().map(clean_header_text),
            from: m.from().and_then(first_address),
            to: addresses(m.to()),
            cc: addresses(m.cc()),
            date: m.date().and_then(rfc3339),
        };
        if forwarded.from.is_some() || !forwarded.to.is_empty() || !forwarded.cc.is_empty() {
            out.push(forwarded);
            found += 1;
        }
    }
}

fn join(list: &[EmailAddress]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Appends `s` to `out` with CRLF and lone CR as LF, in one pass.
fn push_normalised(out: &mut String, s: &str) {
    out.reserve(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\r') {
        out.push_str(&rest[..i]);
        out.push('\n');
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('\n') {
            rest = r;
        }
    }
    out.push_str(rest);
}

/// Unfolds and trims a decoded header text; control characters become spaces.
fn clean_header_text(s: &str) -> String {
    // Most header texts are already clean: one copy, no rebuilding.
    let mut prev_space = true;
    let mut clean = true;
    for c in s.chars() {
        if c.is_control() || (c.is_whitespace() && (c != ' ' || prev_space)) {
            clean = false;
            break;
        }
        prev_space = c == ' ';
    }
    if clean && !prev_space {
        return s.to_owned();
    }
    let cleaned: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn clean_message_id(id: Option<&str>) -> Option<String> {
    let id = id?
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    if id.is_empty() || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        None
    } else {
        Some(id.to_owned())
    }
}

fn to_address(addr: &mail_parser::Addr<'_>) -> Option<EmailAddress> {
    let email = normalize_email(addr.address.as_deref()?)?;
    let name = addr
        .name
        .as_deref()
        .map(clean_header_text)
        .filter(|n| !n.is_empty() && *n != email);
    Some(EmailAddress { name, email })
}

fn first_address(address: &Address<'_>) -> Option<EmailAddress> {
    address.iter().find_map(to_address)
}

/// Every valid mailbox of an address header, groups flattened, duplicates once.
fn addresses(address: Option<&Address<'_>>) -> Vec<EmailAddress> {
    let mut out: Vec<EmailAddress> = Vec::new();
    if let Some(address) = address {
        for a in address.iter().filter_map(to_address) {
            if !out.iter().any(|o| o.email == a.email) {
                out.push(a);
            }
        }
    }
    out
}

/// RFC 3339 with the message's own offset, or `None` for an impossible date.
fn rfc3339(date: &mail_parser::DateTime) -> Option<String> {
    if !date.is_valid() {
        return None;
    }
    let offset_secs = (i32::from(date.tz_hour) * 3600) + (i32::from(date.tz_minute) * 60);
    let offset = if date.tz_before_gmt {
        FixedOffset::west_opt(offset_secs)?
    } else {
        FixedOffset::east_opt(offset_secs)?
    };
    let local = offset
        .with_ymd_and_hms(
            i32::from(date.year),
            u32::from(date.month),
            u32::from(date.day),
            u32::from(date.hour),
            u32::from(date.minute),
            u32::from(date.second),
        )
        .single()?;
    Some(local.to_rfc3339())
}
