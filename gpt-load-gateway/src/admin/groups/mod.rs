//! `/api/groups` and `/api/channel-types`.

pub(crate) mod json;
pub(crate) mod manage;
pub(crate) mod sub_groups;
mod validate;

use axum::extract::State;
use gpt_load_tower::channel::ChannelKind;

use self::json::{GroupBrief, GroupInput, GroupResponse};
use super::{
    envelope::{Ack, AckReply, Envelope, Reply, ack, ok},
    error::AdminError,
    extract::AdminPath,
    json::AdminJson,
    lang::{RequestLang, text},
    state::AdminState,
};
use crate::{
    crypto::proxy_keys,
    models::{NewGroup, now},
    repo::groups,
    settings::ConfigOption,
};

fn success(lang: crate::settings::Lang) -> &'static str {
    text(lang, "Success", "操作成功")
}

/// The channel types a group can have.
#[utoipa::path(get, path = "/channel-types", tag = "groups",
    responses((status = 200, body = Envelope<Vec<String>>)))]
pub(crate) async fn list_channel_types(RequestLang(lang): RequestLang) -> Reply<Vec<String>> {
    let names = ChannelKind::ALL.iter().map(|c| c.as_str().to_owned()).collect();
    Ok(ok(success(lang), names))
}

/// Every group, `sort` ascending then newest first.
#[utoipa::path(get, path = "/groups", tag = "groups",
    responses((status = 200, body = Envelope<Vec<GroupResponse>>)))]
pub(crate) async fn list_groups(
    State(state): State<AdminState>,
    RequestLang(lang): RequestLang,
) -> Reply<Vec<GroupResponse>> {
    let app_url = state.settings.current().app_url.clone();
    let mut rows = groups::list(&state.db).await?;
    rows.sort_by(|a, b| a.sort.cmp(&b.sort).then(b.id.cmp(&a.id)));
    let list: Vec<GroupResponse> = rows
        .into_iter()
        .map(|r| GroupResponse::new(r, &app_url, &state.cipher))
        .collect();
    Ok(ok(success(lang), list))
}

/// Id, name and display name of every group (for filters).
#[utoipa::path(get, path = "/groups/list", tag = "groups",
    responses((status = 200, body = Envelope<Vec<GroupBrief>>)))]
pub(crate) async fn list_groups_light(
    State(state): State<AdminState>,
    RequestLang(lang): RequestLang,
) -> Reply<Vec<GroupBrief>> {
    let rows = groups::list(&state.db).await?;
    let list = rows
        .into_iter()
        .map(|r| GroupBrief {
            id: r.id,
            name: r.name,
            display_name: r.display_name,
        })
        .collect();
    Ok(ok(success(lang), list))
}

/// The settings a group can override, with their current system values.
#[utoipa::path(get, path = "/groups/config-options", tag = "groups",
    responses((status = 200, body = Envelope<Vec<ConfigOption>>)))]
pub(crate) async fn list_config_options(
    State(state): State<AdminState>,
    RequestLang(lang): RequestLang,
) -> Reply<Vec<ConfigOption>> {
    let options = state.settings.current().config_options(lang);
    Ok(ok(success(lang), options))
}

/// The row to store for `g`; `sealed_proxy_keys` is `g.proxy_keys` in its stored form.
fn new_group<'a>(
    g: &'a validate::GroupFields,
    sealed_proxy_keys: &'a str,
    created_at: chrono::NaiveDateTime,
) -> NewGroup<'a> {
    NewGroup {
        name: &g.name,
        display_name: &g.display_name,
        proxy_keys: sealed_proxy_keys,
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

/// Creates a group.
#[utoipa::path(post, path = "/groups", tag = "groups", request_body = GroupInput,
    responses((status = 200, body = Envelope<GroupResponse>)))]
pub(crate) async fn create_group(
    State(state): State<AdminState>,
    RequestLang(lang): RequestLang,
    AdminJson(input): AdminJson<GroupInput>,
) -> Reply<GroupResponse> {
    let fields = validate::create(input)?;
    let sealed = proxy_keys::seal(&state.cipher, &fields.proxy_keys);
    let row = groups::insert(&state.db, &new_group(&fields, &sealed, now()))
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
        GroupResponse::new(row, &app_url, &state.cipher),
    ))
}

/// Updates a group; absent fields keep their value.
#[utoipa::path(put, path = "/groups/{id}", tag = "groups", params(("id" = i64, Path)),
    request_body = GroupInput, responses((status = 200, body = Envelope<GroupResponse>)))]
pub(crate) async fn update_group(
    State(state): State<AdminState>,
    RequestLang(lang): RequestLang,
    AdminPath(id): AdminPath<i64>,
    AdminJson(input): AdminJson<GroupInput>,
) -> Reply<GroupResponse> {
    let row = groups::find(&state.db, id)
        .await?
        .ok_or(AdminError::NotFound("group"))?;
    let current = proxy_keys::open_or_none(&state.cipher, &row.proxy_keys, &row.name);
    let fields = validate::update(&row, current, input)?;
    if fields.channel_type != row.channel_type || fields.validation_endpoint != row.validation_endpoint {
        let links = groups::sub_group_links(&state.db).await?;
        let parents = links.iter().filter(|l| l.sub_group_id == id).count();
        if parents > 0 {
            let field = if fields.channel_type == row.channel_type {
                "validation_endpoint"
            } else {
                "channel_type"
            };
            return Err(AdminError::validation(
                field,
                format!(
                    "the group belongs to {parents} aggregate group(s): its channel type and validation endpoint cannot change"
                ),
            ));
        }
    }
    let sealed = proxy_keys::seal(&state.cipher, &fields.proxy_keys);
    let updated = groups::update(&state.db, id, &new_group(&fields, &sealed, row.created_at))
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
        GroupResponse::new(updated, &app_url, &state.cipher),
    ))
}

/// Deletes a group, its keys and its sub-group links (logs are kept).
#[utoipa::path(delete, path = "/groups/{id}", tag = "groups", params(("id" = i64, Path)),
    responses((status = 200, body = Ack)))]
pub(crate) async fn delete_group(
    State(state): State<AdminState>,
    RequestLang(lang): RequestLang,
    AdminPath(id): AdminPath<i64>,
) -> AckReply {
    if !groups::delete(&state.db, id).await? {
        return Err(AdminError::NotFound("group"));
    }
    state.reload_groups().await?;
    Ok(ack(text(
        lang,
        "Group and its keys deleted",
        "分组及其密钥已删除",
    )))
}
