//! The whole request path assembled in its canonical order.
//!
//! [`ProxyStack`] wires every layer of this crate around an upstream client, outermost first:
//!
//! | # | layer | does | rejects with |
//! |---|---|---|---|
//! | 1 | [`OverheadLayer`] | `Server-Timing: overhead;dur=…, upstream;dur=…` on every response | |
//! | 2 | [`ErrorResponseLayer`] | errors → JSON in the client's format; `Infallible` above | |
//! | 3 | [`ProxyKeyAuthLayer`] | group from the path, proxy key checked and stripped; [`Principal`](crate::context::Principal) | 401 / 404 |
//! | 4 | [`GroupLimitLayer`] | the URL group's own requests per minute and at once, with an optional queue | 429 |
//! | 5 | [`ConcurrencyLimitLayer`] | global in-flight cap, held until the body ends | 429 |
//! | 6 | [`BodyBufferLayer`] | body buffered so it can be replayed, within an optional in-flight budget | 413 / 503 |
//! | 7 | [`RequestLogLayer`] | one record per attempt | |
//! | 8 | [`JsonBodyLayer`] | a body that claims JSON and does not parse never spends a key | 400 |
//! | 9 | [`RewriteLayer`] | aggregate routing, parameter overrides, model redirects | 400 / 503 |
//! | 10 | [`RetryLayer`]`<`[`RetryOnOtherKey`]`>` | re-runs 11–14 on an untried key, or re-uses one after a transient failure | |
//! | 11 | [`KeySelectLayer`] | picks a key (passing over keys at their limits), injects the credential | 503 / 429 |
//! | 12 | [`HeaderRulesLayer`] | the group's header rules | |
//! | 13 | [`KeyHealthLayer`] | classifies the attempt (request, key or provider at fault), reports to the pool | |
//! | 14 | [`UpstreamBalanceLayer`] | weighted upstream, URI rewrite | 502 |
//!
//! The same order, as data, is [`ORDER`]: a test builds a `ProxyStack` and checks with
//! [`layers_of`] that its service is exactly that order, and another checks this table against
//! it.
//!
//! # Why this order
//!
//! - The overhead clock is outermost so the figure includes everything the stack does, error
//!   rendering too; errors are rendered once, above every layer that can fail.
//! - Authentication comes before the limits and the body: a request without a valid proxy key,
//!   or with a `.`/`..` path, takes no permit and is not read.
//! - A group's own limits come before the global one, so requests queued for their group's room
//!   hold no global permit and one busy group cannot take the whole gateway's.
//! - The limit comes before the body buffer, so buffered memory is bounded by the requests in
//!   flight (and by the [`BodyBudget`]); the buffer sits above the log, the JSON check and the
//!   rewrites because all three read the body.
//! - The log sits above the JSON check and the rewrites, so their rejections are recorded and a
//!   record names the model the client asked for, before any redirect.
//! - Retry wraps one attempt: key selection, the header rules (after the credential, which
//!   `${API_KEY}` rules may use or override), the classification of the answer and the choice of
//!   upstream all run again for every attempt; everything above runs once per request.
//!
//! # Adding your own layers
//!
//! [`ProxyStack`] covers the library's layers. An application that needs more assembles the same
//! order itself with [`ServiceBuilder`] and adds its layers at these points (the gateway binary of
//! this project does exactly that; its additions are the examples):
//!
//! | between | what is known there | good for | gateway |
//! |---|---|---|---|
//! | outside [`OverheadLayer`] | nothing; work here is not in the overhead figure | adapting the response body type for the server | `map_response(Body::new)` |
//! | [`OverheadLayer`] and [`ErrorResponseLayer`] | every response the client gets, errors already rendered (the inner error type is `Infallible`) | panics turned into responses, request ids, marking headers sensitive, response headers | CatchPanic, SetSensitiveRequestHeaders, SetRequestId, PropagateRequestId, `X-Accel-Buffering: no` |
//! | [`ErrorResponseLayer`] and [`ProxyKeyAuthLayer`] | the raw request; a failure with [`Error`](crate::Error) is rendered in the client's format | facts about the connection that later layers read | ClientIp ([`ClientIp`](crate::context::ClientIp)) |
//! | [`BodyBufferLayer`] and [`RequestLogLayer`] | the [`Principal`](crate::context::Principal) (the group in the URL), a replayable body | request-level settings of the URL's group: [`LogSettings`](crate::log::LogSettings) | GroupPolicy |
//! | [`RewriteLayer`] and [`RetryLayer`] | the group actually used ([`RoutedGroup`](crate::context::RoutedGroup) for aggregates); runs once per request and sees the answer the client gets | settings of the group used: [`RetrySettings`](crate::retry::RetrySettings), [`HealthSettings`]; rewriting a final answer | GroupPolicy, ModelList |
//! | inside [`UpstreamBalanceLayer`] | one attempt: its key, upstream and URI | the upstream client itself: timeouts, outbound proxies | UpstreamClient |
//!
//! Layers between [`RetryLayer`] and [`UpstreamBalanceLayer`] run once per attempt and must be
//! cheap to clone; the library places none there but its own.
//!
//! Such a stack keeps the library's layers in [`ORDER`]: a test that builds it and compares
//! [`layers_of`] with `ORDER` fails when a library release adds or moves a layer, until the
//! application follows.
//!
//! Why data and a check rather than a builder with insertion points: each insertion point of a
//! builder would be a type parameter whose bounds must name the service and body types of every
//! layer below it, which would make [`ProxyStack`]'s signature unreadable, and boxing the inserted
//! layers instead would cost an allocation and dynamic dispatch per request. A plain
//! [`ServiceBuilder`] chain checked against [`ORDER`] keeps one order to maintain and the
//! application's stack as fast as [`ProxyStack`].
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
//! [`GroupLimitLayer`]: crate::limit::GroupLimitLayer
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
//! [`JsonBodyLayer`]: crate::validate::JsonBodyLayer
//! [`BodyBudget`]: crate::body::BodyBudget
//! [`ServiceBuilder`]: tower::ServiceBuilder

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
    limit::{ConcurrencyLimitLayer, GroupLimitLayer, GroupLimitTable},
    log::{LogSink, RequestLogLayer},
    retry::RetryOnOtherKey,
    rewrite::{HeaderRulesLayer, RewriteLayer, RewriteTable},
    timing::OverheadLayer,
    upstream::{UpstreamBalanceLayer, Upstreams},
    validate::JsonBodyLayer,
};

/// One of the library's layers in the canonical order ([`ORDER`]).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StackLayer {
    /// [`OverheadLayer`]: the gateway's own overhead.
    Overhead,
    /// [`ErrorResponseLayer`]: errors rendered in the client's format.
    ErrorResponse,
    /// [`ProxyKeyAuthLayer`]: the proxy key and the group.
    ProxyKeyAuth,
    /// [`GroupLimitLayer`]: each group's own limits.
    GroupLimit,
    /// [`ConcurrencyLimitLayer`]: load shedding.
    ConcurrencyLimit,
    /// [`BodyBufferLayer`]: the replayable body.
    BodyBuffer,
    /// [`RequestLogLayer`]: one record per attempt.
    RequestLog,
    /// [`JsonBodyLayer`]: malformed JSON refused before a key is spent.
    JsonBody,
    /// [`RewriteLayer`]: aggregate routing, overrides, model redirects.
    Rewrite,
    /// tower's [`RetryLayer`] with [`RetryOnOtherKey`].
    Retry,
    /// [`KeySelectLayer`]: the key of one attempt.
    KeySelect,
    /// [`HeaderRulesLayer`]: the group's header rules.
    HeaderRules,
    /// [`KeyHealthLayer`]: whose fault a failure is.
    KeyHealth,
    /// [`UpstreamBalanceLayer`]: the upstream of one attempt.
    UpstreamBalance,
}

/// The library's layers in the order [`ProxyStack`] stacks them, outermost first.
///
/// The one statement of the canonical order: [`ProxyStack`] is tested against it, and an
/// application that assembles its own stack tests that stack against it with [`layers_of`] (see
/// the [module docs](self#adding-your-own-layers)).
pub const ORDER: &[StackLayer] = &[
    StackLayer::Overhead,
    StackLayer::ErrorResponse,
    StackLayer::ProxyKeyAuth,
    StackLayer::GroupLimit,
    StackLayer::ConcurrencyLimit,
    StackLayer::BodyBuffer,
    StackLayer::RequestLog,
    StackLayer::JsonBody,
    StackLayer::Rewrite,
    StackLayer::Retry,
    StackLayer::KeySelect,
    StackLayer::HeaderRules,
    StackLayer::KeyHealth,
    StackLayer::UpstreamBalance,
];

impl StackLayer {
    /// The name of the service the layer builds, which is the layer's name without `Layer`:
    /// `KeySelect` for [`KeySelectLayer`], `Retry` for tower's `RetryLayer`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Overhead => "Overhead",
            Self::ErrorResponse => "ErrorResponse",
            Self::ProxyKeyAuth => "ProxyKeyAuth",
            Self::GroupLimit => "GroupLimit",
            Self::ConcurrencyLimit => "ConcurrencyLimit",
            Self::BodyBuffer => "BodyBuffer",
            Self::RequestLog => "RequestLog",
            Self::JsonBody => "JsonBody",
            Self::Rewrite => "Rewrite",
            Self::Retry => "Retry",
            Self::KeySelect => "KeySelect",
            Self::HeaderRules => "HeaderRules",
            Self::KeyHealth => "KeyHealth",
            Self::UpstreamBalance => "UpstreamBalance",
        }
    }

    /// The layer whose service a generic type in a type name is: `path` is the type's path
    /// (such as `gpt_load_tower::keys::service::KeySelect`) and `args` what follows its `<`.
    fn of_service(path: &str, args: &str) -> Option<Self> {
        let name = path.rsplit("::").next()?;
        if path.starts_with("gpt_load_tower::") {
            ORDER
                .iter()
                .copied()
                .find(|layer| *layer != Self::Retry && layer.name() == name)
        } else if path.starts_with("tower::")
            && name == "Retry"
            && args.starts_with("gpt_load_tower::retry::")
        {
            Some(Self::Retry)
        } else {
            None
        }
    }
}

impl fmt::Display for StackLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The library layers `service` is built from, outermost first: what a test compares with
/// [`ORDER`].
///
/// Layers of other crates and the application's own are left out, so a stack that adds layers
/// at the documented points and keeps the library's in order gives exactly [`ORDER`]. The
/// layers are read from the service's type ([`std::any::type_name`]), so call this from tests:
/// Rust describes type names as best effort. A compiler that spelled them differently would make
/// the comparison fail, never pass wrongly.
///
/// ```
/// use gpt_load_tower::{
///     auth::{ProxyKeyTable, StaticProxyKeys},
///     body::ReplayBody,
///     keys::MemoryKeyPool,
///     stack::{self, ProxyStack},
///     upstream::Upstreams,
/// };
/// use http::{Request, Response};
/// use tower::{ServiceBuilder, service_fn};
///
/// let client = service_fn(|_req: Request<ReplayBody>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
/// });
/// let proxy = ProxyStack::new(StaticProxyKeys::new(ProxyKeyTable::new()), MemoryKeyPool::new(), Upstreams::new(), |_record| {})
///     .service::<_, String, _>(client); // for requests with `String` bodies
/// assert_eq!(stack::layers_of(&proxy), stack::ORDER);
///
/// // An application's own layers do not count; the library's must all be there, in order.
/// let wrapped = ServiceBuilder::new().map_request(|req: Request<String>| req).service(proxy);
/// assert_eq!(stack::layers_of(&wrapped), stack::ORDER);
/// ```
pub fn layers_of<S>(service: &S) -> Vec<StackLayer> {
    layers_in(std::any::type_name_of_val(service))
}

/// The library layers named in a type name, in order of appearance.
fn layers_in(type_name: &str) -> Vec<StackLayer> {
    let is_path = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    let mut layers = Vec::new();
    let mut rest = type_name;
    while let Some(start) = rest.find(is_path) {
        rest = &rest[start..];
        let end = rest.find(|c| !is_path(c)).unwrap_or(rest.len());
        let (path, after) = rest.split_at(end);
        if let Some(args) = after.strip_prefix('<')
            && let Some(layer) = StackLayer::of_service(path, args)
        {
            layers.push(layer);
        }
        rest = after;
    }
    layers
}

/// Builds the full proxy service around an upstream client. See the [module docs](self).
pub struct ProxyStack<V, P, K> {
    validator: V,
    pool: P,
    upstreams: Upstreams,
    sink: K,
    rewrite: RewriteTable,
    group_limits: GroupLimitTable,
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
            group_limits: GroupLimitTable::new(),
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

    /// Each group's own limits (shared with whoever sets them; none by default).
    #[must_use]
    pub fn group_limits(mut self, table: GroupLimitTable) -> Self {
        self.group_limits = table;
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
            .layer(GroupLimitLayer::new(self.group_limits))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        auth::{ProxyKeyTable, StaticProxyKeys},
        keys::MemoryKeyPool,
    };
    use http_body_util::Empty;
    use tower::service_fn;

    fn proxy() -> impl Service<Request<Empty<Bytes>>, Response = Response<impl Body>, Error = Infallible> {
        let client = service_fn(|_req: Request<ReplayBody>| async {
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        });
        let keys = StaticProxyKeys::new(ProxyKeyTable::new());
        ProxyStack::new(keys, MemoryKeyPool::new(), Upstreams::new(), |_record| {})
            .body_budget(BodyBudget::new(1024))
            .service(client)
    }

    #[test]
    fn proxy_stack_is_the_canonical_order() {
        assert_eq!(layers_of(&proxy()), ORDER);
    }

    #[test]
    fn the_module_table_lists_the_canonical_order() {
        let rows: Vec<String> = include_str!("stack.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("//! | "))
            .filter(|row| row.starts_with(|c: char| c.is_ascii_digit()))
            .map(|row| {
                row.split("[`")
                    .nth(1)
                    .unwrap()
                    .split('`')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let order: Vec<String> = ORDER.iter().map(|layer| format!("{layer}Layer")).collect();
        assert_eq!(rows, order);
    }

    #[test]
    fn layers_are_read_from_type_names() {
        let name = "tower::util::map_request::MapRequest<gpt_load_tower::timing::Overhead<\
                    tower_http::catch_panic::CatchPanic<gpt_load_tower::keys::service::KeySelect<\
                    app::Rewrite<tower::retry::Retry<app::OtherPolicy, tower::retry::Retry<\
                    gpt_load_tower::retry::policy::RetryOnOtherKey, gpt_load_tower::keys::service::KeySelect<\
                    S, gpt_load_tower::keys::memory::MemoryKeyPool>>>>, gpt_load_tower::keys::memory::MemoryKeyPool>>>, {{closure}}>";
        assert_eq!(
            layers_in(name),
            [
                StackLayer::Overhead,
                StackLayer::KeySelect,
                StackLayer::Retry,
                StackLayer::KeySelect
            ]
        );
        assert!(layers_in("gpt_load_tower::keys::KeyId").is_empty());
    }
}
