//! Incremental validation through the running gateway: the fork's routes choose keys by state,
//! age and last validation, apply the outcomes like every validation, and report history.

use std::time::Duration;

use gpt_load_e2e::MockUpstream;
use http::StatusCode;
use serde_json::{Value, json};

use super::harness::{Harness, group};
use crate::db::test_support::TestDb;

const GOOD_A: &str = "sk-validate-good-a-0123456789";
const GOOD_B: &str = "sk-validate-good-b-0123456789";
const BAD: &str = "mock-401-validate-0123456789";

async fn validate(h: &Harness, id: i64, body: Value) -> (StatusCode, Value) {
    h.call_api("POST", &format!("/validation/groups/{id}"), Some(body))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_validation_skips_recently_validated_keys() {
    let mock = MockUpstream::start().await.unwrap();
    let groups = vec![group(
        "v",
        &mock.url(),
        &[GOOD_A, GOOD_B, BAD],
        json!({"blacklist_threshold": 1}),
    )];
    let h = Harness::start(TestDb::sqlite().await, mock, groups, &[]).await;
    let id = h.group_id("v").await;
    let upstream_calls = || h.mock.received().len();

    // The fork's defaults look at pending and invalid keys: none yet.
    let (status, body) = validate(&h, id, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let data = &body["data"];
    assert_eq!(
        (data["total_keys"].as_u64(), data["validated_keys"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(data["skipped_keys"], 3);
    assert_eq!(upstream_calls(), 0);

    // The active keys: two work, one is refused and (threshold 1) blacklisted.
    let (_, body) = validate(
        &h,
        id,
        json!({"include_states": ["active"], "concurrency": 2, "batch_size": 2}),
    )
    .await;
    let data = &body["data"];
    assert_eq!(
        (
            data["validated_keys"].as_u64(),
            data["successful_keys"].as_u64(),
            data["failed_keys"].as_u64()
        ),
        (Some(3), Some(2), Some(1)),
        "{body}"
    );
    assert_eq!(data["group_name"], "v");
    assert!(data["duration_ms"].is_u64());
    assert_eq!(upstream_calls(), 3);
    // The key's status reaches the database with the write-behind (about a second).
    Harness::eventually(Duration::from_secs(10), || async {
        let (_, keys) = h
            .call_api("GET", &format!("/keys?group_id={id}&status=invalid"), None)
            .await;
        let item = &keys["data"]["items"][0];
        item["key_value"] == BAD && item["last_validated_at"].is_string() && item["state"] == "invalid"
    })
    .await;

    // Validated within the last hour: skipped, unless asked not to.
    let every_state = json!(["active", "degraded", "cooling", "invalid"]);
    let (_, body) = validate(&h, id, json!({"include_states": every_state})).await;
    assert_eq!(
        (
            body["data"]["validated_keys"].as_u64(),
            body["data"]["skipped_keys"].as_u64()
        ),
        (Some(0), Some(3))
    );
    assert_eq!(upstream_calls(), 3, "no key was validated again");
    let (_, body) = validate(
        &h,
        id,
        json!({"include_states": every_state, "exclude_recently_validated": false}),
    )
    .await;
    assert_eq!(body["data"]["validated_keys"], 3);
    assert_eq!(upstream_calls(), 6);

    // History over the last day.
    let (status, body) = h
        .call_api("GET", &format!("/validation/groups/{id}/history?hours=24"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let history = &body["data"]["history"];
    assert_eq!(
        (
            history["total_keys"].as_u64(),
            history["validated_keys"].as_u64(),
            history["invalid_keys"].as_u64()
        ),
        (Some(3), Some(3), Some(1)),
        "{body}"
    );
    assert_eq!(history["validation_rate"], 1.0);
    assert_eq!(body["data"]["time_range"]["hours"], 24);

    // Every group at once.
    let (status, body) = h
        .call_api(
            "POST",
            "/validation/groups",
            Some(json!({"include_states": ["invalid"], "exclude_recently_validated": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["summary"]["total_groups"], 1);
    assert_eq!(body["data"]["summary"]["total_validated"], 1);

    // Bad requests name their field.
    for (request, field) in [
        (json!({"include_states": ["asleep"]}), "include_states"),
        (json!({"concurrency": 0}), "concurrency"),
        (json!({"batch_size": 5000}), "batch_size"),
    ] {
        let (status, body) = validate(&h, id, request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.to_string().contains(field), "{body}");
    }
    let (status, _) = validate(&h, 9_999, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
