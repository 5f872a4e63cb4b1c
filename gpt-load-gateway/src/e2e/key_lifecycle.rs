//! The key lifecycle through the running gateway: rate-limit signals in each provider's own
//! form cool a key for as long as the provider says (capped), per-model quotas rest one model,
//! and the group keeps serving from its other keys.

use std::time::Duration;

use bytes::Bytes;
use gpt_load_e2e::{Behaviour, MockUpstream};
use gpt_load_tower::keys::{KeySlot, KeyState};
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use super::harness::{Harness, PROXY_KEY, group};
use crate::db::test_support::TestDb;

const LIMITED: &str = "limited-upstream-key-0001";
const SPARE: &str = "spare-upstream-key-0002";

/// One group per channel, each with a key the test limits and a spare.
async fn gateway(config: Value) -> Harness {
    let mock = MockUpstream::start().await.unwrap();
    let up = mock.url();
    let groups = ["openai", "anthropic", "gemini"]
        .into_iter()
        .map(|channel| {
            let mut g = group(channel, &up, &[LIMITED, SPARE], config.clone());
            g["channel_type"] = json!(channel);
            g
        })
        .collect();
    Harness::start(TestDb::sqlite().await, mock, groups, &[]).await
}

fn request(h: &Harness, channel: &str, model: &str) -> Request<Full<Bytes>> {
    let (path, body) = match channel {
        "openai" => (
            format!("/proxy/openai/v1/chat/completions?key={PROXY_KEY}"),
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        "anthropic" => (
            format!("/proxy/anthropic/v1/messages?key={PROXY_KEY}"),
            json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        _ => (
            format!("/proxy/gemini/v1beta/models/{model}:generateContent?key={PROXY_KEY}"),
            json!({"contents": [{"parts": [{"text": "hi"}]}]}),
        ),
    };
    Request::post(format!("{}{path}", h.base))
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .body(Full::from(body.to_string()))
        .unwrap()
}

fn slot(h: &Harness, group: &str, key: &str) -> std::sync::Arc<KeySlot> {
    h.running()
        .registry
        .pool()
        .keys(group)
        .into_iter()
        .find(|k| k.secret().expose() == key)
        .expect("key in pool")
}

/// Sends `n` requests for `model` to `channel`'s group; every one must succeed.
async fn serve(h: &Harness, channel: &str, model: &str, n: usize) {
    for _ in 0..n {
        let (status, _, body) = h.send(request(h, channel, model)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{channel}: {}",
            String::from_utf8_lossy(&body)
        );
    }
}

fn requests_to(h: &Harness, key: &str) -> u64 {
    h.mock.requests_by_key().get(key).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_reset_signals_cool_the_key_until_the_reset() {
    let h = gateway(json!({})).await;
    h.mock.script(
        LIMITED,
        Behaviour::ProviderLimit {
            per_day: false,
            reset: Duration::from_secs(90),
            model: None,
        },
    );
    let models = [
        ("openai", "gpt-4o-mini"),
        ("anthropic", "claude-3-haiku-20240307"),
        ("gemini", "gemini-2.0-flash"),
    ];
    for (channel, model) in models {
        let before = requests_to(&h, LIMITED);
        // The limited key answers 429 once; the request is retried on the spare.
        serve(&h, channel, model, 6).await;
        assert_eq!(
            requests_to(&h, LIMITED),
            before + 1,
            "{channel}: the key rests after one 429"
        );
        let limited = slot(&h, channel, LIMITED);
        // No Retry-After: the rest comes from the provider's own headers or body (90 s), not
        // from the 30 s backoff.
        let rest = if channel == "gemini" {
            // Gemini's quotas are per model: the key rests for that model only.
            assert_eq!(limited.state(), KeyState::Active, "{channel}");
            let rests = limited.model_rests();
            assert_eq!(rests.len(), 1, "{channel}");
            assert_eq!(&*rests[0].0, model);
            rests[0].1
        } else {
            assert_eq!(limited.state(), KeyState::Cooling, "{channel}");
            limited.cooling_for().unwrap()
        };
        assert!(
            rest > Duration::from_secs(80) && rest <= Duration::from_secs(90),
            "{channel}: {rest:?}"
        );
        assert_eq!(
            limited.backoff_level(),
            u32::from(channel != "gemini"),
            "{channel}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_day_quota_rests_that_model_while_the_group_keeps_serving() {
    // A group that lets a rest last a day: the per-day quota rests until the daily reset.
    let h = gateway(json!({"cool_down_max_seconds": 86_400})).await;
    h.mock.script(
        LIMITED,
        Behaviour::ProviderLimit {
            per_day: true,
            reset: Duration::from_secs(20),
            model: Some("gemini-2.0-flash".to_owned()),
        },
    );
    serve(&h, "gemini", "gemini-2.0-flash", 6).await;
    assert_eq!(
        requests_to(&h, LIMITED),
        1,
        "one 429, then the key rests for that model"
    );
    let limited = slot(&h, "gemini", LIMITED);
    let rests = limited.model_rests();
    assert_eq!(rests.len(), 1);
    assert!(
        rests[0].1 > Duration::from_secs(20) && rests[0].1 <= Duration::from_secs(86_400),
        "until midnight Pacific time, not the 20 s retry delay: {:?}",
        rests[0].1
    );

    // Another model still uses the key.
    serve(&h, "gemini", "gemini-1.5-pro", 4).await;
    assert!(
        requests_to(&h, LIMITED) >= 2,
        "other models are served by the key"
    );
    assert_eq!(limited.state(), KeyState::Active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_reset_is_capped_by_the_maximum() {
    let h = gateway(json!({"cool_down_max_seconds": 120})).await;
    h.mock.script(
        LIMITED,
        Behaviour::ProviderLimit {
            per_day: false,
            reset: Duration::from_secs(3 * 86_400),
            model: None,
        },
    );
    serve(&h, "anthropic", "claude-3-haiku-20240307", 4).await;
    let rest = slot(&h, "anthropic", LIMITED).cooling_for().unwrap();
    assert!(
        rest > Duration::from_secs(110) && rest <= Duration::from_secs(120),
        "{rest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_is_shown_and_survives_a_restart() {
    let mut h = gateway(json!({})).await;
    h.mock.script(
        LIMITED,
        Behaviour::ProviderLimit {
            per_day: false,
            reset: Duration::from_secs(600),
            model: None,
        },
    );
    serve(&h, "openai", "gpt-4o-mini", 4).await;
    let id = h.group_id("openai").await;
    let limited_row = |body: &Value| {
        body["data"]["items"]
            .as_array()
            .and_then(|items| items.iter().find(|k| k["key_value"] == LIMITED))
            .cloned()
            .expect("the limited key is listed")
    };
    let (status, body) = h.call_api("GET", &format!("/keys?group_id={id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let key = limited_row(&body);
    assert_eq!(
        (key["status"].as_str(), key["state"].as_str()),
        (Some("active"), Some("cooling"))
    );
    assert_eq!(key["backoff_level"], 1);
    assert!(key["cooling_until"].is_string(), "{key}");
    assert!(
        key["last_error_message"]
            .as_str()
            .is_some_and(|m| m.contains("exceeded your current quota")),
        "{key}"
    );
    assert!(key["last_failure_at"].is_string(), "{key}");
    let spare = body["data"]["items"]
        .as_array()
        .and_then(|items| items.iter().find(|k| k["key_value"] == SPARE))
        .cloned()
        .unwrap();
    assert_eq!(spare["state"], "active");
    assert!(spare["last_success_at"].is_string(), "{spare}");

    // Written behind within about a second; a restart then restores the rest, so the key is not
    // sent upstream again before the provider's reset.
    Harness::eventually(Duration::from_secs(10), || async {
        let rows = crate::repo::keys::list_stored(&h.running().registry.db().clone(), Some(id))
            .await
            .unwrap();
        rows.iter()
            .any(|(_, l)| l.state == "cooling" && l.cooling_until.is_some())
    })
    .await;
    // The key list filters by lifecycle state (as written).
    let listed = |state: &'static str| {
        let h = &h;
        async move {
            let (status, body) = h
                .call_api("GET", &format!("/keys?group_id={id}&state={state}"), None)
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["data"]["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["key_value"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("cooling").await, [LIMITED]);
    assert_eq!(listed("active").await, [SPARE]);
    assert!(listed("invalid").await.is_empty());
    let (status, body) = h
        .call_api("GET", &format!("/keys?group_id={id}&state=resting"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"].as_str().unwrap().contains("degraded"), "{body}");
    h.restart().await;
    let restored = slot(&h, "openai", LIMITED);
    assert_eq!(restored.state(), KeyState::Cooling);
    assert_eq!(restored.backoff_level(), 1);
    let rest = restored.cooling_for().unwrap();
    assert!(
        rest > Duration::from_secs(580) && rest <= Duration::from_secs(600),
        "{rest:?}"
    );
    assert!(restored.last_error().is_some());
    let before = requests_to(&h, LIMITED);
    serve(&h, "openai", "gpt-4o-mini", 4).await;
    assert_eq!(
        requests_to(&h, LIMITED),
        before,
        "still resting after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_health_explains_the_groups_keys() {
    let h = gateway(json!({"blacklist_threshold": 5, "cool_down_max_seconds": 900})).await;
    h.mock.script(
        LIMITED,
        Behaviour::ProviderLimit {
            per_day: false,
            reset: Duration::from_secs(300),
            model: None,
        },
    );
    serve(&h, "openai", "gpt-4o-mini", 4).await;
    h.mock.script(
        LIMITED,
        Behaviour::ProviderLimit {
            per_day: true,
            reset: Duration::from_secs(30),
            model: Some("gemini-2.0-flash".to_owned()),
        },
    );
    serve(&h, "gemini", "gemini-2.0-flash", 4).await;

    let id = h.group_id("openai").await;
    let (status, body) = h.call_api("GET", &format!("/groups/{id}/key-health"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let health = &body["data"];
    assert_eq!(health["group_name"], "openai");
    assert_eq!(health["counts"]["total"], 2);
    assert_eq!(
        (
            health["counts"]["active"].as_u64(),
            health["counts"]["cooling"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(health["rules"]["blacklist_threshold"], 5);
    assert_eq!(health["rules"]["cool_down_max_seconds"], 900);
    let cooling = &health["cooling"][0];
    assert!(
        cooling["key"].as_str().unwrap().contains('*'),
        "masked: {cooling}"
    );
    assert_ne!(cooling["key"], LIMITED);
    assert_eq!(cooling["backoff_level"], 1);
    assert!(cooling["until"].is_string());
    let failure = &health["recent_failures"][0];
    assert_eq!(
        (failure["status"].as_u64(), failure["outcome"].as_str()),
        (Some(429), Some("cool_down"))
    );
    assert!(
        failure["reason"].as_str().unwrap_or_default().contains("quota"),
        "{failure}"
    );
    assert!(!body.to_string().contains(LIMITED), "no key is shown in full");

    let gemini = h.group_id("gemini").await;
    let (_, body) = h
        .call_api("GET", &format!("/groups/{gemini}/key-health"), None)
        .await;
    let rest = &body["data"]["model_cooling"][0];
    assert_eq!(rest["model"], "gemini-2.0-flash", "{body}");
    assert_eq!(
        body["data"]["counts"]["cooling"], 0,
        "the key itself is not cooling"
    );
}
