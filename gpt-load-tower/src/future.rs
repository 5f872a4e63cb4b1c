//! The response future shared by the layers whose work is an `async` block.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use crate::error::Error;

/// A boxed response future that fails with [`Error`].
///
/// Every layer here spends its time waiting on network I/O, so one allocation per layer per
/// request buys plain `async` code instead of hand-written state machines.
pub struct ResponseFuture<R> {
    inner: Pin<Box<dyn Future<Output = Result<R, Error>> + Send>>,
}

impl<R> ResponseFuture<R> {
    /// Boxes `future`.
    pub fn new(future: impl Future<Output = Result<R, Error>> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(future),
        }
    }

    /// A future that is immediately ready with `result`.
    pub fn ready(result: Result<R, Error>) -> Self
    where
        R: Send + 'static,
    {
        Self::new(std::future::ready(result))
    }
}

impl<R> Future for ResponseFuture<R> {
    type Output = Result<R, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<R> fmt::Debug for ResponseFuture<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture(..)")
    }
}

/// Takes the inner service that `poll_ready` made ready, leaving a fresh clone in its place.
///
/// A clone has not been polled ready, so the future must own the original (see tower's
/// "be careful when cloning inner services").
pub(crate) fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}
