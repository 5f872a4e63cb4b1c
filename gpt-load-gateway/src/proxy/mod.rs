//! The upstream HTTP client at the bottom of the proxy stack.
//!
//! [`UpstreamClient`] sends the request the layers above have prepared (absolute URI, the
//! selected key's credential, a replayable body) to the upstream and streams the answer back:
//!
//! - HTTP/1.1, or HTTP/2 when the upstream offers it through ALPN; rustls with ring and the
//!   webpki roots for `https`; pooled connections (idle timeout, idle connections per host).
//! - A limit per phase, each reported as an `upstream … timeout` error naming it: `connect` (TCP,
//!   proxy handshake and TLS), `response header` (from a ready connection to the response head),
//!   `request` (head and whole body of a non-streamed request) and `stream idle` (silence between
//!   two body frames).
//! - An outbound proxy: `http://`, `https://`, `socks5://`, `socks5h://` (credentials in the URL
//!   work), or the environment's `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY`.
//! - Per-group settings: a request carrying [`ClientSettings`] is sent with them; groups whose
//!   settings agree on the connection side share one pool.
//!
//! Nothing here logs a full URI or a header: at most the upstream's scheme, host and port.

mod body;
mod client;
mod metrics_sink;
mod model_list;
mod outbound;
mod settings;
mod timeout;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) use self::model_list::LIST_LIMIT;

pub(crate) use self::{
    client::UpstreamClient, metrics_sink::MetricsSink, model_list::ModelListLayer, settings::ClientSettings,
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
