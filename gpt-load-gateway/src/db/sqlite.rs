//! SQLite's two ways in: the diesel pool every repository uses, and one plain connection for
//! bulk appends (request logs), whose rows are bound straight to a prepared statement.
//!
//! A request-log batch is hundreds of rows of 30 columns. Through diesel each multi-row
//! statement is walked as a query tree three times per execution (to check it can be cached,
//! to collect its bind types, to bind), which cost as much CPU as SQLite's own work under load
//! (bench/results/2026-12-06-profile-09c129658938.md). A `rusqlite` statement binds each value
//! by position and is stepped once per row. Both connections open the same file with the same
//! settings; SQLite's write lock and the busy timeout order their transactions.

use std::{
    ops::Deref,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use diesel::result::{DatabaseErrorKind, Error as QueryError};
use diesel_async::pooled_connection::bb8::Pool;

use super::{DbError, SqliteConn};

/// The settings every SQLite connection of the gateway runs with. WAL lets readers proceed
/// while a writer commits; the busy timeout makes a second writer wait instead of failing. An
/// 8 MiB page cache per connection (SQLite's default is 2 MiB) keeps the log indexes' hot pages
/// in memory under load instead of reading them back for every batch.
pub(crate) const CONNECTION_SETUP: &str = "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; \
     PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -8192;";

/// The diesel pool of a SQLite database, and its append connection. Derefs to the pool.
#[derive(Clone)]
pub(crate) struct SqlitePool {
    pool: Pool<SqliteConn>,
    append: Arc<AppendConnection>,
}

/// The plain connection for bulk appends, opened on first use (most commands never append).
struct AppendConnection {
    path: PathBuf,
    conn: Mutex<Option<rusqlite::Connection>>,
}

impl SqlitePool {
    pub(super) fn new(pool: Pool<SqliteConn>, path: &Path) -> Self {
        Self {
            pool,
            append: Arc::new(AppendConnection {
                path: path.to_owned(),
                conn: Mutex::new(None),
            }),
        }
    }

    /// Runs `write` on a blocking thread, in one `IMMEDIATE` transaction on the append
    /// connection: committed when it returns `Ok`, rolled back otherwise. Appends are serial
    /// (one connection); the log writer is their one caller.
    pub(crate) async fn append<R: Send + 'static>(
        &self,
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, DbError> {
        let append = Arc::clone(&self.append);
        tokio::task::spawn_blocking(move || {
            // A panic in an earlier `write` poisons the lock, not the connection: its
            // transaction was rolled back when the panic dropped it.
            let mut slot = append
                .conn
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let conn = match &mut *slot {
                Some(conn) => conn,
                empty => empty.insert(open(&append.path)?),
            };
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let done = write(&tx)?;
            tx.commit()?;
            Ok(done)
        })
        .await
        .map_err(|e| DbError::Pool(format!("the SQLite append task failed: {e}")))?
        .map_err(query_error)
    }
}

impl Deref for SqlitePool {
    type Target = Pool<SqliteConn>;

    fn deref(&self) -> &Self::Target {
        &self.pool
    }
}

fn open(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(CONNECTION_SETUP)?;
    Ok(conn)
}

/// Maps a SQLite error to the diesel error the pool's connections report for it, so callers
/// classify failures once (a duplicate row is a `UniqueViolation` either way).
fn query_error(err: rusqlite::Error) -> DbError {
    use rusqlite::ffi;
    let kind = match &err {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                DatabaseErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => DatabaseErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => DatabaseErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => DatabaseErrorKind::CheckViolation,
            _ => DatabaseErrorKind::Unknown,
        },
        _ => DatabaseErrorKind::Unknown,
    };
    DbError::Query(QueryError::DatabaseError(kind, Box::new(err.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraint_failures_map_to_the_kinds_diesel_reports() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE t (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                             n INTEGER CHECK (n > 0), parent INTEGER REFERENCES parent (id));
             PRAGMA foreign_keys = ON;
             INSERT INTO t VALUES ('a', 'x', 1, NULL);",
        )
        .unwrap();
        let kind_of = |sql: &str| match query_error(conn.execute(sql, []).unwrap_err()) {
            DbError::Query(QueryError::DatabaseError(kind, info)) => {
                assert!(!info.message().is_empty());
                format!("{kind:?}")
            }
            other => panic!("not a database error: {other:?}"),
        };
        assert_eq!(
            kind_of("INSERT INTO t VALUES ('a', 'y', 1, NULL)"),
            "UniqueViolation"
        );
        assert_eq!(
            kind_of("INSERT INTO t VALUES ('b', 'x', 1, NULL)"),
            "UniqueViolation"
        );
        assert_eq!(
            kind_of("INSERT INTO t VALUES ('b', NULL, 1, NULL)"),
            "NotNullViolation"
        );
        assert_eq!(
            kind_of("INSERT INTO t VALUES ('b', 'y', 0, NULL)"),
            "CheckViolation"
        );
        assert_eq!(
            kind_of("INSERT INTO t VALUES ('b', 'y', 1, 7)"),
            "ForeignKeyViolation"
        );
        assert_eq!(kind_of("INSERT INTO missing VALUES (1)"), "Unknown");
    }
}
