//! Access keys through the running gateway: made through the admin API and shown once, then
//! used by a client like any proxy key, with their groups, models, switch, expiry, request rate
//! and token quota enforced before any upstream call, and their usage counted per key.

use std::time::Duration;

use bytes::Bytes;
use gpt_load_e2e::MockUpstream;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use super::harness::{Harness, PROXY_KEY, group};
use crate::db::test_support::TestDb;

const KEY: &str = "sk-access-upstream-0123456789";

async fn gateway() -> Harness {
    let mock = MockUpstream::start().await.unwrap();
    let up = mock.url();
    let mut claude = group("team-claude", &up, &[KEY], json!({}));
    claude["channel_type"] = json!("anthropic");
    let groups = vec![group("team-openai", &up, &[KEY], json!({})), claude];
    Harness::start(TestDb::sqlite().await, mock, groups, &[]).await
}

/// A chat completion for `model` through `group`, presenting `key` as a bearer token.
fn chat(h: &Harness, group: &str, key: &str, model: &str) -> Request<Full<Bytes>> {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    Request::post(format!("{}/proxy/{group}/v1/chat/completions", h.base))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::from(body.to_string()))
        .unwrap()
}

/// The status, the limit header and the JSON answer.
async fn call(h: &Harness, req: Request<Full<Bytes>>) -> (StatusCode, Option<String>, Value) {
    let (status, headers, body) = h.send(req).await;
    let limit = headers
        .get("x-gpt-load-limit")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        limit,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

/// Makes an access key; its key and record.
async fn create(h: &Harness, body: Value) -> (String, Value) {
    let (status, answer) = h.call_api("POST", "/access-keys", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let key = answer["data"]["key"].as_str().unwrap().to_owned();
    (key, answer["data"]["access_key"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_key_is_shown_once_and_keeps_to_its_groups_models_and_switch() {
    let h = gateway().await;
    let openai = h.group_id("team-openai").await;
    let (key, record) = create(
        &h,
        json!({"name": "team a", "allowed_groups": [openai], "allowed_models": ["gpt-4o*"],
               "notes": "for the search team"}),
    )
    .await;
    assert!(key.starts_with("sk-gla-") && key.len() > 40, "{key}");
    assert_eq!(record["status"], "active");
    assert!(
        !record.to_string().contains(&key),
        "the record never holds the key"
    );
    let hint = record["key_hint"].as_str().unwrap();
    assert!(
        key.starts_with(&hint[..10]) && key.ends_with(&hint[hint.len() - 4..]),
        "{hint}"
    );
    let id = record["id"].as_i64().unwrap();

    // The list shows the record (never the key) and the legacy proxy key, masked.
    let (_, list) = h.call_api("GET", "/access-keys", None).await;
    let text = list.to_string();
    assert!(
        !text.contains(&key) && !text.contains(PROXY_KEY),
        "no key in the list"
    );
    assert_eq!(list["data"]["access_keys"][0]["id"], id);
    assert_eq!(list["data"]["legacy_keys"][0]["scope"], "global");

    // Its group and model serve; the upstream never sees the access key.
    let (status, _, body) = call(&h, chat(&h, "team-openai", &key, "gpt-4o-mini")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(h.mock.total_requests(), 1);
    assert_eq!(h.mock.requests_by_key()[KEY], 1);

    // Another model is refused before any upstream call, in the client's format.
    let (status, _, body) = call(&h, chat(&h, "team-openai", &key, "claude-3-5-haiku")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["type"], "permission_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("claude-3-5-haiku")
    );
    // Another group too, whether it exists or not.
    for group in ["team-claude", "no-such-group"] {
        let (status, _, body) = call(&h, chat(&h, group, &key, "gpt-4o-mini")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{group}: {body}");
    }
    assert_eq!(h.mock.total_requests(), 1, "no refusal reached the upstream");

    // Switched off, then expired: 401, saying which.
    let (status, _) = h
        .call_api(
            "PUT",
            &format!("/access-keys/{id}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = call(&h, chat(&h, "team-openai", &key, "gpt-4o-mini")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("disabled"),
        "{body}"
    );
    let (status, answer) = h
        .call_api(
            "PUT",
            &format!("/access-keys/{id}"),
            Some(json!({"enabled": true, "expires_at": "2020-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(
        (status, &answer["data"]["status"]),
        (StatusCode::OK, &json!("expired"))
    );
    let (status, _, body) = call(&h, chat(&h, "team-openai", &key, "gpt-4o-mini")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    assert_eq!(h.mock.total_requests(), 1);

    // No expiry again, then a rotation: the old key stops, the new one works.
    h.call_api(
        "PUT",
        &format!("/access-keys/{id}"),
        Some(json!({"expires_at": null})),
    )
    .await;
    let (status, rotated) = h
        .call_api("POST", &format!("/access-keys/{id}/rotate"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let new_key = rotated["data"]["key"].as_str().unwrap();
    assert_ne!(new_key, key);
    assert_eq!(
        call(&h, chat(&h, "team-openai", &key, "gpt-4o-mini")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&h, chat(&h, "team-openai", new_key, "gpt-4o-mini")).await.0,
        StatusCode::OK
    );

    // Deleted: refused like any unknown key.
    let (status, _) = h.call_api("DELETE", &format!("/access-keys/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        call(&h, chat(&h, "team-openai", new_key, "gpt-4o-mini")).await.0,
        StatusCode::UNAUTHORIZED
    );
    // The legacy proxy key works as before.
    assert_eq!(
        call(&h, chat(&h, "team-claude", PROXY_KEY, "claude-3-5-haiku"))
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_keys_rate_and_token_quota_hold_and_its_usage_is_counted() {
    let h = gateway().await;
    let (key, record) = create(&h, json!({"name": "metered", "rpm": 2, "daily_token_quota": 1})).await;
    let id = record["id"].as_i64().unwrap();

    // The first request is under every limit.
    let (status, _, body) = call(&h, chat(&h, "team-openai", &key, "gpt-4o-mini")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let used = body["usage"]["total_tokens"].as_i64().unwrap();
    assert!(used > 0, "the mock reports usage: {body}");

    // Its tokens are past the day's quota of 1: refused until midnight UTC, before the upstream.
    let (status, limit, body) = call(&h, chat(&h, "team-openai", &key, "gpt-4o-mini")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(limit.as_deref(), Some("access_key_daily_tokens"));
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    assert_eq!(h.mock.total_requests(), 1);

    // The record shows the usage; the per-key usage report adds it up from usage_hourly.
    let (_, shown) = h.call_api("GET", &format!("/access-keys/{id}"), None).await;
    assert_eq!(shown["data"]["usage"]["tokens_today"], used);
    Harness::eventually(Duration::from_secs(20), || async {
        let (_, report) = h.call_api("GET", &format!("/access-keys/{id}/usage"), None).await;
        report["data"]["totals"]["total_tokens"] == used && report["data"]["totals"]["requests"] == 1
    })
    .await;
    // Its requests' logs carry it, and filter by it.
    Harness::eventually(Duration::from_secs(20), || async {
        let (_, logs) = h
            .call_api("GET", &format!("/logs?access_key_id={id}"), None)
            .await;
        let items = logs["data"]["items"].as_array().cloned().unwrap_or_default();
        items.len() == 1 && items[0]["access_key_id"] == id && items[0]["total_tokens"] == used
    })
    .await;
    let (_, by_key) = h.call_api("GET", "/usage?group_by=access_key", None).await;
    let items = by_key["data"]["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|i| i["access_key_id"] == id && i["total_tokens"] == used),
        "{by_key}"
    );

    // Lifting the quota leaves the rate: two requests a minute, the second of which this is.
    h.call_api(
        "PUT",
        &format!("/access-keys/{id}"),
        Some(json!({"daily_token_quota": 0})),
    )
    .await;
    assert_eq!(
        call(&h, chat(&h, "team-openai", &key, "gpt-4o-mini")).await.0,
        StatusCode::OK
    );
    let (status, limit, body) = call(&h, chat(&h, "team-openai", &key, "gpt-4o-mini")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(limit.as_deref(), Some("access_key_rpm"));
    assert_eq!(h.mock.total_requests(), 2);

    // Bad input is refused field by field.
    let (status, answer) = h
        .call_api(
            "POST",
            "/access-keys",
            Some(
                json!({"name": "", "allowed_groups": [999], "allowed_models": ["/([/"], "rpm": -1,
                        "expires_at": "soon"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let text = answer.to_string();
    for field in ["name", "allowed_groups", "allowed_models", "rpm", "expires_at"] {
        assert!(text.contains(field), "{field}: {answer}");
    }
}
