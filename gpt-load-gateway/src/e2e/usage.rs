//! Token usage through the running gateway: for each provider's format, streamed and not, the
//! request log row carries the usage the upstream reported (as the client saw it), and
//! `usage_hourly` adds up to the rows.

use std::time::Duration;

use gpt_load_e2e::MockUpstream;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Map, Value, json};

use super::harness::{Harness, group};
use crate::{
    db::test_support::TestDb,
    models::now,
    repo::usage::{UsageSums, rows_since},
};

const KEY: &str = "sk-usage-0123456789";

/// The channels under test, each a group of its own name.
const CHANNELS: [&str; 4] = ["openai", "openai-response", "anthropic", "gemini"];

/// Every request log, newest first.
async fn logs(h: &Harness) -> Vec<Value> {
    let (_, body) = h.call_api("GET", "/logs?page_size=100", None).await;
    body["data"]["items"].as_array().cloned().unwrap_or_default()
}

/// The usage objects a client finds in an answer, in order: the answer's own, or one per
/// stream event (Anthropic's `message_start` nests it in `message`, the Responses API's
/// `response.completed` in `response`).
fn usage_objects(body: &str) -> Vec<Map<String, Value>> {
    let events: Vec<Value> = match serde_json::from_str::<Value>(body) {
        Ok(Value::Array(items)) => items,
        Ok(value) => vec![value],
        Err(_) => body
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .filter_map(|data| serde_json::from_str(data.trim()).ok())
            .collect(),
    };
    events
        .iter()
        .flat_map(|event| {
            [
                &event["usage"],
                &event["usageMetadata"],
                &event["message"]["usage"],
                &event["response"]["usage"],
            ]
        })
        .filter_map(|usage| usage.as_object().cloned())
        .collect()
}

/// What the client was told it used: (prompt, completion, total), later fields overriding
/// earlier ones as a stream reports them.
fn reported(channel: &str, body: &str) -> (i64, i64, i64) {
    let mut fields = Map::new();
    for object in usage_objects(body) {
        fields.extend(object);
    }
    let n = |name: &str| fields.get(name).and_then(Value::as_i64).unwrap_or(0);
    match channel {
        "openai" => (n("prompt_tokens"), n("completion_tokens"), n("total_tokens")),
        "gemini" => (
            n("promptTokenCount"),
            n("candidatesTokenCount"),
            n("totalTokenCount"),
        ),
        "anthropic" => {
            let (input, output) = (n("input_tokens"), n("output_tokens"));
            (input, output, input + output)
        }
        _ => (n("input_tokens"), n("output_tokens"), n("total_tokens")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_reports_its_usage_in_the_logs_and_the_hourly_rollup() {
    let started = now() - chrono::Duration::hours(1);
    let test_db = TestDb::sqlite().await;
    let db = test_db.db.clone();
    let mock = MockUpstream::start().await.unwrap();
    let up = mock.url();
    let groups = CHANNELS
        .into_iter()
        .map(|channel| {
            // OpenAI streams report usage when asked: the group asks for its clients.
            let mut g = group(channel, &up, &[KEY], json!({"include_stream_usage": true}));
            g["channel_type"] = json!(channel);
            g
        })
        .collect();
    let h = Harness::start(test_db, mock, groups, &[]).await;

    let mut expected = Vec::new();
    for channel in CHANNELS {
        for stream in [false, true] {
            let (status, _, body) = h
                .send(h.native(channel, channel, stream, "how are the usage numbers?"))
                .await;
            let body = String::from_utf8_lossy(&body);
            assert_eq!(status, StatusCode::OK, "{channel} stream={stream}: {body}");
            let usage = reported(channel, &body);
            assert!(
                usage.0 > 0 && usage.1 > 0,
                "{channel} stream={stream}: the mock reports usage: {body}"
            );
            expected.push((channel, stream, usage));
        }
    }

    Harness::eventually(Duration::from_secs(15), || async {
        logs(&h).await.len() == expected.len()
    })
    .await;
    let logs = logs(&h).await;

    let mut total = UsageSums::default();
    for (channel, stream, (prompt, completion, all)) in &expected {
        let row = logs
            .iter()
            .find(|log| log["group_name"] == *channel && log["is_stream"] == *stream)
            .unwrap_or_else(|| panic!("a log for {channel} stream={stream}: {logs:?}"));
        let got = |name: &str| row[name].as_i64();
        assert_eq!(
            (
                got("prompt_tokens"),
                got("completion_tokens"),
                got("total_tokens")
            ),
            (Some(*prompt), Some(*completion), Some(*all)),
            "{channel} stream={stream}: {row}"
        );
        assert_eq!(got("cached_tokens"), Some(0), "{channel} stream={stream}");
        total.add(&UsageSums {
            requests: 1,
            prompt_tokens: *prompt,
            completion_tokens: *completion,
            total_tokens: *all,
            ..UsageSums::default()
        });
    }

    // The rollup is written after the rows, in the same batch.
    let rolled = async || {
        let mut rolled = UsageSums::default();
        for row in rows_since(&db, started).await.unwrap() {
            assert_ne!(row.key_id, 0, "every attempt used the key: {row:?}");
            rolled.add(&UsageSums {
                requests: row.requests,
                failures: row.failures,
                prompt_tokens: row.prompt_tokens,
                completion_tokens: row.completion_tokens,
                cached_tokens: row.cached_tokens,
                reasoning_tokens: row.reasoning_tokens,
                total_tokens: row.total_tokens,
            });
        }
        rolled
    };
    Harness::eventually(Duration::from_secs(15), || async {
        rolled().await.requests == total.requests
    })
    .await;
    assert_eq!(rolled().await, total, "usage_hourly adds up to the request logs");

    // The usage API adds the same numbers up, by any dimension.
    let (status, body) = h.call_api("GET", "/usage?group_by=group", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let report = &body["data"];
    let sums = |v: &Value| {
        (
            v["requests"].as_i64(),
            v["prompt_tokens"].as_i64(),
            v["completion_tokens"].as_i64(),
            v["total_tokens"].as_i64(),
        )
    };
    assert_eq!(
        sums(&report["totals"]),
        (
            Some(total.requests),
            Some(total.prompt_tokens),
            Some(total.completion_tokens),
            Some(total.total_tokens)
        ),
        "{report}"
    );
    let items = report["items"].as_array().expect("items");
    assert_eq!(items.len(), CHANNELS.len(), "{report}");
    for channel in CHANNELS {
        let item = items
            .iter()
            .find(|i| i["group_name"] == channel)
            .expect("a line per group");
        let (prompt, completion, all_tokens) = expected
            .iter()
            .filter(|(c, _, _)| *c == channel)
            .fold((0, 0, 0), |acc, (_, _, u)| {
                (acc.0 + u.0, acc.1 + u.1, acc.2 + u.2)
            });
        assert_eq!(
            sums(item),
            (Some(2), Some(prompt), Some(completion), Some(all_tokens)),
            "{item}"
        );
        assert_eq!(item["model"], Value::Null, "not grouped by model: {item}");
    }

    let (_, body) = h.call_api("GET", "/usage?group_by=key&group_id=", None).await;
    let items = body["data"]["items"].as_array().expect("items");
    assert_eq!(items.len(), CHANNELS.len(), "one key per group: {body}");
    for item in items {
        assert_eq!(item["key"], json!("sk-u****6789"), "the key, masked: {item}");
        assert!(item["peak_rpm"].as_i64().is_some_and(|peak| peak >= 2), "{item}");
    }

    let export = h.api("GET", "/usage/export?group_by=model&model=claude-3-haiku", None);
    let (status, headers, csv) = h.send(export).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    let csv = String::from_utf8_lossy(&csv);
    let (prompt, completion, all_tokens) = expected
        .iter()
        .filter(|(c, _, _)| *c == "anthropic")
        .fold((0, 0, 0), |acc, (_, _, u)| {
            (acc.0 + u.0, acc.1 + u.1, acc.2 + u.2)
        });
    assert_eq!(
        csv,
        format!(
            "model,requests,failures,prompt_tokens,completion_tokens,cached_tokens,reasoning_tokens,total_tokens\n\
             claude-3-haiku,2,0,{prompt},{completion},0,0,{all_tokens}\n"
        )
    );

    let (status, body) = h.call_api("GET", "/usage?group_by=tenant", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_stream_without_usage_leaves_the_tokens_unknown() {
    let mock = MockUpstream::start().await.unwrap();
    let up = mock.url();
    let h = Harness::start(
        TestDb::sqlite().await,
        mock,
        vec![group("plain", &up, &[KEY], json!({}))],
        &[],
    )
    .await;
    let (status, _, body) = h.send(h.chat("plain", true)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(usage_objects(&String::from_utf8_lossy(&body)).is_empty());

    Harness::eventually(Duration::from_secs(15), || async { !logs(&h).await.is_empty() }).await;
    let logs = logs(&h).await;
    for name in [
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "total_tokens",
    ] {
        assert_eq!(logs[0][name], Value::Null, "{name}: {}", logs[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_counts_stream_tokens_asks_openai_streams_for_their_usage() {
    let mock = MockUpstream::start().await.unwrap();
    let up = mock.url();
    let h = Harness::start(
        TestDb::sqlite().await,
        mock,
        vec![group(
            "counted",
            &up,
            &[KEY],
            json!({"include_stream_usage": true}),
        )],
        &[],
    )
    .await;
    let (status, _, body) = h.send(h.chat("counted", true)).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::OK);
    let (prompt, completion, total) = reported("openai", &body);
    assert!(prompt > 0 && completion > 0, "the stream reports usage: {body}");

    Harness::eventually(Duration::from_secs(15), || async { !logs(&h).await.is_empty() }).await;
    let logs = logs(&h).await;
    let got = |name: &str| logs[0][name].as_i64();
    assert_eq!(
        (
            got("prompt_tokens"),
            got("completion_tokens"),
            got("total_tokens")
        ),
        (Some(prompt), Some(completion), Some(total)),
        "{}",
        logs[0]
    );

    let metrics = Request::get(format!("{}/metrics", h.base))
        .body(Full::default())
        .unwrap();
    let (_, _, text) = h.send(metrics).await;
    let text = String::from_utf8_lossy(&text);
    let counted = |kind: &str| {
        text.lines()
            .filter(|l| l.starts_with("gpt_load_tokens_total{"))
            .filter(|l| l.contains("group=\"counted\"") && l.contains(&format!("kind=\"{kind}\"")))
            .map(|l| {
                assert!(l.contains("model=\"gpt-4o-mini\""), "{l}");
                l.rsplit(' ').next().unwrap().parse::<i64>().unwrap()
            })
            .sum::<i64>()
    };
    assert_eq!(
        (counted("prompt"), counted("completion")),
        (prompt, completion),
        "{text}"
    );
}
