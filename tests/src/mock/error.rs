//! Error answers in each provider's native format.

use std::time::Duration;

use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Value, json};

use super::body::MockBody;
use super::reply;

/// The message of [`Behaviour::QuotaExhausted`](super::Behaviour::QuotaExhausted).
pub(crate) const QUOTA_MESSAGE: &str = "Resource has been exhausted (e.g. check quota).";

/// Which provider's wire format a route speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    OpenAi,
    Anthropic,
    Gemini,
}

/// What went wrong, independent of the wire format.
#[derive(Debug)]
pub(crate) enum Failure<'a> {
    MissingKey,
    InvalidKey(&'a str),
    RateLimited(Duration),
    Quota,
    /// A 429 with the provider's own rate-limit signal (see `Behaviour::ProviderLimit`).
    ProviderLimit {
        per_day: bool,
        reset: Duration,
        model: &'a str,
    },
    Server,
    Status(u16),
    NotFound(&'a Method, &'a str),
    MethodNotAllowed(&'a Method, &'a str),
    BadRequest(&'a str),
    /// A 400 about the key (Gemini's way of rejecting one).
    KeyRejected(&'a str),
    /// A 400: the account behind the key is out of credit.
    OutOfCredit,
    /// A non-empty JSON route body that does not parse.
    MalformedJson,
    /// A prompt over the context window.
    ContextTooLong {
        tokens: u64,
        window: u64,
    },
}

/// The native error response for `failure` in `family`'s format.
pub(crate) fn respond(family: Family, failure: &Failure<'_>) -> Response<MockBody> {
    let status = failure.status();
    let message = failure.message(family);
    let body = match family {
        Family::OpenAi => {
            let (kind, code) = failure.openai_type_and_code();
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
        Family::Anthropic => json!({
            "type": "error",
            "error": {"type": anthropic_type(status), "message": message},
        }),
        Family::Gemini => {
            let mut error =
                json!({"code": status.as_u16(), "message": message, "status": gemini_status(status)});
            if let Failure::KeyRejected(_) = failure {
                error["details"] = json!([{
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                }]);
            }
            if let Failure::ProviderLimit {
                per_day,
                reset,
                model,
            } = failure
            {
                let window = if *per_day { "Day" } else { "Minute" };
                error["details"] = json!([
                    {
                        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                        "violations": [{
                            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                            "quotaId": format!("GenerateRequestsPer{window}PerProjectPerModel-FreeTier"),
                            "quotaDimensions": {"location": "global", "model": model},
                            "quotaValue": "50",
                        }],
                    },
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{}s", reset.as_secs())},
                ]);
            }
            json!({ "error": error })
        }
    };
    let mut response = reply::json(status, &body);
    if let Failure::ProviderLimit { reset, .. } = failure {
        let headers = response.headers_mut();
        match family {
            Family::OpenAi => {
                headers.insert("x-ratelimit-limit-requests", HeaderValue::from(60));
                headers.insert("x-ratelimit-remaining-requests", HeaderValue::from(0));
                headers.insert(
                    "x-ratelimit-reset-requests",
                    HeaderValue::try_from(format!("{}m{}s", reset.as_secs() / 60, reset.as_secs() % 60))
                        .unwrap_or_else(|_| HeaderValue::from_static("60s")),
                );
                headers.insert("x-ratelimit-remaining-tokens", HeaderValue::from(150_000));
                headers.insert("x-ratelimit-reset-tokens", HeaderValue::from_static("6ms"));
            }
            Family::Anthropic => {
                let at = chrono::Utc::now() + *reset;
                headers.insert("anthropic-ratelimit-requests-limit", HeaderValue::from(50));
                headers.insert("anthropic-ratelimit-requests-remaining", HeaderValue::from(0));
                headers.insert(
                    "anthropic-ratelimit-requests-reset",
                    HeaderValue::from_str(&at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                        .unwrap_or_else(|_| HeaderValue::from_static("1970-01-01T00:00:00Z")),
                );
            }
            Family::Gemini => {}
        }
    }
    if let Failure::RateLimited(after) = failure {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

impl Failure<'_> {
    fn status(&self) -> StatusCode {
        match self {
            Self::MissingKey | Self::InvalidKey(_) => StatusCode::UNAUTHORIZED,
            Self::RateLimited(_) | Self::Quota | Self::ProviderLimit { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Server => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Status(code) => StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Self::NotFound(..) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(..) => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadRequest(_)
            | Self::KeyRejected(_)
            | Self::OutOfCredit
            | Self::MalformedJson
            | Self::ContextTooLong { .. } => StatusCode::BAD_REQUEST,
        }
    }

    fn message(&self, family: Family) -> String {
        match (self, family) {
            (Self::MissingKey, Family::OpenAi) => "You didn't provide an API key. You need to \
                 provide your API key in an Authorization header using Bearer auth."
                .to_owned(),
            (Self::MissingKey, Family::Anthropic) => "x-api-key header is required".to_owned(),
            (Self::MissingKey, Family::Gemini) => {
                "Method doesn't allow unregistered callers. Please use API Key.".to_owned()
            }
            (Self::InvalidKey(key), Family::OpenAi) => format!(
                "Incorrect API key provided: {key}. You can find your API key at \
                 https://platform.openai.com/account/api-keys."
            ),
            (Self::InvalidKey(key), Family::Anthropic) => format!("invalid x-api-key: {key}"),
            (Self::InvalidKey(key), Family::Gemini) => {
                format!("API key not valid. Please pass a valid API key. (key: {key})")
            }
            (Self::RateLimited(after), _) => format!(
                "Rate limit reached for requests. Please try again in {}s.",
                after.as_secs_f64()
            ),
            (Self::Quota, _) => QUOTA_MESSAGE.to_owned(),
            (Self::ProviderLimit { model, .. }, _) => {
                format!("You exceeded your current quota for {model}; please retry later.")
            }
            (Self::Server, _) => "The server had an error while processing your request.".to_owned(),
            (Self::Status(code), _) => format!("mock upstream scripted status {code}"),
            (Self::NotFound(method, path), _) => format!("Invalid URL ({method} {path})"),
            (Self::MethodNotAllowed(method, path), _) => {
                format!("Method {method} not allowed on {path}")
            }
            (Self::BadRequest(detail), _) => (*detail).to_owned(),
            (Self::KeyRejected(key), Family::Gemini) => {
                format!("API key not valid. Please pass a valid API key. (key: {key})")
            }
            (Self::KeyRejected(key), _) => format!("Invalid API key: {key}"),
            (Self::OutOfCredit, _) => {
                "You exceeded your current quota, please check your plan and billing details.".to_owned()
            }
            (Self::MalformedJson, Family::OpenAi) => "We could not parse the JSON body of your request. \
                 (HINT: This likely means you aren't using your HTTP library correctly.)"
                .to_owned(),
            (Self::MalformedJson, Family::Anthropic) => "Request body is not valid JSON".to_owned(),
            (Self::MalformedJson, Family::Gemini) => "Invalid JSON payload received.".to_owned(),
            (Self::ContextTooLong { tokens, window }, Family::OpenAi) => format!(
                "This model's maximum context length is {window} tokens. However, your messages \
                 resulted in {tokens} tokens. Please reduce the length of the messages."
            ),
            (Self::ContextTooLong { tokens, window }, Family::Anthropic) => {
                format!("prompt is too long: {tokens} tokens > {window} maximum")
            }
            (Self::ContextTooLong { tokens, window }, Family::Gemini) => format!(
                "The input token count ({tokens}) exceeds the maximum number of tokens allowed ({window})."
            ),
        }
    }

    fn openai_type_and_code(&self) -> (&'static str, Value) {
        match self {
            Self::MissingKey | Self::InvalidKey(_) => ("invalid_request_error", json!("invalid_api_key")),
            Self::RateLimited(_) | Self::ProviderLimit { .. } => ("requests", json!("rate_limit_exceeded")),
            Self::Quota | Self::OutOfCredit => ("insufficient_quota", json!("insufficient_quota")),
            Self::Server => ("server_error", Value::Null),
            Self::Status(_) => {
                let status = self.status();
                let kind = if status == StatusCode::TOO_MANY_REQUESTS {
                    "requests"
                } else if status.is_server_error() {
                    "server_error"
                } else {
                    "invalid_request_error"
                };
                (kind, Value::Null)
            }
            Self::NotFound(..) | Self::MethodNotAllowed(..) | Self::BadRequest(_) | Self::MalformedJson => {
                ("invalid_request_error", Value::Null)
            }
            Self::KeyRejected(_) => ("invalid_request_error", json!("invalid_api_key")),
            Self::ContextTooLong { .. } => ("invalid_request_error", json!("context_length_exceeded")),
        }
    }
}

fn anthropic_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

fn gemini_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "NOT_IMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}
