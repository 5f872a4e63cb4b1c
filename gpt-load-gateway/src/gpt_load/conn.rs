//! One blocking connection to any of the three backends, for the one-off work of adoption,
//! import and export: diesel's synchronous API on SQLite, and diesel-async's connections
//! wrapped to look synchronous on the servers. Every method blocks: call them on a blocking
//! thread of the runtime (`tokio::task::spawn_blocking`).

use std::collections::BTreeSet;

use diesel::connection::SimpleConnection;
use diesel::sql_types::Text;
use diesel::{Connection, ConnectionError, QueryResult, QueryableByName, RunQueryDsl};

use crate::config::database::DatabaseDsn;
use crate::db::Backend;

#[cfg(feature = "mysql")]
type MysqlConn =
    diesel_async::async_connection_wrapper::AsyncConnectionWrapper<diesel_async::AsyncMysqlConnection>;
#[cfg(feature = "postgres")]
type PgConn = diesel_async::async_connection_wrapper::AsyncConnectionWrapper<diesel_async::AsyncPgConnection>;

/// A blocking connection to the live backend.
#[cfg_attr(
    all(feature = "sqlite", feature = "postgres", feature = "mysql"),
    expect(
        clippy::large_enum_variant,
        reason = "a few per process, for one-off work; boxing would hide the connection types diesel needs"
    )
)]
pub(crate) enum SyncConn {
    #[cfg(feature = "sqlite")]
    Sqlite(diesel::SqliteConnection),
    #[cfg(feature = "postgres")]
    Postgres(PgConn),
    #[cfg(feature = "mysql")]
    Mysql(MysqlConn),
}

/// Runs `$body` with `$c` bound to the concrete connection, so one diesel body serves all
/// three backends (it is compiled once per backend).
macro_rules! on_conn {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            #[cfg(feature = "sqlite")]
            $crate::gpt_load::conn::SyncConn::Sqlite($c) => $body,
            #[cfg(feature = "postgres")]
            $crate::gpt_load::conn::SyncConn::Postgres($c) => $body,
            #[cfg(feature = "mysql")]
            $crate::gpt_load::conn::SyncConn::Mysql($c) => $body,
        }
    };
}
pub(crate) use on_conn;

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

impl SyncConn {
    /// Opens a connection. SQLite gets foreign keys on and a busy timeout, as the pool does.
    pub(crate) fn open(dsn: &DatabaseDsn) -> Result<Self, ConnectionError> {
        match dsn {
            #[cfg(feature = "sqlite")]
            DatabaseDsn::Sqlite { path } => {
                let url = path.to_str().ok_or_else(|| {
                    ConnectionError::InvalidConnectionUrl("the path is not valid UTF-8".to_owned())
                })?;
                let mut conn = diesel::SqliteConnection::establish(url)?;
                conn.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;")
                    .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
                Ok(Self::Sqlite(conn))
            }
            #[cfg(feature = "postgres")]
            DatabaseDsn::Postgres { url } => {
                let mut conn = PgConn::establish(url)?;
                // Timestamps read as text come out in UTC, whatever the server's zone.
                conn.batch_execute("SET TIME ZONE 'UTC'")
                    .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
                Ok(Self::Postgres(conn))
            }
            #[cfg(feature = "mysql")]
            DatabaseDsn::Mysql { url } => Ok(Self::Mysql(MysqlConn::establish(url)?)),
            #[allow(unreachable_patterns, reason = "reached only in builds without a backend")]
            _ => Err(ConnectionError::InvalidConnectionUrl(dsn.not_built_in())),
        }
    }

    /// The backend this connection talks to.
    pub(crate) fn backend(&self) -> Backend {
        crate::db::backend_of!(self)
    }

    /// Runs statements that return no rows.
    pub(crate) fn execute(&mut self, sql: &str) -> QueryResult<()> {
        on_conn!(self, |c| c.batch_execute(sql))
    }

    /// The SQL type a value is cast to for reading as text.
    pub(crate) fn text_type(&self) -> &'static str {
        match self.backend() {
            Backend::Mysql => "CHAR",
            Backend::Sqlite | Backend::Postgres => "TEXT",
        }
    }

    /// The tables of the current database (SQLite, MySQL) or schema (PostgreSQL).
    pub(crate) fn tables(&mut self) -> QueryResult<BTreeSet<String>> {
        let sql = match self.backend() {
            Backend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table'",
            Backend::Postgres => {
                "SELECT CAST(table_name AS TEXT) AS name FROM information_schema.tables \
                 WHERE table_schema = current_schema()"
            }
            Backend::Mysql => {
                "SELECT CAST(table_name AS CHAR) AS name FROM information_schema.tables \
                 WHERE table_schema = DATABASE()"
            }
        };
        let rows: Vec<Name> = on_conn!(self, |c| diesel::sql_query(sql).load(c))?;
        Ok(rows.into_iter().map(|r| r.name).collect())
    }

    /// The column names of `table` (in the current database or schema; `table` is trusted).
    pub(crate) fn columns(&mut self, table: &str) -> QueryResult<BTreeSet<String>> {
        let sql = match self.backend() {
            Backend::Sqlite => format!("SELECT name FROM pragma_table_info('{table}')"),
            Backend::Postgres => format!(
                "SELECT CAST(column_name AS TEXT) AS name FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = '{table}'"
            ),
            Backend::Mysql => format!(
                "SELECT CAST(column_name AS CHAR) AS name FROM information_schema.columns \
                 WHERE table_schema = DATABASE() AND table_name = '{table}'"
            ),
        };
        let rows: Vec<Name> = on_conn!(self, |c| diesel::sql_query(&sql).load(c))?;
        Ok(rows.into_iter().map(|r| r.name).collect())
    }

    /// Runs `body` in one transaction: committed when it returns `Ok`, rolled back otherwise.
    ///
    /// Diesel's transaction manager, entered by hand because `body` needs the enum, not the
    /// concrete connection: statements that open a transaction of their own inside it (SQLite
    /// batch inserts) become savepoints. MySQL commits implicitly on DDL: callers keep DDL out
    /// of a MySQL transaction.
    pub(crate) fn transaction<T, E>(&mut self, body: impl FnOnce(&mut Self) -> Result<T, E>) -> Result<T, E>
    where
        E: From<diesel::result::Error>,
    {
        use diesel::connection::TransactionManager;

        fn begin<C: Connection>(c: &mut C) -> QueryResult<()> {
            C::TransactionManager::begin_transaction(c)
        }
        fn commit<C: Connection>(c: &mut C) -> QueryResult<()> {
            C::TransactionManager::commit_transaction(c)
        }
        fn rollback<C: Connection>(c: &mut C) -> QueryResult<()> {
            C::TransactionManager::rollback_transaction(c)
        }
        on_conn!(&mut *self, |c| begin(c))?;
        match body(self) {
            Ok(value) => {
                on_conn!(self, |c| commit(c))?;
                Ok(value)
            }
            Err(err) => {
                // The error that matters is the body's; a failed rollback means the
                // connection is gone, and the server rolls back on disconnect.
                let _ = on_conn!(self, |c| rollback(c));
                Err(err)
            }
        }
    }
}

/// `ident` quoted for `backend`.
pub(crate) fn quote(backend: Backend, ident: &str) -> String {
    match backend {
        Backend::Mysql => format!("`{ident}`"),
        Backend::Sqlite | Backend::Postgres => format!("\"{ident}\""),
    }
}

impl SyncConn {
    /// Runs the embedded migrations that are not recorded yet, and records them, without a
    /// transaction of their own: inside [`SyncConn::transaction`] they commit or roll back
    /// with the caller's work. Returns how many ran.
    pub(crate) fn baseline(&mut self) -> Result<usize, MigrationFailed> {
        use diesel::migration::{MigrationConnection, MigrationSource};

        const RECORD: &str = "INSERT INTO __diesel_schema_migrations (version) VALUES (?)";
        const RECORD_PG: &str = "INSERT INTO __diesel_schema_migrations (version) VALUES ($1)";
        macro_rules! run {
            ($c:expr, $migrations:expr, $record:expr) => {{
                let c = $c;
                c.setup()?;
                let applied: Vec<Name> =
                    diesel::sql_query("SELECT version AS name FROM __diesel_schema_migrations").load(c)?;
                let applied: BTreeSet<String> = applied.into_iter().map(|r| r.name).collect();
                let mut ran = 0;
                for migration in MigrationSource::migrations(&$migrations).map_err(MigrationFailed::new)? {
                    let version = migration.name().version().to_string();
                    if applied.contains(&version) {
                        continue;
                    }
                    migration.run(c).map_err(MigrationFailed::new)?;
                    diesel::sql_query($record)
                        .bind::<Text, _>(&version)
                        .execute(c)?;
                    ran += 1;
                }
                Ok(ran)
            }};
        }
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => run!(c, crate::db::SQLITE_MIGRATIONS, RECORD),
            #[cfg(feature = "postgres")]
            Self::Postgres(c) => run!(c, crate::db::POSTGRES_MIGRATIONS, RECORD_PG),
            #[cfg(feature = "mysql")]
            Self::Mysql(c) => run!(c, crate::db::MYSQL_MIGRATIONS, RECORD),
        }
    }
}

/// An embedded migration failed to run.
#[derive(Debug, thiserror::Error)]
#[error("database migration failed: {0}")]
pub(crate) struct MigrationFailed(String);

impl MigrationFailed {
    fn new(err: impl std::fmt::Display) -> Self {
        Self(err.to_string())
    }
}

impl From<diesel::result::Error> for MigrationFailed {
    fn from(err: diesel::result::Error) -> Self {
        Self::new(err)
    }
}
