use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, header};
use http_body::Body;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use super::{BodyBudget, BudgetPermit, ReplayBody};
use crate::{
    error::{BoxError, Error},
    future::{ResponseFuture, take_ready},
    telemetry,
};

/// The smallest buffer a body of several frames starts with.
const MIN_BUFFER: usize = 64 * 1024;

/// Buffers request bodies up to a cap. See the [module docs](crate::body).
#[derive(Clone, Debug)]
pub struct BodyBufferLayer {
    limits: Limits,
    budget: Option<BodyBudget>,
}

#[derive(Clone, Copy, Debug)]
struct Limits {
    body: usize,
    stream_oversized: bool,
}

impl BodyBufferLayer {
    /// Buffers bodies of up to `limit` bytes and rejects larger ones with `413`.
    pub fn new(limit: usize) -> Self {
        Self {
            limits: Limits {
                body: limit,
                stream_oversized: false,
            },
            budget: None,
        }
    }

    /// Forwards bodies over the cap as a one-shot stream instead of rejecting them. Such a
    /// request is sent once and never retried on another key.
    #[must_use]
    pub fn stream_oversized(mut self, enabled: bool) -> Self {
        self.limits.stream_oversized = enabled;
        self
    }

    /// Holds the memory of all buffered bodies within `budget`: a body that would pass it is
    /// shed with `503` + `Retry-After` (see [`BodyBudget`]). Without a budget only the per-body
    /// cap and the concurrency limit above bound the memory.
    #[must_use]
    pub fn budget(mut self, budget: BodyBudget) -> Self {
        self.budget = Some(budget);
        self
    }
}

impl<S> Layer<S> for BodyBufferLayer {
    type Service = BodyBuffer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyBuffer {
            inner,
            limits: self.limits,
            budget: self.budget.clone(),
        }
    }
}

/// The service built by [`BodyBufferLayer`].
#[derive(Clone, Debug)]
pub struct BodyBuffer<S> {
    inner: S,
    limits: Limits,
    budget: Option<BodyBudget>,
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
        let limits = self.limits;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if !limits.stream_oversized && declared.is_some_and(|len| len > limits.body as u64) {
            telemetry::body_rejected();
            return ResponseFuture::ready(Err(Error::body_too_large(limits.body)));
        }
        // A declared length is reserved before a byte is read, so an upload that cannot fit is
        // shed at once; never more than the cap, whatever the client claims.
        let declared = declared.map(|len| usize::try_from(len).unwrap_or(usize::MAX).min(limits.body));
        let budget = self.budget.clone();
        let ready = take_ready(&mut self.inner);
        ResponseFuture::new(async move {
            let (parts, mut body) = req.into_parts();
            let permit = match &budget {
                None => None,
                Some(budget) => match budget.try_reserve(declared.unwrap_or(0)) {
                    Some(permit) => Some(permit),
                    None => {
                        discard(&mut body, 0, limits.body).await;
                        return Err(shed(budget));
                    }
                },
            };
            let collector = Collector {
                limit: limits.body,
                declared,
                permit,
            };
            let body = match collector.read(body).await {
                Ok(Read::Complete(bytes)) => ReplayBody::new(bytes),
                Ok(Read::Over { .. }) if !limits.stream_oversized => {
                    telemetry::body_rejected();
                    return Err(Error::body_too_large(limits.body));
                }
                Ok(Read::Over { prefix, next, rest }) => ReplayBody::once_after(prefix, next, rest),
                Err(Failed::OverBudget { mut rest, read }) => {
                    discard(&mut rest, read, limits.body).await;
                    return Err(shed(budget.as_ref().expect("only a budget sheds")));
                }
                Err(Failed::Client(err)) => return Err(err),
            };
            ready
                .oneshot(Request::from_parts(parts, body))
                .await
                .map_err(|e| Error::from_boxed(e.into()))
        })
    }
}

/// Reads and drops the rest of a shed body, while the whole stays within the cap, so that the
/// client, still sending, receives the `503` rather than a connection reset. Nothing is kept.
async fn discard<B>(body: &mut B, mut read: usize, limit: usize)
where
    B: Body<Data = Bytes> + Unpin,
{
    while read <= limit {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            Some(Err(_)) | None => return,
        }
    }
}

fn shed(budget: &BodyBudget) -> Error {
    telemetry::body_shed();
    Error::body_budget_exhausted(budget.retry_after())
}

enum Read<B> {
    Complete(Bytes),
    /// The body passed the cap: what was read (the buffer, then the frame that passed it) and
    /// the unread rest.
    Over {
        prefix: Bytes,
        next: Bytes,
        rest: B,
    },
}

enum Failed<B> {
    /// The budget ran out after `read` bytes; `rest` is the unread body.
    OverBudget {
        rest: B,
        read: usize,
    },
    Client(Error),
}

/// Gathers a body into one buffer.
///
/// Each frame is copied into the buffer as it arrives, so the server's read buffers are reused
/// rather than pinned, and the memory a body holds is the buffer's capacity, which the permit
/// covers before it is allocated (while the buffer grows, with the allocation it replaces). The
/// buffer is sized from `Content-Length` when there is one (never above the cap), and otherwise
/// doubles from [`MIN_BUFFER`] up to the cap, so it never outgrows the cap and never needs a
/// second copy. A body of one frame is kept as it came.
struct Collector {
    limit: usize,
    declared: Option<usize>,
    permit: Option<BudgetPermit>,
}

impl Collector {
    async fn read<B>(mut self, mut body: B) -> Result<Read<B>, Failed<B>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let mut first: Option<Bytes> = None;
        let mut buf: Vec<u8> = Vec::new();
        if body.is_end_stream() {
            return Ok(Read::Complete(Bytes::new()));
        }
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Failed::Client(Error::client_body(e.into())))?;
            let Ok(data) = frame.into_data() else { continue };
            if data.is_empty() {
                continue;
            }
            let held = first.as_ref().map_or(buf.len(), Bytes::len);
            let total = held + data.len();
            if total > self.limit {
                let prefix = match first.take() {
                    Some(first) => self.attach(first.len(), first),
                    None => self.attach(buf.capacity(), buf),
                };
                return Ok(Read::Over {
                    prefix,
                    next: data,
                    rest: body,
                });
            }
            if first.is_none() && buf.is_empty() {
                if !self.reserve(data.len()) {
                    return Err(Failed::OverBudget {
                        rest: body,
                        read: total,
                    });
                }
                first = Some(data);
                continue;
            }
            if buf.capacity() < total {
                let capacity = self.next_capacity(buf.capacity(), total);
                // While the buffer grows, the old allocation lives until it is copied into the
                // new one (allocators copy more often than they remap), and the first frame is
                // still held while it is copied over.
                let growing = capacity + buf.capacity() + first.as_ref().map_or(0, Bytes::len);
                if !self.reserve(growing) {
                    return Err(Failed::OverBudget {
                        rest: body,
                        read: total,
                    });
                }
                buf.reserve_exact(capacity - buf.len());
            }
            if let Some(first) = first.take() {
                buf.extend_from_slice(&first);
            }
            buf.extend_from_slice(&data);
            if let Some(permit) = &mut self.permit {
                permit.shrink_to(buf.capacity().max(self.declared.unwrap_or(0)));
            }
        }
        Ok(Read::Complete(match first {
            Some(first) => self.attach(first.len(), first),
            None if buf.is_empty() => Bytes::new(),
            None => self.attach(buf.capacity(), buf),
        }))
    }

    /// The capacity for `needed` bytes: the declared length when it covers them, else double the
    /// current capacity, never above the cap.
    fn next_capacity(&self, current: usize, needed: usize) -> usize {
        match self.declared {
            Some(declared) if declared >= needed => declared,
            _ => needed
                .max(current.saturating_mul(2))
                .max(MIN_BUFFER)
                .min(self.limit),
        }
    }

    /// Whether the permit (if any) now covers `bytes`.
    fn reserve(&mut self, bytes: usize) -> bool {
        self.permit.as_mut().is_none_or(|permit| permit.grow_to(bytes))
    }

    /// `data`, which holds `memory` bytes, as `Bytes` that keep exactly that much reserved for
    /// as long as they live.
    fn attach<T>(&mut self, memory: usize, data: T) -> Bytes
    where
        T: AsRef<[u8]> + Send + 'static,
        Bytes: From<T>,
    {
        match self.permit.take() {
            Some(mut permit) => {
                permit.shrink_to(memory);
                permit.attach(data)
            }
            None => Bytes::from(data),
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::test_util::{Chunks, echo_body};
    use http_body_util::{BodyExt, Full};
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

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

    /// An endless chunked upload (no `Content-Length`) that counts the frames it was asked for.
    struct Endless {
        chunk: Bytes,
        polled: Arc<AtomicUsize>,
    }

    impl Body for Endless {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
            self.polled.fetch_add(1, Ordering::Relaxed);
            Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.clone()))))
        }
    }

    #[tokio::test]
    async fn the_cap_holds_while_a_chunked_body_streams_in() {
        let polled = Arc::new(AtomicUsize::new(0));
        let budget = BodyBudget::new(1 << 20);
        let svc = BodyBufferLayer::new(10 * 1024)
            .budget(budget.clone())
            .layer(echo_body());
        let body = Endless {
            chunk: Bytes::from(vec![b'x'; 1024]),
            polled: polled.clone(),
        };
        let err = svc.oneshot(Request::new(body)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BodyTooLarge);
        assert_eq!(
            polled.load(Ordering::Relaxed),
            11,
            "rejected on the frame that passed the cap"
        );
        assert_eq!(budget.in_use(), 0, "nothing stays reserved");
    }

    #[tokio::test]
    async fn a_growing_buffer_is_reserved_with_the_allocation_it_replaces() {
        // Seven 32 KiB frames of a chunked body: the buffer grows 64 → 128 → 256 KiB. At the
        // last step the 128 KiB buffer is still alive while it is copied into the 256 KiB one,
        // 384 KiB in all, which a 300 KiB budget does not cover, though the new buffer alone
        // would fit.
        let frame: &'static str = "x".repeat(32 * 1024).leak();
        let budget = BodyBudget::new(300 * 1024);
        let svc = BodyBufferLayer::new(1 << 20)
            .budget(budget.clone())
            .layer(echo_body());
        let body = Chunks::new([frame; 7]);
        let err = svc.oneshot(Request::new(body)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BodyBudgetExhausted);
        assert_eq!(budget.in_use(), 0, "nothing stays reserved");

        // Four frames stop at the 128 KiB buffer (64 + 128 KiB while it grows): served, and the
        // reservation goes with the last copy of the body.
        let svc = BodyBufferLayer::new(1 << 20)
            .budget(budget.clone())
            .layer(echo_body());
        let res = svc.oneshot(Request::new(Chunks::new([frame; 4]))).await.unwrap();
        let echoed = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(echoed.len(), 4 * 32 * 1024);
        drop(echoed);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_shed_body_is_read_and_dropped_up_to_the_cap_only() {
        let polled = Arc::new(AtomicUsize::new(0));
        let budget = BodyBudget::new(2 * 1024);
        let svc = BodyBufferLayer::new(10 * 1024)
            .budget(budget.clone())
            .layer(echo_body());
        let body = Endless {
            chunk: Bytes::from(vec![b'x'; 1024]),
            polled: polled.clone(),
        };
        let err = svc.oneshot(Request::new(body)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BodyBudgetExhausted);
        assert_eq!(
            polled.load(Ordering::Relaxed),
            11,
            "shed on the second frame (its buffer does not fit), then drained past the cap and no further"
        );
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_declared_length_is_reserved_exactly_and_never_above_the_cap() {
        let budget = BodyBudget::new(1000);
        let svc = BodyBufferLayer::new(100)
            .budget(budget.clone())
            .layer(echo_body());
        let req = Request::post("/")
            .header("content-length", "9")
            .body(Chunks::new(["hel", "lo ", "you"]))
            .unwrap();
        let body = svc.clone().oneshot(req).await.unwrap().into_body();
        assert_eq!(body.bytes().unwrap(), "hello you");
        assert_eq!(budget.in_use(), 9, "one buffer of exactly the declared size");
        drop(body);
        assert_eq!(budget.in_use(), 0);

        let oversized = BodyBufferLayer::new(100)
            .stream_oversized(true)
            .budget(budget.clone())
            .layer(echo_body());
        let req = Request::post("/")
            .header("content-length", "100000")
            .body(Chunks::new(["a", "b"]))
            .unwrap();
        let body = oversized.oneshot(req).await.unwrap().into_body();
        assert_eq!(
            budget.in_use(),
            100,
            "a huge declared length reserves the cap, not more"
        );
        assert_eq!(body.bytes().unwrap(), "ab");
        drop(body);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn the_budget_sheds_and_recovers_after_the_body_is_dropped() {
        let budget = BodyBudget::with_retry_after(100, std::time::Duration::from_secs(2));
        let svc = BodyBufferLayer::new(64).budget(budget.clone()).layer(echo_body());

        // A chunked body of 60 bytes holds a 64-byte buffer (the cap) while it lives.
        let held = svc
            .clone()
            .oneshot(Request::new(Chunks::new([
                "0123456789012345678901234567890",
                "01234567890123456789012345678",
            ])))
            .await
            .unwrap()
            .into_body();
        assert_eq!(held.bytes().unwrap().len(), 60);
        assert_eq!(budget.in_use(), 64);
        let retry = held.try_clone().unwrap();

        // A declared body that does not fit is shed before a byte is read.
        let req = Request::post("/")
            .header("content-length", "40")
            .body(Chunks::failing())
            .unwrap();
        let err = svc.clone().oneshot(req).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BodyBudgetExhausted);
        assert_eq!(err.status(), 503);
        assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(2)));

        // A chunked body is shed as soon as its buffer would not fit.
        let chunked = Chunks::new(["0123456789", "0123456789", "0123456789", "0123456789"]);
        let err = svc.clone().oneshot(Request::new(chunked)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BodyBudgetExhausted);
        assert_eq!(budget.in_use(), 64, "the shed request released what it had");

        // Released only when the last copy (kept for a retry) goes.
        drop(held);
        assert_eq!(budget.in_use(), 64);
        drop(retry);
        assert_eq!(budget.in_use(), 0);
        let req = Request::post("/")
            .header("content-length", "40")
            .body(Full::from(vec![b'y'; 40]))
            .unwrap();
        let body = svc.oneshot(req).await.unwrap().into_body();
        assert_eq!(body.bytes().unwrap().len(), 40);
        assert_eq!(budget.in_use(), 40);
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
