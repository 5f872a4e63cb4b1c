//! A global concurrency limit that sheds load instead of queueing, each group's own limits
//! ([`GroupLimitLayer`]), and the counters rate limits are built on: [`MinuteWindow`] (a sliding
//! minute) and [`DayWindow`] (a UTC day), and tokens per minute ([`TokenCharge`]: reserved before a
//! request is sent, settled with the usage it reports).
//!
//! tower's `ConcurrencyLimit` makes callers wait for a permit; a gateway in front of slow model
//! calls should instead answer at once so clients back off. [`ConcurrencyLimitLayer`] admits up
//! to `max` requests and answers the next with `429` and `Retry-After`. A permit is held until the
//! response **body** ends (or is dropped), so a long SSE stream counts for as long as it flows.
//!
//! The counter is created by [`ConcurrencyLimitLayer::new`] and shared by every service the layer
//! builds and by every clone, so mount the wrapped service once (not per route).
//!
//! - Reads and writes: no extensions.
//! - Rejects: `429` ([`ErrorKind::Overloaded`](crate::error::ErrorKind)) with
//!   [`Error::retry_after`](crate::error::Error::retry_after).
//!
//! # Tokens per minute
//!
//! A provider counts tokens only after it answered, so a tokens-per-minute limit works in two
//! steps. Before an attempt is sent, [`KeySelect`](crate::keys::KeySelect) reserves a
//! [`TokenEstimate`] in the minute windows the attempt counts against (its key's, with
//! [`KeyLimits::tpm`](crate::keys::KeyLimits), and its group's, with [`GroupLimits::tpm`], which
//! [`GroupLimit`] hands down as [`GroupTokens`]). The reservation travels up with the response
//! as a [`TokenCharge`]; [`RequestLog`](crate::log::RequestLog) settles it with the tokens the
//! reply reports once its body ends. A reply that reports none keeps the estimate when it
//! succeeded, and an attempt that failed or was abandoned gives the estimate back (the provider
//! counts nothing for it). A limit admits a request while the minute's tokens (settled, plus
//! reserved for requests in flight) are under it: the request that crosses the limit is sent,
//! the next waits.
//!
//! # Example
//!
//! ```
//! use gpt_load_tower::{error::{Error, ErrorKind}, limit::ConcurrencyLimitLayer};
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let limit = ConcurrencyLimitLayer::new(1);
//! let mut svc = ServiceBuilder::new().layer(limit.clone()).service(service_fn(|_req: Request<()>| async {
//!     Ok::<_, Error>(Response::new(Full::<bytes::Bytes>::from("streaming…")))
//! }));
//!
//! let first = svc.ready().await.unwrap().call(Request::new(())).await.unwrap();
//! assert_eq!(limit.in_flight(), 1, "the body has not been read yet");
//! let second = svc.ready().await.unwrap().call(Request::new(())).await.unwrap_err();
//! assert_eq!(second.kind(), ErrorKind::Overloaded);
//!
//! drop(first);
//! assert_eq!(limit.in_flight(), 0);
//! # }
//! ```

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

pub use self::{
    day::DayWindow,
    group::{
        GroupLimit, GroupLimitFuture, GroupLimitLayer, GroupLimitTable, GroupLimits, GroupPermit,
        SharedGroupCount,
    },
    tokens::{DEFAULT_TOKEN_RESERVE, GroupTokens, TokenCharge, TokenEstimate, TokenReserve},
    window::MinuteWindow,
};
use crate::{
    body::{BodyEnd, OnBodyEnd, TrackedBody},
    error::{BoxError, Error},
    telemetry,
};

struct Shared {
    max: AtomicUsize,
    in_flight: AtomicUsize,
    retry_after: Duration,
}

/// Sheds requests beyond a global in-flight cap. See the [module docs](crate::limit).
#[derive(Clone)]
pub struct ConcurrencyLimitLayer {
    shared: Arc<Shared>,
}

impl ConcurrencyLimitLayer {
    /// Admits up to `max` requests at once; the rest get `429` with `Retry-After: 1`.
    pub fn new(max: usize) -> Self {
        Self::with_retry_after(max, Duration::from_secs(1))
    }

    /// Like [`new`](Self::new), advising clients to wait `retry_after`.
    pub fn with_retry_after(max: usize, retry_after: Duration) -> Self {
        let shared = Shared {
            max: AtomicUsize::new(max),
            in_flight: AtomicUsize::new(0),
            retry_after,
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Requests holding a permit now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.shared.max.load(Ordering::Relaxed)
    }

    /// Changes the cap; requests already admitted keep their permits.
    pub fn set_max(&self, max: usize) {
        self.shared.max.store(max, Ordering::Relaxed);
    }
}

impl fmt::Debug for ConcurrencyLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimitLayer")
            .field("max", &self.max())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service built by [`ConcurrencyLimitLayer`].
#[derive(Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> ConcurrencyLimit<S> {
    define_inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for ConcurrencyLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// One admitted request; dropping it frees the slot.
pub struct Permit {
    shared: Arc<Shared>,
}

impl Permit {
    fn try_acquire(shared: &Arc<Shared>) -> Option<Self> {
        let max = shared.max.load(Ordering::Relaxed);
        let admitted = shared
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        telemetry::in_flight(admitted + 1);
        Some(Self {
            shared: shared.clone(),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let before = self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        telemetry::in_flight(before - 1);
    }
}

impl OnBodyEnd for Permit {
    fn on_body_end(self, _end: BodyEnd) {}
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Permit")
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ConcurrencyLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<TrackedBody<ResBody, Permit>>;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        match Permit::try_acquire(&self.shared) {
            Some(permit) => ResponseFuture {
                state: State::Admitted {
                    inner: self.inner.call(req),
                    permit: Some(permit),
                },
            },
            None => {
                telemetry::request_shed();
                ResponseFuture {
                    state: State::Shed {
                        error: Some(Error::overloaded(self.shared.retry_after)),
                    },
                }
            }
        }
    }
}

pin_project! {
    /// Response future of [`ConcurrencyLimit`].
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Admitted { #[pin] inner: F, permit: Option<Permit> },
        Shed { error: Option<Error> },
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
    E: Into<BoxError>,
{
    type Output = Result<Response<TrackedBody<B, Permit>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Admitted { inner, permit } => {
                let res = ready!(inner.poll(cx)).map_err(|e| Error::from_boxed(e.into()))?;
                let permit = permit.take().expect("polled after completion");
                Poll::Ready(Ok(res.map(|body| TrackedBody::new(body, permit))))
            }
            StateProj::Shed { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| Error::internal("polled after completion")))),
        }
    }
}

mod day;
mod group;
mod tokens;
mod window;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use std::sync::atomic::AtomicU32;
    use tokio::sync::oneshot;
    use tower::{ServiceExt, service_fn};

    fn ok()
    -> impl Service<Request<()>, Response = Response<Full<Bytes>>, Error = Error, Future = impl Send> + Clone
    {
        service_fn(|_req: Request<()>| async { Ok::<_, Error>(Response::new(Full::from("ok"))) })
    }

    #[tokio::test]
    async fn sheds_immediately_and_recovers() {
        let limit = ConcurrencyLimitLayer::with_retry_after(2, Duration::from_secs(3));
        let svc = limit.layer(ok());
        let a = svc.clone().oneshot(Request::new(())).await.unwrap();
        let b = svc.clone().oneshot(Request::new(())).await.unwrap();
        let err = svc.clone().oneshot(Request::new(())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Overloaded);
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(limit.in_flight(), 2);
        // Reading a body to its end frees its permit.
        assert_eq!(a.into_body().collect().await.unwrap().to_bytes(), "ok");
        assert_eq!(limit.in_flight(), 1);
        assert!(svc.clone().oneshot(Request::new(())).await.is_ok());
        drop(b);
    }

    #[tokio::test]
    async fn permit_is_released_on_inner_error_and_cancel() {
        let limit = ConcurrencyLimitLayer::new(1);
        let failing = limit.layer(service_fn(|_req: Request<()>| async {
            Err::<Response<Full<Bytes>>, _>(Error::no_key_available(&"g".into()))
        }));
        let err = failing.oneshot(Request::new(())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoKeyAvailable, "inner errors pass through");
        assert_eq!(limit.in_flight(), 0);

        let (tx, rx) = oneshot::channel::<()>();
        let rx = std::sync::Mutex::new(Some(rx));
        let pending = limit.layer(service_fn(move |_req: Request<()>| {
            let rx = rx.lock().unwrap().take().unwrap();
            async move {
                let _ = rx.await;
                Ok::<_, Error>(Response::new(Full::<Bytes>::from("late")))
            }
        }));
        let fut = pending.oneshot(Request::new(()));
        let handle = tokio::spawn(fut);
        tokio::task::yield_now().await;
        assert_eq!(limit.in_flight(), 1);
        handle.abort();
        let _ = handle.await;
        drop(tx);
        assert_eq!(limit.in_flight(), 0, "a cancelled request frees its permit");
    }

    #[tokio::test]
    async fn readiness_never_waits_for_a_permit() {
        let (service, mut handle) = tower_test::mock::pair::<Request<()>, Response<Full<Bytes>>>();
        let mut svc = tower_test::mock::Spawn::new(ConcurrencyLimitLayer::new(1).layer(service));
        tokio_test_ready(&mut svc);
        let first = svc.call(Request::new(()));
        // At the cap, tower's limit would leave `poll_ready` pending; this one stays ready and
        // sheds the next call instead.
        tokio_test_ready(&mut svc);
        let err = svc.call(Request::new(())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Overloaded);
        let (_req, send) = handle.next_request().await.unwrap();
        send.send_response(Response::new(Full::from("done")));
        let res = first.await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "done");
        tokio_test_ready(&mut svc);
        assert!(svc.call(Request::new(())).now_or_never_pending());
    }

    fn tokio_test_ready<S: Service<Request<()>>>(svc: &mut tower_test::mock::Spawn<S>)
    where
        S::Error: std::fmt::Debug,
    {
        match svc.poll_ready() {
            Poll::Ready(Ok(())) => {}
            other => panic!(
                "expected ready, got {:?}",
                other.map(|r| r.map_err(|e| format!("{e:?}")))
            ),
        }
    }

    trait PendingExt {
        fn now_or_never_pending(self) -> bool;
    }

    impl<F: Future + Unpin> PendingExt for F {
        /// Whether the future is still pending on its first poll (the inner mock has not answered).
        fn now_or_never_pending(mut self) -> bool {
            let waker = std::task::Waker::noop();
            Pin::new(&mut self)
                .poll(&mut Context::from_waker(waker))
                .is_pending()
        }
    }

    #[tokio::test]
    async fn set_max_applies_to_new_requests() {
        let limit = ConcurrencyLimitLayer::new(0);
        assert!(limit.layer(ok()).oneshot(Request::new(())).await.is_err());
        limit.set_max(1);
        assert!(limit.layer(ok()).oneshot(Request::new(())).await.is_ok());
    }

    #[tokio::test]
    async fn many_tasks_never_exceed_the_cap() {
        let limit = ConcurrencyLimitLayer::new(8);
        let peak = Arc::new(AtomicU32::new(0));
        let current = Arc::new(AtomicU32::new(0));
        let svc = limit.layer(service_fn({
            let (peak, current) = (peak.clone(), current.clone());
            move |_req: Request<()>| {
                let (peak, current) = (peak.clone(), current.clone());
                async move {
                    let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    current.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, Error>(Response::new(Full::<Bytes>::from("x")))
                }
            }
        }));
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(async move {
                    svc.oneshot(Request::new(()))
                        .await
                        .map(drop)
                        .map_err(|e| e.kind())
                })
            })
            .collect();
        let mut shed = 0;
        for t in tasks {
            if t.await.unwrap().is_err() {
                shed += 1;
            }
        }
        assert!(peak.load(Ordering::SeqCst) <= 8);
        assert!(shed < 200);
        assert_eq!(limit.in_flight(), 0);
    }
}
