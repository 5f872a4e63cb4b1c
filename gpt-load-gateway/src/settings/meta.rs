//! The table that describes every setting: the single source of truth for keys, types,
//! defaults, minimums, categories, group overrides and display texts.

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
    pub(crate) category: Category,
    /// Whether a group's `config` may override it.
    pub(crate) group_overridable: bool,
    pub(crate) name_en: &'static str,
    pub(crate) description_en: &'static str,
    pub(crate) name_zh: &'static str,
    pub(crate) description_zh: &'static str,
}

impl SettingMeta {
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

/// The overridable settings in the order gpt-load lists them for groups
/// (`GET /api/groups/config-options`), with `stream_idle_timeout` next to the other timeouts.
pub(crate) const GROUP_CONFIG_ORDER: [&str; 15] = [
    "request_timeout",
    "idle_conn_timeout",
    "connect_timeout",
    "max_idle_conns",
    "max_idle_conns_per_host",
    "response_header_timeout",
    "stream_idle_timeout",
    "proxy_url",
    "max_retries",
    "blacklist_threshold",
    "failover_status_codes",
    "key_validation_interval_minutes",
    "key_validation_concurrency",
    "key_validation_timeout_seconds",
    "enable_request_body_logging",
];

/// Shorthand for an integer row.
const fn int(
    key: &'static str,
    default: &'static str,
    min: u32,
    category: Category,
    group_overridable: bool,
    en: (&'static str, &'static str),
    zh: (&'static str, &'static str),
) -> SettingMeta {
    SettingMeta {
        key,
        kind: SettingKind::Int,
        default,
        min: Some(min),
        required: false,
        category,
        group_overridable,
        name_en: en.0,
        description_en: en.1,
        name_zh: zh.0,
        description_zh: zh.1,
    }
}

/// Every setting, in gpt-load's order (which is also the order of the settings page), with
/// `stream_idle_timeout` (ours) after the response header timeout.
pub(crate) const SETTINGS: [SettingMeta; 19] = [
    // Basic.
    SettingMeta {
        key: "app_url",
        kind: SettingKind::String,
        default: "http://localhost:3001",
        min: None,
        required: true,
        category: Category::Basic,
        group_overridable: false,
        name_en: "Project URL",
        description_en: "Base URL of this gateway, used to build the proxy endpoint shown for each group.",
        name_zh: "项目地址",
        description_zh: "网关的基础地址，用于生成每个分组显示的代理端点。",
    },
    SettingMeta {
        key: "proxy_keys",
        kind: SettingKind::String,
        default: "",
        min: None,
        required: true,
        category: Category::Basic,
        group_overridable: false,
        name_en: "Global Proxy Keys",
        description_en: "Comma-separated keys that clients may present to call any group through the proxy.",
        name_zh: "全局代理密钥",
        description_zh: "以逗号分隔的密钥，客户端可用它们通过代理访问任意分组。",
    },
    int(
        "request_log_retention_days",
        "7",
        0,
        Category::Basic,
        false,
        (
            "Log Retention (days)",
            "How many days request logs are kept; 0 keeps them forever.",
        ),
        ("日志保留天数", "请求日志保留的天数，0 表示永久保留。"),
    ),
    int(
        "request_log_write_interval_minutes",
        "1",
        0,
        Category::Basic,
        false,
        (
            "Log Write Interval (minutes)",
            "How often buffered request logs are written to the database; 0 writes every log at once.",
        ),
        (
            "日志写入间隔（分钟）",
            "缓冲的请求日志写入数据库的间隔，0 表示每条日志立即写入。",
        ),
    ),
    SettingMeta {
        key: "enable_request_body_logging",
        kind: SettingKind::Bool,
        default: "false",
        min: None,
        required: false,
        category: Category::Basic,
        group_overridable: true,
        name_en: "Request Body Logging",
        description_en: "Keep the full request body in the request log. Bodies may contain sensitive data.",
        name_zh: "记录请求体",
        description_zh: "在请求日志中保存完整的请求体。请求体可能包含敏感数据。",
    },
    // Request.
    int(
        "request_timeout",
        "600",
        1,
        Category::Request,
        true,
        (
            "Request Timeout (s)",
            "Longest time a non-streaming request may take from start to finish, in seconds.",
        ),
        ("请求超时（秒）", "非流式请求从开始到结束允许的最长时间，单位秒。"),
    ),
    int(
        "connect_timeout",
        "15",
        1,
        Category::Request,
        true,
        (
            "Connect Timeout (s)",
            "Longest time to open a connection to the upstream, in seconds.",
        ),
        ("连接超时（秒）", "与上游建立连接允许的最长时间，单位秒。"),
    ),
    int(
        "idle_conn_timeout",
        "120",
        1,
        Category::Request,
        true,
        (
            "Idle Connection Timeout (s)",
            "How long an unused upstream connection stays in the pool, in seconds.",
        ),
        (
            "空闲连接超时（秒）",
            "未使用的上游连接在连接池中保留的时间，单位秒。",
        ),
    ),
    int(
        "response_header_timeout",
        "600",
        1,
        Category::Request,
        true,
        (
            "Response Header Timeout (s)",
            "Longest wait for the upstream's response headers after the request was sent, in seconds.",
        ),
        ("响应头超时（秒）", "发送请求后等待上游响应头的最长时间，单位秒。"),
    ),
    int(
        "stream_idle_timeout",
        "300",
        1,
        Category::Request,
        true,
        (
            "Stream Idle Timeout (s)",
            "Longest pause between two chunks of a streaming response before the stream is cut, in seconds.",
        ),
        (
            "流空闲超时（秒）",
            "流式响应两个数据块之间允许的最长间隔，超过则断开，单位秒。",
        ),
    ),
    int(
        "max_idle_conns",
        "100",
        1,
        Category::Request,
        true,
        (
            "Max Idle Connections",
            "Largest number of idle upstream connections kept in total.",
        ),
        ("最大空闲连接数", "保留的上游空闲连接总数上限。"),
    ),
    int(
        "max_idle_conns_per_host",
        "50",
        1,
        Category::Request,
        true,
        (
            "Max Idle Connections per Host",
            "Largest number of idle connections kept for each upstream host.",
        ),
        ("每主机最大空闲连接数", "每个上游主机保留的空闲连接数上限。"),
    ),
    SettingMeta {
        key: "proxy_url",
        kind: SettingKind::String,
        default: "",
        min: None,
        required: false,
        category: Category::Request,
        group_overridable: true,
        name_en: "Proxy Server URL",
        description_en: "HTTP, HTTPS or SOCKS5 proxy for upstream requests, such as socks5://host:1080; \
                         empty uses the HTTP_PROXY and HTTPS_PROXY environment variables.",
        name_zh: "代理服务器地址",
        description_zh: "上游请求使用的 HTTP、HTTPS 或 SOCKS5 代理，例如 socks5://host:1080；\
                         留空则使用环境变量 HTTP_PROXY 和 HTTPS_PROXY。",
    },
    // Key.
    int(
        "max_retries",
        "3",
        0,
        Category::Key,
        true,
        (
            "Max Retries",
            "How many times a failed request is retried, on another key first; after a provider \
             failure (5xx, timeout) with every usable key tried, on the one that failed longest \
             ago after a short backoff. 0 disables retries.",
        ),
        (
            "最大重试次数",
            "请求失败后的重试次数，优先换用其他密钥；上游故障（5xx、超时）且所有可用密钥都已尝试时，\
             短暂退避后重试最早失败的那个密钥。0 表示不重试。",
        ),
    ),
    int(
        "blacklist_threshold",
        "3",
        0,
        Category::Key,
        true,
        (
            "Blacklist Threshold",
            "Consecutive key errors (401, 403, an invalid API key) after which a key is blacklisted; \
             provider failures (5xx, timeouts) and request errors never count. 0 never blacklists.",
        ),
        (
            "黑名单阈值",
            "密钥连续出现多少次密钥错误（401、403、无效 API 密钥）后被拉黑；上游故障（5xx、超时）\
             和请求错误从不计入。0 表示从不拉黑。",
        ),
    ),
    SettingMeta {
        key: "failover_status_codes",
        kind: SettingKind::String,
        default: "400-403,405-999",
        min: None,
        required: false,
        category: Category::Key,
        group_overridable: true,
        name_en: "Failover Status Codes",
        description_en: "Upstream status codes considered for failover, as codes and ranges such as \
                         400-403,405-999; empty never fails over on a status. Within them the error body \
                         decides: a request error (malformed, too long, unknown model; 400, 404, 413, 422) \
                         goes back to the client at once and never counts against the key; a key error \
                         (401, 403, an invalid API key) retries on another key and counts; a provider \
                         failure (5xx, 408, timeouts) retries but never blacklists; 429 cools the key down.",
        name_zh: "故障转移状态码",
        description_zh: "参与故障转移的上游状态码，可写单个状态码或范围，例如 400-403,405-999；\
                         留空则不按状态码转移。其中由错误内容决定处理方式：请求本身的错误（格式错误、\
                         超长、未知模型；400、404、413、422）立即返回客户端且不计入密钥失败；密钥错误\
                         （401、403、无效 API 密钥）换密钥重试并计数；上游故障（5xx、408、超时）重试但\
                         从不拉黑；429 让密钥冷却。",
    },
    int(
        "key_validation_interval_minutes",
        "60",
        1,
        Category::Key,
        true,
        (
            "Key Validation Interval (minutes)",
            "How often blacklisted keys are validated again in the background, in minutes.",
        ),
        ("密钥验证间隔（分钟）", "后台重新验证被拉黑密钥的间隔，单位分钟。"),
    ),
    int(
        "key_validation_concurrency",
        "10",
        1,
        Category::Key,
        true,
        (
            "Key Validation Concurrency",
            "How many keys are validated at the same time.",
        ),
        ("密钥验证并发数", "同时验证的密钥数量。"),
    ),
    int(
        "key_validation_timeout_seconds",
        "20",
        1,
        Category::Key,
        true,
        (
            "Key Validation Timeout (s)",
            "Longest time one key validation request may take, in seconds.",
        ),
        ("密钥验证超时（秒）", "单个密钥验证请求允许的最长时间，单位秒。"),
    ),
];

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
            .filter(|m| m.group_overridable)
            .map(|m| m.key)
            .collect();
        let ordered: HashSet<_> = GROUP_CONFIG_ORDER.into_iter().collect();
        assert_eq!(ordered.len(), GROUP_CONFIG_ORDER.len());
        assert_eq!(overridable, ordered);
        assert_eq!(overridable.len(), 15);
        for key in [
            "app_url",
            "proxy_keys",
            "request_log_retention_days",
            "request_log_write_interval_minutes",
        ] {
            assert!(!find(key).unwrap().group_overridable, "{key}");
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
