//! The queries of `migrate-keys`: sample stored keys, then rewrite every stored key value and
//! hash (api_keys and request_logs) and every stored proxy key list (the global setting and
//! each group's) in one transaction. Start-up uses the proxy key part alone to encrypt lists
//! written in plain text.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::{
    Db, DbError,
    schema::{api_keys, groups, request_logs, system_settings},
    with_conn, write_transaction,
};

/// The `system_settings` row holding the global proxy keys.
const PROXY_KEYS_SETTING: &str = "proxy_keys";

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

/// Every stored proxy key list: the global setting's (when its row exists), then each group's.
pub(crate) async fn proxy_key_lists(db: &Db) -> Result<Vec<String>, DbError> {
    with_conn!(db, |conn| {
        let mut lists: Vec<String> = system_settings::table
            .filter(system_settings::setting_key.eq(PROXY_KEYS_SETTING))
            .select(system_settings::setting_value)
            .load(conn)
            .await?;
        lists.extend(
            groups::table
                .order(groups::id)
                .select(groups::proxy_keys)
                .load::<String>(conn)
                .await?,
        );
        Ok(lists)
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

impl<E: std::error::Error + 'static> RewriteError<E> {
    /// `rewrite` applied to the value stored in row `id` of `table`; a failure names the row.
    fn of_row<T>(
        rewrite: impl FnOnce(&str) -> Result<T, E>,
        table: &'static str,
        id: impl ToString,
        stored: &str,
    ) -> Result<T, Self> {
        rewrite(stored).map_err(|source| Self::Value {
            table,
            id: id.to_string(),
            source,
        })
    }
}

/// A new stored value and its hash, from an old stored value.
pub(crate) type Rewrite<'a, E> = dyn Fn(&str) -> Result<(String, String), E> + Sync + 'a;

/// A new stored proxy key list from an old one; `None` leaves the list as it is.
pub(crate) type ListRewrite<'a, E> = dyn Fn(&str) -> Result<Option<String>, E> + Sync + 'a;

/// Rewrites the global and per-group proxy key lists on `$conn` (inside the caller's
/// transaction) with `$rewrite`; evaluates to the number of lists changed.
macro_rules! rewrite_lists {
    ($conn:expr, $rewrite:expr) => {{
        let conn = $conn;
        let rewrite: &ListRewrite<'_, _> = $rewrite;
        let mut changed = 0_usize;
        let settings: Vec<String> = system_settings::table
            .filter(system_settings::setting_key.eq(PROXY_KEYS_SETTING))
            .select(system_settings::setting_value)
            .load(&mut *conn)
            .await?;
        for stored in settings {
            let new = RewriteError::of_row(rewrite, "system_settings", PROXY_KEYS_SETTING, &stored)?;
            if let Some(new) = new {
                diesel::update(
                    system_settings::table.filter(system_settings::setting_key.eq(PROXY_KEYS_SETTING)),
                )
                .set(system_settings::setting_value.eq(new))
                .execute(&mut *conn)
                .await?;
                changed += 1;
            }
        }
        let lists: Vec<(i64, String)> = groups::table
            .filter(groups::proxy_keys.ne(""))
            .order(groups::id)
            .select((groups::id, groups::proxy_keys))
            .load(&mut *conn)
            .await?;
        for (id, stored) in lists {
            let new = RewriteError::of_row(rewrite, "groups", id, &stored)?;
            if let Some(new) = new {
                diesel::update(groups::table.find(id))
                    .set(groups::proxy_keys.eq(new))
                    .execute(&mut *conn)
                    .await?;
                changed += 1;
            }
        }
        changed
    }};
}

/// Rewrites the stored proxy key lists with `rewrite` in one transaction; returns how many
/// changed.
pub(crate) async fn rewrite_proxy_key_lists<E>(
    db: &Db,
    rewrite: &ListRewrite<'_, E>,
) -> Result<usize, RewriteError<E>>
where
    E: std::error::Error + Send + 'static,
{
    write_transaction!(db, |conn| Ok::<_, RewriteError<E>>(rewrite_lists!(conn, rewrite)))
}

/// Rows and lists changed by [`rewrite_all`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rewritten {
    pub(crate) api_keys: usize,
    pub(crate) request_logs: usize,
    pub(crate) proxy_key_lists: usize,
}

/// Rewrites every non-empty stored key value with `rewrite(stored) -> (new stored, new hash)`,
/// in `api_keys` and `request_logs`, and every proxy key list with `lists`, in one transaction.
pub(crate) async fn rewrite_all<E>(
    db: &Db,
    rewrite: &Rewrite<'_, E>,
    lists: &ListRewrite<'_, E>,
) -> Result<Rewritten, RewriteError<E>>
where
    E: std::error::Error + Send + 'static,
{
    write_transaction!(db, |conn| {
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
                let (value, hash) = RewriteError::of_row(rewrite, "api_keys", id, &stored)?;
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
                let (value, hash) = RewriteError::of_row(rewrite, "request_logs", &id, &stored)?;
                diesel::update(request_logs::table.find(&id))
                    .set((request_logs::key_value.eq(value), request_logs::key_hash.eq(hash)))
                    .execute(conn)
                    .await?;
                logs_done += 1;
            }
        }
        let lists_done = rewrite_lists!(&mut *conn, lists);
        Ok::<_, RewriteError<E>>(Rewritten {
            api_keys: keys_done,
            request_logs: logs_done,
            proxy_key_lists: lists_done,
        })
    })
}
