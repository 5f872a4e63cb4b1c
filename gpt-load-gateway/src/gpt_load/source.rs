//! Reading gpt-load's tables, wherever they are: in place (`import`), renamed aside or moved to
//! another schema (adoption). Every column is fetched as text and parsed by
//! [`convert`](super::convert), so one reader serves all three backends and every version of
//! gpt-load's schema: a column an older version lacks reads as NULL.

use std::collections::BTreeSet;

use diesel::sql_types::{Nullable, Text};
use diesel::{QueryResult, QueryableByName, RunQueryDsl};

use super::conn::{SyncConn, on_conn, quote};
use crate::db::Backend;

/// The gpt-load tables, children after parents.
pub(crate) const TABLES: [&str; 6] = [
    "system_settings",
    "groups",
    "group_sub_groups",
    "api_keys",
    "request_logs",
    "group_hourly_stats",
];

/// Where gpt-load's tables are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Location {
    /// Under their own names, in the current database or schema.
    InPlace,
    /// Renamed to `<prefix><name>` in the current database (SQLite, MySQL adoption).
    Prefixed(&'static str),
    /// Moved, names unchanged, to this PostgreSQL schema (PostgreSQL adoption).
    Schema(String),
}

impl Location {
    /// The quoted, qualified name of gpt-load's `table`.
    pub(crate) fn table(&self, backend: Backend, table: &str) -> String {
        match self {
            Self::InPlace => quote(backend, table),
            Self::Prefixed(prefix) => quote(backend, &format!("{prefix}{table}")),
            Self::Schema(schema) => format!("{}.{}", quote(backend, schema), quote(backend, table)),
        }
    }

    /// The column names of gpt-load's `table` (empty when the table does not exist).
    pub(crate) fn columns(&self, conn: &mut SyncConn, table: &str) -> QueryResult<BTreeSet<String>> {
        #[derive(QueryableByName)]
        struct Name {
            #[diesel(sql_type = Text)]
            name: String,
        }
        let (schema, name) = match self {
            Self::InPlace => (None, table.to_owned()),
            Self::Prefixed(prefix) => (None, format!("{prefix}{table}")),
            Self::Schema(schema) => (Some(schema.as_str()), table.to_owned()),
        };
        let sql = match (conn.backend(), schema) {
            (Backend::Sqlite, _) => return conn.columns(&name),
            (Backend::Postgres, Some(schema)) => format!(
                "SELECT CAST(column_name AS TEXT) AS name FROM information_schema.columns \
                 WHERE table_schema = '{schema}' AND table_name = '{name}'"
            ),
            (Backend::Postgres | Backend::Mysql, _) => return conn.columns(&name),
        };
        let rows: Vec<Name> = on_conn!(conn, |c| diesel::sql_query(&sql).load(c))?;
        Ok(rows.into_iter().map(|r| r.name).collect())
    }
}

/// A row type read from one of gpt-load's tables, every column as nullable text.
pub(crate) trait SourceRow {
    /// gpt-load's table name.
    const TABLE: &'static str;
    /// The columns read, in the order of the struct's fields.
    const COLUMNS: &'static [&'static str];

    /// Runs `sql`, binding `text` to its one placeholder when given.
    fn load(conn: &mut SyncConn, sql: &str, text: Option<&str>) -> QueryResult<Vec<Self>>
    where
        Self: Sized;
}

macro_rules! source_row {
    ($(#[$doc:meta])* $name:ident from $table:literal { $($column:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, QueryableByName)]
        pub(crate) struct $name {
            $(
                #[diesel(sql_type = Nullable<Text>)]
                pub(crate) $column: Option<String>,
            )+
        }

        impl SourceRow for $name {
            const TABLE: &'static str = $table;
            const COLUMNS: &'static [&'static str] = &[$(stringify!($column)),+];

            fn load(conn: &mut SyncConn, sql: &str, text: Option<&str>) -> QueryResult<Vec<Self>> {
                on_conn!(conn, |c| match text {
                    Some(text) => diesel::sql_query(sql).bind::<Text, _>(text).load(c),
                    None => diesel::sql_query(sql).load(c),
                })
            }
        }
    };
}

source_row!(
    /// A `system_settings` row.
    SettingIn from "system_settings" {
        id, setting_key, setting_value, description, created_at, updated_at,
    }
);
source_row!(
    /// A `groups` row.
    GroupIn from "groups" {
        id, name, display_name, proxy_keys, description, group_type, upstreams,
        validation_endpoint, channel_type, sort, test_model, param_overrides, config,
        header_rules, model_redirect_rules, model_redirect_strict, last_validated_at,
        created_at, updated_at,
    }
);
source_row!(
    /// A `group_sub_groups` row.
    SubGroupIn from "group_sub_groups" {
        id, group_id, sub_group_id, weight, created_at, updated_at,
    }
);
source_row!(
    /// An `api_keys` row.
    KeyIn from "api_keys" {
        id, key_value, key_hash, group_id, status, notes, request_count, failure_count,
        last_used_at, created_at, updated_at,
    }
);
source_row!(
    /// A `request_logs` row.
    LogIn from "request_logs" {
        id, timestamp, group_id, group_name, parent_group_id, parent_group_name, key_value,
        key_hash, model, is_success, source_ip, status_code, request_path, duration,
        error_message, user_agent, request_type, upstream_addr, is_stream, request_body,
    }
);
source_row!(
    /// A `group_hourly_stats` row.
    HourlyIn from "group_hourly_stats" {
        id, time, group_id, success_count, failure_count, created_at, updated_at,
    }
);

/// Reads one of gpt-load's tables page by page, in primary-key order.
pub(crate) struct Reader {
    location: Location,
    page: i64,
}

/// Where the next page starts.
#[derive(Clone, Debug, Default)]
pub(crate) enum After {
    /// The first page.
    #[default]
    Start,
    /// After this numeric id.
    Id(i64),
    /// After this text id (`request_logs`).
    Text(String),
}

impl Reader {
    /// A reader of the tables at `location`, `page` rows per query.
    pub(crate) fn new(location: Location, page: i64) -> Self {
        Self { location, page }
    }

    /// How many rows `table` holds (0 when it does not exist).
    pub(crate) fn count(&self, conn: &mut SyncConn, table: &str) -> QueryResult<u64> {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        if self.location.columns(conn, table)?.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "SELECT COUNT(*) AS n FROM {}",
            self.location.table(conn.backend(), table)
        );
        let rows: Vec<Count> = on_conn!(conn, |c| diesel::sql_query(&sql).load(c))?;
        Ok(rows.first().map_or(0, |r| u64::try_from(r.n).unwrap_or(0)))
    }

    /// The next page of `R` after `after`, in id order; empty at the end or when the table
    /// does not exist.
    pub(crate) fn page<R: SourceRow>(&self, conn: &mut SyncConn, after: &After) -> QueryResult<Vec<R>> {
        let present = self.location.columns(conn, R::TABLE)?;
        if present.is_empty() {
            return Ok(Vec::new());
        }
        let backend = conn.backend();
        let text = conn.text_type();
        let select = R::COLUMNS
            .iter()
            .map(|column| {
                let alias = quote(backend, column);
                if present.contains(*column) {
                    format!("CAST(src.{} AS {text}) AS {alias}", quote(backend, column))
                } else {
                    format!("CAST(NULL AS {text}) AS {alias}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        // The table's own `id`, qualified: SQLite would take a bare `id` for the text alias.
        let id = format!("src.{}", quote(backend, "id"));
        let placeholder = if backend == Backend::Postgres { "$1" } else { "?" };
        let filter = match after {
            After::Start => String::new(),
            After::Id(last) => format!("WHERE {id} > {last}"),
            After::Text(_) => format!("WHERE {id} > {placeholder}"),
        };
        let sql = format!(
            "SELECT {select} FROM {} AS src {filter} ORDER BY {id} LIMIT {}",
            self.location.table(backend, R::TABLE),
            self.page
        );
        let bind = match after {
            After::Text(last) => Some(last.as_str()),
            After::Start | After::Id(_) => None,
        };
        R::load(conn, &sql, bind)
    }
}
