//! Incremental validation, the fork's routes (behaviour reference §12): validate the keys of a
//! group (or of every group) that were added within a time window and are in chosen states,
//! skipping keys validated recently, and answer when done; and a group's validation history
//! over the last hours, from each key's `last_validated_at`.
//!
//! Outcomes apply as validation's always do ([`Registry::apply_validation`]): a key that works
//! is active again, a key error counts toward the blacklist, a rate limit cools the key, a
//! provider failure changes nothing. These routes answer synchronously, like the fork's, and do
//! not hold the global key task.

use std::{collections::HashSet, sync::atomic::AtomicUsize, time::Instant};

use chrono::{DateTime, TimeDelta, Utc};
use gpt_load_tower::keys::{KeyId, KeyState};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    admin::prelude::*,
    jobs::validate::check_keys_at,
    models::{GroupRow, now},
    registry::{GroupKind, Registry},
    repo::{groups, keys},
};

/// States a request may name (`pending`: keys added while the group's `validate_new_keys` is
/// on, not yet validated).
const STATES: &[&str] = &["pending", "active", "degraded", "cooling", "invalid", "disabled"];

/// The body of `POST /api/validation/groups/{id}` and `POST /api/validation/groups`; every field
/// is optional (the fork's defaults).
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
pub(crate) struct ValidationRequest {
    /// Only keys added within this many hours (default 24; 0 = every key).
    time_window_hours: Option<u32>,
    /// Only keys in these states (default `["pending", "invalid"]`).
    include_states: Option<Vec<String>>,
    /// Skip keys validated within `recent_validation_hours` (default true).
    exclude_recently_validated: Option<bool>,
    /// Default 1.
    recent_validation_hours: Option<u32>,
    /// Validation requests at a time (default 5, at most 100).
    concurrency: Option<u32>,
    /// Keys per batch (default 100, at most 1,000).
    batch_size: Option<u32>,
}

/// The request with its defaults applied and checked.
struct Plan {
    window: Option<TimeDelta>,
    states: HashSet<&'static str>,
    recent: Option<TimeDelta>,
    concurrency: usize,
    batch_size: usize,
}

impl ValidationRequest {
    fn plan(&self) -> AdminResult<Plan> {
        let hours = |n: u32| TimeDelta::hours(i64::from(n));
        let mut states = HashSet::new();
        let named = self
            .include_states
            .clone()
            .unwrap_or_else(|| vec!["pending".to_owned(), "invalid".to_owned()]);
        for state in &named {
            let Some(known) = STATES.iter().find(|s| **s == state.trim()) else {
                return Err(AdminError::validation(
                    "include_states",
                    format!("unknown state '{state}'; one of {}", STATES.join(", ")),
                ));
            };
            states.insert(*known);
        }
        let bounded = |field: &str, value: Option<u32>, default: u32, max: u32| match value.unwrap_or(default)
        {
            n @ 1.. if n <= max => Ok(n as usize),
            _ => Err(AdminError::validation(
                field,
                format!("must be between 1 and {max}"),
            )),
        };
        Ok(Plan {
            window: Some(self.time_window_hours.unwrap_or(24))
                .filter(|h| *h > 0)
                .map(hours),
            states,
            recent: self
                .exclude_recently_validated
                .unwrap_or(true)
                .then(|| hours(self.recent_validation_hours.unwrap_or(1))),
            concurrency: bounded("concurrency", self.concurrency, 5, 100)?,
            batch_size: bounded("batch_size", self.batch_size, 100, 1000)?,
        })
    }
}

/// How one group's validation went.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct GroupValidation {
    group_id: i64,
    group_name: String,
    /// Keys in the group.
    total_keys: usize,
    /// Keys validated by this call.
    validated_keys: usize,
    /// Keys left out (outside the window or the states, or validated recently).
    skipped_keys: usize,
    successful_keys: usize,
    failed_keys: usize,
    duration_ms: u64,
}

/// Validates the chosen keys of one group.
async fn validate(registry: &Registry, group: &GroupRow, plan: &Plan) -> AdminResult<GroupValidation> {
    let begun = Instant::now();
    let policy = registry
        .catalog()
        .policy(&group.name)
        .filter(|p| !p.group.is_aggregate())
        .ok_or_else(|| AdminError::BadRequest(format!("group {} has no keys to validate", group.name)))?;
    let stored = keys::list_stored(registry.db(), Some(group.id)).await?;
    let at = now();
    let chosen: HashSet<KeyId> = stored
        .iter()
        .filter(|(row, _)| plan.window.is_none_or(|window| row.created_at >= at - window))
        .filter(|(_, lifecycle)| {
            plan.recent.is_none_or(|recent| {
                lifecycle
                    .last_validated_at
                    .is_none_or(|validated| validated < at - recent)
            })
        })
        .map(|(row, _)| KeyId(row.id as u64))
        .collect();
    let slots: Vec<_> = registry
        .pool()
        .keys(&group.name)
        .into_iter()
        .filter(|slot| chosen.contains(&slot.id()) && plan.states.contains(slot.state().as_str()))
        .collect();
    let (mut successful, mut failed) = (0, 0);
    let validated = slots.len();
    for batch in slots.chunks(plan.batch_size) {
        let checks = check_keys_at(
            &policy,
            registry.catalog(),
            registry.client(),
            batch.to_vec(),
            &AtomicUsize::new(0),
            plan.concurrency,
        )
        .await;
        let (valid, invalid) = registry.apply_validation(&policy, &checks);
        registry.record_validated(&checks).await;
        successful += valid;
        failed += invalid;
    }
    Ok(GroupValidation {
        group_id: group.id,
        group_name: group.name.clone(),
        total_keys: stored.len(),
        validated_keys: validated,
        skipped_keys: stored.len().saturating_sub(validated),
        successful_keys: successful,
        failed_keys: failed,
        duration_ms: u64::try_from(begun.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

async fn standard_group(state: &AdminState, id: i64) -> AdminResult<GroupRow> {
    let row = groups::find(state.registry.db(), id)
        .await?
        .ok_or(AdminError::NotFound("group"))?;
    if GroupKind::of_row(&row) == GroupKind::Aggregate {
        return Err(AdminError::BadRequest(format!(
            "group {} is an aggregate and has no keys of its own",
            row.name
        )));
    }
    Ok(row)
}

/// Validates a group's keys added within the window and in the chosen states, skipping keys
/// validated recently; answers when done.
#[utoipa::path(post, path = "/validation/groups/{id}", tag = "validation", params(("id" = i64, Path)),
    request_body = ValidationRequest, responses((status = 200, body = Envelope<GroupValidation>)))]
pub(crate) async fn validate_one(
    Admin { state, lang }: Admin,
    AdminPath(id): AdminPath<i64>,
    AdminJson(request): AdminJson<ValidationRequest>,
) -> Reply<GroupValidation> {
    let plan = request.plan()?;
    let group = standard_group(&state, id).await?;
    let result = validate(&state.registry, &group, &plan).await?;
    Ok(ok(text(lang, "Success", "操作成功"), result))
}

/// Every group's validation, and the totals.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct AllValidations {
    results: Vec<GroupValidation>,
    summary: ValidationSummary,
}

/// Totals over the groups.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct ValidationSummary {
    total_groups: usize,
    total_keys: usize,
    total_validated: usize,
    total_successful: usize,
}

/// [`validate_one`] for every standard group in turn.
#[utoipa::path(post, path = "/validation/groups", tag = "validation", request_body = ValidationRequest,
    responses((status = 200, body = Envelope<AllValidations>)))]
pub(crate) async fn validate_all(
    Admin { state, lang }: Admin,
    AdminJson(request): AdminJson<ValidationRequest>,
) -> Reply<AllValidations> {
    let plan = request.plan()?;
    let mut results = Vec::new();
    for group in groups::list(state.registry.db()).await? {
        if GroupKind::of_row(&group) == GroupKind::Standard {
            results.push(validate(&state.registry, &group, &plan).await?);
        }
    }
    let summary = ValidationSummary {
        total_groups: results.len(),
        total_keys: results.iter().map(|r| r.total_keys).sum(),
        total_validated: results.iter().map(|r| r.validated_keys).sum(),
        total_successful: results.iter().map(|r| r.successful_keys).sum(),
    };
    Ok(ok(
        text(lang, "Success", "操作成功"),
        AllValidations { results, summary },
    ))
}

/// The query of the history route.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// The window, in hours (default 24, at most 8,760).
    hours: Option<u32>,
}

/// A group's validation over a window.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct ValidationHistory {
    group_id: i64,
    time_range: TimeRange,
    history: HistoryCounts,
}

/// The window.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct TimeRange {
    hours: u32,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

/// Keys of the group, and how many were validated within the window.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct HistoryCounts {
    total_keys: usize,
    /// Keys whose last validation is within the window.
    validated_keys: usize,
    /// Always 0: new keys start active here.
    pending_keys: usize,
    /// Usable keys (active, degraded, cooling).
    active_keys: usize,
    invalid_keys: usize,
    /// `validated_keys / total_keys`, 0 for an empty group.
    validation_rate: f64,
}

/// How many of a group's keys were validated within the last `hours`.
#[utoipa::path(get, path = "/validation/groups/{id}/history", tag = "validation",
    params(("id" = i64, Path), HistoryQuery),
    responses((status = 200, body = Envelope<ValidationHistory>)))]
pub(crate) async fn history(
    Admin { state, lang }: Admin,
    AdminPath(id): AdminPath<i64>,
    AdminQuery(query): AdminQuery<HistoryQuery>,
) -> Reply<ValidationHistory> {
    let hours = query.hours.unwrap_or(24);
    if !(1..=8760).contains(&hours) {
        return Err(AdminError::validation("hours", "must be between 1 and 8760"));
    }
    let group = standard_group(&state, id).await?;
    let end = now();
    let start = end - TimeDelta::hours(i64::from(hours));
    let stored = keys::list_stored(state.registry.db(), Some(group.id)).await?;
    let validated = stored
        .iter()
        .filter(|(_, l)| l.last_validated_at.is_some_and(|at| at >= start))
        .count();
    let pool = state.registry.pool();
    let (mut active, mut invalid) = (0, 0);
    for slot in pool.keys(&group.name) {
        match slot.state() {
            KeyState::Invalid => invalid += 1,
            KeyState::Disabled => {}
            _ => active += 1,
        }
    }
    let total = stored.len();
    let data = ValidationHistory {
        group_id: group.id,
        time_range: TimeRange {
            hours,
            start: start.and_utc(),
            end: end.and_utc(),
        },
        history: HistoryCounts {
            total_keys: total,
            validated_keys: validated,
            pending_keys: 0,
            active_keys: active,
            invalid_keys: invalid,
            validation_rate: if total == 0 {
                0.0
            } else {
                validated as f64 / total as f64
            },
        },
    };
    Ok(ok(text(lang, "Success", "操作成功"), data))
}
