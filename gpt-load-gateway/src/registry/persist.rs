//! The write-behind of key state: the single task that drains the pool's coalesced
//! [`KeyEvent`]s in batches and writes status, consecutive failures, request counts, last use and
//! the lifecycle columns (state, cool-down deadline, backoff level, last error, last success and
//! failure) in one transaction per batch, so the database is never on the request path. gpt-load's
//! `status` reads `active` for degraded and cooling keys. A database outage keeps the pending
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
        state: event.state.as_str(),
        cooling_until: event
            .cooling_for
            .and_then(|rest| chrono::Duration::from_std(rest).ok())
            .map(|rest| at + rest),
        backoff_level: i32::try_from(event.backoff_level).unwrap_or(i32::MAX),
        last_error_message: event
            .last_error
            .as_deref()
            .map(|message| truncated(message, LAST_ERROR_LIMIT).to_owned())
            .unwrap_or_default(),
        last_failure_at: event.last_failure_at.map(stored_time),
        last_success_at: event.last_success_at.map(stored_time),
    }
}

/// Characters of a key's last error kept in `last_error_message` (its column's size).
const LAST_ERROR_LIMIT: usize = 2048;

/// At most `limit` characters of `text`.
fn truncated(text: &str, limit: usize) -> &str {
    text.char_indices()
        .nth(limit)
        .map_or(text, |(end, _)| &text[..end])
}

/// A wall-clock time as stored (UTC, no zone).
fn stored_time(time: std::time::SystemTime) -> chrono::NaiveDateTime {
    chrono::DateTime::<chrono::Utc>::from(time).naive_utc()
}

/// Merges `next` into `pending` for the same key: the latest state wins, requests add up.
fn merge(pending: &mut Vec<KeyStateUpdate>, next: KeyStateUpdate) {
    match pending.iter_mut().find(|p| p.id == next.id) {
        Some(p) => {
            let new_requests = p.new_requests + next.new_requests;
            let last_used_at = next.last_used_at.or(p.last_used_at);
            *p = KeyStateUpdate {
                new_requests,
                last_used_at,
                ..next
            };
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

    fn update(
        status: &'static str,
        failure_count: i64,
        new_requests: i64,
        used: Option<chrono::NaiveDateTime>,
    ) -> KeyStateUpdate {
        KeyStateUpdate {
            id: 1,
            status,
            failure_count,
            new_requests,
            last_used_at: used,
            state: status,
            cooling_until: None,
            backoff_level: 0,
            last_error_message: String::new(),
            last_failure_at: None,
            last_success_at: None,
        }
    }

    #[test]
    fn merges_updates_per_key() {
        let mut pending = Vec::new();
        let at = now();
        merge(&mut pending, update("active", 1, 2, Some(at)));
        merge(&mut pending, update("invalid", 3, 1, None));
        assert_eq!(pending, [update("invalid", 3, 3, Some(at))]);
    }

    #[test]
    fn lifecycle_columns_come_from_the_event() {
        use gpt_load_tower::keys::{KeyId, KeySlot, KeyState, MemoryKeyPool};

        let failed_at = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (pool, mut events) = MemoryKeyPool::with_events();
        let slot = KeySlot::new(KeyId(1), "k".into())
            .with_rest(Duration::from_secs(90), 2)
            .with_history(None, Some(failed_at), Some("é".repeat(3000).into()));
        pool.set_group("g".into(), [slot]);
        // Any change queues the key's event; the event carries the slot as it is.
        assert!(pool.set_state("g", KeyId(1), KeyState::Cooling));
        let event = events.try_recv().expect("an event");
        let at = now();
        let written = update_of(&event, at);
        assert_eq!(
            (written.status, written.state, written.backoff_level),
            ("active", "cooling", 2)
        );
        let rest = written.cooling_until.unwrap() - at;
        assert!(
            rest > chrono::Duration::seconds(85) && rest <= chrono::Duration::seconds(90),
            "{rest}"
        );
        assert_eq!(written.last_failure_at, Some(stored_time(failed_at)));
        assert_eq!(written.last_success_at, None);
        assert_eq!(written.last_error_message.chars().count(), LAST_ERROR_LIMIT);
    }
}
