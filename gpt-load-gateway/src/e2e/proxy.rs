//! Proxy behaviour through the running gateway (SQLite; the storage-dependent behaviour runs on
//! every backend in `storage.rs`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use gpt_load_e2e::{Behaviour, MockConfig, MockUpstream};
use gpt_load_tower::keys::KeyState;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use super::harness::{Harness, PROXY_KEY, group};
use crate::{db::test_support::TestDb, jobs};

const GOOD_A: &str = "sk-good-alpha-0123456789";
const GOOD_B: &str = "sk-good-beta-0123456789";

async fn gateway(groups: impl FnOnce(&str) -> Vec<Value>, env: &[(&str, &str)]) -> Harness {
    gateway_with(MockConfig::default(), groups, env).await
}

async fn gateway_with(
    mock: MockConfig,
    groups: impl FnOnce(&str) -> Vec<Value>,
    env: &[(&str, &str)],
) -> Harness {
    let mock = MockUpstream::start_with(mock).await.unwrap();
    let groups = groups(&mock.url());
    Harness::start(TestDb::sqlite().await, mock, groups, env).await
}

fn key_state(h: &Harness, group: &str, key: &str) -> (KeyState, u32) {
    let slot = h
        .running()
        .registry
        .pool()
        .keys(group)
        .into_iter()
        .find(|k| k.secret().expose() == key)
        .expect("key in pool");
    (slot.state(), slot.consecutive_failures())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotates_across_keys_and_never_forwards_the_proxy_key() {
    let h = gateway(|up| vec![group("g", up, &[GOOD_A, GOOD_B], json!({}))], &[]).await;
    for _ in 0..4 {
        let (status, _, body) = h.send(h.chat("g", false)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(String::from_utf8_lossy(&body).contains("hello from gpt-4o-mini"));
    }
    let by_key = h.mock.requests_by_key();
    assert_eq!((by_key.get(GOOD_A), by_key.get(GOOD_B)), (Some(&2), Some(&2)));
    assert!(
        h.mock
            .received()
            .iter()
            .all(|r| r.credential.as_deref() != Some(PROXY_KEY))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_on_another_key_after_500_429_and_transport_errors() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let h = gateway(
        |up| {
            let mut flaky = group(
                "flaky",
                &dead,
                &["sk-flaky-one-0123456789", "sk-flaky-two-0123456789"],
                json!({}),
            );
            flaky["upstreams"] = json!([{"url": dead, "weight": 1}, {"url": up, "weight": 1}]);
            vec![
                group("five", up, &["mock-500-five-0123456789", GOOD_A], json!({})),
                group("rate", up, &["mock-429-rate-0123456789", GOOD_B], json!({})),
                flaky,
            ]
        },
        &[],
    )
    .await;
    for g in ["five", "rate", "flaky"] {
        let (status, _, _) = h.send(h.chat(g, false)).await;
        assert_eq!(status, StatusCode::OK, "{g}: retried on the other key");
    }
    let by_key = h.mock.requests_by_key();
    assert_eq!(by_key.get("mock-500-five-0123456789"), Some(&1));
    assert_eq!(by_key.get("mock-429-rate-0123456789"), Some(&1));
    assert_eq!(by_key.get(GOOD_A), Some(&1));
    assert_eq!(by_key.get(GOOD_B), Some(&1));
    assert_eq!(
        by_key.get("sk-flaky-two-0123456789"),
        Some(&1),
        "the retry went to the other key and upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_is_not_retried() {
    let h = gateway(|up| vec![group("g", up, &[GOOD_A, GOOD_B], json!({}))], &[]).await;
    h.mock.script(GOOD_A, Behaviour::Status(404));
    let (status, _, _) = h.send(h.chat("g", false)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(h.mock.total_requests(), 1);
    assert_eq!(
        key_state(&h, "g", GOOD_A),
        (KeyState::Active, 0),
        "a 404 does not count against the key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blacklists_after_n_consecutive_failures_and_not_before() {
    let bad = "mock-401-bad-0123456789";
    let h = gateway(
        |up| vec![group("g", up, &[bad, GOOD_A], json!({"blacklist_threshold": 3}))],
        &[],
    )
    .await;
    let mut failures_seen = 0;
    while failures_seen < 3 {
        let before = h.mock.requests_by_key().get(bad).copied().unwrap_or(0);
        assert_eq!(h.send(h.chat("g", false)).await.0, StatusCode::OK);
        let after = h.mock.requests_by_key().get(bad).copied().unwrap_or(0);
        if after > before {
            failures_seen += 1;
            let (state, failures) = key_state(&h, "g", bad);
            assert_eq!(failures, failures_seen as u32);
            let expected = if failures_seen < 3 {
                KeyState::Degraded
            } else {
                KeyState::Invalid
            };
            assert_eq!(state, expected, "after {failures_seen} failures");
        }
    }
    for _ in 0..4 {
        h.send(h.chat("g", false)).await;
    }
    assert_eq!(
        h.mock.requests_by_key().get(bad),
        Some(&3),
        "a blacklisted key gets no traffic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_cool_a_key_down_without_blacklisting() {
    let limited = "sk-limited-0123456789";
    let h = gateway(
        |up| {
            vec![group(
                "g",
                up,
                &[limited, GOOD_A],
                json!({"blacklist_threshold": 1}),
            )]
        },
        &[],
    )
    .await;
    h.mock.script(
        limited,
        Behaviour::RateLimited {
            retry_after: Duration::from_secs(30),
        },
    );
    for _ in 0..3 {
        assert_eq!(h.send(h.chat("g", false)).await.0, StatusCode::OK);
    }
    assert_eq!(key_state(&h, "g", limited), (KeyState::Cooling, 0));
    assert_eq!(
        h.mock.requests_by_key().get(limited),
        Some(&1),
        "a cooling key is skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_frames_arrive_before_the_stream_ends() {
    let mock = MockConfig::default()
        .with_sse_frames(5)
        .with_sse_pace(Duration::from_millis(80));
    let h = gateway_with(mock, |up| vec![group("g", up, &[GOOD_A], json!({}))], &[]).await;
    let res = h.open(h.chat("g", true)).await;
    assert_eq!(res.headers()["x-accel-buffering"], "no");
    let mut body = res.into_body();
    let mut arrivals: Vec<(Instant, String)> = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            arrivals.push((Instant::now(), String::from_utf8_lossy(&data).into_owned()));
        }
    }
    let chunks = arrivals
        .iter()
        .filter(|(_, f)| f.contains("chat.completion.chunk"))
        .count();
    assert!(chunks >= 5, "frames were coalesced: {} reads", arrivals.len());
    assert!(arrivals.first().unwrap().0 < arrivals.last().unwrap().0);
    assert!(arrivals.last().unwrap().1.contains("[DONE]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_header_timeout_fires_and_is_reported() {
    let slow = "sk-slow-0123456789";
    let h = gateway(
        |up| vec![group("g", up, &[slow], json!({"response_header_timeout": 1}))],
        &[],
    )
    .await;
    h.mock
        .script(slow, Behaviour::SlowFirstByte(Duration::from_secs(5)));
    let (status, _, body) = h.send(h.chat("g", false)).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("response header timeout"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_idle_timeout_cuts_a_silent_stream() {
    let mock = MockConfig::default()
        .with_sse_frames(3)
        .with_sse_pace(Duration::from_millis(2_500));
    let mut h = gateway_with(
        mock,
        |up| vec![group("g", up, &[GOOD_A], json!({"stream_idle_timeout": 1}))],
        &[],
    )
    .await;
    let res = h.open(h.chat("g", true)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let collected = res.into_body().collect().await;
    assert!(collected.is_err(), "the stream is cut, not completed");
    h.stop().await;
    let logs = crate::repo::request_logs::list_recent(&h.test_db.db, 10)
        .await
        .unwrap();
    assert!(!logs[0].is_success);
    let error = &logs[0].error_message;
    assert!(
        error.contains("stream idle timeout"),
        "the log says which timeout fired: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors() {
    let h = gateway(
        |up| vec![group("g", up, &[GOOD_A], json!({}))],
        &[("MAX_REQUEST_BODY_MB", "1")],
    )
    .await;
    let post = |path: &str, key: Option<&str>, body: Bytes| {
        let mut req = Request::post(format!("{}{path}", h.base)).header("content-type", "application/json");
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        req.body(Full::new(body)).unwrap()
    };
    let (status, _, body) = h
        .send(post(
            "/proxy/g/v1/chat/completions",
            None,
            Bytes::from_static(b"{}"),
        ))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"]["type"],
        "authentication_error"
    );
    let (status, ..) = h
        .send(post(
            "/proxy/g/v1/chat/completions",
            Some("wrong"),
            Bytes::from_static(b"{}"),
        ))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, ..) = h
        .send(post(
            "/proxy/nope/v1/chat/completions",
            Some(PROXY_KEY),
            Bytes::from_static(b"{}"),
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // An oversized body is refused from its Content-Length, before it is read: a raw client that
    // announces 2 MiB and sends almost nothing still gets its 413.
    let mut raw = tokio::net::TcpStream::connect(h.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /proxy/g/v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {PROXY_KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{{",
        2 * 1024 * 1024
    );
    tokio::io::AsyncWriteExt::write_all(&mut raw, head.as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0; 64];
    let read = tokio::io::AsyncReadExt::read(&mut raw, &mut answer)
        .await
        .unwrap();
    let status_line = String::from_utf8_lossy(&answer[..read]).into_owned();
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
    assert_eq!(h.mock.total_requests(), 0);

    let malformed = Bytes::from_static(b"{\"model\": \"gpt-4o-mini\", broken");
    let (status, _, body) = h
        .send(post("/proxy/g/v1/chat/completions", Some(PROXY_KEY), malformed))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(
        h.mock.total_requests(),
        0,
        "malformed JSON is refused by the gateway without spending a key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_completes_an_in_flight_stream() {
    let mock = MockConfig::default()
        .with_sse_frames(5)
        .with_sse_pace(Duration::from_millis(200));
    let mut h = gateway_with(mock, |up| vec![group("g", up, &[GOOD_A], json!({}))], &[]).await;
    let res = h.open(h.chat("g", true)).await;
    let reader = tokio::spawn(async move { res.into_body().collect().await.map(|b| b.to_bytes()) });
    let summary = h.stop().await;
    assert!(summary.drained, "the stream finished within the grace period");
    let body = reader.await.unwrap().expect("the stream completed");
    assert!(String::from_utf8_lossy(&body).contains("[DONE]"));
    let logs = crate::repo::request_logs::list_recent(&h.test_db.db, 10)
        .await
        .unwrap();
    assert_eq!(
        logs.len(),
        1,
        "the request log was flushed at shutdown: {summary:?}"
    );
    assert!(logs[0].is_stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_restores_a_blacklisted_key() {
    let flaky = "sk-flaky-0123456789";
    let h = gateway(
        |up| {
            vec![group(
                "g",
                up,
                &[flaky, GOOD_A],
                json!({"blacklist_threshold": 1}),
            )]
        },
        &[],
    )
    .await;
    h.mock.script(flaky, Behaviour::Unauthorized);
    for _ in 0..2 {
        h.send(h.chat("g", false)).await;
    }
    assert_eq!(key_state(&h, "g", flaky).0, KeyState::Invalid);
    let registry = &h.running().registry;
    let policy = registry.catalog().policy("g").unwrap();
    assert_eq!(
        jobs::validate::validate_group(&policy, registry).await,
        0,
        "still failing"
    );
    h.mock.clear_scripts();
    assert_eq!(jobs::validate::validate_group(&policy, registry).await, 1);
    assert_eq!(key_state(&h, "g", flaky), (KeyState::Active, 0));
    let validation = h
        .mock
        .received()
        .into_iter()
        .filter(|r| r.credential.as_deref() == Some(flaky))
        .last()
        .unwrap();
    assert_eq!(validation.path, "/v1/chat/completions");
    assert!(
        String::from_utf8_lossy(&validation.body).contains("gpt-4o-mini"),
        "the group's test model"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_channel_aggregates_and_model_lists() {
    let h = gateway(
        |up| {
            let mut gemini = group("gem", up, &["gemini-upstream-key-0001"], json!({}));
            gemini["channel_type"] = json!("gemini");
            let mut claude = group("claude", up, &["anthropic-upstream-key-0001"], json!({}));
            claude["channel_type"] = json!("anthropic");
            let mut aliased = group("aliased", up, &[GOOD_A], json!({}));
            aliased["model_redirect_rules"] = json!({"alias-model": "gpt-4o-mini"});
            let mut strict = group("strict", up, &[GOOD_B], json!({}));
            strict["model_redirect_rules"] = json!({"only-this": "gpt-4o-mini"});
            strict["model_redirect_strict"] = json!(true);
            vec![
                gemini,
                claude,
                aliased,
                strict,
                group("sub-a", up, &["sub-a-upstream-key-0001"], json!({})),
                group("sub-b", up, &["sub-b-upstream-key-0001"], json!({})),
                json!({"name": "all", "group_type": "aggregate", "channel_type": "openai",
                       "sub_groups": [{"group": "sub-a", "weight": 1}, {"group": "sub-b", "weight": 1}]}),
            ]
        },
        &[],
    )
    .await;
    let post = |path: &str, headers: &[(&str, &str)], body: &str| {
        let mut req = Request::post(format!("{}{path}", h.base)).header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(Full::from(body.to_owned())).unwrap()
    };

    // Gemini: the proxy key in `?key=` is replaced by the upstream key.
    let path = format!("/proxy/gem/v1beta/models/gemini-2.0-flash:generateContent?key={PROXY_KEY}");
    let (status, _, body) = h
        .send(post(&path, &[], r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#))
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let seen = h.mock.received().pop().unwrap();
    assert_eq!(seen.path, "/v1beta/models/gemini-2.0-flash:generateContent");
    assert_eq!(seen.query.as_deref(), Some("key=gemini-upstream-key-0001"));

    // Anthropic: `x-api-key` carries the proxy key in and the upstream key out.
    let (status, ..) = h
        .send(post(
            "/proxy/claude/v1/messages",
            &[("x-api-key", PROXY_KEY), ("anthropic-version", "2023-06-01")],
            r#"{"model":"claude-3-haiku-20240307","max_tokens":10,"messages":[]}"#,
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let seen = h.mock.received().pop().unwrap();
    assert_eq!(seen.headers["x-api-key"], "anthropic-upstream-key-0001");

    // Aggregate: requests alternate between the sub-groups' keys.
    for _ in 0..4 {
        assert_eq!(h.send(h.chat("all", false)).await.0, StatusCode::OK);
    }
    let by_key = h.mock.requests_by_key();
    assert_eq!(
        (
            by_key.get("sub-a-upstream-key-0001"),
            by_key.get("sub-b-upstream-key-0001")
        ),
        (Some(&2), Some(&2))
    );

    // Model lists include the redirect rules' models; strict lists only them.
    let list = |group: &str| {
        Request::get(format!("{}/proxy/{group}/v1/models", h.base))
            .header("authorization", format!("Bearer {PROXY_KEY}"))
            .body(Full::default())
            .unwrap()
    };
    let ids = |body: Bytes| -> Vec<String> {
        let v: Value = serde_json::from_slice(&body).unwrap();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, _, body) = h.send(list("aliased")).await;
    assert_eq!(status, StatusCode::OK);
    let aliased = ids(body);
    assert!(
        aliased.contains(&"alias-model".to_owned()) && aliased.len() > 1,
        "{aliased:?}"
    );
    let (_, _, body) = h.send(list("strict")).await;
    assert_eq!(ids(body), ["only-this"]);

    // A redirect rewrites the model the upstream sees.
    let aliased_chat = json!({"model": "alias-model", "messages": []}).to_string();
    let auth = format!("Bearer {PROXY_KEY}");
    h.send(post(
        "/proxy/aliased/v1/chat/completions",
        &[("authorization", auth.as_str())],
        &aliased_chat,
    ))
    .await;
    let seen = h.mock.received().pop().unwrap();
    assert!(String::from_utf8_lossy(&seen.body).contains("\"gpt-4o-mini\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_changes_apply_to_the_next_request() {
    let bad = "mock-500-hot-0123456789";
    let h = gateway(
        |up| vec![group("g", up, &[bad, GOOD_A], json!({"blacklist_threshold": 0}))],
        &[],
    )
    .await;
    // With the default three retries the failing key is retried on the good one.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(h.send(h.chat("g", false)).await.0);
    }
    assert_eq!(statuses, [StatusCode::OK, StatusCode::OK]);

    let running = h.running();
    let mut update = serde_json::Map::new();
    update.insert("max_retries".to_owned(), json!(0));
    running.registry.update_settings(&update).await.unwrap();
    Harness::eventually(Duration::from_secs(5), || async {
        running
            .registry
            .catalog()
            .policy("g")
            .is_some_and(|p| p.retry.max_retries == 0)
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(h.send(h.chat("g", false)).await.0);
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::INTERNAL_SERVER_ERROR],
        "no retry any more"
    );
}

/// `(overhead, upstream)` in milliseconds from a `Server-Timing` header.
fn server_timing(headers: &http::HeaderMap) -> (f64, f64) {
    let value = headers["server-timing"].to_str().unwrap();
    let dur = |name: &str| -> f64 {
        value
            .split(", ")
            .find_map(|part| part.strip_prefix(name)?.strip_prefix(";dur="))
            .unwrap_or_else(|| panic!("{name} in {value}"))
            .parse()
            .unwrap()
    };
    (dur("overhead"), dur("upstream"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_tells_the_gateways_own_overhead() {
    let h = gateway(
        |up| vec![group("timed", up, &["mock-slow-timing-0123456789"], json!({}))],
        &[],
    )
    .await;
    let sent = Instant::now();
    let (status, headers, _) = h.send(h.chat("timed", false)).await;
    let seen = sent.elapsed().as_secs_f64() * 1_000.0;
    assert_eq!(status, StatusCode::OK);
    let (overhead, upstream) = server_timing(&headers);
    assert!(
        upstream >= 200.0,
        "the mock waits 200 ms before its head: upstream {upstream} ms"
    );
    assert!(
        overhead >= 0.0 && overhead + upstream <= seen,
        "overhead {overhead} + upstream {upstream} within the {seen} ms the client saw"
    );

    // A rejection never reached an upstream: all of it is overhead.
    let mut wrong = h.chat("timed", false);
    wrong
        .headers_mut()
        .insert("authorization", "Bearer sk-wrong".parse().unwrap());
    let (status, headers, _) = h.send(wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(server_timing(&headers).1, 0.0);

    // Streams carry it on their head too.
    let (_, headers, _) = h.send(h.chat("timed", true)).await;
    assert!(server_timing(&headers).1 >= 200.0);

    let metrics = Request::get(format!("{}/metrics", h.base))
        .body(Full::default())
        .unwrap();
    let (_, _, text) = h.send(metrics).await;
    let text = String::from_utf8(text.to_vec()).unwrap();
    let count = text
        .lines()
        .find_map(|l| l.strip_prefix("gpt_load_overhead_seconds_count "))
        .expect("the overhead histogram is exported");
    assert!(count.trim().parse::<u64>().unwrap() >= 3, "{count}");
    assert!(text.contains("gpt_load_overhead_seconds_bucket{le=\"0.0001\"}"));
    // The request metrics of the group, recorded through its kept handles.
    let value = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{prefix} is exported:\n{text}"))
            .trim()
            .parse::<f64>()
            .unwrap()
    };
    assert!(value("gpt_load_requests_total{group=\"timed\",status=\"200\"} ") >= 2.0);
    assert!(value("gpt_load_request_duration_seconds_count{group=\"timed\"} ") >= 2.0);
    assert!(value("gpt_load_upstream_ttfb_seconds_count{group=\"timed\"} ") >= 2.0);
}
