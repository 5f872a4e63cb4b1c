//! `/api/logs` and `/api/dashboard` through real HTTP.

use std::time::Duration;

use bytes::Bytes;
use gpt_load_e2e::MockUpstream;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

use super::harness::{ADMIN_KEY, Harness, PROXY_KEY, group};
use crate::db::test_support::TestDb;

const BAD: &str = "mock-401-logs-0123456789";
const GOOD_A: &str = "sk-logs-alpha-0123456789";
const GOOD_B: &str = "sk-logs-beta-0123456789";
const WEAK_GROUP_KEY: &str = "hunter2hunter";

fn get(h: &Harness, path_and_query: &str) -> Request<Full<Bytes>> {
    Request::get(format!("{}/api{path_and_query}", h.base))
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .body(Full::default())
        .unwrap()
}

async fn data(h: &Harness, path_and_query: &str) -> Value {
    let (status, _, body) = h.send(get(h, path_and_query)).await;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "{path_and_query}: {body}");
    body["data"].clone()
}

/// The logs matching `query` (one page of up to 100) and the total.
async fn logs(h: &Harness, query: &str) -> (Vec<Value>, i64) {
    let data = data(h, &format!("/logs?page_size=100&{query}")).await;
    let items = data["items"].as_array().cloned().unwrap_or_default();
    (items, data["pagination"]["total_items"].as_i64().unwrap_or(-1))
}

/// Two groups: `alpha` fails over from a key the upstream always rejects with 401 (blacklisted at once, so
/// the first request makes the only retry), `beta` has one good key.
fn groups(up: &str) -> Vec<Value> {
    let mut alpha = group("alpha", up, &[BAD, GOOD_A], json!({"blacklist_threshold": 1}));
    alpha["proxy_keys"] = json!(WEAK_GROUP_KEY);
    vec![alpha, group("beta", up, &[GOOD_B], json!({}))]
}

async fn traffic(h: &Harness) {
    for g in ["alpha", "alpha", "alpha", "beta"] {
        assert_eq!(h.send(h.chat(g, false)).await.0, StatusCode::OK, "{g}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_listed_filtered_paged_and_exported() {
    for test_db in TestDb::all("logs_are_listed_filtered_paged_and_exported").await {
        let backend = test_db.db.backend();
        let mock = MockUpstream::start().await.unwrap();
        let up = mock.url();
        let h = Harness::start(
            test_db,
            mock,
            groups(&up),
            &[("ENCRYPTION_KEY", "logs test encryption passphrase")],
        )
        .await;
        traffic(&h).await;
        Harness::eventually(Duration::from_secs(15), || async { logs(&h, "").await.1 == 5 }).await;

        let (all, _) = logs(&h, "").await;
        let stamps: Vec<&str> = all.iter().map(|l| l["timestamp"].as_str().unwrap()).collect();
        let parsed: Vec<_> = stamps
            .iter()
            .map(|s| chrono::DateTime::parse_from_rfc3339(s).unwrap())
            .collect();
        assert!(parsed.windows(2).all(|w| w[0] >= w[1]), "{backend}: newest first");
        for log in &all {
            assert!(log["duration_ms"].is_i64(), "{backend}: {log}");
            assert!(
                [BAD, GOOD_A, GOOD_B].contains(&log["key_value"].as_str().unwrap()),
                "{backend}: the key is decrypted: {log}"
            );
            for column in [
                "id",
                "group_id",
                "key_hash",
                "request_path",
                "attempt",
                "request_id",
                "is_stream",
            ] {
                assert!(log.get(column).is_some(), "{backend}: {column} in {log}");
            }
        }

        let (retries, total) = logs(&h, "request_type=retry").await;
        assert_eq!(total, 1, "{backend}");
        let retry = &retries[0];
        assert_eq!(
            (
                retry["key_value"].as_str(),
                retry["status_code"].as_i64(),
                retry["is_success"].as_bool(),
                retry["group_name"].as_str()
            ),
            (Some(BAD), Some(401), Some(false), Some("alpha")),
            "{backend}"
        );
        assert_eq!(logs(&h, "group_name=alph").await.1, 4, "{backend}: LIKE");
        assert_eq!(
            logs(&h, "group_name=bet&request_type=final").await.1,
            1,
            "{backend}"
        );
        assert_eq!(logs(&h, "status_code=401").await.1, 1, "{backend}");
        assert_eq!(logs(&h, "status_code=200").await.1, 4, "{backend}");
        assert_eq!(logs(&h, "is_success=true").await.1, 4, "{backend}");
        assert_eq!(logs(&h, "is_success=false").await.1, 1, "{backend}");
        assert_eq!(logs(&h, &format!("key_value={GOOD_A}")).await.1, 3, "{backend}");
        assert_eq!(logs(&h, "key_value=sk-logs").await.1, 0, "{backend}: exact key");
        assert_eq!(logs(&h, "model=gpt-4o").await.1, 5, "{backend}");

        let oldest = stamps.last().unwrap();
        let newest = stamps.first().unwrap();
        assert_eq!(
            logs(&h, &format!("start_time={oldest}&end_time={newest}"))
                .await
                .1,
            5,
            "{backend}: both bounds inclusive"
        );
        assert_eq!(
            logs(&h, &format!("start_time={newest}&end_time={newest}"))
                .await
                .1,
            all.iter()
                .filter(|l| l["timestamp"] == all[0]["timestamp"])
                .count() as i64,
            "{backend}"
        );
        assert_eq!(
            logs(&h, "start_time=2999-01-01T00:00:00Z").await.1,
            0,
            "{backend}"
        );
        assert_eq!(logs(&h, "end_time=2000-01-01T00:00:00Z").await.1, 0, "{backend}");
        let (status, _, body) = h.send(get(&h, "/logs?start_time=yesterday")).await;
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{backend}");
        assert_eq!(body["code"], "VALIDATION_FAILED", "{backend}");
        assert!(body["message"].as_str().unwrap().contains("start_time"), "{body}");

        let page = data(&h, "/logs?page=2&page_size=2").await;
        assert_eq!(page["items"].as_array().unwrap().len(), 2, "{backend}");
        assert_eq!(
            page["pagination"],
            json!({"page": 2, "page_size": 2, "total_items": 5, "total_pages": 3}),
            "{backend}"
        );
        assert_eq!(page["items"][0]["id"], all[2]["id"], "{backend}");

        let (status, headers, body) = h.send(get(&h, "/logs/export")).await;
        assert_eq!(status, StatusCode::OK, "{backend}");
        let disposition = headers[header::CONTENT_DISPOSITION].to_str().unwrap();
        let name = disposition.split("filename=").nth(1).unwrap();
        assert!(
            name.starts_with("log_keys_export_")
                && name.ends_with(".csv")
                && name.len() == "log_keys_export_YYYYMMDDHHMMSS.csv".len(),
            "{disposition}"
        );
        let csv = String::from_utf8(body.to_vec()).unwrap();
        let mut lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.remove(0), "key_value,group_name,status_code");
        lines.sort_unstable();
        let expected = [
            format!("{BAD},alpha,401"),
            format!("{GOOD_A},alpha,200"),
            format!("{GOOD_B},beta,200"),
        ];
        assert_eq!(lines, expected, "{backend}: one row per key");
        let (_, _, body) = h.send(get(&h, "/logs/export?group_name=beta")).await;
        assert_eq!(
            String::from_utf8(body.to_vec()).unwrap(),
            format!("key_value,group_name,status_code\n{GOOD_B},beta,200\n"),
            "{backend}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_reports_traffic_keys_and_warnings() {
    let mock = MockUpstream::start().await.unwrap();
    let up = mock.url();
    let h = Harness::start(TestDb::sqlite().await, mock, groups(&up), &[]).await;

    let before = data(&h, "/dashboard/stats").await;
    assert_eq!(before["rpm"]["value"].as_f64(), Some(0.0));
    for card in ["key_count", "rpm", "request_count", "error_rate"] {
        for field in ["value", "trend", "trend_is_growth"] {
            assert!(before[card].get(field).is_some(), "{card}.{field}: {before}");
        }
    }
    assert_eq!(before["key_count"]["value"].as_f64(), Some(3.0), "{before}");
    assert_eq!(before["key_count"]["sub_value"].as_i64(), Some(0));
    assert_eq!(before["key_count"]["sub_value_tip"], "Invalid Keys");

    traffic(&h).await;
    Harness::eventually(Duration::from_secs(15), || async {
        data(&h, "/dashboard/stats").await["request_count"]["value"].as_f64() == Some(4.0)
    })
    .await;
    let stats = data(&h, "/dashboard/stats").await;
    assert_eq!(stats["rpm"]["value"].as_f64(), Some(0.4), "{stats}");
    assert_eq!(stats["rpm"]["trend"].as_f64(), Some(100.0), "{stats}");
    assert_eq!(
        stats["error_rate"]["value"].as_f64(),
        Some(0.0),
        "retries are not counted"
    );
    assert_eq!(
        (
            stats["key_count"]["value"].as_f64(),
            stats["key_count"]["sub_value"].as_i64()
        ),
        (Some(2.0), Some(1)),
        "the failing key is blacklisted: {stats}"
    );

    let warnings = stats["security_warnings"].as_array().unwrap();
    let text = serde_json::to_string(warnings).unwrap();
    assert!(
        !text.contains(WEAK_GROUP_KEY) && !text.contains(PROXY_KEY) && !text.contains(ADMIN_KEY),
        "{text}"
    );
    let group_warning = warnings
        .iter()
        .find(|w| {
            w["message"]
                .as_str()
                .unwrap()
                .contains("Group Proxy Key [alpha] #1")
        })
        .expect("the weak group key is reported");
    assert_eq!(group_warning["severity"], "high");
    assert!(warnings.iter().any(|w| w["type"] == "encryption_key"));
    assert!(
        warnings
            .iter()
            .any(|w| w["message"].as_str().unwrap().contains("Global Proxy Key #1")),
        "the test proxy key contains a common word: {text}"
    );

    let chart = data(&h, "/dashboard/chart").await;
    let labels = chart["labels"].as_array().unwrap();
    assert_eq!(labels.len(), 24);
    let now = chrono::Utc::now();
    let last = chrono::DateTime::parse_from_rfc3339(labels[23].as_str().unwrap())
        .unwrap()
        .to_utc();
    assert!(last <= now && now - last < chrono::TimeDelta::hours(1), "{last}");
    let sum = |v: &Value| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_i64().unwrap())
            .sum::<i64>()
    };
    assert_eq!(chart["datasets"][0]["label"], "Success");
    assert_eq!(chart["datasets"][0]["color"], "rgba(10, 200, 110, 1)");
    assert_eq!(chart["datasets"][1]["label"], "Failed");
    assert_eq!((sum(&chart["datasets"][0]), sum(&chart["datasets"][1])), (4, 0));
    let groups = data(&h, "/groups/list").await;
    let beta = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "beta")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let beta_chart = data(&h, &format!("/dashboard/chart?groupId={beta}")).await;
    assert_eq!(sum(&beta_chart["datasets"][0]), 1);
    let (status, _, _) = h.send(get(&h, "/dashboard/chart?groupId=abc")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let encryption = data(&h, "/dashboard/encryption-status").await;
    assert_eq!(encryption["has_mismatch"], false, "{encryption}");
    assert_eq!(encryption["scenario_type"], "");
}
