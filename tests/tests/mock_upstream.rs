//! Integration tests of the mock upstream over real HTTP connections.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gpt_load_e2e::{Behaviour, MockConfig, MockUpstream};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// Upper bound for any single exchange, so a bug fails instead of hanging.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(20);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2c_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A response read frame by frame.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    frames: Vec<Bytes>,
    error: Option<hyper::Error>,
}

impl Reply {
    fn text(&self) -> String {
        self.frames
            .iter()
            .map(|frame| String::from_utf8_lossy(frame))
            .collect()
    }

    fn json(&self) -> Value {
        assert!(self.error.is_none(), "body error: {:?}", self.error);
        serde_json::from_str(&self.text()).expect("JSON body")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Server-sent events as (event name, data) pairs.
    fn events(&self) -> Vec<(Option<String>, String)> {
        self.text()
            .split("\n\n")
            .filter(|block| !block.is_empty())
            .map(|block| {
                let mut name = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event: ") {
                        name = Some(value.to_owned());
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data.push_str(value);
                    }
                }
                (name, data)
            })
            .collect()
    }

    /// Asserts a complete event stream in which no body frame carries more
    /// than one event, and returns the events.
    fn separate_events(&self) -> Vec<(Option<String>, String)> {
        assert_eq!(self.status, StatusCode::OK);
        assert!(self.error.is_none(), "body error: {:?}", self.error);
        assert_eq!(self.header("content-type"), Some("text/event-stream"));
        assert_eq!(self.header("cache-control"), Some("no-cache"));
        for frame in &self.frames {
            let text = String::from_utf8_lossy(frame);
            assert!(
                text.matches("\n\n").count() <= 1,
                "frame carries several events: {text:?}"
            );
        }
        let events = self.events();
        assert!(self.frames.len() >= events.len());
        events
    }
}

async fn send(client: &HttpClient, request: Request<Full<Bytes>>) -> Reply {
    tokio::time::timeout(EXCHANGE_TIMEOUT, async {
        let response = client.request(request).await.expect("response head");
        let (parts, mut body) = response.into_parts();
        let mut frames = Vec::new();
        let mut error = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        frames.push(data);
                    }
                }
                Err(err) => {
                    error = Some(err);
                    break;
                }
            }
        }
        Reply {
            status: parts.status,
            headers: parts.headers,
            frames,
            error,
        }
    })
    .await
    .expect("exchange finished in time")
}

fn request(method: Method, url: &str, headers: &[(&str, &str)], body: &Value) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    builder
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("valid request")
}

async fn post(mock: &MockUpstream, path: &str, headers: &[(&str, &str)], body: Value) -> Reply {
    let url = format!("{}{path}", mock.url());
    send(&client(), request(Method::POST, &url, headers, &body)).await
}

async fn get(mock: &MockUpstream, path: &str, headers: &[(&str, &str)]) -> Reply {
    let url = format!("{}{path}", mock.url());
    send(&client(), request(Method::GET, &url, headers, &Value::Null)).await
}

fn data_json(data: &str) -> Value {
    serde_json::from_str(data).expect("event data is JSON")
}

const CHAT: &str = "/v1/chat/completions";
const BEARER: (&str, &str) = ("authorization", "Bearer sk-test");
const STREAMED_TEXT: &str = "hello from gpt-4o #1 #2 #3 #4";

fn chat_body(stream: bool) -> Value {
    json!({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

fn gemini_path(model: &str, action: &str) -> String {
    format!("/v1beta/models/{model}:{action}")
}

// ---------------------------------------------------------------- OpenAI

#[tokio::test]
async fn openai_chat_non_stream() {
    let mock = MockUpstream::start().await.unwrap();
    let reply = post(&mock, CHAT, &[BEARER], chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o");
    assert_eq!(body["choices"][0]["message"]["content"], "hello from gpt-4o");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn openai_chat_stream_sends_separate_frames_and_done() {
    let mock = MockUpstream::start().await.unwrap();
    let reply = post(&mock, CHAT, &[BEARER], chat_body(true)).await;
    let events = reply.separate_events();
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, data)| data_json(data))
        .collect();
    assert_eq!(chunks.len(), 6, "5 text chunks and a finish chunk");
    assert!(
        chunks
            .iter()
            .all(|chunk| chunk["object"] == "chat.completion.chunk")
    );
    let text: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, STREAMED_TEXT);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn openai_chat_stream_reports_usage_when_asked() {
    let mock = MockUpstream::start().await.unwrap();
    let mut body = chat_body(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = post(&mock, CHAT, &[BEARER], body).await.separate_events();
    let usage = data_json(&events[events.len() - 2].1);
    assert_eq!(usage["usage"]["completion_tokens"], 5);
}

#[tokio::test]
async fn openai_models_lists_ids() {
    let mock = MockUpstream::start().await.unwrap();
    let body = get(&mock, "/v1/models", &[BEARER]).await.json();
    assert_eq!(body["object"], "list");
    let data = body["data"].as_array().unwrap();
    assert!(data.len() >= 2);
    assert!(data.iter().all(|model| model["object"] == "model"
        && model["id"].is_string()
        && model["created"].is_u64()
        && model["owned_by"].is_string()));
}

#[tokio::test]
async fn openai_responses_non_stream() {
    let mock = MockUpstream::start().await.unwrap();
    let body = json!({"model": "gpt-4.1", "input": "hi"});
    let body = post(&mock, "/v1/responses", &[BEARER], body).await.json();
    assert_eq!(body["object"], "response");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["model"], "gpt-4.1");
    let item = &body["output"][0];
    assert_eq!(item["type"], "message");
    assert_eq!(item["role"], "assistant");
    assert_eq!(item["content"][0]["type"], "output_text");
    assert_eq!(item["content"][0]["text"], "hello from gpt-4.1");
    assert_eq!(item["content"][0]["annotations"], json!([]));
    assert!(body["usage"]["total_tokens"].is_u64());
}

#[tokio::test]
async fn openai_responses_stream_numbers_typed_events() {
    let mock = MockUpstream::start().await.unwrap();
    let body = json!({"model": "gpt-4o", "input": "hi", "stream": true});
    let events = post(&mock, "/v1/responses", &[BEARER], body)
        .await
        .separate_events();
    let mut text = String::new();
    for (index, (name, data)) in events.iter().enumerate() {
        let data = data_json(data);
        let name = name.as_deref().expect("every event is named");
        assert_eq!(data["type"], name);
        assert_eq!(data["sequence_number"], index);
        if name == "response.output_text.delta" {
            text.push_str(data["delta"].as_str().unwrap());
        }
    }
    assert_eq!(events[0].0.as_deref(), Some("response.created"));
    let (last_name, last_data) = events.last().unwrap();
    assert_eq!(last_name.as_deref(), Some("response.completed"));
    let completed = data_json(last_data);
    assert_eq!(completed["response"]["status"], "completed");
    assert_eq!(
        completed["response"]["output"][0]["content"][0]["text"],
        STREAMED_TEXT
    );
    assert_eq!(text, STREAMED_TEXT);
}

// ------------------------------------------------------------- Anthropic

#[tokio::test]
async fn anthropic_messages_non_stream() {
    let mock = MockUpstream::start().await.unwrap();
    let body = json!({"model": "claude-sonnet-4", "max_tokens": 16, "messages": []});
    let body = post(&mock, "/v1/messages", &[("x-api-key", "sk-ant")], body)
        .await
        .json();
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-sonnet-4");
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "hello from claude-sonnet-4"}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert!(body["stop_sequence"].is_null());
    assert!(body["usage"]["input_tokens"].is_u64());
    assert!(body["usage"]["output_tokens"].is_u64());
}

#[tokio::test]
async fn anthropic_messages_stream_follows_event_protocol() {
    let mock = MockUpstream::start().await.unwrap();
    let body = json!({"model": "claude-x", "max_tokens": 16, "messages": [], "stream": true});
    let reply = post(&mock, "/v1/messages", &[("x-api-key", "sk-ant")], body).await;
    let events = reply.separate_events();
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_deref().unwrap()).collect();
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(["content_block_delta"; 5]);
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    let mut text = String::new();
    for (name, data) in &events {
        let data = data_json(data);
        assert_eq!(data["type"], name.as_deref().unwrap());
        if let Some(delta) = data["delta"]["text"].as_str() {
            assert_eq!(data["delta"]["type"], "text_delta");
            text.push_str(delta);
        }
    }
    assert_eq!(text, "hello from claude-x #1 #2 #3 #4");
    assert_eq!(data_json(&events[0].1)["message"]["model"], "claude-x");
}

// ---------------------------------------------------------------- Gemini

#[tokio::test]
async fn gemini_generate_content() {
    let mock = MockUpstream::start().await.unwrap();
    let path = gemini_path("gemini-2.5-flash", "generateContent");
    let body = json!({"contents": [{"parts": [{"text": "hi"}]}]});
    let body = post(&mock, &path, &[("x-goog-api-key", "g-key")], body)
        .await
        .json();
    let candidate = &body["candidates"][0];
    assert_eq!(candidate["content"]["role"], "model");
    assert_eq!(
        candidate["content"]["parts"][0]["text"],
        "hello from gemini-2.5-flash"
    );
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(candidate["index"], 0);
    assert!(body["usageMetadata"]["totalTokenCount"].is_u64());
    assert_eq!(body["modelVersion"], "gemini-2.5-flash");
}

#[tokio::test]
async fn gemini_stream_sse() {
    let mock = MockUpstream::start().await.unwrap();
    let path = gemini_path("gemini-2.5-pro", "streamGenerateContent") + "?alt=sse";
    let reply = post(&mock, &path, &[("x-goog-api-key", "g-key")], json!({})).await;
    let events = reply.separate_events();
    assert_eq!(events.len(), 5);
    let chunks: Vec<Value> = events.iter().map(|(_, data)| data_json(data)).collect();
    let text: String = chunks
        .iter()
        .map(|chunk| {
            chunk["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(text, "hello from gemini-2.5-pro #1 #2 #3 #4");
    assert_eq!(chunks[4]["candidates"][0]["finishReason"], "STOP");
}

#[tokio::test]
async fn gemini_stream_without_alt_is_a_json_array() {
    let mock = MockUpstream::start().await.unwrap();
    let path = gemini_path("gemini-2.0-flash", "streamGenerateContent");
    let reply = post(&mock, &path, &[("x-goog-api-key", "g-key")], json!({})).await;
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.frames.len() >= 6);
    let array = reply.json();
    assert_eq!(array.as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn gemini_models_and_openai_compatible_chat() {
    let mock = MockUpstream::start().await.unwrap();
    let models = get(&mock, "/v1beta/models?key=g-key", &[]).await.json();
    let models = models["models"].as_array().unwrap();
    assert!(!models.is_empty());
    for model in models {
        assert!(model["name"].as_str().unwrap().starts_with("models/gemini-"));
        assert!(model["displayName"].is_string());
        let methods = model["supportedGenerationMethods"].as_array().unwrap();
        assert!(methods.contains(&json!("generateContent")));
    }
    let body = json!({"model": "gemini-2.5-flash", "stream": false});
    let chat = post(
        &mock,
        "/v1beta/openai/chat/completions",
        &[("authorization", "Bearer g")],
        body,
    )
    .await
    .json();
    assert_eq!(
        chat["choices"][0]["message"]["content"],
        "hello from gemini-2.5-flash"
    );
    let body = json!({"model": "gemini-2.5-flash", "stream": true});
    let events = post(
        &mock,
        "/v1beta/openai/chat/completions",
        &[("authorization", "Bearer g")],
        body,
    )
    .await
    .separate_events();
    assert_eq!(events.last().unwrap().1, "[DONE]");
}

// ------------------------------------------------------- Routing, errors

#[tokio::test]
async fn unknown_path_is_openai_404() {
    let mock = MockUpstream::start().await.unwrap();
    let reply = post(&mock, "/v2/unknown", &[BEARER], json!({})).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v2/unknown")
    );
}

#[tokio::test]
async fn credentials_are_read_from_every_carrier() {
    let mock = MockUpstream::start().await.unwrap();
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Headers<'_>, &str, &str); 4] = [
        (
            &[("authorization", "Bearer k-bearer"), ("x-api-key", "other")],
            "",
            "k-bearer",
        ),
        (
            &[("x-api-key", "k-anthropic"), ("x-goog-api-key", "other")],
            "",
            "k-anthropic",
        ),
        (&[("x-goog-api-key", "k-goog")], "?key=other", "k-goog"),
        (&[], "?key=k-query", "k-query"),
    ];
    for (headers, query, key) in cases {
        let reply = post(&mock, &format!("{CHAT}{query}"), headers, chat_body(false)).await;
        assert_eq!(reply.status, StatusCode::OK, "carrier of {key}");
        let recorded = mock.received().pop().unwrap();
        assert_eq!(recorded.credential.as_deref(), Some(key));
    }
    let counts = mock.requests_by_key();
    assert_eq!(counts.len(), 4);
    assert!(counts.values().all(|count| *count == 1));
}

#[tokio::test]
async fn missing_credential_is_native_401() {
    let mock = MockUpstream::start().await.unwrap();
    let openai = post(&mock, CHAT, &[], chat_body(false)).await;
    assert_eq!(openai.status, StatusCode::UNAUTHORIZED);
    let error = &openai.json()["error"];
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["code"], "invalid_api_key");
    assert!(error["message"].is_string());

    let anthropic = post(&mock, "/v1/messages", &[], json!({"model": "c"})).await;
    assert_eq!(anthropic.status, StatusCode::UNAUTHORIZED);
    let body = anthropic.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert!(body["error"]["message"].is_string());

    let gemini = post(&mock, &gemini_path("g", "generateContent"), &[], json!({})).await;
    assert_eq!(gemini.status, StatusCode::UNAUTHORIZED);
    let error = &gemini.json()["error"];
    assert_eq!(error["code"], 401);
    assert_eq!(error["status"], "UNAUTHENTICATED");
    assert!(error["message"].is_string());

    assert_eq!(mock.total_requests(), 3);
    assert!(mock.requests_by_key().is_empty());
}

// ------------------------------------------------------ Scripted behaviour

#[tokio::test]
async fn unauthorized_message_contains_the_key_in_every_format() {
    let mock = MockUpstream::start().await.unwrap();
    let key = "sk-secret-0123456789";
    mock.script(key, Behaviour::Unauthorized);
    let openai = post(
        &mock,
        CHAT,
        &[("authorization", &format!("Bearer {key}"))],
        chat_body(false),
    )
    .await;
    assert_eq!(openai.status, StatusCode::UNAUTHORIZED);
    let message = openai.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains(key), "{message}");

    let anthropic = post(&mock, "/v1/messages", &[("x-api-key", key)], json!({})).await;
    assert_eq!(anthropic.status, StatusCode::UNAUTHORIZED);
    let body = anthropic.json();
    assert_eq!(body["error"]["type"], "authentication_error");
    assert!(body["error"]["message"].as_str().unwrap().contains(key));

    let path = format!("{}?key={key}", gemini_path("g", "generateContent"));
    let gemini = post(&mock, &path, &[], json!({})).await;
    assert_eq!(gemini.status, StatusCode::UNAUTHORIZED);
    let error = &gemini.json()["error"];
    assert_eq!(error["status"], "UNAUTHENTICATED");
    assert!(error["message"].as_str().unwrap().contains(key));
}

#[tokio::test]
async fn rate_limited_sets_retry_after() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k",
        Behaviour::RateLimited {
            retry_after: Duration::from_millis(1500),
        },
    );
    let reply = post(&mock, CHAT, &[("authorization", "Bearer k")], chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.header("retry-after"), Some("2"));
    assert_eq!(reply.json()["error"]["code"], "rate_limit_exceeded");

    let anthropic = post(&mock, "/v1/messages", &[("x-api-key", "k")], json!({})).await;
    assert_eq!(anthropic.json()["error"]["type"], "rate_limit_error");
    let gemini = post(
        &mock,
        &gemini_path("g", "generateContent"),
        &[("x-goog-api-key", "k")],
        json!({}),
    )
    .await;
    assert_eq!(gemini.json()["error"]["status"], "RESOURCE_EXHAUSTED");
}

#[tokio::test]
async fn server_error_status_and_quota() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("boom", Behaviour::ServerError);
    mock.script("busy", Behaviour::Status(503));
    mock.script("broke", Behaviour::QuotaExhausted);
    let boom = post(&mock, CHAT, &[("authorization", "Bearer boom")], chat_body(false)).await;
    assert_eq!(boom.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(boom.json()["error"]["type"], "server_error");

    let busy = post(&mock, "/v1/messages", &[("x-api-key", "busy")], json!({})).await;
    assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.json()["type"], "error");

    let path = gemini_path("g", "generateContent");
    let broke = post(&mock, &path, &[("x-goog-api-key", "broke")], json!({})).await;
    assert_eq!(broke.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(broke.header("retry-after").is_none());
    let error = &broke.json()["error"];
    assert_eq!(
        error["message"],
        "Resource has been exhausted (e.g. check quota)."
    );
    assert_eq!(error["code"], 429);
}

#[tokio::test]
async fn slow_first_byte_delays_the_head() {
    let mock = MockUpstream::start().await.unwrap();
    let delay = Duration::from_millis(150);
    mock.script("slow", Behaviour::SlowFirstByte(delay));
    let started = Instant::now();
    let reply = post(&mock, CHAT, &[("authorization", "Bearer slow")], chat_body(false)).await;
    assert!(started.elapsed() >= delay);
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        "hello from gpt-4o"
    );
}

#[tokio::test]
async fn disconnect_mid_stream_truncates_after_n_frames() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("cut", Behaviour::DisconnectMidStream { after_frames: 3 });
    let headers = [("authorization", "Bearer cut")];
    let reply = post(&mock, CHAT, &headers, chat_body(true)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.error.is_some(), "stream must end in an error");
    let events = reply.events();
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|(_, data)| data != "[DONE]"));

    let body = json!({"model": "c", "stream": true});
    let reply = post(&mock, "/v1/messages", &[("x-api-key", "cut")], body).await;
    assert!(reply.error.is_some());
    let names: Vec<String> = reply.events().into_iter().filter_map(|(name, _)| name).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
        ]
    );

    let reply = post(&mock, CHAT, &headers, chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.error.is_some(), "non-stream body must be aborted");
}

#[tokio::test]
async fn naming_convention_drives_behaviour_without_scripts() {
    let mock = MockUpstream::start().await.unwrap();
    let auth = |key: &str| format!("Bearer {key}");
    let status_of =
        async |key: &str| post(&mock, CHAT, &[("authorization", &auth(key))], chat_body(false)).await;
    let unauthorized = status_of("mock-401-a").await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
    assert!(unauthorized.text().contains("mock-401-a"));
    let limited = status_of("mock-429-a").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(
        status_of("mock-500-a").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let quota = status_of("mock-quota-a").await;
    assert_eq!(quota.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(quota.text().contains("Resource has been exhausted"));
    let started = Instant::now();
    assert_eq!(status_of("mock-slow-a").await.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(status_of("anything-else").await.status, StatusCode::OK);

    let cut = post(
        &mock,
        CHAT,
        &[("authorization", "Bearer mock-cut-a")],
        chat_body(true),
    )
    .await;
    assert!(cut.error.is_some());
    assert_eq!(cut.events().len(), 2);

    mock.script("mock-401-b", Behaviour::Valid);
    assert_eq!(status_of("mock-401-b").await.status, StatusCode::OK);
    mock.clear_scripts();
    assert_eq!(status_of("mock-401-b").await.status, StatusCode::UNAUTHORIZED);
}

// ---------------------------------------------------------- Stream shape

#[tokio::test]
async fn frame_count_and_pace_follow_config_and_headers() {
    let config = MockConfig::default().with_sse_frames(2);
    let mock = MockUpstream::start_with(config).await.unwrap();
    let events = post(&mock, CHAT, &[BEARER], chat_body(true))
        .await
        .separate_events();
    assert_eq!(events.len(), 2 + 2, "2 text chunks, finish chunk, [DONE]");

    let pace = Duration::from_millis(20);
    let started = Instant::now();
    let headers = [BEARER, ("x-mock-frames", "4"), ("x-mock-pace-ms", "20")];
    let events = post(&mock, CHAT, &headers, chat_body(true))
        .await
        .separate_events();
    assert_eq!(events.len(), 4 + 2);
    assert!(started.elapsed() >= pace * 3, "three gaps between four frames");
}

#[tokio::test]
async fn h2c_streams_separate_frames() {
    let mock = MockUpstream::start().await.unwrap();
    let url = format!("{}{CHAT}", mock.url());
    let request = request(Method::POST, &url, &[BEARER], &chat_body(true));
    let reply = send(&h2c_client(), request).await;
    let events = reply.separate_events();
    assert_eq!(events.len(), 7);
    assert_eq!(events.last().unwrap().1, "[DONE]");
}

// ------------------------------------------------------ Recording, control

#[tokio::test]
async fn recording_and_counters() {
    let mock = MockUpstream::start().await.unwrap();
    let body = chat_body(false);
    post(
        &mock,
        &format!("{CHAT}?trace=1"),
        &[("authorization", "Bearer a"), ("x-extra", "yes")],
        body.clone(),
    )
    .await;
    post(&mock, CHAT, &[("authorization", "Bearer a")], body.clone()).await;
    post(&mock, CHAT, &[("x-api-key", "b")], body.clone()).await;
    get(&mock, "/v1/models", &[]).await;

    let received = mock.received();
    assert_eq!(received.len(), 4);
    let first = &received[0];
    assert_eq!(first.method, Method::POST);
    assert_eq!(first.path, CHAT);
    assert_eq!(first.query.as_deref(), Some("trace=1"));
    assert_eq!(first.headers["x-extra"], "yes");
    assert_eq!(first.credential.as_deref(), Some("a"));
    assert_eq!(serde_json::from_slice::<Value>(&first.body).unwrap(), body);
    assert_eq!(received[3].credential, None);
    assert_eq!(mock.total_requests(), 4);
    let by_key = mock.requests_by_key();
    assert_eq!(by_key.get("a"), Some(&2));
    assert_eq!(by_key.get("b"), Some(&1));

    mock.clear_received();
    assert!(mock.received().is_empty());
    assert_eq!(mock.total_requests(), 0);
    assert!(mock.requests_by_key().is_empty());
}

#[tokio::test]
async fn zero_capacity_keeps_only_counters() {
    let mock = MockUpstream::start_with(MockConfig::default().with_record_capacity(0))
        .await
        .unwrap();
    post(&mock, CHAT, &[BEARER], chat_body(false)).await;
    assert!(mock.received().is_empty());
    assert_eq!(mock.total_requests(), 1);
    assert_eq!(mock.requests_by_key().get("sk-test"), Some(&1));
}

#[tokio::test]
async fn control_endpoints() {
    let mock = MockUpstream::start().await.unwrap();
    post(
        &mock,
        &format!("{CHAT}?x=1"),
        &[("authorization", "Bearer k1"), ("x-extra", "yes")],
        chat_body(false),
    )
    .await;

    let requests = get(&mock, "/__mock/requests", &[]).await.json();
    let requests = requests.as_array().unwrap();
    assert_eq!(requests.len(), 1);
    let recorded = &requests[0];
    assert_eq!(recorded["method"], "POST");
    assert_eq!(recorded["path"], CHAT);
    assert_eq!(recorded["query"], "x=1");
    assert_eq!(recorded["credential"], "k1");
    assert_eq!(recorded["headers"]["x-extra"], "yes");
    assert!(recorded["body"].as_str().unwrap().contains("gpt-4o"));

    let stats = get(&mock, "/__mock/stats", &[]).await.json();
    assert_eq!(stats, json!({"total": 1, "by_key": {"k1": 1}}));

    let script = json!({"key": "k1", "behaviour": "status", "status": 503});
    assert_eq!(
        post(&mock, "/__mock/script", &[], script).await.status,
        StatusCode::NO_CONTENT
    );
    let reply = post(&mock, CHAT, &[("authorization", "Bearer k1")], chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);

    let script = json!({"key": "k2", "behaviour": "rate_limited", "retry_after_secs": 7});
    post(&mock, "/__mock/script", &[], script).await;
    let reply = post(&mock, CHAT, &[("authorization", "Bearer k2")], chat_body(false)).await;
    assert_eq!(reply.header("retry-after"), Some("7"));

    let bad = json!({"key": "k3", "behaviour": "nonsense"});
    assert_eq!(
        post(&mock, "/__mock/script", &[], bad).await.status,
        StatusCode::BAD_REQUEST
    );

    let url = format!("{}/__mock/script", mock.url());
    let reply = send(&client(), request(Method::DELETE, &url, &[], &Value::Null)).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = post(&mock, CHAT, &[("authorization", "Bearer k1")], chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::OK);

    assert_eq!(mock.total_requests(), 4, "control requests are not recorded");
    let url = format!("{}/__mock/requests", mock.url());
    let reply = send(&client(), request(Method::DELETE, &url, &[], &Value::Null)).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        get(&mock, "/__mock/stats", &[]).await.json(),
        json!({"total": 0, "by_key": {}})
    );
}

// -------------------------------------------------------------- Lifecycle

/// Polls until connecting to `addr` is refused.
async fn wait_until_refused(addr: std::net::SocketAddr) {
    tokio::time::timeout(EXCHANGE_TIMEOUT, async {
        loop {
            match tokio::net::TcpStream::connect(addr).await {
                Err(err) if err.kind() == ErrorKind::ConnectionRefused => return,
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await
    .expect("server stopped accepting connections");
}

#[tokio::test]
async fn drop_stops_the_server() {
    let mock = MockUpstream::start().await.unwrap();
    let addr = mock.addr();
    assert_eq!(get(&mock, "/v1/models", &[BEARER]).await.status, StatusCode::OK);
    drop(mock);
    wait_until_refused(addr).await;
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let mock = MockUpstream::start().await.unwrap();
    let addr = mock.addr();
    assert!(mock.url().starts_with("http://127.0.0.1:"));
    mock.shutdown().await;
    let refused = tokio::net::TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn binary_announces_its_port_and_serves() {
    use tokio::io::AsyncBufReadExt;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
        .args(["--port", "0", "--sse-frames", "3"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mock-upstream");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(EXCHANGE_TIMEOUT, lines.next_line())
        .await
        .expect("announcement in time")
        .unwrap()
        .expect("one line");
    let url = line
        .strip_prefix("mock-upstream listening on ")
        .expect("announcement format")
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"));

    let full = format!("{url}{CHAT}");
    let headers = [("authorization", "Bearer mock-ok")];
    let reply = send(
        &client(),
        request(Method::POST, &full, &headers, &chat_body(true)),
    )
    .await;
    assert_eq!(reply.separate_events().len(), 3 + 2);

    child.kill().await.expect("kill mock-upstream");
}

#[tokio::test]
async fn shared_models_path_follows_the_caller() {
    let mock = MockUpstream::start().await.unwrap();
    let gemini = get(&mock, "/v1/models", &[("x-goog-api-key", "g")]).await.json();
    assert!(gemini["models"].is_array());
    let gemini = get(&mock, "/v1/models?key=g", &[]).await.json();
    assert!(gemini["models"].is_array());
    let headers = [("x-api-key", "a"), ("anthropic-version", "2023-06-01")];
    let anthropic = get(&mock, "/v1/models", &headers).await.json();
    assert_eq!(anthropic["data"][0]["type"], "model");
    assert_eq!(anthropic["has_more"], false);
    let openai = get(&mock, "/v1/models", &[BEARER]).await.json();
    assert_eq!(openai["object"], "list");
}

#[tokio::test]
async fn h2c_disconnect_resets_the_stream_after_n_frames() {
    let mock = MockUpstream::start().await.unwrap();
    let url = format!("{}{CHAT}", mock.url());
    let headers = [("authorization", "Bearer mock-cut-h2")];
    let reply = send(
        &h2c_client(),
        request(Method::POST, &url, &headers, &chat_body(true)),
    )
    .await;
    assert!(reply.error.is_some());
    assert_eq!(reply.events().len(), 2);
}

// ---------------------------------------------------------------- request errors

async fn post_raw(mock: &MockUpstream, path: &str, headers: &[(&str, &str)], body: &'static str) -> Reply {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(format!("{}{path}", mock.url()));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send(
        &client(),
        builder
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn malformed_json_is_a_native_400_after_the_key() {
    let mock = MockUpstream::start().await.unwrap();
    let openai = post_raw(&mock, CHAT, &[BEARER], r#"{"model":"#).await;
    assert_eq!(openai.status, StatusCode::BAD_REQUEST);
    let error = &openai.json()["error"];
    assert_eq!(error["type"], "invalid_request_error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("could not parse the JSON body")
    );

    let anthropic = post_raw(&mock, "/v1/messages", &[("x-api-key", "sk-a")], "{,}").await;
    assert_eq!(anthropic.status, StatusCode::BAD_REQUEST);
    assert_eq!(anthropic.json()["error"]["type"], "invalid_request_error");

    let path = format!("{}?key=sk-g", gemini_path("g", "generateContent"));
    let gemini = post_raw(&mock, &path, &[], "nope").await;
    assert_eq!(gemini.status, StatusCode::BAD_REQUEST);
    assert_eq!(gemini.json()["error"]["status"], "INVALID_ARGUMENT");

    // The key is checked first, as the real APIs do.
    let unauthenticated = post_raw(&mock, CHAT, &[("authorization", "Bearer mock-401-x")], "{").await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
    // Empty bodies and non-JSON routes are not parsed.
    assert_eq!(post_raw(&mock, CHAT, &[BEARER], "").await.status, StatusCode::OK);
}

#[tokio::test]
async fn prompts_over_the_context_window_are_a_native_400() {
    let mock = MockUpstream::start_with(MockConfig::default().with_context_window(40))
        .await
        .unwrap();
    let long = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "word ".repeat(100)}]});
    let openai = post(&mock, CHAT, &[BEARER], long.clone()).await;
    assert_eq!(openai.status, StatusCode::BAD_REQUEST);
    assert_eq!(openai.json()["error"]["code"], "context_length_exceeded");
    let anthropic = post(&mock, "/v1/messages", &[("x-api-key", "sk-a")], long).await;
    assert!(
        anthropic.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("prompt is too long")
    );
    assert_eq!(
        post(&mock, CHAT, &[BEARER], chat_body(false)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn invalid_key_as_bad_request_has_geminis_shape() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("sk-bad", Behaviour::InvalidKeyBadRequest);
    let path = format!("{}?key=sk-bad", gemini_path("g", "generateContent"));
    let gemini = post(&mock, &path, &[], json!({})).await;
    assert_eq!(gemini.status, StatusCode::BAD_REQUEST);
    let error = &gemini.json()["error"];
    assert_eq!(error["status"], "INVALID_ARGUMENT");
    assert_eq!(error["details"][0]["reason"], "API_KEY_INVALID");
    let openai = post(
        &mock,
        CHAT,
        &[("authorization", "Bearer sk-bad")],
        chat_body(false),
    )
    .await;
    assert_eq!(openai.json()["error"]["code"], "invalid_api_key");
}

#[tokio::test]
async fn flaky_keys_fail_their_share_reproducibly() {
    async fn statuses(seed: u64) -> Vec<u16> {
        let mock = MockUpstream::start_with(MockConfig::default().with_seed(seed))
            .await
            .unwrap();
        mock.script(
            "sk-flaky",
            Behaviour::Flaky {
                per_mille: 250,
                status: 503,
            },
        );
        let mut seen = Vec::new();
        for _ in 0..400 {
            let reply = post(
                &mock,
                CHAT,
                &[("authorization", "Bearer sk-flaky")],
                chat_body(false),
            )
            .await;
            seen.push(reply.status.as_u16());
        }
        seen
    }
    let first = statuses(7).await;
    assert_eq!(first, statuses(7).await, "the same seed fails the same requests");
    assert!(first.iter().all(|s| *s == 200 || *s == 503));
    let failed = first.iter().filter(|s| **s == 503).count();
    // 400 draws at 25 %: 100 expected; 60..140 is beyond six standard deviations.
    assert!((60..140).contains(&failed), "{failed}");
}
