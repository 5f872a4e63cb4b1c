//! Background key tasks (import, delete, validation), their status, and testing chosen keys.
//!
//! One task runs at a time ([`TaskManager`](super::task_manager::TaskManager)); the start route
//! answers at once with the task's status and `GET /api/tasks/status` follows it. Imports and
//! deletions have no size limit and work in chunks of [`CHUNK`] keys, one transaction each, so
//! progress is visible and a failure keeps the chunks already written. Validation results reach
//! the key pool through the registry, whose events persist them like traffic does.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{FromRequest, Multipart, Request},
    http::header,
};
use gpt_load_tower::keys::{KeySlot, KeyState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    keys::{self as key_routes, json::KeysTextInput},
    prelude::*,
    task_manager::{TaskHandle, TaskStatus, TaskType},
};
use crate::{
    jobs::validate::{KeyCheck, check_keys},
    models::GroupRow,
    registry::{GroupPolicy, SealedKey},
    repo::keys,
};

/// Keys per chunk (and per transaction) of an import or a deletion. Each chunk also swaps the
/// group's key pool for a copy with the chunk applied (selection reads it without a lock), so
/// fewer, larger chunks keep a million-key import from copying the pool a thousand times.
const CHUNK: usize = 25_000;
/// How often a validation task publishes its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// The answer for a tested key the group does not have.
const NOT_IN_GROUP: &str = "Key does not exist in this group or has been removed.";

/// `{group_id, status?}` of `validate-group`.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
pub(crate) struct ValidateGroupInput {
    pub(crate) group_id: Option<i64>,
    /// `active` or `invalid`; all but disabled keys when absent.
    pub(crate) status: Option<String>,
}

/// The current or last task, or `{"is_running": false}` when there has been none for an hour.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum TaskProgress {
    Task(TaskStatus),
    Idle { is_running: bool },
}

/// The body of `POST /api/keys/add-async`: JSON, or a multipart form with `group_id` and a
/// `.txt` `file`.
#[derive(Debug, ToSchema)]
#[expect(dead_code, reason = "describes the multipart form in the OpenAPI document")]
pub(crate) struct ImportForm {
    group_id: i64,
    /// A text file of keys, in the format of `keys_text`.
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    file: String,
}

#[derive(Clone, Copy, Debug, Serialize)]
struct ImportResult {
    added_count: usize,
    ignored_count: usize,
}

#[derive(Clone, Copy, Debug, Serialize)]
struct DeleteResult {
    deleted_count: usize,
    ignored_count: usize,
}

#[derive(Clone, Copy, Debug, Serialize)]
struct ValidationResult {
    total_keys: usize,
    valid_keys: usize,
    invalid_keys: usize,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct TestedKey {
    key_value: String,
    is_valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The results of `test-multiple`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct TestResults {
    results: Vec<TestedKey>,
    /// Milliseconds.
    total_duration: u64,
}

async fn progress(state: &AdminState) -> TaskProgress {
    match state.tasks.status().await {
        Some(status) => TaskProgress::Task(status),
        None => TaskProgress::Idle { is_running: false },
    }
}

async fn started(state: &AdminState, lang: Lang) -> Reply<TaskProgress> {
    Ok(ok(
        text(lang, "Task started", "任务已开始"),
        progress(state).await,
    ))
}

/// The group and the parsed keys of `{group_id, keys_text}`, without a size limit.
async fn unlimited_batch(state: &AdminState, input: KeysTextInput) -> AdminResult<(GroupRow, Vec<String>)> {
    let group_id = key_routes::required_group_id(input.group_id)?;
    let text = input
        .keys_text
        .ok_or_else(|| AdminError::validation("keys_text", "keys_text is required"))?;
    let keys = key_routes::parse_keys_text(&text);
    if keys.is_empty() {
        return Err(AdminError::validation(
            "keys_text",
            "no valid keys found in the input text",
        ));
    }
    Ok((key_routes::group(state, group_id).await?, keys))
}

/// `{group_id, keys_text}` as JSON, or a multipart form with `group_id` and a `.txt` `file`.
async fn import_input(state: &AdminState, req: Request) -> AdminResult<KeysTextInput> {
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    if !multipart {
        return match axum::Json::<KeysTextInput>::from_request(req, state).await {
            Ok(axum::Json(input)) => Ok(input),
            Err(rejection) => Err(rejection.into()),
        };
    }
    let bad = |e: axum::extract::multipart::MultipartError| AdminError::BadRequest(e.body_text());
    let mut form = Multipart::from_request(req, state)
        .await
        .map_err(|e| AdminError::BadRequest(e.body_text()))?;
    let mut input = KeysTextInput::default();
    while let Some(field) = form.next_field().await.map_err(bad)? {
        match field.name() {
            Some("group_id") => {
                let raw = field.text().await.map_err(bad)?;
                let id = raw
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| AdminError::validation("group_id", "group_id must be a positive integer"))?;
                input.group_id = Some(id);
            }
            Some("file") => {
                let is_txt = field
                    .file_name()
                    .is_some_and(|name| name.to_ascii_lowercase().ends_with(".txt"));
                if !is_txt {
                    return Err(AdminError::BadRequest("only .txt files are accepted".to_owned()));
                }
                input.keys_text = Some(field.text().await.map_err(bad)?);
            }
            _ => {}
        }
    }
    if input.keys_text.is_none() {
        return Err(AdminError::validation("file", "file is required"));
    }
    Ok(input)
}

/// Ends a task with the outcome of its work.
fn conclude<T: Serialize>(handle: TaskHandle, kind: &str, outcome: AdminResult<T>) {
    let outcome =
        outcome.and_then(|result| serde_json::to_value(result).map_err(|e| AdminError::Internal(e.into())));
    match outcome {
        Ok(result) => handle.succeed(result),
        Err(e) => {
            tracing::error!(error = ?e, task = kind, "key task failed");
            handle.fail(e.to_string());
        }
    }
}

/// Starts importing any number of keys (the global task); `409` while another task runs.
#[utoipa::path(post, path = "/keys/add-async", tag = "tasks",
    request_body(content(
        (KeysTextInput = "application/json"),
        (ImportForm = "multipart/form-data"),
    )),
    responses((status = 200, body = Envelope<TaskProgress>)))]
pub(crate) async fn add_async(Admin { state, lang }: Admin, req: Request) -> Reply<TaskProgress> {
    let input = import_input(&state, req).await?;
    let (group, keys) = unlimited_batch(&state, input).await?;
    let handle = state
        .tasks
        .start(TaskType::Import, &group.name, keys.len())
        .await?;
    let task_state = state.clone();
    tokio::spawn(async move {
        let outcome = import(&task_state, &group, keys, &handle).await;
        conclude(handle, "import", outcome);
    });
    started(&state, lang).await
}

/// Imports in a pipeline: a blocking thread hashes, de-duplicates and encrypts the next chunk
/// while the previous one is written.
async fn import(
    state: &AdminState,
    group: &GroupRow,
    keys: Vec<String>,
    handle: &TaskHandle,
) -> AdminResult<ImportResult> {
    let total = keys.len();
    // The hashes as their 32 bytes: a million hex strings took 80 MB of small allocations, which
    // the allocator kept after the import.
    let known: HashSet<[u8; 32]> = keys::hashes_in_group(state.registry.db(), group.id)
        .await?
        .iter()
        .filter_map(|hash| digest(hash))
        .collect();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, Vec<(String, SealedKey)>)>(2);
    let cipher = state.registry.cipher().clone();
    let producer = tokio::task::spawn_blocking(move || {
        let mut known = known;
        let mut keys = keys.into_iter();
        loop {
            // Each key moves into its chunk, and is dropped with it once written.
            let chunk: Vec<String> = keys.by_ref().take(CHUNK).collect();
            if chunk.is_empty() {
                return;
            }
            let parsed = chunk.len();
            let sealed: Vec<(String, SealedKey)> = chunk
                .into_iter()
                .map(|key| {
                    let sealed = SealedKey::seal(&cipher, &key);
                    (key, sealed)
                })
                .filter(|(_, sealed)| digest(&sealed.hash).is_none_or(|d| known.insert(d)))
                .collect();
            if tx.blocking_send((parsed, sealed)).is_err() {
                return;
            }
        }
    });
    let mut added = 0;
    let mut processed = 0;
    while let Some((parsed, sealed)) = rx.recv().await {
        if !sealed.is_empty() {
            added += state.registry.add_sealed(group.id, &sealed).await?;
        }
        processed += parsed;
        handle.progress(processed);
    }
    producer.await.map_err(|e| AdminError::Internal(e.into()))?;
    Ok(ImportResult {
        added_count: added,
        ignored_count: total - added,
    })
}

/// The 32 bytes of a stored or computed `key_hash` (64 hex digits); `None` for any other text.
fn digest(hash: &str) -> Option<[u8; 32]> {
    let mut bytes = [0; 32];
    hex::decode_to_slice(hash, &mut bytes).ok()?;
    Some(bytes)
}

/// Starts deleting any number of keys (the global task); `409` while another task runs.
#[utoipa::path(post, path = "/keys/delete-async", tag = "tasks", request_body = KeysTextInput,
    responses((status = 200, body = Envelope<TaskProgress>)))]
pub(crate) async fn delete_async(
    Admin { state, lang }: Admin,
    AdminJson(input): AdminJson<KeysTextInput>,
) -> Reply<TaskProgress> {
    let (group, keys) = unlimited_batch(&state, input).await?;
    let handle = state
        .tasks
        .start(TaskType::Delete, &group.name, keys.len())
        .await?;
    let task_state = state.clone();
    tokio::spawn(async move {
        let outcome = delete(&task_state, &group, &keys, &handle).await;
        conclude(handle, "delete", outcome);
    });
    started(&state, lang).await
}

async fn delete(
    state: &AdminState,
    group: &GroupRow,
    keys: &[String],
    handle: &TaskHandle,
) -> AdminResult<DeleteResult> {
    let mut deleted = 0;
    let mut processed = 0;
    for chunk in keys.chunks(CHUNK) {
        deleted += state.registry.delete_keys(group.id, chunk).await?.0;
        processed += chunk.len();
        handle.progress(processed);
    }
    Ok(DeleteResult {
        deleted_count: deleted,
        ignored_count: keys.len().saturating_sub(deleted),
    })
}

/// The policy of a standard group, or 400.
fn standard_policy(state: &AdminState, group: &GroupRow) -> AdminResult<Arc<GroupPolicy>> {
    state
        .registry
        .catalog()
        .policy(&group.name)
        .filter(|p| !p.group.is_aggregate())
        .ok_or_else(|| AdminError::BadRequest(format!("group {} has no keys to validate", group.name)))
}

/// Starts validating a group's keys against the upstream (the global task).
#[utoipa::path(post, path = "/keys/validate-group", tag = "tasks", request_body = ValidateGroupInput,
    responses((status = 200, body = Envelope<TaskProgress>)))]
pub(crate) async fn validate_group(
    Admin { state, lang }: Admin,
    AdminJson(input): AdminJson<ValidateGroupInput>,
) -> Reply<TaskProgress> {
    let group = key_routes::group(&state, key_routes::required_group_id(input.group_id)?).await?;
    let wanted: fn(KeyState) -> bool = match input.status.as_deref().map(str::trim) {
        None | Some("") => |s| s != KeyState::Disabled,
        Some("active") => |s| {
            matches!(
                s,
                KeyState::Active | KeyState::Degraded | KeyState::Cooling | KeyState::Pending
            )
        },
        Some("invalid") => |s| s == KeyState::Invalid,
        Some(_) => {
            return Err(AdminError::validation(
                "status",
                "status must be active or invalid",
            ));
        }
    };
    let policy = standard_policy(&state, &group)?;
    let slots: Vec<Arc<KeySlot>> = state
        .registry
        .pool()
        .keys(&group.name)
        .into_iter()
        .filter(|k| wanted(k.state()))
        .collect();
    if slots.is_empty() {
        return Err(AdminError::BadRequest(format!(
            "no keys to validate in group {}",
            group.name
        )));
    }
    let client = state.registry.client().clone();
    let handle = state
        .tasks
        .start(TaskType::Validation, &group.name, slots.len())
        .await?;
    let task_state = state.clone();
    tokio::spawn(async move {
        let total = slots.len();
        let done = AtomicUsize::new(0);
        let catalog = task_state.registry.catalog();
        let checks = check_keys(&policy, catalog, &client, slots, &done);
        tokio::pin!(checks);
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        let checks = loop {
            tokio::select! {
                checks = &mut checks => break checks,
                _ = tick.tick() => handle.progress(done.load(Ordering::Relaxed)),
            }
        };
        handle.progress(total);
        let (valid, invalid) = task_state.registry.apply_validation(&policy, &checks);
        task_state.registry.record_validated(&checks).await;
        let result = ValidationResult {
            total_keys: total,
            valid_keys: valid,
            invalid_keys: invalid,
        };
        conclude(handle, "validation", Ok(result));
    });
    started(&state, lang).await
}

/// The current or last task with its progress.
#[utoipa::path(get, path = "/tasks/status", tag = "tasks",
    responses((status = 200, body = Envelope<TaskProgress>)))]
pub(crate) async fn task_status(Admin { state, lang }: Admin) -> Reply<TaskProgress> {
    Ok(ok(key_routes::success(lang), progress(&state).await))
}

/// Validates up to 5,000 of a group's keys now and answers with each result.
#[utoipa::path(post, path = "/keys/test-multiple", tag = "keys", request_body = KeysTextInput,
    responses((status = 200, body = Envelope<TestResults>)))]
pub(crate) async fn test_multiple(
    Admin { state, lang }: Admin,
    AdminJson(input): AdminJson<KeysTextInput>,
) -> Reply<TestResults> {
    let begun = Instant::now();
    let key_routes::Batch { group, keys, .. } = key_routes::batch(&state, input).await?;
    let policy = standard_policy(&state, &group)?;
    let wanted: HashSet<&str> = keys.iter().map(String::as_str).collect();
    let slots: Vec<Arc<KeySlot>> = state
        .registry
        .pool()
        .keys(&group.name)
        .into_iter()
        .filter(|k| wanted.contains(k.secret().expose()))
        .collect();
    let registry = &state.registry;
    let checks = check_keys(
        &policy,
        registry.catalog(),
        registry.client(),
        slots,
        &AtomicUsize::new(0),
    )
    .await;
    registry.apply_validation(&policy, &checks);
    registry.record_validated(&checks).await;
    let by_key: HashMap<&str, &KeyCheck> = checks.iter().map(|c| (c.slot.secret().expose(), c)).collect();
    let results: Vec<TestedKey> = keys
        .iter()
        .map(|key| match by_key.get(key.as_str()) {
            Some(check) => TestedKey {
                key_value: key.clone(),
                is_valid: check.outcome.is_ok(),
                error: check.outcome.clone().err(),
            },
            None => TestedKey {
                key_value: key.clone(),
                is_valid: false,
                error: Some(NOT_IN_GROUP.to_owned()),
            },
        })
        .collect();
    let data = TestResults {
        results,
        total_duration: u64::try_from(begun.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    Ok(ok(key_routes::success(lang), data))
}
