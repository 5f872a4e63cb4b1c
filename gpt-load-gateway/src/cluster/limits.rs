//! Key and group limits counted across the cluster's nodes.
//!
//! Each node still counts its own requests in memory (the pool's pre-check: a key this node has
//! already sent its limit is passed over without asking Redis). A key with `key_rpm` or
//! `key_rpd` is then admitted by one Redis script per attempt, which counts the attempts of every
//! node: the minute as a log of admissions (a sorted set per key, exact to the millisecond of
//! Redis's clock), the day as a counter per key and UTC day. A refusal holds the key back on
//! this node until the cluster has room again, so the next requests do not ask. Keys without
//! such limits, and single nodes, make no call at all. A group with `group_rpm` is counted the same
//! way (its own minute log), once this node's count admitted the request.
//!
//! While Redis is unreachable every node admits a share of each limit on its own: the limit
//! divided by the nodes last seen alive (at least one), so the cluster as a whole stays within
//! it. `key_max_concurrency` is always per node.

use std::{
    collections::HashMap,
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use gpt_load_tower::{
    context::GroupName,
    keys::{KeyId, KeyLimits, LimitRefusal, SharedAdmission},
    limit::{DayWindow, GroupLimits, MinuteWindow, SharedGroupCount},
};
use redis::Script;

use super::redis::Redis;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Admits one attempt on a key against its minute (`KEYS[1]`, a sorted set of admissions) and
/// its day (`KEYS[2]`, a counter expiring after the day): `{0}` admitted, `{1, ms}` over the
/// minute, `{2, ms}` over the day, with the wait. Redis's own clock times the minute, so the
/// nodes' clocks do not matter to it.
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local rpm = tonumber(ARGV[1])
        local rpd = tonumber(ARGV[2])
        if rpd > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= rpd then
            return {2, tonumber(ARGV[4])}
        end
        if rpm > 0 then
            local time = redis.call('TIME')
            local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
            redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
            if redis.call('ZCARD', KEYS[1]) >= rpm then
                local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
                return {1, tonumber(oldest[2]) + 60000 - now}
            end
            redis.call('ZADD', KEYS[1], now, ARGV[3])
            redis.call('PEXPIRE', KEYS[1], 60000)
        end
        if rpd > 0 and redis.call('INCR', KEYS[2]) == 1 then
            redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]) + 60000)
        end
        return {0}
        ",
    )
});

/// The cluster's key limits. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct SharedLimits {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    redis: Redis,
    node_id: String,
    connected: Arc<AtomicBool>,
    /// Nodes with a live heartbeat when last counted (at least this one).
    nodes: AtomicU32,
    /// Makes each admission's entry in a minute log unique.
    sequence: AtomicU64,
    /// Each key's and group's share of its limits while Redis is unreachable.
    fallback: Mutex<HashMap<Counted, Arc<Fallback>>>,
}

/// What a limit counts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Counted {
    Key(KeyId),
    Group(GroupName),
}

#[derive(Debug, Default)]
struct Fallback {
    minute: MinuteWindow,
    day: DayWindow,
}

impl SharedLimits {
    pub(crate) fn new(redis: Redis, node_id: String, connected: Arc<AtomicBool>) -> Self {
        Self {
            inner: Arc::new(Inner {
                redis,
                node_id,
                connected,
                nodes: AtomicU32::new(1),
                sequence: AtomicU64::new(0),
                fallback: Mutex::default(),
            }),
        }
    }

    /// Records how many nodes are alive, for the shares while Redis is unreachable.
    pub(crate) fn set_nodes(&self, nodes: usize) {
        let nodes = u32::try_from(nodes).unwrap_or(u32::MAX).max(1);
        self.inner.nodes.store(nodes, Ordering::Relaxed);
    }

    /// The check of one attempt on `key` under `limits`, when they include a limit the cluster
    /// shares (`None` otherwise: nothing to ask).
    pub(crate) fn admit_key(&self, key: KeyId, limits: KeyLimits) -> Option<SharedAdmission> {
        if limits.rpm == 0 && limits.rpd == 0 {
            return None;
        }
        let this = self.clone();
        Some(Box::pin(async move { this.check(key, limits).await }))
    }

    async fn check(&self, key: KeyId, limits: KeyLimits) -> Result<(), LimitRefusal> {
        let names = &self.inner.redis.names;
        let now = wall_ms();
        let day = now / DAY_MS;
        let (minute, day_key) = (names.key_minute(key.0), names.key_day(key.0, day));
        self.count(
            Counted::Key(key),
            minute,
            day_key,
            limits.rpm,
            limits.rpd,
            "key_rpm",
        )
        .await
    }

    /// Counts one request of `counted` in its minute log (and its day, with `rpd`) across the
    /// cluster; this node's share of the limits while Redis fails.
    async fn count(
        &self,
        counted: Counted,
        minute: String,
        day: String,
        rpm: u32,
        rpd: u32,
        minute_limit: &'static str,
    ) -> Result<(), LimitRefusal> {
        let inner = &self.inner;
        if !inner.connected.load(Ordering::Relaxed) {
            return self.share(counted, rpm, rpd, minute_limit);
        }
        let now = wall_ms();
        let until_midnight = (now / DAY_MS + 1) * DAY_MS - now;
        let member = format!(
            "{}:{}",
            inner.node_id,
            inner.sequence.fetch_add(1, Ordering::Relaxed)
        );
        let mut invocation = ADMIT.prepare_invoke();
        invocation
            .key(minute)
            .key(day)
            .arg(rpm)
            .arg(rpd)
            .arg(member)
            .arg(until_midnight);
        match inner.redis.invoke::<Vec<i64>>(&invocation).await {
            Ok(answer) => match answer.as_slice() {
                [0, ..] => Ok(()),
                [over, wait, ..] => Err(LimitRefusal {
                    limit: if *over == 2 { "key_rpd" } else { minute_limit },
                    retry_after: Duration::from_millis(u64::try_from(*wait).unwrap_or(0).max(1)),
                }),
                _ => {
                    tracing::warn!(?answer, "unexpected answer of the limit script");
                    self.share(counted, rpm, rpd, minute_limit)
                }
            },
            Err(err) => {
                tracing::debug!(error = %err, "limits counted per node while Redis fails");
                self.share(counted, rpm, rpd, minute_limit)
            }
        }
    }

    /// This node's share of the limits on its own: each divided by the live nodes.
    fn share(
        &self,
        counted: Counted,
        rpm: u32,
        rpd: u32,
        minute_limit: &'static str,
    ) -> Result<(), LimitRefusal> {
        let nodes = u64::from(self.inner.nodes.load(Ordering::Relaxed));
        let share = |limit: u32| (u64::from(limit) / nodes).max(1);
        let fallback = {
            let mut all = self
                .inner
                .fallback
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(all.entry(counted).or_default())
        };
        if rpd > 0
            && let Err(retry_after) = fallback.day.try_acquire(1, share(rpd))
        {
            return Err(LimitRefusal {
                limit: "key_rpd",
                retry_after,
            });
        }
        if rpm > 0
            && let Err(retry_after) = fallback.minute.try_acquire(1, share(rpm))
        {
            if rpd > 0 {
                fallback.day.release(1);
            }
            return Err(LimitRefusal {
                limit: minute_limit,
                retry_after,
            });
        }
        Ok(())
    }
}

/// `group_rpm` across the cluster: the group's own minute log.
impl SharedGroupCount for SharedLimits {
    fn admit(&self, group: &GroupName, limits: GroupLimits) -> Option<SharedAdmission> {
        if limits.rpm == 0 {
            return None;
        }
        let this = self.clone();
        let group = group.clone();
        Some(Box::pin(async move {
            let names = &this.inner.redis.names;
            let minute = names.group_minute(group.as_str());
            this.count(
                Counted::Group(group),
                minute.clone(),
                minute,
                limits.rpm,
                0,
                "group_rpm",
            )
            .await
        }))
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn limits(test: &str) -> Option<SharedLimits> {
        let redis = Redis::for_test(test).await?;
        Some(SharedLimits::new(
            redis,
            "n1".into(),
            Arc::new(AtomicBool::new(true)),
        ))
    }

    #[tokio::test]
    async fn the_minute_is_counted_across_every_caller() {
        let Some(first) = limits("shared_limits_minute").await else {
            return;
        };
        // A second node on the same Redis and prefix.
        let second = SharedLimits::new(
            first.inner.redis.clone(),
            "n2".into(),
            Arc::new(AtomicBool::new(true)),
        );
        let rpm = KeyLimits::new().rpm(3);
        let key = KeyId(7);
        let mut admitted = 0;
        for node in [&first, &second, &first, &second, &first] {
            if node.admit_key(key, rpm).unwrap().await.is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 3);
        let refusal = second.admit_key(key, rpm).unwrap().await.unwrap_err();
        assert_eq!(refusal.limit, "key_rpm");
        assert!(refusal.retry_after <= Duration::from_secs(60) && !refusal.retry_after.is_zero());
        // Another key has its own count; no limit, no check.
        assert!(first.admit_key(KeyId(8), rpm).unwrap().await.is_ok());
        assert!(
            first
                .admit_key(key, KeyLimits::new().max_concurrency(1))
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_groups_minute_is_counted_across_every_caller() {
        let Some(first) = limits("shared_limits_group").await else {
            return;
        };
        let second = SharedLimits::new(
            first.inner.redis.clone(),
            "n2".into(),
            Arc::new(AtomicBool::new(true)),
        );
        let rpm = GroupLimits::new().rpm(2);
        let group = GroupName::from("g");
        assert!(first.admit(&group, rpm).unwrap().await.is_ok());
        assert!(second.admit(&group, rpm).unwrap().await.is_ok());
        let refusal = first.admit(&group, rpm).unwrap().await.unwrap_err();
        assert_eq!(refusal.limit, "group_rpm");
        // A key with the same number is counted apart.
        assert!(
            first
                .admit_key(KeyId(1), KeyLimits::new().rpm(1))
                .unwrap()
                .await
                .is_ok()
        );
        assert!(
            first
                .admit(&group, GroupLimits::new().max_concurrency(3))
                .is_none()
        );
    }

    #[tokio::test]
    async fn the_day_is_counted_across_every_caller() {
        let Some(node) = limits("shared_limits_day").await else {
            return;
        };
        let rpd = KeyLimits::new().rpd(2).rpm(100);
        let key = KeyId(1);
        assert!(node.admit_key(key, rpd).unwrap().await.is_ok());
        assert!(node.admit_key(key, rpd).unwrap().await.is_ok());
        let refusal = node.admit_key(key, rpd).unwrap().await.unwrap_err();
        assert_eq!(refusal.limit, "key_rpd");
        assert!(refusal.retry_after <= Duration::from_millis(DAY_MS));
    }

    #[tokio::test]
    async fn without_redis_each_node_takes_its_share() {
        let Some(node) = limits("shared_limits_share").await else {
            return;
        };
        node.inner.connected.store(false, Ordering::Relaxed);
        node.set_nodes(3);
        let rpm = KeyLimits::new().rpm(6);
        let mut admitted = 0;
        for _ in 0..5 {
            if node.admit_key(KeyId(1), rpm).unwrap().await.is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 2, "a third of six");
        // A limit smaller than the nodes still lets each node send one.
        assert!(
            node.admit_key(KeyId(2), KeyLimits::new().rpm(1))
                .unwrap()
                .await
                .is_ok()
        );
    }
}
