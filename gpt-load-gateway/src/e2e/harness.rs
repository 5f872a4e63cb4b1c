//! Starts a gateway against a test database and the mock upstream, and talks to it over HTTP.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use bytes::Bytes;
use gpt_load_e2e::MockUpstream;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::{
    app::{self, JobIntervals, Running, ShutdownSummary},
    config::Config,
    db::test_support::TestDb,
};

/// The global proxy key: the harness sets it through the admin API after the first start (the
/// gateway seeds a random one; `AUTH_KEY` is no proxy key).
pub(crate) const PROXY_KEY: &str = "sk-proxy-test-0123456789";

/// The admin key (`AUTH_KEY`).
pub(crate) const ADMIN_KEY: &str = "sk-admin-test-Vb7Nq2Lx9Rt4";

/// A standard group of the bootstrap file pointing at `upstream`.
pub(crate) fn group(name: &str, upstream: &str, keys: &[&str], config: Value) -> Value {
    json!({
        "name": name,
        "channel_type": "openai",
        "test_model": "gpt-4o-mini",
        "upstreams": [{"url": upstream, "weight": 1}],
        "keys": keys,
        "config": config,
    })
}

pub(crate) struct Harness {
    pub(crate) test_db: TestDb,
    pub(crate) mock: MockUpstream,
    running: Option<Running>,
    pub(crate) base: String,
    env: HashMap<String, String>,
    intervals: JobIntervals,
    _dir: tempfile::TempDir,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Harness {
    /// Starts a gateway on `test_db` with these bootstrap groups and extra environment.
    pub(crate) async fn start(
        test_db: TestDb,
        mock: MockUpstream,
        groups: Vec<Value>,
        extra_env: &[(&str, &str)],
    ) -> Self {
        Self::start_with(test_db, mock, groups, extra_env, JobIntervals::default()).await
    }

    pub(crate) async fn start_with(
        test_db: TestDb,
        mock: MockUpstream,
        groups: Vec<Value>,
        extra_env: &[(&str, &str)],
        intervals: JobIntervals,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bootstrap: PathBuf = dir.path().join("bootstrap.json");
        std::fs::write(&bootstrap, json!({ "groups": groups }).to_string()).unwrap();
        let mut env: HashMap<String, String> = [
            ("DATABASE_DSN", test_db.dsn.clone()),
            ("AUTH_KEY", ADMIN_KEY.to_owned()),
            ("GPT_LOAD_BOOTSTRAP", bootstrap.display().to_string()),
            ("DATA_DIR", dir.path().display().to_string()),
            ("HOST", "127.0.0.1".to_owned()),
            ("SERVER_GRACEFUL_SHUTDOWN_TIMEOUT", "10".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in extra_env {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let mut harness = Self {
            test_db,
            mock,
            running: None,
            base: String::new(),
            env,
            intervals,
            _dir: dir,
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        harness.boot().await;
        harness.set_global_proxy_key().await;
        harness
    }

    /// Makes [`PROXY_KEY`] the global proxy key as an operator would (`PUT /api/settings`); the
    /// registry applies it before the answer.
    async fn set_global_proxy_key(&self) {
        let put = self.api("PUT", "/settings", Some(json!({ "proxy_keys": PROXY_KEY })));
        let (status, body) = self.call_json(put).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn boot(&mut self) {
        let (config, _warnings) = Config::from_source(&self.env).expect("test configuration is valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = app::start(config, ADMIN_KEY, listener, self.intervals)
            .await
            .expect("the gateway starts");
        self.base = format!("http://{}", running.addr);
        self.running = Some(running);
    }

    pub(crate) fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    /// Stops the gateway (flushing logs and key states).
    pub(crate) async fn stop(&mut self) -> ShutdownSummary {
        self.running.take().expect("running").shutdown().await
    }

    /// Changes one environment variable for the next [`restart`](Self::restart).
    pub(crate) fn set_env(&mut self, name: &str, value: &str) {
        self.env.insert(name.to_owned(), value.to_owned());
    }

    /// Starts again on the same database (stopping first if still running).
    pub(crate) async fn restart(&mut self) {
        if self.running.is_some() {
            self.stop().await;
        }
        self.boot().await;
    }

    /// Sends a request and reads the whole answer.
    pub(crate) async fn send(&self, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
        let res = self.client.request(req).await.expect("the gateway answers");
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        (parts.status, parts.headers, bytes)
    }

    /// An admin API request (`/api{path}`) carrying the admin key.
    pub(crate) fn api(&self, method: &str, path: &str, body: Option<Value>) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(format!("{}/api{path}", self.base))
            .header("authorization", format!("Bearer {ADMIN_KEY}"))
            .header("content-type", "application/json")
            .body(Full::from(body.map(|b| b.to_string()).unwrap_or_default()))
            .unwrap()
    }

    /// Sends a request; its status and JSON answer (`Null` when the answer is not JSON).
    pub(crate) async fn call_json(&self, req: Request<Full<Bytes>>) -> (StatusCode, Value) {
        let (status, _, body) = self.send(req).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// An admin API call: [`api`](Self::api) sent with [`call_json`](Self::call_json).
    pub(crate) async fn call_api(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_json(self.api(method, path, body)).await
    }

    /// The id of a group, by name, through the admin API.
    pub(crate) async fn group_id(&self, name: &str) -> i64 {
        let (_, body) = self.call_api("GET", "/groups/list", None).await;
        body["data"]
            .as_array()
            .expect("group list")
            .iter()
            .find(|g| g["name"] == name)
            .and_then(|g| g["id"].as_i64())
            .expect("group exists")
    }

    /// Sends a request and returns the streaming response.
    pub(crate) async fn open(&self, req: Request<Full<Bytes>>) -> http::Response<hyper::body::Incoming> {
        self.client.request(req).await.expect("the gateway answers")
    }

    /// A chat completion through `group` with the proxy key.
    pub(crate) fn chat(&self, group: &str, stream: bool) -> Request<Full<Bytes>> {
        let body = json!({"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
        Request::post(format!("{}/proxy/{group}/v1/chat/completions", self.base))
            .header("authorization", format!("Bearer {PROXY_KEY}"))
            .header("content-type", "application/json")
            .body(Full::from(body.to_string()))
            .unwrap()
    }

    /// A request in `channel`'s own format (`openai`, `openai-response`, `anthropic`, `gemini`)
    /// through `group`, saying `text`, with the proxy key in the query.
    pub(crate) fn native(
        &self,
        group: &str,
        channel: &str,
        stream: bool,
        text: &str,
    ) -> Request<Full<Bytes>> {
        let (path, body) = match channel {
            "openai-response" => (
                "v1/responses".to_owned(),
                json!({"model": "gpt-4.1-mini", "stream": stream, "input": text}),
            ),
            "anthropic" => (
                "v1/messages".to_owned(),
                json!({"model": "claude-3-haiku", "max_tokens": 10, "stream": stream,
                       "messages": [{"role": "user", "content": text}]}),
            ),
            "gemini" if stream => (
                "v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&".to_owned(),
                json!({"contents": [{"parts": [{"text": text}]}]}),
            ),
            "gemini" => (
                "v1beta/models/gemini-2.5-flash:generateContent?".to_owned(),
                json!({"contents": [{"parts": [{"text": text}]}]}),
            ),
            _ => (
                "v1/chat/completions".to_owned(),
                json!({"model": "gpt-4o-mini", "stream": stream,
                       "messages": [{"role": "user", "content": text}]}),
            ),
        };
        let sep = if path.contains('?') { "" } else { "?" };
        Request::post(format!("{}/proxy/{group}/{path}{sep}key={PROXY_KEY}", self.base))
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .body(Full::from(body.to_string()))
            .unwrap()
    }

    /// Polls `check` until it holds (or fails the test after `limit`).
    pub(crate) async fn eventually<F, Fut>(limit: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + limit;
        while !check().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not reached within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
