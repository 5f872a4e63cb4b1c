//! Request-log retention: rows older than `request_log_retention_days` are deleted (0 keeps
//! everything), in bounded batches so the table is never locked for long.

use std::time::Duration;

use tokio::sync::watch;

use crate::{cluster::Leadership, db::Db, models::now, repo::request_logs, settings::SettingsStore};

/// Deletes what is past retention once; returns how many rows went.
pub(crate) async fn sweep(db: &Db, settings: &SettingsStore) -> usize {
    let Some(keep) = settings.current().request_log_retention() else {
        return 0;
    };
    let Ok(keep) = chrono::Duration::from_std(keep) else {
        return 0;
    };
    match request_logs::delete_older_than(db, now() - keep).await {
        Ok(deleted) => {
            if deleted > 0 {
                tracing::info!(deleted, "request logs past retention deleted");
            }
            deleted
        }
        Err(err) => {
            tracing::warn!(error = %err, "request log retention failed; retrying at the next run");
            0
        }
    }
}

/// Sweeps every `every`, while this node leads, until `shutdown` turns true.
pub(crate) async fn run(
    db: Db,
    settings: std::sync::Arc<SettingsStore>,
    leadership: Leadership,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if leadership.is_leader() {
            sweep(&db, &settings).await;
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
