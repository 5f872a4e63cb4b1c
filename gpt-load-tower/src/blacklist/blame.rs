//! Whose fault an upstream error is, as its status and body tell.
//!
//! A `400` caused by the *request* (malformed JSON, an unknown parameter, a prompt over the
//! context window) would fail on every key, so blaming the key lets any client blacklist a whole
//! group with a few bad requests. The providers' error bodies say which it is:
//!
//! - OpenAI: `{"error":{"message","type","code"}}` — `invalid_request_error` with a `code` such
//!   as `context_length_exceeded` is the request's fault, `invalid_api_key` the key's;
//! - Anthropic: `{"type":"error","error":{"type","message"}}` — `invalid_request_error`,
//!   `not_found_error`, `request_too_large` against `authentication_error`, `permission_error`,
//!   `billing_error`;
//! - Gemini: `{"error":{"code","message","status","details":[{"reason"}]}}` — `INVALID_ARGUMENT`
//!   is the request's fault unless a detail's reason names the key (`API_KEY_INVALID`).
//!
//! OpenAI-compatible providers answer in any of these shapes, so every field is read whatever the
//! channel; a phrase about the key or the account in the message wins over a request-error type
//! (OpenAI's own `invalid_api_key` comes with type `invalid_request_error`).

use serde_json::Value;

/// Whose fault an upstream error is.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The key or its account: invalid, revoked, unpaid, not permitted.
    Key,
    /// The request itself: it would fail the same way on every key.
    Request,
    /// The body does not say.
    Unknown,
}

/// Substrings (lowercase) of an error message, code, type or reason that put the failure on the
/// key or its account.
const KEY_PHRASES: &[&str] = &[
    "api key",
    "api_key",
    "api-key",
    "apikey",
    "authentication",
    "unauthenticated",
    "unauthorized",
    "permission",
    "credential",
    "credit balance",
    "billing",
    "quota",
    "organization",
    "your account",
    "account is",
    "account has been",
    "deactivated",
    "suspended",
];

/// Substrings (lowercase) of a message that put the failure on the request: prompts over the
/// model's context window, in each provider's words.
const REQUEST_PHRASES: &[&str] = &[
    "context length",
    "context_length",
    "context window",
    "prompt is too long",
    "too many tokens",
    "exceeds the maximum number of tokens",
    "input token count",
    "please reduce the length",
    "could not parse the json",
];

/// Error types and statuses (lowercase) that mean the request was refused as such.
const REQUEST_KINDS: &[&str] = &[
    "invalid_request_error",
    "not_found_error",
    "request_too_large",
    "invalid_argument",
    "out_of_range",
    "not_found",
];

/// What an error body says about whose fault the failure is. Never allocates more than the
/// parsed body; call it on error bodies only.
pub fn blame(body: &str) -> Blame {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return blame_text(&body.to_lowercase());
    };
    let error = value.get("error").unwrap_or(&Value::Null);
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_lowercase);
    let message = text(error.get("message"))
        .or_else(|| text(Some(error)))
        .or_else(|| text(value.get("message")))
        .or_else(|| text(value.get("error_msg")))
        .unwrap_or_default();
    // OpenAI's `code` is a string; Gemini's is the HTTP status as a number and says nothing.
    let labels: Vec<String> = [
        text(error.get("type")),
        text(error.get("code")),
        text(error.get("status")),
    ]
    .into_iter()
    .flatten()
    .chain(
        error
            .get("details")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|d| text(d.get("reason"))),
    )
    .collect();
    let names_key = |s: &str| KEY_PHRASES.iter().any(|p| s.contains(p));
    if names_key(&message) || labels.iter().any(|l| names_key(l)) {
        return Blame::Key;
    }
    if REQUEST_PHRASES.iter().any(|p| message.contains(p))
        || labels
            .iter()
            .any(|l| REQUEST_KINDS.contains(&l.as_str()) || l.contains("context_length"))
    {
        return Blame::Request;
    }
    Blame::Unknown
}

/// [`blame`] for a body that is not JSON.
fn blame_text(text: &str) -> Blame {
    if KEY_PHRASES.iter().any(|p| text.contains(p)) {
        Blame::Key
    } else if REQUEST_PHRASES.iter().any(|p| text.contains(p)) {
        Blame::Request
    } else {
        Blame::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_errors() {
        for (body, expected) in [
            (
                r#"{"error":{"message":"We could not parse the JSON body of your request.","type":"invalid_request_error","param":null,"code":null}}"#,
                Blame::Request,
            ),
            (
                r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
                Blame::Request,
            ),
            (
                r#"{"error":{"message":"Unrecognized request argument supplied: foo","type":"invalid_request_error","param":null,"code":null}}"#,
                Blame::Request,
            ),
            (
                r#"{"error":{"message":"Invalid 'messages[0].content': take the role into account.","type":"invalid_request_error","param":"messages","code":"invalid_value"}}"#,
                Blame::Request,
            ),
            (
                r#"{"error":{"message":"Incorrect API key provided: sk-****abcd.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
                Blame::Key,
            ),
            (
                r#"{"error":{"message":"You exceeded your current quota.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
                Blame::Key,
            ),
            (
                r#"{"error":{"message":"Your account is not active.","type":"invalid_request_error","code":"account_deactivated"}}"#,
                Blame::Key,
            ),
            (
                r#"{"error":{"message":"boom","type":"server_error"}}"#,
                Blame::Unknown,
            ),
        ] {
            assert_eq!(blame(body), expected, "{body}");
        }
    }

    #[test]
    fn anthropic_errors() {
        for (body, expected) in [
            (
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"messages: field required"}}"#,
                Blame::Request,
            ),
            (
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
                Blame::Request,
            ),
            (
                r#"{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}"#,
                Blame::Request,
            ),
            (
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API."}}"#,
                Blame::Key,
            ),
            (
                r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
                Blame::Key,
            ),
            (
                r#"{"type":"error","error":{"type":"permission_error","message":"not allowed"}}"#,
                Blame::Key,
            ),
        ] {
            assert_eq!(blame(body), expected, "{body}");
        }
    }

    #[test]
    fn gemini_errors() {
        for (body, expected) in [
            (
                r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#,
                Blame::Key,
            ),
            (
                r#"{"error":{"code":400,"message":"Invalid value at 'contents[0].parts[0]'","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest"}]}}"#,
                Blame::Request,
            ),
            (
                r#"{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#,
                Blame::Request,
            ),
            (
                r#"{"error":{"code":403,"message":"Method doesn't allow unregistered callers.","status":"PERMISSION_DENIED"}}"#,
                Blame::Key,
            ),
            (
                r#"{"error":{"code":400,"message":"Bad request","status":"FAILED_PRECONDITION","details":[{"reason":"API_KEY_SERVICE_BLOCKED"}]}}"#,
                Blame::Key,
            ),
        ] {
            assert_eq!(blame(body), expected, "{body}");
        }
    }

    #[test]
    fn other_shapes() {
        assert_eq!(blame(r#"{"error":"invalid api key"}"#), Blame::Key);
        assert_eq!(blame(r#"{"message":"context length exceeded"}"#), Blame::Request);
        assert_eq!(blame("Invalid API Key"), Blame::Key);
        assert_eq!(blame("<html>Bad Request</html>"), Blame::Unknown);
        assert_eq!(blame(""), Blame::Unknown);
    }
}
