//! Fuzzes the Teams activity parser and what the inbound handler derives from an activity.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::teams::{Activity, escape_markdown, html_to_text};

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = Activity::parse(data) {
        let _ = a.conversation_reference();
        let _ = a.bot_added();
        let _ = a.bot_removed();
        let _ = a.text_without_mentions();
        let _ = a.tenant_id();
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = html_to_text(s);
        let _ = escape_markdown(s);
    }
});
