//! The background key tasks and `test-multiple` through real HTTP, on every backend.

use std::time::Duration;

use bytes::Bytes;
use gpt_load_e2e::{Behaviour, MockUpstream};
use gpt_load_tower::keys::KeyState;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use super::harness::{ADMIN_KEY, Harness, group};
use crate::db::test_support::TestDb;

const SEED: &str = "sk-seed-key-0123456789";
const GOOD_1: &str = "sk-valid-key-1-0123456789";
const GOOD_2: &str = "sk-valid-key-2-0123456789";
const BAD_1: &str = "mock-401-key-1-0123456789";
const BAD_2: &str = "mock-401-key-2-0123456789";
const TASK_LIMIT: Duration = Duration::from_secs(60);

async fn task_status(h: &Harness) -> Value {
    let (status, body) = h.call_api("GET", "/tasks/status", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].clone()
}

/// Waits until no task runs; returns the last task's status.
async fn finished(h: &Harness) -> Value {
    Harness::eventually(TASK_LIMIT, || async {
        task_status(h).await["is_running"] == false
    })
    .await;
    task_status(h).await
}

/// Starts a task; asserts the immediate answer.
async fn start(h: &Harness, path: &str, body: Value, task_type: &str) {
    let (status, body) = h.call_api("POST", path, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    assert_eq!(body["data"]["task_type"], task_type, "{body}");
    assert!(body["data"]["started_at"].is_string(), "{body}");
}

/// Keys listed with a status filter.
async fn count_listed(h: &Harness, group: i64, status: &str) -> i64 {
    let (_, body) = h
        .call_api(
            "GET",
            &format!("/keys?group_id={group}&status={status}&page_size=1"),
            None,
        )
        .await;
    body["data"]["pagination"]["total_items"].as_i64().unwrap()
}

fn pool_state(h: &Harness, group: &str, key: &str) -> KeyState {
    h.running()
        .registry
        .pool()
        .keys(group)
        .into_iter()
        .find(|k| k.secret().expose() == key)
        .expect("key in pool")
        .state()
}

fn multipart(h: &Harness, group_id: i64, file_name: &str, content: &str) -> Request<Full<Bytes>> {
    let boundary = "gatewayboundary7MA4YWxk";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"group_id\"\r\n\r\n{group_id}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
         Content-Type: text/plain\r\n\r\n{content}\r\n--{boundary}--\r\n"
    );
    Request::post(format!("{}/api/keys/add-async", h.base))
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Full::from(body))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_imported_and_deleted_in_the_background() {
    for test_db in TestDb::all("keys_are_imported_and_deleted_in_the_background").await {
        let backend = test_db.db.backend();
        let mock = MockUpstream::start().await.unwrap();
        let up = mock.url();
        let h = Harness::start(
            test_db,
            mock,
            vec![
                group("seeded", &up, &[SEED], json!({})),
                group("fresh", &up, &[], json!({})),
            ],
            &[("ENCRYPTION_KEY", "an operator secret for the task tests")],
        )
        .await;
        let fresh = h.group_id("fresh").await;
        let seeded = h.group_id("seeded").await;
        let (status, body) = h.call_api("GET", "/tasks/status", None).await;
        assert_eq!(
            (status, &body["data"]),
            (StatusCode::OK, &json!({"is_running": false})),
            "{backend}: no task yet"
        );
        let (status, _, _) = h.send(h.chat("fresh", false)).await;
        assert!(!status.is_success(), "{backend}: no key yet");

        // Import: 2,000 keys, two duplicates.
        let keys: Vec<String> = (0..2_000)
            .map(|i| format!("sk-async-{i:05}-0123456789"))
            .collect();
        let text = format!("{}\n{}, {}", keys.join("\n"), keys[0], keys[1]);
        start(
            &h,
            "/keys/add-async",
            json!({"group_id": fresh, "keys_text": text}),
            "KEY_IMPORT",
        )
        .await;
        let done = finished(&h).await;
        assert_eq!(done["task_type"], "KEY_IMPORT", "{backend}: {done}");
        assert_eq!(done["group_name"], "fresh", "{backend}");
        assert_eq!(
            (&done["processed"], &done["total"]),
            (&json!(2_002), &json!(2_002)),
            "{backend}"
        );
        assert_eq!(
            done["result"],
            json!({"added_count": 2_000, "ignored_count": 2}),
            "{backend}"
        );
        assert!(done.get("error").is_none(), "{backend}: {done}");
        assert!(done["finished_at"].is_string(), "{backend}");
        assert!(done["duration_seconds"].as_f64().unwrap() >= 0.0, "{backend}");
        assert_eq!(count_listed(&h, fresh, "active").await, 2_000, "{backend}");
        assert_eq!(
            h.running().registry.pool().keys("fresh").len(),
            2_000,
            "{backend}"
        );

        // The proxy uses an imported key at once.
        let (status, _, _) = h.send(h.chat("fresh", false)).await;
        assert_eq!(status, StatusCode::OK, "{backend}");
        let used: Vec<String> = h.mock.requests_by_key().into_keys().collect();
        assert_eq!(used.len(), 1, "{backend}: {used:?}");
        assert!(keys.contains(&used[0]), "{backend}: {used:?}");

        // A repeated import adds nothing.
        start(
            &h,
            "/keys/add-async",
            json!({"group_id": fresh, "keys_text": keys[..10].join(",")}),
            "KEY_IMPORT",
        )
        .await;
        assert_eq!(
            finished(&h).await["result"],
            json!({"added_count": 0, "ignored_count": 10}),
            "{backend}"
        );

        // Delete: 1,500 keys and one unknown.
        let doomed = format!("{} sk-not-there", keys[..1_500].join(" "));
        start(
            &h,
            "/keys/delete-async",
            json!({"group_id": fresh, "keys_text": doomed}),
            "KEY_DELETE",
        )
        .await;
        let done = finished(&h).await;
        assert_eq!(done["task_type"], "KEY_DELETE", "{backend}");
        assert_eq!(
            done["result"],
            json!({"deleted_count": 1_500, "ignored_count": 1}),
            "{backend}"
        );
        assert_eq!(done["processed"], 1_501, "{backend}");
        assert_eq!(count_listed(&h, fresh, "active").await, 500, "{backend}");
        assert_eq!(h.running().registry.pool().keys("fresh").len(), 500, "{backend}");
        assert_eq!(
            count_listed(&h, seeded, "active").await,
            1,
            "{backend}: other group untouched"
        );

        // Multipart: a .txt file is imported, anything else refused.
        let (status, _, body) = h
            .send(multipart(
                &h,
                seeded,
                "keys.txt",
                "sk-file-1-0123456789\nsk-file-2-0123456789",
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{backend}: {body:?}");
        assert_eq!(
            finished(&h).await["result"],
            json!({"added_count": 2, "ignored_count": 0}),
            "{backend}"
        );
        assert_eq!(count_listed(&h, seeded, "active").await, 3, "{backend}");
        let (status, _, body) = h
            .send(multipart(&h, seeded, "keys.csv", "sk-file-3-0123456789"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{backend}: {body:?}");
        assert_eq!(count_listed(&h, seeded, "active").await, 3, "{backend}");

        // Refused before a task starts.
        for (path, body, expected) in [
            (
                "/keys/add-async",
                json!({"group_id": fresh, "keys_text": " ,; "}),
                StatusCode::BAD_REQUEST,
            ),
            (
                "/keys/add-async",
                json!({"keys_text": "sk-x"}),
                StatusCode::BAD_REQUEST,
            ),
            (
                "/keys/add-async",
                json!({"group_id": 987654321, "keys_text": "sk-x"}),
                StatusCode::NOT_FOUND,
            ),
            (
                "/keys/delete-async",
                json!({"group_id": 987654321, "keys_text": "sk-x"}),
                StatusCode::NOT_FOUND,
            ),
        ] {
            let (status, answer) = h.call_api("POST", path, Some(body)).await;
            assert_eq!(status, expected, "{backend}: {path}: {answer}");
        }
        assert_eq!(
            task_status(&h).await["task_type"],
            "KEY_IMPORT",
            "{backend}: last task kept"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_validated_and_tested_through_the_upstream() {
    for test_db in TestDb::all("keys_are_validated_and_tested_through_the_upstream").await {
        let backend = test_db.db.backend();
        let mock = MockUpstream::start().await.unwrap();
        let up = mock.url();
        let slow: Vec<String> = (0..5).map(|i| format!("mock-slow-{i}-0123456789")).collect();
        let slow_refs: Vec<&str> = slow.iter().map(String::as_str).collect();
        let h = Harness::start(
            test_db,
            mock,
            vec![
                group(
                    "v",
                    &up,
                    &[GOOD_1, BAD_1, GOOD_2, BAD_2],
                    json!({"blacklist_threshold": 1, "key_validation_concurrency": 2}),
                ),
                group("slow", &up, &slow_refs, json!({"key_validation_concurrency": 1})),
                group("empty", &up, &[], json!({})),
            ],
            &[],
        )
        .await;
        let v = h.group_id("v").await;

        // All keys: the mock-401 ones fail and, at threshold 1, are blacklisted.
        start(
            &h,
            "/keys/validate-group",
            json!({"group_id": v}),
            "KEY_VALIDATION",
        )
        .await;
        let done = finished(&h).await;
        assert_eq!(
            done["result"],
            json!({"total_keys": 4, "valid_keys": 2, "invalid_keys": 2}),
            "{backend}: {done}"
        );
        assert_eq!((&done["processed"], &done["total"]), (&json!(4), &json!(4)));
        for key in [BAD_1, BAD_2] {
            assert_eq!(pool_state(&h, "v", key), KeyState::Invalid, "{backend}: {key}");
        }
        for key in [GOOD_1, GOOD_2] {
            assert_eq!(pool_state(&h, "v", key), KeyState::Active, "{backend}: {key}");
        }
        Harness::eventually(TASK_LIMIT, || async { count_listed(&h, v, "invalid").await == 2 }).await;

        // Only the invalid ones: one of them works again and is restored.
        h.mock.script(BAD_1, Behaviour::Valid);
        start(
            &h,
            "/keys/validate-group",
            json!({"group_id": v, "status": "invalid"}),
            "KEY_VALIDATION",
        )
        .await;
        assert_eq!(
            finished(&h).await["result"],
            json!({"total_keys": 2, "valid_keys": 1, "invalid_keys": 1}),
            "{backend}"
        );
        assert_eq!(pool_state(&h, "v", BAD_1), KeyState::Active, "{backend}");
        assert_eq!(pool_state(&h, "v", BAD_2), KeyState::Invalid, "{backend}");
        Harness::eventually(TASK_LIMIT, || async { count_listed(&h, v, "invalid").await == 1 }).await;

        // test-multiple: per-key results; keys of other groups are not tested.
        h.mock.clear_scripts();
        h.mock.script(BAD_1, Behaviour::Valid);
        let before = h.mock.requests_by_key();
        let text = format!("{GOOD_1}\n{BAD_2}, sk-not-in-this-group-0123, {}", slow[0]);
        let (status, body) = h
            .call_api(
                "POST",
                "/keys/test-multiple",
                Some(json!({"group_id": v, "keys_text": text})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend}: {body}");
        let results = body["data"]["results"].as_array().unwrap();
        assert_eq!(results.len(), 4, "{body}");
        assert_eq!(
            results[0],
            json!({"key_value": GOOD_1, "is_valid": true}),
            "{body}"
        );
        assert_eq!(results[1]["key_value"], BAD_2);
        assert_eq!(results[1]["is_valid"], false);
        let error = results[1]["error"].as_str().unwrap();
        assert!(error.contains("401"), "{error}");
        assert!(!error.contains(BAD_2), "{backend}: the key is masked: {error}");
        for result in &results[2..] {
            assert_eq!(result["is_valid"], false, "{body}");
            assert_eq!(
                result["error"], "Key does not exist in this group or has been removed.",
                "{body}"
            );
        }
        assert!(body["data"]["total_duration"].is_u64(), "{body}");
        let after = h.mock.requests_by_key();
        assert_eq!(
            after.get(slow[0].as_str()),
            before.get(slow[0].as_str()),
            "{backend}"
        );
        assert_eq!(after[GOOD_1], before[GOOD_1] + 1, "{backend}");
        let (status, body) = h
            .call_api(
                "POST",
                "/keys/test-multiple",
                Some(json!({"group_id": v, "keys_text": ""})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{backend}: {body}");

        // A group without keys has nothing to validate.
        let empty = h.group_id("empty").await;
        let (status, body) = h
            .call_api("POST", "/keys/validate-group", Some(json!({"group_id": empty})))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{backend}: {body}");
        let (status, _) = h
            .call_api(
                "POST",
                "/keys/validate-group",
                Some(json!({"group_id": v, "status": "sleeping"})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{backend}");

        // One task at a time: five 200 ms keys one after the other keep the slot taken.
        let slow_id = h.group_id("slow").await;
        start(
            &h,
            "/keys/validate-group",
            json!({"group_id": slow_id}),
            "KEY_VALIDATION",
        )
        .await;
        for (path, body) in [
            (
                "/keys/add-async",
                json!({"group_id": v, "keys_text": "sk-late-0123456789"}),
            ),
            ("/keys/delete-async", json!({"group_id": v, "keys_text": GOOD_1})),
            ("/keys/validate-group", json!({"group_id": v})),
        ] {
            let (status, answer) = h.call_api("POST", path, Some(body)).await;
            assert_eq!(status, StatusCode::CONFLICT, "{backend}: {path}: {answer}");
            assert_eq!(answer["code"], "TASK_IN_PROGRESS", "{backend}");
        }
        let running = task_status(&h).await;
        assert_eq!(
            (&running["is_running"], &running["group_name"]),
            (&json!(true), &json!("slow")),
            "{backend}"
        );
        assert_eq!(
            finished(&h).await["result"],
            json!({"total_keys": 5, "valid_keys": 5, "invalid_keys": 0}),
            "{backend}"
        );
        assert_eq!(
            count_listed(&h, v, "active").await,
            3,
            "{backend}: nothing imported meanwhile"
        );
    }
}
