//! SQLite's two ways in: the diesel pool every repository uses, and one plain connection for
//! the background writers' batches (request logs with their hourly counts and usage, key
//! states), whose rows are bound straight to prepared statements.
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
    sync::{Arc, Mutex, mpsc},
    thread,
};

use diesel::result::{DatabaseErrorKind, Error as QueryError};
use diesel_async::pooled_connection::bb8::Pool;
use tokio::sync::oneshot;

use super::{AppendPriority, DbError, SqliteConn};

/// The settings every SQLite connection of the gateway runs with. WAL lets readers proceed
/// while a writer commits; the busy timeout makes a second writer wait instead of failing. An
/// 8 MiB page cache per connection (SQLite's default is 2 MiB) keeps the log indexes' hot pages
/// in memory under load instead of reading them back for every batch.
pub(crate) const CONNECTION_SETUP: &str = "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; \
     PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -8192;";

/// How diesel writes a `Timestamp` on SQLite (text, compared as text): what the append
/// connection writes must sort, filter and match exactly like what diesel wrote.
pub(crate) const TIMESTAMP: &str = "%F %T%.f";

/// `at` as diesel writes it on SQLite (see [`TIMESTAMP`]).
pub(crate) fn timestamp(at: chrono::NaiveDateTime) -> String {
    let mut text = String::with_capacity(29);
    write_timestamp(&mut text, at);
    text
}

/// Appends `at` to `out` exactly as `at.format(TIMESTAMP)` would, without chrono's format
/// interpreter, which took a sixth of the request log's insert (one timestamp a row).
pub(crate) fn write_timestamp(out: &mut String, at: chrono::NaiveDateTime) {
    use chrono::{Datelike, Timelike};

    let year = at.year();
    if !(0..=9999).contains(&year) {
        // `%Y` signs and widens such years; never seen in practice, so chrono does it.
        use std::fmt::Write as _;
        write!(out, "{}", at.format(TIMESTAMP)).expect("a String takes any write");
        return;
    }
    let mut digits = [0u8; 29];
    let mut put = |from: usize, value: u32, width: usize| {
        let mut value = value;
        for slot in digits[from..from + width].iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, year as u32, 4);
    put(5, at.month(), 2);
    put(8, at.day(), 2);
    put(11, at.hour(), 2);
    put(14, at.minute(), 2);
    // A leap second is second 59 with 1,000,000,000 or more nanoseconds; `%T` prints 60.
    let nanos = at.nanosecond();
    let (second, nanos) = if nanos >= 1_000_000_000 {
        (at.second() + 1, nanos - 1_000_000_000)
    } else {
        (at.second(), nanos)
    };
    put(17, second, 2);
    // `%.f`: nothing for whole seconds, else 3, 6 or 9 digits, the fewest that are exact.
    let fraction = if nanos == 0 {
        0
    } else if nanos % 1_000_000 == 0 {
        put(20, nanos / 1_000_000, 3);
        4
    } else if nanos % 1_000 == 0 {
        put(20, nanos / 1_000, 6);
        7
    } else {
        put(20, nanos, 9);
        10
    };
    digits[4] = b'-';
    digits[7] = b'-';
    digits[10] = b' ';
    digits[13] = b':';
    digits[16] = b':';
    digits[19] = b'.';
    let text = std::str::from_utf8(&digits[..19 + fraction]).expect("ASCII digits and separators");
    out.push_str(text);
}

/// The diesel pool of a SQLite database, and its append connection. Derefs to the pool.
#[derive(Clone)]
pub(crate) struct SqlitePool {
    pool: Pool<SqliteConn>,
    append: Arc<AppendConnection>,
}

/// The plain connection for bulk appends, opened on first use (most commands never append),
/// and the low-priority thread that runs [`AppendPriority::Low`] appends.
struct AppendConnection {
    path: PathBuf,
    conn: Arc<Mutex<Option<rusqlite::Connection>>>,
    low: Mutex<Option<LowPriorityThread>>,
}

/// The thread that runs low-priority appends, one at a time, started on the first of them.
struct LowPriorityThread {
    jobs: mpsc::Sender<AppendJob>,
    handle: thread::JoinHandle<()>,
}

type AppendJob = Box<dyn FnOnce() + Send>;

impl SqlitePool {
    pub(super) fn new(pool: Pool<SqliteConn>, path: &Path) -> Self {
        Self {
            pool,
            append: Arc::new(AppendConnection {
                path: path.to_owned(),
                conn: Arc::new(Mutex::new(None)),
                low: Mutex::new(None),
            }),
        }
    }

    /// Runs `write` in one `IMMEDIATE` transaction on the append connection, off the runtime's
    /// threads and at `priority`: committed when it returns `Ok`, rolled back otherwise. Appends
    /// are serial (one connection); the log writer and the key write-behind are their callers.
    /// One connection for both keeps its page cache: SQLite drops a connection's whole cache
    /// when another connection has written.
    pub(crate) async fn append<R: Send + 'static>(
        &self,
        priority: AppendPriority,
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, DbError> {
        let (done, outcome) = oneshot::channel();
        let (slot, path) = (Arc::clone(&self.append.conn), self.append.path.clone());
        let job: AppendJob = Box::new(move || {
            // A panic in an earlier write poisons the lock, not the connection: its transaction
            // was rolled back when the panic dropped it.
            let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let result = (|| {
                let conn = match &mut *slot {
                    Some(conn) => conn,
                    empty => empty.insert(open(&path)?),
                };
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let written = write(&tx)?;
                tx.commit()?;
                Ok(written)
            })();
            // The caller may have gone (its future dropped): the rows are written all the same.
            let _ = done.send(result);
        });
        match priority {
            AppendPriority::Low => self.append.run_low(job),
            AppendPriority::Normal => drop(tokio::task::spawn_blocking(job)),
        }
        outcome
            .await
            .map_err(|_| DbError::Pool("the SQLite append stopped before it finished".to_owned()))?
            .map_err(query_error)
    }
}

impl AppendConnection {
    /// Hands `job` to the low-priority thread, starting it on the first low-priority append.
    fn run_low(&self, job: AppendJob) {
        let mut low = self.low.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let thread = low.get_or_insert_with(LowPriorityThread::start);
        if thread.jobs.send(job).is_err() {
            // The thread is gone (a panic escaped `catch_unwind`): this append fails, as its
            // reply is dropped with it, and the next one starts a new thread.
            *low = None;
        }
    }
}

impl LowPriorityThread {
    fn start() -> Self {
        let (jobs, queue) = mpsc::channel::<AppendJob>();
        let handle = thread::Builder::new()
            .name(LOW_PRIORITY_THREAD.to_owned())
            .spawn(move || {
                lower_priority();
                for job in queue {
                    // A panic in a write fails that append (its caller sees the reply dropped)
                    // and rolls its transaction back; the thread goes on with the next one.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })
            .expect("the OS starts a thread");
        Self { jobs, handle }
    }
}

impl Drop for AppendConnection {
    /// Lets the low-priority thread finish the append in hand before the connection goes.
    fn drop(&mut self) {
        let low = self
            .low
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(LowPriorityThread { jobs, handle }) = low {
            drop(jobs);
            let _ = handle.join();
        }
    }
}

/// The low-priority append thread's name.
const LOW_PRIORITY_THREAD: &str = "sqlite-append";

/// How many nice steps below the process the low-priority append thread runs.
const LOW_PRIORITY_NICENESS: i32 = 10;

/// Lowers the calling thread's priority by [`LOW_PRIORITY_NICENESS`] (Linux; elsewhere appends
/// keep the process's priority).
///
/// The thread cannot raise it again without a privilege the gateway should not need, which is
/// why normal-priority appends run on tokio's blocking threads instead.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // On Linux the nice value belongs to the thread: this changes the calling thread only.
        use rustix::process::{getpriority_process, setpriority_process};
        let lowered = getpriority_process(None)
            .and_then(|now| setpriority_process(None, (now + LOW_PRIORITY_NICENESS).min(19)));
        if let Err(err) = lowered {
            tracing::debug!("the SQLite append thread keeps its priority: {err}");
        }
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
    fn timestamps_are_written_as_chrono_formats_them() {
        use chrono::NaiveDate;

        let days = [
            NaiveDate::from_ymd_opt(2026, 12, 7).unwrap(),
            NaiveDate::from_ymd_opt(1970, 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(9999, 12, 31).unwrap(),
            NaiveDate::from_ymd_opt(0, 2, 29).unwrap(),
            NaiveDate::from_ymd_opt(10_000, 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(-1, 6, 15).unwrap(),
        ];
        let nanos = [
            0,
            1,
            999,
            1_000,
            120_000,
            1_000_000,
            5_000_000,
            123_456_789,
            999_999_999,
            1_000_000_000,
            1_250_000_000,
            1_999_999_999,
        ];
        for day in days {
            for (h, m, s) in [(0, 0, 0), (9, 5, 7), (23, 59, 59)] {
                for nano in nanos {
                    let Some(at) = day.and_hms_nano_opt(h, m, s, nano) else {
                        continue;
                    };
                    let mut written = String::new();
                    write_timestamp(&mut written, at);
                    assert_eq!(written, at.format(TIMESTAMP).to_string(), "{at:?}");
                    assert_eq!(timestamp(at), written);
                }
            }
        }
    }

    /// The SQLite pool of a new database file in `dir`.
    async fn pool_in(dir: &tempfile::TempDir) -> SqlitePool {
        match super::super::Db::sqlite(&dir.path().join("append.db"))
            .await
            .unwrap()
        {
            super::super::Db::Sqlite(pool) => pool,
            #[allow(unreachable_patterns)]
            _ => unreachable!("Db::sqlite opens SQLite"),
        }
    }

    /// This thread's name and nice value, from `/proc/thread-self`.
    #[cfg(target_os = "linux")]
    fn this_thread() -> (String, i32) {
        let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
        (
            comm.trim().to_owned(),
            nice_in(&std::fs::read_to_string("/proc/thread-self/stat").unwrap()),
        )
    }

    /// The nice value in a `stat` line of `/proc` (its 19th field; the command name, the 2nd,
    /// is in parentheses and may hold spaces).
    #[cfg(target_os = "linux")]
    fn nice_in(stat: &str) -> i32 {
        let after_name = &stat[stat.rfind(')').unwrap() + 1..];
        after_name.split_whitespace().nth(16).unwrap().parse().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn low_priority_appends_run_on_a_thread_below_the_process_priority() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool_in(&dir).await;
        let process = nice_in(&std::fs::read_to_string("/proc/self/stat").unwrap());
        for _ in 0..2 {
            let (name, nice) = pool
                .append(AppendPriority::Low, |_| Ok(this_thread()))
                .await
                .unwrap();
            assert_eq!(name, LOW_PRIORITY_THREAD);
            assert_eq!(nice, (process + LOW_PRIORITY_NICENESS).min(19));
            // Normal-priority appends, in between, keep the process's priority.
            let (name, nice) = pool
                .append(AppendPriority::Normal, |_| Ok(this_thread()))
                .await
                .unwrap();
            assert_ne!(name, LOW_PRIORITY_THREAD);
            assert_eq!(nice, process);
        }
        assert_eq!(this_thread().1, process);
    }

    #[tokio::test]
    async fn a_write_that_panics_is_an_error_and_the_next_append_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool_in(&dir).await;
        pool.append(AppendPriority::Normal, |tx| {
            tx.execute_batch("CREATE TABLE t (n INTEGER NOT NULL)")
        })
        .await
        .unwrap();
        for (priority, n) in [(AppendPriority::Low, 1), (AppendPriority::Normal, 2)] {
            let failed = pool
                .append(priority, |tx| -> rusqlite::Result<()> {
                    tx.execute("INSERT INTO t VALUES (0)", [])?;
                    panic!("a bug in a write")
                })
                .await;
            assert!(matches!(failed, Err(DbError::Pool(_))), "{failed:?}");
            let inserted = pool
                .append(priority, move |tx| tx.execute("INSERT INTO t VALUES (?1)", [n]))
                .await
                .unwrap();
            assert_eq!(inserted, 1, "{priority:?}");
        }
        // The panicking writes were rolled back.
        let rows: Vec<i64> = pool
            .append(AppendPriority::Low, |tx| {
                let mut select = tx.prepare("SELECT n FROM t ORDER BY n")?;
                select.query_map([], |row| row.get(0))?.collect()
            })
            .await
            .unwrap();
        assert_eq!(rows, [1, 2]);
    }

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
