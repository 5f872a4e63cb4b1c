//! `GET /api/cluster/status`: this node, its role, its link to Redis and every live node.

use super::prelude::*;
use crate::cluster::ClusterStatus;

/// The cluster as this node sees it: `mode` is `single` without `REDIS_DSN`; `nodes` lists every
/// node whose heartbeat is live.
#[utoipa::path(get, path = "/cluster/status", tag = "cluster",
    responses((status = 200, body = Envelope<ClusterStatus>)))]
pub(crate) async fn cluster_status(Admin { state, lang }: Admin) -> Reply<ClusterStatus> {
    let status = state.cluster.status().await;
    Ok(ok(text(lang, "Success", "操作成功"), status))
}
