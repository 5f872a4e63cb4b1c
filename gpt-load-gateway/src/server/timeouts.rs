//! The connection timeouts of the HTTP server, enforced below hyper on each accepted connection.
//!
//! - **Read** (`SERVER_READ_TIMEOUT`): a request's head must have arrived this long after its
//!   first byte; on a new connection, this long after the accept. Otherwise the connection is
//!   closed.
//! - **Idle** (`SERVER_IDLE_TIMEOUT`): a connection with no request in flight — every response
//!   has been handed over in full — and, on HTTP/1.1, no byte of a next request received, is
//!   closed after this long. A request that takes longer than this is never cut by it.
//! - **Write** (`SERVER_WRITE_TIMEOUT`): a write to the client that makes no progress for this
//!   long (the client stopped reading and the socket's buffers are full) fails, which ends the
//!   connection. Each write that goes through starts the clock again, and time spent waiting for
//!   the response itself (for example for the next chunk of a stream) is not counted, so a
//!   response that keeps flowing is never cut, however long it lasts.
//!
//! [`Activity`] is what a connection's requests tell its [`TimedIo`]: [`Tracked`] counts the
//! requests in flight (until the response body is dropped), and the IO closes the read side
//! when the idle or read limit passes while nothing is in flight.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, Waker, ready},
    time::Duration,
};

use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep, sleep_until},
};
use tower::Service;

use crate::config::server::ServerConfig;

/// The limits of one connection; `None` = no limit. See the [module docs](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConnectionTimeouts {
    /// From a request's first byte (a new connection's accept) to the end of its head.
    pub(crate) read: Option<Duration>,
    /// Longest a write to the client may make no progress.
    pub(crate) write: Option<Duration>,
    /// Longest a connection may stay with no request in flight.
    pub(crate) idle: Option<Duration>,
}

impl ConnectionTimeouts {
    /// `SERVER_READ_TIMEOUT`, `SERVER_WRITE_TIMEOUT` and `SERVER_IDLE_TIMEOUT`.
    pub(crate) fn of(config: &ServerConfig) -> Self {
        Self {
            read: config.read_timeout,
            write: config.write_timeout,
            idle: config.idle_timeout,
        }
    }
}

/// Which limit a waiting read is under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    /// A request head is due.
    Head,
    /// The connection is idle.
    Idle,
}

/// What one connection's requests tell its IO.
#[derive(Debug)]
pub(super) struct Activity(Mutex<State>);

#[derive(Debug)]
struct State {
    /// Requests whose response body has not been dropped yet.
    in_flight: usize,
    /// When the last request in flight finished (or the connection was accepted).
    idle_since: Instant,
    /// When the first byte of a request not yet dispatched arrived (the accept, for the first).
    head_since: Option<Instant>,
    /// HTTP/2: bytes received with no request in flight (pings, settings) start no head.
    multiplexed: bool,
    /// The task reading the connection, woken when it goes idle.
    reader: Option<Waker>,
}

impl Activity {
    /// A connection accepted now.
    pub(super) fn new() -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self(Mutex::new(State {
            in_flight: 0,
            idle_since: now,
            head_since: Some(now),
            multiplexed: false,
            reader: None,
        })))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request reached the service; it is in flight until the guard is dropped.
    fn begin(self: &Arc<Self>, version: Version) -> InFlight {
        let mut state = self.state();
        state.in_flight += 1;
        state.head_since = None;
        state.multiplexed |= version == Version::HTTP_2;
        InFlight(Arc::clone(self))
    }

    /// Bytes arrived from the client.
    fn received(&self) {
        let mut state = self.state();
        if state.in_flight == 0 && !state.multiplexed && state.head_since.is_none() {
            state.head_since = Some(Instant::now());
        }
    }

    /// When a read waiting now must give up, and why; `None` while a request is in flight.
    /// Remembers `waker` to wake when the connection goes idle.
    fn deadline(&self, timeouts: &ConnectionTimeouts, waker: &Waker) -> Option<(Instant, Expiry)> {
        let mut state = self.state();
        match &mut state.reader {
            Some(reader) => reader.clone_from(waker),
            None => state.reader = Some(waker.clone()),
        }
        if state.in_flight > 0 {
            return None;
        }
        match state.head_since {
            Some(since) => timeouts.read.map(|limit| (since + limit, Expiry::Head)),
            None => timeouts
                .idle
                .map(|limit| (state.idle_since + limit, Expiry::Idle)),
        }
    }
}

/// A request in flight on its connection.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.in_flight -= 1;
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
            if let Some(reader) = state.reader.take() {
                reader.wake();
            }
        }
    }
}

/// Whether `timer`, set to `at`, has fired; registers `cx` for it otherwise.
fn fired(timer: &mut Option<Pin<Box<Sleep>>>, at: Instant, cx: &mut Context<'_>) -> bool {
    let sleep = timer.get_or_insert_with(|| Box::pin(sleep_until(at)));
    if sleep.deadline() != at {
        sleep.as_mut().reset(at);
    }
    sleep.as_mut().poll(cx).is_ready()
}

/// An accepted connection's IO under its [`ConnectionTimeouts`].
#[derive(Debug)]
pub(super) struct TimedIo<T> {
    io: T,
    timeouts: ConnectionTimeouts,
    activity: Arc<Activity>,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    /// When the pending write must have made progress.
    write_deadline: Option<Instant>,
    /// The idle limit closed the read side: every later read is the end of the stream.
    closed: bool,
}

impl<T> TimedIo<T> {
    pub(super) fn new(io: T, timeouts: ConnectionTimeouts, activity: Arc<Activity>) -> Self {
        Self {
            io,
            timeouts,
            activity,
            read_timer: None,
            write_timer: None,
            write_deadline: None,
            closed: false,
        }
    }

    /// Passes a write's result on; a write still pending past the write limit fails.
    fn written<R>(&mut self, poll: Poll<io::Result<R>>, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.write_deadline = None;
            return poll;
        }
        let Some(limit) = self.timeouts.write else {
            return Poll::Pending;
        };
        let deadline = *self.write_deadline.get_or_insert_with(|| Instant::now() + limit);
        if fired(&mut self.write_timer, deadline, cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took no data for {} ms", limit.as_millis()),
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.activity.received();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => {
                let Some((at, expiry)) = this.activity.deadline(&this.timeouts, cx.waker()) else {
                    return Poll::Pending;
                };
                if !fired(&mut this.read_timer, at, cx) {
                    return Poll::Pending;
                }
                match expiry {
                    // The end of the stream: hyper closes an idle connection quietly.
                    Expiry::Idle => {
                        this.closed = true;
                        Poll::Ready(Ok(()))
                    }
                    Expiry::Head => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the request head did not arrive in time",
                    ))),
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.written(poll, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.written(poll, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_flush(cx);
        this.written(poll, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_shutdown(cx);
        this.written(poll, cx)
    }
}

/// A connection's service: each request is in flight from its arrival until its response body
/// is dropped (sent in full, or abandoned).
#[derive(Clone, Debug)]
pub(super) struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub(super) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Tracked<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<TrackedBody<ResBody>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let request = self.activity.begin(req.version());
        TrackedFuture {
            response: self.inner.call(req),
            request: Some(request),
        }
    }
}

pin_project! {
    /// A response on its way: its request stays in flight, and goes on with the body.
    pub(super) struct TrackedFuture<F> {
        #[pin]
        response: F,
        request: Option<InFlight>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.response.poll(cx))?;
        let request = this.request.take().expect("polled after completion");
        Poll::Ready(Ok(response.map(|body| TrackedBody {
            body,
            _request: request,
        })))
    }
}

/// A response body that keeps its request in flight.
#[derive(Debug)]
pub(super) struct TrackedBody<B> {
    body: B,
    _request: InFlight,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
