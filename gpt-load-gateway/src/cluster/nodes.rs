//! Heartbeats: each node keeps one entry in Redis, `{prefix}:node:{id}`, rewritten at every
//! lease step with an expiry of three lease lengths, so a node that dies drops out of
//! `/api/cluster/status` by itself and one that stops cleanly removes its entry.

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::redis::{Redis, RedisError};

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    Leader,
    Follower,
}

/// One node as it last reported itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct NodeEntry {
    pub(crate) node_id: String,
    pub(crate) role: Role,
    /// The gateway's version.
    pub(crate) version: String,
    /// Where the node listens (`host:port`).
    pub(crate) address: String,
    pub(crate) last_seen: DateTime<Utc>,
}

/// Writes this node's entry with an expiry.
pub(crate) async fn beat(redis: &Redis, entry: &NodeEntry, ttl_ms: u64) -> Result<(), RedisError> {
    let key = redis.names.node(&entry.node_id);
    let value = serde_json::to_string(entry).expect("a node entry serialises");
    redis
        .run(|mut conn| async move { conn.pset_ex::<_, _, ()>(key, value, ttl_ms).await })
        .await
}

/// Removes this node's entry (at shutdown).
pub(crate) async fn leave(redis: &Redis, node_id: &str) -> Result<(), RedisError> {
    let key = redis.names.node(node_id);
    redis
        .run(|mut conn| async move { conn.del::<_, ()>(key).await })
        .await
}

/// Every node with a live entry, by id.
pub(crate) async fn list(redis: &Redis) -> Result<Vec<NodeEntry>, RedisError> {
    let pattern = redis.names.node_pattern();
    let values: Vec<Option<String>> = redis
        .run(|mut conn| async move {
            let mut keys: Vec<String> = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut conn)
                    .await?;
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await
        })
        .await?;
    let mut nodes: Vec<NodeEntry> = values
        .into_iter()
        .flatten()
        .filter_map(|json| serde_json::from_str(&json).ok())
        .collect();
    nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok(nodes)
}
