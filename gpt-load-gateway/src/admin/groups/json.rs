//! Response bodies of the group routes (gpt-load's field names); the request body is the
//! registry's [`GroupInput`](crate::registry::GroupInput).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::{
    crypto::{KeyCipher, proxy_keys},
    models::GroupRow,
    registry::{HeaderRuleJson, UpstreamSpec},
};

/// gpt-load's GroupResponse.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct GroupResponse {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) endpoint: String,
    pub(crate) display_name: String,
    pub(crate) description: String,
    pub(crate) group_type: String,
    #[schema(value_type = Vec<UpstreamSpec>)]
    pub(crate) upstreams: Value,
    pub(crate) channel_type: String,
    pub(crate) sort: i32,
    pub(crate) test_model: String,
    pub(crate) validation_endpoint: String,
    #[schema(value_type = Object)]
    pub(crate) param_overrides: Value,
    #[schema(value_type = Object)]
    pub(crate) model_redirect_rules: Value,
    pub(crate) model_redirect_strict: bool,
    #[schema(value_type = Object)]
    pub(crate) config: Value,
    #[schema(value_type = Vec<HeaderRuleJson>)]
    pub(crate) header_rules: Value,
    pub(crate) proxy_keys: String,
    pub(crate) last_validated_at: Option<DateTime<Utc>>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

fn parsed(text: &str, empty: Value) -> Value {
    serde_json::from_str(text).unwrap_or(empty)
}

impl GroupResponse {
    /// The response for `row`, its proxy keys decrypted with `cipher`.
    pub(crate) fn new(row: GroupRow, app_url: &str, cipher: &KeyCipher) -> Self {
        let proxy_keys = proxy_keys::open_or_none(cipher, &row.proxy_keys, &row.name);
        Self {
            endpoint: format!("{}/proxy/{}", app_url.trim_end_matches('/'), row.name),
            id: row.id,
            upstreams: parsed(&row.upstreams, Value::Array(Vec::new())),
            param_overrides: parsed(&row.param_overrides, Value::Object(Map::new())),
            model_redirect_rules: parsed(&row.model_redirect_rules, Value::Object(Map::new())),
            config: parsed(&row.config, Value::Object(Map::new())),
            header_rules: parsed(&row.header_rules, Value::Array(Vec::new())),
            name: row.name,
            display_name: row.display_name,
            description: row.description,
            group_type: row.group_type,
            channel_type: row.channel_type,
            sort: row.sort,
            test_model: row.test_model,
            validation_endpoint: row.validation_endpoint,
            model_redirect_strict: row.model_redirect_strict,
            proxy_keys,
            last_validated_at: row.last_validated_at.map(|t| t.and_utc()),
            created_at: row.created_at.and_utc(),
            updated_at: row.updated_at.and_utc(),
        }
    }
}

/// A group's id and names (`GET /api/groups/list`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct GroupBrief {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) display_name: String,
}
