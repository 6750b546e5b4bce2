//! Capture tests: forwarding addresses (issue, resolve, reset, tenants), DKIM-signed mail verified against records the test supplies, forged senders, forged Authentication-Results, and the published `insight.captured` event.

use std::sync::Arc;

use base64::Engine;
use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use switchboard::email::{
    AddressRejection, Authenticator, CaptureOutcome, DnsRecords, EmailCapture, ForwardingAddresses,
    MemoryAddressRegistry, MemoryDirectory, Rejection,
};
use switchboard::{Person, TenantId};

const DOMAIN: &str = "in.switchboard.test";

fn tenant(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn addresses() -> ForwardingAddresses {
    ForwardingAddresses::new(DOMAIN, Arc::new(MemoryAddressRegistry::new())).unwrap()
}

#[tokio::test]
async fn addresses_issue_resolve_reset_and_never_collide_across_tenants() {
    let a = addresses();
    let acme = tenant("acme");
    let globex = tenant("globex");
    let first = a.address_for(&acme, "u1").await.unwrap();
    assert!(first.ends_with("@in.switchboard.test"));
    assert_eq!(first.split('@').next().unwrap().len(), 26, "128-bit token");
    assert_eq!(a.address_for(&acme, "u1").await.unwrap(), first);
    let other = a.address_for(&globex, "u1").await.unwrap();
    assert_ne!(first, other, "same user id in two tenants: two addresses");
    let r = a.resolve(&first.to_uppercase()).await.unwrap().unwrap();
    assert_eq!((r.tenant.as_str(), r.person_id.as_str()), ("acme", "u1"));
    assert_eq!(
        a.resolve(&other).await.unwrap().unwrap().tenant.as_str(),
        "globex"
    );
    let second = a.reset(&acme, "u1").await.unwrap();
    assert_ne!(second, first);
    assert_eq!(
        a.resolve(&first).await.unwrap(),
        Err(AddressRejection::RevokedAddress)
    );
    assert_eq!(a.address_for(&acme, "u1").await.unwrap(), second);
    let unknown = format!("{}@{DOMAIN}", "a".repeat(26));
    assert_eq!(
        a.resolve(&unknown).await.unwrap(),
        Err(AddressRejection::UnknownAddress)
    );
    assert_eq!(
        a.resolve("someone@elsewhere.test").await.unwrap(),
        Err(AddressRejection::NotForwardingAddress)
    );
    let mut seen = std::collections::HashSet::new();
    for i in 0..200 {
        assert!(seen.insert(a.address_for(&acme, &format!("p{i}")).await.unwrap()));
    }
}

#[tokio::test]
async fn plus_addressing() {
    let a = addresses().plus_addressing("inbox").unwrap();
    let addr = a.address_for(&tenant("acme"), "u1").await.unwrap();
    assert!(addr.starts_with("inbox+"), "{addr}");
    assert_eq!(a.resolve(&addr).await.unwrap().unwrap().person_id, "u1");
}

struct Fixture {
    capture: EmailCapture,
    to: String,
    key_der: Vec<u8>,
}

async fn fixture(authenticator: impl FnOnce(String) -> Authenticator) -> Fixture {
    let key_der = Ed25519Key::generate_pkcs8().unwrap();
    let key = Ed25519Key::from_pkcs8_der(&key_der).unwrap();
    let public = base64::engine::general_purpose::STANDARD.encode(key.public_key());
    let a = addresses();
    let acme = tenant("acme");
    let to = a.address_for(&acme, "u1").await.unwrap();
    let directory = MemoryDirectory::new();
    directory.add(&acme, Person::new("u1").email("ada@acme.test"));
    directory.add(&acme, Person::new("u2").email("bob@acme.test"));
    let dkim_record = format!("v=DKIM1; k=ed25519; p={public}");
    let capture = EmailCapture::new(a, Arc::new(directory), authenticator(dkim_record));
    Fixture {
        capture,
        to,
        key_der,
    }
}

fn offline(dkim_record: String) -> Authenticator {
    Authenticator::offline(
        DnsRecords::new()
            .txt("s1._domainkey.acme.test", &dkim_record)
            .unwrap()
            .txt("_dmarc.acme.test", "v=DMARC1; p=reject")
            .unwrap()
            .txt("_dmarc.evil.test", "v=DMARC1; p=none")
            .unwrap(),
    )
    .unwrap()
}

fn message(from: &str, to: &str, body: &str) -> String {
    format!(
        "From: Ada <{from}>\r\nTo: {to}\r\nSubject: Fwd: Feedback\r\nDate: Tue, 4 Mar 2025 09:12:44 +0100\r\nMessage-ID: <m1@acme.test>\r\n\r\n{body}\r\n---------- Forwarded message ---------\r\nFrom: Bob <bob@acme.test>\r\nCc: carol@customer.test\r\n\r\nThe import is slow.\r\n"
    )
}

fn sign(f: &Fixture, domain: &str, raw: &str) -> String {
    let key = Ed25519Key::from_pkcs8_der(&f.key_der).unwrap();
    let signature = DkimSigner::from_key(key)
        .domain(domain)
        .selector("s1")
        .headers(["From", "To", "Subject", "Date", "Message-ID"])
        .sign(raw.as_bytes())
        .unwrap();
    format!("{}{raw}", signature.to_header())
}

#[tokio::test]
async fn a_dkim_signed_forward_is_captured_with_participants() {
    let f = fixture(offline).await;
    let raw = sign(
        &f,
        "acme.test",
        &message("ada@acme.test", &f.to, "Worth a look."),
    );
    let outcome = f.capture.process(raw.as_bytes(), &[], None).await.unwrap();
    let CaptureOutcome::Accepted { event } = outcome else {
        panic!("expected acceptance, got {outcome:?}");
    };
    assert_eq!(event.kind, "insight.captured");
    assert_eq!(event.source, "email");
    assert_eq!(event.tenant.as_str(), "acme");
    assert_eq!(event.subject.as_ref().unwrap().id, "u1");
    assert_eq!(event.data["status"], "pending");
    assert_eq!(event.data["subject"], "Fwd: Feedback");
    assert_eq!(event.data["date"], "2025-03-04T09:12:44+01:00");
    assert!(
        event.data["text"]
            .as_str()
            .unwrap()
            .contains("The import is slow.")
    );
    assert_eq!(event.data["authentication"]["method"], "dmarc");
    assert_eq!(event.data["authentication"]["dkim"], true);
    assert_eq!(event.id, "email:acme:u1:m1@acme.test");
    // The forwarding address and the sender are not participants; the people
    // of the inline-forwarded message are.
    assert_eq!(
        event.data["participants"],
        serde_json::json!([
            { "email": "bob@acme.test", "name": "Bob", "user_id": "u2", "matched": true },
            { "email": "carol@customer.test", "name": null, "user_id": null, "matched": false },
        ])
    );
}

#[tokio::test]
async fn a_changed_body_fails_dkim_and_is_rejected() {
    let f = fixture(offline).await;
    let raw = sign(
        &f,
        "acme.test",
        &message("ada@acme.test", &f.to, "Worth a look."),
    );
    let tampered = raw.replace("Worth a look.", "Wire me money.");
    let outcome = f
        .capture
        .process(tampered.as_bytes(), &[], None)
        .await
        .unwrap();
    assert!(
        matches!(
            &outcome,
            CaptureOutcome::Rejected {
                rejection: Rejection::NotAuthentic { .. }
            }
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn an_unsigned_message_is_rejected() {
    let f = fixture(offline).await;
    let raw = message("ada@acme.test", &f.to, "hi");
    let outcome = f.capture.process(raw.as_bytes(), &[], None).await.unwrap();
    assert!(
        matches!(
            &outcome,
            CaptureOutcome::Rejected {
                rejection: Rejection::NotAuthentic { .. }
            }
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_from_forged_to_the_persons_address_signed_by_another_domain_is_rejected() {
    let f = fixture(offline).await;
    // Signed, validly, by evil.test — but From claims acme.test: not aligned.
    let raw = sign(&f, "evil.test", &message("ada@acme.test", &f.to, "hi"));
    let outcome = f.capture.process(raw.as_bytes(), &[], None).await.unwrap();
    assert!(
        matches!(
            &outcome,
            CaptureOutcome::Rejected {
                rejection: Rejection::NotAuthentic { .. }
            }
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_sender_who_is_not_the_person_is_rejected() {
    let f = fixture(offline).await;
    let raw = sign(&f, "acme.test", &message("bob@acme.test", &f.to, "hi"));
    let outcome = f.capture.process(raw.as_bytes(), &[], None).await.unwrap();
    assert_eq!(
        outcome,
        CaptureOutcome::Rejected {
            rejection: Rejection::SenderNotLinked {
                sender: "bob@acme.test".into()
            }
        }
    );
}

#[tokio::test]
async fn reset_and_unknown_addresses_are_rejected() {
    let f = fixture(offline).await;
    f.capture
        .addresses()
        .reset(&tenant("acme"), "u1")
        .await
        .unwrap();
    let raw = sign(&f, "acme.test", &message("ada@acme.test", &f.to, "hi"));
    let outcome = f.capture.process(raw.as_bytes(), &[], None).await.unwrap();
    assert_eq!(
        outcome,
        CaptureOutcome::Rejected {
            rejection: Rejection::RevokedAddress
        }
    );
    let raw = message("ada@acme.test", "someone@else.test", "hi");
    let outcome = f.capture.process(raw.as_bytes(), &[], None).await.unwrap();
    assert_eq!(
        outcome,
        CaptureOutcome::Rejected {
            rejection: Rejection::NotAddressed
        }
    );
    let outcome = f.capture.process(b"garbage", &[], None).await.unwrap();
    assert!(matches!(
        outcome,
        CaptureOutcome::Rejected {
            rejection: Rejection::Malformed { .. }
        }
    ));
}

fn with_results(authserv_id: &str, to: &str) -> String {
    format!(
        "Authentication-Results: {authserv_id};\r\n dkim=pass header.d=acme.test;\r\n dmarc=pass (p=reject) header.from=acme.test\r\n{}",
        message("ada@acme.test", to, "hi")
    )
}

#[tokio::test]
async fn authentication_results_are_trusted_only_from_the_configured_receiver() {
    let f = fixture(|_| Authenticator::trusting_receiver("mx.switchboard.test")).await;
    let trusted = with_results("mx.switchboard.test", &f.to);
    let outcome = f
        .capture
        .process(trusted.as_bytes(), &[], None)
        .await
        .unwrap();
    assert!(
        matches!(outcome, CaptureOutcome::Accepted { .. }),
        "{outcome:?}"
    );

    let forged = with_results("mx.evil.test", &f.to);
    let outcome = f
        .capture
        .process(forged.as_bytes(), &[], None)
        .await
        .unwrap();
    assert!(
        matches!(
            &outcome,
            CaptureOutcome::Rejected {
                rejection: Rejection::NotAuthentic { .. }
            }
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn participants_are_matched_to_known_people() {
    let f = fixture(|_| Authenticator::trusting_receiver("mx.switchboard.test")).await;
    let raw = format!(
        "Authentication-Results: mx.switchboard.test; dmarc=pass header.from=acme.test\r\nFrom: ada@acme.test\r\nTo: {}\r\nCc: Bob <bob@acme.test>, carol@customer.test\r\nSubject: x\r\n\r\nbody\r\n",
        f.to
    );
    let outcome = f.capture.process(raw.as_bytes(), &[], None).await.unwrap();
    let CaptureOutcome::Accepted { event } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(
        event.data["participants"],
        serde_json::json!([
            { "email": "bob@acme.test", "name": "Bob", "user_id": "u2", "matched": true },
            { "email": "carol@customer.test", "name": null, "user_id": null, "matched": false },
        ])
    );
}
