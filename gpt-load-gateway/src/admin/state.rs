//! What every admin handler can reach.

use std::sync::Arc;

use axum::{extract::FromRequestParts, http::request::Parts};
use gpt_load_tower::secret::ApiKey;

use super::{
    lang::{Lang, lang_of},
    task_manager::TaskManager,
    throttle::Throttle,
};
use crate::{cluster::Cluster, config::ip_net::TrustedProxies, registry::Registry};

/// Shared state of the admin API. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AdminState {
    /// Every change to groups, keys and settings goes through it; reads use its database,
    /// settings and cipher.
    pub(crate) registry: Registry,
    /// The node's place in the cluster (`/api/cluster/status`).
    pub(crate) cluster: Cluster,
    pub(crate) auth_key: ApiKey,
    pub(crate) trusted_proxies: Arc<TrustedProxies>,
    pub(crate) throttle: Arc<Throttle>,
    pub(crate) tasks: Arc<TaskManager>,
}

impl AdminState {
    /// The admin API's state over `registry`.
    pub(crate) fn new(
        registry: Registry,
        cluster: Cluster,
        auth_key: ApiKey,
        trusted_proxies: Arc<TrustedProxies>,
    ) -> Self {
        Self {
            tasks: Arc::new(TaskManager::new(cluster.task_slot())),
            registry,
            cluster,
            auth_key,
            trusted_proxies,
            throttle: Arc::default(),
        }
    }
}

/// What an admin handler starts from: the shared state and the language to answer in.
pub(crate) struct Admin {
    pub(crate) state: AdminState,
    pub(crate) lang: Lang,
}

impl FromRequestParts<AdminState> for Admin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, Self::Rejection> {
        Ok(Self {
            state: state.clone(),
            lang: lang_of(&parts.headers),
        })
    }
}
