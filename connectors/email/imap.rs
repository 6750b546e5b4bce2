//! `EmailImapSource` (feature `email-imap`): a mailbox read with `async-imap` over rustls, IDLE with a polling fallback, each message captured once (UIDVALIDITY + UID remembered in the store) and then moved or flagged.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_imap::Session;
use async_trait::async_trait;
use futures::TryStreamExt;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use super::capture::EmailCapture;
use super::http::{Intake, intake};
use super::parse::MAX_MESSAGE_BYTES;
use super::progress::Progress;
use crate::source::{Emitter, EventSource, Shutdown};
use crate::store::Store;
use crate::{Error, ErrorKind, Result};

/// The implicit-TLS IMAP port.
pub const IMAPS_PORT: u16 = 993;
/// The IMAP port (STARTTLS).
pub const IMAP_PORT: u16 = 143;

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImapSecurity {
    /// TLS from the first byte (port 993).
    Tls,
    /// Plain connection upgraded with `STARTTLS` before login (port 143).
    StartTls,
    /// No TLS: refused except to a loopback address (tests, a local relay).
    Plaintext,
}

/// What happens to a message once it is processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterProcessing {
    /// Moved to another mailbox (`MOVE` where the server has it, else `COPY`
    /// + `\Deleted` + `EXPUNGE`). The mailboxes are created if missing.
    Move {
        /// Where captured messages go.
        accepted: String,
        /// Where rejected messages go.
        rejected: String,
    },
    /// Left in place with a keyword (and `\Seen`); messages carrying it are
    /// not read again. Rejected ones also get `<keyword>Rejected`.
    Flag {
        /// The keyword, e.g. `$Switchboard`.
        keyword: String,
    },
}

/// Where and how to read mail.
#[derive(Clone)]
pub struct ImapConfig {
    host: String,
    port: u16,
    security: ImapSecurity,
    username: String,
    password: SecretString,
    mailbox: String,
    after: AfterProcessing,
    poll_interval: Duration,
    idle_timeout: Duration,
    use_idle: bool,
    timeout: Duration,
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl std::fmt::Debug for ImapConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("mailbox", &self.mailbox)
            .field("after", &self.after)
            .field("poll_interval", &self.poll_interval)
            .field("use_idle", &self.use_idle)
            .finish_non_exhaustive()
    }
}

impl ImapConfig {
    /// Implicit TLS on port 993, mailbox `INBOX`, processed messages moved to
    /// `Processed` / `Rejected`, IDLE when the server has it (re-issued every
    /// 25 minutes), else a poll every 60 seconds.
    pub fn new(host: &str, username: &str, password: SecretString) -> Result<Self> {
        let host = host.trim().to_owned();
        if host.is_empty() || username.trim().is_empty() {
            return Err(Error::config("an IMAP account needs a host and a username"));
        }
        Ok(ImapConfig {
            host,
            port: IMAPS_PORT,
            security: ImapSecurity::Tls,
            username: username.to_owned(),
            password,
            mailbox: "INBOX".into(),
            after: AfterProcessing::Move {
                accepted: "Processed".into(),
                rejected: "Rejected".into(),
            },
            poll_interval: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(25 * 60),
            use_idle: true,
            timeout: Duration::from_secs(60),
            extra_roots: Vec::new(),
        })
    }

    /// Sets the security and port.
    #[must_use]
    pub fn security(mut self, security: ImapSecurity, port: u16) -> Self {
        self.security = security;
        self.port = port;
        self
    }

    /// Reads `mailbox` instead of `INBOX`.
    #[must_use]
    pub fn mailbox(mut self, mailbox: &str) -> Self {
        self.mailbox = mailbox.to_owned();
        self
    }

    /// What to do with processed messages.
    #[must_use]
    pub fn after(mut self, after: AfterProcessing) -> Self {
        self.after = after;
        self
    }

    /// Poll interval when IDLE is off or unsupported (also the longest wait
    /// in IDLE before re-checking).
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Uses IDLE when the server supports it (default); `false` always polls.
    #[must_use]
    pub fn idle(mut self, use_idle: bool) -> Self {
        self.use_idle = use_idle;
        self
    }

    /// Timeout of one command (connect, login, fetch, move…).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Trusts this DER certificate as a root too (a private CA).
    #[must_use]
    pub fn add_root_certificate(mut self, der: Vec<u8>) -> Self {
        self.extra_roots
            .push(rustls::pki_types::CertificateDer::from(der));
        self
    }

    fn is_loopback(&self) -> bool {
        let h = self.host.trim_start_matches('[').trim_end_matches(']');
        h.eq_ignore_ascii_case("localhost")
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The store key prefix of this mailbox.
    fn identity(&self) -> String {
        format!(
            "{}@{}:{}/{}",
            self.username, self.host, self.port, self.mailbox
        )
    }
}

/// What one [`EmailImapSource::poll`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImapPoll {
    /// Messages captured and published.
    pub accepted: usize,
    /// Messages rejected.
    pub rejected: usize,
    /// Messages processed before whose move or flag had not happened (a
    /// crash in between): finished without processing them again.
    pub resumed: usize,
}

/// A mailbox as an [`EventSource`]: every message is captured through an
/// [`EmailCapture`] and published, then moved or flagged
/// ([`AfterProcessing`]).
///
/// Exactly once across restarts: after a message's item is published and
/// before it is moved or flagged, `(mailbox, UIDVALIDITY, UID)` and its
/// outcome are remembered in the store; a message found again (a crash
/// before the move) is only moved. A crash between publishing and
/// remembering processes it again, and the event's id (from its
/// `Message-ID`) makes that publish a duplicate that creates nothing. A new
/// UIDVALIDITY (the mailbox was recreated) starts afresh, as RFC 3501 asks.
///
/// While running it keeps one connection, waits in IDLE (RFC 2177) when the
/// server supports it and polls otherwise, and reconnects after errors with a
/// backoff up to the poll interval.
#[derive(Clone)]
pub struct EmailImapSource {
    config: Arc<ImapConfig>,
    capture: Arc<EmailCapture>,
    progress: Progress,
}

impl std::fmt::Debug for EmailImapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailImapSource")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

type ImapSession = Session<Conn>;

const ACCEPTED: &str = "accepted";
const REJECTED: &str = "rejected";

impl EmailImapSource {
    /// A source for `config`, remembering processed messages in `store`.
    pub fn new(config: ImapConfig, capture: Arc<EmailCapture>, store: Arc<dyn Store>) -> Self {
        EmailImapSource {
            config: Arc::new(config),
            capture,
            progress: Progress::new(store, "email-imap"),
        }
    }

    /// Connects, processes every waiting message and logs out.
    pub async fn poll(&self, emitter: &Emitter) -> Result<ImapPoll> {
        let (mut session, _) = self.open().await?;
        let result = self.process(&mut session, emitter).await;
        let _ = self.timed(session.logout()).await;
        result
    }

    async fn timed<T, F>(&self, f: F) -> Result<T>
    where
        F: std::future::Future<Output = async_imap::error::Result<T>>,
    {
        match tokio::time::timeout(self.config.timeout, f).await {
            Ok(r) => r.map_err(imap_error),
            Err(_) => Err(
                Error::new(ErrorKind::Network, "the IMAP server did not answer in time")
                    .temporary(),
            ),
        }
    }

    /// Connects, logs in, prepares the target mailboxes and selects the mailbox;
    /// also tells whether the server supports IDLE.
    async fn open(&self) -> Result<(ImapSession, bool)> {
        let c = &self.config;
        if c.security == ImapSecurity::Plaintext && !c.is_loopback() {
            return Err(Error::config(
                "plaintext IMAP is only allowed to a loopback server; use TLS or STARTTLS",
            ));
        }
        let tcp = tokio::time::timeout(c.timeout, TcpStream::connect((c.host.as_str(), c.port)))
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Network,
                    "connecting to the IMAP server timed out",
                )
                .temporary()
            })?
            .map_err(|e| {
                Error::new(
                    ErrorKind::Network,
                    format!(
                        "cannot connect to the IMAP server {}:{}: {e}",
                        c.host, c.port
                    ),
                )
                .temporary()
            })?;
        let stream = match c.security {
            ImapSecurity::Tls => Conn::Tls(Box::new(self.tls(tcp).await?)),
            ImapSecurity::Plaintext => Conn::Plain(tcp),
            ImapSecurity::StartTls => {
                let mut client = async_imap::Client::new(Conn::Plain(tcp));
                self.greeting(&mut client).await?;
                self.timed(client.run_command_and_check_ok("STARTTLS", None))
                    .await?;
                let Conn::Plain(tcp) = client.into_inner() else {
                    return Err(Error::new(ErrorKind::Platform, "unexpected IMAP stream"));
                };
                Conn::Tls(Box::new(self.tls(tcp).await?))
            }
        };
        let mut client = async_imap::Client::new(stream);
        if c.security != ImapSecurity::StartTls {
            self.greeting(&mut client).await?;
        }
        let mut session = match tokio::time::timeout(
            c.timeout,
            client.login(&c.username, c.password.expose_secret()),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err((e, _))) => {
                return Err(Error::new(
                    ErrorKind::Unauthorized,
                    format!("IMAP login as {} refused: {}", c.username, redact(&e)),
                ));
            }
            Err(_) => {
                return Err(Error::new(ErrorKind::Network, "IMAP login timed out").temporary());
            }
        };
        let caps = self.timed(session.capabilities()).await?;
        let idle = caps.has_str("IDLE");
        if let AfterProcessing::Move { accepted, rejected } = &c.after {
            for m in [accepted, rejected] {
                // Fails with NO when it exists: fine.
                let _ = self.timed(session.create(m)).await;
            }
        }
        Ok((session, idle))
    }

    async fn greeting(&self, client: &mut async_imap::Client<Conn>) -> Result<()> {
        match tokio::time::timeout(self.config.timeout, client.read_response()).await {
            Ok(Ok(Some(_))) => Ok(()),
            Ok(Ok(None)) => Err(Error::new(
                ErrorKind::Network,
                "the IMAP server closed the connection before its greeting",
            )
            .temporary()),
            Ok(Err(e)) => {
                Err(Error::new(ErrorKind::Network, format!("IMAP greeting: {e}")).temporary())
            }
            Err(_) => Err(Error::new(ErrorKind::Network, "no IMAP greeting in time").temporary()),
        }
    }

    async fn tls(&self, tcp: TcpStream) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for der in &self.config.extra_roots {
            roots.add(der.clone()).map_err(|e| {
                Error::config(format!("an extra root certificate is unusable: {e}"))
            })?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(self.config.host.clone())
            .map_err(|_| Error::config("the IMAP host is not a valid TLS server name"))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        tokio::time::timeout(self.config.timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| {
                Error::new(ErrorKind::Network, "the IMAP TLS handshake timed out").temporary()
            })?
            .map_err(|e| {
                Error::new(
                    ErrorKind::Network,
                    format!("IMAP TLS handshake failed: {e}"),
                )
                .temporary()
            })
    }

    /// Processes every waiting message of the selected mailbox, oldest first.
    async fn process(&self, session: &mut ImapSession, emitter: &Emitter) -> Result<ImapPoll> {
        let c = &self.config;
        let mailbox = self.timed(session.select(&c.mailbox)).await?;
        let validity = mailbox.uid_validity.unwrap_or(0);
        let query = match &c.after {
            AfterProcessing::Move { .. } => "UNDELETED".to_owned(),
            AfterProcessing::Flag { keyword } => format!("UNDELETED UNKEYWORD {keyword}"),
        };
        let mut uids: Vec<u32> = self
            .timed(session.uid_search(&query))
            .await?
            .into_iter()
            .collect();
        uids.sort_unstable();
        let mut poll = ImapPoll::default();
        for uid in uids {
            let key = format!("{}/{validity}/{uid}", c.identity());
            if let Some(outcome) = self.progress.outcome(&key, &[ACCEPTED, REJECTED]).await? {
                self.finish(session, uid, &outcome).await?;
                poll.resumed += 1;
                continue;
            }
            let raw = self.fetch(session, uid).await?;
            let Some(raw) = raw else { continue };
            let outcome = if raw.len() > MAX_MESSAGE_BYTES {
                REJECTED
            } else {
                match intake(&self.capture, emitter, &raw, &[]).await? {
                    Intake::Published { .. } => ACCEPTED,
                    Intake::Rejected(rejection) => {
                        tracing::info!(uid, %rejection, "IMAP message rejected");
                        REJECTED
                    }
                }
            };
            self.progress.mark(&key, outcome).await?;
            self.finish(session, uid, outcome).await?;
            if outcome == ACCEPTED {
                poll.accepted += 1;
            } else {
                poll.rejected += 1;
            }
        }
        Ok(poll)
    }

    async fn fetch(&self, session: &mut ImapSession, uid: u32) -> Result<Option<Vec<u8>>> {
        let fetched = tokio::time::timeout(self.config.timeout, async {
            let stream = session
                .uid_fetch(uid.to_string(), "(UID BODY.PEEK[])")
                .await?;
            stream.try_collect::<Vec<_>>().await
        })
        .await
        .map_err(|_| Error::new(ErrorKind::Network, "IMAP FETCH timed out").temporary())?
        .map_err(imap_error)?;
        Ok(fetched
            .iter()
            .find(|f| f.uid == Some(uid))
            .and_then(|f| f.body())
            .map(<[u8]>::to_vec))
    }

    /// Moves or flags a processed message.
    async fn finish(&self, session: &mut ImapSession, uid: u32, outcome: &str) -> Result<()> {
        let set = uid.to_string();
        match &self.config.after {
            AfterProcessing::Move { accepted, rejected } => {
                let target = if outcome == ACCEPTED {
                    accepted
                } else {
                    rejected
                };
                let caps = self.timed(session.capabilities()).await?;
                if caps.has_str("MOVE") {
                    self.timed(session.uid_mv(&set, target)).await
                } else {
                    self.timed(session.uid_copy(&set, target)).await?;
                    self.store_flags(session, &set, "\\Deleted").await?;
                    let uidplus = caps.has_str("UIDPLUS");
                    tokio::time::timeout(self.config.timeout, async {
                        if uidplus {
                            session
                                .uid_expunge(&set)
                                .await?
                                .try_collect::<Vec<_>>()
                                .await?;
                        } else {
                            session.expunge().await?.try_collect::<Vec<_>>().await?;
                        }
                        Ok::<_, async_imap::error::Error>(())
                    })
                    .await
                    .map_err(|_| {
                        Error::new(ErrorKind::Network, "IMAP EXPUNGE timed out").temporary()
                    })?
                    .map_err(imap_error)
                }
            }
            AfterProcessing::Flag { keyword } => {
                let flags = if outcome == ACCEPTED {
                    format!("\\Seen {keyword}")
                } else {
                    format!("\\Seen {keyword} {keyword}Rejected")
                };
                self.store_flags(session, &set, &flags).await
            }
        }
    }

    async fn store_flags(&self, session: &mut ImapSession, set: &str, flags: &str) -> Result<()> {
        tokio::time::timeout(self.config.timeout, async {
            session
                .uid_store(set, format!("+FLAGS.SILENT ({flags})"))
                .await?
                .try_collect::<Vec<_>>()
                .await
        })
        .await
        .map_err(|_| Error::new(ErrorKind::Network, "IMAP STORE timed out").temporary())?
        .map_err(imap_error)?;
        Ok(())
    }

    /// One connected stretch: process, wait (IDLE or sleep), repeat, until
    /// shutdown (`Ok(true)`) or an error.
    async fn session_loop(&self, emitter: &Emitter, shutdown: &mut Shutdown) -> Result<bool> {
        let (mut session, idle) = self.open().await?;
        let use_idle = idle && self.config.use_idle;
        loop {
            self.process(&mut session, emitter).await?;
            if shutdown.is_requested() {
                let _ = self.timed(session.logout()).await;
                return Ok(true);
            }
            if use_idle {
                let mut handle = session.idle();
                self.timed(handle.init()).await?;
                let wait = self.config.idle_timeout;
                let stopped = {
                    let (fut, _stop) = handle.wait_with_timeout(wait);
                    tokio::select! {
                        r = fut => { r.map_err(imap_error)?; false }
                        _ = shutdown.wait() => true,
                    }
                };
                if stopped {
                    return Ok(true);
                }
                session = self.timed(handle.done()).await?;
            } else {
                tokio::select! {
                    _ = shutdown.wait() => {
                        let _ = self.timed(session.logout()).await;
                        return Ok(true);
                    }
                    _ = tokio::time::sleep(self.config.poll_interval) => {}
                }
            }
        }
    }
}

#[async_trait]
impl EventSource for EmailImapSource {
    fn name(&self) -> &str {
        "email-imap"
    }

    async fn run(&self, emitter: Emitter, mut shutdown: Shutdown) -> Result<()> {
        let mut backoff = Duration::from_secs(1);
        loop {
            if shutdown.is_requested() {
                return Ok(());
            }
            match self.session_loop(&emitter, &mut shutdown).await {
                Ok(true) => return Ok(()),
                Ok(false) => backoff = Duration::from_secs(1),
                Err(e) => {
                    tracing::warn!(error = %e, mailbox = %self.config.identity(), "IMAP source error; reconnecting");
                    tokio::select! {
                        _ = shutdown.wait() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff =
                        (backoff * 2).min(self.config.poll_interval.max(Duration::from_secs(1)));
                }
            }
        }
    }
}

/// An IMAP error as the crate's error; login errors never echo the password
/// (the server's text is kept, the command is not).
fn imap_error(e: async_imap::error::Error) -> Error {
    use async_imap::error::Error as E;
    match e {
        E::Io(_) | E::ConnectionLost => {
            Error::new(ErrorKind::Network, format!("IMAP connection failed: {e}")).temporary()
        }
        E::No(_) | E::Bad(_) => {
            Error::new(ErrorKind::Platform, format!("IMAP server refused: {e}"))
        }
        other => Error::new(ErrorKind::Platform, format!("IMAP error: {other}")),
    }
}

fn redact(e: &async_imap::error::Error) -> String {
    match e {
        async_imap::error::Error::No(m) | async_imap::error::Error::Bad(m) => m.clone(),
        other => other.to_string(),
    }
}

/// The connection: plain TCP (loopback only, or before STARTTLS) or TLS.
#[derive(Debug)]
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
