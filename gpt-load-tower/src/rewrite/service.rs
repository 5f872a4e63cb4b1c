use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderValue, Request, StatusCode, Uri, header};
use serde_json::{Map, Value};
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use super::rules::{Aggregate, GroupRules, RewriteTable, Route};
use crate::{
    blacklist::AttemptOutcome,
    body::{ReplayBody, replay_request},
    channel::{ChannelKind, RequestFacts, gemini_path_model},
    context::{AttemptNumber, GroupName, Principal, RoutedGroup},
    error::{BoxError, Error, ErrorKind},
    future::{ResponseFuture, take_ready},
    keys::{ExcludedKeys, KeyPool},
    log::AttemptLog,
    retry::RetrySettings,
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

impl RewriteLayer {
    /// Picks one of `aggregate`'s sub-groups by weight among those not `tried` yet that serve
    /// `model` (when there is one) and have a usable key.
    fn pick(&self, aggregate: &Aggregate, model: Option<&str>, tried: &[usize]) -> Option<usize> {
        let available = |i: usize| {
            let member = aggregate.members[i].as_str();
            !tried.contains(&i)
                && model.is_none_or(|m| self.table.serves(member, m))
                && self
                    .pool
                    .as_ref()
                    .is_none_or(|p| p.has_candidate_for(member, &ExcludedKeys::new(), model))
        };
        aggregate
            .wrr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pick(available)
    }

    /// Why no sub-group of `aggregate` can take a request for `model`: a `400` naming the
    /// model when none serves it, else a `503`.
    fn no_route(&self, group: &GroupName, aggregate: &Aggregate, model: Option<&str>) -> Error {
        match model {
            Some(model)
                if !aggregate
                    .members
                    .iter()
                    .any(|m| self.table.serves(m.as_str(), model)) =>
            {
                not_served(group, model)
            }
            _ => Error::no_sub_group_available(group),
        }
    }
}

impl<S> Rewrite<S> {
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

/// Whether a sub-group's final answer is a failure another sub-group may not share: a key or
/// provider failure its keys could not get past, no usable key (or every key at its limits), no
/// upstream. A request error,
/// a passthrough answer or a rule that left no retries is the client's answer.
fn sub_group_failed<B>(result: &Result<http::Response<B>, Error>) -> bool {
    match result {
        Ok(res) => match res.extensions().get::<AttemptOutcome>() {
            Some(attempt) => attempt.outcome.is_retryable() && attempt.max_retries != Some(0),
            None => res.status() == StatusCode::TOO_MANY_REQUESTS || res.status().is_server_error(),
        },
        Err(err) => {
            err.is_retryable()
                || matches!(
                    err.kind(),
                    ErrorKind::NoKeyAvailable | ErrorKind::RateLimited | ErrorKind::NoUpstream
                )
        }
    }
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
        let aggregate = match route.as_deref() {
            Some(Route::Aggregate(aggregate)) => Some(aggregate.clone()),
            _ => None,
        };
        let model = (aggregate.is_some() || table.filters_models() || principal.limits_models())
            .then(|| Self::requested_model(&req, principal.channel()))
            .flatten();
        // The caller's own models first (an access key's), so its refusal names no group rule.
        if let Some(model) = model.as_deref()
            && !principal.allows_model(model)
        {
            telemetry::rewrite_rejected(principal.group());
            return ResponseFuture::ready(Err(Error::forbidden(format!(
                "model '{model}' is not allowed for this access key"
            ))));
        }
        // The group the client named must serve the model (an aggregate's own filter too).
        if let Some(model) = model.as_deref()
            && table
                .model_filter(principal.group().as_str())
                .is_some_and(|f| !f.allows(model))
        {
            telemetry::rewrite_rejected(principal.group());
            return ResponseFuture::ready(Err(not_served(principal.group(), model)));
        }
        if let Some(aggregate) = aggregate {
            return self.call_aggregate(req, &principal, aggregate, model);
        }
        if let Some(Route::Standard(rules)) = route.as_deref()
            && rules.rewrites_body()
            && let Err(err) = apply_body_rules(&mut req, principal.channel(), rules)
        {
            telemetry::rewrite_rejected(principal.group());
            return ResponseFuture::ready(Err(err));
        }
        let response = self.inner.call(req);
        ResponseFuture::new(async move { response.await.map_err(|e| Error::from_boxed(e.into())) })
    }
}

impl<S, ResBody> Rewrite<S>
where
    S: Service<Request<ReplayBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    ResBody: Send + 'static,
{
    /// Sends the request to a sub-group of `aggregate`, and to the next one while a sub-group
    /// fails in a way its keys could not get past (at most once each, and at most the
    /// aggregate's `max_retries` moves).
    fn call_aggregate(
        &mut self,
        req: Request<ReplayBody>,
        principal: &Principal,
        aggregate: Arc<Aggregate>,
        model: Option<String>,
    ) -> ResponseFuture<S::Response> {
        let group = principal.group();
        let Some(first) = self.layer.pick(&aggregate, model.as_deref(), &[]) else {
            let err = self.layer.no_route(group, &aggregate, model.as_deref());
            if err.kind() == ErrorKind::InvalidRequest {
                telemetry::rewrite_rejected(group);
            }
            return ResponseFuture::ready(Err(err));
        };
        // The aggregate's own retry budget: the sub-group's replaces it further in.
        let moves = req
            .extensions()
            .get::<RetrySettings>()
            .map_or(usize::MAX, |s| s.max_retries as usize)
            .min(aggregate.members.len() - 1);
        // The request as it arrived, for the next sub-group's own rewriting.
        let arrived = (moves > 0).then(|| replay_request(&req)).flatten();
        let log = req.extensions().get::<AttemptLog>().cloned();
        let channel = principal.channel();
        let layer = self.layer.clone();
        let inner = take_ready(&mut self.inner);
        ResponseFuture::new(async move {
            let (mut req, mut sub, mut tried) = (req, first, Vec::new());
            loop {
                let sub_group = aggregate.members[sub].clone();
                req.extensions_mut().insert(RoutedGroup(sub_group.clone()));
                if let Some(Route::Standard(rules)) = layer.table.route(sub_group.as_str()).as_deref()
                    && rules.rewrites_body()
                {
                    apply_body_rules(&mut req, channel, rules)
                        .inspect_err(|_| telemetry::rewrite_rejected(&sub_group))?;
                }
                let result = inner
                    .clone()
                    .oneshot(req)
                    .await
                    .map_err(|e| Error::from_boxed(e.into()));
                tried.push(sub);
                if tried.len() > moves || !sub_group_failed(&result) {
                    return result;
                }
                let (Some(next_req), Some(next)) = (
                    arrived.as_ref().and_then(replay_request),
                    layer.pick(&aggregate, model.as_deref(), &tried),
                ) else {
                    return result;
                };
                if let Some(log) = &log {
                    // A sub-group without a usable key made no attempt to record.
                    if !matches!(&result, Err(err) if err.key().is_none()) {
                        log.record_retry(&result);
                    }
                }
                telemetry::retry(&sub_group);
                req = next_req;
                // Attempts keep counting across sub-groups, for rules that match on the number.
                if let Some(log) = &log {
                    req.extensions_mut().insert(AttemptNumber(log.attempts() + 1));
                }
                sub = next;
            }
        })
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
    let ask_usage = rules.include_stream_usage && asks_openai_completion(channel, req.uri().path());
    if !redirect_body && rules.param_overrides.is_empty() && !ask_usage {
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
    if ask_usage && object.get("stream") == Some(&Value::Bool(true)) {
        changed |= include_usage(&mut object);
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

/// Whether a request is an OpenAI-format chat or text completion (Gemini's OpenAI-compatible
/// paths included), whose streams report usage only when asked to.
fn asks_openai_completion(channel: ChannelKind, path: &str) -> bool {
    matches!(channel, ChannelKind::OpenAi | ChannelKind::Gemini) && path.ends_with("/completions")
}

/// Sets `stream_options.include_usage` to `true`, keeping the client's other stream options;
/// whether the body changed.
fn include_usage(object: &mut Map<String, Value>) -> bool {
    let options = object
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Map::new()));
    if !options.is_object() {
        *options = Value::Object(Map::new());
    }
    let Value::Object(options) = options else {
        unreachable!("made an object above")
    };
    options.insert("include_usage".to_owned(), Value::Bool(true)) != Some(Value::Bool(true))
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
