//! What the API says about a setting: its [`SettingMeta`] row, as generated from
//! [the settings table](super::table), and the enums a row is made of.

pub(crate) use super::table::{GROUP_CONFIG_ORDER, SETTINGS};

/// The type of a setting's value, as named by the settings API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SettingKind {
    /// A whole number, stored as plain decimal text.
    Int,
    /// `true` or `false`.
    Bool,
    /// Free text.
    String,
}

impl SettingKind {
    /// The name the settings API uses: `int`, `bool` or `string`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Int => "int",
            Self::Bool => "bool",
            Self::String => "string",
        }
    }
}

/// The section of the settings page a setting belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Category {
    /// Project URL, proxy keys, request logging.
    Basic,
    /// Upstream connections and timeouts.
    Request,
    /// Retries, blacklisting and key validation.
    Key,
}

impl Category {
    /// Every category, in page order.
    pub(crate) const ALL: [Category; 3] = [Self::Basic, Self::Request, Self::Key];

    /// The identifier: `basic`, `request` or `key`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::Request => "request",
            Self::Key => "key",
        }
    }

    /// The heading shown for the category.
    pub(crate) fn name(self, lang: Lang) -> &'static str {
        match (self, lang) {
            (Self::Basic, Lang::En) => "Basic",
            (Self::Basic, Lang::Zh) => "基础参数",
            (Self::Request, Lang::En) => "Request Settings",
            (Self::Request, Lang::Zh) => "请求设置",
            (Self::Key, Lang::En) => "Key Configuration",
            (Self::Key, Lang::Zh) => "密钥配置",
        }
    }
}

/// The language of names and descriptions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Lang {
    #[default]
    En,
    Zh,
}

/// How the text of a string setting is checked and normalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TextRule {
    /// Taken as it is; a required one must not be blank.
    Plain,
    /// A URL with one of these schemes, trimmed; empty only when the setting is not required.
    Url(&'static [&'static str]),
    /// A comma-separated list of proxy keys, sanitised; at least one key.
    ProxyKeys,
    /// Failover status codes and ranges in gpt-load's grammar (`400-403,405-999`).
    StatusCodes,
    /// Model patterns separated by commas or line breaks: names with `*` wildcards or
    /// `/regular expressions/` ([`ModelFilter::parse`](gpt_load_tower::rewrite::ModelFilter::parse)).
    ModelPatterns,
}

/// One setting.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SettingMeta {
    /// The key of the `system_settings` row and of the JSON APIs.
    pub(crate) key: &'static str,
    pub(crate) kind: SettingKind,
    /// The default in storage format; `""` when there is none (`proxy_keys`).
    pub(crate) default: &'static str,
    /// The smallest accepted value of an integer setting.
    pub(crate) min: Option<u32>,
    /// Whether an empty string is rejected.
    pub(crate) required: bool,
    /// How a text value is checked (see [`TextRule`]); [`TextRule::Plain`] for other kinds.
    pub(crate) rule: TextRule,
    pub(crate) category: Category,
    /// Where a group may override it: its position in [`GROUP_CONFIG_ORDER`]; `None` when a
    /// group's `config` may not override it.
    pub(crate) group_position: Option<usize>,
    pub(crate) name_en: &'static str,
    pub(crate) description_en: &'static str,
    pub(crate) name_zh: &'static str,
    pub(crate) description_zh: &'static str,
}

impl SettingMeta {
    /// Whether a group's `config` may override it.
    pub(crate) fn group_overridable(&self) -> bool {
        self.group_position.is_some()
    }

    /// Fails the build on a row that contradicts itself (evaluated for every row of the table).
    pub(crate) const fn check(&self) {
        match self.kind {
            SettingKind::Int => assert!(self.min.is_some(), "an integer setting needs a `min`"),
            SettingKind::Bool | SettingKind::String => {
                assert!(self.min.is_none(), "only an integer setting has a `min`");
            }
        }
        if !matches!(self.kind, SettingKind::String) {
            assert!(!self.required, "only a string setting can be required");
            assert!(
                matches!(self.rule, TextRule::Plain),
                "only a string setting has a text rule"
            );
        }
    }

    /// The display name.
    pub(crate) fn name(&self, lang: Lang) -> &'static str {
        match lang {
            Lang::En => self.name_en,
            Lang::Zh => self.name_zh,
        }
    }

    /// The display description.
    pub(crate) fn description(&self, lang: Lang) -> &'static str {
        match lang {
            Lang::En => self.description_en,
            Lang::Zh => self.description_zh,
        }
    }
}

/// The metadata of `key`, if it is a setting.
pub(crate) fn find(key: &str) -> Option<&'static SettingMeta> {
    SETTINGS.iter().find(|meta| meta.key == key)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn keys_are_unique_and_categories_contiguous() {
        let keys: HashSet<_> = SETTINGS.iter().map(|m| m.key).collect();
        assert_eq!(keys.len(), SETTINGS.len());
        let mut seen = Vec::new();
        for meta in &SETTINGS {
            if seen.last() != Some(&meta.category) {
                assert!(!seen.contains(&meta.category), "{} splits its category", meta.key);
                seen.push(meta.category);
            }
        }
        assert_eq!(seen, Category::ALL);
    }

    #[test]
    fn group_order_lists_exactly_the_overridable_settings() {
        let overridable: HashSet<_> = SETTINGS
            .iter()
            .filter(|m| m.group_overridable())
            .map(|m| m.key)
            .collect();
        let ordered: HashSet<_> = GROUP_CONFIG_ORDER.into_iter().collect();
        assert_eq!(ordered.len(), GROUP_CONFIG_ORDER.len());
        assert_eq!(overridable, ordered);
        assert_eq!(overridable.len(), 33);
        for (position, key) in GROUP_CONFIG_ORDER.into_iter().enumerate() {
            assert_eq!(find(key).unwrap().group_position, Some(position), "{key}");
        }
        for key in [
            "app_url",
            "proxy_keys",
            "request_log_retention_days",
            "request_log_write_interval_minutes",
        ] {
            assert!(!find(key).unwrap().group_overridable(), "{key}");
        }
    }

    #[test]
    fn gpt_load_minimums_and_defaults() {
        let expect = [
            ("request_log_retention_days", "7", 0),
            ("request_log_write_interval_minutes", "1", 0),
            ("request_timeout", "600", 1),
            ("connect_timeout", "15", 1),
            ("idle_conn_timeout", "120", 1),
            ("response_header_timeout", "600", 1),
            ("stream_idle_timeout", "300", 1),
            ("max_idle_conns", "100", 1),
            ("max_idle_conns_per_host", "50", 1),
            ("max_retries", "3", 0),
            ("blacklist_threshold", "3", 0),
            ("key_validation_interval_minutes", "60", 1),
            ("key_validation_concurrency", "10", 1),
            ("key_validation_timeout_seconds", "20", 1),
        ];
        for (key, default, min) in expect {
            let meta = find(key).unwrap();
            assert_eq!(
                (meta.kind, meta.default, meta.min),
                (SettingKind::Int, default, Some(min)),
                "{key}"
            );
        }
        for meta in SETTINGS.iter().filter(|m| m.kind != SettingKind::Int) {
            assert_eq!(meta.min, None, "{}", meta.key);
        }
        let required: Vec<_> = SETTINGS.iter().filter(|m| m.required).map(|m| m.key).collect();
        assert_eq!(required, ["app_url", "proxy_keys"]);
    }

    #[test]
    fn every_setting_has_texts_in_both_languages() {
        for meta in &SETTINGS {
            for lang in [Lang::En, Lang::Zh] {
                assert!(!meta.name(lang).is_empty(), "{}", meta.key);
                assert!(
                    meta.description(lang).len() <= 512,
                    "{} fits the description column",
                    meta.key
                );
            }
            assert_ne!(meta.name_en, meta.name_zh, "{}", meta.key);
            assert!(meta.description_en.is_ascii(), "{}", meta.key);
            assert!(!meta.description_en.contains("  "), "{}", meta.key);
        }
    }
}
