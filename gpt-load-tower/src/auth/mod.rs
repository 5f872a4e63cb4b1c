//! Proxy-key authentication: which group a request is for, and whether its key may use it.
//!
//! [`ProxyKeyAuthLayer`] takes the group from the path (`/proxy/{group}/…` by default), reads the
//! presented key from the first carrier that has one — `?key=`, `Authorization: Bearer`,
//! `x-api-key`, `x-goog-api-key`, so every SDK works unchanged — and asks a
//! [`ValidateProxyKey`]. [`StaticProxyKeys`] is the ready validator: global keys plus per-group
//! keys, compared in constant time, swappable at run time.
//!
//! Accepted requests lose **every** client credential (the three headers and the `key` query
//! parameter) before they go further, so a proxy key can never reach an upstream.
//!
//! - Reads: nothing. Writes: [`Principal`] (group, channel, route
//!   prefix).
//! - Rejects: `401` ([`ErrorKind::Unauthorized`](crate::error::ErrorKind)) for a missing or wrong
//!   key; `404` ([`ErrorKind::UnknownGroup`](crate::error::ErrorKind)) for an unknown group, but
//!   only to holders of a global key (others get `401`, so group names cannot be probed);
//!   `400` ([`ErrorKind::InvalidPath`](crate::error::ErrorKind)), before any key is checked, when
//!   the path after the group has a `.` or `..` segment in any spelling (see [`path`](crate::path)),
//!   so no such path reaches a key or an upstream. A validator may refuse with any error of its
//!   own: a caller it knows but does not let in (`403`,
//!   [`ErrorKind::Forbidden`](crate::error::ErrorKind)) or one over its own limits (`429`,
//!   [`Error::rate_limited`](crate::error::Error::rate_limited), counted as a limit rejection).
//!
//! Place it near the top: below [`ErrorResponseLayer`](crate::error::ErrorResponseLayer), above the
//! concurrency limit.
//!
//! # Example
//!
//! ```
//! use gpt_load_tower::{
//!     auth::{ProxyKeyAuthLayer, ProxyKeyTable, StaticProxyKeys},
//!     channel::ChannelKind,
//!     context::Principal,
//!     error::{Error, ErrorKind},
//! };
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let keys = StaticProxyKeys::new(
//!     ProxyKeyTable::new()
//!         .global(["sk-proxy-global"])
//!         .group("claude", ChannelKind::Anthropic, ["sk-proxy-claude"]),
//! );
//! let svc = ServiceBuilder::new()
//!     .layer(ProxyKeyAuthLayer::new(keys.clone()))
//!     .service(service_fn(|req: Request<()>| async move {
//!         assert!(req.headers().get("x-api-key").is_none(), "the proxy key is never forwarded");
//!         let principal = req.extensions().get::<Principal>().unwrap();
//!         Ok::<_, Error>(Response::new(principal.group().to_string()))
//!     }));
//!
//! let ok = Request::post("/proxy/claude/v1/messages").header("x-api-key", "sk-proxy-claude").body(()).unwrap();
//! assert_eq!(svc.clone().oneshot(ok).await.unwrap().body(), "claude");
//!
//! let wrong = Request::post("/proxy/claude/v1/messages").header("x-api-key", "guess").body(()).unwrap();
//! assert_eq!(svc.oneshot(wrong).await.unwrap_err().kind(), ErrorKind::Unauthorized);
//! # }
//! ```

mod credentials;
mod service;
mod validate;

pub use self::{
    credentials::presented_key,
    service::{ProxyKeyAuth, ProxyKeyAuthLayer, ResponseFuture},
    validate::{ProxyKeyTable, StaticProxyKeys, ValidateProxyKey},
};
pub use crate::context::Principal;
