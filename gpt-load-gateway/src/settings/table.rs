//! The settings table: every system setting, declared once.
//!
//! Each entry below is one setting. From this table alone [`settings_table!`] derives
//! everything that used to be written out per setting:
//!
//! - [`SETTINGS`]: the metadata served by `GET /api/settings` (key, type, default, minimum,
//!   required flag, category, names and descriptions in English and Chinese), in table order,
//!   which is gpt-load's order and the order of the settings page;
//! - [`SystemSettings`]: one typed field per entry, its defaults, and `get`/`set` by key (the
//!   code behind loading rows, applying updates and showing values);
//! - for the entries with a `group` position: [`GROUP_CONFIG_ORDER`] (the order of
//!   `GET /api/groups/config-options`), [`GroupConfig`] (a group's `Option` overrides, with
//!   `get`/`set`), [`EffectiveConfig`] and [`SystemSettings::effective`], which takes each
//!   field from the group when it overrides it, else from the system settings.
//!
//! Validation follows from the entry too: the Rust type selects the kind and how values are
//! read (see [`SettingType`](super::value::SettingType): `u32`, `bool`, `String`,
//! `Vec<String>` for the comma-separated proxy keys, [`FailoverCodes`]), `min` bounds an
//! integer, `required` refuses an empty string, and `rule` checks a string further (see
//! [`TextRule`](super::meta::TextRule)).
//!
//! # An entry
//!
//! ```text
//! /// Doc comment of the `SystemSettings` field.
//! key: RustType {
//!     default: "text",             // the default as stored text; "" when there is none
//!     min: 1,                      // integers only, and required for them
//!     required: true,              // optional: strings only; an empty value is refused
//!     rule: Url(PROXY_URL_SCHEMES), // optional: strings only; how the text is checked
//!     category: Request,           // Basic, Request or Key: the section of the settings page
//!     group: 4,                    // optional: groups may override it; its position in
//!                                  // GROUP_CONFIG_ORDER (0, 1, 2, … each used once)
//!     en: ("Name", "Description."),
//!     zh: ("名称", "说明。"),
//! },
//! ```
//!
//! The fields must come in this order. Mistakes are compile errors: a repeated key, a `min` on a
//! non-integer or none on an integer, a rule or `required` on a non-string, a group position
//! used twice or skipped.
//!
//! # Adding a setting
//!
//! 1. Add its entry here, where it belongs in the settings page's order (its category's
//!    entries stay together). Give it a `group` position if groups may override it, and shift
//!    the positions after it.
//! 2. Write the code that uses it: read `SystemSettings::key` for a system-wide setting; for an
//!    overridable one, add a typed accessor to `EffectiveConfig` in `effective.rs` (a `Duration`
//!    for a timeout, and so on) and use it where the group's configuration is applied.
//! 3. A new kind of value (beyond the types above) needs a [`SettingType`](super::value::SettingType)
//!    implementation, and a new way to check text a [`TextRule`](super::meta::TextRule).
//!
//! The start-up seeding inserts the new row with its default on the next start, the settings
//! page and the group config options show it, and updates validate and store it: nothing else
//! lists the settings.

use super::{
    declare::settings_table,
    meta::TextRule::{ModelPatterns, Url},
    value::{APP_URL_SCHEMES, FailoverCodes, PROXY_URL_SCHEMES},
};

settings_table! {
    // Basic.

    /// Base URL of the gateway, for the endpoints shown in the console.
    app_url: String {
        default: "http://localhost:3001",
        required: true,
        rule: Url(APP_URL_SCHEMES),
        category: Basic,
        en: (
            "Project URL",
            "Base URL of this gateway, used to build the proxy endpoint shown for each group.",
        ),
        zh: ("项目地址", "网关的基础地址，用于生成每个分组显示的代理端点。"),
    },
    /// Global proxy keys: accepted by every group.
    proxy_keys: Vec<String> {
        default: "",
        required: true,
        category: Basic,
        en: (
            "Global Proxy Keys",
            "Comma-separated keys that clients may present to call any group through the proxy.",
        ),
        zh: ("全局代理密钥", "以逗号分隔的密钥，客户端可用它们通过代理访问任意分组。"),
    },
    /// Days request logs are kept; 0 = forever.
    request_log_retention_days: u32 {
        default: "7",
        min: 0,
        category: Basic,
        en: (
            "Log Retention (days)",
            "How many days request logs are kept; 0 keeps them forever.",
        ),
        zh: ("日志保留天数", "请求日志保留的天数，0 表示永久保留。"),
    },
    /// 0 = write each request log as soon as it arrives; N = the longest a log waits for its
    /// write, in minutes, which the log writer's one-second batching always undercuts.
    request_log_write_interval_minutes: u32 {
        default: "1",
        min: 0,
        category: Basic,
        en: (
            "Log Write Interval (minutes)",
            "Request logs are written to the database in batches, about one second after they \
             arrive or as soon as 500 are waiting, so they show in the console at once; 0 writes \
             each log as soon as it arrives. Other values are accepted for compatibility with \
             gpt-load (which holds logs that many minutes) and change nothing.",
        ),
        zh: (
            "日志写入间隔（分钟）",
            "请求日志分批写入数据库：到达后约 1 秒或累计 500 条时写入，因此可立即在控制台查看；\
             0 表示每条日志到达后立即写入。其他值仅为兼容 gpt-load（它会将日志缓存相应的分钟数）\
             而接受，不改变写入方式。",
        ),
    },
    enable_request_body_logging: bool {
        default: "false",
        category: Basic,
        group: 14,
        en: (
            "Request Body Logging",
            "Keep the full request body in the request log. Bodies may contain sensitive data.",
        ),
        zh: ("记录请求体", "在请求日志中保存完整的请求体。请求体可能包含敏感数据。"),
    },

    // Request.

    /// Seconds.
    request_timeout: u32 {
        default: "600",
        min: 1,
        category: Request,
        group: 0,
        en: (
            "Request Timeout (s)",
            "Longest time a non-streaming request may take from start to finish, in seconds.",
        ),
        zh: ("请求超时（秒）", "非流式请求从开始到结束允许的最长时间，单位秒。"),
    },
    /// Seconds.
    connect_timeout: u32 {
        default: "15",
        min: 1,
        category: Request,
        group: 2,
        en: (
            "Connect Timeout (s)",
            "Longest time to open a connection to the upstream, in seconds.",
        ),
        zh: ("连接超时（秒）", "与上游建立连接允许的最长时间，单位秒。"),
    },
    /// Seconds.
    idle_conn_timeout: u32 {
        default: "120",
        min: 1,
        category: Request,
        group: 1,
        en: (
            "Idle Connection Timeout (s)",
            "How long an unused upstream connection stays in the pool, in seconds.",
        ),
        zh: (
            "空闲连接超时（秒）",
            "未使用的上游连接在连接池中保留的时间，单位秒。",
        ),
    },
    /// Seconds.
    response_header_timeout: u32 {
        default: "600",
        min: 1,
        category: Request,
        group: 5,
        en: (
            "Response Header Timeout (s)",
            "Longest wait for the upstream's response headers after the request was sent, in seconds.",
        ),
        zh: ("响应头超时（秒）", "发送请求后等待上游响应头的最长时间，单位秒。"),
    },
    /// Seconds between two chunks of a streamed response (ours, not gpt-load's).
    stream_idle_timeout: u32 {
        default: "300",
        min: 1,
        category: Request,
        group: 6,
        en: (
            "Stream Idle Timeout (s)",
            "Longest pause between two chunks of a streaming response before the stream is cut, in seconds.",
        ),
        zh: (
            "流空闲超时（秒）",
            "流式响应两个数据块之间允许的最长间隔，超过则断开，单位秒。",
        ),
    },
    max_idle_conns: u32 {
        default: "100",
        min: 1,
        category: Request,
        group: 3,
        en: (
            "Max Idle Connections",
            "Largest number of idle connections kept for each upstream host, together with Max Idle \
             Connections per Host: the smaller of the two applies. (gpt-load caps the total over all \
             hosts; this gateway's connection pool caps each host.)",
        ),
        zh: (
            "最大空闲连接数",
            "每个上游主机保留的空闲连接数上限，与“每主机最大空闲连接数”同时生效，取两者中较小的值。\
             （gpt-load 限制的是所有主机的空闲连接总数；本网关的连接池按主机分别限制。）",
        ),
    },
    max_idle_conns_per_host: u32 {
        default: "50",
        min: 1,
        category: Request,
        group: 4,
        en: (
            "Max Idle Connections per Host",
            "Largest number of idle connections kept for each upstream host.",
        ),
        zh: ("每主机最大空闲连接数", "每个上游主机保留的空闲连接数上限。"),
    },
    /// Empty: use the proxy environment variables.
    proxy_url: String {
        default: "",
        rule: Url(PROXY_URL_SCHEMES),
        category: Request,
        group: 7,
        en: (
            "Proxy Server URL",
            "HTTP, HTTPS or SOCKS5 proxy for upstream requests, such as socks5://host:1080; \
             empty uses the HTTP_PROXY and HTTPS_PROXY environment variables.",
        ),
        zh: (
            "代理服务器地址",
            "上游请求使用的 HTTP、HTTPS 或 SOCKS5 代理，例如 socks5://host:1080；\
             留空则使用环境变量 HTTP_PROXY 和 HTTPS_PROXY。",
        ),
    },

    /// Model patterns (docs/KEYS.md, "Model filters").
    model_include: String {
        default: "",
        rule: ModelPatterns,
        category: Request,
        group: 18,
        en: (
            "Models Served",
            "Only requests for these models are served, as names with * wildcards (gpt-4*) or \
             /regular expressions/, separated by commas or lines; empty serves every model. Other \
             models are refused with a 400 before a key is used, model lists show only these, \
             and aggregate groups route a model only to sub-groups that serve it.",
        ),
        zh: (
            "允许的模型",
            "只处理这些模型的请求：可写带 * 通配符的名称（gpt-4*）或 /正则表达式/，用逗号或换行分隔；\
             留空则允许所有模型。其他模型在使用密钥前即以 400 拒绝，模型列表只显示这些模型，\
             聚合分组只把请求路由到支持该模型的子分组。",
        ),
    },
    /// Model patterns (docs/KEYS.md, "Model filters").
    model_exclude: String {
        default: "",
        rule: ModelPatterns,
        category: Request,
        group: 19,
        en: (
            "Models Refused",
            "Requests for these models are refused with a 400 before a key is used, even when \
             Models Served lists them; same pattern syntax.",
        ),
        zh: (
            "拒绝的模型",
            "这些模型的请求在使用密钥前即以 400 拒绝，即使它们在允许的模型中；写法相同。",
        ),
    },
    /// docs/KEYS.md, "Empty replies".
    retry_empty_replies: bool {
        default: "true",
        category: Request,
        group: 20,
        en: (
            "Retry Empty Replies",
            "A successful reply without content (no choices, candidates or content blocks), or a \
             stream that ends before its first content, is retried on another key before anything \
             reaches the client. The reply is read ahead up to 64 KiB, or a stream up to its first \
             content.",
        ),
        zh: (
            "重试空回复",
            "没有内容的成功回复（没有 choices、candidates 或内容块），或在首个内容之前就结束的流，\
             会在发送给客户端之前换用其他密钥重试。回复最多预读 64 KiB，流式回复预读到首个内容为止。",
        ),
    },
    /// docs/USAGE.md, "Streams that do not report usage".
    include_stream_usage: bool {
        default: "false",
        category: Request,
        group: 23,
        en: (
            "Count Stream Tokens",
            "Adds stream_options.include_usage to OpenAI-format chat and completion streams so \
             their tokens are counted. The stream's last chunk then carries the usage with an \
             empty choices list, which clients that did not ask for it receive too.",
        ),
        zh: (
            "统计流式令牌",
            "为 OpenAI 格式的对话与补全流式请求加上 stream_options.include_usage，以便统计其令牌用量。\
             流的最后一个分块将带有用量和空的 choices 列表，未请求用量的客户端也会收到它。",
        ),
    },

    /// docs/LIMITS.md, "Group limits".
    group_rpm: u32 {
        default: "0",
        min: 0,
        category: Request,
        group: 27,
        en: (
            "Group Requests per Minute",
            "Most requests the group accepts in any minute (0 = no limit). Over it, a request \
             waits up to the queue time for room, else gets 429 with Retry-After and \
             X-Gpt-Load-Limit: group_rpm.",
        ),
        zh: (
            "分组每分钟请求数",
            "分组在任意一分钟内接受的最多请求数（0 表示不限）。超出时请求最多排队等待排队时间，\
             否则收到 429、Retry-After 和 X-Gpt-Load-Limit: group_rpm。",
        ),
    },
    /// docs/LIMITS.md, "Group limits".
    group_max_concurrency: u32 {
        default: "0",
        min: 0,
        category: Request,
        group: 28,
        en: (
            "Group Concurrent Requests",
            "Most requests of the group in flight at once, a stream until it ends (0 = no limit). \
             Over it, a request waits up to the queue time for one to end, else gets 429 with \
             X-Gpt-Load-Limit: group_concurrency.",
        ),
        zh: (
            "分组并发请求数",
            "分组同时处理的最多请求数，流式请求持续到结束为止（0 表示不限）。超出时请求最多排队等待排队时间，\
             否则收到 429 和 X-Gpt-Load-Limit: group_concurrency。",
        ),
    },
    /// docs/LIMITS.md, "Token limits".
    group_tpm: u32 {
        default: "0",
        min: 0,
        category: Request,
        group: 31,
        en: (
            "Group Tokens per Minute",
            "Most tokens the group's requests use in any minute, counting the estimates of \
             requests in flight (0 = no limit). At it, a request waits up to the queue time, else \
             gets 429 with Retry-After and X-Gpt-Load-Limit: group_tpm.",
        ),
        zh: (
            "分组每分钟令牌数",
            "分组请求在任意一分钟内使用的最多令牌数，包括进行中请求的预估值（0 表示不限）。达到上限时请求最多排队\
             等待排队时间，否则收到 429、Retry-After 和 X-Gpt-Load-Limit: group_tpm。",
        ),
    },
    /// docs/LIMITS.md, "Token limits".
    tpm_reserve_tokens: u32 {
        default: "1024",
        min: 0,
        category: Request,
        group: 32,
        en: (
            "Reserved Output Tokens",
            "Output tokens reserved against tokens-per-minute limits for a request that names no \
             max_tokens (or its spellings); replaced by the reported usage when the reply ends.",
        ),
        zh: (
            "预留输出令牌数",
            "请求未指定 max_tokens（或同类字段）时，按每分钟令牌限额预留的输出令牌数；响应结束后以实际用量替换。",
        ),
    },
    /// docs/LIMITS.md, "Group limits".
    limit_queue_timeout_ms: u32 {
        default: "0",
        min: 0,
        category: Request,
        group: 29,
        en: (
            "Limit Queue Time (ms)",
            "How long a request over its group's limit waits for room before it is refused; \
             0 refuses at once. A wait longer than this is not begun.",
        ),
        zh: (
            "限流排队时间（毫秒）",
            "请求超出分组限额时等待空位的最长时间，超时则拒绝；0 表示立即拒绝。所需等待超过该时间时不会排队。",
        ),
    },

    // Key.

    max_retries: u32 {
        default: "3",
        min: 0,
        category: Key,
        group: 8,
        en: (
            "Max Retries",
            "How many times a failed request is retried, on another key first; after a provider \
             failure (5xx, timeout) with every usable key tried, on the one that failed longest \
             ago after a short backoff. On an aggregate group, how many times a request moves \
             to another sub-group when one's keys cannot answer. 0 disables retries.",
        ),
        zh: (
            "最大重试次数",
            "请求失败后的重试次数，优先换用其他密钥；上游故障（5xx、超时）且所有可用密钥都已尝试时，\
             短暂退避后重试最早失败的那个密钥。在聚合分组上，表示某个子分组的密钥都无法应答时，\
             请求最多换到其他子分组的次数。0 表示不重试。",
        ),
    },
    /// 0 = never blacklist.
    blacklist_threshold: u32 {
        default: "3",
        min: 0,
        category: Key,
        group: 9,
        en: (
            "Blacklist Threshold",
            "Consecutive key errors (401, 403, an invalid API key) after which a key is blacklisted; \
             provider failures (5xx, timeouts) and request errors never count. 0 never blacklists.",
        ),
        zh: (
            "黑名单阈值",
            "密钥连续出现多少次密钥错误（401、403、无效 API 密钥）后被拉黑；上游故障（5xx、超时）\
             和请求错误从不计入。0 表示从不拉黑。",
        ),
    },
    failover_status_codes: FailoverCodes {
        default: "400-403,405-999",
        category: Key,
        group: 10,
        en: (
            "Failover Status Codes",
            "Upstream status codes considered for failover, as codes and ranges such as \
             400-403,405-999; empty never fails over on a status. Within them the error body \
             decides: a request error (malformed, too long, unknown model; 400, 404, 413, 422) \
             goes back to the client at once and never counts against the key; a key error \
             (401, 403, an invalid API key) retries on another key and counts; a provider \
             failure (5xx, 408, timeouts) retries but never blacklists; 429 cools the key down.",
        ),
        zh: (
            "故障转移状态码",
            "参与故障转移的上游状态码，可写单个状态码或范围，例如 400-403,405-999；\
             留空则不按状态码转移。其中由错误内容决定处理方式：请求本身的错误（格式错误、\
             超长、未知模型；400、404、413、422）立即返回客户端且不计入密钥失败；密钥错误\
             （401、403、无效 API 密钥）换密钥重试并计数；上游故障（5xx、408、超时）重试但\
             从不拉黑；429 让密钥冷却。",
        ),
    },
    key_validation_interval_minutes: u32 {
        default: "60",
        min: 1,
        category: Key,
        group: 11,
        en: (
            "Key Validation Interval (minutes)",
            "How often blacklisted keys are validated again in the background, in minutes.",
        ),
        zh: ("密钥验证间隔（分钟）", "后台重新验证被拉黑密钥的间隔，单位分钟。"),
    },
    key_validation_concurrency: u32 {
        default: "10",
        min: 1,
        category: Key,
        group: 12,
        en: (
            "Key Validation Concurrency",
            "How many keys are validated at the same time.",
        ),
        zh: ("密钥验证并发数", "同时验证的密钥数量。"),
    },
    /// Seconds.
    key_validation_timeout_seconds: u32 {
        default: "20",
        min: 1,
        category: Key,
        group: 13,
        en: (
            "Key Validation Timeout (s)",
            "Longest time one key validation request may take, in seconds.",
        ),
        zh: ("密钥验证超时（秒）", "单个密钥验证请求允许的最长时间，单位秒。"),
    },
    /// Seconds.
    cool_down_min_seconds: u32 {
        default: "30",
        min: 1,
        category: Key,
        group: 15,
        en: (
            "Cool-down Minimum (s)",
            "How long a rate-limited key rests when the provider does not say: the first rest, \
             doubled (with 20% jitter either way) for each further rate limit before a success, in seconds.",
        ),
        zh: (
            "冷却最短时间（秒）",
            "上游未说明恢复时间时，被限流密钥的休息时长：首次休息时长，此后每次限流（成功前）\
             翻倍（±20% 抖动），单位秒。",
        ),
    },
    /// Seconds.
    cool_down_max_seconds: u32 {
        default: "3600",
        min: 1,
        category: Key,
        group: 16,
        en: (
            "Cool-down Maximum (s)",
            "The longest a rate-limited key rests, even when the provider names a later time \
             (a daily quota's reset, a long Retry-After); one request then probes the key, in \
             seconds.",
        ),
        zh: (
            "冷却最长时间（秒）",
            "被限流密钥的最长休息时长，即使上游给出更晚的恢复时间（每日配额重置、较长的 \
             Retry-After）；之后由一个请求试探该密钥，单位秒。",
        ),
    },
    /// Percent.
    degraded_key_weight: u32 {
        default: "25",
        min: 1,
        category: Key,
        group: 17,
        en: (
            "Degraded Key Weight (%)",
            "How often a key with recent key errors (below the blacklist threshold) is selected, \
             in percent of a healthy key's share; it still serves when no healthy key is left.",
        ),
        zh: (
            "降级密钥权重（%）",
            "近期出现密钥错误（未达黑名单阈值）的密钥被选中的频率，为健康密钥的百分比；\
             没有健康密钥时仍会使用。",
        ),
    },
    /// docs/KEYS.md, "Pending keys".
    validate_new_keys: bool {
        default: "false",
        category: Key,
        group: 21,
        en: (
            "Validate New Keys",
            "New keys start pending: the background validation checks them (within a minute) \
             before they serve, and a key that passes becomes active. Off, new keys are active \
             at once, as in gpt-load.",
        ),
        zh: (
            "验证新密钥",
            "新密钥先处于待验证状态：后台验证（一分钟内）通过后才变为可用。关闭时新密钥立即可用，\
             与 gpt-load 相同。",
        ),
    },
    /// docs/KEYS.md, "Pending keys".
    pending_keys_as_fallback: bool {
        default: "true",
        category: Key,
        group: 22,
        en: (
            "Pending Keys as Fallback",
            "A pending key (not yet validated) serves a request when no validated key of the \
             group can; a success makes it active. Off, pending keys wait for their validation.",
        ),
        zh: (
            "待验证密钥兜底",
            "分组内没有可用的已验证密钥时，使用待验证密钥处理请求；成功后该密钥变为可用。\
             关闭时待验证密钥须等待验证。",
        ),
    },
    /// docs/LIMITS.md, "Key limits".
    key_rpm: u32 {
        default: "0",
        min: 0,
        category: Key,
        group: 24,
        en: (
            "Requests per Minute per Key",
            "Most requests one key is sent in any minute (0 = no limit). A key at its limit is \
             passed over while the group's other keys serve; with every key at a limit the client \
             gets 429 with Retry-After and X-Gpt-Load-Limit: key_rpm.",
        ),
        zh: (
            "每密钥每分钟请求数",
            "任意一分钟内发往单个密钥的最多请求数（0 表示不限）。达到上限的密钥会被跳过，由分组内其他密钥处理；\
             所有密钥都达到上限时，客户端收到 429、Retry-After 和 X-Gpt-Load-Limit: key_rpm。",
        ),
    },
    /// docs/LIMITS.md, "Key limits".
    key_rpd: u32 {
        default: "0",
        min: 0,
        category: Key,
        group: 25,
        en: (
            "Requests per Day per Key",
            "Most requests one key is sent per UTC day (0 = no limit); a key at its limit is \
             passed over until midnight UTC.",
        ),
        zh: (
            "每密钥每日请求数",
            "每个 UTC 日发往单个密钥的最多请求数（0 表示不限）；达到上限的密钥在 UTC 零点前会被跳过。",
        ),
    },
    /// docs/LIMITS.md, "Token limits".
    key_tpm: u32 {
        default: "0",
        min: 0,
        category: Key,
        group: 30,
        en: (
            "Tokens per Minute per Key",
            "Most tokens one key is used for in any minute, counting the estimates of requests in \
             flight (0 = no limit). A key at its limit is passed over while the group's other keys \
             serve; with every key at a limit the client gets 429 with X-Gpt-Load-Limit: key_tpm.",
        ),
        zh: (
            "每密钥每分钟令牌数",
            "任意一分钟内单个密钥使用的最多令牌数，包括进行中请求的预估值（0 表示不限）。达到上限的密钥会被跳过；\
             所有密钥都达到上限时，客户端收到 429 和 X-Gpt-Load-Limit: key_tpm。",
        ),
    },
    /// docs/LIMITS.md, "Key limits".
    key_max_concurrency: u32 {
        default: "0",
        min: 0,
        category: Key,
        group: 26,
        en: (
            "Concurrent Requests per Key",
            "Most requests in flight on one key at once, a stream until it ends (0 = no limit).",
        ),
        zh: (
            "每密钥并发请求数",
            "单个密钥同时处理的最多请求数，流式请求持续到结束为止（0 表示不限）。",
        ),
    },
}
