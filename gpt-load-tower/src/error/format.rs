use bytes::Bytes;
use http::{HeaderMap, StatusCode, Uri};
use serde_json::json;

use super::{Error, ErrorKind};
use crate::channel::ChannelKind;

/// The JSON error shape a client's SDK expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorFormat {
    /// `{"error":{"message","type","code"}}`
    OpenAi,
    /// `{"type":"error","error":{"type","message"}}`
    Anthropic,
    /// `{"error":{"code","message","status"}}`
    Gemini,
}

impl ErrorFormat {
    /// Guesses the client's API family from the request: the path first (it names the
    /// endpoint), then the headers each SDK sends.
    pub fn detect(uri: &Uri, headers: &HeaderMap) -> Self {
        let path = uri.path();
        if path.contains("/openai/") {
            return Self::OpenAi;
        }
        if path.contains("/v1beta/")
            || path.contains(":generateContent")
            || path.contains(":streamGenerateContent")
        {
            return Self::Gemini;
        }
        if path.ends_with("/messages") || path.contains("/messages/") {
            return Self::Anthropic;
        }
        if path.ends_with("/chat/completions") || path.ends_with("/responses") || path.ends_with("/models") {
            return Self::OpenAi;
        }
        if headers.contains_key("anthropic-version") {
            Self::Anthropic
        } else if headers.contains_key("x-goog-api-key") {
            Self::Gemini
        } else {
            Self::OpenAi
        }
    }

    /// The format a channel's native endpoints use.
    pub fn for_channel(channel: ChannelKind) -> Self {
        match channel {
            ChannelKind::Anthropic => Self::Anthropic,
            ChannelKind::Gemini => Self::Gemini,
            _ => Self::OpenAi,
        }
    }

    /// Renders `err` as this format's JSON body.
    pub fn render(self, err: &Error) -> Bytes {
        let kind = err.kind();
        let message = err.message();
        let body = match self {
            Self::OpenAi => json!({"error": {
                "message": message,
                "type": openai_type(kind),
                "code": kind.as_str(),
            }}),
            Self::Anthropic => json!({"type": "error", "error": {
                "type": anthropic_type(kind),
                "message": message,
            }}),
            Self::Gemini => json!({"error": {
                "code": kind.status().as_u16(),
                "message": message,
                "status": google_status(kind.status()),
            }}),
        };
        Bytes::from(body.to_string())
    }
}

fn openai_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Unauthorized => "authentication_error",
        ErrorKind::Forbidden => "permission_error",
        ErrorKind::UnknownGroup => "not_found_error",
        ErrorKind::Overloaded | ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::BodyTooLarge
        | ErrorKind::InvalidRequest
        | ErrorKind::ClientBody
        | ErrorKind::InvalidPath => "invalid_request_error",
        _ => "server_error",
    }
}

fn anthropic_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Unauthorized => "authentication_error",
        ErrorKind::Forbidden => "permission_error",
        ErrorKind::UnknownGroup => "not_found_error",
        ErrorKind::Overloaded | ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::BodyTooLarge => "request_too_large",
        ErrorKind::InvalidRequest | ErrorKind::ClientBody | ErrorKind::InvalidPath => "invalid_request_error",
        ErrorKind::NoKeyAvailable | ErrorKind::BodyBudgetExhausted => "overloaded_error",
        _ => "api_error",
    }
}

fn google_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 413 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        502 | 503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::Value;

    fn detect(path: &str, header: Option<&'static str>) -> ErrorFormat {
        let mut headers = HeaderMap::new();
        if let Some(h) = header {
            headers.insert(h, HeaderValue::from_static("x"));
        }
        ErrorFormat::detect(&path.parse().unwrap(), &headers)
    }

    #[test]
    fn detects_the_client_family() {
        assert_eq!(
            detect("/proxy/a/v1/chat/completions", Some("x-api-key")),
            ErrorFormat::OpenAi
        );
        assert_eq!(detect("/proxy/a/v1/messages", None), ErrorFormat::Anthropic);
        assert_eq!(
            detect("/proxy/a/v1/messages/count_tokens", None),
            ErrorFormat::Anthropic
        );
        assert_eq!(
            detect("/proxy/a/v1beta/models/m:generateContent", None),
            ErrorFormat::Gemini
        );
        assert_eq!(
            detect("/proxy/a/v1beta/openai/chat/completions", None),
            ErrorFormat::OpenAi
        );
        assert_eq!(
            detect("/proxy/a/other", Some("anthropic-version")),
            ErrorFormat::Anthropic
        );
        assert_eq!(
            detect("/proxy/a/other", Some("x-goog-api-key")),
            ErrorFormat::Gemini
        );
        assert_eq!(detect("/proxy/a/other", None), ErrorFormat::OpenAi);
    }

    #[test]
    fn renders_each_format() {
        let err = Error::no_key_available(&"g".into());
        let v: Value = serde_json::from_slice(&ErrorFormat::OpenAi.render(&err)).unwrap();
        assert_eq!(v["error"]["code"], "no_keys_available");
        assert_eq!(v["error"]["type"], "server_error");
        let v: Value = serde_json::from_slice(&ErrorFormat::Anthropic.render(&err)).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "overloaded_error");
        let v: Value = serde_json::from_slice(&ErrorFormat::Gemini.render(&err)).unwrap();
        assert_eq!(v["error"]["code"], 503);
        assert_eq!(v["error"]["status"], "UNAVAILABLE");
        assert!(v["error"]["message"].as_str().unwrap().contains("'g'"));
    }
}
