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
//!   checked against `Content-Length` before reading when the client sends one and on the frame
//!   that passes the cap otherwise, unless the layer is told to
//!   [`stream_oversized`](BodyBufferLayer::stream_oversized) bodies: those are then forwarded once
//!   and never retried. A body that would pass the in-flight [`BodyBudget`] gets `503` +
//!   `Retry-After` ([`ErrorKind::BodyBudgetExhausted`](crate::error::ErrorKind)). A client body
//!   that fails while being read gives `400` ([`ErrorKind::ClientBody`](crate::error::ErrorKind)).
//!
//! # Memory
//!
//! A body is gathered into one buffer: frames are copied in as they arrive (so the server's read
//! buffers are reused, not pinned), the buffer is sized from `Content-Length` (never above the
//! cap) or doubles up to the cap, and a body of a single frame is kept without a copy. One body
//! therefore holds at most the cap, and the bytes are shared, not copied, by every retry.
//!
//! With a [`BodyBudget`] the total across requests is bounded too: the buffer's capacity is
//! reserved before it is allocated (a declared length up front, before reading; a growing
//! buffer with the one it replaces, until that is copied over), and released
//! when the last copy of the buffered bytes is dropped, which is after the last retry. A shed body
//! is read and dropped up to the cap before the error is returned, so a client that is still
//! sending receives the `503` rather than a connection reset.
//!
//! # Example
//!
//! ```
//! use gpt_load_tower::body::{BodyBudget, BodyBufferLayer, ReplayBody};
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
//!
//! // At most 8 bytes of bodies in memory across all requests.
//! let budget = BodyBudget::new(8);
//! let svc = ServiceBuilder::new()
//!     .layer(BodyBufferLayer::new(8).budget(budget.clone()))
//!     .service(service_fn(|req: Request<ReplayBody>| async move {
//!         Ok::<_, Error>(Response::new(req.into_body()))
//!     }));
//! let held = svc.clone().oneshot(Request::post("/").body(Full::from("12345")).unwrap()).await.unwrap();
//! assert_eq!(budget.in_use(), 5);
//! let shed = svc.clone().oneshot(Request::post("/").body(Full::from("6789")).unwrap()).await.unwrap_err();
//! assert_eq!(shed.kind(), ErrorKind::BodyBudgetExhausted);
//! drop(held);
//! assert!(svc.oneshot(Request::post("/").body(Full::from("6789")).unwrap()).await.is_ok());
//! # }
//! ```

mod budget;
mod replay;
mod service;
mod tracked;

pub(crate) use self::replay::replay_request;

pub use self::{
    budget::{BodyBudget, BudgetPermit},
    replay::{ClientBodyError, ReplayBody},
    service::{BodyBuffer, BodyBufferLayer},
    tracked::{BodyEnd, OnBodyEnd, TrackedBody},
};
// Defined below `error`, which renders into it, and shown here with the other body types.
pub use crate::response_body::ResponseBody;
