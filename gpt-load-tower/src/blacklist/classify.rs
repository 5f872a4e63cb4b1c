use std::time::SystemTime;

use http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::{
    blame::{Blame, blame},
    quota::{QuotaSignal, quota_signal},
};
use crate::error::{Error, ErrorKind};

/// How one attempt went for the key it used.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The key worked; its consecutive-failure count resets.
    Success,
    /// The upstream answered with a status outside the failover set (such as `404`): the answer
    /// is final and the key is left alone.
    Passthrough,
    /// The upstream refused the request itself (malformed, over the context window, an unknown
    /// model): it would fail the same way on every key, so the answer is final, returned to the
    /// client as it is, and the key is left alone.
    RequestError,
    /// The provider failed, not the key (a `5xx`, a timeout, a broken connection): retried, on
    /// another key first; the key is never blacklisted for it.
    Transient,
    /// A failed attempt blamed on the key. `counted: false` for failures that are not the key's
    /// fault (gpt-load's "uncounted" messages), which do not move the key toward the blacklist.
    Failure {
        /// Whether the failure counts toward the blacklist threshold.
        counted: bool,
    },
    /// The key is rate limited or out of quota: it rests, without a counted failure, for as long
    /// as the provider said (capped) or the backoff decides.
    CoolDown(QuotaSignal),
    /// The key is dead: blacklist it at once.
    Dead,
    /// A rule took the key out of rotation until an operator enables it.
    Disabled,
    /// A `2xx` generation without content, or a stream that ended or broke before its first
    /// content: retried on another key, the key left as it is.
    EmptyReply,
    /// A rule asked for the same key again after this wait (the retry policy pins the key).
    RetrySame(std::time::Duration),
    /// The client went away; nobody is to blame.
    ClientGone,
}

impl Outcome {
    /// A low-cardinality label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Passthrough => "passthrough",
            Self::RequestError => "request_error",
            Self::Transient => "transient",
            Self::Failure { counted: true } => "failure",
            Self::Failure { counted: false } => "uncounted_failure",
            Self::CoolDown(_) => "cool_down",
            Self::Dead => "dead",
            Self::Disabled => "disabled",
            Self::EmptyReply => "empty_reply",
            Self::RetrySame(_) => "retry_same",
            Self::ClientGone => "client_gone",
        }
    }

    /// Whether another attempt may succeed where this one failed (the retry policy's question).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Transient
                | Self::Failure { .. }
                | Self::CoolDown(_)
                | Self::Dead
                | Self::Disabled
                | Self::EmptyReply
                | Self::RetrySame(_)
        )
    }
}

/// What a classifier sees of an upstream answer.
#[non_exhaustive]
#[derive(Clone, Copy, Debug)]
pub struct UpstreamAnswer<'a> {
    /// The status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: &'a HeaderMap,
    /// Whether the group's failover matcher matched the status.
    pub failover: bool,
    /// The error body as text (redacted), when it was read: failover statuses and `429`.
    pub body: Option<&'a str>,
    /// The upstream's error message parsed from the body (redacted), when it was read.
    pub message: Option<&'a str>,
}

impl<'a> UpstreamAnswer<'a> {
    /// An answer whose body was not read.
    pub fn new(status: StatusCode, headers: &'a HeaderMap, failover: bool) -> Self {
        Self {
            status,
            headers,
            failover,
            body: None,
            message: None,
        }
    }

    /// The same answer with its error body and the message parsed from it.
    #[must_use]
    pub fn with_body(mut self, body: &'a str, message: &'a str) -> Self {
        self.body = Some(body);
        self.message = Some(message);
        self
    }
}

/// Decides what an attempt means for its key. The extension point of
/// [`KeyHealthLayer`](super::KeyHealthLayer); [`DefaultClassifier`] implements the default rules.
pub trait ClassifyOutcome: Send + Sync + 'static {
    /// Classifies an upstream response.
    fn classify_response(&self, answer: &UpstreamAnswer<'_>) -> Outcome;

    /// Classifies an attempt that produced no response.
    fn classify_error(&self, error: &Error) -> Outcome;
}

/// Statuses that describe the request, not the credential: never the key's fault.
const REQUEST_STATUSES: &[u16] = &[404, 405, 411, 413, 414, 415, 416, 422, 431];

/// gpt-load's classification, made safe against clients and flaky providers:
///
/// - `429` → [`Outcome::CoolDown`] with what the answer says about the recovery
///   ([`quota_signal`]: `Retry-After`, the providers' reset headers, Gemini's quota details);
/// - a status outside the failover set → [`Outcome::Success`] below `400`, else
///   [`Outcome::Passthrough`];
/// - a failover `5xx` or `408` → [`Outcome::Transient`];
/// - a failover `401`, `402` or `403` → [`Outcome::Failure`] counted;
/// - another failover `4xx` whose body [blames the request](super::blame)
///   (`invalid_request_error`, `INVALID_ARGUMENT`, a context-length message) →
///   [`Outcome::RequestError`];
/// - one whose message holds an uncounted phrase (`resource has been exhausted`, and those added
///   with [`uncounted_phrase`](Self::uncounted_phrase)) → [`Outcome::Failure`] not counted;
/// - one whose body blames the key (`invalid_api_key`, `API_KEY_INVALID`, "API key not valid",
///   a billing or account message) → [`Outcome::Failure`] counted;
/// - otherwise a `400`, `404`, `405`, `411`, `413`–`416`, `422` or `431` →
///   [`Outcome::RequestError`], and any other failover status → [`Outcome::Failure`] counted;
/// - a transport failure or timeout → [`Outcome::Transient`]; a client that went away →
///   [`Outcome::ClientGone`].
#[derive(Clone, Debug)]
pub struct DefaultClassifier {
    uncounted: Vec<String>,
}

impl Default for DefaultClassifier {
    fn default() -> Self {
        Self {
            // gpt-load's other uncounted phrase, "please reduce the length of the messages", is
            // a context-window error: a request error here, never retried.
            uncounted: vec!["resource has been exhausted".to_owned()],
        }
    }
}

impl DefaultClassifier {
    /// The default rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a phrase whose failures are not counted (case-insensitive).
    #[must_use]
    pub fn uncounted_phrase(mut self, phrase: &str) -> Self {
        self.uncounted.push(phrase.to_lowercase());
        self
    }

    fn is_uncounted(&self, message: &str) -> bool {
        let message = message.to_lowercase();
        self.uncounted.iter().any(|p| message.contains(p.as_str()))
    }

    /// A failover status other than `429`.
    fn classify_failover(&self, answer: &UpstreamAnswer<'_>) -> Outcome {
        let code = answer.status.as_u16();
        if answer.status.is_server_error() || code == 408 {
            return Outcome::Transient;
        }
        if matches!(code, 401..=403) {
            return Outcome::Failure { counted: true };
        }
        if !answer.status.is_client_error() {
            return Outcome::Failure { counted: true };
        }
        let blamed = answer.body.map_or(Blame::Unknown, blame);
        if blamed == Blame::Request {
            return Outcome::RequestError;
        }
        if answer.message.is_some_and(|m| self.is_uncounted(m)) {
            return Outcome::Failure { counted: false };
        }
        match blamed {
            Blame::Key => Outcome::Failure { counted: true },
            _ if code == 400 || REQUEST_STATUSES.contains(&code) => Outcome::RequestError,
            _ => Outcome::Failure { counted: true },
        }
    }
}

impl ClassifyOutcome for DefaultClassifier {
    fn classify_response(&self, answer: &UpstreamAnswer<'_>) -> Outcome {
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            return Outcome::CoolDown(quota_signal(answer.headers, answer.body, SystemTime::now()));
        }
        if answer.failover {
            return self.classify_failover(answer);
        }
        if answer.status.as_u16() < 400 {
            Outcome::Success
        } else {
            Outcome::Passthrough
        }
    }

    fn classify_error(&self, error: &Error) -> Outcome {
        match error.kind() {
            ErrorKind::Upstream | ErrorKind::UpstreamTimeout => Outcome::Transient,
            ErrorKind::ClientBody => Outcome::ClientGone,
            _ => Outcome::Passthrough,
        }
    }
}

/// Bytes of upstream error text kept for logs.
pub(crate) const MESSAGE_LIMIT: usize = 2048;

/// The human-readable message in an upstream error body: the first non-empty of
/// `error.message`, `error_msg`, `error` (a string) and `message`, else the body itself;
/// at most 2 KiB.
pub fn upstream_message(body: &str) -> String {
    let parsed = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        let candidates = [
            v.pointer("/error/message"),
            v.get("error_msg"),
            v.get("error"),
            v.get("message"),
        ];
        candidates
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find(|s| !s.trim().is_empty())
            .map(str::to_owned)
    });
    let mut message = parsed.unwrap_or_else(|| body.trim().to_owned());
    if message.len() > MESSAGE_LIMIT {
        let mut end = MESSAGE_LIMIT;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    message
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{HeaderValue, header};

    use super::*;

    fn classify(status: u16, failover: bool, body: Option<&str>, retry: Option<&'static str>) -> Outcome {
        let mut headers = HeaderMap::new();
        if let Some(r) = retry {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static(r));
        }
        let answer = UpstreamAnswer::new(StatusCode::from_u16(status).unwrap(), &headers, failover);
        let message = body.map(upstream_message);
        let answer = match (body, &message) {
            (Some(body), Some(message)) => answer.with_body(body, message),
            _ => answer,
        };
        DefaultClassifier::new().classify_response(&answer)
    }

    fn openai_error(kind: &str, code: &str, message: &str) -> String {
        format!(r#"{{"error":{{"message":"{message}","type":"{kind}","param":null,"code":"{code}"}}}}"#)
    }

    #[test]
    fn responses() {
        assert_eq!(classify(200, false, None, None), Outcome::Success);
        assert_eq!(classify(404, false, None, None), Outcome::Passthrough);
        assert_eq!(
            classify(
                401,
                true,
                Some(r#"{"error":{"message":"Incorrect API key"}}"#),
                None
            ),
            Outcome::Failure { counted: true }
        );
        assert_eq!(
            classify(429, true, None, Some("7")),
            Outcome::CoolDown(QuotaSignal::after(Duration::from_secs(7)))
        );
        assert_eq!(
            classify(429, true, Some("Resource has been exhausted"), None),
            Outcome::CoolDown(QuotaSignal::default()),
            "no signal: the backoff decides"
        );
        assert_eq!(
            classify(429, false, None, Some("999999")),
            Outcome::CoolDown(QuotaSignal::after(Duration::from_secs(999_999))),
            "the backoff caps it"
        );
    }

    #[test]
    fn provider_failures_are_transient() {
        for status in [500, 502, 503, 504, 529, 408] {
            assert_eq!(
                classify(status, true, Some("boom"), None),
                Outcome::Transient,
                "{status}"
            );
        }
        // Even when the body mentions a key: a 5xx is the provider's failure.
        assert_eq!(
            classify(
                500,
                true,
                Some(r#"{"error":{"message":"api key service down"}}"#),
                None
            ),
            Outcome::Transient
        );
        assert_eq!(classify(503, false, None, None), Outcome::Passthrough);
    }

    #[test]
    fn request_errors_are_nobodys_key() {
        let malformed = openai_error(
            "invalid_request_error",
            "",
            "We could not parse the JSON body of your request.",
        );
        let too_long = openai_error(
            "invalid_request_error",
            "context_length_exceeded",
            "This model's maximum context length is 8192 tokens.",
        );
        for (status, body) in [
            (400, malformed.as_str()),
            (400, too_long.as_str()),
            (400, "Please reduce the length of the messages."),
            (400, "<html>400 Bad Request</html>"),
            (400, ""),
            (413, "too large"),
            (422, r#"{"detail":"unprocessable"}"#),
            (404, "no such model"),
            (
                409,
                r#"{"error":{"code":409,"message":"x","status":"INVALID_ARGUMENT"}}"#,
            ),
        ] {
            assert_eq!(
                classify(status, true, Some(body), None),
                Outcome::RequestError,
                "{status} {body}"
            );
        }
    }

    #[test]
    fn key_errors_still_count() {
        let gemini = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"reason":"API_KEY_INVALID"}]}}"#;
        let openai = openai_error(
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided.",
        );
        for (status, body) in [
            (400, gemini),
            (401, openai.as_str()),
            (403, "forbidden"),
            (402, "payment required"),
            (401, ""),
            (400, "Your credit balance is too low to access the Anthropic API."),
        ] {
            assert_eq!(
                classify(status, true, Some(body), None),
                Outcome::Failure { counted: true },
                "{status} {body}"
            );
        }
        // Another 4xx the body does not explain counts, as in gpt-load, unless uncounted.
        assert_eq!(
            classify(418, true, Some("teapot"), None),
            Outcome::Failure { counted: true }
        );
        assert_eq!(
            classify(418, true, Some("Resource has been exhausted"), None),
            Outcome::Failure { counted: false }
        );
    }

    #[test]
    fn errors() {
        let c = DefaultClassifier::new();
        assert_eq!(
            c.classify_error(&Error::upstream_timeout("connect")),
            Outcome::Transient
        );
        assert_eq!(c.classify_error(&Error::upstream("refused")), Outcome::Transient);
        assert_eq!(c.classify_error(&Error::client_body("gone")), Outcome::ClientGone);
        assert_eq!(
            c.classify_error(&Error::no_upstream(&"g".into())),
            Outcome::Passthrough
        );
    }

    #[test]
    fn parses_upstream_messages() {
        assert_eq!(
            upstream_message(r#"{"error":{"message":"bad key","type":"x"}}"#),
            "bad key"
        );
        assert_eq!(upstream_message(r#"{"error_msg":"quota"}"#), "quota");
        assert_eq!(upstream_message(r#"{"error":"plain"}"#), "plain");
        assert_eq!(upstream_message(r#"{"message":"top"}"#), "top");
        assert_eq!(
            upstream_message(r#"{"error":{"message":""},"message":"fallback"}"#),
            "fallback"
        );
        assert_eq!(upstream_message("  upstream says no \n"), "upstream says no");
        let long = "é".repeat(3000);
        let m = upstream_message(&long);
        assert!(m.len() <= MESSAGE_LIMIT && m.chars().all(|c| c == 'é'));
    }
}
