//! Fuzzes the Zendesk webhook path: signature verification on arbitrary headers and bodies, and the payload parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::zendesk::{parse_webhook, verify_webhook};

fuzz_target!(|data: &[u8]| {
    // Layout: [split byte][timestamp | signature | body]
    if let Some((&split, rest)) = data.split_first() {
        let cut = (split as usize).min(rest.len());
        let (head, body) = rest.split_at(cut);
        let head = String::from_utf8_lossy(head);
        let (ts, sig) = head.split_once('|').unwrap_or((&head, ""));
        let _ = verify_webhook("fuzz-secret", ts, body, sig, 1_700_000_000);
        if let Ok(p) = parse_webhook(body) {
            assert!(p.kind.starts_with("zendesk."));
        }
    }
    let _ = parse_webhook(data);
});
