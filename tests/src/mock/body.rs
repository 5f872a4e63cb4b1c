//! Response body: either a complete buffer or a paced sequence of frames,
//! each delivered as its own HTTP body frame, optionally ending in an abort.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// Pause before aborting a body, so frames already handed to the connection
/// reach the socket before it is torn down.
const ABORT_DELAY: Duration = Duration::from_millis(10);

/// The error a [`MockBody`] yields when scripted to disconnect.
#[derive(Debug)]
pub(crate) struct Disconnected;

impl fmt::Display for Disconnected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mock upstream disconnected mid-stream")
    }
}

impl std::error::Error for Disconnected {}

/// One chunk of a streamed body.
#[derive(Debug)]
pub(crate) struct Chunk {
    bytes: Bytes,
    /// Text-carrying frames are paced and counted for disconnects;
    /// framing events (stream start/stop) are not.
    text: bool,
}

impl Chunk {
    pub(crate) fn text(bytes: Bytes) -> Self {
        Self { bytes, text: true }
    }

    pub(crate) fn framing(bytes: Bytes) -> Self {
        Self { bytes, text: false }
    }
}

/// Response body used for every mock answer.
pub(crate) struct MockBody {
    kind: Kind,
}

enum Kind {
    Full(Option<Bytes>),
    Frames(Frames),
}

struct Frames {
    chunks: VecDeque<Chunk>,
    pace: Duration,
    texts_sent: usize,
    /// Abort once this many text frames were sent.
    cut_after: Option<usize>,
    sleep: Option<Pin<Box<Sleep>>>,
    done: bool,
}

impl fmt::Debug for MockBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full(bytes) => f
                .debug_struct("MockBody::Full")
                .field("len", &bytes.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Frames(frames) => f
                .debug_struct("MockBody::Frames")
                .field("remaining", &frames.chunks.len())
                .field("pace", &frames.pace)
                .field("cut_after", &frames.cut_after)
                .finish(),
        }
    }
}

impl MockBody {
    /// A complete body with a known length.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Full(Some(bytes.into())),
        }
    }

    /// An empty body.
    pub(crate) fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
        }
    }

    /// A streamed body; text chunks after the first are delayed by `pace`.
    /// With `cut_after`, the body fails once that many text chunks were sent.
    pub(crate) fn frames(chunks: Vec<Chunk>, pace: Duration, cut_after: Option<usize>) -> Self {
        Self {
            kind: Kind::Frames(Frames {
                chunks: chunks.into(),
                pace,
                texts_sent: 0,
                cut_after,
                sleep: None,
                done: false,
            }),
        }
    }

    /// A body that fails before yielding any data.
    pub(crate) fn aborted() -> Self {
        Self::frames(Vec::new(), Duration::ZERO, Some(0))
    }
}

impl Frames {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Disconnected>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.cut_after.is_some_and(|limit| self.texts_sent >= limit) {
            ready!(self.wait(cx, ABORT_DELAY));
            self.done = true;
            return Poll::Ready(Some(Err(Disconnected)));
        }
        let Some(next) = self.chunks.front() else {
            self.done = true;
            return Poll::Ready(None);
        };
        if next.text && self.texts_sent > 0 && !self.pace.is_zero() {
            ready!(self.wait(cx, self.pace));
        }
        let chunk = self.chunks.pop_front().expect("front chunk checked above");
        if chunk.text {
            self.texts_sent += 1;
        }
        Poll::Ready(Some(Ok(Frame::data(chunk.bytes))))
    }

    /// Polls a sleep of `delay`, started on first call; clears it when done.
    fn wait(&mut self, cx: &mut Context<'_>, delay: Duration) -> Poll<()> {
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
        ready!(sleep.as_mut().poll(cx));
        self.sleep = None;
        Poll::Ready(())
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Disconnected;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Disconnected>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Kind::Frames(frames) => frames.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Frames(frames) => frames.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Frames(_) => SizeHint::default(),
        }
    }
}
