//! `/api/groups` and `/api/channel-types`.

pub(crate) mod json;
pub(crate) mod key_health;
pub(crate) mod manage;
pub(crate) mod sub_groups;

use gpt_load_tower::channel::ChannelKind;

use self::json::{GroupBrief, GroupResponse};
use super::{lang::RequestLang, prelude::*};
use crate::{
    db::DbError,
    models::now,
    registry::{GroupDefinition, GroupInput},
    repo::groups,
    settings::ConfigOption,
};

/// A unique violation on the group name as a `409` naming it.
fn taken(err: DbError, name: &str) -> AdminError {
    match AdminError::from(err) {
        AdminError::Duplicate(_) => AdminError::Duplicate(format!("group '{name}' already exists")),
        other => other,
    }
}

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
pub(crate) async fn list_groups(Admin { state, lang }: Admin) -> Reply<Vec<GroupResponse>> {
    let app_url = state.registry.settings().current().app_url.clone();
    let mut rows = groups::list(state.registry.db()).await?;
    rows.sort_by(|a, b| a.sort.cmp(&b.sort).then(b.id.cmp(&a.id)));
    let list: Vec<GroupResponse> = rows
        .into_iter()
        .map(|r| GroupResponse::new(r, &app_url, state.registry.cipher()))
        .collect();
    Ok(ok(success(lang), list))
}

/// Id, name and display name of every group (for filters).
#[utoipa::path(get, path = "/groups/list", tag = "groups",
    responses((status = 200, body = Envelope<Vec<GroupBrief>>)))]
pub(crate) async fn list_groups_light(Admin { state, lang }: Admin) -> Reply<Vec<GroupBrief>> {
    let rows = groups::list(state.registry.db()).await?;
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
pub(crate) async fn list_config_options(Admin { state, lang }: Admin) -> Reply<Vec<ConfigOption>> {
    let options = state.registry.settings().current().config_options(lang);
    Ok(ok(success(lang), options))
}

/// Creates a group.
#[utoipa::path(post, path = "/groups", tag = "groups", request_body = GroupInput,
    responses((status = 200, body = Envelope<GroupResponse>)))]
pub(crate) async fn create_group(
    Admin { state, lang }: Admin,
    AdminJson(input): AdminJson<GroupInput>,
) -> Reply<GroupResponse> {
    let definition = GroupDefinition::validate(input).map_err(AdminError::fields)?;
    let text = definition.stored_text(state.registry.cipher());
    let at = now();
    let row = state
        .registry
        .create_group(&definition.row(&text, at, at))
        .await
        .map_err(|err| taken(err, &definition.name))?;
    let app_url = state.registry.settings().current().app_url.clone();
    Ok(ok(
        success(lang),
        GroupResponse::new(row, &app_url, state.registry.cipher()),
    ))
}

/// Updates a group; absent fields keep their value.
#[utoipa::path(put, path = "/groups/{id}", tag = "groups", params(("id" = i64, Path)),
    request_body = GroupInput, responses((status = 200, body = Envelope<GroupResponse>)))]
pub(crate) async fn update_group(
    Admin { state, lang }: Admin,
    AdminPath(id): AdminPath<i64>,
    AdminJson(input): AdminJson<GroupInput>,
) -> Reply<GroupResponse> {
    let row = groups::find(state.registry.db(), id)
        .await?
        .ok_or(AdminError::NotFound("group"))?;
    let stored = GroupInput::of_row(&row, state.registry.cipher());
    let definition = GroupDefinition::validate(input.over(stored)).map_err(AdminError::fields)?;
    let channel_changes = definition.channel.as_str() != row.channel_type;
    if channel_changes || definition.validation_endpoint != row.validation_endpoint {
        let links = groups::sub_group_links(state.registry.db()).await?;
        let parents = links.iter().filter(|l| l.sub_group_id == id).count();
        if parents > 0 {
            let field = if channel_changes {
                "channel_type"
            } else {
                "validation_endpoint"
            };
            return Err(AdminError::validation(
                field,
                format!(
                    "the group belongs to {parents} aggregate group(s): its channel type and validation endpoint cannot change"
                ),
            ));
        }
    }
    let text = definition.stored_text(state.registry.cipher());
    let updated = state
        .registry
        .update_group(id, &definition.row(&text, row.created_at, now()))
        .await
        .map_err(|err| taken(err, &definition.name))?
        .ok_or(AdminError::NotFound("group"))?;
    let app_url = state.registry.settings().current().app_url.clone();
    Ok(ok(
        success(lang),
        GroupResponse::new(updated, &app_url, state.registry.cipher()),
    ))
}

/// Deletes a group, its keys and its sub-group links (logs are kept).
#[utoipa::path(delete, path = "/groups/{id}", tag = "groups", params(("id" = i64, Path)),
    responses((status = 200, body = Ack)))]
pub(crate) async fn delete_group(Admin { state, lang }: Admin, AdminPath(id): AdminPath<i64>) -> AckReply {
    if !state.registry.delete_group(id).await? {
        return Err(AdminError::NotFound("group"));
    }
    Ok(ack(text(
        lang,
        "Group and its keys deleted",
        "分组及其密钥已删除",
    )))
}
