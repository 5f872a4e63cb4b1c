use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{HeaderValue, Request, Response, header};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{BoxError, Error, ErrorFormat};
use crate::{response_body::ResponseBody, telemetry};

/// Renders [`Error`]s from the inner stack as responses in the client's format.
///
/// See the [module docs](crate::error) for an example.
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorResponseLayer {
    fixed: Option<ErrorFormat>,
}

impl ErrorResponseLayer {
    /// Detects the format per request with [`ErrorFormat::detect`].
    pub fn new() -> Self {
        Self { fixed: None }
    }

    /// Always uses `format`.
    pub fn with_format(format: ErrorFormat) -> Self {
        Self { fixed: Some(format) }
    }
}

impl<S> Layer<S> for ErrorResponseLayer {
    type Service = ErrorResponse<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorResponse {
            inner,
            fixed: self.fixed,
            not_ready: None,
        }
    }
}

/// The service built by [`ErrorResponseLayer`].
#[derive(Debug)]
pub struct ErrorResponse<S> {
    inner: S,
    fixed: Option<ErrorFormat>,
    not_ready: Option<Error>,
}

impl<S: Clone> Clone for ErrorResponse<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            fixed: self.fixed,
            not_ready: None,
        }
    }
}

impl<S> ErrorResponse<S> {
    /// Wraps `inner`, detecting the error format per request.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            fixed: None,
            not_ready: None,
        }
    }

    /// Returns a layer that wraps services with this middleware.
    pub fn layer() -> ErrorResponseLayer {
        ErrorResponseLayer::new()
    }

    define_inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ErrorResponse<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A readiness failure is answered on the next call, as an error response.
        if self.not_ready.is_none()
            && let Err(err) = ready!(self.inner.poll_ready(cx))
        {
            self.not_ready = Some(Error::from_boxed(err.into()));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let format = self
            .fixed
            .unwrap_or_else(|| ErrorFormat::detect(req.uri(), req.headers()));
        let state = match self.not_ready.take() {
            Some(error) => State::Failed { error: Some(error) },
            None => State::Called {
                inner: self.inner.call(req),
            },
        };
        ResponseFuture { state, format }
    }
}

pin_project! {
    /// Response future of [`ErrorResponse`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        format: ErrorFormat,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Called { #[pin] inner: F },
        Failed { error: Option<Error> },
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.state.project() {
            StateProj::Called { inner } => ready!(inner.poll(cx)).map_err(|e| Error::from_boxed(e.into())),
            StateProj::Failed { error } => Err(error
                .take()
                .unwrap_or_else(|| Error::internal("polled after completion"))),
        };
        Poll::Ready(Ok(match result {
            Ok(res) => res.map(ResponseBody::stream),
            Err(err) => render(&err, *this.format),
        }))
    }
}

/// Builds the response for `err` in `format`.
pub(crate) fn render<B>(err: &Error, format: ErrorFormat) -> Response<ResponseBody<B>> {
    telemetry::error_rendered(err.kind().as_str());
    let mut res = Response::new(ResponseBody::full(format.render(err)));
    *res.status_mut() = err.status();
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(after) = err.retry_after() {
        // Whole seconds, rounded up: a client that waits that long finds room.
        let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    if let Some(limit) = err.limit() {
        headers.insert(super::LIMIT_HEADER, HeaderValue::from_static(limit));
    }
    res.extensions_mut().insert(err.kind());
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use std::time::Duration;
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    async fn call(err: Option<Error>, path: &str) -> Response<ResponseBody<Full<Bytes>>> {
        let svc = ServiceBuilder::new()
            .layer(ErrorResponseLayer::new())
            .service(service_fn(move |_r: Request<()>| {
                let err = err
                    .as_ref()
                    .map(|e| Error::invalid_request(e.message().to_owned()));
                async move {
                    match err {
                        Some(e) => Err(e),
                        None => Ok(Response::new(Full::new(Bytes::from_static(b"ok")))),
                    }
                }
            }));
        svc.oneshot(Request::get(path).body(()).unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn passes_responses_through() {
        let res = call(None, "/v1/chat/completions").await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
    }

    #[tokio::test]
    async fn renders_errors_in_the_detected_format() {
        let res = call(
            Some(Error::invalid_request("bad")),
            "/proxy/g/v1beta/models/x:generateContent",
        )
        .await;
        assert_eq!(res.status(), 400);
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(
            res.extensions().get::<ErrorKind>(),
            Some(&ErrorKind::InvalidRequest)
        );
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
    }

    #[tokio::test]
    async fn sets_retry_after_and_accepts_foreign_errors() {
        let svc =
            ErrorResponseLayer::with_format(ErrorFormat::OpenAi).layer(service_fn(|_r: Request<()>| async {
                Err::<Response<Full<Bytes>>, _>(Error::overloaded(Duration::from_secs(2)))
            }));
        let res = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()["retry-after"], "2");
        assert_eq!(res.headers()["x-gpt-load-limit"], "concurrency");

        let svc = ErrorResponseLayer::new().layer(service_fn(|_r: Request<()>| async {
            Err::<Response<Full<Bytes>>, BoxError>("connection refused".into())
        }));
        let res = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(res.status(), 502);
    }
}
