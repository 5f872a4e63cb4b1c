//! `group_hourly_stats`: per-group request counts by hour, kept up to date by the log writer and
//! read by the dashboard.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use diesel::{
    prelude::*,
    result::{DatabaseErrorKind, Error as QueryError},
};
use diesel_async::{AsyncConnection, RunQueryDsl};

#[cfg(feature = "sqlite")]
use crate::db::sqlite;
use crate::{
    db::{AppendPriority, Db, DbError, schema::group_hourly_stats, with_conn},
    models::now,
};

/// Counts to add to one hour of one group: (`hour` — the start of the hour, UTC, `group_id`,
/// `success`, `failure`).
pub(crate) type HourlyCount = (NaiveDateTime, i64, i64, i64);

/// A `group_hourly_stats` row.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = group_hourly_stats)]
pub(crate) struct HourlyStatRow {
    pub(crate) id: i64,
    /// The start of the hour, UTC.
    pub(crate) time: NaiveDateTime,
    pub(crate) group_id: i64,
    pub(crate) success_count: i64,
    pub(crate) failure_count: i64,
    pub(crate) created_at: NaiveDateTime,
    pub(crate) updated_at: NaiveDateTime,
}

/// Adds `counts` to their hours' rows, creating the rows that do not exist yet, in one
/// transaction. Entries for the same hour and group are summed first; all-zero entries are
/// skipped.
///
/// On SQLite the transaction runs on the append connection at `priority`, like the request
/// logs the counts come with: one connection writing keeps its page cache, where a write from
/// another connection makes SQLite drop the whole cache and read the log indexes back for the
/// next batch. On PostgreSQL and MySQL (`priority` does not apply): `UPDATE … SET
/// success_count = success_count + ?`, and when no row matched, an `INSERT` inside a savepoint. If another node inserted the row in between, the
/// unique index `(time, group_id)` rejects ours and the `UPDATE` runs once more. Rows are
/// visited in `(time, group_id)` order so concurrent writers lock them in the same order. (On
/// MySQL the two writers' gap locks can still deadlock instead; the loser's transaction is
/// rolled back whole and its caller retries, so nothing is counted twice.)
pub(crate) async fn add_hourly(
    db: &Db,
    counts: &[HourlyCount],
    priority: AppendPriority,
) -> Result<(), DbError> {
    let mut merged: BTreeMap<(NaiveDateTime, i64), (i64, i64)> = BTreeMap::new();
    for &(hour, group_id, success, failure) in counts {
        let entry = merged.entry((hour, group_id)).or_default();
        entry.0 += success;
        entry.1 += failure;
    }
    merged.retain(|_, &mut (success, failure)| success != 0 || failure != 0);
    if merged.is_empty() {
        return Ok(());
    }
    let at = now();
    with_conn!(
        db,
        // On the connection that appends the rows these counts come with (see `db::sqlite`).
        sqlite_pool | sqlite | {
            sqlite
                .append(priority, move |tx| sqlite_add_hourly(tx, &merged, at))
                .await
        },
        server | conn | {
            AsyncConnection::transaction(conn, async |conn| {
                for (&(hour, group_id), &(success, failure)) in &merged {
                    let mut raced = false;
                    loop {
                        let updated = diesel::update(
                            group_hourly_stats::table
                                .filter(group_hourly_stats::time.eq(hour))
                                .filter(group_hourly_stats::group_id.eq(group_id)),
                        )
                        .set((
                            group_hourly_stats::success_count.eq(group_hourly_stats::success_count + success),
                            group_hourly_stats::failure_count.eq(group_hourly_stats::failure_count + failure),
                            group_hourly_stats::updated_at.eq(at),
                        ))
                        .execute(conn)
                        .await?;
                        if updated > 0 {
                            break;
                        }
                        // A savepoint, so a unique violation leaves the transaction usable
                        // (PostgreSQL aborts the whole transaction otherwise).
                        let inserted = conn
                            .transaction(async |conn| {
                                diesel::insert_into(group_hourly_stats::table)
                                    .values((
                                        group_hourly_stats::time.eq(hour),
                                        group_hourly_stats::group_id.eq(group_id),
                                        group_hourly_stats::success_count.eq(success),
                                        group_hourly_stats::failure_count.eq(failure),
                                        group_hourly_stats::created_at.eq(at),
                                        group_hourly_stats::updated_at.eq(at),
                                    ))
                                    .execute(conn)
                                    .await
                            })
                            .await;
                        match inserted {
                            Ok(_) => break,
                            Err(QueryError::DatabaseError(DatabaseErrorKind::UniqueViolation, _))
                                if !raced =>
                            {
                                raced = true;
                            }
                            Err(err) => return Err(err.into()),
                        }
                    }
                }
                Ok::<_, DbError>(())
            })
            .await
        }
    )
}

/// [`add_hourly`] on SQLite, inside the append connection's `IMMEDIATE` transaction: no other
/// writer can insert the row between the `UPDATE` and the `INSERT`.
#[cfg(feature = "sqlite")]
fn sqlite_add_hourly(
    tx: &rusqlite::Transaction<'_>,
    merged: &BTreeMap<(NaiveDateTime, i64), (i64, i64)>,
    at: NaiveDateTime,
) -> rusqlite::Result<()> {
    let mut update = tx.prepare_cached(
        "UPDATE group_hourly_stats SET success_count = success_count + ?1, \
         failure_count = failure_count + ?2, updated_at = ?3 WHERE time = ?4 AND group_id = ?5",
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO group_hourly_stats (time, group_id, success_count, failure_count, created_at, \
         updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
    )?;
    let at = sqlite::timestamp(at);
    for (&(hour, group_id), &(success, failure)) in merged {
        let hour = sqlite::timestamp(hour);
        // Named in full: diesel's `RunQueryDsl::execute` is in scope here too.
        let updated = rusqlite::Statement::execute(
            &mut update,
            rusqlite::params![success, failure, at, hour, group_id],
        )?;
        if updated == 0 {
            rusqlite::Statement::execute(
                &mut insert,
                rusqlite::params![hour, group_id, success, failure, at],
            )?;
        }
    }
    Ok(())
}

/// The hourly rows from `since` on (inclusive), of one group or of all, by hour then group.
#[cfg(test)]
pub(crate) async fn hourly(
    db: &Db,
    group_id: Option<i64>,
    since: NaiveDateTime,
) -> Result<Vec<HourlyStatRow>, DbError> {
    // The end of the range every backend's datetime column holds.
    let end = chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .expect("a valid date");
    hourly_between(db, group_id, &[], since, end).await
}

/// The hourly rows with `from <= time < to`, of one group or of every group but `exclude`.
pub(crate) async fn hourly_between(
    db: &Db,
    group_id: Option<i64>,
    exclude: &[i64],
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<Vec<HourlyStatRow>, DbError> {
    with_conn!(db, |conn| {
        let mut query = group_hourly_stats::table
            .filter(group_hourly_stats::time.ge(from))
            .filter(group_hourly_stats::time.lt(to))
            .order((group_hourly_stats::time, group_hourly_stats::group_id))
            .select(HourlyStatRow::as_select())
            .into_boxed();
        filter_some!(query, group_id, |id| group_hourly_stats::group_id.eq(id));
        if !exclude.is_empty() {
            query = query.filter(group_hourly_stats::group_id.ne_all(exclude.to_vec()));
        }
        Ok(query.load(conn).await?)
    })
}

/// Up to `limit` stored keys with a hash, as (`key_value`, `key_hash`), for the encryption check.
pub(crate) async fn key_sample(db: &Db, limit: i64) -> Result<Vec<(String, String)>, DbError> {
    use crate::db::schema::api_keys;
    with_conn!(db, |conn| {
        Ok(api_keys::table
            .filter(api_keys::key_hash.ne(""))
            .order(api_keys::id)
            .limit(limit)
            .select((api_keys::key_value, api_keys::key_hash))
            .load(conn)
            .await?)
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{NaiveDate, TimeDelta};

    use super::*;
    use crate::db::test_support::TestDb;

    fn hour(h: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 11, 22)
            .and_then(|d| d.and_hms_opt(h, 0, 0))
            .expect("valid hour")
    }

    fn counts(rows: &[HourlyStatRow]) -> Vec<(NaiveDateTime, i64, i64, i64)> {
        rows.iter()
            .map(|r| (r.time, r.group_id, r.success_count, r.failure_count))
            .collect()
    }

    /// SQLite's counts are written by the append connection, not by diesel: they must land on
    /// the rows diesel wrote (an earlier version, gpt-load's own), not beside them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_adds_to_the_rows_diesel_wrote() {
        let t = TestDb::sqlite().await;
        let db = &t.db;
        let written_by_diesel = HourlyStatRow {
            id: 1,
            time: hour(10),
            group_id: 1,
            success_count: 5,
            failure_count: 1,
            created_at: hour(10),
            updated_at: hour(10) + TimeDelta::milliseconds(1_500),
        };
        async fn insert(db: &Db, row: &HourlyStatRow) -> Result<usize, DbError> {
            with_conn!(db, |conn| Ok(diesel::insert_into(group_hourly_stats::table)
                .values(row)
                .execute(conn)
                .await?))
        }
        assert_eq!(insert(db, &written_by_diesel).await.unwrap(), 1);
        add_hourly(
            db,
            &[(hour(10), 1, 2, 3), (hour(11), 1, 1, 0)],
            AppendPriority::Low,
        )
        .await
        .unwrap();
        let all = hourly(db, None, hour(0)).await.unwrap();
        assert_eq!(counts(&all), [(hour(10), 1, 7, 4), (hour(11), 1, 1, 0)]);
        assert_eq!(all[0].created_at, hour(10), "the row diesel wrote was updated");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hourly_counts_accumulate_across_calls_hours_and_groups() {
        for t in TestDb::all("hourly_counts_accumulate_across_calls_hours_and_groups").await {
            let db = &t.db;
            let backend = db.backend();
            add_hourly(
                db,
                &[(hour(9), 1, 3, 1), (hour(10), 1, 1, 0), (hour(10), 2, 0, 2)],
                AppendPriority::Normal,
            )
            .await
            .unwrap();
            add_hourly(
                db,
                &[
                    (hour(10), 1, 2, 1),
                    (hour(10), 1, 1, 0), // same hour and group twice in one call
                    (hour(11), 2, 5, 0),
                    (hour(11), 3, 0, 0), // nothing to add: no row
                ],
                AppendPriority::Normal,
            )
            .await
            .unwrap();
            add_hourly(db, &[], AppendPriority::Normal).await.unwrap();

            let all = hourly(db, None, hour(0)).await.unwrap();
            assert_eq!(
                counts(&all),
                [
                    (hour(9), 1, 3, 1),
                    (hour(10), 1, 4, 1),
                    (hour(10), 2, 0, 2),
                    (hour(11), 2, 5, 0),
                ],
                "{backend}"
            );
            assert!(all.iter().all(|r| r.updated_at >= r.created_at), "{backend}");
            assert_eq!(
                counts(&hourly(db, Some(2), hour(10)).await.unwrap()),
                [(hour(10), 2, 0, 2), (hour(11), 2, 5, 0)],
                "{backend}"
            );
            assert_eq!(
                counts(&hourly(db, None, hour(11)).await.unwrap()),
                [(hour(11), 2, 5, 0)],
                "{backend}: `since` is inclusive"
            );
            assert!(
                hourly(db, Some(9), hour(0)).await.unwrap().is_empty(),
                "{backend}"
            );
        }
    }

    /// Another node inserts the hour's row between our `UPDATE` (no row yet) and our `INSERT`:
    /// the unique index refuses ours, the savepoint keeps the transaction usable, and the
    /// `UPDATE` adds to the other node's row. PostgreSQL shows the race deterministically: the
    /// other node's uncommitted row is invisible to our `UPDATE`, and our `INSERT` waits on it.
    /// (MySQL makes the `UPDATE` itself wait for that row; SQLite has a single writer.)
    #[cfg(feature = "postgres")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_insert_that_loses_the_race_adds_to_the_winners_row() {
        use diesel::{dsl::sql, sql_types::BigInt};
        use diesel_async::SimpleAsyncConnection;

        let Some(t) = TestDb::postgres("an_insert_that_loses_the_race_adds_to_the_winners_row").await else {
            return;
        };
        let Db::Postgres(pool) = &t.db else {
            panic!("a PostgreSQL database");
        };
        let mut other_node = pool.get().await.unwrap();
        other_node
            .batch_execute(
                "BEGIN; INSERT INTO group_hourly_stats (time, group_id, success_count, failure_count) \
                 VALUES ('2026-11-22 13:00:00', 5, 10, 2)",
            )
            .await
            .unwrap();
        let db = t.db.clone();
        let adding =
            tokio::spawn(
                async move { add_hourly(&db, &[(hour(13), 5, 1, 1)], AppendPriority::Normal).await },
            );

        let mut watcher = pool.get().await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let waiting: i64 =
                diesel::select(sql::<BigInt>("(SELECT count(*) FROM pg_locks WHERE NOT granted)"))
                    .get_result(&mut *watcher)
                    .await
                    .unwrap();
            if waiting > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "our INSERT waits for the other row"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        other_node.batch_execute("COMMIT").await.unwrap();

        adding.await.unwrap().unwrap();
        assert_eq!(
            counts(&hourly(&t.db, Some(5), hour(13)).await.unwrap()),
            [(hour(13), 5, 11, 3)]
        );
    }

    /// Writers racing to create the same hour's row (as several nodes do at the top of each
    /// hour) lose no count: the loser of the insert adds to the winner's row, or — when MySQL
    /// reports a deadlock instead — retries, as the log writer does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_writers_create_one_row_and_lose_no_count() {
        for t in TestDb::all("racing_writers_create_one_row_and_lose_no_count").await {
            let backend = t.db.backend();
            let writers: Vec<_> = (0..8)
                .map(|_| {
                    let db = t.db.clone();
                    tokio::spawn(async move {
                        for _ in 0..50 {
                            match add_hourly(&db, &[(hour(12), 5, 1, 1)], AppendPriority::Normal).await {
                                Ok(()) => return,
                                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                            }
                        }
                        panic!("add_hourly kept failing");
                    })
                })
                .collect();
            for writer in writers {
                writer.await.unwrap();
            }
            assert_eq!(
                counts(
                    &hourly(&t.db, Some(5), hour(12) - TimeDelta::hours(1))
                        .await
                        .unwrap()
                ),
                [(hour(12), 5, 8, 8)],
                "{backend}"
            );
        }
    }
}
