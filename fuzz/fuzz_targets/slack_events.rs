//! Fuzzes Events API bodies (`EventsRequest::parse`) and Socket Mode frames (`SocketMessage::parse`, the envelope's rebuilt HTTP body and its acknowledgement): none may panic on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::slack::{EventsRequest, SocketMessage};

fuzz_target!(|data: &[u8]| {
    if let Ok(EventsRequest::EventCallback(cb)) = EventsRequest::parse(data) {
        assert!(!cb.event_id.is_empty());
        let _ = cb.workspace();
        let _ = cb.event.kind();
    }
    if let Ok(SocketMessage::Envelope(envelope)) = SocketMessage::parse(data) {
        assert!(!envelope.envelope_id.is_empty());
        let body = envelope.http_body();
        let _ = EventsRequest::parse(&body);
        let ack: serde_json::Value =
            serde_json::from_str(&envelope.ack(Some(serde_json::json!({})))).unwrap_or_default();
        assert_eq!(ack["envelope_id"], serde_json::json!(envelope.envelope_id));
    }
});
