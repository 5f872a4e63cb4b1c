//! Behaviour that involves the database, on SQLite, PostgreSQL and MariaDB.

use std::time::Duration;

use futures_util::{StreamExt, stream};
use gpt_load_e2e::MockUpstream;
use gpt_load_tower::keys::KeyState;
use http::StatusCode;
use serde_json::{Value, json};

use super::harness::{Harness, group};
use crate::{
    app,
    config::database::DatabaseDsn,
    db::test_support::TestDb,
    models::now,
    repo::{groups, keys, request_logs, stats, usage},
};

const BAD: &str = "mock-401-stored-0123456789";
const GOOD: &str = "sk-good-stored-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_are_logged_and_state_survives_a_restart() {
    for test_db in TestDb::all("attempts_are_logged_and_state_survives_a_restart").await {
        let backend = test_db.db.backend();
        let mock = MockUpstream::start().await.unwrap();
        let groups_json = vec![group(
            "g",
            &mock.url(),
            &[BAD, GOOD],
            json!({"blacklist_threshold": 1}),
        )];
        let mut h = Harness::start(test_db, mock, groups_json, &[]).await;
        for _ in 0..3 {
            assert_eq!(h.send(h.chat("g", false)).await.0, StatusCode::OK, "{backend}");
        }
        let summary = h.stop().await;
        assert_eq!(summary.logs.lost, 0);
        assert_eq!(
            summary.keys.unwritten, 0,
            "{backend}: every key state was written"
        );

        let db = &h.test_db.db;
        let group = groups::find_by_name(db, "g").await.unwrap().unwrap();
        let stored = keys::list_by_group(db, group.id).await.unwrap();
        let bad_row = stored.iter().find(|k| k.key_value == BAD).unwrap();
        assert_eq!(
            (bad_row.status.as_str(), bad_row.failure_count),
            ("invalid", 1),
            "{backend}"
        );
        let good_row = stored.iter().find(|k| k.key_value == GOOD).unwrap();
        assert_eq!(good_row.request_count, 3, "{backend}");

        let logs = request_logs::list_recent(db, 100).await.unwrap();
        assert_eq!(logs.len(), 4, "{backend}: one retry and three finals");
        let retry = logs.iter().find(|l| l.request_type == "retry").unwrap();
        assert_eq!(
            retry.key_id,
            Some(bad_row.id),
            "{backend}: every attempt has its key id"
        );
        assert_eq!(retry.status_code, 401);
        assert_eq!(retry.group_id, group.id);
        assert!(
            logs.iter()
                .filter(|l| l.request_type == "final")
                .all(|l| l.key_id == Some(good_row.id) && l.is_success)
        );

        h.restart().await;
        let slot = h
            .running()
            .registry
            .pool()
            .keys("g")
            .into_iter()
            .find(|k| k.secret().expose() == BAD)
            .unwrap();
        assert_eq!(
            slot.state(),
            KeyState::Invalid,
            "{backend}: the blacklist survives a restart"
        );
        assert_eq!(
            request_logs::list_recent(&h.test_db.db, 100).await.unwrap().len(),
            4
        );
        assert_eq!(h.send(h.chat("g", false)).await.0, StatusCode::OK);
        h.stop().await;
    }
}

/// The total tokens an answer reports: a JSON body's `usage`, or a stream's last usage chunk.
fn total_tokens(body: &[u8]) -> i64 {
    let text = String::from_utf8_lossy(body);
    let total = |v: &Value| v["usage"]["total_tokens"].as_i64();
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| total(&v))
        .or_else(|| {
            text.lines()
                .rev()
                .filter_map(|line| line.strip_prefix("data:"))
                .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
                .find_map(|v| total(&v))
        })
        .unwrap_or_else(|| panic!("the mock reports usage: {text}"))
}

/// Many requests at once make the log writer batch; every one of them still ends as one row, one
/// hourly count and its tokens in the usage rollup, nothing dropped and nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_under_load_is_logged_and_counted() {
    const REQUESTS: usize = 2_000;
    const AT_ONCE: usize = 64;
    for test_db in TestDb::all("every_request_under_load_is_logged_and_counted").await {
        let backend = test_db.db.backend();
        let since = now() - chrono::Duration::hours(1);
        let mock = MockUpstream::start().await.unwrap();
        let keys: Vec<String> = (0..8).map(|i| format!("sk-load-{i}-0123456789")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let groups_json = vec![group(
            "g",
            &mock.url(),
            &keys,
            json!({"include_stream_usage": true}),
        )];
        let mut h = Harness::start(test_db, mock, groups_json, &[]).await;

        let answers: Vec<_> = stream::iter(0..REQUESTS)
            .map(|i| h.send(h.chat("g", i % 2 == 1)))
            .buffer_unordered(AT_ONCE)
            .collect()
            .await;
        let mut tokens = 0;
        for (status, _, body) in &answers {
            assert_eq!(
                *status,
                StatusCode::OK,
                "{backend}: {}",
                String::from_utf8_lossy(body)
            );
            tokens += total_tokens(body);
        }
        let db = h.test_db.db.clone();
        let far = now() + chrono::Duration::hours(1);
        // The writer's own schedule writes them all, not only the flush at shutdown.
        Harness::eventually(Duration::from_secs(30), || async {
            request_logs::count_final_between(&db, since, far).await.unwrap() == REQUESTS as i64
        })
        .await;

        let summary = h.stop().await;
        assert_eq!(summary.logs.lost, 0, "{backend}");
        let rows = request_logs::count_final_between(&db, since, far).await.unwrap();
        assert_eq!(
            rows, REQUESTS as i64,
            "{backend}: one row per request, none twice"
        );
        let hourly = stats::hourly(&db, None, since).await.unwrap();
        let (success, failure) = hourly.iter().fold((0, 0), |(s, f), row| {
            (s + row.success_count, f + row.failure_count)
        });
        assert_eq!(
            (success, failure),
            (REQUESTS as i64, 0),
            "{backend}: hourly counts"
        );
        let rolled = usage::rows_since(&db, since).await.unwrap();
        let requests: i64 = rolled.iter().map(|row| row.requests).sum();
        let rolled_tokens: i64 = rolled.iter().map(|row| row.total_tokens).sum();
        assert_eq!(
            (requests, rolled_tokens),
            (REQUESTS as i64, tokens),
            "{backend}: the usage rollup adds up to what the clients were told"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_one_clear_error() {
    let dsn = DatabaseDsn::Postgres {
        url: "postgres://nobody:secret-password@127.0.0.1:1/none".to_owned(),
    };
    let err = app::connect(&dsn).await.expect_err("connecting fails");
    let message = format!("{err:#}");
    assert!(
        message.contains("cannot connect to the postgres database"),
        "{message}"
    );
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(!message.contains("secret-password"), "{message}");
}

#[test]
fn invalid_database_dsn_and_settings_are_one_line_each() {
    let env: std::collections::HashMap<String, String> = [
        ("DATABASE_DSN", "root:secret-password@nowhere"),
        ("PORT", "99999"),
        ("MAX_CONCURRENT_REQUESTS", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let err = crate::config::Config::from_source(&env).expect_err("invalid configuration");
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines.iter().any(|l| l.starts_with("DATABASE_DSN")), "{text}");
    assert!(lines.iter().any(|l| l.starts_with("PORT")), "{text}");
    assert!(!text.contains("secret-password"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_serves_without_changing_the_database() {
    let mock = MockUpstream::start().await.unwrap();
    let mut leader = Harness::start(
        TestDb::sqlite().await,
        mock,
        vec![group("g", "http://127.0.0.1:9", &[GOOD], json!({}))],
        &[],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = dir.path().join("follower.json");
    std::fs::write(
        &bootstrap,
        json!({"groups": [group("new", "http://127.0.0.1:9", &[GOOD], json!({}))]}).to_string(),
    )
    .unwrap();
    let env: std::collections::HashMap<String, String> = [
        ("DATABASE_DSN", leader.test_db.dsn.clone()),
        ("IS_SLAVE", "true".to_owned()),
        ("GPT_LOAD_BOOTSTRAP", bootstrap.display().to_string()),
        ("DATA_DIR", dir.path().display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let (config, _) = crate::config::Config::from_source(&env).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let follower = app::start(
        config,
        super::harness::ADMIN_KEY,
        listener,
        app::JobIntervals::default(),
    )
    .await
    .unwrap();
    assert!(
        follower.registry.catalog().policy("g").is_some(),
        "the follower serves the leader's groups"
    );
    assert!(
        groups::find_by_name(&leader.test_db.db, "new")
            .await
            .unwrap()
            .is_none(),
        "a follower applies no bootstrap"
    );
    follower.shutdown().await;
    leader.stop().await;
}

fn standard(name: &str) -> crate::models::NewGroup<'_> {
    let at = crate::models::now();
    crate::models::NewGroup {
        name,
        display_name: "",
        proxy_keys: "",
        description: "",
        group_type: "standard",
        upstreams: r#"[{"url":"http://127.0.0.1:9","weight":1}]"#,
        validation_endpoint: "",
        channel_type: "openai",
        sort: 0,
        test_model: "gpt-4o-mini",
        param_overrides: "{}",
        config: "{}",
        header_rules: "[]",
        model_redirect_rules: "{}",
        model_redirect_strict: false,
        created_at: at,
        updated_at: at,
    }
}

/// Writes of several rows that fail part-way (here on a unique index, after the first rows went
/// in) leave nothing behind: the admin routes built on them are all or nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_row_writes_that_fail_part_way_leave_nothing_behind() {
    for test_db in TestDb::all("multi_row_writes_that_fail_part_way_leave_nothing_behind").await {
        let db = &test_db.db;
        let backend = db.backend();
        let member = groups::insert(db, &standard("member")).await.unwrap();
        let mut aggregate = standard("aggregate");
        aggregate.group_type = "aggregate";
        let aggregate = groups::insert(db, &aggregate).await.unwrap();

        // Sub-groups: the second link repeats the first.
        let twice = [(member.id, 1), (member.id, 2)];
        assert!(
            groups::add_sub_groups(db, aggregate.id, &twice).await.is_err(),
            "{backend}"
        );
        assert!(
            groups::sub_group_links(db).await.unwrap().is_empty(),
            "{backend}: no link kept"
        );

        // A copy: the group and its first link go in before the repeated link fails.
        let copied = [crate::models::SealedKey {
            value: "sk-copied-0123456789".to_owned(),
            hash: "hash-copied".to_owned(),
        }];
        let copy = standard("aggregate_copy");
        assert!(
            groups::insert_copy(db, &copy, &twice, &copied).await.is_err(),
            "{backend}"
        );
        assert!(
            groups::find_by_name(db, "aggregate_copy")
                .await
                .unwrap()
                .is_none(),
            "{backend}: no copied group kept"
        );
        let all_groups = groups::list(db).await.unwrap();
        assert_eq!(all_groups.len(), 2, "{backend}");
        for group in all_groups {
            assert!(
                keys::list_by_group(db, group.id).await.unwrap().is_empty(),
                "{backend}"
            );
        }
        assert!(groups::sub_group_links(db).await.unwrap().is_empty(), "{backend}");
    }
}
