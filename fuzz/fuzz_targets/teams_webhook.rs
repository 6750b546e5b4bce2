//! Fuzzes `switchboard::teams::verify_outgoing_webhook` with arbitrary headers and bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Split the input into secret, Authorization header and body.
    let mut parts = data.splitn(3, |b| *b == 0);
    let secret = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let auth = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();
    let _ = switchboard::teams::verify_outgoing_webhook(&secret, &auth, body);
    let _ = switchboard::teams::verify_outgoing_webhook("c2VjcmV0", &auth, body);
    if let Ok(a) = switchboard::teams::outgoing_webhook_authorization("c2VjcmV0", body) {
        assert!(switchboard::teams::verify_outgoing_webhook("c2VjcmV0", &a, body).is_ok());
    }
});
