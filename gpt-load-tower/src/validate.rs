//! Reject request bodies the gateway can already see are broken, before a key is spent on them.
//!
//! A request whose body declares JSON but does not parse fails on every key the same way; sent
//! upstream it costs a key's attempt, and with a provider that blames the key for it, the key
//! itself. [`JsonBodyLayer`] parses a buffered body (no copy, nothing kept) when the request
//! says it is JSON — a `Content-Type` of `application/json` or any `…+json` — or, without a
//! `Content-Type`, when it starts like JSON (`{` or `[`). A body that does not parse is answered
//! `400` ([`ErrorKind::InvalidRequest`](crate::error::ErrorKind)), which
//! [`ErrorResponseLayer`](crate::error::ErrorResponseLayer) renders in the client's own format.
//! Empty bodies, other content types (multipart uploads, forms) and bodies too large to buffer
//! pass through unexamined.
//!
//! - Reads: the request body, a [`ReplayBody`]; no extensions.
//! - Rejects: `400` with the parser's position (`expected value at line 1 column 2`), never the
//!   body's content.
//!
//! # Example
//!
//! ```
//! use gpt_load_tower::{body::ReplayBody, error::{Error, ErrorKind}, validate::JsonBodyLayer};
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(JsonBodyLayer::new())
//!     .service(service_fn(|_req: Request<ReplayBody>| async { Ok::<_, Error>(Response::new(())) }));
//!
//! let broken = Request::post("/v1/chat/completions")
//!     .header("content-type", "application/json")
//!     .body(ReplayBody::new(r#"{"model": "gpt-4o-mini", "#))
//!     .unwrap();
//! let err = svc.clone().oneshot(broken).await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::InvalidRequest);
//!
//! let fine = Request::post("/v1/chat/completions")
//!     .header("content-type", "application/json")
//!     .body(ReplayBody::new(r#"{"model": "gpt-4o-mini", "messages": []}"#))
//!     .unwrap();
//! assert!(svc.oneshot(fine).await.is_ok());
//! # }
//! ```

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderMap, Request, header};
use pin_project_lite::pin_project;
use serde::de::IgnoredAny;
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    body::ReplayBody,
    error::{BoxError, Error},
};

/// Rejects request bodies that claim JSON but do not parse. See the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonBodyLayer {
    _private: (),
}

impl JsonBodyLayer {
    /// The layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for JsonBodyLayer {
    type Service = JsonBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        JsonBody { inner }
    }
}

/// The service built by [`JsonBodyLayer`].
#[derive(Clone, Debug)]
pub struct JsonBody<S> {
    inner: S,
}

impl<S> JsonBody<S> {
    define_inner_service_accessors!();
}

impl<S, ResBody> Service<Request<ReplayBody>> for JsonBody<S>
where
    S: Service<Request<ReplayBody>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, req: Request<ReplayBody>) -> Self::Future {
        if let Some(bytes) = req.body().bytes()
            && claims_json(req.headers(), bytes)
            && let Err(err) = serde_json::from_slice::<IgnoredAny>(bytes)
        {
            return ResponseFuture::Rejected {
                error: Some(Error::invalid_request(format!(
                    "the request body is not valid JSON: {err}"
                ))),
            };
        }
        ResponseFuture::Inner {
            future: self.inner.call(req),
        }
    }
}

/// Whether a non-empty body is meant to be JSON: declared so, or undeclared and starting like it.
fn claims_json(headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(first) = body.iter().find(|b| !b.is_ascii_whitespace()) else {
        return false;
    };
    match headers.get(header::CONTENT_TYPE) {
        Some(value) => {
            let essence = value
                .to_str()
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim();
            essence.eq_ignore_ascii_case("application/json")
                || essence
                    .rsplit_once('+')
                    .is_some_and(|(_, suffix)| suffix.eq_ignore_ascii_case("json"))
        }
        None => matches!(first, b'{' | b'['),
    }
}

pin_project! {
    /// The future of [`JsonBody`]: the inner service's, or the rejection.
    #[project = ResponseFutureProj]
    #[allow(missing_docs, reason = "the variants are private in spirit; the type is opaque")]
    pub enum ResponseFuture<F> {
        /// Passed on.
        Inner { #[pin] future: F },
        /// Rejected before the inner service.
        Rejected { error: Option<Error> },
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<R, E>>,
    E: Into<BoxError>,
{
    type Output = Result<R, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Inner { future } => future
                .poll(cx)
                .map(|r| r.map_err(|e| Error::from_boxed(e.into()))),
            ResponseFutureProj::Rejected { error } => {
                Poll::Ready(Err(error.take().expect("polled after completion")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::error::ErrorKind;

    async fn send(content_type: Option<&str>, body: &'static str) -> (Result<(), Error>, usize) {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let svc = JsonBodyLayer::new().layer(service_fn(move |_req: Request<ReplayBody>| {
            seen.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, BoxError>(http::Response::new(())) }
        }));
        let mut req = Request::post("/v1/chat/completions");
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let result = svc.oneshot(req.body(ReplayBody::new(body)).unwrap()).await;
        (result.map(drop), calls.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn broken_json_is_rejected_before_the_inner_service() {
        for (ct, body) in [
            (Some("application/json"), "{\"model\":"),
            (Some("Application/JSON; charset=utf-8"), "not json"),
            (Some("application/vnd.api+json"), "{,}"),
            (None, "{\"a\":1"),
            (None, "  [1,2"),
            (Some("application/json"), "{\"a\":1} trailing"),
        ] {
            let (result, calls) = send(ct, body).await;
            let err = result.unwrap_err();
            assert_eq!(
                (err.kind(), calls),
                (ErrorKind::InvalidRequest, 0),
                "{ct:?} {body}"
            );
            assert_eq!(err.status(), 400);
            assert!(err.message().starts_with("the request body is not valid JSON: "));
            assert!(!err.message().contains("model"), "the body is never echoed");
        }
    }

    #[tokio::test]
    async fn everything_else_passes() {
        for (ct, body) in [
            (Some("application/json"), r#"{"model":"m","messages":[]}"#),
            (Some("application/json"), ""),
            (Some("application/json"), "  \n"),
            (Some("multipart/form-data; boundary=x"), "--x\r\n{broken"),
            (Some("application/x-www-form-urlencoded"), "{not=json"),
            (Some("text/plain"), "{"),
            (None, "plain text"),
            (None, ""),
        ] {
            let (result, calls) = send(ct, body).await;
            assert!(result.is_ok(), "{ct:?} {body}");
            assert_eq!(calls, 1);
        }
    }

    #[tokio::test]
    async fn bodies_streamed_past_the_buffer_are_not_examined() {
        let svc = JsonBodyLayer::new().layer(service_fn(|_req: Request<ReplayBody>| async {
            Ok::<_, BoxError>(http::Response::new(()))
        }));
        let streamed = ReplayBody::once(
            bytes::Bytes::from_static(b"{bro"),
            http_body_util::Full::new(bytes::Bytes::from_static(b"ken")),
        );
        let req = Request::post("/")
            .header(header::CONTENT_TYPE, "application/json")
            .body(streamed)
            .unwrap();
        assert!(svc.oneshot(req).await.is_ok());
    }
}
