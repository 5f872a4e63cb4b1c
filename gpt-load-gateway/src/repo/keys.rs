//! `api_keys`: import, listing, and the write-behind of key state.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use crate::{
    db::{Db, DbError, schema::api_keys, with_conn},
    models::{ApiKeyRow, NewApiKey},
};

/// Rows per multi-row insert (9 bind parameters each; well under every backend's limit).
const INSERT_CHUNK: usize = 1_000;

/// Inserts keys in one transaction; returns how many.
pub(crate) async fn insert_many(db: &Db, keys: &[NewApiKey<'_>]) -> Result<usize, DbError> {
    with_conn!(
        db,
        // A local file inside one transaction: row by row costs microseconds per key.
        sqlite | conn | {
            conn.transaction(async |conn| {
                let mut inserted = 0;
                for key in keys {
                    inserted += diesel::insert_into(api_keys::table)
                        .values(key)
                        .execute(conn)
                        .await?;
                }
                Ok::<_, DbError>(inserted)
            })
            .await
        },
        server | conn | {
            conn.transaction(async |conn| {
                let mut inserted = 0;
                for chunk in keys.chunks(INSERT_CHUNK) {
                    inserted += diesel::insert_into(api_keys::table)
                        .values(chunk)
                        .execute(conn)
                        .await?;
                }
                Ok::<_, DbError>(inserted)
            })
            .await
        }
    )
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

/// Every key, for loading the pool at start (ordered by group, then id).
pub(crate) async fn list_all(db: &Db) -> Result<Vec<ApiKeyRow>, DbError> {
    with_conn!(db, |conn| {
        Ok(api_keys::table
            .order((api_keys::group_id, api_keys::id))
            .select(ApiKeyRow::as_select())
            .load(conn)
            .await?)
    })
}

/// The live state of one key, as the pool reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyStateUpdate {
    pub(crate) id: i64,
    pub(crate) status: &'static str,
    pub(crate) failure_count: i64,
    /// Requests since the previous update (added to `request_count`).
    pub(crate) new_requests: i64,
    /// Set when the key was used since the previous update.
    pub(crate) last_used_at: Option<NaiveDateTime>,
}

/// Writes a batch of key states in one transaction; returns how many rows still existed.
pub(crate) async fn apply_states(
    db: &Db,
    updates: &[KeyStateUpdate],
    at: NaiveDateTime,
) -> Result<usize, DbError> {
    with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let mut written = 0;
            for u in updates {
                let row = api_keys::table.find(u.id);
                let set = (
                    api_keys::status.eq(u.status),
                    api_keys::failure_count.eq(u.failure_count),
                    api_keys::request_count.eq(api_keys::request_count + u.new_requests),
                    api_keys::updated_at.eq(at),
                );
                written += match u.last_used_at {
                    Some(used) => {
                        diesel::update(row)
                            .set((set, api_keys::last_used_at.eq(used)))
                            .execute(conn)
                            .await?
                    }
                    None => diesel::update(row).set(set).execute(conn).await?,
                };
            }
            Ok::<_, DbError>(written)
        })
        .await
    })
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
