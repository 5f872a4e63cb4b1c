//! `usage_hourly`: requests and tokens by hour, group, key, model and access key, kept up to
//! date by the log writer (docs/USAGE.md).

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
    db::{AppendPriority, Backend, Db, DbError, schema::usage_hourly, with_conn},
    models::now,
};

/// Which row of `usage_hourly` a count goes to. Ordered by its columns, the order rows are
/// written in (so concurrent writers lock them in the same order).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct UsageKey {
    /// The start of the hour, UTC.
    pub(crate) hour: NaiveDateTime,
    /// The group that served the attempt.
    pub(crate) group_id: i64,
    /// 0 when no key was used.
    pub(crate) key_id: i64,
    /// The model the client asked for, clipped to 255 bytes; empty when none.
    pub(crate) model: String,
    /// 0 for requests made with a proxy key.
    pub(crate) access_key_id: i64,
}

/// What one row adds up: to add to it, or read from a summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, QueryableByName)]
pub(crate) struct UsageSums {
    /// Attempts.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(crate) requests: i64,
    /// Attempts that failed.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(crate) failures: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(crate) prompt_tokens: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(crate) completion_tokens: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(crate) cached_tokens: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(crate) reasoning_tokens: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(crate) total_tokens: i64,
}

impl UsageSums {
    /// Adds `other` to these sums.
    pub(crate) fn add(&mut self, other: &Self) {
        self.requests += other.requests;
        self.failures += other.failures;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cached_tokens += other.cached_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
        self.total_tokens += other.total_tokens;
    }

    fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// Counts to add, one entry per row.
pub(crate) type UsageCounts = BTreeMap<UsageKey, UsageSums>;

/// A `usage_hourly` row.
#[cfg(test)]
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = usage_hourly)]
pub(crate) struct UsageRow {
    pub(crate) id: i64,
    pub(crate) time: NaiveDateTime,
    pub(crate) group_id: i64,
    pub(crate) key_id: i64,
    pub(crate) model: String,
    pub(crate) access_key_id: i64,
    pub(crate) requests: i64,
    pub(crate) failures: i64,
    pub(crate) prompt_tokens: i64,
    pub(crate) completion_tokens: i64,
    pub(crate) cached_tokens: i64,
    pub(crate) reasoning_tokens: i64,
    pub(crate) total_tokens: i64,
    pub(crate) updated_at: NaiveDateTime,
}

/// Adds `counts` to their rows, creating the rows that do not exist yet, in one transaction;
/// all-zero entries are skipped.
///
/// As `group_hourly_stats` is ([`stats::add_hourly`]): on SQLite on the append connection at
/// `priority`; elsewhere an `UPDATE … SET requests = requests + ?`, and when no row matched, an
/// `INSERT` in a savepoint; when another node inserted the row in between, the unique index
/// rejects ours and the `UPDATE` runs once more.
///
/// [`stats::add_hourly`]: super::stats::add_hourly
pub(crate) async fn add_hourly(
    db: &Db,
    counts: &UsageCounts,
    priority: AppendPriority,
) -> Result<(), DbError> {
    if counts.values().all(UsageSums::is_zero) {
        return Ok(());
    }
    let at = now();
    with_conn!(
        db,
        sqlite_pool | sqlite | {
            // The append runs on another thread: it takes its own copy (one entry per row).
            let counts = counts.clone();
            sqlite
                .append(priority, move |tx| sqlite_add_hourly(tx, &counts, at))
                .await
        },
        server | conn | {
            AsyncConnection::transaction(conn, async |conn| {
                for (key, sums) in counts.iter().filter(|(_, sums)| !sums.is_zero()) {
                    let mut raced = false;
                    loop {
                        let updated = diesel::update(
                            usage_hourly::table
                                .filter(usage_hourly::time.eq(key.hour))
                                .filter(usage_hourly::group_id.eq(key.group_id))
                                .filter(usage_hourly::key_id.eq(key.key_id))
                                .filter(usage_hourly::model.eq(&key.model))
                                .filter(usage_hourly::access_key_id.eq(key.access_key_id)),
                        )
                        .set((
                            usage_hourly::requests.eq(usage_hourly::requests + sums.requests),
                            usage_hourly::failures.eq(usage_hourly::failures + sums.failures),
                            usage_hourly::prompt_tokens.eq(usage_hourly::prompt_tokens + sums.prompt_tokens),
                            usage_hourly::completion_tokens
                                .eq(usage_hourly::completion_tokens + sums.completion_tokens),
                            usage_hourly::cached_tokens.eq(usage_hourly::cached_tokens + sums.cached_tokens),
                            usage_hourly::reasoning_tokens
                                .eq(usage_hourly::reasoning_tokens + sums.reasoning_tokens),
                            usage_hourly::total_tokens.eq(usage_hourly::total_tokens + sums.total_tokens),
                            usage_hourly::updated_at.eq(at),
                        ))
                        .execute(conn)
                        .await?;
                        if updated > 0 {
                            break;
                        }
                        let inserted = conn
                            .transaction(async |conn| {
                                diesel::insert_into(usage_hourly::table)
                                    .values((
                                        usage_hourly::time.eq(key.hour),
                                        usage_hourly::group_id.eq(key.group_id),
                                        usage_hourly::key_id.eq(key.key_id),
                                        usage_hourly::model.eq(&key.model),
                                        usage_hourly::access_key_id.eq(key.access_key_id),
                                        usage_hourly::requests.eq(sums.requests),
                                        usage_hourly::failures.eq(sums.failures),
                                        usage_hourly::prompt_tokens.eq(sums.prompt_tokens),
                                        usage_hourly::completion_tokens.eq(sums.completion_tokens),
                                        usage_hourly::cached_tokens.eq(sums.cached_tokens),
                                        usage_hourly::reasoning_tokens.eq(sums.reasoning_tokens),
                                        usage_hourly::total_tokens.eq(sums.total_tokens),
                                        usage_hourly::updated_at.eq(at),
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
    counts: &UsageCounts,
    at: NaiveDateTime,
) -> rusqlite::Result<()> {
    let mut update = tx.prepare_cached(
        "UPDATE usage_hourly SET requests = requests + ?1, failures = failures + ?2, \
         prompt_tokens = prompt_tokens + ?3, completion_tokens = completion_tokens + ?4, \
         cached_tokens = cached_tokens + ?5, reasoning_tokens = reasoning_tokens + ?6, \
         total_tokens = total_tokens + ?7, updated_at = ?8 \
         WHERE time = ?9 AND group_id = ?10 AND key_id = ?11 AND model = ?12 AND access_key_id = ?13",
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO usage_hourly (requests, failures, prompt_tokens, completion_tokens, \
         cached_tokens, reasoning_tokens, total_tokens, updated_at, time, group_id, key_id, model, \
         access_key_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    let at = sqlite::timestamp(at);
    for (key, sums) in counts.iter().filter(|(_, sums)| !sums.is_zero()) {
        let hour = sqlite::timestamp(key.hour);
        let params = rusqlite::params![
            sums.requests,
            sums.failures,
            sums.prompt_tokens,
            sums.completion_tokens,
            sums.cached_tokens,
            sums.reasoning_tokens,
            sums.total_tokens,
            at,
            hour,
            key.group_id,
            key.key_id,
            key.model,
            key.access_key_id,
        ];
        // Named in full: diesel's `RunQueryDsl::execute` is in scope here too.
        if rusqlite::Statement::execute(&mut update, params)? == 0 {
            rusqlite::Statement::execute(&mut insert, params)?;
        }
    }
    Ok(())
}

/// What usage can be grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum UsageDim {
    Hour,
    Day,
    Group,
    Key,
    Model,
    AccessKey,
}

/// Which usage to add up, and by what.
#[derive(Clone, Debug, Default)]
pub(crate) struct UsageQuery {
    /// Hours from this one on (inclusive).
    pub(crate) from: NaiveDateTime,
    /// Hours before this one.
    pub(crate) to: NaiveDateTime,
    pub(crate) group_id: Option<i64>,
    pub(crate) key_id: Option<i64>,
    /// Exact.
    pub(crate) model: Option<String>,
    pub(crate) access_key_id: Option<i64>,
    /// Empty: one total.
    pub(crate) by: Vec<UsageDim>,
}

impl UsageQuery {
    fn by(&self, dim: UsageDim) -> bool {
        self.by.contains(&dim)
    }
}

/// One line of a summary: the dimensions it was grouped by (the others are 0 or empty; `time` is
/// the first hour of its bucket, or of the range) and its sums.
#[derive(Clone, Debug, PartialEq, Eq, QueryableByName)]
pub(crate) struct UsageLine {
    #[diesel(sql_type = diesel::sql_types::Timestamp)]
    pub(crate) time: NaiveDateTime,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(crate) group_id: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(crate) key_id: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub(crate) model: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(crate) access_key_id: i64,
    #[diesel(embed)]
    pub(crate) sums: UsageSums,
}

/// The sum columns of `usage_hourly`, in [`UsageSums`]'s order.
pub(crate) const SUMS: [&str; 7] = [
    "requests",
    "failures",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
];

/// A statement written for one backend: its identifiers quoted, its placeholders numbered.
struct Statement {
    backend: Backend,
    params: usize,
}

impl Statement {
    fn new(backend: Backend) -> Self {
        Self { backend, params: 0 }
    }

    fn ident(&self, name: &str) -> String {
        match self.backend {
            Backend::Mysql => format!("`{name}`"),
            Backend::Sqlite | Backend::Postgres => format!("\"{name}\""),
        }
    }

    fn param(&mut self) -> String {
        self.params += 1;
        match self.backend {
            Backend::Postgres => format!("${}", self.params),
            Backend::Sqlite | Backend::Mysql => "?".to_owned(),
        }
    }

    /// `value` as a 64-bit integer (a sum is `NUMERIC` on PostgreSQL and `DECIMAL` on MySQL).
    fn int(&self, value: &str) -> String {
        match self.backend {
            Backend::Mysql => format!("CAST({value} AS SIGNED)"),
            Backend::Sqlite | Backend::Postgres => format!("CAST({value} AS BIGINT)"),
        }
    }

    /// The minute of a timestamp column, as a value to group by.
    fn minute(&self, column: &str) -> String {
        let column = self.ident(column);
        match self.backend {
            Backend::Sqlite => format!("strftime('%Y-%m-%d %H:%M', {column})"),
            Backend::Postgres => format!("date_trunc('minute', {column})"),
            Backend::Mysql => format!("DATE_FORMAT({column}, '%Y-%m-%d %H:%i')"),
        }
    }
}

/// Binds `query`'s filter values in the order [`summary_sql`] wrote their placeholders.
macro_rules! bind_filters {
    ($query:expr, $q:expr) => {{
        use diesel::sql_types::{BigInt, Text, Timestamp};
        let mut query = $query.bind::<Timestamp, _>($q.from).bind::<Timestamp, _>($q.to);
        if let Some(id) = $q.group_id {
            query = query.bind::<BigInt, _>(id);
        }
        if let Some(id) = $q.key_id {
            query = query.bind::<BigInt, _>(id);
        }
        if let Some(model) = &$q.model {
            query = query.bind::<Text, _>(model.clone());
        }
        if let Some(id) = $q.access_key_id {
            query = query.bind::<BigInt, _>(id);
        }
        query
    }};
}

/// The `SELECT` behind [`summary`].
fn summary_sql(backend: Backend, q: &UsageQuery) -> String {
    let mut st = Statement::new(backend);
    let time = st.ident("time");
    let mut select = Vec::new();
    let mut group_by = Vec::new();
    if q.by(UsageDim::Hour) {
        select.push(time.clone());
        group_by.push(time.clone());
    } else {
        select.push(format!("MIN({time}) AS {time}"));
        if q.by(UsageDim::Day) {
            // `date()` is a function on all three backends.
            group_by.push(format!("date({time})"));
        }
    }
    for (dim, column) in [
        (UsageDim::Group, "group_id"),
        (UsageDim::Key, "key_id"),
        (UsageDim::Model, "model"),
        (UsageDim::AccessKey, "access_key_id"),
    ] {
        let ident = st.ident(column);
        if q.by(dim) {
            select.push(ident.clone());
            group_by.push(ident);
        } else if column == "model" {
            select.push(format!("'' AS {ident}"));
        } else {
            select.push(format!("{} AS {ident}", st.int("0")));
        }
    }
    for column in SUMS {
        let ident = st.ident(column);
        select.push(format!("{} AS {ident}", st.int(&format!("SUM({ident})"))));
    }
    let mut filters = vec![
        format!("{time} >= {}", st.param()),
        format!("{time} < {}", st.param()),
    ];
    for (set, column) in [
        (q.group_id.is_some(), "group_id"),
        (q.key_id.is_some(), "key_id"),
        (q.model.is_some(), "model"),
        (q.access_key_id.is_some(), "access_key_id"),
    ] {
        if set {
            filters.push(format!("{} = {}", st.ident(column), st.param()));
        }
    }
    let mut sql = format!(
        "SELECT {} FROM {} WHERE {}",
        select.join(", "),
        st.ident("usage_hourly"),
        filters.join(" AND ")
    );
    if !group_by.is_empty() {
        sql.push_str(" GROUP BY ");
        sql.push_str(&group_by.join(", "));
    }
    // A total over no rows would be one line of `NULL`s.
    sql.push_str(" HAVING COUNT(*) > 0");
    sql
}

/// Adds up `usage_hourly` over the query's range and filters, one line per combination of the
/// dimensions it groups by (one line in all when it groups by none); nothing when no row
/// matched. Unordered.
pub(crate) async fn summary(db: &Db, q: &UsageQuery) -> Result<Vec<UsageLine>, DbError> {
    let sql = summary_sql(db.backend(), q);
    with_conn!(db, |conn| {
        let query = bind_filters!(diesel::sql_query(&sql).into_boxed(), q);
        Ok(query.load(conn).await?)
    })
}

/// A key's busiest minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, QueryableByName)]
pub(crate) struct KeyPeak {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(crate) key_id: i64,
    /// Attempts in that minute.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(crate) peak_rpm: i64,
}

/// Each key's most attempts in one minute between `from` and `to`, from `request_logs` (so
/// within its retention), for the keys the query's group and key filters allow. The model and
/// access key filters do not apply: a key's rate is all of its traffic.
pub(crate) async fn key_peaks(db: &Db, q: &UsageQuery) -> Result<Vec<KeyPeak>, DbError> {
    let mut st = Statement::new(db.backend());
    let (timestamp, key_id) = (st.ident("timestamp"), st.ident("key_id"));
    let mut filters = vec![
        format!("{timestamp} >= {}", st.param()),
        format!("{timestamp} < {}", st.param()),
        format!("{key_id} IS NOT NULL"),
    ];
    if q.group_id.is_some() {
        filters.push(format!("{} = {}", st.ident("group_id"), st.param()));
    }
    if q.key_id.is_some() {
        filters.push(format!("{key_id} = {}", st.param()));
    }
    let minute = st.minute("timestamp");
    let sql = format!(
        "SELECT {key_id}, {} AS peak_rpm FROM (SELECT {key_id}, {minute} AS minute, COUNT(*) AS n \
         FROM {} WHERE {} GROUP BY {key_id}, {minute}) AS per_minute GROUP BY {key_id}",
        st.int("MAX(n)"),
        st.ident("request_logs"),
        filters.join(" AND "),
    );
    let filter = UsageQuery {
        model: None,
        access_key_id: None,
        ..q.clone()
    };
    with_conn!(db, |conn| {
        let query = bind_filters!(diesel::sql_query(&sql).into_boxed(), filter);
        Ok(query.load(conn).await?)
    })
}

/// Every row from `since` on, by its columns' order.
#[cfg(test)]
pub(crate) async fn rows_since(db: &Db, since: NaiveDateTime) -> Result<Vec<UsageRow>, DbError> {
    crate::db::with_conn!(db, |conn| {
        Ok(usage_hourly::table
            .filter(usage_hourly::time.ge(since))
            .order((
                usage_hourly::time,
                usage_hourly::group_id,
                usage_hourly::key_id,
                usage_hourly::model,
                usage_hourly::access_key_id,
            ))
            .select(UsageRow::as_select())
            .load(conn)
            .await?)
    })
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::db::test_support::TestDb;

    fn key(h: u32, group_id: i64, key_id: i64, model: &str) -> UsageKey {
        UsageKey {
            hour: NaiveDate::from_ymd_opt(2026, 12, 6)
                .and_then(|d| d.and_hms_opt(h, 0, 0))
                .expect("valid hour"),
            group_id,
            key_id,
            model: model.to_owned(),
            access_key_id: 0,
        }
    }

    fn sums(requests: i64, failures: i64, prompt: i64, completion: i64) -> UsageSums {
        UsageSums {
            requests,
            failures,
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: prompt / 2,
            reasoning_tokens: completion / 2,
            total_tokens: prompt + completion,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn usage_accumulates_per_hour_group_key_and_model() {
        for t in TestDb::all("usage_accumulates_per_hour_group_key_and_model").await {
            let db = &t.db;
            let backend = db.backend();
            let first: UsageCounts = [
                (key(9, 1, 7, "gpt-4o"), sums(2, 1, 100, 20)),
                (key(9, 1, 8, "gpt-4o"), sums(1, 0, 10, 2)),
                (key(10, 2, 0, ""), sums(1, 1, 0, 0)),
                (key(10, 2, 9, "x"), UsageSums::default()),
            ]
            .into_iter()
            .collect();
            add_hourly(db, &first, AppendPriority::Normal).await.unwrap();
            let second: UsageCounts = [(key(9, 1, 7, "gpt-4o"), sums(3, 0, 60, 40))]
                .into_iter()
                .collect();
            add_hourly(db, &second, AppendPriority::Normal).await.unwrap();
            add_hourly(db, &UsageCounts::new(), AppendPriority::Normal)
                .await
                .unwrap();

            let rows = rows_since(db, key(0, 0, 0, "").hour).await.unwrap();
            let seen: Vec<_> = rows
                .iter()
                .map(|r| {
                    (
                        (r.time, r.group_id, r.key_id, r.model.as_str()),
                        (r.requests, r.failures, r.prompt_tokens, r.completion_tokens),
                        (r.cached_tokens, r.reasoning_tokens, r.total_tokens),
                    )
                })
                .collect();
            let k = |h, g, k, m| {
                let key = key(h, g, k, m);
                (key.hour, key.group_id, key.key_id, m)
            };
            assert_eq!(
                seen,
                [
                    (k(9, 1, 7, "gpt-4o"), (5, 1, 160, 60), (80, 30, 220)),
                    (k(9, 1, 8, "gpt-4o"), (1, 0, 10, 2), (5, 1, 12)),
                    (k(10, 2, 0, ""), (1, 1, 0, 0), (0, 0, 0)),
                ],
                "{backend}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn summaries_add_up_by_any_dimensions_within_the_filters() {
        for t in TestDb::all("summaries_add_up_by_any_dimensions_within_the_filters").await {
            let db = &t.db;
            let backend = db.backend();
            let mut with_access = key(11, 2, 9, "claude");
            with_access.access_key_id = 4;
            let counts: UsageCounts = [
                (key(9, 1, 7, "gpt-4o"), sums(2, 1, 100, 20)),
                (key(9, 1, 8, "gpt-4o"), sums(1, 0, 10, 2)),
                (key(10, 1, 7, "gpt-4o-mini"), sums(4, 0, 40, 8)),
                (with_access, sums(1, 0, 7, 3)),
            ]
            .into_iter()
            .collect();
            add_hourly(db, &counts, AppendPriority::Normal).await.unwrap();
            let hour = |h| key(h, 0, 0, "").hour;
            let range = UsageQuery {
                from: hour(9),
                to: hour(12),
                ..UsageQuery::default()
            };
            let sorted = |mut lines: Vec<UsageLine>| {
                lines.sort_by_key(|l| (l.time, l.group_id, l.key_id, l.model.clone(), l.access_key_id));
                lines
                    .into_iter()
                    .map(|l| {
                        let s = l.sums;
                        (
                            (l.time, l.group_id, l.key_id, l.model, l.access_key_id),
                            (s.requests, s.failures, s.prompt_tokens, s.completion_tokens),
                            (s.cached_tokens, s.reasoning_tokens, s.total_tokens),
                        )
                    })
                    .collect::<Vec<_>>()
            };

            let total = summary(db, &range).await.unwrap();
            assert_eq!(
                sorted(total),
                [((hour(9), 0, 0, String::new(), 0), (8, 1, 157, 33), (78, 16, 190))],
                "{backend}: one total, its time the first hour"
            );

            let by = |dims: &[UsageDim]| UsageQuery {
                by: dims.to_vec(),
                ..range.clone()
            };
            let lines = summary(db, &by(&[UsageDim::Key])).await.unwrap();
            assert_eq!(
                sorted(lines)
                    .into_iter()
                    .map(|l| (l.0.2, l.1))
                    .collect::<Vec<_>>(),
                [(7, (6, 1, 140, 28)), (8, (1, 0, 10, 2)), (9, (1, 0, 7, 3))],
                "{backend}: by key"
            );
            let lines = summary(db, &by(&[UsageDim::Hour, UsageDim::Model]))
                .await
                .unwrap();
            assert_eq!(
                sorted(lines)
                    .into_iter()
                    .map(|l| (l.0.0, l.0.3, l.1.0))
                    .collect::<Vec<_>>(),
                [
                    (hour(9), "gpt-4o".to_owned(), 3),
                    (hour(10), "gpt-4o-mini".to_owned(), 4),
                    (hour(11), "claude".to_owned(), 1),
                ],
                "{backend}: by hour and model"
            );
            let lines = summary(db, &by(&[UsageDim::Day, UsageDim::Group])).await.unwrap();
            assert_eq!(
                sorted(lines)
                    .into_iter()
                    .map(|l| (l.0.0, l.0.1, l.1.0))
                    .collect::<Vec<_>>(),
                [(hour(9), 1, 7), (hour(11), 2, 1)],
                "{backend}: by day and group, each at its first hour"
            );
            let lines = summary(db, &by(&[UsageDim::AccessKey])).await.unwrap();
            assert_eq!(
                sorted(lines)
                    .into_iter()
                    .map(|l| (l.0.4, l.1.0))
                    .collect::<Vec<_>>(),
                [(0, 7), (4, 1)],
                "{backend}: by access key"
            );

            let filtered = UsageQuery {
                group_id: Some(1),
                key_id: Some(7),
                model: Some("gpt-4o".to_owned()),
                ..by(&[UsageDim::Model])
            };
            let lines = summary(db, &filtered).await.unwrap();
            assert_eq!(
                sorted(lines)
                    .into_iter()
                    .map(|l| (l.0.3, l.1))
                    .collect::<Vec<_>>(),
                [("gpt-4o".to_owned(), (2, 1, 100, 20))],
                "{backend}: filtered"
            );
            let narrow = UsageQuery {
                from: hour(10),
                to: hour(11),
                access_key_id: Some(4),
                ..range.clone()
            };
            assert!(
                summary(db, &narrow).await.unwrap().is_empty(),
                "{backend}: nothing matches"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_keys_peak_is_its_busiest_minute() {
        use crate::repo::request_logs::{insert_many, tests::log};

        for t in TestDb::all("a_keys_peak_is_its_busiest_minute").await {
            let db = &t.db;
            let backend = db.backend();
            let start = key(9, 0, 0, "").hour;
            let at = |minute: i64, second: i64| start + chrono::Duration::seconds(minute * 60 + second);
            // Key 11: 2 attempts in minute 0, 3 in minute 1; key 12: 1; no key: 4 in minute 2.
            let mut rows = Vec::new();
            for (n, (minute, second, key_id)) in [
                (0, 1, Some(11)),
                (0, 59, Some(11)),
                (1, 0, Some(11)),
                (1, 30, Some(11)),
                (1, 59, Some(11)),
                (1, 10, Some(12)),
                (2, 0, None),
                (2, 1, None),
                (2, 2, None),
                (2, 3, None),
            ]
            .into_iter()
            .enumerate()
            {
                let mut row = log(&format!("00000000-0000-4000-8000-{n:012}"), at(minute, second));
                row.key_id = key_id;
                rows.push(row);
            }
            insert_many(db, rows.into(), crate::db::AppendPriority::Normal)
                .await
                .unwrap();
            let range = UsageQuery {
                from: start,
                to: start + chrono::Duration::hours(1),
                ..UsageQuery::default()
            };
            let mut peaks = key_peaks(db, &range).await.unwrap();
            peaks.sort_by_key(|p| p.key_id);
            let peaks: Vec<_> = peaks.iter().map(|p| (p.key_id, p.peak_rpm)).collect();
            assert_eq!(peaks, [(11, 3), (12, 1)], "{backend}");

            let one = UsageQuery {
                key_id: Some(12),
                group_id: Some(7),
                ..range.clone()
            };
            let peaks: Vec<_> = key_peaks(db, &one)
                .await
                .unwrap()
                .iter()
                .map(|p| (p.key_id, p.peak_rpm))
                .collect();
            assert_eq!(peaks, [(12, 1)], "{backend}");
            let other_group = UsageQuery {
                group_id: Some(8),
                ..range
            };
            assert!(key_peaks(db, &other_group).await.unwrap().is_empty(), "{backend}");
        }
    }
}
