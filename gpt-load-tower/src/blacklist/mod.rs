//! Key health: classify every attempt and tell the key pool.
//!
//! [`KeyHealthLayer`] sits just inside key selection, so it sees each attempt with its key. It
//! decides on the response **head**: a status outside the group's failover set (by default every
//! status but `400-403,405-999`, i.e. successes, redirects and `404`) passes through untouched,
//! body streaming. For a failover status or a `429` it reads the (small, capped) error body,
//! decodes gzip, removes the key from it wherever the upstream echoed it, parses the upstream's
//! message and asks the [`ClassifyOutcome`] extension point what it means for the key:
//!
//! | attempt | [`Outcome`] | the pool |
//! |---|---|---|
//! | `1xx`–`3xx`, or a non-failover status | `Success` / `Passthrough` | failure count reset / untouched |
//! | failover `401`–`403`, or a `4xx` whose body [blames the key](blame) | `Failure { counted: true }` | +1 consecutive failure; blacklisted at `blacklist_threshold` (0 = never) |
//! | failover `400`, `404`, `413`, `422`, … the key is not blamed for (malformed, too long) | `RequestError` | untouched; not retried |
//! | failover `5xx`, `408`, transport error or timeout | `Transient` | never blacklisted; retried |
//! | another failover status with an uncounted message | `Failure { counted: false }` | untouched (still retried) |
//! | `429` | `CoolDown(`[`QuotaSignal`]`)` | rests, not counted: as long as the provider said ([`quota_signal`]), else by [`Backoff`](crate::keys::Backoff); the first request after the rest probes the key |
//! | client went away | `ClientGone` | untouched |
//!
//! - Reads: [`SelectedKey`](crate::keys::SelectedKey); [`HealthSettings`] (optional, per-group
//!   failover statuses, threshold and cool-down backoff).
//! - Writes: [`AttemptOutcome`] into the response extensions (read by the retry policy and the
//!   request log); the attempt's wait for the upstream into the request's
//!   [`UpstreamTime`](crate::timing::UpstreamTime), when there is one. Never rejects; inner errors
//!   pass through after being classified.
//!
//! # Example
//!
//! ```
//! use gpt_load_tower::{
//!     blacklist::{AttemptOutcome, KeyHealthLayer, Outcome},
//!     channel::ChannelKind,
//!     context::Principal,
//!     error::Error,
//!     keys::{KeyId, KeySelectLayer, KeySlot, KeyState, MemoryKeyPool},
//! };
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = MemoryKeyPool::new();
//! pool.set_group("g".into(), [KeySlot::new(KeyId(1), "sk-revoked-0123456789".into())]);
//!
//! let svc = ServiceBuilder::new()
//!     .layer(KeySelectLayer::new(pool.clone()))
//!     .layer(KeyHealthLayer::new(pool.clone()))
//!     .service(service_fn(|_req: Request<()>| async {
//!         let body = r#"{"error":{"message":"Incorrect API key provided: sk-revoked-0123456789"}}"#;
//!         let mut res = Response::new(Full::from(body));
//!         *res.status_mut() = StatusCode::UNAUTHORIZED;
//!         Ok::<_, Error>(res)
//!     }));
//!
//! for _ in 0..3 {
//!     let req = Request::builder().extension(Principal::new("g".into(), ChannelKind::OpenAi)).body(()).unwrap();
//!     let res = svc.clone().oneshot(req).await.unwrap();
//!     let attempt = res.extensions().get::<AttemptOutcome>().unwrap().clone();
//!     assert_eq!(attempt.outcome, Outcome::Failure { counted: true });
//!     let body = res.into_body().collect().await.unwrap().to_bytes();
//!     assert!(!String::from_utf8_lossy(&body).contains("sk-revoked-0123456789"), "the key is redacted");
//! }
//! assert_eq!(pool.get("g", KeyId(1)).unwrap().state(), KeyState::Invalid);
//! # }
//! ```

mod blame;
mod classify;
mod empty_reply;
mod quota;
mod rules;
mod service;
mod status;
#[cfg(test)]
mod tests;

pub use self::{
    blame::{Blame, blame},
    classify::{ClassifyOutcome, DefaultClassifier, Outcome, UpstreamAnswer, upstream_message},
    quota::{QuotaSignal, QuotaWindow, exhausted_model, quota_signal, retry_after},
    rules::{
        ConditionField, ConditionOperator, ConditionSpec, InvalidRule, RuleAction, RuleInput, RuleSet,
        RuleSpec, RuleVerdict, ScalarValue,
    },
    service::{AttemptOutcome, HealthSettings, KeyHealth, KeyHealthLayer},
    status::{StatusMatcher, StatusSpecError},
};
