//! Property tests: the inbound parsers never panic.

use proptest::prelude::*;
use switchboard::slack::{
    BlockAction, EnvelopeKind, EventsRequest, Interaction, OptionsRequest, SlashCommand,
    SocketMessage, ViewEventKind, ViewInteraction,
};

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-z_]{0,12}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("view_submission"),
            Just("message_action"),
            Just("shortcut"),
            Just("event_callback"),
            Just("url_verification"),
            Just("tokens_revoked"),
            Just("block_actions"),
            Just("view_closed"),
            Just("block_suggestion"),
            Just("events_api"),
            Just("slash_commands"),
            Just("interactive"),
            Just("hello"),
            Just("disconnect"),
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("view".to_owned()),
                    Just("state".to_owned()),
                    Just("values".to_owned()),
                    Just("user".to_owned()),
                    Just("event".to_owned()),
                    Just("event_id".to_owned()),
                    Just("tokens".to_owned()),
                    Just("channel".to_owned()),
                    Just("message".to_owned()),
                    Just("actions".to_owned()),
                    Just("envelope_id".to_owned()),
                    Just("payload".to_owned()),
                    Just("reason".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = SlashCommand::parse(&body);
        let _ = Interaction::parse(&body);
        let _ = EventsRequest::parse(&body);
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_json(v in json_value()) {
        let text = v.to_string();
        let _ = EventsRequest::parse(text.as_bytes());
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &text)
            .finish();
        let _ = Interaction::parse(form.as_bytes());
        let _ = Interaction::from_json(v);
    }

    #[test]
    fn interaction_parsers_never_panic_and_agree_on_the_type(v in json_value()) {
        let _ = BlockAction::parse_all(&v);
        let kind = v.get("type").and_then(|t| t.as_str()).map(str::to_owned);
        let view = ViewInteraction::parse(v.clone());
        match kind.as_deref() {
            Some("view_submission") => prop_assert_eq!(view.map(|i| i.kind), Some(ViewEventKind::Submission)),
            Some("view_closed") => prop_assert_eq!(view.map(|i| i.kind), Some(ViewEventKind::Closed)),
            _ => prop_assert!(view.is_none()),
        }
        let options = OptionsRequest::parse(v);
        prop_assert_eq!(options.is_some(), kind.as_deref() == Some("block_suggestion"));
    }

    #[test]
    fn socket_frames_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), v in json_value()) {
        let _ = SocketMessage::parse(&body);
        if let Ok(SocketMessage::Envelope(e)) = SocketMessage::parse(v.to_string().as_bytes()) {
            prop_assert!(!e.envelope_id.is_empty());
            let _ = e.http_body();
            let ack: serde_json::Value = serde_json::from_str(&e.ack(None)).unwrap();
            prop_assert_eq!(ack, serde_json::json!({ "envelope_id": e.envelope_id }));
        }
    }

    #[test]
    fn socket_slash_commands_reach_the_form_parser_unchanged(
        id in "[a-f0-9-]{1,36}",
        command in "/[a-z]{1,10}",
        text in any::<String>(),
        user in "U[A-Z0-9]{1,10}",
        accepts in any::<bool>(),
    ) {
        let frame = serde_json::json!({
            "envelope_id": id,
            "type": "slash_commands",
            "accepts_response_payload": accepts,
            "payload": { "command": command, "text": text, "user_id": user, "is_enterprise_install": "false" },
        });
        let Ok(SocketMessage::Envelope(e)) = SocketMessage::parse(frame.to_string().as_bytes()) else {
            panic!("not an envelope");
        };
        prop_assert_eq!(&e.kind, &EnvelopeKind::SlashCommands);
        let cmd = SlashCommand::parse(&e.http_body()).unwrap();
        prop_assert_eq!(cmd.command, command);
        prop_assert_eq!(cmd.text, text);
        prop_assert_eq!(cmd.user_id, user);
        let ack: serde_json::Value = serde_json::from_str(&e.ack(Some(serde_json::json!({"text": "x"})))).unwrap();
        prop_assert_eq!(ack.get("payload").is_some(), accepts);
    }

    #[test]
    fn socket_interactive_payloads_reach_the_interaction_parser_unchanged(v in json_value()) {
        let frame = serde_json::json!({ "envelope_id": "e1", "type": "interactive", "payload": v });
        let Ok(SocketMessage::Envelope(e)) = SocketMessage::parse(frame.to_string().as_bytes()) else {
            panic!("not an envelope");
        };
        prop_assert_eq!(Interaction::parse_value(&e.http_body()), Some(v));
    }
}
