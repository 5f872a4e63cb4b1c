//! [`GroupConfig`] (declared by [the settings table](super::table)): a group's overrides of the
//! system settings (the `groups.config` column), checked on write and read back leniently.

use serde_json::{Map, Value};

use super::{
    GroupConfig,
    meta::{self, GROUP_CONFIG_ORDER, TextRule},
    value::{self, FailoverCodes, FieldError, SettingValue},
};

/// Checks a group's `config` object on create or update, as gpt-load does: only the
/// overridable settings are allowed (`unknown config field: 'x'`), `null` means inherit and is
/// dropped, values follow the rules of the system settings (types, minimums, failover codes,
/// proxy URL). Reports every problem.
pub(crate) fn validate_group_config(config: &Map<String, Value>) -> Result<GroupConfig, Vec<FieldError>> {
    let mut group = GroupConfig::default();
    let mut errors = Vec::new();
    for (key, json) in config {
        let meta = meta::find(key).filter(|m| m.group_overridable());
        let Some(meta) = meta else {
            errors.push(FieldError::new(key, format!("unknown config field: '{key}'")));
            continue;
        };
        if json.is_null() {
            continue;
        }
        match value::from_json(meta, json) {
            Ok(value) => group.set(meta.key, value),
            Err(message) => errors.push(FieldError::new(key, message)),
        }
    }
    if errors.is_empty() { Ok(group) } else { Err(errors) }
}

impl GroupConfig {
    /// Reads a stored `groups.config` text leniently: empty text or `null` is no override;
    /// malformed JSON, unknown keys and bad values are skipped with a warning. An unparsable
    /// `failover_status_codes` is kept with a matcher that matches nothing (no status
    /// failover), as gpt-load does.
    pub(crate) fn from_stored(group: &str, text: &str) -> Self {
        let (config, problems) = Self::from_stored_reporting(text);
        for problem in problems {
            tracing::warn!(group, field = %problem.field, "ignoring group config: {}", problem.message);
        }
        config
    }

    /// [`GroupConfig::from_stored`] without the logging: the config and what was skipped.
    pub(crate) fn from_stored_reporting(text: &str) -> (Self, Vec<FieldError>) {
        let mut group = Self::default();
        let mut problems = Vec::new();
        let text = text.trim();
        if text.is_empty() || text == "null" {
            return (group, problems);
        }
        let map = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                problems.push(FieldError::new("config", "is not a JSON object"));
                return (group, problems);
            }
            Err(err) => {
                problems.push(FieldError::new("config", format!("is not valid JSON: {err}")));
                return (group, problems);
            }
        };
        for (key, json) in &map {
            let Some(meta) = meta::find(key).filter(|m| m.group_overridable()) else {
                problems.push(FieldError::new(key, "is not an overridable setting"));
                continue;
            };
            if json.is_null() {
                continue;
            }
            match value::from_json(meta, json) {
                Ok(value) => group.set(meta.key, value),
                Err(message) => {
                    if let (TextRule::StatusCodes, Value::String(spec)) = (meta.rule, json) {
                        group.set(meta.key, SettingValue::Codes(FailoverCodes::unparsable(spec)));
                        problems.push(FieldError::new(
                            key,
                            format!("{message}; no status code fails over in this group"),
                        ));
                    } else {
                        problems.push(FieldError::new(key, format!("{message}; inheriting")));
                    }
                }
            }
        }
        (group, problems)
    }

    /// The overrides as a normalised JSON object, without the inherited (`None`) settings:
    /// what `groups.config` stores and the admin API shows.
    pub(crate) fn to_json(&self) -> Value {
        let mut map = Map::new();
        for key in GROUP_CONFIG_ORDER {
            if let Some(value) = self.get(key) {
                map.insert(key.to_owned(), value.to_json());
            }
        }
        Value::Object(map)
    }

    /// [`GroupConfig::to_json`] as text, for the `groups.config` column.
    pub(crate) fn to_json_string(&self) -> String {
        self.to_json().to_string()
    }

    /// Whether the group overrides nothing.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::settings::{SystemSettings, meta::SETTINGS};

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn every_overridable_setting_is_a_field_and_round_trips() {
        let system = SystemSettings::default();
        let mut all = Map::new();
        for meta in SETTINGS.iter().filter(|m| m.group_overridable()) {
            all.insert(meta.key.to_owned(), system.get(meta.key).unwrap().to_json());
        }
        let config = validate_group_config(&all).unwrap();
        let set: Vec<_> = GROUP_CONFIG_ORDER
            .into_iter()
            .filter(|key| config.get(key) == system.get(key))
            .collect();
        assert_eq!(set, GROUP_CONFIG_ORDER, "every field was set");
        for meta in SETTINGS.iter().filter(|m| !m.group_overridable()) {
            assert_eq!(config.get(meta.key), None, "{}", meta.key);
        }
        assert_eq!(config.to_json(), Value::Object(all.clone()));
        let (again, problems) = GroupConfig::from_stored_reporting(&config.to_json_string());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(again, config);

        // Each key has its own field.
        for key in GROUP_CONFIG_ORDER {
            let one = validate_group_config(&Map::from_iter([(key.to_owned(), all[key].clone())])).unwrap();
            let overridden: Vec<_> = GROUP_CONFIG_ORDER
                .into_iter()
                .filter(|k| one.get(k).is_some())
                .collect();
            assert_eq!(overridden, [key]);
        }
    }

    #[test]
    fn validation_follows_gpt_load() {
        let config = validate_group_config(&object(json!({
            "request_timeout": 30,
            "max_retries": 0,
            "failover_status_codes": "429, 500-599",
            "proxy_url": "",
            "enable_request_body_logging": true,
            "stream_idle_timeout": 10.0,
            "blacklist_threshold": null,
        })))
        .unwrap();
        assert_eq!(config.request_timeout, Some(30));
        assert_eq!(config.max_retries, Some(0));
        assert_eq!(config.proxy_url.as_deref(), Some(""));
        assert_eq!(config.stream_idle_timeout, Some(10));
        assert_eq!(config.blacklist_threshold, None, "null inherits");
        assert_eq!(
            config.to_json(),
            json!({
                "request_timeout": 30,
                "stream_idle_timeout": 10,
                "proxy_url": "",
                "max_retries": 0,
                "failover_status_codes": "429, 500-599",
                "enable_request_body_logging": true,
            })
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let errors = validate_group_config(&object(json!({
            "app_url": "http://x",
            "bogus": 1,
            "request_timeout": 0,
            "max_retries": "3",
            "connect_timeout": 1.5,
            "enable_request_body_logging": 1,
            "failover_status_codes": "200-100",
            "proxy_url": "ftp://proxy",
            "key_validation_concurrency": 4,
        })))
        .unwrap_err();
        let mut messages: Vec<_> = errors.iter().map(ToString::to_string).collect();
        messages.sort_unstable();
        assert_eq!(
            messages,
            [
                "app_url: unknown config field: 'app_url'",
                "bogus: unknown config field: 'bogus'",
                "connect_timeout: must be a whole number",
                "enable_request_body_logging: must be a boolean (true or false)",
                &format!(
                    "failover_status_codes: {}",
                    "200-100"
                        .parse::<gpt_load_tower::blacklist::StatusMatcher>()
                        .unwrap_err()
                ),
                "max_retries: must be a number",
                "proxy_url: must use one of the schemes http, https, socks5, socks5h, not `ftp`",
                "request_timeout: must be at least 1",
            ]
        );
        assert_eq!(validate_group_config(&Map::new()), Ok(GroupConfig::default()));
    }

    #[test]
    fn stored_configs_are_read_leniently() {
        for empty in ["", "  ", "null", "{}"] {
            let (config, problems) = GroupConfig::from_stored_reporting(empty);
            assert!(config.is_empty() && problems.is_empty(), "{empty:?}");
        }
        for broken in ["{", "[1]", "\"x\""] {
            let (config, problems) = GroupConfig::from_stored_reporting(broken);
            assert!(config.is_empty(), "{broken}");
            assert_eq!(problems.len(), 1, "{broken}");
        }
        let (config, problems) = GroupConfig::from_stored_reporting(
            r#"{"max_retries":5,"request_timeout":0,"unknown":1,"failover_status_codes":"5xx","proxy_url":null}"#,
        );
        assert_eq!(config.max_retries, Some(5));
        assert_eq!(config.request_timeout, None, "a bad value inherits");
        assert_eq!(config.proxy_url, None);
        let codes = config.failover_status_codes.unwrap();
        assert_eq!(codes.spec(), "5xx");
        assert!(
            !codes.matcher().matches(500),
            "gpt-load: an invalid spec matches nothing"
        );
        let mut fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        fields.sort_unstable();
        assert_eq!(fields, ["failover_status_codes", "request_timeout", "unknown"]);
    }
}
