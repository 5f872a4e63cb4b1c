//! Forwarded paths never leave the group's base URL: every spelling of a `.` or `..` segment is
//! refused with `400` in the client's own error format, and nothing reaches the upstream.

use gpt_load_e2e::MockUpstream;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

use super::harness::{Harness, PROXY_KEY, group};
use crate::db::test_support::TestDb;

/// What follows a family's native endpoint, in each spelling a normalising upstream could read
/// as a dot segment.
const DOT_SEGMENT_SPELLINGS: [&str; 13] = [
    "/../../api/groups",
    "/v1/./models",
    "/v1/..",
    "/%2e%2e/%2e%2e/api/groups",
    "/%2E%2E/api/groups",
    "/.%2e/api/groups",
    "/%2e./api/groups",
    "/v1/..\\..\\api\\groups",
    "/v1/..%5c..%5capi%5cgroups",
    "/v1/..%2f..%2fapi%2fgroups",
    "/v1/%2e%2e%2F%2E%2E%2Fapi",
    "/v1/%252e%252e/api/groups",
    "/v1/..;/api/groups",
];

/// An API family: its group, a native endpoint, how its SDK presents the key, and how its
/// errors look.
struct Family {
    group: &'static str,
    endpoint: &'static str,
    headers: [(&'static str, String); 2],
    check_error: fn(&Value),
}

fn families() -> [Family; 3] {
    [
        Family {
            group: "oa",
            endpoint: "/v1/chat/completions",
            headers: [
                ("authorization", format!("Bearer {PROXY_KEY}")),
                ("content-type", "application/json".to_owned()),
            ],
            check_error: |v| {
                assert_eq!(v["error"]["code"], "invalid_path", "{v}");
                assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
                assert!(v["error"]["message"].as_str().unwrap().contains("'..'"), "{v}");
            },
        },
        Family {
            group: "claude",
            endpoint: "/v1/messages",
            headers: [
                ("x-api-key", PROXY_KEY.to_owned()),
                ("anthropic-version", "2023-06-01".to_owned()),
            ],
            check_error: |v| {
                assert_eq!(v["type"], "error", "{v}");
                assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
            },
        },
        Family {
            group: "gem",
            endpoint: "/v1beta/models/gemini-1.5-pro:generateContent",
            headers: [
                ("x-goog-api-key", PROXY_KEY.to_owned()),
                ("content-type", "application/json".to_owned()),
            ],
            check_error: |v| {
                assert_eq!(v["error"]["code"], 400, "{v}");
                assert_eq!(v["error"]["status"], "INVALID_ARGUMENT", "{v}");
            },
        },
    ]
}

async fn gateway() -> Harness {
    let mock = MockUpstream::start().await.unwrap();
    let up = mock.url();
    let mut claude = group("claude", &up, &["anthropic-upstream-key-0001"], json!({}));
    claude["channel_type"] = json!("anthropic");
    let mut gem = group("gem", &up, &["gemini-upstream-key-0001"], json!({}));
    gem["channel_type"] = json!("gemini");
    let groups = vec![
        group("oa", &up, &["sk-openai-upstream-0001"], json!({})),
        claude,
        gem,
    ];
    Harness::start(TestDb::sqlite().await, mock, groups, &[]).await
}

fn request(
    h: &Harness,
    family: &Family,
    method: &str,
    rest: &str,
    body: &str,
) -> Request<Full<bytes::Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{}/proxy/{}{rest}", h.base, family.group));
    for (name, value) in &family.headers {
        req = req.header(*name, value);
    }
    req.body(Full::from(body.to_owned())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_are_400_in_the_native_format_and_never_reach_the_upstream() {
    let h = gateway().await;
    for family in families() {
        for spelling in DOT_SEGMENT_SPELLINGS {
            let rest = format!("{}{spelling}", family.endpoint);
            for method in ["GET", "POST"] {
                let (status, headers, body) = h.send(request(&h, &family, method, &rest, "{}")).await;
                let text = String::from_utf8_lossy(&body);
                assert_eq!(
                    status,
                    StatusCode::BAD_REQUEST,
                    "{} {method} {rest}: {text}",
                    family.group
                );
                assert_eq!(headers[header::CONTENT_TYPE], "application/json");
                let json: Value = serde_json::from_slice(&body).unwrap_or_else(|_| panic!("JSON: {text}"));
                (family.check_error)(&json);
                assert!(!text.contains(PROXY_KEY));
            }
        }
    }
    assert_eq!(h.mock.total_requests(), 0, "{:?}", h.mock.received());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dots_inside_segments_still_pass() {
    let h = gateway().await;
    let [openai, _, gemini] = families();

    let generate = request(
        &h,
        &gemini,
        "POST",
        "/v1beta/models/gemini-1.5-pro:generateContent",
        r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
    );
    let (status, _, body) = h.send(generate).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let seen = h.mock.received().pop().expect("the upstream was called");
    assert_eq!(seen.path, "/v1beta/models/gemini-1.5-pro:generateContent");
    assert_eq!(seen.credential.as_deref(), Some("gemini-upstream-key-0001"));

    for rest in ["/v1/files/file.v2", "/v1/files/.well.known", "/v1/files/.../x"] {
        h.mock.clear_received();
        let (status, ..) = h.send(request(&h, &openai, "GET", rest, "")).await;
        assert_ne!(status, StatusCode::BAD_REQUEST, "{rest}");
        let seen = h.mock.received().pop().expect("the upstream was called");
        assert_eq!(seen.path, rest);
        assert_eq!(seen.credential.as_deref(), Some("sk-openai-upstream-0001"));
    }
}
