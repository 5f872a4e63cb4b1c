//! Integration info: which groups a proxy key can use, and the path to call them by
//! (`GET /api/integration/info?key=…`, and the single-group form under `/proxy/{group}/…`).
//! Public, as in gpt-load; the key is checked against each group in constant time.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::prelude::*;
use crate::{models::GroupRow, repo::groups};

/// The proxy key to look up.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct KeyQuery {
    /// A proxy key (required).
    key: Option<String>,
}

/// A group a proxy key can use.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IntegrationGroup {
    name: String,
    display_name: String,
    /// The channel type, or `custom` for an OpenAI-format group validated on another endpoint.
    channel_type: String,
    /// The path to call: `/proxy/{name}` (plus the endpoint for `custom`).
    path: String,
}

/// `custom` for OpenAI-format groups validated on another endpoint, as gpt-load reports them.
fn describe(row: &GroupRow, single: bool) -> IntegrationGroup {
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
    IntegrationGroup {
        name: row.name.clone(),
        display_name: row.display_name.clone(),
        channel_type: channel_type.to_owned(),
        path,
    }
}

fn key_of(query: KeyQuery) -> AdminResult<String> {
    query
        .key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| AdminError::validation("key", "Proxy key is required"))
}

/// The groups a proxy key can use and how to call them (public: the key is the credential).
#[utoipa::path(get, path = "/integration/info", tag = "integration", params(KeyQuery), security(()),
    responses((status = 200, body = Envelope<Vec<IntegrationGroup>>)))]
pub(crate) async fn integration_info(
    Admin { state, lang }: Admin,
    AdminQuery(query): AdminQuery<KeyQuery>,
) -> Reply<Vec<IntegrationGroup>> {
    let key = key_of(query)?;
    let rows = groups::list(state.registry.db()).await?;
    let usable: Vec<IntegrationGroup> = rows
        .iter()
        .filter(|row| state.registry.catalog().proxy_keys.permits(&row.name, &key))
        .map(|row| describe(row, false))
        .collect();
    if usable.is_empty() {
        return Err(AdminError::validation("key", "Invalid or unauthorized proxy key"));
    }
    Ok(ok(text(lang, "Success", "操作成功"), usable))
}

/// One group's integration info, for holders of its proxy key; `path` is relative to the
/// group's base URL.
#[utoipa::path(get, path = "/proxy/{group}/api/integration/info", tag = "integration",
    params(("group" = String, Path), KeyQuery), security(()),
    responses((status = 200, body = Envelope<Vec<IntegrationGroup>>)))]
pub(crate) async fn group_integration_info(
    Admin { state, lang }: Admin,
    AdminPath(group): AdminPath<String>,
    AdminQuery(query): AdminQuery<KeyQuery>,
) -> Reply<Vec<IntegrationGroup>> {
    let key = key_of(query)?;
    let row = groups::find_by_name(state.registry.db(), &group)
        .await?
        .ok_or(AdminError::NotFound("group"))?;
    if !state.registry.catalog().proxy_keys.permits(&row.name, &key) {
        return Err(AdminError::validation("key", "Invalid or unauthorized proxy key"));
    }
    Ok(ok(text(lang, "Success", "操作成功"), vec![describe(&row, true)]))
}
