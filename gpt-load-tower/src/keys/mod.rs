//! The key pool and the layer that picks a key for each attempt.
//!
//! [`KeyPool`] is the extension point; [`MemoryKeyPool`] is the lock-free implementation the
//! gateway uses. A key ([`KeySlot`]) is `active`, `degraded` (counted failures below the
//! blacklist threshold: selected less often), `cooling` until a deadline (rate limited, not
//! counted as a failure; the rest grows by [`Backoff`] with each cool-down and the first request
//! after it is a probe), `invalid` (blacklisted) or `disabled` (by an operator); it counts its
//! consecutive failures and the requests in flight on it. A key may have rate limits
//! ([`KeyLimits`]: requests per minute, per UTC day, at once), which selection respects.
//!
//! [`KeySelectLayer`] sits inside the retry layer, so it runs once per attempt:
//!
//! - Reads: [`Principal`](crate::context::Principal) (channel),
//!   [`RoutedGroup`](crate::context::RoutedGroup) (aggregate sub-group),
//!   [`ExcludedKeys`] (keys this request already tried).
//! - Writes: the upstream credential, where the group's channel wants it (`Authorization`,
//!   `x-api-key` + `anthropic-version`, or Gemini's `?key=`); [`SelectedKey`] into the request
//!   and response extensions; the key's in-flight count, held until the response body ends.
//! - Rejects: `503` ([`ErrorKind::NoKeyAvailable`](crate::error::ErrorKind)) when no key is
//!   usable; `429` ([`ErrorKind::RateLimited`](crate::error::ErrorKind), with the limit's name and
//!   when it frees) when every usable key is at one of its [`KeyLimits`]
//!   ([`MemoryKeyPool::set_key_limits`]). Errors from inside carry the key as an [`AttemptKey`](crate::context::AttemptKey)
//!   ([`Error::key`](crate::error::Error::key)) with their message redacted.
//!
//! Pool changes are published as coalesced [`KeyEvent`]s when the pool is built with
//! [`MemoryKeyPool::with_events`], for an owner that persists them.
//!
//! # Example
//!
//! ```
//! use gpt_load_tower::{
//!     channel::ChannelKind,
//!     context::Principal,
//!     error::Error,
//!     keys::{KeyId, KeyPool, KeySelectLayer, KeySlot, MemoryKeyPool, Report, SelectedKey},
//! };
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (pool, mut events) = MemoryKeyPool::with_events();
//! pool.set_group("openai".into(), [
//!     KeySlot::new(KeyId(1), "sk-one".into()),
//!     KeySlot::new(KeyId(2), "sk-two".into()),
//! ]);
//!
//! let svc = ServiceBuilder::new()
//!     .layer(KeySelectLayer::new(pool.clone()))
//!     .service(service_fn(|req: Request<()>| async move {
//!         let auth = req.headers()["authorization"].to_str().unwrap().to_owned();
//!         Ok::<_, Error>(Response::new(auth))
//!     }));
//!
//! let req = Request::builder()
//!     .extension(Principal::new("openai".into(), ChannelKind::OpenAi))
//!     .body(())
//!     .unwrap();
//! let res = svc.oneshot(req).await.unwrap();
//! assert_eq!(res.body().get_ref(), "Bearer sk-one");
//!
//! // Three counted failures blacklist key 1 (threshold 3); the pool reports the change.
//! let key = res.extensions().get::<SelectedKey>().unwrap();
//! for _ in 0..3 {
//!     pool.report(key, Report::Failure { blacklist_threshold: 3 });
//! }
//! let event = events.recv().await.unwrap();
//! assert_eq!((event.key, event.state.as_str()), (KeyId(1), "invalid"));
//! # }
//! ```

mod backoff;
mod events;
mod limits;
mod memory;
mod pool;
mod service;
mod slot;
#[cfg(test)]
mod tests;

pub use self::{
    backoff::Backoff,
    events::{KeyEvent, KeyEvents},
    limits::{KeyLimits, LimitRefusal},
    memory::{GroupStats, MemoryKeyPool},
    pool::{ExcludedKeys, KeyPool, Report, SameKey, SelectedKey, SharedAdmission},
    service::{KeySelect, KeySelectLayer},
    slot::{InFlight, KeySlot, KeyState},
};
pub use crate::context::KeyId;
