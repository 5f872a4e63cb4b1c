//! Composable [Tower] layers for AI API key-pool gateways.
//!
//! An AI key-pool gateway sits between applications and OpenAI-, Gemini- or Anthropic-format
//! APIs: applications use a *proxy key* and call `/proxy/{group}/{native path}`; the gateway
//! picks one of the group's upstream keys, retries on another key when one fails, blacklists
//! keys that keep failing, balances weighted upstreams, logs every attempt and streams responses
//! through untouched. This crate provides each of those concerns as a Tower layer, usable alone
//! or together in any axum or hyper application:
//!
//! | module | layer | concern |
//! |---|---|---|
//! | [`timing`] | [`OverheadLayer`](timing::OverheadLayer) | the gateway's own overhead as `Server-Timing` and a histogram |
//! | [`error`] | [`ErrorResponseLayer`](error::ErrorResponseLayer) | errors as JSON in the client's own API format |
//! | [`auth`] | [`ProxyKeyAuthLayer`](auth::ProxyKeyAuthLayer) | proxy keys from `?key=`, `Bearer`, `x-api-key`, `x-goog-api-key` |
//! | [`limit`] | [`ConcurrencyLimitLayer`](limit::ConcurrencyLimitLayer) | load shedding with `429` + `Retry-After` |
//! | [`body`] | [`BodyBufferLayer`](body::BodyBufferLayer) | replayable request bodies up to a cap |
//! | [`validate`] | [`JsonBodyLayer`](validate::JsonBodyLayer) | `400` for a body that claims JSON and does not parse, before a key is spent |
//! | [`log`] | [`RequestLogLayer`](log::RequestLogLayer) | one record per attempt to a non-blocking sink |
//! | [`rewrite`] | [`RewriteLayer`](rewrite::RewriteLayer), [`HeaderRulesLayer`](rewrite::HeaderRulesLayer) | aggregate groups, parameter overrides, model redirects, header rules |
//! | [`retry`] | [`RetryOnOtherKey`](retry::RetryOnOtherKey) | a `tower::retry::Policy`: retry on a key not yet tried |
//! | [`keys`] | [`KeySelectLayer`](keys::KeySelectLayer) | lock-free key pool, credential injection |
//! | [`blacklist`] | [`KeyHealthLayer`](blacklist::KeyHealthLayer) | whose fault a failure is (request, key or provider), cool-downs, blacklisting |
//! | [`upstream`] | [`UpstreamBalanceLayer`](upstream::UpstreamBalanceLayer) | smooth weighted round robin, passive ejection |
//!
//! [`channel`] describes the four API formats as data, [`usage`] reads token usage from replies as
//! they pass through, [`secret`] keeps keys out of logs,
//! [`path`] finds the `.`/`..` segments no forwarded path may have, and [`telemetry`] lists the metrics every layer records through the `metrics` facade.
//! [`context`] holds what layers share about a request, and the plain names of what an attempt
//! used ([`AttemptKey`](context::AttemptKey), [`AttemptUpstream`](context::AttemptUpstream)) that
//! an [`Error`] carries; it, [`telemetry`] and [`error`] use none of the layers, so every layer
//! can use them.
//!
//! # The whole stack
//!
//! [`ProxyStack`] assembles every layer in the canonical order (see [`stack`]) around the
//! service that talks to upstreams. Here the "upstream" is an in-process function that rejects
//! one of the two keys, so the example shows rotation, retry on another key and blacklisting:
//!
//! ```
//! use std::convert::Infallible;
//!
//! use gpt_load_tower::{
//!     ProxyStack,
//!     auth::{ProxyKeyTable, StaticProxyKeys},
//!     body::ReplayBody,
//!     channel::ChannelKind,
//!     keys::{KeyId, KeySlot, KeyState, MemoryKeyPool},
//!     log::ChannelSink,
//!     upstream::Upstreams,
//! };
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let proxy_keys = StaticProxyKeys::new(ProxyKeyTable::new().group("openai", ChannelKind::OpenAi, ["sk-proxy"]));
//! let pool = MemoryKeyPool::new();
//! pool.set_group("openai".into(), [
//!     KeySlot::new(KeyId(1), "sk-revoked".into()),
//!     KeySlot::new(KeyId(2), "sk-good".into()),
//! ]);
//! let upstreams = Upstreams::new();
//! upstreams.set_group("openai".into(), [("https://api.openai.example", 1)]).unwrap();
//! let (sink, mut records) = ChannelSink::new(1024);
//!
//! // Stands in for an HTTP client.
//! let upstream = service_fn(|req: Request<ReplayBody>| async move {
//!     assert_eq!(req.uri(), "https://api.openai.example/v1/chat/completions");
//!     let mut res = Response::new(Full::from(r#"{"choices":[]}"#));
//!     if req.headers()["authorization"] == "Bearer sk-revoked" {
//!         *res.status_mut() = StatusCode::UNAUTHORIZED;
//!     }
//!     Ok::<_, Infallible>(res)
//! });
//! let proxy = ProxyStack::new(proxy_keys, pool.clone(), upstreams, sink).service(upstream);
//!
//! for _ in 0..12 {
//!     let req = Request::post("/proxy/openai/v1/chat/completions")
//!         .header("authorization", "Bearer sk-proxy")
//!         .body(Full::from(r#"{"model":"gpt-4o-mini","messages":[]}"#))
//!         .unwrap();
//!     let res = proxy.clone().oneshot(req).await.unwrap();
//!     assert_eq!(res.status(), StatusCode::OK);
//!     res.into_body().collect().await.unwrap();
//! }
//! // The revoked key failed three times (each retried on the good key; after its first failure
//! // it is degraded and comes up one turn in four) and is blacklisted.
//! assert_eq!(pool.get("openai", KeyId(1)).unwrap().state(), KeyState::Invalid);
//! let first = records.recv().await.unwrap();
//! assert_eq!((first.request_type.as_str(), first.status), ("retry", 401));
//!
//! // A wrong proxy key gets an OpenAI-shaped 401.
//! let req = Request::get("/proxy/openai/v1/models").header("authorization", "Bearer nope").body(Full::default()).unwrap();
//! let res = proxy.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
//! let body = res.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["error"]["type"], "authentication_error");
//! # }
//! ```
//!
//! # Extension points
//!
//! | trait | used by | ready implementation |
//! |---|---|---|
//! | [`ValidateProxyKey`](auth::ValidateProxyKey) | auth | [`StaticProxyKeys`](auth::StaticProxyKeys), closures |
//! | [`KeyPool`](keys::KeyPool) | keys, blacklist, retry, rewrite | [`MemoryKeyPool`](keys::MemoryKeyPool) |
//! | [`ClassifyOutcome`](blacklist::ClassifyOutcome) | blacklist | [`DefaultClassifier`](blacklist::DefaultClassifier) |
//! | [`LogSink`](log::LogSink) | log | [`ChannelSink`](log::ChannelSink), closures |
//! | [`OnBodyEnd`](body::OnBodyEnd) | limit, keys, log | permits, in-flight guards, final records |
//!
//! [Tower]: https://docs.rs/tower
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

#[macro_use]
mod macros;

pub mod auth;
pub mod blacklist;
pub mod body;
pub mod channel;
mod clock;
pub mod context;
pub mod error;
mod future;
mod group_map;
pub mod keys;
pub mod limit;
pub mod log;
pub mod path;
mod query;
mod response_body;
pub mod retry;
pub mod rewrite;
pub mod secret;
pub mod stack;
pub mod telemetry;
pub mod timing;
pub mod upstream;
pub mod usage;
pub mod validate;
mod wrr;

#[cfg(test)]
mod layering;
#[cfg(test)]
mod test_util;

pub use self::{
    error::{BoxError, Error, ErrorKind},
    future::ResponseFuture,
    stack::ProxyStack,
};
