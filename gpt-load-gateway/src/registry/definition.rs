//! A group's definition, what an operator sets through the admin API or the bootstrap file:
//! typed, checked by the one validation of gpt-load's rules (every problem reported, each naming
//! its field), and written by the one codec into a `groups` row.
//!
//! Creating validates the submitted fields with their defaults; updating lays the submitted
//! fields over the stored ones ([`GroupInput::over`]) and validates the whole, so a rule holds
//! the same way for both and for the bootstrap file.

use gpt_load_tower::{channel::ChannelKind, rewrite::HeaderRule, upstream::Upstream};
use http::HeaderName;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::GroupKind;
use crate::{
    crypto::{KeyCipher, proxy_keys},
    models::{GroupRow, NewGroup},
    settings::{FieldError, GroupConfig, validate_group_config},
};

/// An upstream base URL and its weight.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamSpec {
    pub(crate) url: String,
    #[serde(default = "one")]
    pub(crate) weight: u32,
}

fn one() -> u32 {
    1
}

/// A header rule as the API carries it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub(crate) struct HeaderRuleJson {
    /// The header name.
    pub(crate) key: String,
    /// The value; `${CLIENT_IP}`, `${GROUP_NAME}` and `${API_KEY}` are substituted.
    #[serde(default)]
    pub(crate) value: String,
    /// `set` (default) or `remove`.
    #[serde(default = "set_action")]
    pub(crate) action: String,
}

fn set_action() -> String {
    "set".to_owned()
}

/// The body of `POST /api/groups` and `PUT /api/groups/{id}`; absent fields are unchanged on
/// update.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
pub(crate) struct GroupInput {
    pub(crate) name: Option<String>,
    pub(crate) display_name: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) group_type: Option<String>,
    pub(crate) upstreams: Option<Vec<UpstreamSpec>>,
    pub(crate) channel_type: Option<String>,
    pub(crate) sort: Option<i32>,
    pub(crate) test_model: Option<String>,
    pub(crate) validation_endpoint: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub(crate) param_overrides: Option<Map<String, Value>>,
    #[schema(value_type = Option<Object>)]
    pub(crate) model_redirect_rules: Option<Map<String, Value>>,
    pub(crate) model_redirect_strict: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub(crate) config: Option<Map<String, Value>>,
    pub(crate) header_rules: Option<Vec<HeaderRuleJson>>,
    pub(crate) proxy_keys: Option<String>,
}

fn json_or<T: serde::de::DeserializeOwned>(text: &str, empty: T) -> T {
    serde_json::from_str(text).unwrap_or(empty)
}

impl GroupInput {
    /// Every field of a stored group, its proxy keys decrypted with `cipher` (the base of an
    /// update). Stored JSON that does not parse reads as empty.
    pub(crate) fn of_row(row: &GroupRow, cipher: &KeyCipher) -> Self {
        let (config, _skipped) = GroupConfig::from_stored_reporting(&row.config);
        let config = match config.to_json() {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Self {
            name: Some(row.name.clone()),
            display_name: Some(row.display_name.clone()),
            description: Some(row.description.clone()),
            group_type: Some(GroupKind::of_row(row).as_str().to_owned()),
            upstreams: Some(json_or(&row.upstreams, Vec::new())),
            channel_type: Some(row.channel_type.clone()),
            sort: Some(row.sort),
            test_model: Some(row.test_model.clone()),
            validation_endpoint: Some(row.validation_endpoint.clone()),
            param_overrides: Some(json_or(&row.param_overrides, Map::new())),
            model_redirect_rules: Some(json_or(&row.model_redirect_rules, Map::new())),
            model_redirect_strict: Some(row.model_redirect_strict),
            config: Some(config),
            header_rules: Some(json_or(&row.header_rules, Vec::new())),
            proxy_keys: Some(proxy_keys::open_or_none(cipher, &row.proxy_keys, &row.name)),
        }
    }

    /// This update laid over `stored` (all fields set): a field given here wins. The group type
    /// never changes, nor an aggregate's channel type; an empty test model keeps the stored one.
    pub(crate) fn over(self, stored: Self) -> Self {
        let aggregate = stored.group_type.as_deref() == Some(GroupKind::Aggregate.as_str());
        Self {
            name: self.name.or(stored.name),
            display_name: self.display_name.or(stored.display_name),
            description: self.description.or(stored.description),
            group_type: stored.group_type,
            upstreams: self.upstreams.or(stored.upstreams),
            channel_type: self.channel_type.filter(|_| !aggregate).or(stored.channel_type),
            sort: self.sort.or(stored.sort),
            test_model: self.test_model.filter(|m| !m.is_empty()).or(stored.test_model),
            validation_endpoint: self.validation_endpoint.or(stored.validation_endpoint),
            param_overrides: self.param_overrides.or(stored.param_overrides),
            model_redirect_rules: self.model_redirect_rules.or(stored.model_redirect_rules),
            model_redirect_strict: self.model_redirect_strict.or(stored.model_redirect_strict),
            config: self.config.or(stored.config),
            header_rules: self.header_rules.or(stored.header_rules),
            proxy_keys: self.proxy_keys.or(stored.proxy_keys),
        }
    }
}

/// A group's definition after validation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GroupDefinition {
    pub(crate) name: String,
    pub(crate) display_name: String,
    pub(crate) description: String,
    pub(crate) kind: GroupKind,
    pub(crate) channel: ChannelKind,
    /// Empty for an aggregate.
    pub(crate) upstreams: Vec<UpstreamSpec>,
    /// `-` for an aggregate.
    pub(crate) test_model: String,
    /// A path, or empty for the channel's default.
    pub(crate) validation_endpoint: String,
    pub(crate) param_overrides: Map<String, Value>,
    pub(crate) model_redirect_rules: Map<String, Value>,
    pub(crate) model_redirect_strict: bool,
    pub(crate) config: GroupConfig,
    /// Header names in gpt-load's canonical form, each once.
    pub(crate) header_rules: Vec<HeaderRuleJson>,
    /// Plain, comma separated, without blanks.
    pub(crate) proxy_keys: String,
    pub(crate) sort: i32,
}

/// The text columns of a stored definition (see [`GroupDefinition::row`]).
#[derive(Clone, Debug)]
pub(crate) struct StoredText {
    upstreams: String,
    param_overrides: String,
    model_redirect_rules: String,
    config: String,
    header_rules: String,
    /// Sealed with the cipher.
    proxy_keys: String,
}

/// Whether `name` is a valid group name (gpt-load: `^[a-z0-9_-]{1,100}$`).
pub(crate) fn valid_group_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl GroupDefinition {
    /// Checks a group against gpt-load's rules; absent fields take their defaults (a standard
    /// group, no upstream, no proxy key…). Reports every problem, each naming its field.
    pub(crate) fn validate(input: GroupInput) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut fail = |field: &str, message: String| errors.push(FieldError::new(field, message));
        let name = input.name.unwrap_or_default().trim().to_owned();
        if !valid_group_name(&name) {
            fail("name", "must match ^[a-z0-9_-]{1,100}$".to_owned());
        }
        let kind = match input.group_type.as_deref().filter(|t| !t.is_empty()) {
            None => GroupKind::Standard,
            Some(text) => GroupKind::parse(text).unwrap_or_else(|| {
                fail("group_type", "must be standard or aggregate".to_owned());
                GroupKind::Standard
            }),
        };
        let channel = input.channel_type.unwrap_or_default().parse::<ChannelKind>();
        if channel.is_err() {
            fail(
                "channel_type",
                "must be openai, openai-response, gemini or anthropic".to_owned(),
            );
        }
        let proxy_keys = input
            .proxy_keys
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect::<Vec<_>>()
            .join(",");
        if let Err(err) = proxy_keys.split(',').try_for_each(proxy_keys::check_key) {
            fail("proxy_keys", err.to_string());
        }
        let config = match validate_group_config(&input.config.unwrap_or_default()) {
            Ok(config) => config,
            Err(problems) => {
                problems.into_iter().for_each(|p| fail(&p.field, p.message));
                GroupConfig::default()
            }
        };
        let header_rules = header_rules(input.header_rules.unwrap_or_default()).unwrap_or_else(|message| {
            fail("header_rules", message);
            Vec::new()
        });
        let model_redirect_rules = input.model_redirect_rules.unwrap_or_default();
        if kind == GroupKind::Aggregate && !model_redirect_rules.is_empty() {
            fail(
                "model_redirect_rules",
                "aggregate groups have no model redirect rules".to_owned(),
            );
        } else if let Err(message) = redirect_rules(&model_redirect_rules) {
            fail("model_redirect_rules", message);
        }
        let (upstreams, test_model, validation_endpoint) = match kind {
            GroupKind::Aggregate => (Vec::new(), "-".to_owned(), String::new()),
            GroupKind::Standard => {
                let test_model = input.test_model.unwrap_or_default().trim().to_owned();
                if test_model.is_empty() {
                    fail("test_model", "is required for standard groups".to_owned());
                }
                let endpoint = input.validation_endpoint.unwrap_or_default().trim().to_owned();
                if !endpoint.is_empty() && (!endpoint.starts_with('/') || endpoint.contains("://")) {
                    fail(
                        "validation_endpoint",
                        "must be empty or a path starting with /".to_owned(),
                    );
                }
                let upstreams = input.upstreams.unwrap_or_default();
                if let Err(message) = check_upstreams(&upstreams) {
                    fail("upstreams", message);
                }
                (upstreams, test_model, endpoint)
            }
        };
        match channel {
            Ok(channel) if errors.is_empty() => Ok(Self {
                name,
                display_name: input.display_name.unwrap_or_default().trim().to_owned(),
                description: input.description.unwrap_or_default().trim().to_owned(),
                kind,
                channel,
                upstreams,
                test_model,
                validation_endpoint,
                param_overrides: input.param_overrides.unwrap_or_default(),
                model_redirect_rules,
                model_redirect_strict: input.model_redirect_strict.unwrap_or(false),
                config,
                header_rules,
                proxy_keys,
                sort: input.sort.unwrap_or(0),
            }),
            _ => Err(errors),
        }
    }

    /// The text columns, the proxy keys sealed with `cipher`.
    pub(crate) fn stored_text(&self, cipher: &KeyCipher) -> StoredText {
        StoredText {
            upstreams: json_text(&self.upstreams),
            param_overrides: json_text(&self.param_overrides),
            model_redirect_rules: json_text(&self.model_redirect_rules),
            config: self.config.to_json_string(),
            header_rules: json_text(&self.header_rules),
            proxy_keys: proxy_keys::seal(cipher, &self.proxy_keys),
        }
    }

    /// The row to store, borrowing `text` (from [`GroupDefinition::stored_text`]).
    pub(crate) fn row<'a>(
        &'a self,
        text: &'a StoredText,
        created_at: chrono::NaiveDateTime,
        updated_at: chrono::NaiveDateTime,
    ) -> NewGroup<'a> {
        NewGroup {
            name: &self.name,
            display_name: &self.display_name,
            proxy_keys: &text.proxy_keys,
            description: &self.description,
            group_type: self.kind.as_str(),
            upstreams: &text.upstreams,
            validation_endpoint: &self.validation_endpoint,
            channel_type: self.channel.as_str(),
            sort: self.sort,
            test_model: &self.test_model,
            param_overrides: &text.param_overrides,
            config: &text.config,
            header_rules: &text.header_rules,
            model_redirect_rules: &text.model_redirect_rules,
            model_redirect_strict: self.model_redirect_strict,
            created_at,
            updated_at,
        }
    }
}

/// The JSON text of a column value (maps, lists of plain structs: they always serialise).
fn json_text<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn check_upstreams(upstreams: &[UpstreamSpec]) -> Result<(), String> {
    if upstreams.is_empty() {
        return Err("a standard group needs at least one upstream".to_owned());
    }
    for u in upstreams {
        Upstream::new(&u.url, u.weight).map_err(|e| e.to_string())?;
    }
    if upstreams.iter().all(|u| u.weight == 0) {
        return Err("at least one upstream needs a weight above 0".to_owned());
    }
    Ok(())
}

fn header_rules(rules: Vec<HeaderRuleJson>) -> Result<Vec<HeaderRuleJson>, String> {
    let mut seen: Vec<HeaderName> = Vec::new();
    let mut kept = Vec::new();
    for rule in rules.into_iter().filter(|r| !r.key.trim().is_empty()) {
        let parsed = match rule.action.as_str() {
            "set" => HeaderRule::set(&rule.key, &rule.value),
            "remove" => HeaderRule::remove(&rule.key),
            other => return Err(format!("action '{other}' must be set or remove")),
        }
        .map_err(|e| e.to_string())?;
        if seen.contains(parsed.name()) {
            return Err(format!("header '{}' appears twice", rule.key.trim()));
        }
        seen.push(parsed.name().clone());
        kept.push(HeaderRuleJson {
            key: canonical_header_name(rule.key.trim()),
            ..rule
        });
    }
    Ok(kept)
}

/// `x-custom-id` → `X-Custom-Id`, the form gpt-load stores and shows header names in.
fn canonical_header_name(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

fn redirect_rules(rules: &Map<String, Value>) -> Result<(), String> {
    for (from, to) in rules {
        match to {
            Value::String(to) if !from.trim().is_empty() && !to.trim().is_empty() => {}
            _ => return Err(format!("rule '{from}' needs a non-blank source and target model")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn input(value: Value) -> GroupInput {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn header_names_are_canonical() {
        assert_eq!(canonical_header_name("x-custom-ID"), "X-Custom-Id");
        assert_eq!(canonical_header_name("AUTHORIZATION"), "Authorization");
        assert_eq!(canonical_header_name("a--b"), "A--B");
    }

    #[test]
    fn group_names() {
        assert!(valid_group_name("openai-eu_2"));
        for bad in ["", "Upper", "space here", "dot.name", &"x".repeat(101)] {
            assert!(!valid_group_name(bad), "{bad}");
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let errors = GroupDefinition::validate(input(json!({
            "name": "Bad Name",
            "channel_type": "azure",
            "upstreams": [{"url": "nope"}],
            "config": {"max_retries": -1},
            "header_rules": [{"key": "X-A", "action": "append"}],
        })))
        .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "channel_type",
                "max_retries",
                "header_rules",
                "test_model",
                "upstreams"
            ]
        );
        assert!(errors[5].message.contains("invalid upstream url"), "{errors:?}");
    }

    #[test]
    fn an_update_keeps_what_it_does_not_name_and_round_trips() {
        let cipher = KeyCipher::from_password(Some("definition-test-encryption-key"));
        let created = GroupDefinition::validate(input(json!({
            "name": "g",
            "channel_type": "gemini",
            "test_model": "m",
            "upstreams": [{"url": "http://127.0.0.1:9", "weight": 2}],
            "header_rules": [{"key": "x-a", "value": "1"}],
            "proxy_keys": " sk-a, ,sk-b ",
            "config": {"max_retries": 5},
        })))
        .unwrap();
        assert_eq!(created.proxy_keys, "sk-a,sk-b");
        assert_eq!(created.header_rules[0].key, "X-A");
        let text = created.stored_text(&cipher);
        let at = crate::models::now();
        let new = created.row(&text, at, at);
        let row = GroupRow {
            id: 1,
            name: new.name.to_owned(),
            display_name: new.display_name.to_owned(),
            proxy_keys: new.proxy_keys.to_owned(),
            description: new.description.to_owned(),
            group_type: new.group_type.to_owned(),
            upstreams: new.upstreams.to_owned(),
            validation_endpoint: new.validation_endpoint.to_owned(),
            channel_type: new.channel_type.to_owned(),
            sort: new.sort,
            test_model: new.test_model.to_owned(),
            param_overrides: new.param_overrides.to_owned(),
            config: new.config.to_owned(),
            header_rules: new.header_rules.to_owned(),
            model_redirect_rules: new.model_redirect_rules.to_owned(),
            model_redirect_strict: new.model_redirect_strict,
            last_validated_at: None,
            created_at: at,
            updated_at: at,
        };
        assert_ne!(row.proxy_keys, "sk-a,sk-b", "sealed");
        let stored = GroupInput::of_row(&row, &cipher);
        assert_eq!(GroupDefinition::validate(stored.clone()).unwrap(), created);
        let renamed = GroupDefinition::validate(
            input(json!({"name": "h", "test_model": "", "group_type": "aggregate"})).over(stored),
        )
        .unwrap();
        assert_eq!(renamed.name, "h");
        assert_eq!(
            renamed.test_model, "m",
            "an empty test model keeps the stored one"
        );
        assert_eq!(renamed.kind, GroupKind::Standard, "the type never changes");
        assert_eq!(renamed.config, created.config);
    }
}
