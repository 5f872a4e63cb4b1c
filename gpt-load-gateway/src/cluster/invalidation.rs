//! Invalidations: how a write on one node reaches every other.
//!
//! A registry write commits to the database and hands its [`Change`] to this node's
//! invalidation task, which bumps the change's counter in the versions hash and publishes
//! `{"kind","id","version","node"}` on the cluster's channel, both in one script. Every other
//! node applies the message through the registry's reloads (that group, that group's keys, the
//! settings), never by trusting its content: the database is the truth, the message only says
//! what to re-read.
//!
//! A node remembers the version it applied for each counter. Every
//! `CLUSTER_RECONCILE_SECONDS` it reads the whole versions hash and applies every counter that
//! moved past what it knows, so a message lost in a reconnect heals within one interval. When
//! the pub/sub connection drops, the node keeps serving from what it has; once it is back it
//! re-reads everything (a full resync), and if it wrote anything meanwhile it asks every node
//! to do the same.

use std::{
    collections::HashMap,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use redis::{AsyncCommands, Script, aio::PubSub};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc::UnboundedReceiver, watch};

use super::redis::{Redis, RedisError};
use crate::{
    db::DbError,
    registry::{Change, Registry},
};

/// Bumps one counter of the versions hash and publishes the message with the new version.
const PUBLISH_LUA: &str = r"
local version = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
local message = {kind = ARGV[2], version = version, node = ARGV[4]}
if ARGV[3] ~= '' then message.id = tonumber(ARGV[3]) end
redis.call('PUBLISH', KEYS[2], cjson.encode(message))
return version
";
static PUBLISH: LazyLock<Script> = LazyLock::new(|| Script::new(PUBLISH_LUA));

/// What a message asks nodes to re-read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// A group's row and links (`id` = group id).
    Group,
    /// A group's keys (`id` = group id).
    Keys,
    /// The system settings.
    Settings,
    /// The access keys.
    #[serde(rename = "access_keys")]
    AccessKeys,
    /// Everything: sent by a node that wrote while it could not publish.
    Resync,
}

/// One invalidation as published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Message {
    pub(crate) kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<i64>,
    pub(crate) version: i64,
    /// The node that made the change (it has applied it already).
    pub(crate) node: String,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Group => "group",
            Self::Keys => "keys",
            Self::Settings => "settings",
            Self::AccessKeys => "access_keys",
            Self::Resync => "resync",
        }
    }
}

/// A change as a kind and an id.
fn of_change(change: Change) -> (Kind, Option<i64>) {
    match change {
        Change::Group(id) => (Kind::Group, Some(id)),
        Change::Keys(id) => (Kind::Keys, Some(id)),
        Change::Settings => (Kind::Settings, None),
        Change::AccessKeys => (Kind::AccessKeys, None),
    }
}

/// The counter of the versions hash for a change: `group:3`, `keys:3`, `settings`, `resync`.
fn field(kind: Kind, id: Option<i64>) -> String {
    match id {
        Some(id) => format!("{}:{id}", kind.as_str()),
        None => kind.as_str().to_owned(),
    }
}

/// The change a counter of the versions hash stands for.
fn parse_field(field: &str) -> Option<(Kind, Option<i64>)> {
    let (name, id) = match field.split_once(':') {
        Some((name, id)) => (name, Some(id.parse().ok()?)),
        None => (field, None),
    };
    let kind = [
        Kind::Group,
        Kind::Keys,
        Kind::Settings,
        Kind::AccessKeys,
        Kind::Resync,
    ]
    .into_iter()
    .find(|kind| kind.as_str() == name)?;
    (id.is_some() == matches!(kind, Kind::Group | Kind::Keys)).then_some((kind, id))
}

/// Why [`Invalidations::serve`] returned.
enum Ended {
    Stopping,
    Lost(RedisError),
}

/// This node's side of invalidations: what it applied, and how to publish and apply.
pub(crate) struct Invalidations {
    redis: Redis,
    node_id: String,
    registry: Registry,
    connected: Arc<AtomicBool>,
    /// The version applied per counter of the versions hash.
    applied: HashMap<String, i64>,
    /// A change could not be published: every node must re-read everything once Redis is back.
    owe_resync: bool,
}

impl Invalidations {
    pub(crate) fn new(redis: Redis, node_id: String, registry: Registry, connected: Arc<AtomicBool>) -> Self {
        Self {
            redis,
            node_id,
            registry,
            connected,
            applied: HashMap::new(),
            owe_resync: false,
        }
    }

    /// Opens the pub/sub connection, subscribes and records the versions as they stand: call it
    /// before loading the state it guards, so that no change falls between the two.
    pub(crate) async fn connect(&mut self) -> Result<PubSub, RedisError> {
        let mut pubsub = self.redis.pubsub().await?;
        tokio::time::timeout(
            super::redis::COMMAND_TIMEOUT,
            pubsub.subscribe(&[self.redis.names.channel(), self.redis.names.key_channel()]),
        )
        .await
        .map_err(|_| RedisError::Timeout)??;
        self.applied = self.versions().await?;
        Ok(pubsub)
    }

    async fn versions(&self) -> Result<HashMap<String, i64>, RedisError> {
        let key = self.redis.names.versions();
        self.redis
            .run(|mut conn| async move { conn.hgetall(key).await })
            .await
    }

    async fn publish(&mut self, kind: Kind, id: Option<i64>) -> Result<(), RedisError> {
        let field = field(kind, id);
        let names = &self.redis.names;
        let version: i64 = self
            .redis
            .invoke(
                PUBLISH
                    .key(names.versions())
                    .key(names.channel())
                    .arg(&field)
                    .arg(kind.as_str())
                    .arg(id.map(|id| id.to_string()).unwrap_or_default())
                    .arg(&self.node_id),
            )
            .await?;
        self.record(field, version);
        metrics::counter!("gpt_load_cluster_invalidations_sent_total").increment(1);
        Ok(())
    }

    fn record(&mut self, field: String, version: i64) {
        let applied = self.applied.entry(field).or_default();
        *applied = (*applied).max(version);
    }

    /// Re-reads what a change names. On a database error the version is not recorded, so the
    /// next reconcile tries again.
    async fn apply(&mut self, kind: Kind, id: Option<i64>, version: i64) {
        let result = match (kind, id) {
            (Kind::Group, Some(id)) => self.registry.reload_group(id).await,
            (Kind::Keys, Some(id)) => self.registry.reload_keys(id).await,
            (Kind::Settings, _) => self.registry.reload_settings().await,
            (Kind::AccessKeys, _) => self.registry.reload_access_keys().await,
            (Kind::Resync, _) => self.resync().await,
            _ => Ok(()),
        };
        match result {
            Ok(()) => {
                self.record(field(kind, id), version);
                metrics::counter!("gpt_load_cluster_invalidations_applied_total").increment(1);
            }
            Err(err) => {
                tracing::warn!(?kind, id, error = %err, "applying a change from another node failed; the next reconcile retries")
            }
        }
    }

    async fn on_message(&mut self, payload: &str) {
        let Ok(message) = serde_json::from_str::<Message>(payload) else {
            tracing::warn!("an invalidation message that is not ours was ignored");
            return;
        };
        let field = field(message.kind, message.id);
        if self.applied.get(&field).is_some_and(|&v| v >= message.version) {
            return;
        }
        if message.node == self.node_id {
            self.record(field, message.version);
            return;
        }
        self.apply(message.kind, message.id, message.version).await;
    }

    /// Applies every counter that moved past what this node applied; returns how many.
    async fn reconcile(&mut self) -> Result<usize, RedisError> {
        let versions = self.versions().await?;
        // Counters that went back or vanished: Redis lost its data (a flush, a restart without
        // persistence). Re-read everything and start over from what Redis has now.
        let reset = self
            .applied
            .iter()
            .any(|(field, &applied)| versions.get(field).is_none_or(|&v| v < applied));
        if reset {
            tracing::warn!("Redis lost the cluster's versions: re-reading everything");
            if let Err(err) = self.resync().await {
                tracing::warn!(error = %err, "the resync failed; the next reconcile retries");
                return Ok(0);
            }
            self.applied = versions;
            metrics::counter!("gpt_load_cluster_reconcile_repairs_total").increment(1);
            return Ok(1);
        }
        let mut repairs = 0;
        for (field, version) in versions {
            if self.applied.get(&field).is_some_and(|&v| v >= version) {
                continue;
            }
            if let Some((kind, id)) = parse_field(&field) {
                self.apply(kind, id, version).await;
                repairs += 1;
            }
        }
        if repairs > 0 {
            tracing::info!(repairs, "reconcile applied changes whose messages did not arrive");
            metrics::counter!("gpt_load_cluster_reconcile_repairs_total").increment(repairs as u64);
        }
        Ok(repairs)
    }

    /// Re-reads everything: settings, every group and link, every group's keys.
    pub(crate) async fn resync(&self) -> Result<(), DbError> {
        self.registry.reload_settings().await?;
        self.registry.load_all().await?;
        for id in self.registry.group_ids() {
            self.registry.reload_keys(id).await?;
        }
        Ok(())
    }

    /// Publishes local changes and applies other nodes' until the connection drops or the node
    /// stops.
    async fn serve(
        &mut self,
        pubsub: &mut PubSub,
        changes: &mut UnboundedReceiver<Change>,
        reconcile_every: Duration,
        stopping: &mut watch::Receiver<bool>,
    ) -> Ended {
        let key_channel = self.redis.names.key_channel();
        let mut messages = std::pin::pin!(pubsub.on_message());
        let mut reconcile = tokio::time::interval(reconcile_every);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reconcile.tick().await;
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(message) => match message.get_payload::<String>() {
                        Ok(payload) if message.get_channel_name() == key_channel => {
                            super::key_state::apply(&self.registry, &self.node_id, &payload);
                        }
                        Ok(payload) => self.on_message(&payload).await,
                        Err(err) => tracing::warn!(error = %err, "an invalidation message could not be read"),
                    },
                    None => return Ended::Lost(RedisError::Closed),
                },
                change = changes.recv() => match change {
                    Some(change) => {
                        let (kind, id) = of_change(change);
                        if let Err(err) = self.publish(kind, id).await {
                            redis_error(&err);
                            self.owe_resync = true;
                        }
                    }
                    None => return Ended::Stopping,
                },
                _ = reconcile.tick() => {
                    if self.owe_resync && self.publish(Kind::Resync, None).await.is_ok() {
                        self.owe_resync = false;
                    }
                    if let Err(err) = self.reconcile().await {
                        return Ended::Lost(err);
                    }
                }
                _ = stopping.changed() => return Ended::Stopping,
            }
        }
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }
}

fn redis_error(err: &RedisError) {
    metrics::counter!("gpt_load_cluster_redis_errors_total").increment(1);
    tracing::warn!(error = %err, "redis command failed");
}

/// The longest wait between two attempts to reach a lost Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The invalidation task: serves while connected; when Redis is lost, keeps the node serving
/// from its local state, reconnects with backoff, re-reads everything and goes on.
pub(crate) async fn run(
    mut node: Invalidations,
    mut pubsub: Option<PubSub>,
    mut changes: UnboundedReceiver<Change>,
    reconcile_every: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        if let Some(mut subscribed) = pubsub.take() {
            node.set_connected(true);
            backoff = Duration::from_millis(200);
            match node
                .serve(&mut subscribed, &mut changes, reconcile_every, &mut stopping)
                .await
            {
                Ended::Stopping => return,
                Ended::Lost(err) => {
                    redis_error(&err);
                    tracing::warn!("lost Redis: serving from local state until it is back");
                }
            }
            node.set_connected(false);
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stopping.changed() => return,
        }
        // Capped by the reconcile interval: a change made during an outage reaches every node
        // within that interval of Redis coming back.
        backoff = (backoff * 2).min(reconcile_every.min(MAX_BACKOFF));
        // Writes made while Redis is away are not lost: every node re-reads everything.
        while changes.try_recv().is_ok() {
            node.owe_resync = true;
        }
        match node.connect().await {
            Ok(subscribed) => {
                if let Err(err) = node.resync().await {
                    tracing::warn!(error = %err, "the resync after reconnecting failed; the next reconcile retries");
                    node.applied.clear();
                }
                if node.owe_resync && node.publish(Kind::Resync, None).await.is_ok() {
                    node.owe_resync = false;
                }
                tracing::info!("Redis is back: state re-read from the database");
                pubsub = Some(subscribed);
            }
            Err(err) => redis_error(&err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        for (kind, id) in [
            (Kind::Group, Some(3)),
            (Kind::Keys, Some(41)),
            (Kind::Settings, None),
            (Kind::Resync, None),
        ] {
            assert_eq!(parse_field(&field(kind, id)), Some((kind, id)));
        }
        for odd in ["group", "keys:x", "settings:1", "other:1", ""] {
            assert_eq!(parse_field(odd), None, "{odd}");
        }
    }

    #[test]
    fn messages_have_the_documented_shape() {
        let message = Message {
            kind: Kind::Keys,
            id: Some(7),
            version: 12,
            node: "a".to_owned(),
        };
        let json = serde_json::to_value(&message).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "keys", "id": 7, "version": 12, "node": "a"})
        );
        let settings: Message =
            serde_json::from_str(r#"{"kind":"settings","version":1,"node":"b"}"#).unwrap();
        assert_eq!((settings.kind, settings.id), (Kind::Settings, None));
    }
}
