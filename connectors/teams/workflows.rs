//! `WorkflowsDestination`: channel-only notifications without a bot, posted as an Adaptive Card to a Teams Workflows (Power Automate) "When a Teams webhook request is received" URL — the replacement for the retired Office 365 connectors.

use std::collections::HashMap;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::api::{Service, TeamsApiError, read_json};
use super::card::{ADAPTIVE_CARD_CONTENT_TYPE, MAX_TEXT_CHARS, TeamsMessage};
use crate::destination::{Capabilities, Delivery, DeliveryError, Destination, RateLimit, Receipt};
use crate::message::{MessageFormat, Target};
use crate::{Error, ErrorKind, Result};

/// The platform of Workflows connections: `account` is any id the host
/// chooses for the tenant; each channel's URL is the secret
/// `webhook:{channel name}` (lower-case).
pub const WORKFLOWS_PLATFORM: &str = "teams_workflows";
/// The secret-name prefix of a channel's webhook URL in a Workflows connection.
pub const WEBHOOK_SECRET_PREFIX: &str = "webhook:";

/// The body a Workflows webhook takes: a `message` whose `attachments` hold
/// one Adaptive Card (`contentUrl` null). Workflows accept Adaptive Cards only.
pub fn workflows_payload(message: &TeamsMessage) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": ADAPTIVE_CARD_CONTENT_TYPE,
            "contentUrl": null,
            "content": message.card,
        }],
    })
}

fn check_url(url: &str) -> Result<()> {
    let parsed = url::Url::parse(url.trim())
        .map_err(|_| Error::new(ErrorKind::Config, "a Workflows webhook URL is not a URL"))?;
    if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none() {
        return Err(Error::new(
            ErrorKind::Config,
            "a Workflows webhook URL must be an https URL",
        ));
    }
    Ok(())
}

/// The Workflows [`Destination`] (platform [`WORKFLOWS_PLATFORM`]): channel
/// targets only, by name. A channel's URL comes from the delivery's tenant
/// connection (secret `webhook:{name}`), or, for the default tenant, from
/// [`WorkflowsDestination::channel`]. The URL carries its own signature
/// (`sig=`), so it is a secret: never logged or shown. 202 Accepted means
/// the flow run was started; failures are classified with the rest of the
/// connector ([`super::classify`]: 429 → Retry-After, 401/403 → disconnected,
/// 404 → the workflow was deleted).
pub struct WorkflowsDestination {
    name: String,
    http: reqwest::Client,
    fixed: HashMap<String, SecretString>,
    limit: RateLimit,
}

impl std::fmt::Debug for WorkflowsDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut channels: Vec<&String> = self.fixed.keys().collect();
        channels.sort();
        f.debug_struct("WorkflowsDestination")
            .field("name", &self.name)
            .field("channels", &channels)
            .finish_non_exhaustive()
    }
}

impl WorkflowsDestination {
    /// A destination named `teams_workflows` with a 10 s timeout, paced to 4
    /// posts per second per channel.
    pub fn new() -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Config, "cannot build an HTTP client").with_source(e)
            })?;
        Ok(WorkflowsDestination {
            name: WORKFLOWS_PLATFORM.to_owned(),
            http,
            fixed: HashMap::new(),
            limit: RateLimit::per_second(4),
        })
    }

    /// Renames the destination (what routes refer to).
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The default tenant's webhook URL for the channel `name`.
    pub fn channel(mut self, name: &str, url: SecretString) -> Result<Self> {
        check_url(url.expose_secret())?;
        self.fixed
            .insert(name.trim().trim_start_matches('#').to_lowercase(), url);
        Ok(self)
    }

    fn url(
        &self,
        delivery: &Delivery,
        channel: &str,
    ) -> std::result::Result<SecretString, DeliveryError> {
        let key = channel.trim().trim_start_matches('#').to_lowercase();
        match &delivery.connection {
            Some(c) => {
                if !c.is_connected() {
                    return Err(DeliveryError::disconnected(format!(
                        "the Workflows connection {} is disconnected: reconnect it; queued messages are kept",
                        c.key
                    )));
                }
                c.secret(&format!("{WEBHOOK_SECRET_PREFIX}{key}"))
                    .cloned()
                    .ok_or_else(|| {
                        DeliveryError::permanent(format!(
                            "tenant {} has no Workflows webhook for channel {key:?}: add the workflow's URL as secret {WEBHOOK_SECRET_PREFIX}{key} of its connection, then replay",
                            delivery.tenant
                        ))
                    })
            }
            None if delivery.tenant.is_default() && !self.fixed.is_empty() => {
                self.fixed.get(&key).cloned().ok_or_else(|| {
                    DeliveryError::permanent(format!(
                        "no Workflows webhook for channel {key:?}: add one with WorkflowsDestination::channel, then replay"
                    ))
                })
            }
            None => Err(DeliveryError::disconnected(format!(
                "tenant {} has no Workflows connection: connect it; queued messages are kept",
                delivery.tenant
            ))),
        }
    }
}

#[async_trait]
impl Destination for WorkflowsDestination {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dm: false,
            channel: true,
            threads: false,
            max_text: Some(MAX_TEXT_CHARS),
            format: MessageFormat::Plain,
            global_limits: Vec::new(),
            target_limits: vec![self.limit],
        }
    }

    fn platform(&self) -> Option<&str> {
        Some(WORKFLOWS_PLATFORM)
    }

    fn has_fixed_credentials(&self) -> bool {
        !self.fixed.is_empty()
    }

    async fn deliver(&self, delivery: &Delivery) -> std::result::Result<Receipt, DeliveryError> {
        const OP: &str = "post to workflow";
        let channel = match &delivery.target {
            Target::ChannelName { name } => name.as_str(),
            Target::ChannelId { id } => id.as_str(),
            other => {
                return Err(DeliveryError::permanent(format!(
                    "a Workflows webhook only posts to channels, not {}: route DMs to the Teams bot destination",
                    other.rate_key(None)
                )));
            }
        };
        if delivery.message.text.trim().is_empty() && delivery.message.title.is_none() {
            return Err(DeliveryError::permanent(
                "the route's template rendered an empty message: fix the template, then replay",
            ));
        }
        let url = self.url(delivery, channel)?;
        let body = workflows_payload(&TeamsMessage::from_message(&delivery.message));
        let response = self
            .http
            .post(url.expose_secret())
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                TeamsApiError::network(Service::Workflows, OP, &e.without_url()).to_delivery_error()
            })?;
        read_json(Service::Workflows, OP, response)
            .await
            .map_err(|e| e.to_delivery_error())?;
        Ok(Receipt {
            remote_id: None,
            location: Some(channel.to_owned()),
        })
    }
}
