//! The settings against every reachable backend.

use std::{
    io,
    sync::{Arc, Mutex},
};

use serde_json::{Map, Value, json};

use super::{SettingsError, SettingsStore, SystemSettings, meta::SETTINGS, seed, store::load};
use crate::{crypto::KeyCipher, db::test_support::TestDb, repo};

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("not an object"),
    }
}

async fn stored(db: &crate::db::Db) -> Vec<(String, String)> {
    repo::settings::list(db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.setting_key, row.setting_value))
        .collect()
}

async fn stored_value(db: &crate::db::Db, key: &str) -> Option<String> {
    stored(db)
        .await
        .into_iter()
        .find_map(|(k, v)| (k == key).then_some(v))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_inserts_every_setting_once_and_keeps_existing_values() {
    for t in TestDb::all("seed_inserts_every_setting_once_and_keeps_existing_values").await {
        let db = &t.db;
        let backend = db.backend();
        assert_eq!(
            seed(db, &KeyCipher::disabled(), "sk-admin", "0.0.0.0", 3001)
                .await
                .unwrap(),
            SETTINGS.len(),
            "{backend}"
        );
        let rows = repo::settings::list(db).await.unwrap();
        assert_eq!(rows.len(), SETTINGS.len(), "{backend}");
        for meta in &SETTINGS {
            let row = rows.iter().find(|r| r.setting_key == meta.key).unwrap();
            assert_eq!(row.description, meta.description_en, "{backend}: {}", meta.key);
            let expected = match meta.key {
                "app_url" => "http://localhost:3001",
                "proxy_keys" => "sk-admin",
                _ => meta.default,
            };
            assert_eq!(row.setting_value, expected, "{backend}: {}", meta.key);
        }

        repo::settings::update(db, &[("max_retries", "9"), ("app_url", "https://gw.example")])
            .await
            .unwrap();
        assert_eq!(
            seed(db, &KeyCipher::disabled(), "sk-other", "10.0.0.1", 8080)
                .await
                .unwrap(),
            0,
            "{backend}: nothing missing"
        );
        assert_eq!(stored_value(db, "max_retries").await.as_deref(), Some("9"));
        assert_eq!(stored_value(db, "proxy_keys").await.as_deref(), Some("sk-admin"));
        assert_eq!(
            stored_value(db, "app_url").await.as_deref(),
            Some("https://gw.example")
        );

        let settings = load(db, &KeyCipher::disabled()).await.unwrap();
        assert_eq!(settings.max_retries, 9, "{backend}");
        assert_eq!(settings.proxy_keys, ["sk-admin"]);
        assert_eq!(settings.app_url, "https://gw.example");
        assert_eq!(
            settings.request_timeout,
            SystemSettings::default().request_timeout
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_row_is_seeded_without_touching_the_others() {
    for t in TestDb::all("a_missing_row_is_seeded_without_touching_the_others").await {
        let db = &t.db;
        // A database written by gpt-load: its rows, not ours.
        let legacy: Vec<(&str, &str, &str)> = SETTINGS
            .iter()
            .filter(|m| m.key != "stream_idle_timeout")
            .map(|m| {
                (
                    m.key,
                    if m.key == "max_idle_conns" {
                        "1e+06"
                    } else {
                        m.default
                    },
                    "",
                )
            })
            .collect();
        repo::settings::ensure_defaults(db, &legacy).await.unwrap();
        assert_eq!(
            seed(db, &KeyCipher::disabled(), "sk", "", 3001).await.unwrap(),
            1,
            "{}",
            db.backend()
        );
        assert_eq!(
            stored_value(db, "stream_idle_timeout").await.as_deref(),
            Some("300")
        );
        assert_eq!(stored_value(db, "max_idle_conns").await.as_deref(), Some("1e+06"));
        assert_eq!(
            load(db, &KeyCipher::disabled()).await.unwrap().max_idle_conns,
            1_000_000
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_persists_applies_at_once_and_notifies() {
    for t in TestDb::all("an_update_persists_applies_at_once_and_notifies").await {
        let db = &t.db;
        let backend = db.backend();
        seed(db, &KeyCipher::disabled(), "sk-admin", "localhost", 3001)
            .await
            .unwrap();
        let store = SettingsStore::open(db, KeyCipher::disabled()).await.unwrap();
        let mut changes = store.subscribe();
        let before = store.current();

        store
            .update(
                db,
                &object(json!({
                    "max_idle_conns": 1_000_000,
                    "request_timeout": 30.0,
                    "proxy_keys": " sk-a, ,sk-b ,",
                    "enable_request_body_logging": true,
                    "failover_status_codes": "429,500-599",
                    "stream_idle_timeout": 42,
                })),
            )
            .await
            .unwrap();

        let now = store.current();
        assert_eq!(now.max_idle_conns, 1_000_000, "{backend}");
        assert_eq!(now.request_timeout, 30);
        assert_eq!(now.proxy_keys, ["sk-a", "sk-b"]);
        assert!(now.enable_request_body_logging);
        assert!(now.failover_status_codes.matcher().matches(429));
        assert!(!now.failover_status_codes.matcher().matches(401));
        assert_eq!(now.stream_idle_timeout, 42);
        assert_eq!(before.max_idle_conns, 100, "earlier snapshots are unchanged");

        assert!(changes.has_changed().unwrap(), "{backend}: subscribers are told");
        assert_eq!(*changes.borrow_and_update().clone(), *now);

        assert_eq!(
            stored_value(db, "max_idle_conns").await.as_deref(),
            Some("1000000")
        );
        assert_eq!(stored_value(db, "request_timeout").await.as_deref(), Some("30"));
        assert_eq!(stored_value(db, "proxy_keys").await.as_deref(), Some("sk-a,sk-b"));
        assert_eq!(
            stored_value(db, "enable_request_body_logging").await.as_deref(),
            Some("true")
        );
        assert_eq!(
            load(db, &KeyCipher::disabled()).await.unwrap(),
            *now,
            "{backend}: the database agrees"
        );

        // Another instance picks the change up on reload.
        let other = SettingsStore::new(SystemSettings::default(), KeyCipher::disabled());
        let mut other_changes = other.subscribe();
        other.reload(db).await.unwrap();
        assert_eq!(*other.current(), *now);
        assert!(other_changes.has_changed().unwrap());
        other_changes.mark_unchanged();
        other.reload(db).await.unwrap();
        assert!(
            !other_changes.has_changed().unwrap(),
            "an unchanged reload is silent"
        );

        // `{}` is a no-op.
        store.update(db, &Map::new()).await.unwrap();
        assert!(!changes.has_changed().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_update_writes_nothing_and_names_every_bad_field() {
    for t in TestDb::all("an_invalid_update_writes_nothing_and_names_every_bad_field").await {
        let db = &t.db;
        let backend = db.backend();
        seed(db, &KeyCipher::disabled(), "sk-admin", "localhost", 3001)
            .await
            .unwrap();
        let store = SettingsStore::open(db, KeyCipher::disabled()).await.unwrap();
        let mut changes = store.subscribe();
        changes.mark_unchanged();
        let rows_before = stored(db).await;

        let err = store
            .update(
                db,
                &object(json!({
                    "max_retries": 5,
                    "request_timeout": 0,
                    "enable_request_body_logging": "yes",
                    "failover_status_codes": "500-400",
                    "no_such_setting": true,
                    "proxy_url": "ftp://proxy:21",
                })),
            )
            .await
            .unwrap_err();
        let SettingsError::Invalid(errors) = &err else {
            panic!("{backend}: {err}");
        };
        let mut fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "enable_request_body_logging",
                "failover_status_codes",
                "no_such_setting",
                "proxy_url",
                "request_timeout"
            ],
            "{backend}"
        );
        assert_eq!(
            stored(db).await,
            rows_before,
            "{backend}: nothing written, not even max_retries"
        );
        assert_eq!(store.current().max_retries, 3);
        assert!(!changes.has_changed().unwrap());
    }
}

/// Collects what the `fmt` subscriber writes.
#[derive(Clone, Debug, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_stored_value_falls_back_to_the_default_with_a_warning() {
    for t in TestDb::all("a_corrupt_stored_value_falls_back_to_the_default_with_a_warning").await {
        let db = &t.db;
        let backend = db.backend();
        seed(db, &KeyCipher::disabled(), "sk-admin", "localhost", 3001)
            .await
            .unwrap();
        repo::settings::update(
            db,
            &[
                ("max_retries", "many"),
                ("failover_status_codes", "999-100"),
                ("blacklist_threshold", "5"),
            ],
        )
        .await
        .unwrap();

        let logs = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .finish();
        // The test body runs on this thread, so a thread-local subscriber sees `load`.
        let settings = {
            let _guard = tracing::subscriber::set_default(subscriber);
            load(db, &KeyCipher::disabled()).await.unwrap()
        };
        let defaults = SystemSettings::default();
        assert_eq!(settings.max_retries, defaults.max_retries, "{backend}");
        assert_eq!(settings.failover_status_codes, defaults.failover_status_codes);
        assert_eq!(settings.blacklist_threshold, 5, "valid rows still apply");

        let text = logs.text();
        let warnings: Vec<_> = text.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(warnings.len(), 2, "{backend}: {text}");
        assert!(
            warnings
                .iter()
                .any(|l| l.contains("setting=max_retries") && l.contains("`many`")),
            "{text}"
        );
        assert!(
            warnings
                .iter()
                .any(|l| l.contains("setting=failover_status_codes")),
            "{text}"
        );
        assert_eq!(
            stored_value(db, "max_retries").await.as_deref(),
            Some("many"),
            "loading never rewrites rows"
        );
    }
}
