//! Group order, per-group statistics and copying a group.

use std::collections::HashSet;

use axum::{body::Bytes, extract::rejection::BytesRejection};
use chrono::{DurationRound, NaiveDateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::json::GroupResponse;
use crate::admin::prelude::*;
use crate::{
    crypto::proxy_keys,
    models::{GroupRow, NewGroup, now},
    registry::{GroupKind, KeyStatus, SealedKey},
    repo::{groups, keys, stats},
};

/// The highest `_copy_N` suffix tried before giving up.
const MAX_COPY_SUFFIX: u32 = 1000;

/// A group's new position.
#[derive(Deserialize, ToSchema)]
pub(crate) struct ReorderItem {
    id: i64,
    /// 0 or more; lower comes first.
    sort: i64,
}

/// The body of `PUT /api/groups/reorder`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct ReorderBody {
    items: Vec<ReorderItem>,
}

/// Sets the `sort` of the listed groups, all or none.
#[utoipa::path(put, path = "/groups/reorder", tag = "groups", request_body = ReorderBody,
    responses((status = 200, body = Ack)))]
pub(crate) async fn reorder_groups(
    Admin { state, lang }: Admin,
    AdminJson(body): AdminJson<ReorderBody>,
) -> AckReply {
    if body.items.is_empty() {
        return Err(AdminError::validation("items", "must not be empty"));
    }
    let mut seen = HashSet::new();
    let mut items = Vec::with_capacity(body.items.len());
    for item in &body.items {
        if item.id == 0 {
            return Err(AdminError::validation("items", "group id must not be 0"));
        }
        let sort = i32::try_from(item.sort)
            .ok()
            .filter(|s| *s >= 0)
            .ok_or_else(|| AdminError::validation("items", "sort must be between 0 and 2147483647"))?;
        if !seen.insert(item.id) {
            return Err(AdminError::validation(
                "items",
                format!("group {} is listed more than once", item.id),
            ));
        }
        items.push((item.id, sort));
    }
    if let Some(missing) = state.registry.reorder_groups(&items).await? {
        return Err(AdminError::BadRequest(format!("group {missing} not found")));
    }
    Ok(ack(text(lang, "Group order saved", "分组排序已保存")))
}

/// The start of the hour after `at`.
fn next_hour(at: NaiveDateTime) -> NaiveDateTime {
    at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at) + TimeDelta::hours(1)
}

/// `failed / total`, rounded to 4 decimals (0 without requests).
fn failure_rate(total: i64, failed: i64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    #[expect(clippy::cast_precision_loss, reason = "request counts stay far below 2^52")]
    let rate = failed as f64 / total as f64;
    (rate * 10_000.0).round() / 10_000.0
}

/// Requests over one window.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RequestStats {
    total_requests: i64,
    failed_requests: i64,
    /// `failed / total`, rounded to 4 decimals.
    failure_rate: f64,
}

/// A group's key counts.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KeyStats {
    total_keys: usize,
    /// Active and cooling keys.
    active_keys: usize,
    invalid_keys: usize,
}

/// `GET /api/groups/{id}/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GroupStats {
    key_stats: KeyStats,
    stats_24_hour: RequestStats,
    stats_7_day: RequestStats,
    stats_30_day: RequestStats,
}

/// One window of a group's hourly stats.
fn window(rows: &[stats::HourlyStatRow], from: NaiveDateTime) -> RequestStats {
    let (success, failed) = rows
        .iter()
        .filter(|r| r.time >= from)
        .fold((0_i64, 0_i64), |(s, f), r| {
            (s + r.success_count, f + r.failure_count)
        });
    let total = success + failed;
    RequestStats {
        total_requests: total,
        failed_requests: failed,
        failure_rate: failure_rate(total, failed),
    }
}

/// A group's key counts and request counts over 24 hours, 7 and 30 days.
#[utoipa::path(get, path = "/groups/{id}/stats", tag = "groups", params(("id" = i64, Path)),
    responses((status = 200, body = Envelope<GroupStats>)))]
pub(crate) async fn group_stats(
    Admin { state, lang }: Admin,
    AdminPath(id): AdminPath<i64>,
) -> Reply<GroupStats> {
    let row = groups::find(state.registry.db(), id)
        .await?
        .ok_or(AdminError::NotFound("group"))?;
    let (total, active, invalid) = if GroupKind::of_row(&row) == GroupKind::Aggregate {
        (0, 0, 0)
    } else {
        let s = state.registry.pool().stats(&row.name).unwrap_or_default();
        (s.total, s.active + s.degraded + s.cooling, s.invalid)
    };
    let end = next_hour(Utc::now().naive_utc());
    let days = |n: i64| end - TimeDelta::days(n);
    let rows = stats::hourly_between(state.registry.db(), Some(id), &[], days(30), end).await?;
    let data = GroupStats {
        key_stats: KeyStats {
            total_keys: total,
            active_keys: active,
            invalid_keys: invalid,
        },
        stats_24_hour: window(&rows, days(1)),
        stats_7_day: window(&rows, days(7)),
        stats_30_day: window(&rows, days(30)),
    };
    Ok(ok(text(lang, "Success", "操作成功"), data))
}

/// Which keys a copy takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CopyKeys {
    None,
    ValidOnly,
    All,
}

/// The optional body of `POST /api/groups/{id}/copy`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CopyBody {
    /// `all` (default), `valid_only` or `none`.
    #[serde(default)]
    copy_keys: Option<String>,
}

/// The new group of a copy.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CopyResult {
    group: GroupResponse,
}

fn copy_mode(body: &Bytes) -> AdminResult<CopyKeys> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(CopyKeys::All);
    }
    let parsed: CopyBody =
        serde_json::from_slice(body).map_err(|e| AdminError::InvalidJson(e.to_string()))?;
    match parsed.copy_keys.as_deref().unwrap_or("") {
        "" | "all" => Ok(CopyKeys::All),
        "valid_only" => Ok(CopyKeys::ValidOnly),
        "none" => Ok(CopyKeys::None),
        other => Err(AdminError::validation(
            "copy_keys",
            format!("'{other}' is not one of none, valid_only, all"),
        )),
    }
}

/// The first free name among `<name>_copy`, `<name>_copy_2` … `<name>_copy_1000`.
fn copy_name(name: &str, taken: &HashSet<&str>) -> Option<String> {
    std::iter::once(format!("{name}_copy"))
        .chain((2..=MAX_COPY_SUFFIX).map(|n| format!("{name}_copy_{n}")))
        .find(|candidate| !taken.contains(candidate.as_str()))
}

/// The copy of `source`; `sealed_proxy_keys` is its proxy key list sealed anew.
fn copied_group<'a>(
    source: &'a GroupRow,
    name: &'a str,
    display_name: &'a str,
    sealed_proxy_keys: &'a str,
) -> NewGroup<'a> {
    let at = now();
    NewGroup {
        name,
        display_name,
        proxy_keys: sealed_proxy_keys,
        description: &source.description,
        group_type: &source.group_type,
        upstreams: &source.upstreams,
        validation_endpoint: &source.validation_endpoint,
        channel_type: &source.channel_type,
        sort: source.sort,
        test_model: &source.test_model,
        param_overrides: &source.param_overrides,
        config: &source.config,
        header_rules: &source.header_rules,
        model_redirect_rules: &source.model_redirect_rules,
        model_redirect_strict: source.model_redirect_strict,
        created_at: at,
        updated_at: at,
    }
}

/// A new group with the same configuration and, per `copy_keys`, its keys (`valid_only`: the
/// active ones), serving at once.
#[utoipa::path(post, path = "/groups/{id}/copy", tag = "groups", params(("id" = i64, Path)),
    request_body(content = Option<CopyBody>, description = "may be empty"),
    responses((status = 200, body = Envelope<CopyResult>)))]
pub(crate) async fn copy_group(
    Admin { state, lang }: Admin,
    AdminPath(id): AdminPath<i64>,
    body: Result<Bytes, BytesRejection>,
) -> Reply<CopyResult> {
    let mode = copy_mode(&body?)?;
    let source = groups::find(state.registry.db(), id)
        .await?
        .ok_or(AdminError::NotFound("group"))?;
    let all = groups::list(state.registry.db()).await?;
    let taken: HashSet<&str> = all.iter().map(|g| g.name.as_str()).collect();
    let name = copy_name(&source.name, &taken).ok_or_else(|| {
        AdminError::Duplicate(format!("'{}' already has {MAX_COPY_SUFFIX} copies", source.name))
    })?;
    let display_base = if source.display_name.is_empty() {
        &source.name
    } else {
        &source.display_name
    };
    let display_name = format!("{display_base} Copy");
    let links: Vec<(i64, i32)> = groups::sub_group_links(state.registry.db())
        .await?
        .into_iter()
        .filter(|l| l.group_id == id)
        .map(|l| (l.sub_group_id, l.weight))
        .collect();
    // The stored value and hash are copied as they are: nothing is decrypted.
    let copied: Vec<SealedKey> = match mode {
        CopyKeys::None => Vec::new(),
        CopyKeys::ValidOnly | CopyKeys::All => keys::list_by_group(state.registry.db(), id)
            .await?
            .into_iter()
            .filter(|k| mode == CopyKeys::All || KeyStatus::of_stored(&k.status) == KeyStatus::Active)
            .map(|k| SealedKey {
                value: k.key_value,
                hash: k.key_hash,
            })
            .collect(),
    };
    let source_keys = proxy_keys::open_or_none(state.registry.cipher(), &source.proxy_keys, &source.name);
    let sealed = proxy_keys::seal(state.registry.cipher(), &source_keys);
    let row = state
        .registry
        .copy_group(
            &copied_group(&source, &name, &display_name, &sealed),
            &links,
            &copied,
        )
        .await
        .map_err(|err| match AdminError::from(err) {
            AdminError::Duplicate(_) => AdminError::Duplicate(format!("group '{name}' already exists")),
            other => other,
        })?;
    let app_url = state.registry.settings().current().app_url.clone();
    let group = GroupResponse::new(row, &app_url, state.registry.cipher());
    Ok(ok(text(lang, "Success", "操作成功"), CopyResult { group }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_names_take_the_first_free_suffix() {
        let taken: HashSet<&str> = ["g", "g_copy", "g_copy_2", "g_copy_4"].into_iter().collect();
        assert_eq!(copy_name("g", &taken).as_deref(), Some("g_copy_3"));
        assert_eq!(copy_name("h", &taken).as_deref(), Some("h_copy"));
        let mut full: Vec<String> = vec!["x_copy".to_owned()];
        full.extend((2..=MAX_COPY_SUFFIX).map(|n| format!("x_copy_{n}")));
        let full: HashSet<&str> = full.iter().map(String::as_str).collect();
        assert_eq!(copy_name("x", &full), None);
    }

    #[test]
    fn copy_modes_and_rates() {
        assert_eq!(copy_mode(&Bytes::new()).unwrap(), CopyKeys::All);
        assert_eq!(copy_mode(&Bytes::from_static(b"{}")).unwrap(), CopyKeys::All);
        assert_eq!(
            copy_mode(&Bytes::from_static(br#"{"copy_keys":"valid_only"}"#)).unwrap(),
            CopyKeys::ValidOnly
        );
        assert!(copy_mode(&Bytes::from_static(br#"{"copy_keys":"some"}"#)).is_err());
        assert!((failure_rate(3, 1) - 0.3333).abs() < 1e-9);
        assert!(failure_rate(0, 0).abs() < f64::EPSILON);
        let at = NaiveDateTime::parse_from_str("2026-01-01 10:59:59", "%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(next_hour(at).to_string(), "2026-01-01 11:00:00");
    }
}
