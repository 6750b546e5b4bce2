//! Fuzzes Slack's inbound parsers (slash command forms, interaction payloads, Events API bodies) and the signature check: none may panic on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::slack::{BlockAction, EventsRequest, Interaction, SlashCommand, verify_signature};

fuzz_target!(|data: &[u8]| {
    let _ = SlashCommand::parse(data);
    let _ = Interaction::parse(data);
    let _ = EventsRequest::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let mut parts = text.splitn(3, '\n');
        let (ts, sig, body) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let _ = verify_signature(
            "8f742231b10e8888abcd99yyyzzz85a5",
            ts,
            body.as_bytes(),
            sig,
            1_531_420_618,
        );
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = BlockAction::parse_all(&v);
        let _ = Interaction::from_json(v);
    }
});
