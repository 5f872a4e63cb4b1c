use std::{
    sync::Arc,
    task::{Context, Poll},
    time::{Instant, SystemTime},
};

use http::{Request, Response, header};
use tower_layer::Layer;
use tower_service::Service;

use super::{
    AttemptLog, LogSink,
    attempt::{FinalRecord, RequestInfo},
};
use crate::{
    body::{ReplayBody, TrackedBody},
    channel::RequestFacts,
    context::{ClientIp, Principal},
    error::{BoxError, Error},
    future::ResponseFuture,
};

/// Whether a request's body is logged. The layer's setting applies unless the request carries
/// this extension (for the per-group `enable_request_body_logging` setting).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogSettings {
    /// Record the request body and `User-Agent`.
    pub request_body: bool,
}

/// Longest logged path, in bytes.
const PATH_LIMIT: usize = 500;

/// Records every attempt of every request. See the [module docs](crate::log).
#[derive(Debug)]
pub struct RequestLogLayer<K> {
    sink: Arc<K>,
    settings: LogSettings,
    body_limit: usize,
}

impl<K> Clone for RequestLogLayer<K> {
    fn clone(&self) -> Self {
        Self {
            sink: self.sink.clone(),
            settings: self.settings,
            body_limit: self.body_limit,
        }
    }
}

impl<K: LogSink> RequestLogLayer<K> {
    /// Sends records to `sink`.
    pub fn new(sink: K) -> Self {
        Self {
            sink: Arc::new(sink),
            settings: LogSettings::default(),
            body_limit: 65_000,
        }
    }

    /// Logs request bodies (up to [`body_limit`](Self::body_limit)) unless a request's
    /// [`LogSettings`] says otherwise.
    #[must_use]
    pub fn log_request_bodies(mut self, enabled: bool) -> Self {
        self.settings.request_body = enabled;
        self
    }

    /// Longest logged request body in bytes (default 65,000, as gpt-load).
    #[must_use]
    pub fn body_limit(mut self, limit: usize) -> Self {
        self.body_limit = limit;
        self
    }
}

impl<S, K> Layer<S> for RequestLogLayer<K> {
    type Service = RequestLog<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLog {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service built by [`RequestLogLayer`].
#[derive(Debug)]
pub struct RequestLog<S, K> {
    inner: S,
    layer: RequestLogLayer<K>,
}

impl<S: Clone, K> Clone for RequestLog<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, K> RequestLog<S, K> {
    define_inner_service_accessors!();
}

fn truncate(text: &str, limit: usize) -> String {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

impl<S, K, ResBody> Service<Request<ReplayBody>> for RequestLog<S, K>
where
    S: Service<Request<ReplayBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    K: LogSink,
    ResBody: Send + 'static,
{
    type Response = Response<TrackedBody<ResBody, FinalRecord>>;
    type Error = Error;
    type Future = ResponseFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, mut req: Request<ReplayBody>) -> Self::Future {
        let started = Instant::now();
        let Some(principal) = req.extensions().get::<Principal>() else {
            return ResponseFuture::ready(Err(Error::internal(
                "request logging needs a Principal (add ProxyKeyAuth)",
            )));
        };
        let group = principal.group().clone();
        let channel = principal.channel();
        let body = req.body().bytes().map_or(&[][..], |b| &b[..]);
        let facts = req
            .extensions()
            .get::<RequestFacts>()
            .cloned()
            .unwrap_or_else(|| channel.inspect(req.uri(), req.headers(), body));
        let settings = req
            .extensions()
            .get::<LogSettings>()
            .copied()
            .unwrap_or(self.layer.settings);
        let info = RequestInfo {
            started,
            timestamp: SystemTime::now(),
            group,
            access_key: principal.access_key(),
            method: req.method().clone(),
            path: truncate(
                req.uri().path_and_query().map_or("/", |pq| pq.as_str()),
                PATH_LIMIT,
            ),
            model: facts.model.clone(),
            stream: facts.stream,
            client_ip: req.extensions().get::<ClientIp>().map(|ip| ip.0),
            request_body: settings
                .request_body
                .then(|| truncate(&String::from_utf8_lossy(body), self.layer.body_limit)),
            user_agent: settings
                .request_body
                .then(|| {
                    req.headers()
                        .get(header::USER_AGENT)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                })
                .flatten(),
            request_id: req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        };
        let log = AttemptLog::new(self.layer.sink.clone(), info);
        req.extensions_mut().insert(facts);
        req.extensions_mut().insert(log.clone());

        // `poll_ready` readied `self.inner`: calling it here, rather than a clone inside the
        // future, spares a copy of every service below per request.
        let response = self.inner.call(req);
        ResponseFuture::new(async move {
            match response.await {
                Ok(mut res) => {
                    let record = log.final_for_response(&mut res);
                    Ok(res.map(|body| TrackedBody::new(body, record)))
                }
                Err(err) => {
                    let err = Error::from_boxed(err.into());
                    log.final_for_error(&err);
                    Err(err)
                }
            }
        })
    }
}
