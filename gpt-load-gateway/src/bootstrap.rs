//! Minimal group and key bootstrap from a file, so the gateway is usable before the admin API.
//!
//! `GPT_LOAD_BOOTSTRAP=/path/to/bootstrap.json` is read at start. Groups that do not exist yet
//! are created; keys that a group does not have yet (compared by hash) are added; existing
//! groups are otherwise left alone, so restarting with the same file changes nothing. The admin
//! API replaces this file as the way to manage groups; the format is documented in
//! `docs/BOOTSTRAP.md`.

use std::{collections::HashSet, path::Path};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{
    db::DbError,
    models::now,
    registry::{GroupDefinition, GroupInput, GroupKind, HeaderRuleJson, Registry, UpstreamSpec},
    repo::groups,
};

/// The bootstrap file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Bootstrap {
    pub(crate) groups: Vec<GroupSpec>,
}

/// One group in the bootstrap file (gpt-load's field names).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupSpec {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) display_name: String,
    #[serde(default)]
    pub(crate) description: String,
    #[serde(default = "standard")]
    pub(crate) group_type: String,
    pub(crate) channel_type: String,
    #[serde(default)]
    pub(crate) upstreams: Vec<UpstreamSpec>,
    #[serde(default)]
    pub(crate) test_model: String,
    #[serde(default)]
    pub(crate) validation_endpoint: String,
    /// Comma-separated proxy keys of this group (the global ones come from settings).
    #[serde(default)]
    pub(crate) proxy_keys: String,
    #[serde(default)]
    pub(crate) sort: i32,
    #[serde(default)]
    pub(crate) config: Map<String, Value>,
    #[serde(default)]
    pub(crate) param_overrides: Map<String, Value>,
    #[serde(default)]
    pub(crate) header_rules: Vec<HeaderRuleJson>,
    #[serde(default)]
    pub(crate) model_redirect_rules: Map<String, Value>,
    #[serde(default)]
    pub(crate) model_redirect_strict: bool,
    /// Upstream keys.
    #[serde(default)]
    pub(crate) keys: Vec<String>,
    /// For aggregate groups: sub-group names and weights.
    #[serde(default)]
    pub(crate) sub_groups: Vec<SubGroupSpec>,
}

fn standard() -> String {
    "standard".to_owned()
}

fn one() -> u32 {
    1
}

/// A sub-group of an aggregate.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubGroupSpec {
    pub(crate) group: String,
    #[serde(default = "one")]
    pub(crate) weight: u32,
}

/// A bootstrap file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BootstrapError {
    #[error("GPT_LOAD_BOOTSTRAP: cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("GPT_LOAD_BOOTSTRAP: {path} is not valid: {message}")]
    Invalid { path: String, message: String },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl GroupSpec {
    /// The group as the admin API would receive it.
    fn input(&self) -> GroupInput {
        GroupInput {
            name: Some(self.name.clone()),
            display_name: Some(self.display_name.clone()),
            description: Some(self.description.clone()),
            group_type: Some(self.group_type.clone()),
            upstreams: Some(self.upstreams.clone()),
            channel_type: Some(self.channel_type.clone()),
            sort: Some(self.sort),
            test_model: Some(self.test_model.clone()),
            validation_endpoint: Some(self.validation_endpoint.clone()),
            param_overrides: Some(self.param_overrides.clone()),
            model_redirect_rules: Some(self.model_redirect_rules.clone()),
            model_redirect_strict: Some(self.model_redirect_strict),
            config: Some(self.config.clone()),
            header_rules: Some(self.header_rules.clone()),
            proxy_keys: Some(self.proxy_keys.clone()),
        }
    }
}

impl Bootstrap {
    /// Reads and checks a bootstrap file.
    pub(crate) fn read(path: &Path) -> Result<Self, BootstrapError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| BootstrapError::Read {
            path: shown.clone(),
            source,
        })?;
        let bootstrap: Self = serde_json::from_str(&text).map_err(|e| BootstrapError::Invalid {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let problems = bootstrap.problems();
        if problems.is_empty() {
            Ok(bootstrap)
        } else {
            Err(BootstrapError::Invalid {
                path: shown,
                message: problems.join("; "),
            })
        }
    }

    /// Everything wrong with the file, one message per problem: each group by the rules of
    /// the admin API, then what only a file can get wrong (names twice, sub-groups missing).
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut names = HashSet::new();
        for g in &self.groups {
            let at = format!("group '{}'", g.name);
            if !names.insert(g.name.as_str()) {
                problems.push(format!("{at}: listed twice"));
            }
            if let Err(errors) = GroupDefinition::validate(g.input()) {
                problems.extend(errors.iter().map(|e| format!("{at}: {} {}", e.field, e.message)));
            }
            match GroupKind::parse(&g.group_type) {
                Some(GroupKind::Standard) if !g.sub_groups.is_empty() => {
                    problems.push(format!("{at}: only aggregate groups have sub_groups"));
                }
                Some(GroupKind::Aggregate) => {
                    if !g.keys.is_empty() || !g.upstreams.is_empty() {
                        problems.push(format!(
                            "{at}: an aggregate group has sub_groups, not keys or upstreams"
                        ));
                    }
                    for sub in &g.sub_groups {
                        problems.extend(self.sub_group_problem(g, sub).map(|p| format!("{at}: {p}")));
                    }
                }
                _ => {}
            }
            if g.keys.iter().any(|k| k.trim().is_empty()) {
                problems.push(format!("{at}: keys must not be empty strings"));
            }
        }
        problems
    }

    /// What is wrong with one member of the aggregate `g`, if anything.
    fn sub_group_problem(&self, g: &GroupSpec, sub: &SubGroupSpec) -> Option<String> {
        if sub.weight > 1000 {
            return Some("sub-group weights are 0-1000".to_owned());
        }
        match self.groups.iter().find(|o| o.name == sub.group) {
            None => Some(format!("sub-group '{}' is not in the file", sub.group)),
            Some(o) if GroupKind::parse(&o.group_type) != Some(GroupKind::Standard) => {
                Some(format!("sub-group '{}' must be a standard group", sub.group))
            }
            Some(o) if o.channel_type != g.channel_type => {
                Some(format!("sub-group '{}' has another channel_type", sub.group))
            }
            Some(_) => None,
        }
    }

    /// Creates missing groups and adds missing keys through the registry; returns (groups
    /// created, keys added).
    pub(crate) async fn apply(&self, registry: &Registry) -> Result<(usize, usize), BootstrapError> {
        let (mut created, mut added) = (0, 0);
        let db = registry.db();
        let at = now();
        for g in &self.groups {
            let row = match groups::find_by_name(db, &g.name).await? {
                Some(row) => row,
                None => {
                    created += 1;
                    let definition =
                        GroupDefinition::validate(g.input()).map_err(|errors| BootstrapError::Invalid {
                            path: format!("group '{}'", g.name),
                            message: errors
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join("; "),
                        })?;
                    let text = definition.stored_text(registry.cipher());
                    registry.create_group(&definition.row(&text, at, at)).await?
                }
            };
            let mut seen = HashSet::new();
            let keys: Vec<String> = g
                .keys
                .iter()
                .map(|k| k.trim())
                .filter(|k| seen.insert(*k))
                .map(str::to_owned)
                .collect();
            if !keys.is_empty() {
                added += registry.add_keys(row.id, &keys).await?.added;
            }
        }
        for g in self
            .groups
            .iter()
            .filter(|g| g.group_type == GroupKind::Aggregate.as_str())
        {
            let Some(parent) = groups::find_by_name(db, &g.name).await? else {
                continue;
            };
            for sub in &g.sub_groups {
                if let Some(child) = groups::find_by_name(db, &sub.group).await? {
                    registry
                        .set_sub_group(parent.id, child.id, sub.weight as i32)
                        .await?;
                }
            }
        }
        Ok((created, added))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{crypto::KeyCipher, db::test_support::TestDb};

    fn write(dir: &Path, text: &str) -> std::path::PathBuf {
        let path = dir.join("bootstrap.json");
        std::fs::write(&path, text).unwrap();
        path
    }

    const FILE: &str = r#"{"groups": [
        {"name": "openai", "channel_type": "openai", "test_model": "gpt-4.1-nano",
         "upstreams": [{"url": "http://127.0.0.1:9", "weight": 1}], "keys": ["sk-a-0123456789", "sk-b-0123456789", "sk-a-0123456789"]},
        {"name": "both", "group_type": "aggregate", "channel_type": "openai", "proxy_keys": "sk-agg",
         "sub_groups": [{"group": "openai", "weight": 3}]}
    ]}"#;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn applies_once() {
        let dir = tempfile::tempdir().unwrap();
        let bootstrap = Bootstrap::read(&write(dir.path(), FILE)).unwrap();
        for t in TestDb::all("bootstrap_applies_once").await {
            let cipher = KeyCipher::disabled();
            let (registry, _events) = Registry::loaded(&t.db, &cipher).await;
            assert_eq!(
                bootstrap.apply(&registry).await.unwrap(),
                (2, 2),
                "{}",
                t.db.backend()
            );
            assert_eq!(
                bootstrap.apply(&registry).await.unwrap(),
                (0, 0),
                "restarting changes nothing"
            );
            assert_eq!(registry.pool().keys("openai").len(), 2, "the keys serve at once");
            assert!(registry.catalog().policy("both").is_some());
            let links = groups::sub_group_links(&t.db).await.unwrap();
            assert_eq!(links.len(), 1);
            assert_eq!(links[0].weight, 3);
        }
    }

    #[test]
    fn reports_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        let bad = r#"{"groups": [
            {"name": "Bad Name", "channel_type": "azure", "upstreams": [{"url": "nope"}]},
            {"name": "agg", "group_type": "aggregate", "channel_type": "openai", "sub_groups": [{"group": "ghost"}]}
        ]}"#;
        let err = Bootstrap::read(&write(dir.path(), bad)).unwrap_err().to_string();
        for needle in [
            "name must match",
            "channel_type must be",
            "test_model is required",
            "invalid upstream url",
            "'ghost' is not in the file",
        ] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
        let err = Bootstrap::read(&write(dir.path(), r#"{"groups": [], "extra": 1}"#))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
        assert!(
            Bootstrap::read(&dir.path().join("missing.json"))
                .unwrap_err()
                .to_string()
                .contains("cannot read")
        );
    }
}
