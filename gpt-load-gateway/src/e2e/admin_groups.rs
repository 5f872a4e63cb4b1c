//! Group order, per-group statistics and copies through real HTTP.

use std::{collections::BTreeSet, time::Duration};

use gpt_load_e2e::MockUpstream;
use http::StatusCode;
use serde_json::{Value, json};

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

/// A valid standard group body named `name` (of `channel`), with `changes` merged in.
fn standard_body(name: &str, channel: &str, upstream: &str, changes: Value) -> Value {
    let mut body = json!({
        "name": name,
        "channel_type": channel,
        "test_model": "m",
        "upstreams": [{"url": upstream, "weight": 1}],
    });
    for (k, v) in changes.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// Every group and sub-group rule of gpt-load (reference §8.3), one request each: rejected with
/// `400 VALIDATION_FAILED` naming the field (or 404/409 where the resource says so), nothing
/// written by a rejected request, and the normalisations gpt-load applies to accepted ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_and_sub_group_rule_is_enforced() {
    for test_db in TestDb::all("every_group_and_sub_group_rule_is_enforced").await {
        let backend = test_db.db.backend();
        let mock = MockUpstream::start().await.unwrap();
        let up = mock.url();
        let h = Harness::start(test_db, mock, vec![], &[]).await;
        let create = |body: Value| h.call_api("POST", "/groups", Some(body));
        let rejected = |status: StatusCode, body: &Value, field: &str, why: &str| {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{backend} {why}: {body}");
            assert_eq!(body["code"], "VALIDATION_FAILED", "{backend} {why}: {body}");
            let message = body["message"].as_str().unwrap_or_default();
            assert!(
                message.starts_with(field),
                "{backend} {why}: names {field}: {message}"
            );
        };

        let long = "a".repeat(101);
        let create_rules: Vec<(&str, Value, &str)> = vec![
            ("upper case in the name", json!({"name": "Bad"}), "name"),
            ("a space in the name", json!({"name": "a b"}), "name"),
            ("a name over 100 characters", json!({"name": long}), "name"),
            (
                "an unknown channel type",
                json!({"channel_type": "nope"}),
                "channel_type",
            ),
            (
                "an unknown group type",
                json!({"group_type": "weird"}),
                "group_type",
            ),
            ("no test model", json!({"test_model": " "}), "test_model"),
            ("no upstream", json!({"upstreams": []}), "upstreams"),
            (
                "an upstream that is not http(s)",
                json!({"upstreams": [{"url": "ftp://h", "weight": 1}]}),
                "upstreams",
            ),
            (
                "only zero weights",
                json!({"upstreams": [{"url": up, "weight": 0}]}),
                "upstreams",
            ),
            (
                "a relative validation endpoint",
                json!({"validation_endpoint": "v1/x"}),
                "validation_endpoint",
            ),
            (
                "a URL as validation endpoint",
                json!({"validation_endpoint": "/x://y"}),
                "validation_endpoint",
            ),
            (
                "a header named twice (any case)",
                json!({"header_rules": [{"key": "X-A", "value": "1"}, {"key": "x-a", "value": "2"}]}),
                "header_rules",
            ),
            (
                "an unknown header action",
                json!({"header_rules": [{"key": "X-A", "action": "append"}]}),
                "header_rules",
            ),
            (
                "a blank redirect target",
                json!({"model_redirect_rules": {"a": " "}}),
                "model_redirect_rules",
            ),
            (
                "a blank redirect source",
                json!({"model_redirect_rules": {" ": "b"}}),
                "model_redirect_rules",
            ),
            (
                "a bad config value",
                json!({"config": {"max_retries": -1}}),
                "max_retries",
            ),
            ("an unknown config key", json!({"config": {"nope": 1}}), "nope"),
        ];
        for (why, changes, field) in create_rules {
            let (status, body) = create(standard_body("rules", "openai", &up, changes)).await;
            rejected(status, &body, field, why);
        }
        let (status, body) = create(standard_body(
            "rules",
            "openai",
            &up,
            json!({"upstreams": [{"url": up, "weight": -1}]}),
        ))
        .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{backend} negative weight: {body}"
        );
        let aggregate_redirect = json!({"name": "rules", "group_type": "aggregate", "channel_type": "openai",
            "model_redirect_rules": {"a": "b"}});
        let (status, body) = create(aggregate_redirect).await;
        rejected(
            status,
            &body,
            "model_redirect_rules",
            "redirect rules on an aggregate",
        );
        let (_, body) = h.call_api("GET", "/groups", None).await;
        assert_eq!(
            body["data"],
            json!([]),
            "{backend}: no rejected group was written"
        );

        // Accepted, normalised as gpt-load does.
        let rules = json!([{"key": " ", "value": "dropped"}, {"key": "x-custom-id", "value": "v"}]);
        let (status, body) = create(standard_body(
            "std",
            "openai",
            &up,
            json!({"header_rules": rules}),
        ))
        .await;
        assert_eq!(status, StatusCode::OK, "{backend}: {body}");
        assert_eq!(
            body["data"]["header_rules"],
            json!([{"key": "X-Custom-Id", "value": "v", "action": "set"}]),
            "{backend}: blank names dropped, names canonical"
        );
        let std_id = body["data"]["id"].as_i64().unwrap();
        let aggregate = json!({"name": "agg", "group_type": "aggregate", "channel_type": "openai",
            "upstreams": [{"url": up, "weight": 1}], "test_model": "x", "validation_endpoint": "/v1/x"});
        let (status, body) = create(aggregate).await;
        assert_eq!(status, StatusCode::OK, "{backend}: {body}");
        let data = &body["data"];
        assert_eq!(
            (
                &data["upstreams"],
                &data["test_model"],
                &data["validation_endpoint"]
            ),
            (&json!([]), &json!("-"), &json!("")),
            "{backend}: an aggregate has no upstreams, test model or endpoint of its own"
        );
        let agg = data["id"].as_i64().unwrap();
        let (status, body) = create(standard_body("std", "openai", &up, json!({}))).await;
        assert_eq!(
            (status, &body["code"]),
            (StatusCode::CONFLICT, &json!("DUPLICATE_RESOURCE"))
        );

        // Updates.
        let update = |id: i64, body: Value| h.call_json(h.api("PUT", &format!("/groups/{id}"), Some(body)));
        let (status, body) = update(std_id, json!({"group_type": "aggregate", "test_model": ""})).await;
        assert_eq!(status, StatusCode::OK, "{backend}: {body}");
        assert_eq!(
            (&body["data"]["group_type"], &body["data"]["test_model"]),
            (&json!("standard"), &json!("m")),
            "{backend}: the group type never changes; an empty test model is no change"
        );
        let (status, body) = update(agg, json!({"channel_type": "gemini"})).await;
        assert_eq!(
            (status, &body["data"]["channel_type"]),
            (StatusCode::OK, &json!("openai")),
            "{backend}: an aggregate's channel type change is ignored"
        );
        let (status, body) = update(std_id, json!({"name": "agg"})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{backend}: {body}");
        let (status, body) = update(std_id, json!({"validation_endpoint": "nope"})).await;
        rejected(status, &body, "validation_endpoint", "update with a bad endpoint");
        assert_eq!(
            update(999_999, json!({})).await.0,
            StatusCode::NOT_FOUND,
            "{backend}"
        );

        // Sub-groups.
        let other_endpoint = standard_body(
            "elsewhere",
            "openai",
            &up,
            json!({"validation_endpoint": "/v1/other"}),
        );
        let elsewhere = create(other_endpoint).await.1["data"]["id"].as_i64().unwrap();
        let claude = create(standard_body("claude", "anthropic", &up, json!({})))
            .await
            .1["data"]["id"]
            .as_i64()
            .unwrap();
        let agg2 = create(json!({"name": "agg2", "group_type": "aggregate", "channel_type": "openai"}))
            .await
            .1["data"]["id"]
            .as_i64()
            .unwrap();
        let add = |target: i64, members: Value| {
            h.call_json(h.api(
                "POST",
                &format!("/groups/{target}/sub-groups"),
                Some(json!({"sub_groups": members})),
            ))
        };
        let sub_rules: Vec<(&str, i64, Value, StatusCode, &str)> = vec![
            (
                "an empty list",
                agg,
                json!([]),
                StatusCode::BAD_REQUEST,
                "sub_groups",
            ),
            (
                "a target that is not an aggregate",
                std_id,
                json!([{"group_id": elsewhere, "weight": 1}]),
                StatusCode::BAD_REQUEST,
                "",
            ),
            (
                "an unknown member",
                agg,
                json!([{"group_id": 999_999, "weight": 1}]),
                StatusCode::NOT_FOUND,
                "",
            ),
            (
                "an aggregate as member",
                agg,
                json!([{"group_id": agg2, "weight": 1}]),
                StatusCode::BAD_REQUEST,
                "sub_groups",
            ),
            (
                "another channel type",
                agg,
                json!([{"group_id": claude, "weight": 1}]),
                StatusCode::BAD_REQUEST,
                "sub_groups",
            ),
            (
                "members with different validation endpoints",
                agg,
                json!([{"group_id": std_id, "weight": 1}, {"group_id": elsewhere, "weight": 1}]),
                StatusCode::BAD_REQUEST,
                "sub_groups",
            ),
            (
                "a weight above 1000",
                agg,
                json!([{"group_id": std_id, "weight": 1001}]),
                StatusCode::BAD_REQUEST,
                "weight",
            ),
            (
                "a negative weight",
                agg,
                json!([{"group_id": std_id, "weight": -1}]),
                StatusCode::BAD_REQUEST,
                "weight",
            ),
            (
                "the same member twice",
                agg,
                json!([{"group_id": std_id, "weight": 1}, {"group_id": std_id, "weight": 2}]),
                StatusCode::CONFLICT,
                "",
            ),
        ];
        for (why, target, members, expected, field) in sub_rules {
            let (status, body) = add(target, members).await;
            if expected == StatusCode::BAD_REQUEST && !field.is_empty() {
                rejected(status, &body, field, why);
            } else {
                assert_eq!(status, expected, "{backend} {why}: {body}");
            }
        }
        let links = h
            .call_api("GET", &format!("/groups/{agg}/sub-groups"), None)
            .await
            .1;
        assert_eq!(
            links["data"],
            json!([]),
            "{backend}: no rejected member was added"
        );

        let (status, body) = add(agg, json!([{"group_id": std_id, "weight": 0}])).await;
        assert_eq!(status, StatusCode::OK, "{backend}: weight 0 is allowed: {body}");
        let (status, _) = add(agg, json!([{"group_id": elsewhere, "weight": 1}])).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{backend}: the existing member's endpoint counts"
        );
        let (status, _) = add(agg, json!([{"group_id": std_id, "weight": 1}])).await;
        assert_eq!(status, StatusCode::CONFLICT, "{backend}: already a member");
        let weight = |member: i64, w: Value| {
            h.call_json(h.api(
                "PUT",
                &format!("/groups/{agg}/sub-groups/{member}/weight"),
                Some(json!({"weight": w})),
            ))
        };
        let (status, body) = weight(std_id, json!(1001)).await;
        rejected(status, &body, "weight", "a weight update above 1000");
        assert_eq!(
            weight(elsewhere, json!(5)).await.0,
            StatusCode::NOT_FOUND,
            "{backend}: not a member"
        );
        assert_eq!(weight(std_id, json!(1000)).await.0, StatusCode::OK, "{backend}");

        // A member's channel type and validation endpoint are fixed while it belongs to one.
        let (status, body) = update(std_id, json!({"channel_type": "gemini"})).await;
        rejected(status, &body, "channel_type", "a member changing channel type");
        let (status, body) = update(std_id, json!({"validation_endpoint": "/v1/new"})).await;
        rejected(
            status,
            &body,
            "validation_endpoint",
            "a member changing validation endpoint",
        );
        let remove = h
            .call_api("DELETE", &format!("/groups/{agg}/sub-groups/{std_id}"), None)
            .await;
        assert_eq!(remove.0, StatusCode::OK, "{backend}");
        let (status, _) = update(std_id, json!({"channel_type": "gemini"})).await;
        assert_eq!(status, StatusCode::OK, "{backend}: free to change once removed");
        let remove_again = h
            .call_api("DELETE", &format!("/groups/{agg}/sub-groups/{std_id}"), None)
            .await;
        assert_eq!(remove_again.0, StatusCode::NOT_FOUND, "{backend}");
    }
}
