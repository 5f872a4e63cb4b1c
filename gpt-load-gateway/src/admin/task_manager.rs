//! The one global background task and its status.
//!
//! Starting is an atomic check-and-set under one lock (gpt-load checks, then sets). The status of
//! the last task stays readable for [`KEEP_FINISHED`] after it ends. A task whose handle is
//! dropped without an outcome (a panic, say) ends as failed, so the slot never stays taken.
//!
//! In a cluster the slot is the cluster's ([`TaskSlot`]): a start takes it in Redis too, so a
//! second start on any node is refused, and the running node writes the task's status there
//! every [`MIRROR_EVERY`] and at its end, so every node shows it. With Redis unreachable a task
//! still starts, on this node's slot alone.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use utoipa::ToSchema;

use crate::{
    admin::error::{AdminError, AdminResult},
    cluster::{RUNNING_TTL, TaskSlot},
};

/// How long the status of a finished task stays readable.
const KEEP_FINISHED: Duration = Duration::from_secs(60 * 60);
/// How often a running task's status is written to the cluster's slot.
const MIRROR_EVERY: Duration = Duration::from_secs(1);

/// What a task does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) enum TaskType {
    #[serde(rename = "KEY_IMPORT")]
    Import,
    #[serde(rename = "KEY_DELETE")]
    Delete,
    #[serde(rename = "KEY_VALIDATION")]
    Validation,
}

/// gpt-load's TaskStatus.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TaskStatus {
    pub(crate) task_type: TaskType,
    pub(crate) is_running: bool,
    pub(crate) group_name: String,
    pub(crate) processed: usize,
    pub(crate) total: usize,
    /// The import, deletion or validation counts, once the task has succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub(crate) result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    pub(crate) started_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) finished_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) duration_seconds: Option<f64>,
}

struct Current {
    /// The task's token in the cluster's slot.
    owner: String,
    status: TaskStatus,
    started: Instant,
    finished: Option<Instant>,
}

/// The global task slot.
#[derive(Default)]
pub(crate) struct TaskManager {
    current: Mutex<Option<Current>>,
    /// The cluster's slot; `None` on a single node.
    shared: Option<TaskSlot>,
    /// Wakes the writer of the status to the cluster's slot when a task ends.
    ended: Notify,
}

impl std::fmt::Debug for TaskManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskManager").finish_non_exhaustive()
    }
}

impl TaskManager {
    /// The slot of a node, shared through `cluster` when it is in one.
    pub(crate) fn new(cluster: Option<TaskSlot>) -> Self {
        Self {
            shared: cluster,
            ..Self::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the slot for a new task, or `409 TASK_IN_PROGRESS` while another one runs on this
    /// node or anywhere in the cluster.
    pub(crate) async fn start(
        self: &Arc<Self>,
        task_type: TaskType,
        group_name: &str,
        total: usize,
    ) -> AdminResult<TaskHandle> {
        let status = TaskStatus {
            task_type,
            is_running: true,
            group_name: group_name.to_owned(),
            processed: 0,
            total,
            result: None,
            error: None,
            started_at: Utc::now(),
            finished_at: None,
            duration_seconds: None,
        };
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let previous = {
            let mut current = self.lock();
            if current.as_ref().is_some_and(|c| c.status.is_running) {
                return Err(AdminError::TaskInProgress);
            }
            current.replace(Current {
                owner: owner.clone(),
                status: status.clone(),
                started: Instant::now(),
                finished: None,
            })
        };
        if let Some(shared) = &self.shared {
            let first = serde_json::to_string(&status).map_err(|e| AdminError::Internal(e.into()))?;
            let ended = previous.as_ref().map(|p| p.owner.as_str());
            match shared.claim(&owner, &first, ended).await {
                Ok(true) => {
                    tokio::spawn(Arc::clone(self).mirror(shared.clone(), owner));
                }
                Ok(false) => {
                    // Another node's task runs: this node's slot is as it was.
                    *self.lock() = previous;
                    return Err(AdminError::TaskInProgress);
                }
                Err(err) => tracing::warn!(
                    error = %err,
                    "the cluster's task slot is unreachable: this task runs on this node's slot alone"
                ),
            }
        }
        Ok(TaskHandle {
            manager: self.clone(),
            done: false,
        })
    }

    /// The running task, or the last one if it finished within [`KEEP_FINISHED`]: in a cluster,
    /// the cluster's (this node's own while it runs one here, being the freshest).
    pub(crate) async fn status(&self) -> Option<TaskStatus> {
        let local = self.local_status();
        if local.as_ref().is_some_and(|s| s.is_running) {
            return local;
        }
        if let Some(shared) = &self.shared {
            match shared.read().await {
                Ok(Some(text)) => match serde_json::from_str(&text) {
                    Ok(status) => return Some(status),
                    Err(err) => tracing::warn!(error = %err, "the cluster's task status does not parse"),
                },
                Ok(None) => {}
                Err(err) => tracing::warn!(error = %err, "the cluster's task status is unreachable"),
            }
        }
        local
    }

    fn local_status(&self) -> Option<TaskStatus> {
        let mut current = self.lock();
        if current
            .as_ref()
            .and_then(|c| c.finished)
            .is_some_and(|at| at.elapsed() > KEEP_FINISHED)
        {
            *current = None;
        }
        current.as_ref().map(|c| c.status.clone())
    }

    /// The status of task `owner`, while it is this node's current one.
    fn status_of(&self, owner: &str) -> Option<TaskStatus> {
        self.lock()
            .as_ref()
            .filter(|c| c.owner == owner)
            .map(|c| c.status.clone())
    }

    /// Writes task `owner`'s status to the cluster's slot every [`MIRROR_EVERY`] and when it
    /// ends, until its end is written or the slot is no longer its own.
    async fn mirror(self: Arc<Self>, shared: TaskSlot, owner: String) {
        loop {
            let Some(status) = self.status_of(&owner) else {
                return;
            };
            let running = status.is_running;
            let ttl = if running { RUNNING_TTL } else { KEEP_FINISHED };
            let written = match serde_json::to_string(&status) {
                Ok(text) => shared.update(&owner, running, &text, ttl).await,
                Err(err) => {
                    tracing::warn!(error = %err, "a task status does not serialise");
                    return;
                }
            };
            match written {
                Ok(true) if !running => return,
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!("the cluster's task slot was taken over (Redis lost the entry)");
                    return;
                }
                Err(err) => tracing::warn!(error = %err, "the task status could not reach Redis; retrying"),
            }
            tokio::select! {
                () = tokio::time::sleep(MIRROR_EVERY) => {}
                () = self.ended.notified() => {}
            }
        }
    }

    fn update(&self, change: impl FnOnce(&mut Current)) {
        if let Some(current) = self.lock().as_mut() {
            change(current);
        }
    }
}

/// The running task's side of the slot: progress, then one outcome.
pub(crate) struct TaskHandle {
    manager: Arc<TaskManager>,
    done: bool,
}

impl TaskHandle {
    /// Sets how many items are done.
    pub(crate) fn progress(&self, processed: usize) {
        self.manager.update(|c| c.status.processed = processed);
    }

    /// Ends the task successfully with this result.
    pub(crate) fn succeed(mut self, result: serde_json::Value) {
        self.finish(Some(result), None);
    }

    /// Ends the task with an error.
    pub(crate) fn fail(mut self, error: String) {
        self.finish(None, Some(error));
    }

    fn finish(&mut self, result: Option<serde_json::Value>, error: Option<String>) {
        self.done = true;
        self.manager.update(|c| {
            let elapsed = c.started.elapsed();
            c.finished = Some(Instant::now());
            c.status.is_running = false;
            c.status.result = result;
            c.status.error = error;
            c.status.finished_at = Some(Utc::now());
            c.status.duration_seconds = Some(elapsed.as_secs_f64());
        });
        self.manager.ended.notify_one();
    }
}

impl Drop for TaskHandle {
    fn drop(&mut self) {
        if !self.done {
            self.finish(None, Some("the task stopped unexpectedly".to_owned()));
        }
    }
}
