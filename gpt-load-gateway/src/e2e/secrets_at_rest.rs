//! Secrets at rest (docs/SECURITY.md): with `ENCRYPTION_KEY` set, the database holds neither the
//! admin key nor any proxy key in plain text, while the proxy accepts the keys and the admin API
//! shows them; `migrate-keys` keeps them working and refuses a wrong `--from`.

use std::time::Duration;

use gpt_load_e2e::MockUpstream;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use super::harness::{ADMIN_KEY, Harness, PROXY_KEY, group};
use crate::{
    commands::migrate_keys::{self, MigrateKeysError},
    crypto::looks_encrypted,
    db::{Backend, Db, test_support::TestDb},
    repo::{self, groups},
};

const ENCRYPTION: &str = "secrets at rest: the operator's encryption key";
const ROTATED: &str = "secrets at rest: the rotated encryption key";
const UPSTREAM_KEY: &str = "sk-upstream-at-rest-0123456789";
const BOOTSTRAP_GROUP_KEY: &str = "sk-bootstrap-group-key-Hq3Zr8";
const API_GROUP_KEY: &str = "sk-api-group-key-Wm5Pt2";
const SECOND_GLOBAL_KEY: &str = "sk-second-global-key-Jd6Ys1";

/// Every plaintext that must never reach the database.
const SECRETS: [&str; 5] = [
    ADMIN_KEY,
    PROXY_KEY,
    BOOTSTRAP_GROUP_KEY,
    API_GROUP_KEY,
    SECOND_GLOBAL_KEY,
];

/// A gateway with encryption on, a bootstrap group with its own proxy key, a group created
/// through the API with another one, and two global proxy keys set through the settings API.
async fn populated(test_db: TestDb) -> Harness {
    let backend = test_db.db.backend();
    let mock = MockUpstream::start().await.unwrap();
    let mut bootstrap = group("boot", &mock.url(), &[UPSTREAM_KEY], json!({}));
    bootstrap["proxy_keys"] = json!(BOOTSTRAP_GROUP_KEY);
    let up = mock.url();
    let h = Harness::start(test_db, mock, vec![bootstrap], &[("ENCRYPTION_KEY", ENCRYPTION)]).await;
    let (status, body) = h
        .call_api(
            "POST",
            "/groups",
            Some(json!({
                "name": "made",
                "channel_type": "openai",
                "test_model": "gpt-4o-mini",
                "upstreams": [{"url": up, "weight": 1}],
                "proxy_keys": API_GROUP_KEY,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{backend}: {body}");
    let made = h.group_id("made").await;
    let (status, body) = h
        .call_api(
            "POST",
            "/keys/add-multiple",
            Some(json!({"group_id": made, "keys_text": UPSTREAM_KEY})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{backend}: {body}");
    let global = format!("{PROXY_KEY},{SECOND_GLOBAL_KEY}");
    let (status, body) = h
        .call_api("PUT", "/settings", Some(json!({ "proxy_keys": global })))
        .await;
    assert_eq!(status, StatusCode::OK, "{backend}: {body}");
    // The settings reach the catalog in the background.
    Harness::eventually(Duration::from_secs(10), || async {
        chat_with(&h, "made", SECOND_GLOBAL_KEY).await == StatusCode::OK
    })
    .await;
    h
}

/// A chat completion through `group` presenting `key`; the status.
async fn chat_with(h: &Harness, group: &str, key: &str) -> StatusCode {
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let req = Request::post(format!("{}/proxy/{group}/v1/chat/completions", h.base))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::from(body.to_string()))
        .unwrap();
    h.send(req).await.0
}

/// The proxy accepts every proxy key where it belongs, and refuses the admin key.
async fn assert_keys_accepted(h: &Harness, context: &str) {
    for (group, key) in [
        ("boot", PROXY_KEY),
        ("made", SECOND_GLOBAL_KEY),
        ("boot", BOOTSTRAP_GROUP_KEY),
        ("made", API_GROUP_KEY),
    ] {
        let status = chat_with(h, group, key).await;
        assert_eq!(status, StatusCode::OK, "{context}: {key} through {group}");
    }
    assert_eq!(
        chat_with(h, "made", BOOTSTRAP_GROUP_KEY).await,
        StatusCode::UNAUTHORIZED,
        "{context}: a group's key is no other group's"
    );
    assert_eq!(
        chat_with(h, "boot", ADMIN_KEY).await,
        StatusCode::UNAUTHORIZED,
        "{context}: the admin key is no proxy key"
    );
}

/// The admin API shows the proxy keys decrypted.
async fn assert_keys_shown(h: &Harness, context: &str) {
    let (_, settings) = h.call_api("GET", "/settings", None).await;
    let shown: Vec<&Value> = settings["data"]
        .as_array()
        .expect("categories")
        .iter()
        .flat_map(|c| c["settings"].as_array().expect("settings"))
        .filter(|s| s["key"] == "proxy_keys")
        .map(|s| &s["value"])
        .collect();
    assert_eq!(
        shown,
        [&json!(format!("{PROXY_KEY},{SECOND_GLOBAL_KEY}"))],
        "{context}: {settings}"
    );
    let (_, groups) = h.call_api("GET", "/groups", None).await;
    let by_name = |name: &str| {
        groups["data"]
            .as_array()
            .expect("groups")
            .iter()
            .find(|g| g["name"] == name)
            .map(|g| g["proxy_keys"].clone())
    };
    assert_eq!(by_name("boot"), Some(json!(BOOTSTRAP_GROUP_KEY)), "{context}");
    assert_eq!(by_name("made"), Some(json!(API_GROUP_KEY)), "{context}");
}

/// Every stored proxy key list and setting value, read back raw.
async fn stored_texts(db: &Db) -> (Vec<String>, Vec<String>) {
    let settings = repo::settings::list(db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| format!("{}={}", row.setting_key, row.setting_value))
        .collect();
    let groups = groups::list(db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.proxy_keys)
        .collect();
    (settings, groups)
}

/// No plaintext secret in any setting or group row; every non-empty proxy key list encrypted.
async fn assert_nothing_plain(db: &Db, context: &str) {
    let (settings, group_lists) = stored_texts(db).await;
    for text in settings.iter().chain(&group_lists) {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{context}: a stored value holds {secret}");
        }
    }
    let global = settings
        .iter()
        .find_map(|s| s.strip_prefix("proxy_keys="))
        .expect("the proxy_keys row");
    assert!(
        looks_encrypted(global),
        "{context}: the global proxy keys are encrypted"
    );
    assert_eq!(group_lists.len(), 2, "{context}");
    for list in &group_lists {
        assert!(
            looks_encrypted(list),
            "{context}: a group's proxy keys are encrypted"
        );
    }
}

/// The bytes of the SQLite database and of its journal files hold no plaintext secret.
fn assert_sqlite_files_clean(path: &str) {
    let mut scanned = 0;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let file = format!("{path}{suffix}");
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        scanned += 1;
        for secret in SECRETS {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "{file} holds {secret}");
        }
    }
    assert!(scanned >= 1, "the database file exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_admin_or_proxy_key_is_stored_in_plain_text() {
    for test_db in TestDb::all("no_admin_or_proxy_key_is_stored_in_plain_text").await {
        let backend = test_db.db.backend();
        let mut h = populated(test_db).await;
        let context = format!("{backend}, after start");
        assert_keys_accepted(&h, &context).await;
        assert_keys_shown(&h, &context).await;
        assert_nothing_plain(&h.test_db.db, &context).await;

        // A key that would read back as an encrypted value is refused on every write path.
        let made = h.group_id("made").await;
        for (method, path, body) in [
            (
                "PUT",
                "/settings".to_owned(),
                json!({"proxy_keys": "sk-fine,v1:looks-sealed"}),
            ),
            (
                "PUT",
                format!("/groups/{made}"),
                json!({"proxy_keys": "v1:looks-sealed"}),
            ),
        ] {
            let (status, answer) = h.call_api(method, &path, Some(body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{backend} {path}: {answer}");
            assert_eq!(answer["code"], "VALIDATION_FAILED", "{backend} {path}");
            assert!(
                answer["message"].as_str().unwrap().starts_with("proxy_keys"),
                "{backend} {path}: {answer}"
            );
        }

        h.restart().await;
        let context = format!("{backend}, after a restart");
        assert_keys_accepted(&h, &context).await;
        assert_keys_shown(&h, &context).await;
        h.stop().await;
        assert_nothing_plain(&h.test_db.db, &context).await;
        if backend == Backend::Sqlite {
            assert_sqlite_files_clean(&h.test_db.dsn);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_keys_rotates_proxy_keys_and_refuses_a_wrong_source() {
    let mut h = populated(TestDb::sqlite().await).await;
    h.stop().await;
    let db = h.test_db.db.clone();
    let before = stored_texts(&db).await;

    let refused = migrate_keys::run(&db, Some("not the encryption key"), Some(ROTATED))
        .await
        .unwrap_err();
    assert!(matches!(refused, MigrateKeysError::Refused(_)), "{refused}");
    assert_eq!(
        stored_texts(&db).await,
        before,
        "a refused migration changes nothing"
    );
    let refused = migrate_keys::run(&db, None, Some(ROTATED)).await.unwrap_err();
    assert!(matches!(refused, MigrateKeysError::Refused(_)), "{refused}");
    assert_eq!(stored_texts(&db).await, before, "nor does a missing --from");

    let summary = migrate_keys::run(&db, Some(ENCRYPTION), Some(ROTATED))
        .await
        .unwrap();
    assert_eq!(
        (summary.api_keys, summary.proxy_key_lists),
        (2, 3),
        "two upstream keys, the global list and two group lists"
    );
    assert_nothing_plain(&db, "rotated").await;
    assert_ne!(stored_texts(&db).await, before, "re-encrypted under the new key");
    h.set_env("ENCRYPTION_KEY", ROTATED);
    h.restart().await;
    assert_keys_accepted(&h, "under the rotated key").await;
    assert_keys_shown(&h, "under the rotated key").await;
    h.stop().await;

    migrate_keys::run(&db, Some(ROTATED), Some(ENCRYPTION))
        .await
        .unwrap();
    assert_nothing_plain(&db, "rotated back").await;
    h.set_env("ENCRYPTION_KEY", ENCRYPTION);
    h.restart().await;
    assert_keys_accepted(&h, "rotated back").await;
    assert_keys_shown(&h, "rotated back").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_proxy_keys_from_before_encryption_are_sealed_on_start() {
    let mut h = populated(TestDb::sqlite().await).await;
    h.stop().await;
    let db = h.test_db.db.clone();
    // As a database written before proxy keys were encrypted holds them.
    let global = format!("{PROXY_KEY},{SECOND_GLOBAL_KEY}");
    repo::settings::update(&db, &[("proxy_keys", global.as_str())])
        .await
        .unwrap();
    for (name, list) in [("boot", BOOTSTRAP_GROUP_KEY), ("made", API_GROUP_KEY)] {
        let row = groups::find_by_name(&db, name).await.unwrap().unwrap();
        set_group_proxy_keys(&db, row.id, list).await;
    }

    h.restart().await;
    assert_nothing_plain(&db, "after the first start with encryption").await;
    assert_keys_accepted(&h, "legacy lists sealed").await;
    assert_keys_shown(&h, "legacy lists sealed").await;
    h.stop().await;
}

/// Writes a group's `proxy_keys` column as it is.
async fn set_group_proxy_keys(db: &Db, id: i64, stored: &str) {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;

    use crate::db::{schema::groups, with_conn};
    let result: Result<usize, crate::db::DbError> = async {
        with_conn!(db, |conn| {
            Ok(diesel::update(groups::table.find(id))
                .set(groups::proxy_keys.eq(stored))
                .execute(conn)
                .await?)
        })
    }
    .await;
    assert_eq!(result.unwrap(), 1);
}
