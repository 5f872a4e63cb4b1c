//! What every admin handler can reach.

use std::sync::Arc;

use gpt_load_tower::secret::ApiKey;

use super::{task_manager::TaskManager, throttle::Throttle};
use crate::{config::ip_net::TrustedProxies, registry::Registry};

/// Shared state of the admin API. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AdminState {
    /// Every change to groups, keys and settings goes through it; reads use its database,
    /// settings and cipher.
    pub(crate) registry: Registry,
    pub(crate) auth_key: ApiKey,
    pub(crate) trusted_proxies: Arc<TrustedProxies>,
    pub(crate) throttle: Arc<Throttle>,
    pub(crate) tasks: Arc<TaskManager>,
}

impl AdminState {
    /// The admin API's state over `registry`.
    pub(crate) fn new(registry: Registry, auth_key: ApiKey, trusted_proxies: Arc<TrustedProxies>) -> Self {
        Self {
            registry,
            auth_key,
            trusted_proxies,
            throttle: Arc::default(),
            tasks: Arc::default(),
        }
    }
}
