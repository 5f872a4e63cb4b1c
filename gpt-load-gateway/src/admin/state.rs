//! What every admin handler can reach.

use std::sync::Arc;

use gpt_load_tower::secret::ApiKey;

use super::{task_manager::TaskManager, throttle::Throttle};
use crate::{
    config::ip_net::TrustedProxies, crypto::KeyCipher, db::Db, registry::Registry, settings::SettingsStore,
};

/// Shared state of the admin API. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AdminState {
    /// Every change to groups, keys and settings goes through it.
    pub(crate) registry: Registry,
    /// For reads (logs, statistics, listings).
    pub(crate) db: Db,
    pub(crate) settings: Arc<SettingsStore>,
    pub(crate) cipher: KeyCipher,
    pub(crate) auth_key: ApiKey,
    pub(crate) trusted_proxies: Arc<TrustedProxies>,
    pub(crate) throttle: Arc<Throttle>,
    pub(crate) tasks: Arc<TaskManager>,
}

impl AdminState {
    /// The admin API's state over `registry`.
    pub(crate) fn new(registry: Registry, auth_key: ApiKey, trusted_proxies: Arc<TrustedProxies>) -> Self {
        Self {
            db: registry.db().clone(),
            settings: Arc::clone(registry.settings()),
            cipher: registry.cipher().clone(),
            registry,
            auth_key,
            trusted_proxies,
            throttle: Arc::default(),
            tasks: Arc::default(),
        }
    }
}
