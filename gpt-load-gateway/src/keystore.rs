//! Keeps the in-memory key pool and the `api_keys` table in step, without ever putting the
//! database on the request path.
//!
//! - [`load`] fills a [`MemoryKeyPool`] from the table at start (and after admin changes).
//! - [`persist`] is the single write-behind task: it drains the pool's coalesced
//!   [`KeyEvent`]s in batches and writes status, consecutive failures, request counts and last
//!   use in one transaction per batch. Cool-downs are in memory only (a cooling key is stored as
//!   `active`); a database outage keeps the pending updates and retries.

use std::{collections::HashMap, time::Duration};

use gpt_load_tower::{
    keys::{KeyEvent, KeyEvents, KeyId, KeySlot, KeyState, MemoryKeyPool},
    secret::ApiKey,
};

use crate::{
    crypto::KeyCipher,
    db::{Db, DbError},
    models::{GroupRow, now},
    repo::{keys, keys::KeyStateUpdate},
};

/// How a stored status reads in the pool. Unknown values (from a newer or foreign database) are
/// treated as active so keys are not silently lost; they are corrected on the next write.
pub(crate) fn state_from_status(status: &str) -> KeyState {
    match status {
        "invalid" => KeyState::Invalid,
        "disabled" => KeyState::Disabled,
        _ => KeyState::Active,
    }
}

/// How a pool state is stored. Cooling is a short, in-memory pause: stored as `active`.
pub(crate) fn status_of(state: KeyState) -> &'static str {
    match state {
        KeyState::Invalid => "invalid",
        KeyState::Disabled => "disabled",
        _ => "active",
    }
}

/// What [`load`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LoadSummary {
    pub(crate) keys: usize,
    /// Keys whose stored value could not be decrypted (wrong `ENCRYPTION_KEY`); left out of the pool.
    pub(crate) undecryptable: usize,
}

/// Replaces the pool's groups with the keys stored for `groups`.
pub(crate) async fn load(
    db: &Db,
    cipher: &KeyCipher,
    groups: &[GroupRow],
    pool: &MemoryKeyPool,
) -> Result<LoadSummary, DbError> {
    let names: HashMap<i64, &str> = groups.iter().map(|g| (g.id, g.name.as_str())).collect();
    let mut by_group: HashMap<i64, Vec<KeySlot>> = groups.iter().map(|g| (g.id, Vec::new())).collect();
    let mut summary = LoadSummary::default();
    for row in keys::list_all(db).await? {
        let Some(slots) = by_group.get_mut(&row.group_id) else {
            continue;
        };
        match cipher.decrypt(&row.key_value) {
            Ok(plain) => {
                let failures = u32::try_from(row.failure_count.max(0)).unwrap_or(u32::MAX);
                slots.push(KeySlot::with_state(
                    KeyId(row.id as u64),
                    ApiKey::new(plain),
                    state_from_status(&row.status),
                    failures,
                ));
                summary.keys += 1;
            }
            Err(_) => summary.undecryptable += 1,
        }
    }
    for (id, slots) in by_group {
        if let Some(name) = names.get(&id) {
            pool.set_group((*name).into(), slots);
        }
    }
    let stale: Vec<_> = pool
        .groups()
        .into_iter()
        .filter(|g| !names.values().any(|n| *n == g.as_str()))
        .collect();
    for group in stale {
        pool.remove_group(group.as_str());
    }
    if summary.undecryptable > 0 {
        tracing::warn!(
            count = summary.undecryptable,
            "keys could not be decrypted with ENCRYPTION_KEY and were not loaded"
        );
    }
    Ok(summary)
}

/// Most events written per transaction.
const BATCH: usize = 1_000;
/// How long events gather before a write: under load every request marks its key, and one
/// transaction a second instead of one per event keeps the database off the proxy's CPU.
const GATHER: Duration = Duration::from_secs(1);

fn update_of(event: &KeyEvent, at: chrono::NaiveDateTime) -> KeyStateUpdate {
    KeyStateUpdate {
        id: event.key.0 as i64,
        status: status_of(event.state),
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
pub(crate) async fn persist(
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
    use crate::{
        db::test_support::TestDb,
        models::{NewApiKey, NewGroup},
        repo::groups,
    };
    use gpt_load_tower::keys::{ExcludedKeys, KeyPool, Report};

    async fn seed(db: &Db, cipher: &KeyCipher) -> GroupRow {
        let at = now();
        let group = groups::insert(
            db,
            &NewGroup {
                name: "g",
                display_name: "",
                proxy_keys: "",
                description: "",
                group_type: "standard",
                upstreams: "[]",
                validation_endpoint: "",
                channel_type: "openai",
                sort: 0,
                test_model: "m",
                param_overrides: "{}",
                config: "{}",
                header_rules: "[]",
                model_redirect_rules: "{}",
                model_redirect_strict: false,
                created_at: at,
                updated_at: at,
            },
        )
        .await
        .unwrap();
        let stored: Vec<(String, String, &str)> =
            [("sk-one-0123456789", "active"), ("sk-two-0123456789", "invalid")]
                .iter()
                .map(|(k, s)| (cipher.encrypt(k), cipher.hash(k), *s))
                .collect();
        let rows: Vec<_> = stored
            .iter()
            .map(|(v, h, s)| NewApiKey {
                key_value: v,
                key_hash: h,
                group_id: group.id,
                status: s,
                notes: "",
                request_count: 0,
                failure_count: 0,
                created_at: at,
                updated_at: at,
            })
            .collect();
        keys::insert_many(db, &rows).await.unwrap();
        group
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loads_states_and_persists_events() {
        let cipher = KeyCipher::disabled();
        for t in TestDb::all("loads_states_and_persists_events").await {
            let db = t.db.clone();
            let group = seed(&db, &cipher).await;
            let (pool, events) = MemoryKeyPool::with_events();
            let summary = load(&db, &cipher, std::slice::from_ref(&group), &pool)
                .await
                .unwrap();
            assert_eq!(
                summary,
                LoadSummary {
                    keys: 2,
                    undecryptable: 0
                }
            );
            let stats = pool.stats("g").unwrap();
            assert_eq!((stats.active, stats.invalid), (1, 1), "{}", db.backend());

            let (stop, stopped) = tokio::sync::watch::channel(false);
            let writer = tokio::spawn(persist(db.clone(), events, stopped));
            let key = pool.select("g", &ExcludedKeys::new()).unwrap();
            for _ in 0..3 {
                pool.report(
                    &key,
                    Report::Failure {
                        blacklist_threshold: 3,
                    },
                );
            }
            stop.send(true).unwrap();
            let written = writer.await.unwrap();
            assert_eq!(written.unwritten, 0);
            let rows = keys::list_by_group(&db, group.id).await.unwrap();
            let row = rows.iter().find(|r| r.id as u64 == key.id().0).unwrap();
            assert_eq!(
                (row.status.as_str(), row.failure_count, row.request_count),
                ("invalid", 3, 1)
            );
            assert!(row.last_used_at.is_some());

            // A restart reads the same state back.
            let reloaded = MemoryKeyPool::new();
            load(&db, &cipher, &[group], &reloaded).await.unwrap();
            assert_eq!(reloaded.stats("g").unwrap().invalid, 2);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn undecryptable_keys_are_left_out() {
        let t = TestDb::sqlite().await;
        let group = seed(
            &t.db,
            &KeyCipher::from_password(Some("one-encryption-key-0123456789")),
        )
        .await;
        let pool = MemoryKeyPool::new();
        let other = KeyCipher::from_password(Some("another-encryption-key-0123456789"));
        let summary = load(&t.db, &other, &[group], &pool).await.unwrap();
        assert_eq!(
            summary,
            LoadSummary {
                keys: 0,
                undecryptable: 2
            }
        );
    }

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
