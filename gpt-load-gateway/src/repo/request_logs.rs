//! `request_logs`: batched inserts from the log writer, retention, and a plain listing.

use std::{borrow::Cow, sync::Arc};

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use crate::db::{
    AppendPriority, Db, DbError,
    batch::{approx_size, insert_chunks},
    schema::request_logs,
    with_conn,
};
use crate::repo::count::{BoundedCount, count_rows};

/// A `request_logs` row, as written and as read. Every column is written (MySQL has no defaults
/// for text columns), `None` as `NULL`, so every row has the same statement; text must already
/// fit its column (the log writer clips it).
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = request_logs, treat_none_as_default_value = false)]
pub(crate) struct RequestLogRow {
    /// A UUID, time-ordered (v7) so that inserts append to the primary-key index.
    pub(crate) id: String,
    /// When the request arrived: UTC, microsecond precision.
    pub(crate) timestamp: NaiveDateTime,
    /// The group that served the attempt (0 when unknown).
    pub(crate) group_id: i64,
    pub(crate) group_name: String,
    /// The aggregate group named in the URL (0 and empty when none).
    pub(crate) parent_group_id: i64,
    pub(crate) parent_group_name: String,
    /// The key as stored in `api_keys` (encrypted when encryption is on).
    pub(crate) key_value: String,
    pub(crate) key_hash: String,
    pub(crate) model: String,
    pub(crate) is_success: bool,
    pub(crate) source_ip: String,
    pub(crate) status_code: i32,
    pub(crate) request_path: String,
    /// Milliseconds from the request's arrival to the attempt's end.
    pub(crate) duration: i64,
    pub(crate) error_message: String,
    pub(crate) user_agent: String,
    /// `retry` or `final` (borrowed when written, so a log record costs no allocation for it).
    pub(crate) request_type: Cow<'static, str>,
    pub(crate) upstream_addr: String,
    pub(crate) is_stream: bool,
    pub(crate) request_body: String,
    pub(crate) key_id: Option<i64>,
    pub(crate) attempt: i32,
    pub(crate) ttfb_ms: Option<i64>,
    pub(crate) request_id: String,
    /// The attempt's token usage, when its reply reported any (all five or none).
    pub(crate) prompt_tokens: Option<i64>,
    pub(crate) completion_tokens: Option<i64>,
    pub(crate) cached_tokens: Option<i64>,
    pub(crate) reasoning_tokens: Option<i64>,
    pub(crate) total_tokens: Option<i64>,
    /// The access key the request was made with; `None` for a proxy key.
    pub(crate) access_key_id: Option<i64>,
}

approx_size! {
    RequestLogRow: 200 + group_name + parent_group_name + key_value + key_hash + model + source_ip
        + request_path + error_message + user_agent + upstream_addr + request_body + request_id;
}

/// Rows deleted per retention statement.
const DELETE_BATCH: i64 = 5_000;

/// Inserts log rows in one transaction; returns how many. SQLite appends them at `priority`.
///
/// Takes the rows shared, because SQLite writes them on another thread: the log writer keeps
/// its batch for another attempt without copying it.
pub(crate) async fn insert_many(
    db: &Db,
    rows: Arc<[RequestLogRow]>,
    priority: AppendPriority,
) -> Result<usize, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    with_conn!(
        db,
        // A local file: the batch crosses to another thread once, and each row is bound by
        // position to one prepared statement on the append connection (see `db::sqlite`).
        sqlite_pool | sqlite | { sqlite.append(priority, move |tx| sqlite_append(tx, &rows)).await },
        server | conn | {
            conn.transaction(async |conn| {
                let mut inserted = 0;
                for chunk in insert_chunks(&rows) {
                    inserted += diesel::insert_into(request_logs::table)
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

/// The statement a row is appended with on SQLite: every column, in [`RequestLogRow`]'s order.
#[cfg(feature = "sqlite")]
const SQLITE_INSERT: &str = "INSERT INTO request_logs (id, timestamp, group_id, group_name, \
     parent_group_id, parent_group_name, key_value, key_hash, model, is_success, source_ip, \
     status_code, request_path, duration, error_message, user_agent, request_type, \
     upstream_addr, is_stream, request_body, key_id, attempt, ttfb_ms, request_id, \
     prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, total_tokens, \
     access_key_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, \
     ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30)";

#[cfg(feature = "sqlite")]
fn sqlite_append(tx: &rusqlite::Transaction<'_>, rows: &[RequestLogRow]) -> rusqlite::Result<usize> {
    let mut insert = tx.prepare_cached(SQLITE_INSERT)?;
    let mut timestamp = String::with_capacity(32);
    let mut inserted = 0;
    for row in rows {
        timestamp.clear();
        crate::db::sqlite::write_timestamp(&mut timestamp, row.timestamp);
        // Named in full: diesel's `RunQueryDsl::execute` is in scope here too.
        inserted += rusqlite::Statement::execute(
            &mut insert,
            rusqlite::params![
                row.id,
                timestamp,
                row.group_id,
                row.group_name,
                row.parent_group_id,
                row.parent_group_name,
                row.key_value,
                row.key_hash,
                row.model,
                row.is_success,
                row.source_ip,
                row.status_code,
                row.request_path,
                row.duration,
                row.error_message,
                row.user_agent,
                &*row.request_type,
                row.upstream_addr,
                row.is_stream,
                row.request_body,
                row.key_id,
                row.attempt,
                row.ttfb_ms,
                row.request_id,
                row.prompt_tokens,
                row.completion_tokens,
                row.cached_tokens,
                row.reasoning_tokens,
                row.total_tokens,
                row.access_key_id,
            ],
        )?;
    }
    Ok(inserted)
}

/// Deletes the rows older than `cutoff` (retention); returns how many.
///
/// Deletes the oldest [`DELETE_BATCH`] rows per statement, each committed on its own, so a
/// large backlog never holds one long transaction or lock and the writer keeps inserting.
pub(crate) async fn delete_older_than(db: &Db, cutoff: NaiveDateTime) -> Result<usize, DbError> {
    delete_older_than_in_batches(db, cutoff, DELETE_BATCH).await
}

async fn delete_older_than_in_batches(db: &Db, cutoff: NaiveDateTime, batch: i64) -> Result<usize, DbError> {
    let mut deleted = 0;
    loop {
        // MySQL cannot `DELETE … WHERE id IN (SELECT … LIMIT n)`: read the ids, then delete them.
        let (found, removed) = with_conn!(db, |conn| {
            let ids: Vec<String> = request_logs::table
                .filter(request_logs::timestamp.lt(cutoff))
                .order(request_logs::timestamp)
                .select(request_logs::id)
                .limit(batch)
                .load(conn)
                .await?;
            let removed = if ids.is_empty() {
                0
            } else {
                diesel::delete(request_logs::table.filter(request_logs::id.eq_any(&ids)))
                    .execute(conn)
                    .await?
            };
            Ok::<_, DbError>((ids.len(), removed))
        })?;
        deleted += removed;
        if i64::try_from(found).map_or(true, |found| found < batch) {
            return Ok(deleted);
        }
    }
}

/// The newest `limit` rows, newest first.
#[cfg(test)]
pub(crate) async fn list_recent(db: &Db, limit: i64) -> Result<Vec<RequestLogRow>, DbError> {
    with_conn!(db, |conn| {
        Ok(request_logs::table
            .order((request_logs::timestamp.desc(), request_logs::id.desc()))
            .limit(limit)
            .select(RequestLogRow::as_select())
            .load(conn)
            .await?)
    })
}

/// The filters of the log listing and export; `None` leaves a column unfiltered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LogFilter {
    /// Substring of `parent_group_name`.
    pub(crate) parent_group_name: Option<String>,
    /// Substring of `group_name`.
    pub(crate) group_name: Option<String>,
    /// Exact `key_hash`.
    pub(crate) key_hash: Option<String>,
    /// Substring of `model`.
    pub(crate) model: Option<String>,
    pub(crate) is_success: Option<bool>,
    /// `retry` or `final`.
    pub(crate) request_type: Option<String>,
    pub(crate) status_code: Option<i32>,
    /// Exact `source_ip`.
    pub(crate) source_ip: Option<String>,
    /// Substring of `error_message`.
    pub(crate) error_contains: Option<String>,
    /// Exact `access_key_id`.
    pub(crate) access_key_id: Option<i64>,
    /// Inclusive lower bound of `timestamp` (UTC).
    pub(crate) start: Option<NaiveDateTime>,
    /// Inclusive upper bound of `timestamp` (UTC).
    pub(crate) end: Option<NaiveDateTime>,
}

/// Applies a [`LogFilter`] to a boxed `request_logs` query (any backend).
///
/// The exact conditions on columns without an index are written so that SQLite does not take
/// them for selective (`status_code + 0`, `request_type || ''`, a bare `is_success`): without
/// statistics its planner guesses that an equality keeps a quarter of the rows at most, and then
/// reads the whole table and sorts the matches instead of walking the timestamp index until the
/// page is full, 3 s instead of milliseconds at ten million rows when a quarter is really 96 %.
/// `key_hash` has its own index and keeps its plain equality.
macro_rules! filtered {
    ($query:expr, $filter:expr) => {{
        let f: &LogFilter = $filter;
        let mut query = $query;
        filter_some!(query, &f.parent_group_name, |x| request_logs::parent_group_name
            .like(format!("%{x}%")));
        filter_some!(query, &f.group_name, |x| request_logs::group_name
            .like(format!("%{x}%")));
        filter_some!(query, &f.key_hash, |x| request_logs::key_hash.eq(x.clone()));
        filter_some!(query, &f.model, |x| request_logs::model.like(format!("%{x}%")));
        match f.is_success {
            Some(true) => query = query.filter(request_logs::is_success),
            Some(false) => query = query.filter(diesel::dsl::not(request_logs::is_success)),
            None => {}
        }
        filter_some!(query, &f.request_type, |x| request_logs::request_type
            .concat("")
            .eq(x.clone()));
        filter_some!(query, f.status_code, |x| (request_logs::status_code + 0).eq(x));
        filter_some!(query, &f.source_ip, |x| request_logs::source_ip
            .concat("")
            .eq(x.clone()));
        filter_some!(query, &f.error_contains, |x| request_logs::error_message
            .like(format!("%{x}%")));
        filter_some!(query, f.access_key_id, |x| (request_logs::access_key_id + 0_i64)
            .eq(x));
        filter_some!(query, f.start, |x| request_logs::timestamp.ge(x));
        filter_some!(query, f.end, |x| request_logs::timestamp.le(x));
        query
    }};
}

/// How many matches past a page's last row the logs page counts for its pager. Beyond that it
/// says "more than" instead of reading on: over millions of rows, a filter no index serves
/// (substrings of group and model names, failures) makes an exact count read the whole table
/// (docs/STORAGE.md, "Counting log rows").
pub(crate) const COUNT_AHEAD: i64 = 10_000;

/// One page of the rows matching `filter`, newest first, and how many match, counted up to
/// [`COUNT_AHEAD`] rows past the page.
pub(crate) async fn list_filtered(
    db: &Db,
    filter: &LogFilter,
    offset: i64,
    limit: i64,
) -> Result<(Vec<RequestLogRow>, BoundedCount), DbError> {
    let cap = offset.saturating_add(limit).saturating_add(COUNT_AHEAD);
    with_conn!(db, |conn| {
        let counted: i64 = count_rows(
            filtered!(request_logs::table.into_boxed(), filter)
                .select(request_logs::id)
                .limit(cap + 1),
        )
        .get_result(conn)
        .await?;
        let rows = filtered!(request_logs::table.into_boxed(), filter)
            .order((request_logs::timestamp.desc(), request_logs::id.desc()))
            .offset(offset)
            .limit(limit)
            .select(RequestLogRow::as_select())
            .load(conn)
            .await?;
        Ok((rows, BoundedCount::of(counted, cap)))
    })
}

/// The latest log of each key among the rows matching `filter`: (`key_hash`, `key_value`,
/// `group_name`, `status_code`), newest first. Rows without a key are skipped; at most `scan`
/// matching rows are read (portable on every backend, no window functions).
pub(crate) async fn latest_per_key(
    db: &Db,
    filter: &LogFilter,
    scan: i64,
) -> Result<Vec<(String, String, String, i32)>, DbError> {
    let rows: Vec<(String, String, String, i32)> = with_conn!(db, |conn| {
        Ok::<_, DbError>(
            filtered!(request_logs::table.into_boxed(), filter)
                .filter(request_logs::key_hash.ne(""))
                .order((request_logs::timestamp.desc(), request_logs::id.desc()))
                .limit(scan)
                .select((
                    request_logs::key_hash,
                    request_logs::key_value,
                    request_logs::group_name,
                    request_logs::status_code,
                ))
                .load(conn)
                .await?,
        )
    })?;
    let mut seen = std::collections::HashSet::new();
    Ok(rows
        .into_iter()
        .filter(|row| seen.insert(row.0.clone()))
        .collect())
}

/// How many `final` rows have a timestamp in `[from, to)`.
pub(crate) async fn count_final_between(
    db: &Db,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<i64, DbError> {
    with_conn!(db, |conn| {
        Ok(request_logs::table
            .filter(request_logs::request_type.eq("final"))
            .filter(request_logs::timestamp.ge(from))
            .filter(request_logs::timestamp.lt(to))
            .count()
            .get_result(conn)
            .await?)
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::{NaiveDate, TimeDelta};

    use super::*;
    use crate::db::{Backend, batch::INSERT_BYTES, test_support::TestDb};

    fn at(seconds: i64) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 11, 22)
            .and_then(|d| d.and_hms_micro_opt(10, 0, 0, 123_456))
            .expect("valid date")
            + TimeDelta::seconds(seconds)
    }

    /// A log row with every column set: a retry of key 11 in group 7 at `timestamp`.
    pub(crate) fn log(id: &str, timestamp: NaiveDateTime) -> RequestLogRow {
        RequestLogRow {
            id: id.to_owned(),
            timestamp,
            group_id: 7,
            group_name: "openai".to_owned(),
            parent_group_id: 3,
            parent_group_name: "all".to_owned(),
            key_value: "v1:ciphertext".to_owned(),
            key_hash: "ab".repeat(32),
            model: "gpt-4o-mini".to_owned(),
            is_success: false,
            source_ip: "2001:db8::1".to_owned(),
            status_code: 429,
            request_path: "/proxy/all/v1/chat/completions?x=1".to_owned(),
            duration: 1_234,
            error_message: "rate limited «quota»".to_owned(),
            user_agent: "openai-python/1.0".to_owned(),
            request_type: "retry".into(),
            upstream_addr: "https://api.openai.com".to_owned(),
            is_stream: true,
            request_body: r#"{"model":"gpt-4o-mini","stream":true}"#.to_owned(),
            key_id: Some(11),
            attempt: 2,
            ttfb_ms: Some(87),
            request_id: "req-1".to_owned(),
            prompt_tokens: Some(1_200),
            completion_tokens: Some(340),
            cached_tokens: Some(1_024),
            reasoning_tokens: Some(64),
            total_tokens: Some(1_540),
            access_key_id: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn insert_many_round_trips_every_column() {
        for t in TestDb::all("insert_many_round_trips_every_column").await {
            let db = &t.db;
            let backend = db.backend();
            let full = log("00000000-0000-4000-8000-000000000001", at(0));
            // The gateway's own failures: no key, no upstream, no timing, nothing optional.
            let bare = RequestLogRow {
                id: "00000000-0000-4000-8000-000000000002".to_owned(),
                timestamp: at(1),
                group_id: 0,
                group_name: "gone".to_owned(),
                parent_group_id: 0,
                parent_group_name: String::new(),
                key_value: String::new(),
                key_hash: String::new(),
                model: String::new(),
                is_success: true,
                source_ip: String::new(),
                status_code: 200,
                request_path: "/".to_owned(),
                duration: 0,
                error_message: String::new(),
                user_agent: String::new(),
                request_type: "final".into(),
                upstream_addr: String::new(),
                is_stream: false,
                request_body: String::new(),
                key_id: None,
                attempt: 1,
                ttfb_ms: None,
                request_id: String::new(),
                prompt_tokens: None,
                completion_tokens: None,
                cached_tokens: None,
                reasoning_tokens: None,
                total_tokens: None,
                access_key_id: None,
            };
            assert_eq!(
                insert_many(db, [full.clone(), bare.clone()].into(), AppendPriority::Low)
                    .await
                    .unwrap(),
                2,
                "{backend}"
            );
            assert_eq!(
                insert_many(db, Arc::new([]), AppendPriority::Normal)
                    .await
                    .unwrap(),
                0,
                "{backend}"
            );
            let rows = list_recent(db, 10).await.unwrap();
            assert_eq!(rows, [bare, full], "{backend}: newest first");
            assert_eq!(list_recent(db, 1).await.unwrap().len(), 1, "{backend}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn insert_many_writes_large_batches_in_one_transaction() {
        for t in TestDb::all("insert_many_writes_large_batches_in_one_transaction").await {
            let db = &t.db;
            let backend = db.backend();
            let mut rows: Vec<_> = (0..1_203)
                .map(|i| log(&format!("00000000-0000-4000-8000-{i:012}"), at(i)))
                .collect();
            assert_eq!(
                insert_many(db, rows.clone().into(), AppendPriority::Low)
                    .await
                    .unwrap(),
                1_203,
                "{backend}"
            );
            assert_eq!(list_recent(db, 5_000).await.unwrap().len(), 1_203, "{backend}");

            // A duplicate id in the last chunk rolls the whole batch back.
            rows.truncate(3);
            let fresh = |i: i64| log(&format!("10000000-0000-4000-8000-{i:012}"), at(i));
            let mut batch: Vec<_> = (0..600).map(fresh).collect();
            batch.push(rows[0].clone());
            // As a duplicate: the log writer takes it for an earlier attempt that committed.
            let err = insert_many(db, batch.into(), AppendPriority::Normal)
                .await
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    DbError::Query(diesel::result::Error::DatabaseError(
                        diesel::result::DatabaseErrorKind::UniqueViolation,
                        _
                    ))
                ),
                "{backend}: {err:?}"
            );
            assert_eq!(list_recent(db, 5_000).await.unwrap().len(), 1_203, "{backend}");
        }
    }

    /// The pager counts up to [`COUNT_AHEAD`] rows past the page, and says when there are more.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_logs_page_counts_a_bounded_number_of_rows_past_it() {
        for t in TestDb::all("the_logs_page_counts_a_bounded_number_of_rows_past_it").await {
            let db = &t.db;
            let backend = db.backend();
            // 15 + COUNT_AHEAD + 5 rows of one group, 3 of another.
            let many = 15 + COUNT_AHEAD + 5;
            let rows: Vec<_> = (0..many + 3)
                .map(|i| {
                    let mut row = log(&format!("30000000-0000-4000-8000-{i:012}"), at(i));
                    if i >= many {
                        row.group_name = "other".to_owned();
                    }
                    row
                })
                .collect();
            insert_many(db, rows.into(), AppendPriority::Low).await.unwrap();

            let everything = LogFilter::default();
            let (page, count) = list_filtered(db, &everything, 0, 15).await.unwrap();
            assert_eq!(page.len(), 15, "{backend}");
            assert_eq!(page[0].timestamp, at(many + 2), "{backend}: newest first");
            assert_eq!(
                count,
                BoundedCount {
                    total: 15 + COUNT_AHEAD,
                    capped: true
                },
                "{backend}"
            );
            // From the second page on, the cap lies past the last row: the count is exact.
            let (_, count) = list_filtered(db, &everything, 15, 15).await.unwrap();
            assert_eq!(
                count,
                BoundedCount {
                    total: many + 3,
                    capped: false
                },
                "{backend}"
            );
            let other = LogFilter {
                group_name: Some("othe".to_owned()),
                ..LogFilter::default()
            };
            let (page, count) = list_filtered(db, &other, 0, 2).await.unwrap();
            assert_eq!(page.len(), 2, "{backend}");
            assert_eq!(
                count,
                BoundedCount {
                    total: 3,
                    capped: false
                },
                "{backend}"
            );
        }
    }

    /// Rows at `ts`, or after it when `after`.
    async fn count_at(db: &Db, ts: NaiveDateTime, after: bool) -> Result<i64, DbError> {
        with_conn!(db, |conn| {
            let rows = request_logs::table.into_boxed();
            let rows = if after {
                rows.filter(request_logs::timestamp.gt(ts))
            } else {
                rows.filter(request_logs::timestamp.eq(ts))
            };
            Ok(rows.count().get_result(conn).await?)
        })
    }

    /// SQLite compares timestamps as text, and appends bypass diesel: a row must be found by
    /// the instant it was written with, whatever its fraction of a second.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_are_found_by_the_instant_they_were_written_with() {
        for t in TestDb::all("rows_are_found_by_the_instant_they_were_written_with").await {
            let db = &t.db;
            let backend = db.backend();
            let second = NaiveDate::from_ymd_opt(2026, 12, 6)
                .and_then(|d| d.and_hms_opt(9, 5, 7))
                .expect("valid date");
            let instants = [
                second,
                second + TimeDelta::milliseconds(120),
                second + TimeDelta::microseconds(123_456),
                second + TimeDelta::microseconds(1),
            ];
            let rows: Vec<_> = instants
                .iter()
                .enumerate()
                .map(|(i, &ts)| log(&format!("20000000-0000-4000-8000-{i:012}"), ts))
                .collect();
            insert_many(db, rows.into(), AppendPriority::Normal)
                .await
                .unwrap();
            for ts in instants {
                assert_eq!(count_at(db, ts, false).await.unwrap(), 1, "{backend}: {ts}");
            }
            let later = count_at(db, second + TimeDelta::microseconds(1), true)
                .await
                .unwrap();
            assert_eq!(
                later, 2,
                "{backend}: ordered as instants, not as text of uneven length"
            );
        }
    }

    #[test]
    fn insert_chunks_bound_rows_and_bytes() {
        let small: Vec<_> = (0..1_001).map(|i| log(&i.to_string(), at(i))).collect();
        let sizes: Vec<_> = insert_chunks(&small).map(<[_]>::len).collect();
        assert_eq!(sizes, [500, 500, 1]);

        let mut big = log("big", at(0));
        big.request_body = "x".repeat(65_000);
        let bodies = vec![big; 130];
        let sizes: Vec<_> = insert_chunks(&bodies).map(<[_]>::len).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 130);
        assert!(sizes.len() > 1 && sizes.iter().all(|&n| n * 65_000 <= INSERT_BYTES));

        let mut huge = log("huge", at(0));
        huge.request_body = "x".repeat(INSERT_BYTES + 1);
        assert_eq!(
            insert_chunks(&[huge]).count(),
            1,
            "an oversized row still goes alone"
        );
        assert_eq!(insert_chunks::<RequestLogRow>(&[]).count(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_deletes_exactly_the_older_rows_in_batches() {
        for t in TestDb::all("retention_deletes_exactly_the_older_rows_in_batches").await {
            let db = &t.db;
            let backend = db.backend();
            let rows: Vec<_> = (0..9)
                .map(|i| log(&format!("00000000-0000-4000-8000-{i:012}"), at(i * 60)))
                .collect();
            insert_many(db, rows.clone().into(), AppendPriority::Low)
                .await
                .unwrap();

            // Rows 0..=4 are older than the cutoff; row 5 is exactly at it and stays.
            let cutoff = at(5 * 60);
            assert_eq!(
                delete_older_than_in_batches(db, cutoff, 2).await.unwrap(),
                5,
                "{backend}: three statements of at most two rows"
            );
            let mut left: Vec<_> = list_recent(db, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect();
            left.reverse();
            let expected: Vec<_> = rows[5..].iter().map(|r| r.id.clone()).collect();
            assert_eq!(left, expected, "{backend}");

            assert_eq!(delete_older_than(db, cutoff).await.unwrap(), 0, "{backend}");
            assert_eq!(delete_older_than(db, at(3_600)).await.unwrap(), 4, "{backend}");
            assert!(list_recent(db, 100).await.unwrap().is_empty(), "{backend}");
        }
    }

    /// The names of `request_logs`'s secondary indexes, sorted.
    async fn index_names(db: &Db) -> Result<Vec<String>, DbError> {
        #[derive(QueryableByName)]
        struct Index {
            #[diesel(sql_type = diesel::sql_types::Text)]
            name: String,
        }
        let sql = match db.backend() {
            Backend::Sqlite => {
                "SELECT name FROM sqlite_master \
                 WHERE type = 'index' AND tbl_name = 'request_logs' AND sql IS NOT NULL"
            }
            Backend::Postgres => {
                "SELECT indexname::text AS name FROM pg_indexes \
                 WHERE schemaname = current_schema() AND tablename = 'request_logs' \
                 AND indexname <> 'request_logs_pkey'"
            }
            Backend::Mysql => {
                "SELECT DISTINCT CAST(index_name AS CHAR) AS name FROM information_schema.statistics \
                 WHERE table_schema = DATABASE() AND table_name = 'request_logs' \
                 AND index_name <> 'PRIMARY'"
            }
        };
        let loaded: Vec<Index> = with_conn!(db, |conn| diesel::sql_query(sql).load(conn).await)?;
        let mut names: Vec<_> = loaded.into_iter().map(|i| i.name).collect();
        names.sort();
        Ok(names)
    }

    /// Runs one of the index migration's scripts for `backend`.
    async fn run_script(db: &Db, up: bool) -> Result<(), DbError> {
        use diesel_async::SimpleAsyncConnection;
        macro_rules! script {
            ($backend:literal) => {
                if up {
                    include_str!(concat!(
                        "../../../migrations/",
                        $backend,
                        "/2026-12-08-000001_request_log_indexes/up.sql"
                    ))
                } else {
                    include_str!(concat!(
                        "../../../migrations/",
                        $backend,
                        "/2026-12-08-000001_request_log_indexes/down.sql"
                    ))
                }
            };
        }
        let sql = match db.backend() {
            Backend::Sqlite => script!("sqlite"),
            Backend::Postgres => script!("postgres"),
            Backend::Mysql => script!("mysql"),
        };
        with_conn!(db, |conn| Ok(conn.batch_execute(sql).await?))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn request_logs_keeps_only_the_indexes_a_query_uses_and_down_restores_the_rest() {
        let kept = ["idx_request_logs_key_hash", "idx_request_logs_timestamp"];
        let all = [
            "idx_request_logs_group_id",
            "idx_request_logs_group_name",
            "idx_request_logs_key_hash",
            "idx_request_logs_model",
            "idx_request_logs_parent_group_id",
            "idx_request_logs_parent_group_name",
            "idx_request_logs_request_type",
            "idx_request_logs_timestamp",
        ];
        let test = "request_logs_keeps_only_the_indexes_a_query_uses";
        for t in TestDb::all(test).await {
            let db = &t.db;
            let backend = db.backend();
            assert_eq!(index_names(db).await.unwrap(), kept, "{backend}: migrated");
            run_script(db, false).await.unwrap();
            assert_eq!(
                index_names(db).await.unwrap(),
                all,
                "{backend}: down.sql gives gpt-load's eight back"
            );
            run_script(db, true).await.unwrap();
            assert_eq!(index_names(db).await.unwrap(), kept, "{backend}: up.sql again");
            // Rows still go in and list in order with only the timestamp index.
            let rows: Vec<_> = (0..3)
                .map(|i| log(&format!("00000000-0000-4000-8000-{i:012}"), at(i)))
                .collect();
            insert_many(db, rows.into(), AppendPriority::Normal)
                .await
                .unwrap();
            assert_eq!(list_recent(db, 10).await.unwrap().len(), 3, "{backend}");
        }
    }
}
