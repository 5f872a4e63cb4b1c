//! Starting on a gpt-load database: recognise it, keep a way back, convert it in one step.
//!
//! 1. **Detect**: gpt-load's tables are present and our migration history is not.
//! 2. **Check the keys**: every upstream key must read with `ENCRYPTION_KEY` (gpt-load's
//!    cipher) before anything changes, so a wrong key stops here with the database untouched.
//! 3. **Keep a way back**: a SQLite file is copied (`VACUUM INTO`, which also takes what the
//!    WAL holds) to `<file>.gpt-load-backup-<UTC timestamp>` and the copy is opened and checked;
//!    on PostgreSQL and MySQL the operator backs up and passes `--adopt` / `ADOPT_GPT_LOAD=true`.
//! 4. **Convert**: gpt-load's tables are moved aside (renamed on SQLite and MySQL, moved to a
//!    schema of their own on PostgreSQL, so their index and sequence names stay out of the
//!    way), our migrations create the tables and are recorded, the rows are copied and
//!    converted ([`copy`](super::copy)), and the old tables are dropped. On SQLite and
//!    PostgreSQL that is one transaction. MySQL commits DDL implicitly, so there the tables are
//!    renamed aside in one atomic `RENAME TABLE`, the rows are copied in one transaction, and
//!    any failure drops what was created and renames the originals back; a start that finds
//!    tables still aside (the process died half-way) does the same before trying again.

use std::path::{Path, PathBuf};

use super::conn::{MigrationFailed, SyncConn, quote};
use super::copy::{self, CopyError, Link, Progress, SourceOptions, Summary};
use super::source::{Location, Reader, TABLES};
use crate::config::database::DatabaseDsn;
use crate::db::Backend;

/// Prefix of gpt-load's tables while they are moved aside (SQLite, MySQL).
const ASIDE_PREFIX: &str = "gpt_load_1_4_";
/// Suffix of the PostgreSQL schema gpt-load's tables are moved to.
const ASIDE_SCHEMA_SUFFIX: &str = "_gpt_load_1_4";
/// Our migration history table: its presence means the database is ours.
const HISTORY: &str = "__diesel_schema_migrations";
/// Tables only our migrations create (gpt-load has none of them), children first: a conversion
/// that is undone drops them with ours.
const OURS_ONLY: [&str; 4] = ["access_keys", "group_policies", "policies", "usage_hourly"];

/// What adoption may do.
#[derive(Clone, Debug, Default)]
pub(crate) struct AdoptOptions {
    /// `--adopt` / `ADOPT_GPT_LOAD=true`: convert a PostgreSQL or MySQL database.
    pub(crate) allowed_on_servers: bool,
    /// `ENCRYPTION_KEY`: gpt-load's key for reading, ours for writing.
    pub(crate) encryption_key: Option<String>,
    /// `AUTH_KEY`, to warn when gpt-load seeded it as a proxy key.
    pub(crate) auth_key: Option<String>,
}

/// What was found and done.
#[derive(Debug)]
pub(crate) enum Adoption {
    /// No gpt-load database here (ours, empty, or a SQLite file that does not exist yet).
    NotNeeded,
    /// A gpt-load database was converted.
    Adopted {
        /// Rows per table.
        summary: Summary,
        /// The SQLite backup copy.
        backup: Option<PathBuf>,
    },
}

/// Why the gateway cannot start on this database. Messages carry no secret.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdoptError {
    /// The database cannot be opened.
    #[error("cannot open the database: {0}")]
    Connect(String),
    /// Tables named like ours exist but are neither ours nor gpt-load's.
    #[error(
        "the database holds tables named like gpt-load's ({0}) without gpt-load's columns and \
         without our migration history; point DATABASE_DSN at an empty database or a gpt-load one"
    )]
    Foreign(String),
    /// A server database needs the operator's go-ahead.
    #[error(
        "this {backend} database is a gpt-load database. Converting it changes it in place: back \
         it up first ({backup}), then start once with --adopt (or ADOPT_GPT_LOAD=true). See \
         docs/MIGRATING.md"
    )]
    NeedsFlag {
        /// The backend.
        backend: Backend,
        /// The command that backs it up.
        backup: String,
    },
    /// The keys cannot be read with `ENCRYPTION_KEY`; nothing was changed.
    #[error(
        "{0}. Nothing was changed: start with ENCRYPTION_KEY set to the value gpt-load used \
         (unset if it used none)"
    )]
    Keys(CopyError),
    /// The SQLite backup could not be written or does not open.
    #[error("cannot back up the gpt-load database to {path}: {message}; nothing was changed")]
    Backup {
        /// Where the copy was to be written.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A command other than the leader's start met a database not adopted yet.
    #[error(
        "this is a gpt-load database that has not been adopted yet: start the gateway on it first \
         (without IS_SLAVE; with --adopt on PostgreSQL and MySQL), then run this again. See \
         docs/MIGRATING.md"
    )]
    NotAdopted,
    /// The conversion failed and was undone.
    #[error("converting the gpt-load database failed, and it was left as it was: {0}")]
    Failed(String),
    /// The conversion failed and undoing it failed too (MySQL only).
    #[error(
        "converting the gpt-load database failed ({cause}), and restoring its tables failed \
         too ({restore}); its tables are intact under the prefix {ASIDE_PREFIX}: rename them back \
         or restore the backup"
    )]
    NotRestored {
        /// The first failure.
        cause: String,
        /// The failure to restore.
        restore: String,
    },
}

/// Adopts the database at `dsn` when it is a gpt-load database; blocks (call it on a blocking
/// thread). `progress` hears about the copy.
pub(crate) fn adopt(
    dsn: &DatabaseDsn,
    options: &AdoptOptions,
    progress: &mut dyn Progress,
) -> Result<Adoption, AdoptError> {
    if let DatabaseDsn::Sqlite { path } = dsn
        && !path.exists()
    {
        return Ok(Adoption::NotNeeded);
    }
    let mut conn = SyncConn::open(dsn).map_err(|e| AdoptError::Connect(e.to_string()))?;
    let backend = conn.backend();
    if backend == Backend::Mysql {
        restore_interrupted(&mut conn)?;
    }
    match inspect(&mut conn).map_err(failed)? {
        Found::GptLoad => {}
        Found::Ours | Found::Empty => return Ok(Adoption::NotNeeded),
        Found::Foreign(tables) => return Err(AdoptError::Foreign(tables)),
    }
    let key = options.encryption_key.as_deref();
    let source = SourceOptions::in_place(backend, key, key, options.auth_key.clone());
    let keys = copy::check_keys(&mut conn, &source).map_err(|err| match err {
        CopyError::Keys { .. } => AdoptError::Keys(err),
        CopyError::Query(err) => failed(err),
    })?;
    tracing::info!(%backend, keys, "a gpt-load database: its keys read with ENCRYPTION_KEY");
    let backup = match dsn {
        DatabaseDsn::Sqlite { path } => Some(backup_sqlite(&mut conn, path)?),
        DatabaseDsn::Postgres { .. } | DatabaseDsn::Mysql { .. } if !options.allowed_on_servers => {
            return Err(AdoptError::NeedsFlag {
                backend,
                backup: backup_command(dsn),
            });
        }
        DatabaseDsn::Postgres { .. } | DatabaseDsn::Mysql { .. } => None,
    };
    let summary = match backend {
        Backend::Sqlite | Backend::Postgres => convert_in_one_transaction(&mut conn, source, progress)?,
        Backend::Mysql => convert_mysql(&mut conn, source, progress)?,
    };
    Ok(Adoption::Adopted { summary, backup })
}

/// Refuses a gpt-load database that has not been adopted: for what must not convert it (a
/// follower's start, `migrate-keys`, `import` into it), since our migrations would fail on
/// gpt-load's tables. Blocks (call it on a blocking thread).
pub(crate) fn ensure_adopted(dsn: &DatabaseDsn) -> Result<(), AdoptError> {
    if let DatabaseDsn::Sqlite { path } = dsn
        && !path.exists()
    {
        return Ok(());
    }
    let mut conn = SyncConn::open(dsn).map_err(|e| AdoptError::Connect(e.to_string()))?;
    match inspect(&mut conn).map_err(failed)? {
        Found::GptLoad => Err(AdoptError::NotAdopted),
        Found::Ours | Found::Empty => Ok(()),
        Found::Foreign(tables) => Err(AdoptError::Foreign(tables)),
    }
}

fn failed(err: impl std::fmt::Display) -> AdoptError {
    AdoptError::Failed(err.to_string())
}

/// What a database holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// None of the tables.
    Empty,
    /// Our migration history.
    Ours,
    /// gpt-load's tables without our history.
    GptLoad,
    /// Tables named like gpt-load's that are not gpt-load's.
    Foreign(String),
}

/// Fails with `error` (given what `conn` holds) unless `conn` holds `wanted`.
pub(crate) fn require<E: From<diesel::result::Error>>(
    conn: &mut SyncConn,
    wanted: Found,
    error: impl FnOnce(Found) -> E,
) -> Result<(), E> {
    match inspect(conn)? {
        found if found == wanted => Ok(()),
        other => Err(error(other)),
    }
}

/// Looks at the tables of the database `conn` is connected to.
pub(crate) fn inspect(conn: &mut SyncConn) -> diesel::QueryResult<Found> {
    use diesel::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let tables = conn.tables()?;
    // A history with a migration in it, not merely the table: diesel creates the table before
    // it runs the first migration, so a migration that failed on gpt-load's tables leaves it
    // empty behind.
    if tables.contains(HISTORY) {
        let sql = format!("SELECT COUNT(*) AS n FROM {HISTORY}");
        let recorded: Vec<Count> = super::conn::on_conn!(&mut *conn, |c| diesel::sql_query(&sql).load(c))?;
        if recorded.first().is_some_and(|r| r.n > 0) {
            return Ok(Found::Ours);
        }
    }
    let named: Vec<&str> = TABLES.iter().copied().filter(|t| tables.contains(*t)).collect();
    if named.is_empty() {
        return Ok(Found::Empty);
    }
    let groups = conn.columns("groups")?;
    let keys = conn.columns("api_keys")?;
    let is_gpt_load = ["name", "channel_type", "upstreams"]
        .iter()
        .all(|c| groups.contains(*c))
        && ["key_value", "key_hash", "group_id", "status"]
            .iter()
            .all(|c| keys.contains(*c));
    Ok(if is_gpt_load {
        Found::GptLoad
    } else {
        Found::Foreign(named.join(", "))
    })
}

/// Copies the SQLite database next to itself and checks that the copy opens.
fn backup_sqlite(conn: &mut SyncConn, path: &Path) -> Result<PathBuf, AdoptError> {
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".gpt-load-backup-{stamp}"));
    let backup = path.with_file_name(name);
    let fail = |message: String| AdoptError::Backup {
        path: backup.clone(),
        message,
    };
    if backup.exists() {
        return Err(fail("the file exists".to_owned()));
    }
    let target = backup
        .to_str()
        .ok_or_else(|| fail("the path is not valid UTF-8".to_owned()))?;
    conn.execute(&format!("VACUUM INTO '{}'", target.replace('\'', "''")))
        .map_err(|e| fail(e.to_string()))?;
    let mut copy =
        SyncConn::open(&DatabaseDsn::Sqlite { path: backup.clone() }).map_err(|e| fail(e.to_string()))?;
    match inspect(&mut copy) {
        Ok(Found::GptLoad) => {}
        Ok(other) => {
            return Err(fail(format!(
                "the copy does not read back as gpt-load's ({other:?})"
            )));
        }
        Err(err) => return Err(fail(err.to_string())),
    }
    tracing::info!(backup = %backup.display(), "gpt-load database backed up");
    Ok(backup)
}

/// The command that backs up the database at `dsn`, for the `--adopt` message (no password).
fn backup_command(dsn: &DatabaseDsn) -> String {
    /// Host, port, user and database of a `scheme://user:password@host:port/db?…` URL.
    fn parts(url: &str) -> (String, String, String, String) {
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let rest = rest.split(['?', '#']).next().unwrap_or(rest);
        let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
        let (credentials, address) = authority.rsplit_once('@').unwrap_or(("", authority));
        let user = credentials.split(':').next().unwrap_or("");
        let (host, port) = address.rsplit_once(':').unwrap_or((address, ""));
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8_lossy()
                .into_owned()
        };
        (decode(host), port.to_owned(), decode(user), decode(database))
    }
    // The dump tool, its flags for host, port and user, and what follows them around the
    // database's name.
    let (url, tool, flags, options, output) = match dsn {
        DatabaseDsn::Postgres { url } => (
            url,
            "pg_dump",
            ["-h", "-p", "-U"],
            "--format=custom --file=gpt-load-backup.dump",
            "",
        ),
        DatabaseDsn::Mysql { url } => (
            url,
            "mysqldump",
            ["-h", "-P", "-u"],
            "-p --single-transaction",
            " > gpt-load-backup.sql",
        ),
        DatabaseDsn::Sqlite { path } => return format!("cp {} {}.bak", path.display(), path.display()),
    };
    let (host, port, user, database) = parts(url);
    let flags: String = flags
        .into_iter()
        .zip([host, port, user])
        .filter(|(_, value)| !value.is_empty())
        .map(|(flag, value)| format!(" {flag} {value}"))
        .collect();
    format!("for example: {tool}{flags} {options} {database}{output}")
}

/// SQLite and PostgreSQL: everything in one transaction.
fn convert_in_one_transaction(
    conn: &mut SyncConn,
    mut source: SourceOptions,
    progress: &mut dyn Progress,
) -> Result<Summary, AdoptError> {
    let backend = conn.backend();
    let present = conn.tables().map_err(failed)?;
    let moved: Vec<&str> = TABLES.iter().copied().filter(|t| present.contains(*t)).collect();
    conn.transaction(|conn| {
        let location = match backend {
            Backend::Postgres => {
                let schema = format!("{}{ASIDE_SCHEMA_SUFFIX}", current_schema(conn)?);
                conn.execute(&format!("CREATE SCHEMA {}", quote(backend, &schema)))?;
                for table in &moved {
                    conn.execute(&format!(
                        "ALTER TABLE {} SET SCHEMA {}",
                        quote(backend, table),
                        quote(backend, &schema)
                    ))?;
                }
                Location::Schema(schema)
            }
            Backend::Sqlite | Backend::Mysql => {
                for table in &moved {
                    conn.execute(&format!(
                        "ALTER TABLE {} RENAME TO {}",
                        quote(backend, table),
                        quote(backend, &format!("{ASIDE_PREFIX}{table}"))
                    ))?;
                }
                // Index names are per database in SQLite: gpt-load's would collide with ours.
                drop_sqlite_indexes(conn, &moved)?;
                Location::Prefixed(ASIDE_PREFIX)
            }
        };
        conn.baseline()?;
        source.reader = Reader::new(location.clone(), copy::PAGE);
        let summary = copy::copy_all(&mut Link::Same(conn), &source, progress)?;
        match &location {
            Location::Schema(schema) => {
                conn.execute(&format!("DROP SCHEMA {} CASCADE", quote(backend, schema)))?
            }
            Location::Prefixed(_) | Location::InPlace => {
                for table in moved.iter().rev() {
                    conn.execute(&format!("DROP TABLE {}", location.table(backend, table)))?;
                }
            }
        }
        Ok::<_, ConvertError>(summary)
    })
    .map_err(failed)
}

/// MySQL: rename aside atomically, create and copy, drop the originals; undo on failure.
fn convert_mysql(
    conn: &mut SyncConn,
    mut source: SourceOptions,
    progress: &mut dyn Progress,
) -> Result<Summary, AdoptError> {
    let present = conn.tables().map_err(failed)?;
    let moved: Vec<&str> = TABLES.iter().copied().filter(|t| present.contains(*t)).collect();
    let renames = moved
        .iter()
        .map(|t| {
            format!(
                "{} TO {}",
                quote(Backend::Mysql, t),
                quote(Backend::Mysql, &format!("{ASIDE_PREFIX}{t}"))
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    conn.execute(&format!("RENAME TABLE {renames}")).map_err(failed)?;
    source.reader = Reader::new(Location::Prefixed(ASIDE_PREFIX), copy::PAGE);
    let converted = (|| {
        conn.baseline()?;
        let summary = conn.transaction(|conn| copy::copy_all(&mut Link::Same(conn), &source, progress))?;
        Ok::<_, ConvertError>(summary)
    })();
    match converted {
        Ok(summary) => {
            for table in moved.iter().rev() {
                if let Err(err) = conn.execute(&format!(
                    "DROP TABLE {}",
                    quote(Backend::Mysql, &format!("{ASIDE_PREFIX}{table}"))
                )) {
                    // Converted and committed; the next start restores and converts again.
                    return Err(failed(format!(
                        "dropping gpt-load's table {table} after the copy: {err}"
                    )));
                }
            }
            Ok(summary)
        }
        Err(err) => match restore_interrupted(conn) {
            Ok(()) => Err(failed(err)),
            Err(restore) => Err(AdoptError::NotRestored {
                cause: err.to_string(),
                restore: restore.to_string(),
            }),
        },
    }
}

/// MySQL: if gpt-load's tables are aside (a conversion failed or the process died), drops
/// whatever the conversion created and renames them back.
fn restore_interrupted(conn: &mut SyncConn) -> Result<(), AdoptError> {
    let present = conn.tables().map_err(failed)?;
    let aside: Vec<&str> = TABLES
        .iter()
        .copied()
        .filter(|t| present.contains(&format!("{ASIDE_PREFIX}{t}")))
        .collect();
    if aside.is_empty() {
        return Ok(());
    }
    tracing::warn!("gpt-load's tables are still aside from an interrupted conversion: restoring them");
    let restore = |conn: &mut SyncConn| -> diesel::QueryResult<()> {
        conn.execute("SET FOREIGN_KEY_CHECKS = 0")?;
        for table in OURS_ONLY.iter().chain(TABLES.iter().rev()).chain([&HISTORY]) {
            if present.contains(*table) {
                conn.execute(&format!("DROP TABLE {}", quote(Backend::Mysql, table)))?;
            }
        }
        conn.execute("SET FOREIGN_KEY_CHECKS = 1")?;
        let renames = aside
            .iter()
            .map(|t| {
                format!(
                    "{} TO {}",
                    quote(Backend::Mysql, &format!("{ASIDE_PREFIX}{t}")),
                    quote(Backend::Mysql, t)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        conn.execute(&format!("RENAME TABLE {renames}"))
    };
    restore(conn).map_err(|err| AdoptError::NotRestored {
        cause: "an earlier conversion did not finish".to_owned(),
        restore: err.to_string(),
    })
}

fn drop_sqlite_indexes(conn: &mut SyncConn, moved: &[&str]) -> diesel::QueryResult<()> {
    use diesel::RunQueryDsl;
    use diesel::sql_types::Text;

    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = Text)]
        name: String,
    }
    if conn.backend() != Backend::Sqlite {
        return Ok(());
    }
    for table in moved {
        let sql = format!(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name = '{ASIDE_PREFIX}{table}'"
        );
        let names: Vec<Name> = super::conn::on_conn!(&mut *conn, |c| diesel::sql_query(&sql).load(c))?;
        for index in names {
            conn.execute(&format!("DROP INDEX {}", quote(Backend::Sqlite, &index.name)))?;
        }
    }
    Ok(())
}

fn current_schema(conn: &mut SyncConn) -> diesel::QueryResult<String> {
    use diesel::RunQueryDsl;
    use diesel::sql_types::Text;

    #[derive(diesel::QueryableByName)]
    struct Schema {
        #[diesel(sql_type = Text)]
        name: String,
    }
    let rows: Vec<Schema> = super::conn::on_conn!(conn, |c| diesel::sql_query(
        "SELECT CAST(current_schema() AS TEXT) AS name"
    )
    .load(c))?;
    Ok(rows
        .into_iter()
        .next()
        .map_or_else(|| "public".to_owned(), |r| r.name))
}

/// A step of the conversion failed.
#[derive(Debug, thiserror::Error)]
enum ConvertError {
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    #[error(transparent)]
    Migration(#[from] MigrationFailed),
    #[error(transparent)]
    Copy(#[from] CopyError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backup_command_names_the_database_and_never_the_password() {
        let pg = backup_command(&DatabaseDsn::Postgres {
            url: "postgres://gpt:s3cret@db.internal:5433/gpt_load?sslmode=disable".to_owned(),
        });
        assert_eq!(
            pg,
            "for example: pg_dump -h db.internal -p 5433 -U gpt --format=custom \
             --file=gpt-load-backup.dump gpt_load"
        );
        let my = backup_command(&DatabaseDsn::Mysql {
            url: "mysql://root:s3cret@127.0.0.1:3306/gpt-load".to_owned(),
        });
        assert_eq!(
            my,
            "for example: mysqldump -h 127.0.0.1 -P 3306 -u root -p --single-transaction gpt-load \
             > gpt-load-backup.sql"
        );
        assert!(!pg.contains("s3cret") && !my.contains("s3cret"));
    }
}
