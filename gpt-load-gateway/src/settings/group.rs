//! [`GroupConfig`]: a group's overrides of the system settings (the `groups.config` column).

use serde_json::{Map, Value};

use super::{
    meta::{self, GROUP_CONFIG_ORDER},
    value::{self, FailoverCodes, FieldError, SettingValue},
};

/// The settings a group overrides; `None` inherits the system value. Checked on write by
/// [`validate_group_config`], read back by [`GroupConfig::from_stored`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct GroupConfig {
    pub(crate) request_timeout: Option<u32>,
    pub(crate) idle_conn_timeout: Option<u32>,
    pub(crate) connect_timeout: Option<u32>,
    pub(crate) max_idle_conns: Option<u32>,
    pub(crate) max_idle_conns_per_host: Option<u32>,
    pub(crate) response_header_timeout: Option<u32>,
    pub(crate) stream_idle_timeout: Option<u32>,
    pub(crate) proxy_url: Option<String>,
    pub(crate) max_retries: Option<u32>,
    pub(crate) blacklist_threshold: Option<u32>,
    pub(crate) failover_status_codes: Option<FailoverCodes>,
    pub(crate) key_validation_interval_minutes: Option<u32>,
    pub(crate) key_validation_concurrency: Option<u32>,
    pub(crate) key_validation_timeout_seconds: Option<u32>,
    pub(crate) enable_request_body_logging: Option<bool>,
}

/// Checks a group's `config` object on create or update, as gpt-load does: only the
/// overridable settings are allowed (`unknown config field: 'x'`), `null` means inherit and is
/// dropped, values follow the rules of the system settings (types, minimums, failover codes,
/// proxy URL). Reports every problem.
pub(crate) fn validate_group_config(config: &Map<String, Value>) -> Result<GroupConfig, Vec<FieldError>> {
    let mut group = GroupConfig::default();
    let mut errors = Vec::new();
    for (key, json) in config {
        let meta = meta::find(key).filter(|m| m.group_overridable);
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
            let Some(meta) = meta::find(key).filter(|m| m.group_overridable) else {
                problems.push(FieldError::new(key, "is not an overridable setting"));
                continue;
            };
            if json.is_null() {
                continue;
            }
            match value::from_json(meta, json) {
                Ok(value) => group.set(meta.key, value),
                Err(message) => {
                    if let ("failover_status_codes", Value::String(spec)) = (meta.key, json) {
                        group.failover_status_codes = Some(FailoverCodes::unparsable(spec));
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
    pub(crate) fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The override of `key`, if the group has one.
    pub(crate) fn get(&self, key: &str) -> Option<SettingValue> {
        use SettingValue::{Bool, Codes, Int, Text};
        match key {
            "request_timeout" => self.request_timeout.map(Int),
            "idle_conn_timeout" => self.idle_conn_timeout.map(Int),
            "connect_timeout" => self.connect_timeout.map(Int),
            "max_idle_conns" => self.max_idle_conns.map(Int),
            "max_idle_conns_per_host" => self.max_idle_conns_per_host.map(Int),
            "response_header_timeout" => self.response_header_timeout.map(Int),
            "stream_idle_timeout" => self.stream_idle_timeout.map(Int),
            "proxy_url" => self.proxy_url.clone().map(Text),
            "max_retries" => self.max_retries.map(Int),
            "blacklist_threshold" => self.blacklist_threshold.map(Int),
            "failover_status_codes" => self.failover_status_codes.clone().map(Codes),
            "key_validation_interval_minutes" => self.key_validation_interval_minutes.map(Int),
            "key_validation_concurrency" => self.key_validation_concurrency.map(Int),
            "key_validation_timeout_seconds" => self.key_validation_timeout_seconds.map(Int),
            "enable_request_body_logging" => self.enable_request_body_logging.map(Bool),
            _ => None,
        }
    }

    /// Overrides `key` with a value checked for it by [`value::from_json`].
    fn set(&mut self, key: &str, value: SettingValue) {
        use SettingValue::{Bool, Codes, Int, Text};
        match (key, value) {
            ("request_timeout", Int(v)) => self.request_timeout = Some(v),
            ("idle_conn_timeout", Int(v)) => self.idle_conn_timeout = Some(v),
            ("connect_timeout", Int(v)) => self.connect_timeout = Some(v),
            ("max_idle_conns", Int(v)) => self.max_idle_conns = Some(v),
            ("max_idle_conns_per_host", Int(v)) => self.max_idle_conns_per_host = Some(v),
            ("response_header_timeout", Int(v)) => self.response_header_timeout = Some(v),
            ("stream_idle_timeout", Int(v)) => self.stream_idle_timeout = Some(v),
            ("proxy_url", Text(v)) => self.proxy_url = Some(v),
            ("max_retries", Int(v)) => self.max_retries = Some(v),
            ("blacklist_threshold", Int(v)) => self.blacklist_threshold = Some(v),
            ("failover_status_codes", Codes(v)) => self.failover_status_codes = Some(v),
            ("key_validation_interval_minutes", Int(v)) => self.key_validation_interval_minutes = Some(v),
            ("key_validation_concurrency", Int(v)) => self.key_validation_concurrency = Some(v),
            ("key_validation_timeout_seconds", Int(v)) => self.key_validation_timeout_seconds = Some(v),
            ("enable_request_body_logging", Bool(v)) => self.enable_request_body_logging = Some(v),
            (key, value) => unreachable!("the group config field {key} cannot hold {value:?}"),
        }
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

    /// Every field, by destructuring: a new field must be listed here to compile.
    fn field_names(config: &GroupConfig) -> [(&'static str, bool); 15] {
        let GroupConfig {
            request_timeout,
            idle_conn_timeout,
            connect_timeout,
            max_idle_conns,
            max_idle_conns_per_host,
            response_header_timeout,
            stream_idle_timeout,
            proxy_url,
            max_retries,
            blacklist_threshold,
            failover_status_codes,
            key_validation_interval_minutes,
            key_validation_concurrency,
            key_validation_timeout_seconds,
            enable_request_body_logging,
        } = config;
        [
            ("request_timeout", request_timeout.is_some()),
            ("idle_conn_timeout", idle_conn_timeout.is_some()),
            ("connect_timeout", connect_timeout.is_some()),
            ("max_idle_conns", max_idle_conns.is_some()),
            ("max_idle_conns_per_host", max_idle_conns_per_host.is_some()),
            ("response_header_timeout", response_header_timeout.is_some()),
            ("stream_idle_timeout", stream_idle_timeout.is_some()),
            ("proxy_url", proxy_url.is_some()),
            ("max_retries", max_retries.is_some()),
            ("blacklist_threshold", blacklist_threshold.is_some()),
            ("failover_status_codes", failover_status_codes.is_some()),
            (
                "key_validation_interval_minutes",
                key_validation_interval_minutes.is_some(),
            ),
            ("key_validation_concurrency", key_validation_concurrency.is_some()),
            (
                "key_validation_timeout_seconds",
                key_validation_timeout_seconds.is_some(),
            ),
            (
                "enable_request_body_logging",
                enable_request_body_logging.is_some(),
            ),
        ]
    }

    #[test]
    fn every_overridable_setting_is_a_field_and_round_trips() {
        let system = SystemSettings::default();
        let mut all = Map::new();
        for meta in SETTINGS.iter().filter(|m| m.group_overridable) {
            all.insert(meta.key.to_owned(), system.get(meta.key).unwrap().to_json());
        }
        let config = validate_group_config(&all).unwrap();
        let names = field_names(&config);
        assert_eq!(names.map(|(name, _)| name), GROUP_CONFIG_ORDER);
        assert!(
            names.iter().all(|(_, set)| *set),
            "every field was set: {names:?}"
        );
        assert_eq!(config.to_json(), Value::Object(all.clone()));
        let (again, problems) = GroupConfig::from_stored_reporting(&config.to_json_string());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(again, config);
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
