//! The key pool as the proxy sees it: selection from this node's memory, and reports that, in a
//! cluster, also count in the cluster's shared key state.
//!
//! On a single node (or while Redis is unreachable) a report goes to the memory pool as it is.
//! In a cluster the memory pool still counts every failure, but the blacklist decision is the
//! cluster's: a counted failure is handed to the cluster's key-state task, which counts it in
//! Redis and blacklists the key on every node once the cluster-wide count reaches the threshold.
//! A success makes no Redis call unless the key had failures to reset, so the happy path stays
//! in memory. The one exception: in a cluster an attempt on a key with `key_rpm` or `key_rpd` is
//! admitted by the cluster's count ([`SharedLimits`]), one Redis script.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use gpt_load_tower::{
    context::GroupName,
    keys::{
        ExcludedKeys, KeyId, KeyPool, KeyState, LimitRefusal, MemoryKeyPool, Report, SelectedKey,
        SharedAdmission,
    },
};
use tokio::sync::mpsc::UnboundedSender;

use crate::cluster::SharedLimits;

/// What happened to a key on this node that the cluster must count or hear of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyStateChange {
    /// A counted failure; the key is blacklisted when the cluster's count reaches `threshold`
    /// (0 = never).
    Failed { threshold: u32 },
    /// A success after failures: the count starts over.
    Succeeded,
    /// Rate limited or out of quota until this wall-clock time (milliseconds since the epoch).
    Cooled { until_ms: u64 },
    /// Known dead: blacklisted at once.
    Invalidated,
    /// Taken out of rotation by a rule until an operator enables it.
    Disabled,
    /// Active again (restored by an operator or by validation), its failures forgotten.
    Recovered,
    /// Out of `model`'s quota until this wall-clock time (milliseconds since the epoch); the key
    /// still serves other models.
    ModelRested { model: Arc<str>, until_ms: u64 },
}

/// One [`KeyStateChange`] of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyReported {
    pub(crate) group: GroupName,
    pub(crate) key: KeyId,
    pub(crate) change: KeyStateChange,
}

/// Where key-state changes go in a cluster, and whether Redis is there to count them.
#[derive(Clone, Debug)]
pub(crate) struct SharedKeyStates {
    reports: UnboundedSender<KeyReported>,
    connected: Arc<AtomicBool>,
}

impl SharedKeyStates {
    pub(crate) fn new(reports: UnboundedSender<KeyReported>, connected: Arc<AtomicBool>) -> Self {
        Self { reports, connected }
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub(crate) fn send(&self, group: &GroupName, key: KeyId, change: KeyStateChange) {
        // The receiver ends only at shutdown; a change then has nobody left to count it.
        let _ = self.reports.send(KeyReported {
            group: group.clone(),
            key,
            change,
        });
    }
}

/// The registry's memory pool behind the proxy's [`KeyPool`]. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct ProxyKeyPool {
    local: MemoryKeyPool,
    shared: Arc<OnceLock<SharedKeyStates>>,
    limits: Arc<OnceLock<SharedLimits>>,
}

impl ProxyKeyPool {
    pub(crate) fn new(local: MemoryKeyPool) -> Self {
        Self {
            local,
            shared: Arc::default(),
            limits: Arc::default(),
        }
    }

    /// The memory pool.
    pub(crate) fn local(&self) -> &MemoryKeyPool {
        &self.local
    }

    /// Counts key state in the cluster from now on (once, when the node joins one).
    pub(crate) fn share(&self, shared: SharedKeyStates) {
        if self.shared.set(shared).is_err() {
            tracing::warn!("the key pool already shares its state");
        }
    }

    /// Counts key limits across the cluster from now on (once, when the node joins one).
    pub(crate) fn share_limits(&self, limits: SharedLimits) {
        if self.limits.set(limits).is_err() {
            tracing::warn!("the key pool already shares its limits");
        }
    }

    /// The cluster's key state, when this node is in a cluster.
    pub(crate) fn shared(&self) -> Option<&SharedKeyStates> {
        self.shared.get()
    }
}

impl std::fmt::Debug for ProxyKeyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyKeyPool")
            .field("local", &self.local)
            .field("shared", &self.shared.get().is_some())
            .field("shared_limits", &self.limits.get().is_some())
            .finish()
    }
}

/// Milliseconds since the epoch, `after` from now: a deadline every node reads alike (their
/// clocks kept in step by NTP).
fn wall_clock_ms(after: Duration) -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from((now + after).as_millis()).unwrap_or(u64::MAX)
}

impl KeyPool for ProxyKeyPool {
    #[inline]
    fn select(&self, group: &str, excluded: &ExcludedKeys) -> Option<SelectedKey> {
        self.local.select(group, excluded)
    }

    #[inline]
    fn has_candidate(&self, group: &str, excluded: &ExcludedKeys) -> bool {
        self.local.has_candidate(group, excluded)
    }

    #[inline]
    fn select_for(&self, group: &str, excluded: &ExcludedKeys, model: Option<&str>) -> Option<SelectedKey> {
        self.local.select_for(group, excluded, model)
    }

    #[inline]
    fn has_candidate_for(&self, group: &str, excluded: &ExcludedKeys, model: Option<&str>) -> bool {
        self.local.has_candidate_for(group, excluded, model)
    }

    fn limit_refusal(
        &self,
        group: &str,
        excluded: &ExcludedKeys,
        model: Option<&str>,
    ) -> Option<LimitRefusal> {
        self.local.limit_refusal(group, excluded, model)
    }

    /// In a cluster, a key with `key_rpm` or `key_rpd` is admitted by the cluster's count too
    /// (one Redis script); other keys, and single nodes, are not asked about.
    #[inline]
    fn admit_shared(&self, key: &SelectedKey) -> Option<SharedAdmission> {
        self.limits.get()?.admit_key(key.id(), key.slot().limits())
    }

    fn refused_shared(&self, key: &SelectedKey, refusal: LimitRefusal) {
        self.local.refused_shared(key, refusal);
    }

    /// Rests the model here at once and, in a cluster, on every node by one message.
    fn rest_model(&self, key: &SelectedKey, model: &str, duration: Duration) {
        self.local.rest_model(key, model, duration);
        if let Some(shared) = self.shared.get().filter(|s| s.is_connected()) {
            let change = KeyStateChange::ModelRested {
                model: model.into(),
                until_ms: wall_clock_ms(duration),
            };
            shared.send(key.group(), key.slot().id(), change);
        }
    }

    fn report(&self, key: &SelectedKey, report: Report) {
        let Some(shared) = self.shared.get().filter(|s| s.is_connected()) else {
            return self.local.report(key, report);
        };
        // A pending key's first answer makes it active here; the other nodes hear it as a
        // recovery (its only Redis call).
        let pending = || key.slot().state() == KeyState::Pending;
        let change = match report {
            Report::Success | Report::Answered if pending() => Some(KeyStateChange::Recovered),
            Report::Success if key.slot().consecutive_failures() == 0 => None,
            Report::Success => Some(KeyStateChange::Succeeded),
            Report::Failure { blacklist_threshold } => {
                // Counted here too (for the stored failure count), blacklisted by the cluster.
                self.local.report(
                    key,
                    Report::Failure {
                        blacklist_threshold: 0,
                    },
                );
                shared.send(
                    key.group(),
                    key.slot().id(),
                    KeyStateChange::Failed {
                        threshold: blacklist_threshold,
                    },
                );
                return;
            }
            Report::CoolDown { duration } => Some(KeyStateChange::Cooled {
                until_ms: wall_clock_ms(duration),
            }),
            Report::Invalidate => Some(KeyStateChange::Invalidated),
            Report::Disable => Some(KeyStateChange::Disabled),
            _ => None,
        };
        self.local.report(key, report);
        if let Some(change) = change {
            shared.send(key.group(), key.slot().id(), change);
        }
    }
}

#[cfg(test)]
mod tests {
    use gpt_load_tower::keys::KeySlot;
    use tokio::sync::mpsc;

    use super::*;

    fn pool_with_one_key(
        connected: bool,
    ) -> (ProxyKeyPool, SelectedKey, mpsc::UnboundedReceiver<KeyReported>) {
        let local = MemoryKeyPool::new();
        local.set_group("g".into(), [KeySlot::new(KeyId(1), "sk-one".into())]);
        let pool = ProxyKeyPool::new(local);
        let (tx, rx) = mpsc::unbounded_channel();
        pool.share(SharedKeyStates::new(tx, Arc::new(AtomicBool::new(connected))));
        let key = pool.select("g", &ExcludedKeys::default()).unwrap();
        (pool, key, rx)
    }

    fn changes(rx: &mut mpsc::UnboundedReceiver<KeyReported>) -> Vec<KeyStateChange> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|r| r.change)
            .collect()
    }

    #[test]
    fn in_a_cluster_the_cluster_decides_the_blacklist_and_a_clean_success_stays_local() {
        let (pool, key, mut rx) = pool_with_one_key(true);
        pool.report(&key, Report::Success);
        assert_eq!(changes(&mut rx), [], "a success without failures makes no call");
        for _ in 0..3 {
            pool.report(
                &key,
                Report::Failure {
                    blacklist_threshold: 3,
                },
            );
        }
        assert_eq!(
            key.slot().state(),
            KeyState::Degraded,
            "not blacklisted by this node's count"
        );
        assert_eq!(key.slot().consecutive_failures(), 3);
        assert_eq!(changes(&mut rx), vec![KeyStateChange::Failed { threshold: 3 }; 3]);
        pool.report(&key, Report::Success);
        assert_eq!(changes(&mut rx), [KeyStateChange::Succeeded]);
        assert_eq!(key.slot().consecutive_failures(), 0);
        pool.report(&key, Report::Invalidate);
        assert_eq!(key.slot().state(), KeyState::Invalid);
        assert_eq!(changes(&mut rx), [KeyStateChange::Invalidated]);
    }

    #[test]
    fn without_redis_this_nodes_count_decides() {
        let (pool, key, mut rx) = pool_with_one_key(false);
        for _ in 0..3 {
            pool.report(
                &key,
                Report::Failure {
                    blacklist_threshold: 3,
                },
            );
        }
        assert_eq!(key.slot().state(), KeyState::Invalid);
        assert_eq!(changes(&mut rx), []);
    }

    #[test]
    fn a_model_rest_is_shared_and_stays_local_without_redis() {
        let (pool, key, mut rx) = pool_with_one_key(true);
        pool.rest_model(&key, "gemini-2.5-pro", Duration::from_secs(60));
        assert!(!key.slot().is_usable_for(Some("gemini-2.5-pro")));
        let shared = changes(&mut rx);
        assert!(
            matches!(&shared[..], [KeyStateChange::ModelRested { model, .. }] if &**model == "gemini-2.5-pro"),
            "{shared:?}"
        );
        let (pool, key, mut rx) = pool_with_one_key(false);
        pool.rest_model(&key, "gemini-2.5-pro", Duration::from_secs(60));
        assert!(!key.slot().is_usable_for(Some("gemini-2.5-pro")));
        assert_eq!(changes(&mut rx), []);
    }

    #[test]
    fn a_pending_keys_first_answer_activates_it_on_every_node() {
        let local = MemoryKeyPool::new();
        local.set_group(
            "g".into(),
            [KeySlot::with_state(
                KeyId(1),
                "sk-new".into(),
                KeyState::Pending,
                0,
            )],
        );
        let pool = ProxyKeyPool::new(local);
        let (tx, mut rx) = mpsc::unbounded_channel();
        pool.share(SharedKeyStates::new(tx, Arc::new(AtomicBool::new(true))));
        let key = pool.select("g", &ExcludedKeys::default()).unwrap();
        pool.report(&key, Report::Success);
        assert_eq!(key.slot().state(), KeyState::Active);
        assert_eq!(changes(&mut rx), [KeyStateChange::Recovered]);
        pool.report(&key, Report::Success);
        assert_eq!(changes(&mut rx), [], "then a success is local again");
    }
}
