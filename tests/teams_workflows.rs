//! The Workflows (Power Automate) webhook destination against wiremock: the Adaptive Card payload posted to the workflow URL, per-tenant URLs from connections, and the documented failures.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Value, json};
use switchboard::teams::{TeamsMessage, WorkflowsDestination, workflows_payload};
use switchboard::{
    Connection, Delivery, DeliveryError, Destination, Event, Message, MessageFormat, Target,
    TenantId,
};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn message() -> Message {
    Message {
        text: "New perk: Yoga [free](https://evil.example)".to_owned(),
        title: Some("Perks".to_owned()),
        format: MessageFormat::Plain,
    }
}

fn delivery(connection: Option<Arc<Connection>>, target: Target) -> Delivery {
    let event = Event::builder("e1", "catalog.perk_added").build().unwrap();
    Delivery {
        id: 1,
        tenant: connection
            .as_ref()
            .map_or_else(TenantId::default_tenant, |c| c.tenant.clone()),
        connection,
        event: Arc::new(event),
        route: "r".to_owned(),
        target,
        recipient: None,
        recipient_user_id: None,
        message: message(),
        attempt: 1,
    }
}

fn expected_body() -> Value {
    let card = TeamsMessage::from_message(&message()).card;
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }]
    })
}

#[test]
fn the_payload_is_one_adaptive_card_in_attachments() {
    let body = workflows_payload(&TeamsMessage::from_message(&message()));
    assert_eq!(body["type"], "message");
    let a = &body["attachments"][0];
    assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
    assert!(a["contentUrl"].is_null());
    assert_eq!(a["content"]["type"], "AdaptiveCard");
    assert_eq!(a["content"]["version"], "1.5");
    // User text stays literal in the card's Markdown: no link can form.
    let text = a["content"]["body"][1]["text"].as_str().unwrap();
    assert!(text.contains(r"\[free\]"), "{text}");
    assert!(!text.contains("https://"), "{text}");
}

#[tokio::test]
async fn a_channel_post_is_the_card_posted_to_the_workflow_url() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/workflows/abc/triggers/manual/paths/invoke"))
        .and(query_param("sig", "s1gn"))
        .and(header("content-type", "application/json"))
        .and(body_json(expected_body()))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    let url = format!(
        "{}/workflows/abc/triggers/manual/paths/invoke?api-version=1&sig=s1gn",
        server.uri()
    );
    let dest = WorkflowsDestination::new()
        .unwrap()
        .channel("#General", SecretString::from(url.clone()))
        .unwrap();
    assert!(dest.has_fixed_credentials());
    assert!(!format!("{dest:?}").contains("s1gn"));
    let receipt = dest
        .deliver(&delivery(None, Target::channel("general")))
        .await
        .unwrap();
    assert_eq!(receipt.location.as_deref(), Some("general"));
    // DMs are not a Workflows target; unknown channels are permanent.
    let dm = dest.deliver(&delivery(None, Target::SubjectDm)).await;
    assert!(matches!(dm, Err(DeliveryError::Permanent { .. })));
    let other = dest
        .deliver(&delivery(None, Target::channel("random")))
        .await;
    assert!(matches!(other, Err(DeliveryError::Permanent { .. })));
}

#[tokio::test]
async fn each_tenant_posts_to_its_own_connections_url_and_failures_are_classified() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/acme"))
        .and(body_json(expected_body()))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/throttled"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "7"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/revoked"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": {"code": "DirectApiAuthorizationRequired", "message": "The request needs to be authorized."}
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/deleted"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "error": {"code": "WorkflowNotFound", "message": "The workflow could not be found."}
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/flaky"))
        .respond_with(ResponseTemplate::new(502))
        .mount(&server)
        .await;
    let conn = |tenant: &str, channel: &str, url_path: &str| {
        Arc::new(
            Connection::builder(TenantId::new(tenant).unwrap(), "teams_workflows", tenant)
                .secret(
                    format!("webhook:{channel}"),
                    SecretString::from(format!("{}{url_path}", server.uri())),
                )
                .build()
                .unwrap(),
        )
    };
    let dest = WorkflowsDestination::new().unwrap();
    assert!(!dest.has_fixed_credentials());
    assert_eq!(dest.platform(), Some("teams_workflows"));
    dest.deliver(&delivery(
        Some(conn("acme", "perks", "/acme")),
        Target::channel("Perks"),
    ))
    .await
    .unwrap();
    match dest
        .deliver(&delivery(
            Some(conn("t2", "perks", "/throttled")),
            Target::channel("perks"),
        ))
        .await
    {
        Err(DeliveryError::RateLimited { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    let revoked = dest
        .deliver(&delivery(
            Some(conn("t3", "perks", "/revoked")),
            Target::channel("perks"),
        ))
        .await;
    assert!(
        matches!(revoked, Err(DeliveryError::Disconnected { .. })),
        "{revoked:?}"
    );
    let deleted = dest
        .deliver(&delivery(
            Some(conn("t4", "perks", "/deleted")),
            Target::channel("perks"),
        ))
        .await;
    match deleted {
        Err(DeliveryError::Permanent { reason }) => assert!(reason.contains("deleted"), "{reason}"),
        other => panic!("expected Permanent, got {other:?}"),
    }
    let flaky = dest
        .deliver(&delivery(
            Some(conn("t5", "perks", "/flaky")),
            Target::channel("perks"),
        ))
        .await;
    assert!(
        matches!(flaky, Err(DeliveryError::Temporary { .. })),
        "{flaky:?}"
    );
    // A tenant with a connection but no URL for that channel.
    let missing = dest
        .deliver(&delivery(
            Some(conn("t6", "other", "/acme")),
            Target::channel("perks"),
        ))
        .await;
    assert!(matches!(missing, Err(DeliveryError::Permanent { .. })));
    // No connection and no fixed URLs: parked, never dropped.
    let none = dest
        .deliver(&delivery(None, Target::channel("perks")))
        .await;
    assert!(matches!(none, Err(DeliveryError::Disconnected { .. })));
}

#[test]
fn urls_must_be_http_urls() {
    assert!(
        WorkflowsDestination::new()
            .unwrap()
            .channel("x", SecretString::from("not a url"))
            .is_err()
    );
}
