//! An aggregate group through the running gateway: when the sub-group a request was routed to
//! cannot answer with any of its keys, the request moves to the next sub-group; an answer meant
//! for the client does not move, and the aggregate's `max_retries` bounds the moves.

use std::time::Duration;

use gpt_load_e2e::{Behaviour, MockUpstream};
use http::StatusCode;
use serde_json::{Value, json};

use super::harness::{Harness, group};
use crate::db::test_support::TestDb;

const FIRST_A: &str = "sk-first-a-0123456789";
const FIRST_B: &str = "sk-first-b-0123456789";
const SECOND: &str = "sk-second-0123456789";

/// `first` (two keys, weight 100: routed to whenever it has a usable key) and `second` (one key)
/// behind the aggregate `both`, and behind `both_once` whose `max_retries` is 0.
async fn gateway() -> Harness {
    let mock = MockUpstream::start().await.unwrap();
    let up = mock.url();
    let members = json!([{"group": "first", "weight": 100}, {"group": "second", "weight": 1}]);
    let groups = vec![
        group("first", &up, &[FIRST_A, FIRST_B], json!({})),
        group("second", &up, &[SECOND], json!({})),
        json!({"name": "both", "group_type": "aggregate", "channel_type": "openai",
               "sub_groups": members}),
        json!({"name": "both_once", "group_type": "aggregate", "channel_type": "openai",
               "sub_groups": members, "config": {"max_retries": 0}}),
    ];
    Harness::start(TestDb::sqlite().await, mock, groups, &[]).await
}

fn rate_limit_first(h: &Harness) {
    for key in [FIRST_A, FIRST_B] {
        h.mock.script(
            key,
            Behaviour::RateLimited {
                retry_after: Duration::from_secs(60),
            },
        );
    }
}

/// `(request_type, group, parent group, key)` of the logged attempts, oldest first.
async fn attempts(h: &Harness, n: usize) -> Vec<(String, String, String, String)> {
    let items = || async {
        let (_, body) = h.call_api("GET", "/logs?page_size=100", None).await;
        body["data"]["items"].as_array().cloned().unwrap_or_default()
    };
    Harness::eventually(Duration::from_secs(15), || async { items().await.len() >= n }).await;
    let items = items().await;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut rows: Vec<_> = items
        .iter()
        .map(|l| {
            (
                text(&l["request_type"]),
                text(&l["group_name"]),
                text(&l["parent_group_name"]),
                text(&l["key_value"]),
            )
        })
        .collect();
    rows.reverse();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_group_whose_keys_are_all_rate_limited_hands_the_request_to_the_next() {
    let h = gateway().await;
    rate_limit_first(&h);
    let (status, _, body) = h.send(h.chat("both", false)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let by_key = h.mock.requests_by_key();
    assert_eq!(
        (by_key.get(FIRST_A), by_key.get(FIRST_B), by_key.get(SECOND)),
        (Some(&1), Some(&1), Some(&1)),
        "each key of the first sub-group once, then the second sub-group"
    );
    let rows = attempts(&h, 3).await;
    let kinds: Vec<_> = rows
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_str(), r.2.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("retry", "first", "both"),
            ("retry", "first", "both"),
            ("final", "second", "both")
        ]
    );
    assert_eq!(rows[2].3, SECOND);

    // Both keys of `first` rest now: the next request goes to `second` at once.
    assert_eq!(h.send(h.chat("both", false)).await.0, StatusCode::OK);
    assert_eq!(h.mock.requests_by_key().get(SECOND), Some(&2));
    assert_eq!(h.mock.received().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_error_stays_and_max_retries_zero_keeps_the_sub_group() {
    let h = gateway().await;
    // A 400 the provider gives for the request itself: every sub-group would say the same.
    h.mock.script(FIRST_A, Behaviour::Status(400));
    h.mock.script(FIRST_B, Behaviour::Status(400));
    let (status, _, _) = h.send(h.chat("both", false)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(h.mock.requests_by_key().get(SECOND), None);

    // The aggregate's max_retries 0 keeps gpt-load's behaviour: the sub-group's answer stands.
    rate_limit_first(&h);
    let (status, headers, _) = h.send(h.chat("both_once", false)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        !headers.contains_key("x-gpt-load-limit"),
        "the upstream's 429 is not ours"
    );
    assert_eq!(h.mock.requests_by_key().get(SECOND), None);
}
