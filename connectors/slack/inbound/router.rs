//! Ready-made axum routes for `SlackInbound` and `SlackOAuth` (feature `axum`).

use std::sync::Arc;

use super::SlackInbound;
use crate::inbound::{InboundRequest, error_response};
use crate::{Error, ErrorKind};

/// Ready-made axum routes: `POST /slack/commands`, `POST /slack/interactions`,
/// `POST /slack/events`, and with `oauth` `GET /slack/install` and
/// `GET /slack/oauth/callback`.
pub fn router(
    inbound: SlackInbound,
    oauth: Option<Arc<super::super::oauth::SlackOAuth>>,
) -> axum::Router {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::response::Response;
    use axum::routing::{get, post};

    async fn into_inbound(
        request: Request,
        limit: usize,
    ) -> std::result::Result<InboundRequest, Response> {
        let (parts, body) = request.into_parts();
        match axum::body::to_bytes(body, limit).await {
            Ok(bytes) => Ok(http::Request::from_parts(parts, bytes)),
            Err(_) => Err(error_response(&Error::new(
                ErrorKind::PayloadTooLarge,
                "body too large",
            ))
            .map(Body::from)),
        }
    }

    let limit = inbound.inner.body_limit;
    let mut router = axum::Router::new();
    for (path, which) in [
        ("/slack/commands", 0u8),
        ("/slack/interactions", 1),
        ("/slack/events", 2),
    ] {
        let inbound = inbound.clone();
        router = router.route(
            path,
            post(move |request: Request| {
                let inbound = inbound.clone();
                async move {
                    let request = match into_inbound(request, limit).await {
                        Ok(r) => r,
                        Err(resp) => return resp,
                    };
                    let resp = match which {
                        0 => inbound.handle_command(&request).await,
                        1 => inbound.handle_interaction(&request).await,
                        _ => inbound.handle_event(&request).await,
                    };
                    resp.map(Body::from)
                }
            }),
        );
    }
    if let Some(oauth) = oauth {
        let install = oauth.clone();
        router = router
            .route(
                "/slack/install",
                get(move |request: Request| {
                    let oauth = install.clone();
                    async move {
                        let request = match into_inbound(request, 0).await {
                            Ok(r) => r,
                            Err(resp) => return resp,
                        };
                        oauth.handle_install(&request).await.map(Body::from)
                    }
                }),
            )
            .route(
                "/slack/oauth/callback",
                get(move |request: Request| {
                    let oauth = oauth.clone();
                    async move {
                        let request = match into_inbound(request, 0).await {
                            Ok(r) => r,
                            Err(resp) => return resp,
                        };
                        oauth.handle_callback(&request).await.map(Body::from)
                    }
                }),
            );
    }
    router
}
