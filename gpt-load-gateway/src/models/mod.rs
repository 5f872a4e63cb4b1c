//! Rows as stored (insertable whole, ids included, where a copy preserves them), and the
//! insertable forms of new rows. JSON columns are text; the admin and proxy layers
//! parse them into typed values.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::{
    crypto::KeyCipher,
    db::schema::{access_keys, api_keys, group_policies, groups, policies, system_settings},
};

/// A `system_settings` row.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = system_settings)]
pub(crate) struct SettingRow {
    pub(crate) id: i64,
    pub(crate) setting_key: String,
    pub(crate) setting_value: String,
    pub(crate) description: String,
    pub(crate) created_at: NaiveDateTime,
    pub(crate) updated_at: NaiveDateTime,
}

/// A new `system_settings` row.
#[derive(Clone, Debug, Insertable)]
#[diesel(table_name = system_settings)]
pub(crate) struct NewSetting<'a> {
    pub(crate) setting_key: &'a str,
    pub(crate) setting_value: &'a str,
    pub(crate) description: &'a str,
    pub(crate) created_at: NaiveDateTime,
    pub(crate) updated_at: NaiveDateTime,
}

/// A `groups` row.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Insertable, Identifiable)]
#[diesel(table_name = groups)]
pub(crate) struct GroupRow {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) display_name: String,
    pub(crate) proxy_keys: String,
    pub(crate) description: String,
    pub(crate) group_type: String,
    pub(crate) upstreams: String,
    pub(crate) validation_endpoint: String,
    pub(crate) channel_type: String,
    pub(crate) sort: i32,
    pub(crate) test_model: String,
    pub(crate) param_overrides: String,
    pub(crate) config: String,
    pub(crate) header_rules: String,
    pub(crate) model_redirect_rules: String,
    pub(crate) model_redirect_strict: bool,
    pub(crate) last_validated_at: Option<NaiveDateTime>,
    pub(crate) created_at: NaiveDateTime,
    pub(crate) updated_at: NaiveDateTime,
}

/// A new `groups` row. Every column is written (MySQL has no defaults for text columns).
#[derive(Clone, Debug, Insertable)]
#[diesel(table_name = groups)]
pub(crate) struct NewGroup<'a> {
    pub(crate) name: &'a str,
    pub(crate) display_name: &'a str,
    pub(crate) proxy_keys: &'a str,
    pub(crate) description: &'a str,
    pub(crate) group_type: &'a str,
    pub(crate) upstreams: &'a str,
    pub(crate) validation_endpoint: &'a str,
    pub(crate) channel_type: &'a str,
    pub(crate) sort: i32,
    pub(crate) test_model: &'a str,
    pub(crate) param_overrides: &'a str,
    pub(crate) config: &'a str,
    pub(crate) header_rules: &'a str,
    pub(crate) model_redirect_rules: &'a str,
    pub(crate) model_redirect_strict: bool,
    pub(crate) created_at: NaiveDateTime,
    pub(crate) updated_at: NaiveDateTime,
}

/// A `policies` row: a named set of rules (`config` is `{"rules": [...]}`).
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = policies)]
pub(crate) struct PolicyRow {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) policy_type: String,
    pub(crate) config: String,
    pub(crate) priority: i32,
    pub(crate) is_active: bool,
    pub(crate) created_at: NaiveDateTime,
    pub(crate) updated_at: NaiveDateTime,
}

/// A new or replaced `policies` row.
#[derive(Clone, Debug, Insertable, AsChangeset)]
#[diesel(table_name = policies)]
pub(crate) struct NewPolicy<'a> {
    pub(crate) name: &'a str,
    pub(crate) description: &'a str,
    pub(crate) policy_type: &'a str,
    pub(crate) config: &'a str,
    pub(crate) priority: i32,
    pub(crate) is_active: bool,
    pub(crate) updated_at: NaiveDateTime,
}

/// An `access_keys` row. The key itself is never stored: `key_hash` is its SHA-256 (hex) and
/// `key_hint` its first and last characters.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = access_keys)]
pub(crate) struct AccessKeyRow {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) key_hash: String,
    pub(crate) key_hint: String,
    /// JSON array of group ids; `[]` = every group.
    pub(crate) allowed_groups: String,
    /// JSON array of model patterns; `[]` = every model.
    pub(crate) allowed_models: String,
    pub(crate) rpm: i64,
    pub(crate) tpm: i64,
    pub(crate) daily_token_quota: i64,
    pub(crate) monthly_token_quota: i64,
    pub(crate) expires_at: Option<NaiveDateTime>,
    pub(crate) enabled: bool,
    pub(crate) notes: String,
    pub(crate) created_at: NaiveDateTime,
    pub(crate) updated_at: NaiveDateTime,
}

/// The columns of an `access_keys` row an administrator sets (everything but the key).
#[derive(Clone, Debug, Insertable, AsChangeset)]
#[diesel(table_name = access_keys, treat_none_as_null = true)]
pub(crate) struct AccessKeyFields<'a> {
    pub(crate) name: &'a str,
    pub(crate) allowed_groups: &'a str,
    pub(crate) allowed_models: &'a str,
    pub(crate) rpm: i64,
    pub(crate) tpm: i64,
    pub(crate) daily_token_quota: i64,
    pub(crate) monthly_token_quota: i64,
    pub(crate) expires_at: Option<NaiveDateTime>,
    pub(crate) enabled: bool,
    pub(crate) notes: &'a str,
    pub(crate) updated_at: NaiveDateTime,
}

/// A `group_policies` row: a policy attached to a group.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = group_policies)]
pub(crate) struct GroupPolicyRow {
    pub(crate) group_id: i64,
    pub(crate) policy_id: i64,
    pub(crate) priority: i32,
    pub(crate) is_active: bool,
    pub(crate) created_at: NaiveDateTime,
}

/// An `api_keys` row. `key_value` is as stored (encrypted when encryption is on).
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Insertable, Identifiable)]
#[diesel(table_name = api_keys)]
pub(crate) struct ApiKeyRow {
    pub(crate) id: i64,
    pub(crate) key_value: String,
    pub(crate) key_hash: String,
    pub(crate) group_id: i64,
    pub(crate) status: String,
    pub(crate) notes: String,
    pub(crate) request_count: i64,
    pub(crate) failure_count: i64,
    pub(crate) last_used_at: Option<NaiveDateTime>,
    pub(crate) created_at: NaiveDateTime,
    pub(crate) updated_at: NaiveDateTime,
}

/// A key's lifecycle columns (ours, docs/KEYS.md), kept apart from [`ApiKeyRow`], which is
/// gpt-load's row and is copied to and from gpt-load's databases as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub(crate) struct KeyLifecycleRow {
    pub(crate) state: String,
    pub(crate) cooling_until: Option<NaiveDateTime>,
    pub(crate) backoff_level: i32,
    pub(crate) last_error_message: String,
    pub(crate) last_failure_at: Option<NaiveDateTime>,
    pub(crate) last_success_at: Option<NaiveDateTime>,
    pub(crate) last_validated_at: Option<NaiveDateTime>,
    /// The key's own limits as JSON (`registry::KeyLimitOverride`); `None`: the group's.
    pub(crate) key_limits: Option<String>,
}

/// A new `api_keys` row.
#[derive(Clone, Debug, Insertable)]
#[diesel(table_name = api_keys)]
pub(crate) struct NewApiKey<'a> {
    pub(crate) key_value: &'a str,
    pub(crate) key_hash: &'a str,
    pub(crate) group_id: i64,
    pub(crate) status: &'a str,
    pub(crate) notes: &'a str,
    pub(crate) request_count: i64,
    pub(crate) failure_count: i64,
    pub(crate) created_at: NaiveDateTime,
    pub(crate) updated_at: NaiveDateTime,
    /// Our lifecycle state (docs/KEYS.md): `active`, or `pending` until validated.
    pub(crate) state: &'a str,
}

/// A key's status as stored in `api_keys.status` (gpt-load's values plus `disabled`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum KeyStatus {
    Active,
    Invalid,
    Disabled,
}

impl KeyStatus {
    /// The stored text.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Invalid => "invalid",
            Self::Disabled => "disabled",
        }
    }

    /// A submitted status; `None` for anything else.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "invalid" => Some(Self::Invalid),
            "disabled" => Some(Self::Disabled),
            _ => None,
        }
    }

    /// How a stored status reads. Unknown values (from a newer or foreign database) are treated
    /// as active so keys are not silently lost; they are corrected on the next write.
    pub(crate) fn of_stored(text: &str) -> Self {
        Self::parse(text).unwrap_or(Self::Active)
    }
}

/// A new key in its stored form: encrypted value and lookup hash, computed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SealedKey {
    pub(crate) value: String,
    pub(crate) hash: String,
}

impl SealedKey {
    /// Seals a plain key with `cipher`.
    pub(crate) fn seal(cipher: &KeyCipher, plain: &str) -> Self {
        Self {
            value: cipher.encrypt(plain),
            hash: cipher.hash(plain),
        }
    }

    /// Its row in `group_id`: active, no notes, fresh counters.
    pub(crate) fn row(&self, group_id: i64, at: NaiveDateTime) -> NewApiKey<'_> {
        self.row_with_status(group_id, KeyStatus::Active, at)
    }

    /// Its row in `group_id` with `status`.
    pub(crate) fn row_with_status(
        &self,
        group_id: i64,
        status: KeyStatus,
        at: NaiveDateTime,
    ) -> NewApiKey<'_> {
        NewApiKey {
            key_value: &self.value,
            key_hash: &self.hash,
            group_id,
            status: status.as_str(),
            notes: "",
            request_count: 0,
            failure_count: 0,
            created_at: at,
            updated_at: at,
            state: "active",
        }
    }
}

/// The current time as stored: UTC, microsecond precision (the finest all three backends keep).
pub(crate) fn now() -> NaiveDateTime {
    let now = chrono::Utc::now().naive_utc();
    chrono::SubsecRound::trunc_subsecs(now, 6)
}

/// Bytes kept of a `TEXT` column's value: below MySQL's 65,535-byte `TEXT`, so a value fits on
/// every backend.
pub(crate) const TEXT_LIMIT: usize = 65_000;

/// At most `limit` bytes of `text`, cut on a character boundary, without NUL characters
/// (PostgreSQL refuses them in text). Every `VARCHAR(n)` of ours counts characters, so `n`
/// bytes always fit.
pub(crate) fn clip_text(text: impl Into<String>, limit: usize) -> String {
    let mut text = text.into();
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    if text.contains('\0') {
        text.retain(|c| c != '\0');
    }
    text
}
