//! The groups as the proxy sees them, rebuilt from the database and the settings whenever either
//! changes, and swapped in without a lock on the request path.
//!
//! One rebuild feeds every registry of the stack: proxy keys (global from the settings plus each
//! group's own), upstreams, rewriting rules and aggregates, and each group's [`GroupPolicy`] (the
//! effective retry, failover, blacklist, logging and client settings: group > system > default).

use std::{collections::HashMap, sync::Arc};

use arc_swap::ArcSwap;
use gpt_load_tower::{
    auth::{ProxyKeyTable, StaticProxyKeys},
    blacklist::HealthSettings,
    channel::ChannelKind,
    context::GroupName,
    log::LogSettings,
    retry::RetrySettings,
    rewrite::{GroupRules, HeaderRule, RewriteTable},
    upstream::Upstreams,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{
    crypto::{KeyCipher, proxy_keys},
    models::GroupRow,
    proxy::{ClientSettings, ProxySetting},
    repo::groups::SubGroupLink,
    settings::{EffectiveConfig, GroupConfig, SystemSettings},
};

/// The effective settings of one group, inserted into each request it serves.
#[derive(Debug)]
pub(crate) struct GroupPolicy {
    pub(crate) id: i64,
    pub(crate) name: GroupName,
    pub(crate) channel: ChannelKind,
    pub(crate) test_model: String,
    pub(crate) validation_endpoint: Option<String>,
    pub(crate) effective: EffectiveConfig,
    pub(crate) retry: RetrySettings,
    pub(crate) health: HealthSettings,
    pub(crate) log: LogSettings,
    pub(crate) client: Arc<ClientSettings>,
    pub(crate) aggregate: bool,
}

/// Every registry the proxy stack reads, shared with the stack at start.
#[derive(Clone, Default)]
pub(crate) struct Catalog {
    pub(crate) proxy_keys: StaticProxyKeys,
    pub(crate) upstreams: Upstreams,
    pub(crate) rewrite: RewriteTable,
    policies: Arc<ArcSwap<HashMap<GroupName, Arc<GroupPolicy>>>>,
}

#[derive(Deserialize)]
struct UpstreamEntry {
    url: String,
    #[serde(default = "one")]
    weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
struct HeaderRuleEntry {
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default = "set")]
    action: String,
}

fn set() -> String {
    "set".to_owned()
}

/// Client settings from a group's effective configuration.
pub(crate) fn client_settings(effective: &EffectiveConfig) -> ClientSettings {
    ClientSettings {
        connect_timeout: effective.connect_timeout(),
        response_header_timeout: effective.response_header_timeout(),
        request_timeout: effective.request_timeout(),
        stream_idle_timeout: effective.stream_idle_timeout(),
        idle_conn_timeout: effective.idle_conn_timeout(),
        max_idle_per_host: effective.max_idle_conns_per_host() as usize,
        proxy: effective
            .proxy_url()
            .map_or(ProxySetting::FromEnvironment, |url| {
                ProxySetting::Url(url.to_owned())
            }),
    }
}

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
        self.policies.load().get(group).map(|p| p.id)
    }

    /// Every standard group's policy.
    pub(crate) fn standard_groups(&self) -> Vec<Arc<GroupPolicy>> {
        self.policies
            .load()
            .values()
            .filter(|p| !p.aggregate)
            .cloned()
            .collect()
    }

    /// Rebuilds every registry from `groups` (their proxy keys decrypted with `cipher`, once
    /// here, never on the request path); returns warnings about unusable stored values
    /// (the rest of the group is still served).
    pub(crate) fn rebuild(
        &self,
        groups: &[GroupRow],
        links: &[SubGroupLink],
        settings: &SystemSettings,
        cipher: &KeyCipher,
    ) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut table = ProxyKeyTable::new().global(settings.proxy_keys.iter().map(String::as_str));
        let mut policies = HashMap::new();
        let names: HashMap<i64, &str> = groups.iter().map(|g| (g.id, g.name.as_str())).collect();
        let mut upstream_groups = Vec::new();
        for row in groups {
            let Ok(channel) = row.channel_type.parse::<ChannelKind>() else {
                warnings.push(format!(
                    "group '{}': unknown channel_type '{}'; not served",
                    row.name, row.channel_type
                ));
                continue;
            };
            let name = GroupName::from(row.name.as_str());
            let own_keys = proxy_keys::open_or_none(cipher, &row.proxy_keys, &row.name);
            let own_keys = own_keys.split(',').map(str::trim).filter(|k| !k.is_empty());
            table = table.group(name.clone(), channel, own_keys);
            let aggregate = row.group_type == "aggregate";
            if aggregate {
                let members = links.iter().filter(|l| l.group_id == row.id).filter_map(|l| {
                    names
                        .get(&l.sub_group_id)
                        .map(|n| (GroupName::from(*n), l.weight.max(0) as u32))
                });
                self.rewrite
                    .set_aggregate(name.clone(), members.collect::<Vec<_>>());
            } else {
                self.rewrite.set_group(name.clone(), rules_of(row, &mut warnings));
                let entries: Vec<UpstreamEntry> = serde_json::from_str(&row.upstreams).unwrap_or_else(|_| {
                    warnings.push(format!(
                        "group '{}': upstreams are not a JSON list of {{url, weight}}",
                        row.name
                    ));
                    Vec::new()
                });
                let list: Vec<(String, u32)> = entries.into_iter().map(|u| (u.url, u.weight)).collect();
                match self
                    .upstreams
                    .set_group(name.clone(), list.iter().map(|(u, w)| (u.as_str(), *w)))
                {
                    Ok(()) => upstream_groups.push(name.clone()),
                    Err(err) => warnings.push(format!("group '{}': {err}", row.name)),
                }
            }
            let config = GroupConfig::from_stored(&row.name, &row.config);
            let effective = settings.effective(&config);
            let policy = GroupPolicy {
                id: row.id,
                name: name.clone(),
                channel,
                test_model: row.test_model.clone(),
                validation_endpoint: Some(row.validation_endpoint.clone()).filter(|e| !e.trim().is_empty()),
                retry: RetrySettings {
                    max_retries: effective.max_retries(),
                },
                health: effective.health_settings(),
                log: LogSettings {
                    request_body: effective.enable_request_body_logging(),
                },
                client: Arc::new(client_settings(&effective)),
                effective,
                aggregate,
            };
            policies.insert(name, Arc::new(policy));
        }
        // Forget groups that were deleted.
        let old = self.policies.load();
        for gone in old.keys().filter(|g| !policies.contains_key(g.as_str())) {
            self.upstreams.remove_group(gone.as_str());
            self.rewrite.remove_group(gone.as_str());
        }
        self.proxy_keys.store(table);
        self.policies.store(Arc::new(policies));
        warnings
    }
}

fn rules_of(row: &GroupRow, warnings: &mut Vec<String>) -> GroupRules {
    let mut rules = GroupRules::new().strict_model(row.model_redirect_strict);
    match serde_json::from_str::<Value>(&row.param_overrides) {
        Ok(Value::Object(map)) => rules = rules.param_overrides(map),
        Ok(_) | Err(_) if row.param_overrides.trim().is_empty() => {}
        _ => warnings.push(format!(
            "group '{}': param_overrides is not a JSON object",
            row.name
        )),
    }
    match serde_json::from_str::<Map<String, Value>>(&row.model_redirect_rules) {
        Ok(map) => {
            for (from, to) in map {
                match to {
                    Value::String(to) => rules = rules.redirect_model(from, to),
                    _ => warnings.push(format!(
                        "group '{}': redirect rule for '{from}' is not a string",
                        row.name
                    )),
                }
            }
        }
        Err(_) if row.model_redirect_rules.trim().is_empty() => {}
        Err(_) => warnings.push(format!(
            "group '{}': model_redirect_rules is not a JSON object",
            row.name
        )),
    }
    match serde_json::from_str::<Vec<HeaderRuleEntry>>(&row.header_rules) {
        Ok(entries) => {
            for entry in entries {
                let rule = match entry.action.as_str() {
                    "remove" => HeaderRule::remove(&entry.key),
                    _ => HeaderRule::set(&entry.key, &entry.value),
                };
                match rule {
                    Ok(rule) => rules = rules.header_rule(rule),
                    Err(err) => warnings.push(format!("group '{}': {err}", row.name)),
                }
            }
        }
        Err(_) if row.header_rules.trim().is_empty() => {}
        Err(_) => warnings.push(format!("group '{}': header_rules is not a JSON list", row.name)),
    }
    rules
}
