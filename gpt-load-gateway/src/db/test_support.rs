//! Real databases for tests, each isolated: a temporary SQLite file, or a fresh PostgreSQL /
//! MariaDB database created for the test and dropped afterwards.
//!
//! Servers come from `TEST_PG_URL` and `TEST_MYSQL_URL` (defaults: the project machines'
//! `postgres://postgres@127.0.0.1:5432/test` and `mysql://root@127.0.0.1:3306/test`). When a
//! server is unreachable the test fails under `CI=true` and otherwise prints one `SKIP` line.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use diesel_async::{AsyncConnection, SimpleAsyncConnection};

use super::{Backend, Db};

pub(crate) struct TestDb {
    pub(crate) db: Db,
    /// The `DATABASE_DSN` that reaches this database.
    pub(crate) dsn: String,
    _dir: Option<tempfile::TempDir>,
    drop_database: Option<(Backend, String, String)>,
}

fn unique_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "gptload_t_{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `url` with its database (the last path segment) replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let prefix = base.rsplit_once('/').map_or(base, |(p, _)| p);
    match query {
        Some(q) => format!("{prefix}/{database}?{q}"),
        None => format!("{prefix}/{database}"),
    }
}

fn unreachable(test: &str, var: &str, err: impl std::fmt::Display) -> Option<TestDb> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: the test server is unreachable ({err}); set {var} or start the server");
    }
    eprintln!("SKIP {test}: set {var} ({err})");
    None
}

impl TestDb {
    /// A migrated SQLite database in a temporary directory.
    pub(crate) async fn sqlite() -> TestDb {
        Self::sqlite_with(true).await
    }

    async fn sqlite_with(migrate: bool) -> TestDb {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("gpt-load.db");
        let db = Db::sqlite(&path).await.expect("sqlite opens");
        if migrate {
            db.migrate().await.expect("sqlite migrations");
        }
        TestDb {
            db,
            dsn: path.display().to_string(),
            _dir: Some(dir),
            drop_database: None,
        }
    }

    /// A migrated, freshly created PostgreSQL database.
    pub(crate) async fn postgres(test: &str) -> Option<TestDb> {
        Self::postgres_with(test, true).await
    }

    async fn postgres_with(test: &str, migrate: bool) -> Option<TestDb> {
        let admin_url = std::env::var("TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let name = unique_name();
        let mut admin = match diesel_async::AsyncPgConnection::establish(&admin_url).await {
            Ok(conn) => conn,
            Err(err) => return unreachable(test, "TEST_PG_URL", err),
        };
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let dsn = with_database(&admin_url, &name);
        let db = Db::postgres(&dsn, 4).await.expect("postgres connects");
        if migrate {
            db.migrate().await.expect("postgres migrations");
        }
        Some(TestDb {
            db,
            dsn,
            _dir: None,
            drop_database: Some((Backend::Postgres, admin_url, name)),
        })
    }

    /// A migrated, freshly created MariaDB/MySQL database.
    pub(crate) async fn mysql(test: &str) -> Option<TestDb> {
        Self::mysql_with(test, true).await
    }

    async fn mysql_with(test: &str, migrate: bool) -> Option<TestDb> {
        let admin_url =
            std::env::var("TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
        let name = unique_name();
        let mut admin = match diesel_async::AsyncMysqlConnection::establish(&admin_url).await {
            Ok(conn) => conn,
            Err(err) => return unreachable(test, "TEST_MYSQL_URL", err),
        };
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let dsn = with_database(&admin_url, &name);
        let db = Db::mysql(&dsn, 4).await.expect("mysql connects");
        if migrate {
            db.migrate().await.expect("mysql migrations");
        }
        Some(TestDb {
            db,
            dsn,
            _dir: None,
            drop_database: Some((Backend::Mysql, admin_url, name)),
        })
    }

    /// An empty database (no tables) on `backend`, or `None` when its server is unreachable.
    pub(crate) async fn empty(backend: Backend, test: &str) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => Some(Self::sqlite_with(false).await),
            Backend::Postgres => Self::postgres_with(test, false).await,
            Backend::Mysql => Self::mysql_with(test, false).await,
        }
    }

    /// Every backend that is reachable (SQLite always).
    pub(crate) async fn all(test: &str) -> Vec<TestDb> {
        let mut dbs = vec![Self::sqlite().await];
        dbs.extend(Self::postgres(test).await);
        dbs.extend(Self::mysql(test).await);
        dbs
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((backend, admin_url, name)) = self.drop_database.take() else {
            return;
        };
        // Drop from a thread of its own: `Drop` cannot await, and the test's runtime may be
        // shutting down.
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let sql = format!("DROP DATABASE IF EXISTS {name}");
                let result = match backend {
                    Backend::Postgres => match diesel_async::AsyncPgConnection::establish(&admin_url).await {
                        Ok(mut c) => c
                            .batch_execute(&format!("{sql} WITH (FORCE)"))
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    },
                    Backend::Mysql => match diesel_async::AsyncMysqlConnection::establish(&admin_url).await {
                        Ok(mut c) => c.batch_execute(&sql).await.map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    },
                    Backend::Sqlite => Ok(()),
                };
                if let Err(err) = result {
                    eprintln!("could not drop test database {name}: {err}");
                }
            });
        });
        let _ = dropper.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_in_urls() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("mysql://root@h:3306/test?ssl=false", "x"),
            "mysql://root@h:3306/x?ssl=false"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_backend_migrates() {
        for test_db in TestDb::all("every_backend_migrates").await {
            let backend = test_db.db.backend();
            assert_eq!(
                test_db.db.migrate().await.unwrap(),
                0,
                "{backend}: migrations are idempotent"
            );
        }
    }
}
