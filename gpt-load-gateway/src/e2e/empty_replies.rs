//! Empty replies through the running gateway: a `200` without content, or a stream that ends
//! before its first content, is retried on another key before anything reaches the client, in
//! each provider's format; a group that turns the check off gets the reply as it came.

use gpt_load_e2e::{Behaviour, MockUpstream};
use gpt_load_tower::keys::KeyState;
use http::StatusCode;
use serde_json::{Value, json};

use super::harness::{Harness, group};
use crate::db::test_support::TestDb;

const EMPTY: &str = "sk-empty-reply-0123456789";
const GOOD: &str = "sk-good-reply-0123456789";

async fn gateway() -> Harness {
    let mock = MockUpstream::start().await.unwrap();
    let up = mock.url();
    mock.script(EMPTY, Behaviour::EmptyReply);
    let mut groups: Vec<Value> = ["openai", "anthropic", "gemini"]
        .into_iter()
        .map(|channel| {
            let mut g = group(channel, &up, &[EMPTY, GOOD], json!({}));
            g["channel_type"] = json!(channel);
            g
        })
        .collect();
    groups.push(group(
        "unchecked",
        &up,
        &[EMPTY],
        json!({"retry_empty_replies": false}),
    ));
    Harness::start(TestDb::sqlite().await, mock, groups, &[]).await
}

/// Whether an answer carries content, in its channel's format.
fn has_content(channel: &str, stream: bool, body: &str) -> bool {
    if stream {
        return match channel {
            "anthropic" => body.contains("content_block_delta"),
            "gemini" => body.contains("\"text\":\"") && !body.contains("blockReason"),
            _ => !body.contains("chatcmpl-empty") && body.contains("\"content\":\""),
        };
    }
    let Ok(json) = serde_json::from_str::<Value>(body) else {
        return false;
    };
    match channel {
        "anthropic" => json["content"].as_array().is_some_and(|c| !c.is_empty()),
        "gemini" => json["candidates"].as_array().is_some_and(|c| !c.is_empty()),
        _ => json["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_reply_is_retried_on_another_key_and_the_client_sees_one_good_reply() {
    let h = gateway().await;
    for channel in ["openai", "anthropic", "gemini"] {
        for stream in [false, true] {
            for _ in 0..2 {
                let (status, headers, body) = h.send(h.native(channel, channel, stream, "hi")).await;
                let body = String::from_utf8_lossy(&body);
                assert_eq!(status, StatusCode::OK, "{channel} stream={stream}: {body}");
                assert!(
                    has_content(channel, stream, &body),
                    "{channel} stream={stream}: {body}"
                );
                let is_sse = headers["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/event-stream");
                assert_eq!(is_sse, stream, "{channel}");
            }
        }
    }
    let by_key = h.mock.requests_by_key();
    assert!(
        by_key.get(EMPTY).copied().unwrap_or(0) >= 6,
        "the empty key was tried: {by_key:?}"
    );
    for channel in ["openai", "anthropic", "gemini"] {
        let empty = h
            .running()
            .registry
            .pool()
            .keys(channel)
            .into_iter()
            .find(|k| k.secret().expose() == EMPTY)
            .unwrap();
        assert_eq!(
            empty.state(),
            KeyState::Active,
            "an empty reply is not the key's fault"
        );
    }
    // The request log shows the empty attempt as a retry.
    let id = h.group_id("openai").await;
    let (_, health) = h.call_api("GET", &format!("/groups/{id}/key-health"), None).await;
    let outcomes: Vec<&str> = health["data"]["recent_failures"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["outcome"].as_str())
        .collect();
    assert!(outcomes.contains(&"empty_reply"), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_turns_the_check_off_gets_the_reply_as_it_came() {
    let h = gateway().await;
    let (status, _, body) = h.send(h.native("unchecked", "openai", false, "hi")).await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["choices"], json!([]));
}
