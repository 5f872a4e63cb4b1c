//! The shapes the admin API shows: the settings page (`GET /api/settings`) and the group
//! config options (`GET /api/groups/config-options`), built from the metadata table.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{
    SystemSettings,
    meta::{self, Category, GROUP_CONFIG_ORDER, Lang, SETTINGS},
};

/// One section of the settings page.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct SettingsCategory {
    /// The translated heading.
    pub(crate) category_name: &'static str,
    pub(crate) settings: Vec<SettingInfo>,
}

/// One setting on the settings page.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct SettingInfo {
    pub(crate) key: &'static str,
    pub(crate) name: &'static str,
    /// The current value: a number, a boolean or a string.
    pub(crate) value: Value,
    /// `int`, `bool` or `string`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    /// The default in storage format; `""` when there is none.
    pub(crate) default_value: &'static str,
    pub(crate) description: &'static str,
    /// `basic`, `request` or `key`.
    pub(crate) category: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) min_value: Option<u32>,
    pub(crate) required: bool,
}

/// One overridable setting offered for a group's config.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct ConfigOption {
    pub(crate) key: &'static str,
    pub(crate) name: &'static str,
    pub(crate) description: &'static str,
    /// The current system value, which the group inherits unless it overrides it.
    pub(crate) default_value: Value,
    /// `int`, `bool` or `string`, as on the settings page.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    /// The least value of an `int`, as on the settings page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) min_value: Option<u32>,
}

impl SystemSettings {
    /// The settings page: every setting with its current value, by category, in table order.
    pub(crate) fn describe(&self, lang: Lang) -> Vec<SettingsCategory> {
        Category::ALL
            .into_iter()
            .map(|category| SettingsCategory {
                category_name: category.name(lang),
                settings: SETTINGS
                    .iter()
                    .filter(|meta| meta.category == category)
                    .map(|meta| SettingInfo {
                        key: meta.key,
                        name: meta.name(lang),
                        value: self.get(meta.key).map_or(Value::Null, |v| v.to_json()),
                        kind: meta.kind.as_str(),
                        default_value: meta.default,
                        description: meta.description(lang),
                        category: category.as_str(),
                        min_value: meta.min,
                        required: meta.required,
                    })
                    .collect(),
            })
            .collect()
    }

    /// The settings a group may override, in gpt-load's order, each with the current system
    /// value as its default.
    pub(crate) fn config_options(&self, lang: Lang) -> Vec<ConfigOption> {
        GROUP_CONFIG_ORDER
            .iter()
            .filter_map(|key| meta::find(key))
            .map(|meta| ConfigOption {
                key: meta.key,
                name: meta.name(lang),
                description: meta.description(lang),
                default_value: self.get(meta.key).map_or(Value::Null, |v| v.to_json()),
                kind: meta.kind.as_str(),
                min_value: meta.min,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_settings_page_lists_every_setting_by_category() {
        let settings = SystemSettings {
            proxy_keys: vec!["sk-a".to_owned(), "sk-b".to_owned()],
            ..SystemSettings::default()
        };
        let page = settings.describe(Lang::En);
        let headings: Vec<_> = page.iter().map(|c| c.category_name).collect();
        assert_eq!(headings, ["Basic", "Request Settings", "Key Configuration"]);
        let keys: Vec<_> = page
            .iter()
            .flat_map(|c| c.settings.iter().map(|s| s.key))
            .collect();
        let table: Vec<_> = SETTINGS.iter().map(|m| m.key).collect();
        assert_eq!(keys, table);
        let json = serde_json::to_value(&page).unwrap();
        assert_eq!(
            json[0]["settings"][1],
            json!({
                "key": "proxy_keys",
                "name": "Global Proxy Keys",
                "value": "sk-a,sk-b",
                "type": "string",
                "default_value": "",
                "description": SETTINGS[1].description_en,
                "category": "basic",
                "required": true,
            })
        );
        let timeout = &json[1]["settings"][0];
        assert_eq!(timeout["key"], "request_timeout");
        assert_eq!(timeout["value"], 600);
        assert_eq!(timeout["type"], "int");
        assert_eq!(timeout["default_value"], "600");
        assert_eq!(timeout["min_value"], 1);
        assert_eq!(json[0]["settings"][4]["value"], false);
        assert_eq!(settings.describe(Lang::Zh)[2].category_name, "密钥配置");
    }

    #[test]
    fn config_options_default_to_the_current_system_values() {
        let settings = SystemSettings {
            max_retries: 9,
            ..SystemSettings::default()
        };
        let options = settings.config_options(Lang::En);
        let keys: Vec<_> = options.iter().map(|o| o.key).collect();
        assert_eq!(keys, GROUP_CONFIG_ORDER);
        let json = serde_json::to_value(&options).unwrap();
        let retries = json
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["key"] == "max_retries")
            .unwrap();
        assert_eq!(retries["default_value"], 9);
        assert_eq!(retries["name"], "Max Retries");
        assert_eq!(retries["type"], "int");
        assert_eq!(retries["min_value"], 0);
        assert_eq!(json[14]["type"], "bool");
        assert!(json[14].get("min_value").is_none());
        assert_eq!(json[0]["key"], "request_timeout");
        assert_eq!(json[14]["default_value"], false);
        assert_eq!(settings.config_options(Lang::Zh)[0].name, "请求超时（秒）");
    }
}
