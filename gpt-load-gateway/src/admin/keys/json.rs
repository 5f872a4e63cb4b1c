//! Request and response bodies of the key routes (gpt-load's field names).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use gpt_load_tower::keys::KeySlot;

use crate::{crypto::KeyCipher, registry::key_limits::KeyLimitOverride, repo::keys::StoredKey};

/// The query of `GET /api/keys` (pagination comes separately). `group_id` is text so that a
/// malformed value is a validation error rather than a bare rejection.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct KeyListQuery {
    /// Required.
    #[param(value_type = i64)]
    pub(crate) group_id: Option<String>,
    /// `active`, `invalid` or `disabled`.
    pub(crate) status: Option<String>,
    /// Ours: the lifecycle state, `pending`, `active`, `degraded`, `cooling`, `invalid` or `disabled` (as
    /// last written, at most about a second behind the pool).
    pub(crate) state: Option<String>,
    /// An exact key value.
    pub(crate) key_value: Option<String>,
}

/// The query of `GET /api/keys/export`.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ExportQuery {
    /// Required.
    #[param(value_type = i64)]
    pub(crate) group_id: Option<String>,
    /// `all` (default), `active`, `invalid` or `disabled`.
    pub(crate) status: Option<String>,
}

/// `{group_id, keys_text}`: the batch routes.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
pub(crate) struct KeysTextInput {
    pub(crate) group_id: Option<i64>,
    /// A JSON array of strings, or keys separated by whitespace, `,` or `;`.
    pub(crate) keys_text: Option<String>,
}

/// `{group_id}`: the whole-group routes.
#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
pub(crate) struct GroupIdInput {
    pub(crate) group_id: Option<i64>,
}

/// `{notes}`.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
pub(crate) struct NotesInput {
    #[serde(default)]
    pub(crate) notes: String,
}

/// `{status}`.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
pub(crate) struct StatusInput {
    pub(crate) status: Option<String>,
}

/// gpt-load's APIKey model with the key decrypted, and the key's lifecycle (docs/KEYS.md).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct KeyResponse {
    pub(crate) id: i64,
    pub(crate) key_value: String,
    pub(crate) key_hash: String,
    pub(crate) group_id: i64,
    /// gpt-load's status: `active` (also for degraded and cooling keys), `invalid`, `disabled`.
    pub(crate) status: String,
    pub(crate) notes: String,
    pub(crate) request_count: i64,
    pub(crate) failure_count: i64,
    pub(crate) last_used_at: Option<DateTime<Utc>>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    /// `pending`, `active`, `degraded`, `cooling`, `invalid` or `disabled`, as the proxy sees the key now.
    pub(crate) state: String,
    /// Counted failures since the last success (the same count as `failure_count`).
    pub(crate) consecutive_failures: i64,
    /// Rate limits since the last success; the next rest grows with it.
    pub(crate) backoff_level: u32,
    /// When a cooling key may be probed again.
    pub(crate) cooling_until: Option<DateTime<Utc>>,
    /// Models resting on this key (per-model quotas) and until when.
    pub(crate) model_cooling: Vec<ModelCooling>,
    /// The upstream's message (redacted) of the key's last failure.
    pub(crate) last_error_message: Option<String>,
    pub(crate) last_failure_at: Option<DateTime<Utc>>,
    pub(crate) last_success_at: Option<DateTime<Utc>>,
    pub(crate) last_validated_at: Option<DateTime<Utc>>,
    /// The key's own limits, each replacing its group's (`null`: the group's limits).
    pub(crate) limits: Option<KeyLimitOverride>,
}

/// One model resting on a key.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct ModelCooling {
    pub(crate) model: String,
    pub(crate) until: DateTime<Utc>,
}

/// What the list and the export show for a value that cannot be decrypted.
pub(crate) const UNDECRYPTABLE: &str = "failed-to-decrypt";

impl KeyResponse {
    /// The stored key, with its live state from the pool when the pool has it (the stored
    /// lifecycle lags the pool by up to a second).
    pub(crate) fn new((row, lifecycle): StoredKey, cipher: &KeyCipher, live: Option<&KeySlot>) -> Self {
        let now = Utc::now();
        let after = |rest: std::time::Duration| now + chrono::Duration::from_std(rest).unwrap_or_default();
        let stored_time = |t: Option<chrono::NaiveDateTime>| t.map(|t| t.and_utc());
        let (state, consecutive_failures, backoff_level, cooling_until, model_cooling) = match live {
            Some(slot) => (
                slot.state().as_str().to_owned(),
                i64::from(slot.consecutive_failures()),
                slot.backoff_level(),
                slot.cooling_for().map(after),
                slot.model_rests()
                    .into_iter()
                    .map(|(model, rest)| ModelCooling {
                        model: model.to_string(),
                        until: after(rest),
                    })
                    .collect(),
            ),
            None => (
                lifecycle.state.clone(),
                row.failure_count,
                u32::try_from(lifecycle.backoff_level).unwrap_or(0),
                stored_time(lifecycle.cooling_until).filter(|until| *until > now),
                Vec::new(),
            ),
        };
        let last_error_message = match live {
            Some(slot) => slot.last_error().map(|m| m.to_string()),
            None => Some(lifecycle.last_error_message).filter(|m| !m.is_empty()),
        };
        let live_time = |t: Option<std::time::SystemTime>| t.map(DateTime::<Utc>::from);
        Self {
            state,
            consecutive_failures,
            backoff_level,
            cooling_until,
            model_cooling,
            last_error_message,
            last_failure_at: live.map_or(stored_time(lifecycle.last_failure_at), |s| {
                live_time(s.last_failure_at())
            }),
            last_success_at: live.map_or(stored_time(lifecycle.last_success_at), |s| {
                live_time(s.last_success_at())
            }),
            last_validated_at: stored_time(lifecycle.last_validated_at),
            limits: KeyLimitOverride::parse(lifecycle.key_limits.as_deref(), row.id),
            key_value: cipher
                .decrypt(&row.key_value)
                .unwrap_or_else(|_| UNDECRYPTABLE.to_owned()),
            id: row.id,
            key_hash: row.key_hash,
            group_id: row.group_id,
            status: row.status,
            notes: row.notes,
            request_count: row.request_count,
            failure_count: row.failure_count,
            last_used_at: row.last_used_at.map(|t| t.and_utc()),
            created_at: row.created_at.and_utc(),
            updated_at: row.updated_at.and_utc(),
        }
    }
}

/// The result of `add-multiple`.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
pub(crate) struct AddResult {
    pub(crate) added_count: usize,
    pub(crate) ignored_count: usize,
    pub(crate) total_in_group: i64,
}

/// The result of `delete-multiple`.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
pub(crate) struct DeleteResult {
    pub(crate) deleted_count: usize,
    pub(crate) ignored_count: usize,
    pub(crate) total_in_group: i64,
}

/// The result of `restore-multiple`.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
pub(crate) struct RestoreResult {
    pub(crate) restored_count: usize,
    pub(crate) ignored_count: usize,
    pub(crate) total_in_group: i64,
}
