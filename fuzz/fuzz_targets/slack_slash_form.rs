//! Fuzzes the slash-command form parser (`SlashCommand::parse`) and the Socket Mode form it is rebuilt from: no bytes may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::slack::{SlashCommand, SocketMessage};

fuzz_target!(|data: &[u8]| {
    if let Ok(cmd) = SlashCommand::parse(data) {
        let _ = cmd.args();
        let _ = cmd.channel();
        let _ = format!("{cmd:?}");
    }
    // The same bytes as a Socket Mode slash_commands payload (a JSON object of
    // the form's fields), rebuilt into the form the HTTP handler parses.
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice::<serde_json::Value>(data)
    {
        let frame = serde_json::json!({
            "envelope_id": "e",
            "type": "slash_commands",
            "accepts_response_payload": true,
            "payload": fields,
        });
        if let Ok(SocketMessage::Envelope(envelope)) =
            SocketMessage::parse(frame.to_string().as_bytes())
        {
            let _ = SlashCommand::parse(&envelope.http_body());
        }
    }
});
