//! `/api/dashboard`: stat cards with trends, security warnings, the 24-hour chart and the
//! encryption consistency check.

use chrono::{DurationRound, NaiveDateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::prelude::*;
use crate::{
    crypto::{KeyCipher, proxy_keys},
    models::GroupRow,
    registry::GroupKind,
    repo::{groups, request_logs, stats},
};

/// Keys sampled by the encryption check.
const ENCRYPTION_SAMPLE: i64 = 20;

/// Substrings that make a secret easy to guess (matched case-insensitively).
const COMMON_WORDS: [&str; 18] = [
    "password",
    "123456",
    "admin",
    "secret",
    "test",
    "demo",
    "sk-123456",
    "key",
    "token",
    "pass",
    "pwd",
    "qwerty",
    "abc",
    "default",
    "user",
    "login",
    "auth",
    "temp",
];

fn success(lang: Lang) -> &'static str {
    text(lang, "Success", "操作成功")
}

/// One decimal place.
fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// Percent change from `previous` to `current`: 100 when it starts from zero.
fn percent_change(previous: f64, current: f64) -> f64 {
    if previous > 0.0 {
        round1((current - previous) / previous * 100.0)
    } else if current > 0.0 {
        100.0
    } else {
        0.0
    }
}

/// A stat card.
#[derive(Debug, Serialize, PartialEq, ToSchema)]
pub(crate) struct Card {
    value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_value: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_value_tip: Option<&'static str>,
    trend: f64,
    trend_is_growth: bool,
}

impl Card {
    fn trend(value: f64, trend: f64) -> Self {
        Self {
            value,
            sub_value: None,
            sub_value_tip: None,
            trend,
            trend_is_growth: trend >= 0.0,
        }
    }
}

/// A weakness of a configured secret; names the secret, never shows it.
#[derive(Debug, Serialize, PartialEq, Eq, ToSchema)]
pub(crate) struct SecurityWarning {
    #[serde(rename = "type")]
    kind: &'static str,
    message: String,
    severity: &'static str,
    suggestion: String,
}

/// The warnings about one secret: its length, common words, and the mix of character classes.
fn check_secret(lang: Lang, kind: &'static str, label: &str, secret: &str, out: &mut Vec<SecurityWarning>) {
    let len = secret.chars().count();
    let mut warn = |severity: &'static str, en: &str, zh: &str, fix_en: &str, fix_zh: &str| {
        let (message, suggestion) = match lang {
            Lang::Zh => (format!("{label} {zh}"), fix_zh.to_owned()),
            _ => (format!("{label} {en}"), fix_en.to_owned()),
        };
        out.push(SecurityWarning {
            kind,
            message,
            severity,
            suggestion,
        });
    };
    let longer = "Use a random string of at least 32 characters";
    let longer_zh = "使用至少 32 个字符的随机字符串";
    if len < 16 {
        warn(
            "high",
            "is shorter than 16 characters",
            "长度不足 16 个字符",
            longer,
            longer_zh,
        );
    } else if len < 32 {
        warn(
            "medium",
            "is shorter than 32 characters",
            "长度不足 32 个字符",
            longer,
            longer_zh,
        );
    }
    let lower = secret.to_lowercase();
    if COMMON_WORDS.iter().any(|w| lower.contains(w)) {
        warn(
            "high",
            "contains a common word or pattern",
            "包含常见单词或模式",
            "Avoid dictionary words and simple patterns",
            "避免使用常见单词和简单模式",
        );
    }
    if len >= 16 {
        let classes = [
            secret.chars().any(|c| c.is_uppercase()),
            secret.chars().any(|c| c.is_lowercase()),
            secret.chars().any(|c| c.is_ascii_digit()),
            secret.chars().any(|c| !c.is_alphanumeric()),
        ];
        if classes.iter().filter(|&&present| present).count() < 3 {
            warn(
                "medium",
                "mixes fewer than three kinds of characters",
                "字符类型少于三种",
                "Mix upper case, lower case, digits and symbols",
                "混合使用大小写字母、数字和符号",
            );
        }
    }
}

fn security_warnings(state: &AdminState, lang: Lang, groups: &[GroupRow]) -> Vec<SecurityWarning> {
    let mut out = Vec::new();
    check_secret(lang, "auth_key", "AUTH_KEY", state.auth_key.expose(), &mut out);
    if !state.registry.cipher().is_enabled() {
        out.push(SecurityWarning {
            kind: "encryption_key",
            message: text(
                lang,
                "ENCRYPTION_KEY is not set: upstream keys are stored in plain text",
                "未设置 ENCRYPTION_KEY：上游密钥以明文存储",
            )
            .to_owned(),
            severity: "high",
            suggestion: text(
                lang,
                "Set ENCRYPTION_KEY and encrypt the stored keys with migrate-keys",
                "设置 ENCRYPTION_KEY 并使用 migrate-keys 加密已存储的密钥",
            )
            .to_owned(),
        });
    }
    let settings = state.registry.settings().current();
    for (i, key) in settings.proxy_keys.iter().enumerate() {
        let label = format!("Global Proxy Key #{}", i + 1);
        check_secret(lang, "global_proxy_key", &label, key, &mut out);
    }
    for group in groups {
        let keys = proxy_keys::open_or_none(state.registry.cipher(), &group.proxy_keys, &group.name);
        let keys = keys.split(',').map(str::trim).filter(|k| !k.is_empty());
        for (i, key) in keys.enumerate() {
            let label = format!("Group Proxy Key [{}] #{}", group.name, i + 1);
            check_secret(lang, "group_proxy_key", &label, key, &mut out);
        }
    }
    out
}

fn aggregate_ids(groups: &[GroupRow]) -> Vec<i64> {
    groups
        .iter()
        .filter(|g| GroupKind::of_row(g) == GroupKind::Aggregate)
        .map(|g| g.id)
        .collect()
}

/// (success, failure) over hourly rows.
fn totals(rows: &[stats::HourlyStatRow]) -> (i64, i64) {
    rows.iter()
        .fold((0, 0), |(s, f), r| (s + r.success_count, f + r.failure_count))
}

fn error_rate((success, failure): (i64, i64)) -> f64 {
    let total = success + failure;
    if total == 0 {
        0.0
    } else {
        #[expect(clippy::cast_precision_loss, reason = "request counts stay far below 2^52")]
        let rate = failure as f64 / total as f64 * 100.0;
        round1(rate)
    }
}

#[expect(clippy::cast_precision_loss, reason = "counts stay far below 2^52")]
fn as_f64(n: i64) -> f64 {
    n as f64
}

/// The stat cards.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DashboardStats {
    /// Active keys, with invalid keys as the sub-value.
    key_count: Card,
    /// Requests per minute over the last 10 minutes, against the 10 before.
    rpm: Card,
    /// Requests in the last 24 hours, against the 24 before.
    request_count: Card,
    /// Failure percentage of the last 24 hours, against the 24 before.
    error_rate: Card,
    security_warnings: Vec<SecurityWarning>,
}

/// The stat cards with their trends, and security warnings.
#[utoipa::path(get, path = "/dashboard/stats", tag = "dashboard",
    responses((status = 200, body = Envelope<DashboardStats>)))]
pub(crate) async fn stats(Admin { state, lang }: Admin) -> Reply<DashboardStats> {
    let now = Utc::now().naive_utc();
    let group_rows = groups::list(state.registry.db()).await?;
    let aggregates = aggregate_ids(&group_rows);

    let (mut active, mut invalid) = (0_usize, 0_usize);
    for policy in state.registry.catalog().standard_groups() {
        if let Some(s) = state.registry.pool().stats(policy.group.name.as_str()) {
            active += s.active + s.degraded + s.cooling;
            invalid += s.invalid;
        }
    }
    let key_count = Card {
        value: as_f64(i64::try_from(active).unwrap_or(i64::MAX)),
        sub_value: Some(i64::try_from(invalid).unwrap_or(i64::MAX)),
        sub_value_tip: Some(text(lang, "Invalid Keys", "无效密钥")),
        trend: 0.0,
        trend_is_growth: true,
    };

    let ten = TimeDelta::minutes(10);
    // Logs can be stamped a little ahead of this clock on another node.
    let later = now + TimeDelta::minutes(1);
    let current = request_logs::count_final_between(state.registry.db(), now - ten, later).await?;
    let previous = request_logs::count_final_between(state.registry.db(), now - ten - ten, now - ten).await?;
    let (rpm_now, rpm_before) = (round1(as_f64(current) / 10.0), round1(as_f64(previous) / 10.0));
    let rpm = Card::trend(rpm_now, percent_change(rpm_before, rpm_now));

    let day = TimeDelta::hours(24);
    let today =
        totals(&stats::hourly_between(state.registry.db(), None, &aggregates, now - day, later).await?);
    let yesterday = totals(
        &stats::hourly_between(state.registry.db(), None, &aggregates, now - day - day, now - day).await?,
    );
    let (count_now, count_before) = (today.0 + today.1, yesterday.0 + yesterday.1);
    let request_count = Card::trend(
        as_f64(count_now),
        percent_change(as_f64(count_before), as_f64(count_now)),
    );
    let (rate_now, rate_before) = (error_rate(today), error_rate(yesterday));
    let rate_trend = round1(rate_now - rate_before);
    let error_rate = Card {
        value: rate_now,
        sub_value: None,
        sub_value_tip: None,
        trend: rate_trend,
        trend_is_growth: rate_trend <= 0.0,
    };

    let data = DashboardStats {
        key_count,
        rpm,
        request_count,
        error_rate,
        security_warnings: security_warnings(&state, lang, &group_rows),
    };
    Ok(ok(success(lang), data))
}

/// The query of the chart.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ChartQuery {
    /// One group's id; all standard groups when absent.
    #[serde(rename = "groupId")]
    #[param(rename = "groupId", value_type = Option<i64>)]
    group_id: Option<String>,
}

/// One line of the chart.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChartDataset {
    label: &'static str,
    /// One count per hour.
    data: Vec<i64>,
    color: &'static str,
}

/// The 24-hour chart.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Chart {
    /// The start of each hour (RFC 3339, UTC).
    labels: Vec<String>,
    /// Successes, then failures.
    datasets: Vec<ChartDataset>,
}

/// The encryption consistency check.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EncryptionStatus {
    has_mismatch: bool,
    /// `data_not_encrypted`, `key_not_configured`, `key_mismatch`, or empty.
    scenario_type: &'static str,
    message: &'static str,
    suggestion: &'static str,
}

/// The start of the hour of `at`.
fn hour_start(at: NaiveDateTime) -> NaiveDateTime {
    at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at)
}

/// Successes and failures per hour over the last 24 hours.
#[utoipa::path(get, path = "/dashboard/chart", tag = "dashboard", params(ChartQuery),
    responses((status = 200, body = Envelope<Chart>)))]
pub(crate) async fn chart(
    Admin { state, lang }: Admin,
    AdminQuery(query): AdminQuery<ChartQuery>,
) -> Reply<Chart> {
    let group_id = match query.group_id.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|_| AdminError::validation("groupId", "must be an integer"))?,
        ),
    };
    let exclude = match group_id {
        Some(_) => Vec::new(),
        None => aggregate_ids(&groups::list(state.registry.db()).await?),
    };
    let last = hour_start(Utc::now().naive_utc());
    let first = last - TimeDelta::hours(23);
    let rows = stats::hourly_between(
        state.registry.db(),
        group_id,
        &exclude,
        first,
        last + TimeDelta::hours(1),
    )
    .await?;
    let mut labels = Vec::with_capacity(24);
    let mut ok_data = vec![0_i64; 24];
    let mut failed = vec![0_i64; 24];
    for i in 0..24 {
        labels.push(
            (first + TimeDelta::hours(i))
                .and_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
    }
    for row in rows {
        let index = usize::try_from((hour_start(row.time) - first).num_hours()).ok();
        if let Some(i) = index.filter(|&i| i < 24) {
            ok_data[i] += row.success_count;
            failed[i] += row.failure_count;
        }
    }
    let data = Chart {
        labels,
        datasets: vec![
            ChartDataset {
                label: "Success",
                data: ok_data,
                color: "rgba(10, 200, 110, 1)",
            },
            ChartDataset {
                label: "Failed",
                data: failed,
                color: "rgba(255, 70, 70, 1)",
            },
        ],
    };
    Ok(ok(success(lang), data))
}

/// What the encryption check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Consistent,
    DataNotEncrypted,
    KeyNotConfigured,
    KeyMismatch,
}

/// Compares sampled (`key_value`, `key_hash`) pairs with the configured cipher.
fn diagnose(cipher: &KeyCipher, sample: &[(String, String)]) -> Scenario {
    if sample.is_empty() {
        return Scenario::Consistent;
    }
    let plain = KeyCipher::disabled();
    let total = sample.len();
    let plain_matches = sample
        .iter()
        .filter(|(value, hash)| plain.hash(value) == *hash)
        .count();
    // Share of the sample strictly above / below a percentage.
    let above = |n: usize, percent: usize| n * 100 > total * percent;
    let below = |n: usize, percent: usize| n * 100 < total * percent;
    if cipher.is_enabled() {
        if above(plain_matches, 80) {
            return Scenario::DataNotEncrypted;
        }
        let decrypted_matches = sample
            .iter()
            .filter(|(value, hash)| cipher.decrypt(value).is_ok_and(|p| cipher.hash(&p) == *hash))
            .count();
        if below(plain_matches, 20) && below(decrypted_matches, 20) {
            return Scenario::KeyMismatch;
        }
    } else if below(plain_matches, 20) {
        return Scenario::KeyNotConfigured;
    }
    Scenario::Consistent
}

/// Whether the stored keys match the configured `ENCRYPTION_KEY` (a sample is checked).
#[utoipa::path(get, path = "/dashboard/encryption-status", tag = "dashboard",
    responses((status = 200, body = Envelope<EncryptionStatus>)))]
pub(crate) async fn encryption_status(Admin { state, lang }: Admin) -> Reply<EncryptionStatus> {
    let sample = stats::key_sample(state.registry.db(), ENCRYPTION_SAMPLE).await?;
    let (scenario_type, message, suggestion) = match diagnose(state.registry.cipher(), &sample) {
        Scenario::Consistent => ("", "", ""),
        Scenario::DataNotEncrypted => (
            "data_not_encrypted",
            text(
                lang,
                "ENCRYPTION_KEY is set but the stored keys are not encrypted",
                "已设置 ENCRYPTION_KEY，但已存储的密钥未加密",
            ),
            text(
                lang,
                "Encrypt the stored keys with migrate-keys --to <key>, or unset ENCRYPTION_KEY",
                "使用 migrate-keys --to <密钥> 加密已存储的密钥，或取消 ENCRYPTION_KEY",
            ),
        ),
        Scenario::KeyNotConfigured => (
            "key_not_configured",
            text(
                lang,
                "The stored keys are encrypted but ENCRYPTION_KEY is not set",
                "已存储的密钥已加密，但未设置 ENCRYPTION_KEY",
            ),
            text(
                lang,
                "Set ENCRYPTION_KEY to the key the data was encrypted with and restart",
                "将 ENCRYPTION_KEY 设置为加密数据时使用的密钥并重启",
            ),
        ),
        Scenario::KeyMismatch => (
            "key_mismatch",
            text(
                lang,
                "ENCRYPTION_KEY does not match the key the stored keys were encrypted with",
                "ENCRYPTION_KEY 与加密已存储密钥时使用的密钥不一致",
            ),
            text(
                lang,
                "Restore the original ENCRYPTION_KEY, or re-encrypt with migrate-keys --from <old> --to <new>",
                "恢复原来的 ENCRYPTION_KEY，或使用 migrate-keys --from <旧> --to <新> 重新加密",
            ),
        ),
    };
    let data = EncryptionStatus {
        has_mismatch: !scenario_type.is_empty(),
        scenario_type,
        message,
        suggestion,
    };
    Ok(ok(success(lang), data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings(secret: &str) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        check_secret(
            Lang::En,
            "global_proxy_key",
            "Global Proxy Key #1",
            secret,
            &mut out,
        );
        out.into_iter().map(|w| (w.severity, w.message)).collect()
    }

    #[test]
    fn secrets_are_checked_by_length_words_and_mix() {
        let short = warnings("Ab1!xyzQ");
        assert_eq!(short[0].0, "high");
        assert!(short.iter().all(|(_, m)| !m.contains("Ab1!xyzQ")));
        assert_eq!(warnings("Zq8#Lw2$Rt5%Yp9&Mn4*Hs7@Vb3^Cx6!").len(), 0, "strong");
        let medium = warnings("Zq8#Lw2$Rt5%Yp9&Mn");
        assert_eq!(medium.len(), 1);
        assert_eq!(medium[0].0, "medium");
        assert!(
            warnings("Zq8#Lw2$Rt5%Yp9&Mn4*Hs7@Vb3^PASSWORD")
                .iter()
                .any(|(s, _)| *s == "high")
        );
        let lower_only = warnings("zqlwrtypmnhsvbcxzqlwrtypmnhsvbcx");
        assert_eq!(lower_only.len(), 1, "{lower_only:?}");
    }

    #[test]
    fn trends() {
        assert!((percent_change(0.0, 3.0) - 100.0).abs() < f64::EPSILON);
        assert!((percent_change(2.0, 3.0) - 50.0).abs() < f64::EPSILON);
        assert!(percent_change(0.0, 0.0).abs() < f64::EPSILON);
        assert!((error_rate((3, 1)) - 25.0).abs() < f64::EPSILON);
    }

    #[test]
    fn encryption_scenarios() {
        let plain = KeyCipher::disabled();
        let enabled = KeyCipher::from_password(Some("one operator secret"));
        let other = KeyCipher::from_password(Some("another operator secret"));
        let stored_plain: Vec<_> = (0..5)
            .map(|i| (format!("sk-{i}"), plain.hash(&format!("sk-{i}"))))
            .collect();
        let stored_enc: Vec<_> = (0..5)
            .map(|i| {
                let k = format!("sk-{i}");
                (enabled.encrypt(&k), enabled.hash(&k))
            })
            .collect();
        assert_eq!(diagnose(&plain, &stored_plain), Scenario::Consistent);
        assert_eq!(diagnose(&enabled, &stored_enc), Scenario::Consistent);
        assert_eq!(diagnose(&plain, &[]), Scenario::Consistent);
        assert_eq!(diagnose(&enabled, &stored_plain), Scenario::DataNotEncrypted);
        assert_eq!(diagnose(&plain, &stored_enc), Scenario::KeyNotConfigured);
        assert_eq!(diagnose(&other, &stored_enc), Scenario::KeyMismatch);
    }

    #[test]
    fn hour_starts() {
        let at = chrono::NaiveDate::from_ymd_opt(2026, 11, 22)
            .and_then(|d| d.and_hms_micro_opt(10, 59, 59, 999_999))
            .unwrap();
        assert_eq!(hour_start(at).to_string(), "2026-11-22 10:00:00");
    }
}
