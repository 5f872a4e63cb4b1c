//! `/api/usage`: requests and tokens from `usage_hourly`, filtered and grouped, as JSON or CSV,
//! with each key's busiest minute from the request logs (docs/USAGE.md, "The usage API").

use std::fmt::Write as _;

use axum::response::Response;
use chrono::{DateTime, DurationRound, NaiveDateTime, TimeDelta, Utc};
use gpt_load_tower::keys::KeyId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    envelope::{attachment, csv_field},
    extract::{parse_time, present},
    prelude::*,
};
use crate::{
    models::now,
    repo::usage::{self, UsageDim, UsageQuery, UsageSums},
};

/// The range when none is given: the last day.
const DEFAULT_RANGE: TimeDelta = TimeDelta::hours(24);
/// The longest range one call adds up.
const MAX_RANGE: TimeDelta = TimeDelta::days(400);
/// The most lines one answer lists (`truncated` says when there were more).
const MAX_ITEMS: usize = 10_000;

/// The query parameters of both routes, as sent (empty values count as absent).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsageParams {
    /// RFC 3339; the hours that start from this one's hour on (default: 24 hours before the end).
    start_time: Option<String>,
    /// RFC 3339; the hours that start before this (default: now).
    end_time: Option<String>,
    #[param(value_type = Option<i64>)]
    group_id: Option<String>,
    #[param(value_type = Option<i64>)]
    key_id: Option<String>,
    /// Exact.
    model: Option<String>,
    /// 0 for requests made with a proxy key.
    #[param(value_type = Option<i64>)]
    access_key_id: Option<String>,
    /// Comma-separated: `hour` or `day`, `group`, `key` (implies `group`), `model`,
    /// `access_key`. Empty: one total.
    group_by: Option<String>,
}

fn parse_id(field: &str, value: Option<&String>) -> AdminResult<Option<i64>> {
    present(value)
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|id| *id >= 0)
                .ok_or_else(|| AdminError::validation(field, "must be a non-negative integer"))
        })
        .transpose()
}

fn parse_dims(value: Option<&String>) -> AdminResult<Vec<UsageDim>> {
    let mut dims = Vec::new();
    for name in present(value).unwrap_or_default().split(',').map(str::trim) {
        let dim = match name {
            "" => continue,
            "hour" => UsageDim::Hour,
            "day" => UsageDim::Day,
            "group" => UsageDim::Group,
            "key" => UsageDim::Key,
            "model" => UsageDim::Model,
            "access_key" => UsageDim::AccessKey,
            _ => {
                return Err(AdminError::validation(
                    "group_by",
                    "must list hour, day, group, key, model or access_key",
                ));
            }
        };
        if !dims.contains(&dim) {
            dims.push(dim);
        }
    }
    if dims.contains(&UsageDim::Hour) && dims.contains(&UsageDim::Day) {
        return Err(AdminError::validation("group_by", "takes hour or day, not both"));
    }
    // A key belongs to one group: grouping by it groups by its group too, which names it.
    if dims.contains(&UsageDim::Key) && !dims.contains(&UsageDim::Group) {
        dims.push(UsageDim::Group);
    }
    dims.sort();
    Ok(dims)
}

fn hour_of(at: NaiveDateTime) -> NaiveDateTime {
    at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at)
}

impl UsageParams {
    /// These parameters, for one access key's usage.
    pub(crate) fn for_access_key(mut self, id: i64) -> Self {
        self.access_key_id = Some(id.to_string());
        self
    }

    fn query(&self, now: NaiveDateTime) -> AdminResult<UsageQuery> {
        let to = parse_time("end_time", self.end_time.as_ref())?.unwrap_or(now);
        let from = parse_time("start_time", self.start_time.as_ref())?.unwrap_or(to - DEFAULT_RANGE);
        if from >= to {
            return Err(AdminError::validation("start_time", "must be before end_time"));
        }
        if to - from > MAX_RANGE {
            return Err(AdminError::validation(
                "start_time",
                "must be at most 400 days before end_time",
            ));
        }
        Ok(UsageQuery {
            from: hour_of(from),
            to,
            group_id: parse_id("group_id", self.group_id.as_ref())?,
            key_id: parse_id("key_id", self.key_id.as_ref())?,
            model: present(self.model.as_ref()).map(str::to_owned),
            access_key_id: parse_id("access_key_id", self.access_key_id.as_ref())?,
            by: parse_dims(self.group_by.as_ref())?,
        })
    }
}

/// Sums of requests and tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub(crate) struct UsageTotals {
    /// Attempts, retries included.
    requests: i64,
    /// Attempts that failed.
    failures: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    cached_tokens: i64,
    reasoning_tokens: i64,
    total_tokens: i64,
}

impl From<UsageSums> for UsageTotals {
    fn from(sums: UsageSums) -> Self {
        Self {
            requests: sums.requests,
            failures: sums.failures,
            prompt_tokens: sums.prompt_tokens,
            completion_tokens: sums.completion_tokens,
            cached_tokens: sums.cached_tokens,
            reasoning_tokens: sums.reasoning_tokens,
            total_tokens: sums.total_tokens,
        }
    }
}

/// One line: the values of the dimensions grouped by (the others are `null`) and the sums.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub(crate) struct UsageItem {
    /// The start of the hour or day (UTC), when grouped by one.
    time: Option<DateTime<Utc>>,
    group_id: Option<i64>,
    /// The group's current name; empty for a group since deleted.
    group_name: Option<String>,
    /// 0 for attempts that used no key.
    key_id: Option<i64>,
    /// The key, masked; empty for a key since deleted.
    key: Option<String>,
    /// The model the client asked for; empty when it named none.
    model: Option<String>,
    /// 0 for requests made with a proxy key.
    access_key_id: Option<i64>,
    /// The key's most attempts in one minute over the whole range, from the request logs
    /// (within their retention); when grouped by key and by no time.
    peak_rpm: Option<i64>,
    #[serde(flatten)]
    totals: UsageTotals,
}

/// The answer of `GET /api/usage`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UsageReport {
    /// The first hour counted (UTC).
    start_time: DateTime<Utc>,
    /// Hours that start before this are counted.
    end_time: DateTime<Utc>,
    /// The dimensions of the items, in this order.
    group_by: Vec<&'static str>,
    /// Everything that matched, over every item (also those past the list's end).
    totals: UsageTotals,
    /// By time first when grouped by time, then by total tokens, most first.
    items: Vec<UsageItem>,
    /// Whether more items matched than the 10,000 listed.
    truncated: bool,
}

fn dim_name(dim: UsageDim) -> &'static str {
    match dim {
        UsageDim::Hour => "hour",
        UsageDim::Day => "day",
        UsageDim::Group => "group",
        UsageDim::Key => "key",
        UsageDim::Model => "model",
        UsageDim::AccessKey => "access_key",
    }
}

async fn report(state: &AdminState, query: &UsageQuery) -> AdminResult<UsageReport> {
    let db = state.registry.db();
    let lines = usage::summary(db, query).await?;
    let by = |dim| query.by.contains(&dim);
    let timed = by(UsageDim::Hour) || by(UsageDim::Day);
    let peaks: std::collections::HashMap<i64, i64> = if by(UsageDim::Key) && !timed {
        usage::key_peaks(db, query)
            .await?
            .into_iter()
            .map(|p| (p.key_id, p.peak_rpm))
            .collect()
    } else {
        Default::default()
    };

    let mut totals = UsageSums::default();
    let mut items: Vec<UsageItem> = lines
        .iter()
        .map(|line| {
            totals.add(&line.sums);
            let group = by(UsageDim::Group)
                .then(|| state.registry.group(line.group_id))
                .flatten();
            let key = by(UsageDim::Key).then(|| {
                let id = u64::try_from(line.key_id).ok().map(KeyId);
                group
                    .as_ref()
                    .zip(id)
                    .and_then(|(g, id)| state.registry.pool().get(g.name.as_str(), id))
                    .map(|slot| slot.secret().masked())
                    .unwrap_or_default()
            });
            let time = if by(UsageDim::Day) {
                Some(line.time.date().and_time(chrono::NaiveTime::MIN))
            } else {
                by(UsageDim::Hour).then_some(line.time)
            };
            UsageItem {
                time: time.map(|t| t.and_utc()),
                group_id: by(UsageDim::Group).then_some(line.group_id),
                group_name: by(UsageDim::Group)
                    .then(|| group.as_ref().map(|g| g.name.to_string()).unwrap_or_default()),
                key_id: by(UsageDim::Key).then_some(line.key_id),
                key,
                model: by(UsageDim::Model).then(|| line.model.clone()),
                access_key_id: by(UsageDim::AccessKey).then_some(line.access_key_id),
                peak_rpm: (by(UsageDim::Key) && !timed)
                    .then(|| peaks.get(&line.key_id).copied().unwrap_or(0)),
                totals: line.sums.into(),
            }
        })
        .collect();
    items.sort_by(|a, b| {
        a.time
            .cmp(&b.time)
            .then(b.totals.total_tokens.cmp(&a.totals.total_tokens))
            .then(b.totals.requests.cmp(&a.totals.requests))
            .then(a.group_id.cmp(&b.group_id))
            .then(a.key_id.cmp(&b.key_id))
            .then(a.model.cmp(&b.model))
            .then(a.access_key_id.cmp(&b.access_key_id))
    });
    let truncated = items.len() > MAX_ITEMS;
    items.truncate(MAX_ITEMS);
    Ok(UsageReport {
        start_time: query.from.and_utc(),
        end_time: query.to.and_utc(),
        group_by: query.by.iter().copied().map(dim_name).collect(),
        totals: totals.into(),
        items,
        truncated,
    })
}

/// Requests and tokens over a time range, filtered by group, key, model and access key, and
/// grouped by any of them and by hour or day.
#[utoipa::path(get, path = "/usage", tag = "usage", params(UsageParams),
    responses((status = 200, body = Envelope<UsageReport>)))]
pub(crate) async fn get_usage(
    Admin { state, lang }: Admin,
    AdminQuery(params): AdminQuery<UsageParams>,
) -> Reply<UsageReport> {
    let report = usage_report(&state, params).await?;
    Ok(ok(text(lang, "Success", "操作成功"), report))
}

/// The report `params` ask for.
pub(crate) async fn usage_report(state: &AdminState, params: UsageParams) -> AdminResult<UsageReport> {
    report(state, &params.query(now())?).await
}

/// The report as CSV: a column per dimension grouped by, then the sums.
fn to_csv(report: &UsageReport) -> String {
    let mut columns: Vec<&str> = Vec::new();
    for dim in &report.group_by {
        match *dim {
            "hour" | "day" => columns.push("time"),
            "group" => columns.extend(["group_id", "group_name"]),
            "key" => columns.extend(["key_id", "key", "peak_rpm"]),
            "model" => columns.push("model"),
            _ => columns.push("access_key_id"),
        }
    }
    let timed = columns.contains(&"time");
    columns.retain(|c| *c != "peak_rpm" || !timed);
    columns.extend(usage::SUMS);
    let mut csv = columns.join(",");
    csv.push('\n');
    for item in &report.items {
        let cells: Vec<String> = columns
            .iter()
            .map(|column| {
                let int = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
                let t = &item.totals;
                match *column {
                    "time" => item.time.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    "group_id" => int(item.group_id),
                    "group_name" => csv_field(item.group_name.as_deref().unwrap_or_default()),
                    "key_id" => int(item.key_id),
                    "key" => csv_field(item.key.as_deref().unwrap_or_default()),
                    "peak_rpm" => int(item.peak_rpm),
                    "model" => csv_field(item.model.as_deref().unwrap_or_default()),
                    "access_key_id" => int(item.access_key_id),
                    "requests" => t.requests.to_string(),
                    "failures" => t.failures.to_string(),
                    "prompt_tokens" => t.prompt_tokens.to_string(),
                    "completion_tokens" => t.completion_tokens.to_string(),
                    "cached_tokens" => t.cached_tokens.to_string(),
                    "reasoning_tokens" => t.reasoning_tokens.to_string(),
                    _ => t.total_tokens.to_string(),
                }
            })
            .collect();
        let _ = writeln!(csv, "{}", cells.join(","));
    }
    csv
}

/// The same report as a CSV file.
#[utoipa::path(get, path = "/usage/export", tag = "usage", params(UsageParams),
    responses((status = 200, content_type = "text/csv", body = String)))]
pub(crate) async fn export_usage(
    Admin { state, .. }: Admin,
    AdminQuery(params): AdminQuery<UsageParams>,
) -> AdminResult<Response> {
    let query = params.query(now())?;
    let report = report(&state, &query).await?;
    let filename = format!("usage_{}.csv", Utc::now().format("%Y%m%d%H%M%S"));
    attachment("text/csv; charset=utf-8", &filename, to_csv(&report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        DateTime::parse_from_rfc3339(text).unwrap().naive_utc()
    }

    #[test]
    fn the_range_defaults_to_the_last_day_in_whole_hours() {
        let now = at("2026-12-06T10:25:00Z");
        let query = UsageParams::default().query(now).unwrap();
        assert_eq!((query.from, query.to), (at("2026-12-05T10:00:00Z"), now));
        assert!(query.by.is_empty());

        let params = UsageParams {
            start_time: Some("2026-12-01T00:30:00+02:00".to_owned()),
            end_time: Some("2026-12-02T00:00:00Z".to_owned()),
            group_id: Some(" 3 ".to_owned()),
            model: Some("gpt-4o".to_owned()),
            group_by: Some("model, key,hour,model".to_owned()),
            ..UsageParams::default()
        };
        let query = params.query(now).unwrap();
        assert_eq!(query.from, at("2026-11-30T22:00:00Z"));
        assert_eq!(query.group_id, Some(3));
        assert_eq!(
            query.by,
            [UsageDim::Hour, UsageDim::Group, UsageDim::Key, UsageDim::Model],
            "a key is grouped with its group, each dimension once"
        );
    }

    #[test]
    fn bad_parameters_name_their_field() {
        let now = at("2026-12-06T10:25:00Z");
        for (params, field) in [
            (
                UsageParams {
                    group_by: Some("hour,day".to_owned()),
                    ..UsageParams::default()
                },
                "group_by",
            ),
            (
                UsageParams {
                    group_by: Some("tenant".to_owned()),
                    ..UsageParams::default()
                },
                "group_by",
            ),
            (
                UsageParams {
                    key_id: Some("-1".to_owned()),
                    ..UsageParams::default()
                },
                "key_id",
            ),
            (
                UsageParams {
                    start_time: Some("2026-12-07T00:00:00Z".to_owned()),
                    ..UsageParams::default()
                },
                "start_time",
            ),
            (
                UsageParams {
                    end_time: Some("tomorrow".to_owned()),
                    ..UsageParams::default()
                },
                "end_time",
            ),
        ] {
            assert!(
                matches!(params.query(now), Err(AdminError::Validation { field: f, .. }) if f == field),
                "{params:?}"
            );
        }
    }

    #[test]
    fn csv_has_a_column_per_dimension_and_the_sums() {
        let report = UsageReport {
            start_time: at("2026-12-06T00:00:00Z").and_utc(),
            end_time: at("2026-12-06T10:00:00Z").and_utc(),
            group_by: vec!["group", "key"],
            totals: UsageTotals::default(),
            items: vec![UsageItem {
                time: None,
                group_id: Some(2),
                group_name: Some("team, a".to_owned()),
                key_id: Some(9),
                key: Some("sk-a****wxyz".to_owned()),
                model: None,
                access_key_id: None,
                peak_rpm: Some(12),
                totals: UsageTotals {
                    requests: 3,
                    failures: 1,
                    prompt_tokens: 30,
                    completion_tokens: 6,
                    cached_tokens: 0,
                    reasoning_tokens: 0,
                    total_tokens: 36,
                },
            }],
            truncated: false,
        };
        assert_eq!(
            to_csv(&report),
            "group_id,group_name,key_id,key,peak_rpm,requests,failures,prompt_tokens,\
             completion_tokens,cached_tokens,reasoning_tokens,total_tokens\n\
             2,\"team, a\",9,sk-a****wxyz,12,3,1,30,6,0,0,36\n"
        );
    }
}
