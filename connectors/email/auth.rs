//! Sender authenticity of inbound mail: DMARC (DKIM and SPF, aligned with `From`) verified with `mail-auth` against injectable DNS records, or an `Authentication-Results` header trusted only from the configured receiver.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, DkimResult, DmarcResult, MessageAuthenticator, Parameters, ResolverCache,
    Txt,
};
use serde::Serialize;

use crate::{Error, ErrorKind, Result};

/// DNS TXT records supplied by the host (tests, air-gapped hosts, or pinned
/// keys): DKIM keys (`<selector>._domainkey.<domain>`), DMARC policies
/// (`_dmarc.<domain>`) and SPF policies (`<domain>`). Looked up before any DNS
/// query is made.
#[derive(Default)]
pub struct DnsRecords {
    txt: Mutex<HashMap<String, Txt>>,
}

impl std::fmt::Debug for DnsRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .txt
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("DnsRecords").field("names", &names).finish()
    }
}

impl DnsRecords {
    /// No records.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a TXT record; its kind is chosen by the name (`._domainkey.` →
    /// DKIM key, `_dmarc.` → DMARC, else SPF). A record that does not parse is
    /// an [`ErrorKind::Config`] error.
    pub fn txt(self, name: &str, value: &str) -> Result<Self> {
        let key = format!(
            "{}.",
            name.trim().trim_end_matches('.').to_ascii_lowercase()
        );
        let bad = |e: mail_auth::Error| {
            Error::new(
                ErrorKind::Config,
                format!("the TXT record of {name} does not parse: {e}"),
            )
        };
        let txt: Txt = if key.contains("._domainkey.") {
            mail_auth::common::verify::DomainKey::parse(value.as_bytes())
                .map_err(bad)?
                .into()
        } else if key.starts_with("_dmarc.") {
            mail_auth::dmarc::Dmarc::parse(value.as_bytes())
                .map_err(bad)?
                .into()
        } else {
            mail_auth::spf::Spf::parse(value.as_bytes())
                .map_err(bad)?
                .into()
        };
        if let Ok(mut map) = self.txt.lock() {
            map.insert(key, txt);
        }
        Ok(self)
    }
}

impl ResolverCache<String, Txt> for DnsRecords {
    fn get<Q>(&self, key: &Q) -> Option<Txt>
    where
        String: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.txt.lock().ok()?.get(key).cloned()
    }
    fn remove<Q>(&self, key: &Q) -> Option<Txt>
    where
        String: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.txt.lock().ok()?.remove(key)
    }
    fn insert(&self, key: String, value: Txt, _valid_until: Instant) {
        if let Ok(mut map) = self.txt.lock() {
            map.insert(key, value);
        }
    }
}

/// The SMTP session a message arrived in, when known (needed for SPF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpSession {
    /// The connecting client's IP address.
    pub client_ip: IpAddr,
    /// The `HELO`/`EHLO` name it gave.
    pub helo: String,
    /// The envelope sender (`MAIL FROM`).
    pub mail_from: String,
    /// This receiver's host name.
    pub receiver: String,
}

/// How a sender was found authentic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Authentic {
    /// DMARC passed (aligned DKIM or SPF), verified here.
    Dmarc {
        /// The `From` domain.
        domain: String,
        /// Whether an aligned DKIM signature passed.
        dkim: bool,
        /// Whether aligned SPF passed.
        spf: bool,
    },
    /// The trusted receiver's `Authentication-Results` said `dmarc=pass`.
    AuthenticationResults {
        /// The receiver's authserv-id.
        authserv_id: String,
    },
}

/// Verifies that a message really comes from its `From` domain.
pub struct Authenticator {
    resolver: Option<MessageAuthenticator>,
    records: Arc<DnsRecords>,
    trusted_authserv_id: Option<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("verifies_dmarc", &self.resolver.is_some())
            .field("records", &self.records)
            .field("trusted_authserv_id", &self.trusted_authserv_id)
            .finish()
    }
}

impl Authenticator {
    /// DMARC verification with only the supplied records: no DNS query is ever
    /// made (tests, air-gapped hosts); a name not supplied fails to resolve.
    pub fn offline(records: DnsRecords) -> Result<Self> {
        let config =
            ResolverConfig::from_parts(None, vec![], NameServerConfigGroup::with_capacity(0));
        let resolver = MessageAuthenticator::new(config, ResolverOpts::default()).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("could not set up the resolver: {e}"),
            )
        })?;
        Ok(Authenticator {
            resolver: Some(resolver),
            records: Arc::new(records),
            trusted_authserv_id: None,
        })
    }

    /// DMARC verification with the system's DNS resolver, the supplied records
    /// taking precedence.
    pub fn system_dns(records: DnsRecords) -> Result<Self> {
        let resolver = MessageAuthenticator::new_system_conf().map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("could not read the system DNS configuration: {e}"),
            )
        })?;
        Ok(Authenticator {
            resolver: Some(resolver),
            records: Arc::new(records),
            trusted_authserv_id: None,
        })
    }

    /// No verification here: only an `Authentication-Results` header whose
    /// authserv-id is `authserv_id` (the receiving server that verified the
    /// message, e.g. the SES or Postfix host in front of switchboard) is trusted.
    pub fn trusting_receiver(authserv_id: &str) -> Self {
        Authenticator {
            resolver: None,
            records: Arc::new(DnsRecords::new()),
            trusted_authserv_id: Some(authserv_id.trim().to_ascii_lowercase()),
        }
    }

    /// Also trusts `Authentication-Results` from `authserv_id`.
    #[must_use]
    pub fn trust_receiver(mut self, authserv_id: &str) -> Self {
        self.trusted_authserv_id = Some(authserv_id.trim().to_ascii_lowercase());
        self
    }

    /// Checks that `raw` is authentic for the `From` domain `from_domain`;
    /// `Err` carries why not.
    pub async fn verify(
        &self,
        raw: &[u8],
        from_domain: &str,
        session: Option<&SmtpSession>,
    ) -> std::result::Result<Authentic, String> {
        let from_domain = from_domain.to_ascii_lowercase();
        if let Some(id) = &self.trusted_authserv_id {
            if trusted_dmarc_pass(raw, id, &from_domain) {
                return Ok(Authentic::AuthenticationResults {
                    authserv_id: id.clone(),
                });
            }
        }
        let Some(resolver) = &self.resolver else {
            return Err("no Authentication-Results from the trusted receiver passed DMARC".into());
        };
        let Some(message) = AuthenticatedMessage::parse(raw) else {
            return Err("the message could not be parsed for authentication".into());
        };
        let records: &DnsRecords = &self.records;
        let dkim = resolver
            .verify_dkim(Parameters::new(&message).with_txt_cache(records))
            .await;
        let spf = match session {
            Some(s) => {
                let mail_from_domain = s
                    .mail_from
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_owned())
                    .unwrap_or_else(|| s.helo.clone());
                let out = resolver
                    .verify_spf(
                        Parameters::new(SpfParameters::verify_mail_from(
                            s.client_ip,
                            &s.helo,
                            &s.receiver,
                            &s.mail_from,
                        ))
                        .with_txt_cache(records),
                    )
                    .await;
                Some((out, mail_from_domain))
            }
            None => None,
        };
        let default_spf = mail_auth::SpfOutput::default();
        let (spf_output, mail_from_domain) = match &spf {
            Some((o, d)) => (o, d.as_str()),
            None => (&default_spf, ""),
        };
        let dmarc = resolver
            .verify_dmarc(
                Parameters::new(mail_auth::dmarc::verify::DmarcParameters {
                    message: &message,
                    dkim_output: &dkim,
                    rfc5321_mail_from_domain: mail_from_domain,
                    spf_output,
                    domain_suffix_fn: organizational_domain,
                })
                .with_txt_cache(records),
            )
            .await;
        let dkim_pass = *dmarc.dkim_result() == DmarcResult::Pass;
        let spf_pass = *dmarc.spf_result() == DmarcResult::Pass;
        if (dkim_pass || spf_pass) && dmarc.domain().eq_ignore_ascii_case(&from_domain) {
            return Ok(Authentic::Dmarc {
                domain: from_domain,
                dkim: dkim_pass,
                spf: spf_pass,
            });
        }
        let dkim_detail = dkim
            .iter()
            .map(|d| match d.result() {
                DkimResult::Pass => "pass".to_owned(),
                DkimResult::None => "none".to_owned(),
                other => format!("{other}"),
            })
            .collect::<Vec<_>>();
        Err(format!(
            "DMARC did not pass for {from_domain} (dkim: {}; dmarc: dkim {}, spf {})",
            if dkim_detail.is_empty() {
                "no signature".to_owned()
            } else {
                dkim_detail.join(", ")
            },
            dmarc.dkim_result(),
            dmarc.spf_result()
        ))
    }
}

/// The registrable domain approximated by its last two labels (a host needing
/// the Public Suffix List can verify upstream and trust its
/// `Authentication-Results` instead).
fn organizational_domain(domain: &str) -> &str {
    let mut dots = domain.rmatch_indices('.');
    match (dots.next(), dots.next()) {
        (Some(_), Some((i, _))) => &domain[i + 1..],
        _ => domain,
    }
}

/// True when an `Authentication-Results` header of the trusted `authserv_id`
/// says `dmarc=pass` for `header.from=<from_domain>`. Headers from any other
/// authserv-id are ignored (RFC 8601 §5: they may be forged by the sender).
pub fn trusted_dmarc_pass(raw: &[u8], authserv_id: &str, from_domain: &str) -> bool {
    let Some(message) = mail_parser::MessageParser::default().parse(raw) else {
        return false;
    };
    for (name, value) in message.headers_raw() {
        if !name.eq_ignore_ascii_case("Authentication-Results") {
            continue;
        }
        let unfolded: String = value
            .chars()
            .map(|c| {
                if c == '\r' || c == '\n' || c == '\t' {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        let mut parts = unfolded.split(';');
        let id = parts
            .next()
            .and_then(|p| p.split_whitespace().next())
            .unwrap_or("")
            .to_ascii_lowercase();
        if id != authserv_id {
            continue;
        }
        for result in parts {
            let lower = result.to_ascii_lowercase();
            let mut words = lower.split_whitespace();
            if words.next() != Some("dmarc=pass") {
                continue;
            }
            if lower
                .split_whitespace()
                .any(|w| w == format!("header.from={from_domain}"))
            {
                return true;
            }
        }
    }
    false
}
