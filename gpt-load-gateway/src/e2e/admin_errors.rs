//! Every way a request under `/api` can be refused answers the error envelope through real HTTP:
//! JSON `{"code", "message"}` with a stable code and the right status, never axum's plain text.
//! Bad path segments and query values are `VALIDATION_FAILED` naming the field, with the list of
//! invalid fields `errors` that every validation failure (and no other) carries; every code seen
//! is one the OpenAPI document lists, and so is the list.

use std::collections::BTreeSet;

use bytes::Bytes;
use gpt_load_e2e::MockUpstream;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

use super::harness::{ADMIN_KEY, Harness, group};
use crate::{admin::BODY_LIMIT, db::test_support::TestDb};

/// 2^63: one more than the largest id.
const TOO_BIG: &str = "9223372036854775808";

/// What a case sends as its body.
#[derive(Clone, Copy)]
enum Body {
    None,
    Json(&'static str),
    /// A valid JSON object one byte above the admin body limit.
    Oversized,
}

/// What a case must answer.
#[derive(Clone, Copy)]
enum Expect {
    /// `400 VALIDATION_FAILED` whose message starts with this field.
    Field(&'static str),
    /// This status and code.
    Code(StatusCode, &'static str),
}

struct Case {
    method: &'static str,
    path: String,
    body: Body,
    authenticated: bool,
    expect: Expect,
}

fn case(method: &'static str, path: impl Into<String>, body: Body, expect: Expect) -> Case {
    Case {
        method,
        path: path.into(),
        body,
        authenticated: true,
        expect,
    }
}

fn oversized() -> Bytes {
    let filler = "x".repeat(BODY_LIMIT);
    let body = json!({ "name": filler }).to_string();
    assert!(body.len() > BODY_LIMIT);
    Bytes::from(body)
}

fn cases(group_id: i64) -> Vec<Case> {
    use Body::{Json, None, Oversized};
    use Expect::{Code, Field};
    let not_found = Code(StatusCode::NOT_FOUND, "NOT_FOUND");
    let not_allowed = Code(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED");
    let too_large = Code(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
    let invalid_json = Code(StatusCode::BAD_REQUEST, "INVALID_JSON");
    let mut cases = vec![
        // Path ids: not a number, negative (no such row), past i64, empty.
        case("GET", "/groups/abc/stats", None, Field("id")),
        case("GET", format!("/groups/{TOO_BIG}/stats"), None, Field("id")),
        case("GET", "/groups/-1/stats", None, not_found),
        case("GET", "/groups/1.5/stats", None, Field("id")),
        case("GET", "/groups//stats", None, Field("id")),
        case("PUT", "/keys//notes", Json(r#"{"notes": ""}"#), Field("id")),
        case("PUT", "/groups/abc", Json("{}"), Field("id")),
        case("DELETE", format!("/groups/{TOO_BIG}"), None, Field("id")),
        case("POST", "/groups/abc/copy", None, Field("id")),
        case("GET", "/groups/abc/sub-groups", None, Field("id")),
        case("GET", "/groups/%FF/parent-aggregate-groups", None, Field("id")),
        case(
            "PUT",
            format!("/groups/{group_id}/sub-groups/abc/weight"),
            Json(r#"{"weight": 1}"#),
            Field("sub_group_id"),
        ),
        case(
            "DELETE",
            format!("/groups/{TOO_BIG}/sub-groups/1"),
            None,
            Field("id"),
        ),
        case("PUT", "/keys/abc/notes", Json(r#"{"notes": ""}"#), Field("id")),
        case("PUT", "/keys/-1/notes", Json(r#"{"notes": ""}"#), not_found),
        case(
            "PUT",
            format!("/keys/{TOO_BIG}/status"),
            Json(r#"{"status": "active"}"#),
            Field("id"),
        ),
        // Query values.
        case(
            "GET",
            format!("/keys?group_id={group_id}&page=abc"),
            None,
            Field("page"),
        ),
        case(
            "GET",
            format!("/keys?group_id={group_id}&page_size=1.5"),
            None,
            Field("page_size"),
        ),
        case(
            "GET",
            format!("/keys?group_id={group_id}&page={TOO_BIG}"),
            None,
            Field("page"),
        ),
        case(
            "GET",
            format!("/keys?group_id={group_id}&status=gone"),
            None,
            Field("status"),
        ),
        case("GET", "/keys?group_id=abc", None, Field("group_id")),
        case("GET", "/keys", None, Field("group_id")),
        case("GET", "/keys/export?group_id=-3", None, Field("group_id")),
        case("GET", "/logs?page=abc", None, Field("page")),
        case("GET", "/logs?page_size=%20x", None, Field("page_size")),
        case("GET", "/logs?start_time=yesterday", None, Field("start_time")),
        case(
            "GET",
            "/logs/export?end_time=2024-13-01T00:00:00Z",
            None,
            Field("end_time"),
        ),
        case("GET", "/logs?is_success=maybe", None, Field("is_success")),
        case("GET", "/logs?status_code=ok", None, Field("status_code")),
        case("GET", "/logs?request_type=first", None, Field("request_type")),
        case("GET", "/dashboard/chart?groupId=abc", None, Field("groupId")),
        // Unknown routes.
        case("GET", "/nope", None, not_found),
        case("GET", "/groups/1/nope/deeper", None, not_found),
        case("POST", "/", None, not_found),
        case("GET", "", None, not_found),
        // Wrong methods.
        case("DELETE", "/settings", None, not_allowed),
        case("PATCH", "/groups", Json("{}"), not_allowed),
        case("POST", "/keys/export", None, not_allowed),
        case("GET", "/auth/login", None, not_allowed),
        // Bodies above the limit.
        case("POST", "/groups", Oversized, too_large),
        case("PUT", "/settings", Oversized, too_large),
        case("POST", format!("/groups/{group_id}/copy"), Oversized, too_large),
        case("POST", "/keys/add-multiple", Oversized, too_large),
        case("POST", "/auth/login", Oversized, too_large),
        // Malformed or mistyped JSON.
        case("POST", "/groups", Json(r#"{"name": "x""#), invalid_json),
        case("POST", "/groups", Json(r#"{"name": 5}"#), invalid_json),
        case("PUT", "/settings", Json("[1, 2]"), invalid_json),
        case(
            "POST",
            format!("/groups/{group_id}/copy"),
            Json("{"),
            invalid_json,
        ),
        case(
            "POST",
            format!("/groups/{group_id}/copy"),
            Json(r#"{"copy_keys": "some"}"#),
            Field("copy_keys"),
        ),
        case(
            "PUT",
            format!("/groups/{group_id}"),
            Json("not json"),
            invalid_json,
        ),
    ];
    cases.push(Case {
        authenticated: false,
        ..case(
            "GET",
            "/groups",
            None,
            Code(StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
        )
    });
    cases
}

fn request(h: &Harness, case: &Case, oversized: &Bytes) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(case.method)
        .uri(format!("{}/api{}", h.base, case.path))
        .header(header::CONTENT_TYPE, "application/json");
    if case.authenticated {
        req = req.header(header::AUTHORIZATION, format!("Bearer {ADMIN_KEY}"));
    }
    let body = match case.body {
        Body::None => Full::default(),
        Body::Json(text) => Full::from(text),
        Body::Oversized => Full::from(oversized.clone()),
    };
    req.body(body).unwrap()
}

/// Checks one answer; the code it carried.
fn check(case: &Case, status: StatusCode, headers: &HeaderMap, body: &[u8], backend: &str) -> String {
    let label = format!("{backend}: {} /api{}", case.method, case.path);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{label}: {content_type} {}",
        String::from_utf8_lossy(body)
    );
    let answer: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{label}: not JSON ({e})"));
    let object = answer.as_object().unwrap_or_else(|| panic!("{label}: {answer}"));
    let code = answer["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{label}: {answer}"));
    let expected_keys = if code == "VALIDATION_FAILED" {
        BTreeSet::from(["code", "message", "errors"])
    } else {
        BTreeSet::from(["code", "message"])
    };
    assert_eq!(
        object.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        expected_keys,
        "{label}: {answer}"
    );
    let message = answer["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{label}: {answer}"));
    assert!(!message.is_empty(), "{label}");
    match case.expect {
        Expect::Field(field) => {
            assert_eq!(
                (status, code),
                (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"),
                "{label}: {answer}"
            );
            assert!(message.starts_with(&format!("{field}: ")), "{label}: {message}");
            let fields = invalid_fields(&answer, &label);
            assert_eq!(fields.len(), 1, "{label}: {answer}");
            assert_eq!(fields[0].0, field, "{label}: {answer}");
        }
        Expect::Code(expected_status, expected_code) => {
            assert_eq!(
                (status, code),
                (expected_status, expected_code),
                "{label}: {answer}"
            );
        }
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        let allow = headers
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{label}: no Allow header"));
        assert!(!allow.contains(case.method), "{label}: Allow: {allow}");
        assert!(!allow.is_empty(), "{label}");
    }
    code.to_owned()
}

/// The `errors` of a validation failure as `(field, message)`, after checking that `message`
/// is made of exactly them: `field: problem; other: problem`.
fn invalid_fields(answer: &Value, label: &str) -> Vec<(String, String)> {
    let list = answer["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{label}: no errors list in {answer}"));
    let fields: Vec<(String, String)> = list
        .iter()
        .map(|e| {
            let object = e.as_object().unwrap_or_else(|| panic!("{label}: {e}"));
            assert_eq!(object.len(), 2, "{label}: {e}");
            let text = |name: &str| {
                object[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("{label}: {e}"))
                    .to_owned()
            };
            (text("field"), text("message"))
        })
        .collect();
    assert!(!fields.is_empty(), "{label}: an empty list in {answer}");
    let joined = fields
        .iter()
        .map(|(field, message)| format!("{field}: {message}"))
        .collect::<Vec<_>>()
        .join("; ");
    assert_eq!(answer["message"], joined.as_str(), "{label}");
    fields
}

/// The codes the OpenAPI document gives the error envelope.
async fn documented_codes(h: &Harness) -> BTreeSet<String> {
    let (status, doc) = h.call_api("GET", "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["Failure"]["properties"]["code"]["$ref"], "#/components/schemas/ErrorCode",
        "the envelope's code is the documented enumeration"
    );
    let errors = &schemas["Failure"]["properties"]["errors"];
    assert_eq!(errors["type"], "array", "the list of invalid fields: {errors}");
    assert_eq!(errors["items"]["$ref"], "#/components/schemas/InvalidField");
    let required = schemas["Failure"]["required"]
        .as_array()
        .expect("required properties");
    assert!(
        !required.iter().any(|r| r == "errors"),
        "only validation failures carry the list"
    );
    let invalid_field = &schemas["InvalidField"];
    assert_eq!(invalid_field["required"], json!(["field", "message"]));
    for property in ["field", "message"] {
        assert_eq!(invalid_field["properties"][property]["type"], "string");
    }
    schemas["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode is an enumeration")
        .iter()
        .map(|c| c.as_str().expect("codes are strings").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_under_api_is_the_error_envelope() {
    let oversized = oversized();
    for test_db in TestDb::all("every_refusal_under_api_is_the_error_envelope").await {
        let backend = test_db.db.backend().to_string();
        let mock = MockUpstream::start().await.unwrap();
        let upstream = mock.url();
        let h = Harness::start(
            test_db,
            mock,
            vec![group("g", &upstream, &["sk-a"], json!({}))],
            &[],
        )
        .await;
        let group_id = h.group_id("g").await;
        let documented = documented_codes(&h).await;
        let mut seen = BTreeSet::new();
        for case in cases(group_id) {
            let (status, headers, body) = h.send(request(&h, &case, &oversized)).await;
            seen.insert(check(&case, status, &headers, &body, &backend));
        }
        assert!(
            seen.is_subset(&documented),
            "{backend}: {seen:?} not all in {documented:?}"
        );
        // Nothing above changed the group: every refusal happened before any work.
        let (status, body) = h.call_api("GET", "/groups/list", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body["data"].as_array().map(Vec::len),
            Some(1),
            "{backend}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_keeps_gpt_loads_own_shape_for_a_malformed_body() {
    let mock = MockUpstream::start().await.unwrap();
    let h = Harness::start(TestDb::sqlite().await, mock, vec![], &[]).await;
    let req = Request::post(format!("{}/api/auth/login", h.base))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::from("{"))
        .unwrap();
    let (status, body) = h.call_json(req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["success"], false, "{body}");
    assert!(body["message"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validation_failure_lists_every_invalid_field() {
    let mock = MockUpstream::start().await.unwrap();
    let upstream = mock.url();
    let h = Harness::start(TestDb::sqlite().await, mock, vec![], &[]).await;
    let label = "PUT /api/settings";
    let (status, answer) = h
        .call_api(
            "PUT",
            "/settings",
            Some(json!({
                "app_url": "",
                "request_timeout": 0,
                "max_retries": -1,
                "proxy_url": "nonsense",
                "failover_status_codes": "not-a-status",
                "no_such_setting": 1,
                "enable_request_body_logging": true,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["code"], "VALIDATION_FAILED", "{answer}");
    let fields: BTreeSet<String> = invalid_fields(&answer, label)
        .into_iter()
        .map(|(field, _)| field)
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from(
            [
                "app_url",
                "request_timeout",
                "max_retries",
                "proxy_url",
                "failover_status_codes",
                "no_such_setting",
            ]
            .map(str::to_owned)
        ),
        "{label}: every bad setting and only those: {answer}"
    );
    assert!(
        !h.running()
            .registry
            .settings()
            .current()
            .enable_request_body_logging,
        "nothing of a refused update is applied"
    );

    let label = "POST /api/groups";
    let mut body = group("bad-config", &upstream, &[], json!({}));
    body["config"] = json!({
        "max_retries": -1,
        "request_timeout": 0,
        "nope": 1,
        "blacklist_threshold": 2,
    });
    let (status, answer) = h.call_api("POST", "/groups", Some(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let fields: BTreeSet<String> = invalid_fields(&answer, label)
        .into_iter()
        .map(|(field, _)| field)
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from(["max_retries", "request_timeout", "nope"].map(str::to_owned)),
        "{label}: every bad override and only those: {answer}"
    );
    let (_, list) = h.call_api("GET", "/groups/list", None).await;
    assert_eq!(list["data"], json!([]), "{label}: nothing created");

    // One bad field of a group is a list of one.
    let mut body = group("Bad Name", &upstream, &[], json!({}));
    body["config"] = json!({"max_retries": 1});
    let (status, answer) = h.call_api("POST", "/groups", Some(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let fields = invalid_fields(&answer, label);
    assert_eq!(fields.len(), 1, "{answer}");
    assert_eq!(fields[0].0, "name", "{answer}");
}
