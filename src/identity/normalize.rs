//! Normalisation of emails (trim, lower-case, validate) and phone numbers (E.164 via `phonenumber`).

use serde::{Deserialize, Serialize};

/// Trims, lower-cases and validates an email address; `None` if it is not one.
///
/// Accepts an address optionally wrapped in `<…>` or prefixed with `mailto:`.
/// The domain is a host name (letters, digits and inner hyphens per label, at
/// least two labels; internationalised letters allowed); invisible characters
/// (zero-width spaces and joiners, BOMs, bidirectional marks, soft hyphens) are
/// rejected anywhere rather than silently kept.
/// ```
/// use switchboard::identity::normalize_email;
/// assert_eq!(normalize_email("  Ada@Example.COM "), Some("ada@example.com".into()));
/// assert_eq!(normalize_email("not an email"), None);
/// ```
pub fn normalize_email(raw: &str) -> Option<String> {
    let mut s = raw.trim();
    if let Some(rest) = s.strip_prefix("mailto:") {
        s = rest.trim();
    }
    if let Some(inner) = s.strip_prefix('<').and_then(|r| r.strip_suffix('>')) {
        s = inner.trim();
    }
    if s.is_empty() || s.len() > 254 {
        return None;
    }
    let (local, domain) = s.rsplit_once('@')?;
    if local.is_empty() || local.len() > 64 || domain.is_empty() {
        return None;
    }
    let bad = |c: char| {
        c.is_whitespace()
            || c.is_control()
            || is_invisible(c)
            || matches!(
                c,
                '<' | '>' | '(' | ')' | ',' | ';' | ':' | '\\' | '"' | '[' | ']'
            )
    };
    if local.chars().any(bad) || local.contains('@') || domain.chars().any(bad) {
        return None;
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return None;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2
        || labels
            .iter()
            .any(|l| l.is_empty() || l.len() > 63 || l.starts_with('-') || l.ends_with('-'))
        || !domain
            .chars()
            .all(|c| c == '.' || c == '-' || c.is_alphanumeric())
    {
        return None;
    }
    Some(s.to_lowercase())
}

/// Format characters that render as nothing (Unicode category Cf and friends).
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}'
            | '\u{034f}'
            | '\u{061c}'
            | '\u{115f}'
            | '\u{1160}'
            | '\u{17b4}'
            | '\u{17b5}'
            | '\u{180b}'..='\u{180f}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{3164}'
            | '\u{fe00}'..='\u{fe0f}'
            | '\u{feff}'
            | '\u{ffa0}'
            | '\u{fff0}'..='\u{fff8}'
            | '\u{e0000}'..='\u{e0fff}'
    )
}

/// A parsed phone number: E.164 plus the extension that was dropped from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneNumber {
    /// `+` and digits, e.g. `+4930123456`.
    pub e164: String,
    /// The extension, if the raw number had one (`x123`, `ext. 123`).
    pub extension: Option<String>,
}

/// Parses a phone number in any common format to E.164, keeping the extension aside.
///
/// `default_region` is the ISO 3166-1 alpha-2 country used for numbers written
/// without a country code (national format, or an international call prefix such
/// as `00` in Germany or `011` in the US). Returns `None` for anything that is not
/// a valid number: never a guess.
pub fn parse_phone(raw: &str, default_region: &str) -> Option<PhoneNumber> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 64 {
        return None;
    }
    let region = default_region
        .trim()
        .to_ascii_uppercase()
        .parse::<phonenumber::country::Id>()
        .ok();
    if region.is_none() && !raw.starts_with('+') {
        return None;
    }
    // "+49 (0)30 …": the bracketed trunk prefix is dialled only nationally and must
    // be dropped from an international number.
    let cleaned;
    let raw = if raw.starts_with('+') && raw.contains("(0)") {
        cleaned = raw.replacen("(0)", "", 1);
        cleaned.as_str()
    } else {
        raw
    };
    let number = phonenumber::parse(region, raw).ok()?;
    if !phonenumber::is_valid(&number) {
        return None;
    }
    let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
    let extension = number.extension().map(|e| e.to_string());
    Some(PhoneNumber { e164, extension })
}

/// Normalises a phone number to E.164 (`("030 123456", "DE")` → `+4930123456`);
/// `None` if it is not a valid number. Extensions are dropped (see [`parse_phone`]).
pub fn normalize_phone(raw: &str, default_region: &str) -> Option<String> {
    parse_phone(raw, default_region).map(|p| p.e164)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_in_common_formats() {
        assert_eq!(
            normalize_phone("030 123456", "DE").as_deref(),
            Some("+4930123456")
        );
        assert_eq!(
            normalize_phone("+49 (0)30 123456", "US").as_deref(),
            Some("+4930123456")
        );
        assert_eq!(
            normalize_phone("0049 30 123456", "DE").as_deref(),
            Some("+4930123456")
        );
        assert_eq!(
            normalize_phone("011 49 30 123456", "US").as_deref(),
            Some("+4930123456")
        );
        assert_eq!(
            normalize_phone("(415) 555-2671", "US").as_deref(),
            Some("+14155552671")
        );
        let p = parse_phone("+1 415-555-2671 ext. 123", "US").expect("valid");
        assert_eq!(p.e164, "+14155552671");
        assert_eq!(p.extension.as_deref(), Some("123"));
        assert_eq!(normalize_phone("12", "DE"), None);
        assert_eq!(normalize_phone("hello", "DE"), None);
        assert_eq!(normalize_phone("030 123456", "ZZ"), None);
    }

    #[test]
    fn emails() {
        assert_eq!(normalize_email("<Bob@X.io>").as_deref(), Some("bob@x.io"));
        assert_eq!(normalize_email("a@b"), None);
        assert_eq!(normalize_email("a b@c.de"), None);
        assert_eq!(normalize_email("@c.de"), None);
        assert_eq!(normalize_email("a@exa_mple.com"), None);
        assert_eq!(normalize_email("a\u{200b}@example.com"), None);
        assert_eq!(normalize_email("a@example.com\u{feff}"), None);
        assert_eq!(normalize_email("a@ex!ample.com"), None);
        assert_eq!(
            normalize_email("Ada@Bücher.de").as_deref(),
            Some("ada@bücher.de")
        );
    }
}
