//! `/api/groups` and `/api/channel-types`.

pub(crate) mod json;
mod manage;
mod sub_groups;
mod validate;

pub(crate) use self::manage::{copy_group, group_stats, reorder_groups};
pub(crate) use self::sub_groups::{
    add_sub_groups, list_parent_aggregates, list_sub_groups, remove_sub_group, update_sub_group_weight,
};

use axum::{
    extract::{Path, State},
    response::Response,
};
use gpt_load_tower::channel::ChannelKind;
use serde_json::json;

use self::json::{GroupInput, GroupResponse};
use super::{
    error::{AdminError, AdminResult, ok},
    json::AdminJson,
    lang::{RequestLang, text},
    state::AdminState,
};
use crate::{
    models::{NewGroup, now},
    repo::groups,
};

fn success(lang: crate::settings::Lang) -> &'static str {
    text(lang, "Success", "操作成功")
}

fn to_value<T: serde::Serialize>(value: &T) -> AdminResult<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| AdminError::Internal(e.into()))
}

/// `GET /api/channel-types`
pub(crate) async fn list_channel_types(RequestLang(lang): RequestLang) -> AdminResult<Response> {
    let names: Vec<&str> = ChannelKind::ALL.iter().map(|c| c.as_str()).collect();
    Ok(ok(success(lang), Some(json!(names))))
}

/// `GET /api/groups`: every group, `sort` ascending then newest first.
pub(crate) async fn list_groups(
    State(state): State<AdminState>,
    RequestLang(lang): RequestLang,
) -> AdminResult<Response> {
    let app_url = state.settings.current().app_url.clone();
    let mut rows = groups::list(&state.db).await?;
    rows.sort_by(|a, b| a.sort.cmp(&b.sort).then(b.id.cmp(&a.id)));
    let list: Vec<GroupResponse> = rows
        .into_iter()
        .map(|r| GroupResponse::new(r, &app_url))
        .collect();
    Ok(ok(success(lang), Some(to_value(&list)?)))
}

/// `GET /api/groups/list`: id, name and display name only (for filters).
pub(crate) async fn list_groups_light(
    State(state): State<AdminState>,
    RequestLang(lang): RequestLang,
) -> AdminResult<Response> {
    let rows = groups::list(&state.db).await?;
    let list: Vec<_> = rows
        .into_iter()
        .map(|r| json!({"id": r.id, "name": r.name, "display_name": r.display_name}))
        .collect();
    Ok(ok(success(lang), Some(json!(list))))
}

/// `GET /api/groups/config-options`: the overridable settings with their current system values.
pub(crate) async fn list_config_options(
    State(state): State<AdminState>,
    RequestLang(lang): RequestLang,
) -> AdminResult<Response> {
    let options = state.settings.current().config_options(lang);
    Ok(ok(success(lang), Some(to_value(&options)?)))
}

fn new_group<'a>(g: &'a validate::GroupFields, created_at: chrono::NaiveDateTime) -> NewGroup<'a> {
    NewGroup {
        name: &g.name,
        display_name: &g.display_name,
        proxy_keys: &g.proxy_keys,
        description: &g.description,
        group_type: &g.group_type,
        upstreams: &g.upstreams,
        validation_endpoint: &g.validation_endpoint,
        channel_type: &g.channel_type,
        sort: g.sort,
        test_model: &g.test_model,
        param_overrides: &g.param_overrides,
        config: &g.config,
        header_rules: &g.header_rules,
        model_redirect_rules: &g.model_redirect_rules,
        model_redirect_strict: g.model_redirect_strict,
        created_at,
        updated_at: now(),
    }
}

/// `POST /api/groups`
pub(crate) async fn create_group(
    State(state): State<AdminState>,
    RequestLang(lang): RequestLang,
    AdminJson(input): AdminJson<GroupInput>,
) -> AdminResult<Response> {
    let fields = validate::create(input)?;
    let row = groups::insert(&state.db, &new_group(&fields, now()))
        .await
        .map_err(|err| match AdminError::from(err) {
            AdminError::Duplicate(_) => {
                AdminError::Duplicate(format!("group '{}' already exists", fields.name))
            }
            other => other,
        })?;
    state.reload_groups().await?;
    let app_url = state.settings.current().app_url.clone();
    Ok(ok(
        success(lang),
        Some(to_value(&GroupResponse::new(row, &app_url))?),
    ))
}

/// `PUT /api/groups/{id}`: a partial update.
pub(crate) async fn update_group(
    State(state): State<AdminState>,
    RequestLang(lang): RequestLang,
    Path(id): Path<i64>,
    AdminJson(input): AdminJson<GroupInput>,
) -> AdminResult<Response> {
    let row = groups::find(&state.db, id)
        .await?
        .ok_or(AdminError::NotFound("group"))?;
    let fields = validate::update(&row, input)?;
    if fields.channel_type != row.channel_type || fields.validation_endpoint != row.validation_endpoint {
        let links = groups::sub_group_links(&state.db).await?;
        let parents = links.iter().filter(|l| l.sub_group_id == id).count();
        if parents > 0 {
            return Err(AdminError::validation(
                "channel_type",
                format!(
                    "the group belongs to {parents} aggregate group(s): its channel type and validation endpoint cannot change"
                ),
            ));
        }
    }
    let updated = groups::update(&state.db, id, &new_group(&fields, row.created_at))
        .await
        .map_err(|err| match AdminError::from(err) {
            AdminError::Duplicate(_) => {
                AdminError::Duplicate(format!("group '{}' already exists", fields.name))
            }
            other => other,
        })?
        .ok_or(AdminError::NotFound("group"))?;
    state.reload_groups().await?;
    let app_url = state.settings.current().app_url.clone();
    Ok(ok(
        success(lang),
        Some(to_value(&GroupResponse::new(updated, &app_url))?),
    ))
}

/// `DELETE /api/groups/{id}`: the group, its keys and its sub-group links (logs are kept).
pub(crate) async fn delete_group(
    State(state): State<AdminState>,
    RequestLang(lang): RequestLang,
    Path(id): Path<i64>,
) -> AdminResult<Response> {
    if !groups::delete(&state.db, id).await? {
        return Err(AdminError::NotFound("group"));
    }
    state.reload_groups().await?;
    Ok(ok(
        text(lang, "Group and its keys deleted", "分组及其密钥已删除"),
        None,
    ))
}
