//! `SmtpDestination`: notifications submitted over SMTP with lettre (STARTTLS or implicit TLS with rustls, AUTH, pooled connections, timeouts, per-server pacing), and the one place SMTP replies are classified.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;

use super::config::{PLATFORM, SmtpAccount, SmtpOptions, SmtpSecurity};
use super::message::{self, UnsubscribeFn};
use crate::destination::{Capabilities, Delivery, DeliveryError, Destination, Receipt};
use crate::message::MessageFormat;
use crate::tenant::ConnectionKey;
use crate::{Error, ErrorKind, Result};

type Transport = AsyncSmtpTransport<Tokio1Executor>;
/// Cached transports by connection key and revision.
type TransportCache = HashMap<(ConnectionKey, u64), (SmtpAccount, Arc<Transport>)>;

/// Sends deliveries as email over SMTP.
///
/// Multi-tenant: the account (server, credentials, sender) comes from each
/// delivery's `smtp` connection ([`SmtpAccount::from_connection`]); a destination
/// built with [`SmtpDestination::with_account`] also sends the default tenant's
/// mail with that fixed account. Transports (each with its connection pool) are
/// cached per connection key and revision, so a changed password takes effect on
/// the next delivery.
pub struct SmtpDestination {
    options: SmtpOptions,
    fixed: Option<(SmtpAccount, Arc<Transport>)>,
    transports: Mutex<TransportCache>,
    pacing: DefaultKeyedRateLimiter<String>,
    unsubscribe: UnsubscribeFn,
}

impl std::fmt::Debug for SmtpDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpDestination")
            .field("options", &self.options)
            .field("fixed", &self.fixed.as_ref().map(|(a, _)| a))
            .finish_non_exhaustive()
    }
}

impl SmtpDestination {
    /// A destination reading its account from each delivery's `smtp` connection.
    pub fn new(options: SmtpOptions) -> Result<SmtpDestination> {
        let per_second = NonZeroU32::new(options.per_server_per_second.max(1))
            .ok_or_else(|| Error::new(ErrorKind::Config, "pacing must be positive"))?;
        Ok(SmtpDestination {
            pacing: RateLimiter::dashmap(Quota::per_second(per_second)),
            options,
            fixed: None,
            transports: Mutex::new(HashMap::new()),
            unsubscribe: Arc::new(message::default_unsubscribe),
        })
    }

    /// A destination with one fixed account, for single-tenant hosts (used when a
    /// delivery carries no connection).
    pub fn with_account(account: SmtpAccount, options: SmtpOptions) -> Result<SmtpDestination> {
        let mut d = SmtpDestination::new(options)?;
        let transport = Arc::new(build_transport(&account, &d.options)?);
        d.fixed = Some((account, transport));
        Ok(d)
    }

    /// Chooses the `List-Unsubscribe` URL of each delivery (default: the event's
    /// `data.unsubscribe_url`). `https:` URLs also get
    /// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058).
    #[must_use]
    pub fn unsubscribe_url(
        mut self,
        f: impl Fn(&Delivery) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.unsubscribe = Arc::new(f);
        self
    }

    fn account_for(
        &self,
        delivery: &Delivery,
    ) -> Result<(SmtpAccount, Arc<Transport>), DeliveryError> {
        let Some(connection) = &delivery.connection else {
            return self.fixed.clone().ok_or_else(|| {
                DeliveryError::disconnected(format!(
                    "tenant {} has no smtp connection",
                    delivery.tenant
                ))
            });
        };
        let key = (connection.key.clone(), connection.revision);
        let mut cache = self
            .transports
            .lock()
            .map_err(|_| DeliveryError::temporary("the SMTP transport cache is poisoned"))?;
        if let Some(hit) = cache.get(&key) {
            return Ok(hit.clone());
        }
        let account = SmtpAccount::from_connection(connection).map_err(|e| {
            DeliveryError::disconnected(format!(
                "the smtp connection is not usable: {}",
                e.message()
            ))
        })?;
        let transport = Arc::new(build_transport(&account, &self.options).map_err(|e| {
            DeliveryError::disconnected(format!(
                "the smtp connection is not usable: {}",
                e.message()
            ))
        })?);
        cache.retain(|(k, _), _| *k != key.0);
        cache.insert(key, (account.clone(), transport.clone()));
        Ok((account, transport))
    }
}

/// Builds a pooled lettre transport for an account.
fn build_transport(account: &SmtpAccount, options: &SmtpOptions) -> Result<Transport> {
    account.check()?;
    let tls_params = || {
        TlsParameters::builder(account.host.clone())
            .build_rustls()
            .map_err(|e| Error::new(ErrorKind::Config, "could not set up TLS").with_source(e))
    };
    let tls = match account.security {
        SmtpSecurity::StartTls => Tls::Required(tls_params()?),
        SmtpSecurity::ImplicitTls => Tls::Wrapper(tls_params()?),
        SmtpSecurity::Plaintext => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(account.host.clone())
        .port(account.get_port())
        .tls(tls)
        .timeout(Some(options.timeout))
        .pool_config(
            PoolConfig::new()
                .max_size(options.pool_size.max(1))
                .idle_timeout(options.pool_idle),
        );
    if let Some(name) = &options.hello_name {
        builder = builder.hello_name(ClientId::Domain(name.clone()));
    }
    if let (Some(user), Some(password)) = (&account.username, &account.password) {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.expose_secret().to_owned(),
        ));
    }
    Ok(builder.build())
}

#[async_trait]
impl Destination for SmtpDestination {
    fn name(&self) -> &str {
        &self.options.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dm: true,
            channel: false,
            threads: false,
            max_text: None,
            format: MessageFormat::Html,
            global_limits: Vec::new(),
            target_limits: Vec::new(),
        }
    }

    fn platform(&self) -> Option<&str> {
        Some(PLATFORM)
    }

    fn has_fixed_credentials(&self) -> bool {
        self.fixed.is_some()
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<Receipt, DeliveryError> {
        let (account, transport) = self.account_for(delivery)?;
        let (email, id, to) = message::build(
            delivery,
            &account.from,
            account.reply_to.as_ref(),
            (self.unsubscribe)(delivery),
        )?;
        self.pacing
            .until_key_ready(&format!("{}:{}", account.host, account.get_port()))
            .await;
        match transport.send(email).await {
            Ok(_) => Ok(Receipt {
                remote_id: Some(id),
                location: Some(to),
            }),
            Err(e) => Err(classify(&e)),
        }
    }
}

/// Classifies a lettre SMTP error (see [`classify_reply`] for server replies):
/// connection, network, TLS and timeout failures are temporary; a missing AUTH
/// mechanism disconnects the account; other client-side failures are permanent.
pub fn classify(error: &lettre::transport::smtp::Error) -> DeliveryError {
    if let Some(code) = error.status() {
        let text = std::error::Error::source(error)
            .map(ToString::to_string)
            .unwrap_or_default();
        return classify_reply(u16::from(code), &text);
    }
    let text = error.to_string();
    if error.is_client() {
        let lower = text.to_ascii_lowercase();
        if lower.contains("authentication") || lower.contains("starttls") {
            return DeliveryError::disconnected(format!(
                "the SMTP server cannot be used with this account: {text}"
            ));
        }
        return DeliveryError::permanent(format!("SMTP client error: {text}"));
    }
    DeliveryError::temporary(format!("SMTP connection failed: {text}"))
}

/// Classifies an SMTP reply code and its text, the one place this connector
/// maps SMTP answers:
///
/// * 4xx → temporary (retried with backoff);
/// * 535, 530, 534 and any 5xx whose enhanced code is 5.7.8 or 5.7.9
///   (authentication failed or required) → disconnected: the tenant's mail
///   is parked until the account is fixed;
/// * 550, 551 and 553 with an enhanced code 5.1.x (bad destination mailbox) →
///   recipient unknown;
/// * other 5xx → permanent (dead-lettered).
///
/// ```
/// use switchboard::DeliveryError;
/// use switchboard::email::classify_reply;
/// assert_eq!(classify_reply(550, "5.1.1 <x@example.com>: user unknown").class(), "recipient_unknown");
/// assert_eq!(classify_reply(550, "5.7.1 relaying denied").class(), "permanent");
/// assert_eq!(classify_reply(451, "4.3.0 try later").class(), "temporary");
/// assert_eq!(classify_reply(535, "5.7.8 bad credentials").class(), "disconnected");
/// ```
pub fn classify_reply(code: u16, text: &str) -> DeliveryError {
    let text = text.trim();
    let reason = format!("SMTP {code} {text}");
    let enhanced = enhanced_code(text);
    match code {
        400..=499 => DeliveryError::temporary(reason),
        530 | 534 | 535 => DeliveryError::disconnected(reason),
        500..=599 if matches!(enhanced, Some((5, 7, 8 | 9))) => DeliveryError::disconnected(reason),
        550 | 551 | 553 if matches!(enhanced, Some((5, 1, _))) => {
            DeliveryError::recipient_unknown(reason)
        }
        _ => DeliveryError::permanent(reason),
    }
}

/// The RFC 3463 enhanced status code at the start of a reply text (`5.1.1 …`).
fn enhanced_code(text: &str) -> Option<(u8, u16, u16)> {
    let word = text.split_whitespace().next()?;
    let mut parts = word.split('.');
    let class = parts.next()?.parse().ok()?;
    let subject = parts.next()?.parse().ok()?;
    let detail = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !matches!(class, 2 | 4 | 5) {
        return None;
    }
    Some((class, subject, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_codes() {
        assert_eq!(enhanced_code("5.1.1 no such user"), Some((5, 1, 1)));
        assert_eq!(enhanced_code("4.7.0 greylisted"), Some((4, 7, 0)));
        assert_eq!(enhanced_code("no such user"), None);
        assert_eq!(enhanced_code("5.1 x"), None);
    }

    #[test]
    fn replies() {
        assert_eq!(classify_reply(421, "4.4.2 timeout").class(), "temporary");
        assert_eq!(classify_reply(452, "4.2.2 full").class(), "temporary");
        assert_eq!(
            classify_reply(551, "5.1.6 moved").class(),
            "recipient_unknown"
        );
        assert_eq!(
            classify_reply(553, "5.1.3 bad syntax").class(),
            "recipient_unknown"
        );
        assert_eq!(
            classify_reply(550, "mailbox unavailable").class(),
            "permanent"
        );
        assert_eq!(classify_reply(554, "5.7.1 spam").class(), "permanent");
        assert_eq!(classify_reply(552, "5.3.4 too big").class(), "permanent");
        assert_eq!(
            classify_reply(530, "5.7.0 auth required").class(),
            "disconnected"
        );
        assert_eq!(
            classify_reply(554, "5.7.8 bad creds").class(),
            "disconnected"
        );
    }
}
