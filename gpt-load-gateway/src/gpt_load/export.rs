//! `export-gpt-load --to DSN`: writes our database as one gpt-load 1.4 opens, the way back.
//!
//! The target gets gpt-load's tables as GORM creates them (`schema/<backend>.sql`) and our rows
//! as gpt-load's drivers would have written them: keys under gpt-load's cipher with the same
//! `ENCRYPTION_KEY` (plain text without one) and gpt-load's `key_hash`, proxy keys in plain text,
//! timestamps with a zone offset (SQLite), as `timestamptz` (PostgreSQL) or as local wall-clock
//! time (MySQL, for gpt-load's documented `loc=Local`). Columns gpt-load does not have (our
//! request-log attempt, TTFB and ids) are left behind. The target must hold none of the tables.

use chrono::{Local, NaiveDateTime, TimeZone};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Nullable, Text};

use super::adopt::{Found, require};
use super::conn::{SyncConn, on_conn, quote};
use super::copy::{Progress, SubGroupRow, Summary, reset_sequences};
use crate::crypto::gpt_load::GptLoadCipher;
use crate::crypto::{KeyCipher, proxy_keys};
use crate::db::Backend;
use crate::db::schema::{
    api_keys, group_hourly_stats, group_sub_groups, groups, request_logs, system_settings,
};
use crate::models::{ApiKeyRow, GroupRow, SettingRow};
use crate::repo::request_logs::RequestLogRow;
use crate::repo::stats::HourlyStatRow;

/// Rows per `INSERT` statement.
const ROWS_PER_INSERT: usize = 200;
/// Rows read per page from our tables.
const PAGE: i64 = 1_000;

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExportError {
    /// A query failed.
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    /// The source is not a database of ours.
    #[error("DATABASE_DSN is not a gpt-load-rs database ({0:?})")]
    NotOurs(Found),
    /// The target already holds tables gpt-load would create.
    #[error("the target database already holds gpt-load's tables; export into an empty database")]
    TargetNotEmpty,
    /// A stored value does not decrypt with `ENCRYPTION_KEY`.
    #[error("a stored key does not decrypt with ENCRYPTION_KEY: {0}")]
    Decrypt(#[from] crate::crypto::CryptoError),
}

/// gpt-load's tables for `backend`, as GORM creates them.
fn schema(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => include_str!("schema/sqlite.sql"),
        Backend::Postgres => include_str!("schema/postgres.sql"),
        Backend::Mysql => include_str!("schema/mysql.sql"),
    }
}

/// Copies our database (`source`) into an empty `target` in gpt-load 1.4's format.
pub(crate) fn export(
    source: &mut SyncConn,
    target: &mut SyncConn,
    encryption_key: Option<&str>,
    progress: &mut dyn Progress,
) -> Result<Summary, ExportError> {
    require(source, Found::Ours, ExportError::NotOurs)?;
    require(target, Found::Empty, |_| ExportError::TargetNotEmpty)?;
    let mut writer = Writer {
        ours: KeyCipher::from_password(encryption_key),
        theirs: GptLoadCipher::from_password(encryption_key),
        summary: Summary::default(),
    };
    // MySQL commits DDL at once: create the tables first, then fill them in one transaction.
    for statement in schema(target.backend())
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("--"))
    {
        target.execute(statement)?;
    }
    target.transaction(|target| {
        writer.table::<SettingRow>(source, target, progress)?;
        writer.table::<GroupRow>(source, target, progress)?;
        writer.table::<SubGroupRow>(source, target, progress)?;
        writer.table::<ApiKeyRow>(source, target, progress)?;
        writer.table::<RequestLogRow>(source, target, progress)?;
        writer.table::<HourlyStatRow>(source, target, progress)?;
        reset_sequences(target)?;
        Ok::<_, ExportError>(())
    })?;
    Ok(writer.summary)
}

/// A value bound into an `INSERT`.
enum Value {
    Text(String),
    Json(String),
    Time(Option<NaiveDateTime>),
    Int(i64),
    Bool(bool),
}

/// A row as gpt-load has it: each of its columns with the value written there.
type Cells = Vec<(&'static str, Value)>;

/// One of our tables as gpt-load has it: our row, and that row in gpt-load's columns. Every
/// table is read a page at a time in id order, so large ones never sit in memory.
trait Exported: Sized {
    /// The table, named alike on both sides.
    const TABLE: &'static str;
    /// The id the pages follow.
    type Id: Default;
    /// Rows in our table.
    fn count(source: &mut SyncConn) -> diesel::QueryResult<i64>;
    /// The next page of rows after the id `after`.
    fn page(source: &mut SyncConn, after: &Self::Id) -> diesel::QueryResult<Vec<Self>>;
    /// This row's id.
    fn id(&self) -> Self::Id;
    /// The row in gpt-load's columns, the same columns in the same order for every row.
    fn cells(self, writer: &Writer) -> Result<Cells, ExportError>;
}

/// The reading half of [`Exported`] for a row type selectable from `$table`, whose id is `$id`.
macro_rules! read_by_id {
    ($table:ident, $id:ty) => {
        const TABLE: &'static str = stringify!($table);
        type Id = $id;

        fn count(source: &mut SyncConn) -> diesel::QueryResult<i64> {
            on_conn!(source, |c| $table::table.count().get_result(c))
        }

        fn page(source: &mut SyncConn, after: &$id) -> diesel::QueryResult<Vec<Self>> {
            on_conn!(source, |c| $table::table
                .filter($table::id.gt(after))
                .order($table::id)
                .limit(PAGE)
                .select(Self::as_select())
                .load(c))
        }

        fn id(&self) -> $id {
            self.id.clone()
        }
    };
}

impl Exported for SettingRow {
    read_by_id!(system_settings, i64);

    fn cells(self, writer: &Writer) -> Result<Cells, ExportError> {
        let value = if self.setting_key == "proxy_keys" {
            proxy_keys::open(&writer.ours, &self.setting_value)?
        } else {
            self.setting_value
        };
        Ok(vec![
            ("id", Value::Int(self.id)),
            ("setting_key", Value::Text(self.setting_key)),
            ("setting_value", Value::Text(value)),
            ("description", Value::Text(self.description)),
            ("created_at", Value::Time(Some(self.created_at))),
            ("updated_at", Value::Time(Some(self.updated_at))),
        ])
    }
}

impl Exported for GroupRow {
    read_by_id!(groups, i64);

    fn cells(self, writer: &Writer) -> Result<Cells, ExportError> {
        let proxy_keys = proxy_keys::open(&writer.ours, &self.proxy_keys)?;
        Ok(vec![
            ("id", Value::Int(self.id)),
            ("name", Value::Text(self.name)),
            ("display_name", Value::Text(self.display_name)),
            ("proxy_keys", Value::Text(proxy_keys)),
            ("description", Value::Text(self.description)),
            ("group_type", Value::Text(self.group_type)),
            ("upstreams", Value::Json(self.upstreams)),
            ("validation_endpoint", Value::Text(self.validation_endpoint)),
            ("channel_type", Value::Text(self.channel_type)),
            ("sort", Value::Int(i64::from(self.sort))),
            ("test_model", Value::Text(self.test_model)),
            ("param_overrides", Value::Json(self.param_overrides)),
            ("config", Value::Json(self.config)),
            ("header_rules", Value::Json(self.header_rules)),
            ("model_redirect_rules", Value::Json(self.model_redirect_rules)),
            ("model_redirect_strict", Value::Bool(self.model_redirect_strict)),
            ("last_validated_at", Value::Time(self.last_validated_at)),
            ("created_at", Value::Time(Some(self.created_at))),
            ("updated_at", Value::Time(Some(self.updated_at))),
        ])
    }
}

impl Exported for SubGroupRow {
    read_by_id!(group_sub_groups, i64);

    fn cells(self, _: &Writer) -> Result<Cells, ExportError> {
        Ok(vec![
            ("id", Value::Int(self.id)),
            ("group_id", Value::Int(self.group_id)),
            ("sub_group_id", Value::Int(self.sub_group_id)),
            ("weight", Value::Int(i64::from(self.weight))),
            ("created_at", Value::Time(Some(self.created_at))),
            ("updated_at", Value::Time(Some(self.updated_at))),
        ])
    }
}

impl Exported for ApiKeyRow {
    read_by_id!(api_keys, i64);

    fn cells(self, writer: &Writer) -> Result<Cells, ExportError> {
        let (key_value, key_hash) = writer.key(&self.key_value)?;
        Ok(vec![
            ("id", Value::Int(self.id)),
            ("key_value", Value::Text(key_value)),
            ("key_hash", Value::Text(key_hash)),
            ("group_id", Value::Int(self.group_id)),
            ("status", Value::Text(self.status)),
            ("notes", Value::Text(self.notes)),
            ("request_count", Value::Int(self.request_count)),
            ("failure_count", Value::Int(self.failure_count)),
            ("last_used_at", Value::Time(self.last_used_at)),
            ("created_at", Value::Time(Some(self.created_at))),
            ("updated_at", Value::Time(Some(self.updated_at))),
        ])
    }
}

impl Exported for RequestLogRow {
    read_by_id!(request_logs, String);

    fn cells(self, writer: &Writer) -> Result<Cells, ExportError> {
        // A log row whose key no longer decrypts keeps everything but the key.
        let (key_value, key_hash) = writer.key(&self.key_value).unwrap_or_default();
        Ok(vec![
            ("id", Value::Text(self.id)),
            ("timestamp", Value::Time(Some(self.timestamp))),
            ("group_id", Value::Int(self.group_id)),
            ("group_name", Value::Text(self.group_name)),
            ("parent_group_id", Value::Int(self.parent_group_id)),
            ("parent_group_name", Value::Text(self.parent_group_name)),
            ("key_value", Value::Text(key_value)),
            ("key_hash", Value::Text(key_hash)),
            ("model", Value::Text(self.model)),
            ("is_success", Value::Bool(self.is_success)),
            ("source_ip", Value::Text(self.source_ip)),
            ("status_code", Value::Int(i64::from(self.status_code))),
            ("request_path", Value::Text(self.request_path)),
            ("duration", Value::Int(self.duration)),
            ("error_message", Value::Text(self.error_message)),
            ("user_agent", Value::Text(self.user_agent)),
            ("request_type", Value::Text(self.request_type.into_owned())),
            ("upstream_addr", Value::Text(self.upstream_addr)),
            ("is_stream", Value::Bool(self.is_stream)),
            ("request_body", Value::Text(self.request_body)),
        ])
    }
}

impl Exported for HourlyStatRow {
    read_by_id!(group_hourly_stats, i64);

    fn cells(self, _: &Writer) -> Result<Cells, ExportError> {
        Ok(vec![
            ("id", Value::Int(self.id)),
            ("time", Value::Time(Some(self.time))),
            ("group_id", Value::Int(self.group_id)),
            ("success_count", Value::Int(self.success_count)),
            ("failure_count", Value::Int(self.failure_count)),
            ("created_at", Value::Time(Some(self.created_at))),
            ("updated_at", Value::Time(Some(self.updated_at))),
        ])
    }
}

struct Writer {
    ours: KeyCipher,
    theirs: GptLoadCipher,
    summary: Summary,
}

impl Writer {
    /// gpt-load's stored value and hash of a key we store as `stored`.
    fn key(&self, stored: &str) -> Result<(String, String), ExportError> {
        let plain = self.ours.decrypt(stored)?;
        if plain.is_empty() {
            return Ok((String::new(), String::new()));
        }
        Ok((self.theirs.encrypt(&plain), self.theirs.hash(&plain)))
    }

    /// Copies table `R` a page at a time and reports it done.
    fn table<R: Exported>(
        &mut self,
        source: &mut SyncConn,
        target: &mut SyncConn,
        progress: &mut dyn Progress,
    ) -> Result<(), ExportError> {
        progress.start(R::TABLE, u64::try_from(R::count(source)?).unwrap_or(0));
        let mut last = R::Id::default();
        loop {
            let rows = R::page(source, &last)?;
            let Some(tail) = rows.last() else { break };
            last = tail.id();
            let page = rows
                .into_iter()
                .map(|row| row.cells(self))
                .collect::<Result<Vec<_>, _>>()?;
            self.insert_page(target, R::TABLE, page, progress)?;
        }
        progress.finish();
        Ok(())
    }

    /// Inserts rows in multi-row statements with bound values.
    fn insert_page(
        &mut self,
        target: &mut SyncConn,
        table: &'static str,
        rows: Vec<Cells>,
        progress: &mut dyn Progress,
    ) -> Result<(), ExportError> {
        let backend = target.backend();
        let mut rows = rows.into_iter().peekable();
        while let Some(first) = rows.peek() {
            let column_list = first
                .iter()
                .map(|(column, _)| quote(backend, column))
                .collect::<Vec<_>>()
                .join(", ");
            let chunk: Vec<Cells> = rows.by_ref().take(ROWS_PER_INSERT).collect();
            let mut n = 0;
            let tuples = chunk
                .iter()
                .map(|row| {
                    let cells = row
                        .iter()
                        .map(|(_, value)| {
                            n += 1;
                            placeholder(backend, n, value)
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!("({cells})")
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO {} ({column_list}) VALUES {tuples}",
                quote(backend, table)
            );
            let count = chunk.len();
            let values: Vec<Value> = chunk.into_iter().flatten().map(|(_, value)| value).collect();
            on_conn!(&mut *target, |c| {
                let mut query = diesel::sql_query(&sql).into_boxed();
                for value in values {
                    query = match value {
                        Value::Text(text) => query.bind::<Text, _>(text),
                        Value::Json(text) => query.bind::<Text, _>(text),
                        Value::Time(at) => {
                            query.bind::<Nullable<Text>, _>(at.map(|at| time_text(backend, at)))
                        }
                        Value::Int(int) => query.bind::<BigInt, _>(int),
                        Value::Bool(flag) => query.bind::<Bool, _>(flag),
                    };
                }
                query.execute(c)
            })?;
            *self.summary.copied.entry(table).or_default() += count as u64;
            progress.advance(count as u64);
        }
        Ok(())
    }
}

/// The `n`th placeholder, cast where PostgreSQL does not convert text by itself.
fn placeholder(backend: Backend, n: usize, value: &Value) -> String {
    match (backend, value) {
        (Backend::Postgres, Value::Json(_)) => format!("CAST(${n} AS jsonb)"),
        (Backend::Postgres, Value::Time(_)) => format!("CAST(${n} AS timestamptz)"),
        (Backend::Postgres, _) => format!("${n}"),
        (Backend::Sqlite | Backend::Mysql, _) => "?".to_owned(),
    }
}

/// A UTC time as gpt-load's driver for `backend` writes it.
fn time_text(backend: Backend, at: NaiveDateTime) -> String {
    match backend {
        Backend::Sqlite => at.format("%Y-%m-%d %H:%M:%S%.f+00:00").to_string(),
        Backend::Postgres => at.format("%Y-%m-%d %H:%M:%S%.f+00").to_string(),
        // `loc=Local`: wall-clock time of this process's zone, milliseconds (`datetime(3)`).
        Backend::Mysql => Local
            .from_utc_datetime(&at)
            .naive_local()
            .format("%Y-%m-%d %H:%M:%S%.3f")
            .to_string(),
    }
}
