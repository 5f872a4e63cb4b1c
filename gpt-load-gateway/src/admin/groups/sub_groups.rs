//! Aggregate groups' members: list, add, weight, remove, and the aggregates a group belongs to,
//! with gpt-load's rules (members are standard groups of the aggregate's channel type sharing one
//! validation endpoint; weights 0–1000, 0 = off).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::json::GroupResponse;
use crate::admin::prelude::*;
use crate::{models::GroupRow, registry::GroupKind, repo::groups};

const MAX_WEIGHT: i64 = 1000;

async fn aggregate(state: &AdminState, id: i64) -> AdminResult<GroupRow> {
    let row = groups::find(state.registry.db(), id)
        .await?
        .ok_or(AdminError::NotFound("group"))?;
    if GroupKind::of_row(&row) != GroupKind::Aggregate {
        return Err(AdminError::BadRequest(format!(
            "group '{}' is not an aggregate group",
            row.name
        )));
    }
    Ok(row)
}

fn weight_of(weight: i64) -> AdminResult<i32> {
    if (0..=MAX_WEIGHT).contains(&weight) {
        Ok(weight as i32)
    } else {
        Err(AdminError::validation("weight", "must be between 0 and 1000"))
    }
}

/// A member of an aggregate group.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SubGroup {
    group: GroupResponse,
    /// 0–1000; 0 takes no traffic.
    weight: i32,
    total_keys: usize,
    /// Active and cooling keys.
    active_keys: usize,
    invalid_keys: usize,
}

/// An aggregate group that a group belongs to.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ParentAggregate {
    group_id: i64,
    name: String,
    display_name: String,
    weight: i32,
}

/// The members of an aggregate group, with their weights and key counts.
#[utoipa::path(get, path = "/groups/{id}/sub-groups", tag = "groups", params(("id" = i64, Path)),
    responses((status = 200, body = Envelope<Vec<SubGroup>>)))]
pub(crate) async fn list_sub_groups(
    Admin { state, lang }: Admin,
    AdminPath(id): AdminPath<i64>,
) -> Reply<Vec<SubGroup>> {
    aggregate(&state, id).await?;
    let app_url = state.registry.settings().current().app_url.clone();
    let rows = groups::list(state.registry.db()).await?;
    let links = groups::sub_group_links(state.registry.db()).await?;
    let members = links
        .iter()
        .filter(|l| l.group_id == id)
        .filter_map(|l| {
            let row = rows.iter().find(|r| r.id == l.sub_group_id)?.clone();
            let stats = state.registry.pool().stats(&row.name).unwrap_or_default();
            Some(SubGroup {
                group: GroupResponse::new(row, &app_url, state.registry.cipher()),
                weight: l.weight,
                total_keys: stats.total,
                active_keys: stats.active + stats.degraded + stats.cooling,
                invalid_keys: stats.invalid,
            })
        })
        .collect();
    Ok(ok(text(lang, "Success", "操作成功"), members))
}

/// A standard group to add, with its weight.
#[derive(Deserialize, ToSchema)]
pub(crate) struct SubGroupEntry {
    group_id: i64,
    /// 0–1000.
    weight: i64,
}

/// The body of `POST /api/groups/{id}/sub-groups`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct AddSubGroups {
    sub_groups: Vec<SubGroupEntry>,
}

/// Adds standard groups of the aggregate's channel type, all or none.
#[utoipa::path(post, path = "/groups/{id}/sub-groups", tag = "groups", params(("id" = i64, Path)),
    request_body = AddSubGroups, responses((status = 200, body = Ack)))]
pub(crate) async fn add_sub_groups(
    Admin { state, lang }: Admin,
    AdminPath(id): AdminPath<i64>,
    AdminJson(body): AdminJson<AddSubGroups>,
) -> AckReply {
    let parent = aggregate(&state, id).await?;
    if body.sub_groups.is_empty() {
        return Err(AdminError::validation("sub_groups", "must not be empty"));
    }
    let rows = groups::list(state.registry.db()).await?;
    let links = groups::sub_group_links(state.registry.db()).await?;
    let existing: Vec<&GroupRow> = links
        .iter()
        .filter(|l| l.group_id == id)
        .filter_map(|l| rows.iter().find(|r| r.id == l.sub_group_id))
        .collect();
    let mut endpoint: Option<String> = existing.first().map(|r| r.validation_endpoint.clone());
    let mut adding = Vec::new();
    for entry in &body.sub_groups {
        let child = rows
            .iter()
            .find(|r| r.id == entry.group_id)
            .ok_or(AdminError::NotFound("sub-group"))?;
        let weight = weight_of(entry.weight)?;
        if GroupKind::of_row(child) != GroupKind::Standard {
            return Err(AdminError::validation(
                "sub_groups",
                format!("'{}' is not a standard group", child.name),
            ));
        }
        if child.channel_type != parent.channel_type {
            return Err(AdminError::validation(
                "sub_groups",
                format!(
                    "'{}' has channel type {}, the aggregate {}",
                    child.name, child.channel_type, parent.channel_type
                ),
            ));
        }
        if endpoint.get_or_insert_with(|| child.validation_endpoint.clone()) != &child.validation_endpoint {
            return Err(AdminError::validation(
                "sub_groups",
                "all sub-groups must share one validation endpoint",
            ));
        }
        if existing.iter().any(|e| e.id == child.id) || adding.iter().any(|(id, _)| *id == child.id) {
            return Err(AdminError::Duplicate(format!(
                "'{}' is already a sub-group",
                child.name
            )));
        }
        adding.push((child.id, weight));
    }
    state.registry.add_sub_groups(id, &adding).await?;
    Ok(ack(text(lang, "Sub-groups added", "子分组已添加")))
}

/// The body of `PUT /api/groups/{id}/sub-groups/{sub_group_id}/weight`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct WeightBody {
    /// 0–1000.
    weight: i64,
}

/// Changes a member's weight.
#[utoipa::path(put, path = "/groups/{id}/sub-groups/{sub_group_id}/weight", tag = "groups",
    params(("id" = i64, Path), ("sub_group_id" = i64, Path)),
    request_body = WeightBody, responses((status = 200, body = Ack)))]
pub(crate) async fn update_sub_group_weight(
    Admin { state, lang }: Admin,
    AdminPath((id, sub_group_id)): AdminPath<(i64, i64)>,
    AdminJson(body): AdminJson<WeightBody>,
) -> AckReply {
    aggregate(&state, id).await?;
    let weight = weight_of(body.weight)?;
    let links = groups::sub_group_links(state.registry.db()).await?;
    if !links
        .iter()
        .any(|l| l.group_id == id && l.sub_group_id == sub_group_id)
    {
        return Err(AdminError::NotFound("sub-group"));
    }
    state.registry.set_sub_group(id, sub_group_id, weight).await?;
    Ok(ack(text(lang, "Weight updated", "权重已更新")))
}

/// Removes a member from an aggregate group.
#[utoipa::path(delete, path = "/groups/{id}/sub-groups/{sub_group_id}", tag = "groups",
    params(("id" = i64, Path), ("sub_group_id" = i64, Path)), responses((status = 200, body = Ack)))]
pub(crate) async fn remove_sub_group(
    Admin { state, lang }: Admin,
    AdminPath((id, sub_group_id)): AdminPath<(i64, i64)>,
) -> AckReply {
    aggregate(&state, id).await?;
    if !state.registry.remove_sub_group(id, sub_group_id).await? {
        return Err(AdminError::NotFound("sub-group"));
    }
    Ok(ack(text(lang, "Sub-group removed", "子分组已移除")))
}

/// The aggregate groups a group belongs to.
#[utoipa::path(get, path = "/groups/{id}/parent-aggregate-groups", tag = "groups",
    params(("id" = i64, Path)), responses((status = 200, body = Envelope<Vec<ParentAggregate>>)))]
pub(crate) async fn list_parent_aggregates(
    Admin { state, lang }: Admin,
    AdminPath(id): AdminPath<i64>,
) -> Reply<Vec<ParentAggregate>> {
    groups::find(state.registry.db(), id)
        .await?
        .ok_or(AdminError::NotFound("group"))?;
    let rows = groups::list(state.registry.db()).await?;
    let parents = groups::sub_group_links(state.registry.db())
        .await?
        .into_iter()
        .filter(|l| l.sub_group_id == id)
        .filter_map(|l| {
            let parent = rows.iter().find(|r| r.id == l.group_id)?;
            Some(ParentAggregate {
                group_id: parent.id,
                name: parent.name.clone(),
                display_name: parent.display_name.clone(),
                weight: l.weight,
            })
        })
        .collect();
    Ok(ok(text(lang, "Success", "操作成功"), parents))
}
