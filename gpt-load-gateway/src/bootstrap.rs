//! Minimal group and key bootstrap from a file, so the gateway is usable before the admin API.
//!
//! `GPT_LOAD_BOOTSTRAP=/path/to/bootstrap.json` is read at start. Groups that do not exist yet
//! are created; keys that a group does not have yet (compared by hash) are added; existing
//! groups are otherwise left alone, so restarting with the same file changes nothing. The admin
//! API replaces this file as the way to manage groups; the format is documented in
//! `docs/BOOTSTRAP.md`.

use std::{collections::HashSet, path::Path};

use gpt_load_tower::{channel::ChannelKind, upstream::Upstream};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{
    crypto::{KeyCipher, proxy_keys},
    db::{Db, DbError},
    models::{NewApiKey, NewGroup, now},
    repo::{groups, keys},
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
    pub(crate) header_rules: Vec<Value>,
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

/// An upstream base URL and its weight.
#[derive(Clone, Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamSpec {
    pub(crate) url: String,
    #[serde(default = "one")]
    pub(crate) weight: u32,
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

/// Whether `name` is a valid group name (gpt-load: `^[a-z0-9_-]{1,100}$`).
pub(crate) fn valid_group_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
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

    /// Everything wrong with the file, one message per problem.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut names = HashSet::new();
        for g in &self.groups {
            let at = format!("group '{}'", g.name);
            if !valid_group_name(&g.name) {
                problems.push(format!("{at}: name must match ^[a-z0-9_-]{{1,100}}$"));
            }
            if !names.insert(g.name.as_str()) {
                problems.push(format!("{at}: listed twice"));
            }
            if g.channel_type.parse::<ChannelKind>().is_err() {
                problems.push(format!(
                    "{at}: channel_type must be openai, openai-response, gemini or anthropic"
                ));
            }
            match g.group_type.as_str() {
                "standard" => {
                    if g.upstreams.is_empty() {
                        problems.push(format!("{at}: a standard group needs at least one upstream"));
                    }
                    if g.test_model.trim().is_empty() {
                        problems.push(format!("{at}: test_model is required"));
                    }
                    if !g.sub_groups.is_empty() {
                        problems.push(format!("{at}: only aggregate groups have sub_groups"));
                    }
                }
                "aggregate" => {
                    if !g.keys.is_empty() || !g.upstreams.is_empty() {
                        problems.push(format!(
                            "{at}: an aggregate group has sub_groups, not keys or upstreams"
                        ));
                    }
                    for sub in &g.sub_groups {
                        match self.groups.iter().find(|o| o.name == sub.group) {
                            None => {
                                problems.push(format!("{at}: sub-group '{}' is not in the file", sub.group))
                            }
                            Some(o) if o.group_type != "standard" => {
                                problems.push(format!(
                                    "{at}: sub-group '{}' must be a standard group",
                                    sub.group
                                ));
                            }
                            Some(o) if o.channel_type != g.channel_type => {
                                problems.push(format!(
                                    "{at}: sub-group '{}' has another channel_type",
                                    sub.group
                                ));
                            }
                            Some(_) => {}
                        }
                        if sub.weight > 1000 {
                            problems.push(format!("{at}: sub-group weights are 0-1000"));
                        }
                    }
                }
                other => problems.push(format!("{at}: group_type '{other}' is not standard or aggregate")),
            }
            for upstream in &g.upstreams {
                if let Err(err) = Upstream::new(&upstream.url, upstream.weight) {
                    problems.push(format!("{at}: {err}"));
                }
            }
            if let Err(err) = g
                .proxy_keys
                .split(',')
                .map(str::trim)
                .try_for_each(proxy_keys::check_key)
            {
                problems.push(format!("{at}: proxy_keys: {err}"));
            }
            if g.keys.iter().any(|k| k.trim().is_empty()) {
                problems.push(format!("{at}: keys must not be empty strings"));
            }
            if g.model_redirect_rules.values().any(|v| !v.is_string()) {
                problems.push(format!("{at}: model_redirect_rules values must be strings"));
            }
        }
        problems
    }

    /// Creates missing groups and adds missing keys; returns (groups created, keys added).
    pub(crate) async fn apply(&self, db: &Db, cipher: &KeyCipher) -> Result<(usize, usize), BootstrapError> {
        let (mut created, mut added) = (0, 0);
        let at = now();
        for g in &self.groups {
            let row = match groups::find_by_name(db, &g.name).await? {
                Some(row) => row,
                None => {
                    created += 1;
                    let upstreams = serde_json::to_string(&g.upstreams).unwrap_or_else(|_| "[]".to_owned());
                    let test_model = if g.group_type == "aggregate" {
                        "-"
                    } else {
                        g.test_model.as_str()
                    };
                    groups::insert(
                        db,
                        &NewGroup {
                            name: &g.name,
                            display_name: &g.display_name,
                            proxy_keys: &proxy_keys::seal(cipher, &g.proxy_keys),
                            description: &g.description,
                            group_type: &g.group_type,
                            upstreams: &upstreams,
                            validation_endpoint: &g.validation_endpoint,
                            channel_type: &g.channel_type,
                            sort: g.sort,
                            test_model,
                            param_overrides: &Value::Object(g.param_overrides.clone()).to_string(),
                            config: &Value::Object(g.config.clone()).to_string(),
                            header_rules: &Value::Array(g.header_rules.clone()).to_string(),
                            model_redirect_rules: &Value::Object(g.model_redirect_rules.clone()).to_string(),
                            model_redirect_strict: g.model_redirect_strict,
                            created_at: at,
                            updated_at: at,
                        },
                    )
                    .await?
                }
            };
            let existing: HashSet<String> = keys::hashes_in_group(db, row.id).await?.into_iter().collect();
            let mut seen = HashSet::new();
            let fresh: Vec<(String, String)> = g
                .keys
                .iter()
                .map(|k| k.trim())
                .filter(|k| seen.insert(*k))
                .map(|k| (cipher.hash(k), k))
                .filter(|(hash, _)| !existing.contains(hash))
                .map(|(hash, k)| (cipher.encrypt(k), hash))
                .collect();
            let rows: Vec<NewApiKey<'_>> = fresh
                .iter()
                .map(|(value, hash)| NewApiKey {
                    key_value: value,
                    key_hash: hash,
                    group_id: row.id,
                    status: "active",
                    notes: "",
                    request_count: 0,
                    failure_count: 0,
                    created_at: at,
                    updated_at: at,
                })
                .collect();
            added += keys::insert_many(db, &rows).await?;
        }
        for g in self.groups.iter().filter(|g| g.group_type == "aggregate") {
            let Some(parent) = groups::find_by_name(db, &g.name).await? else {
                continue;
            };
            for sub in &g.sub_groups {
                if let Some(child) = groups::find_by_name(db, &sub.group).await? {
                    groups::set_sub_group(db, parent.id, child.id, sub.weight as i32).await?;
                }
            }
        }
        Ok((created, added))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_support::TestDb;

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
            assert_eq!(
                bootstrap.apply(&t.db, &cipher).await.unwrap(),
                (2, 2),
                "{}",
                t.db.backend()
            );
            assert_eq!(
                bootstrap.apply(&t.db, &cipher).await.unwrap(),
                (0, 0),
                "restarting changes nothing"
            );
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

    #[test]
    fn group_names() {
        assert!(valid_group_name("openai-eu_2"));
        for bad in ["", "Upper", "space here", "dot.name", &"x".repeat(101)] {
            assert!(!valid_group_name(bad), "{bad}");
        }
    }
}
