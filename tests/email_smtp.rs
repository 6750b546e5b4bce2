//! SMTP destination tests against a small SMTP server each test starts on loopback: the exact conversation, recipients, headers, both alternatives, and every reply class.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use mail_parser::MimeHeaders;
use secrecy::SecretString;
use switchboard::destination::Delivery;
use switchboard::email::{
    EmlFileDestination, InboundEmail, SmtpAccount, SmtpDestination, SmtpOptions, SmtpSecurity,
};
use switchboard::template::escape_html;
use switchboard::{
    Connection, DeliveryError, Destination, Event, Message, MessageFormat, Person, Target, TenantId,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the test server does and what it saw.
#[derive(Default)]
struct Script {
    /// `user\0password` pairs accepted by AUTH PLAIN.
    logins: Vec<(String, String)>,
    /// RCPT TO replies by address (default `250 2.1.5 OK`).
    rcpt: HashMap<String, String>,
    /// Replies to the end of DATA, used in order; then `250 2.0.0 queued`.
    data_replies: Vec<String>,
    /// Advertise no AUTH at all.
    no_auth: bool,
}

#[derive(Default)]
struct Seen {
    /// Every command line received, in order, across connections.
    commands: Vec<String>,
    /// Messages accepted: (MAIL FROM, RCPT TOs, data).
    messages: Vec<(String, Vec<String>, Vec<u8>)>,
}

struct Server {
    port: u16,
    seen: Arc<Mutex<Seen>>,
}

async fn start(script: Script) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let script = Arc::new(Mutex::new(script));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let seen = seen2.clone();
            let script = script.clone();
            tokio::spawn(async move {
                let _ = session(socket, script, seen).await;
            });
        }
    });
    Server { port, seen }
}

async fn session(
    socket: tokio::net::TcpStream,
    script: Arc<Mutex<Script>>,
    seen: Arc<Mutex<Seen>>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 test.local ESMTP ready\r\n").await?;
    let mut from = String::new();
    let mut rcpts: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_owned();
        seen.lock().unwrap().commands.push(cmd.clone());
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            if script.lock().unwrap().no_auth {
                "250-test.local\r\n250 8BITMIME\r\n".into()
            } else {
                "250-test.local\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n".into()
            }
        } else if upper.starts_with("AUTH PLAIN") {
            let b64 = cmd.split_whitespace().nth(2).unwrap_or("");
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_default();
            let parts: Vec<String> = decoded
                .split(|b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            let ok = parts.len() == 3
                && script
                    .lock()
                    .unwrap()
                    .logins
                    .iter()
                    .any(|(u, p)| *u == parts[1] && *p == parts[2]);
            if ok {
                "235 2.7.0 Authentication successful\r\n".into()
            } else {
                "535 5.7.8 Authentication credentials invalid\r\n".into()
            }
        } else if upper.starts_with("MAIL FROM:") {
            from = cmd[10..].trim().to_owned();
            rcpts.clear();
            "250 2.1.0 OK\r\n".into()
        } else if upper.starts_with("RCPT TO:") {
            let addr = cmd[8..]
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned();
            let custom = script.lock().unwrap().rcpt.get(&addr).cloned();
            match custom {
                Some(r) => format!("{r}\r\n"),
                None => {
                    rcpts.push(addr);
                    "250 2.1.5 OK\r\n".into()
                }
            }
        } else if upper == "DATA" {
            write
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut data = Vec::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" {
                    break;
                }
                let l = line.strip_prefix('.').unwrap_or(&line);
                data.extend_from_slice(l.as_bytes());
            }
            let next = {
                let mut s = script.lock().unwrap();
                if s.data_replies.is_empty() {
                    None
                } else {
                    Some(s.data_replies.remove(0))
                }
            };
            match next {
                Some(r) => format!("{r}\r\n"),
                None => {
                    seen.lock()
                        .unwrap()
                        .messages
                        .push((from.clone(), rcpts.clone(), data));
                    "250 2.0.0 queued as 1\r\n".into()
                }
            }
        } else if upper == "RSET" || upper == "NOOP" {
            "250 2.0.0 OK\r\n".into()
        } else if upper == "QUIT" {
            write.write_all(b"221 2.0.0 bye\r\n").await?;
            return Ok(());
        } else {
            "502 5.5.2 command not recognised\r\n".into()
        };
        write.write_all(reply.as_bytes()).await?;
    }
}

fn account(port: u16) -> SmtpAccount {
    SmtpAccount::new("127.0.0.1", "Perks <perks@example.com>")
        .unwrap()
        .security(SmtpSecurity::Plaintext)
        .port(port)
        .credentials("perks@example.com", SecretString::from("s3cret"))
}

fn options() -> SmtpOptions {
    SmtpOptions {
        hello_name: Some("switchboard.test".into()),
        ..SmtpOptions::default()
    }
}

fn delivery(to: &str, user_text: &str, unsubscribe: Option<&str>) -> Delivery {
    let mut data = serde_json::json!({ "amount": 50 });
    if let Some(u) = unsubscribe {
        data["unsubscribe_url"] = u.into();
    }
    let event = Event::builder("evt-1", "wallet.funded")
        .subject(Person::new("u1").email(to))
        .data(data)
        .build()
        .unwrap();
    Delivery {
        id: 42,
        tenant: TenantId::default_tenant(),
        connection: None,
        event: Arc::new(event),
        route: "funded".into(),
        target: Target::SubjectDm,
        recipient: None,
        recipient_user_id: Some("u1".into()),
        message: Message {
            text: format!("<p>Your wallet was funded: {}</p>", escape_html(user_text)),
            title: Some("Wallet funded".into()),
            format: MessageFormat::Html,
        },
        attempt: 1,
    }
}

fn login(user: &str, pass: &str) -> (String, String) {
    (user.to_owned(), pass.to_owned())
}

#[tokio::test]
async fn sends_the_exact_message_with_both_alternatives_and_headers() {
    let server = start(Script {
        logins: vec![login("perks@example.com", "s3cret")],
        ..Script::default()
    })
    .await;
    let dest = SmtpDestination::with_account(account(server.port), options()).unwrap();
    assert!(dest.has_fixed_credentials());
    assert_eq!(dest.platform(), Some("smtp"));
    let receipt = dest
        .deliver(&delivery(
            "Ada@Example.com",
            "<script>alert(1)</script> & co",
            Some("https://perks.example/unsubscribe?u=u1"),
        ))
        .await
        .unwrap();
    let seen = server.seen.lock().unwrap();
    let plain = base64::engine::general_purpose::STANDARD.encode("\0perks@example.com\0s3cret");
    assert_eq!(
        seen.commands[..5],
        [
            "EHLO switchboard.test".to_owned(),
            format!("AUTH PLAIN {plain}"),
            "MAIL FROM:<perks@example.com>".to_owned(),
            "RCPT TO:<ada@example.com>".to_owned(),
            "DATA".to_owned(),
        ]
    );
    assert_eq!(seen.messages.len(), 1);
    let (from, rcpts, data) = &seen.messages[0];
    assert_eq!(from, "<perks@example.com>");
    assert_eq!(rcpts, &vec!["ada@example.com".to_owned()]);

    let parsed = mail_parser::MessageParser::default().parse(data).unwrap();
    assert_eq!(parsed.subject(), Some("Wallet funded"));
    assert_eq!(
        parsed
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address()),
        Some("perks@example.com")
    );
    assert_eq!(
        parsed
            .to()
            .and_then(|a| a.first())
            .and_then(|a| a.address()),
        Some("ada@example.com")
    );
    let id = receipt.remote_id.clone().unwrap();
    assert!(id.starts_with("<switchboard.42."), "{id}");
    assert!(id.ends_with("@example.com>"), "{id}");
    assert_eq!(
        parsed.message_id(),
        Some(id.trim_start_matches('<').trim_end_matches('>'))
    );
    assert!(parsed.date().is_some());
    assert_eq!(
        parsed.header_raw("List-Unsubscribe").map(str::trim),
        Some("<https://perks.example/unsubscribe?u=u1>")
    );
    assert_eq!(
        parsed.header_raw("List-Unsubscribe-Post").map(str::trim),
        Some("List-Unsubscribe=One-Click")
    );
    let ct = parsed.root_part().content_type().unwrap();
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("alternative"));
    let html = parsed.body_html(0).unwrap();
    assert!(
        html.contains(
            "<p>Your wallet was funded: &lt;script&gt;alert(1)&lt;/script&gt; &amp; co</p>"
        ),
        "{html}"
    );
    assert!(!html.contains("<script>"));
    let text = parsed.body_text(0).unwrap();
    assert!(
        text.contains("Your wallet was funded: <script>alert(1)</script> & co"),
        "{text}"
    );
    assert_eq!(parsed.text_body_count(), 1);
    assert_eq!(parsed.html_body_count(), 1);
    assert_eq!(receipt.location.as_deref(), Some("ada@example.com"));
}

#[tokio::test]
async fn no_list_unsubscribe_without_a_url_and_no_one_click_for_mailto() {
    let server = start(Script {
        logins: vec![login("perks@example.com", "s3cret")],
        ..Script::default()
    })
    .await;
    let dest = SmtpDestination::with_account(account(server.port), options()).unwrap();
    dest.deliver(&delivery("ada@example.com", "x", None))
        .await
        .unwrap();
    dest.deliver(&delivery(
        "ada@example.com",
        "x",
        Some("mailto:unsub@example.com"),
    ))
    .await
    .unwrap();
    let seen = server.seen.lock().unwrap();
    let first = mail_parser::MessageParser::default()
        .parse(&seen.messages[0].2)
        .unwrap();
    assert!(first.header_raw("List-Unsubscribe").is_none());
    let second = mail_parser::MessageParser::default()
        .parse(&seen.messages[1].2)
        .unwrap();
    assert_eq!(
        second.header_raw("List-Unsubscribe").map(str::trim),
        Some("<mailto:unsub@example.com>")
    );
    assert!(second.header_raw("List-Unsubscribe-Post").is_none());
}

#[tokio::test]
async fn a_4xx_is_temporary_and_the_retry_succeeds() {
    let server = start(Script {
        logins: vec![login("perks@example.com", "s3cret")],
        data_replies: vec!["451 4.3.0 Temporary local problem, try later".into()],
        ..Script::default()
    })
    .await;
    let dest = SmtpDestination::with_account(account(server.port), options()).unwrap();
    let d = delivery("ada@example.com", "hi", None);
    let err = dest.deliver(&d).await.unwrap_err();
    assert!(matches!(err, DeliveryError::Temporary { .. }), "{err:?}");
    assert!(err.reason().contains("451"), "{err:?}");
    let ok = dest.deliver(&d).await.unwrap();
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.messages.len(), 1);
    // The retry carries the same Message-ID, so a receiver can drop duplicates.
    let parsed = mail_parser::MessageParser::default()
        .parse(&seen.messages[0].2)
        .unwrap();
    assert_eq!(parsed.message_id().map(|m| format!("<{m}>")), ok.remote_id);
}

#[tokio::test]
async fn a_550_5_1_1_recipient_is_unknown_and_nothing_is_sent() {
    let server = start(Script {
        logins: vec![login("perks@example.com", "s3cret")],
        rcpt: HashMap::from([(
            "nobody@example.com".to_owned(),
            "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown".to_owned(),
        )]),
        ..Script::default()
    })
    .await;
    let dest = SmtpDestination::with_account(account(server.port), options()).unwrap();
    let err = dest
        .deliver(&delivery("nobody@example.com", "hi", None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DeliveryError::RecipientUnknown { .. }),
        "{err:?}"
    );
    assert!(err.reason().contains("5.1.1"), "{err:?}");
    assert!(server.seen.lock().unwrap().messages.is_empty());
}

#[tokio::test]
async fn a_550_policy_rejection_is_permanent() {
    let server = start(Script {
        logins: vec![login("perks@example.com", "s3cret")],
        rcpt: HashMap::from([(
            "ada@example.com".to_owned(),
            "550 5.7.1 Relaying denied".to_owned(),
        )]),
        ..Script::default()
    })
    .await;
    let dest = SmtpDestination::with_account(account(server.port), options()).unwrap();
    let err = dest
        .deliver(&delivery("ada@example.com", "hi", None))
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Permanent { .. }), "{err:?}");
}

#[tokio::test]
async fn bad_credentials_disconnect_the_account() {
    let server = start(Script {
        logins: vec![login("perks@example.com", "the-real-one")],
        ..Script::default()
    })
    .await;
    let dest = SmtpDestination::with_account(account(server.port), options()).unwrap();
    let err = dest
        .deliver(&delivery("ada@example.com", "hi", None))
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Disconnected { .. }), "{err:?}");
    assert!(err.reason().contains("535"), "{err:?}");
    assert!(!err.reason().contains("s3cret"));
    let seen = server.seen.lock().unwrap();
    assert!(seen.messages.is_empty());
    assert!(!seen.commands.iter().any(|c| c.starts_with("MAIL FROM")));
}

#[tokio::test]
async fn a_server_without_auth_disconnects_an_account_with_credentials() {
    let server = start(Script {
        no_auth: true,
        ..Script::default()
    })
    .await;
    let dest = SmtpDestination::with_account(account(server.port), options()).unwrap();
    let err = dest
        .deliver(&delivery("ada@example.com", "hi", None))
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Disconnected { .. }), "{err:?}");
}

#[tokio::test]
async fn starttls_is_required_when_configured() {
    let server = start(Script::default()).await;
    let account = SmtpAccount::new("127.0.0.1", "perks@example.com")
        .unwrap()
        .security(SmtpSecurity::StartTls)
        .port(server.port);
    let dest = SmtpDestination::with_account(account, options()).unwrap();
    let err = dest
        .deliver(&delivery("ada@example.com", "hi", None))
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Disconnected { .. }), "{err:?}");
    let seen = server.seen.lock().unwrap();
    assert!(!seen.commands.iter().any(|c| c.starts_with("MAIL FROM")));
}

#[tokio::test]
async fn a_refused_connection_is_temporary() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let dest = SmtpDestination::with_account(account(port), options()).unwrap();
    let err = dest
        .deliver(&delivery("ada@example.com", "hi", None))
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Temporary { .. }), "{err:?}");
}

fn smtp_connection(tenant: &str, port: u16, user: &str, password: &str, from: &str) -> Connection {
    Connection::builder(TenantId::new(tenant).unwrap(), "smtp", user)
        .data(serde_json::json!({
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "username": user,
            "from": from,
        }))
        .secret("password", SecretString::from(password.to_owned()))
        .build()
        .unwrap()
}

#[tokio::test]
async fn each_tenant_sends_with_its_own_connection() {
    let server = start(Script {
        logins: vec![
            login("acme@acme.test", "pw-a"),
            login("globex@globex.test", "pw-g"),
        ],
        ..Script::default()
    })
    .await;
    let dest = SmtpDestination::new(options()).unwrap();
    assert!(!dest.has_fixed_credentials());

    // No connection and no fixed account: disconnected (parked), never dropped.
    let orphan = delivery("ada@example.com", "hi", None);
    let err = dest.deliver(&orphan).await.unwrap_err();
    assert!(matches!(err, DeliveryError::Disconnected { .. }), "{err:?}");

    for (tenant, user, pw, from) in [
        ("acme", "acme@acme.test", "pw-a", "Acme <acme@acme.test>"),
        ("globex", "globex@globex.test", "pw-g", "globex@globex.test"),
    ] {
        let mut d = delivery("ada@example.com", "hi", None);
        d.tenant = TenantId::new(tenant).unwrap();
        d.connection = Some(Arc::new(smtp_connection(
            tenant,
            server.port,
            user,
            pw,
            from,
        )));
        dest.deliver(&d).await.unwrap();
    }
    {
        let seen = server.seen.lock().unwrap();
        let froms: Vec<&str> = seen.messages.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(froms, ["<acme@acme.test>", "<globex@globex.test>"]);
        let auths: Vec<&String> = seen
            .commands
            .iter()
            .filter(|c| c.starts_with("AUTH"))
            .collect();
        assert_eq!(auths.len(), 2);
        assert_ne!(auths[0], auths[1]);

        // A tenant whose stored password is wrong is disconnected; the other is unaffected.
    }
    let mut bad = delivery("ada@example.com", "hi", None);
    bad.tenant = TenantId::new("acme").unwrap();
    let mut conn = smtp_connection(
        "acme",
        server.port,
        "acme@acme.test",
        "old",
        "acme@acme.test",
    );
    conn.revision = 7;
    bad.connection = Some(Arc::new(conn));
    let err = dest.deliver(&bad).await.unwrap_err();
    assert!(matches!(err, DeliveryError::Disconnected { .. }), "{err:?}");
}

#[tokio::test]
async fn a_connection_without_a_host_is_disconnected() {
    let dest = SmtpDestination::new(options()).unwrap();
    let mut d = delivery("ada@example.com", "hi", None);
    d.connection = Some(Arc::new(
        Connection::builder(TenantId::default_tenant(), "smtp", "x")
            .data(serde_json::json!({ "from": "a@example.com" }))
            .build()
            .unwrap(),
    ));
    let err = dest.deliver(&d).await.unwrap_err();
    assert!(matches!(err, DeliveryError::Disconnected { .. }), "{err:?}");
    assert!(err.reason().contains("host"), "{err:?}");
}

#[test]
fn plaintext_to_a_remote_server_is_refused() {
    let account = SmtpAccount::new("smtp.example.com", "a@example.com")
        .unwrap()
        .security(SmtpSecurity::Plaintext);
    let err = SmtpDestination::with_account(account, options()).unwrap_err();
    assert_eq!(err.kind(), switchboard::ErrorKind::Config);
}

#[tokio::test]
async fn unknown_recipient_without_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let dest = EmlFileDestination::new(dir.path(), "a@example.com").unwrap();
    let mut d = delivery("ada@example.com", "hi", None);
    d.target = Target::UserDm {
        user_id: "someone-else".into(),
    };
    d.recipient_user_id = Some("someone-else".into());
    let err = dest.deliver(&d).await.unwrap_err();
    assert!(
        matches!(err, DeliveryError::RecipientUnknown { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_file_transport_writes_one_eml_per_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let dest = EmlFileDestination::new(dir.path(), "Perks <perks@example.com>").unwrap();
    let mut d = delivery(
        "ada@example.com",
        "Tom & Jerry",
        Some("https://u.example/x"),
    );
    d.target = Target::Email {
        address: "Bob@Example.com".into(),
    };
    let receipt = dest.deliver(&d).await.unwrap();
    dest.deliver(&d).await.unwrap(); // a retry overwrites, never duplicates
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, ["42.eml"]);
    let raw = std::fs::read(dir.path().join("42.eml")).unwrap();
    let parsed = InboundEmail::parse(&raw).unwrap();
    assert_eq!(parsed.to[0].email, "bob@example.com");
    assert_eq!(parsed.subject.as_deref(), Some("Wallet funded"));
    assert!(parsed.text.contains("Tom & Jerry"), "{}", parsed.text);
    assert_eq!(
        parsed.message_id.map(|m| format!("<{m}>")),
        receipt.remote_id
    );
}
