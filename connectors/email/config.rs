//! SMTP account settings: server, port, TLS mode, AUTH credentials, sender, timeouts, pool size and pacing, from code or from a tenant's `smtp` connection.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use secrecy::SecretString;

use crate::tenant::{Connection, secret_names};
use crate::{Error, ErrorKind, Result};

/// The `platform` of SMTP connections (`delivery.connection`).
pub const PLATFORM: &str = "smtp";

/// The submission port with STARTTLS (RFC 6409).
pub const STARTTLS_PORT: u16 = 587;
/// The submission port with implicit TLS (RFC 8314).
pub const IMPLICIT_TLS_PORT: u16 = 465;

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection upgraded with `STARTTLS`, which is required (port 587).
    StartTls,
    /// TLS from the first byte (port 465, RFC 8314).
    ImplicitTls,
    /// No TLS at all. Only accepted for loopback servers (local relays, tests):
    /// credentials never cross a network in the clear.
    Plaintext,
}

impl SmtpSecurity {
    /// Parses `starttls`, `tls` / `implicit_tls` / `ssl`, or `none` / `plaintext`.
    pub fn parse(s: &str) -> Result<SmtpSecurity> {
        match s.trim().to_ascii_lowercase().as_str() {
            "starttls" => Ok(SmtpSecurity::StartTls),
            "tls" | "implicit_tls" | "implicit-tls" | "ssl" | "smtps" => {
                Ok(SmtpSecurity::ImplicitTls)
            }
            "none" | "plaintext" | "plain" => Ok(SmtpSecurity::Plaintext),
            other => Err(Error::new(
                ErrorKind::Config,
                format!("unknown SMTP security {other:?}: use starttls, tls or none"),
            )),
        }
    }

    /// The usual port for this mode (Plaintext: 25).
    pub fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::StartTls => STARTTLS_PORT,
            SmtpSecurity::ImplicitTls => IMPLICIT_TLS_PORT,
            SmtpSecurity::Plaintext => 25,
        }
    }
}

/// One SMTP account: where to submit and as whom.
///
/// ```
/// use switchboard::email::{SmtpAccount, SmtpSecurity};
/// let account = SmtpAccount::new("smtp.example.com", "Perks <perks@example.com>")
///     .unwrap()
///     .credentials("perks@example.com", "app-password".into());
/// assert_eq!(account.get_port(), 587);
/// assert_eq!(account.get_security(), SmtpSecurity::StartTls);
/// assert!(!format!("{account:?}").contains("app-password"));
/// ```
#[derive(Clone)]
pub struct SmtpAccount {
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
    pub(crate) security: SmtpSecurity,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<SecretString>,
    pub(crate) from: lettre::message::Mailbox,
    pub(crate) reply_to: Option<lettre::message::Mailbox>,
}

impl fmt::Debug for SmtpAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpAccount")
            .field("host", &self.host)
            .field("port", &self.get_port())
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("from", &self.from.to_string())
            .finish()
    }
}

impl SmtpAccount {
    /// An account on `host` sending as `from` (`"Name <addr@host>"` or a bare
    /// address), with STARTTLS on port 587 and no AUTH.
    pub fn new(host: impl Into<String>, from: &str) -> Result<SmtpAccount> {
        let host = host.into();
        if host.trim().is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::new(ErrorKind::Config, "the SMTP host is not valid"));
        }
        Ok(SmtpAccount {
            host,
            port: None,
            security: SmtpSecurity::StartTls,
            username: None,
            password: None,
            from: parse_mailbox(from, "from")?,
            reply_to: None,
        })
    }

    /// The account of a tenant's `smtp` connection: `data.host` (required),
    /// `data.port`, `data.security` (`starttls` default, `tls`, `none`),
    /// `data.username`, `data.from` (required), `data.reply_to`, and the secret
    /// `password`.
    pub fn from_connection(connection: &Connection) -> Result<SmtpAccount> {
        let host = connection
            .data_str("host")
            .ok_or_else(|| Error::new(ErrorKind::Config, "the smtp connection has no data.host"))?;
        let from = connection
            .data_str("from")
            .ok_or_else(|| Error::new(ErrorKind::Config, "the smtp connection has no data.from"))?;
        let mut account = SmtpAccount::new(host, from)?;
        if let Some(security) = connection.data_str("security") {
            account.security = SmtpSecurity::parse(security)?;
        }
        match connection.data.get("port") {
            None | Some(serde_json::Value::Null) => {}
            Some(v) => {
                let port = v
                    .as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p != 0)
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::Config,
                            "the smtp connection's data.port is not a port",
                        )
                    })?;
                account.port = Some(port);
            }
        }
        if let Some(reply_to) = connection.data_str("reply_to") {
            account.reply_to = Some(parse_mailbox(reply_to, "reply_to")?);
        }
        account.username = connection.data_str("username").map(str::to_owned);
        account.password = connection.secret(secret_names::PASSWORD).cloned();
        if account.password.is_some() && account.username.is_none() {
            account.username = Some(account.from.email.to_string());
        }
        account.check()?;
        Ok(account)
    }

    /// Sets the port (default: by security mode, 587 or 465).
    #[must_use]
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Sets the TLS mode.
    #[must_use]
    pub fn security(mut self, security: SmtpSecurity) -> Self {
        self.security = security;
        self
    }

    /// Sets AUTH credentials (PLAIN or LOGIN, whichever the server offers).
    #[must_use]
    pub fn credentials(mut self, username: impl Into<String>, password: SecretString) -> Self {
        self.username = Some(username.into());
        self.password = Some(password);
        self
    }

    /// Sets a `Reply-To` mailbox.
    pub fn reply_to(mut self, reply_to: &str) -> Result<Self> {
        self.reply_to = Some(parse_mailbox(reply_to, "reply_to")?);
        Ok(self)
    }

    /// The server's host name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port used.
    pub fn get_port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.security.default_port())
    }

    /// The TLS mode.
    pub fn get_security(&self) -> SmtpSecurity {
        self.security
    }

    /// The sender address (`From`, and the envelope sender).
    pub fn from_address(&self) -> String {
        self.from.email.to_string()
    }

    /// Refuses a plaintext connection to anything but a loopback server.
    pub(crate) fn check(&self) -> Result<()> {
        if self.security == SmtpSecurity::Plaintext && !is_loopback(&self.host) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "refusing SMTP without TLS to {}: plaintext is only allowed to a loopback server",
                    self.host
                ),
            ));
        }
        Ok(())
    }
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

pub(crate) fn parse_mailbox(s: &str, what: &str) -> Result<lettre::message::Mailbox> {
    s.trim().parse().map_err(|_| {
        Error::new(
            ErrorKind::Config,
            format!("the {what} address {s:?} is not a valid mailbox"),
        )
    })
}

/// Settings of an [`crate::email::SmtpDestination`] beyond the account.
#[derive(Debug, Clone)]
pub struct SmtpOptions {
    /// The destination's name in routes (default `email`).
    pub name: String,
    /// Connect, command and data timeout (default 30 s).
    pub timeout: Duration,
    /// Connections kept open per account (default 4).
    pub pool_size: u32,
    /// How long an idle pooled connection is kept (default 60 s).
    pub pool_idle: Duration,
    /// Messages per second per SMTP server, across tenants sharing it
    /// (default 5/s, burst 5).
    pub per_server_per_second: u32,
    /// The name sent in `EHLO` (default: `localhost`'s literal, lettre's default).
    pub hello_name: Option<String>,
}

impl Default for SmtpOptions {
    fn default() -> Self {
        SmtpOptions {
            name: "email".to_owned(),
            timeout: Duration::from_secs(30),
            pool_size: 4,
            pool_idle: Duration::from_secs(60),
            per_server_per_second: 5,
            hello_name: None,
        }
    }
}
