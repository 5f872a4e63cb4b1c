//! The proxy request path, outermost first. Construction and order only; each layer documents
//! itself.
//!
//!  1. Overhead             — `Server-Timing: overhead;dur=…, upstream;dur=…`, overhead histogram
//!  2. CatchPanic           — a panic becomes a 500 instead of a dropped connection
//!  3. SensitiveHeaders     — `Authorization`, `x-api-key`, `x-goog-api-key` never printed
//!  4. RequestId            — set (UUID) and propagate `x-request-id`
//!  5. StreamHeaders        — `X-Accel-Buffering: no` on event streams, so no proxy in front buffers
//!  6. ErrorResponse        — library errors → JSON in the client's format; `Infallible` above
//!  7. ClientIp             — peer, or `X-Forwarded-For` from `TRUSTED_PROXIES`  → `ClientIp`
//!  8. ProxyKeyAuth         — group from `/proxy/{group}`, key checked and stripped → `Principal` (401/404)
//!  9. GroupLimit           — the URL group's `group_rpm` / `group_max_concurrency`, queued up to `limit_queue_timeout_ms` (429)
//! 10. ConcurrencyLimit     — `MAX_CONCURRENT_REQUESTS`, shed at once, held until the body ends (429)
//! 11. BodyBuffer           — body ≤ `MAX_REQUEST_BODY_MB` buffered for replay (413), within `MAX_INFLIGHT_BODY_MB` (503)
//! 12. GroupPolicy          — the URL group's settings (`LogSettings`, `RetrySettings`, `HealthSettings`, `ClientSettings`, …)
//! 13. RequestLog           — one record per attempt: request metrics, then the batching writer
//! 14. JsonBody             — a body that claims JSON and does not parse never spends a key (400)
//! 15. Rewrite              — aggregate → sub-group (`RoutedGroup`), overrides, redirects (400/503)
//! 16. GroupPolicy          — a sub-group's settings over the aggregate's, when routing chose one (`RetrySettings`, `HealthSettings`, `ClientSettings`)
//! 17. ModelList            — `…/models` answers include the redirect rules' models
//! 18. Retry<RetryOnOtherKey> — re-runs 19–22 on an untried key (`ExcludedKeys`), or after a provider
//!     failure with every usable key tried, on the one that failed longest ago
//! 19. KeySelect            — key from the pool (keys at `key_rpm`/`key_rpd`/`key_max_concurrency` passed over), credential injected → `SelectedKey` (503; 429 with every key at a limit)
//! 20. HeaderRules          — the group's header rules, after the credential
//! 21. KeyHealth            — whose fault (policies, then built-in rules; an empty `2xx` peeked) → pool, `AttemptOutcome`
//! 22. UpstreamBalance      — weighted upstream, URI rewritten → `UpstreamTarget` (502)
//! 23. UpstreamClient       — per-phase timeouts, outbound proxy, streaming body (502/504)
//!
//! The library's layers keep the library's order (`gpt_load_tower::stack::ORDER`); the others
//! sit at the insertion points the library documents (`gpt_load_tower::stack`, "Adding your own
//! layers"). The tests check both the built stack and this list against `ORDER`, so a library
//! layer added or moved fails them until this file follows.

use std::convert::Infallible;

use axum::body::Body;
use gpt_load_tower::{
    auth::ProxyKeyAuthLayer,
    blacklist::KeyHealthLayer,
    body::{BodyBudget, BodyBufferLayer},
    error::ErrorResponseLayer,
    keys::KeySelectLayer,
    limit::{ConcurrencyLimitLayer, GroupLimitLayer},
    log::{ChannelSink, RequestLogLayer},
    retry::RetryOnOtherKey,
    rewrite::{HeaderRulesLayer, RewriteLayer},
    timing::OverheadLayer,
    upstream::UpstreamBalanceLayer,
    validate::JsonBodyLayer,
};
use http::{HeaderName, Request, Response, header};
use tower::{Service, ServiceBuilder, retry::RetryLayer, util::BoxCloneSyncService};
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    sensitive_headers::SetSensitiveRequestHeadersLayer,
    set_header::SetResponseHeaderLayer,
};

use super::{MetricsSink, ModelListLayer, client_ip::insert_client_ip, panic_response, sse_no_buffering};
use crate::{
    config::ip_net::TrustedProxies,
    registry::{Catalog, ProxyKeyPool, insert_group_policy, insert_routed_group_policy},
    upstream::UpstreamClient,
};

/// The proxy service mounted at `/proxy/{group}/…`.
pub(crate) type ProxyService = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// What the proxy stack is built from.
pub(crate) struct ProxyParts {
    pub(crate) catalog: Catalog,
    pub(crate) pool: ProxyKeyPool,
    pub(crate) limit: ConcurrencyLimitLayer,
    pub(crate) log_sink: ChannelSink,
    pub(crate) client: UpstreamClient,
    pub(crate) trusted_proxies: TrustedProxies,
    pub(crate) max_body: usize,
    pub(crate) body_budget: BodyBudget,
}

/// Builds the proxy request path (see the [module docs](self)).
pub(crate) fn proxy_stack(parts: ProxyParts) -> ProxyService {
    BoxCloneSyncService::new(layers(parts))
}

/// The request path before boxing: its type names every layer, which the tests read.
fn layers(
    parts: ProxyParts,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send + 'static>
+ Clone
+ Send
+ Sync
+ 'static {
    let ProxyParts {
        catalog,
        pool,
        limit,
        log_sink,
        client,
        trusted_proxies,
        max_body,
        body_budget,
    } = parts;
    let credentials = [
        header::AUTHORIZATION,
        HeaderName::from_static("x-api-key"),
        HeaderName::from_static("x-goog-api-key"),
    ];
    ServiceBuilder::new()
        // One body type for axum; the layers below wrap the upstream's stream without copying.
        .map_response(|res: Response<_>| res.map(Body::new))
        .layer(OverheadLayer::new())
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(SetSensitiveRequestHeadersLayer::new(credentials))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("x-accel-buffering"),
            sse_no_buffering,
        ))
        .layer(ErrorResponseLayer::new())
        .map_request(insert_client_ip(trusted_proxies))
        .layer(ProxyKeyAuthLayer::new(catalog.proxy_keys.clone()))
        .layer(GroupLimitLayer::new(catalog.group_limits.clone()))
        .layer(limit)
        .layer(BodyBufferLayer::new(max_body).budget(body_budget))
        .map_request(insert_group_policy(catalog.clone()))
        .layer(RequestLogLayer::new(MetricsSink::new(
            log_sink,
            catalog.recent_failures.clone(),
            catalog.proxy_keys.access.clone(),
        )))
        .layer(JsonBodyLayer::new())
        .layer(RewriteLayer::new(catalog.rewrite.clone()).available_when(pool.clone()))
        .map_request(insert_routed_group_policy(catalog.clone()))
        .layer(ModelListLayer::new(catalog.rewrite.clone()))
        .layer(RetryLayer::new(RetryOnOtherKey::new(3).with_pool(pool.clone())))
        .layer(KeySelectLayer::new(pool.clone()))
        .layer(HeaderRulesLayer::new(catalog.rewrite.clone()))
        .layer(KeyHealthLayer::new(pool))
        .layer(UpstreamBalanceLayer::new(catalog.upstreams.clone()))
        .service(client)
}

#[cfg(test)]
mod tests {
    use gpt_load_tower::{
        body::BodyBudget,
        stack::{ORDER, layers_of},
    };

    use super::*;
    use crate::upstream::ClientSettings;

    fn parts() -> ProxyParts {
        ProxyParts {
            catalog: Catalog::new(),
            pool: ProxyKeyPool::default(),
            limit: ConcurrencyLimitLayer::new(1),
            log_sink: ChannelSink::new(1).0,
            client: UpstreamClient::new(ClientSettings::default()).unwrap(),
            trusted_proxies: TrustedProxies::default(),
            max_body: 1024,
            body_budget: BodyBudget::new(4096),
        }
    }

    #[test]
    fn the_library_layers_keep_the_library_order() {
        assert_eq!(
            layers_of(&layers(parts())),
            ORDER,
            "the library's layers must all be in the stack, once each, in gpt_load_tower::stack::ORDER"
        );
    }

    #[test]
    fn the_module_list_keeps_the_library_order() {
        let listed: Vec<&str> = include_str!("stack.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("//!"))
            .filter_map(|line| line.trim_start().split_once(". "))
            .filter(|(number, _)| number.parse::<u32>().is_ok())
            .map(|(_, rest)| rest.split(|c: char| !c.is_alphanumeric()).next().unwrap())
            .filter(|name| ORDER.iter().any(|layer| layer.name() == *name))
            .collect();
        assert_eq!(listed, ORDER.iter().map(|layer| layer.name()).collect::<Vec<_>>());
    }
}
