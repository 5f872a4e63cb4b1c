use std::task::{Context, Poll};

use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use super::rules::{HeaderAction, HeaderRule, RewriteTable, Route, Variables};
use crate::{
    context::{ClientIp, target_group},
    keys::SelectedKey,
};

/// Applies a group's header rules on every attempt. See the [module docs](crate::rewrite).
///
/// Place it inside [`KeySelectLayer`](crate::keys::KeySelectLayer): rules run after the
/// credential is injected (so they may replace or remove it) and `${API_KEY}` is the attempt's key.
#[derive(Clone, Debug)]
pub struct HeaderRulesLayer {
    table: RewriteTable,
}

impl HeaderRulesLayer {
    /// Applies the header rules in `table`.
    pub fn new(table: RewriteTable) -> Self {
        Self { table }
    }
}

impl<S> Layer<S> for HeaderRulesLayer {
    type Service = HeaderRules<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HeaderRules {
            inner,
            table: self.table.clone(),
        }
    }
}

/// The service built by [`HeaderRulesLayer`].
#[derive(Clone, Debug)]
pub struct HeaderRules<S> {
    inner: S,
    table: RewriteTable,
}

impl<S> HeaderRules<S> {
    define_inner_service_accessors!();
}

impl<S, B> Service<Request<B>> for HeaderRules<S>
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
        let route = target_group(req.extensions()).and_then(|g| self.table.route(g.as_str()));
        if let Some(Route::Standard(rules)) = route.as_deref()
            && !rules.header_rules.is_empty()
        {
            apply(&mut req, &rules.header_rules);
        }
        self.inner.call(req)
    }
}

fn apply<B>(req: &mut Request<B>, rules: &[HeaderRule]) {
    let ext = req.extensions();
    let group = target_group(ext)
        .map(|g| g.as_str().to_owned())
        .unwrap_or_default();
    let vars = Variables {
        client_ip: ext.get::<ClientIp>().map(|ip| ip.0.to_string()),
        group: &group,
        api_key: ext.get::<SelectedKey>().map(|k| k.secret().expose()),
    };
    let mut updates = Vec::with_capacity(rules.len());
    for rule in rules {
        match &rule.action {
            HeaderAction::Remove => updates.push((rule.name.clone(), None)),
            HeaderAction::Set(template) => match HeaderRule::render(template, &vars) {
                Some(value) => updates.push((rule.name.clone(), Some(value))),
                None => tracing::warn!(header = %rule.name, "header rule produced an invalid value; skipped"),
            },
        }
    }
    let headers = req.headers_mut();
    for (name, value) in updates {
        match value {
            Some(value) => {
                headers.insert(name, value);
            }
            None => {
                headers.remove(name);
            }
        }
    }
}
