//! Adoption, export and import against the gpt-load 1.4 fixtures on real databases.
//!
//! Each backend's encrypted fixture is adopted in place, exported back to gpt-load's format on
//! the same backend, and imported into a fresh SQLite database of ours: what the admin API would
//! serve (every group, plaintext key, link, setting, log row and hourly row) must come out the
//! same at the precision every backend keeps (milliseconds; JSON compared as values).

use std::str::FromStr;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde_json::{Value, json};

use super::adopt::{self, AdoptOptions, Adoption};
use super::conn::{SyncConn, on_conn};
use super::copy::{Progress, Summary};
use super::{export, import};
use crate::config::database::DatabaseDsn;
use crate::crypto::{KeyCipher, proxy_keys};
use crate::db::schema::{
    api_keys, group_hourly_stats, group_sub_groups, groups, request_logs, system_settings,
};
use crate::db::{Backend, test_support::TestDb};
use crate::models::{ApiKeyRow, GroupRow, SettingRow};
use crate::repo::request_logs::RequestLogRow;
use crate::repo::stats::HourlyStatRow;

const FIXTURE_KEY: &str = "fixture-gpt-load-encryption-key";

struct Quiet;

impl Progress for Quiet {
    fn start(&mut self, _: &'static str, _: u64) {}
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self) {}
}

fn fixture(backend: Backend, variant: &str) -> String {
    let path = format!(
        "{}/../tests/fixtures/gpt-load-1.4/{backend}-{variant}.sql",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn dsn(test_db: &TestDb) -> DatabaseDsn {
    DatabaseDsn::from_str(&test_db.dsn).expect("test DSN")
}

fn open(test_db: &TestDb) -> SyncConn {
    SyncConn::open(&dsn(test_db)).expect("connects")
}

/// Loads a fixture file, statement by statement (one per line).
fn load(conn: &mut SyncConn, sql: &str) {
    for statement in sql
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("--"))
    {
        conn.execute(statement)
            .unwrap_or_else(|e| panic!("{e}: {}", &statement[..statement.len().min(120)]));
    }
}

fn ms(at: NaiveDateTime) -> String {
    at.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Everything the admin API serves, with secrets decrypted, at millisecond precision.
fn snapshot(conn: &mut SyncConn, cipher: &KeyCipher) -> Value {
    // Every row of `$table` in `$order`, as `$row`s.
    macro_rules! rows {
        ($table:ident by $order:expr, $row:ty) => {
            on_conn!(&mut *conn, |c| $table::table
                .order($order)
                .select(<$row>::as_select())
                .load::<$row>(c))
            .unwrap()
        };
    }
    let groups = rows!(groups by groups::id, GroupRow);
    let keys = rows!(api_keys by api_keys::id, ApiKeyRow);
    let links: Vec<(i64, i64, i32)> = on_conn!(&mut *conn, |c| group_sub_groups::table
        .order((group_sub_groups::group_id, group_sub_groups::sub_group_id))
        .select((
            group_sub_groups::group_id,
            group_sub_groups::sub_group_id,
            group_sub_groups::weight
        ))
        .load(c))
    .unwrap();
    let settings = rows!(system_settings by system_settings::setting_key, SettingRow);
    let logs = rows!(request_logs by request_logs::id, RequestLogRow);
    let hourly = rows!(
        group_hourly_stats by (group_hourly_stats::time, group_hourly_stats::group_id),
        HourlyStatRow
    );
    json!({
        "groups": groups.iter().map(|g| json!([
            g.id, g.name, g.display_name, proxy_keys::open(cipher, &g.proxy_keys).unwrap(),
            g.description, g.group_type, parsed(&g.upstreams), g.validation_endpoint,
            g.channel_type, g.sort, g.test_model, parsed(&g.param_overrides), parsed(&g.config),
            parsed(&g.header_rules), parsed(&g.model_redirect_rules), g.model_redirect_strict,
            g.last_validated_at.map(ms), ms(g.created_at), ms(g.updated_at),
        ])).collect::<Vec<_>>(),
        "keys": keys.iter().map(|k| json!([
            k.id, cipher.decrypt(&k.key_value).unwrap(), k.key_hash, k.group_id, k.status, k.notes,
            k.request_count, k.failure_count, k.last_used_at.map(ms), ms(k.created_at),
        ])).collect::<Vec<_>>(),
        "links": links,
        "settings": settings.iter().map(|s| {
            let value = if s.setting_key == "proxy_keys" {
                proxy_keys::open(cipher, &s.setting_value).unwrap()
            } else {
                s.setting_value.clone()
            };
            json!([s.setting_key, value])
        }).collect::<Vec<_>>(),
        "logs": logs.iter().map(|l| json!([
            l.id, ms(l.timestamp), l.group_id, l.group_name, l.parent_group_id, l.parent_group_name,
            cipher.decrypt(&l.key_value).unwrap(), l.key_hash, l.model, l.is_success, l.source_ip,
            l.status_code, l.request_path, l.duration, l.error_message, l.user_agent,
            l.request_type, l.upstream_addr, l.is_stream, l.request_body, l.key_id,
        ])).collect::<Vec<_>>(),
        "hourly": hourly.iter().map(|h| json!([
            ms(h.time), h.group_id, h.success_count, h.failure_count,
        ])).collect::<Vec<_>>(),
    })
}

/// Imports `source` into `target` with `ENCRYPTION_KEY` set to `key` (no other key given).
fn import_into(source: &TestDb, target: &TestDb, key: &str) -> Result<Summary, import::ImportError> {
    import::import(
        &mut open(source),
        &mut open(target),
        None,
        Some(key),
        None,
        &mut Quiet,
    )
}

fn counts(summary: &Summary) -> Vec<(&'static str, u64)> {
    summary.copied.iter().map(|(t, n)| (*t, *n)).collect()
}

const FIXTURE_COUNTS: [(&str, u64); 6] = [
    ("api_keys", 12),
    ("group_hourly_stats", 10),
    ("group_sub_groups", 2),
    ("groups", 5),
    ("request_logs", 23),
    ("system_settings", 18),
];

/// The UTC time stored for a fixture time written at `wall` in Asia/Shanghai (+08:00). MySQL's
/// values carry no zone and are read in this process's zone (`TZ`), which a test cannot set for
/// itself; the tests of the built binary run with `TZ=Asia/Shanghai` and see +08:00 there too.
fn utc(backend: Backend, wall: &str) -> String {
    use chrono::TimeZone;
    let wall = NaiveDateTime::parse_from_str(wall, "%Y-%m-%d %H:%M:%S%.3f").unwrap();
    let at = match backend {
        Backend::Mysql => chrono::Local
            .from_local_datetime(&wall)
            .earliest()
            .unwrap()
            .naive_utc(),
        Backend::Sqlite | Backend::Postgres => wall - chrono::TimeDelta::hours(8),
    };
    ms(at)
}

/// What the fixture holds, checked on the adopted database of every backend; `backend` is the
/// fixture's (it decides how its times were written).
fn check_fixture_content(snapshot: &Value, backend: Backend) {
    let groups = snapshot["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 5, "{backend}");
    assert_eq!(groups[0][1], "openai-main");
    assert_eq!(groups[0][3], "sk-fixture-proxy-a,sk-fixture-proxy-b");
    assert_eq!(groups[0][12]["max_retries"], 5, "{backend}: config");
    // gemini's NULL columns read as their defaults.
    assert_eq!(groups[2][1], "gemini");
    assert_eq!(groups[2][2], "", "{backend}: display_name");
    assert_eq!(groups[2][11], json!({}), "{backend}: param_overrides");
    assert_eq!(groups[2][13], json!([]), "{backend}: header_rules");
    assert_eq!(groups[3][14], json!({"claude-3": "claude-3-5-sonnet-latest"}));
    assert_eq!(groups[3][15], true, "{backend}: model_redirect_strict");
    assert_eq!(groups[4][5], "aggregate");
    let keys = snapshot["keys"].as_array().unwrap();
    let plain: Vec<&str> = keys.iter().map(|k| k[1].as_str().unwrap()).collect();
    assert_eq!(plain[0], "sk-fixture-openai-main-0001", "{backend}");
    assert_eq!(plain[8], "AIzaFixtureGemini0003", "{backend}");
    assert_eq!(keys[2][4], "invalid");
    assert_eq!(keys[2][5], "revoked upstream");
    assert_eq!(
        keys[0][8],
        utc(backend, "2026-06-15 10:12:31.022"),
        "{backend}: last_used_at in UTC"
    );
    assert_eq!(snapshot["links"], json!([[5, 1, 3], [5, 2, 1]]));
    let settings = snapshot["settings"].as_array().unwrap();
    let setting = |key: &str| settings.iter().find(|s| s[0] == key).map(|s| s[1].clone());
    assert_eq!(setting("max_idle_conns"), Some(json!("1000000")), "{backend}");
    assert_eq!(setting("key_validation_interval_minutes"), Some(json!("1200000")));
    assert_eq!(setting("proxy_keys"), Some(json!("sk-fixture-global-proxy")));
    let logs = snapshot["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 23);
    let first = logs
        .iter()
        .min_by_key(|l| l[1].as_str().unwrap().to_owned())
        .unwrap();
    assert_eq!(
        first[1],
        utc(backend, "2026-06-15 10:02:11.117"),
        "{backend}: log time in UTC"
    );
    assert_eq!(
        first[6], "sk-fixture-openai-main-0001",
        "{backend}: the log's key"
    );
    assert_eq!(first[20], 1, "{backend}: the log points at the key's id");
    let hourly = snapshot["hourly"].as_array().unwrap();
    assert_eq!(hourly.len(), 10);
    assert_eq!(hourly[0][0], utc(backend, "2026-06-15 10:00:00.000"));
}

async fn round_trip(backend: Backend) {
    let test = "gpt_load_round_trip";
    let Some(source) = TestDb::empty(backend, test).await else {
        return;
    };
    let Some(exported) = TestDb::empty(backend, test).await else {
        return;
    };
    let back = TestDb::sqlite().await;
    tokio::task::spawn_blocking(move || {
        let cipher = KeyCipher::from_password(Some(FIXTURE_KEY));
        load(&mut open(&source), &fixture(backend, "encrypted"));
        let options = AdoptOptions {
            allowed_on_servers: true,
            encryption_key: Some(FIXTURE_KEY.to_owned()),
            auth_key: None,
        };
        let Adoption::Adopted { summary, backup } =
            adopt::adopt(&dsn(&source), &options, &mut Quiet).unwrap()
        else {
            panic!("{backend}: the fixture is adopted");
        };
        assert_eq!(counts(&summary), FIXTURE_COUNTS, "{backend}: {summary:?}");
        assert!(
            summary.skipped.is_empty() && summary.repaired.is_empty(),
            "{backend}: {summary:?}"
        );
        assert_eq!(backup.is_some(), backend == Backend::Sqlite);
        assert!(matches!(
            adopt::adopt(&dsn(&source), &options, &mut Quiet).unwrap(),
            Adoption::NotNeeded
        ));
        let adopted = snapshot(&mut open(&source), &cipher);
        check_fixture_content(&adopted, backend);

        let exported_summary = export::export(
            &mut open(&source),
            &mut open(&exported),
            Some(FIXTURE_KEY),
            &mut Quiet,
        )
        .unwrap();
        assert_eq!(counts(&exported_summary), FIXTURE_COUNTS, "{backend}");
        let imported = import_into(&exported, &back, FIXTURE_KEY).unwrap();
        assert_eq!(counts(&imported), FIXTURE_COUNTS, "{backend}");
        assert_eq!(
            snapshot(&mut open(&back), &cipher),
            adopted,
            "{backend}: the way back and in again"
        );

        // Once more: nothing new, nothing doubled.
        let again = import_into(&exported, &back, FIXTURE_KEY).unwrap();
        assert_eq!(
            again.count("api_keys") + again.count("request_logs") + again.count("groups"),
            0
        );
        assert_eq!(
            snapshot(&mut open(&back), &cipher),
            adopted,
            "{backend}: import is idempotent"
        );
        drop((source, exported, back));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_fixture_adopts_exports_and_imports_back() {
    round_trip(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fixture_adopts_exports_and_imports_back() {
    round_trip(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_fixture_adopts_exports_and_imports_back() {
    round_trip(Backend::Mysql).await;
}

/// A plain fixture imported into a server database of ours with encryption on, and the key
/// check refusing a database without the key it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_across_backends_and_checks_keys_first() {
    let test = "gpt_load_import_across";
    let Some(source) = TestDb::empty(Backend::Sqlite, test).await else {
        return;
    };
    let targets: Vec<TestDb> = [TestDb::postgres(test).await, TestDb::mysql(test).await]
        .into_iter()
        .flatten()
        .collect();
    let Some(encrypted) = TestDb::empty(Backend::Sqlite, test).await else {
        return;
    };
    tokio::task::spawn_blocking(move || {
        load(&mut open(&source), &fixture(Backend::Sqlite, "plain"));
        load(&mut open(&encrypted), &fixture(Backend::Sqlite, "encrypted"));
        let ours = KeyCipher::from_password(Some("a key of our own"));
        for target in &targets {
            let backend = target.db.backend();
            // Keys that need a gpt-load key nobody gave: nothing is written.
            let err = import_into(&encrypted, target, "a key of our own").unwrap_err();
            assert!(err.to_string().contains("12 of 12 keys"), "{backend}: {err}");
            let summary = import_into(&source, target, "a key of our own").unwrap();
            assert_eq!(counts(&summary), FIXTURE_COUNTS, "{backend}");
            let snapshot = snapshot(&mut open(target), &ours);
            check_fixture_content(&snapshot, Backend::Sqlite);
            // Stored under our cipher, not in plain text.
            let stored: Vec<String> = on_conn!(&mut open(target), |c| api_keys::table
                .select(api_keys::key_value)
                .load(c))
            .unwrap();
            assert!(stored.iter().all(|v| v.starts_with("v1:")), "{backend}");
        }
        drop((source, targets, encrypted));
    })
    .await
    .unwrap();
}

/// Runs `test` on a blocking thread with a fresh `backend` database holding the `variant`
/// fixture (nothing where that backend is not available to the tests).
async fn with_fixture(
    backend: Backend,
    name: &'static str,
    variant: &'static str,
    test: impl FnOnce(&TestDb, &mut SyncConn) + Send + 'static,
) {
    let Some(db) = TestDb::empty(backend, name).await else {
        return;
    };
    tokio::task::spawn_blocking(move || {
        let mut conn = open(&db);
        load(&mut conn, &fixture(backend, variant));
        test(&db, &mut conn);
        drop(db);
    })
    .await
    .unwrap();
}

/// Adopts `db`, which must be adopted, and checks that the whole fixture was copied.
fn adopt_whole_fixture(db: &TestDb, options: &AdoptOptions, what: &str) {
    let Adoption::Adopted { summary, .. } = adopt::adopt(&dsn(db), options, &mut Quiet).unwrap() else {
        panic!("{what}");
    };
    assert_eq!(counts(&summary), FIXTURE_COUNTS);
}

/// MySQL cannot roll DDL back: a conversion that died with gpt-load's tables renamed aside is
/// restored and redone at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_mysql_conversion_is_restored_and_redone() {
    with_fixture(Backend::Mysql, "gpt_load_interrupted", "encrypted", |db, conn| {
        // What a death half-way leaves: the originals aside, our tables created, nothing copied.
        conn.execute(
            "RENAME TABLE system_settings TO gpt_load_1_4_system_settings, `groups` TO gpt_load_1_4_groups, \
             group_sub_groups TO gpt_load_1_4_group_sub_groups, api_keys TO gpt_load_1_4_api_keys, \
             request_logs TO gpt_load_1_4_request_logs, group_hourly_stats TO gpt_load_1_4_group_hourly_stats",
        )
        .unwrap();
        conn.baseline().unwrap();
        let options = AdoptOptions {
            allowed_on_servers: true,
            encryption_key: Some(FIXTURE_KEY.to_owned()),
            auth_key: None,
        };
        adopt_whole_fixture(db, &options, "restored and adopted");
        let tables = conn.tables().unwrap();
        assert!(!tables.iter().any(|t| t.starts_with("gpt_load_1_4_")), "{tables:?}");
        check_fixture_content(
            &snapshot(conn, &KeyCipher::from_password(Some(FIXTURE_KEY))),
            Backend::Mysql,
        );
    })
    .await;
}

/// A migration that failed on gpt-load's tables (run by an older build, or by a command pointed
/// at the wrong database) leaves diesel's history table empty behind: the database is still
/// gpt-load's, refused by everything but the leader's start, which adopts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_migration_history_does_not_make_a_database_ours() {
    with_fixture(Backend::Sqlite, "gpt_load_empty_history", "plain", |db, conn| {
        conn.execute(
            "CREATE TABLE __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL, \
             run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)",
        )
        .unwrap();
        assert_eq!(adopt::inspect(conn).unwrap(), adopt::Found::GptLoad);
        let refused = adopt::ensure_adopted(&dsn(db)).unwrap_err();
        assert!(refused.to_string().contains("not been adopted yet"), "{refused}");
        adopt_whole_fixture(db, &AdoptOptions::default(), "adopted");
        assert_eq!(adopt::inspect(conn).unwrap(), adopt::Found::Ours);
        adopt::ensure_adopted(&dsn(db)).unwrap();
    })
    .await;
}
