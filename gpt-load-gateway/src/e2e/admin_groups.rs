//! Group order, per-group statistics and copies through real HTTP.

use std::{collections::BTreeSet, time::Duration};

use gpt_load_e2e::MockUpstream;
use http::StatusCode;
use serde_json::json;

use super::harness::{Harness, group};
use crate::db::test_support::TestDb;

const GOOD: &str = "sk-good-copy-0123456789";
const OTHER: &str = "sk-good-other-0123456789";
const BAD: &str = "mock-500-stats-0123456789";

/// Group names in list order.
async fn names(h: &Harness) -> Vec<String> {
    let (_, body) = h.call_api("GET", "/groups", None).await;
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn id_of(h: &Harness, name: &str) -> i64 {
    let (_, body) = h.call_api("GET", "/groups/list", None).await;
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .and_then(|g| g["id"].as_i64())
        .expect("group exists")
}

async fn key_values(h: &Harness, group: i64) -> BTreeSet<String> {
    let (status, body) = h
        .call_api("GET", &format!("/keys?group_id={group}&page_size=1000"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_value"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_reordered_all_or_nothing() {
    for test_db in TestDb::all("groups_are_reordered_all_or_nothing").await {
        let mock = MockUpstream::start().await.unwrap();
        let up = mock.url();
        let h = Harness::start(
            test_db,
            mock,
            vec![
                group("a", &up, &[GOOD], json!({})),
                group("b", &up, &[GOOD], json!({})),
                group("c", &up, &[GOOD], json!({})),
            ],
            &[],
        )
        .await;
        let (a, b, c) = (id_of(&h, "a").await, id_of(&h, "b").await, id_of(&h, "c").await);
        let before = names(&h).await;

        for (items, why) in [
            (json!([]), "empty"),
            (
                json!([{"id": a, "sort": 1}, {"id": a, "sort": 2}]),
                "duplicate id",
            ),
            (
                json!([{"id": a, "sort": 3}, {"id": 987_654, "sort": 1}]),
                "unknown id",
            ),
            (
                json!([{"id": a, "sort": 3}, {"id": b, "sort": -1}]),
                "negative sort",
            ),
            (json!([{"id": 0, "sort": 1}]), "id 0"),
        ] {
            let (status, body) = h
                .call_api("PUT", "/groups/reorder", Some(json!({"items": items})))
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {body}");
            assert_eq!(names(&h).await, before, "{why}: nothing written");
        }

        let items = json!([{"id": c, "sort": 0}, {"id": a, "sort": 1}, {"id": b, "sort": 2}]);
        let (status, body) = h
            .call_api("PUT", "/groups/reorder", Some(json!({"items": items})))
            .await;
        assert_eq!(
            (status, &body["message"]),
            (StatusCode::OK, &json!("Group order saved"))
        );
        assert_eq!(names(&h).await, ["c", "a", "b"]);

        // `/groups/{id}` does not shadow the static segment, and vice versa.
        let (status, body) = h
            .call_api("PUT", &format!("/groups/{a}"), Some(json!({"sort": 5})))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(names(&h).await, ["c", "b", "a"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_stats_count_final_requests() {
    let mock = MockUpstream::start().await.unwrap();
    let up = mock.url();
    let h = Harness::start(
        TestDb::sqlite().await,
        mock,
        vec![
            group("mixed", &up, &[BAD, GOOD], json!({})),
            group(
                "broken",
                &up,
                &[BAD],
                json!({"max_retries": 0, "blacklist_threshold": 0}),
            ),
        ],
        &[],
    )
    .await;
    let (mixed, broken) = (id_of(&h, "mixed").await, id_of(&h, "broken").await);

    let (status, body) = h.call_api("GET", &format!("/groups/{mixed}/stats"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"]["key_stats"],
        json!({"total_keys": 2, "active_keys": 2, "invalid_keys": 0})
    );
    assert_eq!(body["data"]["stats_24_hour"]["total_requests"], 0);

    for _ in 0..4 {
        assert_eq!(h.send(h.chat("mixed", false)).await.0, StatusCode::OK);
    }
    for _ in 0..2 {
        assert_ne!(h.send(h.chat("broken", false)).await.0, StatusCode::OK);
    }
    assert!(h.mock.requests_by_key().get(BAD).copied().unwrap_or(0) >= 1);

    let window = |id: i64| {
        let h = &h;
        async move {
            let (_, body) = h.call_api("GET", &format!("/groups/{id}/stats"), None).await;
            body["data"].clone()
        }
    };
    Harness::eventually(Duration::from_secs(10), || async {
        window(mixed).await["stats_24_hour"]["total_requests"] == 4
            && window(broken).await["stats_24_hour"]["total_requests"] == 2
    })
    .await;
    let stats = window(mixed).await;
    // Retries are not counted: each request succeeded in the end.
    for w in ["stats_24_hour", "stats_7_day", "stats_30_day"] {
        assert_eq!(
            stats[w],
            json!({"total_requests": 4, "failed_requests": 0, "failure_rate": 0.0}),
            "{w}"
        );
    }
    let stats = window(broken).await;
    assert_eq!(
        stats["stats_24_hour"],
        json!({"total_requests": 2, "failed_requests": 2, "failure_rate": 1.0})
    );

    let (status, _) = h.call_api("GET", "/groups/987654/stats", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_copied_with_their_keys() {
    for test_db in TestDb::all("groups_are_copied_with_their_keys").await {
        let backend = test_db.db.backend();
        let mock = MockUpstream::start().await.unwrap();
        let up = mock.url();
        let mut source = group("src", &up, &[GOOD, OTHER], json!({"max_retries": 1}));
        source["header_rules"] = json!([{"key": "x-team", "value": "blue", "action": "set"}]);
        source["display_name"] = json!("Source");
        let h = Harness::start(test_db, mock, vec![source], &[]).await;
        let src = id_of(&h, "src").await;

        // Disable one key: `valid_only` leaves it behind.
        let (_, body) = h
            .call_api("GET", &format!("/keys?group_id={src}&page_size=1000"), None)
            .await;
        let other_id = body["data"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["key_value"] == OTHER)
            .and_then(|k| k["id"].as_i64())
            .unwrap();
        let (status, body) = h
            .call_api(
                "PUT",
                &format!("/keys/{other_id}/status"),
                Some(json!({"status": "disabled"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend}: {body}");

        let (status, body) = h
            .call_api(
                "POST",
                &format!("/groups/{src}/copy"),
                Some(json!({"copy_keys": "all"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend}: {body}");
        let copy = &body["data"]["group"];
        assert_eq!(copy["name"], "src_copy", "{backend}");
        assert_eq!(copy["display_name"], "Source Copy", "{backend}");
        assert_eq!(copy["config"]["max_retries"], 1, "{backend}");
        assert_eq!(copy["header_rules"][0]["value"], "blue", "{backend}");
        assert_eq!(copy["upstreams"][0]["url"], json!(up), "{backend}");
        let copy_id = copy["id"].as_i64().unwrap();
        assert_eq!(
            key_values(&h, copy_id).await,
            BTreeSet::from([GOOD.to_owned(), OTHER.to_owned()]),
            "{backend}: all keys"
        );

        let (status, body) = h
            .call_api(
                "POST",
                &format!("/groups/{src}/copy"),
                Some(json!({"copy_keys": "valid_only"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend}: {body}");
        assert_eq!(body["data"]["group"]["name"], "src_copy_2", "{backend}");
        let valid_id = body["data"]["group"]["id"].as_i64().unwrap();
        assert_eq!(
            key_values(&h, valid_id).await,
            BTreeSet::from([GOOD.to_owned()]),
            "{backend}: active keys only"
        );

        let (status, body) = h
            .call_api(
                "POST",
                &format!("/groups/{src}/copy"),
                Some(json!({"copy_keys": "none"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend}: {body}");
        assert_eq!(body["data"]["group"]["name"], "src_copy_3", "{backend}");
        let none_id = body["data"]["group"]["id"].as_i64().unwrap();
        assert!(key_values(&h, none_id).await.is_empty(), "{backend}: no keys");

        // An empty body copies every key.
        let (status, body) = h.call_api("POST", &format!("/groups/{src}/copy"), None).await;
        assert_eq!(status, StatusCode::OK, "{backend}: {body}");
        assert_eq!(body["data"]["group"]["name"], "src_copy_4", "{backend}");
        let (status, _) = h
            .call_api(
                "POST",
                &format!("/groups/{src}/copy"),
                Some(json!({"copy_keys": "some"})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{backend}");

        // The copies serve at once.
        assert_eq!(
            h.send(h.chat("src_copy", false)).await.0,
            StatusCode::OK,
            "{backend}"
        );
        assert_eq!(
            h.send(h.chat("src_copy_2", false)).await.0,
            StatusCode::OK,
            "{backend}"
        );
        assert_eq!(
            h.send(h.chat("src_copy_3", false)).await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "{backend}: no keys"
        );
        assert_eq!(h.mock.total_requests(), 2, "{backend}: the copied keys were used");
    }
}
