//! A group as the gateway runs it: its row parsed once (channel, kind, upstreams, rewriting
//! rules, overrides, decrypted proxy keys) when it enters the registry, never on the request
//! path and never again until the row changes.

use chrono::NaiveDateTime;
use gpt_load_tower::{
    blacklist::RuleSet,
    channel::ChannelKind,
    context::GroupName,
    rewrite::{GroupRules, HeaderRule},
};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{
    crypto::{KeyCipher, proxy_keys},
    models::GroupRow,
    settings::GroupConfig,
};

/// Whether a group holds keys and upstreams or routes to other groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum GroupKind {
    /// Keys and upstreams of its own.
    Standard,
    /// Weighted sub-groups of one channel type; no keys or upstreams of its own.
    Aggregate,
}

impl GroupKind {
    /// The stored name: `standard` or `aggregate`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Aggregate => "aggregate",
        }
    }

    /// A stored or submitted name; `None` for anything else.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "standard" => Some(Self::Standard),
            "aggregate" => Some(Self::Aggregate),
            _ => None,
        }
    }

    /// How a stored row reads: anything but `aggregate` is a standard group (gpt-load's rule).
    pub(crate) fn of_row(row: &GroupRow) -> Self {
        if row.group_type == Self::Aggregate.as_str() {
            Self::Aggregate
        } else {
            Self::Standard
        }
    }
}

/// An upstream as stored in `groups.upstreams`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub(crate) struct StoredUpstream {
    pub(crate) url: String,
    #[serde(default = "one")]
    pub(crate) weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
struct StoredHeaderRule {
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    action: String,
}

/// One group, typed. Cheap to share behind an `Arc`; replaced whole when its row changes.
#[derive(Clone, Debug)]
pub(crate) struct Group {
    pub(crate) id: i64,
    pub(crate) name: GroupName,
    pub(crate) kind: GroupKind,
    pub(crate) channel: ChannelKind,
    pub(crate) test_model: String,
    /// `None` when the channel's default validation path applies.
    pub(crate) validation_endpoint: Option<String>,
    /// The group's own proxy keys, decrypted.
    pub(crate) proxy_keys: Vec<String>,
    pub(crate) upstreams: Vec<StoredUpstream>,
    pub(crate) rules: GroupRules,
    pub(crate) config: GroupConfig,
    pub(crate) last_validated_at: Option<NaiveDateTime>,
    /// The attached policies' rules, compiled (see `registry::failure_rules`).
    pub(crate) failure_rules: RuleSet,
}

impl Group {
    /// Parses a stored row leniently: a value that does not parse is dropped with a warning and
    /// the rest of the group is still served. `Err` (with the reason) when the group cannot be
    /// served at all (an unknown channel type).
    pub(crate) fn from_row(row: &GroupRow, cipher: &KeyCipher) -> Result<(Self, Vec<String>), String> {
        let channel = row.channel_type.parse::<ChannelKind>().map_err(|_| {
            format!(
                "group '{}': unknown channel_type '{}'; not served",
                row.name, row.channel_type
            )
        })?;
        let mut warnings = Vec::new();
        let kind = GroupKind::of_row(row);
        let proxy_keys = proxy_keys::open_or_none(cipher, &row.proxy_keys, &row.name)
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
        let upstreams = match kind {
            GroupKind::Aggregate => Vec::new(),
            GroupKind::Standard => serde_json::from_str(&row.upstreams).unwrap_or_else(|_| {
                warnings.push(format!(
                    "group '{}': upstreams are not a JSON list of {{url, weight}}",
                    row.name
                ));
                Vec::new()
            }),
        };
        let rules = match kind {
            GroupKind::Aggregate => GroupRules::new(),
            GroupKind::Standard => rules_of(row, &mut warnings),
        };
        let group = Self {
            id: row.id,
            name: GroupName::from(row.name.as_str()),
            kind,
            channel,
            test_model: row.test_model.clone(),
            validation_endpoint: Some(row.validation_endpoint.clone()).filter(|e| !e.trim().is_empty()),
            proxy_keys,
            upstreams,
            rules,
            config: GroupConfig::from_stored(&row.name, &row.config),
            last_validated_at: row.last_validated_at,
            failure_rules: RuleSet::default(),
        };
        Ok((group, warnings))
    }

    /// Whether the group is an aggregate.
    pub(crate) fn is_aggregate(&self) -> bool {
        self.kind == GroupKind::Aggregate
    }
}

fn rules_of(row: &GroupRow, warnings: &mut Vec<String>) -> GroupRules {
    let mut rules = GroupRules::new().strict_model(row.model_redirect_strict);
    let blank = |text: &str| text.trim().is_empty();
    match serde_json::from_str::<Value>(&row.param_overrides) {
        Ok(Value::Object(map)) => rules = rules.param_overrides(map),
        _ if blank(&row.param_overrides) => {}
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
        Err(_) if blank(&row.model_redirect_rules) => {}
        Err(_) => warnings.push(format!(
            "group '{}': model_redirect_rules is not a JSON object",
            row.name
        )),
    }
    match serde_json::from_str::<Vec<StoredHeaderRule>>(&row.header_rules) {
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
        Err(_) if blank(&row.header_rules) => {}
        Err(_) => warnings.push(format!("group '{}': header_rules is not a JSON list", row.name)),
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_like_gpt_load() {
        assert_eq!(GroupKind::parse("aggregate"), Some(GroupKind::Aggregate));
        assert_eq!(GroupKind::parse("standard"), Some(GroupKind::Standard));
        assert_eq!(GroupKind::parse("other"), None);
        for kind in [GroupKind::Standard, GroupKind::Aggregate] {
            assert_eq!(GroupKind::parse(kind.as_str()), Some(kind));
        }
    }
}
