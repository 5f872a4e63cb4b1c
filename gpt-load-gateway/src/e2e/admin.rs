//! The admin API through real HTTP.

use gpt_load_e2e::MockUpstream;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use super::harness::{ADMIN_KEY, Harness, PROXY_KEY, group};
use crate::db::test_support::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_login_and_throttling() {
    let mock = MockUpstream::start().await.unwrap();
    let h = Harness::start(TestDb::sqlite().await, mock, vec![], &[]).await;
    let anonymous = Request::get(format!("{}/api/groups", h.base))
        .body(Full::default())
        .unwrap();
    let (status, body) = h.call_json(anonymous).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("UNAUTHORIZED"))
    );
    let by_query = Request::get(format!("{}/api/groups?key={ADMIN_KEY}", h.base))
        .body(Full::default())
        .unwrap();
    assert_eq!(h.call_json(by_query).await.1["code"], 0);

    let login = |key: &str, lang: &str| {
        Request::post(format!("{}/api/auth/login", h.base))
            .header("accept-language", lang)
            .body(Full::from(json!({"auth_key": key}).to_string()))
            .unwrap()
    };
    let (status, body) = h.call_json(login(ADMIN_KEY, "en")).await;
    assert_eq!((status, body["success"].as_bool()), (StatusCode::OK, Some(true)));
    let (status, body) = h.call_json(login("wrong", "zh-CN,zh;q=0.9")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["message"], "认证失败", "Chinese for Accept-Language: zh");
    for _ in 0..9 {
        h.call_json(login("wrong", "en")).await;
    }
    let (status, _, _) = h.send(login(ADMIN_KEY, "en")).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "ten failures throttle the address, even for the right key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_managed_and_reach_the_proxy_at_once() {
    for test_db in TestDb::all("groups_are_managed_and_reach_the_proxy_at_once").await {
        let backend = test_db.db.backend();
        let mock = MockUpstream::start().await.unwrap();
        let up = mock.url();
        let h = Harness::start(
            test_db,
            mock,
            vec![group("seeded", &up, &["sk-seeded-0123456789"], json!({}))],
            &[],
        )
        .await;

        let create = json!({"name": "fresh", "channel_type": "openai", "test_model": "gpt-4o-mini",
                             "upstreams": [{"url": up, "weight": 1}], "config": {"max_retries": 1},
                             "header_rules": [{"key": "x-team", "value": "${GROUP_NAME}", "action": "set"}]});
        let (status, body) = h.call_json(h.api("POST", "/groups", Some(create.clone()))).await;
        assert_eq!(
            (status, &body["code"]),
            (StatusCode::OK, &json!(0)),
            "{backend}: {body}"
        );
        let group = &body["data"];
        for field in [
            "id",
            "name",
            "endpoint",
            "upstreams",
            "config",
            "header_rules",
            "created_at",
        ] {
            assert!(group.get(field).is_some(), "{backend}: GroupResponse has {field}");
        }
        assert!(group["endpoint"].as_str().unwrap().ends_with("/proxy/fresh"));
        let id = group["id"].as_i64().unwrap();

        // The proxy knows the new group at once (no keys yet: 503, not 404).
        assert_eq!(
            h.send(h.chat("fresh", false)).await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "{backend}"
        );

        let (status, body) = h.call_json(h.api("POST", "/groups", Some(create))).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::CONFLICT, Some("DUPLICATE_RESOURCE")),
            "{backend}"
        );
        let (status, body) = h
            .call_json(h.api(
                "POST",
                "/groups",
                Some(json!({"name": "Bad Name", "channel_type": "openai"})),
            ))
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("VALIDATION_FAILED"))
        );
        assert!(body["message"].as_str().unwrap().starts_with("name"), "{body}");
        let malformed = Request::post(format!("{}/api/groups", h.base))
            .header("authorization", format!("Bearer {ADMIN_KEY}"))
            .header("content-type", "application/json")
            .body(Full::from("{not json"))
            .unwrap();
        assert_eq!(h.call_json(malformed).await.1["code"], "INVALID_JSON");

        let (status, body) = h
            .call_json(h.api(
                "PUT",
                &format!("/groups/{id}"),
                Some(json!({"display_name": "Fresh"})),
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            (
                body["data"]["display_name"].as_str(),
                body["data"]["test_model"].as_str()
            ),
            (Some("Fresh"), Some("gpt-4o-mini"))
        );
        assert_eq!(
            h.call_json(h.api("PUT", "/groups/999999", Some(json!({}))))
                .await
                .0,
            StatusCode::NOT_FOUND
        );

        let (_, body) = h.call_json(h.api("GET", "/groups", None)).await;
        let names: Vec<&str> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["fresh", "seeded"],
            "{backend}: newest first at equal sort"
        );
        let (_, body) = h.call_json(h.api("GET", "/groups/list", None)).await;
        assert_eq!(body["data"][0].as_object().unwrap().len(), 3);

        let (status, _) = h.call_json(h.api("DELETE", &format!("/groups/{id}"), None)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            h.send(h.chat("fresh", false)).await.0,
            StatusCode::NOT_FOUND,
            "{backend}: gone from the proxy"
        );
        assert_eq!(
            h.call_json(h.api("DELETE", &format!("/groups/{id}"), None))
                .await
                .0,
            StatusCode::NOT_FOUND
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_listed_validated_and_applied() {
    let mock = MockUpstream::start().await.unwrap();
    let h = Harness::start(TestDb::sqlite().await, mock, vec![], &[]).await;
    let (_, body) = h.call_json(h.api("GET", "/settings", None)).await;
    let categories = body["data"].as_array().unwrap();
    assert_eq!(categories.len(), 3);
    let all: Vec<&Value> = categories
        .iter()
        .flat_map(|c| c["settings"].as_array().unwrap())
        .collect();
    assert!(
        all.iter()
            .any(|s| s["key"] == "max_retries" && s["type"] == "int")
    );

    let (status, body) = h
        .call_json(h.api("PUT", "/settings", Some(json!({"max_retries": -1, "nope": 1}))))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("VALIDATION_FAILED"))
    );
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("max_retries") && message.contains("nope"),
        "every bad field is named: {message}"
    );

    let (status, _) = h
        .call_json(h.api("PUT", "/settings", Some(json!({"max_retries": 7}))))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.running().registry.settings().current().max_retries, 7);
    let (_, body) = h.call_json(h.api("GET", "/groups/config-options", None)).await;
    let option = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["key"] == "max_retries")
        .unwrap()
        .clone();
    assert_eq!(
        option["default_value"], 7,
        "config options show the current system value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_sub_groups_are_managed() {
    let mock = MockUpstream::start().await.unwrap();
    let up = mock.url();
    let mut claude = group("claude", &up, &["sk-claude-0123456789"], json!({}));
    claude["channel_type"] = json!("anthropic");
    let seeded = vec![
        group("one", &up, &["sk-one-0123456789"], json!({})),
        group("two", &up, &["sk-two-0123456789"], json!({})),
        claude,
        json!({"name": "all", "group_type": "aggregate", "channel_type": "openai", "sub_groups": []}),
    ];
    let h = Harness::start(TestDb::sqlite().await, mock, seeded, &[]).await;
    let (_, body) = h.call_json(h.api("GET", "/groups/list", None)).await;
    let id = |name: &str| {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    let (all, one, two, claude) = (id("all"), id("one"), id("two"), id("claude"));

    let add = |members: Value| {
        h.api(
            "POST",
            &format!("/groups/{all}/sub-groups"),
            Some(json!({"sub_groups": members})),
        )
    };
    let (status, body) = h
        .call_json(add(
            json!([{"group_id": one, "weight": 3}, {"group_id": two, "weight": 1}]),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        h.call_json(add(json!([{"group_id": one, "weight": 1}]))).await.0,
        StatusCode::CONFLICT
    );
    let (status, body) = h.call_json(add(json!([{"group_id": claude, "weight": 1}]))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("VALIDATION_FAILED")),
        "{body}"
    );
    assert_eq!(
        h.call_json(add(json!([{"group_id": two, "weight": 2000}])))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let not_aggregate = h.api(
        "POST",
        &format!("/groups/{one}/sub-groups"),
        Some(json!({"sub_groups": [{"group_id": two, "weight": 1}]})),
    );
    assert_eq!(h.call_json(not_aggregate).await.0, StatusCode::BAD_REQUEST);

    let (_, body) = h
        .call_json(h.api("GET", &format!("/groups/{all}/sub-groups"), None))
        .await;
    let members = body["data"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    let first = members.iter().find(|m| m["group"]["name"] == "one").unwrap();
    assert_eq!(
        (first["weight"].as_i64(), first["total_keys"].as_i64()),
        (Some(3), Some(1))
    );

    for _ in 0..4 {
        assert_eq!(h.send(h.chat("all", false)).await.0, StatusCode::OK);
    }
    let by_key = h.mock.requests_by_key();
    assert_eq!(
        (by_key.get("sk-one-0123456789"), by_key.get("sk-two-0123456789")),
        (Some(&3), Some(&1)),
        "3:1 by weight"
    );

    let weight = h.api(
        "PUT",
        &format!("/groups/{all}/sub-groups/{two}/weight"),
        Some(json!({"weight": 0})),
    );
    assert_eq!(h.call_json(weight).await.0, StatusCode::OK);
    let (_, body) = h
        .call_json(h.api("GET", &format!("/groups/{one}/parent-aggregate-groups"), None))
        .await;
    assert_eq!(body["data"][0]["name"], "all");

    // A member cannot change its channel type while it belongs to an aggregate.
    let change = h.api(
        "PUT",
        &format!("/groups/{one}"),
        Some(json!({"channel_type": "gemini"})),
    );
    assert_eq!(h.call_json(change).await.0, StatusCode::BAD_REQUEST);

    let remove = h.api("DELETE", &format!("/groups/{all}/sub-groups/{one}"), None);
    assert_eq!(h.call_json(remove).await.0, StatusCode::OK);
    let remove_again = h.api("DELETE", &format!("/groups/{all}/sub-groups/{one}"), None);
    assert_eq!(h.call_json(remove_again).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integration_info_lists_the_groups_a_key_can_use() {
    let mock = MockUpstream::start().await.unwrap();
    let up = mock.url();
    let mut own = group("own", &up, &["sk-own-0123456789"], json!({}));
    own["proxy_keys"] = json!("sk-only-this-group");
    let mut custom = group("custom", &up, &["sk-custom-0123456789"], json!({}));
    custom["validation_endpoint"] = json!("/v1/embeddings");
    let h = Harness::start(TestDb::sqlite().await, mock, vec![own, custom], &[]).await;
    let get = |path: String| {
        Request::get(format!("{}{path}", h.base))
            .body(Full::default())
            .unwrap()
    };

    let (status, body) = h
        .call_json(get("/api/integration/info?key=sk-only-this-group".to_owned()))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"],
        json!([{"name": "own", "display_name": "", "channel_type": "openai", "path": "/proxy/own"}])
    );
    let (_, body) = h
        .call_json(get(format!("/api/integration/info?key={PROXY_KEY}")))
        .await;
    let custom = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "custom")
        .unwrap()
        .clone();
    assert_eq!(
        (custom["channel_type"].as_str(), custom["path"].as_str()),
        (Some("custom"), Some("/proxy/custom/v1/embeddings"))
    );
    assert_eq!(
        h.call_json(get("/api/integration/info?key=nope".to_owned()))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        h.call_json(get("/api/integration/info".to_owned())).await.0,
        StatusCode::BAD_REQUEST
    );

    let (status, body) = h
        .call_json(get(
            "/proxy/own/api/integration/info?key=sk-only-this-group".to_owned()
        ))
        .await;
    assert_eq!(
        (status, body["data"][0]["path"].as_str()),
        (StatusCode::OK, Some(""))
    );
    assert_eq!(
        h.call_json(get("/proxy/ghost/api/integration/info?key=x".to_owned()))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}
