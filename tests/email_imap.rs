//! The IMAP source against a real dovecot started by the test (plaintext on loopback, a passwd-file user, maildir in a temp dir): messages captured once and moved or flagged, exactly once across a restart, IDLE and polling. Skipped, saying so, when dovecot is not installed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use secrecy::SecretString;
use switchboard::email::{
    AfterProcessing, Authenticator, CaptureOutcome, EmailCapture, EmailImapSource,
    ForwardingAddresses, ImapConfig, ImapSecurity, MemoryDirectory, StoreAddressRegistry,
};
use switchboard::source::{EventSource, Shutdown};
use switchboard::store::{MemoryStore, Store};
use switchboard::{Person, Switchboard, TenantId};

const DOMAIN: &str = "in.switchboard.test";
const RECEIVER: &str = "mx.switchboard.test";
const USER: &str = "ada";
const PASSWORD: &str = "imap-test-password";

fn dovecot_binary() -> Option<PathBuf> {
    ["/usr/sbin/dovecot", "/usr/local/sbin/dovecot"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

struct Dovecot {
    child: Child,
    port: u16,
    imaps: Option<u16>,
    dir: tempfile::TempDir,
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(dir: &Path, port: u16, imaps: Option<u16>) -> String {
    let d = dir.display();
    // With TLS: STARTTLS on `port`, implicit TLS on `imaps`, a certificate the
    // test's own CA signed.
    let (ssl, imaps_port) = match imaps {
        Some(p) => (
            format!("ssl = required\nssl_cert = <{d}/cert.pem\nssl_key = <{d}/key.pem"),
            p,
        ),
        None => ("ssl = no".to_owned(), 0),
    };
    format!(
        r#"base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/home/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
  }}
}}
service anvil {{
  chroot =
}}
"#
    )
}

async fn dovecot() -> Option<Dovecot> {
    start_dovecot(false).await
}

/// Makes a CA and a certificate for 127.0.0.1 signed by it in `dir`
/// (`cert.pem`, `key.pem`, `ca.der`); false when openssl is missing.
fn make_certificates(dir: &Path) -> bool {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=switchboard test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]) && run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]) && run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]) && run(&["x509", "-in", "ca.pem", "-outform", "DER", "-out", "ca.der"])
}

async fn start_dovecot(tls: bool) -> Option<Dovecot> {
    let Some(bin) = dovecot_binary() else {
        eprintln!("skipped: dovecot is not installed (apt-get install dovecot-imapd)");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    // Dovecot's unprivileged login and mail processes must reach the sockets
    // and the mail folder.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for sub in ["run", "state", "home"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    std::fs::set_permissions(
        dir.path().join("home"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("passwd"),
        format!("{USER}:{{PLAIN}}{PASSWORD}::::::\n"),
    )
    .unwrap();
    let port = free_port();
    let imaps = if tls {
        if !make_certificates(dir.path()) {
            eprintln!("skipped: openssl could not make the test certificates");
            return None;
        }
        Some(free_port())
    } else {
        None
    };
    let conf = dir.path().join("dovecot.conf");
    std::fs::write(&conf, config(dir.path(), port, imaps)).unwrap();
    let child = Command::new(bin)
        .arg("-F")
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Dovecot {
        child,
        port,
        imaps,
        dir,
    };
    // Wait until it greets.
    for _ in 0..100 {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let mut client = async_imap::Client::new(s);
            if let Ok(Some(_)) = client.read_response().await {
                return Some(server);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(server.dir.path().join("dovecot.log")).unwrap_or_default();
    panic!("dovecot did not start: {log}");
}

impl Dovecot {
    async fn session(&self) -> async_imap::Session<tokio::net::TcpStream> {
        let s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let mut client = async_imap::Client::new(s);
        client.read_response().await.unwrap();
        client.login(USER, PASSWORD).await.map_err(|e| e.0).unwrap()
    }

    /// Appends to INBOX of a TLS server (plaintext login is allowed on
    /// loopback there too: `disable_plaintext_auth = no`).
    async fn append_tls(&self, raw: &str) {
        self.append("INBOX", raw).await;
    }

    async fn append(&self, mailbox: &str, raw: &str) {
        let mut s = self.session().await;
        s.append(mailbox, None, None, raw.as_bytes()).await.unwrap();
        s.logout().await.unwrap();
    }

    /// The Message-IDs of a mailbox's messages, with their flags.
    async fn contents(&self, mailbox: &str) -> Vec<(String, Vec<String>)> {
        let mut s = self.session().await;
        let mb = s.select(mailbox).await.unwrap();
        let mut out = Vec::new();
        if mb.exists > 0 {
            let fetched: Vec<_> = s
                .fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            for f in fetched {
                let header = String::from_utf8_lossy(f.header().unwrap_or_default()).to_string();
                let id = header
                    .trim()
                    .trim_start_matches("Message-ID:")
                    .trim()
                    .to_owned();
                let flags = f.flags().map(|fl| format!("{fl:?}")).collect();
                out.push((id, flags));
            }
        }
        s.logout().await.unwrap();
        out.sort();
        out
    }

    fn source_config(&self) -> ImapConfig {
        ImapConfig::new("127.0.0.1", USER, SecretString::from(PASSWORD))
            .unwrap()
            .security(ImapSecurity::Plaintext, self.port)
            .timeout(Duration::from_secs(10))
    }
}

struct World {
    sb: Switchboard,
    store: Arc<dyn Store>,
    capture: Arc<EmailCapture>,
    to: String,
}

async fn world() -> World {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let addresses = ForwardingAddresses::new(
        DOMAIN,
        Arc::new(StoreAddressRegistry::new(Arc::clone(&store))),
    )
    .unwrap();
    let acme = TenantId::new("acme").unwrap();
    let to = addresses.address_for(&acme, "u1").await.unwrap();
    let people = MemoryDirectory::new();
    people.add(&acme, Person::new("u1").email("ada@acme.test"));
    let capture = Arc::new(EmailCapture::new(
        addresses,
        Arc::new(people),
        Authenticator::trusting_receiver(RECEIVER),
    ));
    let sb = Switchboard::builder()
        .store(MemoryStore::new())
        .build()
        .unwrap();
    World {
        sb,
        store,
        capture,
        to,
    }
}

fn forward(to: &str, id: &str) -> String {
    format!(
        "Authentication-Results: {RECEIVER}; dmarc=pass header.from=acme.test\r\nFrom: Ada <ada@acme.test>\r\nTo: {to}\r\nSubject: Fwd: {id}\r\nMessage-ID: <{id}@acme.test>\r\nDate: Tue, 4 Mar 2025 09:12:44 +0100\r\n\r\nSee below.\r\n"
    )
}

fn forged(to: &str, id: &str) -> String {
    forward(to, id).replace(RECEIVER, "mx.evil.test")
}

async fn was_published(w: &World, raw: &str) -> bool {
    let CaptureOutcome::Accepted { event } =
        w.capture.evaluate(raw.as_bytes(), &[], None).await.unwrap()
    else {
        panic!("not an acceptable message");
    };
    w.sb.publish(*event).await.unwrap().duplicate
}

fn ids(list: &[(String, Vec<String>)]) -> Vec<&str> {
    list.iter().map(|(id, _)| id.as_str()).collect()
}

#[tokio::test]
async fn messages_are_captured_once_and_moved() {
    let Some(server) = dovecot().await else {
        return;
    };
    let w = world().await;
    let good = forward(&w.to, "i1");
    server.append("INBOX", &good).await;
    server.append("INBOX", &forged(&w.to, "i2")).await;
    let source = EmailImapSource::new(
        server.source_config(),
        Arc::clone(&w.capture),
        Arc::clone(&w.store),
    );
    let poll = source.poll(&w.sb.emitter()).await.unwrap();
    assert_eq!((poll.accepted, poll.rejected, poll.resumed), (1, 1, 0));
    assert!(was_published(&w, &good).await);
    assert!(server.contents("INBOX").await.is_empty());
    assert_eq!(ids(&server.contents("Processed").await), ["<i1@acme.test>"]);
    assert_eq!(ids(&server.contents("Rejected").await), ["<i2@acme.test>"]);
    // Nothing waits: a second poll does nothing.
    assert_eq!(
        source.poll(&w.sb.emitter()).await.unwrap(),
        Default::default()
    );
}

#[tokio::test]
async fn a_message_processed_before_a_crash_is_not_processed_again() {
    let Some(server) = dovecot().await else {
        return;
    };
    let w = world().await;
    // Flag mode first: the message stays in INBOX, with the keyword.
    let good = forward(&w.to, "k1");
    server.append("INBOX", &good).await;
    let flagging = server.source_config().after(AfterProcessing::Flag {
        keyword: "$Switchboard".into(),
    });
    let source = EmailImapSource::new(
        flagging.clone(),
        Arc::clone(&w.capture),
        Arc::clone(&w.store),
    );
    assert_eq!(source.poll(&w.sb.emitter()).await.unwrap().accepted, 1);
    let inbox = server.contents("INBOX").await;
    assert_eq!(ids(&inbox), ["<k1@acme.test>"]);
    assert!(
        inbox[0].1.iter().any(|f| f.contains("$Switchboard")),
        "{inbox:?}"
    );
    assert!(inbox[0].1.iter().any(|f| f.contains("Seen")), "{inbox:?}");
    assert_eq!(
        source.poll(&w.sb.emitter()).await.unwrap(),
        Default::default()
    );

    // Now as if the process had died after remembering the message but before
    // its move: a restarted source in move mode sees the same UIDVALIDITY and
    // UID in the store, and only moves it.
    let restarted = EmailImapSource::new(
        server.source_config().after(AfterProcessing::Move {
            accepted: "Done".into(),
            rejected: "Refused".into(),
        }),
        Arc::clone(&w.capture),
        Arc::clone(&w.store),
    );
    let poll = restarted.poll(&w.sb.emitter()).await.unwrap();
    assert_eq!((poll.accepted, poll.resumed), (0, 1));
    assert_eq!(ids(&server.contents("Done").await), ["<k1@acme.test>"]);
    assert!(server.contents("INBOX").await.is_empty());

    // A source on a fresh store (its memory lost) processes a redelivered
    // copy again, and the publish is a duplicate: still one event.
    let fresh: Arc<dyn Store> = Arc::new(MemoryStore::new());
    server.append("INBOX", &good).await;
    let forgetful = EmailImapSource::new(server.source_config(), Arc::clone(&w.capture), fresh);
    assert_eq!(forgetful.poll(&w.sb.emitter()).await.unwrap().accepted, 1);
    assert!(was_published(&w, &good).await);
}

async fn wait_for(server: &Dovecot, mailbox: &str, id: &str) -> bool {
    for _ in 0..200 {
        if ids(&server.contents(mailbox).await).contains(&id) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn running_source_uses_idle_and_falls_back_to_polling() {
    let Some(server) = dovecot().await else {
        return;
    };
    let w = world().await;
    for (idle, id) in [(true, "idle1"), (false, "poll1")] {
        // A long poll interval: with IDLE the message must arrive through the
        // server's push, not a poll.
        let interval = if idle {
            Duration::from_secs(3600)
        } else {
            Duration::from_millis(100)
        };
        let source = EmailImapSource::new(
            server.source_config().idle(idle).poll_interval(interval),
            Arc::clone(&w.capture),
            Arc::clone(&w.store),
        );
        let (trigger, shutdown) = Shutdown::new();
        let s = source.clone();
        let emitter = w.sb.emitter();
        let task = tokio::spawn(async move { s.run(emitter, shutdown).await });
        // Let it connect and settle into IDLE (or its poll loop) first.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let raw = forward(&w.to, id);
        server.append("INBOX", &raw).await;
        assert!(
            wait_for(&server, "Processed", &format!("<{id}@acme.test>")).await,
            "{id}: the running source picked the message up"
        );
        assert!(was_published(&w, &raw).await);
        trigger.trigger();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the source stops on shutdown")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn bad_password_and_plaintext_to_a_remote_host_are_refused() {
    let Some(server) = dovecot().await else {
        return;
    };
    let w = world().await;
    let wrong = ImapConfig::new("127.0.0.1", USER, SecretString::from("nope"))
        .unwrap()
        .security(ImapSecurity::Plaintext, server.port);
    let e = EmailImapSource::new(wrong, Arc::clone(&w.capture), Arc::clone(&w.store))
        .poll(&w.sb.emitter())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), switchboard::ErrorKind::Unauthorized);
    assert!(!e.to_string().contains("nope"));
    let remote = ImapConfig::new("imap.example.com", USER, SecretString::from("x"))
        .unwrap()
        .security(ImapSecurity::Plaintext, 143);
    let e = EmailImapSource::new(remote, Arc::clone(&w.capture), Arc::clone(&w.store))
        .poll(&w.sb.emitter())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), switchboard::ErrorKind::Config);
}

#[tokio::test]
async fn tls_and_starttls_with_the_servers_ca_and_refused_without_it() {
    let Some(server) = start_dovecot(true).await else {
        return;
    };
    let w = world().await;
    let ca = std::fs::read(server.dir.path().join("ca.der")).unwrap();
    let imaps = server.imaps.unwrap();
    let base = |security, port| {
        ImapConfig::new("127.0.0.1", USER, SecretString::from(PASSWORD))
            .unwrap()
            .security(security, port)
            .timeout(Duration::from_secs(10))
    };
    // The test's CA is not a public root: the handshake fails.
    let e = EmailImapSource::new(
        base(ImapSecurity::Tls, imaps),
        Arc::clone(&w.capture),
        Arc::clone(&w.store),
    )
    .poll(&w.sb.emitter())
    .await
    .unwrap_err();
    assert_eq!(e.kind(), switchboard::ErrorKind::Network, "{e}");
    assert!(e.to_string().contains("TLS"), "{e}");
    // Trusting it, implicit TLS and STARTTLS both log in and capture.
    for (i, (security, port)) in [
        (ImapSecurity::Tls, imaps),
        (ImapSecurity::StartTls, server.port),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("tls{i}");
        let raw = forward(&w.to, &id);
        server.append_tls(&raw).await;
        let source = EmailImapSource::new(
            base(security, port).add_root_certificate(ca.clone()),
            Arc::clone(&w.capture),
            Arc::clone(&w.store),
        );
        let poll = source.poll(&w.sb.emitter()).await.unwrap();
        assert_eq!(poll.accepted, 1, "{security:?}");
        assert!(was_published(&w, &raw).await);
    }
}
