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
use super::copy::{Progress, Summary, reset_sequences};
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
/// Rows read per page from our large tables.
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
        writer.settings(source, target, progress)?;
        writer.groups(source, target, progress)?;
        writer.sub_groups(source, target, progress)?;
        writer.keys(source, target, progress)?;
        writer.logs(source, target, progress)?;
        writer.hourly(source, target, progress)?;
        reset_sequences(target)?;
        Ok::<_, ExportError>(())
    })?;
    Ok(writer.summary)
}

/// A large table to copy page by page: its name, gpt-load's columns and its row count.
struct Paged<'a> {
    name: &'static str,
    columns: &'a [&'a str],
    total: i64,
}

/// A value bound into an `INSERT`.
enum Value {
    Text(Option<String>),
    Json(String),
    Time(Option<NaiveDateTime>),
    Int(i64),
    Bool(bool),
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

    fn settings(
        &mut self,
        source: &mut SyncConn,
        target: &mut SyncConn,
        progress: &mut dyn Progress,
    ) -> Result<(), ExportError> {
        let rows: Vec<SettingRow> = on_conn!(source, |c| system_settings::table
            .order(system_settings::id)
            .select(SettingRow::as_select())
            .load(c))?;
        progress.start("system_settings", rows.len() as u64);
        let mut values = Vec::with_capacity(rows.len());
        for row in rows {
            let value = if row.setting_key == "proxy_keys" {
                proxy_keys::open(&self.ours, &row.setting_value)?
            } else {
                row.setting_value
            };
            values.push(vec![
                Value::Int(row.id),
                Value::Text(Some(row.setting_key)),
                Value::Text(Some(value)),
                Value::Text(Some(row.description)),
                Value::Time(Some(row.created_at)),
                Value::Time(Some(row.updated_at)),
            ]);
        }
        let columns = [
            "id",
            "setting_key",
            "setting_value",
            "description",
            "created_at",
            "updated_at",
        ];
        self.insert(target, "system_settings", &columns, values, progress)
    }

    fn groups(
        &mut self,
        source: &mut SyncConn,
        target: &mut SyncConn,
        progress: &mut dyn Progress,
    ) -> Result<(), ExportError> {
        let rows: Vec<GroupRow> = on_conn!(source, |c| groups::table
            .order(groups::id)
            .select(GroupRow::as_select())
            .load(c))?;
        progress.start("groups", rows.len() as u64);
        let mut values = Vec::with_capacity(rows.len());
        for row in rows {
            values.push(vec![
                Value::Int(row.id),
                Value::Text(Some(row.name)),
                Value::Text(Some(row.display_name)),
                Value::Text(Some(proxy_keys::open(&self.ours, &row.proxy_keys)?)),
                Value::Text(Some(row.description)),
                Value::Text(Some(row.group_type)),
                Value::Json(row.upstreams),
                Value::Text(Some(row.validation_endpoint)),
                Value::Text(Some(row.channel_type)),
                Value::Int(i64::from(row.sort)),
                Value::Text(Some(row.test_model)),
                Value::Json(row.param_overrides),
                Value::Json(row.config),
                Value::Json(row.header_rules),
                Value::Json(row.model_redirect_rules),
                Value::Bool(row.model_redirect_strict),
                Value::Time(row.last_validated_at),
                Value::Time(Some(row.created_at)),
                Value::Time(Some(row.updated_at)),
            ]);
        }
        let columns = [
            "id",
            "name",
            "display_name",
            "proxy_keys",
            "description",
            "group_type",
            "upstreams",
            "validation_endpoint",
            "channel_type",
            "sort",
            "test_model",
            "param_overrides",
            "config",
            "header_rules",
            "model_redirect_rules",
            "model_redirect_strict",
            "last_validated_at",
            "created_at",
            "updated_at",
        ];
        self.insert(target, "groups", &columns, values, progress)
    }

    fn sub_groups(
        &mut self,
        source: &mut SyncConn,
        target: &mut SyncConn,
        progress: &mut dyn Progress,
    ) -> Result<(), ExportError> {
        let rows: Vec<(i64, i64, i64, i32, NaiveDateTime, NaiveDateTime)> =
            on_conn!(source, |c| group_sub_groups::table
                .order(group_sub_groups::id)
                .select((
                    group_sub_groups::id,
                    group_sub_groups::group_id,
                    group_sub_groups::sub_group_id,
                    group_sub_groups::weight,
                    group_sub_groups::created_at,
                    group_sub_groups::updated_at,
                ))
                .load(c))?;
        progress.start("group_sub_groups", rows.len() as u64);
        let values = rows
            .into_iter()
            .map(|(id, group_id, sub_group_id, weight, created_at, updated_at)| {
                vec![
                    Value::Int(id),
                    Value::Int(group_id),
                    Value::Int(sub_group_id),
                    Value::Int(i64::from(weight)),
                    Value::Time(Some(created_at)),
                    Value::Time(Some(updated_at)),
                ]
            })
            .collect();
        let columns = [
            "id",
            "group_id",
            "sub_group_id",
            "weight",
            "created_at",
            "updated_at",
        ];
        self.insert(target, "group_sub_groups", &columns, values, progress)
    }

    fn keys(
        &mut self,
        source: &mut SyncConn,
        target: &mut SyncConn,
        progress: &mut dyn Progress,
    ) -> Result<(), ExportError> {
        let total: i64 = on_conn!(&mut *source, |c| api_keys::table.count().get_result(c))?;
        let columns = [
            "id",
            "key_value",
            "key_hash",
            "group_id",
            "status",
            "notes",
            "request_count",
            "failure_count",
            "last_used_at",
            "created_at",
            "updated_at",
        ];
        let read = |source: &mut SyncConn, last: &i64| {
            on_conn!(source, |c| api_keys::table
                .filter(api_keys::id.gt(*last))
                .order(api_keys::id)
                .limit(PAGE)
                .select(ApiKeyRow::as_select())
                .load(c))
        };
        let values = |writer: &mut Self, row: ApiKeyRow| {
            let (key_value, key_hash) = writer.key(&row.key_value)?;
            Ok(vec![
                Value::Int(row.id),
                Value::Text(Some(key_value)),
                Value::Text(Some(key_hash)),
                Value::Int(row.group_id),
                Value::Text(Some(row.status)),
                Value::Text(Some(row.notes)),
                Value::Int(row.request_count),
                Value::Int(row.failure_count),
                Value::Time(row.last_used_at),
                Value::Time(Some(row.created_at)),
                Value::Time(Some(row.updated_at)),
            ])
        };
        let table = Paged {
            name: "api_keys",
            columns: &columns,
            total,
        };
        self.paged(
            source,
            target,
            &table,
            read,
            |row: &ApiKeyRow| row.id,
            values,
            progress,
        )
    }

    fn logs(
        &mut self,
        source: &mut SyncConn,
        target: &mut SyncConn,
        progress: &mut dyn Progress,
    ) -> Result<(), ExportError> {
        let total: i64 = on_conn!(&mut *source, |c| request_logs::table.count().get_result(c))?;
        let columns = [
            "id",
            "timestamp",
            "group_id",
            "group_name",
            "parent_group_id",
            "parent_group_name",
            "key_value",
            "key_hash",
            "model",
            "is_success",
            "source_ip",
            "status_code",
            "request_path",
            "duration",
            "error_message",
            "user_agent",
            "request_type",
            "upstream_addr",
            "is_stream",
            "request_body",
        ];
        let read = |source: &mut SyncConn, last: &String| {
            on_conn!(source, |c| request_logs::table
                .filter(request_logs::id.gt(last))
                .order(request_logs::id)
                .limit(PAGE)
                .select(RequestLogRow::as_select())
                .load(c))
        };
        let values = |writer: &mut Self, row: RequestLogRow| {
            // A log row whose key no longer decrypts keeps everything but the key.
            let (key_value, key_hash) = writer.key(&row.key_value).unwrap_or_default();
            Ok(vec![
                Value::Text(Some(row.id)),
                Value::Time(Some(row.timestamp)),
                Value::Int(row.group_id),
                Value::Text(Some(row.group_name)),
                Value::Int(row.parent_group_id),
                Value::Text(Some(row.parent_group_name)),
                Value::Text(Some(key_value)),
                Value::Text(Some(key_hash)),
                Value::Text(Some(row.model)),
                Value::Bool(row.is_success),
                Value::Text(Some(row.source_ip)),
                Value::Int(i64::from(row.status_code)),
                Value::Text(Some(row.request_path)),
                Value::Int(row.duration),
                Value::Text(Some(row.error_message)),
                Value::Text(Some(row.user_agent)),
                Value::Text(Some(row.request_type.into_owned())),
                Value::Text(Some(row.upstream_addr)),
                Value::Bool(row.is_stream),
                Value::Text(Some(row.request_body)),
            ])
        };
        let table = Paged {
            name: "request_logs",
            columns: &columns,
            total,
        };
        let cursor = |row: &RequestLogRow| row.id.clone();
        self.paged(source, target, &table, read, cursor, values, progress)
    }

    fn hourly(
        &mut self,
        source: &mut SyncConn,
        target: &mut SyncConn,
        progress: &mut dyn Progress,
    ) -> Result<(), ExportError> {
        let total: i64 = on_conn!(&mut *source, |c| group_hourly_stats::table.count().get_result(c))?;
        let columns = [
            "id",
            "time",
            "group_id",
            "success_count",
            "failure_count",
            "created_at",
            "updated_at",
        ];
        let read = |source: &mut SyncConn, last: &i64| {
            on_conn!(source, |c| group_hourly_stats::table
                .filter(group_hourly_stats::id.gt(*last))
                .order(group_hourly_stats::id)
                .limit(PAGE)
                .select(HourlyStatRow::as_select())
                .load(c))
        };
        let values = |_: &mut Self, row: HourlyStatRow| {
            Ok(vec![
                Value::Int(row.id),
                Value::Time(Some(row.time)),
                Value::Int(row.group_id),
                Value::Int(row.success_count),
                Value::Int(row.failure_count),
                Value::Time(Some(row.created_at)),
                Value::Time(Some(row.updated_at)),
            ])
        };
        let table = Paged {
            name: "group_hourly_stats",
            columns: &columns,
            total,
        };
        self.paged(
            source,
            target,
            &table,
            read,
            |row: &HourlyStatRow| row.id,
            values,
            progress,
        )
    }

    /// Copies a large table a page at a time in id order: `read` loads the rows after a cursor,
    /// `cursor` is a row's id, `values` turns a row into gpt-load's columns.
    #[expect(
        clippy::too_many_arguments,
        reason = "the three closures are the table's whole shape"
    )]
    fn paged<R, C: Default>(
        &mut self,
        source: &mut SyncConn,
        target: &mut SyncConn,
        table: &Paged<'_>,
        read: impl Fn(&mut SyncConn, &C) -> diesel::QueryResult<Vec<R>>,
        cursor: impl Fn(&R) -> C,
        values: impl Fn(&mut Self, R) -> Result<Vec<Value>, ExportError>,
        progress: &mut dyn Progress,
    ) -> Result<(), ExportError> {
        progress.start(table.name, u64::try_from(table.total).unwrap_or(0));
        let mut last = C::default();
        loop {
            let rows = read(source, &last)?;
            let Some(tail) = rows.last() else { break };
            last = cursor(tail);
            let mut page = Vec::with_capacity(rows.len());
            for row in rows {
                page.push(values(self, row)?);
            }
            self.insert_page(target, table.name, table.columns, page, progress)?;
        }
        progress.finish();
        Ok(())
    }

    /// Inserts a whole small table and reports it done.
    fn insert(
        &mut self,
        target: &mut SyncConn,
        table: &'static str,
        columns: &[&str],
        rows: Vec<Vec<Value>>,
        progress: &mut dyn Progress,
    ) -> Result<(), ExportError> {
        self.insert_page(target, table, columns, rows, progress)?;
        progress.finish();
        Ok(())
    }

    /// Inserts rows in multi-row statements with bound values.
    fn insert_page(
        &mut self,
        target: &mut SyncConn,
        table: &'static str,
        columns: &[&str],
        rows: Vec<Vec<Value>>,
        progress: &mut dyn Progress,
    ) -> Result<(), ExportError> {
        let backend = target.backend();
        let column_list = columns
            .iter()
            .map(|c| quote(backend, c))
            .collect::<Vec<_>>()
            .join(", ");
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<Vec<Value>> = rows.by_ref().take(ROWS_PER_INSERT).collect();
            let mut n = 0;
            let tuples = chunk
                .iter()
                .map(|row| {
                    let cells = row
                        .iter()
                        .map(|value| {
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
            let values: Vec<Value> = chunk.into_iter().flatten().collect();
            on_conn!(&mut *target, |c| {
                let mut query = diesel::sql_query(&sql).into_boxed();
                for value in values {
                    query = match value {
                        Value::Text(text) => query.bind::<Nullable<Text>, _>(text),
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
