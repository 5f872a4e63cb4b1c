//! Retry a failed attempt on a key the request has not tried yet.
//!
//! [`RetryOnOtherKey`] is a [`tower::retry::Policy`]: use it with tower's
//! [`RetryLayer`](tower::retry::RetryLayer) above [`KeySelectLayer`](crate::keys::KeySelectLayer).
//! It decides from the response **head** (a success body is never buffered):
//!
//! - a response is retried when [`KeyHealth`](crate::blacklist::KeyHealth) classified it as a
//!   failure another attempt may fix ([`Outcome::is_retryable`](crate::blacklist::Outcome::is_retryable):
//!   a key error, a cool-down, a transient provider failure — never a request error such as
//!   malformed JSON or a prompt over the context window), or, without that layer, when the status
//!   matches the policy's own [`StatusMatcher`](crate::blacklist::StatusMatcher);
//! - an error is retried when it is a transport failure or timeout
//!   ([`Error::is_retryable`](crate::error::Error::is_retryable)); a client that went away is not;
//! - at most `max_retries` extra attempts ([`RetrySettings`] in the request overrides it per
//!   group); each adds the failed key to [`ExcludedKeys`](crate::keys::ExcludedKeys), so the next
//!   attempt uses a key this request has not tried;
//! - with a pool attached, when no untried key is left: after a transient failure (`5xx`,
//!   timeout, connection error) the key whose transient failure is oldest is tried again, after
//!   a short jittered [backoff](RetryOnOtherKey::backoff), so `max_retries` holds however few keys
//!   are usable; otherwise the policy stops and returns the last failure as is rather than
//!   turning it into a `503`;
//! - only replayable bodies are retried: a [`ReplayBody`](crate::body::ReplayBody) streamed once because it was over the
//!   buffer cap is sent once.
//!
//! Every abandoned attempt is reported to the request's [`AttemptLog`](crate::log::AttemptLog) as a `retry` record.
//!
//! # Example
//!
//! ```
//! use gpt_load_tower::{
//!     blacklist::KeyHealthLayer,
//!     body::ReplayBody,
//!     channel::ChannelKind,
//!     context::Principal,
//!     error::Error,
//!     keys::{KeyId, KeySelectLayer, KeySlot, MemoryKeyPool},
//!     retry::RetryOnOtherKey,
//! };
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt, retry::RetryLayer, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = MemoryKeyPool::new();
//! pool.set_group("g".into(), [KeySlot::new(KeyId(1), "bad".into()), KeySlot::new(KeyId(2), "good".into())]);
//!
//! let svc = ServiceBuilder::new()
//!     .layer(RetryLayer::new(RetryOnOtherKey::new(3).with_pool(pool.clone())))
//!     .layer(KeySelectLayer::new(pool.clone()))
//!     .layer(KeyHealthLayer::new(pool.clone()))
//!     .service(service_fn(|req: Request<ReplayBody>| async move {
//!         let mut res = Response::new(Full::from("hi"));
//!         if req.headers()["authorization"] == "Bearer bad" {
//!             *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
//!         }
//!         Ok::<_, Error>(res)
//!     }));
//!
//! let req = Request::post("/v1/chat/completions")
//!     .extension(Principal::new("g".into(), ChannelKind::OpenAi))
//!     .body(ReplayBody::new("{}"))
//!     .unwrap();
//! let res = svc.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK, "retried on the good key");
//! # }
//! ```

mod policy;
#[cfg(test)]
mod tests;

pub use self::policy::{RetryDelay, RetryOnOtherKey, RetrySettings};
