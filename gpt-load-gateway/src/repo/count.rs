//! A count that stops early: `SELECT COUNT(*) FROM (<query> LIMIT n) AS matched`.
//!
//! A pager over a table of millions of rows cannot afford `COUNT(*)` on every page: with a filter
//! no index serves, the count reads the whole table, while the page itself stops after its last
//! row. Counting the rows of a query that is already limited reads at most that many matches.

use diesel::QueryResult;
use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::BigInt;

/// `SELECT COUNT(*)` over the rows of `query`, which should carry its own `LIMIT`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CountRows<Q> {
    query: Q,
}

/// Counts the rows `query` returns; give it a `LIMIT` to bound the work.
pub(crate) fn count_rows<Q>(query: Q) -> CountRows<Q> {
    CountRows { query }
}

impl<Q> QueryId for CountRows<Q> {
    type QueryId = ();
    // The inner query is boxed and its SQL varies with the filters: never cache by type.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> Query for CountRows<Q> {
    type SqlType = BigInt;
}

impl<DB: Backend, Q: QueryFragment<DB>> QueryFragment<DB> for CountRows<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("SELECT COUNT(*) FROM (");
        self.query.walk_ast(out.reborrow())?;
        // MySQL and PostgreSQL require a derived table to be named.
        out.push_sql(") AS matched");
        Ok(())
    }
}

/// How many rows match, counted up to a cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BoundedCount {
    /// The rows counted: every match, or `cap` when there are more.
    pub(crate) total: i64,
    /// More rows match than were counted.
    pub(crate) capped: bool,
}

impl BoundedCount {
    /// Reads the count of a query limited to `cap + 1` rows: one past the cap tells "more".
    pub(crate) fn of(counted: i64, cap: i64) -> Self {
        Self {
            total: counted.min(cap),
            capped: counted > cap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_past_the_cap_means_more() {
        assert_eq!(
            BoundedCount::of(7, 10),
            BoundedCount {
                total: 7,
                capped: false
            }
        );
        assert_eq!(
            BoundedCount::of(10, 10),
            BoundedCount {
                total: 10,
                capped: false
            }
        );
        assert_eq!(
            BoundedCount::of(11, 10),
            BoundedCount {
                total: 10,
                capped: true
            }
        );
    }
}
