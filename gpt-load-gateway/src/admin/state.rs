//! What every admin handler can reach.

use std::sync::Arc;

use gpt_load_tower::{keys::MemoryKeyPool, secret::ApiKey};

use super::{
    auth::Throttle,
    error::{AdminError, AdminResult},
    tasks::TaskManager,
};
use crate::{
    app, catalog::Catalog, config::ip_net::TrustedProxies, crypto::KeyCipher, db::Db, settings::SettingsStore,
};

/// Shared state of the admin API. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) db: Db,
    pub(crate) settings: Arc<SettingsStore>,
    pub(crate) catalog: Catalog,
    pub(crate) pool: MemoryKeyPool,
    pub(crate) cipher: KeyCipher,
    pub(crate) auth_key: ApiKey,
    pub(crate) trusted_proxies: Arc<TrustedProxies>,
    pub(crate) throttle: Arc<Throttle>,
    pub(crate) tasks: Arc<TaskManager>,
}

impl AdminState {
    /// Makes group changes visible to the proxy at once: catalog and key pool from the database.
    pub(crate) async fn reload_groups(&self) -> AdminResult<()> {
        app::reload_groups(&self.db, &self.catalog, &self.pool, &self.cipher, &self.settings)
            .await
            .map_err(AdminError::Internal)
    }
}
