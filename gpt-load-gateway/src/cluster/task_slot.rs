//! The cluster's one task slot: which node runs the global key task (import, deletion,
//! validation) and that task's status, in one Redis hash so that every node shows it and a
//! second start on any node is refused.
//!
//! The hash holds `owner` (a token of the task), `running` (`1` or `0`) and `status` (the task's
//! status as JSON, which this module does not read). Taking and rewriting it are scripts, so two
//! nodes starting at once cannot both win. A running task's entry lives [`RUNNING_TTL`] unless
//! its node rewrites it: a node that dies mid-task frees the slot by itself.

use std::{sync::LazyLock, time::Duration};

use redis::Script;

use super::redis::{Redis, RedisError};

/// How long a running task's entry outlives its node's last rewrite.
pub(crate) const RUNNING_TTL: Duration = Duration::from_secs(15);

/// Takes the slot unless a running task of another owner holds it.
/// KEYS[1] the slot; ARGV: owner, status, TTL in ms, the owner this node may take over from
/// (its own last task, which it knows has ended, even if that end was not written yet).
const CLAIM_LUA: &str = r"
local running = redis.call('HGET', KEYS[1], 'running')
if running == '1' and redis.call('HGET', KEYS[1], 'owner') ~= ARGV[4] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'running', '1', 'status', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";
static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(CLAIM_LUA));

/// Rewrites the status while the owner holds the slot.
/// KEYS[1] the slot; ARGV: owner, running (`1`/`0`), status, TTL in ms.
const UPDATE_LUA: &str = r"
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'running', ARGV[2], 'status', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
";
static UPDATE: LazyLock<Script> = LazyLock::new(|| Script::new(UPDATE_LUA));

/// The slot in Redis. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct TaskSlot {
    redis: Redis,
}

impl TaskSlot {
    pub(super) fn new(redis: Redis) -> Self {
        Self { redis }
    }

    /// Takes the slot for `owner` with its first `status`; `false` while another task runs.
    /// `ended` is this node's previous task, which may still be written as running.
    pub(crate) async fn claim(
        &self,
        owner: &str,
        status: &str,
        ended: Option<&str>,
    ) -> Result<bool, RedisError> {
        let ttl = RUNNING_TTL.as_millis() as u64;
        self.redis
            .invoke::<i64>(
                CLAIM
                    .key(self.redis.names.task())
                    .arg(owner)
                    .arg(status)
                    .arg(ttl)
                    .arg(ended.unwrap_or("")),
            )
            .await
            .map(|taken| taken == 1)
    }

    /// Rewrites `owner`'s status, kept for `ttl`; `false` when the slot is no longer its own.
    pub(crate) async fn update(
        &self,
        owner: &str,
        running: bool,
        status: &str,
        ttl: Duration,
    ) -> Result<bool, RedisError> {
        self.redis
            .invoke::<i64>(
                UPDATE
                    .key(self.redis.names.task())
                    .arg(owner)
                    .arg(if running { "1" } else { "0" })
                    .arg(status)
                    .arg(ttl.as_millis() as u64),
            )
            .await
            .map(|kept| kept == 1)
    }

    /// The status of the running or last task, as its node wrote it.
    pub(crate) async fn read(&self) -> Result<Option<String>, RedisError> {
        let key = self.redis.names.task();
        self.redis
            .run(|mut conn| async move {
                redis::cmd("HGET")
                    .arg(key)
                    .arg("status")
                    .query_async::<Option<String>>(&mut conn)
                    .await
            })
            .await
    }
}
