//! The cluster's Redis: a bb8 pool of multiplexed connections for commands and scripts, a
//! way to open the one dedicated pub/sub connection, and the names of every key and channel
//! under `REDIS_KEY_PREFIX`.
//!
//! Every command is bounded by [`COMMAND_TIMEOUT`]: a Redis that stops answering is treated
//! like one that is down, and no caller waits on it for longer. Nothing here is called on the
//! proxy path.

use std::{future::Future, time::Duration};

use bb8_redis::RedisConnectionManager;
use redis::{
    FromRedisValue, ScriptInvocation,
    aio::{MultiplexedConnection, PubSub},
};

use crate::config::url::SecretUrl;

/// The longest any Redis command may take before it counts as a failure.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// A Redis failure: refused, dropped, timed out or an error reply. Its text never carries the
/// URL's password (the driver names host and port only).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisError {
    #[error("redis: {0}")]
    Command(#[from] redis::RedisError),
    #[error("redis: no connection from the pool: {0}")]
    Pool(#[from] bb8::RunError<redis::RedisError>),
    #[error("redis: no answer within {}s", COMMAND_TIMEOUT.as_secs())]
    Timeout,
    #[error("redis: the subscription connection closed")]
    Closed,
}

/// The names of the cluster's keys and channel, each under the prefix.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches(':').to_owned(),
        }
    }

    /// The pub/sub channel of invalidations.
    pub(crate) fn channel(&self) -> String {
        format!("{}:invalidations", self.prefix)
    }

    /// The hash of state versions (`group:{id}`, `keys:{id}`, `settings`, `resync` → counter).
    pub(crate) fn versions(&self) -> String {
        format!("{}:versions", self.prefix)
    }

    /// The leader lease (`{node}#{token}`, with a TTL).
    pub(crate) fn leader(&self) -> String {
        format!("{}:leader", self.prefix)
    }

    /// The fencing counter: each lease taken gets the next token.
    pub(crate) fn fence(&self) -> String {
        format!("{}:leader:fence", self.prefix)
    }

    /// One node's heartbeat entry.
    pub(crate) fn node(&self, node_id: &str) -> String {
        format!("{}:node:{node_id}", self.prefix)
    }

    /// The channel of shared key state (blacklisting, cool-downs, restores, failures).
    pub(crate) fn key_channel(&self) -> String {
        format!("{}:keys", self.prefix)
    }

    /// One key's shared state (a hash: `failures`, `state`, `until`).
    pub(crate) fn key_state(&self, key_id: u64) -> String {
        format!("{}:key:{key_id}", self.prefix)
    }

    /// One key's admissions of the last minute (a sorted set by Redis time, `cluster::limits`).
    pub(crate) fn key_minute(&self, key_id: u64) -> String {
        format!("{}:limit:key:{key_id}:minute", self.prefix)
    }

    /// One key's admissions on UTC day `day` (days since 1970).
    pub(crate) fn key_day(&self, key_id: u64, day: u64) -> String {
        format!("{}:limit:key:{key_id}:day:{day}", self.prefix)
    }

    /// One group's admissions of the last minute (`group_rpm`).
    pub(crate) fn group_minute(&self, group: &str) -> String {
        format!("{}:limit:group:{group}:minute", self.prefix)
    }

    /// The cluster's one task slot (a hash: `owner`, `running`, `status`).
    pub(crate) fn task(&self) -> String {
        format!("{}:task", self.prefix)
    }

    /// The pattern matching every heartbeat entry.
    pub(crate) fn node_pattern(&self) -> String {
        format!("{}:node:*", self.prefix)
    }
}

/// The cluster's Redis. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Redis {
    client: redis::Client,
    pool: bb8::Pool<RedisConnectionManager>,
    pub(crate) names: Names,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A pool over `url`; connections are opened lazily, so a Redis that is down now is not an
    /// error here (the first command reports it). `ca_cert` (PEM) replaces the Mozilla roots a
    /// `rediss://` server's certificate must chain to.
    pub(crate) fn new(url: &SecretUrl, prefix: &str, ca_cert: Option<&[u8]>) -> Result<Self, RedisError> {
        let client = match ca_cert {
            Some(pem) => redis::Client::build_with_tls(
                url.expose(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                },
            )?,
            None => redis::Client::open(url.expose())?,
        };
        // The pool's connections take the same address and TLS parameters.
        let manager = RedisConnectionManager::new(client.get_connection_info().clone())?;
        let pool = bb8::Pool::builder()
            .max_size(4)
            .min_idle(Some(0))
            .connection_timeout(COMMAND_TIMEOUT)
            .build_unchecked(manager);
        Ok(Self {
            client,
            pool,
            names: Names::new(prefix),
        })
    }

    /// Runs one command (or script) on a pooled connection, bounded by [`COMMAND_TIMEOUT`].
    pub(crate) async fn run<T, F>(
        &self,
        command: impl FnOnce(MultiplexedConnection) -> F,
    ) -> Result<T, RedisError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let work = async {
            let conn = self.pool.get().await?.clone();
            Ok::<T, RedisError>(command(conn).await?)
        };
        tokio::time::timeout(COMMAND_TIMEOUT, work)
            .await
            .map_err(|_| RedisError::Timeout)?
    }

    /// Runs a script with its keys and arguments set (`SCRIPT.key(…).arg(…)`, the script a
    /// `static`, hashed once), bounded like any command.
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        self.run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await
    }

    /// A new connection in subscriber mode (the one pub/sub connection of this node).
    pub(crate) async fn pubsub(&self) -> Result<PubSub, RedisError> {
        tokio::time::timeout(COMMAND_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| RedisError::Timeout)?
            .map_err(RedisError::from)
    }
}

#[cfg(test)]
impl Redis {
    /// The test Redis (`TEST_REDIS_URL`, default `redis://127.0.0.1:6379`) under a prefix of
    /// this test alone; `None` (after a `SKIP` line) when it does not answer and `CI` is not
    /// `true`.
    ///
    /// # Panics
    ///
    /// Under `CI=true` when it does not answer.
    pub(crate) async fn for_test(test: &str) -> Option<Redis> {
        let url = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let prefix = format!("gptload_t_{test}_{}_{nanos}", std::process::id());
        let redis = Redis::new(&SecretUrl::new(url), &prefix, None).expect("a Redis URL");
        let ping = redis
            .run(|mut conn| async move { redis::cmd("PING").query_async::<String>(&mut conn).await })
            .await;
        match ping {
            Ok(_) => Some(redis),
            Err(err) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("{test}: the test Redis is unreachable ({err}); set TEST_REDIS_URL or start it")
            }
            Err(err) => {
                eprintln!("SKIP {test}: set TEST_REDIS_URL ({err})");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_under_the_prefix() {
        let names = Names::new("prod:");
        assert_eq!(names.channel(), "prod:invalidations");
        assert_eq!(names.versions(), "prod:versions");
        assert_eq!(names.leader(), "prod:leader");
        assert_eq!(names.fence(), "prod:leader:fence");
        assert_eq!(names.node("a"), "prod:node:a");
        assert_eq!(names.node_pattern(), "prod:node:*");
        assert_eq!(names.task(), "prod:task");
        assert_eq!(names.key_channel(), "prod:keys");
        assert_eq!(names.key_state(7), "prod:key:7");
        assert_eq!(names.key_minute(7), "prod:limit:key:7:minute");
        assert_eq!(names.key_day(7, 20_000), "prod:limit:key:7:day:20000");
        assert_eq!(names.group_minute("g"), "prod:limit:group:g:minute");
    }
}
