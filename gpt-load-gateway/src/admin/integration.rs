//! Integration info: which groups a proxy key can use, and the path to call them by
//! (`GET /api/integration/info?key=…`, and the single-group form under `/proxy/{group}/…`).
//! Public, as in gpt-load; the key is checked against each group in constant time.

use axum::{
    extract::{Path, Query, State},
    response::Response,
};
use gpt_load_tower::auth::ValidateProxyKey;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    error::{AdminError, AdminResult, ok},
    lang::{RequestLang, text},
    state::AdminState,
};
use crate::{models::GroupRow, repo::groups};

#[derive(Deserialize)]
pub(crate) struct KeyQuery {
    key: Option<String>,
}

/// `custom` for OpenAI-format groups validated on another endpoint, as gpt-load reports them.
fn describe(row: &GroupRow, single: bool) -> Value {
    let default_endpoint = match row.channel_type.as_str() {
        "openai" => Some("/v1/chat/completions"),
        "openai-response" => Some("/v1/responses"),
        _ => None,
    };
    let custom =
        default_endpoint.is_some_and(|d| !row.validation_endpoint.is_empty() && row.validation_endpoint != d);
    let channel_type = if custom {
        "custom"
    } else {
        row.channel_type.as_str()
    };
    let base = if single {
        String::new()
    } else {
        format!("/proxy/{}", row.name)
    };
    let path = if custom {
        format!("{base}{}", row.validation_endpoint)
    } else {
        base
    };
    json!({"name": row.name, "display_name": row.display_name, "channel_type": channel_type, "path": path})
}

fn key_of(query: KeyQuery) -> AdminResult<String> {
    query
        .key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| AdminError::validation("key", "Proxy key is required"))
}

/// `GET /api/integration/info?key=`
pub(crate) async fn integration_info(
    State(state): State<AdminState>,
    RequestLang(lang): RequestLang,
    Query(query): Query<KeyQuery>,
) -> AdminResult<Response> {
    let key = key_of(query)?;
    let rows = groups::list(&state.db).await?;
    let usable: Vec<Value> = rows
        .iter()
        .filter(|row| state.catalog.proxy_keys.validate(&row.name, &key).is_ok())
        .map(|row| describe(row, false))
        .collect();
    if usable.is_empty() {
        return Err(AdminError::validation("key", "Invalid or unauthorized proxy key"));
    }
    Ok(ok(text(lang, "Success", "操作成功"), Some(json!(usable))))
}

/// `GET /proxy/{group}/api/integration/info?key=`
pub(crate) async fn group_integration_info(
    State(state): State<AdminState>,
    RequestLang(lang): RequestLang,
    Path(group): Path<String>,
    Query(query): Query<KeyQuery>,
) -> AdminResult<Response> {
    let key = key_of(query)?;
    let row = groups::find_by_name(&state.db, &group)
        .await?
        .ok_or(AdminError::NotFound("group"))?;
    if state.catalog.proxy_keys.validate(&row.name, &key).is_err() {
        return Err(AdminError::validation("key", "Invalid or unauthorized proxy key"));
    }
    Ok(ok(
        text(lang, "Success", "操作成功"),
        Some(json!([describe(&row, true)])),
    ))
}
