//! A deterministic mock upstream speaking the OpenAI, Anthropic and Gemini
//! wire formats.
//!
//! [`MockUpstream`] runs a hyper server (HTTP/1.1 with keep-alive, and h2c)
//! on a loopback port. Every answer's text contains the requested model name
//! (`"hello from {model}"`), so tests can observe model redirects.
//!
//! # Routes
//!
//! | Method | Path | Format |
//! | --- | --- | --- |
//! | `POST` | `/v1/chat/completions`, `/v1beta/openai/chat/completions` | OpenAI chat (SSE with `"stream": true`) |
//! | `GET` | `/v1/models`, `/v1beta/openai/models` | OpenAI model list (see below) |
//! | `POST` | `/v1/responses` | OpenAI Responses API (SSE with `"stream": true`) |
//! | `POST` | `/v1/messages` | Anthropic messages (SSE with `"stream": true`) |
//! | `POST` | `/v1beta/models/{model}:generateContent` (also under `/v1/`) | Gemini |
//! | `POST` | `/v1beta/models/{model}:streamGenerateContent` (also under `/v1/`) | Gemini (SSE with `alt=sse`, else a streamed JSON array) |
//! | `GET` | `/v1beta/models` | Gemini model list |
//!
//! `GET /v1/models` without an `Authorization` header answers in Gemini's
//! format when the key comes as `x-goog-api-key` or `key=`, and in
//! Anthropic's when an `anthropic-version` header is present.
//! Anything else is a 404 in the OpenAI error shape.
//!
//! # Streams
//!
//! Streams carry [`MockConfig::sse_frames`] text frames spaced by
//! [`MockConfig::sse_pace`], each sent as its own HTTP body frame, wrapped in
//! the provider's start and stop events. The headers `x-mock-frames: N` and
//! `x-mock-pace-ms: N` override both per request. Frame `0` carries
//! `"hello from {model}"`, frame `i > 0` carries `" #i"`.
//!
//! # Credentials and behaviour
//!
//! The presented key is read from `Authorization: Bearer k`, `x-api-key`,
//! `x-goog-api-key` or the `key` query parameter, in that order; a request
//! without one gets a 401 in the route's native error format. What happens
//! next depends on the key's [`Behaviour`]: scripted with
//! [`MockUpstream::script`], or else implied by its prefix
//! ([`Behaviour::from_key_prefix`]).
//!
//! # Recording
//!
//! Every provider request is counted per key and, unless
//! [`MockConfig::record_capacity`] is zero, kept in a bounded ring as a
//! [`ReceivedRequest`].
//!
//! # Control endpoints
//!
//! For a mock in another process (the `mock-upstream` binary), unrecorded and
//! unauthenticated:
//!
//! - `GET /__mock/requests`: JSON array of recorded requests (`method`,
//!   `path`, `query`, `credential`, `headers` as lowercase name → value,
//!   `body` as lossy UTF-8).
//! - `DELETE /__mock/requests`: forget recorded requests and reset counters.
//! - `GET /__mock/stats`: `{"total": N, "by_key": {"key": N, ...}}`.
//! - `POST /__mock/script`: `{"key": "k", "behaviour": "valid" | "unauthorized"
//!   | "rate_limited" | "server_error" | "quota_exhausted" | "slow" | "cut" |
//!   "status" | "invalid_key_400" | "flaky", "retry_after_secs": 1,
//!   "delay_ms": 200, "after_frames": 2, "status": 503, "per_mille": 250}`
//!   (the numeric fields are optional except `status` for `status`).
//!
//! # Request errors
//!
//! A non-empty body of a JSON route that does not parse gets the provider's
//! native 400 for malformed JSON, and with
//! [`MockConfig::context_window`] set a longer request gets its 400 for a
//! prompt over the context window, as the real APIs answer (after the key
//! is accepted).
//! - `DELETE /__mock/script`: clear all scripts.

mod answer;
mod anthropic;
mod behaviour;
mod body;
mod control;
mod credential;
mod error;
mod gemini;
mod openai;
mod record;
mod reply;
mod routes;
mod server;
mod sse;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use behaviour::Behaviour;
pub use record::ReceivedRequest;

use server::Shared;

/// Settings of a [`MockUpstream`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MockConfig {
    /// Text frames per streamed answer (default 5).
    pub sse_frames: usize,
    /// Delay between consecutive text frames (default zero).
    pub sse_pace: Duration,
    /// Capacity of the request ring (default 10 000); zero disables
    /// recording of requests, counters keep working.
    pub record_capacity: usize,
    /// The models' context window in input tokens (a quarter of the body's
    /// bytes); a longer request gets the provider's native 400 for a prompt
    /// that is too long. Default: no limit.
    pub context_window: Option<u64>,
    /// Seed of the generator behind [`Behaviour::Flaky`] (default 1).
    pub seed: u64,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            sse_frames: 5,
            sse_pace: Duration::ZERO,
            record_capacity: 10_000,
            context_window: None,
            seed: 1,
        }
    }
}

impl MockConfig {
    /// Sets [`sse_frames`](Self::sse_frames).
    #[must_use]
    pub fn with_sse_frames(mut self, frames: usize) -> Self {
        self.sse_frames = frames;
        self
    }

    /// Sets [`sse_pace`](Self::sse_pace).
    #[must_use]
    pub fn with_sse_pace(mut self, pace: Duration) -> Self {
        self.sse_pace = pace;
        self
    }

    /// Sets [`record_capacity`](Self::record_capacity).
    #[must_use]
    pub fn with_record_capacity(mut self, capacity: usize) -> Self {
        self.record_capacity = capacity;
        self
    }

    /// Sets [`context_window`](Self::context_window).
    #[must_use]
    pub fn with_context_window(mut self, tokens: u64) -> Self {
        self.context_window = Some(tokens);
        self
    }

    /// Sets [`seed`](Self::seed).
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// A running mock upstream. The server stops when this is dropped or
/// [`shut down`](Self::shutdown).
#[derive(Debug)]
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropping the sender stops the server.
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl MockUpstream {
    /// Starts a mock on `127.0.0.1` with an ephemeral port and the default
    /// configuration.
    pub async fn start() -> std::io::Result<MockUpstream> {
        Self::start_with(MockConfig::default()).await
    }

    /// Starts a mock on `127.0.0.1` with an ephemeral port.
    pub async fn start_with(config: MockConfig) -> std::io::Result<MockUpstream> {
        Self::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    /// Starts a mock listening on `addr`. Must be called within a Tokio
    /// runtime, which then runs the server.
    pub async fn bind(addr: SocketAddr, config: MockConfig) -> std::io::Result<MockUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server::run(listener, Arc::clone(&shared), stopped));
        Ok(MockUpstream {
            addr,
            shared,
            stop,
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes requests presenting `key` follow `behaviour` until cleared.
    pub fn script(&self, key: &str, behaviour: Behaviour) {
        self.shared.scripts.set(key, behaviour);
    }

    /// Removes all scripts; keys fall back to the naming convention.
    pub fn clear_scripts(&self) {
        self.shared.scripts.clear();
    }

    /// The recorded requests, oldest first.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.shared.recorder.received()
    }

    /// Forgets recorded requests and resets all counters.
    pub fn clear_received(&self) {
        self.shared.recorder.clear();
    }

    /// Number of requests per presented key (requests without a key are
    /// only in [`total_requests`](Self::total_requests)).
    pub fn requests_by_key(&self) -> BTreeMap<String, u64> {
        self.shared.recorder.by_key()
    }

    /// Number of provider requests received (control endpoints excluded).
    pub fn total_requests(&self) -> u64 {
        self.shared.recorder.total()
    }

    /// Stops accepting connections, lets in-flight requests finish for up
    /// to a second, aborts the rest and waits until the server has stopped.
    pub async fn shutdown(self) {
        let MockUpstream { stop, task, .. } = self;
        let _ = stop.send(());
        let _ = task.await;
    }
}
