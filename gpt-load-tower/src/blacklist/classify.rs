use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode, header};
use serde_json::Value;

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
    /// A failed attempt. `counted: false` for failures that are not the key's fault (gpt-load's
    /// "uncounted" messages), which do not move the key toward the blacklist.
    Failure {
        /// Whether the failure counts toward the blacklist threshold.
        counted: bool,
    },
    /// The key is rate limited or out of quota: it rests for this long, without a counted
    /// failure.
    CoolDown(Duration),
    /// The key is dead: blacklist it at once.
    Dead,
    /// The client went away; nobody is to blame.
    ClientGone,
}

impl Outcome {
    /// A low-cardinality label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Passthrough => "passthrough",
            Self::Failure { counted: true } => "failure",
            Self::Failure { counted: false } => "uncounted_failure",
            Self::CoolDown(_) => "cool_down",
            Self::Dead => "dead",
            Self::ClientGone => "client_gone",
        }
    }
}

/// Decides what an attempt means for its key. The extension point of
/// [`KeyHealthLayer`](super::KeyHealthLayer); [`DefaultClassifier`] implements gpt-load's rules.
pub trait ClassifyOutcome: Send + Sync + 'static {
    /// Classifies an upstream response. `failover` says whether the group's failover matcher
    /// matched the status; `message` is the parsed, redacted upstream error message, present when
    /// the body was read (failover statuses and `429`).
    fn classify_response(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        failover: bool,
        message: Option<&str>,
    ) -> Outcome;

    /// Classifies an attempt that produced no response.
    fn classify_error(&self, error: &Error) -> Outcome;
}

/// gpt-load's classification, with a cool-down for rate limits:
///
/// - `429` → [`Outcome::CoolDown`] for `Retry-After` (seconds or HTTP date; capped), or the
///   default cool-down when absent;
/// - a failover status → [`Outcome::Failure`], not counted when the message contains one of the
///   uncounted phrases (`resource has been exhausted`, `please reduce the length of the messages`);
/// - any other `1xx`–`3xx` → [`Outcome::Success`]; other statuses → [`Outcome::Passthrough`];
/// - a transport failure or timeout → counted failure; a client that went away →
///   [`Outcome::ClientGone`].
#[derive(Clone, Debug)]
pub struct DefaultClassifier {
    uncounted: Vec<String>,
    cool_down: Duration,
    max_cool_down: Duration,
}

impl Default for DefaultClassifier {
    fn default() -> Self {
        Self {
            uncounted: vec![
                "resource has been exhausted".to_owned(),
                "please reduce the length of the messages".to_owned(),
            ],
            cool_down: Duration::from_secs(30),
            max_cool_down: Duration::from_secs(3600),
        }
    }
}

impl DefaultClassifier {
    /// The default rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a `429` without `Retry-After` rests its key (default 30 s).
    #[must_use]
    pub fn cool_down(mut self, duration: Duration) -> Self {
        self.cool_down = duration;
        self
    }

    /// The longest rest a `Retry-After` may ask for (default 1 h).
    #[must_use]
    pub fn max_cool_down(mut self, duration: Duration) -> Self {
        self.max_cool_down = duration;
        self
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
}

impl ClassifyOutcome for DefaultClassifier {
    fn classify_response(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        failover: bool,
        message: Option<&str>,
    ) -> Outcome {
        if status == StatusCode::TOO_MANY_REQUESTS {
            let rest = retry_after(headers)
                .unwrap_or(self.cool_down)
                .min(self.max_cool_down);
            return Outcome::CoolDown(rest);
        }
        if failover {
            return Outcome::Failure {
                counted: !message.is_some_and(|m| self.is_uncounted(m)),
            };
        }
        if status.as_u16() < 400 {
            Outcome::Success
        } else {
            Outcome::Passthrough
        }
    }

    fn classify_error(&self, error: &Error) -> Outcome {
        match error.kind() {
            ErrorKind::Upstream | ErrorKind::UpstreamTimeout => Outcome::Failure { counted: true },
            ErrorKind::ClientBody => Outcome::ClientGone,
            _ => Outcome::Passthrough,
        }
    }
}

/// The `Retry-After` header as a duration from now.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
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
    use super::*;
    use http::HeaderValue;

    fn classify(status: u16, failover: bool, message: Option<&str>, retry: Option<&'static str>) -> Outcome {
        let mut headers = HeaderMap::new();
        if let Some(r) = retry {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static(r));
        }
        DefaultClassifier::new().classify_response(
            StatusCode::from_u16(status).unwrap(),
            &headers,
            failover,
            message,
        )
    }

    #[test]
    fn responses() {
        assert_eq!(classify(200, false, None, None), Outcome::Success);
        assert_eq!(classify(404, false, None, None), Outcome::Passthrough);
        assert_eq!(
            classify(500, true, Some("boom"), None),
            Outcome::Failure { counted: true }
        );
        assert_eq!(
            classify(401, true, Some("Incorrect API key"), None),
            Outcome::Failure { counted: true }
        );
        assert_eq!(
            classify(400, true, Some("Please reduce the length of the messages."), None),
            Outcome::Failure { counted: false }
        );
        assert_eq!(
            classify(429, true, None, Some("7")),
            Outcome::CoolDown(Duration::from_secs(7))
        );
        assert_eq!(
            classify(429, true, Some("Resource has been exhausted"), None),
            Outcome::CoolDown(Duration::from_secs(30))
        );
        assert_eq!(
            classify(429, false, None, Some("999999")),
            Outcome::CoolDown(Duration::from_secs(3600))
        );
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("12"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(12)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        h.insert(header::RETRY_AFTER, HeaderValue::try_from(later).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn errors() {
        let c = DefaultClassifier::new();
        assert_eq!(
            c.classify_error(&Error::upstream_timeout("connect")),
            Outcome::Failure { counted: true }
        );
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
