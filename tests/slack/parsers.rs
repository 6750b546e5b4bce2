//! Property tests: the inbound parsers never panic.

use proptest::prelude::*;
use switchboard::slack::{EventsRequest, Interaction, SlashCommand};

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
}
