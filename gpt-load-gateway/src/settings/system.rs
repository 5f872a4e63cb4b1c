//! [`SystemSettings`] (declared by [the settings table](super::table)) built from the defaults
//! and the stored rows, and [`validate_update`], which checks a partial update into a
//! [`SettingsPatch`].

use std::time::Duration;

use serde_json::{Map, Value};

use super::{
    SystemSettings,
    meta::{self, SETTINGS, SettingMeta},
    value::{self, FieldError, SettingValue},
};
use crate::models::SettingRow;

impl SystemSettings {
    /// The defaults overridden by the stored rows. A row whose value does not parse keeps the
    /// default and is reported; rows of unknown keys are ignored.
    pub(crate) fn from_rows(rows: &[SettingRow]) -> (Self, Vec<FieldError>) {
        let mut settings = Self::default();
        let mut problems = Vec::new();
        for row in rows {
            let Some(meta) = meta::find(&row.setting_key) else {
                continue;
            };
            match value::from_storage(meta, &row.setting_value) {
                Ok(value) => settings.set(meta.key, value),
                Err(message) => {
                    let default = match meta.default {
                        "" => "an empty value".to_owned(),
                        text => format!("the default `{text}`"),
                    };
                    problems.push(FieldError::new(
                        meta.key,
                        format!("the stored value is invalid ({message}); using {default}"),
                    ));
                }
            }
        }
        (settings, problems)
    }

    /// How long request logs are kept; `None` = forever.
    pub(crate) fn request_log_retention(&self) -> Option<Duration> {
        (self.request_log_retention_days > 0)
            .then(|| Duration::from_secs(u64::from(self.request_log_retention_days) * 86_400))
    }

    /// The longest a request log may wait for its write; `None` = write each one at once (see
    /// the log writer).
    pub(crate) fn request_log_write_interval(&self) -> Option<Duration> {
        (self.request_log_write_interval_minutes > 0)
            .then(|| Duration::from_secs(u64::from(self.request_log_write_interval_minutes) * 60))
    }

    /// The proxy for upstream requests; `None` = use the proxy environment variables.
    #[cfg(test)]
    pub(crate) fn proxy_url(&self) -> Option<&str> {
        Some(self.proxy_url.as_str()).filter(|url| !url.is_empty())
    }
}

/// A checked partial update, in metadata order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SettingsPatch {
    values: Vec<(&'static SettingMeta, SettingValue)>,
}

impl SettingsPatch {
    /// Whether the update changes nothing (`{}`).
    pub(crate) fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The updated keys, in metadata order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.values.iter().map(|(meta, _)| meta.key)
    }

    /// The checked value given for `key`.
    #[cfg(test)]
    pub(crate) fn get(&self, key: &str) -> Option<&SettingValue> {
        self.values
            .iter()
            .find_map(|(meta, value)| (meta.key == key).then_some(value))
    }

    /// `(key, stored text)` of every updated setting, for `repo::settings::update`.
    pub(crate) fn storage_rows(&self) -> Vec<(&'static str, String)> {
        self.values
            .iter()
            .map(|(meta, value)| (meta.key, value.to_storage()))
            .collect()
    }

    /// Applies the update to `settings`.
    pub(crate) fn apply(&self, settings: &mut SystemSettings) {
        for (meta, value) in &self.values {
            settings.set(meta.key, value.clone());
        }
    }
}

/// Checks a partial update of the system settings (`PUT /api/settings`). Reports every problem:
/// unknown keys, wrong JSON types, integers that are fractional or below their minimum, empty
/// required strings, unparsable failover codes, malformed URLs. `proxy_keys` is sanitised.
pub(crate) fn validate_update(update: &Map<String, Value>) -> Result<SettingsPatch, Vec<FieldError>> {
    let mut values = Vec::with_capacity(update.len());
    let mut errors = Vec::new();
    for (key, json) in update {
        let Some(meta) = meta::find(key) else {
            errors.push(FieldError::new(key, "unknown setting"));
            continue;
        };
        match value::from_json(meta, json) {
            Ok(value) => values.push((meta, value)),
            Err(message) => errors.push(FieldError::new(key, message)),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    values.sort_by_key(|(meta, _)| SETTINGS.iter().position(|m| m.key == meta.key));
    Ok(SettingsPatch { values })
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDateTime;
    use serde_json::json;

    use super::*;
    use crate::settings::{
        meta::{SettingKind, TextRule},
        value::FailoverCodes,
    };

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    fn row(key: &str, value: &str) -> SettingRow {
        SettingRow {
            id: 0,
            setting_key: key.to_owned(),
            setting_value: value.to_owned(),
            description: String::new(),
            created_at: NaiveDateTime::default(),
            updated_at: NaiveDateTime::default(),
        }
    }

    /// A valid value of `meta`'s setting that differs from its default.
    fn another_value(meta: &SettingMeta) -> Value {
        match (meta.kind, meta.rule) {
            (SettingKind::Int, _) => json!(4242),
            (SettingKind::Bool, _) => json!(meta.default != "true"),
            (_, TextRule::Url(schemes)) => json!(format!("{}://changed.example:8080", schemes[0])),
            (_, TextRule::ProxyKeys) => json!("sk-changed-1,sk-changed-2"),
            (_, TextRule::StatusCodes) => json!("429,500-599"),
            (_, TextRule::ModelPatterns) => json!("gpt-4*, /^o[13]-/"),
            (_, TextRule::Plain) => json!("changed"),
        }
    }

    #[test]
    fn every_setting_has_its_own_field_read_and_written_by_key() {
        let defaults = SystemSettings::default();
        for meta in &SETTINGS {
            let value = another_value(meta);
            let patch = validate_update(&Map::from_iter([(meta.key.to_owned(), value.clone())]))
                .unwrap_or_else(|e| panic!("{}: {e:?}", meta.key));
            let mut settings = defaults.clone();
            patch.apply(&mut settings);
            assert_eq!(
                settings.get(meta.key).map(|v| v.to_json()),
                Some(value),
                "{}",
                meta.key
            );
            assert_ne!(settings.get(meta.key), defaults.get(meta.key), "{}", meta.key);
            for other in SETTINGS.iter().filter(|m| m.key != meta.key) {
                assert_eq!(
                    settings.get(other.key),
                    defaults.get(other.key),
                    "setting {} changed {}",
                    meta.key,
                    other.key
                );
            }
        }
        assert_eq!(defaults.get("nope"), None);

        // The fields themselves, as the rest of the crate reads them.
        let all = SETTINGS
            .iter()
            .map(|meta| (meta.key.to_owned(), another_value(meta)))
            .collect();
        let mut settings = defaults.clone();
        validate_update(&all).unwrap().apply(&mut settings);
        assert_eq!(settings.app_url, "http://changed.example:8080");
        assert_eq!(settings.proxy_keys, ["sk-changed-1", "sk-changed-2"]);
        assert_eq!(settings.max_retries, 4242);
        assert!(settings.enable_request_body_logging);
        assert_eq!(settings.proxy_url, "http://changed.example:8080");
        assert_eq!(settings.failover_status_codes.spec(), "429,500-599");

        // The struct declares its fields in table order.
        let debug = format!("{settings:?}");
        let positions: Vec<_> = SETTINGS
            .iter()
            .map(|meta| debug.find(&format!(" {}: ", meta.key)).unwrap())
            .collect();
        assert!(positions.is_sorted(), "{debug}");
    }

    #[test]
    fn defaults_come_from_the_table_and_pass_validation() {
        let settings = SystemSettings::default();
        for meta in &SETTINGS {
            let value = settings.get(meta.key).unwrap();
            assert_eq!(value.to_storage(), meta.default, "{}", meta.key);
            if meta.key == "proxy_keys" {
                continue; // no default: seeded with a generated key
            }
            let json = Map::from_iter([(meta.key.to_owned(), value.to_json())]);
            let patch = validate_update(&json).unwrap_or_else(|e| panic!("{}: {e:?}", meta.key));
            assert_eq!(patch.get(meta.key), Some(&value));
        }
        assert_eq!(settings.request_timeout, 600);
        assert_eq!(settings.response_header_timeout, 600);
        assert_eq!(settings.stream_idle_timeout, 300);
        assert_eq!(settings.request_log_write_interval_minutes, 1);
        assert_eq!(settings.failover_status_codes, FailoverCodes::default());
        assert!(settings.proxy_keys.is_empty());
        assert_eq!(settings.proxy_url(), None);
        assert_eq!(
            settings.request_log_retention(),
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(
            settings.request_log_write_interval(),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn a_valid_update_round_trips_through_storage() {
        let update = object(json!({
            "proxy_keys": " sk-a, ,sk-b ",
            "max_idle_conns": 1_000_000,
            "request_timeout": 30.0,
            "enable_request_body_logging": true,
            "failover_status_codes": "429,500-599",
            "proxy_url": "socks5://127.0.0.1:1080",
            "stream_idle_timeout": 45,
        }));
        let patch = validate_update(&update).unwrap();
        let stored = patch.storage_rows();
        assert_eq!(
            stored,
            [
                ("proxy_keys", "sk-a,sk-b".to_owned()),
                ("enable_request_body_logging", "true".to_owned()),
                ("request_timeout", "30".to_owned()),
                ("stream_idle_timeout", "45".to_owned()),
                ("max_idle_conns", "1000000".to_owned()),
                ("proxy_url", "socks5://127.0.0.1:1080".to_owned()),
                ("failover_status_codes", "429,500-599".to_owned()),
            ]
        );
        let mut applied = SystemSettings::default();
        patch.apply(&mut applied);
        assert_eq!(applied.proxy_keys, ["sk-a", "sk-b"]);
        assert_eq!(applied.max_idle_conns, 1_000_000);
        assert!(applied.failover_status_codes.matcher().matches(429));
        assert!(!applied.failover_status_codes.matcher().matches(401));
        let rows: Vec<_> = stored.iter().map(|(k, v)| row(k, v)).collect();
        let (reloaded, problems) = SystemSettings::from_rows(&rows);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(reloaded, applied, "storage gives back what was applied");
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let update = object(json!({
            "app_url": "",
            "proxy_keys": ",",
            "request_timeout": 0,
            "max_retries": -1,
            "blacklist_threshold": 2.5,
            "max_idle_conns": "100",
            "enable_request_body_logging": "true",
            "failover_status_codes": "600-500",
            "proxy_url": "ftp://proxy",
            "no_such_setting": 1,
            "connect_timeout": 5,
        }));
        let errors = validate_update(&update).unwrap_err();
        let mut fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "app_url",
                "blacklist_threshold",
                "enable_request_body_logging",
                "failover_status_codes",
                "max_idle_conns",
                "max_retries",
                "no_such_setting",
                "proxy_keys",
                "proxy_url",
                "request_timeout",
            ]
        );
        let message = |field: &str| {
            errors
                .iter()
                .find(|e| e.field == field)
                .map(|e| e.message.clone())
                .unwrap()
        };
        assert_eq!(message("no_such_setting"), "unknown setting");
        assert_eq!(message("request_timeout"), "must be at least 1");
        assert!(
            message("failover_status_codes").contains(
                &"600-500"
                    .parse::<gpt_load_tower::blacklist::StatusMatcher>()
                    .unwrap_err()
                    .to_string()
            )
        );
    }

    #[test]
    fn an_empty_update_is_an_empty_patch() {
        let patch = validate_update(&Map::new()).unwrap();
        assert!(patch.is_empty());
        assert_eq!(patch.keys().count(), 0);
    }

    #[test]
    fn unparsable_rows_keep_the_default_and_are_reported() {
        let rows = [
            row("max_retries", "many"),
            row("request_timeout", "0"),
            row("max_idle_conns", "1e+06"),
            row("blacklist_threshold", "7"),
            row("failover_status_codes", "abc"),
            row("enable_request_body_logging", "maybe"),
            row("proxy_url", "http://user:secret@proxy:bad"),
            row("some_future_setting", "x"),
        ];
        let (settings, problems) = SystemSettings::from_rows(&rows);
        let defaults = SystemSettings::default();
        assert_eq!(settings.max_retries, defaults.max_retries);
        assert_eq!(settings.request_timeout, defaults.request_timeout);
        assert_eq!(settings.failover_status_codes, defaults.failover_status_codes);
        assert_eq!(settings.proxy_url, "");
        assert!(!settings.enable_request_body_logging);
        assert_eq!(
            settings.max_idle_conns, 1_000_000,
            "gpt-load's exponent form is recovered"
        );
        assert_eq!(settings.blacklist_threshold, 7);
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "max_retries",
                "request_timeout",
                "failover_status_codes",
                "enable_request_body_logging",
                "proxy_url"
            ]
        );
        assert!(
            problems[0].message.contains("using the default `3`"),
            "{}",
            problems[0].message
        );
        assert!(
            problems.iter().all(|p| !p.message.contains("secret")),
            "no credentials in warnings"
        );
    }
}
