//! Metrics every layer records through the [`metrics`] facade.
//!
//! Install any `metrics` recorder (the gateway uses the Prometheus exporter) to collect them;
//! without one they cost next to nothing. The recording functions take plain labels (`&'static
//! str`, [`GroupName`]), so this module depends on [`context`](crate::context) only and every
//! layer can record. Names and labels:
//!
//! | metric | type | labels | recorded by |
//! |---|---|---|---|
//! | `gpt_load_auth_rejections_total` | counter | `reason` (`unauthorized`, `unknown_group`, `invalid_path`) | [`auth`](crate::auth) |
//! | `gpt_load_requests_shed_total` | counter | – | [`limit`](crate::limit) |
//! | `gpt_load_requests_in_flight` | gauge | – | [`limit`](crate::limit) |
//! | `gpt_load_request_body_rejected_total` | counter | – | [`body`](crate::body) |
//! | `gpt_load_request_body_shed_total` | counter | – | [`body`](crate::body) (in-flight body budget) |
//! | `gpt_load_no_key_available_total` | counter | `group` | [`keys`](crate::keys) |
//! | `gpt_load_key_state_transitions_total` | counter | `group`, `state` ([`KeyState::as_str`](crate::keys::KeyState::as_str)) | [`keys`](crate::keys) |
//! | `gpt_load_limit_rejections_total` | counter | `group`, `limit` (`key_rpm`, `key_rpd`, `key_concurrency`, `group_rpm`, `group_concurrency`) | [`keys`](crate::keys) (every usable key at a limit), [`limit`](crate::limit) (a group's own limits) |
//! | `gpt_load_key_probes_total` | counter | `group` | [`keys`](crate::keys) (a request tries a cooling key whose rest is over) |
//! | `gpt_load_attempts_total` | counter | `group`, `outcome` | [`blacklist`](crate::blacklist) |
//! | `gpt_load_retries_total` | counter | `group` | [`retry`](crate::retry) |
//! | `gpt_load_log_records_total` | counter | `type` (`retry`, `final`) | [`log`](crate::log) |
//! | `gpt_load_log_records_dropped_total` | counter | – | [`log`](crate::log) |
//! | `gpt_load_upstream_ejections_total` | counter | `group` | [`upstream`](crate::upstream) |
//! | `gpt_load_rewrite_rejections_total` | counter | `group` | [`rewrite`](crate::rewrite) |
//! | `gpt_load_errors_total` | counter | `kind` ([`ErrorKind::as_str`](crate::error::ErrorKind::as_str)) | [`error`](crate::error) |
//! | `gpt_load_overhead_seconds` | histogram | – | [`timing`](crate::timing) |
//!
//! # Example
//!
//! ```
//! use gpt_load_tower::{error::Error, limit::ConcurrencyLimitLayer, telemetry};
//! use http::{Request, Response};
//! use metrics_util::debugging::{DebugValue, DebuggingRecorder};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let recorder = DebuggingRecorder::new();
//! let snapshot = recorder.snapshotter();
//! let mut svc = ConcurrencyLimitLayer::new(0).layer(service_fn(|_req: Request<()>| async {
//!     Ok::<_, Error>(Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
//! }));
//! let ready = svc.ready().await.unwrap();
//! // Layers record when they decide, here inside `call`.
//! let shed = metrics::with_local_recorder(&recorder, || ready.call(Request::new(())));
//! assert!(shed.await.is_err());
//!
//! let shed_total = snapshot.snapshot().into_vec().into_iter()
//!     .find(|(key, ..)| key.key().name() == telemetry::REQUESTS_SHED)
//!     .map(|(.., value)| value);
//! assert_eq!(shed_total, Some(DebugValue::Counter(1)));
//! # }
//! ```

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use crate::context::GroupName;

/// `gpt_load_auth_rejections_total`
pub const AUTH_REJECTIONS: &str = "gpt_load_auth_rejections_total";
/// `gpt_load_requests_shed_total`
pub const REQUESTS_SHED: &str = "gpt_load_requests_shed_total";
/// `gpt_load_requests_in_flight`
pub const REQUESTS_IN_FLIGHT: &str = "gpt_load_requests_in_flight";
/// `gpt_load_request_body_rejected_total`
pub const BODY_REJECTED: &str = "gpt_load_request_body_rejected_total";
/// `gpt_load_request_body_shed_total`
pub const BODY_SHED: &str = "gpt_load_request_body_shed_total";
/// `gpt_load_no_key_available_total`
pub const NO_KEY_AVAILABLE: &str = "gpt_load_no_key_available_total";
/// `gpt_load_limit_rejections_total`
pub const LIMIT_REJECTIONS: &str = "gpt_load_limit_rejections_total";
/// `gpt_load_key_state_transitions_total`
pub const KEY_STATE_TRANSITIONS: &str = "gpt_load_key_state_transitions_total";
/// `gpt_load_key_probes_total`
pub const KEY_PROBES: &str = "gpt_load_key_probes_total";
/// `gpt_load_attempts_total`
pub const ATTEMPTS: &str = "gpt_load_attempts_total";
/// `gpt_load_retries_total`
pub const RETRIES: &str = "gpt_load_retries_total";
/// `gpt_load_log_records_total`
pub const LOG_RECORDS: &str = "gpt_load_log_records_total";
/// `gpt_load_log_records_dropped_total`
pub const LOG_RECORDS_DROPPED: &str = "gpt_load_log_records_dropped_total";
/// `gpt_load_upstream_ejections_total`
pub const UPSTREAM_EJECTIONS: &str = "gpt_load_upstream_ejections_total";
/// `gpt_load_rewrite_rejections_total`
pub const REWRITE_REJECTIONS: &str = "gpt_load_rewrite_rejections_total";
/// `gpt_load_errors_total`
pub const ERRORS: &str = "gpt_load_errors_total";
/// `gpt_load_overhead_seconds`: time to the response head minus time waiting on upstreams.
pub const OVERHEAD: &str = "gpt_load_overhead_seconds";

pub(crate) fn auth_rejected(reason: &'static str) {
    counter!(AUTH_REJECTIONS, "reason" => reason).increment(1);
}

pub(crate) fn request_shed() {
    counter!(REQUESTS_SHED).increment(1);
}

pub(crate) fn in_flight(now: usize) {
    gauge!(REQUESTS_IN_FLIGHT).set(now as f64);
}

pub(crate) fn body_rejected() {
    counter!(BODY_REJECTED).increment(1);
}

pub(crate) fn body_shed() {
    counter!(BODY_SHED).increment(1);
}

/// `limit` is the limit's stable name ([`Error::limit`](crate::error::Error::limit)).
pub(crate) fn limit_refused(group: &GroupName, limit: &'static str) {
    counter!(LIMIT_REJECTIONS, "group" => group.shared(), "limit" => limit).increment(1);
}

pub(crate) fn no_key(group: &GroupName) {
    counter!(NO_KEY_AVAILABLE, "group" => group.shared()).increment(1);
}

/// `state` is the new state's label ([`KeyState::as_str`](crate::keys::KeyState::as_str)).
pub(crate) fn key_state_changed(group: &GroupName, state: &'static str) {
    counter!(KEY_STATE_TRANSITIONS, "group" => group.shared(), "state" => state).increment(1);
}

pub(crate) fn key_probe(group: &GroupName) {
    counter!(KEY_PROBES, "group" => group.shared()).increment(1);
}

pub(crate) fn attempt(group: &GroupName, outcome: &'static str) {
    counter!(ATTEMPTS, "group" => group.shared(), "outcome" => outcome).increment(1);
}

pub(crate) fn retry(group: &GroupName) {
    counter!(RETRIES, "group" => group.shared()).increment(1);
}

pub(crate) fn log_record(kind: &'static str) {
    counter!(LOG_RECORDS, "type" => kind).increment(1);
}

pub(crate) fn log_record_dropped() {
    counter!(LOG_RECORDS_DROPPED).increment(1);
}

pub(crate) fn upstream_ejected(group: &GroupName) {
    counter!(UPSTREAM_EJECTIONS, "group" => group.shared()).increment(1);
}

pub(crate) fn rewrite_rejected(group: &GroupName) {
    counter!(REWRITE_REJECTIONS, "group" => group.shared()).increment(1);
}

/// `kind` is the error's label ([`ErrorKind::as_str`](crate::error::ErrorKind::as_str)).
pub(crate) fn error_rendered(kind: &'static str) {
    counter!(ERRORS, "kind" => kind).increment(1);
}

pub(crate) fn overhead(overhead: Duration) {
    histogram!(OVERHEAD).record(overhead.as_secs_f64());
}
