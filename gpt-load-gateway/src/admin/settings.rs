//! `GET /api/settings` (metadata and values by category) and `PUT /api/settings` (partial
//! update, validated, applied to the next request without a restart).

use axum::{extract::State, response::Response};
use serde_json::{Map, Value};

use super::{
    error::{AdminError, AdminResult, ok},
    json::AdminJson,
    lang::{RequestLang, text},
    state::AdminState,
};
use crate::settings::SettingsError;

/// Every setting with its metadata, by category.
pub(crate) async fn list_settings(
    State(state): State<AdminState>,
    RequestLang(lang): RequestLang,
) -> AdminResult<Response> {
    let categories = state.settings.current().describe(lang);
    let data = serde_json::to_value(categories).map_err(|e| AdminError::Internal(e.into()))?;
    Ok(ok(text(lang, "Success", "操作成功"), Some(data)))
}

/// Changes some settings; every invalid field is reported and nothing is written then.
pub(crate) async fn update_settings(
    State(state): State<AdminState>,
    RequestLang(lang): RequestLang,
    AdminJson(update): AdminJson<Map<String, Value>>,
) -> AdminResult<Response> {
    state
        .settings
        .update(&state.db, &update)
        .await
        .map_err(|err| match err {
            SettingsError::Invalid(errors) => AdminError::fields(errors),
            SettingsError::Db(err) => AdminError::from(err),
        })?;
    Ok(ok(
        text(
            lang,
            "Settings updated successfully. Configuration will be reloaded in the background.",
            "设置已更新，配置将在后台重新加载。",
        ),
        None,
    ))
}
