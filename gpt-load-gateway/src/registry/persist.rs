//! The write-behind of key state: the single task that drains the pool's coalesced
//! [`KeyEvent`]s in batches and writes status, consecutive failures, request counts and last use
//! in one transaction per batch, so the database is never on the request path. Cool-downs are
//! in memory only (a cooling key is stored as `active`); a database outage keeps the pending
//! updates and retries.

use std::time::Duration;

use gpt_load_tower::keys::{KeyEvent, KeyEvents};

use super::KeyStatus;
use crate::{
    db::Db,
    models::now,
    repo::{keys, keys::KeyStateUpdate},
};

/// Most events written per transaction.
const BATCH: usize = 1_000;
/// How long events gather before a write: under load every request marks its key, and one
/// transaction a second instead of one per event keeps the database off the proxy's CPU.
const GATHER: Duration = Duration::from_secs(1);

fn update_of(event: &KeyEvent, at: chrono::NaiveDateTime) -> KeyStateUpdate {
    KeyStateUpdate {
        id: event.key.0 as i64,
        status: KeyStatus::of_state(event.state).as_str(),
        failure_count: i64::from(event.consecutive_failures),
        new_requests: event.requests as i64,
        last_used_at: (event.requests > 0).then_some(at),
    }
}

/// Merges `next` into `pending` for the same key: the latest state wins, requests add up.
fn merge(pending: &mut Vec<KeyStateUpdate>, next: KeyStateUpdate) {
    match pending.iter_mut().find(|p| p.id == next.id) {
        Some(p) => {
            p.status = next.status;
            p.failure_count = next.failure_count;
            p.new_requests += next.new_requests;
            p.last_used_at = next.last_used_at.or(p.last_used_at);
        }
        None => pending.push(next),
    }
}

/// What [`persist`] wrote before it stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PersistSummary {
    pub(crate) written: usize,
    /// Updates still pending when the database stayed unreachable through shutdown.
    pub(crate) unwritten: usize,
}

/// Writes pool events to the database until `events` closes (the pool was dropped) or
/// `shutdown` flips to `true`; then writes what is left and returns.
pub(crate) async fn run(
    db: Db,
    mut events: KeyEvents,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> PersistSummary {
    let mut summary = PersistSummary::default();
    let mut pending: Vec<KeyStateUpdate> = Vec::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        // A dropped sender means the process is going away too.
        let closing = *shutdown.borrow() || shutdown.has_changed().is_err();
        if pending.is_empty() && !closing {
            tokio::select! {
                batch = events.recv_batch(BATCH) => {
                    if batch.is_empty() {
                        break;
                    }
                    let at = now();
                    for event in &batch {
                        merge(&mut pending, update_of(event, at));
                    }
                }
                _ = shutdown.changed() => continue,
            }
            // Gather what else happens for a while (a key's events merge into one update).
            let deadline = tokio::time::Instant::now() + GATHER;
            while pending.len() < BATCH {
                tokio::select! {
                    batch = events.recv_batch(BATCH - pending.len()) => {
                        if batch.is_empty() {
                            break;
                        }
                        let at = now();
                        for event in &batch {
                            merge(&mut pending, update_of(event, at));
                        }
                    }
                    () = tokio::time::sleep_until(deadline) => break,
                    _ = shutdown.changed() => break,
                }
            }
        }
        if closing {
            let at = now();
            while let Some(event) = events.try_recv() {
                merge(&mut pending, update_of(&event, at));
            }
        }
        if pending.is_empty() {
            if closing {
                break;
            }
            continue;
        }
        let started = std::time::Instant::now();
        match keys::apply_states(&db, &pending, now()).await {
            Ok(_) => {
                metrics::histogram!("gpt_load_db_write_batch_seconds", "table" => "api_keys")
                    .record(started.elapsed().as_secs_f64());
                summary.written += pending.len();
                pending.clear();
                backoff = Duration::from_millis(100);
            }
            Err(err) => {
                tracing::warn!(error = %err, pending = pending.len(), "writing key states failed; retrying");
                if closing {
                    summary.unwritten = pending.len();
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                // Keep collecting meanwhile; updates to the same key merge, so memory stays bounded
                // by the number of keys.
                let at = now();
                while let Some(event) = events.try_recv() {
                    merge(&mut pending, update_of(&event, at));
                }
            }
        }
    }
    if !pending.is_empty() && summary.unwritten == 0 {
        match keys::apply_states(&db, &pending, now()).await {
            Ok(_) => summary.written += pending.len(),
            Err(_) => summary.unwritten = pending.len(),
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_updates_per_key() {
        let mut pending = Vec::new();
        let at = now();
        merge(
            &mut pending,
            KeyStateUpdate {
                id: 1,
                status: "active",
                failure_count: 1,
                new_requests: 2,
                last_used_at: Some(at),
            },
        );
        merge(
            &mut pending,
            KeyStateUpdate {
                id: 1,
                status: "invalid",
                failure_count: 3,
                new_requests: 1,
                last_used_at: None,
            },
        );
        assert_eq!(
            pending,
            [KeyStateUpdate {
                id: 1,
                status: "invalid",
                failure_count: 3,
                new_requests: 3,
                last_used_at: Some(at)
            }]
        );
    }
}
