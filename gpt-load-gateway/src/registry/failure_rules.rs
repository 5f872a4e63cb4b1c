//! Policies as the proxy runs them: each group's attached, active policies compiled into one
//! [`RuleSet`] when the group is loaded, never on the request path.
//!
//! A policy's `config` is `{"rules": [...]}` (the fork's shape, see docs/KEYS.md, "Policies").
//! Types `retry` and `degradation` hold such rules and are evaluated alike, in attachment order;
//! the fork's other types are served elsewhere here (`model_filter` by the group's
//! `model_include` / `model_exclude` settings, `rate_limit` by nothing yet) and are refused.

use gpt_load_tower::blacklist::{RuleSet, RuleSpec};
use serde::{Deserialize, Serialize};

use crate::models::{GroupPolicyRow, PolicyRow};

/// The policy types that hold failure rules.
pub(crate) const POLICY_TYPES: [&str; 2] = ["retry", "degradation"];

/// `policies.config`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyConfig {
    #[serde(default)]
    pub(crate) rules: Vec<RuleSpec>,
}

impl PolicyConfig {
    /// Parses a stored or submitted config and checks that its rules compile.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let config: Self = serde_json::from_str(text).map_err(|e| format!("config: {e}"))?;
        RuleSet::check(&config.rules).map_err(|e| e.to_string())?;
        Ok(config)
    }
}

/// Compiles one group's attachments (in evaluation order, as `repo::policies::attached` returns
/// them) into its rules. A stored policy that does not parse is skipped with a warning; the
/// others still apply.
pub(crate) fn compile<'a>(
    group: &str,
    attached: impl IntoIterator<Item = &'a (GroupPolicyRow, PolicyRow)>,
) -> (RuleSet, Vec<String>) {
    let mut warnings = Vec::new();
    let mut policies = Vec::new();
    for (link, policy) in attached {
        if !(link.is_active && policy.is_active) {
            continue;
        }
        match PolicyConfig::parse(&policy.config) {
            Ok(config) => policies.push((policy.name.clone(), config.rules)),
            Err(err) => warnings.push(format!(
                "group '{group}': policy '{}' is not used: {err}",
                policy.name
            )),
        }
    }
    match RuleSet::compile(policies) {
        Ok(rules) => (rules, warnings),
        Err(err) => {
            warnings.push(format!("group '{group}': its policies are not used: {err}"));
            (RuleSet::default(), warnings)
        }
    }
}
