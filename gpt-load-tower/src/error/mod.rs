//! The crate's one error type, and the layer that turns it into a response in the client's
//! own API format.
//!
//! Every layer of this crate fails with [`Error`]; an upstream that answers with an error
//! status is *not* an `Error` (its response is passed on). [`ErrorResponseLayer`] sits at the
//! top of the stack and renders each `Error` as JSON the client's SDK already understands:
//!
//! | format | body |
//! |---|---|
//! | OpenAI | `{"error":{"message","type","code"}}` |
//! | Anthropic | `{"type":"error","error":{"type","message"}}` |
//! | Gemini | `{"error":{"code","message","status"}}` |
//!
//! The format is chosen per request from its path and headers ([`ErrorFormat::detect`]), so an
//! OpenAI SDK talking to a Gemini group through `/v1beta/openai/…` gets OpenAI errors. Above this
//! layer the stack's error type is [`Infallible`](std::convert::Infallible).
//!
//! # Example
//!
//! ```
//! use gpt_load_tower::error::{Error, ErrorResponseLayer};
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Empty};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = ServiceBuilder::new().layer(ErrorResponseLayer::new()).service(service_fn(
//!     |_req: Request<()>| async { Err::<Response<Empty<bytes::Bytes>>, _>(Error::unauthorized()) },
//! ));
//! let req = Request::post("/proxy/claude/v1/messages").header("x-api-key", "wrong").body(()).unwrap();
//! let res = svc.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
//! let body = res.into_body().collect().await.unwrap().to_bytes();
//! let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
//! assert_eq!(json["type"], "error");
//! assert_eq!(json["error"]["type"], "authentication_error");
//! # }
//! ```

mod format;
mod kind;
mod layer;

use std::{borrow::Cow, fmt, time::Duration};

pub use self::{
    format::ErrorFormat,
    kind::ErrorKind,
    layer::{ErrorResponse, ErrorResponseLayer},
};
use crate::context::{AttemptKey, AttemptUpstream, GroupName};

/// A type-erased error, as tower uses it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error every layer of this crate returns.
///
/// Its message never contains a secret: messages built from an upstream failure are redacted
/// against the key that was used.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: Cow<'static, str>,
    source: Option<BoxError>,
    retry_after: Option<Duration>,
    limit: Option<&'static str>,
    key: Option<AttemptKey>,
    upstream: Option<AttemptUpstream>,
}

/// The response header that names the gateway's own limit a `429` comes from; an upstream's
/// `429` passes through without it.
pub const LIMIT_HEADER: http::HeaderName = http::HeaderName::from_static("x-gpt-load-limit");

impl Error {
    fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                source: None,
                retry_after: None,
                limit: None,
                key: None,
                upstream: None,
            }),
        }
    }

    fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    /// The caller presented no proxy key, or one this group does not accept.
    pub fn unauthorized() -> Self {
        Self::new(ErrorKind::Unauthorized, "invalid or missing proxy key")
    }

    /// The presented key is refused for a reason its holder may read (`message`, without any
    /// secret): an access key that is disabled or expired, say.
    pub fn unauthorized_because(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Unauthorized, message)
    }

    /// The caller is known but may not do this (`message` says what, without any secret).
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    /// The URL names no known group.
    pub fn unknown_group(group: &str) -> Self {
        Self::new(ErrorKind::UnknownGroup, format!("group '{group}' not found"))
    }

    /// The gateway is at its concurrency limit; the client should retry after `retry_after`.
    pub fn overloaded(retry_after: Duration) -> Self {
        let mut err = Self::new(ErrorKind::Overloaded, "too many concurrent requests, retry later");
        err.inner.retry_after = Some(retry_after);
        err.inner.limit = Some("concurrency");
        err
    }

    /// The gateway's own rate limit `limit` (a stable name such as `key_rpm` or `group_rpm`, sent
    /// as [`LIMIT_HEADER`]) refuses the request; there is room again after `retry_after`.
    pub fn rate_limited(limit: &'static str, retry_after: Duration) -> Self {
        let mut err = Self::new(
            ErrorKind::RateLimited,
            format!("rate limit '{limit}' reached, retry later"),
        );
        err.inner.retry_after = Some(retry_after);
        err.inner.limit = Some(limit);
        err
    }

    /// The request body exceeds `limit` bytes.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            ErrorKind::BodyTooLarge,
            format!("request body exceeds the limit of {limit} bytes"),
        )
    }

    /// The path to forward has a dot segment (see [`path`](crate::path)).
    pub fn invalid_path() -> Self {
        Self::new(
            ErrorKind::InvalidPath,
            "the request path must not contain '.' or '..' segments",
        )
    }

    /// Buffering the request body would pass the in-flight body budget; the client should retry
    /// after `retry_after`.
    pub fn body_budget_exhausted(retry_after: Duration) -> Self {
        let mut err = Self::new(
            ErrorKind::BodyBudgetExhausted,
            "too many request bodies in flight, retry later",
        );
        err.inner.retry_after = Some(retry_after);
        err
    }

    /// The request is invalid for this group (for example a model that strict redirect rules
    /// do not list).
    pub fn invalid_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }

    /// Reading the client's request body failed.
    pub fn client_body(source: impl Into<BoxError>) -> Self {
        Self::new(ErrorKind::ClientBody, "failed to read the request body").with_source(source)
    }

    /// No key of `group` can serve this request.
    pub fn no_key_available(group: &GroupName) -> Self {
        Self::new(
            ErrorKind::NoKeyAvailable,
            format!("no active API keys available for group '{group}'"),
        )
    }

    /// No sub-group of the aggregate `group` has a usable key.
    pub fn no_sub_group_available(group: &GroupName) -> Self {
        Self::new(
            ErrorKind::NoKeyAvailable,
            format!("no available sub-groups in aggregate group '{group}'"),
        )
    }

    /// `group` has no usable upstream.
    pub fn no_upstream(group: &GroupName) -> Self {
        Self::new(
            ErrorKind::NoUpstream,
            format!("no upstream configured for group '{group}'"),
        )
    }

    /// The upstream request failed at the transport level.
    pub fn upstream(source: impl Into<BoxError>) -> Self {
        let source = source.into();
        let message = format!("upstream request failed: {}", chain_text(&*source));
        Self::new(ErrorKind::Upstream, message).with_source(source)
    }

    /// The upstream did not answer within the `phase` timeout (`connect`, `response header`,
    /// `stream idle` or `request`).
    pub fn upstream_timeout(phase: &'static str) -> Self {
        Self::new(ErrorKind::UpstreamTimeout, format!("upstream {phase} timeout"))
    }

    /// An internal failure, such as a layer placed where the extension it needs is missing.
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Converts any error from an inner service: an [`Error`] is unwrapped, anything else is
    /// treated as a transport failure of the upstream.
    pub fn from_boxed(err: BoxError) -> Self {
        match err.downcast::<Error>() {
            Ok(err) => *err,
            Err(other) => Self::upstream(other),
        }
    }

    /// Records the key the failed attempt used, and removes that key from the message.
    ///
    /// Takes an [`AttemptKey`] or anything that converts into one, such as the
    /// [`SelectedKey`](crate::keys::SelectedKey) of the attempt.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<AttemptKey>) -> Self {
        let key = key.into();
        if let Cow::Owned(redacted) = key.secret().redact(&self.inner.message) {
            self.inner.message = Cow::Owned(redacted);
        }
        self.inner.key = Some(key);
        self
    }

    /// Records the upstream the failed attempt was sent to: an [`AttemptUpstream`] or anything
    /// that converts into one, such as the [`UpstreamTarget`](crate::upstream::UpstreamTarget) of
    /// the attempt.
    #[must_use]
    pub fn with_upstream(mut self, upstream: impl Into<AttemptUpstream>) -> Self {
        self.inner.upstream = Some(upstream.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The status a client receives.
    pub fn status(&self) -> http::StatusCode {
        self.inner.kind.status()
    }

    /// The client-facing message (never contains a secret known to the stack).
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// How long the client should wait before retrying, for [`ErrorKind::Overloaded`],
    /// [`ErrorKind::RateLimited`] and [`ErrorKind::BodyBudgetExhausted`].
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// Which of the gateway's own limits refused the request (`concurrency` for
    /// [`ErrorKind::Overloaded`], the limit's name for [`ErrorKind::RateLimited`]), sent as
    /// [`LIMIT_HEADER`].
    pub fn limit(&self) -> Option<&'static str> {
        self.inner.limit
    }

    /// The key the failed attempt used, if a key had been selected: its id, group and (masked
    /// when shown) value.
    pub fn key(&self) -> Option<&AttemptKey> {
        self.inner.key.as_ref()
    }

    /// The upstream the failed attempt was sent to, if one had been chosen.
    pub fn upstream_target(&self) -> Option<&AttemptUpstream> {
        self.inner.upstream.as_ref()
    }

    /// Whether another attempt on another key may succeed: transport failures and timeouts.
    pub fn is_retryable(&self) -> bool {
        matches!(self.inner.kind, ErrorKind::Upstream | ErrorKind::UpstreamTimeout)
    }
}

/// The error and its sources, joined with `: `.
fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.inner.kind)
            .field("message", &self.inner.message)
            .field("key", &self.inner.key.as_ref().map(AttemptKey::id))
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::KeyId;

    #[test]
    fn statuses_and_codes() {
        assert_eq!(Error::unauthorized().status(), 401);
        assert_eq!(Error::unknown_group("x").status(), 404);
        assert_eq!(Error::overloaded(Duration::from_secs(1)).status(), 429);
        assert_eq!(Error::body_too_large(10).status(), 413);
        let limited = Error::rate_limited("key_rpm", Duration::from_millis(1500));
        assert_eq!(
            (limited.status().as_u16(), limited.limit()),
            (429, Some("key_rpm"))
        );
        assert_eq!(limited.kind().as_str(), "rate_limit_exceeded");
        assert!(!limited.is_retryable());
        assert_eq!(Error::invalid_path().status(), 400);
        let shed = Error::body_budget_exhausted(Duration::from_secs(1));
        assert_eq!(shed.status(), 503);
        assert_eq!(shed.retry_after(), Some(Duration::from_secs(1)));
        assert!(!shed.is_retryable());
        assert_eq!(Error::no_key_available(&"g".into()).status(), 503);
        assert_eq!(Error::upstream_timeout("connect").status(), 504);
        assert_eq!(Error::no_upstream(&"g".into()).kind().as_str(), "no_upstream");
    }

    #[test]
    fn from_boxed_unwraps_own_errors() {
        let boxed: BoxError = Box::new(Error::no_key_available(&"g".into()));
        assert_eq!(Error::from_boxed(boxed).kind(), ErrorKind::NoKeyAvailable);
        let io: BoxError = Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        let err = Error::from_boxed(io);
        assert_eq!(err.kind(), ErrorKind::Upstream);
        assert!(err.is_retryable());
        assert!(err.message().contains("refused"));
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn with_key_redacts_the_message() {
        let secret = "sk-secret-0123456789abcdef";
        let key = AttemptKey::new(KeyId(1), "g".into(), secret.into());
        let io: BoxError = format!("dns error for https://h/?key={secret}").into();
        let err = Error::upstream(io).with_key(key);
        assert!(!err.message().contains(secret), "{}", err.message());
        assert!(!format!("{err:?}").contains(secret));
        assert_eq!(err.key().unwrap().id(), KeyId(1));
        assert_eq!(err.key().unwrap().group().as_str(), "g");
    }
}
