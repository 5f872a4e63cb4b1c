//! The built `gpt-load-gateway` binary on one CPU, as `taskset` (or a container's CPU quota)
//! leaves it: it runs its single-threaded runtime and still serves everything a node serves.
//!
//! Requests arrive 32 at a time, a stream passes through frame by frame, every request has its
//! log row after the flush, and `SIGTERM` ends the process cleanly. The gateway runs on SQLite in
//! a temporary directory in front of the in-process mock upstream. Linux only (`taskset`,
//! `sched_getaffinity`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use gpt_load_e2e::{GatewayCommand, GatewayProcess, MockConfig, MockUpstream};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::{Value, json};

const AUTH_KEY: &str = "sk-one-cpu-admin-0123456789";
const PROXY_KEY: &str = "sk-one-cpu-proxy-0123456789";
const REQUESTS: usize = 320;
const CONCURRENCY: usize = 32;
const STREAM_FRAMES: usize = 5;
const PATIENCE: Duration = Duration::from_secs(60);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_cpu_the_gateway_runs_one_thread_and_serves_logs_streams_and_stops() {
    let cpu = first_cpu();
    let mock = MockUpstream::start_with(MockConfig::default().with_record_capacity(0))
        .await
        .unwrap();
    let mut gateway = start_gateway(&mock.url(), &cpu);
    assert!(
        gateway.log().contains("async runtime: one thread"),
        "{}",
        gateway.log()
    );
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // Requests, CONCURRENCY at a time.
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..CONCURRENCY {
        let (client, base) = (client.clone(), gateway.base().to_owned());
        tasks.spawn(async move {
            let mut statuses = Vec::new();
            for _ in (worker..REQUESTS).step_by(CONCURRENCY) {
                statuses.push(chat(&client, &base, false).await.0);
            }
            statuses
        });
    }
    let statuses: Vec<StatusCode> = tasks.join_all().await.into_iter().flatten().collect();
    assert_eq!(statuses.len(), REQUESTS);
    assert!(statuses.iter().all(|s| *s == StatusCode::OK), "{statuses:?}");

    // A stream, frame by frame.
    let (status, body) = chat(&client, gateway.base(), true).await;
    assert_eq!(status, StatusCode::OK);
    let frames = body.lines().filter(|line| line.starts_with("data:")).count();
    // The text frames, the finish chunk and `[DONE]`.
    assert_eq!(frames, STREAM_FRAMES + 2, "{body}");

    // Every request has its log row once the writer has flushed.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let logged = final_logs(&client, gateway.base()).await;
        if logged == REQUESTS as i64 + 1 {
            break;
        }
        assert!(logged <= REQUESTS as i64 + 1, "{logged} log rows");
        assert!(Instant::now() < deadline, "{logged} of {} log rows", REQUESTS + 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    assert!(gateway.terminate().success(), "{}", gateway.log());
}

/// A chat completion through the gateway: the status and the body.
async fn chat(client: &HttpClient, base: &str, stream: bool) -> (StatusCode, String) {
    let body =
        json!({"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
    let request = Request::post(format!("{base}/proxy/one/v1/chat/completions"))
        .header(header::AUTHORIZATION, format!("Bearer {PROXY_KEY}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-mock-frames", STREAM_FRAMES.to_string())
        .header("x-mock-pace-ms", "5")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, client.request(request))
        .await
        .expect("the gateway answers in time")
        .expect("the gateway answers");
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// How many `final` request-log rows the admin API finds.
async fn final_logs(client: &HttpClient, base: &str) -> i64 {
    let request = Request::get(format!("{base}/api/logs?request_type=final&page_size=1"))
        .header(header::AUTHORIZATION, format!("Bearer {AUTH_KEY}"))
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.expect("the admin API answers");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let answer: Value = serde_json::from_slice(&body).unwrap();
    answer["data"]["pagination"]["total_items"]
        .as_i64()
        .unwrap_or_else(|| panic!("{answer}"))
}

/// The first CPU this process may run on.
fn first_cpu() -> String {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in /proc/self/status");
    // "0-1", "0,2-3", "3": the first number is a CPU this process may use.
    list.trim().chars().take_while(char::is_ascii_digit).collect()
}

/// The gateway binary pinned to `cpu`, on SQLite in front of `upstream`.
fn start_gateway(upstream: &str, cpu: &str) -> GatewayProcess {
    let group = json!({
        "name": "one",
        "channel_type": "openai",
        "test_model": "gpt-4o-mini",
        "upstreams": [{"url": upstream, "weight": 1}],
        "keys": ["sk-one-cpu-upstream-0001", "sk-one-cpu-upstream-0002"],
        "proxy_keys": PROXY_KEY,
        "config": {},
    });
    GatewayCommand::new("one_cpu", AUTH_KEY)
        .bootstrap(&json!({ "groups": [group] }))
        .cpu(cpu)
        .patience(PATIENCE)
        .start()
}
