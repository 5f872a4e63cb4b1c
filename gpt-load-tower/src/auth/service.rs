use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{ValidateProxyKey, credentials};
use crate::{
    context::GroupName,
    error::{BoxError, Error, ErrorKind},
    path::has_dot_segment,
    telemetry,
};

/// Authenticates proxy keys. See the [module docs](crate::auth).
#[derive(Debug)]
pub struct ProxyKeyAuthLayer<V> {
    validator: Arc<V>,
    prefix: Arc<str>,
}

impl<V> Clone for ProxyKeyAuthLayer<V> {
    fn clone(&self) -> Self {
        Self {
            validator: self.validator.clone(),
            prefix: self.prefix.clone(),
        }
    }
}

impl<V: ValidateProxyKey> ProxyKeyAuthLayer<V> {
    /// Checks keys with `validator`; the group is the path segment after `/proxy`.
    pub fn new(validator: V) -> Self {
        Self {
            validator: Arc::new(validator),
            prefix: "/proxy".into(),
        }
    }

    /// Takes the group from the segment after `prefix` instead (`""` when the group is the
    /// first segment, for example under axum's `nest_service`).
    #[must_use]
    pub fn route_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.trim_end_matches('/').into();
        self
    }
}

impl<S, V> Layer<S> for ProxyKeyAuthLayer<V> {
    type Service = ProxyKeyAuth<S, V>;

    fn layer(&self, inner: S) -> Self::Service {
        ProxyKeyAuth {
            inner,
            validator: self.validator.clone(),
            prefix: self.prefix.clone(),
        }
    }
}

/// The service built by [`ProxyKeyAuthLayer`].
#[derive(Debug)]
pub struct ProxyKeyAuth<S, V> {
    inner: S,
    validator: Arc<V>,
    prefix: Arc<str>,
}

impl<S: Clone, V> Clone for ProxyKeyAuth<S, V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            validator: self.validator.clone(),
            prefix: self.prefix.clone(),
        }
    }
}

impl<S, V: ValidateProxyKey> ProxyKeyAuth<S, V> {
    /// Wraps `inner`, checking keys with `validator` under the `/proxy` prefix.
    pub fn new(inner: S, validator: V) -> Self {
        ProxyKeyAuthLayer::new(validator).layer(inner)
    }

    define_inner_service_accessors!();
}

/// The group segment after `prefix`, and the length of `prefix/group` in bytes.
fn route_group<'a>(path: &'a str, prefix: &str) -> Option<(&'a str, usize)> {
    let rest = path.strip_prefix(prefix)?.strip_prefix('/')?;
    let group = rest.split('/').next().filter(|g| !g.is_empty())?;
    Some((group, prefix.len() + 1 + group.len()))
}

impl<S, V, ReqBody, ResBody> Service<Request<ReqBody>> for ProxyKeyAuth<S, V>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    V: ValidateProxyKey,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let path = req.uri().path();
        let verdict = match route_group(path, &self.prefix) {
            None => Err(Error::unknown_group("")),
            // Before any key is compared: a path that could leave the group's base URL is
            // refused whoever sends it, and the answer says nothing about groups or keys.
            Some((_, prefix_len)) if has_dot_segment(&path[prefix_len..]) => Err(Error::invalid_path()),
            Some((group, prefix_len)) => match credentials::presented_key(&req) {
                None => Err(Error::unauthorized()),
                Some(key) => self
                    .validator
                    .validate(group, &key)
                    .map(|p| p.with_route_prefix_len(prefix_len)),
            },
        };
        match verdict {
            Ok(principal) => {
                credentials::strip(&mut req);
                req.extensions_mut().insert(principal);
                ResponseFuture {
                    state: State::Called {
                        inner: self.inner.call(req),
                    },
                }
            }
            Err(err) => {
                match (err.kind(), err.limit()) {
                    // A validator that also keeps the caller's own limits (access keys).
                    (ErrorKind::RateLimited, Some(limit)) => {
                        if let Some((group, _)) = route_group(req.uri().path(), &self.prefix) {
                            telemetry::limit_refused(&GroupName::from(group), limit);
                        }
                    }
                    (kind, _) => telemetry::auth_rejected(match kind {
                        ErrorKind::UnknownGroup => "unknown_group",
                        ErrorKind::InvalidPath => "invalid_path",
                        ErrorKind::Forbidden => "forbidden",
                        _ => "unauthorized",
                    }),
                }
                ResponseFuture {
                    state: State::Rejected { error: Some(err) },
                }
            }
        }
    }
}

pin_project! {
    /// Response future of [`ProxyKeyAuth`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Called { #[pin] inner: F },
        Rejected { error: Option<Error> },
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { inner } => {
                Poll::Ready(ready!(inner.poll(cx)).map_err(|e| Error::from_boxed(e.into())))
            }
            StateProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| Error::internal("polled after completion")))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        auth::{ProxyKeyTable, StaticProxyKeys},
        channel::ChannelKind,
        context::Principal,
    };
    use tower::{ServiceExt, service_fn};

    fn svc() -> ProxyKeyAuth<
        impl Service<Request<()>, Response = Response<String>, Error = Error, Future = impl Send> + Clone,
        StaticProxyKeys,
    > {
        let keys = StaticProxyKeys::new(ProxyKeyTable::new().global(["pk-global"]).group(
            "oa",
            ChannelKind::OpenAi,
            ["pk-oa"],
        ));
        ProxyKeyAuth::new(
            service_fn(|req: Request<()>| async move {
                let p = req.extensions().get::<Principal>().unwrap();
                let seen = format!(
                    "{} {} {} auth={:?} x={:?} g={:?}",
                    p.group(),
                    p.forward_path(req.uri().path()),
                    req.uri().query().unwrap_or(""),
                    req.headers().get("authorization"),
                    req.headers().get("x-api-key"),
                    req.headers().get("x-goog-api-key"),
                );
                Ok::<_, Error>(Response::new(seen))
            }),
            keys,
        )
    }

    #[tokio::test]
    async fn accepts_and_strips_credentials() {
        let req = Request::get("/proxy/oa/v1/models?key=pk-oa&limit=2")
            .header("authorization", "Bearer other")
            .header("x-api-key", "k")
            .header("x-goog-api-key", "k")
            .body(())
            .unwrap();
        let res = svc().oneshot(req).await.unwrap();
        assert_eq!(res.body(), "oa /v1/models limit=2 auth=None x=None g=None");
    }

    #[tokio::test]
    async fn every_carrier_works() {
        for (name, value) in [
            ("authorization", "Bearer pk-global"),
            ("x-api-key", "pk-oa"),
            ("x-goog-api-key", "pk-oa"),
        ] {
            let req = Request::post("/proxy/oa/v1/chat/completions")
                .header(name, value)
                .body(())
                .unwrap();
            assert!(svc().oneshot(req).await.is_ok(), "{name}");
        }
    }

    #[tokio::test]
    async fn rejections() {
        let cases = [
            (
                Request::get("/proxy/oa/v1/models").body(()).unwrap(),
                ErrorKind::Unauthorized,
            ),
            (
                Request::get("/proxy/oa/v1/models?key=wrong").body(()).unwrap(),
                ErrorKind::Unauthorized,
            ),
            (
                Request::get("/proxy/nope/v1/models?key=pk-global")
                    .body(())
                    .unwrap(),
                ErrorKind::UnknownGroup,
            ),
            (
                Request::get("/proxy/nope/v1/models?key=pk-oa").body(()).unwrap(),
                ErrorKind::Unauthorized,
            ),
            (
                Request::get("/elsewhere?key=pk-global").body(()).unwrap(),
                ErrorKind::UnknownGroup,
            ),
            (
                Request::get("/proxy/?key=pk-global").body(()).unwrap(),
                ErrorKind::UnknownGroup,
            ),
        ];
        for (req, kind) in cases {
            let uri = req.uri().clone();
            assert_eq!(svc().oneshot(req).await.unwrap_err().kind(), kind, "{uri}");
        }
    }

    #[tokio::test]
    async fn dot_segments_are_refused_before_the_key_is_checked() {
        for path in [
            "/proxy/oa/../../api/groups",
            "/proxy/oa/v1/./models",
            "/proxy/oa/%2e%2e/api",
            "/proxy/oa/%2E%2E/api",
            "/proxy/oa/.%2e/api",
            "/proxy/oa/v1/..%2fapi",
            "/proxy/oa/v1/..%5capi",
            "/proxy/oa/v1/%252e%252e/api",
            "/proxy/oa/v1/..;/api",
        ] {
            for key in ["pk-oa", "wrong"] {
                let req = Request::get(format!("{path}?key={key}")).body(()).unwrap();
                let err = svc().oneshot(req).await.unwrap_err();
                assert_eq!(err.kind(), ErrorKind::InvalidPath, "{path} {key}");
                assert_eq!(err.status(), 400);
            }
        }
        for path in [
            "/proxy/oa/v1beta/models/gemini-1.5-pro:generateContent",
            "/proxy/oa/v1/files/file.v2",
            "/proxy/oa/v1/.../x",
        ] {
            let req = Request::get(format!("{path}?key=pk-oa")).body(()).unwrap();
            assert!(svc().oneshot(req).await.is_ok(), "{path}");
        }
    }

    #[tokio::test]
    async fn custom_prefix_and_nested_routes() {
        let keys = StaticProxyKeys::new(ProxyKeyTable::new().group("g", ChannelKind::Anthropic, ["k"]));
        let inner = service_fn(|req: Request<()>| async move {
            let p = req.extensions().get::<Principal>().unwrap().clone();
            Ok::<_, Error>(Response::new(p.forward_path(req.uri().path()).to_owned()))
        });
        let llm = ProxyKeyAuthLayer::new(keys.clone())
            .route_prefix("/llm/")
            .layer(inner);
        let req = Request::get("/llm/g/v1/messages")
            .header("x-api-key", "k")
            .body(())
            .unwrap();
        assert_eq!(llm.oneshot(req).await.unwrap().body(), "/v1/messages");
        let nested = ProxyKeyAuthLayer::new(keys).route_prefix("").layer(inner);
        let req = Request::get("/g/v1/messages")
            .header("x-api-key", "k")
            .body(())
            .unwrap();
        assert_eq!(nested.oneshot(req).await.unwrap().body(), "/v1/messages");
    }

    #[tokio::test]
    async fn inner_errors_pass_through() {
        let keys = StaticProxyKeys::new(ProxyKeyTable::new().global(["k"]).group(
            "g",
            ChannelKind::OpenAi,
            ["k"],
        ));
        let svc = ProxyKeyAuth::new(
            service_fn(|_req: Request<()>| async {
                Err::<Response<()>, _>(Error::no_key_available(&"g".into()))
            }),
            keys,
        );
        let req = Request::get("/proxy/g/x?key=k").body(()).unwrap();
        assert_eq!(
            svc.oneshot(req).await.unwrap_err().kind(),
            ErrorKind::NoKeyAvailable
        );
    }

    #[tokio::test]
    async fn closures_validate() {
        let validator = |group: &str, key: &str| {
            if key == "let-me-in" {
                Ok(Principal::new(group.into(), ChannelKind::Gemini))
            } else {
                Err(Error::unauthorized())
            }
        };
        let svc = ProxyKeyAuthLayer::new(validator).layer(service_fn(|req: Request<()>| async move {
            Ok::<_, Error>(Response::new(
                req.extensions().get::<Principal>().unwrap().channel(),
            ))
        }));
        let req = Request::get("/proxy/any/v1beta/models?key=let-me-in")
            .body(())
            .unwrap();
        assert_eq!(*svc.oneshot(req).await.unwrap().body(), ChannelKind::Gemini);
    }
}
