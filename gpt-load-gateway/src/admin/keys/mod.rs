//! `/api/keys`: listing, batch import / delete / restore, whole-group clean-up, export, notes, and
//! enabling or disabling one key. Every change reaches the key pool before the answer.

pub(crate) mod json;

use std::collections::HashSet;

use axum::{
    body::{Body, Bytes},
    extract::State,
    response::Response,
};
use futures_util::{Stream, TryStreamExt, stream};
use gpt_load_tower::keys::KeyId;

use self::json::{
    AddResult, DeleteResult, ExportQuery, GroupIdInput, KeyListQuery, KeyResponse, KeysTextInput, NotesInput,
    RestoreResult, StatusInput, UNDECRYPTABLE,
};
use super::{
    envelope::attachment,
    page::{Page, PageQuery},
    prelude::*,
};
use crate::{
    models::{GroupRow, now},
    registry::{Added, KeyStatus, key_limits::KeyLimitOverride},
    repo::{groups, keys, keys::KeyFilter},
};

/// The most keys one synchronous batch accepts.
const MAX_BATCH: usize = 5_000;
/// The longest note, in characters.
const MAX_NOTES: usize = 255;
/// Keys read per query of a streamed export.
const EXPORT_PAGE: i64 = 1_000;

pub(super) fn success(lang: Lang) -> &'static str {
    text(lang, "Success", "操作成功")
}

/// Splits pasted key text like gpt-load: a JSON array of strings, or else tokens separated by
/// whitespace, `,` and `;`. Blank entries are dropped; nothing else is checked.
pub(crate) fn parse_keys_text(input: &str) -> Vec<String> {
    let trimmed = input.trim();
    if trimmed.starts_with('[')
        && let Ok(list) = serde_json::from_str::<Vec<String>>(trimmed)
    {
        return list
            .into_iter()
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect();
    }
    trimmed
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(super) fn required_group_id(group_id: Option<i64>) -> AdminResult<i64> {
    group_id
        .filter(|id| *id > 0)
        .ok_or_else(|| AdminError::validation("group_id", "group_id is required"))
}

fn group_id_param(raw: Option<&str>) -> AdminResult<i64> {
    let raw = raw.map(str::trim).unwrap_or_default();
    if raw.is_empty() {
        return Err(AdminError::validation("group_id", "group_id is required"));
    }
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| AdminError::validation("group_id", "group_id must be a positive integer"))
}

pub(super) async fn group(state: &AdminState, id: i64) -> AdminResult<GroupRow> {
    groups::find(state.registry.db(), id)
        .await?
        .ok_or(AdminError::NotFound("group"))
}

/// A validated batch: the group and the distinct keys of the text (in input order), with how
/// many entries the text held.
pub(super) struct Batch {
    pub(super) group: GroupRow,
    pub(super) keys: Vec<String>,
    pub(super) parsed: usize,
}

pub(super) async fn batch(state: &AdminState, input: KeysTextInput) -> AdminResult<Batch> {
    let group_id = required_group_id(input.group_id)?;
    let text = input
        .keys_text
        .ok_or_else(|| AdminError::validation("keys_text", "keys_text is required"))?;
    let parsed = parse_keys_text(&text);
    if parsed.len() > MAX_BATCH {
        return Err(AdminError::validation(
            "keys_text",
            format!(
                "batch size exceeds the limit of {MAX_BATCH} keys, got {}",
                parsed.len()
            ),
        ));
    }
    if parsed.is_empty() {
        return Err(AdminError::validation(
            "keys_text",
            "no valid keys found in the input text",
        ));
    }
    let group = group(state, group_id).await?;
    let count = parsed.len();
    let mut seen = HashSet::new();
    let keys = parsed.into_iter().filter(|k| seen.insert(k.clone())).collect();
    Ok(Batch {
        group,
        keys,
        parsed: count,
    })
}

/// The lifecycle states a key list may be filtered by.
const LIFECYCLE_STATES: [&str; 6] = ["pending", "active", "degraded", "cooling", "invalid", "disabled"];

/// One page of a group's keys, optionally of one status, one lifecycle state or one exact key
/// value.
#[utoipa::path(get, path = "/keys", tag = "keys", params(KeyListQuery, PageQuery),
    responses((status = 200, body = Envelope<Page<KeyResponse>>)))]
pub(crate) async fn list_keys(
    Admin { state, lang }: Admin,
    AdminQuery(query): AdminQuery<KeyListQuery>,
    AdminQuery(page): AdminQuery<PageQuery>,
) -> Reply<Page<KeyResponse>> {
    let group_id = group_id_param(query.group_id.as_deref())?;
    let status =
        match query.status.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(KeyStatus::parse(s).ok_or_else(|| {
                AdminError::validation("status", "status must be active, invalid or disabled")
            })?),
        };
    let lifecycle = match query.state.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(
            LIFECYCLE_STATES
                .into_iter()
                .find(|known| *known == s)
                .ok_or_else(|| {
                    AdminError::validation(
                        "state",
                        format!("state must be one of {}", LIFECYCLE_STATES.join(", ")),
                    )
                })?,
        ),
    };
    let hash = query
        .key_value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| state.registry.cipher().hash(v));
    let group = group(&state, group_id).await?;
    let filter = KeyFilter {
        group_id,
        status: status.map(KeyStatus::as_str),
        state: lifecycle,
        hash: hash.as_deref(),
    };
    let (rows, total) =
        keys::page_in_group(state.registry.db(), &filter, page.offset(), page.page_size()).await?;
    let pool = state.registry.pool();
    let items: Vec<KeyResponse> = rows
        .into_iter()
        .map(|stored| {
            let live = pool.get(&group.name, KeyId(stored.0.id as u64));
            KeyResponse::new(stored, state.registry.cipher(), live.as_deref())
        })
        .collect();
    Ok(ok(success(lang), Page::new(items, page, total)))
}

/// Adds up to 5,000 keys to a group; keys it already has are ignored.
#[utoipa::path(post, path = "/keys/add-multiple", tag = "keys", request_body = KeysTextInput,
    responses((status = 200, body = Envelope<AddResult>)))]
pub(crate) async fn add_keys(
    Admin { state, lang }: Admin,
    AdminJson(input): AdminJson<KeysTextInput>,
) -> Reply<AddResult> {
    let Batch { group, keys, parsed } = batch(&state, input).await?;
    let Added { added, total } = state.registry.add_keys(group.id, &keys).await?;
    let result = AddResult {
        added_count: added,
        ignored_count: parsed - added,
        total_in_group: total,
    };
    Ok(ok(success(lang), result))
}

/// Deletes up to 5,000 keys from a group.
#[utoipa::path(post, path = "/keys/delete-multiple", tag = "keys", request_body = KeysTextInput,
    responses((status = 200, body = Envelope<DeleteResult>)))]
pub(crate) async fn delete_keys(
    Admin { state, lang }: Admin,
    AdminJson(input): AdminJson<KeysTextInput>,
) -> Reply<DeleteResult> {
    let Batch { group, keys, parsed } = batch(&state, input).await?;
    let (deleted, total) = state.registry.delete_keys(group.id, &keys).await?;
    let result = DeleteResult {
        deleted_count: deleted,
        ignored_count: parsed.saturating_sub(deleted),
        total_in_group: total,
    };
    Ok(ok(success(lang), result))
}

/// Makes up to 5,000 of a group's `invalid` keys active again.
#[utoipa::path(post, path = "/keys/restore-multiple", tag = "keys", request_body = KeysTextInput,
    responses((status = 200, body = Envelope<RestoreResult>)))]
pub(crate) async fn restore_keys(
    Admin { state, lang }: Admin,
    AdminJson(input): AdminJson<KeysTextInput>,
) -> Reply<RestoreResult> {
    let Batch { group, keys, parsed } = batch(&state, input).await?;
    let (restored, total) = state.registry.restore_keys(group.id, Some(&keys)).await?;
    let result = RestoreResult {
        restored_count: restored,
        ignored_count: parsed.saturating_sub(restored),
        total_in_group: total,
    };
    Ok(ok(success(lang), result))
}

/// Makes every `invalid` key of a group active again.
#[utoipa::path(post, path = "/keys/restore-all-invalid", tag = "keys", request_body = GroupIdInput,
    responses((status = 200, body = Ack)))]
pub(crate) async fn restore_all_invalid(
    Admin { state, lang }: Admin,
    AdminJson(input): AdminJson<GroupIdInput>,
) -> AckReply {
    let group = group(&state, required_group_id(input.group_id)?).await?;
    let (n, _) = state.registry.restore_keys(group.id, None).await?;
    let message = match lang {
        Lang::Zh => format!("已恢复 {n} 个密钥"),
        _ => format!("{n} keys restored"),
    };
    Ok(ack(&message))
}

async fn clear(state: &AdminState, group_id: Option<i64>, status: Option<KeyStatus>) -> AdminResult<usize> {
    let group = group(state, required_group_id(group_id)?).await?;
    Ok(state.registry.clear_keys(group.id, status).await?)
}

/// Deletes every `invalid` key of a group.
#[utoipa::path(post, path = "/keys/clear-all-invalid", tag = "keys", request_body = GroupIdInput,
    responses((status = 200, body = Ack)))]
pub(crate) async fn clear_all_invalid(
    Admin { state, lang }: Admin,
    AdminJson(input): AdminJson<GroupIdInput>,
) -> AckReply {
    let n = clear(&state, input.group_id, Some(KeyStatus::Invalid)).await?;
    let message = match lang {
        Lang::Zh => format!("已清除 {n} 个无效密钥"),
        _ => format!("{n} invalid keys cleared"),
    };
    Ok(ack(&message))
}

/// Deletes every key of a group.
#[utoipa::path(post, path = "/keys/clear-all", tag = "keys", request_body = GroupIdInput,
    responses((status = 200, body = Ack)))]
pub(crate) async fn clear_all(
    Admin { state, lang }: Admin,
    AdminJson(input): AdminJson<GroupIdInput>,
) -> AckReply {
    let n = clear(&state, input.group_id, None).await?;
    let message = match lang {
        Lang::Zh => format!("已清除 {n} 个密钥"),
        _ => format!("{n} keys cleared"),
    };
    Ok(ack(&message))
}

/// The decrypted keys after `after_id`, one page per item, each key on its own line.
fn export_pages(
    state: AdminState,
    group_id: i64,
    status: Option<&'static str>,
) -> impl Stream<Item = AdminResult<Bytes>> {
    stream::try_unfold(Some(0_i64), move |after| {
        let state = state.clone();
        async move {
            let Some(after) = after else {
                return Ok(None);
            };
            let filter = KeyFilter {
                group_id,
                status,
                state: None,
                hash: None,
            };
            let page = keys::values_after(state.registry.db(), &filter, after, EXPORT_PAGE).await?;
            let Some(&(last, _)) = page.last() else {
                return Ok(None);
            };
            let mut chunk = String::with_capacity(page.len() * 64);
            for (_, value) in &page {
                match state.registry.cipher().decrypt(value) {
                    Ok(plain) => chunk.push_str(&plain),
                    Err(_) => chunk.push_str(UNDECRYPTABLE),
                }
                chunk.push('\n');
            }
            let next = (page.len() as i64 == EXPORT_PAGE).then_some(last);
            Ok(Some((Bytes::from(chunk), next)))
        }
    })
}

/// A text file, one decrypted key per line, streamed a page of keys at a time.
#[utoipa::path(get, path = "/keys/export", tag = "keys", params(ExportQuery),
    responses((status = 200, content_type = "text/plain", body = String,
        description = "one key per line")))]
pub(crate) async fn export_keys(
    State(state): State<AdminState>,
    AdminQuery(query): AdminQuery<ExportQuery>,
) -> AdminResult<Response> {
    let group_id = group_id_param(query.group_id.as_deref())?;
    let status = match query.status.as_deref().map(str::trim) {
        None | Some("" | "all") => None,
        Some(s) => Some(KeyStatus::parse(s).ok_or_else(|| {
            AdminError::validation("status", "status must be all, active, invalid or disabled")
        })?),
    };
    let group = group(&state, group_id).await?;
    let filter = status.map(KeyStatus::as_str);
    let name = group.name.clone();
    // A failure after the first page can only cut the transfer short (the status is sent).
    let body = Body::from_stream(export_pages(state, group.id, filter).inspect_err(move |err| {
        tracing::error!(error = ?err, group = %name, "key export stopped");
    }));
    let shown = filter.unwrap_or("all");
    let filename = format!("keys-{}-{shown}.txt", group.name);
    attachment("text/plain; charset=utf-8", &filename, body)
}

/// Sets a key's notes (at most 255 characters).
#[utoipa::path(put, path = "/keys/{id}/notes", tag = "keys", params(("id" = i64, Path)),
    request_body = NotesInput, responses((status = 200, body = Ack)))]
pub(crate) async fn update_notes(
    Admin { state, lang }: Admin,
    AdminPath(id): AdminPath<i64>,
    AdminJson(input): AdminJson<NotesInput>,
) -> AckReply {
    let notes = input.notes.trim();
    if notes.chars().count() > MAX_NOTES {
        return Err(AdminError::validation(
            "notes",
            format!("notes must be at most {MAX_NOTES} characters"),
        ));
    }
    keys::set_notes(state.registry.db(), id, notes, now())
        .await?
        .ok_or(AdminError::NotFound("key"))?;
    Ok(ack(success(lang)))
}

/// Gives one key limits of its own: each of `rpm`, `rpd`, `tpm`, `max_concurrency` set (0 = no
/// limit) replaces its group's value; left out or `null`, the group's applies. `{}` returns the
/// key to its group's limits.
#[utoipa::path(put, path = "/keys/{id}/limits", tag = "keys", params(("id" = i64, Path)),
    request_body = KeyLimitOverride, responses((status = 200, body = Ack)))]
pub(crate) async fn update_limits(
    Admin { state, lang }: Admin,
    AdminPath(id): AdminPath<i64>,
    AdminJson(own): AdminJson<KeyLimitOverride>,
) -> AckReply {
    if !state.registry.set_own_limits(id, own).await? {
        return Err(AdminError::NotFound("key"));
    }
    Ok(ack(success(lang)))
}

/// Enables (`active`) or disables (`disabled`) one key by hand.
#[utoipa::path(put, path = "/keys/{id}/status", tag = "keys", params(("id" = i64, Path)),
    request_body = StatusInput, responses((status = 200, body = Ack)))]
pub(crate) async fn update_status(
    Admin { state, lang }: Admin,
    AdminPath(id): AdminPath<i64>,
    AdminJson(input): AdminJson<StatusInput>,
) -> AckReply {
    let status = match input.status.as_deref().map(str::trim).and_then(KeyStatus::parse) {
        Some(status @ (KeyStatus::Active | KeyStatus::Disabled)) => status,
        _ => {
            return Err(AdminError::validation(
                "status",
                "status must be active or disabled",
            ));
        }
    };
    if !state.registry.set_key_status(id, status).await? {
        return Err(AdminError::NotFound("key"));
    }
    Ok(ack(success(lang)))
}

#[cfg(test)]
mod tests {
    use super::parse_keys_text;

    #[test]
    fn key_text_is_parsed_like_gpt_load() {
        assert_eq!(parse_keys_text(" a, b;c\n\td  "), ["a", "b", "c", "d"]);
        assert_eq!(parse_keys_text(r#"["x y", " z ", ""]"#), ["x y", "z"]);
        assert_eq!(parse_keys_text("[not json, k2"), ["[not", "json", "k2"]);
        assert!(parse_keys_text(" ,; \n").is_empty());
        assert_eq!(parse_keys_text("k1 k1"), ["k1", "k1"], "duplicates are counted");
    }
}
