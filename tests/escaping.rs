//! Property tests for the output escapers.

use proptest::prelude::*;
use switchboard::template::{escape_html, escape_mrkdwn, unescape_mrkdwn};

proptest! {
    #[test]
    fn mrkdwn_escape_leaves_no_control_characters(s in any::<String>()) {
        let e = escape_mrkdwn(&s);
        prop_assert!(!e.contains('<') && !e.contains('>'));
        // Every & starts one of the three entities.
        for (i, _) in e.match_indices('&') {
            let rest = &e[i..];
            prop_assert!(rest.starts_with("&amp;") || rest.starts_with("&lt;") || rest.starts_with("&gt;"));
        }
        let back = unescape_mrkdwn(&e).into_owned();
        prop_assert_eq!(back, s);
    }

    #[test]
    fn mrkdwn_escape_is_identity_on_safe_text(s in "[^&<>]*") {
        let same = escape_mrkdwn(&s).into_owned();
        prop_assert_eq!(same, s);
    }

    #[test]
    fn html_escape_leaves_no_markup(s in any::<String>()) {
        let e = escape_html(&s);
        prop_assert!(!e.contains(['<', '>', '"', '\'']));
    }

    #[test]
    fn user_text_in_a_template_never_yields_a_mention(s in ".*") {
        let out = switchboard::template::render_str(
            "Hello {{ name }}",
            switchboard::MessageFormat::SlackMrkdwn,
            &serde_json::json!({"name": s}),
        ).unwrap();
        prop_assert!(!out.contains("<!") && !out.contains("<@") && !out.contains("<#"));
    }
}
