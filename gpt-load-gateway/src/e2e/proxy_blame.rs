//! Whose fault a failure is, through the running gateway: a client's bad request or a flaky
//! provider never disables a group; a dead key still leaves it.

use bytes::Bytes;
use gpt_load_e2e::{Behaviour, MockConfig, MockUpstream};
use gpt_load_tower::keys::KeyState;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use super::harness::{Harness, PROXY_KEY, group};
use crate::db::test_support::TestDb;

const KEYS: [&str; 4] = [
    "sk-blame-one-0123456789",
    "sk-blame-two-0123456789",
    "sk-blame-three-0123456789",
    "sk-blame-four-0123456789",
];

async fn gateway(mock: MockConfig, groups: impl FnOnce(&str) -> Vec<Value>) -> Harness {
    let mock = MockUpstream::start_with(mock).await.unwrap();
    let groups = groups(&mock.url());
    Harness::start(TestDb::sqlite().await, mock, groups, &[]).await
}

/// Every key of `group` as (state, counted failures).
fn key_states(h: &Harness, group: &str) -> Vec<(KeyState, u32)> {
    h.running()
        .registry
        .pool()
        .keys(group)
        .iter()
        .map(|k| (k.state(), k.consecutive_failures()))
        .collect()
}

fn post(h: &Harness, path: &str, content_type: Option<&str>, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    let mut req = Request::post(format!("{}/proxy/{path}", h.base))
        .header("authorization", format!("Bearer {PROXY_KEY}"));
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.body(Full::new(body.into())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_too_long_requests_leave_every_key_active_and_spend_no_retry() {
    let h = gateway(MockConfig::default().with_context_window(200), |up| {
        let mut gemini = group("gem", up, &KEYS[2..], json!({"blacklist_threshold": 1}));
        gemini["channel_type"] = json!("gemini");
        vec![
            group(
                "g",
                up,
                &KEYS[..2],
                json!({"blacklist_threshold": 1, "max_retries": 3}),
            ),
            gemini,
        ]
    })
    .await;
    let too_long =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "word ".repeat(400)}]});
    let mut forwarded = 0;
    for i in 0..100 {
        let chat = "g/v1/chat/completions";
        let gemini = "gem/v1beta/models/gemini-2.5-flash:generateContent";
        let (req, reaches_upstream) = match i % 5 {
            // Declared JSON that does not parse: answered by the gateway, no key spent.
            0 => (
                post(&h, chat, Some("application/json"), r#"{"model":"gpt-4o-mini","#),
                false,
            ),
            1 => (
                post(&h, gemini, Some("application/json"), "{contents: nope}"),
                false,
            ),
            // Not declared JSON: the upstream refuses it as malformed.
            2 => (post(&h, chat, Some("text/plain"), "model=gpt-4o-mini&hi"), true),
            // Over the model's context window, in two providers' words.
            3 => (
                post(&h, chat, Some("application/json"), too_long.to_string()),
                true,
            ),
            _ => (
                post(
                    &h,
                    gemini,
                    Some("application/json"),
                    json!({"contents": [{"parts": [{"text": "word ".repeat(400)}]}]}).to_string(),
                ),
                true,
            ),
        };
        let (status, _, body) = h.send(req).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "request {i}: {}",
            String::from_utf8_lossy(&body)
        );
        let body: Value = serde_json::from_slice(&body).expect("a JSON error");
        let native = if i % 5 == 1 || i % 5 == 4 {
            body["error"]["status"] == "INVALID_ARGUMENT"
        } else {
            body["error"]["type"] == "invalid_request_error"
        };
        assert!(native, "request {i}: the client's own format: {body}");
        if reaches_upstream {
            forwarded += 1;
        } else {
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("not valid JSON"),
                "{body}"
            );
        }
        assert_eq!(
            h.mock.total_requests(),
            forwarded,
            "request {i}: one attempt, no retry"
        );
    }
    assert_eq!(forwarded, 60);
    for g in ["g", "gem"] {
        assert!(
            key_states(&h, g).iter().all(|s| *s == (KeyState::Active, 0)),
            "{g}: {:?}",
            key_states(&h, g)
        );
    }
    // And the group still serves.
    assert_eq!(h.send(h.chat("g", false)).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gemini_api_key_invalid_400_still_invalidates_the_key() {
    let (bad, good) = ("gemini-bad-key-0123456789", "gemini-good-key-0123456789");
    let h = gateway(MockConfig::default(), |up| {
        let mut gemini = group("gem", up, &[bad, good], json!({"blacklist_threshold": 2}));
        gemini["channel_type"] = json!("gemini");
        vec![gemini]
    })
    .await;
    h.mock.script(bad, Behaviour::InvalidKeyBadRequest);
    let path = "gem/v1beta/models/gemini-2.5-flash:generateContent";
    let body = json!({"contents": [{"parts": [{"text": "hi"}]}]}).to_string();
    for _ in 0..6 {
        let (status, _, _) = h
            .send(post(&h, path, Some("application/json"), body.clone()))
            .await;
        assert_eq!(status, StatusCode::OK, "retried on the good key");
    }
    let slot = h
        .running()
        .registry
        .pool()
        .keys("gem")
        .into_iter()
        .find(|k| k.secret().expose() == bad)
        .unwrap();
    assert_eq!(slot.state(), KeyState::Invalid);
    assert_eq!(
        h.mock.requests_by_key().get(bad),
        Some(&2),
        "threshold 2, then skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_provider_fails_few_requests_and_invalidates_no_key() {
    // Reproducible: the mock draws its failures from a seeded generator and the requests go one
    // at a time.
    let h = gateway(MockConfig::default().with_record_capacity(0), |up| {
        vec![group(
            "g",
            up,
            &KEYS,
            json!({"max_retries": 3, "blacklist_threshold": 3}),
        )]
    })
    .await;
    for key in KEYS {
        h.mock.script(
            key,
            Behaviour::Flaky {
                per_mille: 250,
                status: 500,
            },
        );
    }
    let mut failed = 0;
    for _ in 0..1000 {
        let (status, _, _) = h.send(h.chat("g", false)).await;
        if status != StatusCode::OK {
            assert_eq!(
                status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "the upstream's own failure"
            );
            failed += 1;
        }
    }
    let attempts = h.mock.total_requests();
    eprintln!("flaky provider: {failed} of 1000 requests failed, {attempts} attempts");
    // Four attempts each failing a quarter of the time: 0.39 % expected.
    assert!(
        failed <= 5,
        "{failed} of 1000 requests failed ({attempts} attempts)"
    );
    assert!(attempts > 1200, "failures were retried: {attempts} attempts");
    assert!(
        key_states(&h, "g")
            .iter()
            .all(|(state, _)| *state == KeyState::Active),
        "{:?}",
        key_states(&h, "g")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_outage_invalidates_no_key_and_the_first_request_after_it_succeeds() {
    let h = gateway(MockConfig::default(), |up| {
        vec![group(
            "g",
            up,
            &KEYS[..2],
            json!({"max_retries": 3, "blacklist_threshold": 1}),
        )]
    })
    .await;
    for key in &KEYS[..2] {
        h.mock.script(key, Behaviour::Status(503));
    }
    for _ in 0..5 {
        let (status, _, _) = h.send(h.chat("g", false)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(
        h.mock.total_requests(),
        20,
        "max_retries 3 is four attempts each, though the group has two keys"
    );
    assert_eq!(key_states(&h, "g"), [(KeyState::Active, 0); 2]);

    h.mock.clear_scripts();
    h.mock.clear_received();
    let (status, _, _) = h.send(h.chat("g", false)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.mock.total_requests(), 1);
}
