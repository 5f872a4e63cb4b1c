//! The whole request path assembled in its canonical order.
//!
//! [`ProxyStack`] wires every layer of this crate around an upstream client, outermost first:
//!
//! | # | layer | does | rejects with |
//! |---|---|---|---|
//! | 1 | [`OverheadLayer`] | `Server-Timing: overhead;dur=…, upstream;dur=…` on every response | |
//! | 2 | [`ErrorResponseLayer`] | errors → JSON in the client's format; `Infallible` above | |
//! | 3 | [`ProxyKeyAuthLayer`] | group from the path, proxy key checked and stripped; [`Principal`](crate::context::Principal) | 401 / 404 |
//! | 4 | [`ConcurrencyLimitLayer`] | global in-flight cap, held until the body ends | 429 |
//! | 5 | [`BodyBufferLayer`] | body buffered so it can be replayed, within an optional in-flight budget | 413 / 503 |
//! | 6 | [`RequestLogLayer`] | one record per attempt | |
//! | 7 | [`JsonBodyLayer`] | a body that claims JSON and does not parse never spends a key | 400 |
//! | 8 | [`RewriteLayer`] | aggregate routing, parameter overrides, model redirects | 400 / 503 |
//! | 9 | [`RetryLayer`]`<`[`RetryOnOtherKey`]`>` | re-runs 10–13 on an untried key, or re-uses one after a transient failure | |
//! | 10 | [`KeySelectLayer`] | picks a key, injects the credential | 503 |
//! | 11 | [`HeaderRulesLayer`] | the group's header rules | |
//! | 12 | [`KeyHealthLayer`] | classifies the attempt (request, key or provider at fault), reports to the pool | |
//! | 13 | [`UpstreamBalanceLayer`] | weighted upstream, URI rewrite | 502 |
//!
//! The body buffer sits above the log and rewrite layers because both read the body.
//!
//! # Example
//!
//! Mounted under another prefix, with a tighter body cap and no retries:
//!
//! ```
//! use gpt_load_tower::{
//!     ProxyStack,
//!     auth::{ProxyKeyTable, StaticProxyKeys},
//!     body::ReplayBody,
//!     channel::ChannelKind,
//!     keys::{KeyId, KeySlot, MemoryKeyPool},
//!     upstream::Upstreams,
//! };
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let keys = StaticProxyKeys::new(ProxyKeyTable::new().group("claude", ChannelKind::Anthropic, ["pk"]));
//! let pool = MemoryKeyPool::new();
//! pool.set_group("claude".into(), [KeySlot::new(KeyId(1), "sk-ant-upstream".into())]);
//! let upstreams = Upstreams::new();
//! upstreams.set_group("claude".into(), [("https://api.anthropic.example", 1)]).unwrap();
//!
//! let proxy = ProxyStack::new(keys, pool, upstreams, |_record| {})
//!     .route_prefix("/llm")
//!     .body_limit(1024, false)
//!     .max_retries(0)
//!     .service(service_fn(|req: Request<ReplayBody>| async move {
//!         assert_eq!(req.uri(), "https://api.anthropic.example/v1/messages");
//!         assert_eq!(req.headers()["x-api-key"], "sk-ant-upstream");
//!         Ok::<_, std::convert::Infallible>(Response::new(Full::from("{}")))
//!     }));
//!
//! let req = Request::post("/llm/claude/v1/messages").header("x-api-key", "pk").body(Full::from("{}")).unwrap();
//! assert_eq!(proxy.oneshot(req).await.unwrap().status(), StatusCode::OK);
//! # }
//! ```
//!
//! [`OverheadLayer`]: crate::timing::OverheadLayer
//! [`ErrorResponseLayer`]: crate::error::ErrorResponseLayer
//! [`ProxyKeyAuthLayer`]: crate::auth::ProxyKeyAuthLayer
//! [`ConcurrencyLimitLayer`]: crate::limit::ConcurrencyLimitLayer
//! [`BodyBufferLayer`]: crate::body::BodyBufferLayer
//! [`RequestLogLayer`]: crate::log::RequestLogLayer
//! [`RewriteLayer`]: crate::rewrite::RewriteLayer
//! [`RetryLayer`]: tower::retry::RetryLayer
//! [`RetryOnOtherKey`]: crate::retry::RetryOnOtherKey
//! [`KeySelectLayer`]: crate::keys::KeySelectLayer
//! [`HeaderRulesLayer`]: crate::rewrite::HeaderRulesLayer
//! [`KeyHealthLayer`]: crate::blacklist::KeyHealthLayer
//! [`UpstreamBalanceLayer`]: crate::upstream::UpstreamBalanceLayer

use std::{convert::Infallible, fmt};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower::{ServiceBuilder, retry::RetryLayer};
use tower_service::Service;

use crate::{
    auth::{ProxyKeyAuthLayer, ValidateProxyKey},
    blacklist::{HealthSettings, KeyHealthLayer},
    body::{BodyBudget, BodyBufferLayer, ReplayBody},
    error::{BoxError, ErrorResponseLayer},
    keys::{KeyPool, KeySelectLayer},
    limit::ConcurrencyLimitLayer,
    log::{LogSink, RequestLogLayer},
    retry::RetryOnOtherKey,
    rewrite::{HeaderRulesLayer, RewriteLayer, RewriteTable},
    timing::OverheadLayer,
    upstream::{UpstreamBalanceLayer, Upstreams},
    validate::JsonBodyLayer,
};

/// Builds the full proxy service around an upstream client. See the [module docs](self).
pub struct ProxyStack<V, P, K> {
    validator: V,
    pool: P,
    upstreams: Upstreams,
    sink: K,
    rewrite: RewriteTable,
    limit: ConcurrencyLimitLayer,
    route_prefix: String,
    body_limit: usize,
    stream_oversized: bool,
    body_budget: Option<BodyBudget>,
    max_retries: u32,
    health: HealthSettings,
    log_bodies: bool,
}

impl<V, P, K> ProxyStack<V, P, K>
where
    V: ValidateProxyKey,
    P: KeyPool + Clone,
    K: LogSink,
{
    /// A stack with gpt-load's defaults: 100 requests in flight, 32 MiB bodies, 3 retries,
    /// failover statuses `400-403,405-999`, blacklist after 3 failures, `/proxy/{group}` routes.
    pub fn new(validator: V, pool: P, upstreams: Upstreams, sink: K) -> Self {
        Self {
            validator,
            pool,
            upstreams,
            sink,
            rewrite: RewriteTable::new(),
            limit: ConcurrencyLimitLayer::new(100),
            route_prefix: "/proxy".to_owned(),
            body_limit: 32 * 1024 * 1024,
            stream_oversized: false,
            body_budget: None,
            max_retries: 3,
            health: HealthSettings::default(),
            log_bodies: false,
        }
    }

    /// Rewriting rules and aggregate groups (shared with whoever updates them).
    #[must_use]
    pub fn rewrite(mut self, table: RewriteTable) -> Self {
        self.rewrite = table;
        self
    }

    /// The concurrency limit (keep a clone to read [`in_flight`](ConcurrencyLimitLayer::in_flight)).
    #[must_use]
    pub fn concurrency_limit(mut self, limit: ConcurrencyLimitLayer) -> Self {
        self.limit = limit;
        self
    }

    /// The path prefix before the group segment (see
    /// [`ProxyKeyAuthLayer::route_prefix`](crate::auth::ProxyKeyAuthLayer::route_prefix)).
    #[must_use]
    pub fn route_prefix(mut self, prefix: &str) -> Self {
        self.route_prefix = prefix.to_owned();
        self
    }

    /// The request body cap in bytes, and whether larger bodies stream once instead of `413`.
    #[must_use]
    pub fn body_limit(mut self, limit: usize, stream_oversized: bool) -> Self {
        self.body_limit = limit;
        self.stream_oversized = stream_oversized;
        self
    }

    /// Bounds the request bodies held in memory across all requests (see
    /// [`BodyBudget`]); without one, only the per-body cap and the concurrency limit do.
    #[must_use]
    pub fn body_budget(mut self, budget: BodyBudget) -> Self {
        self.body_budget = Some(budget);
        self
    }

    /// Retries per request unless a request carries [`RetrySettings`](crate::retry::RetrySettings).
    #[must_use]
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Failover statuses and blacklist threshold unless a request carries its own.
    #[must_use]
    pub fn health(mut self, settings: HealthSettings) -> Self {
        self.health = settings;
        self
    }

    /// Logs request bodies unless a request's [`LogSettings`](crate::log::LogSettings) says
    /// otherwise.
    #[must_use]
    pub fn log_request_bodies(mut self, enabled: bool) -> Self {
        self.log_bodies = enabled;
        self
    }

    /// Wraps `client`, the service that sends a request to the upstream its URI names.
    pub fn service<S, B, ResBody>(
        self,
        client: S,
    ) -> impl Service<
        Request<B>,
        Response = Response<impl Body<Data = Bytes, Error = ResBody::Error> + Send + 'static>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + Sync
    + 'static
    where
        S: Service<Request<ReplayBody>, Response = Response<ResBody>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
        ResBody: Body<Data = Bytes> + Send + 'static,
        ResBody::Error: std::fmt::Display,
    {
        let mut body_buffer = BodyBufferLayer::new(self.body_limit).stream_oversized(self.stream_oversized);
        if let Some(budget) = self.body_budget {
            body_buffer = body_buffer.budget(budget);
        }
        ServiceBuilder::new()
            .layer(OverheadLayer::new())
            .layer(ErrorResponseLayer::new())
            .layer(ProxyKeyAuthLayer::new(self.validator).route_prefix(&self.route_prefix))
            .layer(self.limit)
            .layer(body_buffer)
            .layer(RequestLogLayer::new(self.sink).log_request_bodies(self.log_bodies))
            .layer(JsonBodyLayer::new())
            .layer(RewriteLayer::new(self.rewrite.clone()).available_when(self.pool.clone()))
            .layer(RetryLayer::new(
                RetryOnOtherKey::new(self.max_retries).with_pool(self.pool.clone()),
            ))
            .layer(KeySelectLayer::new(self.pool.clone()))
            .layer(HeaderRulesLayer::new(self.rewrite))
            .layer(KeyHealthLayer::new(self.pool).settings(self.health))
            .layer(UpstreamBalanceLayer::new(self.upstreams))
            .service(client)
    }
}

impl<V, P, K> fmt::Debug for ProxyStack<V, P, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyStack")
            .field("route_prefix", &self.route_prefix)
            .field("limit", &self.limit)
            .field("body_limit", &self.body_limit)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}
