use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use http::Method;

use crate::{
    context::{AccessKeyId, GroupName},
    keys::KeyId,
    usage::TokenUsage,
};

/// Whether an attempt was followed by another (`retry`) or was the last (`final`), as gpt-load
/// records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestType {
    /// An attempt that failed and was retried on another key.
    Retry,
    /// The attempt whose answer the client received.
    Final,
}

impl RequestType {
    /// `retry` or `final`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Final => "final",
        }
    }
}

/// One attempt of one proxied request. Never contains a key: only its id and mask.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RequestRecord {
    /// When the client's request arrived.
    pub timestamp: SystemTime,
    /// `retry` or `final`.
    pub request_type: RequestType,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The group that served the attempt (the sub-group for aggregate groups).
    pub group: GroupName,
    /// The aggregate group named in the URL, when it differs from `group`.
    pub parent_group: Option<GroupName>,
    /// The access key the client presented, when it was one ([`Principal::access_key`]).
    ///
    /// [`Principal::access_key`]: crate::context::Principal::access_key
    pub access_key: Option<AccessKeyId>,
    /// The key used, if one was selected.
    pub key_id: Option<KeyId>,
    /// The key used, masked.
    pub masked_key: Option<String>,
    /// The upstream base URL the attempt went to.
    pub upstream: Option<Arc<str>>,
    /// The requested model (before any redirect).
    pub model: Option<String>,
    /// The client's method.
    pub method: Method,
    /// The client's path and query, without the `key` parameter, at most 500 bytes.
    pub path: String,
    /// The status the attempt produced (the upstream's, or the gateway's for its own errors).
    pub status: u16,
    /// Whether the attempt succeeded (a status below 400 and an intact body).
    pub success: bool,
    /// From the request's arrival to this attempt's end (for a final answer: its last byte).
    pub duration: Duration,
    /// From sending the attempt upstream to its response head.
    pub time_to_first_byte: Option<Duration>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The client's address, as the application determined it.
    pub client_ip: Option<IpAddr>,
    /// What went wrong, redacted.
    pub error: Option<String>,
    /// What the attempt meant for its key ([`Outcome::as_str`](crate::blacklist::Outcome::as_str):
    /// `success`, `failure`, `cool_down`, `transient`, …), when the upstream answered.
    pub outcome: Option<&'static str>,
    /// The operator rule that decided the outcome (`policy / rule`), if one did.
    pub rule: Option<Arc<str>>,
    /// The request body, when body logging is on (at most the configured size).
    pub request_body: Option<String>,
    /// The client's `User-Agent`, when body logging is on.
    pub user_agent: Option<String>,
    /// The request's `x-request-id`, when present.
    pub request_id: Option<String>,
    /// The tokens the provider reported for this attempt, read from the reply the client
    /// received ([`usage`](crate::usage)); `None` for abandoned attempts and replies that report
    /// none.
    pub usage: Option<TokenUsage>,
}
