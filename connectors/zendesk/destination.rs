//! `ZendeskDestination`: messages become tickets or ticket comments, and call steps (`zendesk.call.*` events) run the tenant's `CallFlow` as durable deliveries.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::api::ZendeskClient;
use super::call_types::{Recording, RingInfo};
use super::calls::CallFlow;
use super::config::{PLATFORM, ZendeskAccount, ZendeskAuth, ZendeskConfig};
use super::errors::{FailureClass, ZendeskApiError};
use super::models::{Comment, NewTicket, RequesterRef, TicketUpdate};
use crate::destination::{Capabilities, Delivery, DeliveryError, Destination, RateLimit, Receipt};
use crate::event::Event;
use crate::message::{MessageFormat, Target};
use crate::tenant::TenantId;
use crate::{ErrorKind, Result};

/// The prefix of call-step event kinds.
pub const CALL_EVENT_PREFIX: &str = "zendesk.call.";

/// One telephony event of a call, as event data (`{"step": "ring", …}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum CallStep {
    /// The call rang in a group.
    Ring {
        /// The call id.
        call_id: String,
        /// The telephony group.
        group: String,
        /// The caller's number as delivered by the network.
        caller: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// An agent answered.
    Answer {
        /// The call id.
        call_id: String,
        /// The agent's email.
        agent: String,
        /// When.
        at: DateTime<Utc>,
        /// The ring's details, so the answer works in a process that never
        /// saw the ring (see [`RingInfo`]). Strongly recommended.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ring: Option<RingInfo>,
    },
    /// The call ended.
    Hangup {
        /// The call id.
        call_id: String,
        /// When.
        at: DateTime<Utc>,
        /// A recording file to attach.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recording: Option<PathBuf>,
        /// The ring's details (see [`RingInfo`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ring: Option<RingInfo>,
    },
    /// The agent finished wrap-up.
    WrapUpEnd {
        /// The call id.
        call_id: String,
        /// When.
        at: DateTime<Utc>,
        /// The ring's details (see [`RingInfo`]); without them a wrap-up in
        /// a process that never saw the ring cannot backfill the number.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ring: Option<RingInfo>,
    },
}

impl CallStep {
    /// The call id.
    pub fn call_id(&self) -> &str {
        match self {
            CallStep::Ring { call_id, .. }
            | CallStep::Answer { call_id, .. }
            | CallStep::Hangup { call_id, .. }
            | CallStep::WrapUpEnd { call_id, .. } => call_id,
        }
    }

    /// The ring's details this step carries (a ring step: its own).
    pub fn ring_info(&self) -> Option<RingInfo> {
        match self {
            CallStep::Ring {
                group, caller, at, ..
            } => Some(RingInfo {
                group: group.clone(),
                caller: caller.clone(),
                at: *at,
            }),
            CallStep::Answer { ring, .. }
            | CallStep::Hangup { ring, .. }
            | CallStep::WrapUpEnd { ring, .. } => ring.clone(),
        }
    }

    /// `ring`, `answer`, `hangup` or `wrap_up_end`.
    pub fn name(&self) -> &'static str {
        match self {
            CallStep::Ring { .. } => "ring",
            CallStep::Answer { .. } => "answer",
            CallStep::Hangup { .. } => "hangup",
            CallStep::WrapUpEnd { .. } => "wrap_up_end",
        }
    }

    /// The event for this step: kind `zendesk.call.{step}`, id `{call_id}:{step}`
    /// (so publishing a step twice delivers it once).
    pub fn to_event(&self, tenant: &TenantId) -> Result<Event> {
        let at = match self {
            CallStep::Ring { at, .. }
            | CallStep::Answer { at, .. }
            | CallStep::Hangup { at, .. }
            | CallStep::WrapUpEnd { at, .. } => *at,
        };
        Event::builder(
            format!("{}:{}", self.call_id(), self.name()),
            format!("{CALL_EVENT_PREFIX}{}", self.name()),
        )
        .occurred_at(at)
        .source("telephony")
        .tenant(tenant.as_str())
        .data(serde_json::to_value(self)?)
        .build()
    }
}

/// The Zendesk [`Destination`].
///
/// * A delivery whose event kind starts with `zendesk.call.` carries a
///   [`CallStep`]; it runs on the tenant's [`CallFlow`] (see
///   [`ZendeskDestination::with_call_flow`]). Ordering: a step that arrives
///   before the call rang is retried.
/// * Any other delivery to `Target::Ticket { id: None }` creates a ticket (the
///   message title as subject, the text as first comment, the event subject's
///   email as requester); to `Target::Ticket { id: Some(..) }` it adds a comment.
///
/// Credentials come from `delivery.connection` (platform `zendesk`, account =
/// subdomain, secret `access_token`, data field `email` for API tokens), or from
/// the fixed account of [`ZendeskDestination::with_fixed_account`].
pub struct ZendeskDestination {
    config: ZendeskConfig,
    client: ZendeskClient,
    fixed: Option<ZendeskAccount>,
    flows: RwLock<HashMap<TenantId, CallFlow>>,
}

impl std::fmt::Debug for ZendeskDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZendeskDestination")
            .field("name", &self.config.destination_name())
            .field("fixed", &self.fixed)
            .finish_non_exhaustive()
    }
}

impl ZendeskDestination {
    /// A multi-tenant destination (credentials per delivery from its connection).
    pub fn new(config: ZendeskConfig) -> Result<Self> {
        let client = ZendeskClient::new(&config)?;
        Ok(Self::with_client(config, client))
    }

    /// Sharing an existing client (and so its pacing).
    pub fn with_client(config: ZendeskConfig, client: ZendeskClient) -> Self {
        ZendeskDestination {
            config,
            client,
            fixed: None,
            flows: RwLock::new(HashMap::new()),
        }
    }

    /// A single-tenant destination with fixed credentials, used for the default
    /// tenant when it has no stored connection.
    pub fn with_fixed_account(
        config: ZendeskConfig,
        subdomain: &str,
        auth: ZendeskAuth,
    ) -> Result<Self> {
        let account = ZendeskAccount::new(&config, subdomain, auth)?;
        let mut d = Self::new(config)?;
        d.fixed = Some(account);
        Ok(d)
    }

    /// The client (to build [`CallFlow`]s sharing its pacing).
    pub fn client(&self) -> &ZendeskClient {
        &self.client
    }

    /// Registers the active call flow of `tenant` (replacing any previous one).
    pub fn with_call_flow(&self, tenant: TenantId, flow: CallFlow) {
        self.flows
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(tenant, flow);
    }

    /// The call flow of `tenant`, if registered.
    pub fn call_flow(&self, tenant: &TenantId) -> Option<CallFlow> {
        self.flows
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(tenant)
            .cloned()
    }

    fn account(&self, delivery: &Delivery) -> std::result::Result<ZendeskAccount, DeliveryError> {
        match (&delivery.connection, &self.fixed) {
            (Some(c), _) => {
                ZendeskAccount::from_connection(&self.config, c).map_err(|e| match e.kind() {
                    ErrorKind::Unauthorized => DeliveryError::disconnected(e.message()),
                    _ => DeliveryError::permanent(e.message()),
                })
            }
            (None, Some(a)) if delivery.tenant.is_default() => Ok(a.clone()),
            _ => Err(DeliveryError::disconnected(
                "this tenant has no Zendesk connection: connect Zendesk; queued work is kept",
            )),
        }
    }

    async fn run_step(&self, delivery: &Delivery) -> std::result::Result<Receipt, ZendeskApiError> {
        let step: CallStep = serde_json::from_value(delivery.event.data.clone()).map_err(|e| {
            ZendeskApiError::new(
                FailureClass::Permanent,
                0,
                "call step",
                format!("the event does not carry a call step: {e}"),
            )
        })?;
        let flow = self.call_flow(&delivery.tenant).ok_or_else(|| {
            ZendeskApiError::new(
                FailureClass::Temporary,
                0,
                "call step",
                "no call flow is started for this tenant yet",
            )
        })?;
        let call = step.call_id().to_owned();
        // Each step is self-sufficient: replaying the ring is idempotent (a
        // call already tracked or ignored is left alone), and in a process that
        // never saw the ring it tracks the call again and redoes the lookup.
        if let (false, Some(r)) = (matches!(step, CallStep::Ring { .. }), step.ring_info()) {
            flow.ring(&call, &r.group, &r.caller, r.at).await?;
        }
        let remote = match step {
            CallStep::Ring {
                call_id,
                group,
                caller,
                at,
            } => {
                flow.ring(&call_id, &group, &caller, at).await?;
                None
            }
            CallStep::Answer {
                call_id, agent, at, ..
            } => flow
                .answer(&call_id, &agent, at)
                .await?
                .map(|a| a.ticket_id.to_string()),
            CallStep::Hangup {
                call_id,
                at,
                recording,
                ..
            } => {
                flow.hangup(&call_id, at, recording.map(Recording::Path))
                    .await?;
                None
            }
            CallStep::WrapUpEnd { call_id, at, .. } => {
                flow.wrap_up_end(&call_id, at).await?.map(|u| u.to_string())
            }
        };
        Ok(Receipt {
            remote_id: remote,
            location: Some(format!("call:{call}")),
        })
    }

    async fn message(
        &self,
        delivery: &Delivery,
        account: &ZendeskAccount,
    ) -> std::result::Result<Receipt, ZendeskApiError> {
        let text = delivery.message.text.clone();
        match &delivery.target {
            Target::Ticket { id: Some(id) } => {
                let id: u64 = id.trim().parse().map_err(|_| {
                    ZendeskApiError::new(
                        FailureClass::Permanent,
                        0,
                        "update ticket",
                        format!("{id:?} is not a Zendesk ticket id"),
                    )
                })?;
                let update = TicketUpdate {
                    comment: Some(Comment::internal(text)),
                    ..TicketUpdate::default()
                };
                let t = self.client.update_ticket(account, id, &update).await?;
                Ok(Receipt {
                    remote_id: Some(t.id.to_string()),
                    location: Some(format!("ticket:{}", t.id)),
                })
            }
            Target::Ticket { id: None } => {
                let subject = delivery
                    .message
                    .title
                    .clone()
                    .filter(|t| !t.trim().is_empty());
                let requester = delivery.event.subject.as_ref().and_then(|p| {
                    p.primary_email().map(|e| RequesterRef {
                        name: p.name.clone().unwrap_or_else(|| e.to_owned()),
                        email: e.to_owned(),
                    })
                });
                let ticket = NewTicket {
                    subject,
                    comment: Some(Comment::public(text)),
                    requester,
                    tags: vec!["switchboard".to_owned()],
                    external_id: Some(format!("switchboard-delivery:{}", delivery.event.id)),
                    ..NewTicket::default()
                };
                // Retries after a lost answer must not open a second ticket.
                let ext = ticket.external_id.clone().unwrap_or_default();
                if let Some(t) = self
                    .client
                    .tickets_by_external_id(account, &ext)
                    .await?
                    .into_iter()
                    .next()
                {
                    return Ok(Receipt {
                        remote_id: Some(t.id.to_string()),
                        location: Some(format!("ticket:{}", t.id)),
                    });
                }
                let t = self.client.create_ticket(account, &ticket).await?;
                Ok(Receipt {
                    remote_id: Some(t.id.to_string()),
                    location: Some(format!("ticket:{}", t.id)),
                })
            }
            other => Err(ZendeskApiError::new(
                FailureClass::Permanent,
                0,
                "deliver",
                format!("Zendesk delivers to tickets only, not to {other:?}"),
            )),
        }
    }
}

#[async_trait]
impl Destination for ZendeskDestination {
    fn name(&self) -> &str {
        self.config.destination_name()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dm: false,
            channel: false,
            threads: true,
            max_text: Some(65_535),
            format: MessageFormat::Plain,
            global_limits: vec![RateLimit::per_minute(self.config.budget_per_minute())],
            target_limits: Vec::new(),
        }
    }

    fn platform(&self) -> Option<&str> {
        Some(PLATFORM)
    }

    fn has_fixed_credentials(&self) -> bool {
        self.fixed.is_some()
    }

    async fn deliver(&self, delivery: &Delivery) -> std::result::Result<Receipt, DeliveryError> {
        if delivery.event.kind.starts_with(CALL_EVENT_PREFIX) {
            // The tenant's connection of this delivery wins over the account
            // the flow was built with (credentials may have been rotated).
            if delivery.connection.is_some() {
                let account = self.account(delivery)?;
                if let Some(flow) = self.call_flow(&delivery.tenant) {
                    flow.set_account(account);
                }
            }
            return self
                .run_step(delivery)
                .await
                .map_err(|e| e.to_delivery_error());
        }
        let account = self.account(delivery)?;
        self.message(delivery, &account)
            .await
            .map_err(|e| e.to_delivery_error())
    }
}
