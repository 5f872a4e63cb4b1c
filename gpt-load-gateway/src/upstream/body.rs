//! The response body: the upstream's frames, one by one, under the stream idle limit and, for
//! non-streamed requests, the whole-request deadline.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use gpt_load_tower::{BoxError, Error};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::timeout::Deadline;

/// An upstream response body.
///
/// Frames pass through untouched as they arrive. When no frame arrives for the stream idle
/// limit, or the request's deadline passes, the body yields one [`Error`] (kind
/// `UpstreamTimeout`, message naming `stream idle` or `request`) and ends.
pub(crate) struct UpstreamBody<B = Incoming> {
    /// `None` once the body has ended; dropping it early frees the connection at once.
    inner: Option<B>,
    idle: Option<Idle>,
    deadline: Option<(Pin<Box<Sleep>>, &'static str)>,
}

/// The stream idle timer. It is re-armed only when it fires, from the time of the last frame,
/// so frames themselves never touch the timer wheel.
struct Idle {
    limit: Duration,
    last_frame: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<B> UpstreamBody<B> {
    /// Wraps `body`; `idle` of zero means no idle limit.
    pub(crate) fn new(body: B, idle: Duration, deadline: Option<Deadline>) -> Self {
        let now = Instant::now();
        let idle = now.checked_add(idle).filter(|_| !idle.is_zero()).map(|at| Idle {
            limit: idle,
            last_frame: now,
            timer: Box::pin(tokio::time::sleep_until(at)),
        });
        Self {
            inner: Some(body),
            idle,
            deadline: deadline.map(|d| (Box::pin(tokio::time::sleep_until(d.at)), d.phase)),
        }
    }

    fn fail(&mut self, err: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.inner = None;
        Poll::Ready(Some(Err(err)))
    }
}

impl<B> Body for UpstreamBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(idle) = &mut this.idle {
                    idle.last_frame = Instant::now();
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(err))) => return this.fail(Error::upstream(err.into())),
            Poll::Ready(None) => {
                this.inner = None;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        if let Some((timer, phase)) = &mut this.deadline
            && timer.as_mut().poll(cx).is_ready()
        {
            let phase = *phase;
            return this.fail(Error::upstream_timeout(phase));
        }
        if let Some(idle) = &mut this.idle {
            while idle.timer.as_mut().poll(cx).is_ready() {
                let due = idle.last_frame + idle.limit;
                if due <= Instant::now() {
                    return this.fail(Error::upstream_timeout("stream idle"));
                }
                idle.timer.as_mut().reset(due);
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|inner| inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |inner| inner.size_hint())
    }
}

impl<B> fmt::Debug for UpstreamBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("ended", &self.inner.is_none())
            .field("idle_limit", &self.idle.as_ref().map(|idle| idle.limit))
            .field("deadline", &self.deadline.as_ref().map(|(_, phase)| *phase))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpt_load_tower::ErrorKind;
    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    /// A body fed frame by frame from a test.
    struct ChannelBody(mpsc::Receiver<Bytes>);

    impl Body for ChannelBody {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0
                .poll_recv(cx)
                .map(|data| data.map(|data| Ok(Frame::data(data))))
        }
    }

    fn body(idle: Duration, deadline: Option<Deadline>) -> (mpsc::Sender<Bytes>, UpstreamBody<ChannelBody>) {
        let (tx, rx) = mpsc::channel(64);
        (tx, UpstreamBody::new(ChannelBody(rx), idle, deadline))
    }

    #[tokio::test]
    async fn frames_pass_one_by_one_while_they_keep_coming() {
        let (tx, mut body) = body(Duration::from_millis(200), None);
        let sender = tokio::spawn(async move {
            for i in 0..20 {
                tx.send(Bytes::from(format!("frame {i}"))).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        for i in 0..20 {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), format!("frame {i}"));
        }
        sender.await.unwrap();
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn silence_ends_the_body_with_a_stream_idle_timeout() {
        let (tx, mut body) = body(Duration::from_millis(50), None);
        tx.send(Bytes::from_static(b"first")).await.unwrap();
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "first");
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UpstreamTimeout);
        assert!(err.message().contains("stream idle"), "{}", err.message());
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        drop(tx);
    }

    #[tokio::test]
    async fn the_request_deadline_cuts_a_body_that_keeps_trickling() {
        let deadline = Deadline::after(Instant::now(), Duration::from_millis(100), "request");
        let (tx, mut body) = body(Duration::from_secs(10), deadline);
        let sender = tokio::spawn(async move {
            while tx.send(Bytes::from_static(b"x")).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let err = loop {
            match body.frame().await.unwrap() {
                Ok(_) => {}
                Err(err) => break err,
            }
        };
        assert_eq!(err.kind(), ErrorKind::UpstreamTimeout);
        assert!(err.message().contains("request"), "{}", err.message());
        assert!(body.frame().await.is_none());
        drop(body);
        sender.await.unwrap();
    }

    #[tokio::test]
    async fn zero_switches_the_idle_limit_off() {
        let (tx, mut body) = body(Duration::ZERO, None);
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            tx.send(Bytes::from_static(b"late")).await.unwrap();
        });
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "late");
        sender.await.unwrap();
        assert!(body.frame().await.is_none());
    }
}
