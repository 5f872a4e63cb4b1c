use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, Request, Response, header};
use tower_layer::Layer;
use tower_service::Service;

use super::{UpstreamTarget, Upstreams, registry::TargetUriError};
use crate::{
    context::{Principal, target_group},
    error::{BoxError, Error, ErrorKind},
    future::ResponseFuture,
};

/// Sends each attempt to one of the group's weighted upstreams. See the
/// [module docs](crate::upstream).
#[derive(Clone, Debug)]
pub struct UpstreamBalanceLayer {
    upstreams: Upstreams,
}

impl UpstreamBalanceLayer {
    /// Balances over the groups in `upstreams` (shared with whoever updates them).
    pub fn new(upstreams: Upstreams) -> Self {
        Self { upstreams }
    }
}

impl<S> Layer<S> for UpstreamBalanceLayer {
    type Service = UpstreamBalance<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UpstreamBalance {
            inner,
            upstreams: self.upstreams.clone(),
        }
    }
}

/// The service built by [`UpstreamBalanceLayer`].
#[derive(Clone, Debug)]
pub struct UpstreamBalance<S> {
    inner: S,
    upstreams: Upstreams,
}

impl<S> UpstreamBalance<S> {
    /// Wraps `inner`, balancing over `upstreams`.
    pub fn new(inner: S, upstreams: Upstreams) -> Self {
        Self { inner, upstreams }
    }

    define_inner_service_accessors!();
}

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1), plus `Host`,
/// which names the gateway rather than the upstream, and `Expect`, already answered to the
/// client when its body was read.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::HOST,
    header::EXPECT,
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for UpstreamBalance<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let Some(group) = target_group(req.extensions()).cloned() else {
            return ResponseFuture::ready(Err(Error::internal(
                "upstream balancing needs a Principal (add ProxyKeyAuth)",
            )));
        };
        let Some(upstream) = self.upstreams.pick(group.as_str()) else {
            return ResponseFuture::ready(Err(Error::no_upstream(&group)));
        };
        let uri = {
            let path = req.uri().path();
            let forward = req
                .extensions()
                .get::<Principal>()
                .map_or(path, |p| p.forward_path(path));
            upstream.target_uri(forward, req.uri().query())
        };
        match uri {
            Ok(uri) => *req.uri_mut() = uri,
            Err(TargetUriError::DotSegment(_)) => return ResponseFuture::ready(Err(Error::invalid_path())),
            Err(TargetUriError::Invalid(err)) => {
                return ResponseFuture::ready(Err(Error::invalid_request(format!(
                    "cannot build the upstream URL: {err}"
                ))));
            }
        }
        strip_hop_by_hop(req.headers_mut());
        let target = UpstreamTarget(upstream);
        req.extensions_mut().insert(target.clone());

        let upstreams = self.upstreams.clone();
        let response = self.inner.call(req);
        ResponseFuture::new(async move {
            match response.await {
                Ok(mut res) => {
                    upstreams.record(&group, &target.0, false);
                    res.extensions_mut().insert(target);
                    Ok(res)
                }
                Err(err) => {
                    let err = Error::from_boxed(err.into());
                    let transport = matches!(err.kind(), ErrorKind::Upstream | ErrorKind::UpstreamTimeout);
                    upstreams.record(&group, &target.0, transport);
                    Err(err.with_upstream(target))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{channel::ChannelKind, test_util::principal};
    use tower::{ServiceExt, service_fn};

    fn registry() -> Upstreams {
        let ups = Upstreams::new();
        ups.set_group("g".into(), [("http://a.test/base/", 2), ("https://b.test", 1)])
            .unwrap();
        ups
    }

    fn uri_echo()
    -> impl Service<Request<()>, Response = Response<String>, Error = Error, Future = impl Send> + Clone {
        service_fn(|req: Request<()>| async move {
            assert!(req.headers().get("host").is_none());
            assert!(req.headers().get("connection").is_none());
            assert!(req.headers().get("x-hop").is_none());
            assert!(req.headers().get("expect").is_none());
            assert_eq!(req.headers()["x-keep"], "1");
            Ok::<_, Error>(Response::new(req.uri().to_string()))
        })
    }

    fn request(path: &str) -> Request<()> {
        let req = Request::get(path)
            .header("host", "gateway:3001")
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .header("x-keep", "1")
            .header("expect", "100-continue")
            .body(())
            .unwrap();
        let mut req = principal(req, "g", ChannelKind::OpenAi);
        let p = req
            .extensions()
            .get::<Principal>()
            .unwrap()
            .clone()
            .with_route_prefix_len("/proxy/g".len());
        req.extensions_mut().insert(p);
        req
    }

    #[tokio::test]
    async fn rewrites_uri_by_weight() {
        let svc = UpstreamBalanceLayer::new(registry()).layer(uri_echo());
        let mut seen = Vec::new();
        for _ in 0..3 {
            let res = svc
                .clone()
                .oneshot(request("/proxy/g/v1/chat/completions?x=1&y=2"))
                .await
                .unwrap();
            assert!(res.extensions().get::<UpstreamTarget>().is_some());
            seen.push(res.into_body());
        }
        assert_eq!(
            seen,
            [
                "http://a.test/base/v1/chat/completions?x=1&y=2",
                "https://b.test/v1/chat/completions?x=1&y=2",
                "http://a.test/base/v1/chat/completions?x=1&y=2",
            ]
        );
    }

    #[tokio::test]
    async fn no_upstream_is_502() {
        let svc = UpstreamBalanceLayer::new(Upstreams::new()).layer(uri_echo());
        let err = svc.oneshot(request("/proxy/g/v1/models")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoUpstream);
        assert_eq!(err.status(), 502);
    }

    #[tokio::test]
    async fn dot_segments_are_never_sent_even_without_the_auth_layer() {
        let svc = UpstreamBalanceLayer::new(registry()).layer(service_fn(|_req: Request<()>| async {
            Err::<Response<String>, _>(Error::internal("the inner service must not be called"))
        }));
        for path in [
            "/proxy/g/../../admin",
            "/proxy/g/v1/%2e%2e/admin",
            "/proxy/g/v1/..%5cadmin",
        ] {
            let err = svc.clone().oneshot(request(path)).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidPath, "{path}");
        }
    }

    #[tokio::test]
    async fn transport_errors_carry_the_upstream_and_eject() {
        let ups = Upstreams::with_ejection(super::super::Ejection {
            after_failures: 1,
            cool_down: std::time::Duration::from_secs(60),
        });
        ups.set_group("g".into(), [("http://down.test", 1), ("http://up.test", 1)])
            .unwrap();
        let svc = UpstreamBalanceLayer::new(ups.clone()).layer(service_fn(|req: Request<()>| async move {
            if req.uri().host() == Some("down.test") {
                Err::<Response<String>, BoxError>("connection refused".into())
            } else {
                Ok(Response::new(String::new()))
            }
        }));
        let err = svc
            .clone()
            .oneshot(request("/proxy/g/v1/models"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Upstream);
        assert_eq!(err.upstream_target().unwrap().url(), "http://down.test");
        assert!(ups.get("g")[0].is_ejected());
        for _ in 0..3 {
            assert!(svc.clone().oneshot(request("/proxy/g/v1/models")).await.is_ok());
        }
    }
}
