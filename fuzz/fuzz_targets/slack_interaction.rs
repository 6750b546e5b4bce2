//! Fuzzes the interaction payload parsers (block_actions, view_submission, view_closed, block_suggestion, shortcuts and message shortcuts), from the `payload=` form and from JSON: none may panic on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::slack::{BlockAction, Interaction, OptionsRequest, ViewInteraction};

fn all(v: serde_json::Value) {
    let _ = BlockAction::parse_all(&v);
    let _ = ViewInteraction::parse(v.clone());
    let _ = OptionsRequest::parse(v.clone());
    if let Ok(i) = Interaction::from_json(v) {
        let _ = format!("{i:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = Interaction::parse(data);
    if let Some(v) = Interaction::parse_value(data) {
        all(v);
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        all(v);
    }
});
