//! Request and response bodies of the key routes (gpt-load's field names).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{crypto::KeyCipher, models::ApiKeyRow};

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

/// gpt-load's APIKey model with the key decrypted.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct KeyResponse {
    pub(crate) id: i64,
    pub(crate) key_value: String,
    pub(crate) key_hash: String,
    pub(crate) group_id: i64,
    pub(crate) status: String,
    pub(crate) notes: String,
    pub(crate) request_count: i64,
    pub(crate) failure_count: i64,
    pub(crate) last_used_at: Option<DateTime<Utc>>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

/// What the list and the export show for a value that cannot be decrypted.
pub(crate) const UNDECRYPTABLE: &str = "failed-to-decrypt";

impl KeyResponse {
    pub(crate) fn new(row: ApiKeyRow, cipher: &KeyCipher) -> Self {
        Self {
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
