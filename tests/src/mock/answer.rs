//! What every successful answer needs to know about its request.

use bytes::Bytes;
use http::Response;

use super::body::{Chunk, MockBody};
use super::reply;
use super::sse::{self, StreamPlan};

/// Fixed `created` timestamp so answers are deterministic.
pub(crate) const CREATED: u64 = 1_700_000_000;

/// Inputs to a successful (possibly truncated) answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Answer<'a> {
    /// Model named by the request (body field or Gemini path segment).
    pub(crate) model: &'a str,
    /// 1-based request sequence number, used in ids.
    pub(crate) seq: u64,
    /// Deterministic prompt token count derived from the body size.
    pub(crate) input_tokens: u64,
    /// Frame count and pacing for streamed answers.
    pub(crate) plan: StreamPlan,
    /// Abort the stream after this many text frames.
    pub(crate) cut: Option<usize>,
}

impl Answer<'_> {
    /// Text of a non-streamed answer.
    pub(crate) fn text(&self) -> String {
        format!("hello from {}", self.model)
    }

    /// Output token count of a non-streamed answer.
    pub(crate) fn text_tokens(&self) -> u64 {
        word_count(&self.text())
    }

    /// Text of streamed frame `index`.
    pub(crate) fn piece(&self, index: usize) -> String {
        sse::piece(self.model, index)
    }

    /// Concatenated text of all streamed frames.
    pub(crate) fn streamed_text(&self) -> String {
        sse::full_text(self.model, self.plan.frames)
    }

    /// Output token count of a streamed answer: one per frame.
    pub(crate) fn streamed_tokens(&self) -> u64 {
        self.plan.frames as u64
    }

    /// Wraps `chunks` as a paced `text/event-stream` response.
    pub(crate) fn event_stream(&self, chunks: Vec<Chunk>) -> Response<MockBody> {
        reply::event_stream(self.stream_body(chunks))
    }

    /// Wraps `chunks` as a paced body, honouring a scripted disconnect.
    pub(crate) fn stream_body(&self, chunks: Vec<Chunk>) -> MockBody {
        MockBody::frames(chunks, self.plan.pace, self.cut)
    }
}

/// Input token estimate: a quarter of the body length, at least one.
pub(crate) fn input_tokens(body: &Bytes) -> u64 {
    (body.len() as u64 / 4).max(1)
}

fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}
