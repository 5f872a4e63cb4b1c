//! Shared key state: failures counted across the cluster, and blacklisting, cool-downs and
//! restores that reach every node within one message.
//!
//! Each key that failed has a hash `{prefix}:key:{id}` (`failures`, `state`, `until`), changed
//! only by the scripts below, each of which also publishes what changed on `{prefix}:keys`. A
//! counted failure on any node adds one to the key's count; the script that brings the count to
//! the threshold is the one that blacklists the key, so three nodes seeing one failure each on a
//! threshold-3 key blacklist it exactly once. Every node applies the messages of the others to
//! its memory pool; a node applies its own changes at once.
//!
//! Nothing here is on the request path: the proxy's pool hands changes to this node's task
//! through a channel (see `registry::ProxyKeyPool`), and a success makes no call at all unless
//! the key had failures. Hashes expire a day after their last change, and Redis may lose them:
//! the stored status (written behind by every node) stays the truth for keys at rest.

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use gpt_load_tower::{
    context::GroupName,
    keys::{KeyId, KeyPool, KeyState, Report, SelectedKey},
};
use redis::Script;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc::UnboundedReceiver, watch};

use super::redis::{Redis, RedisError};
use crate::registry::{KeyReported, KeyStateChange, Registry};

/// How long a key's shared state outlives its last change.
const KEY_STATE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// A counted failure. KEYS: the key's hash, the channel. ARGV: threshold, TTL in ms, the
/// `failing` message, the `invalid` message. Returns `{blacklisted now (0/1), failures,
/// invalid (0/1)}`: a key already blacklisted stays so without a second message, and the node
/// that reported it (which had it selectable, from a stale view) blacklists it again.
const FAIL_LUA: &str = r"
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if redis.call('HGET', KEYS[1], 'state') == 'invalid' then
  return {0, failures, 1}
end
local threshold = tonumber(ARGV[1])
if threshold > 0 and failures >= threshold then
  redis.call('HSET', KEYS[1], 'state', 'invalid')
  redis.call('PUBLISH', KEYS[2], ARGV[4])
  return {1, failures, 1}
end
redis.call('PUBLISH', KEYS[2], ARGV[3])
return {0, failures, 0}
";
static FAIL: LazyLock<Script> = LazyLock::new(|| Script::new(FAIL_LUA));

/// A new state for a key that is not blacklisted (`cooling` with its deadline, or `invalid`).
/// KEYS: the key's hash, the channel. ARGV: state, deadline (ms since the epoch, or 0), TTL in
/// ms, the message. Returns 1 when the state was set.
const SET_STATE_LUA: &str = r"
if redis.call('HGET', KEYS[1], 'state') == 'invalid' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'until', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', KEYS[2], ARGV[4])
return 1
";
static SET_STATE: LazyLock<Script> = LazyLock::new(|| Script::new(SET_STATE_LUA));

/// A key active again: its shared state is dropped. KEYS: the key's hash, the channel. ARGV:
/// the message.
const RECOVER_LUA: &str = r"
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', KEYS[2], ARGV[1])
return 1
";
static RECOVER: LazyLock<Script> = LazyLock::new(|| Script::new(RECOVER_LUA));

/// A key's state as published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SharedState {
    /// One more counted failure (below the threshold).
    Failing,
    /// Blacklisted.
    Invalid,
    /// Cooling until `until`.
    Cooling,
    /// Active again, its failures forgotten.
    Active,
    /// Out of rotation until an operator enables it.
    Disabled,
    /// Resting for one model (`model`) until `until`; still serving others.
    #[serde(rename = "model_cooling")]
    ModelCooling,
}

impl SharedState {
    /// The state's name in messages and in the key's hash.
    fn as_str(self) -> &'static str {
        match self {
            Self::Failing => "failing",
            Self::Invalid => "invalid",
            Self::Cooling => "cooling",
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::ModelCooling => "model_cooling",
        }
    }
}

/// One message on `{prefix}:keys`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyMessage {
    pub(crate) group: String,
    pub(crate) id: u64,
    pub(crate) state: SharedState,
    /// The end of a cool-down, in milliseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) until: Option<u64>,
    /// The model a `model_cooling` key rests for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) model: Option<String>,
    pub(crate) node: String,
}

impl KeyMessage {
    fn encode(reported: &KeyReported, state: SharedState, until: Option<u64>, node: &str) -> String {
        let message = Self {
            group: reported.group.as_str().to_owned(),
            id: reported.key.0,
            state,
            until,
            model: match &reported.change {
                KeyStateChange::ModelRested { model, .. } => Some(model.to_string()),
                _ => None,
            },
            node: node.to_owned(),
        };
        serde_json::to_string(&message).unwrap_or_default()
    }
}

/// This node's key-state task: counts and publishes the changes the proxy's pool hands it.
pub(crate) async fn run(
    redis: Redis,
    node_id: String,
    registry: Registry,
    mut reports: UnboundedReceiver<KeyReported>,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            reported = reports.recv() => match reported {
                Some(reported) => share(&redis, &node_id, &registry, &reported).await,
                None => return,
            },
            _ = stopping.changed() => return,
        }
    }
}

async fn share(redis: &Redis, node: &str, registry: &Registry, reported: &KeyReported) {
    let hash = redis.names.key_state(reported.key.0);
    let channel = redis.names.key_channel();
    let result = match reported.change.clone() {
        KeyStateChange::Failed { threshold } => {
            let failing = KeyMessage::encode(reported, SharedState::Failing, None, node);
            let invalid = KeyMessage::encode(reported, SharedState::Invalid, None, node);
            match count_failure(redis, &hash, &channel, threshold, &failing, &invalid).await {
                Ok(counted) => {
                    if counted.blacklisted {
                        metrics::counter!("gpt_load_cluster_keys_blacklisted_total").increment(1);
                        tracing::info!(group = %reported.group, key = reported.key.0, failures = counted.failures, "key blacklisted across the cluster");
                    }
                    if counted.invalid {
                        registry
                            .pool()
                            .set_state(reported.group.as_str(), reported.key, KeyState::Invalid);
                    }
                    Ok(())
                }
                Err(err) => {
                    blacklist_locally(registry, reported, threshold);
                    Err(err)
                }
            }
        }
        KeyStateChange::Succeeded => redis
            .run(|mut conn| async move {
                redis::cmd("HDEL")
                    .arg(hash)
                    .arg("failures")
                    .query_async::<i64>(&mut conn)
                    .await
            })
            .await
            .map(drop),
        KeyStateChange::Cooled { until_ms } => {
            set_state(redis, reported, node, SharedState::Cooling, Some(until_ms)).await
        }
        KeyStateChange::Invalidated => set_state(redis, reported, node, SharedState::Invalid, None).await,
        KeyStateChange::Disabled => set_state(redis, reported, node, SharedState::Disabled, None).await,
        // Model rests live in memory only (the provider names them again after a restart):
        // the message is all there is to share.
        KeyStateChange::ModelRested { until_ms, .. } => {
            let message = KeyMessage::encode(reported, SharedState::ModelCooling, Some(until_ms), node);
            redis
                .run(|mut conn| async move {
                    redis::cmd("PUBLISH")
                        .arg(channel)
                        .arg(message)
                        .query_async::<i64>(&mut conn)
                        .await
                })
                .await
                .map(drop)
        }
        KeyStateChange::Recovered => {
            let message = KeyMessage::encode(reported, SharedState::Active, None, node);
            redis
                .invoke::<i64>(RECOVER.key(&hash).key(&channel).arg(message))
                .await
                .map(drop)
        }
    };
    if let Err(err) = result {
        metrics::counter!("gpt_load_cluster_redis_errors_total").increment(1);
        tracing::warn!(error = %err, key = reported.key.0, "a key's state could not be shared; it holds on this node");
    }
}

/// Sets a key that is not blacklisted to `state` (`cooling` until `until_ms`, `invalid` or
/// `disabled`) and publishes it.
async fn set_state(
    redis: &Redis,
    reported: &KeyReported,
    node: &str,
    state: SharedState,
    until_ms: Option<u64>,
) -> Result<(), RedisError> {
    let message = KeyMessage::encode(reported, state, until_ms, node);
    redis
        .invoke::<i64>(
            SET_STATE
                .key(redis.names.key_state(reported.key.0))
                .key(redis.names.key_channel())
                .arg(state.as_str())
                .arg(until_ms.unwrap_or(0))
                .arg(KEY_STATE_TTL.as_millis() as u64)
                .arg(message),
        )
        .await
        .map(drop)
}

/// What the cluster made of one counted failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counted {
    /// This failure blacklisted the key (once across the cluster).
    blacklisted: bool,
    /// The key's failures across the cluster.
    failures: i64,
    /// The key is blacklisted (by this failure or before it).
    invalid: bool,
}

async fn count_failure(
    redis: &Redis,
    hash: &str,
    channel: &str,
    threshold: u32,
    failing: &str,
    invalid: &str,
) -> Result<Counted, RedisError> {
    let ttl = KEY_STATE_TTL.as_millis() as u64;
    let (blacklisted, failures, now_invalid) = redis
        .invoke::<(i64, i64, i64)>(
            FAIL.key(hash)
                .key(channel)
                .arg(threshold)
                .arg(ttl)
                .arg(failing)
                .arg(invalid),
        )
        .await?;
    Ok(Counted {
        blacklisted: blacklisted == 1,
        failures,
        invalid: now_invalid == 1,
    })
}

/// Without Redis, this node's own count decides, as on a single node.
fn blacklist_locally(registry: &Registry, reported: &KeyReported, threshold: u32) {
    let pool = registry.pool();
    if let Some(slot) = pool.get(reported.group.as_str(), reported.key)
        && threshold > 0
        && slot.consecutive_failures() >= threshold
    {
        pool.set_state(reported.group.as_str(), reported.key, KeyState::Invalid);
    }
}

/// How long from now until the wall-clock time `until_ms`; `None` when it has passed.
fn rest_until(until_ms: u64) -> Option<Duration> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    (until_ms > now).then(|| Duration::from_millis(until_ms - now))
}

/// Applies another node's message to this node's memory pool.
pub(crate) fn apply(registry: &Registry, node_id: &str, payload: &str) {
    let Ok(message) = serde_json::from_str::<KeyMessage>(payload) else {
        tracing::warn!("a key-state message that is not ours was ignored");
        return;
    };
    if message.node == node_id {
        return;
    }
    let pool = registry.pool();
    let (group, key) = (message.group.as_str(), KeyId(message.id));
    match message.state {
        SharedState::Invalid => {
            pool.set_state(group, key, KeyState::Invalid);
        }
        SharedState::Active => {
            pool.set_state(group, key, KeyState::Active);
        }
        SharedState::Disabled => {
            pool.set_state(group, key, KeyState::Disabled);
        }
        SharedState::ModelCooling => {
            let (Some(model), Some(rest), Some(slot)) = (
                message.model.as_deref(),
                message.until.and_then(rest_until),
                pool.get(group, key),
            ) else {
                return;
            };
            pool.rest_model(&SelectedKey::new(GroupName::from(group), slot), model, rest);
        }
        SharedState::Failing | SharedState::Cooling => {
            let Some(slot) = pool.get(group, key) else {
                return;
            };
            let report = match (message.state, message.until) {
                // Known to have failures here too, so that a success here resets the count.
                (SharedState::Failing, _) => Report::Failure {
                    blacklist_threshold: 0,
                },
                (_, Some(until)) => match rest_until(until) {
                    Some(duration) => Report::CoolDown { duration },
                    None => return,
                },
                _ => return,
            };
            pool.report(
                &SelectedKey::new(GroupName::from(group), Arc::clone(&slot)),
                report,
            );
        }
    }
    metrics::counter!("gpt_load_cluster_key_states_applied_total").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The failure script against a real Redis: exact across reporters, one blacklisting, a
    /// stale reporter told the key is blacklisted, and a restore that starts the count over.
    #[tokio::test]
    async fn failures_are_counted_once_across_nodes_and_blacklist_once() {
        let Some(redis) = Redis::for_test("key_state_failures").await else {
            return;
        };
        let (hash, channel) = (redis.names.key_state(7), redis.names.key_channel());
        let fail = || count_failure(&redis, &hash, &channel, 3, "{}", "{}");
        let counted = [
            fail().await.unwrap(),
            fail().await.unwrap(),
            fail().await.unwrap(),
        ];
        let seen: Vec<(bool, i64, bool)> = counted
            .iter()
            .map(|c| (c.blacklisted, c.failures, c.invalid))
            .collect();
        assert_eq!(seen, [(false, 1, false), (false, 2, false), (true, 3, true)]);
        // A node that still had the key selectable reports again: it learns the key is dead,
        // and nothing is blacklisted a second time.
        let late = fail().await.unwrap();
        assert_eq!((late.blacklisted, late.failures, late.invalid), (false, 4, true));

        redis
            .invoke::<i64>(RECOVER.key(&hash).key(&channel).arg("{}"))
            .await
            .unwrap();
        let fresh = fail().await.unwrap();
        assert_eq!(
            (fresh.blacklisted, fresh.failures, fresh.invalid),
            (false, 1, false)
        );
        let _: i64 = redis
            .run(|mut conn| async move { redis::cmd("DEL").arg(hash).query_async(&mut conn).await })
            .await
            .unwrap();
    }

    #[test]
    fn messages_have_the_documented_shape() {
        let reported = KeyReported {
            group: GroupName::from("openai"),
            key: KeyId(7),
            change: KeyStateChange::Cooled { until_ms: 1_000 },
        };
        let text = KeyMessage::encode(&reported, SharedState::Cooling, Some(1_000), "a");
        assert_eq!(
            text,
            r#"{"group":"openai","id":7,"state":"cooling","until":1000,"node":"a"}"#
        );
        let rested = KeyReported {
            change: KeyStateChange::ModelRested {
                model: "gemini-2.5-pro".into(),
                until_ms: 2_000,
            },
            ..reported.clone()
        };
        assert_eq!(
            KeyMessage::encode(&rested, SharedState::ModelCooling, Some(2_000), "a"),
            r#"{"group":"openai","id":7,"state":"model_cooling","until":2000,"model":"gemini-2.5-pro","node":"a"}"#
        );
        let text = KeyMessage::encode(&reported, SharedState::Invalid, None, "b");
        let back: KeyMessage = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (back.state, back.until, back.node.as_str()),
            (SharedState::Invalid, None, "b")
        );
    }
}
