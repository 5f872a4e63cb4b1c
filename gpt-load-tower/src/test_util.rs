//! Helpers for this crate's unit tests.

use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use tower_service::Service;

use crate::{
    body::ReplayBody,
    channel::ChannelKind,
    context::Principal,
    error::{BoxError, Error},
};

/// A body delivered in the given chunks, or one that fails on its first poll.
pub(crate) struct Chunks {
    chunks: VecDeque<Bytes>,
    fail: bool,
}

impl Chunks {
    pub(crate) fn new<const N: usize>(chunks: [&'static str; N]) -> Self {
        Self {
            chunks: chunks
                .into_iter()
                .map(|c| Bytes::from_static(c.as_bytes()))
                .collect(),
            fail: false,
        }
    }

    pub(crate) fn failing() -> Self {
        Self {
            chunks: VecDeque::new(),
            fail: true,
        }
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.fail {
            return Poll::Ready(Some(Err("connection reset by client".into())));
        }
        Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
    }
}

/// A service answering with the request body it received.
pub(crate) fn echo_body()
-> impl Service<Request<ReplayBody>, Response = Response<ReplayBody>, Error = Error, Future = impl Send> + Clone
{
    tower::service_fn(
        |req: Request<ReplayBody>| async move { Ok::<_, Error>(Response::new(req.into_body())) },
    )
}

/// Adds a [`Principal`] for `group` to `req`.
pub(crate) fn principal<B>(mut req: Request<B>, group: &str, channel: ChannelKind) -> Request<B> {
    req.extensions_mut().insert(Principal::new(group.into(), channel));
    req
}
