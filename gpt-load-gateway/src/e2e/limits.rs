//! Key limits through the running gateway: a key at its limit is passed over while the group's
//! other keys serve, and with every key at a limit the client gets a `429` of the gateway's own
//! (`X-Gpt-Load-Limit`, `Retry-After`) in its SDK's error format, without an upstream call.

use gpt_load_e2e::MockUpstream;
use http::StatusCode;
use serde_json::{Value, json};

use super::harness::{Harness, group};
use crate::db::test_support::TestDb;

const KEY_A: &str = "sk-limit-a-0123456789";
const KEY_B: &str = "sk-limit-b-0123456789";
const KEY_C: &str = "sk-limit-c-0123456789";
const KEY_D: &str = "sk-limit-d-0123456789";
const KEY_E: &str = "sk-limit-e-0123456789";

async fn gateway() -> Harness {
    let mock = MockUpstream::start().await.unwrap();
    let up = mock.url();
    let mut claude = group("limited-claude", &up, &[KEY_C], json!({"key_rpm": 1}));
    claude["channel_type"] = json!("anthropic");
    let mut gemini = group("limited-gemini", &up, &[KEY_D], json!({"key_rpd": 1}));
    gemini["channel_type"] = json!("gemini");
    let groups = vec![
        group("limited", &up, &[KEY_A, KEY_B], json!({"key_rpm": 3})),
        claude,
        gemini,
        group("capped", &up, &[KEY_E], json!({"group_rpm": 2})),
        group("token-keys", &up, &[KEY_A, KEY_B], json!({"key_tpm": 10})),
        group("own-limits", &up, &[KEY_C, KEY_D], json!({"key_rpm": 1})),
        group("token-capped", &up, &[KEY_E], json!({"group_tpm": 10})),
        group(
            "one-at-a-time",
            &up,
            &[KEY_E],
            json!({"group_max_concurrency": 1}),
        ),
        group(
            "queued",
            &up,
            &[KEY_E],
            json!({"group_max_concurrency": 1, "limit_queue_timeout_ms": 10_000}),
        ),
    ];
    Harness::start(TestDb::sqlite().await, mock, groups, &[]).await
}

/// A streamed request the mock answers slowly: 100 frames, `pace_ms` apart.
fn slow_stream(h: &Harness, group: &str, pace_ms: u32) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = h.native(group, "openai", true, "slow");
    req.headers_mut().insert("x-mock-frames", "100".parse().unwrap());
    req.headers_mut().insert("x-mock-pace-ms", pace_ms.into());
    req
}

/// The status, the limit header, `Retry-After` in seconds, and the body.
async fn send(h: &Harness, group: &str, channel: &str) -> (StatusCode, Option<String>, Option<u64>, Value) {
    let (status, headers, body) = h.send(h.native(group, channel, false, "hi")).await;
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        header("x-gpt-load-limit"),
        header("retry-after").map(|v| v.parse().unwrap()),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_at_their_limits_are_passed_over_then_refused_in_the_clients_format() {
    let h = gateway().await;
    for _ in 0..6 {
        let (status, limit, ..) = send(&h, "limited", "openai").await;
        assert_eq!((status, limit), (StatusCode::OK, None));
    }
    let by_key = h.mock.requests_by_key();
    assert_eq!((by_key[KEY_A], by_key[KEY_B]), (3, 3), "each key took three");

    // Both keys at three in this minute: never a fourth for either, and no upstream call.
    let (status, limit, retry_after, body) = send(&h, "limited", "openai").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(limit.as_deref(), Some("key_rpm"));
    assert!(
        retry_after.is_some_and(|s| (1..=60).contains(&s)),
        "{retry_after:?}"
    );
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    assert_eq!(h.mock.total_requests(), 6);

    // Anthropic's and Gemini's shapes, and a per-day limit.
    assert_eq!(send(&h, "limited-claude", "anthropic").await.0, StatusCode::OK);
    let (status, limit, _, body) = send(&h, "limited-claude", "anthropic").await;
    assert_eq!(
        (status, limit.as_deref()),
        (StatusCode::TOO_MANY_REQUESTS, Some("key_rpm"))
    );
    assert_eq!(
        (&body["type"], &body["error"]["type"]),
        (&json!("error"), &json!("rate_limit_error"))
    );
    assert_eq!(send(&h, "limited-gemini", "gemini").await.0, StatusCode::OK);
    let (status, limit, retry_after, body) = send(&h, "limited-gemini", "gemini").await;
    assert_eq!(
        (status, limit.as_deref()),
        (StatusCode::TOO_MANY_REQUESTS, Some("key_rpd"))
    );
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED", "{body}");
    assert!(
        retry_after.is_some_and(|s| s <= 24 * 60 * 60),
        "until midnight UTC"
    );

    // The refusal is logged as the gateway's own 429 (the log writer batches: poll for it).
    let refused = || async {
        let (_, logs) = h
            .call_api("GET", "/logs?page_size=100&status_code=429", None)
            .await;
        let rows = logs["data"]["items"].as_array().cloned().unwrap_or_default();
        rows.into_iter()
            .filter(|row| row["group_name"] == "limited")
            .collect::<Vec<_>>()
    };
    Harness::eventually(std::time::Duration::from_secs(10), || async {
        !refused().await.is_empty()
    })
    .await;
    let rows = refused().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0]["key_value"].as_str().unwrap_or_default(),
        "",
        "no key was spent: {rows:?}"
    );

    // Key-health explains it: the limits, and both keys at theirs.
    let id = h.group_id("limited").await;
    let (_, health) = h.call_api("GET", &format!("/groups/{id}/key-health"), None).await;
    let limits = &health["data"]["limits"];
    assert_eq!(
        (&limits["key_rpm"], &limits["group_rpm"]),
        (&json!(3), &json!(0)),
        "{health}"
    );
    let at_limit = limits["keys_at_limit"].as_array().unwrap();
    assert_eq!(at_limit.len(), 2, "{health}");
    for key in at_limit {
        assert_eq!(
            (&key["limit"], &key["last_minute"]),
            (&json!("key_rpm"), &json!(3)),
            "{key}"
        );
    }

    // Counted by limit, for the group.
    let metrics = http::Request::get(format!("{}/metrics", h.base))
        .body(http_body_util::Full::default())
        .unwrap();
    let (_, _, text) = h.send(metrics).await;
    let text = String::from_utf8_lossy(&text);
    let rejections = text
        .lines()
        .find(|l| l.starts_with("gpt_load_limit_rejections_total{") && l.contains("group=\"limited\""))
        .unwrap_or_default();
    assert!(rejections.contains("limit=\"key_rpm\""), "{text}");
    assert!(rejections.ends_with(" 1"), "{rejections}");

    // A saved change applies to the next request: no limit, no refusal.
    let (status, body) = h
        .call_api(
            "PUT",
            &format!("/groups/{id}"),
            Some(json!({"config": {"key_rpm": 0}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(send(&h, "limited", "openai").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_limit_is_a_group_setting_with_a_system_default() {
    let h = gateway().await;
    let (_, options) = h.call_api("GET", "/groups/config-options", None).await;
    let keys: Vec<&str> = options["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["key"].as_str())
        .collect();
    for key in ["key_rpm", "key_rpd", "key_max_concurrency"] {
        assert!(keys.contains(&key), "{key} in {keys:?}");
    }
    // The system default applies to groups that do not override it.
    let (status, body) = h
        .call_api("PUT", "/settings", Some(json!({"key_max_concurrency": 1})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut slow = h.native("limited-claude", "anthropic", true, "slow");
    slow.headers_mut().insert("x-mock-frames", "100".parse().unwrap());
    slow.headers_mut()
        .insert("x-mock-pace-ms", "100".parse().unwrap());
    let held = h.open(slow).await;
    assert_eq!(held.status(), StatusCode::OK);
    let (status, limit, ..) = send(&h, "limited-claude", "anthropic").await;
    assert_eq!(
        (status, limit.as_deref()),
        (StatusCode::TOO_MANY_REQUESTS, Some("key_concurrency"))
    );
    // The client goes away: its stream no longer counts, and the key's minute is what is left.
    drop(held);
    Harness::eventually(std::time::Duration::from_secs(5), || async {
        send(&h, "limited-claude", "anthropic").await.1.as_deref() == Some("key_rpm")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_over_its_own_limits_is_refused_or_queued() {
    let h = gateway().await;
    // The group's minute: two, then a refusal naming it, without an upstream call.
    for _ in 0..2 {
        assert_eq!(send(&h, "capped", "openai").await.0, StatusCode::OK);
    }
    let upstream_calls = h.mock.total_requests();
    let (status, limit, retry_after, body) = send(&h, "capped", "openai").await;
    assert_eq!(
        (status, limit.as_deref()),
        (StatusCode::TOO_MANY_REQUESTS, Some("group_rpm"))
    );
    assert!(
        retry_after.is_some_and(|s| (1..=60).contains(&s)),
        "{retry_after:?}"
    );
    assert_eq!(
        body["error"]["message"],
        "rate limit 'group_rpm' reached, retry later"
    );
    assert_eq!(h.mock.total_requests(), upstream_calls);
    // Other groups on the same key are not limited by it.
    assert_eq!(send(&h, "one-at-a-time", "openai").await.0, StatusCode::OK);

    // One at a time, shed at once: a held stream keeps the next request out.
    let held = h.open(slow_stream(&h, "one-at-a-time", 100)).await;
    assert_eq!(held.status(), StatusCode::OK);
    let (status, limit, ..) = send(&h, "one-at-a-time", "openai").await;
    assert_eq!(
        (status, limit.as_deref()),
        (StatusCode::TOO_MANY_REQUESTS, Some("group_concurrency"))
    );
    drop(held);
    Harness::eventually(std::time::Duration::from_secs(5), || async {
        send(&h, "one-at-a-time", "openai").await.0 == StatusCode::OK
    })
    .await;

    // One at a time with a queue: the next request waits for the stream to end, then is served.
    let held = h.open(slow_stream(&h, "queued", 5)).await;
    assert_eq!(held.status(), StatusCode::OK);
    let waiting = {
        let req = h.native("queued", "openai", false, "after");
        let client = h.send(req);
        tokio::time::timeout(std::time::Duration::from_secs(10), client)
    };
    let read = async {
        let body = http_body_util::BodyExt::collect(held.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert!(
            String::from_utf8_lossy(&body).contains("[DONE]"),
            "the held stream ran to its end"
        );
    };
    let (queued, ()) = tokio::join!(waiting, read);
    let (status, headers, _) = queued.expect("the queued request is answered within its queue time");
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("x-gpt-load-limit").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_per_minute_count_the_reported_usage_of_keys_and_groups() {
    let h = gateway().await;
    // Each answer reports more than 10 tokens: a key is at its `key_tpm` after one request, so
    // the second goes to the other key and the third finds none.
    let (status, _, _, body) = send(&h, "token-keys", "openai").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 10, "{body}");
    assert_eq!(send(&h, "token-keys", "openai").await.0, StatusCode::OK);
    let by_key = h.mock.requests_by_key();
    assert_eq!((by_key[KEY_A], by_key[KEY_B]), (1, 1), "each key took one");
    let (status, limit, retry_after, body) = send(&h, "token-keys", "openai").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(limit.as_deref(), Some("key_tpm"));
    assert!(
        retry_after.is_some_and(|s| (1..=60).contains(&s)),
        "{retry_after:?}"
    );
    assert_eq!(h.mock.total_requests(), 2);

    // The group's own tokens: one request is admitted under the limit, the next is refused
    // before it reaches a key.
    assert_eq!(send(&h, "token-capped", "openai").await.0, StatusCode::OK);
    let (status, limit, _, body) = send(&h, "token-capped", "openai").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(limit.as_deref(), Some("group_tpm"));
    assert_eq!(h.mock.total_requests(), 3);

    // Key health shows the tokens of the minute.
    let id = h.group_id("token-capped").await;
    let (_, health) = h.call_api("GET", &format!("/groups/{id}/key-health"), None).await;
    let limits = &health["data"]["limits"];
    assert_eq!(limits["group_tpm"], 10, "{health}");
    assert!(
        limits["group_tokens_last_minute"].as_u64().unwrap() > 10,
        "{health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_with_limits_of_its_own_replaces_its_groups() {
    let h = gateway().await;
    let group = h.group_id("own-limits").await;
    let (_, keys) = h
        .call_api("GET", &format!("/keys?group_id={group}&page_size=10"), None)
        .await;
    let id_of = |value: &str| {
        keys["data"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["key_value"] == value)
            .and_then(|k| k["id"].as_i64())
            .unwrap()
    };
    let (paid, free) = (id_of(KEY_C), id_of(KEY_D));
    // The paid key takes three a minute; the group's one a minute stays the free key's.
    let (status, body) = h
        .call_api("PUT", &format!("/keys/{paid}/limits"), Some(json!({"rpm": 3})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for _ in 0..4 {
        assert_eq!(send(&h, "own-limits", "openai").await.0, StatusCode::OK);
    }
    let (status, limit, ..) = send(&h, "own-limits", "openai").await;
    assert_eq!(
        (status, limit.as_deref()),
        (StatusCode::TOO_MANY_REQUESTS, Some("key_rpm"))
    );
    let by_key = h.mock.requests_by_key();
    assert_eq!((by_key[KEY_C], by_key[KEY_D]), (3, 1), "{by_key:?}");

    // The listing shows the key's own limits, and only its own.
    let (_, keys) = h
        .call_api("GET", &format!("/keys?group_id={group}&page_size=10"), None)
        .await;
    let limits_of = |id: i64| {
        keys["data"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .unwrap()["limits"]
            .clone()
    };
    assert_eq!(limits_of(paid), json!({"rpm": 3}));
    assert_eq!(limits_of(free), Value::Null);

    // Bad input is refused; `{}` returns the key to its group's limits.
    let (status, _) = h
        .call_api("PUT", &format!("/keys/{paid}/limits"), Some(json!({"rpm": -1})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h.call_api("PUT", "/keys/999999/limits", Some(json!({}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h
        .call_api("PUT", &format!("/keys/{paid}/limits"), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, keys) = h
        .call_api("GET", &format!("/keys?group_id={group}&page_size=10"), None)
        .await;
    let item = keys["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == paid)
        .unwrap()
        .clone();
    assert_eq!(item["limits"], Value::Null);
}
