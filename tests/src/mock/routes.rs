//! Routing of provider API requests and application of scripted behaviour.

use std::borrow::Cow;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::answer::{self, Answer};
use super::behaviour::Behaviour;
use super::body::MockBody;
use super::error::{self, Failure, Family};
use super::server::Shared;
use super::sse::StreamPlan;
use super::{anthropic, gemini, openai, reply};

/// A recognised provider endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'a> {
    OpenAiModels,
    OpenAiChat,
    OpenAiResponses,
    AnthropicMessages,
    AnthropicModels,
    GeminiModels,
    GeminiGenerate { model: &'a str },
    GeminiStream { model: &'a str },
}

impl<'a> Route<'a> {
    fn parse(method: &Method, path: &'a str) -> Option<Self> {
        let get = method == Method::GET;
        let post = method == Method::POST;
        let route = match path {
            "/v1/models" | "/v1beta/openai/models" if get => Self::OpenAiModels,
            "/v1/chat/completions" | "/v1beta/openai/chat/completions" if post => Self::OpenAiChat,
            "/v1/responses" if post => Self::OpenAiResponses,
            "/v1/messages" if post => Self::AnthropicMessages,
            "/v1beta/models" if get => Self::GeminiModels,
            _ if post => {
                let rest = path
                    .strip_prefix("/v1beta/models/")
                    .or_else(|| path.strip_prefix("/v1/models/"))?;
                let (model, action) = rest.rsplit_once(':')?;
                if model.is_empty() || model.contains('/') {
                    return None;
                }
                match action {
                    "generateContent" => Self::GeminiGenerate { model },
                    "streamGenerateContent" => Self::GeminiStream { model },
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some(route)
    }

    /// `GET /v1/models` is shared by the three providers: answer in Gemini's
    /// format when the key comes in a Gemini carrier, in Anthropic's when an
    /// `anthropic-version` header is present, and in OpenAI's otherwise.
    fn refine(self, parts: &Parts) -> Self {
        if self != Self::OpenAiModels || parts.uri.path() != "/v1/models" {
            return self;
        }
        let headers = &parts.headers;
        if headers.contains_key("authorization") {
            self
        } else if headers.contains_key("x-goog-api-key") || has_param(parts.uri.query(), "key") {
            Self::GeminiModels
        } else if headers.contains_key("anthropic-version") {
            Self::AnthropicModels
        } else {
            self
        }
    }

    /// Whether the route's request body is JSON.
    fn takes_json(self) -> bool {
        matches!(
            self,
            Self::OpenAiChat
                | Self::OpenAiResponses
                | Self::AnthropicMessages
                | Self::GeminiGenerate { .. }
                | Self::GeminiStream { .. }
        )
    }

    fn family(self) -> Family {
        match self {
            Self::OpenAiModels | Self::OpenAiChat | Self::OpenAiResponses => Family::OpenAi,
            Self::AnthropicMessages | Self::AnthropicModels => Family::Anthropic,
            Self::GeminiModels | Self::GeminiGenerate { .. } | Self::GeminiStream { .. } => Family::Gemini,
        }
    }
}

/// The few request body fields the mock looks at.
#[derive(Debug, Default, Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<serde_json::Value>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

impl Probe<'_> {
    fn streaming(&self) -> bool {
        matches!(self.stream, Some(serde_json::Value::Bool(true)))
    }

    fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|options| options.include_usage)
            .unwrap_or(false)
    }
}

/// Answers a (non-control) request that has already been recorded.
pub(crate) async fn dispatch(
    shared: &Shared,
    parts: &Parts,
    credential: Option<&str>,
    body: &Bytes,
    seq: u64,
) -> Response<MockBody> {
    let path = parts.uri.path();
    let Some(route) = Route::parse(&parts.method, path) else {
        return error::respond(Family::OpenAi, &Failure::NotFound(&parts.method, path));
    };
    let route = route.refine(parts);
    let family = route.family();
    let Some(key) = credential else {
        return error::respond(family, &Failure::MissingKey);
    };
    let mut cut = None;
    let mut limit = None;
    let mut empty = false;
    match shared.scripts.resolve(key) {
        Behaviour::Valid => {}
        Behaviour::Unauthorized => return error::respond(family, &Failure::InvalidKey(key)),
        Behaviour::RateLimited { retry_after } => {
            return error::respond(family, &Failure::RateLimited(retry_after));
        }
        Behaviour::ServerError => return error::respond(family, &Failure::Server),
        Behaviour::Status(code) => return error::respond(family, &Failure::Status(code)),
        Behaviour::QuotaExhausted => return error::respond(family, &Failure::Quota),
        Behaviour::InvalidKeyBadRequest => return error::respond(family, &Failure::KeyRejected(key)),
        Behaviour::OutOfCredit => return error::respond(family, &Failure::OutOfCredit),
        Behaviour::EmptyReply => empty = true,
        Behaviour::Flaky { per_mille, status } => {
            if shared.draw_per_mille() < per_mille {
                return error::respond(family, &Failure::Status(status));
            }
        }
        Behaviour::SlowFirstByte(delay) => tokio::time::sleep(delay).await,
        Behaviour::DisconnectMidStream { after_frames } => cut = Some(after_frames),
        Behaviour::ProviderLimit {
            per_day,
            reset,
            model,
        } => limit = Some((per_day, reset, model)),
    }
    if route.takes_json() && !body.iter().all(u8::is_ascii_whitespace) {
        if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
            return error::respond(family, &Failure::MalformedJson);
        }
        let tokens = answer::input_tokens(body);
        if let Some(window) = shared.config.context_window.filter(|w| tokens > *w) {
            return error::respond(family, &Failure::ContextTooLong { tokens, window });
        }
    }
    let probe: Probe<'_> = serde_json::from_slice(body).unwrap_or_default();
    let model = match route {
        Route::GeminiGenerate { model } | Route::GeminiStream { model } => model,
        _ => probe.model.as_deref().unwrap_or("unknown"),
    };
    if let Some((per_day, reset, limited)) = limit
        && limited.as_deref().is_none_or(|m| m == model)
    {
        return error::respond(
            family,
            &Failure::ProviderLimit {
                per_day,
                reset,
                model,
            },
        );
    }
    let stream = match route {
        Route::GeminiStream { .. } => true,
        Route::OpenAiChat | Route::OpenAiResponses | Route::AnthropicMessages => probe.streaming(),
        Route::OpenAiModels | Route::AnthropicModels | Route::GeminiModels | Route::GeminiGenerate { .. } => {
            false
        }
    };
    if empty {
        return empty_reply(family, stream);
    }
    if cut.is_some() && !stream {
        return reply::with_type(StatusCode::OK, "application/json", MockBody::aborted());
    }
    let config = &shared.config;
    let answer = Answer {
        model,
        seq,
        input_tokens: answer::input_tokens(body),
        plan: StreamPlan::from_headers(&parts.headers, config.sse_frames, config.sse_pace),
        cut,
    };
    match route {
        Route::OpenAiModels => openai::models(),
        Route::OpenAiChat => openai::chat(&answer, stream, probe.include_usage()),
        Route::OpenAiResponses => openai::responses(&answer, stream),
        Route::AnthropicMessages => anthropic::messages(&answer, stream),
        Route::AnthropicModels => anthropic::models(),
        Route::GeminiModels => gemini::models(),
        Route::GeminiGenerate { .. } => gemini::generate(&answer),
        Route::GeminiStream { .. } => gemini::stream(&answer, alt_sse(parts.uri.query())),
    }
}

/// A `200` without content in `family`'s format (see `Behaviour::EmptyReply`).
fn empty_reply(family: Family, stream: bool) -> Response<MockBody> {
    let (json, events): (Value, &'static str) = match family {
        Family::OpenAi => (
            json!({"id": "chatcmpl-empty", "object": "chat.completion", "choices": []}),
            "data: {\"id\":\"chatcmpl-empty\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
             data: [DONE]\n\n",
        ),
        Family::Anthropic => (
            json!({"id": "msg_empty", "type": "message", "role": "assistant", "content": []}),
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"content\":[]}}\n\n\
             event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ),
        Family::Gemini => (
            json!({"candidates": [], "promptFeedback": {"blockReason": "OTHER"}}),
            "data: {\"candidates\":[],\"promptFeedback\":{\"blockReason\":\"OTHER\"}}\r\n\r\n",
        ),
    };
    if stream {
        reply::event_stream(MockBody::full(events))
    } else {
        reply::json(StatusCode::OK, &json)
    }
}

fn alt_sse(query: Option<&str>) -> bool {
    query.is_some_and(|query| {
        form_urlencoded::parse(query.as_bytes()).any(|(name, value)| name == "alt" && value == "sse")
    })
}

fn has_param(query: Option<&str>, wanted: &str) -> bool {
    query.is_some_and(|query| form_urlencoded::parse(query.as_bytes()).any(|(name, _)| name == wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_routes() {
        let post = Method::POST;
        assert_eq!(
            Route::parse(&post, "/v1/chat/completions"),
            Some(Route::OpenAiChat)
        );
        assert_eq!(
            Route::parse(&post, "/v1beta/openai/chat/completions"),
            Some(Route::OpenAiChat)
        );
        assert_eq!(
            Route::parse(&post, "/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
            Some(Route::GeminiStream {
                model: "gemini-2.5-flash"
            })
        );
        assert_eq!(Route::parse(&post, "/v1beta/models/x:countTokens"), None);
        assert_eq!(Route::parse(&post, "/v1/models"), None);
        assert_eq!(
            Route::parse(&Method::GET, "/v1/models"),
            Some(Route::OpenAiModels)
        );
        assert_eq!(
            Route::parse(&Method::GET, "/v1beta/models"),
            Some(Route::GeminiModels)
        );
        assert_eq!(Route::parse(&post, "/nope"), None);
    }

    #[test]
    fn probes_body_fields() {
        let body = br#"{"model":"m\u0031","stream":true,"stream_options":{"include_usage":true},"x":[1]}"#;
        let probe: Probe<'_> = serde_json::from_slice(body).unwrap();
        assert_eq!(probe.model.as_deref(), Some("m1"));
        assert!(probe.streaming());
        assert!(probe.include_usage());
        let probe: Probe<'_> = serde_json::from_slice(br#"{"stream":"yes"}"#).unwrap();
        assert!(!probe.streaming());
    }
}
