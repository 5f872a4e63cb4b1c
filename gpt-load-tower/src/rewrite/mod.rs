//! Request rewriting per group: aggregate routing, parameter overrides, model redirects and
//! header rules.
//!
//! Two layers share one [`RewriteTable`]:
//!
//! - [`RewriteLayer`], once per request, above the retry layer: an **aggregate** group picks one
//!   of its sub-groups by smooth weighted round robin, skipping sub-groups without a usable key
//!   (all retries then stay in that sub-group, as in gpt-load); then the (sub-)group's **model
//!   redirects** rewrite the body's `model` (or, for Gemini native paths, the `models/{m}` path
//!   segment) and its **parameter overrides** are merged into JSON object bodies. Non-JSON bodies
//!   pass through untouched. With strict mode, a model the rules do not list is refused.
//! - [`HeaderRulesLayer`], on every attempt, inside key selection: `set` / `remove` header rules
//!   with `${CLIENT_IP}`, `${GROUP_NAME}`, `${API_KEY}`, `${TIMESTAMP_MS}` and `${TIMESTAMP_S}`.
//!
//! - Reads: [`Principal`](crate::context::Principal), [`ClientIp`](crate::context::ClientIp),
//!   [`SelectedKey`](crate::keys::SelectedKey) (header rules). Writes:
//!   [`RoutedGroup`](crate::context::RoutedGroup); the body, `Content-Length`, the path, headers.
//! - Rejects: `400` ([`ErrorKind::InvalidRequest`](crate::error::ErrorKind)) for a model refused
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
