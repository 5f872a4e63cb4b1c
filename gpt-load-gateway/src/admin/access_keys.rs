//! Access keys (`/api/access-keys`): proxy keys as records of their own, handed to teams, with
//! their groups, models, limits, quotas, expiry and switch (docs/LIMITS.md, "Access keys"). A
//! key is shown once, when it is made or rotated; only its hash is stored. The legacy proxy keys
//! (the global `proxy_keys` setting and each group's) keep working and are listed beside them,
//! masked.

use chrono::{DateTime, NaiveDateTime};
use gpt_load_tower::{rewrite::ModelFilter, secret::ApiKey};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::{
    prelude::*,
    usage::{UsageParams, UsageReport, usage_report},
};
use crate::{
    models::{AccessKeyFields, AccessKeyRow, now},
    registry::access_keys::{self, AccessUsage},
    repo::{access_keys as rows, groups},
    settings::FieldError,
};

/// What an access key has used, as this node counts it (the day and month include every node's
/// requests as of the last read of `usage_hourly`).
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
pub(crate) struct AccessUsageJson {
    requests_last_minute: u64,
    tokens_last_minute: u64,
    /// Since 00:00 UTC.
    tokens_today: u64,
    /// Since the first of the month, 00:00 UTC.
    tokens_this_month: u64,
}

impl From<AccessUsage> for AccessUsageJson {
    fn from(u: AccessUsage) -> Self {
        Self {
            requests_last_minute: u.requests_last_minute,
            tokens_last_minute: u.tokens_last_minute,
            tokens_today: u.tokens_today,
            tokens_this_month: u.tokens_this_month,
        }
    }
}

/// An access key as the API shows it (never the key itself).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct AccessKeyJson {
    id: i64,
    name: String,
    /// The key's first ten and last four characters.
    key_hint: String,
    /// Group ids; empty = every group.
    allowed_groups: Vec<i64>,
    /// Model patterns (`gpt-4o*`, `/^o[13]-/`); empty = every model.
    allowed_models: Vec<String>,
    /// Requests per minute; 0 = no limit.
    rpm: i64,
    /// Tokens per minute; 0 = no limit.
    tpm: i64,
    /// Tokens per UTC day; 0 = no quota.
    daily_token_quota: i64,
    /// Tokens per calendar month (UTC); 0 = no quota.
    monthly_token_quota: i64,
    /// UTC; `null` = never.
    expires_at: Option<NaiveDateTime>,
    enabled: bool,
    /// `active`, `disabled` or `expired`.
    status: &'static str,
    notes: String,
    usage: AccessUsageJson,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

impl AccessKeyJson {
    fn of(row: AccessKeyRow, state: &AdminState) -> Self {
        let status = if !row.enabled {
            "disabled"
        } else if row.expires_at.is_some_and(|at| at <= now()) {
            "expired"
        } else {
            "active"
        };
        Self {
            usage: state.registry.catalog().proxy_keys.access.usage(row.id).into(),
            id: row.id,
            allowed_groups: serde_json::from_str(&row.allowed_groups).unwrap_or_default(),
            allowed_models: serde_json::from_str(&row.allowed_models).unwrap_or_default(),
            name: row.name,
            key_hint: row.key_hint,
            rpm: row.rpm,
            tpm: row.tpm,
            daily_token_quota: row.daily_token_quota,
            monthly_token_quota: row.monthly_token_quota,
            expires_at: row.expires_at,
            enabled: row.enabled,
            status,
            notes: row.notes,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A legacy proxy key, masked.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct LegacyKeyJson {
    /// `global` (the `proxy_keys` setting: every group) or `group` (one group's `proxy_keys`).
    scope: &'static str,
    group_id: Option<i64>,
    group_name: Option<String>,
    /// The key, masked.
    key: String,
}

/// The answer of `GET /api/access-keys`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AccessKeyList {
    access_keys: Vec<AccessKeyJson>,
    /// The proxy keys of the settings and the groups, which work as before.
    legacy_keys: Vec<LegacyKeyJson>,
}

/// A key just made or rotated: the only time it is shown.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IssuedAccessKey {
    /// The key. Store it now: it cannot be shown again.
    key: String,
    access_key: AccessKeyJson,
}

/// `null` and absent told apart: `Some(None)` clears the field.
fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The body of `POST /api/access-keys` (`name` required) and `PUT /api/access-keys/{id}`
/// (every field optional: what is left out is kept).
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccessKeyInput {
    name: Option<String>,
    /// Group ids; empty = every group.
    allowed_groups: Option<Vec<i64>>,
    /// Model patterns; empty = every model.
    allowed_models: Option<Vec<String>>,
    rpm: Option<i64>,
    tpm: Option<i64>,
    daily_token_quota: Option<i64>,
    monthly_token_quota: Option<i64>,
    /// RFC 3339 (or `YYYY-MM-DDTHH:MM:SS`, UTC); `null` = never.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    expires_at: Option<Option<String>>,
    enabled: Option<bool>,
    notes: Option<String>,
}

/// A checked input, ready to store.
struct Checked {
    name: String,
    allowed_groups: String,
    allowed_models: String,
    rpm: i64,
    tpm: i64,
    daily_token_quota: i64,
    monthly_token_quota: i64,
    expires_at: Option<NaiveDateTime>,
    enabled: bool,
    notes: String,
}

impl Checked {
    fn fields(&self) -> AccessKeyFields<'_> {
        AccessKeyFields {
            name: &self.name,
            allowed_groups: &self.allowed_groups,
            allowed_models: &self.allowed_models,
            rpm: self.rpm,
            tpm: self.tpm,
            daily_token_quota: self.daily_token_quota,
            monthly_token_quota: self.monthly_token_quota,
            expires_at: self.expires_at,
            enabled: self.enabled,
            notes: &self.notes,
            updated_at: now(),
        }
    }
}

fn parse_expiry(value: &str) -> Option<NaiveDateTime> {
    DateTime::parse_from_rfc3339(value)
        .map(|at| at.naive_utc())
        .or_else(|_| NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f"))
        .or_else(|_| NaiveDateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S"))
        .ok()
}

impl AccessKeyInput {
    /// Applies the input over `stored` (an update) or over nothing (a creation), and checks it
    /// against the groups that exist.
    fn check(self, stored: Option<&AccessKeyRow>, group_ids: &[i64]) -> AdminResult<Checked> {
        let mut errors = Vec::new();
        let name = self
            .name
            .map(|n| n.trim().to_owned())
            .or_else(|| stored.map(|s| s.name.clone()))
            .unwrap_or_default();
        if name.is_empty() || name.chars().count() > 100 {
            errors.push(FieldError::new("name", "is required, at most 100 characters"));
        }
        let allowed_groups = match self.allowed_groups {
            Some(ids) => {
                if let Some(unknown) = ids.iter().find(|id| !group_ids.contains(id)) {
                    errors.push(FieldError::new(
                        "allowed_groups",
                        format!("group {unknown} does not exist"),
                    ));
                }
                serde_json::to_string(&ids).unwrap_or_else(|_| "[]".to_owned())
            }
            None => stored.map_or_else(|| "[]".to_owned(), |s| s.allowed_groups.clone()),
        };
        let allowed_models = match self.allowed_models {
            Some(patterns) => {
                let patterns: Vec<String> = patterns
                    .into_iter()
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect();
                if let Err(err) = ModelFilter::new(&patterns, [] as [&str; 0]) {
                    errors.push(FieldError::new("allowed_models", err.to_string()));
                }
                serde_json::to_string(&patterns).unwrap_or_else(|_| "[]".to_owned())
            }
            None => stored.map_or_else(|| "[]".to_owned(), |s| s.allowed_models.clone()),
        };
        let mut count = |field: &'static str, value: Option<i64>, kept: Option<i64>| {
            let value = value.or(kept).unwrap_or(0);
            if value < 0 {
                errors.push(FieldError::new(field, "must be 0 (no limit) or more"));
            }
            value
        };
        let rpm = count("rpm", self.rpm, stored.map(|s| s.rpm));
        let tpm = count("tpm", self.tpm, stored.map(|s| s.tpm));
        let daily_token_quota = count(
            "daily_token_quota",
            self.daily_token_quota,
            stored.map(|s| s.daily_token_quota),
        );
        let monthly_token_quota = count(
            "monthly_token_quota",
            self.monthly_token_quota,
            stored.map(|s| s.monthly_token_quota),
        );
        let expires_at = match self.expires_at {
            Some(Some(text)) if !text.trim().is_empty() => match parse_expiry(text.trim()) {
                Some(at) => Some(at),
                None => {
                    errors.push(FieldError::new("expires_at", "must be an RFC 3339 time or null"));
                    None
                }
            },
            Some(_) => None,
            None => stored.and_then(|s| s.expires_at),
        };
        let notes = self
            .notes
            .or_else(|| stored.map(|s| s.notes.clone()))
            .unwrap_or_default();
        if notes.chars().count() > 2000 {
            errors.push(FieldError::new("notes", "at most 2000 characters"));
        }
        if !errors.is_empty() {
            return Err(AdminError::Fields(errors));
        }
        Ok(Checked {
            name,
            allowed_groups,
            allowed_models,
            rpm,
            tpm,
            daily_token_quota,
            monthly_token_quota,
            expires_at,
            enabled: self.enabled.or(stored.map(|s| s.enabled)).unwrap_or(true),
            notes,
        })
    }
}

async fn group_ids(state: &AdminState) -> AdminResult<Vec<i64>> {
    Ok(groups::list(state.registry.db())
        .await?
        .iter()
        .map(|g| g.id)
        .collect())
}

fn legacy_keys(state: &AdminState) -> Vec<LegacyKeyJson> {
    let mask = |key: &str| ApiKey::new(key).masked();
    let settings = state.registry.settings().current();
    let mut keys: Vec<LegacyKeyJson> = settings
        .proxy_keys
        .iter()
        .map(|key| LegacyKeyJson {
            scope: "global",
            group_id: None,
            group_name: None,
            key: mask(key),
        })
        .collect();
    let mut ids = state.registry.group_ids();
    ids.sort_unstable();
    for group in ids.into_iter().filter_map(|id| state.registry.group(id)) {
        keys.extend(group.proxy_keys.iter().map(|key| LegacyKeyJson {
            scope: "group",
            group_id: Some(group.id),
            group_name: Some(group.name.to_string()),
            key: mask(key),
        }));
    }
    keys
}

#[utoipa::path(get, path = "/access-keys", tag = "access-keys",
    responses((status = 200, body = Envelope<AccessKeyList>)))]
pub(crate) async fn list_access_keys(Admin { state, lang }: Admin) -> Reply<AccessKeyList> {
    let access_keys = rows::list(state.registry.db())
        .await?
        .into_iter()
        .map(|row| AccessKeyJson::of(row, &state))
        .collect();
    let list = AccessKeyList {
        access_keys,
        legacy_keys: legacy_keys(&state),
    };
    Ok(ok(text(lang, "Success", "操作成功"), list))
}

#[utoipa::path(post, path = "/access-keys", tag = "access-keys", request_body = AccessKeyInput,
    responses((status = 200, body = Envelope<IssuedAccessKey>)))]
pub(crate) async fn create_access_key(
    Admin { state, lang }: Admin,
    AdminJson(input): AdminJson<AccessKeyInput>,
) -> Reply<IssuedAccessKey> {
    let checked = input.check(None, &group_ids(&state).await?)?;
    let key = access_keys::generate();
    let row = state.registry.create_access_key(&checked.fields(), &key).await?;
    Ok(ok(
        text(lang, "Access key created", "访问密钥已创建"),
        IssuedAccessKey {
            key,
            access_key: AccessKeyJson::of(row, &state),
        },
    ))
}

#[utoipa::path(get, path = "/access-keys/{id}", tag = "access-keys", params(("id" = i64, Path)),
    responses((status = 200, body = Envelope<AccessKeyJson>)))]
pub(crate) async fn get_access_key(
    Admin { state, lang }: Admin,
    AdminPath(id): AdminPath<i64>,
) -> Reply<AccessKeyJson> {
    let row = rows::find(state.registry.db(), id)
        .await?
        .ok_or(AdminError::NotFound("access key"))?;
    Ok(ok(
        text(lang, "Success", "操作成功"),
        AccessKeyJson::of(row, &state),
    ))
}

#[utoipa::path(put, path = "/access-keys/{id}", tag = "access-keys", params(("id" = i64, Path)),
    request_body = AccessKeyInput, responses((status = 200, body = Envelope<AccessKeyJson>)))]
pub(crate) async fn update_access_key(
    Admin { state, lang }: Admin,
    AdminPath(id): AdminPath<i64>,
    AdminJson(input): AdminJson<AccessKeyInput>,
) -> Reply<AccessKeyJson> {
    let stored = rows::find(state.registry.db(), id)
        .await?
        .ok_or(AdminError::NotFound("access key"))?;
    let checked = input.check(Some(&stored), &group_ids(&state).await?)?;
    let row = state
        .registry
        .update_access_key(id, &checked.fields())
        .await?
        .ok_or(AdminError::NotFound("access key"))?;
    Ok(ok(
        text(lang, "Access key updated", "访问密钥已更新"),
        AccessKeyJson::of(row, &state),
    ))
}

#[utoipa::path(post, path = "/access-keys/{id}/rotate", tag = "access-keys", params(("id" = i64, Path)),
    responses((status = 200, body = Envelope<IssuedAccessKey>)))]
pub(crate) async fn rotate_access_key(
    Admin { state, lang }: Admin,
    AdminPath(id): AdminPath<i64>,
) -> Reply<IssuedAccessKey> {
    let key = access_keys::generate();
    let row = state
        .registry
        .rotate_access_key(id, &key)
        .await?
        .ok_or(AdminError::NotFound("access key"))?;
    Ok(ok(
        text(lang, "Access key rotated", "访问密钥已轮换"),
        IssuedAccessKey {
            key,
            access_key: AccessKeyJson::of(row, &state),
        },
    ))
}

#[utoipa::path(delete, path = "/access-keys/{id}", tag = "access-keys", params(("id" = i64, Path)),
    responses((status = 200, body = Ack)))]
pub(crate) async fn delete_access_key(
    Admin { state, lang }: Admin,
    AdminPath(id): AdminPath<i64>,
) -> AckReply {
    if !state.registry.delete_access_key(id).await? {
        return Err(AdminError::NotFound("access key"));
    }
    Ok(ack(text(lang, "Access key deleted", "访问密钥已删除")))
}

/// An access key's requests and tokens from `usage_hourly`: `/api/usage` with `access_key_id`
/// set (the same parameters; default range the last day).
#[utoipa::path(get, path = "/access-keys/{id}/usage", tag = "access-keys",
    params(("id" = i64, Path), UsageParams),
    responses((status = 200, body = Envelope<UsageReport>)))]
pub(crate) async fn access_key_usage(
    Admin { state, lang }: Admin,
    AdminPath(id): AdminPath<i64>,
    AdminQuery(params): AdminQuery<UsageParams>,
) -> Reply<UsageReport> {
    rows::find(state.registry.db(), id)
        .await?
        .ok_or(AdminError::NotFound("access key"))?;
    let report = usage_report(&state, params.for_access_key(id)).await?;
    Ok(ok(text(lang, "Success", "操作成功"), report))
}
