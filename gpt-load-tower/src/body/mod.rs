//! Request bodies that can be replayed on another key, and the response-body wrappers the
//! other layers share.
//!
//! [`BodyBufferLayer`] reads the client's body into memory up to a cap so that
//! [`RetryOnOtherKey`](crate::retry::RetryOnOtherKey) can send it again, and so that the log and
//! rewrite layers can read it. Place it below the concurrency limit (so buffered memory is
//! bounded by the number of requests in flight) and above everything that reads the body.
//!
//! - Reads: nothing. Writes: the request body becomes a [`ReplayBody`].
//! - Rejects: a body over the cap with `413` ([`ErrorKind::BodyTooLarge`](crate::error::ErrorKind)),
//!   checked against `Content-Length` before reading when the client sends one, unless the layer
//!   is told to [`stream_oversized`](BodyBufferLayer::stream_oversized) bodies: those are then
//!   forwarded once and never retried. A client body that fails while being read gives
//!   `400` ([`ErrorKind::ClientBody`](crate::error::ErrorKind)).
//!
//! # Example
//!
//! ```
//! use gpt_load_tower::body::{BodyBufferLayer, ReplayBody};
//! use gpt_load_tower::error::{Error, ErrorKind};
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(BodyBufferLayer::new(8))
//!     .service(service_fn(|req: Request<ReplayBody>| async move {
//!         assert!(req.body().is_replayable());
//!         Ok::<_, Error>(Response::new(req.body().bytes().unwrap().len()))
//!     }));
//!
//! let small = Request::post("/").body(Full::from("tiny")).unwrap();
//! assert_eq!(*svc.clone().oneshot(small).await.unwrap().body(), 4);
//!
//! let big = Request::post("/").body(Full::from("far too large")).unwrap();
//! assert_eq!(svc.oneshot(big).await.unwrap_err().kind(), ErrorKind::BodyTooLarge);
//! # }
//! ```

mod replay;
mod response;
mod service;
mod tracked;

pub use self::{
    replay::{ClientBodyError, ReplayBody},
    response::ResponseBody,
    service::{BodyBuffer, BodyBufferLayer},
    tracked::{BodyEnd, OnBodyEnd, TrackedBody},
};
