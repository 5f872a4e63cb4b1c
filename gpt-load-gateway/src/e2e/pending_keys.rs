//! Pending keys through the running gateway: with `validate_new_keys` on, keys added to a group
//! wait for their validation (run at once by the background job), serve only when the group has
//! no validated key left, and become active on their first success; a key error at validation
//! makes them invalid at once.

use std::time::Duration;

use gpt_load_e2e::{Behaviour, MockUpstream};
use http::StatusCode;
use serde_json::{Value, json};

use super::harness::{Harness, group};
use crate::db::test_support::TestDb;

const FIRST: &str = "sk-pending-first-0123456789";
const NEW: &str = "sk-pending-new-0123456789";
const DEAD: &str = "sk-pending-dead-0123456789";
const LATE: &str = "sk-pending-late-0123456789";

/// The live state of each of a group's keys, by key.
async fn states(h: &Harness, id: i64) -> Vec<(String, String)> {
    let (status, body) = h
        .call_api("GET", &format!("/keys?group_id={id}&page_size=100"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut states: Vec<(String, String)> = body["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["key_value"].as_str().unwrap().to_owned(),
                k["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    states.sort();
    states
}

fn state_of(states: &[(String, String)], key: &str) -> String {
    states
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, s)| s.clone())
        .unwrap_or_default()
}

fn requests_with(h: &Harness, key: &str) -> u64 {
    h.mock.requests_by_key().get(key).copied().unwrap_or(0)
}

async fn add_keys(h: &Harness, id: i64, keys: &[&str]) {
    let (status, body) = h
        .call_api(
            "POST",
            "/keys/add-multiple",
            Some(json!({"group_id": id, "keys_text": keys.join("\n")})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_keys_are_validated_before_they_serve_and_pending_ones_are_the_last_resort() {
    let mock = MockUpstream::start().await.unwrap();
    // A provider failure at validation proves nothing: the key stays pending.
    mock.script(NEW, Behaviour::ServerError);
    mock.script(DEAD, Behaviour::Unauthorized);
    let groups = vec![group(
        "p",
        &mock.url(),
        &[FIRST],
        json!({"validate_new_keys": true, "blacklist_threshold": 3}),
    )];
    let h = Harness::start(TestDb::sqlite().await, mock, groups, &[]).await;
    let id = h.group_id("p").await;

    // The bootstrap's key was added pending and validated at once.
    Harness::eventually(Duration::from_secs(10), || async {
        state_of(&states(&h, id).await, FIRST) == "active"
    })
    .await;

    add_keys(&h, id, &[NEW, DEAD]).await;
    // Validated at once: the dead key is invalid at its first key error (threshold 3 is for
    // keys that once worked), the other waits.
    Harness::eventually(Duration::from_secs(10), || async {
        let states = states(&h, id).await;
        state_of(&states, DEAD) == "invalid" && requests_with(&h, NEW) >= 1
    })
    .await;
    assert_eq!(state_of(&states(&h, id).await, NEW), "pending");
    // The stored state follows with the write-behind (about a second).
    Harness::eventually(Duration::from_secs(10), || async {
        let (_, pending) = h
            .call_api("GET", &format!("/keys?group_id={id}&state=pending"), None)
            .await;
        pending["data"]["items"][0]["key_value"] == NEW && pending["data"]["pagination"]["total_items"] == 1
    })
    .await;
    let (_, health) = h.call_api("GET", &format!("/groups/{id}/key-health"), None).await;
    assert_eq!(health["data"]["counts"]["pending"], 1, "{health}");

    // While a validated key serves, the pending one is not used.
    let validations = requests_with(&h, NEW);
    for _ in 0..8 {
        let (status, _, _) = h.send(h.chat("p", false)).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(requests_with(&h, NEW), validations, "no traffic on a pending key");

    // The validated key dies: the pending one is better than none, and its success makes it
    // active.
    h.mock.script(FIRST, Behaviour::Unauthorized);
    h.mock.script(NEW, Behaviour::Valid);
    let (status, _, body) = h.send(h.chat("p", false)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(requests_with(&h, NEW), validations + 1);
    assert_eq!(state_of(&states(&h, id).await, NEW), "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_can_keep_pending_keys_out_until_validation_passes() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(LATE, Behaviour::ServerError);
    let groups = vec![group(
        "q",
        &mock.url(),
        &[LATE],
        json!({"validate_new_keys": true, "pending_keys_as_fallback": false}),
    )];
    let h = Harness::start(TestDb::sqlite().await, mock, groups, &[]).await;
    let id = h.group_id("q").await;
    Harness::eventually(Duration::from_secs(10), || async { requests_with(&h, LATE) >= 1 }).await;
    assert_eq!(state_of(&states(&h, id).await, LATE), "pending");

    let validations = requests_with(&h, LATE);
    let (status, _, _) = h.send(h.chat("q", false)).await;
    assert!(status.is_server_error(), "no usable key: {status}");
    assert_eq!(
        requests_with(&h, LATE),
        validations,
        "the pending key was not used"
    );

    // Once the provider takes it, a validation (here the fork's route) makes it active.
    h.mock.script(LATE, Behaviour::Valid);
    let (status, body): (StatusCode, Value) = h
        .call_api(
            "POST",
            &format!("/validation/groups/{id}"),
            Some(json!({"include_states": ["pending"], "exclude_recently_validated": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["successful_keys"], 1, "{body}");
    assert_eq!(state_of(&states(&h, id).await, LATE), "active");
    let (status, _, _) = h.send(h.chat("q", false)).await;
    assert_eq!(status, StatusCode::OK);
}
