//! The database: one pool per backend behind [`Db`], embedded migrations, and [`with_conn!`],
//! which runs one diesel body on whichever backend is live so repositories are written once.
//!
//! - SQLite (bundled) through diesel-async's `SyncConnectionWrapper`: WAL journal,
//!   `busy_timeout` 5 s, foreign keys and an 8 MiB page cache on every connection; a small pool,
//!   since SQLite has one
//!   writer at a time.
//! - PostgreSQL through tokio-postgres and MySQL/MariaDB through mysql_async (no libpq, no
//!   libmysqlclient).
//!
//! Migrations live in `migrations/{sqlite,postgres,mysql}` with identical names and are embedded
//! in the binary; [`Db::migrate`] runs the pending ones.

pub(crate) mod batch;
pub(crate) mod schema;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

use std::{fmt, path::Path, time::Duration};

use diesel::ConnectionError;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, PoolError, bb8::Pool};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

#[cfg(feature = "mysql")]
use diesel_async::AsyncMysqlConnection;
#[cfg(feature = "postgres")]
use diesel_async::AsyncPgConnection;
#[cfg(feature = "sqlite")]
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;

#[cfg(feature = "sqlite")]
pub(crate) type SqliteConn = SyncConnectionWrapper<diesel::SqliteConnection>;

#[cfg(feature = "sqlite")]
pub(crate) const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
#[cfg(feature = "postgres")]
pub(crate) const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");
#[cfg(feature = "mysql")]
pub(crate) const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/mysql");

/// The connection pool of the live backend.
#[derive(Clone)]
pub(crate) enum Db {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlite::SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(Pool<AsyncPgConnection>),
    #[cfg(feature = "mysql")]
    Mysql(Pool<AsyncMysqlConnection>),
}

/// How a bulk append competes with the runtime for the CPU (SQLite, whose writes run in this
/// process; the servers ignore it).
///
/// On one CPU, a log batch of hundreds of rows, or the WAL checkpoint that follows one, held the
/// CPU for milliseconds at the runtime's own priority, and every request that arrived meanwhile
/// waited: the tail of the latency at a fixed rate. A low-priority append gives the CPU back as
/// soon as the runtime has work, and takes what the runtime leaves. When the runtime leaves too
/// little (the CPU is saturated) the log writer falls behind; it then appends at normal priority
/// until it has caught up, so its backlog, and what a crash can lose, stay as they were.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AppendPriority {
    /// Below the runtime's threads.
    Low,
    /// As the runtime's threads.
    Normal,
}

/// Which database a [`Db`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
    Mysql,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
        })
    }
}

/// A database failure, with enough context to act on and no credentials.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    /// The database cannot be reached or refused the connection.
    #[error("cannot connect to the {backend} database: {message}")]
    Connect { backend: Backend, message: String },
    /// No pooled connection became free in time, or the pool broke one.
    #[error("database connection pool: {0}")]
    Pool(String),
    /// A query failed.
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migration(String),
}

impl From<PoolError> for DbError {
    fn from(err: PoolError) -> Self {
        Self::Pool(err.to_string())
    }
}

impl From<bb8::RunError<PoolError>> for DbError {
    fn from(err: bb8::RunError<PoolError>) -> Self {
        match err {
            bb8::RunError::User(err) => Self::Pool(err.to_string()),
            bb8::RunError::TimedOut => Self::Pool("timed out waiting for a connection".to_owned()),
        }
    }
}

/// How long a request waits for a pooled connection.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds a pool and checks out one connection, so a bad URL or an unreachable server is
/// reported at start-up rather than on the first request.
#[cfg(any(feature = "postgres", feature = "mysql"))]
macro_rules! build_pool {
    ($manager:expr, $max:expr, $backend:expr) => {{
        let connect_error = |message: String| DbError::Connect {
            backend: $backend,
            message,
        };
        let pool = Pool::builder()
            .max_size(($max).max(1))
            .connection_timeout(CHECKOUT_TIMEOUT)
            .build($manager)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        drop(pool.get().await.map_err(|e| connect_error(e.to_string()))?);
        pool
    }};
}

/// Runs `$work` with a migration harness over one pooled connection of the live backend and
/// that backend's embedded migrations, on a blocking thread (the async harness blocks on the
/// runtime internally).
macro_rules! with_harness {
    ($db:expr, |$harness:ident, $migrations:ident| $work:expr) => {
        match $db {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(pool) => with_harness!(@on pool, SQLITE_MIGRATIONS, $harness, $migrations, $work),
            #[cfg(feature = "postgres")]
            Self::Postgres(pool) => with_harness!(@on pool, POSTGRES_MIGRATIONS, $harness, $migrations, $work),
            #[cfg(feature = "mysql")]
            Self::Mysql(pool) => with_harness!(@on pool, MYSQL_MIGRATIONS, $harness, $migrations, $work),
        }
    };
    (@on $pool:ident, $embedded:expr, $harness:ident, $migrations:ident, $work:expr) => {{
        let conn = $pool.get_owned().await?;
        tokio::task::spawn_blocking(move || {
            let mut $harness = diesel_async::AsyncMigrationHarness::new(conn);
            let $migrations = $embedded;
            $work.map_err(|e| DbError::Migration(e.to_string()))
        })
        .await
        .map_err(|e| DbError::Migration(e.to_string()))?
    }};
}

impl Db {
    /// Opens (creating it and its directory if needed) a SQLite database file.
    #[cfg(feature = "sqlite")]
    pub(crate) async fn sqlite(path: &Path) -> Result<Self, DbError> {
        use diesel::connection::SimpleConnection;
        use diesel_async::AsyncConnection;

        let connect_error = |message: String| DbError::Connect {
            backend: Backend::Sqlite,
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| connect_error(format!("cannot create {}: {e}", dir.display())))?;
        }
        let url = path
            .to_str()
            .ok_or_else(|| connect_error("the path is not valid UTF-8".to_owned()))?
            .to_owned();
        let mut config = ManagerConfig::<SqliteConn>::default();
        config.custom_setup = Box::new(|url| {
            let url = url.to_owned();
            Box::pin(async move {
                let mut conn = SqliteConn::establish(&url).await?;
                conn.spawn_blocking(|c| c.batch_execute(sqlite::CONNECTION_SETUP))
                    .await
                    .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
                Ok(conn)
            })
        });
        let manager = AsyncDieselConnectionManager::<SqliteConn>::new_with_config(url, config);
        let pool = Pool::builder()
            .max_size(4)
            .connection_timeout(CHECKOUT_TIMEOUT)
            .build(manager)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        // Surface a bad path or a corrupt file now rather than on the first request.
        drop(pool.get().await.map_err(|e| connect_error(e.to_string()))?);
        Ok(Self::Sqlite(sqlite::SqlitePool::new(pool, path)))
    }

    /// Connects to PostgreSQL.
    #[cfg(feature = "postgres")]
    pub(crate) async fn postgres(url: &str, max_connections: u32) -> Result<Self, DbError> {
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
        Ok(Self::Postgres(build_pool!(
            manager,
            max_connections,
            Backend::Postgres
        )))
    }

    /// Connects to MySQL or MariaDB.
    #[cfg(feature = "mysql")]
    pub(crate) async fn mysql(url: &str, max_connections: u32) -> Result<Self, DbError> {
        let manager = AsyncDieselConnectionManager::<AsyncMysqlConnection>::new(url);
        Ok(Self::Mysql(build_pool!(manager, max_connections, Backend::Mysql)))
    }

    /// Checks that the database answers (`SELECT 1`).
    pub(crate) async fn ping(&self) -> Result<(), DbError> {
        use diesel_async::RunQueryDsl;
        with_conn!(self, |conn| {
            diesel::sql_query("SELECT 1").execute(conn).await?;
            Ok(())
        })
    }

    /// The live backend.
    pub(crate) fn backend(&self) -> Backend {
        crate::db::backend_of!(self)
    }

    /// Runs the pending migrations; returns how many ran.
    pub(crate) async fn migrate(&self) -> Result<usize, DbError> {
        with_harness!(self, |harness, migrations| harness
            .run_pending_migrations(migrations)
            .map(|done| done.len()))
    }

    /// How many embedded migrations the database has not run yet (a follower waits for the
    /// leader to run them).
    pub(crate) async fn pending_migrations(&self) -> Result<usize, DbError> {
        with_harness!(self, |harness, migrations| harness
            .pending_migrations(migrations)
            .map(|pending| pending.len()))
    }
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Db").field(&self.backend()).finish()
    }
}

/// The [`Backend`] of `$value`, a value of an enum with one variant per backend (`Sqlite`,
/// `Postgres`, `Mysql`, each present with its feature): the pool and the blocking connection.
macro_rules! backend_of {
    ($value:expr) => {
        match $value {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => $crate::db::Backend::Sqlite,
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => $crate::db::Backend::Postgres,
            #[cfg(feature = "mysql")]
            Self::Mysql(_) => $crate::db::Backend::Mysql,
        }
    };
}
pub(crate) use backend_of;

/// Runs `$body` with `$conn` bound to a pooled connection of the live backend. The body is
/// compiled once per backend, so a query written once works on all three.
///
/// The second form takes one body for SQLite and one for the servers, for the few statements
/// SQLite cannot run (multi-row `INSERT` through the async wrapper); the third gives the SQLite
/// body the [`sqlite::SqlitePool`] itself (its append connection) instead of a pooled connection.
macro_rules! with_conn {
    ($db:expr, |$conn:ident| $body:expr) => {
        $crate::db::with_conn!($db, sqlite | $conn | $body, server | $conn | $body)
    };
    ($db:expr, sqlite |$lite:ident| $lite_body:expr, server |$conn:ident| $body:expr) => {
        $crate::db::with_conn!(
            $db,
            sqlite_pool | pool | {
                let mut pooled = pool.get().await.map_err($crate::db::DbError::from)?;
                let $lite = &mut *pooled;
                $lite_body
            },
            server | $conn | $body
        )
    };
    ($db:expr, sqlite_pool |$lite:ident| $lite_body:expr, server |$conn:ident| $body:expr) => {{
        match $db {
            #[cfg(feature = "sqlite")]
            $crate::db::Db::Sqlite($lite) => $lite_body,
            #[cfg(feature = "postgres")]
            $crate::db::Db::Postgres(pool) => {
                let mut pooled = pool.get().await.map_err($crate::db::DbError::from)?;
                let $conn = &mut *pooled;
                $body
            }
            #[cfg(feature = "mysql")]
            $crate::db::Db::Mysql(pool) => {
                let mut pooled = pool.get().await.map_err($crate::db::DbError::from)?;
                let $conn = &mut *pooled;
                $body
            }
        }
    }};
}
pub(crate) use with_conn;

/// Runs `$body` (the contents of an async block that returns a `Result`) in a transaction that
/// writes, on a pooled connection. SQLite's begins `IMMEDIATE`, taking the write lock first: a
/// deferred transaction that reads before it writes fails at once (`SQLITE_BUSY_SNAPSHOT`, which
/// the busy timeout does not wait out) when another connection commits in between, as the key
/// write-behind and the log writer do at any moment.
macro_rules! write_transaction {
    ($db:expr, |$conn:ident| $body:expr) => {
        $crate::db::with_conn!(
            $db,
            sqlite | lite | { lite.immediate_transaction(async |$conn| $body).await },
            server | conn | { diesel_async::AsyncConnection::transaction(conn, async |$conn| $body).await }
        )
    };
}
pub(crate) use write_transaction;

/// Runs `write` on SQLite's blocking thread in one `IMMEDIATE` transaction: a batch (an import
/// chunk) crosses to the blocking pool once, where an `.await` per row would cross there and
/// back for every row. (The background writers' batches go through the append connection,
/// `db::sqlite`.)
#[cfg(feature = "sqlite")]
pub(crate) async fn sqlite_batch<R: Send + 'static>(
    conn: &mut SqliteConn,
    write: impl FnOnce(&mut diesel::SqliteConnection) -> diesel::QueryResult<R> + Send + 'static,
) -> Result<R, DbError> {
    conn.spawn_blocking(move |conn| conn.immediate_transaction(write))
        .await
        .map_err(DbError::from)
}

#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
