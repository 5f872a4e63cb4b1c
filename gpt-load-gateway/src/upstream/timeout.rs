//! The connect-phase limit and the deadlines of the later phases.

use std::{
    error::Error as StdError,
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use gpt_load_tower::BoxError;
use http::Uri;
use tokio::time::Instant;
use tower::Service;

/// A connect (TCP, proxy handshake and TLS together) that did not finish in time.
#[derive(Debug, thiserror::Error)]
#[error("connect timed out after {0:?}")]
pub(crate) struct ConnectTimedOut(pub(crate) Duration);

/// Wraps a connector so that the whole connect fails with [`ConnectTimedOut`] after `limit`.
#[derive(Clone, Debug)]
pub(crate) struct ConnectTimeout<C> {
    inner: C,
    limit: Option<Duration>,
}

impl<C> ConnectTimeout<C> {
    /// `limit` of zero means no limit.
    pub(crate) fn new(inner: C, limit: Duration) -> Self {
        Self {
            inner,
            limit: (!limit.is_zero()).then_some(limit),
        }
    }
}

impl<C> Service<Uri> for ConnectTimeout<C>
where
    C: Service<Uri>,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let limit = self.limit;
        Box::pin(async move {
            let Some(limit) = limit else {
                return connecting.await.map_err(Into::into);
            };
            match tokio::time::timeout(limit, connecting).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(Box::new(ConnectTimedOut(limit)) as BoxError),
            }
        })
    }
}

/// Whether a failed connect ran out of time: our own limit, or the operating system's.
pub(crate) fn is_connect_timeout(err: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(err) = current {
        if err.is::<ConnectTimedOut>() {
            return true;
        }
        if err
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
        {
            return true;
        }
        current = err.source();
    }
    false
}

/// A point in time after which a phase has failed, and the phase's name for the error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deadline {
    pub(crate) at: Instant,
    pub(crate) phase: &'static str,
}

impl Deadline {
    /// `limit` after `start`; `None` for a zero (switched off) or unrepresentable limit.
    pub(crate) fn after(start: Instant, limit: Duration, phase: &'static str) -> Option<Self> {
        if limit.is_zero() {
            return None;
        }
        start.checked_add(limit).map(|at| Self { at, phase })
    }

    /// The earlier of two optional deadlines; on a tie, `a`.
    pub(crate) fn earliest(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.at < a.at { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// Waits until the deadline and names its phase; never finishes without one.
    pub(crate) async fn expired(deadline: Option<Self>) -> &'static str {
        match deadline {
            Some(deadline) => {
                tokio::time::sleep_until(deadline.at).await;
                deadline.phase
            }
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{ServiceExt, service_fn};

    #[tokio::test]
    async fn a_hanging_connect_fails_as_a_timeout() {
        let hangs = service_fn(|_dst: Uri| std::future::pending::<Result<(), io::Error>>());
        let err = ConnectTimeout::new(hangs, Duration::from_millis(20))
            .oneshot(Uri::from_static("http://example.test"))
            .await
            .unwrap_err();
        assert!(err.is::<ConnectTimedOut>());
        assert!(is_connect_timeout(&*err));
    }

    #[tokio::test]
    async fn other_failures_pass_through() {
        let refuses = service_fn(|_dst: Uri| async {
            Err::<(), _>(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"))
        });
        let err = ConnectTimeout::new(refuses, Duration::from_secs(5))
            .oneshot(Uri::from_static("http://example.test"))
            .await
            .unwrap_err();
        assert!(!is_connect_timeout(&*err));
        assert!(err.to_string().contains("refused"));

        let unlimited = service_fn(|_dst: Uri| async { Ok::<_, io::Error>(7) });
        let connected = ConnectTimeout::new(unlimited, Duration::ZERO)
            .oneshot(Uri::from_static("http://example.test"))
            .await
            .unwrap();
        assert_eq!(connected, 7);
    }

    #[test]
    fn timeouts_are_found_anywhere_in_the_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] BoxError);

        let os = Outer(Box::new(io::Error::new(
            io::ErrorKind::TimedOut,
            "connect timed out",
        )));
        assert!(is_connect_timeout(&os));
        let ours = Outer(Box::new(ConnectTimedOut(Duration::from_secs(1))));
        assert!(is_connect_timeout(&ours));
        let refused = Outer(Box::new(io::Error::from(io::ErrorKind::ConnectionRefused)));
        assert!(!is_connect_timeout(&refused));
    }

    #[test]
    fn deadlines() {
        let now = Instant::now();
        assert_eq!(Deadline::after(now, Duration::ZERO, "connect"), None);
        assert_eq!(Deadline::after(now, Duration::MAX, "connect"), None);
        let connect = Deadline::after(now, Duration::from_secs(1), "connect");
        let request = Deadline::after(now, Duration::from_secs(2), "request");
        assert_eq!(Deadline::earliest(connect, request), connect);
        assert_eq!(Deadline::earliest(request, connect), connect);
        assert_eq!(Deadline::earliest(None, request), request);
        assert_eq!(Deadline::earliest(None, None), None);
        let tie = Deadline::after(now, Duration::from_secs(1), "request");
        assert_eq!(Deadline::earliest(connect, tie).unwrap().phase, "connect");
    }
}
