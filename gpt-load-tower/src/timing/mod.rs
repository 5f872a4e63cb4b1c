//! The gateway's own overhead, on every response.
//!
//! Users of a gateway ask "how much does it add?". [`OverheadLayer`] answers on each response:
//! it starts a clock when the request arrives and puts an [`UpstreamTime`] into the request's
//! extensions, to which [`KeyHealthLayer`](crate::blacklist::KeyHealthLayer) adds every
//! attempt's wait for the upstream (its response head, and the error body it reads before a
//! retry). When the response head comes back, the overhead is the elapsed time minus that wait:
//! authentication, key selection, buffering, rewriting, logging and the retries' own work. It is
//! sent as a standard `Server-Timing` header (milliseconds; browsers' developer tools show it):
//!
//! ```text
//! server-timing: overhead;dur=0.182, upstream;dur=35.114
//! ```
//!
//! and recorded in the `gpt_load_overhead_seconds` histogram. Stream frames after the head pass
//! through without further work and are not part of the figure.
//!
//! - Writes: [`UpstreamTime`] (request extension); the `server-timing` response header.
//! - Rejects: nothing.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use gpt_load_tower::timing::{OverheadLayer, UpstreamTime};
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = ServiceBuilder::new().layer(OverheadLayer::new()).service(service_fn(|req: Request<()>| async move {
//!     // What an upstream-calling layer does after waiting on the upstream.
//!     UpstreamTime::record(req.extensions(), Duration::from_millis(40));
//!     Ok::<_, std::convert::Infallible>(Response::new(()))
//! }));
//!
//! let res = svc.oneshot(Request::new(())).await.unwrap();
//! let timing = res.headers()["server-timing"].to_str().unwrap();
//! assert!(timing.starts_with("overhead;dur="), "{timing}");
//! assert!(timing.ends_with("upstream;dur=40.000"), "{timing}");
//! # }
//! ```

use std::{
    fmt,
    future::Future,
    io::Write as _,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use http::{Extensions, HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::telemetry;

/// `server-timing`
pub const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// The time one request spent waiting on upstreams, summed over its attempts. Clones share the
/// sum, so retried copies of a request add to the same figure.
#[derive(Clone, Debug, Default)]
pub struct UpstreamTime(Arc<AtomicU64>);

impl UpstreamTime {
    /// A zero sum.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one wait.
    pub fn add(&self, waited: Duration) {
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Adds one wait to the request's [`UpstreamTime`], when it has one.
    pub fn record(extensions: &Extensions, waited: Duration) {
        if let Some(time) = extensions.get::<Self>() {
            time.add(waited);
        }
    }

    /// The sum so far.
    pub fn get(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

/// Measures the gateway's own overhead. See the [module docs](crate::timing).
#[derive(Clone, Copy, Debug, Default)]
pub struct OverheadLayer {
    _priv: (),
}

impl OverheadLayer {
    /// Creates the layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for OverheadLayer {
    type Service = Overhead<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Overhead { inner }
    }
}

/// The service built by [`OverheadLayer`].
#[derive(Clone, Debug)]
pub struct Overhead<S> {
    inner: S,
}

impl<S> Overhead<S> {
    define_inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Overhead<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let upstream = UpstreamTime::new();
        req.extensions_mut().insert(upstream.clone());
        ResponseFuture {
            inner: self.inner.call(req),
            started,
            upstream,
        }
    }
}

pin_project! {
    /// Response future of [`Overhead`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        started: Instant,
        upstream: UpstreamTime,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture(..)")
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        let upstream = this.upstream.get();
        let overhead = this.started.elapsed().saturating_sub(upstream);
        telemetry::overhead(overhead);
        if let Some(value) = server_timing(overhead, upstream) {
            res.headers_mut().append(SERVER_TIMING, value);
        }
        Poll::Ready(Ok(res))
    }
}

/// `overhead;dur=<ms>, upstream;dur=<ms>` with three decimals, written without a heap buffer
/// (integer arithmetic: formatting floats with a precision is a slow path).
fn server_timing(overhead: Duration, upstream: Duration) -> Option<HeaderValue> {
    let mut buf = [0_u8; 80];
    let mut cursor = &mut buf[..];
    let (o, u) = (overhead.as_micros(), upstream.as_micros());
    write!(
        cursor,
        "overhead;dur={}.{:03}, upstream;dur={}.{:03}",
        o / 1_000,
        o % 1_000,
        u / 1_000,
        u % 1_000
    )
    .ok()?;
    let written = 80 - cursor.len();
    HeaderValue::from_bytes(&buf[..written]).ok()
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{ServiceExt, service_fn};

    use super::*;

    #[test]
    fn the_header_is_milliseconds_with_three_decimals() {
        let value = server_timing(Duration::from_micros(182), Duration::from_micros(35_114_250)).unwrap();
        assert_eq!(value, "overhead;dur=0.182, upstream;dur=35114.250");
        let huge = server_timing(Duration::from_secs(86_400), Duration::from_secs(86_400 * 365)).unwrap();
        assert!(huge.to_str().unwrap().ends_with("upstream;dur=31536000000.000"));
    }

    #[tokio::test]
    async fn attempts_add_up_and_the_rest_is_overhead() {
        let svc = OverheadLayer::new().layer(service_fn(|req: Request<()>| async move {
            let copy = req.extensions().get::<UpstreamTime>().cloned().unwrap();
            // Two attempts, as a retried request makes them (through a clone).
            UpstreamTime::record(req.extensions(), Duration::from_millis(3));
            copy.add(Duration::from_millis(2));
            // At least 12 ms pass in all, 5 of them "upstream".
            std::thread::sleep(Duration::from_millis(12));
            Ok::<_, Infallible>(Response::new(()))
        }));
        let res = svc.oneshot(Request::new(())).await.unwrap();
        let timing = res.headers()[SERVER_TIMING].to_str().unwrap().to_owned();
        let (overhead, upstream) = timing.split_once(", ").unwrap();
        assert_eq!(upstream, "upstream;dur=5.000");
        let overhead: f64 = overhead.trim_start_matches("overhead;dur=").parse().unwrap();
        assert!(overhead >= 7.0, "time not spent upstream is overhead: {timing}");
    }

    #[tokio::test]
    async fn an_existing_server_timing_header_is_kept() {
        let svc = OverheadLayer::new().layer(service_fn(|_req: Request<()>| async {
            let mut res = Response::new(());
            res.headers_mut()
                .insert(SERVER_TIMING, HeaderValue::from_static("db;dur=1"));
            Ok::<_, Infallible>(res)
        }));
        let res = svc.oneshot(Request::new(())).await.unwrap();
        let all: Vec<_> = res.headers().get_all(SERVER_TIMING).iter().collect();
        assert_eq!(all.len(), 2, "the upstream's own timing is passed on");
    }
}
