//! The four upstream API formats (channels) as data.
//!
//! gpt-load supports `openai`, `openai-response`, `gemini` and `anthropic`. They differ in a
//! handful of facts, which [`ChannelKind`] answers so that no layer copies per-provider code:
//!
//! | | credential | stream when | model from | model list | validation request |
//! |---|---|---|---|---|---|
//! | `openai` | `Authorization: Bearer` | `Accept: text/event-stream`, `?stream=true` or body `"stream": true` | body `model` | `data` | `POST /v1/chat/completions` |
//! | `openai-response` | same | same | body `model` | `data` | `POST /v1/responses` |
//! | `gemini` | `?key=` (Bearer on `/v1beta/openai/…`) | path `:streamGenerateContent`, or as above | path `models/{m}:…`, else body | `models` (native) or `data` | `POST /v1beta/models/{m}:generateContent` |
//! | `anthropic` | `x-api-key` + `anthropic-version` | as openai | body `model` | `data` | `POST /v1/messages` |
//!
//! # Example
//!
//! ```
//! use gpt_load_tower::{channel::ChannelKind, secret::ApiKey};
//! use http::Request;
//!
//! let channel: ChannelKind = "gemini".parse().unwrap();
//! let mut req = Request::post("http://up/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse")
//!     .body(())
//!     .unwrap();
//! channel.inject_credential(&mut req, &ApiKey::new("AIza-upstream"));
//! assert_eq!(req.uri().query(), Some("alt=sse&key=AIza-upstream"));
//!
//! let facts = channel.inspect(req.uri(), req.headers(), b"{}");
//! assert_eq!(facts.model.as_deref(), Some("gemini-2.0-flash"));
//! assert!(facts.stream);
//! ```

use std::{fmt, str::FromStr};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, header};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{query, secret::ApiKey};

/// The Anthropic API version sent when the client did not choose one.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// One of the upstream API formats a group can speak.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// OpenAI chat completions and everything OpenAI-compatible.
    OpenAi,
    /// The OpenAI Responses API.
    OpenAiResponse,
    /// Google Gemini (native and its `/v1beta/openai` compatibility paths).
    Gemini,
    /// Anthropic Messages.
    Anthropic,
}

/// The facts a layer needs about a request body, extracted once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// The requested model (before any redirect).
    pub model: Option<String>,
    /// Whether the client asked for a streamed response.
    pub stream: bool,
    /// The most output tokens the request allows: `max_tokens`, `max_completion_tokens`,
    /// `max_output_tokens` (Responses) or Gemini's `generationConfig.maxOutputTokens`.
    pub max_output_tokens: Option<u64>,
    /// The body's length in bytes (a rough measure of the prompt).
    pub body_bytes: usize,
}

/// How an upstream lists its models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelListShape {
    /// `{"data": [{"id": …}]}` (OpenAI, Anthropic, Gemini's OpenAI compatibility).
    Data,
    /// `{"models": [{"name": "models/…"}]}` (Gemini native).
    GeminiModels,
}

/// A channel name that is not one of the four known ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownChannel(String);

impl fmt::Display for UnknownChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown channel type `{}` (expected openai, openai-response, gemini or anthropic)",
            self.0
        )
    }
}

impl std::error::Error for UnknownChannel {}

impl FromStr for ChannelKind {
    type Err = UnknownChannel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownChannel(s.to_owned()))
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a Gemini path is one of the OpenAI-compatible ones.
fn is_openai_compat_path(path: &str) -> bool {
    path.contains("v1beta/openai")
}

impl ChannelKind {
    /// Every channel, in gpt-load's order.
    pub const ALL: [ChannelKind; 4] = [Self::OpenAi, Self::OpenAiResponse, Self::Gemini, Self::Anthropic];

    /// The name used in configuration and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::OpenAiResponse => "openai-response",
            Self::Gemini => "gemini",
            Self::Anthropic => "anthropic",
        }
    }

    /// The upstream the console suggests for a new group of this channel.
    pub fn default_upstream(self) -> &'static str {
        match self {
            Self::OpenAi | Self::OpenAiResponse => "https://api.openai.com",
            Self::Gemini => "https://generativelanguage.googleapis.com",
            Self::Anthropic => "https://api.anthropic.com",
        }
    }

    /// The test model the console suggests for a new group of this channel.
    pub fn default_test_model(self) -> &'static str {
        match self {
            Self::OpenAi | Self::OpenAiResponse => "gpt-4.1-nano",
            Self::Gemini => "gemini-2.0-flash-lite",
            Self::Anthropic => "claude-3-haiku-20240307",
        }
    }

    /// Whether requests on `path` carry the model in the URL path (Gemini native).
    pub fn model_in_path(self, path: &str) -> bool {
        self == Self::Gemini && !is_openai_compat_path(path)
    }

    /// Writes the upstream credential where this channel expects it, replacing any value that
    /// is already there.
    pub fn inject_credential<B>(self, req: &mut Request<B>, key: &ApiKey) {
        let native_gemini = self.model_in_path(req.uri().path());
        let headers = req.headers_mut();
        match self {
            Self::Gemini if native_gemini => {
                let uri = query::set(req.uri(), "key", key.expose());
                *req.uri_mut() = uri;
            }
            Self::OpenAi | Self::OpenAiResponse | Self::Gemini => {
                if let Ok(mut value) = HeaderValue::try_from(format!("Bearer {}", key.expose())) {
                    value.set_sensitive(true);
                    headers.insert(header::AUTHORIZATION, value);
                }
            }
            Self::Anthropic => {
                if let Ok(mut value) = HeaderValue::try_from(key.expose()) {
                    value.set_sensitive(true);
                    headers.insert("x-api-key", value);
                }
                headers
                    .entry("anthropic-version")
                    .or_insert(HeaderValue::from_static(ANTHROPIC_VERSION));
            }
        }
    }

    /// Extracts the requested model and the stream flag from the URI, headers and body.
    pub fn inspect(self, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> RequestFacts {
        let path = uri.path();
        let probe = BodyProbe::parse(body);
        let max_output_tokens = probe.max_output_tokens();
        let model = if self.model_in_path(path) {
            gemini_path_model(path).map(str::to_owned).or(probe.model)
        } else {
            probe.model
        };
        let stream = probe.stream
            || accepts_event_stream(headers)
            || uri
                .query()
                .and_then(|q| query::get(q, "stream"))
                .is_some_and(|v| v == "true")
            || (self == Self::Gemini && path.ends_with(":streamGenerateContent"));
        RequestFacts {
            model,
            stream,
            max_output_tokens,
            body_bytes: body.len(),
        }
    }

    /// The model-list format of a `GET` on `path`, or `None` when it is not a model list.
    pub fn model_list_shape(self, method: &Method, path: &str) -> Option<ModelListShape> {
        if method != Method::GET {
            return None;
        }
        let path = path.trim_end_matches('/');
        if path.ends_with("/v1beta/openai/v1/models")
            || path.ends_with("/v1/models")
            || path.ends_with("/v1beta/openai/models")
        {
            Some(ModelListShape::Data)
        } else if path.ends_with("/v1beta/models") {
            Some(if self == Self::Gemini {
                ModelListShape::GeminiModels
            } else {
                ModelListShape::Data
            })
        } else {
            None
        }
    }

    /// The request that tests whether `key` works against `upstream`, as gpt-load sends it.
    ///
    /// `validation_endpoint` overrides the default path for every channel but Gemini, whose
    /// native endpoint embeds the test model.
    pub fn validation_request(
        self,
        upstream: &str,
        test_model: &str,
        validation_endpoint: Option<&str>,
        key: &ApiKey,
    ) -> Result<Request<Bytes>, http::Error> {
        let base = upstream.trim_end_matches('/');
        let endpoint = |default: &str| {
            let path = validation_endpoint
                .filter(|e| !e.trim().is_empty())
                .unwrap_or(default);
            if path.starts_with('/') {
                format!("{base}{path}")
            } else {
                format!("{base}/{path}")
            }
        };
        let (url, body) = match self {
            Self::OpenAi => (
                endpoint("/v1/chat/completions"),
                json!({"model": test_model, "messages": [{"role": "user", "content": "hi"}]}),
            ),
            Self::OpenAiResponse => (
                endpoint("/v1/responses"),
                json!({"model": test_model, "input": "hi"}),
            ),
            Self::Gemini => (
                format!("{base}/v1beta/models/{test_model}:generateContent"),
                json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
            ),
            Self::Anthropic => (
                endpoint("/v1/messages"),
                json!({"model": test_model, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}),
            ),
        };
        let mut req = Request::post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Bytes::from(body.to_string()))?;
        self.inject_credential(&mut req, key);
        Ok(req)
    }
}

impl ModelListShape {
    /// Merges the models a group's redirect rules offer into an upstream model list.
    ///
    /// Strict mode lists only `configured`; otherwise configured models missing upstream are
    /// appended. Gemini lists are merged only on their first page (`first_page`). Bodies that do
    /// not have the expected array are left alone.
    pub fn merge(self, list: &mut Value, configured: &[&str], strict: bool, first_page: bool) {
        let Some(object) = list.as_object_mut() else {
            return;
        };
        match self {
            Self::Data => {
                let Some(Value::Array(items)) = object.get_mut("data") else {
                    return;
                };
                let entry =
                    |id: &str| json!({"id": id, "object": "model", "created": 0, "owned_by": "system"});
                if strict {
                    *items = configured.iter().map(|id| entry(id)).collect();
                    return;
                }
                for id in configured {
                    if !items
                        .iter()
                        .any(|m| m.get("id").and_then(Value::as_str) == Some(id))
                    {
                        items.push(entry(id));
                    }
                }
            }
            Self::GeminiModels => {
                let entry = |id: &str| json!({"name": format!("models/{id}"), "displayName": id, "supportedGenerationMethods": ["generateContent"]});
                if strict {
                    object.insert(
                        "models".to_owned(),
                        configured.iter().map(|id| entry(id)).collect(),
                    );
                    object.remove("nextPageToken");
                    return;
                }
                if !first_page {
                    return;
                }
                let Some(Value::Array(items)) = object.get_mut("models") else {
                    return;
                };
                for id in configured {
                    let present = items.iter().any(|m| {
                        m.get("name")
                            .and_then(Value::as_str)
                            .is_some_and(|n| n.strip_prefix("models/").unwrap_or(n) == *id)
                    });
                    if !present {
                        items.push(entry(id));
                    }
                }
            }
        }
    }

    /// Keeps only the models of `list` for which `keep` holds (by id; Gemini's `models/` prefix
    /// is not part of it). Bodies without the expected array are left alone.
    ///
    /// ```
    /// use gpt_load_tower::channel::ModelListShape;
    /// use serde_json::json;
    ///
    /// let mut list = json!({"data": [{"id": "gpt-4o"}, {"id": "dall-e-3"}]});
    /// ModelListShape::Data.retain(&mut list, |id| id.starts_with("gpt-"));
    /// assert_eq!(list, json!({"data": [{"id": "gpt-4o"}]}));
    /// ```
    pub fn retain(self, list: &mut Value, keep: impl Fn(&str) -> bool) {
        let (field, prefix) = match self {
            Self::Data => ("data", ""),
            Self::GeminiModels => ("models", "models/"),
        };
        let key = if prefix.is_empty() { "id" } else { "name" };
        if let Some(Value::Array(items)) = list.get_mut(field) {
            items.retain(|item| {
                item.get(key)
                    .and_then(Value::as_str)
                    .is_none_or(|name| keep(name.strip_prefix(prefix).unwrap_or(name)))
            });
        }
    }
}

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.contains("text/event-stream")))
}

/// The model a request asks for, as far as per-model quotas go: the path's model on Gemini's
/// native routes, else the body's (from [`RequestFacts`], when a layer above parsed it).
pub(crate) fn quota_model<B>(req: &http::Request<B>, channel: ChannelKind) -> Option<&str> {
    let path = req.uri().path();
    if channel.model_in_path(path) {
        gemini_path_model(path)
    } else {
        req.extensions().get::<RequestFacts>()?.model.as_deref()
    }
}

/// The model segment of a Gemini native path: `…/models/{model}:{method}`.
pub(crate) fn gemini_path_model(path: &str) -> Option<&str> {
    let (_, after) = path.split_once("/models/")?;
    let segment = after.split('/').next()?;
    let model = segment.split_once(':').map_or(segment, |(m, _)| m);
    (!model.is_empty()).then_some(model)
}

/// The body fields the layers care about; everything else is skipped while parsing.
#[derive(Default, Deserialize)]
struct BodyProbe {
    #[serde(default, deserialize_with = "string_or_none")]
    model: Option<String>,
    #[serde(default, deserialize_with = "true_or_false")]
    stream: bool,
    #[serde(default, deserialize_with = "count_or_none")]
    max_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count_or_none")]
    max_completion_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count_or_none")]
    max_output_tokens: Option<u64>,
    #[serde(default, rename = "generationConfig")]
    generation_config: Option<GenerationProbe>,
}

/// Gemini's `generationConfig`, for its output cap.
#[derive(Default, Deserialize)]
struct GenerationProbe {
    #[serde(default, rename = "maxOutputTokens", deserialize_with = "count_or_none")]
    max_output_tokens: Option<u64>,
}

impl BodyProbe {
    fn max_output_tokens(&self) -> Option<u64> {
        self.max_completion_tokens
            .or(self.max_tokens)
            .or(self.max_output_tokens)
            .or(self.generation_config.as_ref().and_then(|g| g.max_output_tokens))
    }

    fn parse(body: &[u8]) -> Self {
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Self::default();
        }
        serde_json::from_slice(body).unwrap_or_default()
    }
}

fn string_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        _ => None,
    })
}

fn count_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(Value::deserialize(d)?.as_u64())
}

fn true_or_false<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(matches!(Value::deserialize(d)?, Value::Bool(true)))
}

/// Shallow-merges `overrides` into a JSON object body.
pub(crate) fn merge_object(target: &mut Map<String, Value>, overrides: &Map<String, Value>) {
    for (k, v) in overrides {
        target.insert(k.clone(), v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str) -> Request<()> {
        Request::post(uri).body(()).unwrap()
    }

    #[test]
    fn parses_and_prints_names() {
        for c in ChannelKind::ALL {
            assert_eq!(c.as_str().parse::<ChannelKind>().unwrap(), c);
        }
        let err = "azure".parse::<ChannelKind>().unwrap_err();
        assert!(err.to_string().contains("azure"));
    }

    #[test]
    fn injects_credentials_per_channel() {
        let key = ApiKey::new("k-123");
        let mut r = req("http://u/v1/chat/completions");
        ChannelKind::OpenAi.inject_credential(&mut r, &key);
        assert_eq!(r.headers()["authorization"], "Bearer k-123");

        let mut r = req("http://u/v1/messages");
        r.headers_mut()
            .insert("anthropic-version", HeaderValue::from_static("2024-01-01"));
        ChannelKind::Anthropic.inject_credential(&mut r, &key);
        assert_eq!(r.headers()["x-api-key"], "k-123");
        assert_eq!(r.headers()["anthropic-version"], "2024-01-01");
        let mut r = req("http://u/v1/messages");
        ChannelKind::Anthropic.inject_credential(&mut r, &key);
        assert_eq!(r.headers()["anthropic-version"], ANTHROPIC_VERSION);

        let mut r = req("http://u/v1beta/models/m:generateContent");
        ChannelKind::Gemini.inject_credential(&mut r, &key);
        assert_eq!(r.uri().query(), Some("key=k-123"));
        assert!(r.headers().get("authorization").is_none());

        let mut r = req("http://u/v1beta/openai/chat/completions");
        ChannelKind::Gemini.inject_credential(&mut r, &key);
        assert_eq!(r.headers()["authorization"], "Bearer k-123");
        assert_eq!(r.uri().query(), None);
    }

    #[test]
    fn inspects_model_and_stream() {
        let h = HeaderMap::new();
        let uri: Uri = "/v1/chat/completions".parse().unwrap();
        let f = ChannelKind::OpenAi.inspect(&uri, &h, br#"{"model":"gpt-4o","stream":true,"messages":[]}"#);
        assert_eq!(
            f,
            RequestFacts {
                model: Some("gpt-4o".into()),
                stream: true,
                max_output_tokens: None,
                body_bytes: 46,
            }
        );
        let f = ChannelKind::OpenAi.inspect(&uri, &h, br#"{"model":7,"stream":"yes"}"#);
        assert_eq!(
            f,
            RequestFacts {
                model: None,
                stream: false,
                max_output_tokens: None,
                body_bytes: 26,
            }
        );
        let f = ChannelKind::OpenAi.inspect(&uri, &h, b"not json");
        assert_eq!(
            f,
            RequestFacts {
                body_bytes: 8,
                ..RequestFacts::default()
            }
        );
        // The output cap, in each API's spelling (the newer OpenAI field first).
        for (body, cap) in [
            (r#"{"max_tokens":300}"#, Some(300)),
            (r#"{"max_tokens":300,"max_completion_tokens":50}"#, Some(50)),
            (r#"{"max_output_tokens":70}"#, Some(70)),
            (r#"{"generationConfig":{"maxOutputTokens":90}}"#, Some(90)),
            (r#"{"max_tokens":"lots"}"#, None),
        ] {
            let f = ChannelKind::OpenAi.inspect(&uri, &h, body.as_bytes());
            assert_eq!(f.max_output_tokens, cap, "{body}");
        }

        let q: Uri = "/v1/chat/completions?stream=true".parse().unwrap();
        assert!(ChannelKind::Anthropic.inspect(&q, &h, b"").stream);
        let mut accept = HeaderMap::new();
        accept.insert(header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        assert!(ChannelKind::OpenAiResponse.inspect(&uri, &accept, b"").stream);

        let g: Uri = "/proxy/g/v1beta/models/gemini-pro:streamGenerateContent?alt=sse"
            .parse()
            .unwrap();
        let f = ChannelKind::Gemini.inspect(&g, &h, b"{}");
        assert_eq!(
            f,
            RequestFacts {
                model: Some("gemini-pro".into()),
                stream: true,
                max_output_tokens: None,
                body_bytes: 2,
            }
        );
        let compat: Uri = "/v1beta/openai/chat/completions".parse().unwrap();
        let f = ChannelKind::Gemini.inspect(&compat, &h, br#"{"model":"gemini-x"}"#);
        assert_eq!(f.model.as_deref(), Some("gemini-x"));
    }

    #[test]
    fn detects_model_list_paths() {
        let get = Method::GET;
        assert_eq!(
            ChannelKind::OpenAi.model_list_shape(&get, "/proxy/a/v1/models"),
            Some(ModelListShape::Data)
        );
        assert_eq!(
            ChannelKind::Gemini.model_list_shape(&get, "/proxy/a/v1beta/models"),
            Some(ModelListShape::GeminiModels)
        );
        assert_eq!(
            ChannelKind::Gemini.model_list_shape(&get, "/proxy/a/v1beta/openai/v1/models"),
            Some(ModelListShape::Data)
        );
        assert_eq!(
            ChannelKind::OpenAi.model_list_shape(&Method::POST, "/v1/models"),
            None
        );
        assert_eq!(
            ChannelKind::OpenAi.model_list_shape(&get, "/v1/models/gpt-4o"),
            None
        );
    }

    #[test]
    fn merges_model_lists() {
        let mut list = json!({"data": [{"id": "a"}]});
        ModelListShape::Data.merge(&mut list, &["a", "b"], false, true);
        let ids: Vec<_> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        ModelListShape::Data.merge(&mut list, &[], true, true);
        assert_eq!(list["data"], json!([]));

        let mut gem = json!({"models": [{"name": "models/x"}], "nextPageToken": "t"});
        ModelListShape::GeminiModels.merge(&mut gem, &["x", "y"], false, true);
        assert_eq!(gem["models"].as_array().unwrap().len(), 2);
        ModelListShape::GeminiModels.merge(&mut gem, &["z"], false, false);
        assert_eq!(gem["models"].as_array().unwrap().len(), 2);
        ModelListShape::GeminiModels.merge(&mut gem, &["z"], true, true);
        assert_eq!(gem["models"][0]["name"], "models/z");
        assert!(gem.get("nextPageToken").is_none());
    }

    #[test]
    fn builds_validation_requests() {
        let key = ApiKey::new("k");
        let r = ChannelKind::OpenAi
            .validation_request("http://u/", "m", None, &key)
            .unwrap();
        assert_eq!(r.uri(), "http://u/v1/chat/completions");
        assert_eq!(r.headers()["authorization"], "Bearer k");
        let body: Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(body["model"], "m");

        let r = ChannelKind::OpenAiResponse
            .validation_request("http://u", "m", Some("/custom?x=1"), &key)
            .unwrap();
        assert_eq!(r.uri(), "http://u/custom?x=1");

        let r = ChannelKind::Gemini
            .validation_request("http://u", "gm", Some("/ignored"), &key)
            .unwrap();
        assert_eq!(r.uri(), "http://u/v1beta/models/gm:generateContent?key=k");

        let r = ChannelKind::Anthropic
            .validation_request("http://u", "c", None, &key)
            .unwrap();
        assert_eq!(r.headers()["x-api-key"], "k");
        let body: Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(body["max_tokens"], 100);
    }

    #[test]
    fn finds_gemini_path_model() {
        assert_eq!(
            gemini_path_model("/v1beta/models/gemini-pro:generateContent"),
            Some("gemini-pro")
        );
        assert_eq!(gemini_path_model("/v1beta/models/gemini-pro"), Some("gemini-pro"));
        assert_eq!(gemini_path_model("/v1beta/models"), None);
        assert_eq!(gemini_path_model("/v1beta/tunedModels/x"), None);
    }
}
