//! The leader lease: one key in Redis, `{prefix}:leader` = `{node}#{token}`, set only when
//! absent and with an expiry, renewed by its holder, taken by another node once it expires.
//!
//! The token comes from a counter that only grows (`{prefix}:leader:fence`), so each lease has
//! its own: a renewal or release names the full value and fails once another node holds the
//! lease, even if the same node held an older one.
//!
//! The holder believes it leads only until a deadline measured on its own clock from the
//! moment it *sent* its last successful renewal, and that deadline falls a margin before the
//! key can expire in Redis. A leader that stalls (a long pause, a lost Redis) therefore stops
//! leading before anyone else can start; its jobs ask [`Leadership::is_leader`] right before
//! each run.

use std::{
    sync::{Arc, LazyLock, Mutex},
    time::{Duration, Instant},
};

use redis::Script;

use super::redis::{Redis, RedisError};

/// Takes the lease when nobody holds it; returns the new token, or 0.
const ACQUIRE_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '#' .. token, 'PX', ARGV[2])
return token
";
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE_LUA));

/// Extends the lease when this holder still has it; returns 1, or 0.
const RENEW_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";
static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(RENEW_LUA));

/// Gives the lease up when this holder still has it (a clean shutdown hands over at once).
const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_LUA));

/// The timing of a lease of length `lease` (`CLUSTER_LEASE_SECONDS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LeaseTiming {
    /// The key's expiry in Redis: three quarters of the lease, so that a follower polling at
    /// [`LeaseTiming::poll`] takes over within the lease after the leader dies.
    pub(crate) expiry: Duration,
    /// How often the holder renews: three renewals fit in one expiry.
    pub(crate) renew: Duration,
    /// How often a follower tries to take the lease.
    pub(crate) poll: Duration,
    /// How long before the key's expiry the holder stops believing it leads.
    pub(crate) margin: Duration,
}

impl LeaseTiming {
    pub(crate) fn of(lease: Duration) -> Self {
        let expiry = lease * 3 / 4;
        Self {
            expiry,
            renew: expiry / 3,
            poll: (lease / 10).max(Duration::from_millis(100)),
            margin: lease / 10,
        }
    }
}

/// What this node knows of its own leadership. Cheap to clone; read by the jobs and the status.
#[derive(Clone, Debug)]
pub(crate) struct Leadership {
    inner: Arc<Mutex<Held>>,
}

#[derive(Debug)]
enum Held {
    /// A single node that may lead: always the leader.
    Always,
    /// A follower, or a cluster node without the lease.
    Never,
    /// The lease with `token`, believed until `until`.
    Until { token: i64, until: Instant },
}

impl Leadership {
    /// A single node: leads unless `IS_SLAVE=true`.
    pub(crate) fn single(is_slave: bool) -> Self {
        Self::of(if is_slave { Held::Never } else { Held::Always })
    }

    /// A cluster node, not leading until it takes the lease.
    pub(crate) fn follower() -> Self {
        Self::of(Held::Never)
    }

    fn of(held: Held) -> Self {
        Self {
            inner: Arc::new(Mutex::new(held)),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this node leads now. A lease whose deadline has passed is not believed.
    pub(crate) fn is_leader(&self) -> bool {
        match *self.held() {
            Held::Always => true,
            Held::Never => false,
            Held::Until { until, .. } => Instant::now() < until,
        }
    }

    /// The token of the lease this node holds now.
    pub(crate) fn token(&self) -> Option<i64> {
        match *self.held() {
            Held::Until { token, until } if Instant::now() < until => Some(token),
            _ => None,
        }
    }

    fn hold(&self, token: i64, until: Instant) {
        *self.held() = Held::Until { token, until };
    }

    fn drop_lease(&self) {
        *self.held() = Held::Never;
    }
}

/// One node's side of the lease in Redis.
#[derive(Debug)]
pub(crate) struct Lease {
    redis: Redis,
    node_id: String,
    timing: LeaseTiming,
    leadership: Leadership,
}

impl Lease {
    pub(crate) fn new(redis: Redis, node_id: String, timing: LeaseTiming, leadership: Leadership) -> Self {
        Self {
            redis,
            node_id,
            timing,
            leadership,
        }
    }

    fn value(&self, token: i64) -> String {
        format!("{}#{token}", self.node_id)
    }

    /// One step: renew the lease this node holds, or try to take a free one. Returns how long
    /// to wait before the next step. A Redis error leaves a held lease believed until its
    /// deadline and never makes a follower a leader.
    pub(crate) async fn step(&self) -> Result<Duration, RedisError> {
        let sent = Instant::now();
        let believed = sent + self.timing.expiry.saturating_sub(self.timing.margin);
        let expiry_ms = self.timing.expiry.as_millis() as u64;
        if let Some(token) = self.leadership.token() {
            let value = self.value(token);
            let names = &self.redis.names;
            let renewed: i64 = self
                .redis
                .invoke(RENEW.key(names.leader()).arg(value).arg(expiry_ms))
                .await?;
            if renewed == 1 {
                self.leadership.hold(token, believed);
                return Ok(self.timing.renew);
            }
            self.leadership.drop_lease();
            tracing::warn!(
                token,
                "the leader lease was lost to another node; this node now follows"
            );
            return Ok(self.timing.poll);
        }
        let names = &self.redis.names;
        let node_id = self.node_id.clone();
        let token: i64 = self
            .redis
            .invoke(
                ACQUIRE
                    .key(names.leader())
                    .key(names.fence())
                    .arg(node_id)
                    .arg(expiry_ms),
            )
            .await?;
        if token > 0 {
            self.leadership.hold(token, believed);
            tracing::info!(token, "this node took the leader lease");
            return Ok(self.timing.renew);
        }
        Ok(self.timing.poll)
    }

    /// Gives the lease up if this node holds it (at shutdown, so another node takes over at
    /// once instead of after the expiry).
    pub(crate) async fn release(&self) -> Result<(), RedisError> {
        let Some(token) = self.leadership.token() else {
            return Ok(());
        };
        self.leadership.drop_lease();
        let value = self.value(token);
        let names = &self.redis.names;
        let _: i64 = self.redis.invoke(RELEASE.key(names.leader()).arg(value)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_takes_over_within_the_lease_and_the_holder_stops_first() {
        let lease = Duration::from_secs(15);
        let t = LeaseTiming::of(lease);
        assert!(t.expiry + t.poll <= lease, "{t:?}");
        assert!(t.renew * 3 <= t.expiry, "{t:?}");
        assert!(t.margin > Duration::ZERO && t.margin < t.expiry, "{t:?}");
        let short = LeaseTiming::of(Duration::from_secs(1));
        assert_eq!(short.poll, Duration::from_millis(100));
        assert!(short.expiry + short.poll <= Duration::from_secs(1));
    }

    #[test]
    fn leadership_is_believed_until_its_deadline_only() {
        assert!(Leadership::single(false).is_leader());
        assert!(!Leadership::single(true).is_leader());
        let held = Leadership::follower();
        assert!(!held.is_leader());
        held.hold(7, Instant::now() + Duration::from_secs(60));
        assert!(held.is_leader());
        assert_eq!(held.token(), Some(7));
        held.hold(8, Instant::now() - Duration::from_millis(1));
        assert!(!held.is_leader(), "a deadline in the past is not believed");
        assert_eq!(held.token(), None);
    }
}
