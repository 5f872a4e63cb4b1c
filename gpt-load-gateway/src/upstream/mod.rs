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
mod connection;
mod outbound;
mod settings;
mod timeout;

#[cfg(test)]
mod tests;

pub(crate) use self::{client::UpstreamClient, settings::ClientSettings};
