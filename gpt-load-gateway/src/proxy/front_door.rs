//! The gateway's front door: a proxy request goes straight to the proxy stack; every other
//! request goes through the router.
//!
//! The router serves the proxy too (`/proxy/{group}` and `/proxy/{group}/{*path}`), but through
//! it each request paid for matching the path, for the path parameters the stack never reads,
//! and for three copies of the whole boxed stack (the router's method router, its route and the
//! stack's own box), a tenth of the gateway's work a request (bench/results/where-the-time-goes.md).
//! Only paths the router would send to the proxy come here, and the one route under `/proxy`
//! that is not the proxy (a group's integration info, an admin route) still goes to the router;
//! an edge case that is not plainly a proxy path (`/proxy/`, `/proxy//x`, `/proxy/g/`) goes to
//! the router too, which answers it as before.

use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use axum::{Router, body::Body};
use futures_util::future::Either;
use http::{Request, Response};
use http_body::Body as HttpBody;
use tower::Service;

use super::stack::ProxyService;

/// The router's routes to the proxy stack.
pub(crate) const PROXY_ROUTES: [&str; 2] = ["/proxy/{group}", "/proxy/{group}/{*path}"];
/// The router's one route under `/proxy/{group}/` that is not the proxy (a group's integration
/// info, an admin route).
pub(crate) const INTEGRATION_INFO_ROUTE: &str = "/proxy/{group}/api/integration/info";
/// [`INTEGRATION_INFO_ROUTE`] after its group.
const INTEGRATION_INFO: &str = "api/integration/info";

/// See the [module docs](self).
#[derive(Clone)]
pub(crate) struct FrontDoor {
    proxy: ProxyService,
    router: Router,
}

impl FrontDoor {
    /// `router` must serve the proxy paths with `proxy` as well: the front door only takes a
    /// shortcut to where the router would send them.
    pub(crate) fn new(proxy: ProxyService, router: Router) -> Self {
        Self { proxy, router }
    }
}

/// Whether the router would send `path` to the proxy stack: `/proxy/{group}` or
/// `/proxy/{group}/{rest}` with a non-empty group and rest, other than the integration info.
fn is_proxy_path(path: &str) -> bool {
    let Some(after) = path.strip_prefix("/proxy/") else {
        return false;
    };
    match after.split_once('/') {
        None => !after.is_empty(),
        Some((group, rest)) => !group.is_empty() && !rest.is_empty() && rest != INTEGRATION_INFO,
    }
}

impl<B> Service<Request<B>> for FrontDoor
where
    B: HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future =
        Either<<ProxyService as Service<Request<Body>>>::Future, <Router as Service<Request<B>>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both are ready at once in practice (the router always; the stack sheds in `call`), but
        // each is asked, so either may be called next.
        if self.proxy.poll_ready(cx).is_pending() {
            return Poll::Pending;
        }
        <Router as Service<Request<B>>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if is_proxy_path(req.uri().path()) {
            Either::Left(self.proxy.call(req.map(Body::new)))
        } else {
            Either::Right(self.router.call(req))
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::{any_service, get};
    use http_body_util::BodyExt;
    use tower::{ServiceExt, service_fn};

    use super::*;

    /// What the router answers for `path`, with the gateway's routes under `/proxy`.
    async fn routed(router: &Router, path: &str) -> String {
        let req = Request::get(path).body(Body::empty()).unwrap();
        let res = router.clone().oneshot(req).await.unwrap();
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn every_shortcut_goes_where_the_router_would_go() {
        let proxy = service_fn(|_req: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::from("proxy")))
        });
        let router = Router::new()
            .route_service(PROXY_ROUTES[0], any_service(proxy))
            .route_service(PROXY_ROUTES[1], any_service(proxy))
            .route(INTEGRATION_INFO_ROUTE, get(|| async { "info" }))
            .fallback(|| async { "fallback" });
        let segments = ["", "g", "%20", "api", "integration", "info", "v1"];
        let mut paths = vec!["/proxy".to_owned(), "/proxy/".to_owned()];
        let mut level = vec!["/proxy".to_owned()];
        for _ in 0..5 {
            level = level
                .iter()
                .flat_map(|path| segments.iter().map(move |segment| format!("{path}/{segment}")))
                .collect();
            paths.extend(level.iter().cloned());
        }
        let mut shortcuts = 0;
        for path in &paths {
            let answer = routed(&router, path).await;
            if is_proxy_path(path) {
                shortcuts += 1;
                assert_eq!(
                    answer, "proxy",
                    "{path} would not reach the proxy through the router"
                );
            }
        }
        assert!(shortcuts > paths.len() / 2, "{shortcuts} of {}", paths.len());
    }

    #[test]
    fn only_what_the_router_sends_to_the_proxy_takes_the_shortcut() {
        for path in [
            "/proxy/g",
            "/proxy/g/v1/chat/completions",
            "/proxy/g/v1/",
            "/proxy/g/api/integration/info/",
            "/proxy/g/api/integration",
            "/proxy/%67/v1/models",
            "/proxy/g//x",
        ] {
            assert!(is_proxy_path(path), "{path}");
        }
        for path in [
            "/proxy",
            "/proxy/",
            "/proxy//x",
            "/proxy/g/",
            "/proxy/g/api/integration/info",
            "/proxyx/g/v1",
            "/api/groups",
            "/",
            "/health",
        ] {
            assert!(!is_proxy_path(path), "{path}");
        }
    }
}
