//! The queries of `migrate-keys`: sample stored keys, then rewrite every stored key value and
//! hash (api_keys and request_logs) in one transaction.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use crate::db::{
    Db, DbError,
    schema::{api_keys, request_logs},
    with_conn,
};

/// Rows read per query while rewriting (ids ascending).
const PAGE: i64 = 1_000;

/// Up to `limit` stored `(key_value, key_hash)` pairs, lowest ids first.
pub(crate) async fn sample_keys(db: &Db, limit: i64) -> Result<Vec<(String, String)>, DbError> {
    with_conn!(db, |conn| {
        Ok(api_keys::table
            .order(api_keys::id)
            .select((api_keys::key_value, api_keys::key_hash))
            .limit(limit)
            .load(conn)
            .await?)
    })
}

/// Why a rewrite stopped; nothing was written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RewriteError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{table} row {id}: {source}")]
    Value {
        table: &'static str,
        id: String,
        source: E,
    },
}

impl<E: std::error::Error + 'static> From<diesel::result::Error> for RewriteError<E> {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(err))
    }
}

/// A new stored value and its hash, from an old stored value.
pub(crate) type Rewrite<'a, E> = dyn Fn(&str) -> Result<(String, String), E> + Sync + 'a;

/// Rewrites every non-empty stored key value with `rewrite(stored) -> (new stored, new hash)`,
/// in `api_keys` and `request_logs`, in one transaction; returns the rows changed per table.
pub(crate) async fn rewrite_all<E>(
    db: &Db,
    rewrite: &Rewrite<'_, E>,
) -> Result<(usize, usize), RewriteError<E>>
where
    E: std::error::Error + Send + 'static,
{
    with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let mut keys_done = 0;
            let mut after = i64::MIN;
            loop {
                let page: Vec<(i64, String)> = api_keys::table
                    .filter(api_keys::id.gt(after))
                    .order(api_keys::id)
                    .select((api_keys::id, api_keys::key_value))
                    .limit(PAGE)
                    .load(conn)
                    .await?;
                let Some(&(last, _)) = page.last() else { break };
                after = last;
                for (id, stored) in page {
                    let (value, hash) = rewrite(&stored).map_err(|source| RewriteError::Value {
                        table: "api_keys",
                        id: id.to_string(),
                        source,
                    })?;
                    diesel::update(api_keys::table.find(id))
                        .set((api_keys::key_value.eq(value), api_keys::key_hash.eq(hash)))
                        .execute(conn)
                        .await?;
                    keys_done += 1;
                }
            }
            let mut logs_done = 0;
            let mut after = String::new();
            loop {
                let page: Vec<(String, String)> = request_logs::table
                    .filter(request_logs::id.gt(&after).and(request_logs::key_value.ne("")))
                    .order(request_logs::id)
                    .select((request_logs::id, request_logs::key_value))
                    .limit(PAGE)
                    .load(conn)
                    .await?;
                let Some((last, _)) = page.last() else { break };
                after = last.clone();
                for (id, stored) in page {
                    let (value, hash) = rewrite(&stored).map_err(|source| RewriteError::Value {
                        table: "request_logs",
                        id: id.clone(),
                        source,
                    })?;
                    diesel::update(request_logs::table.find(&id))
                        .set((request_logs::key_value.eq(value), request_logs::key_hash.eq(hash)))
                        .execute(conn)
                        .await?;
                    logs_done += 1;
                }
            }
            Ok::<_, RewriteError<E>>((keys_done, logs_done))
        })
        .await
    })
}
