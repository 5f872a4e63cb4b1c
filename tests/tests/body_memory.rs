//! Request-body memory of the built `gpt-load-gateway` binary under parallel chunked uploads.
//!
//! Sixteen 40 MiB uploads without `Content-Length` arrive at once at a gateway whose body cap is
//! 48 MiB and whose in-flight body budget is 96 MiB, so at most two of them fit in memory at a
//! time. The gateway's peak resident memory (`VmHWM` in `/proc/<pid>/status`) may grow by the
//! budget plus [`BASELINE_ALLOWANCE`], and no more: uploads that do not fit are shed with
//! `503` + `Retry-After` in the client's error format instead of growing the process. A later
//! upload of the same size goes through, so the budget is released when bodies are done.
//!
//! The gateway binary is built with the cargo running this test (as in `sdk.rs`; a no-op when it
//! is up to date; `GPT_LOAD_GATEWAY_BIN` names a prebuilt one) and runs on SQLite in a
//! temporary directory in front of the in-process mock upstream, whose memory is this process's,
//! not the gateway's. Linux only (`/proc`).

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use gpt_load_e2e::{GatewayCommand, GatewayProcess, MockConfig, MockUpstream};
use http::{Request, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::{Value, json};

const MIB: usize = 1024 * 1024;
/// `MAX_REQUEST_BODY_MB` for this test: one upload fits.
const BODY_LIMIT_MB: usize = 48;
/// `MAX_INFLIGHT_BODY_MB` for this test: two uploads fit at once.
const BUDGET_MB: usize = 96;
const UPLOADS: usize = 16;
const UPLOAD_BYTES: usize = 40 * MIB;
/// Frame size of the chunked uploads.
const FRAME_BYTES: usize = 64 * 1024;
/// Peak memory the gateway may add besides the budgeted bodies: per-connection read and write
/// buffers of 16 connections, the upstream client's connections, tasks, the request log and
/// the allocator's slack.
const BASELINE_ALLOWANCE_MB: usize = 40;
const BASELINE_ALLOWANCE: usize = BASELINE_ALLOWANCE_MB * MIB;
/// The admin key.
const AUTH_KEY: &str = "sk-body-memory-admin-0123456789";
/// The group's proxy key (the admin key is never a proxy key).
const PROXY_KEY: &str = "sk-body-memory-proxy-0123456789";
const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_chunked_uploads_stay_within_the_body_budget() {
    let mock = MockUpstream::start_with(MockConfig::default().with_record_capacity(0))
        .await
        .unwrap();
    let gateway = start_gateway(&mock.url());
    let client: Client<HttpConnector, Upload> = Client::builder(TokioExecutor::new()).build_http();

    // Warm up (connections, pools, the first log batch) before the baseline is taken.
    let (status, _) = upload(&client, gateway.base(), 1024).await;
    assert_eq!(status, StatusCode::OK);
    let before = gateway.peak_rss();

    let mut tasks = Vec::new();
    for _ in 0..UPLOADS {
        let client = client.clone();
        let base = gateway.base().to_owned();
        tasks.push(tokio::spawn(
            async move { upload(&client, &base, UPLOAD_BYTES).await },
        ));
    }
    let (mut served, mut shed) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            (StatusCode::OK, _) => served += 1,
            (StatusCode::SERVICE_UNAVAILABLE, answer) => {
                shed += 1;
                let error = answer.expect("a shed upload gets an answer");
                assert_eq!(error["error"]["code"], "body_budget_exhausted", "{error}");
            }
            (status, answer) => panic!("unexpected answer {status}: {answer:?}"),
        }
    }
    let after = gateway.peak_rss();
    let growth = after.saturating_sub(before);
    eprintln!(
        "served {served}, shed {shed}; peak RSS {} MiB → {} MiB (+{} MiB)",
        before / MIB,
        after / MIB,
        growth / MIB
    );
    assert!(shed > 0, "16 × 40 MiB cannot fit a 96 MiB budget");
    assert!(
        growth <= BUDGET_MB * MIB + BASELINE_ALLOWANCE,
        "peak RSS grew by {} MiB, more than the {BUDGET_MB} MiB budget + {BASELINE_ALLOWANCE_MB} MiB",
        growth / MIB
    );

    // Everything was released: an upload of the same size goes through now.
    let (status, answer) = upload(&client, gateway.base(), UPLOAD_BYTES).await;
    assert_eq!(status, StatusCode::OK, "{answer:?}");
}

/// Sends a chat completion of about `bytes` bytes, chunked; returns the status and, for an
/// error, the JSON answer. A shed upload may see its connection closed before the rest of its
/// body is sent; the answer still arrives first.
async fn upload(
    client: &Client<HttpConnector, Upload>,
    base: &str,
    bytes: usize,
) -> (StatusCode, Option<Value>) {
    let request = Request::post(format!("{base}/proxy/big/v1/chat/completions"))
        .header(header::AUTHORIZATION, format!("Bearer {PROXY_KEY}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Upload::new(bytes))
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, client.request(request))
        .await
        .expect("the gateway answers in time")
        .expect("the gateway answers");
    let status = response.status();
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        assert_eq!(retry_after.as_ref().map(|v| v.as_bytes()), Some(&b"1"[..]));
    }
    let answer = (!status.is_success()).then(|| serde_json::from_slice(&body).unwrap_or(Value::Null));
    (status, answer)
}

/// A JSON chat request of a given size, streamed in [`FRAME_BYTES`] frames with no declared
/// length (so it goes out chunked). Frames share one buffer: the test's own memory stays small.
struct Upload {
    head: Option<Bytes>,
    filler: Bytes,
    remaining: usize,
    tail: Option<Bytes>,
}

impl Upload {
    fn new(bytes: usize) -> Self {
        let head = Bytes::from_static(br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":""#);
        let tail = Bytes::from_static(br#""}]}"#);
        Self {
            remaining: bytes.saturating_sub(head.len() + tail.len()),
            head: Some(head),
            filler: Bytes::from(vec![b'x'; FRAME_BYTES]),
            tail: Some(tail),
        }
    }
}

impl Body for Upload {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(head) = self.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        if self.remaining > 0 {
            let n = self.remaining.min(FRAME_BYTES);
            self.remaining -= n;
            return Poll::Ready(Some(Ok(Frame::data(self.filler.slice(..n)))));
        }
        Poll::Ready(self.tail.take().map(|tail| Ok(Frame::data(tail))))
    }
}

/// The gateway binary with the test's body limits, on SQLite in front of `upstream`.
fn start_gateway(upstream: &str) -> GatewayProcess {
    let group = json!({
        "name": "big",
        "channel_type": "openai",
        "test_model": "gpt-4o-mini",
        "upstreams": [{"url": upstream, "weight": 1}],
        "keys": ["sk-body-memory-upstream-0001"],
        "proxy_keys": PROXY_KEY,
        "config": {},
    });
    GatewayCommand::new("body_memory", AUTH_KEY)
        .bootstrap(&json!({ "groups": [group] }))
        .env("MAX_REQUEST_BODY_MB", BODY_LIMIT_MB.to_string())
        .env("MAX_INFLIGHT_BODY_MB", BUDGET_MB.to_string())
        .patience(PATIENCE)
        .start()
}
