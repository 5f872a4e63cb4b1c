//! The key routes of the admin API through real HTTP, on every backend.

use std::{collections::BTreeSet, time::Duration};

use gpt_load_e2e::{Behaviour, MockUpstream};
use gpt_load_tower::keys::KeyState;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

use super::harness::{ADMIN_KEY, Harness, group};
use crate::db::test_support::TestDb;

const SEED: &str = "sk-seed-key-0123456789";
const NEW_A: &str = "sk-new-key-a-0123456789";
const NEW_B: &str = "sk-new-key-b-0123456789";
const NEW_C: &str = "sk-new-key-c-0123456789";
const FRESH: &str = "sk-fresh-key-0123456789";
const BAD_1: &str = "sk-bad-key-1-0123456789";
const BAD_2: &str = "sk-bad-key-2-0123456789";
const GOOD: &str = "sk-good-key-0123456789";

/// Every key of a group as the list shows it (one large page).
async fn listed(h: &Harness, group: i64, extra: &str) -> Vec<Value> {
    let (status, body) = h
        .call_api(
            "GET",
            &format!("/keys?group_id={group}&page_size=1000{extra}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]["items"].as_array().unwrap().clone()
}

fn values(items: &[Value]) -> BTreeSet<String> {
    items
        .iter()
        .map(|k| k["key_value"].as_str().unwrap().to_owned())
        .collect()
}

fn id_of(items: &[Value], key: &str) -> i64 {
    items
        .iter()
        .find(|k| k["key_value"] == key)
        .and_then(|k| k["id"].as_i64())
        .expect("key listed")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_added_listed_exported_and_reach_the_proxy_at_once() {
    for test_db in TestDb::all("keys_are_added_listed_exported_and_reach_the_proxy_at_once").await {
        let backend = test_db.db.backend();
        let mock = MockUpstream::start().await.unwrap();
        let up = mock.url();
        let h = Harness::start(
            test_db,
            mock,
            vec![
                group("g", &up, &[SEED], json!({})),
                group("fresh", &up, &[], json!({})),
            ],
            &[("ENCRYPTION_KEY", "an operator secret for the key tests")],
        )
        .await;
        let g = h.group_id("g").await;
        let fresh = h.group_id("fresh").await;

        // Import: duplicates within the text and against the group are ignored.
        let text = format!("{NEW_A}, {NEW_B};{NEW_A}\n\t{SEED}");
        let (status, body) = h
            .call_api(
                "POST",
                "/keys/add-multiple",
                Some(json!({"group_id": g, "keys_text": text})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend}: {body}");
        assert_eq!(
            body["data"],
            json!({"added_count": 2, "ignored_count": 2, "total_in_group": 3}),
            "{backend}"
        );
        let (_, body) = h
            .call_api(
                "POST",
                "/keys/add-multiple",
                Some(json!({"group_id": g, "keys_text": json!([NEW_C, NEW_B]).to_string()})),
            )
            .await;
        assert_eq!(
            body["data"],
            json!({"added_count": 1, "ignored_count": 1, "total_in_group": 4}),
            "{backend}: a JSON array"
        );

        // The list: paginated, decrypted, searchable, filterable.
        let (status, body) = h
            .call_api("GET", &format!("/keys?group_id={g}&page=2&page_size=3"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{backend}: {body}");
        assert_eq!(
            body["data"]["pagination"],
            json!({"page": 2, "page_size": 3, "total_items": 4, "total_pages": 2}),
            "{backend}"
        );
        assert_eq!(body["data"]["items"].as_array().unwrap().len(), 1, "{backend}");
        let all = listed(&h, g, "").await;
        assert_eq!(
            values(&all),
            BTreeSet::from([SEED, NEW_A, NEW_B, NEW_C].map(str::to_owned)),
            "{backend}: decrypted"
        );
        let ids: Vec<i64> = all.iter().map(|k| k["id"].as_i64().unwrap()).collect();
        assert!(
            ids.windows(2).all(|w| w[0] > w[1]),
            "{backend}: unused keys newest first"
        );
        for field in [
            "id",
            "key_value",
            "key_hash",
            "group_id",
            "status",
            "notes",
            "request_count",
            "failure_count",
            "last_used_at",
            "created_at",
            "updated_at",
        ] {
            assert!(all[0].get(field).is_some(), "{backend}: APIKey has {field}");
        }
        assert_ne!(all[0]["key_hash"], all[0]["key_value"], "{backend}");
        let found = listed(&h, g, &format!("&key_value={NEW_C}")).await;
        assert_eq!(
            values(&found),
            BTreeSet::from([NEW_C.to_owned()]),
            "{backend}: exact search"
        );
        assert!(
            listed(&h, g, "&key_value=sk-new").await.is_empty(),
            "{backend}: not a substring search"
        );
        assert_eq!(listed(&h, g, "&status=active").await.len(), 4, "{backend}");
        assert!(listed(&h, g, "&status=invalid").await.is_empty(), "{backend}");

        // A used key comes first.
        assert_eq!(h.send(h.chat("g", false)).await.0, StatusCode::OK, "{backend}");
        let used: Vec<String> = h.mock.requests_by_key().into_keys().collect();
        Harness::eventually(Duration::from_secs(10), || async {
            listed(&h, g, "").await[0]["last_used_at"].is_string()
        })
        .await;
        assert_eq!(
            listed(&h, g, "").await[0]["key_value"].as_str(),
            used.first().map(String::as_str),
            "{backend}: last used first"
        );

        // A new key serves the next request.
        assert_eq!(
            h.send(h.chat("fresh", false)).await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "{backend}: no keys yet"
        );
        let (_, body) = h
            .call_api(
                "POST",
                "/keys/add-multiple",
                Some(json!({"group_id": fresh, "keys_text": FRESH})),
            )
            .await;
        assert_eq!(body["data"]["added_count"], 1, "{backend}: {body}");
        assert_eq!(
            h.send(h.chat("fresh", false)).await.0,
            StatusCode::OK,
            "{backend}"
        );
        assert_eq!(h.mock.requests_by_key().get(FRESH), Some(&1), "{backend}");

        // Disable and enable by hand.
        let fresh_id = id_of(&listed(&h, fresh, "").await, FRESH);
        let (status, body) = h
            .call_api(
                "PUT",
                &format!("/keys/{fresh_id}/status"),
                Some(json!({"status": "disabled"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend}: {body}");
        assert_eq!(
            h.send(h.chat("fresh", false)).await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "{backend}: the disabled key is skipped"
        );
        assert_eq!(h.mock.requests_by_key().get(FRESH), Some(&1), "{backend}");
        assert_eq!(listed(&h, fresh, "&status=disabled").await.len(), 1, "{backend}");
        h.call_api(
            "PUT",
            &format!("/keys/{fresh_id}/status"),
            Some(json!({"status": "active"})),
        )
        .await;
        assert_eq!(
            h.send(h.chat("fresh", false)).await.0,
            StatusCode::OK,
            "{backend}"
        );
        assert_eq!(h.mock.requests_by_key().get(FRESH), Some(&2), "{backend}");
        let (status, _) = h
            .call_api(
                "PUT",
                &format!("/keys/{fresh_id}/status"),
                Some(json!({"status": "invalid"})),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{backend}: only active or disabled"
        );

        // Notes.
        let (status, _) = h
            .call_api(
                "PUT",
                &format!("/keys/{fresh_id}/notes"),
                Some(json!({"notes": "  team budget  "})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend}");
        assert_eq!(
            listed(&h, fresh, "").await[0]["notes"],
            "team budget",
            "{backend}"
        );
        let (status, body) = h
            .call_api(
                "PUT",
                &format!("/keys/{fresh_id}/notes"),
                Some(json!({"notes": "é".repeat(256)})),
            )
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("VALIDATION_FAILED")),
            "{backend}"
        );
        let (status, _) = h
            .call_api(
                "PUT",
                &format!("/keys/{fresh_id}/notes"),
                Some(json!({"notes": "é".repeat(255)})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend}: 255 characters");
        for route in ["notes", "status"] {
            let (status, _) = h
                .call_api(
                    "PUT",
                    &format!("/keys/987654321/{route}"),
                    Some(json!({"notes": "x", "status": "active"})),
                )
                .await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{backend}: unknown key ({route})");
        }

        // Export.
        let export = Request::get(format!("{}/api/keys/export?group_id={g}&key={ADMIN_KEY}", h.base))
            .body(Full::default())
            .unwrap();
        let (status, headers, body) = h.send(export).await;
        assert_eq!(status, StatusCode::OK, "{backend}");
        let disposition = headers[header::CONTENT_DISPOSITION].to_str().unwrap();
        assert!(disposition.starts_with("attachment"), "{backend}: {disposition}");
        assert!(disposition.contains("keys-g-all.txt"), "{backend}: {disposition}");
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let exported: BTreeSet<String> = String::from_utf8(body.to_vec())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(exported, values(&all), "{backend}: one key per line");
        let (status, _, body) = h
            .send(h.api("GET", &format!("/keys/export?group_id={g}&status=invalid"), None))
            .await;
        assert_eq!((status, body.len()), (StatusCode::OK, 0), "{backend}");

        // Delete.
        let (_, body) = h
            .call_api(
                "POST",
                "/keys/delete-multiple",
                Some(json!({"group_id": g, "keys_text": format!("{NEW_A} sk-not-there {NEW_A}")})),
            )
            .await;
        assert_eq!(
            body["data"],
            json!({"deleted_count": 1, "ignored_count": 2, "total_in_group": 3}),
            "{backend}"
        );
        assert!(!values(&listed(&h, g, "").await).contains(NEW_A), "{backend}");
        assert!(
            h.running()
                .registry
                .pool()
                .keys("g")
                .iter()
                .all(|k| k.secret().expose() != NEW_A),
            "{backend}: gone from the pool"
        );

        // Errors.
        let (status, body) = h.call_api("GET", "/keys", None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("VALIDATION_FAILED")),
            "{backend}"
        );
        assert!(body["message"].as_str().unwrap().contains("group_id"), "{body}");
        let (status, _) = h.call_api("GET", "/keys?group_id=987654321", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{backend}");
        let (status, _) = h
            .call_api(
                "POST",
                "/keys/add-multiple",
                Some(json!({"group_id": 987654321, "keys_text": "sk-x"})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{backend}");
        let (status, _) = h
            .call_api("POST", "/keys/clear-all", Some(json!({"group_id": 987654321})))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{backend}");
        let too_many: Vec<String> = (0..5001).map(|i| format!("sk-batch-{i}")).collect();
        let (status, body) = h
            .call_api(
                "POST",
                "/keys/add-multiple",
                Some(json!({"group_id": g, "keys_text": too_many.join("\n")})),
            )
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("VALIDATION_FAILED")),
            "{backend}"
        );
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("batch size exceeds the limit of 5000 keys, got 5001"),
            "{body}"
        );
        let (status, _) = h
            .call_api(
                "POST",
                "/keys/add-multiple",
                Some(json!({"group_id": g, "keys_text": " ,; "})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{backend}: no valid keys");
        assert_eq!(
            listed(&h, g, "").await.len(),
            3,
            "{backend}: nothing written by failures"
        );

        // A full batch is accepted.
        let (_, body) = h
            .call_api(
                "POST",
                "/keys/add-multiple",
                Some(json!({"group_id": g, "keys_text": too_many[..5000].join("\n")})),
            )
            .await;
        assert_eq!(body["data"]["total_in_group"], 5003, "{backend}: {body}");

        // Clear everything.
        let (status, body) = h
            .call_api("POST", "/keys/clear-all", Some(json!({"group_id": g})))
            .await;
        assert_eq!(
            (status, body["message"].as_str()),
            (StatusCode::OK, Some("5003 keys cleared")),
            "{backend}"
        );
        assert!(listed(&h, g, "").await.is_empty(), "{backend}");
        assert_eq!(
            h.send(h.chat("g", false)).await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "{backend}: the pool is empty too"
        );
    }
}

/// Sends chats until `key` is blacklisted, then waits until the database says so.
async fn blacklist(h: &Harness, group_id: i64, key: &str) {
    h.mock.script(key, Behaviour::Unauthorized);
    for _ in 0..10 {
        if pool_state(h, "g", key) == KeyState::Invalid {
            break;
        }
        h.send(h.chat("g", false)).await;
    }
    assert_eq!(pool_state(h, "g", key), KeyState::Invalid);
    Harness::eventually(Duration::from_secs(10), || async {
        values(&listed(h, group_id, "&status=invalid").await).contains(key)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_keys_are_restored_and_cleared() {
    for test_db in TestDb::all("invalid_keys_are_restored_and_cleared").await {
        let backend = test_db.db.backend();
        let mock = MockUpstream::start().await.unwrap();
        let up = mock.url();
        let h = Harness::start(
            test_db,
            mock,
            vec![group(
                "g",
                &up,
                &[BAD_1, BAD_2, GOOD],
                json!({"blacklist_threshold": 1}),
            )],
            &[],
        )
        .await;
        let g = h.group_id("g").await;
        blacklist(&h, g, BAD_1).await;
        blacklist(&h, g, BAD_2).await;
        h.mock.clear_scripts();

        let (status, body) = h
            .call_api(
                "POST",
                "/keys/restore-multiple",
                Some(json!({"group_id": g, "keys_text": format!("{BAD_1} {GOOD} sk-not-there")})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend}: {body}");
        assert_eq!(
            body["data"],
            json!({"restored_count": 1, "ignored_count": 2, "total_in_group": 3}),
            "{backend}: only invalid keys are restored"
        );
        assert_eq!(pool_state(&h, "g", BAD_1), KeyState::Active, "{backend}");
        let restored = listed(&h, g, "").await;
        let row = restored.iter().find(|k| k["key_value"] == BAD_1).unwrap();
        assert_eq!(
            (&row["status"], &row["failure_count"]),
            (&json!("active"), &json!(0)),
            "{backend}"
        );
        let before = h.mock.requests_by_key().get(BAD_1).copied().unwrap_or(0);
        for _ in 0..4 {
            assert_eq!(h.send(h.chat("g", false)).await.0, StatusCode::OK, "{backend}");
        }
        assert!(
            h.mock.requests_by_key().get(BAD_1).copied().unwrap_or(0) > before,
            "{backend}: the restored key serves again"
        );

        let (status, body) = h
            .call_api("POST", "/keys/restore-all-invalid", Some(json!({"group_id": g})))
            .await;
        assert_eq!(
            (status, body["message"].as_str()),
            (StatusCode::OK, Some("1 keys restored")),
            "{backend}"
        );
        assert_eq!(pool_state(&h, "g", BAD_2), KeyState::Active, "{backend}");
        assert!(listed(&h, g, "&status=invalid").await.is_empty(), "{backend}");

        blacklist(&h, g, BAD_2).await;
        let (status, body) = h
            .call_api("POST", "/keys/clear-all-invalid", Some(json!({"group_id": g})))
            .await;
        assert_eq!(
            (status, body["message"].as_str()),
            (StatusCode::OK, Some("1 invalid keys cleared")),
            "{backend}"
        );
        assert_eq!(
            values(&listed(&h, g, "").await),
            BTreeSet::from([BAD_1.to_owned(), GOOD.to_owned()]),
            "{backend}"
        );
        assert!(
            h.running()
                .registry
                .pool()
                .keys("g")
                .iter()
                .all(|k| k.secret().expose() != BAD_2),
            "{backend}: gone from the pool"
        );
        let (status, body) = h
            .call_api("POST", "/keys/restore-all-invalid", Some(json!({})))
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("VALIDATION_FAILED")),
            "{backend}: group_id is required"
        );
    }
}

/// The export streams a page of keys at a time: a group of several pages comes out whole, in
/// id order, each key once, without a `Content-Length` (chunked). The listing keeps gpt-load's
/// pagination bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_group_pages_within_bounds_and_exports_whole() {
    for test_db in TestDb::all("a_large_group_pages_within_bounds_and_exports_whole").await {
        let backend = test_db.db.backend();
        let mock = MockUpstream::start().await.unwrap();
        let up = mock.url();
        let h = Harness::start(
            test_db,
            mock,
            vec![group("big", &up, &[SEED], json!({}))],
            &[("ENCRYPTION_KEY", "export test encryption passphrase")],
        )
        .await;
        let g = h.group_id("big").await;
        let added: Vec<String> = (0..2_345)
            .map(|i| format!("sk-export-{i:05}-0123456789"))
            .collect();
        let (status, body) = h
            .call_api(
                "POST",
                "/keys/add-multiple",
                Some(json!({"group_id": g, "keys_text": added.join("\n")})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend}: {body}");
        let (status, headers, body) = h
            .send(h.api("GET", &format!("/keys/export?group_id={g}"), None))
            .await;
        assert_eq!(status, StatusCode::OK, "{backend}");
        assert!(
            headers.get(header::CONTENT_LENGTH).is_none(),
            "{backend}: streamed, not buffered"
        );
        let text = String::from_utf8(body.to_vec()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut expected = vec![SEED];
        expected.extend(added.iter().map(String::as_str));
        assert_eq!(
            lines, expected,
            "{backend}: every key once, decrypted, in id order"
        );

        // gpt-load's pagination bounds on the same group (2,346 keys).
        for (query, page, page_size, items) in [
            ("", 1, 15, 15),
            ("&page=0&page_size=0", 1, 15, 15),
            ("&page=-3&page_size=-1", 1, 15, 15),
            ("&page_size=5000", 1, 1000, 1000),
            ("&page=3&page_size=1000", 3, 1000, 346),
            ("&page=4&page_size=1000", 4, 1000, 0),
        ] {
            let (status, body) = h
                .call_api("GET", &format!("/keys?group_id={g}{query}"), None)
                .await;
            assert_eq!(status, StatusCode::OK, "{backend} {query}: {body}");
            let pages = (2346 + page_size - 1) / page_size;
            assert_eq!(
                body["data"]["pagination"],
                json!({"page": page, "page_size": page_size, "total_items": 2346, "total_pages": pages}),
                "{backend} {query}"
            );
            assert_eq!(
                body["data"]["items"].as_array().unwrap().len(),
                items,
                "{backend} {query}"
            );
        }
    }
}
