//! Every admin route's success answer, through real HTTP on every backend: the field names of
//! gpt-load's reference (`shared/reference/gpt-load-behaviour.md` §8, §6.5), and the schema the
//! OpenAPI document gives for the answer (so the document describes what is really sent). Plus
//! the document against `routes.rs`: the same routes, each one served.

use std::{collections::BTreeSet, time::Duration};

use gpt_load_e2e::MockUpstream;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use super::harness::{ADMIN_KEY, Harness, PROXY_KEY, group};
use crate::db::test_support::TestDb;

const GROUP: &[&str] = &[
    "id",
    "name",
    "endpoint",
    "display_name",
    "description",
    "group_type",
    "upstreams",
    "channel_type",
    "sort",
    "test_model",
    "validation_endpoint",
    "param_overrides",
    "model_redirect_rules",
    "model_redirect_strict",
    "config",
    "header_rules",
    "proxy_keys",
    "last_validated_at",
    "created_at",
    "updated_at",
];
/// gpt-load's fields, then ours: the key lifecycle (docs/KEYS.md).
const KEY: &[&str] = &[
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
    "state",
    "consecutive_failures",
    "backoff_level",
    "cooling_until",
    "model_cooling",
    "last_error_message",
    "last_failure_at",
    "last_success_at",
    "last_validated_at",
    "limits",
];
/// gpt-load's columns, then ours (`key_id`, `attempt`, `ttfb_ms`, `request_id`, the tokens, `access_key_id`).
const LOG: &[&str] = &[
    "id",
    "timestamp",
    "group_id",
    "group_name",
    "parent_group_id",
    "parent_group_name",
    "key_value",
    "key_hash",
    "model",
    "is_success",
    "source_ip",
    "status_code",
    "request_path",
    "duration_ms",
    "error_message",
    "user_agent",
    "request_type",
    "upstream_addr",
    "is_stream",
    "request_body",
    "key_id",
    "attempt",
    "ttfb_ms",
    "request_id",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
    "access_key_id",
];
const PAGINATION: &[&str] = &["page", "page_size", "total_items", "total_pages"];
const REQUEST_STATS: &[&str] = &["total_requests", "failed_requests", "failure_rate"];
const CARD: &[&str] = &["value", "sub_value", "sub_value_tip", "trend", "trend_is_growth"];
const TASK: &[&str] = &[
    "task_type",
    "is_running",
    "group_name",
    "processed",
    "total",
    "result",
    "error",
    "started_at",
    "finished_at",
    "duration_seconds",
];

/// The OpenAPI document, and a strict check of a value against one of its schemas: every
/// required property present, no property it does not list, every type as documented.
struct Doc(Value);

impl Doc {
    fn schema_of(&self, method: &str, path: &str) -> &Value {
        let op = &self.0["paths"][path][method.to_ascii_lowercase()];
        assert!(op.is_object(), "{method} {path} is documented");
        &op["responses"]["200"]["content"]["application/json"]["schema"]
    }

    fn check(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        if let Some(reference) = schema["$ref"].as_str() {
            let name = reference.trim_start_matches("#/components/schemas/");
            let target = &self.0["components"]["schemas"][name];
            assert!(target.is_object(), "{reference} resolves");
            return self.check(target, value, at, errors);
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(alternatives) = schema[key].as_array() {
                let fits = alternatives.iter().any(|alt| {
                    let mut inner = Vec::new();
                    self.check(alt, value, at, &mut inner);
                    inner.is_empty()
                });
                if !fits {
                    errors.push(format!("{at}: {value} fits none of {key}"));
                }
                return;
            }
        }
        if let Some(all) = schema["allOf"].as_array() {
            for part in all {
                self.check(part, value, at, errors);
            }
            return;
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => return, // any value
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let fits = types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
        if !fits {
            errors.push(format!("{at}: {value} is {actual}, documented as {types:?}"));
            return;
        }
        match value {
            Value::Object(fields) => {
                let Some(props) = schema["properties"].as_object() else {
                    return; // a free-form object
                };
                for required in schema["required"].as_array().into_iter().flatten() {
                    let name = required.as_str().unwrap_or_default();
                    if !fields.contains_key(name) {
                        errors.push(format!("{at}: required `{name}` is missing"));
                    }
                }
                for (name, field) in fields {
                    match props.get(name) {
                        Some(prop) => self.check(prop, field, &format!("{at}.{name}"), errors),
                        None => errors.push(format!("{at}: `{name}` is not documented")),
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.check(&schema["items"], item, &format!("{at}[{i}]"), errors);
                }
            }
            _ => {}
        }
    }
}

/// The field names of the object at `pointer` are exactly `fields` (those in `optional` may be
/// absent).
fn assert_fields(body: &Value, pointer: &str, fields: &[&str], optional: &[&str], what: &str) {
    let object = body
        .pointer(pointer)
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("{what}: {pointer} is an object in {body}"));
    let actual: BTreeSet<&str> = object.keys().map(String::as_str).collect();
    let all: BTreeSet<&str> = fields.iter().copied().collect();
    let required: BTreeSet<&str> = all
        .difference(&optional.iter().copied().collect())
        .copied()
        .collect();
    assert!(
        actual.is_subset(&all) && required.is_subset(&actual),
        "{what} {pointer}: fields {actual:?}, reference {all:?}"
    );
}

async fn fetch_doc(h: &Harness) -> Doc {
    let anonymous = Request::get(format!("{}/api/openapi.json", h.base))
        .body(Full::default())
        .unwrap();
    let (status, doc) = h.call_json(anonymous).await;
    assert_eq!(status, StatusCode::OK, "the document is public");
    Doc(doc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_success_answer_has_the_reference_fields_and_the_documented_schema() {
    for test_db in TestDb::all("every_success_answer_has_the_reference_fields").await {
        let backend = test_db.db.backend();
        let mock = MockUpstream::start().await.unwrap();
        let up = mock.url();
        let keys = ["sk-shape-one-0123456789", "sk-shape-two-0123456789"];
        let h = Harness::start(test_db, mock, vec![group("shape", &up, &keys, json!({}))], &[]).await;
        let doc = fetch_doc(&h).await;
        assert_eq!(h.send(h.chat("shape", false)).await.0, StatusCode::OK);
        let id = h.group_id("shape").await;
        let (status, body) = h
            .call_api(
                "POST",
                "/groups",
                Some(json!({"name": "shape-agg", "group_type": "aggregate", "channel_type": "openai"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend}: {body}");
        let agg = body["data"]["id"].as_i64().unwrap();
        let members = json!({"sub_groups": [{"group_id": id, "weight": 5}]});
        let (status, body) = h
            .call_api("POST", &format!("/groups/{agg}/sub-groups"), Some(members))
            .await;
        assert_eq!(status, StatusCode::OK, "{backend}: {body}");
        Harness::eventually(Duration::from_secs(15), || async {
            let (_, body) = h.call_api("GET", "/logs", None).await;
            body["data"]["pagination"]["total_items"] == 1
        })
        .await;
        let (_, body) = h.call_api("GET", &format!("/keys?group_id={id}"), None).await;
        let key_id = body["data"]["items"][0]["id"].as_i64().unwrap();

        // (method, documented path, request path, body, [(pointer, reference fields, optional)])
        type Fields = &'static [(&'static str, &'static [&'static str], &'static [&'static str])];
        let batch = json!({"group_id": id, "keys_text": "sk-shape-three-0123456789"});
        let group_id = json!({"group_id": id});
        let calls: Vec<(&str, &str, String, Option<Value>, Fields)> = vec![
            ("GET", "/api/channel-types", "/channel-types".into(), None, &[]),
            (
                "GET",
                "/api/groups",
                "/groups".into(),
                None,
                &[("/data/0", GROUP, &[])],
            ),
            (
                "GET",
                "/api/groups/list",
                "/groups/list".into(),
                None,
                &[("/data/0", &["id", "name", "display_name"], &[])],
            ),
            (
                "GET",
                "/api/groups/config-options",
                "/groups/config-options".into(),
                None,
                // gpt-load's fields, then ours (`type`, `min_value`: the editor's input).
                &[(
                    "/data/0",
                    &["key", "name", "description", "default_value", "type", "min_value"],
                    &["min_value"],
                )],
            ),
            (
                "PUT",
                "/api/groups/{id}",
                format!("/groups/{id}"),
                Some(json!({"description": "shapes"})),
                &[("/data", GROUP, &[])],
            ),
            (
                "GET",
                "/api/groups/{id}/stats",
                format!("/groups/{id}/stats"),
                None,
                &[
                    (
                        "/data",
                        &["key_stats", "stats_24_hour", "stats_7_day", "stats_30_day"],
                        &[],
                    ),
                    (
                        "/data/key_stats",
                        &["total_keys", "active_keys", "invalid_keys"],
                        &[],
                    ),
                    ("/data/stats_24_hour", REQUEST_STATS, &[]),
                    ("/data/stats_30_day", REQUEST_STATS, &[]),
                ],
            ),
            (
                "GET",
                "/api/groups/{id}/sub-groups",
                format!("/groups/{agg}/sub-groups"),
                None,
                &[
                    (
                        "/data/0",
                        &["group", "weight", "total_keys", "active_keys", "invalid_keys"],
                        &[],
                    ),
                    ("/data/0/group", GROUP, &[]),
                ],
            ),
            (
                "PUT",
                "/api/groups/{id}/sub-groups/{sub_group_id}/weight",
                format!("/groups/{agg}/sub-groups/{id}/weight"),
                Some(json!({"weight": 7})),
                &[("", &["code", "message"], &[])],
            ),
            (
                "GET",
                "/api/groups/{id}/key-health",
                format!("/groups/{id}/key-health"),
                None,
                &[(
                    "/data",
                    &[
                        "group_id",
                        "group_name",
                        "counts",
                        "rules",
                        "cooling",
                        "model_cooling",
                        "recent_failures",
                        "limits",
                    ],
                    &[],
                )],
            ),
            (
                "GET",
                "/api/groups/{id}/parent-aggregate-groups",
                format!("/groups/{id}/parent-aggregate-groups"),
                None,
                &[("/data/0", &["group_id", "name", "display_name", "weight"], &[])],
            ),
            (
                "GET",
                "/api/keys",
                format!("/keys?group_id={id}&page_size=1"),
                None,
                &[
                    ("/data", &["items", "pagination"], &[]),
                    ("/data/items/0", KEY, &[]),
                    ("/data/pagination", PAGINATION, &[]),
                ],
            ),
            (
                "POST",
                "/api/keys/add-multiple",
                "/keys/add-multiple".into(),
                Some(batch.clone()),
                &[("/data", &["added_count", "ignored_count", "total_in_group"], &[])],
            ),
            (
                "POST",
                "/api/keys/restore-multiple",
                "/keys/restore-multiple".into(),
                Some(batch.clone()),
                &[(
                    "/data",
                    &["restored_count", "ignored_count", "total_in_group"],
                    &[],
                )],
            ),
            (
                "POST",
                "/api/keys/delete-multiple",
                "/keys/delete-multiple".into(),
                Some(batch.clone()),
                &[(
                    "/data",
                    &["deleted_count", "ignored_count", "total_in_group"],
                    &[],
                )],
            ),
            (
                "POST",
                "/api/keys/restore-all-invalid",
                "/keys/restore-all-invalid".into(),
                Some(group_id.clone()),
                &[("", &["code", "message"], &[])],
            ),
            (
                "POST",
                "/api/keys/test-multiple",
                "/keys/test-multiple".into(),
                Some(json!({"group_id": id, "keys_text": keys[0]})),
                &[
                    ("/data", &["results", "total_duration"], &[]),
                    ("/data/results/0", &["key_value", "is_valid", "error"], &["error"]),
                ],
            ),
            (
                "PUT",
                "/api/keys/{id}/notes",
                format!("/keys/{key_id}/notes"),
                Some(json!({"notes": "n"})),
                &[("", &["code", "message"], &[])],
            ),
            (
                "PUT",
                "/api/keys/{id}/status",
                format!("/keys/{key_id}/status"),
                Some(json!({"status": "active"})),
                &[("", &["code", "message"], &[])],
            ),
            (
                "GET",
                "/api/logs",
                "/logs".into(),
                None,
                &[("/data/items/0", LOG, &[]), ("/data/pagination", PAGINATION, &[])],
            ),
            (
                "GET",
                "/api/dashboard/stats",
                "/dashboard/stats".into(),
                None,
                &[
                    (
                        "/data",
                        &[
                            "key_count",
                            "rpm",
                            "request_count",
                            "error_rate",
                            "security_warnings",
                        ],
                        &[],
                    ),
                    ("/data/key_count", CARD, &[]),
                    ("/data/rpm", CARD, &["sub_value", "sub_value_tip"]),
                    (
                        "/data/security_warnings/0",
                        &["type", "message", "severity", "suggestion"],
                        &[],
                    ),
                ],
            ),
            (
                "GET",
                "/api/dashboard/chart",
                format!("/dashboard/chart?groupId={id}"),
                None,
                &[
                    ("/data", &["labels", "datasets"], &[]),
                    ("/data/datasets/0", &["label", "data", "color"], &[]),
                ],
            ),
            (
                "GET",
                "/api/dashboard/encryption-status",
                "/dashboard/encryption-status".into(),
                None,
                &[(
                    "/data",
                    &["has_mismatch", "scenario_type", "message", "suggestion"],
                    &[],
                )],
            ),
            (
                "GET",
                "/api/settings",
                "/settings".into(),
                None,
                &[
                    ("/data/0", &["category_name", "settings"], &[]),
                    (
                        "/data/0/settings/0",
                        &[
                            "key",
                            "name",
                            "value",
                            "type",
                            "default_value",
                            "description",
                            "category",
                            "min_value",
                            "required",
                        ],
                        &["min_value"],
                    ),
                ],
            ),
            (
                "PUT",
                "/api/settings",
                "/settings".into(),
                Some(json!({"request_log_retention_days": 7})),
                &[("", &["code", "message"], &[])],
            ),
            (
                "GET",
                "/api/integration/info",
                format!("/integration/info?key={PROXY_KEY}"),
                None,
                &[("/data/0", &["name", "display_name", "channel_type", "path"], &[])],
            ),
            (
                "POST",
                "/api/groups/{id}/copy",
                format!("/groups/{id}/copy"),
                Some(json!({"copy_keys": "none"})),
                &[("/data", &["group"], &[]), ("/data/group", GROUP, &[])],
            ),
            (
                "GET",
                "/api/tasks/status",
                "/tasks/status".into(),
                None,
                &[("/data", &["is_running"], &[])],
            ),
            (
                "POST",
                "/api/keys/add-async",
                "/keys/add-async".into(),
                Some(batch.clone()),
                &[(
                    "/data",
                    TASK,
                    &["result", "error", "finished_at", "duration_seconds"],
                )],
            ),
        ];
        for (method, documented, path, body, fields) in calls {
            let (status, answer) = h.call_api(method, &path, body).await;
            assert_eq!(status, StatusCode::OK, "{backend} {method} {path}: {answer}");
            assert_eq!(answer["code"], 0, "{backend} {method} {path}: {answer}");
            let mut errors = Vec::new();
            doc.check(doc.schema_of(method, documented), &answer, "", &mut errors);
            assert!(
                errors.is_empty(),
                "{backend} {method} {path}: {errors:#?}\n{answer}"
            );
            for (pointer, names, optional) in fields {
                assert_fields(
                    &answer,
                    pointer,
                    names,
                    optional,
                    &format!("{backend} {method} {path}"),
                );
            }
        }

        // The task's final status, and the routes whose success would undo the fixture.
        Harness::eventually(Duration::from_secs(15), || async {
            h.call_api("GET", "/tasks/status", None).await.1["data"]["is_running"] == false
        })
        .await;
        let (_, answer) = h.call_api("GET", "/tasks/status", None).await;
        assert_fields(
            &answer,
            "/data",
            TASK,
            &["error"],
            &format!("{backend} finished task"),
        );
        assert_fields(
            &answer,
            "/data/result",
            &["added_count", "ignored_count"],
            &[],
            &backend.to_string(),
        );
        let finals: Vec<(&str, &str, String, Option<Value>)> = vec![
            (
                "POST",
                "/api/keys/clear-all-invalid",
                "/keys/clear-all-invalid".into(),
                Some(group_id.clone()),
            ),
            (
                "PUT",
                "/api/groups/reorder",
                "/groups/reorder".into(),
                Some(json!({"items": [{"id": id, "sort": 3}]})),
            ),
            (
                "DELETE",
                "/api/groups/{id}/sub-groups/{sub_group_id}",
                format!("/groups/{agg}/sub-groups/{id}"),
                None,
            ),
            (
                "POST",
                "/api/keys/clear-all",
                "/keys/clear-all".into(),
                Some(group_id.clone()),
            ),
            ("DELETE", "/api/groups/{id}", format!("/groups/{agg}"), None),
        ];
        for (method, documented, path, body) in finals {
            let (status, answer) = h.call_api(method, &path, body).await;
            assert_eq!(status, StatusCode::OK, "{backend} {method} {path}: {answer}");
            let mut errors = Vec::new();
            doc.check(doc.schema_of(method, documented), &answer, "", &mut errors);
            assert!(errors.is_empty(), "{backend} {method} {path}: {errors:#?}");
            assert_fields(&answer, "", &["code", "message"], &[], &backend.to_string());
        }
        let login = Request::post(format!("{}/api/auth/login", h.base))
            .body(Full::from(json!({"auth_key": ADMIN_KEY}).to_string()))
            .unwrap();
        let (_, answer) = h.call_json(login).await;
        assert_fields(&answer, "", &["success", "message"], &[], "login");
        let mut errors = Vec::new();
        doc.check(doc.schema_of("POST", "/api/auth/login"), &answer, "", &mut errors);
        assert!(errors.is_empty(), "login: {errors:#?}");
    }
}

/// The handlers `routes!` mounts in `routes.rs`, by function name.
fn handlers_in_routes_rs() -> BTreeSet<String> {
    let source = include_str!("../admin/routes.rs");
    assert!(
        !source.contains(".route("),
        "every admin route goes through `routes!`, so that it is documented"
    );
    let mut handlers = BTreeSet::new();
    for part in source.split("routes!(").skip(1) {
        let list = &part[..part.find(')').expect("routes! closes")];
        for handler in list.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            handlers.insert(handler.rsplit("::").next().unwrap_or(handler).to_owned());
        }
    }
    handlers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_of_routes_rs_and_each_is_served() {
    let mock = MockUpstream::start().await.unwrap();
    let h = Harness::start(TestDb::sqlite().await, mock, vec![], &[]).await;
    let checker = fetch_doc(&h).await;
    // The check is strict: an undocumented field, a missing one and a wrong type all fail.
    let light = checker.schema_of("GET", "/api/groups/list");
    let brief = json!({"id": 1, "name": "a", "display_name": "A"});
    for (answer, problems) in [
        (json!({"code": 0, "message": "ok", "data": [brief]}), 0),
        (
            json!({"code": 0, "message": "ok", "data": [{"id": 1, "name": "a", "display_name": "A", "x": 1}]}),
            1,
        ),
        (
            json!({"code": 0, "message": "ok", "data": [{"id": 1, "name": "a"}]}),
            1,
        ),
        (
            json!({"code": 0, "message": "ok", "data": [{"id": "1", "name": "a", "display_name": "A"}]}),
            1,
        ),
        (json!({"code": 0, "message": "ok"}), 1),
    ] {
        let mut errors = Vec::new();
        checker.check(light, &answer, "", &mut errors);
        assert_eq!(errors.len(), problems, "{answer}: {errors:?}");
    }
    let Doc(doc) = checker;
    assert!(
        doc["openapi"].as_str().unwrap_or_default().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );

    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let id = op["operationId"].as_str().expect("operationId").to_owned();
            assert!(
                op["responses"]["200"].is_object() && op["responses"]["default"].is_object(),
                "{method} {path}: a success and an error response"
            );
            operations.push((method.to_ascii_uppercase(), path.clone(), id));
        }
    }
    let documented: BTreeSet<String> = operations.iter().map(|(_, _, id)| id.clone()).collect();
    assert_eq!(documented.len(), operations.len(), "operation ids are unique");
    let mut expected = handlers_in_routes_rs();
    // Mounted by app.rs under /proxy/{group}, documented beside the admin routes.
    assert!(include_str!("../app.rs").contains("crate::admin::group_integration_info"));
    expected.insert("group_integration_info".to_owned());
    assert_eq!(
        documented, expected,
        "the document lists exactly the routes of routes.rs"
    );

    // Every documented route is served (not the 404 fallback, not 405), with the admin key.
    for (method, path, id) in &operations {
        let concrete = path
            .replace("{sub_group_id}", "999998")
            .replace("{id}", "999999")
            .replace("{group}", "no-such-group");
        let body = (method != "GET" && method != "DELETE").then(|| json!({}));
        let mut req = h.api(method, "", body);
        *req.uri_mut() = format!("{}{concrete}", h.base).parse().unwrap();
        let (status, _, answer) = h.send(req).await;
        let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{id}: {method} {concrete}"
        );
        assert!(
            status != StatusCode::NOT_FOUND || answer["code"] == "NOT_FOUND",
            "{id}: {method} {concrete} reached the fallback: {answer}"
        );
    }
}
