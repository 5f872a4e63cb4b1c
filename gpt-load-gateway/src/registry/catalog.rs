//! The groups as the proxy sees them: every table the proxy stack reads (proxy keys, upstreams,
//! rewriting rules and aggregates, and each group's [`GroupPolicy`]), changed one group at a
//! time by the [registry](super) and swapped in without a lock on the request path.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
};

use arc_swap::ArcSwap;
use gpt_load_tower::{
    auth::ProxyKeyTable,
    blacklist::HealthSettings,
    context::GroupName,
    limit::{GroupLimitTable, TokenReserve},
    log::LogSettings,
    retry::RetrySettings,
    rewrite::{ModelFilter, RewriteTable},
    upstream::Upstreams,
};

use super::{access_keys::ProxyKeys, group::Group};
use crate::{
    proxy::RecentFailures,
    settings::{EffectiveConfig, SystemSettings},
    upstream::ClientSettings,
};

/// The effective settings of one group, inserted into each request it serves.
#[derive(Debug)]
pub(crate) struct GroupPolicy {
    /// The group the settings are of (the same `Arc` the registry holds).
    pub(crate) group: Arc<Group>,
    pub(crate) effective: EffectiveConfig,
    pub(crate) retry: RetrySettings,
    pub(crate) health: HealthSettings,
    pub(crate) log: LogSettings,
    pub(crate) client: Arc<ClientSettings>,
    /// Output tokens reserved per request without a cap; only for a group with a `tpm` limit.
    pub(crate) token_reserve: Option<TokenReserve>,
}

impl GroupPolicy {
    /// The policy of `group` under the system `settings` (group > system > default).
    fn new(group: &Arc<Group>, settings: &SystemSettings) -> Self {
        let effective = settings.effective(&group.config);
        Self {
            group: Arc::clone(group),
            retry: RetrySettings {
                max_retries: effective.max_retries(),
            },
            health: HealthSettings {
                rules: group.failure_rules.clone(),
                ..effective.health_settings()
            },
            log: LogSettings {
                request_body: effective.enable_request_body_logging(),
            },
            client: Arc::new(ClientSettings::from_effective(&effective)),
            token_reserve: (effective.key_limits().tpm > 0 || effective.group_limits().tpm > 0)
                .then(|| TokenReserve(effective.tpm_reserve_tokens())),
            effective,
        }
    }
}

/// Every table the proxy stack reads, shared with the stack at start. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Catalog {
    /// The legacy proxy keys (global and per group) and the access keys.
    pub(crate) proxy_keys: ProxyKeys,
    pub(crate) upstreams: Upstreams,
    pub(crate) rewrite: RewriteTable,
    /// Each group's own request limits (`group_rpm`, `group_max_concurrency`).
    pub(crate) group_limits: GroupLimitTable,
    /// The last failed attempts per group (`GET /api/groups/{id}/key-health`).
    pub(crate) recent_failures: RecentFailures,
    /// Nodes alive in the cluster (1 alone): each node admits its share of a tokens-per-minute
    /// limit, which no node shares through Redis.
    live_nodes: Arc<AtomicU32>,
    policies: Arc<ArcSwap<Policies>>,
}

/// Policies by group name, hashed with foldhash: each request looks up its group's.
type Policies = HashMap<GroupName, Arc<GroupPolicy>, foldhash::fast::RandomState>;

impl Catalog {
    /// An empty catalog.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The policy of a group.
    pub(crate) fn policy(&self, group: &str) -> Option<Arc<GroupPolicy>> {
        self.policies.load().get(group).cloned()
    }

    /// The id of a group by name (for request logs).
    pub(crate) fn group_id(&self, group: &str) -> Option<i64> {
        self.policies.load().get(group).map(|p| p.group.id)
    }

    /// Every standard group's policy.
    pub(crate) fn standard_groups(&self) -> Vec<Arc<GroupPolicy>> {
        self.policies
            .load()
            .values()
            .filter(|p| !p.group.is_aggregate())
            .cloned()
            .collect()
    }

    /// Installs (or replaces) one group: its upstreams and rules, or its members when it is an
    /// aggregate, and its policy. Other groups' entries are left as they are (the same `Arc`s).
    /// Returns warnings about unusable stored values.
    pub(crate) fn install(
        &self,
        group: &Arc<Group>,
        members: Vec<(GroupName, u32)>,
        settings: &SystemSettings,
    ) -> Vec<String> {
        let mut warnings = Vec::new();
        let policy = Arc::new(GroupPolicy::new(group, settings));
        if group.is_aggregate() {
            self.rewrite.set_aggregate(group.name.clone(), members);
        } else {
            self.apply_rules(&policy);
            let list = group.upstreams.iter().map(|u| (u.url.as_str(), u.weight));
            if let Err(err) = self.upstreams.set_group(group.name.clone(), list) {
                warnings.push(format!("group '{}': {err}", group.name));
            }
        }
        warnings.extend(self.apply_model_filter(&policy));
        self.apply_limits(&policy);
        self.policies.rcu(|policies| {
            let mut policies = Policies::clone(policies);
            policies.insert(group.name.clone(), Arc::clone(&policy));
            policies
        });
        warnings
    }

    /// Replaces an aggregate's members only.
    pub(crate) fn set_members(&self, aggregate: &GroupName, members: Vec<(GroupName, u32)>) {
        self.rewrite.set_aggregate(aggregate.clone(), members);
    }

    /// Forgets a group (deleted, or renamed: installed again under its new name).
    pub(crate) fn remove(&self, name: &str) {
        self.upstreams.remove_group(name);
        self.rewrite.remove_group(name);
        self.group_limits.remove(name);
        self.recent_failures.forget(name);
        self.policies.rcu(|policies| {
            let mut policies = Policies::clone(policies);
            policies.remove(name);
            policies
        });
    }

    /// Rebuilds every policy under new system settings, and the rules that follow from them;
    /// upstreams are unchanged.
    pub(crate) fn refresh_policies<'a>(
        &self,
        groups: impl IntoIterator<Item = &'a Arc<Group>>,
        settings: &SystemSettings,
    ) {
        let policies: Policies = groups
            .into_iter()
            .map(|g| (g.name.clone(), Arc::new(GroupPolicy::new(g, settings))))
            .collect();
        for policy in policies.values() {
            if !policy.group.is_aggregate() {
                self.apply_rules(policy);
            }
            if let Some(warning) = self.apply_model_filter(policy) {
                tracing::warn!("{warning}");
            }
            self.apply_limits(policy);
        }
        self.policies.store(Arc::new(policies));
    }

    /// Hands the rewrite table a standard group's rules: its own, and those its effective
    /// settings add.
    fn apply_rules(&self, policy: &GroupPolicy) {
        let group = &policy.group;
        let rules = group
            .rules
            .clone()
            .include_stream_usage(policy.effective.include_stream_usage());
        self.rewrite.set_group(group.name.clone(), rules);
    }

    /// Hands the limit table the group's own limits (an aggregate's apply to requests through
    /// it, whichever sub-group serves them).
    fn apply_limits(&self, policy: &GroupPolicy) {
        let mut limits = policy.effective.group_limits();
        limits.tpm = self.node_share(limits.tpm);
        self.group_limits.set(policy.group.name.clone(), limits);
    }

    /// This node's share of a tokens-per-minute limit: the limit over the live nodes, at least 1
    /// (0 stays no limit).
    pub(crate) fn node_share(&self, tpm: u32) -> u32 {
        let nodes = self.live_nodes.load(Ordering::Relaxed).max(1);
        if tpm == 0 { 0 } else { (tpm / nodes).max(1) }
    }

    /// Records how many nodes are alive; `true` when that changed.
    pub(crate) fn set_live_nodes(&self, nodes: usize) -> bool {
        let nodes = u32::try_from(nodes).unwrap_or(u32::MAX).max(1);
        self.proxy_keys.access.set_nodes(nodes as usize);
        self.live_nodes.swap(nodes, Ordering::Relaxed) != nodes
    }

    /// Hands the rewrite table the models the group serves (compiled here, once per change). A
    /// stored pattern that no longer compiles (saved by another version) filters nothing and is
    /// reported.
    fn apply_model_filter(&self, policy: &GroupPolicy) -> Option<String> {
        let name = policy.group.name.clone();
        match policy.effective.model_filter() {
            Ok(filter) => {
                self.rewrite.set_model_filter(name, filter);
                None
            }
            Err(err) => {
                self.rewrite
                    .set_model_filter(name.clone(), ModelFilter::default());
                Some(format!("group '{name}': {err}; its models are not filtered"))
            }
        }
    }

    /// Rebuilds the proxy key table: the global keys from the settings plus each group's own.
    pub(crate) fn set_proxy_keys<'a>(
        &self,
        groups: impl IntoIterator<Item = &'a Group>,
        settings: &SystemSettings,
    ) {
        let mut table = ProxyKeyTable::new().global(settings.proxy_keys.iter().map(String::as_str));
        for group in groups {
            table = table.group(
                group.name.clone(),
                group.channel,
                group.proxy_keys.iter().map(String::as_str),
            );
        }
        self.proxy_keys.legacy.store(table);
    }
}
