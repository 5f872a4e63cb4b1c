//! Inserts the target group's effective settings into the request, for the library layers below
//! to read: retries, failover statuses and blacklist threshold, request-body logging, and the
//! upstream client's timeouts and proxy.
//!
//! The stack places it twice: under authentication (the URL's group, for the request log) and
//! under aggregate routing (the sub-group actually used, whose settings govern the attempts).

use std::task::{Context, Poll};

use gpt_load_tower::context::target_group;
use http::Request;
use tower::{Layer, Service};

use super::Catalog;

/// See the [module docs](self).
#[derive(Clone)]
pub(crate) struct GroupPolicyLayer {
    catalog: Catalog,
}

impl GroupPolicyLayer {
    pub(crate) fn new(catalog: Catalog) -> Self {
        Self { catalog }
    }
}

impl std::fmt::Debug for GroupPolicyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupPolicyLayer")
    }
}

impl<S> Layer<S> for GroupPolicyLayer {
    type Service = GroupPolicyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GroupPolicyService {
            inner,
            catalog: self.catalog.clone(),
        }
    }
}

/// The service built by [`GroupPolicyLayer`].
#[derive(Clone)]
pub(crate) struct GroupPolicyService<S> {
    inner: S,
    catalog: Catalog,
}

impl<S> std::fmt::Debug for GroupPolicyService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupPolicyService")
    }
}

impl<S, B> Service<Request<B>> for GroupPolicyService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(policy) = target_group(req.extensions()).and_then(|g| self.catalog.policy(g.as_str())) {
            let ext = req.extensions_mut();
            ext.insert(policy.retry);
            ext.insert(policy.health.clone());
            ext.insert(policy.log);
            ext.insert(policy.client.clone());
        }
        self.inner.call(req)
    }
}
