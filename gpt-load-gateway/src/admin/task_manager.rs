//! The one global background task and its status.
//!
//! Starting is an atomic check-and-set under one lock (gpt-load checks, then sets). The status of
//! the last task stays readable for [`KEEP_FINISHED`] after it ends. A task whose handle is
//! dropped without an outcome (a panic, say) ends as failed, so the slot never stays taken.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::admin::error::{AdminError, AdminResult};

/// How long the status of a finished task stays readable.
const KEEP_FINISHED: Duration = Duration::from_secs(60 * 60);

/// What a task does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub(crate) enum TaskType {
    #[serde(rename = "KEY_IMPORT")]
    Import,
    #[serde(rename = "KEY_DELETE")]
    Delete,
    #[serde(rename = "KEY_VALIDATION")]
    Validation,
}

/// gpt-load's TaskStatus.
#[derive(Clone, Debug, Serialize, ToSchema)]
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
    status: TaskStatus,
    started: Instant,
    finished: Option<Instant>,
}

/// The global task slot.
#[derive(Default)]
pub(crate) struct TaskManager {
    current: Mutex<Option<Current>>,
}

impl std::fmt::Debug for TaskManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskManager").finish_non_exhaustive()
    }
}

impl TaskManager {
    fn lock(&self) -> MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the slot for a new task, or `409 TASK_IN_PROGRESS` while another one runs.
    pub(crate) fn start(
        self: &Arc<Self>,
        task_type: TaskType,
        group_name: &str,
        total: usize,
    ) -> AdminResult<TaskHandle> {
        let mut current = self.lock();
        if current.as_ref().is_some_and(|c| c.status.is_running) {
            return Err(AdminError::TaskInProgress);
        }
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
        *current = Some(Current {
            status,
            started: Instant::now(),
            finished: None,
        });
        Ok(TaskHandle {
            manager: self.clone(),
            done: false,
        })
    }

    /// The running task, or the last one if it finished within [`KEEP_FINISHED`].
    pub(crate) fn status(&self) -> Option<TaskStatus> {
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
    }
}

impl Drop for TaskHandle {
    fn drop(&mut self) {
        if !self.done {
            self.finish(None, Some("the task stopped unexpectedly".to_owned()));
        }
    }
}
