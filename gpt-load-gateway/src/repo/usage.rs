//! `usage_hourly`: requests and tokens by hour, group, key, model and access key, kept up to
//! date by the log writer (docs/USAGE.md).

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use diesel::{
    prelude::*,
    result::{DatabaseErrorKind, Error as QueryError},
};
use diesel_async::{AsyncConnection, RunQueryDsl};

use crate::{
    db::{Db, DbError, schema::usage_hourly, write_transaction},
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

/// What to add to one row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct UsageSums {
    /// Attempts.
    pub(crate) requests: i64,
    /// Attempts that failed.
    pub(crate) failures: i64,
    pub(crate) prompt_tokens: i64,
    pub(crate) completion_tokens: i64,
    pub(crate) cached_tokens: i64,
    pub(crate) reasoning_tokens: i64,
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
/// Portable on the three backends as `group_hourly_stats` is ([`stats::add_hourly`]): an
/// `UPDATE … SET requests = requests + ?`, and when no row matched, an `INSERT` in a savepoint;
/// when another node inserted the row in between, the unique index rejects ours and the
/// `UPDATE` runs once more.
///
/// [`stats::add_hourly`]: super::stats::add_hourly
pub(crate) async fn add_hourly(db: &Db, counts: &UsageCounts) -> Result<(), DbError> {
    if counts.values().all(UsageSums::is_zero) {
        return Ok(());
    }
    write_transaction!(db, |conn| {
        let at = now();
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
                    usage_hourly::reasoning_tokens.eq(usage_hourly::reasoning_tokens + sums.reasoning_tokens),
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
                    Err(QueryError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) if !raced => {
                        raced = true;
                    }
                    Err(err) => return Err(err.into()),
                }
            }
        }
        Ok::<_, DbError>(())
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
            add_hourly(db, &first).await.unwrap();
            let second: UsageCounts = [(key(9, 1, 7, "gpt-4o"), sums(3, 0, 60, 40))]
                .into_iter()
                .collect();
            add_hourly(db, &second).await.unwrap();
            add_hourly(db, &UsageCounts::new()).await.unwrap();

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
}
