//! Real SDK clients end to end: the official Python `openai`, `anthropic` and `google-genai`
//! packages talk to the built `gpt-load-gateway` binary (SQLite in a temporary directory), which
//! pools keys in front of the built `mock-upstream` binary. The application side changes only
//! the SDK's base URL and uses a proxy key, as a user of the gateway would.
//!
//! The Python side is in `tests/sdk/`: one script per SDK reads a list of calls as JSON on stdin
//! and prints one JSON result per call (text, or the exception's class and parsed fields), which
//! the tests here assert on. SDK retries are off, so one call is one HTTP request.
//!
//! Set-up, once per test process and shared by the tests:
//!
//! - **The venv**: `tests/sdk/venv.py` creates it under the cargo target directory
//!   (`<target>/sdk-venv`) with the pinned packages of `tests/sdk/requirements.txt` (from PyPI)
//!   and re-uses it while its stamp matches the requirements and the Python version. An
//!   exclusive file lock serialises concurrent test processes. When it cannot be built (no
//!   `python3`, no `python3-venv`, PyPI unreachable) the tests print `SKIP`, or fail under
//!   `CI=true`.
//! - **The gateway binary** belongs to another package, so `CARGO_BIN_EXE_*` cannot name it, and a
//!   binary found lying in the target directory may be stale when only this test target is run.
//!   The tests therefore run `cargo build -p gpt-load-gateway --bin gpt-load-gateway` (the same
//!   cargo, workspace and target directory) and take the executable's path from cargo's JSON
//!   messages: a no-op when it is up to date, and never a stale binary. It resolves to the same
//!   artifacts as the build in `scripts/smoke.sh`, so `make test` compiles the binary once for
//!   both. The build happens before any process is started. `GPT_LOAD_GATEWAY_BIN` names a
//!   prebuilt binary instead.
//!
//! Every process (mock, gateway, Python) is killed when its guard is dropped, also when a test
//! panics; all traffic stays on 127.0.0.1.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use gpt_load_e2e::{GatewayCommand, GatewayProcess, gateway_binary, workspace_root};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// Admin key of every gateway started here (also seeded as its global proxy key).
const ADMIN_KEY: &str = "sk-sdk-admin-Qm4Zt9Xw2Lp8Rv5K";
/// The proxy key applications use: a group proxy key of every group.
const PROXY_KEY: &str = "sk-sdk-proxy-Hc7Vn3Jd6Bf1Ty8W";
/// A proxy key no group accepts.
const WRONG_KEY: &str = "sk-sdk-wrong-Ue2Gk9Ps4Da7Mx3N";
/// Upper bound for anything the tests wait for, so that a hang fails instead of blocking CI.
const PATIENCE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// The three SDKs and their channels
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sdk {
    OpenAi,
    Anthropic,
    Gemini,
}

const SDKS: [Sdk; 3] = [Sdk::OpenAi, Sdk::Anthropic, Sdk::Gemini];

impl Sdk {
    fn script(self) -> &'static str {
        match self {
            Sdk::OpenAi => "openai_calls.py",
            Sdk::Anthropic => "anthropic_calls.py",
            Sdk::Gemini => "genai_calls.py",
        }
    }

    /// The gateway's channel type for a group this SDK talks to.
    fn channel(self) -> &'static str {
        match self {
            Sdk::OpenAi => "openai",
            Sdk::Anthropic => "anthropic",
            Sdk::Gemini => "gemini",
        }
    }

    fn model(self) -> &'static str {
        match self {
            Sdk::OpenAi => "gpt-4o-mini",
            Sdk::Anthropic => "claude-sonnet-4-20250514",
            Sdk::Gemini => "gemini-2.5-flash",
        }
    }

    /// The SDK's base URL for a gateway group: the only thing an application changes.
    fn base_url(self, gateway: &str, group: &str) -> String {
        match self {
            // The OpenAI SDK's base URL includes the API version.
            Sdk::OpenAi => format!("{gateway}/proxy/{group}/v1"),
            // Anthropic's SDK appends `/v1/messages`, google-genai `/{version}/models/...`.
            Sdk::Anthropic | Sdk::Gemini => format!("{gateway}/proxy/{group}"),
        }
    }

    /// The upstream path of a call (what the mock records).
    fn upstream_path(self, stream: bool) -> String {
        match (self, stream) {
            (Sdk::OpenAi, _) => "/v1/chat/completions".to_owned(),
            (Sdk::Anthropic, _) => "/v1/messages".to_owned(),
            (Sdk::Gemini, false) => format!("/v1/models/{}:generateContent", self.model()),
            (Sdk::Gemini, true) => format!("/v1/models/{}:streamGenerateContent", self.model()),
        }
    }

    /// The exception class the SDK raises for an HTTP status.
    fn error_class(self, status: u16) -> &'static str {
        match (self, status) {
            (Sdk::OpenAi, 401) => "openai.AuthenticationError",
            (Sdk::OpenAi, 403) => "openai.PermissionDeniedError",
            (Sdk::OpenAi, 429) => "openai.RateLimitError",
            (Sdk::OpenAi, 503) => "openai.InternalServerError",
            (Sdk::Anthropic, 401) => "anthropic.AuthenticationError",
            (Sdk::Anthropic, 403) => "anthropic.PermissionDeniedError",
            (Sdk::Anthropic, 429) => "anthropic.RateLimitError",
            (Sdk::Anthropic, 503) => "anthropic.ServiceUnavailableError",
            (Sdk::Gemini, 401 | 403 | 429) => "google.genai.errors.ClientError",
            (Sdk::Gemini, 503) => "google.genai.errors.ServerError",
            _ => unreachable!("no expectation for {self:?} {status}"),
        }
    }

    /// The error's category as the SDK exposes it: OpenAI's and Anthropic's `type`, Gemini's
    /// `status`.
    fn error_type(self, status: u16) -> &'static str {
        match (self, status) {
            (Sdk::OpenAi | Sdk::Anthropic, 401) => "authentication_error",
            (Sdk::OpenAi | Sdk::Anthropic, 403) => "permission_error",
            (Sdk::OpenAi | Sdk::Anthropic, 429) => "rate_limit_error",
            (Sdk::OpenAi, 503) => "server_error",
            (Sdk::Anthropic, 503) => "overloaded_error",
            (Sdk::Gemini, 401) => "UNAUTHENTICATED",
            (Sdk::Gemini, 403) => "PERMISSION_DENIED",
            (Sdk::Gemini, 429) => "RESOURCE_EXHAUSTED",
            (Sdk::Gemini, 503) => "UNAVAILABLE",
            _ => unreachable!("no expectation for {self:?} {status}"),
        }
    }
}

/// One SDK call: `stream` chooses the SDK's streaming API.
fn call(sdk: Sdk, gateway: &Gateway, group: &str, api_key: &str, stream: bool) -> Value {
    json!({
        "base_url": sdk.base_url(gateway.base(), group),
        "api_key": api_key,
        "model": sdk.model(),
        "stream": stream,
    })
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_through_a_pool_with_a_bad_key() {
    pooled_calls(Sdk::OpenAi).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_through_a_pool_with_a_bad_key() {
    pooled_calls(Sdk::Anthropic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_genai_sdk_through_a_pool_with_a_bad_key() {
    pooled_calls(Sdk::Gemini).await;
}

/// Plain and streaming calls through a group of one key the upstream rejects (401) and two good
/// ones: the SDK sees normal answers, the upstream sees only pooled keys, and both good keys
/// serve.
async fn pooled_calls(sdk: Sdk) {
    let Some(setup) = setup() else { return };
    let mock = Mock::start();
    let gateway = Gateway::start(&[]);
    let pool = Pool::new(&format!("{}-pool", sdk.channel()));
    mock.script(&pool.bad, json!({"behaviour": "unauthorized"})).await;
    gateway
        .create_group(&pool.group, sdk, &mock.url, json!({}), &pool.keys())
        .await;

    let calls: Vec<Value> = (0..6)
        .map(|i| call(sdk, &gateway, &pool.group, PROXY_KEY, i % 2 == 1))
        .collect();
    let results = run_sdk(setup, sdk, &calls).await;
    for (i, result) in results.iter().enumerate() {
        let stream = i % 2 == 1;
        assert_eq!(result["ok"], true, "{sdk:?} call {i}: {result}");
        if stream {
            assert_eq!(
                result["text"],
                format!("hello from {} #1 #2 #3 #4", sdk.model()),
                "{sdk:?} call {i}: the whole stream arrives"
            );
            assert_eq!(
                result["chunks"], 5,
                "{sdk:?} call {i}: one piece per upstream frame"
            );
        } else {
            assert_eq!(
                result["text"],
                format!("hello from {}", sdk.model()),
                "{sdk:?} call {i}"
            );
        }
    }

    let received = mock.requests().await;
    assert_no_proxy_key(&received);
    pool.assert_served(&received, calls.len(), &format!("{sdk:?}"));
    // The answered requests: half of them streamed, each on the SDK's usual endpoint.
    let mut streamed = 0;
    for request in received.iter().filter(|r| r["credential"] != pool.bad.as_str()) {
        let stream = match sdk {
            // Gemini streams on its own endpoint, the others with `"stream": true`.
            Sdk::Gemini => request["path"] == sdk.upstream_path(true),
            Sdk::OpenAi | Sdk::Anthropic => {
                let body = request["body"].as_str().unwrap_or_default();
                serde_json::from_str::<Value>(body).is_ok_and(|b| b["stream"] == true)
            }
        };
        assert_eq!(request["path"], sdk.upstream_path(stream), "{sdk:?}: {request}");
        streamed += usize::from(stream);
    }
    assert_eq!(
        streamed,
        calls.len() / 2,
        "{sdk:?}: the streaming calls stream upstream"
    );
    if sdk == Sdk::Anthropic {
        assert!(
            received
                .iter()
                .all(|r| r["headers"]["anthropic-version"].is_string()),
            "the SDK's anthropic-version header reaches the upstream"
        );
    }
}

/// Raw HTTP without an SDK: a Gemini request carrying the proxy key as `?key=` and an Anthropic
/// request carrying it as `x-api-key`, each plain and streamed, through pools with a bad key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_http_with_the_proxy_key_in_the_query_and_in_x_api_key() {
    if setup().is_none() {
        return;
    }
    let mock = Mock::start();
    let gateway = Gateway::start(&[]);
    let gemini = Pool::new("raw-gemini");
    let anthropic = Pool::new("raw-anthropic");
    for pool in [&gemini, &anthropic] {
        mock.script(&pool.bad, json!({"behaviour": "unauthorized"})).await;
    }
    gateway
        .create_group(&gemini.group, Sdk::Gemini, &mock.url, json!({}), &gemini.keys())
        .await;
    gateway
        .create_group(
            &anthropic.group,
            Sdk::Anthropic,
            &mock.url,
            json!({}),
            &anthropic.keys(),
        )
        .await;

    let model = Sdk::Gemini.model();
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    for i in 0..4 {
        let (action, query) = if i % 2 == 0 {
            ("generateContent", format!("key={PROXY_KEY}"))
        } else {
            ("streamGenerateContent", format!("alt=sse&key={PROXY_KEY}"))
        };
        let url = format!(
            "{}/proxy/{}/v1beta/models/{model}:{action}?{query}",
            gateway.base(),
            gemini.group
        );
        let (status, headers, answer) = send(Method::POST, &url, &[], Some(&body)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status, StatusCode::OK, "gemini {action}: {answer}");
        assert!(answer.contains(&format!("hello from {model}")), "{answer}");
        if i % 2 == 1 {
            assert!(content_type(&headers).starts_with("text/event-stream"));
            assert!(answer.contains(" #4"), "the whole stream arrives: {answer}");
        }
    }

    let model = Sdk::Anthropic.model();
    let url = format!("{}/proxy/{}/v1/messages", gateway.base(), anthropic.group);
    let headers = [("x-api-key", PROXY_KEY), ("anthropic-version", "2023-06-01")];
    for i in 0..4 {
        let stream = i % 2 == 1;
        let body = json!({
            "model": model, "max_tokens": 64, "stream": stream,
            "messages": [{"role": "user", "content": "hi"}],
        });
        let (status, response_headers, answer) = send(Method::POST, &url, &headers, Some(&body)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status, StatusCode::OK, "anthropic stream={stream}: {answer}");
        assert!(answer.contains(&format!("hello from {model}")), "{answer}");
        if stream {
            assert!(content_type(&response_headers).starts_with("text/event-stream"));
            assert!(
                answer.contains("message_stop"),
                "the whole stream arrives: {answer}"
            );
        }
    }

    let received = mock.requests().await;
    assert_no_proxy_key(&received);
    let (to_gemini, to_anthropic): (Vec<Value>, Vec<Value>) = received
        .into_iter()
        .partition(|r| r["path"].as_str().unwrap_or_default().contains(':'));
    gemini.assert_served(&to_gemini, 4, "raw gemini");
    anthropic.assert_served(&to_anthropic, 4, "raw anthropic");
    for request in &to_anthropic {
        assert_eq!(
            request["headers"]["x-api-key"], request["credential"],
            "the pooled key replaces the proxy key in x-api-key: {request}"
        );
    }
}

/// Errors the gateway makes itself reach each SDK as that provider's own error type, with the
/// gateway's message: no usable key in the group (503) and a wrong proxy key (401).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_errors_are_each_sdks_native_errors() {
    let Some(setup) = setup() else { return };
    let mock = Mock::start();
    let gateway = Gateway::start(&[]);
    for sdk in SDKS {
        let ok = format!("{}-ok", sdk.channel());
        gateway
            .create_group(&ok, sdk, &mock.url, json!({}), &[&format!("sk-{ok}-0123456789")])
            .await;
        // Both keys fail once each on the first request (threshold 1): the group is left
        // without a usable key.
        let dead = format!("{}-dead", sdk.channel());
        let keys = [
            format!("sk-{dead}-one-0123456789"),
            format!("sk-{dead}-two-0123456789"),
        ];
        for key in &keys {
            mock.script(key, json!({"behaviour": "unauthorized"})).await;
        }
        let config = json!({"blacklist_threshold": 1, "max_retries": 3});
        gateway
            .create_group(&dead, sdk, &mock.url, config, &[&keys[0], &keys[1]])
            .await;
        let results = run_sdk(setup, sdk, &[call(sdk, &gateway, &dead, PROXY_KEY, false)]).await;
        assert_eq!(
            results[0]["ok"], false,
            "{sdk:?}: both keys are rejected upstream"
        );
        let shown = results[0].to_string();
        assert!(
            keys.iter().all(|key| !shown.contains(key.as_str())),
            "{sdk:?}: the upstream's error reaches the client with the key redacted: {shown}"
        );
        let tried: BTreeSet<String> = mock
            .requests()
            .await
            .iter()
            .filter_map(|r| r["credential"].as_str().map(str::to_owned))
            .filter(|k| keys.contains(k))
            .collect();
        assert_eq!(tried.len(), 2, "{sdk:?}: the first request tried both keys");
    }
    mock.clear().await;

    let mut runs = Vec::new();
    for sdk in SDKS {
        let dead = format!("{}-dead", sdk.channel());
        let ok = format!("{}-ok", sdk.channel());
        let calls = [
            call(sdk, &gateway, &dead, PROXY_KEY, false),
            call(sdk, &gateway, &dead, PROXY_KEY, true),
            call(sdk, &gateway, &ok, WRONG_KEY, false),
            call(sdk, &gateway, &ok, WRONG_KEY, true),
        ];
        runs.push(async move { (sdk, dead, run_sdk(setup, sdk, &calls).await) });
    }
    for (sdk, dead, results) in futures_join(runs).await {
        let no_key = format!("no active API keys available for group '{dead}'");
        for (i, result) in results.iter().enumerate() {
            let (status, code, message) = if i < 2 {
                (503, "no_keys_available", no_key.as_str())
            } else {
                (401, "unauthorized", "invalid or missing proxy key")
            };
            assert_sdk_error(sdk, result, status, code, message, &format!("call {i}"));
        }
    }
    assert_eq!(
        mock.requests().await.len(),
        0,
        "errors made by the gateway never reach the upstream"
    );
}

/// The admin API's `/api/openapi.json` is a valid OpenAPI 3.1 document by an independent
/// validator (`openapi-spec-validator`), not only by the generator that wrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_openapi_document_is_valid_openapi_3_1() {
    let Some(setup) = setup() else { return };
    let gateway = Gateway::start(&[]);
    let url = format!("{}/api/openapi.json", gateway.base());
    let (status, _, document) = send(Method::GET, &url, &[], None).await;
    assert_eq!(status, StatusCode::OK);
    let report = run_script(setup, "openapi_check.py", &String::from_utf8_lossy(&document)).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["openapi"], "3.1.0", "{report}");
}

/// With `MAX_CONCURRENT_REQUESTS=1` and one request held by a slow upstream, each SDK's next
/// request is shed by the gateway with a 429 the SDK parses as its rate-limit error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_concurrency_limit_are_native_rate_limit_errors() {
    let Some(setup) = setup() else { return };
    let mock = Mock::start();
    let gateway = Gateway::start(&[("MAX_CONCURRENT_REQUESTS", "1")]);
    let slow_key = "sk-sdk-slow-upstream-0123456789";
    // Far longer than the test: the held request ends when the test drops it.
    mock.script(slow_key, json!({"behaviour": "slow", "delay_ms": 600_000}))
        .await;
    for sdk in SDKS {
        let group = format!("{}-limited", sdk.channel());
        gateway
            .create_group(&group, sdk, &mock.url, json!({}), &[slow_key])
            .await;
    }

    let held_request = chat_request(&gateway, "openai-limited");
    // Its answer (or the error when the gateway goes away at the end) does not matter.
    let held = tokio::spawn(async move {
        let _ = client().request(held_request).await;
    });
    // The request holds the only permit once the upstream has it.
    eventually("the held request reaches the upstream", || async {
        mock.stats().await["total"] == 1
    })
    .await;

    let mut runs = Vec::new();
    for sdk in SDKS {
        let group = format!("{}-limited", sdk.channel());
        let calls = [
            call(sdk, &gateway, &group, PROXY_KEY, false),
            call(sdk, &gateway, &group, PROXY_KEY, true),
        ];
        runs.push(async move { (sdk, run_sdk(setup, sdk, &calls).await) });
    }
    for (sdk, results) in futures_join(runs).await {
        assert_rate_limit_errors(
            sdk,
            results.iter().enumerate(),
            "overloaded",
            "too many concurrent requests, retry later",
        );
    }
    assert_eq!(refusing_limit(&gateway, "openai-limited").await, "concurrency");

    assert!(!held.is_finished(), "the held request is still in flight");
    assert_eq!(
        mock.stats().await["total"],
        1,
        "shed requests never reach the upstream"
    );
    held.abort();
}

/// A group's own `group_rpm`: once a group has taken its requests of the minute, each SDK's next
/// request is refused by the gateway with a 429 the SDK parses as its rate-limit error, and the
/// gateway names the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_a_group_rpm_are_native_rate_limit_errors() {
    let Some(setup) = setup() else { return };
    let mock = Mock::start();
    let gateway = Gateway::start(&[]);
    for sdk in SDKS {
        let group = format!("{}-rpm", sdk.channel());
        let config = json!({"group_rpm": 1});
        gateway
            .create_group(
                &group,
                sdk,
                &mock.url,
                config,
                &["sk-sdk-rpm-upstream-0123456789"],
            )
            .await;
    }
    let mut runs = Vec::new();
    for sdk in SDKS {
        let group = format!("{}-rpm", sdk.channel());
        let calls = [
            call(sdk, &gateway, &group, PROXY_KEY, false),
            call(sdk, &gateway, &group, PROXY_KEY, false),
            call(sdk, &gateway, &group, PROXY_KEY, true),
        ];
        runs.push(async move { (sdk, run_sdk(setup, sdk, &calls).await) });
    }
    for (sdk, results) in futures_join(runs).await {
        assert_eq!(
            results[0]["ok"], true,
            "{sdk:?}: the minute's one request: {}",
            results[0]
        );
        assert_rate_limit_errors(
            sdk,
            results.iter().enumerate().skip(1),
            "rate_limit_exceeded",
            "rate limit 'group_rpm' reached, retry later",
        );
    }
    assert_eq!(refusing_limit(&gateway, "openai-rpm").await, "group_rpm");
    assert_eq!(
        mock.stats().await["total"],
        3,
        "one request per SDK reached the upstream"
    );
}

/// An access key made through the admin API works in every SDK like a proxy key; limited to
/// `gpt-4o*`, the other SDKs' models are refused with each SDK's permission error before any
/// upstream call, and once switched off every SDK gets its authentication error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_keys_limit_models_and_stop_in_each_sdks_own_errors() {
    let Some(setup) = setup() else { return };
    let mock = Mock::start();
    let gateway = Gateway::start(&[]);
    for sdk in SDKS {
        let group = format!("{}-access", sdk.channel());
        let keys = ["sk-sdk-access-upstream-0123456789"];
        gateway
            .create_group(&group, sdk, &mock.url, json!({}), &keys)
            .await;
    }
    let made = gateway
        .admin(
            "/access-keys",
            json!({"name": "sdk team", "allowed_models": ["gpt-4o*"]}),
        )
        .await;
    let key = made["key"].as_str().expect("the new key").to_owned();
    let id = made["access_key"]["id"].as_i64().expect("its id");
    // One plain call per SDK to its own `{channel}-access` group with the access key, at once.
    let each_sdk_once = |setup: &'static Setup, gateway: &Gateway, key: &str| {
        let runs: Vec<_> = SDKS
            .into_iter()
            .map(|sdk| {
                let calls = [call(
                    sdk,
                    gateway,
                    &format!("{}-access", sdk.channel()),
                    key,
                    false,
                )];
                async move { (sdk, run_sdk(setup, sdk, &calls).await) }
            })
            .collect();
        futures_join(runs)
    };

    for (sdk, results) in each_sdk_once(setup, &gateway, &key).await {
        let message = format!("model '{}' is not allowed for this access key", sdk.model());
        match sdk {
            Sdk::OpenAi => assert_eq!(results[0]["ok"], true, "{sdk:?}: {}", results[0]),
            _ => assert_sdk_error(
                sdk,
                &results[0],
                403,
                "permission_denied",
                &message,
                "other model",
            ),
        }
    }
    assert_eq!(
        mock.stats().await["total"],
        1,
        "only the allowed model reached the upstream"
    );

    let auth = format!("Bearer {ADMIN_KEY}");
    let url = format!("{}/api/access-keys/{id}", gateway.base());
    let (status, _, _) = send(
        Method::PUT,
        &url,
        &[("authorization", &auth)],
        Some(&json!({"enabled": false})),
    )
    .await;
    assert!(status.is_success());
    for (sdk, results) in each_sdk_once(setup, &gateway, &key).await {
        assert_sdk_error(
            sdk,
            &results[0],
            401,
            "unauthorized",
            "access key is disabled",
            "disabled",
        );
    }
    assert_eq!(mock.stats().await["total"], 1);
}

// ---------------------------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------------------------

/// A pool of one key the upstream rejects and two good ones, in a group of its own.
struct Pool {
    group: String,
    bad: String,
    good: [String; 2],
}

impl Pool {
    fn new(group: &str) -> Self {
        Self {
            group: group.to_owned(),
            bad: format!("sk-{group}-bad-0123456789"),
            good: [
                format!("sk-{group}-good-a-0123456789"),
                format!("sk-{group}-good-b-0123456789"),
            ],
        }
    }

    /// The bad key first, so that the first request already needs a retry.
    fn keys(&self) -> [&str; 3] {
        [&self.bad, &self.good[0], &self.good[1]]
    }

    /// Every upstream request used a key of this pool; the `calls` successful ones are spread
    /// over both good keys; the bad key was tried (and its failures never reached the client).
    fn assert_served(&self, received: &[Value], calls: usize, what: &str) {
        let count = |key: &str| received.iter().filter(|r| r["credential"] == key).count();
        for request in received {
            let credential = request["credential"].as_str().unwrap_or_default();
            assert!(
                self.keys().contains(&credential),
                "{what}: the upstream got a key outside the pool: {request}"
            );
        }
        let (a, b) = (count(&self.good[0]), count(&self.good[1]));
        assert_eq!(a + b, calls, "{what}: one successful upstream request per call");
        assert!(a > 0 && b > 0, "{what}: both good keys serve ({a} and {b})");
        assert!(count(&self.bad) > 0, "{what}: the bad key was tried and retried");
    }
}

/// The upstream never sees a key the client presented to the gateway, in any header, the query
/// or the body.
fn assert_no_proxy_key(received: &[Value]) {
    assert!(!received.is_empty(), "the upstream received requests");
    for request in received {
        let text = request.to_string();
        for secret in [PROXY_KEY, ADMIN_KEY, WRONG_KEY] {
            assert!(!text.contains(secret), "the upstream saw a proxy key: {request}");
        }
    }
}

/// `result` is the SDK's own exception for `status` carrying the gateway's `message`.
/// `code` is the gateway's error code, which the OpenAI SDK shows.
fn assert_sdk_error(sdk: Sdk, result: &Value, status: u16, code: &str, message: &str, what: &str) {
    let error = &result["error"];
    assert_eq!(result["ok"], false, "{sdk:?} {what}: {result}");
    assert_eq!(
        error["class"],
        sdk.error_class(status),
        "{sdk:?} {what}: {result}"
    );
    assert_eq!(error["status"], status, "{sdk:?} {what}: {result}");
    assert_eq!(error["message"], message, "{sdk:?} {what}: {result}");
    assert_eq!(error["type"], sdk.error_type(status), "{sdk:?} {what}: {result}");
    match sdk {
        Sdk::OpenAi => assert_eq!(error["code"], code, "{sdk:?} {what}: {result}"),
        Sdk::Anthropic => assert_eq!(error["envelope"], "error", "{sdk:?} {what}: {result}"),
        Sdk::Gemini => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Set-up: the venv and the gateway binary
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Setup {
    python: PathBuf,
}

/// The shared set-up, or `None` (after printing `SKIP`) when the SDK venv cannot be built on a
/// developer machine. Under `CI=true` that is a failure.
fn setup() -> Option<&'static Setup> {
    static SETUP: OnceLock<Result<Setup, String>> = OnceLock::new();
    match SETUP.get_or_init(|| {
        // The gateway first: it is code of this workspace, so a failure is always an error.
        gateway_binary();
        let python = sdk_venv()?;
        Ok(Setup { python })
    }) {
        Ok(setup) => Some(setup),
        Err(reason) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("the SDK venv is required under CI=true: {reason}")
        }
        Err(reason) => {
            eprintln!("SKIP sdk: {reason}");
            None
        }
    }
}

/// Creates or re-uses the venv; returns its interpreter.
fn sdk_venv() -> Result<PathBuf, String> {
    // `<target>/<profile>/mock-upstream` → `<target>/sdk-venv`.
    let mock = Path::new(env!("CARGO_BIN_EXE_mock-upstream"));
    let target = mock
        .parent()
        .and_then(Path::parent)
        .ok_or("no target directory")?;
    let sdk = workspace_root().join("tests/sdk");
    let output = Command::new("python3")
        .arg(sdk.join("venv.py"))
        .arg(target.join("sdk-venv"))
        .arg(sdk.join("requirements.txt"))
        .stderr(Stdio::inherit())
        .output()
        .map_err(|err| format!("cannot run python3: {err}"))?;
    if !output.status.success() {
        return Err(format!("tests/sdk/venv.py failed ({})", output.status));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let python = stdout.lines().last().ok_or("venv.py printed no interpreter")?;
    Ok(PathBuf::from(python.trim()))
}

/// Runs `calls` with one SDK's script; returns one result per call.
async fn run_sdk(setup: &Setup, sdk: Sdk, calls: &[Value]) -> Vec<Value> {
    let spec = json!({ "calls": calls }).to_string();
    let report = run_script(setup, sdk.script(), &spec).await;
    // Shown with the output of a failing test.
    eprintln!("{sdk:?} script: {report}");
    let results = report["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), calls.len(), "{sdk:?}: one result per call");
    results
}

/// Runs a script of `tests/sdk/` in the venv with `input` on stdin; returns the JSON it prints.
async fn run_script(setup: &Setup, script: &str, input: &str) -> Value {
    let mut child = tokio::process::Command::new(&setup.python)
        .arg(workspace_root().join("tests/sdk").join(script))
        // A clean environment: no proxy variables, no provider keys or base URLs from the
        // developer's shell, no bytecode written into the source tree.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LANG", "C.UTF-8")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONNOUSERSITE", "1")
        .env("NO_PROXY", "*")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the venv's python starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.as_bytes()).await.expect("write the input");
    drop(stdin);
    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish"))
        .expect("the script runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script} failed: {stderr}");
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("{script} printed no JSON ({err}): {stderr}"))
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!(
            "gpt-load-sdk-{label}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed and reaped on drop (also while a test panics).
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} log (last lines)\n{}", self.name, self.log_tail());
        }
    }
}

/// The `mock-upstream` binary on an ephemeral port, driven through its `/__mock/*` endpoints.
struct Mock {
    url: String,
    _stdout: BufReader<ChildStdout>,
    _process: Process,
    _dir: TempDir,
}

impl Mock {
    fn start() -> Self {
        let dir = TempDir::new("mock");
        let log = dir.0.join("mock.log");
        let child = Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
            .args(["--host", "127.0.0.1", "--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("create the mock log"))
            .spawn()
            .expect("the mock upstream starts");
        let mut process = Process {
            name: "mock-upstream",
            child,
            log,
        };
        let mut stdout = BufReader::new(process.child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read the mock's first line");
        let url = line
            .trim()
            .strip_prefix("mock-upstream listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from the mock: {line:?}"))
            .to_owned();
        Self {
            url,
            _stdout: stdout,
            _process: process,
            _dir: dir,
        }
    }

    async fn script(&self, key: &str, behaviour: Value) {
        let mut body = behaviour;
        body["key"] = json!(key);
        let url = format!("{}/__mock/script", self.url);
        let (status, _, _) = send(Method::POST, &url, &[], Some(&body)).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "script {key}");
    }

    /// The recorded requests, oldest first.
    async fn requests(&self) -> Vec<Value> {
        let url = format!("{}/__mock/requests", self.url);
        let (_, _, body) = send(Method::GET, &url, &[], None).await;
        serde_json::from_slice(&body).expect("the mock lists its requests")
    }

    async fn clear(&self) {
        let url = format!("{}/__mock/requests", self.url);
        send(Method::DELETE, &url, &[], None).await;
    }

    async fn stats(&self) -> Value {
        let url = format!("{}/__mock/stats", self.url);
        let (_, _, body) = send(Method::GET, &url, &[], None).await;
        serde_json::from_slice(&body).expect("the mock reports stats")
    }
}

/// The gateway binary on SQLite in a temporary data directory.
struct Gateway {
    process: GatewayProcess,
}

impl Gateway {
    /// Starts the gateway with `env` on top of the defaults and waits until `/health` answers.
    fn start(env: &[(&str, &str)]) -> Self {
        let process = GatewayCommand::new("sdk", ADMIN_KEY)
            .envs(env.iter().copied())
            .patience(PATIENCE)
            .start();
        Self { process }
    }

    fn base(&self) -> &str {
        self.process.base()
    }

    /// An admin API call; returns the `data` of a successful answer.
    async fn admin(&self, path: &str, body: Value) -> Value {
        let auth = format!("Bearer {ADMIN_KEY}");
        let url = format!("{}/api{path}", self.base());
        let (status, _, answer) = send(Method::POST, &url, &[("authorization", &auth)], Some(&body)).await;
        let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        assert!(
            status.is_success() && answer["code"] == 0,
            "POST /api{path} answered {status}: {answer}"
        );
        answer["data"].clone()
    }

    /// Creates a standard group in front of `upstream` with the test proxy key and `keys`.
    async fn create_group(&self, name: &str, sdk: Sdk, upstream: &str, config: Value, keys: &[&str]) {
        let group = self
            .admin(
                "/groups",
                json!({
                    "name": name,
                    "channel_type": sdk.channel(),
                    "test_model": sdk.model(),
                    "upstreams": [{"url": upstream, "weight": 1}],
                    "proxy_keys": PROXY_KEY,
                    "config": config,
                }),
            )
            .await;
        let id = group["id"].as_i64().expect("the new group's id");
        let added = self
            .admin(
                "/keys/add-multiple",
                json!({"group_id": id, "keys_text": keys.join("\n")}),
            )
            .await;
        assert_eq!(added["added_count"], keys.len(), "keys of {name}: {added}");
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP from Rust
// ---------------------------------------------------------------------------------------------

/// An OpenAI chat request to `group` with the proxy key, as a client without an SDK sends it.
fn chat_request(gateway: &Gateway, group: &str) -> Request<Full<Bytes>> {
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    Request::post(format!("{}/proxy/{group}/v1/chat/completions", gateway.base()))
        .header("authorization", format!("Bearer {PROXY_KEY}"))
        .header("content-type", "application/json")
        .body(Full::from(body.to_string()))
        .expect("a valid request")
}

/// The limit a `429` of the gateway's own to a plain request to `group` names (the SDKs do not
/// show headers).
async fn refusing_limit(gateway: &Gateway, group: &str) -> String {
    let refused = client()
        .request(chat_request(gateway, group))
        .await
        .expect("the gateway answers");
    assert_eq!(refused.status(), 429);
    refused.headers()["x-gpt-load-limit"]
        .to_str()
        .expect("a text header")
        .to_owned()
}

/// Every result is the SDK's rate-limit error with the gateway's `code` and `message`, and the
/// SDK saw `Retry-After`.
fn assert_rate_limit_errors<'a>(
    sdk: Sdk,
    results: impl IntoIterator<Item = (usize, &'a Value)>,
    code: &str,
    message: &str,
) {
    for (i, result) in results {
        assert_sdk_error(sdk, result, 429, code, message, &format!("call {i}"));
        assert!(
            result["error"]["retry_after"].is_string(),
            "{sdk:?} call {i}: the SDK sees Retry-After: {result}"
        );
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request and reads the whole answer.
async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = request.body(Full::from(body)).expect("a valid request");
    let exchange = async {
        let response = client().request(request).await.expect("the server answers");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("the whole body").to_bytes();
        (parts.status, parts.headers, bytes)
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer from {url}"))
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// Polls `check` until it holds; fails the test if it never does.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the futures concurrently (each SDK script is its own process); results in order.
async fn futures_join<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle.await {
            Ok(output) => outputs.push(output),
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }
    outputs
}
