use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{Request, header};
use http_body::Body;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use super::ReplayBody;
use crate::{
    error::{BoxError, Error},
    future::{ResponseFuture, take_ready},
    telemetry,
};

/// Buffers request bodies up to a cap. See the [module docs](crate::body).
#[derive(Clone, Copy, Debug)]
pub struct BodyBufferLayer {
    limit: usize,
    stream_oversized: bool,
}

impl BodyBufferLayer {
    /// Buffers bodies of up to `limit` bytes and rejects larger ones with `413`.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            stream_oversized: false,
        }
    }

    /// Forwards bodies over the cap as a one-shot stream instead of rejecting them. Such a
    /// request is sent once and never retried on another key.
    #[must_use]
    pub fn stream_oversized(mut self, enabled: bool) -> Self {
        self.stream_oversized = enabled;
        self
    }
}

impl<S> Layer<S> for BodyBufferLayer {
    type Service = BodyBuffer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyBuffer { inner, config: *self }
    }
}

/// The service built by [`BodyBufferLayer`].
#[derive(Clone, Debug)]
pub struct BodyBuffer<S> {
    inner: S,
    config: BodyBufferLayer,
}

impl<S> BodyBuffer<S> {
    /// Wraps `inner`, buffering bodies of up to `limit` bytes.
    pub fn new(inner: S, limit: usize) -> Self {
        BodyBufferLayer::new(limit).layer(inner)
    }

    /// Returns a layer that wraps services with this middleware.
    pub fn layer(limit: usize) -> BodyBufferLayer {
        BodyBufferLayer::new(limit)
    }

    define_inner_service_accessors!();
}

impl<S, B> Service<Request<B>> for BodyBuffer<S>
where
    S: Service<Request<ReplayBody>> + Clone + Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let config = self.config;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if !config.stream_oversized && declared.is_some_and(|len| len > config.limit as u64) {
            telemetry::body_rejected();
            return ResponseFuture::ready(Err(Error::body_too_large(config.limit)));
        }
        let ready = take_ready(&mut self.inner);
        ResponseFuture::new(async move {
            let (parts, body) = req.into_parts();
            let body = match read_capped(body, config.limit).await? {
                Read::Complete(bytes) => ReplayBody::new(bytes),
                Read::Over { .. } if !config.stream_oversized => {
                    telemetry::body_rejected();
                    return Err(Error::body_too_large(config.limit));
                }
                Read::Over { prefix, rest } => ReplayBody::once(prefix, rest),
            };
            ready
                .oneshot(Request::from_parts(parts, body))
                .await
                .map_err(|e| Error::from_boxed(e.into()))
        })
    }
}

enum Read<B> {
    Complete(Bytes),
    Over { prefix: Bytes, rest: B },
}

/// Reads `body` until it ends or passes `limit` bytes; a single-frame body is not copied.
async fn read_capped<B>(mut body: B, limit: usize) -> Result<Read<B>, Error>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    if body.is_end_stream() {
        return Ok(Read::Complete(Bytes::new()));
    }
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::client_body(e.into()))?;
        let Ok(data) = frame.into_data() else { continue };
        total += data.len();
        if total > limit {
            let mut prefix = BytesMut::with_capacity(total);
            if let Some(first) = first.take() {
                prefix.extend_from_slice(&first);
            }
            prefix.extend_from_slice(&buf);
            prefix.extend_from_slice(&data);
            return Ok(Read::Over {
                prefix: prefix.freeze(),
                rest: body,
            });
        }
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            None => buf.extend_from_slice(&data),
            Some(previous) => {
                buf.reserve(previous.len() + data.len());
                buf.extend_from_slice(&previous);
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(Read::Complete(first.unwrap_or_else(|| buf.freeze())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::test_util::{Chunks, echo_body};
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn buffers_small_bodies_in_several_frames() {
        let svc = BodyBufferLayer::new(16).layer(echo_body());
        let res = svc
            .oneshot(Request::new(Chunks::new(["hel", "lo", " you"])))
            .await
            .unwrap();
        let body = res.into_body();
        assert_eq!(body.bytes().unwrap(), "hello you");
        assert!(body.try_clone().is_some());
    }

    #[tokio::test]
    async fn empty_body_is_replayable() {
        let svc = BodyBufferLayer::new(0).layer(echo_body());
        let res = svc.oneshot(Request::new(Full::new(Bytes::new()))).await.unwrap();
        assert_eq!(res.into_body().bytes().unwrap().len(), 0);
    }

    #[tokio::test]
    async fn rejects_by_content_length_before_reading() {
        let svc = BodyBufferLayer::new(4).layer(echo_body());
        let req = Request::post("/")
            .header("content-length", "100")
            .body(Chunks::failing())
            .unwrap();
        assert_eq!(
            svc.oneshot(req).await.unwrap_err().kind(),
            ErrorKind::BodyTooLarge
        );
    }

    #[tokio::test]
    async fn rejects_bodies_over_the_cap_while_reading() {
        let svc = BodyBufferLayer::new(4).layer(echo_body());
        let err = svc
            .oneshot(Request::new(Chunks::new(["abc", "de"])))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BodyTooLarge);
        assert_eq!(err.status(), 413);
    }

    #[tokio::test]
    async fn streams_oversized_bodies_once_when_asked() {
        let svc = BodyBufferLayer::new(4).stream_oversized(true).layer(echo_body());
        let res = svc
            .oneshot(Request::new(Chunks::new(["abc", "de", "fgh"])))
            .await
            .unwrap();
        let body = res.into_body();
        assert!(!body.is_replayable());
        assert!(body.try_clone().is_none());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abcdefgh");
    }

    #[tokio::test]
    async fn client_body_failure_is_a_client_error() {
        let svc = BodyBufferLayer::new(64).layer(echo_body());
        let err = svc.oneshot(Request::new(Chunks::failing())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ClientBody);
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn inner_errors_pass_through() {
        let svc = BodyBufferLayer::new(64).layer(tower::service_fn(|_r: Request<ReplayBody>| async {
            Err::<http::Response<()>, _>(Error::no_upstream(&"g".into()))
        }));
        let err = svc.oneshot(Request::new(Full::from("x"))).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoUpstream);
    }
}
