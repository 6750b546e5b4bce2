//! Fuzzes `InboundEmail::parse`: any bytes give a message or a typed error, never a panic, and every address that comes out is normalised.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::email::InboundEmail;

fuzz_target!(|data: &[u8]| {
    if let Ok(mail) = InboundEmail::parse(data) {
        for a in mail.from.iter().chain(&mail.to).chain(&mail.cc) {
            assert_eq!(
                switchboard::identity::normalize_email(&a.email).as_deref(),
                Some(a.email.as_str())
            );
        }
        let _ = serde_json::to_string(&mail);
        let _ = mail.participants();
    }
});
