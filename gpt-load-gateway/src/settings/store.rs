//! Loading and seeding the settings rows, and [`SettingsStore`], the live settings that
//! updates swap in without a restart.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::{Map, Value};
use tokio::sync::{Mutex, watch};

use super::{FieldError, SystemSettings, meta::SETTINGS, system::validate_update};
use crate::{
    crypto::{KeyCipher, proxy_keys},
    db::{Db, DbError},
    models::SettingRow,
    repo,
};

/// Why a settings update failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SettingsError {
    /// The update was rejected; nothing was written. One entry per bad field (answer 400).
    #[error("invalid settings: {}", FieldError::join(.0))]
    Invalid(Vec<FieldError>),
    /// The database failed; nothing was written.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The system settings: the defaults overridden by the stored rows, `proxy_keys` decrypted with
/// `cipher`. A stored value that does not parse (or does not decrypt) is logged (naming the key)
/// and the default kept: for `proxy_keys`, no global proxy key.
pub(crate) async fn load(db: &Db, cipher: &KeyCipher) -> Result<SystemSettings, DbError> {
    let mut rows = repo::settings::list(db).await?;
    if let Some(row) = rows.iter_mut().find(|row| row.setting_key == PROXY_KEYS) {
        open_proxy_keys(row, cipher);
    }
    let (settings, problems) = SystemSettings::from_rows(&rows);
    for problem in problems {
        tracing::warn!(setting = %problem.field, "system setting: {}", problem.message);
    }
    Ok(settings)
}

const PROXY_KEYS: &str = "proxy_keys";

/// Replaces the stored `proxy_keys` value of `row` with the list it holds; a value that does
/// not decrypt is logged (without its content) and dropped.
fn open_proxy_keys(row: &mut SettingRow, cipher: &KeyCipher) {
    match proxy_keys::open(cipher, &row.setting_value) {
        Ok(list) => row.setting_value = list,
        Err(err) => {
            tracing::warn!(
                setting = PROXY_KEYS,
                "system setting: {err}; no global proxy key is accepted"
            );
            row.setting_value.clear();
        }
    }
}

/// Inserts a row for every setting that has none; returns how many were inserted. Existing
/// rows are never changed. First values: the defaults, except `app_url` =
/// `http://{HOST}:{PORT}` (`localhost` for a wildcard or empty host) and `proxy_keys` =
/// `first_proxy_key`, stored through `cipher` (gpt-load seeds it with `AUTH_KEY`, which would
/// put the admin key into the database). The row's description is the English description.
pub(crate) async fn seed(
    db: &Db,
    cipher: &KeyCipher,
    first_proxy_key: &str,
    host: &str,
    port: u16,
) -> Result<usize, DbError> {
    let app_url = first_app_url(host, port);
    let first_proxy_keys = proxy_keys::seal(cipher, first_proxy_key);
    let rows: Vec<(&str, &str, &str)> = SETTINGS
        .iter()
        .map(|meta| {
            let value = match meta.key {
                "app_url" => app_url.as_str(),
                PROXY_KEYS => first_proxy_keys.as_str(),
                _ => meta.default,
            };
            (meta.key, value, meta.description_en)
        })
        .collect();
    repo::settings::ensure_defaults(db, &rows).await
}

/// `http://{host}:{port}`, with `localhost` for an empty or wildcard host and brackets around
/// an IPv6 address.
pub(crate) fn first_app_url(host: &str, port: u16) -> String {
    let host = host.trim();
    let host = match host {
        "" | "0.0.0.0" | "::" | "[::]" => "localhost".to_owned(),
        v6 if v6.contains(':') && !v6.starts_with('[') => format!("[{v6}]"),
        host => host.to_owned(),
    };
    format!("http://{host}:{port}")
}

/// The live system settings. Reads are lock-free snapshots ([`SettingsStore::current`]);
/// [`SettingsStore::update`] validates, writes every changed row in one transaction and swaps
/// the new snapshot in, so the next request sees it. Subscribers
/// ([`SettingsStore::subscribe`]) hear of every change, to rebuild what they derived (the
/// per-group effective configs).
#[derive(Debug)]
pub(crate) struct SettingsStore {
    current: ArcSwap<SystemSettings>,
    changes: watch::Sender<Arc<SystemSettings>>,
    /// Serialises writers, so the snapshot always matches the last write.
    write: Mutex<()>,
    /// Encrypts and decrypts the stored `proxy_keys`.
    cipher: KeyCipher,
}

impl SettingsStore {
    /// A store holding `settings`, writing `proxy_keys` through `cipher`.
    pub(crate) fn new(settings: SystemSettings, cipher: KeyCipher) -> Self {
        let settings = Arc::new(settings);
        Self {
            current: ArcSwap::new(Arc::clone(&settings)),
            changes: watch::Sender::new(settings),
            write: Mutex::new(()),
            cipher,
        }
    }

    /// A store holding the settings [loaded](load) from `db`.
    pub(crate) async fn open(db: &Db, cipher: KeyCipher) -> Result<Self, DbError> {
        Ok(Self::new(load(db, &cipher).await?, cipher))
    }

    /// The settings now.
    pub(crate) fn current(&self) -> Arc<SystemSettings> {
        self.current.load_full()
    }

    /// A receiver that sees the settings after every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<SystemSettings>> {
        self.changes.subscribe()
    }

    /// Reads the settings from `db` again (after another instance changed them) and swaps
    /// them in; subscribers hear of it only when something changed.
    pub(crate) async fn reload(&self, db: &Db) -> Result<Arc<SystemSettings>, DbError> {
        let _write = self.write.lock().await;
        let settings = load(db, &self.cipher).await?;
        Ok(self.publish(settings))
    }

    /// Applies a partial update (`PUT /api/settings`): checks every field (all problems are
    /// reported and nothing is written), stores the changed rows in one transaction, then swaps
    /// the new settings in and tells the subscribers. `{}` changes nothing.
    pub(crate) async fn update(&self, db: &Db, update: &Map<String, Value>) -> Result<(), SettingsError> {
        let patch = validate_update(update).map_err(SettingsError::Invalid)?;
        if patch.is_empty() {
            return Ok(());
        }
        let mut rows = patch.storage_rows();
        for (key, value) in &mut rows {
            if *key == PROXY_KEYS {
                *value = proxy_keys::seal(&self.cipher, value);
            }
        }
        let rows: Vec<(&str, &str)> = rows.iter().map(|(key, value)| (*key, value.as_str())).collect();
        let _write = self.write.lock().await;
        repo::settings::update(db, &rows).await?;
        let mut settings = SystemSettings::clone(&self.current());
        patch.apply(&mut settings);
        self.publish(settings);
        tracing::info!(settings = ?patch.keys().collect::<Vec<_>>(), "system settings updated");
        Ok(())
    }

    /// Swaps `settings` in and notifies the subscribers, unless nothing changed.
    fn publish(&self, settings: SystemSettings) -> Arc<SystemSettings> {
        let current = self.current();
        if *current == settings {
            return current;
        }
        let settings = Arc::new(settings);
        self.current.store(Arc::clone(&settings));
        self.changes.send_replace(Arc::clone(&settings));
        settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_app_url_uses_localhost_for_wildcards() {
        assert_eq!(first_app_url("", 3001), "http://localhost:3001");
        assert_eq!(first_app_url("0.0.0.0", 3001), "http://localhost:3001");
        assert_eq!(first_app_url("::", 8080), "http://localhost:8080");
        assert_eq!(first_app_url("gw.example.com", 80), "http://gw.example.com:80");
        assert_eq!(first_app_url("127.0.0.1", 3001), "http://127.0.0.1:3001");
        assert_eq!(first_app_url("::1", 3001), "http://[::1]:3001");
    }

    #[test]
    fn invalid_updates_list_every_field() {
        let err = SettingsError::Invalid(vec![
            FieldError::new("max_retries", "must be at least 0"),
            FieldError::new("x", "unknown setting"),
        ]);
        assert_eq!(
            err.to_string(),
            "invalid settings: max_retries: must be at least 0; x: unknown setting"
        );
    }
}
