//! Policies through the running gateway: a rule saved through the admin API decides the next
//! request's outcome, shows in the key-health answer, stops when detached or deleted, and bad
//! rules are refused with the rule and the reason.

use std::sync::Arc;

use gpt_load_e2e::{Behaviour, MockUpstream};
use gpt_load_tower::keys::{KeySlot, KeyState};
use http::StatusCode;
use serde_json::{Value, json};

use super::harness::{Harness, group};
use crate::db::test_support::TestDb;

const SPENT: &str = "sk-spent-0123456789abcdef";
const GOOD: &str = "sk-good-0123456789abcdef";

async fn gateway() -> Harness {
    let mock = MockUpstream::start().await.unwrap();
    let up = mock.url();
    mock.script(SPENT, Behaviour::OutOfCredit);
    let groups = vec![group("openai", &up, &[SPENT, GOOD], json!({}))];
    Harness::start(TestDb::sqlite().await, mock, groups, &[]).await
}

fn slot(h: &Harness, key: &str) -> Arc<KeySlot> {
    h.running()
        .registry
        .pool()
        .keys("openai")
        .into_iter()
        .find(|k| k.secret().expose() == key)
        .expect("key in pool")
}

/// Sends chats until the spent key has been tried `times` more times; every answer is good.
async fn until_spent_is_tried(h: &Harness, times: usize) {
    let tried = |h: &Harness| {
        h.mock
            .received()
            .iter()
            .filter(|r| r.credential.as_deref() == Some(SPENT))
            .count()
    };
    let target = tried(h) + times;
    for _ in 0..10 {
        if tried(h) >= target {
            return;
        }
        let (status, body) = h.call_json(h.chat("openai", false)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    panic!("the spent key was not tried");
}

const OUT_OF_CREDIT: &str = r#"{"rules": [{"name": "insufficient quota", "conditions": [
    {"type": "status_code", "operator": "in", "values": ["400"]},
    {"type": "body", "operator": "regex", "value": "insufficient_quota"}],
  "action": "invalidate"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_policy_decides_the_next_request() {
    let h = gateway().await;
    let group_id = h.group_id("openai").await;

    // Without a policy, an out-of-credit 400 is a counted failure: retried, the key kept.
    until_spent_is_tried(&h, 1).await;
    assert_ne!(slot(&h, SPENT).state(), KeyState::Invalid);

    let config: Value = serde_json::from_str(OUT_OF_CREDIT).unwrap();
    let (status, created) = h
        .call_api(
            "POST",
            "/policies",
            Some(json!({"name": "out of credit", "description": "billing", "config": config})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let policy_id = created["data"]["id"].as_i64().unwrap();
    assert_eq!(created["data"]["type"], "retry");
    assert_eq!(created["data"]["config"], config);

    let (status, attached) = h
        .call_api(
            "PUT",
            &format!("/groups/{group_id}/policies"),
            Some(json!({"policies": [{"policy_id": policy_id}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{attached}");
    assert_eq!(attached["data"][0]["name"], "out of credit");
    assert_eq!(attached["data"][0]["is_active"], true);

    // The next request that reaches the key invalidates it; the client still gets a good answer.
    until_spent_is_tried(&h, 1).await;
    assert_eq!(slot(&h, SPENT).state(), KeyState::Invalid);
    let (_, health) = h
        .call_api("GET", &format!("/groups/{group_id}/key-health"), None)
        .await;
    // Newest first: the rule's decision, after the built-in rules' on the request before.
    let failures = health["data"]["recent_failures"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(failures.len(), 2, "{health}");
    assert_eq!(failures[1]["rule"], Value::Null, "{health}");
    let last = failures[0].clone();
    assert_eq!(last["rule"], "out of credit / insufficient quota", "{health}");
    assert_eq!(last["outcome"], "dead", "{health}");
    assert!(!last.to_string().contains(SPENT), "the key is masked: {last}");

    // The policy lists its group; detached, the group is back to the built-in rules.
    let (_, listed) = h.call_api("GET", "/policies", None).await;
    assert_eq!(listed["data"][0]["group_ids"], json!([group_id]));
    let (status, _) = h
        .call_api(
            "PUT",
            &format!("/groups/{group_id}/policies"),
            Some(json!({"policies": []})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let policy = h.running().registry.catalog().policy("openai").unwrap();
    assert!(policy.health.rules.is_empty());

    // Attached again, then deleted: the rules leave with it.
    h.call_api(
        "PUT",
        &format!("/groups/{group_id}/policies"),
        Some(json!({"policies": [{"policy_id": policy_id, "priority": 3}]})),
    )
    .await;
    assert_eq!(
        h.running()
            .registry
            .catalog()
            .policy("openai")
            .unwrap()
            .health
            .rules
            .len(),
        1
    );
    let (status, _) = h
        .call_api("DELETE", &format!("/policies/{policy_id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        h.running()
            .registry
            .catalog()
            .policy("openai")
            .unwrap()
            .health
            .rules
            .is_empty()
    );
    let (status, _) = h.call_api("GET", &format!("/policies/{policy_id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_survive_a_restart_and_an_inactive_one_does_nothing() {
    let mut h = gateway().await;
    let group_id = h.group_id("openai").await;
    let config: Value = serde_json::from_str(OUT_OF_CREDIT).unwrap();
    let (_, created) = h
        .call_api("POST", "/policies", Some(json!({"name": "p", "config": config})))
        .await;
    let id = created["data"]["id"].as_i64().unwrap();
    h.call_api(
        "PUT",
        &format!("/groups/{group_id}/policies"),
        Some(json!({"policies": [{"policy_id": id}]})),
    )
    .await;
    h.restart().await;
    assert_eq!(
        h.running()
            .registry
            .catalog()
            .policy("openai")
            .unwrap()
            .health
            .rules
            .len(),
        1
    );

    let (status, updated) = h
        .call_api(
            "PUT",
            &format!("/policies/{id}"),
            Some(json!({"is_active": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["data"]["config"], config, "what is left out is kept");
    assert!(
        h.running()
            .registry
            .catalog()
            .policy("openai")
            .unwrap()
            .health
            .rules
            .is_empty()
    );
    until_spent_is_tried(&h, 1).await;
    assert_ne!(slot(&h, SPENT).state(), KeyState::Invalid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_tried_against_a_sample_and_bad_ones_are_refused() {
    let h = gateway().await;
    let config: Value = serde_json::from_str(OUT_OF_CREDIT).unwrap();
    let sample = json!({"status": 400,
        "body": r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota"}}"#});
    let (status, tried) = h
        .call_api(
            "POST",
            "/policies/test",
            Some(json!({"config": config, "sample": sample})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tried}");
    assert_eq!(tried["data"]["matched"], true);
    assert_eq!(tried["data"]["rule"], "insufficient quota");
    assert_eq!(tried["data"]["outcome"], "invalidate");
    assert_eq!(tried["data"]["message"], "You exceeded your current quota");

    let (_, missed) = h
        .call_api(
            "POST",
            "/policies/test",
            Some(json!({"config": config, "sample": {"status": 503, "body": "{}"}})),
        )
        .await;
    assert_eq!(missed["data"]["matched"], false);
    assert_eq!(
        missed["data"]["outcome"], "transient",
        "the built-in rules decide"
    );

    let bad = [
        (
            json!({"name": "x", "config": {"rules": [{"conditions": [{"type": "body", "operator": "regex", "value": "(["}], "action": "fail"}]}}),
            "invalid regular expression",
        ),
        (
            json!({"name": "x", "config": {"rules": [{"action": "explode"}]}}),
            "explode",
        ),
        (
            json!({"name": "x", "type": "rate_limit", "config": {"rules": []}}),
            "type",
        ),
        (json!({"config": {"rules": []}}), "name"),
        (json!({"name": "x"}), "config"),
    ];
    for (body, needle) in bad {
        let (status, refused) = h.call_api("POST", "/policies", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {refused}");
        assert!(
            refused["message"].as_str().unwrap_or_default().contains(needle),
            "{body}: {refused}"
        );
    }

    let (status, _) = h
        .call_api(
            "POST",
            "/policies",
            Some(json!({"name": "dup", "config": {"rules": []}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h
        .call_api(
            "POST",
            "/policies",
            Some(json!({"name": "dup", "config": {"rules": []}})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let group_id = h.group_id("openai").await;
    let (status, refused) = h
        .call_api(
            "PUT",
            &format!("/groups/{group_id}/policies"),
            Some(json!({"policies": [{"policy_id": 999}]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let (status, _) = h.call_api("GET", "/groups/999/policies", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
