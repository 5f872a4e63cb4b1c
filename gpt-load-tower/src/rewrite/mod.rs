//! Request rewriting per group: aggregate routing, parameter overrides, model redirects and
//! header rules.
//!
//! Two layers share one [`RewriteTable`]:
//!
//! - [`RewriteLayer`], once per request, above the retry layer: an **aggregate** group picks one
//!   of its sub-groups by smooth weighted round robin, skipping sub-groups without a usable key
//!   or that do not serve the model; the retries stay in that sub-group, and when its final
//!   answer is a failure its keys could not get past (every key rate limited, failing or
//!   invalid, its provider down, no key left) the request moves to the next sub-group, each
//!   sub-group once and at most the aggregate's `max_retries` ([`RetrySettings`](crate::retry::RetrySettings))
//!   moves; an answer meant for the client (a request error, a `404`, a rule's `fail`) does not
//!   move. Then the (sub-)group's **model redirects** rewrite the body's `model` (or, for Gemini
//!   native paths, the `models/{m}` path segment) and its **parameter overrides** are merged into
//!   JSON object bodies, from the body as it arrived for each sub-group. Non-JSON bodies pass
//!   through untouched. With strict mode, a model the rules do not list is refused.
//! - [`HeaderRulesLayer`], on every attempt, inside key selection: `set` / `remove` header rules
//!   with `${CLIENT_IP}`, `${GROUP_NAME}`, `${API_KEY}`, `${TIMESTAMP_MS}` and `${TIMESTAMP_S}`.
//!
//! - Reads: [`Principal`](crate::context::Principal), [`ClientIp`](crate::context::ClientIp),
//!   [`SelectedKey`](crate::keys::SelectedKey) (header rules), the aggregate's
//!   [`RetrySettings`](crate::retry::RetrySettings) and the answer's
//!   [`AttemptOutcome`](crate::blacklist::AttemptOutcome) (moving on). Writes:
//!   [`RoutedGroup`](crate::context::RoutedGroup); the body, `Content-Length`, the path, headers;
//!   a `retry` record in the [`AttemptLog`](crate::log::AttemptLog) for a sub-group's abandoned
//!   answer, and the next [`AttemptNumber`](crate::context::AttemptNumber).
//! - Rejects: `403` ([`ErrorKind::Forbidden`](crate::error::ErrorKind)) for a model the caller's
//!   access key does not allow ([`Principal::allows_model`](crate::context::Principal::allows_model));
//!   `400` ([`ErrorKind::InvalidRequest`](crate::error::ErrorKind)) for a model refused
//!   by strict redirect rules; `503` ([`ErrorKind::NoKeyAvailable`](crate::error::ErrorKind)) when
//!   no sub-group of an aggregate has a usable key.
//!
//! # Example
//!
//! ```
//! use gpt_load_tower::{
//!     body::ReplayBody,
//!     channel::ChannelKind,
//!     context::Principal,
//!     error::{Error, ErrorKind},
//!     rewrite::{GroupRules, RewriteLayer, RewriteTable},
//! };
//! use http::{Request, Response};
//! use http_body_util::BodyExt;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let table = RewriteTable::new();
//! table.set_group(
//!     "oa".into(),
//!     GroupRules::new().redirect_model("gpt-4", "gpt-4o-mini").strict_model(true),
//! );
//! let svc = ServiceBuilder::new().layer(RewriteLayer::new(table)).service(service_fn(
//!     |req: Request<ReplayBody>| async move {
//!         let body = req.into_body().collect().await.unwrap().to_bytes();
//!         Ok::<_, Error>(Response::new(body))
//!     },
//! ));
//!
//! let request = |body: &'static str| {
//!     Request::post("/proxy/oa/v1/chat/completions")
//!         .extension(Principal::new("oa".into(), ChannelKind::OpenAi))
//!         .body(ReplayBody::new(body))
//!         .unwrap()
//! };
//! let res = svc.clone().oneshot(request(r#"{"model":"gpt-4"}"#)).await.unwrap();
//! assert_eq!(res.body(), r#"{"model":"gpt-4o-mini"}"#);
//!
//! let err = svc.oneshot(request(r#"{"model":"o3"}"#)).await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::InvalidRequest);
//! # }
//! ```

mod headers;
mod model_filter;
mod rules;
mod service;
#[cfg(test)]
mod tests;

pub use self::{
    headers::{HeaderRules, HeaderRulesLayer},
    model_filter::{InvalidModelPattern, ModelFilter},
    rules::{GroupRules, HeaderRule, InvalidHeaderRule, RewriteTable},
    service::{Rewrite, RewriteLayer},
};
