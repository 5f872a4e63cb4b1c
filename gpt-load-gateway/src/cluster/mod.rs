//! Cluster mode on Redis (`REDIS_DSN`): many gateway nodes on one database, each serving from
//! its own in-memory state, kept in step through Redis. See `docs/CLUSTER.md`.
//!
//! - [`invalidation`]: a write on one node reaches every other within one message; a periodic
//!   reconcile heals a lost one; a node that lost Redis re-reads everything when it is back.
//! - [`lease`]: one leader at a time runs migrations at first start, key validation and log
//!   retention; `IS_SLAVE=true` nodes never lead; a dead leader is replaced within the lease.
//! - [`nodes`]: each node's heartbeat entry, listed by `GET /api/cluster/status`.
//! - [`task_slot`]: the one global key task across the cluster and its status.
//! - [`key_state`]: key failures counted across the cluster; blacklisting, cool-downs and
//!   restores that reach every node.
//! - [`limits`]: `key_rpm`, `key_rpd` and `group_rpm` counted across the nodes.
//!
//! Nothing here runs on the proxy path but [`limits`]' one script per attempt on a key (or
//! request to a group) with such limits: requests are served from the registry's memory, and Redis being slow or down never
//! blocks them (a limit check falls back to this node's share at once while Redis is known to be
//! down, and after [`redis::COMMAND_TIMEOUT`] when it stops answering).

mod invalidation;
mod key_state;
mod lease;
mod limits;
mod nodes;
mod redis;
mod task_slot;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use ::redis::aio::PubSub;
use chrono::Utc;
use serde::Serialize;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use utoipa::ToSchema;

pub(crate) use self::limits::SharedLimits;
use self::{
    invalidation::Invalidations,
    lease::{Lease, LeaseTiming},
    redis::Redis,
};
pub(crate) use self::{
    lease::Leadership,
    nodes::{NodeEntry, Role},
    task_slot::{RUNNING_TTL, TaskSlot},
};
use crate::{
    config::cluster::ClusterConfig,
    db::Db,
    registry::{Registry, SharedKeyStates},
};

/// Whether the node runs alone or in a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    Single,
    Cluster,
}

/// The node's link to Redis; `disabled` on a single node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RedisLink {
    Connected,
    Disconnected,
    Disabled,
}

/// `GET /api/cluster/status`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct ClusterStatus {
    pub(crate) mode: Mode,
    pub(crate) node_id: String,
    pub(crate) role: Role,
    pub(crate) redis: RedisLink,
    /// Every node with a live heartbeat, this one included (only this one on a single node or
    /// while Redis is unreachable).
    pub(crate) nodes: Vec<NodeEntry>,
}

/// This node's place in the cluster. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Cluster {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node_id: String,
    address: String,
    is_slave: bool,
    leadership: Leadership,
    lease: Option<LeaseTiming>,
    reconcile_every: Duration,
    redis: Option<Redis>,
    connected: Arc<AtomicBool>,
    /// The subscription opened at [`Cluster::join`], taken by [`Cluster::run`].
    subscription: Mutex<Option<Subscription>>,
}

struct Subscription {
    /// `None` while Redis was unreachable: the invalidation task connects when it can.
    pubsub: Option<PubSub>,
    invalidations: Invalidations,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subscription")
    }
}

/// How long a follower waits at start for the leader to migrate the database.
const MIGRATION_WAIT: Duration = Duration::from_secs(60);

impl Cluster {
    /// Joins the cluster named by `config`, or runs alone without `REDIS_DSN`. In a cluster the
    /// node subscribes to invalidations first (so that no change falls between this and the
    /// state it loads next) and, unless `IS_SLAVE=true`, tries once to take the lease. A Redis
    /// that is down is not fatal: the node starts as a follower and keeps trying.
    pub(crate) async fn join(config: &ClusterConfig, listen: SocketAddr) -> anyhow::Result<Self> {
        let node_id = config.node_id.clone().unwrap_or_else(default_node_id);
        let address = advertised_address(listen);
        let Some(url) = &config.redis_dsn else {
            return Ok(Self::of(Inner {
                node_id,
                address,
                is_slave: config.is_slave,
                leadership: Leadership::single(config.is_slave),
                lease: None,
                reconcile_every: config.reconcile_interval,
                redis: None,
                connected: Arc::default(),
                subscription: Mutex::new(None),
            }));
        };
        let redis = Redis::new(url, &config.key_prefix, config.redis_ca_cert.as_deref())?;
        let cluster = Self::of(Inner {
            node_id,
            address,
            is_slave: config.is_slave,
            leadership: Leadership::follower(),
            lease: Some(LeaseTiming::of(config.lease)),
            reconcile_every: config.reconcile_interval,
            redis: Some(redis),
            connected: Arc::default(),
            subscription: Mutex::new(None),
        });
        match cluster.try_lead().await {
            Ok(()) => cluster.inner.connected.store(true, Ordering::Relaxed),
            Err(err) => {
                tracing::warn!(error = %err, "Redis is unreachable at start: this node serves and keeps trying")
            }
        }
        tracing::info!(
            node_id = %cluster.inner.node_id,
            leader = cluster.is_leader(),
            slave = config.is_slave,
            "joined the cluster"
        );
        Ok(cluster)
    }

    fn of(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    fn lease(&self) -> Option<Lease> {
        let (redis, timing) = (self.inner.redis.as_ref()?, self.inner.lease?);
        (!self.inner.is_slave).then(|| {
            Lease::new(
                redis.clone(),
                self.inner.node_id.clone(),
                timing,
                self.inner.leadership.clone(),
            )
        })
    }

    async fn try_lead(&self) -> Result<(), redis::RedisError> {
        if let Some(lease) = self.lease() {
            lease.step().await?;
        }
        Ok(())
    }

    /// Whether this node is in a cluster.
    pub(crate) fn mode(&self) -> Mode {
        if self.inner.redis.is_some() {
            Mode::Cluster
        } else {
            Mode::Single
        }
    }

    /// Whether this node leads now (always, on a single node without `IS_SLAVE=true`).
    pub(crate) fn is_leader(&self) -> bool {
        self.inner.leadership.is_leader()
    }

    /// The cluster's task slot; `None` on a single node.
    pub(crate) fn task_slot(&self) -> Option<TaskSlot> {
        self.inner.redis.clone().map(TaskSlot::new)
    }

    /// The node's leadership, for the jobs that only the leader runs.
    pub(crate) fn leadership(&self) -> Leadership {
        self.inner.leadership.clone()
    }

    /// Migrates the database when this node should: the leader does; a follower waits for the
    /// leader to (trying the lease meanwhile, so that a cluster whose leader is gone still
    /// starts). A node that cannot reach Redis and is not `IS_SLAVE=true` migrates itself: a
    /// fresh cluster must start even while its Redis is down.
    pub(crate) async fn migrate(&self, db: &Db) -> anyhow::Result<usize> {
        let unreachable = self.mode() == Mode::Cluster && !self.inner.connected.load(Ordering::Relaxed);
        if self.is_leader() || (unreachable && !self.inner.is_slave) {
            return Ok(db.migrate().await?);
        }
        let deadline = Instant::now() + MIGRATION_WAIT;
        loop {
            let pending = db.pending_migrations().await?;
            if pending == 0 {
                return Ok(0);
            }
            if self.try_lead().await.is_ok() && self.is_leader() {
                return Ok(db.migrate().await?);
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "the database lacks {pending} migration(s) of this version and no leader ran them within {}s \
                     (is the leader an older version? upgrade it first, or start this node without IS_SLAVE)",
                    MIGRATION_WAIT.as_secs()
                );
            }
            tracing::info!(pending, "waiting for the leader to migrate the database");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Opens the invalidation subscription and records the versions as they stand. Call it right
    /// before loading the registry (in a cluster; a no-op on a single node).
    pub(crate) async fn subscribe(&self, registry: &Registry) {
        let Some(redis) = &self.inner.redis else {
            return;
        };
        let mut invalidations = Invalidations::new(
            redis.clone(),
            self.inner.node_id.clone(),
            registry.clone(),
            Arc::clone(&self.inner.connected),
        );
        match invalidations.connect().await {
            Ok(pubsub) => {
                self.inner.connected.store(true, Ordering::Relaxed);
                *self.subscription() = Some(Subscription {
                    pubsub: Some(pubsub),
                    invalidations,
                });
            }
            Err(err) => {
                self.inner.connected.store(false, Ordering::Relaxed);
                tracing::warn!(error = %err, "no invalidation subscription yet: Redis is unreachable");
                *self.subscription() = Some(Subscription {
                    pubsub: None,
                    invalidations,
                });
            }
        }
    }

    fn subscription(&self) -> std::sync::MutexGuard<'_, Option<Subscription>> {
        self.inner
            .subscription
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the cluster's tasks (a no-op on a single node): the lease and heartbeat, the
    /// invalidations, to which the registry now hands every change it writes, and the shared key
    /// state, to which the proxy's pool hands its keys' failures and recoveries.
    pub(crate) fn run(&self, registry: &Registry, stopping: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let Some(redis) = self.inner.redis.clone() else {
            return Vec::new();
        };
        let (changes, receiver) = mpsc::unbounded_channel();
        registry.publish_changes_to(changes);
        let (key_reports, key_receiver) = mpsc::unbounded_channel();
        registry.proxy_pool().share(SharedKeyStates::new(
            key_reports,
            Arc::clone(&self.inner.connected),
        ));
        let limits = SharedLimits::new(
            redis.clone(),
            self.inner.node_id.clone(),
            Arc::clone(&self.inner.connected),
        );
        registry.proxy_pool().share_limits(limits.clone());
        registry.catalog().group_limits.share(limits.clone());
        let mut tasks = vec![
            tokio::spawn(self.clone().lead_and_beat(
                redis.clone(),
                limits,
                registry.clone(),
                stopping.clone(),
            )),
            tokio::spawn(key_state::run(
                redis.clone(),
                self.inner.node_id.clone(),
                registry.clone(),
                key_receiver,
                stopping.clone(),
            )),
        ];
        if let Some(Subscription {
            pubsub,
            invalidations,
        }) = self.subscription().take()
        {
            tasks.push(tokio::spawn(invalidation::run(
                invalidations,
                pubsub,
                receiver,
                self.inner.reconcile_every,
                stopping.clone(),
            )));
        }
        tasks
    }

    fn entry(&self) -> NodeEntry {
        NodeEntry {
            node_id: self.inner.node_id.clone(),
            role: if self.is_leader() {
                Role::Leader
            } else {
                Role::Follower
            },
            version: env!("CARGO_PKG_VERSION").to_owned(),
            address: self.inner.address.clone(),
            last_seen: Utc::now(),
        }
    }

    /// The lease and heartbeat task: renews or tries the lease at its pace, rewrites the node's
    /// entry and counts the live nodes (for the shares of the limits counted per node), and at shutdown releases the
    /// lease and removes the entry.
    async fn lead_and_beat(
        self,
        redis: Redis,
        limits: SharedLimits,
        registry: Registry,
        mut stopping: watch::Receiver<bool>,
    ) {
        let timing = self
            .inner
            .lease
            .unwrap_or_else(|| LeaseTiming::of(Duration::from_secs(15)));
        let lease = self.lease();
        let entry_ttl = (timing.expiry * 4).as_millis() as u64;
        let mut last_beat: Option<Instant> = None;
        loop {
            let wait = match &lease {
                Some(lease) => lease.step().await.unwrap_or_else(|err| {
                    redis_failed(&err);
                    timing.poll
                }),
                None => timing.renew,
            };
            metrics::gauge!("gpt_load_cluster_leader").set(if self.is_leader() { 1.0 } else { 0.0 });
            if last_beat.is_none_or(|at| at.elapsed() >= timing.renew) {
                match nodes::beat(&redis, &self.entry(), entry_ttl).await {
                    Ok(()) => last_beat = Some(Instant::now()),
                    Err(err) => redis_failed(&err),
                }
                match nodes::list(&redis).await {
                    Ok(alive) => {
                        limits.set_nodes(alive.len());
                        registry.set_live_nodes(alive.len());
                    }
                    Err(err) => redis_failed(&err),
                }
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stopping.changed() => break,
            }
        }
        if let Some(lease) = &lease
            && let Err(err) = lease.release().await
        {
            redis_failed(&err);
        }
        metrics::gauge!("gpt_load_cluster_leader").set(0.0);
        if let Err(err) = nodes::leave(&redis, &self.inner.node_id).await {
            redis_failed(&err);
        }
    }

    /// What `GET /api/cluster/status` reports.
    pub(crate) async fn status(&self) -> ClusterStatus {
        let own = self.entry();
        let (redis, nodes) = match &self.inner.redis {
            None => (RedisLink::Disabled, vec![own.clone()]),
            Some(redis) => match nodes::list(redis).await {
                Ok(mut nodes) if self.inner.connected.load(Ordering::Relaxed) => {
                    // This node's entry as it stands now, not as of its last heartbeat.
                    nodes.retain(|n| n.node_id != own.node_id);
                    nodes.push(own.clone());
                    nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
                    (RedisLink::Connected, nodes)
                }
                Ok(_) => (RedisLink::Disconnected, vec![own.clone()]),
                Err(err) => {
                    redis_failed(&err);
                    (RedisLink::Disconnected, vec![own.clone()])
                }
            },
        };
        ClusterStatus {
            mode: self.mode(),
            node_id: own.node_id,
            role: own.role,
            redis,
            nodes,
        }
    }
}

fn redis_failed(err: &redis::RedisError) {
    metrics::counter!("gpt_load_cluster_redis_errors_total").increment(1);
    tracing::warn!(error = %err, "redis command failed");
}

/// The host name and a random suffix: unique across restarts.
fn default_node_id() -> String {
    let host = host_name().unwrap_or_else(|| "node".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..8])
}

fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// Where other nodes and operators reach this one: the listen address, or the host name with
/// the port when it listens on every interface.
fn advertised_address(listen: SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        format!(
            "{}:{}",
            host_name().unwrap_or_else(|| "localhost".to_owned()),
            listen.port()
        )
    } else {
        listen.to_string()
    }
}
