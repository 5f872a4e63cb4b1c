//! One record per attempt, sent to a non-blocking sink.
//!
//! [`RequestLogLayer`] captures the request-level facts once (group, method, path without the
//! `key` parameter, requested model, stream flag, client IP, and optionally the body) and emits a
//! [`RequestRecord`] for every attempt: each abandoned attempt as `retry` (reported by
//! [`RetryOnOtherKey`](crate::retry::RetryOnOtherKey) through the [`AttemptLog`] extension) and the
//! attempt the client receives as `final`, when its body ends, so the duration covers the whole
//! stream. Records carry the key's id and mask, never the key; error text is already redacted.
//!
//! The [`LogSink`] must not block: [`ChannelSink`] is a bounded channel that drops (and counts)
//! records when its consumer falls behind.
//!
//! - Reads: [`Principal`](crate::context::Principal), [`ClientIp`](crate::context::ClientIp),
//!   [`LogSettings`] (optional), the buffered body ([`ReplayBody`](crate::body::ReplayBody): place
//!   this layer below [`BodyBufferLayer`](crate::body::BodyBufferLayer)); from responses:
//!   [`SelectedKey`](crate::keys::SelectedKey), [`UpstreamTarget`](crate::upstream::UpstreamTarget),
//!   [`AttemptOutcome`](crate::blacklist::AttemptOutcome); from errors: the
//!   [`AttemptKey`](crate::context::AttemptKey) and [`AttemptUpstream`](crate::context::AttemptUpstream)
//!   they carry.
//! - Writes: [`AttemptLog`] and [`RequestFacts`](crate::channel::RequestFacts) into the request.
//! - Never rejects; errors pass through after being recorded.
//!
//! # Example
//!
//! ```
//! use gpt_load_tower::{
//!     body::ReplayBody,
//!     channel::ChannelKind,
//!     context::Principal,
//!     error::Error,
//!     log::{ChannelSink, RequestLogLayer, RequestType},
//! };
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (sink, mut records) = ChannelSink::new(1024);
//! let svc = ServiceBuilder::new()
//!     .layer(RequestLogLayer::new(sink))
//!     .service(service_fn(|_req: Request<ReplayBody>| async {
//!         Ok::<_, Error>(Response::new(Full::from("data: hi\n\n")))
//!     }));
//!
//! let req = Request::post("/proxy/oa/v1/chat/completions")
//!     .extension(Principal::new("oa".into(), ChannelKind::OpenAi))
//!     .body(ReplayBody::new(r#"{"model":"gpt-4o-mini","stream":true}"#))
//!     .unwrap();
//! let res = svc.oneshot(req).await.unwrap();
//! assert!(records.try_recv().is_err(), "the final record waits for the body");
//! res.into_body().collect().await.unwrap();
//!
//! let record = records.recv().await.unwrap();
//! assert_eq!(record.request_type, RequestType::Final);
//! assert_eq!(record.model.as_deref(), Some("gpt-4o-mini"));
//! assert!(record.stream && record.success);
//! # }
//! ```

mod attempt;
mod record;
mod service;
mod sink;
#[cfg(test)]
mod tests;

pub use self::{
    attempt::{AttemptLog, FinalRecord},
    record::{RequestRecord, RequestType},
    service::{LogSettings, RequestLog, RequestLogLayer},
    sink::{ChannelSink, LogSink},
};
