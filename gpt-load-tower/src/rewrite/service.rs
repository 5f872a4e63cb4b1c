use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderValue, Request, Uri, header};
use serde_json::Value;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use super::rules::{GroupRules, RewriteTable, Route};
use crate::{
    body::ReplayBody,
    channel::{ChannelKind, RequestFacts, gemini_path_model},
    context::{GroupName, Principal, RoutedGroup},
    error::{BoxError, Error},
    future::{ResponseFuture, take_ready},
    keys::{ExcludedKeys, KeyPool},
    telemetry,
};

/// Routes aggregate groups and rewrites request bodies. See the [module docs](crate::rewrite).
#[derive(Clone)]
pub struct RewriteLayer {
    table: RewriteTable,
    pool: Option<Arc<dyn KeyPool>>,
}

impl std::fmt::Debug for RewriteLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RewriteLayer")
            .field("table", &self.table)
            .field("pool", &self.pool.is_some())
            .finish()
    }
}

impl RewriteLayer {
    /// Rewrites by `table`; every sub-group of an aggregate counts as available.
    pub fn new(table: RewriteTable) -> Self {
        Self { table, pool: None }
    }

    /// Routes aggregate groups only to sub-groups where `pool` has a usable key.
    #[must_use]
    pub fn available_when(mut self, pool: impl KeyPool) -> Self {
        self.pool = Some(Arc::new(pool));
        self
    }
}

impl<S> Layer<S> for RewriteLayer {
    type Service = Rewrite<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Rewrite {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service built by [`RewriteLayer`].
#[derive(Clone, Debug)]
pub struct Rewrite<S> {
    inner: S,
    layer: RewriteLayer,
}

impl<S> Rewrite<S> {
    define_inner_service_accessors!();
}

impl<S> Rewrite<S> {
    /// Picks the sub-group for an aggregate, or `None` when the group is not an aggregate. With
    /// a `model`, only sub-groups that serve it count.
    fn route(
        &self,
        group: &GroupName,
        route: &Route,
        model: Option<&str>,
    ) -> Result<Option<GroupName>, Error> {
        let Route::Aggregate(aggregate) = route else {
            return Ok(None);
        };
        let serves =
            |i: usize| model.is_none_or(|m| self.layer.table.serves(aggregate.members[i].as_str(), m));
        let available = |i: usize| {
            serves(i)
                && self.layer.pool.as_ref().is_none_or(|p| {
                    p.has_candidate_for(aggregate.members[i].as_str(), &ExcludedKeys::new(), model)
                })
        };
        let picked = aggregate
            .wrr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pick(available);
        match (picked, model) {
            (Some(i), _) => Ok(Some(aggregate.members[i].clone())),
            (None, Some(model)) if !(0..aggregate.members.len()).any(serves) => Err(not_served(group, model)),
            (None, _) => Err(Error::no_sub_group_available(group)),
        }
    }

    /// The model a request asks for, from the path (Gemini's native routes), the request log's
    /// facts when present, or else the body.
    fn requested_model(req: &Request<ReplayBody>, channel: ChannelKind) -> Option<String> {
        let path = req.uri().path();
        if channel.model_in_path(path) {
            return gemini_path_model(path).map(str::to_owned);
        }
        if let Some(facts) = req.extensions().get::<RequestFacts>() {
            return facts.model.clone();
        }
        let body = req.body().bytes().map_or(&[][..], |b| &b[..]);
        channel.inspect(req.uri(), req.headers(), body).model
    }
}

fn not_served(group: &GroupName, model: &str) -> Error {
    Error::invalid_request(format!("model '{model}' is not served by group '{group}'"))
}

impl<S, ResBody> Service<Request<ReplayBody>> for Rewrite<S>
where
    S: Service<Request<ReplayBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    ResBody: Send + 'static,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, mut req: Request<ReplayBody>) -> Self::Future {
        let Some(principal) = req.extensions().get::<Principal>().cloned() else {
            return ResponseFuture::ready(Err(Error::internal(
                "rewriting needs a Principal (add ProxyKeyAuth)",
            )));
        };
        // Only aggregates and groups with a model filter look at the model.
        let table = &self.layer.table;
        let route = table.route(principal.group().as_str());
        let aggregate = matches!(route.as_deref(), Some(Route::Aggregate(_)));
        let model = (aggregate || table.filters_models())
            .then(|| Self::requested_model(&req, principal.channel()))
            .flatten();
        let model = model.as_deref();
        // The group the client named must serve the model (an aggregate's own filter too).
        if let Some(model) = model
            && self
                .layer
                .table
                .model_filter(principal.group().as_str())
                .is_some_and(|f| !f.allows(model))
        {
            telemetry::rewrite_rejected(principal.group());
            return ResponseFuture::ready(Err(not_served(principal.group(), model)));
        }
        let routed = match route.as_deref() {
            Some(route) => self.route(principal.group(), route, model),
            None => Ok(None),
        };
        // The (sub-)group whose rules rewrite the request; a standard group's route is at hand.
        let (target, route) = match routed {
            Ok(Some(sub_group)) => {
                req.extensions_mut().insert(RoutedGroup(sub_group.clone()));
                let route = table.route(sub_group.as_str());
                (sub_group, route)
            }
            Ok(None) => (principal.group().clone(), route),
            Err(err) => {
                if err.kind() == crate::error::ErrorKind::InvalidRequest {
                    telemetry::rewrite_rejected(principal.group());
                }
                return ResponseFuture::ready(Err(err));
            }
        };
        if let Some(Route::Standard(rules)) = route.as_deref()
            && rules.rewrites_body()
            && let Err(err) = apply_body_rules(&mut req, principal.channel(), rules)
        {
            telemetry::rewrite_rejected(&target);
            return ResponseFuture::ready(Err(err));
        }
        let ready = take_ready(&mut self.inner);
        ResponseFuture::new(async move { ready.oneshot(req).await.map_err(|e| Error::from_boxed(e.into())) })
    }
}

fn not_configured(model: &str) -> Error {
    Error::invalid_request(format!("model '{model}' is not configured in redirect rules"))
}

/// Applies model redirects and parameter overrides to one request.
fn apply_body_rules(
    req: &mut Request<ReplayBody>,
    channel: ChannelKind,
    rules: &GroupRules,
) -> Result<(), Error> {
    let model_in_path = channel.model_in_path(req.uri().path());
    if model_in_path && !rules.model_redirects.is_empty() {
        redirect_path_model(req, rules)?;
    }
    let redirect_body = !model_in_path && !rules.model_redirects.is_empty();
    if !redirect_body && rules.param_overrides.is_empty() {
        return Ok(());
    }
    // Bodies streamed once (over the buffer cap) and non-JSON bodies pass through untouched.
    let Some(bytes) = req.body().bytes() else {
        return Ok(());
    };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Ok(());
    }
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(bytes) else {
        return Ok(());
    };
    let mut changed = false;
    if redirect_body && let Some(Value::String(model)) = object.get("model") {
        match rules.model_redirects.get(model) {
            Some(target) => {
                object.insert("model".to_owned(), Value::String(target.clone()));
                changed = true;
            }
            None if rules.strict_model => return Err(not_configured(model)),
            None => {}
        }
    }
    if !rules.param_overrides.is_empty() {
        crate::channel::merge_object(&mut object, &rules.param_overrides);
        changed = true;
    }
    if changed {
        let body = serde_json::to_vec(&object)
            .map_err(|e| Error::internal(format!("cannot serialise the rewritten body: {e}")))?;
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        *req.body_mut() = ReplayBody::new(body);
    }
    Ok(())
}

/// Rewrites the model segment of a Gemini native path (`…/models/{model}:method`).
fn redirect_path_model(req: &mut Request<ReplayBody>, rules: &GroupRules) -> Result<(), Error> {
    let path = req.uri().path();
    let Some(model) = gemini_path_model(path) else {
        return Ok(());
    };
    let Some(target) = rules.model_redirects.get(model) else {
        return if rules.strict_model {
            Err(not_configured(model))
        } else {
            Ok(())
        };
    };
    let from = format!("/models/{model}");
    let new_path = path.replacen(&from, &format!("/models/{target}"), 1);
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path,
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().map_err(|_| {
        Error::invalid_request(format!("redirect target '{target}' is not a valid model name"))
    })?);
    *req.uri_mut() =
        Uri::from_parts(parts).map_err(|e| Error::internal(format!("cannot rebuild the URI: {e}")))?;
    Ok(())
}
