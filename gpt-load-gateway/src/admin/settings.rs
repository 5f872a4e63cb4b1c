//! `GET /api/settings` (metadata and values by category) and `PUT /api/settings` (partial
//! update, validated, applied to the next request without a restart).

use serde_json::{Map, Value};

use super::prelude::*;
use crate::settings::{SettingsCategory, SettingsError};

/// Every setting with its metadata and current value, by category.
#[utoipa::path(get, path = "/settings", tag = "settings",
    responses((status = 200, body = Envelope<Vec<SettingsCategory>>)))]
pub(crate) async fn list_settings(Admin { state, lang }: Admin) -> Reply<Vec<SettingsCategory>> {
    let categories = state.registry.settings().current().describe(lang);
    Ok(ok(text(lang, "Success", "操作成功"), categories))
}

/// Changes some settings (`{"key": value, …}`); every invalid field is reported and nothing is
/// written then.
#[utoipa::path(put, path = "/settings", tag = "settings",
    request_body(content = Object, description = "setting keys and their new values"),
    responses((status = 200, body = Ack)))]
pub(crate) async fn update_settings(
    Admin { state, lang }: Admin,
    AdminJson(update): AdminJson<Map<String, Value>>,
) -> AckReply {
    state
        .registry
        .update_settings(&update)
        .await
        .map_err(|err| match err {
            SettingsError::Invalid(errors) => AdminError::fields(errors),
            SettingsError::Db(err) => AdminError::from(err),
        })?;
    Ok(ack(text(
        lang,
        "Settings updated successfully. Configuration will be reloaded in the background.",
        "设置已更新，配置将在后台重新加载。",
    )))
}
