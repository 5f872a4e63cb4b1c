//! Model filters through the running gateway: a model a group does not serve is refused in the
//! client's format before a key is spent, model lists show only the served models, a saved
//! change applies to the next request, and aggregates route a model to the sub-groups that serve
//! it.

use gpt_load_e2e::MockUpstream;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use super::harness::{Harness, PROXY_KEY, group};
use crate::db::test_support::TestDb;

const KEY_A: &str = "sk-filter-a-0123456789";
const KEY_B: &str = "sk-filter-b-0123456789";
const KEY_C: &str = "sk-filter-c-0123456789";

async fn gateway() -> Harness {
    let mock = MockUpstream::start().await.unwrap();
    let up = mock.url();
    let groups = vec![
        group(
            "filtered",
            &up,
            &[KEY_A],
            json!({"model_include": "gpt-4o*, /^o3-/", "model_exclude": "*-mini"}),
        ),
        group("minis", &up, &[KEY_B], json!({"model_include": "*-mini"})),
        group("rest", &up, &[KEY_C], json!({})),
        json!({"name": "all", "group_type": "aggregate", "channel_type": "openai",
               "sub_groups": [{"group": "filtered", "weight": 1}, {"group": "minis", "weight": 1}]}),
    ];
    Harness::start(TestDb::sqlite().await, mock, groups, &[]).await
}

fn chat(h: &Harness, group: &str, model: &str) -> Request<Full<bytes::Bytes>> {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    Request::post(format!("{}/proxy/{group}/v1/chat/completions", h.base))
        .header("authorization", format!("Bearer {PROXY_KEY}"))
        .header("content-type", "application/json")
        .body(Full::from(body.to_string()))
        .unwrap()
}

async fn status_of(h: &Harness, group: &str, model: &str) -> (StatusCode, Value) {
    let (status, _, body) = h.send(chat(h, group, model)).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_the_group_does_not_serve_is_refused_before_a_key_is_spent() {
    let h = gateway().await;
    for model in ["gpt-4o", "gpt-4o-2024-08-06", "o3-pro"] {
        assert_eq!(
            status_of(&h, "filtered", model).await.0,
            StatusCode::OK,
            "{model}"
        );
    }
    let served = h.mock.received().len();
    for model in ["gpt-4o-mini", "gpt-4.1", "claude-3-haiku"] {
        let (status, body) = status_of(&h, "filtered", model).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{model}");
        // OpenAI's error shape, naming the model.
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("'{model}'")), "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    }
    assert_eq!(
        h.mock.received().len(),
        served,
        "no refused request went upstream"
    );

    // The model list shows only what the group serves.
    let list = Request::get(format!("{}/proxy/filtered/v1/models", h.base))
        .header("authorization", format!("Bearer {PROXY_KEY}"))
        .body(Full::default())
        .unwrap();
    let (status, _, body) = h.send(list).await;
    assert_eq!(status, StatusCode::OK);
    let list: Value = serde_json::from_slice(&body).unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    // gpt-4o-mini and o3-mini are excluded, gpt-4.1 is not included.
    assert_eq!(ids, ["gpt-4o"]);

    // A saved change applies to the next request.
    let id = h.group_id("rest").await;
    let (status, body) = h
        .call_api(
            "PUT",
            &format!("/groups/{id}"),
            Some(json!({"config": {"model_exclude": "gpt-4.1"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(status_of(&h, "rest", "gpt-4.1").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(status_of(&h, "rest", "gpt-4o").await.0, StatusCode::OK);

    // A pattern that does not compile is refused when saved.
    let (status, body) = h
        .call_api(
            "PUT",
            &format!("/groups/{id}"),
            Some(json!({"config": {"model_include": "/(gpt/"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("model_include"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_routes_each_model_to_the_sub_groups_that_serve_it() {
    let h = gateway().await;
    for _ in 0..3 {
        assert_eq!(status_of(&h, "all", "gpt-4o-mini").await.0, StatusCode::OK);
        assert_eq!(status_of(&h, "all", "gpt-4o").await.0, StatusCode::OK);
    }
    let by_key = h.mock.requests_by_key();
    assert_eq!(
        by_key.get(KEY_B),
        Some(&3),
        "the minis only to the sub-group that serves them"
    );
    assert_eq!(
        by_key.get(KEY_A),
        Some(&3),
        "gpt-4o only to the filtered sub-group"
    );
    let (status, body) = status_of(&h, "all", "claude-3-haiku").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no sub-group serves it: {body}");
}
