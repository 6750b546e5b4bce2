//! Teams outgoing-webhook HMAC (vectors computed independently with openssl), Markdown escaping and the activity parser, with property tests.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use switchboard::ErrorKind;
use switchboard::teams::{
    Activity, escape_markdown, outgoing_webhook_authorization, verify_outgoing_webhook,
};

// `printf '{"type":"message"}' | openssl dgst -sha256 -hmac secret -binary | base64`
const SECRET: &str = "c2VjcmV0"; // base64("secret")
const BODY: &[u8] = br#"{"type":"message"}"#;
const AUTH: &str = "HMAC jEWTK4xlc06+DrS1r4SB0TpbXoqvAKH/7tz/E7o3lpo=";

#[test]
fn the_openssl_vectors_verify() {
    verify_outgoing_webhook(SECRET, AUTH, BODY).unwrap();
    // `printf 'hello teams' | openssl dgst -sha256 -mac HMAC -macopt hexkey:000102…0f -binary | base64`
    verify_outgoing_webhook(
        "AAECAwQFBgcICQoLDA0ODw==",
        "HMAC wk/drhXGM/aNtQbHlcRJ3sOwyLuWdnpN39Bq5LAdK28=",
        b"hello teams",
    )
    .unwrap();
    assert_eq!(outgoing_webhook_authorization(SECRET, BODY).unwrap(), AUTH);
    // Scheme case and surrounding whitespace do not matter.
    verify_outgoing_webhook(SECRET, &format!("  hmac {}  ", &AUTH[5..]), BODY).unwrap();
}

#[test]
fn tampering_and_malformed_headers_are_unauthorized() {
    for auth in [
        "",
        "HMAC",
        "Bearer jEWTK4xlc06+DrS1r4SB0TpbXoqvAKH/7tz/E7o3lpo=",
        "HMAC not-base64!!",
        "HMAC AAAA",
        "HMAC jEWTK4xlc06+DrS1r4SB0TpbXoqvAKH/7tz/E7o3lpp=",
    ] {
        let e = verify_outgoing_webhook(SECRET, auth, BODY).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthorized, "{auth:?}");
    }
    assert!(verify_outgoing_webhook(SECRET, AUTH, br#"{"type":"message "}"#).is_err());
    assert!(verify_outgoing_webhook("c2VjcmV1", AUTH, BODY).is_err());
    assert!(verify_outgoing_webhook("%%%", AUTH, BODY).is_err());
    assert!(verify_outgoing_webhook("", AUTH, BODY).is_err());
}

proptest! {
    #[test]
    fn signed_bodies_verify_and_any_change_fails(
        key in proptest::collection::vec(any::<u8>(), 1..64),
        body in proptest::collection::vec(any::<u8>(), 0..512),
        flip in any::<prop::sample::Index>(),
    ) {
        let secret = STANDARD.encode(&key);
        let auth = outgoing_webhook_authorization(&secret, &body).unwrap();
        prop_assert!(verify_outgoing_webhook(&secret, &auth, &body).is_ok());
        if !body.is_empty() {
            let mut tampered = body.clone();
            let i = flip.index(tampered.len());
            tampered[i] ^= 0x01;
            prop_assert!(verify_outgoing_webhook(&secret, &auth, &tampered).is_err());
        }
        let mut other = key.clone();
        other[0] ^= 0x80;
        prop_assert!(verify_outgoing_webhook(&STANDARD.encode(&other), &auth, &body).is_err());
    }

    #[test]
    fn arbitrary_headers_never_panic(secret in ".{0,64}", auth in ".{0,300}", body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = verify_outgoing_webhook(&secret, &auth, &body);
    }

    #[test]
    fn escaped_text_has_no_live_markdown(text in "\\PC{0,200}") {
        let escaped = escape_markdown(&text);
        let chars: Vec<char> = escaped.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '\\' {
                // Every backslash escapes the next character.
                prop_assert!(i + 1 < chars.len(), "dangling backslash in {escaped:?}");
                i += 2;
                continue;
            }
            prop_assert!(!matches!(c, '[' | ']' | '<' | '>' | '*' | '_' | '`' | '~' | '#'), "unescaped {c:?} in {escaped:?}");
            i += 1;
        }
        prop_assert!(!escaped.contains("://"));
        prop_assert!(!escaped.to_ascii_lowercase().contains("www."));
        // Removing the escapes gives the text back.
        let restored: String = {
            let mut out = String::new();
            let mut it = escaped.chars();
            while let Some(c) = it.next() {
                if c == '\\' { if let Some(n) = it.next() { out.push(n); } } else if c != '\u{200B}' { out.push(c); }
            }
            out
        };
        prop_assert_eq!(restored, text.replace('\u{200B}', ""));
    }

    #[test]
    fn the_activity_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Activity::parse(&body);
    }

    #[test]
    fn parsed_activities_keep_their_fields(kind in "[a-zA-Z]{1,20}", text in "\\PC{0,100}", conv in "[a-z0-9:@.]{1,40}") {
        let body = serde_json::json!({"type": kind, "text": text, "conversation": {"id": conv, "tenantId": "t"}, "serviceUrl": "https://s/"});
        let a = Activity::parse(body.to_string().as_bytes()).unwrap();
        prop_assert_eq!(&a.kind, &kind);
        prop_assert_eq!(a.text.as_deref(), Some(text.as_str()));
        let r = a.conversation_reference().unwrap();
        prop_assert_eq!(r.conversation_id, conv);
    }
}
