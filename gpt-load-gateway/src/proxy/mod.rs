//! The proxy request path: [`stack`] assembles it (the library's layers in
//! `gpt_load_tower::stack::ORDER` with the gateway's own at the documented insertion points), and
//! the gateway's own pieces live beside it: the client's address ([`client_ip`]), request-log
//! metrics ([`MetricsSink`]), model lists that include redirect targets ([`ModelListLayer`]), and
//! the answers for event streams and panics. The group policy layer sits with the catalog it
//! reads (`registry`); the HTTP client at the bottom of the path is `upstream`.

pub(crate) mod client_ip;
pub(crate) mod front_door;
mod metrics_sink;
mod model_list;
mod recent_failures;
pub(crate) mod stack;

#[cfg(test)]
pub(crate) use self::model_list::LIST_LIMIT;
pub(crate) use self::{
    metrics_sink::MetricsSink,
    model_list::ModelListLayer,
    recent_failures::{FailedAttempt, RecentFailures},
};

/// `X-Accel-Buffering: no` for event streams, so a reverse proxy in front does not buffer them.
pub(crate) fn sse_no_buffering<B>(res: &http::Response<B>) -> Option<http::HeaderValue> {
    let sse = res
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    sse.then(|| http::HeaderValue::from_static("no"))
}

/// The answer when a request handler panicked: an OpenAI-shaped 500 without details.
pub(crate) fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> http::Response<String> {
    tracing::error!("a proxy request panicked");
    let mut res = http::Response::new(
        r#"{"error":{"message":"internal error","type":"server_error","code":"internal_error"}}"#.to_owned(),
    );
    *res.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    res
}
