use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// How a tracked response body ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyEnd {
    /// The last frame was delivered.
    Complete,
    /// The body failed (for example the upstream broke the connection mid-stream, or a stream
    /// idle timeout fired); the error's message.
    Error(String),
    /// The body was dropped before its end (for example the client went away).
    Dropped,
}

/// Something to do once when a response body ends, however it ends.
///
/// Used for guards that must live as long as the response *body* (a concurrency permit, a
/// key's in-flight count, the final request-log record) rather than only its head.
pub trait OnBodyEnd: Send + 'static {
    /// Called exactly once.
    fn on_body_end(self, end: BodyEnd);

    /// Called when the first data frame is delivered. The default does nothing.
    fn on_first_frame(&mut self) {}

    /// Called with every data frame as it passes, after [`on_first_frame`](Self::on_first_frame)
    /// for the first. The default does nothing.
    fn on_data(&mut self, _data: &Bytes) {}
}

impl OnBodyEnd for () {
    fn on_body_end(self, _end: BodyEnd) {}
}

impl<A: OnBodyEnd, B: OnBodyEnd> OnBodyEnd for (A, B) {
    fn on_body_end(self, end: BodyEnd) {
        self.0.on_body_end(end.clone());
        self.1.on_body_end(end);
    }

    fn on_first_frame(&mut self) {
        self.0.on_first_frame();
        self.1.on_first_frame();
    }

    fn on_data(&mut self, data: &Bytes) {
        self.0.on_data(data);
        self.1.on_data(data);
    }
}

/// Calls the observer with `Dropped` if the body goes away before it ended.
struct EndGuard<G: OnBodyEnd> {
    observer: Option<G>,
    first_frame_seen: bool,
}

impl<G: OnBodyEnd> EndGuard<G> {
    fn end(&mut self, end: BodyEnd) {
        if let Some(observer) = self.observer.take() {
            observer.on_body_end(end);
        }
    }

    fn frame(&mut self, data: &Bytes) {
        if let Some(observer) = &mut self.observer {
            if !self.first_frame_seen {
                self.first_frame_seen = true;
                observer.on_first_frame();
            }
            observer.on_data(data);
        }
    }
}

impl<G: OnBodyEnd> Drop for EndGuard<G> {
    fn drop(&mut self) {
        self.end(BodyEnd::Dropped);
    }
}

pin_project! {
    /// A response body that tells an [`OnBodyEnd`] observer when it ends. Frames pass through
    /// untouched, one by one.
    pub struct TrackedBody<B, G: OnBodyEnd> {
        #[pin]
        inner: B,
        guard: EndGuard<G>,
    }
}

impl<B, G: OnBodyEnd> TrackedBody<B, G> {
    /// Wraps `inner`, calling `observer` when it ends.
    pub fn new(inner: B, observer: G) -> Self {
        Self {
            inner,
            guard: EndGuard {
                observer: Some(observer),
                first_frame_seen: false,
            },
        }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B, G: OnBodyEnd> std::fmt::Debug for TrackedBody<B, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackedBody")
            .field("ended", &self.guard.observer.is_none())
            .finish_non_exhaustive()
    }
}

impl<B, G> Body for TrackedBody<B, G>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
    G: OnBodyEnd,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.guard.frame(data);
                }
            }
            Poll::Ready(Some(Err(err))) => this.guard.end(BodyEnd::Error(err.to_string())),
            Poll::Ready(None) => this.guard.end(BodyEnd::Complete),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl OnBodyEnd for Seen {
        fn on_body_end(self, end: BodyEnd) {
            self.0.lock().unwrap().push(format!("{end:?}"));
        }
        fn on_first_frame(&mut self) {
            self.0.lock().unwrap().push("first".to_owned());
        }
    }

    #[tokio::test]
    async fn reports_completion_once() {
        let seen = Seen::default();
        let body = TrackedBody::new(Full::new(Bytes::from_static(b"abc")), seen.clone());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");
        assert_eq!(*seen.0.lock().unwrap(), ["first", "Complete"]);
    }

    #[tokio::test]
    async fn reports_drop_before_end() {
        let seen = Seen::default();
        drop(TrackedBody::new(
            Full::new(Bytes::from_static(b"abc")),
            seen.clone(),
        ));
        assert_eq!(*seen.0.lock().unwrap(), ["Dropped"]);
    }
}
