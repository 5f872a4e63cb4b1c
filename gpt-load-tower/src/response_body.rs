use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// A response body that is either the inner service's stream, passed through untouched, or
    /// bytes produced by a layer (an error rendered by the stack, or an upstream error body that
    /// was read to classify and redact it).
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Stream { #[pin] inner: B },
        Full { data: Option<Bytes> },
        // Frames read ahead of the client, then the rest of `inner` unless it had ended.
        Peeked { prefix: VecDeque<Frame<Bytes>>, ended: bool, inner: Pin<Box<B>> },
    }
}

impl<B> ResponseBody<B> {
    /// Passes `inner` through.
    pub fn stream(inner: B) -> Self {
        Self {
            kind: Kind::Stream { inner },
        }
    }

    /// A body of exactly `data`.
    pub fn full(data: Bytes) -> Self {
        Self {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    /// The frames already read from `inner` (`prefix`), then the rest of it; `ended` when
    /// `inner` has ended and must not be polled again.
    pub(crate) fn peeked(prefix: VecDeque<Frame<Bytes>>, inner: Pin<Box<B>>, ended: bool) -> Self {
        Self {
            kind: Kind::Peeked { prefix, ended, inner },
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full { data: None },
        }
    }
}

impl<B> Default for ResponseBody<B> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Stream { inner } => inner.poll_frame(cx),
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Peeked { prefix, ended, inner } => match prefix.pop_front() {
                Some(frame) => Poll::Ready(Some(Ok(frame))),
                None if *ended => Poll::Ready(None),
                None => inner.as_mut().poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Stream { inner } => inner.is_end_stream(),
            Kind::Full { data } => data.is_none(),
            Kind::Peeked { prefix, ended, inner } => prefix.is_empty() && (*ended || inner.is_end_stream()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Stream { inner } => inner.size_hint(),
            Kind::Full { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Peeked { prefix, ended, inner } => {
                let read: u64 = prefix
                    .iter()
                    .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
                    .sum();
                let rest = if *ended {
                    SizeHint::with_exact(0)
                } else {
                    inner.size_hint()
                };
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + read);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + read);
                }
                hint
            }
        }
    }
}
