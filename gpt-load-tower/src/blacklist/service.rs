use std::{
    io::Read,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response, StatusCode, header, response::Parts};
use http_body::Body;
use http_body_util::BodyExt;
use tower_layer::Layer;
use tower_service::Service;

use super::{
    ClassifyOutcome, DefaultClassifier, Outcome, RuleInput, RuleSet, StatusMatcher, UpstreamAnswer,
    classify::upstream_message,
    empty_reply::{self, ReplyKind},
    quota::exhausted_model,
};
use crate::{
    body::ResponseBody,
    channel::{ChannelKind, RequestFacts, quota_model},
    context::{AttemptNumber, Principal},
    error::{BoxError, Error},
    future::ResponseFuture,
    keys::{Backoff, KeyPool, KeyState, Report, SelectedKey},
    secret, telemetry,
    timing::UpstreamTime,
};

/// The failover, blacklist and cool-down rules of a group. The layer's own settings apply
/// unless the request carries this extension (for per-group overrides).
#[derive(Clone, Debug)]
pub struct HealthSettings {
    /// Statuses that fail the attempt (retry on another key, count toward the blacklist).
    pub failover: Arc<StatusMatcher>,
    /// Consecutive counted failures that blacklist a key; 0 = never.
    pub blacklist_threshold: u32,
    /// How long a rate-limited key rests.
    pub cool_down: Backoff,
    /// Operator rules, consulted before the classifier for every answer whose body is read
    /// (failover statuses and `429`).
    pub rules: RuleSet,
    /// Whether a `2xx` generation is peeked for content first (see [`Outcome::EmptyReply`]).
    pub retry_empty_replies: bool,
}

impl Default for HealthSettings {
    /// gpt-load's defaults: `400-403,405-999`, threshold 3; cool-downs from 30 s to 1 h.
    fn default() -> Self {
        Self {
            failover: Arc::new(StatusMatcher::default()),
            blacklist_threshold: 3,
            cool_down: Backoff::default(),
            rules: RuleSet::default(),
            retry_empty_replies: true,
        }
    }
}

/// What [`KeyHealth`] concluded about an attempt; inserted into the response extensions.
#[derive(Clone, Debug)]
pub struct AttemptOutcome {
    /// The classification.
    pub outcome: Outcome,
    /// Whether the status is a failover status (the retry policy retries these).
    pub failover: bool,
    /// The upstream's error message, parsed and redacted (failover statuses and `429`).
    pub message: Option<Arc<str>>,
    /// From sending the attempt to receiving the response head.
    pub time_to_first_byte: Duration,
    /// The operator rule that decided the outcome (`policy / rule`), if one did.
    pub rule: Option<Arc<str>>,
    /// The fired rule's cap on the request's remaining retries.
    pub max_retries: Option<u32>,
}

/// Classifies each attempt and reports it to the key pool. See the
/// [module docs](crate::blacklist).
#[derive(Debug)]
pub struct KeyHealthLayer<P, C = DefaultClassifier> {
    pool: P,
    classifier: Arc<C>,
    settings: HealthSettings,
    error_body_limit: usize,
}

impl<P: Clone, C> Clone for KeyHealthLayer<P, C> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            classifier: self.classifier.clone(),
            settings: self.settings.clone(),
            error_body_limit: self.error_body_limit,
        }
    }
}

impl<P> KeyHealthLayer<P> {
    /// Reports to `pool` with the default classifier and gpt-load's default settings.
    pub fn new(pool: P) -> Self {
        Self {
            pool,
            classifier: Arc::new(DefaultClassifier::new()),
            settings: HealthSettings::default(),
            error_body_limit: 64 * 1024,
        }
    }
}

impl<P, C> KeyHealthLayer<P, C> {
    /// Uses another classifier.
    #[must_use]
    pub fn classifier<C2: ClassifyOutcome>(self, classifier: C2) -> KeyHealthLayer<P, C2> {
        KeyHealthLayer {
            pool: self.pool,
            classifier: Arc::new(classifier),
            settings: self.settings,
            error_body_limit: self.error_body_limit,
        }
    }

    /// The settings used when a request carries no [`HealthSettings`].
    #[must_use]
    pub fn settings(mut self, settings: HealthSettings) -> Self {
        self.settings = settings;
        self
    }

    /// How much of an upstream error body is read to classify and redact it (default 64 KiB);
    /// longer error bodies are cut there.
    #[must_use]
    pub fn error_body_limit(mut self, limit: usize) -> Self {
        self.error_body_limit = limit;
        self
    }
}

impl<S, P: Clone, C> Layer<S> for KeyHealthLayer<P, C> {
    type Service = KeyHealth<S, P, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyHealth {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service built by [`KeyHealthLayer`].
#[derive(Debug)]
pub struct KeyHealth<S, P, C = DefaultClassifier> {
    inner: S,
    layer: KeyHealthLayer<P, C>,
}

impl<S: Clone, P: Clone, C> Clone for KeyHealth<S, P, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, P, C> KeyHealth<S, P, C> {
    define_inner_service_accessors!();
}

impl<S, P, C, ReqBody, ResBody> Service<Request<ReqBody>> for KeyHealth<S, P, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    P: KeyPool + Clone,
    C: ClassifyOutcome,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = Error;
    type Future = ResponseFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let key = req.extensions().get::<SelectedKey>().cloned();
        let settings = req
            .extensions()
            .get::<HealthSettings>()
            .cloned()
            .unwrap_or_else(|| self.layer.settings.clone());
        let (pool, classifier, limit) = (
            self.layer.pool.clone(),
            self.layer.classifier.clone(),
            self.layer.error_body_limit,
        );
        let upstream_time = req.extensions().get::<UpstreamTime>().cloned();
        // What the rules may ask about, taken before the request moves on.
        let rule_context = (!settings.rules.is_empty()).then(|| RuleContext::of(&req, key.as_ref()));
        let generation = settings
            .retry_empty_replies
            .then(|| generation_request(&req))
            .flatten();
        let started = Instant::now();
        // `poll_ready` readied `self.inner`: called here, no copy of the services below is made.
        let response = self.inner.call(req);
        ResponseFuture::new(async move {
            let result = response.await.map_err(|e| Error::from_boxed(e.into()));
            let time_to_first_byte = started.elapsed();
            let waited = |upstream_time: Option<UpstreamTime>| {
                if let Some(time) = upstream_time {
                    time.add(started.elapsed());
                }
            };
            let report = |outcome: Outcome, message: Option<&Arc<str>>, body: Option<&str>| {
                let Some(key) = &key else { return };
                telemetry::attempt(key.group(), outcome.as_str());
                if let (Some(message), true) = (message, blames_key(outcome)) {
                    key.slot().set_last_error(Arc::clone(message));
                }
                let Some(report) = to_report(outcome, key, &settings) else {
                    return;
                };
                // A per-model quota rests the key for that model only.
                if let (Outcome::CoolDown(signal), Report::CoolDown { duration }) = (outcome, report)
                    && signal.per_model
                    && let Some(model) = body.and_then(exhausted_model)
                {
                    return pool.rest_model(key, &model, duration);
                }
                pool.report(key, report);
            };
            let res = match result {
                Ok(res) => res,
                Err(err) => {
                    waited(upstream_time);
                    report(classifier.classify_error(&err), None, None);
                    return Err(err);
                }
            };
            let status = res.status();
            let failover = settings.failover.matches(status.as_u16());
            if !failover && status != StatusCode::TOO_MANY_REQUESTS {
                let mut outcome =
                    classifier.classify_response(&UpstreamAnswer::new(status, res.headers(), false));
                let reply = generation
                    .filter(|_| outcome == Outcome::Success && status.is_success())
                    .and_then(|stream| reply_kind(res.headers(), stream));
                let mut message = None;
                let mut res = match reply {
                    None => res.map(ResponseBody::stream),
                    Some(kind) => {
                        let (parts, body) = res.into_parts();
                        let mut body = Box::pin(body);
                        let peeked = empty_reply::peek(&mut body, kind).await;
                        if peeked.error.is_some() {
                            // Broken before any content: a failed attempt like a reset connection.
                            waited(upstream_time);
                            let err = Error::upstream("the upstream's reply broke before any content");
                            report(classifier.classify_error(&err), None, None);
                            return Err(err);
                        }
                        if !peeked.has_content {
                            outcome = Outcome::EmptyReply;
                            message = Some(Arc::from("the upstream's reply has no content"));
                        }
                        Response::from_parts(parts, ResponseBody::peeked(peeked.prefix, body, peeked.ended))
                    }
                };
                waited(upstream_time);
                report(outcome, message.as_ref(), None);
                res.extensions_mut().insert(AttemptOutcome {
                    outcome,
                    failover,
                    message,
                    time_to_first_byte,
                    rule: None,
                    max_retries: None,
                });
                return Ok(res);
            }
            let (mut parts, body) = res.into_parts();
            let secret = key.as_ref().map(|k| k.secret().expose()).unwrap_or("");
            let (body, text) = read_error_body(&mut parts, body, limit, secret).await;
            // Reading the error body is waiting on the upstream too.
            waited(upstream_time);
            let message: Option<Arc<str>> = text.as_deref().map(|t| upstream_message(t).into());
            let mut answer = UpstreamAnswer::new(status, &parts.headers, failover);
            if let (Some(text), Some(message)) = (&text, &message) {
                answer = answer.with_body(text, message);
            }
            let fired = rule_context
                .as_ref()
                .and_then(|context| settings.rules.evaluate(&context.input(&answer)));
            let outcome = fired
                .as_ref()
                .map_or_else(|| classifier.classify_response(&answer), |f| f.outcome);
            report(outcome, message.as_ref(), text.as_deref());
            let mut res = Response::from_parts(parts, ResponseBody::full(body));
            res.extensions_mut().insert(AttemptOutcome {
                outcome,
                failover,
                message,
                time_to_first_byte,
                max_retries: fired.as_ref().and_then(|f| f.max_retries),
                rule: fired.map(|f| f.rule),
            });
            Ok(res)
        })
    }
}

/// For a generation request (a `POST` whose body was inspected), whether it asked for a stream.
fn generation_request<B>(req: &Request<B>) -> Option<bool> {
    if req.method() != http::Method::POST {
        return None;
    }
    req.extensions().get::<RequestFacts>().map(|facts| facts.stream)
}

/// How a successful reply to a generation request is peeked: events when a stream was asked
/// for and came, one JSON document when not; nothing else (a Gemini stream sent as a JSON array
/// would be held back whole) is peeked.
fn reply_kind(headers: &http::HeaderMap, stream: bool) -> Option<ReplyKind> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = content_type.split(';').next()?.trim();
    match (stream, essence) {
        (true, t) if t.eq_ignore_ascii_case("text/event-stream") => Some(ReplyKind::EventStream),
        (false, t) if t.eq_ignore_ascii_case("application/json") => Some(ReplyKind::Json),
        _ => None,
    }
}

/// The facts about an attempt that rules match on besides the answer.
struct RuleContext {
    channel: ChannelKind,
    model: Option<String>,
    attempt: u32,
    failure_count: u32,
}

impl RuleContext {
    fn of<B>(req: &Request<B>, key: Option<&SelectedKey>) -> Self {
        let channel = req
            .extensions()
            .get::<Principal>()
            .map_or(ChannelKind::OpenAi, Principal::channel);
        Self {
            channel,
            model: quota_model(req, channel).map(str::to_owned),
            attempt: req.extensions().get::<AttemptNumber>().map_or(1, |a| a.0),
            failure_count: key.map_or(0, |k| k.slot().consecutive_failures()),
        }
    }

    fn input<'a>(&'a self, answer: &'a UpstreamAnswer<'a>) -> RuleInput<'a> {
        RuleInput {
            answer,
            channel: self.channel,
            model: self.model.as_deref(),
            attempt: self.attempt,
            failure_count: self.failure_count,
        }
    }
}

/// Whether the outcome is a failure of the key, whose message is worth keeping on it.
fn blames_key(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Failure { .. } | Outcome::CoolDown(_) | Outcome::Dead | Outcome::Disabled
    )
}

fn to_report(outcome: Outcome, key: &SelectedKey, settings: &HealthSettings) -> Option<Report> {
    match outcome {
        Outcome::Success => Some(Report::Success),
        Outcome::Failure { counted: true } => Some(Report::Failure {
            blacklist_threshold: settings.blacklist_threshold,
        }),
        Outcome::CoolDown(signal) => Some(Report::CoolDown {
            duration: settings
                .cool_down
                .rest(key.slot().backoff_level(), signal.retry_in),
        }),
        Outcome::Dead => Some(Report::Invalidate),
        Outcome::Disabled => Some(Report::Disable),
        Outcome::Transient => Some(Report::Transient),
        // Only a probe or a pending key learns anything from these: the key was not rate
        // limited, and the provider accepted it.
        Outcome::Failure { counted: false }
        | Outcome::EmptyReply
        | Outcome::RetrySame(_)
        | Outcome::Passthrough
        | Outcome::RequestError => {
            (key.is_probe() || key.slot().state() == KeyState::Pending).then_some(Report::Answered)
        }
        Outcome::ClientGone => None,
    }
}

/// Reads up to `limit` bytes of an error body, decodes gzip, removes `secret`, and fixes the
/// framing headers. Returns the body to send on and its text, when it could be read as text.
async fn read_error_body<B>(parts: &mut Parts, body: B, limit: usize, secret: &str) -> (Bytes, Option<String>)
where
    B: Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut raw = BytesMut::new();
    while raw.len() < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    raw.extend_from_slice(&data);
                }
            }
            // A broken error body is classified by its status alone.
            Some(Err(_)) | None => break,
        }
    }
    raw.truncate(limit);
    let encoding = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let plain = match encoding.as_deref() {
        None | Some("identity") => Some(raw.freeze()),
        Some("gzip" | "x-gzip") => {
            let mut decoded = Vec::new();
            let ok = flate2::read::GzDecoder::new(&raw[..])
                .take(limit as u64)
                .read_to_end(&mut decoded)
                .is_ok();
            ok.then(|| {
                parts.headers.remove(header::CONTENT_ENCODING);
                Bytes::from(decoded)
            })
        }
        Some(_) => None,
    };
    let Some(plain) = plain else {
        // An encoding we cannot read: the key cannot be searched for, so the body is withheld.
        parts.headers.remove(header::CONTENT_ENCODING);
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        let note = Bytes::from_static(b"upstream error body withheld: unsupported content encoding");
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(note.len()));
        return (note, None);
    };
    let redacted = match secret::redact_bytes(&plain, secret) {
        std::borrow::Cow::Borrowed(_) => plain,
        std::borrow::Cow::Owned(v) => Bytes::from(v),
    };
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(redacted.len()));
    let text = String::from_utf8_lossy(&redacted).into_owned();
    (redacted, Some(text))
}
