//! The built `gpt-load-gateway` binary started on a gpt-load 1.4 database adopts it in place.
//!
//! Each test loads one fixture of `tests/fixtures/gpt-load-1.4/` (see its README for the
//! logical content asserted here) into a fresh database with the backend's own command-line
//! client (`sqlite3`, `psql`, `mysql`), points the standard groups' upstreams at an in-process
//! [`MockUpstream`] (the operator's upstream, simulated), starts the binary on it and checks
//! through the admin API and the proxy that everything gpt-load held is served:
//!
//! - **Adoption** (every backend, encrypted fixture): groups, keys (plaintexts, statuses,
//!   counters), sub-group links, settings, the 23 request logs (timestamps converted to UTC, the
//!   same instant on every backend) and the hourly stats; then a restart on the adopted database
//!   converts nothing again and serves the same content, and proxied requests reach the mock
//!   with the groups' upstream keys (sent after the restart, so that both starts find the same
//!   database). On SQLite the backup copy holds gpt-load's tables as they were.
//! - **Refusals**: a wrong or missing `ENCRYPTION_KEY`, or a server database without `--adopt`,
//!   stops the binary with a clear message and leaves the database as it was (the same bytes on
//!   SQLite, the same dump on the servers) and no backup.
//! - **Plain fixtures** (gpt-load without `ENCRYPTION_KEY`) adopt without a key, and with one
//!   (the keys are then stored encrypted with ours); served and proxied on the first start.
//!
//! The mock refuses the keys gpt-load had blacklisted, as their real upstream does: the gateway
//! re-validates blacklisted keys when it starts, and a mock that accepted them would restore
//! them while the tests read the keys.
//!
//! The hourly stats are only shown for the last 24 hours (`/api/dashboard/chart`), and the
//! fixture's traffic is on 2026-06-15. The gateway therefore runs with its wall clock set to
//! 2026-06-15 15:30 Asia/Shanghai through libfaketime (Debian package `faketime`), its monotonic
//! clock untouched. Without libfaketime that check prints `SKIP`, or fails under `CI=true`.
//!
//! PostgreSQL and MariaDB come from `TEST_PG_URL` and `TEST_MYSQL_URL` (defaults
//! `postgres://postgres@127.0.0.1:5432/test`, `mysql://root@127.0.0.1:3306/test`), as in the
//! gateway's own database tests: every test creates a database of its own and drops it. When
//! a server or its client is not there, the test prints `SKIP`, or fails under `CI=true`.
//!
//! Every gateway is killed when its guard is dropped, also when a test panics, and all traffic
//! stays on 127.0.0.1. The gateway binary is built with the cargo running the tests (see
//! [`gateway_binary`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use gpt_load_e2e::{
    Behaviour, GatewayCommand, GatewayProcess, MockUpstream, ReceivedRequest, gateway_binary,
    servers::{Server, ServerAddress, run, unavailable, unique_name},
    workspace_root,
};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::{Value, json};

/// gpt-load's `ENCRYPTION_KEY` for the `*-encrypted` fixtures.
const FIXTURE_KEY: &str = "fixture-gpt-load-encryption-key";
/// An `ENCRYPTION_KEY` that is not the fixture's.
const WRONG_KEY: &str = "not-the-fixture-encryption-key";
/// Our `ENCRYPTION_KEY` when a plain fixture is adopted with encryption on.
const NEW_KEY: &str = "gateway-encryption-key-for-plain-fixture";
/// The admin key of every gateway started here (not stored in the database).
const ADMIN_KEY: &str = "e2e-adopt-auth-Kq7Wm2Zx9Rt4";
/// gpt-load's global proxy key (the `proxy_keys` setting).
const GLOBAL_PROXY_KEY: &str = "sk-fixture-global-proxy";
/// One of openai-main's own proxy keys.
const GROUP_PROXY_KEY: &str = "sk-fixture-proxy-a";
/// The zone gpt-load ran in; the MySQL fixtures hold its wall-clock times.
const ZONE: &str = "Asia/Shanghai";
/// 2026-06-15 07:30:00 UTC (15:30 in Asia/Shanghai), after the fixture's last traffic.
const FAKE_NOW_UNIX: i64 = 1_781_508_600;
/// Upper bound for anything the tests wait for, so that a hang fails instead of blocking CI.
const PATIENCE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_database_is_adopted_after_a_backup_and_restarts_as_ours() {
    adopted_and_restarted(Backend::Sqlite, "sqlite_adopt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_database_is_adopted_with_the_flag_and_restarts_as_ours() {
    adopted_and_restarted(Backend::Postgres, "postgres_adopt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_database_is_adopted_with_the_flag_and_restarts_as_ours() {
    adopted_and_restarted(Backend::Mysql, "mysql_adopt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wrong_or_missing_encryption_key_changes_nothing() {
    let Some(db) = Database::load(Backend::Sqlite, Variant::Encrypted, "sqlite_wrong_key") else {
        return;
    };
    let path = db.sqlite_path();
    let before = std::fs::read(&path).expect("read the database file");
    let files_before = db.dir_listing();
    for (key, expected) in [
        (Some(WRONG_KEY), "do not decrypt with the given ENCRYPTION_KEY"),
        (None, "no ENCRYPTION_KEY was given"),
    ] {
        let output = Gateway::fail(&db, &Start::new(key, Adopt::No));
        for wanted in [expected, "Nothing was changed"] {
            assert!(
                output.contains(wanted),
                "ENCRYPTION_KEY {key:?}: the message lacks {wanted:?}:\n{output}"
            );
        }
        assert!(
            std::fs::read(&path).expect("read the database file") == before,
            "ENCRYPTION_KEY {key:?}: the database file changed"
        );
        assert_eq!(
            db.dir_listing(),
            files_before,
            "ENCRYPTION_KEY {key:?}: files appeared next to the database (a backup?)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_wrong_encryption_key_changes_nothing() {
    refused_on_server(
        Backend::Postgres,
        "postgres_wrong_key",
        &Start::new(Some(WRONG_KEY), Adopt::Flag),
        &[
            "do not decrypt with the given ENCRYPTION_KEY",
            "Nothing was changed",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_wrong_encryption_key_changes_nothing() {
    refused_on_server(
        Backend::Mysql,
        "mysql_wrong_key",
        &Start::new(Some(WRONG_KEY), Adopt::Flag),
        &[
            "do not decrypt with the given ENCRYPTION_KEY",
            "Nothing was changed",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_without_the_adopt_flag_changes_nothing() {
    refused_on_server(
        Backend::Postgres,
        "postgres_no_flag",
        &Start::new(Some(FIXTURE_KEY), Adopt::No),
        &["--adopt", "back it up"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_without_the_adopt_flag_changes_nothing() {
    refused_on_server(
        Backend::Mysql,
        "mysql_no_flag",
        &Start::new(Some(FIXTURE_KEY), Adopt::No),
        &["--adopt", "back it up"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_plain_database_is_adopted_without_a_key() {
    plain_adopted(Backend::Sqlite, "sqlite_plain", None, Adopt::No).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_plain_database_is_adopted_without_a_key() {
    plain_adopted(Backend::Mysql, "mysql_plain", None, Adopt::Flag).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_plain_database_adopted_with_a_key_gets_its_keys_encrypted() {
    plain_adopted(Backend::Sqlite, "sqlite_plain_key", Some(NEW_KEY), Adopt::No).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_plain_database_adopted_with_a_key_gets_its_keys_encrypted() {
    plain_adopted(Backend::Postgres, "postgres_plain_key", Some(NEW_KEY), Adopt::Env).await;
}

/// The commands of the way back, through the built binary: `import --from` copies the gpt-load
/// fixture (left as it is) into a new SQLite database of ours, and again without doubling
/// anything; `export-gpt-load --to` writes that into an empty PostgreSQL database as gpt-load's,
/// which the gateway then adopts and serves exactly like the fixture itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_and_export_commands_round_trip() {
    let test = "commands_round_trip";
    let Some(gpt_load) = Database::load(Backend::Sqlite, Variant::Encrypted, test) else {
        return;
    };
    let Some(exported) = Database::empty(Backend::Postgres, test) else {
        return;
    };
    let ours = Database::empty(Backend::Sqlite, test).expect("SQLite is always there");
    let mock = start_upstream().await;
    gpt_load.point_upstreams_at(&mock.url());
    let untouched = gpt_load.dump();

    let imported = command(&ours, &["import", "--from", &gpt_load.dsn()]);
    for (table, rows) in [
        ("system_settings", 18),
        ("groups", 5),
        ("group_sub_groups", 2),
        ("api_keys", 12),
        ("request_logs", 23),
        ("group_hourly_stats", 10),
    ] {
        assert!(
            imported
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == [table, &rows.to_string(), "rows"]),
            "import does not report {rows} rows of {table}:\n{imported}"
        );
    }
    assert_eq!(gpt_load.dump(), untouched, "import leaves the source as it is");
    let again = command(&ours, &["import", "--from", &gpt_load.dsn()]);
    assert!(
        again.contains("12  api_keys: the key is already in its group")
            && again.contains("23  request_logs: the row exists"),
        "a second import copies nothing twice:\n{again}"
    );

    let written = command(&ours, &["export-gpt-load", "--to", &exported.dsn()]);
    assert!(written.contains("exported:"), "{written}");
    let refused = command_failing(&ours, &["export-gpt-load", "--to", &exported.dsn()]);
    assert!(refused.contains("export into an empty database"), "{refused}");

    let gateway = Gateway::start(&exported, &Start::new(Some(FIXTURE_KEY), Adopt::Flag));
    assert!(
        gateway.log().contains("gpt-load database adopted"),
        "{}",
        gateway.log()
    );
    check_fixture_served(&gateway, &mock.url()).await;
    check_proxy(&gateway, &mock).await;
}

/// Runs a subcommand of the binary on `db` (its `DATABASE_DSN`, the fixture's encryption key)
/// and returns what it printed; it must succeed.
fn command(db: &Database, args: &[&str]) -> String {
    let (success, output) = run_subcommand(db, args);
    assert!(success, "{args:?} failed:\n{output}");
    output
}

/// As [`command`], for a subcommand that must fail.
fn command_failing(db: &Database, args: &[&str]) -> String {
    let (success, output) = run_subcommand(db, args);
    assert!(!success, "{args:?} succeeded:\n{output}");
    output
}

fn run_subcommand(db: &Database, args: &[&str]) -> (bool, String) {
    let dir = TempDir::new("command");
    let output = Command::new(gateway_binary())
        .args(args)
        .current_dir(&dir.0)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AUTH_KEY", ADMIN_KEY)
        .env("ENCRYPTION_KEY", FIXTURE_KEY)
        .env("DATA_DIR", dir.0.join("data"))
        .env("DATABASE_DSN", db.dsn())
        .env("TZ", ZONE)
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

// ---------------------------------------------------------------------------------------------
// The scenarios
// ---------------------------------------------------------------------------------------------

/// The encrypted fixture: adopted on the first start, served; the same on a second start, which
/// converts nothing; then proxied requests reach the mock with the groups' upstream keys.
async fn adopted_and_restarted(backend: Backend, test: &str) {
    let Some(db) = Database::load(backend, Variant::Encrypted, test) else {
        return;
    };
    let mock = start_upstream().await;
    db.point_upstreams_at(&mock.url());
    let original = db.dump();
    let gpt_load_values = db.stored_key_values();
    let adopt = if backend == Backend::Sqlite {
        Adopt::No
    } else {
        Adopt::Flag
    };
    let start = Start::new(Some(FIXTURE_KEY), adopt);

    let first = Gateway::start(&db, &start);
    assert!(
        first.log().contains("gpt-load database adopted"),
        "the first start does not report the adoption:\n{}",
        first.log()
    );
    let served = check_fixture_served(&first, &mock.url()).await;
    drop(first);

    assert_converted(&db);
    let stored = db.stored_key_values();
    assert_eq!(stored.len(), 12, "api_keys after adoption: {stored:?}");
    for (value, (old, plain)) in stored
        .iter()
        .zip(gpt_load_values.iter().zip(KEYS.map(|k| k.plain)))
    {
        assert!(
            value != old && value != plain && !value.contains(plain),
            "key {plain} is stored as gpt-load's ciphertext or in plain text: {value}"
        );
    }
    let backups = db.backups();
    if backend == Backend::Sqlite {
        assert_eq!(backups.len(), 1, "one backup file: {backups:?}");
        check_sqlite_backup(&backups[0], &original, &gpt_load_values);
    }

    // A second start: the database is ours, nothing is converted again.
    let adopted = db.dump();
    let second = Gateway::start(&db, &start);
    assert!(
        !second.log().contains("adopted from gpt-load")
            && !second.log().contains("gpt-load database adopted"),
        "the second start adopted again:\n{}",
        second.log()
    );
    let served_again = check_fixture_served(&second, &mock.url()).await;
    assert_json_eq(&served_again, &served, "the admin API after a restart");
    assert_eq!(db.backups(), backups, "a restart makes no backup");
    let restarted = db.dump();
    assert!(
        restarted == adopted,
        "the database changed at the second start:\n{}",
        first_difference(&adopted, &restarted)
    );

    check_proxy(&second, &mock).await;
    check_new_rows(&second, &mock.url()).await;
}

/// Rows added after the adoption take the ids after gpt-load's (PostgreSQL's sequences were
/// moved past the copied ids).
async fn check_new_rows(gateway: &Gateway, upstream: &str) {
    let group = json!({
        "name": "added-after-adoption",
        "channel_type": "openai",
        "test_model": "gpt-4o-mini",
        "upstreams": [{"url": upstream, "weight": 1}],
        "config": {},
    });
    let created = gateway.admin_post("/groups", &group).await;
    assert_eq!(created["id"], 6, "the new group's id: {created}");
    let keys = json!({"group_id": 6, "keys_text": "sk-added-after-adoption-0001"});
    let added = gateway.admin_post("/keys/add-multiple", &keys).await;
    assert_eq!(added["added_count"], 1, "{added}");
    let page = gateway.admin("/keys?group_id=6&page=1&page_size=10").await;
    assert_eq!(page["items"][0]["id"], 13, "the new key's id: {page}");
    assert_eq!(page["items"][0]["key_value"], "sk-added-after-adoption-0001");
}

/// The gateway refuses to start on a server database and leaves it as it was.
async fn refused_on_server(backend: Backend, test: &str, start: &Start<'_>, messages: &[&str]) {
    let Some(db) = Database::load(backend, Variant::Encrypted, test) else {
        return;
    };
    let before = db.dump();
    let output = Gateway::fail(&db, start);
    for wanted in messages {
        assert!(output.contains(wanted), "the message lacks {wanted:?}:\n{output}");
    }
    let after = db.dump();
    assert!(
        after == before,
        "the database changed:\n{}",
        first_difference(&before, &after)
    );
}

/// The plain fixture adopted without a key (stored plain, as gpt-load had them) or with our
/// `ENCRYPTION_KEY` (stored encrypted); served the same either way.
async fn plain_adopted(backend: Backend, test: &str, key: Option<&str>, adopt: Adopt) {
    let Some(db) = Database::load(backend, Variant::Plain, test) else {
        return;
    };
    let mock = start_upstream().await;
    db.point_upstreams_at(&mock.url());
    let gateway = Gateway::start(&db, &Start::new(key, adopt));
    assert!(
        gateway.log().contains("gpt-load database adopted"),
        "the start does not report the adoption:\n{}",
        gateway.log()
    );
    check_fixture_served(&gateway, &mock.url()).await;
    check_proxy(&gateway, &mock).await;
    drop(gateway);

    assert_converted(&db);
    let stored = db.stored_key_values();
    assert_eq!(stored.len(), 12, "api_keys after adoption: {stored:?}");
    let log_values = db.query("SELECT key_value FROM request_logs");
    let proxy_keys = db.query(&format!(
        "SELECT proxy_keys FROM {} WHERE name = 'openai-main'",
        db.groups_table()
    ));
    let global = db.query("SELECT setting_value FROM system_settings WHERE setting_key = 'proxy_keys'");
    if key.is_some() {
        for (value, plain) in stored.iter().zip(KEYS.map(|k| k.plain)) {
            assert!(!value.contains(plain), "key {plain} is stored in plain text");
        }
        for plain in KEYS.map(|k| k.plain) {
            assert!(!log_values.contains(plain), "a log stores {plain} in plain text");
        }
        assert!(
            !proxy_keys.contains(GROUP_PROXY_KEY) && !global.contains(GLOBAL_PROXY_KEY),
            "proxy keys are stored in plain text: {proxy_keys} / {global}"
        );
    } else {
        let plains: Vec<&str> = KEYS.iter().map(|k| k.plain).collect();
        assert_eq!(
            stored, plains,
            "without ENCRYPTION_KEY keys are stored as they are"
        );
        assert_eq!(proxy_keys, "sk-fixture-proxy-a,sk-fixture-proxy-b");
        assert_eq!(global, GLOBAL_PROXY_KEY);
    }
    if backend == Backend::Sqlite {
        assert_eq!(db.backups().len(), 1, "one backup file");
    }
}

/// gpt-load's tables were replaced by ours: our migration history is there, no table was left
/// aside.
fn assert_converted(db: &Database) {
    let tables = db.tables();
    for table in [
        "__diesel_schema_migrations",
        "system_settings",
        "groups",
        "group_sub_groups",
        "api_keys",
        "request_logs",
        "group_hourly_stats",
    ] {
        assert!(
            tables.contains(table),
            "no table {table} after adoption: {tables:?}"
        );
    }
    let aside: Vec<&String> = tables.iter().filter(|t| t.contains("gpt_load_1_4")).collect();
    assert!(aside.is_empty(), "gpt-load's tables were left aside: {aside:?}");
}

/// The SQLite backup: one copy beside the database, named with its time, that opens and holds
/// gpt-load's tables and rows as they were before the gateway started.
fn check_sqlite_backup(backup: &Path, original: &str, gpt_load_values: &[String]) {
    let name = backup.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let stamp = name
        .strip_prefix("gpt-load.db.gpt-load-backup-")
        .unwrap_or_else(|| panic!("unexpected backup name {name}"));
    assert!(
        stamp.len() == 15
            && stamp.as_bytes()[8] == b'-'
            && stamp
                .bytes()
                .enumerate()
                .all(|(i, b)| i == 8 || b.is_ascii_digit()),
        "the backup is not named <file>.gpt-load-backup-YYYYmmdd-HHMMSS: {name}"
    );
    let copy = sqlite3(backup, &[".dump"]).expect("sqlite3 opens the backup");
    assert!(
        copy == original,
        "the backup differs from the database before adoption:\n{}",
        first_difference(original, &copy)
    );
    let tables = sqlite3(
        backup,
        &["SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"],
    )
    .expect("list the backup's tables");
    assert!(
        !tables.contains("__diesel_schema_migrations") && tables.contains("request_logs"),
        "the backup's tables: {tables}"
    );
    let values =
        sqlite3(backup, &["SELECT key_value FROM api_keys ORDER BY id"]).expect("read the backup's keys");
    let values: Vec<&str> = values.lines().collect();
    assert_eq!(values, gpt_load_values, "the backup's api_keys values");
    assert!(
        values
            .iter()
            .all(|v| v.len() > 56 && v.bytes().all(|b| b.is_ascii_hexdigit())),
        "the backup's keys are gpt-load's hex ciphertexts: {values:?}"
    );
    let counts = sqlite3(
        backup,
        &[
            "SELECT (SELECT count(*) FROM system_settings), (SELECT count(*) FROM groups), \
           (SELECT count(*) FROM group_sub_groups), (SELECT count(*) FROM api_keys), \
           (SELECT count(*) FROM request_logs), (SELECT count(*) FROM group_hourly_stats)",
        ],
    )
    .expect("count the backup's rows");
    assert_eq!(counts.trim(), "18|5|2|12|23|10", "rows in the backup");
}

// ---------------------------------------------------------------------------------------------
// What the README says the fixture holds
// ---------------------------------------------------------------------------------------------

/// One upstream key: id, group id, plaintext, status, notes, request and failure counts, and
/// `last_used_at` in UTC to the millisecond.
struct Key {
    id: i64,
    group: i64,
    plain: &'static str,
    status: &'static str,
    notes: &'static str,
    requests: i64,
    failures: i64,
    last_used: Option<&'static str>,
}

const fn key(
    id: i64,
    group: i64,
    plain: &'static str,
    status: &'static str,
    notes: &'static str,
    counts: (i64, i64),
    last_used: Option<&'static str>,
) -> Key {
    Key {
        id,
        group,
        plain,
        status,
        notes,
        requests: counts.0,
        failures: counts.1,
        last_used,
    }
}

/// The README's keys; its `+08:00` times are given here in UTC.
#[rustfmt::skip]
const KEYS: [Key; 12] = [
    key(1, 1, "sk-fixture-openai-main-0001", "active", "primary", (3, 0), Some("2026-06-15T02:12:31.022Z")),
    key(2, 1, "sk-fixture-openai-main-0002", "active", "", (2, 0), Some("2026-06-15T03:22:37.087Z")),
    key(3, 1, "sk-fixture-openai-main-0003", "invalid", "revoked upstream", (0, 2), None),
    key(4, 1, "sk-fixture-openai-main-0004", "active", "", (0, 0), None),
    key(5, 2, "sk-fixture-openai-backup-0001", "active", "", (3, 2), Some("2026-06-15T06:05:26.663Z")),
    key(6, 2, "sk-fixture-openai-backup-0002", "invalid", "", (0, 3), None),
    key(7, 3, "AIzaFixtureGemini0001", "active", "", (2, 0), Some("2026-06-15T03:20:15.119Z")),
    key(8, 3, "AIzaFixtureGemini0002", "active", "", (1, 0), Some("2026-06-15T02:33:49.743Z")),
    key(9, 3, "AIzaFixtureGemini0003", "invalid", "", (0, 3), None),
    key(10, 4, "sk-ant-fixture-0001", "active", "", (1, 0), Some("2026-06-15T02:40:16.095Z")),
    key(11, 4, "sk-ant-fixture-0002", "active", "", (1, 0), Some("2026-06-15T03:03:08.215Z")),
    key(12, 4, "sk-ant-fixture-0003", "invalid", "billing disabled", (0, 3), None),
];

/// The plaintext of a key by the suffix the README's log table uses (`main-0001`, `ant-0002`).
fn key_by_suffix(suffix: &str) -> &'static Key {
    KEYS.iter()
        .find(|k| k.plain.ends_with(suffix))
        .unwrap_or_else(|| panic!("no key ends with {suffix}"))
}

/// One request log: UTC time to the millisecond, group, parent (aggregate), key suffix, model,
/// status, request type and whether it streamed.
type Log = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    i64,
    &'static str,
    bool,
);

/// The README's 23 request logs, oldest first; its `+08:00` times are given here in UTC.
#[rustfmt::skip]
const LOGS: [Log; 23] = [
    ("2026-06-15T02:02:11.117Z", "openai-main", "", "main-0001", "gpt-4o-mini", 200, "final", false),
    ("2026-06-15T02:05:40.347Z", "openai-main", "", "main-0003", "gpt-4o-mini", 401, "retry", true),
    ("2026-06-15T02:05:41.526Z", "openai-main", "", "main-0002", "gpt-4o-mini", 200, "final", true),
    ("2026-06-15T02:07:02.091Z", "openai-main", "", "main-0003", "gpt-4o-mini", 401, "retry", false),
    ("2026-06-15T02:07:02.978Z", "openai-main", "", "main-0001", "gpt-4o-mini", 200, "final", false),
    ("2026-06-15T02:12:31.022Z", "openai-main", "all-openai", "main-0001", "gpt-4o-mini", 200, "final", false),
    ("2026-06-15T02:15:08.982Z", "openai-backup", "all-openai", "backup-0001", "gpt-4o-mini", 200, "final", false),
    ("2026-06-15T02:20:43.925Z", "openai-backup", "", "backup-0002", "gpt-4o", 429, "retry", false),
    ("2026-06-15T02:20:45.148Z", "openai-backup", "", "backup-0001", "gpt-4o", 200, "final", false),
    ("2026-06-15T02:31:27.300Z", "gemini", "", "Gemini0001", "gemini-2.0-flash", 200, "final", false),
    ("2026-06-15T02:33:49.743Z", "gemini", "", "Gemini0002", "gemini-2.5-flash", 200, "final", true),
    ("2026-06-15T02:40:16.095Z", "claude", "", "ant-fixture-0001", "claude-3", 200, "final", false),
    ("2026-06-15T03:03:08.215Z", "claude", "", "ant-fixture-0002", "claude-3-5-sonnet-latest", 200, "final", true),
    ("2026-06-15T03:05:52.053Z", "claude", "", "ant-fixture-0002", "claude-3-5-sonnet-latest", 499, "final", true),
    ("2026-06-15T03:20:13.964Z", "gemini", "", "Gemini0003", "gemini-2.0-flash", 400, "retry", false),
    ("2026-06-15T03:20:15.119Z", "gemini", "", "Gemini0001", "gemini-2.0-flash", 200, "final", false),
    ("2026-06-15T03:22:37.087Z", "openai-main", "all-openai", "main-0002", "gpt-4o", 200, "final", true),
    ("2026-06-15T03:40:03.059Z", "openai-main", "", "main-0001", "", 404, "final", false),
    ("2026-06-15T06:05:26.663Z", "openai-backup", "", "backup-0001", "gpt-4o-mini", 200, "final", false),
    ("2026-06-15T06:08:10.020Z", "openai-backup", "", "backup-0002", "gpt-4o", 429, "retry", false),
    ("2026-06-15T06:08:10.466Z", "openai-backup", "", "backup-0001", "gpt-4o", 429, "retry", false),
    ("2026-06-15T06:08:10.954Z", "openai-backup", "", "backup-0002", "gpt-4o", 429, "retry", false),
    ("2026-06-15T06:08:11.537Z", "openai-backup", "", "backup-0001", "gpt-4o", 429, "final", false),
];

/// The README's hourly stats: group id, hour (UTC, on 2026-06-15), successes, failures.
const HOURLY: [(i64, usize, i64, i64); 10] = [
    (1, 2, 4, 0),
    (5, 2, 2, 0),
    (2, 2, 2, 0),
    (3, 2, 2, 0),
    (4, 2, 1, 0),
    (4, 3, 1, 1),
    (3, 3, 1, 0),
    (1, 3, 1, 1),
    (5, 3, 1, 0),
    (2, 6, 1, 1),
];

fn group_id(name: &str) -> i64 {
    match name {
        "openai-main" => 1,
        "openai-backup" => 2,
        "gemini" => 3,
        "claude" => 4,
        "all-openai" => 5,
        _ => panic!("no group {name}"),
    }
}

/// The README's groups as the admin API shows them (standard groups in front of `upstream`);
/// gemini's SQL NULL columns come back as empty values.
fn expected_groups(upstream: &str) -> Vec<Value> {
    let upstreams = json!([{"url": upstream, "weight": 1}]);
    let group = |id: i64, name: &str, display: &str, description: &str, channel: &str, test_model: &str| {
        json!({
            "id": id,
            "name": name,
            "display_name": display,
            "description": description,
            "group_type": "standard",
            "channel_type": channel,
            "sort": id,
            "test_model": test_model,
            "validation_endpoint": "",
            "upstreams": upstreams,
            "proxy_keys": "",
            "param_overrides": {},
            "config": {},
            "header_rules": [],
            "model_redirect_rules": {},
            "model_redirect_strict": false,
        })
    };
    let mut main = group(
        1,
        "openai-main",
        "OpenAI Main",
        "Primary OpenAI key pool",
        "openai",
        "gpt-4o-mini",
    );
    main["proxy_keys"] = json!("sk-fixture-proxy-a,sk-fixture-proxy-b");
    main["param_overrides"] = json!({"temperature": 0.5});
    main["config"] = json!({"blacklist_threshold": 2, "enable_request_body_logging": true, "max_retries": 5});
    main["header_rules"] = json!([
        {"key": "X-Fixture-Tag", "value": "gpt-load", "action": "set"},
        {"key": "X-Forwarded-For", "value": "", "action": "remove"},
    ]);
    let backup = group(2, "openai-backup", "OpenAI Backup", "", "openai", "gpt-4o-mini");
    let gemini = group(3, "gemini", "", "", "gemini", "gemini-2.0-flash");
    let mut claude = group(
        4,
        "claude",
        "Claude",
        "Anthropic direct",
        "anthropic",
        "claude-3-5-haiku-latest",
    );
    claude["model_redirect_rules"] = json!({"claude-3": "claude-3-5-sonnet-latest"});
    claude["model_redirect_strict"] = json!(true);
    let mut all = group(5, "all-openai", "All OpenAI", "", "openai", "-");
    all["group_type"] = json!("aggregate");
    all["upstreams"] = json!([]);
    vec![main, backup, gemini, claude, all]
}

/// The README's 18 settings as the admin API shows them (`1e+06` read as the integer it means).
fn expected_settings() -> Vec<(&'static str, Value)> {
    vec![
        ("app_url", json!("https://gpt-load.example.com")),
        ("proxy_keys", json!(GLOBAL_PROXY_KEY)),
        ("request_log_retention_days", json!(0)),
        ("request_log_write_interval_minutes", json!(1)),
        ("enable_request_body_logging", json!(false)),
        ("request_timeout", json!(300)),
        ("connect_timeout", json!(15)),
        ("idle_conn_timeout", json!(120)),
        ("response_header_timeout", json!(600)),
        ("max_idle_conns", json!(1_000_000)),
        ("max_idle_conns_per_host", json!(50)),
        ("proxy_url", json!("")),
        ("max_retries", json!(3)),
        ("blacklist_threshold", json!(3)),
        ("key_validation_interval_minutes", json!(1_200_000)),
        ("key_validation_concurrency", json!(10)),
        ("key_validation_timeout_seconds", json!(20)),
        ("failover_status_codes", json!("400-403,405-999")),
    ]
}

// ---------------------------------------------------------------------------------------------
// Checks through the admin API and the proxy
// ---------------------------------------------------------------------------------------------

/// Asserts that the gateway serves the fixture's content; returns what the admin API answered,
/// for comparison with a later start.
async fn check_fixture_served(gateway: &Gateway, upstream: &str) -> Value {
    let groups = gateway.admin("/groups").await;
    check_groups(&groups, upstream);
    let mut keys = serde_json::Map::new();
    for group in 1..=4 {
        let page = gateway
            .admin(&format!("/keys?group_id={group}&page=1&page_size=100"))
            .await;
        keys.insert(group.to_string(), page);
    }
    let keys = Value::Object(keys);
    let hashes = check_keys(&keys);
    let sub_groups = gateway.admin("/groups/5/sub-groups").await;
    check_sub_groups(&sub_groups);
    let settings = gateway.admin("/settings").await;
    check_settings(&settings);
    let logs = gateway.admin("/logs?page=1&page_size=100").await;
    check_logs(&logs, &hashes);
    let mut charts = serde_json::Map::new();
    if gateway.fake_clock {
        charts.insert("all".to_owned(), gateway.admin("/dashboard/chart").await);
        for group in 1..=5 {
            let chart = gateway.admin(&format!("/dashboard/chart?groupId={group}")).await;
            charts.insert(group.to_string(), chart);
        }
        check_charts(&charts);
    }
    json!({
        "groups": groups,
        "keys": keys,
        "sub_groups": sub_groups,
        "settings": settings,
        "logs": logs,
        "charts": charts,
    })
}

fn check_groups(groups: &Value, upstream: &str) {
    let groups = groups.as_array().expect("a list of groups");
    let expected = expected_groups(upstream);
    assert_eq!(groups.len(), expected.len(), "groups: {groups:?}");
    for want in &expected {
        let name = want["name"].as_str().unwrap_or_default();
        let got = groups
            .iter()
            .find(|g| g["name"] == want["name"])
            .unwrap_or_else(|| panic!("no group {name}: {groups:?}"));
        for (field, value) in want.as_object().expect("an object") {
            assert_eq!(&got[field], value, "group {name}: {field}");
        }
    }
    // gpt-load's cron checker validated groups 1–4 at 14:31 (+08:00) and bumped updated_at.
    for (name, at) in [
        ("openai-main", "2026-06-15T06:31:08.412Z"),
        ("openai-backup", "2026-06-15T06:31:08.655Z"),
        ("gemini", "2026-06-15T06:31:07.981Z"),
        ("claude", "2026-06-15T06:31:09.130Z"),
    ] {
        let got = groups.iter().find(|g| g["name"] == name).expect("the group");
        assert_eq!(millis(&got["last_validated_at"]), at, "{name}: last_validated_at");
        assert_eq!(millis(&got["updated_at"]), at, "{name}: updated_at");
    }
    let all = groups
        .iter()
        .find(|g| g["name"] == "all-openai")
        .expect("the aggregate");
    assert_eq!(
        all["last_validated_at"],
        Value::Null,
        "all-openai: last_validated_at"
    );
}

/// Checks every key; returns each plaintext's `key_hash` as served.
fn check_keys(pages: &Value) -> BTreeMap<String, String> {
    let mut hashes = BTreeMap::new();
    for group in 1..=4 {
        let page = &pages[group.to_string()];
        let items = page["items"].as_array().expect("a page of keys");
        let expected: Vec<&Key> = KEYS.iter().filter(|k| k.group == group).collect();
        assert_eq!(
            page["pagination"]["total_items"],
            expected.len(),
            "keys of group {group}"
        );
        assert_eq!(items.len(), expected.len(), "keys of group {group}");
        for want in expected {
            let got = items
                .iter()
                .find(|k| k["id"] == want.id)
                .unwrap_or_else(|| panic!("no key {} in group {group}: {items:?}", want.id));
            let what = format!("key {} ({})", want.id, want.plain);
            assert_eq!(got["key_value"], want.plain, "{what}: value");
            assert_eq!(got["group_id"], want.group, "{what}: group");
            assert_eq!(got["status"], want.status, "{what}: status");
            assert_eq!(got["notes"], want.notes, "{what}: notes");
            assert_eq!(got["request_count"], want.requests, "{what}: request_count");
            assert_eq!(got["failure_count"], want.failures, "{what}: failure_count");
            match want.last_used {
                Some(at) => assert_eq!(millis(&got["last_used_at"]), at, "{what}: last_used_at"),
                None => assert_eq!(got["last_used_at"], Value::Null, "{what}: last_used_at"),
            }
            let hash = got["key_hash"].as_str().unwrap_or_default();
            assert!(!hash.is_empty(), "{what}: key_hash");
            hashes.insert(want.plain.to_owned(), hash.to_owned());
        }
        for got in items {
            let created = millis(&got["created_at"]);
            match got["id"].as_i64() {
                Some(1..=3) => assert_eq!(
                    created, "2025-11-12T01:42:03.898Z",
                    "key {}: created_at",
                    got["id"]
                ),
                Some(4) => assert_eq!(created, "2026-03-02T03:17:45.077Z", "key 4: created_at"),
                _ => {}
            }
        }
    }
    hashes
}

fn check_sub_groups(sub_groups: &Value) {
    let links: BTreeSet<(String, i64)> = sub_groups
        .as_array()
        .expect("a list of sub-groups")
        .iter()
        .map(|s| {
            (
                s["group"]["name"].as_str().unwrap_or_default().to_owned(),
                s["weight"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    let expected: BTreeSet<(String, i64)> =
        [("openai-main".to_owned(), 3), ("openai-backup".to_owned(), 1)].into();
    assert_eq!(links, expected, "all-openai's sub-groups: {sub_groups}");
}

fn check_settings(categories: &Value) {
    let values: BTreeMap<&str, &Value> = categories
        .as_array()
        .expect("settings by category")
        .iter()
        .flat_map(|c| c["settings"].as_array().into_iter().flatten())
        .filter_map(|s| Some((s["key"].as_str()?, &s["value"])))
        .collect();
    for (key, value) in expected_settings() {
        assert_eq!(values.get(key).copied(), Some(&value), "setting {key}");
    }
}

fn check_logs(page: &Value, hashes: &BTreeMap<String, String>) {
    let items = page["items"].as_array().expect("a page of logs");
    assert_eq!(page["pagination"]["total_items"], 23, "request logs");
    assert_eq!(items.len(), 23, "request logs");
    // Newest first.
    for (got, want) in items.iter().rev().zip(LOGS) {
        let (at, group, parent, key, model, status, request_type, stream) = want;
        let key = key_by_suffix(key);
        let what = format!("the log of {at}");
        assert_eq!(millis(&got["timestamp"]), at, "{what}: timestamp");
        assert_eq!(got["group_name"], group, "{what}: group_name");
        assert_eq!(got["group_id"], group_id(group), "{what}: group_id");
        assert_eq!(got["parent_group_name"], parent, "{what}: parent_group_name");
        let parent_id = if parent.is_empty() { 0 } else { group_id(parent) };
        assert_eq!(got["parent_group_id"], parent_id, "{what}: parent_group_id");
        assert_eq!(got["key_value"], key.plain, "{what}: key_value");
        assert_eq!(got["key_hash"], hashes[key.plain].as_str(), "{what}: key_hash");
        assert_eq!(got["key_id"], key.id, "{what}: key_id");
        assert_eq!(got["model"], model, "{what}: model");
        assert_eq!(got["status_code"], status, "{what}: status_code");
        assert_eq!(got["is_success"], status < 400, "{what}: is_success");
        assert_eq!(got["request_type"], request_type, "{what}: request_type");
        assert_eq!(got["is_stream"], stream, "{what}: is_stream");
    }
    let first = items.last().expect("the oldest log");
    assert_eq!(first["source_ip"], "192.168.10.21");
    assert_eq!(first["duration_ms"], 842);
    assert_eq!(first["user_agent"], "OpenAI/Python 1.54.4");
    assert_eq!(first["request_path"], "/proxy/openai-main/v1/chat/completions");
    assert_eq!(
        first["upstream_addr"],
        "https://api.openai.com/v1/chat/completions"
    );
    let body = first["request_body"].as_str().unwrap_or_default();
    assert!(
        body.starts_with(r#"{"messages":[{"content":"Say hello.","role":"user"}]"#),
        "the first log's request body: {body}"
    );
    let by_time = |at: &str| {
        items
            .iter()
            .find(|l| millis(&l["timestamp"]) == at)
            .unwrap_or_else(|| panic!("no log at {at}"))
    };
    assert_eq!(
        by_time("2026-06-15T03:05:52.053Z")["error_message"],
        r#"Post "https://api.anthropic.com/v1/messages": context canceled"#
    );
    assert_eq!(
        by_time("2026-06-15T02:33:49.743Z")["request_path"],
        "/proxy/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(by_time("2026-06-15T03:40:03.059Z")["error_message"], "");
    assert_eq!(by_time("2026-06-15T02:15:08.982Z")["user_agent"], "");
}

/// The 24-hour charts at the faked now (2026-06-15 07:30 UTC): hours 02, 03 and 06 UTC are the
/// fixture's 10:00, 11:00 and 14:00 in Asia/Shanghai.
fn check_charts(charts: &serde_json::Map<String, Value>) {
    let labels: Vec<String> = (0..24)
        .map(|i| {
            let (day, hour) = if i < 16 { (14, i + 8) } else { (15, i - 16) };
            format!("2026-06-{day}T{hour:02}:00:00Z")
        })
        .collect();
    // Hour h of 2026-06-15 is at index h + 16.
    let series = |group: Option<i64>| {
        let (mut ok, mut failed) = (vec![0_i64; 24], vec![0_i64; 24]);
        for (g, hour, s, f) in HOURLY {
            // The chart of every group leaves the aggregate out (its rows repeat its sub-groups').
            if group.map_or(g != 5, |wanted| wanted == g) {
                ok[hour + 16] += s;
                failed[hour + 16] += f;
            }
        }
        (ok, failed)
    };
    for (name, chart) in charts {
        let group = name.parse::<i64>().ok();
        let (ok, failed) = series(group);
        assert_eq!(chart["labels"], json!(labels), "chart {name}: labels");
        assert_eq!(chart["datasets"][0]["data"], json!(ok), "chart {name}: successes");
        assert_eq!(
            chart["datasets"][1]["data"],
            json!(failed),
            "chart {name}: failures"
        );
    }
}

/// The operator's upstream, simulated: the keys gpt-load had blacklisted are refused there
/// (revoked, billing disabled), every other key is served.
async fn start_upstream() -> MockUpstream {
    let mock = MockUpstream::start().await.expect("the mock upstream starts");
    for key in KEYS.iter().filter(|k| k.status == "invalid") {
        mock.script(key.plain, Behaviour::Unauthorized);
    }
    mock
}

/// Proxied requests reach the mock with the right group's active upstream keys: openai-main
/// through its own proxy key and the global one (its header rule and parameter override
/// applied), the aggregate through the global key, claude (model redirect) and gemini.
async fn check_proxy(gateway: &Gateway, mock: &MockUpstream) {
    let chat =
        |marker: &str| json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": marker}]});
    for (group, proxy_key, pools) in [
        ("openai-main", GROUP_PROXY_KEY, &[1][..]),
        ("openai-main", GLOBAL_PROXY_KEY, &[1][..]),
        ("all-openai", GLOBAL_PROXY_KEY, &[1, 2][..]),
    ] {
        let what = format!("POST /proxy/{group} with {proxy_key}");
        let url = format!("{}/proxy/{group}/v1/chat/completions", gateway.base());
        let auth = format!("Bearer {proxy_key}");
        let headers = [
            ("authorization", auth.as_str()),
            ("x-forwarded-for", "203.0.113.7"),
        ];
        let seen = proxied(mock, &what, &url, &headers, chat).await;
        assert_eq!(seen.path, "/v1/chat/completions", "{what}");
        assert_active_key_of(&seen, pools, &what);
        if group == "openai-main" {
            let header = |name: &str| seen.headers.get(name).and_then(|v| v.to_str().ok());
            assert_eq!(
                header("x-fixture-tag"),
                Some("gpt-load"),
                "{what}: header rule set"
            );
            assert_eq!(header("x-forwarded-for"), None, "{what}: header rule remove");
            let sent: Value = serde_json::from_slice(&seen.body).expect("a JSON body");
            assert_eq!(sent["temperature"], 0.5, "{what}: param override");
        }
    }

    let url = format!("{}/proxy/claude/v1/messages", gateway.base());
    let headers = [
        ("x-api-key", GLOBAL_PROXY_KEY),
        ("anthropic-version", "2023-06-01"),
    ];
    let message = |marker: &str| {
        let messages = json!([{"role": "user", "content": marker}]);
        json!({"model": "claude-3", "max_tokens": 16, "messages": messages})
    };
    let seen = proxied(mock, "claude", &url, &headers, message).await;
    assert_active_key_of(&seen, &[4], "claude");
    let sent: Value = serde_json::from_slice(&seen.body).expect("a JSON body");
    assert_eq!(
        sent["model"], "claude-3-5-sonnet-latest",
        "claude: model redirect"
    );

    let url = format!(
        "{}/proxy/gemini/v1beta/models/gemini-2.0-flash:generateContent",
        gateway.base()
    );
    let content = |marker: &str| json!({"contents": [{"role": "user", "parts": [{"text": marker}]}]});
    let seen = proxied(
        mock,
        "gemini",
        &url,
        &[("x-goog-api-key", GLOBAL_PROXY_KEY)],
        content,
    )
    .await;
    assert_active_key_of(&seen, &[3], "gemini");
}

/// Sends a request whose body carries a marker of its own and returns the one request the mock
/// received with that marker (the gateway may talk to the upstream on its own, to validate keys).
async fn proxied(
    mock: &MockUpstream,
    what: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Fn(&str) -> Value,
) -> ReceivedRequest {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let marker = format!("adoption check {}", NEXT.fetch_add(1, Ordering::Relaxed));
    let (status, answer) = send(Method::POST, url, headers, Some(&body(&marker))).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{what}: {}",
        String::from_utf8_lossy(&answer)
    );
    let seen: Vec<ReceivedRequest> = mock
        .received()
        .into_iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains(&marker))
        .collect();
    assert_eq!(seen.len(), 1, "{what}: requests at the mock");
    seen.into_iter().next().expect("one request")
}

fn assert_active_key_of(seen: &ReceivedRequest, groups: &[i64], what: &str) {
    let active: BTreeSet<&str> = KEYS
        .iter()
        .filter(|k| groups.contains(&k.group) && k.status == "active")
        .map(|k| k.plain)
        .collect();
    let credential = seen.credential.as_deref().unwrap_or_default();
    assert!(
        active.contains(credential),
        "{what}: the mock saw {credential:?}, not an active key of groups {groups:?}"
    );
}

/// An RFC 3339 UTC time cut to milliseconds: `2026-06-15T02:02:11.117Z`.
fn millis(value: &Value) -> String {
    let text = value.as_str().unwrap_or_else(|| panic!("not a time: {value}"));
    let text = text
        .strip_suffix('Z')
        .unwrap_or_else(|| panic!("not a UTC time: {text}"));
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    let fraction: String = fraction.chars().chain(std::iter::repeat('0')).take(3).collect();
    format!("{seconds}.{fraction}Z")
}

fn assert_json_eq(got: &Value, expected: &Value, what: &str) {
    if got != expected {
        let (got, expected) = (
            serde_json::to_string_pretty(got).unwrap_or_default(),
            serde_json::to_string_pretty(expected).unwrap_or_default(),
        );
        panic!("{what} differs:\n{}", first_difference(&expected, &got));
    }
}

/// The first differing line of two texts, with its number.
fn first_difference(before: &str, after: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i), b.get(i));
        if x != y {
            return format!("line {}:\n- {}\n+ {}", i + 1, x.unwrap_or(&""), y.unwrap_or(&""));
        }
    }
    "(no line differs)".to_owned()
}

// ---------------------------------------------------------------------------------------------
// Databases
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
    Mysql,
}

#[derive(Clone, Copy, Debug)]
enum Variant {
    Encrypted,
    Plain,
}

/// A gpt-load fixture loaded into a database of its own: a SQLite file in a temporary
/// directory, or a PostgreSQL / MariaDB database created for the test and dropped on drop.
struct Database {
    backend: Backend,
    /// The SQLite file's directory (nothing else is in it).
    dir: TempDir,
    server: Option<ServerAddress>,
    /// The server database's name.
    name: String,
}

impl Database {
    /// Loads the fixture; `None` (after a `SKIP` line) when the backend is not available here.
    fn load(backend: Backend, variant: Variant, test: &str) -> Option<Database> {
        let variant = match variant {
            Variant::Encrypted => "encrypted",
            Variant::Plain => "plain",
        };
        let fixture = |prefix: &str| {
            workspace_root()
                .join("tests/fixtures/gpt-load-1.4")
                .join(format!("{prefix}-{variant}.sql"))
        };
        let db = Self::empty(backend, test)?;
        if backend == Backend::Sqlite
            && let Err(err) = run(Command::new("sqlite3").arg("-version").stdin(Stdio::null()))
        {
            return unavailable(test, "sqlite3 (Debian package sqlite3)", &err);
        }
        let prefix = match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
        };
        let input = File::open(fixture(prefix)).expect("open the fixture");
        run(db.client().stdin(input)).unwrap_or_else(|err| panic!("loading the fixture failed: {err}"));
        Some(db)
    }

    /// A database without tables (SQLite: a file not created yet); `None` (after a `SKIP`
    /// line) when the backend is not available here.
    fn empty(backend: Backend, test: &str) -> Option<Database> {
        let dir = TempDir::new(test);
        let kind = match backend {
            Backend::Sqlite => {
                return Some(Database {
                    backend,
                    dir,
                    server: None,
                    name: String::new(),
                });
            }
            Backend::Postgres => Server::Postgres,
            Backend::Mysql => Server::Mariadb,
        };
        let server = ServerAddress::from_env(kind);
        let mut db = Database {
            backend,
            dir,
            server: Some(server.clone()),
            name: server.database.clone(),
        };
        if let Err(err) = db.try_query("SELECT 1") {
            return unavailable(test, &server.requirement(), &err);
        }
        let name = unique_name(test);
        db.query(&format!("CREATE DATABASE {name}"));
        // From here on, dropping `db` drops the database.
        db.name = name;
        Some(db)
    }

    fn sqlite_path(&self) -> PathBuf {
        self.dir.0.join("gpt-load.db")
    }

    /// The backend's command-line client on this database, reading SQL from standard input
    /// or `-c`/`-e`, printing rows as `a|b` lines.
    fn client(&self) -> Command {
        let server = self.server.as_ref();
        match (self.backend, server) {
            (Backend::Postgres | Backend::Mysql, Some(s)) => s.client(&self.name),
            _ => {
                let mut command = Command::new("sqlite3");
                command.arg("-bail").arg(self.sqlite_path());
                command
            }
        }
    }

    fn try_query(&self, sql: &str) -> Result<String, String> {
        let mut command = self.client();
        match self.backend {
            Backend::Sqlite => command.arg(sql),
            Backend::Postgres => command.args(["-c", sql]),
            Backend::Mysql => command.args(["-e", sql]),
        };
        let out = run(command.stdin(Stdio::null()))?;
        Ok(match self.backend {
            Backend::Mysql => out.replace('\t', "|"),
            Backend::Sqlite | Backend::Postgres => out,
        }
        .trim_end()
        .to_owned())
    }

    /// Runs `sql`; its rows, one per line.
    fn query(&self, sql: &str) -> String {
        self.try_query(sql).unwrap_or_else(|err| panic!("{sql}: {err}"))
    }

    fn groups_table(&self) -> &'static str {
        match self.backend {
            Backend::Mysql => "`groups`",
            Backend::Sqlite | Backend::Postgres => "\"groups\"",
        }
    }

    /// Points every standard group at `upstream`, as the operator's real upstream would be.
    fn point_upstreams_at(&self, upstream: &str) {
        let upstreams = json!([{"url": upstream, "weight": 1}]).to_string();
        self.query(&format!(
            "UPDATE {} SET upstreams = '{upstreams}' WHERE group_type = 'standard'",
            self.groups_table()
        ));
        let count = self.query(&format!(
            "SELECT count(*) FROM {} WHERE upstreams LIKE '%127.0.0.1%'",
            if self.backend == Backend::Postgres {
                "(SELECT upstreams::text AS upstreams FROM \"groups\") AS g"
            } else {
                self.groups_table()
            }
        ));
        assert_eq!(count, "4", "standard groups pointed at the mock");
    }

    /// `api_keys.key_value` by id.
    fn stored_key_values(&self) -> Vec<String> {
        self.query("SELECT key_value FROM api_keys ORDER BY id")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The tables of the database (on PostgreSQL, of every schema but the system's).
    fn tables(&self) -> BTreeSet<String> {
        let sql = match self.backend {
            Backend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table'",
            Backend::Postgres => {
                "SELECT CASE WHEN table_schema = current_schema() THEN table_name \
                 ELSE table_schema || '.' || table_name END FROM information_schema.tables \
                 WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
            }
            Backend::Mysql => {
                "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
            }
        };
        let mut tables: BTreeSet<String> = self.query(sql).lines().map(str::to_owned).collect();
        if self.backend == Backend::Postgres {
            // A schema of gpt-load's tables moved aside, even if empty.
            let schemas = self.query(
                "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE '%gpt_load_1_4%'",
            );
            tables.extend(schemas.lines().map(|s| format!("{s} (schema)")));
        }
        tables
    }

    /// Everything the database holds, as text: `.dump` of SQLite, `pg_dump`, `mysqldump`.
    fn dump(&self) -> String {
        let mut command = match (self.backend, self.server.as_ref()) {
            (Backend::Postgres, Some(s)) => {
                let mut command = Command::new("pg_dump");
                command
                    .args([
                        "--no-owner",
                        "-h",
                        &s.host,
                        "-p",
                        &s.port,
                        "-U",
                        &s.user,
                        &self.name,
                    ])
                    .env("PGPASSWORD", &s.password);
                command
            }
            (Backend::Mysql, Some(s)) => {
                let mut command = Command::new("mysqldump");
                command
                    .args([
                        "--protocol=TCP",
                        "--skip-dump-date",
                        "--skip-comments",
                        "--order-by-primary",
                    ])
                    .args(["-h", &s.host, "-P", &s.port, "-u", &s.user, &self.name])
                    .env("MYSQL_PWD", &s.password);
                command
            }
            _ => {
                let mut command = Command::new("sqlite3");
                command.arg(self.sqlite_path()).arg(".dump");
                command
            }
        };
        let dump =
            run(command.stdin(Stdio::null())).unwrap_or_else(|err| panic!("dumping the database: {err}"));
        // pg_dump brackets its output with a random `\restrict` key.
        dump.lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The files in the SQLite file's directory.
    fn dir_listing(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir.0)
            .expect("list the directory")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    /// The SQLite backups beside the database.
    fn backups(&self) -> Vec<PathBuf> {
        self.dir_listing()
            .into_iter()
            .filter(|n| n.starts_with("gpt-load.db.gpt-load-backup-"))
            .map(|n| self.dir.0.join(n))
            .collect()
    }

    /// The gateway's `DATABASE_DSN`, in the forms gpt-load documents.
    fn dsn(&self) -> String {
        match (self.backend, self.server.as_ref()) {
            (Backend::Postgres, Some(s)) => {
                let credentials = if s.password.is_empty() {
                    s.user.clone()
                } else {
                    format!("{}:{}", s.user, s.password)
                };
                format!(
                    "postgres://{credentials}@{}:{}/{}?sslmode=disable",
                    s.host, s.port, self.name
                )
            }
            (Backend::Mysql, Some(s)) => format!(
                "{}:{}@tcp({}:{})/{}?charset=utf8mb4&parseTime=True&loc=Local",
                s.user, s.password, s.host, s.port, self.name
            ),
            _ => self.sqlite_path().display().to_string(),
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let Some(server) = &self.server else { return };
        if self.name == server.database {
            return;
        }
        let admin = Database {
            backend: self.backend,
            dir: TempDir::new("drop"),
            server: Some(server.clone()),
            name: server.database.clone(),
        };
        let sql = match self.backend {
            Backend::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            _ => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        if let Err(err) = admin.try_query(&sql) {
            eprintln!("dropping the test database {}: {err}", self.name);
        }
    }
}

fn sqlite3(path: &Path, args: &[&str]) -> Result<String, String> {
    let out = run(Command::new("sqlite3")
        .arg("-bail")
        .arg(path)
        .args(args)
        .stdin(Stdio::null()))?;
    Ok(out.trim_end().to_owned())
}

// ---------------------------------------------------------------------------------------------
// The gateway
// ---------------------------------------------------------------------------------------------

/// How the gateway is told to adopt a server database.
#[derive(Clone, Copy, Debug)]
enum Adopt {
    No,
    /// `--adopt`.
    Flag,
    /// `ADOPT_GPT_LOAD=true`.
    Env,
}

struct Start<'a> {
    encryption_key: Option<&'a str>,
    adopt: Adopt,
}

impl<'a> Start<'a> {
    fn new(encryption_key: Option<&'a str>, adopt: Adopt) -> Self {
        Self {
            encryption_key,
            adopt,
        }
    }
}

/// The gateway binary on a fixture database, killed on drop.
struct Gateway {
    process: GatewayProcess,
    /// Whether its wall clock is set to [`FAKE_NOW_UNIX`].
    fake_clock: bool,
}

impl Gateway {
    /// The gateway on `db` as `start` says; with `fake`, its wall clock set to [`FAKE_NOW_UNIX`]
    /// where libfaketime is installed (the second value says whether it is).
    fn command(db: &Database, start: &Start<'_>, fake: bool) -> (GatewayCommand, bool) {
        let mut command = GatewayCommand::new("adopt", ADMIN_KEY);
        command
            .env("DATABASE_DSN", db.dsn())
            .env("TZ", ZONE)
            .patience(PATIENCE);
        if let Some(key) = start.encryption_key {
            command.env("ENCRYPTION_KEY", key);
        }
        match start.adopt {
            Adopt::No => {}
            Adopt::Flag => {
                command.arg("--adopt");
            }
            Adopt::Env => {
                command.env("ADOPT_GPT_LOAD", "true");
            }
        }
        let fake_clock = fake
            && fake_clock().is_some_and(|library| {
                let offset = FAKE_NOW_UNIX - unix_now();
                command
                    .env("LD_PRELOAD", library)
                    .env("FAKETIME", format!("{offset:+}"))
                    .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
                true
            });
        (command, fake_clock)
    }

    /// Starts the gateway and waits until `/health` answers.
    fn start(db: &Database, start: &Start<'_>) -> Gateway {
        assert!(
            Path::new("/usr/share/zoneinfo").join(ZONE).exists(),
            "the zone {ZONE} is not installed (Debian package tzdata)"
        );
        let (command, fake_clock) = Self::command(db, start, true);
        Gateway {
            process: command.start(),
            fake_clock,
        }
    }

    /// Runs the gateway and expects it to exit with a failure; returns what it printed.
    fn fail(db: &Database, start: &Start<'_>) -> String {
        let (command, _) = Self::command(db, start, false);
        let mut process = command.spawn();
        let status = process.wait_exit();
        let output = process.log();
        assert!(!status.success(), "the gateway exited with {status}:\n{output}");
        output
    }

    fn base(&self) -> &str {
        self.process.base()
    }

    fn log(&self) -> String {
        self.process.log()
    }

    /// `GET /api{path}` with the admin key; the `data` of the envelope.
    async fn admin(&self, path: &str) -> Value {
        self.admin_call(Method::GET, path, None).await
    }

    /// `POST /api{path}` with the admin key; the `data` of the envelope.
    async fn admin_post(&self, path: &str, body: &Value) -> Value {
        self.admin_call(Method::POST, path, Some(body)).await
    }

    async fn admin_call(&self, method: Method, path: &str, body: Option<&Value>) -> Value {
        let auth = format!("Bearer {ADMIN_KEY}");
        let url = format!("{}/api{path}", self.base());
        let what = format!("{method} /api{path}");
        let (status, answer) = send(method, &url, &[("authorization", &auth)], body).await;
        let parsed: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        assert!(
            status == StatusCode::OK && parsed["code"] == 0,
            "{what} answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
        parsed["data"].clone()
    }
}

/// libfaketime, when installed; its absence fails the test under `CI=true`.
fn fake_clock() -> Option<&'static Path> {
    static LIBRARY: OnceLock<Option<PathBuf>> = OnceLock::new();
    LIBRARY
        .get_or_init(|| {
            let found = std::fs::read_dir("/usr/lib")
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .map(|e| e.path().join("faketime/libfaketime.so.1"))
                .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
                .find(|p| p.exists());
            if found.is_none() {
                let message = "libfaketime is not installed (Debian package faketime): the hourly \
                               stats of 2026-06-15 cannot be shown by the 24-hour chart";
                assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "{message}");
                eprintln!("SKIP the chart checks: {message}");
            }
            found
        })
        .as_deref()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!(
            "gpt-load-adopt-{label}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request and reads the whole answer.
async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (StatusCode, Bytes) {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = request.body(Full::from(body)).expect("a valid request");
    let exchange = async {
        let response = client().request(request).await.expect("the gateway answers");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("the whole body").to_bytes();
        (parts.status, bytes)
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer from {url}"))
}
