//! `api_keys`: import, listing, and the write-behind of key state.

use std::collections::HashSet;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use crate::{
    db::{AppendPriority, Backend, Db, DbError, schema::api_keys, with_conn, write_transaction},
    models::{ApiKeyRow, KeyLifecycleRow, NewApiKey, SealedKey},
};

/// Rows per multi-row insert (9 bind parameters each; well under every backend's limit).
const INSERT_CHUNK: usize = 1_000;

/// Inserts keys in one transaction; returns how many.
#[cfg(test)]
pub(crate) async fn insert_many(db: &Db, keys: &[NewApiKey<'_>]) -> Result<usize, DbError> {
    write_transaction!(db, |conn| {
        let mut inserted = 0;
        for key in keys {
            inserted += diesel::insert_into(api_keys::table)
                .values(key)
                .execute(conn)
                .await?;
        }
        Ok::<_, DbError>(inserted)
    })
}

/// Every key of a group, by id.
pub(crate) async fn list_by_group(db: &Db, group_id: i64) -> Result<Vec<ApiKeyRow>, DbError> {
    with_conn!(db, |conn| {
        Ok(api_keys::table
            .filter(api_keys::group_id.eq(group_id))
            .order(api_keys::id)
            .select(ApiKeyRow::as_select())
            .load(conn)
            .await?)
    })
}

/// A stored key with its lifecycle columns.
pub(crate) type StoredKey = (ApiKeyRow, KeyLifecycleRow);

/// Keys with every column and their lifecycle: every key, or one group's, by id.
pub(crate) async fn list_stored(db: &Db, group_id: Option<i64>) -> Result<Vec<StoredKey>, DbError> {
    with_conn!(db, |conn| {
        let mut query = api_keys::table
            .order(api_keys::id)
            .select((ApiKeyRow::as_select(), KeyLifecycleRow::as_select()))
            .into_boxed();
        filter_some!(query, group_id, |id| api_keys::group_id.eq(id));
        Ok(query.load(conn).await?)
    })
}

/// The columns a key enters the pool with: none of gpt-load's notes, hash, counters or times,
/// which a million rows would read and parse for nothing at start.
#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub(crate) struct PoolKeyRow {
    pub(crate) id: i64,
    pub(crate) key_value: String,
    pub(crate) group_id: i64,
    pub(crate) status: String,
    pub(crate) failure_count: i64,
}

/// A key as the pool loads it, with its lifecycle.
pub(crate) type PoolKey = (PoolKeyRow, KeyLifecycleRow);

/// Rows per read of [`pool_keys`] and [`pool_keys_page`]'s usual size.
pub(crate) const POOL_PAGE: i64 = 2_000;

/// Every key of one group as the pool loads it, by id, read [`POOL_PAGE`] rows at a time.
pub(crate) async fn pool_keys(db: &Db, group_id: i64) -> Result<Vec<PoolKey>, DbError> {
    let mut all = Vec::new();
    loop {
        let after = all.last().map_or(0, |(row, _): &PoolKey| row.id);
        let page = pool_keys_page(db, Some(group_id), after, POOL_PAGE).await?;
        let last_page = page.len() < POOL_PAGE as usize;
        all.extend(page);
        if last_page {
            return Ok(all);
        }
    }
}

/// Up to `limit` keys as the pool loads them (all, or one group's) with ids above `after_id`,
/// by id: loading a million keys a page at a time keeps the rows in memory at one page.
pub(crate) async fn pool_keys_page(
    db: &Db,
    group_id: Option<i64>,
    after_id: i64,
    limit: i64,
) -> Result<Vec<PoolKey>, DbError> {
    with_conn!(db, |conn| {
        let mut query = api_keys::table
            .filter(api_keys::id.gt(after_id))
            .order(api_keys::id)
            .limit(limit)
            .select((PoolKeyRow::as_select(), KeyLifecycleRow::as_select()))
            .into_boxed();
        filter_some!(query, group_id, |id| api_keys::group_id.eq(id));
        Ok(query.load(conn).await?)
    })
}

/// Stores a key's own limits (`None`: its group's); the key's group, or `None` when the key does
/// not exist.
pub(crate) async fn set_own_limits(db: &Db, id: i64, limits: Option<&str>) -> Result<Option<i64>, DbError> {
    with_conn!(db, |conn| {
        let changed = diesel::update(api_keys::table.find(id))
            .set(api_keys::key_limits.eq(limits))
            .execute(conn)
            .await?;
        if changed == 0 {
            return Ok(None);
        }
        Ok(api_keys::table
            .find(id)
            .select(api_keys::group_id)
            .first(conn)
            .await
            .optional()?)
    })
}

/// Records that these keys were validated at `at`.
pub(crate) async fn mark_validated(db: &Db, ids: &[i64], at: NaiveDateTime) -> Result<usize, DbError> {
    write_transaction!(db, |conn| {
        let mut written = 0;
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            written += diesel::update(api_keys::table.filter(api_keys::id.eq_any(chunk)))
                .set(api_keys::last_validated_at.eq(at))
                .execute(conn)
                .await?;
        }
        Ok::<_, DbError>(written)
    })
}

/// The live state of one key, as the pool reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyStateUpdate {
    pub(crate) id: i64,
    /// gpt-load's status (`active`, `invalid`, `disabled`).
    pub(crate) status: &'static str,
    pub(crate) failure_count: i64,
    /// Requests since the previous update (added to `request_count`).
    pub(crate) new_requests: i64,
    /// Set when the key was used since the previous update.
    pub(crate) last_used_at: Option<NaiveDateTime>,
    /// The lifecycle columns.
    pub(crate) state: &'static str,
    pub(crate) cooling_until: Option<NaiveDateTime>,
    pub(crate) backoff_level: i32,
    pub(crate) last_error_message: String,
    pub(crate) last_failure_at: Option<NaiveDateTime>,
    pub(crate) last_success_at: Option<NaiveDateTime>,
}

/// Writes a batch of key states in one transaction; returns how many rows still existed.
pub(crate) async fn apply_states(
    db: &Db,
    updates: &[KeyStateUpdate],
    at: NaiveDateTime,
) -> Result<usize, DbError> {
    // What changes in a key's row (plus `last_used_at` when it was used).
    macro_rules! set_of {
        ($u:expr) => {
            (
                api_keys::status.eq($u.status),
                api_keys::failure_count.eq($u.failure_count),
                api_keys::request_count.eq(api_keys::request_count + $u.new_requests),
                api_keys::updated_at.eq(at),
                api_keys::state.eq($u.state),
                api_keys::cooling_until.eq($u.cooling_until),
                api_keys::backoff_level.eq($u.backoff_level),
                api_keys::last_error_message.eq(&$u.last_error_message),
                api_keys::last_failure_at.eq($u.last_failure_at),
                api_keys::last_success_at.eq($u.last_success_at),
            )
        };
    }
    with_conn!(
        db,
        // On the connection that appends the request logs, at low priority (see
        // `db::sqlite`): a write from a second connection would make SQLite drop that
        // connection's page cache before its next batch. A tenth of a saturated CPU, what a
        // low-priority thread gets, writes a second's batch of at most 1,000 small updates.
        sqlite_pool | sqlite | {
            let owned = updates.to_vec();
            sqlite
                .append(AppendPriority::Low, move |tx| sqlite_apply_states(tx, &owned, at))
                .await
        },
        server | conn | {
            conn.transaction(async |conn| {
                let mut written = 0;
                for u in updates {
                    let row = api_keys::table.find(u.id);
                    written += match u.last_used_at {
                        Some(used) => {
                            diesel::update(row)
                                .set((set_of!(u), api_keys::last_used_at.eq(used)))
                                .execute(conn)
                                .await?
                        }
                        None => diesel::update(row).set(set_of!(u)).execute(conn).await?,
                    };
                }
                Ok::<_, DbError>(written)
            })
            .await
        }
    )
}

/// [`apply_states`] on SQLite, inside the append connection's transaction.
#[cfg(feature = "sqlite")]
fn sqlite_apply_states(
    tx: &rusqlite::Transaction<'_>,
    updates: &[KeyStateUpdate],
    at: NaiveDateTime,
) -> rusqlite::Result<usize> {
    use crate::db::sqlite::timestamp;

    let mut update = tx.prepare_cached(
        "UPDATE api_keys SET status = ?1, failure_count = ?2, request_count = request_count + ?3, \
         updated_at = ?4, state = ?5, cooling_until = ?6, backoff_level = ?7, \
         last_error_message = ?8, last_failure_at = ?9, last_success_at = ?10, \
         last_used_at = COALESCE(?11, last_used_at) WHERE id = ?12",
    )?;
    let at = timestamp(at);
    let mut written = 0;
    for u in updates {
        // Named in full: diesel's `RunQueryDsl::execute` is in scope here too.
        written += rusqlite::Statement::execute(
            &mut update,
            rusqlite::params![
                u.status,
                u.failure_count,
                u.new_requests,
                at,
                u.state,
                u.cooling_until.map(timestamp),
                u.backoff_level,
                u.last_error_message,
                u.last_failure_at.map(timestamp),
                u.last_success_at.map(timestamp),
                u.last_used_at.map(timestamp),
                u.id,
            ],
        )?;
    }
    Ok(written)
}

/// The `key_hash` of every key of a group (for de-duplication on import).
pub(crate) async fn hashes_in_group(db: &Db, group_id: i64) -> Result<Vec<String>, DbError> {
    with_conn!(db, |conn| {
        Ok(api_keys::table
            .filter(api_keys::group_id.eq(group_id))
            .select(api_keys::key_hash)
            .load(conn)
            .await?)
    })
}

/// Rows per `IN (…)` list (well under every backend's bind-parameter limit).
const LOOKUP_CHUNK: usize = 1_000;

/// What the key list selects: a group, optionally one status and one exact `key_hash`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyFilter<'a> {
    pub(crate) group_id: i64,
    pub(crate) status: Option<&'a str>,
    /// The lifecycle state as last written (`state` column).
    pub(crate) state: Option<&'a str>,
    pub(crate) hash: Option<&'a str>,
}

/// `group_id = group_id` written so that no index can serve it (`group_id + 0`), for queries that
/// also name a key's hash: SQLite has no statistics unless `ANALYZE` ran, and without them its
/// planner prefers the group's index, a walk of the whole group, to the hash's.
fn in_group_unindexed(group_id: i64) -> diesel::dsl::Eq<diesel::dsl::Add<api_keys::group_id, i64>, i64> {
    (api_keys::group_id + 0_i64).eq(group_id)
}

/// The filtered keys as a boxed query (the backend is inferred from the connection).
///
/// An exact key is found through its hash's index alone: its other conditions are written so
/// that no index serves them ([`in_group_unindexed`], `status || ''`); otherwise SQLite walked
/// the group's whole index, 186 ms at a million keys where the hash's index answers at once.
macro_rules! filtered_keys {
    ($filter:expr) => {{
        let filter: &KeyFilter<'_> = $filter;
        let mut query = api_keys::table.into_boxed();
        match filter.hash {
            Some(hash) => {
                query = query
                    .filter(api_keys::key_hash.eq(hash))
                    .filter(in_group_unindexed(filter.group_id));
                filter_some!(query, filter.status, |status| api_keys::status
                    .concat("")
                    .eq(status));
                filter_some!(query, filter.state, |state| api_keys::state.concat("").eq(state));
            }
            None => {
                query = query.filter(api_keys::group_id.eq(filter.group_id));
                filter_some!(query, filter.status, |status| api_keys::status.eq(status));
                filter_some!(query, filter.state, |state| api_keys::state.eq(state));
            }
        }
        query
    }};
}

/// The filtered keys in the keys page's order (see [`page_in_group`]).
macro_rules! keys_page {
    ($filter:expr, $nulls_sort_low:expr) => {{
        let keys = filtered_keys!($filter);
        if $nulls_sort_low {
            keys.order((api_keys::last_used_at.desc(), api_keys::id.desc()))
        } else {
            // `NULLS LAST` is PostgreSQL's (diesel types it for that backend only, and this
            // body is compiled for each); the index `idx_api_keys_group_recent` is this order.
            // An order list has no SQL type; diesel's literal wants one.
            keys.order(diesel::dsl::sql::<diesel::sql_types::Bool>(
                "last_used_at DESC NULLS LAST, id DESC",
            ))
        }
    }};
}

/// One page of a group's keys, most recently used first (never-used keys last on every
/// backend), then newest; and how many keys match in all.
///
/// SQLite and MySQL sort `NULL` below every time, so `last_used_at DESC, id DESC` is that order
/// and the index `(group_id, last_used_at, id)` serves it read backwards: a page costs its rows
/// and the skipped index entries, not a sort of the group. PostgreSQL sorts `NULL` above, so it
/// says `NULLS LAST`, which its index `(group_id, last_used_at DESC NULLS LAST, id DESC)` serves.
pub(crate) async fn page_in_group(
    db: &Db,
    filter: &KeyFilter<'_>,
    offset: i64,
    limit: i64,
) -> Result<(Vec<StoredKey>, i64), DbError> {
    let nulls_sort_low = db.backend() != Backend::Postgres;
    with_conn!(db, |conn| {
        let total: i64 = filtered_keys!(filter).count().get_result(conn).await?;
        let rows = keys_page!(filter, nulls_sort_low)
            .offset(offset)
            .limit(limit)
            .select((ApiKeyRow::as_select(), KeyLifecycleRow::as_select()))
            .load(conn)
            .await?;
        Ok((rows, total))
    })
}

/// Up to `limit` stored values of a group's keys (all, or one status) with ids above `after_id`,
/// by id: one page of a streamed export.
pub(crate) async fn values_after(
    db: &Db,
    filter: &KeyFilter<'_>,
    after_id: i64,
    limit: i64,
) -> Result<Vec<(i64, String)>, DbError> {
    with_conn!(db, |conn| {
        Ok(filtered_keys!(filter)
            .filter(api_keys::id.gt(after_id))
            .order(api_keys::id)
            .limit(limit)
            .select((api_keys::id, api_keys::key_value))
            .load(conn)
            .await?)
    })
}

/// How many keys a group has (inside a `with_conn!` body or transaction).
macro_rules! count_in_group {
    ($conn:expr, $group_id:expr) => {
        api_keys::table
            .filter(api_keys::group_id.eq($group_id))
            .count()
            .get_result::<i64>($conn)
            .await?
    };
}

/// The keys of `$keys` (`NewApiKey`s) whose hash the group does not have yet, looked up by
/// the chunk's hashes (inside a transaction); reading the group's every hash instead made an
/// import quadratic in the group's size.
macro_rules! fresh_keys {
    ($conn:expr, $group_id:expr, $keys:expr) => {{
        let hashes: Vec<&str> = $keys.iter().map(|k| k.key_hash).collect();
        let existing: HashSet<String> = ids_of_hashes!($conn, $group_id, hashes)
            .into_iter()
            .map(|(_, hash)| hash)
            .collect();
        $keys
            .iter()
            .filter(|k| !existing.contains(k.key_hash))
            .cloned()
            .collect::<Vec<NewApiKey<'_>>>()
    }};
}

/// Deletes the keys with these ids, a chunk at a time (inside a transaction).
macro_rules! delete_ids {
    ($conn:expr, $ids:expr) => {
        for chunk in $ids.chunks(LOOKUP_CHUNK) {
            diesel::delete(api_keys::table.filter(api_keys::id.eq_any(chunk)))
                .execute(&mut *$conn)
                .await?;
        }
    };
}

/// The ids of a group's keys with these hashes, as `(id, hash)` (inside a transaction).
macro_rules! ids_of_hashes {
    ($conn:expr, $group_id:expr, $hashes:expr) => {{
        let mut found: Vec<(i64, String)> = Vec::new();
        for chunk in $hashes.chunks(LOOKUP_CHUNK) {
            found.extend(
                // Through the hash's index alone.
                api_keys::table
                    .filter(api_keys::key_hash.eq_any(chunk))
                    .filter(in_group_unindexed($group_id))
                    .select((api_keys::id, api_keys::key_hash))
                    .load::<(i64, String)>($conn)
                    .await?,
            );
        }
        found
    }};
}

/// Adds the keys whose hash is not yet in the group, usable (gpt-load's `active`) in lifecycle
/// `state` (`active` or `pending`) and with fresh counters, in one transaction. `keys` must be
/// unique by hash. Returns the added keys as `(id, hash)`.
pub(crate) async fn add_new_to_group(
    db: &Db,
    group_id: i64,
    keys: &[&SealedKey],
    state: &'static str,
    at: NaiveDateTime,
) -> Result<Vec<(i64, String)>, DbError> {
    with_conn!(
        db,
        // The whole transaction in one blocking call (`db::sqlite_batch`): an import adds
        // thousands of keys a chunk.
        sqlite | conn | {
            let keys: Vec<SealedKey> = keys.iter().map(|&key| key.clone()).collect();
            crate::db::sqlite_batch(conn, move |conn| {
                use diesel::RunQueryDsl as Sync;
                let mut added = Vec::new();
                for key in &keys {
                    // Each key looked up and inserted by the hash's index and the row id, so a
                    // chunk costs the same in a group of ten keys or of a million. Looked up
                    // right before its insert, the index page is still in the cache (a lookup
                    // of a thousand hashes at once, then the inserts, took 10 % longer). No
                    // `LIMIT ?`: with it SQLite prepared the statement again on every run.
                    let known = api_keys::table
                        .filter(api_keys::key_hash.eq(&key.hash))
                        .filter(in_group_unindexed(group_id))
                        .select(api_keys::id);
                    if !Sync::load::<i64>(known, conn)?.is_empty() {
                        continue;
                    }
                    let insert = diesel::insert_into(api_keys::table)
                        .values(NewApiKey {
                            state,
                            ..key.row(group_id, at)
                        })
                        .returning(api_keys::id);
                    added.push((Sync::get_result::<i64>(insert, conn)?, key.hash.clone()));
                }
                Ok(added)
            })
            .await
        },
        server | conn | {
            let rows: Vec<NewApiKey<'_>> = keys
                .iter()
                .map(|key| NewApiKey {
                    state,
                    ..key.row(group_id, at)
                })
                .collect();
            conn.transaction(async |conn| {
                let fresh = fresh_keys!(&mut *conn, group_id, rows);
                for chunk in fresh.chunks(INSERT_CHUNK) {
                    diesel::insert_into(api_keys::table)
                        .values(chunk)
                        .execute(conn)
                        .await?;
                }
                let hashes: Vec<&str> = fresh.iter().map(|k| k.key_hash).collect();
                Ok::<_, DbError>(ids_of_hashes!(&mut *conn, group_id, hashes))
            })
            .await
        }
    )
}

/// How many keys a group has.
pub(crate) async fn count_in_group(db: &Db, group_id: i64) -> Result<i64, DbError> {
    with_conn!(db, |conn| Ok(count_in_group!(conn, group_id)))
}

/// Deletes the group's keys with these hashes, in one transaction. Returns the ids deleted and
/// the group's new total.
pub(crate) async fn delete_by_hashes(
    db: &Db,
    group_id: i64,
    hashes: &[String],
) -> Result<(Vec<i64>, i64), DbError> {
    write_transaction!(db, |conn| {
        // MySQL has no RETURNING: find the ids first, then delete them.
        let ids: Vec<i64> = ids_of_hashes!(&mut *conn, group_id, hashes)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        delete_ids!(conn, ids);
        let total = count_in_group!(conn, group_id);
        Ok::<_, DbError>((ids, total))
    })
}

/// Makes the group's `invalid` keys with these hashes (all of them when `hashes` is `None`)
/// `active` with no failures, in one transaction. Returns the ids restored and the group's
/// total.
pub(crate) async fn restore_invalid(
    db: &Db,
    group_id: i64,
    hashes: Option<&[String]>,
    at: NaiveDateTime,
) -> Result<(Vec<i64>, i64), DbError> {
    write_transaction!(db, |conn| {
        let invalid = api_keys::table
            .filter(api_keys::group_id.eq(group_id))
            .filter(api_keys::status.eq("invalid"));
        // MySQL has no RETURNING: find the ids first, then update them.
        let mut ids: Vec<i64> = Vec::new();
        match hashes {
            Some(hashes) => {
                for chunk in hashes.chunks(LOOKUP_CHUNK) {
                    ids.extend(
                        invalid
                            .filter(api_keys::key_hash.eq_any(chunk))
                            .select(api_keys::id)
                            .load::<i64>(conn)
                            .await?,
                    );
                }
            }
            None => ids = invalid.select(api_keys::id).load(conn).await?,
        }
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            diesel::update(api_keys::table.filter(api_keys::id.eq_any(chunk)))
                .set((
                    api_keys::status.eq("active"),
                    api_keys::failure_count.eq(0_i64),
                    api_keys::updated_at.eq(at),
                ))
                .execute(conn)
                .await?;
        }
        let total = count_in_group!(conn, group_id);
        Ok::<_, DbError>((ids, total))
    })
}

/// Deletes a group's keys (all, or only those with `status`) in one transaction; returns the ids
/// deleted.
pub(crate) async fn delete_in_group(
    db: &Db,
    group_id: i64,
    status: Option<&str>,
) -> Result<Vec<i64>, DbError> {
    write_transaction!(db, |conn| {
        let mut in_group = api_keys::table
            .filter(api_keys::group_id.eq(group_id))
            .into_boxed();
        if let Some(status) = status {
            in_group = in_group.filter(api_keys::status.eq(status));
        }
        let ids: Vec<i64> = in_group.select(api_keys::id).load(conn).await?;
        delete_ids!(conn, ids);
        Ok::<_, DbError>(ids)
    })
}

/// Sets a key's notes; returns the key's group, or `None` when the key does not exist.
pub(crate) async fn set_notes(
    db: &Db,
    id: i64,
    notes: &str,
    at: NaiveDateTime,
) -> Result<Option<i64>, DbError> {
    write_transaction!(db, |conn| {
        let Some(group_id) = api_keys::table
            .find(id)
            .select(api_keys::group_id)
            .first::<i64>(conn)
            .await
            .optional()?
        else {
            return Ok(None);
        };
        diesel::update(api_keys::table.find(id))
            .set((api_keys::notes.eq(notes), api_keys::updated_at.eq(at)))
            .execute(conn)
            .await?;
        Ok::<_, DbError>(Some(group_id))
    })
}

/// Sets a key's status by hand (`active` also clears its failures); returns the key's group, or
/// `None` when the key does not exist.
pub(crate) async fn set_status(
    db: &Db,
    id: i64,
    status: &str,
    at: NaiveDateTime,
) -> Result<Option<i64>, DbError> {
    let failures_reset = status == "active";
    write_transaction!(db, |conn| {
        let Some((group_id, failure_count)) = api_keys::table
            .find(id)
            .select((api_keys::group_id, api_keys::failure_count))
            .first::<(i64, i64)>(conn)
            .await
            .optional()?
        else {
            return Ok(None);
        };
        let failure_count = if failures_reset { 0 } else { failure_count };
        diesel::update(api_keys::table.find(id))
            .set((
                api_keys::status.eq(status),
                api_keys::failure_count.eq(failure_count),
                api_keys::updated_at.eq(at),
            ))
            .execute(conn)
            .await?;
        Ok::<_, DbError>(Some(group_id))
    })
}

#[cfg(test)]
mod plans {
    use diesel::{sql_types::Text, sqlite::Sqlite};

    use super::*;
    use crate::db::test_support::TestDb;

    #[derive(QueryableByName)]
    struct Step {
        #[diesel(sql_type = Text)]
        detail: String,
    }

    /// SQLite's plan for `sql` (diesel's debug form; unbound parameters read as `NULL`).
    async fn plan(db: &Db, sql: String) -> String {
        steps(db, sql).await.unwrap().join("; ")
    }

    async fn steps(db: &Db, sql: String) -> Result<Vec<String>, DbError> {
        let sql = sql.split(" -- binds:").next().unwrap_or_default().to_owned();
        with_conn!(db, |conn| {
            let steps: Vec<Step> = diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}"))
                .load(conn)
                .await?;
            Ok(steps.into_iter().map(|s| s.detail).collect())
        })
    }

    /// With a million keys in a group, a page and an exact search must come from an index
    /// walk, not from a sort or a scan of the group: the plans say so without a clock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_pages_keys_and_finds_one_through_indexes() {
        let t = TestDb::sqlite().await;
        let group = KeyFilter {
            group_id: 1,
            status: None,
            state: None,
            hash: None,
        };
        let page = keys_page!(&group, true)
            .select(api_keys::id)
            .offset(900_000)
            .limit(50);
        let page = plan(&t.db, diesel::debug_query::<Sqlite, _>(&page).to_string()).await;
        assert!(page.contains("idx_api_keys_group_last_used_id"), "{page}");
        assert!(
            !page.contains("TEMP B-TREE"),
            "a page must not sort the group: {page}"
        );

        let one = KeyFilter {
            status: Some("active"),
            state: Some("active"),
            hash: Some("0123"),
            ..group
        };
        for sql in [
            diesel::debug_query::<Sqlite, _>(&filtered_keys!(&one).select(api_keys::id)).to_string(),
            diesel::debug_query::<Sqlite, _>(&keys_page!(&one, true).select(api_keys::id).limit(50))
                .to_string(),
        ] {
            let exact = plan(&t.db, sql).await;
            assert!(exact.contains("idx_api_keys_key_hash"), "{exact}");
            assert!(
                !exact.contains("group_last_used") && !exact.contains("status"),
                "{exact}"
            );
        }
        let hashes = ["0123", "4567"];
        let lookup = api_keys::table
            .filter(api_keys::key_hash.eq_any(hashes))
            .filter(in_group_unindexed(1))
            .select(api_keys::id);
        let lookup = plan(&t.db, diesel::debug_query::<Sqlite, _>(&lookup).to_string()).await;
        assert!(lookup.contains("idx_api_keys_key_hash"), "{lookup}");
    }
}

#[cfg(all(test, feature = "postgres"))]
mod postgres_plans {
    use diesel::{pg::Pg, sql_types::Text};
    use diesel_async::SimpleAsyncConnection;

    use super::*;
    use crate::db::test_support::TestDb;

    #[derive(QueryableByName)]
    struct Line {
        #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
        text: String,
    }

    /// PostgreSQL's plan for a query in diesel's debug form, its `$n` parameters replaced by
    /// the bound values (numbers only here).
    async fn plan(db: &Db, debug: String) -> String {
        let (sql, binds) = debug.split_once(" -- binds: ").expect("diesel's debug form");
        let binds: Vec<&str> = binds.trim_matches(['[', ']']).split(", ").collect();
        let mut sql = sql.to_owned();
        for (n, value) in binds.iter().enumerate().rev() {
            sql = sql.replace(&format!("${}", n + 1), value);
        }
        let lines = explain(db, sql).await.unwrap();
        lines
            .into_iter()
            .map(|line| line.text)
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn explain(db: &Db, sql: String) -> Result<Vec<Line>, DbError> {
        with_conn!(db, |conn| Ok(diesel::sql_query(format!("EXPLAIN {sql}"))
            .load(conn)
            .await?))
    }

    async fn execute(db: &Db, sql: &str) -> Result<(), DbError> {
        with_conn!(db, |conn| Ok(conn.batch_execute(sql).await?))
    }

    /// A page deep into a large group walks the keys page's index instead of sorting the group,
    /// and the order is the one SQLite and MySQL give: recently used first, never used last.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_pages_keys_through_the_recent_index() {
        let Some(t) = TestDb::postgres("postgres_pages_keys_through_the_recent_index").await else {
            return;
        };
        execute(
            &t.db,
            "INSERT INTO groups (id, name, channel_type, test_model) VALUES (1, 'big', 'openai', 'm');
             INSERT INTO api_keys (key_value, key_hash, group_id, last_used_at)
             SELECT 'sk-' || n, md5(n::text), 1,
                    CASE WHEN n % 3 = 0 THEN NULL
                         ELSE TIMESTAMP '2026-01-01' + n * INTERVAL '1 second' END
             FROM generate_series(1, 60000) AS n;
             ANALYZE api_keys;",
        )
        .await
        .unwrap();
        let group = KeyFilter {
            group_id: 1,
            status: None,
            state: None,
            hash: None,
        };
        let page = keys_page!(&group, false)
            .select(api_keys::id)
            .offset(50_000)
            .limit(50);
        let plan = plan(&t.db, diesel::debug_query::<Pg, _>(&page).to_string()).await;
        assert!(plan.contains("idx_api_keys_group_recent"), "{plan}");
        assert!(!plan.contains("Sort"), "a page must not sort the group:\n{plan}");

        let (first, total) = page_in_group(&t.db, &group, 0, 3).await.unwrap();
        assert_eq!(total, 60_000);
        let first: Vec<i64> = first.iter().map(|(key, _)| key.id).collect();
        assert_eq!(first, [59_999, 59_998, 59_996], "most recently used first");
        let (last, _) = page_in_group(&t.db, &group, 59_997, 3).await.unwrap();
        let last: Vec<i64> = last.iter().map(|(key, _)| key.id).collect();
        assert_eq!(last, [9, 6, 3], "never used last, newest first among them");
    }
}
