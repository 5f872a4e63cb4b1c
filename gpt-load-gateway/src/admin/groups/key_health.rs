//! `GET /api/groups/{id}/key-health`: why a group's keys are where they are. Counts per state,
//! the rest each cooling key has left, the models resting on keys, the settings that decide
//! (threshold, cool-down bounds, degraded weight, model filter), the last failed attempts
//! with what each meant for its key and the upstream's reason, and the request limits with the
//! keys at one of them.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use gpt_load_tower::{
    keys::{KeySlot, KeyState},
    limit::GroupLimitTable,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    admin::prelude::*, proxy::FailedAttempt, registry::GroupKind, repo::groups, settings::EffectiveConfig,
};

/// Cooling keys, model rests and keys at a limit listed, soonest first.
const LISTED: usize = 50;

/// See the [module docs](self).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KeyHealth {
    group_id: i64,
    group_name: String,
    counts: StateCounts,
    rules: HealthRules,
    /// Cooling keys, the soonest probed first (at most 50).
    cooling: Vec<CoolingKey>,
    /// Models resting on keys (per-model quotas), the soonest back first (at most 50).
    model_cooling: Vec<ModelRest>,
    /// The group's last failed attempts on this node, newest first (at most 20).
    recent_failures: Vec<RecentFailure>,
    limits: LimitState,
}

/// The group's request limits (docs/LIMITS.md, 0 = none) and where it stands against them on
/// this node.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LimitState {
    key_rpm: u32,
    key_rpd: u32,
    key_max_concurrency: u32,
    /// As set (each node admits its share of it in a cluster).
    key_tpm: u32,
    group_rpm: u32,
    group_max_concurrency: u32,
    /// As set (each node admits its share of it in a cluster).
    group_tpm: u32,
    limit_queue_timeout_ms: u64,
    /// The group's requests in the last minute on this node (counted only with group limits).
    group_last_minute: u64,
    /// The group's requests in flight on this node (counted only with `group_max_concurrency`).
    group_in_flight: u32,
    /// The group's tokens in the last minute on this node, settled and reserved for requests in
    /// flight (counted only with `group_tpm`).
    group_tokens_last_minute: u64,
    /// Usable keys one of their limits keeps out now, the soonest free first (at most 50).
    keys_at_limit: Vec<KeyAtLimit>,
}

/// One key at one of its limits.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KeyAtLimit {
    key_id: u64,
    /// The key, masked.
    key: String,
    /// `key_rpm`, `key_rpd`, `key_tpm` or `key_concurrency`.
    limit: &'static str,
    /// When the limit has room for it again.
    until: DateTime<Utc>,
    /// Its requests in the last minute and today (UTC) on this node.
    last_minute: u64,
    today: u64,
}

/// Keys per state.
#[derive(Debug, Default, Serialize, ToSchema)]
pub(crate) struct StateCounts {
    total: usize,
    active: usize,
    degraded: usize,
    cooling: usize,
    invalid: usize,
    disabled: usize,
    /// Added and not yet validated (`validate_new_keys`).
    pending: usize,
    /// Requests using the group's keys right now.
    in_flight: u64,
}

/// The settings that move the group's keys between states.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HealthRules {
    blacklist_threshold: u32,
    failover_status_codes: String,
    cool_down_min_seconds: u64,
    cool_down_max_seconds: u64,
    /// How often a degraded key is selected relative to a healthy one (0 to 1).
    degraded_key_weight: f64,
    model_include: Vec<String>,
    model_exclude: Vec<String>,
}

/// One cooling key.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CoolingKey {
    key_id: u64,
    /// The key, masked.
    key: String,
    /// When the next request probes it.
    until: DateTime<Utc>,
    backoff_level: u32,
    last_error_message: Option<String>,
}

/// One model resting on one key.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ModelRest {
    key_id: u64,
    key: String,
    model: String,
    until: DateTime<Utc>,
}

/// One failed attempt.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RecentFailure {
    at: DateTime<Utc>,
    key_id: Option<u64>,
    key: Option<String>,
    model: Option<String>,
    status: u16,
    /// What the failure meant for the key: `failure` (counted toward the blacklist),
    /// `uncounted_failure`, `cool_down`, `dead`, `transient` (the provider's fault),
    /// `request_error` (the request's fault), `passthrough`; absent when no upstream answered.
    outcome: Option<&'static str>,
    /// The policy rule that decided the outcome (`policy / rule`); absent when the built-in
    /// rules did.
    rule: Option<String>,
    /// The upstream's message or the gateway's error, redacted.
    reason: Option<String>,
}

impl From<FailedAttempt> for RecentFailure {
    fn from(failed: FailedAttempt) -> Self {
        Self {
            at: failed.at.into(),
            key_id: failed.key_id.map(|id| id.0),
            key: failed.masked_key,
            model: failed.model,
            status: failed.status,
            outcome: failed.outcome,
            rule: failed.rule.map(|r| r.to_string()),
            reason: failed.reason,
        }
    }
}

fn after(rest: std::time::Duration) -> DateTime<Utc> {
    (SystemTime::now() + rest).into()
}

fn counts(slots: &[std::sync::Arc<KeySlot>]) -> StateCounts {
    let mut counts = StateCounts {
        total: slots.len(),
        ..StateCounts::default()
    };
    for slot in slots {
        counts.in_flight += u64::from(slot.in_flight());
        match slot.state() {
            KeyState::Active => counts.active += 1,
            KeyState::Degraded => counts.degraded += 1,
            KeyState::Cooling => counts.cooling += 1,
            KeyState::Invalid => counts.invalid += 1,
            KeyState::Pending => counts.pending += 1,
            _ => counts.disabled += 1,
        }
    }
    counts
}

fn limit_state(
    effective: &EffectiveConfig,
    group_limits: &GroupLimitTable,
    group: &str,
    slots: &[std::sync::Arc<KeySlot>],
) -> LimitState {
    let (keys, groups) = (effective.key_limits(), effective.group_limits());
    let (group_last_minute, group_in_flight) = group_limits.usage(group);
    let mut at_limit: Vec<(std::time::Duration, KeyAtLimit)> = slots
        .iter()
        .filter(|slot| slot.is_usable())
        .filter_map(|slot| {
            let refusal = slot.limit_refusal()?;
            let (last_minute, today) = slot.limit_usage();
            Some((
                refusal.retry_after,
                KeyAtLimit {
                    key_id: slot.id().0,
                    key: slot.secret().masked(),
                    limit: refusal.limit,
                    until: after(refusal.retry_after),
                    last_minute,
                    today,
                },
            ))
        })
        .collect();
    at_limit.sort_by_key(|(wait, _)| *wait);
    LimitState {
        key_rpm: keys.rpm,
        key_rpd: keys.rpd,
        key_max_concurrency: keys.max_concurrency,
        key_tpm: keys.tpm,
        group_rpm: groups.rpm,
        group_max_concurrency: groups.max_concurrency,
        group_tpm: groups.tpm,
        group_tokens_last_minute: group_limits.tokens_used(group),
        limit_queue_timeout_ms: u64::try_from(groups.queue_timeout.as_millis()).unwrap_or(u64::MAX),
        group_last_minute,
        group_in_flight,
        keys_at_limit: at_limit.into_iter().take(LISTED).map(|(_, k)| k).collect(),
    }
}

/// Why a group's keys are where they are (standard groups; ask an aggregate's sub-groups).
#[utoipa::path(get, path = "/groups/{id}/key-health", tag = "groups", params(("id" = i64, Path)),
    responses((status = 200, body = Envelope<KeyHealth>)))]
pub(crate) async fn key_health(
    Admin { state, lang }: Admin,
    AdminPath(id): AdminPath<i64>,
) -> Reply<KeyHealth> {
    let row = groups::find(state.registry.db(), id)
        .await?
        .ok_or(AdminError::NotFound("group"))?;
    if GroupKind::of_row(&row) == GroupKind::Aggregate {
        return Err(AdminError::validation(
            "id",
            "an aggregate group has no keys of its own; ask each sub-group",
        ));
    }
    let catalog = state.registry.catalog();
    let policy = catalog.policy(&row.name).ok_or(AdminError::NotFound("group"))?;
    let effective = &policy.effective;
    let filter = effective.model_filter().unwrap_or_default();
    let rules = HealthRules {
        blacklist_threshold: policy.health.blacklist_threshold,
        failover_status_codes: effective.failover_status_spec().to_owned(),
        cool_down_min_seconds: policy.health.cool_down.min().as_secs(),
        cool_down_max_seconds: policy.health.cool_down.max().as_secs(),
        degraded_key_weight: effective.degraded_key_weight(),
        model_include: filter.include().map(str::to_owned).collect(),
        model_exclude: filter.exclude().map(str::to_owned).collect(),
    };
    let slots = state.registry.pool().keys(&row.name);
    let mut cooling: Vec<(std::time::Duration, CoolingKey)> = slots
        .iter()
        .filter_map(|slot| {
            let rest = slot.cooling_for()?;
            Some((
                rest,
                CoolingKey {
                    key_id: slot.id().0,
                    key: slot.secret().masked(),
                    until: after(rest),
                    backoff_level: slot.backoff_level(),
                    last_error_message: slot.last_error().map(|m| m.to_string()),
                },
            ))
        })
        .collect();
    cooling.sort_by_key(|(rest, _)| *rest);
    let mut model_cooling: Vec<(std::time::Duration, ModelRest)> = slots
        .iter()
        .flat_map(|slot| {
            slot.model_rests().into_iter().map(|(model, rest)| {
                (
                    rest,
                    ModelRest {
                        key_id: slot.id().0,
                        key: slot.secret().masked(),
                        model: model.to_string(),
                        until: after(rest),
                    },
                )
            })
        })
        .collect();
    model_cooling.sort_by_key(|(rest, _)| *rest);
    let limits = limit_state(effective, &catalog.group_limits, &row.name, &slots);
    let data = KeyHealth {
        group_id: row.id,
        group_name: row.name.clone(),
        counts: counts(&slots),
        rules,
        cooling: cooling.into_iter().take(LISTED).map(|(_, c)| c).collect(),
        model_cooling: model_cooling.into_iter().take(LISTED).map(|(_, m)| m).collect(),
        recent_failures: catalog
            .recent_failures
            .of(&row.name)
            .into_iter()
            .map(RecentFailure::from)
            .collect(),
        limits,
    };
    Ok(ok(text(lang, "Success", "操作成功"), data))
}
