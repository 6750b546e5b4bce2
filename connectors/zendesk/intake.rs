//! `ZendeskWebhookSource`: Zendesk webhooks of several tenants as an `EventSource`, and (feature `axum`) a ready-made router for them.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;

use super::webhook::ZendeskWebhook;
use crate::inbound::{self, InboundRequest, InboundResponse};
use crate::source::{Emitter, EventSource, Shutdown};
use crate::tenant::TenantId;
use crate::{Error, ErrorKind, Result};

/// Zendesk webhook intake for several tenants, as an [`EventSource`]: register
/// it with [`crate::Switchboard`]'s builder (`.source(…)`) and hand its clones
/// to the HTTP layer ([`ZendeskWebhookSource::handle`], or [`router`] with the
/// `axum` feature). Requests are answered `503` until the switchboard runs the
/// source (Zendesk retries them), then verified and published with the
/// tenant's [`ZendeskWebhook`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ZendeskWebhookSource {
    hooks: Arc<HashMap<TenantId, ZendeskWebhook>>,
    emitter: Arc<OnceLock<Emitter>>,
}

impl ZendeskWebhookSource {
    /// An intake for these receivers, one per tenant (a later one for the same
    /// tenant replaces an earlier one).
    pub fn new(hooks: impl IntoIterator<Item = ZendeskWebhook>) -> Self {
        ZendeskWebhookSource {
            hooks: Arc::new(
                hooks
                    .into_iter()
                    .map(|h| (h.tenant_id().clone(), h))
                    .collect(),
            ),
            emitter: Arc::new(OnceLock::new()),
        }
    }

    /// True once the switchboard runs this source (requests are published).
    pub fn is_running(&self) -> bool {
        self.emitter.get().is_some()
    }

    /// Handles one webhook request of `tenant`: `404` for a tenant without a
    /// receiver, `503` before the source runs, else [`ZendeskWebhook::handle`].
    pub async fn handle(&self, tenant: &TenantId, request: &InboundRequest) -> InboundResponse {
        let Some(hook) = self.hooks.get(tenant) else {
            return inbound::error_response(&Error::new(
                ErrorKind::NotFound,
                "no Zendesk webhook is configured for this tenant",
            ));
        };
        let Some(emitter) = self.emitter.get() else {
            return inbound::response(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                "not ready",
            );
        };
        hook.handle(request, emitter).await
    }
}

#[async_trait]
impl EventSource for ZendeskWebhookSource {
    fn name(&self) -> &str {
        "zendesk-webhooks"
    }

    async fn run(&self, emitter: Emitter, mut shutdown: Shutdown) -> Result<()> {
        // A second run (another switchboard) keeps the first emitter.
        let _ = self.emitter.set(emitter);
        shutdown.wait().await;
        Ok(())
    }
}

/// An axum router for the intake: `POST /zendesk/webhook` (the default
/// tenant) and `POST /zendesk/webhook/{tenant}`. Bodies over the largest
/// receiver's cap are refused with `413` before verification.
#[cfg(feature = "axum")]
pub fn router(source: ZendeskWebhookSource, body_limit: usize) -> axum::Router {
    use axum::body::Body;
    use axum::extract::{Path, Request};
    use axum::response::Response;
    use axum::routing::post;

    async fn run(
        source: ZendeskWebhookSource,
        tenant: TenantId,
        request: Request,
        limit: usize,
    ) -> Response {
        let (parts, body) = request.into_parts();
        let response = match axum::body::to_bytes(body, limit).await {
            Ok(bytes) => {
                source
                    .handle(&tenant, &http::Request::from_parts(parts, bytes))
                    .await
            }
            Err(_) => {
                inbound::error_response(&Error::new(ErrorKind::PayloadTooLarge, "body too large"))
            }
        };
        response.map(Body::from)
    }

    let default_source = source.clone();
    axum::Router::new()
        .route(
            "/zendesk/webhook",
            post(move |request: Request| {
                let source = default_source.clone();
                async move { run(source, TenantId::default_tenant(), request, body_limit).await }
            }),
        )
        .route(
            "/zendesk/webhook/{tenant}",
            post(move |Path(tenant): Path<String>, request: Request| {
                let source = source.clone();
                async move {
                    match TenantId::new(&tenant) {
                        Ok(t) => run(source, t, request, body_limit).await,
                        Err(e) => inbound::error_response(&e).map(Body::from),
                    }
                }
            }),
        )
}
