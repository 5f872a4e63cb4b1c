use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, combinators::UnsyncBoxBody};

use crate::error::BoxError;

/// A request body that can be sent again on another key.
///
/// Built by [`BodyBuffer`](super::BodyBuffer): bodies up to the cap are held in memory
/// ([`bytes`](Self::bytes) sees them, [`try_clone`](Self::try_clone) replays them); a body over
/// the cap, when the layer is told to pass such bodies through, streams once and cannot be cloned,
/// so it is never retried.
pub struct ReplayBody {
    kind: Kind,
}

enum Kind {
    Buffered {
        data: Bytes,
        sent: bool,
    },
    /// Boxed: the body is a slot of every upstream connection's request queue (32 of them), and
    /// a body over the cap is the rare one.
    Once(Box<Once>),
}

struct Once {
    prefix: Option<Bytes>,
    next: Option<Bytes>,
    rest: UnsyncBoxBody<Bytes, BoxError>,
}

/// The client's request body failed while being streamed upstream (the client went away).
#[derive(Debug)]
pub struct ClientBodyError(pub BoxError);

impl fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client request body failed: {}", self.0)
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

impl ReplayBody {
    /// A buffered, replayable body.
    pub fn new(data: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Buffered {
                data: data.into(),
                sent: false,
            },
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::new(Bytes::new())
    }

    /// A body that streams once: `prefix` (already read) followed by the rest of the client's
    /// body.
    pub fn once<B>(prefix: Bytes, rest: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self::once_after(prefix, Bytes::new(), rest)
    }

    /// [`once`](Self::once) with two parts already read, sent in order without joining them.
    pub(crate) fn once_after<B>(prefix: Bytes, next: Bytes, rest: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let rest = rest
            .map_err(|e| Box::new(ClientBodyError(e.into())) as BoxError)
            .boxed_unsync();
        Self {
            kind: Kind::Once(Box::new(Once {
                prefix: (!prefix.is_empty()).then_some(prefix),
                next: (!next.is_empty()).then_some(next),
                rest,
            })),
        }
    }

    /// The whole body, when it is buffered.
    pub fn bytes(&self) -> Option<&Bytes> {
        match &self.kind {
            Kind::Buffered { data, .. } => Some(data),
            Kind::Once(_) => None,
        }
    }

    /// Whether [`try_clone`](Self::try_clone) will succeed.
    pub fn is_replayable(&self) -> bool {
        matches!(self.kind, Kind::Buffered { .. })
    }

    /// A fresh copy of a buffered body (sharing its bytes); `None` for a one-shot stream.
    pub fn try_clone(&self) -> Option<Self> {
        self.bytes().map(|data| Self::new(data.clone()))
    }
}

impl Default for ReplayBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Bytes> for ReplayBody {
    fn from(data: Bytes) -> Self {
        Self::new(data)
    }
}

impl fmt::Debug for ReplayBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Buffered { data, .. } => f.debug_struct("ReplayBody").field("len", &data.len()).finish(),
            Kind::Once(_) => f.debug_struct("ReplayBody").field("streaming", &true).finish(),
        }
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Buffered { data, sent } => {
                if *sent || data.is_empty() {
                    *sent = true;
                    return Poll::Ready(None);
                }
                *sent = true;
                Poll::Ready(Some(Ok(Frame::data(data.clone()))))
            }
            Kind::Once(once) => {
                if let Some(read) = once.prefix.take().or_else(|| once.next.take()) {
                    return Poll::Ready(Some(Ok(Frame::data(read))));
                }
                Pin::new(&mut once.rest).poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Buffered { data, sent } => *sent || data.is_empty(),
            Kind::Once(once) => once.prefix.is_none() && once.next.is_none() && once.rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Buffered { data, sent } => SizeHint::with_exact(if *sent { 0 } else { data.len() as u64 }),
            Kind::Once(once) => {
                let extra = [&once.prefix, &once.next]
                    .into_iter()
                    .map(|part| part.as_ref().map_or(0, |p| p.len() as u64))
                    .sum::<u64>();
                let inner = once.rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + extra);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + extra);
                }
                hint
            }
        }
    }
}

/// A copy of `req` to send again: its head and extensions as they are, the same buffered body.
/// `None` when the body was streamed once (over the buffer cap).
pub(crate) fn replay_request(req: &http::Request<ReplayBody>) -> Option<http::Request<ReplayBody>> {
    let mut copy = http::Request::new(req.body().try_clone()?);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    Some(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each upstream connection's request queue holds 32 requests inline, body included.
    #[test]
    fn a_body_is_no_larger_than_its_buffered_bytes() {
        assert!(std::mem::size_of::<ReplayBody>() <= std::mem::size_of::<Bytes>() + 8);
    }
}
