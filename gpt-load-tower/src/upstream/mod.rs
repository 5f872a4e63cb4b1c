//! Weighted balancing over a group's upstream base URLs, with passive ejection.
//!
//! Each group has a list of base URLs with weights. [`UpstreamBalanceLayer`] picks one per
//! attempt by smooth weighted round robin (nginx's algorithm: exact shares, heavy upstreams
//! spread out), skips upstreams ejected after consecutive transport failures, and points the
//! request at it: scheme and authority from the base URL, the base URL's path in front of the
//! client's path (minus `/proxy/{group}`), the query kept, no doubled slashes. `Host`, `Expect`
//! and hop-by-hop headers are removed.
//!
//! - Reads: [`Principal`](crate::context::Principal), [`RoutedGroup`](crate::context::RoutedGroup).
//! - Writes: the URI; [`UpstreamTarget`] into request and response extensions.
//! - Rejects: `502` ([`ErrorKind::NoUpstream`](crate::error::ErrorKind)) when the group has no
//!   upstream with weight above 0; `400` ([`ErrorKind::InvalidPath`](crate::error::ErrorKind))
//!   for a path with a `.` or `..` segment, which is never joined to a base URL (the
//!   [`auth`](crate::auth) layer refuses those first; this holds when a
//!   [`Principal`](crate::context::Principal) is inserted some other way). Errors from inside carry the upstream
//!   as an [`AttemptUpstream`](crate::context::AttemptUpstream)
//!   ([`Error::upstream_target`](crate::error::Error::upstream_target)).
//!
//! # Example
//!
//! ```
//! use gpt_load_tower::{
//!     channel::ChannelKind,
//!     context::Principal,
//!     error::Error,
//!     upstream::{UpstreamBalanceLayer, Upstreams},
//! };
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let upstreams = Upstreams::new();
//! upstreams.set_group("gem".into(), [("https://generativelanguage.googleapis.com", 1)]).unwrap();
//!
//! let svc = ServiceBuilder::new()
//!     .layer(UpstreamBalanceLayer::new(upstreams))
//!     .service(service_fn(|req: Request<()>| async move {
//!         Ok::<_, Error>(Response::new(req.uri().to_string()))
//!     }));
//!
//! let principal = Principal::new("gem".into(), ChannelKind::Gemini).with_route_prefix_len("/proxy/gem".len());
//! let req = Request::post("/proxy/gem/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse")
//!     .extension(principal)
//!     .body(())
//!     .unwrap();
//! let res = svc.oneshot(req).await.unwrap();
//! assert_eq!(
//!     res.body(),
//!     "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
//! );
//! # }
//! ```

mod registry;
mod service;

pub use self::{
    registry::{Ejection, InvalidUpstream, Upstream, UpstreamTarget, Upstreams},
    service::{UpstreamBalance, UpstreamBalanceLayer},
};
