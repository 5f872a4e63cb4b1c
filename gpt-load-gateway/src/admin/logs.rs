//! `/api/logs`: the request log listing and the CSV export of the keys it used.

use axum::{extract::State, response::Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    envelope::{attachment, csv_field},
    extract::{parse_time, present},
    page::{Page, PageQuery},
    prelude::*,
};
use crate::{
    crypto::KeyCipher,
    repo::request_logs::{self, LogFilter, RequestLogRow},
};

/// Most matching rows the export reads to find each key's latest log.
const EXPORT_SCAN: i64 = 200_000;

/// Shown instead of a stored key that cannot be decrypted.
const UNDECRYPTABLE: &str = "failed-to-decrypt";

/// The query parameters of both routes, as sent (empty values count as absent).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogQuery {
    /// Exact.
    parent_group_name: Option<String>,
    /// Exact.
    group_name: Option<String>,
    /// An exact key value.
    key_value: Option<String>,
    /// Substring.
    model: Option<String>,
    #[param(value_type = Option<bool>)]
    is_success: Option<String>,
    /// `retry` or `final`.
    request_type: Option<String>,
    #[param(value_type = Option<i32>)]
    status_code: Option<String>,
    /// Exact.
    source_ip: Option<String>,
    /// Substring of the error message.
    error_contains: Option<String>,
    /// The access key the requests were made with.
    #[param(value_type = Option<i64>)]
    access_key_id: Option<String>,
    /// RFC 3339.
    start_time: Option<String>,
    /// RFC 3339.
    end_time: Option<String>,
    /// From 1 (default 1; listing only).
    #[param(value_type = Option<i64>)]
    page: Option<String>,
    /// 1–1000 (default 15; listing only).
    #[param(value_type = Option<i64>)]
    page_size: Option<String>,
}

fn parse_int<T: std::str::FromStr>(field: &str, value: Option<&String>) -> AdminResult<Option<T>> {
    present(value)
        .map(|v| {
            v.parse::<T>()
                .map_err(|_| AdminError::validation(field, "must be an integer"))
        })
        .transpose()
}

impl LogQuery {
    fn filter(&self, cipher: &KeyCipher) -> AdminResult<LogFilter> {
        let text = |v: &Option<String>| present(v.as_ref()).map(str::to_owned);
        let is_success = match present(self.is_success.as_ref()).map(str::to_ascii_lowercase) {
            None => None,
            Some(v) if v == "true" || v == "1" => Some(true),
            Some(v) if v == "false" || v == "0" => Some(false),
            Some(_) => return Err(AdminError::validation("is_success", "must be true or false")),
        };
        let request_type = match present(self.request_type.as_ref()) {
            None => None,
            Some(t @ ("retry" | "final")) => Some(t.to_owned()),
            Some(_) => {
                return Err(AdminError::validation("request_type", "must be retry or final"));
            }
        };
        Ok(LogFilter {
            parent_group_name: text(&self.parent_group_name),
            group_name: text(&self.group_name),
            key_hash: present(self.key_value.as_ref()).map(|k| cipher.hash(k)),
            model: text(&self.model),
            is_success,
            request_type,
            status_code: parse_int("status_code", self.status_code.as_ref())?,
            source_ip: text(&self.source_ip),
            error_contains: text(&self.error_contains),
            access_key_id: parse_int("access_key_id", self.access_key_id.as_ref())?,
            start: parse_time("start_time", self.start_time.as_ref())?,
            end: parse_time("end_time", self.end_time.as_ref())?,
        })
    }

    fn page(&self) -> AdminResult<PageQuery> {
        Ok(PageQuery {
            page: parse_int("page", self.page.as_ref())?,
            page_size: parse_int("page_size", self.page_size.as_ref())?,
        })
    }
}

fn decrypt(cipher: &KeyCipher, stored: &str) -> String {
    cipher
        .decrypt(stored)
        .unwrap_or_else(|_| UNDECRYPTABLE.to_owned())
}

/// One log in the listing: every column, the key decrypted, and `duration_ms` (gpt-load's name
/// for `duration`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LogItem {
    id: String,
    timestamp: DateTime<Utc>,
    group_id: i64,
    group_name: String,
    parent_group_id: i64,
    parent_group_name: String,
    key_value: String,
    key_hash: String,
    model: String,
    is_success: bool,
    source_ip: String,
    status_code: i32,
    request_path: String,
    duration_ms: i64,
    error_message: String,
    user_agent: String,
    request_type: String,
    upstream_addr: String,
    is_stream: bool,
    request_body: String,
    key_id: Option<i64>,
    attempt: i32,
    ttfb_ms: Option<i64>,
    request_id: String,
    /// Tokens the upstream reported for this attempt; all `null` when it reported none.
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    cached_tokens: Option<i64>,
    reasoning_tokens: Option<i64>,
    total_tokens: Option<i64>,
    /// The access key the request was made with; `null` for a proxy key.
    access_key_id: Option<i64>,
}

impl LogItem {
    fn new(row: RequestLogRow, cipher: &KeyCipher) -> Self {
        Self {
            key_value: decrypt(cipher, &row.key_value),
            id: row.id,
            timestamp: row.timestamp.and_utc(),
            group_id: row.group_id,
            group_name: row.group_name,
            parent_group_id: row.parent_group_id,
            parent_group_name: row.parent_group_name,
            key_hash: row.key_hash,
            model: row.model,
            is_success: row.is_success,
            source_ip: row.source_ip,
            status_code: row.status_code,
            request_path: row.request_path,
            duration_ms: row.duration,
            error_message: row.error_message,
            user_agent: row.user_agent,
            request_type: row.request_type.into_owned(),
            upstream_addr: row.upstream_addr,
            is_stream: row.is_stream,
            request_body: row.request_body,
            key_id: row.key_id,
            attempt: row.attempt,
            ttfb_ms: row.ttfb_ms,
            request_id: row.request_id,
            prompt_tokens: row.prompt_tokens,
            completion_tokens: row.completion_tokens,
            cached_tokens: row.cached_tokens,
            reasoning_tokens: row.reasoning_tokens,
            total_tokens: row.total_tokens,
            access_key_id: row.access_key_id,
        }
    }
}

/// The matching request logs, newest first, one page; key values decrypted. The pager counts at
/// most 10,000 matches past the page (`total_capped` says when there are more).
#[utoipa::path(get, path = "/logs", tag = "logs", params(LogQuery),
    responses((status = 200, body = Envelope<Page<LogItem>>)))]
pub(crate) async fn list_logs(
    Admin { state, lang }: Admin,
    AdminQuery(query): AdminQuery<LogQuery>,
) -> Reply<Page<LogItem>> {
    let filter = query.filter(state.registry.cipher())?;
    let page = query.page()?;
    let (rows, count) =
        request_logs::list_filtered(state.registry.db(), &filter, page.offset(), page.page_size()).await?;
    let items: Vec<LogItem> = rows
        .into_iter()
        .map(|row| LogItem::new(row, state.registry.cipher()))
        .collect();
    Ok(ok(
        text(lang, "Success", "操作成功"),
        Page::counted(items, page, count),
    ))
}

/// A CSV file (`key_value,group_name,status_code`): one row per distinct key among the matching
/// logs, from its latest log.
#[utoipa::path(get, path = "/logs/export", tag = "logs", params(LogQuery),
    responses((status = 200, content_type = "text/csv", body = String)))]
pub(crate) async fn export_logs(
    State(state): State<AdminState>,
    AdminQuery(query): AdminQuery<LogQuery>,
) -> AdminResult<Response> {
    let filter = query.filter(state.registry.cipher())?;
    let rows = request_logs::latest_per_key(state.registry.db(), &filter, EXPORT_SCAN).await?;
    let mut csv = String::from("key_value,group_name,status_code\n");
    for (_, key_value, group_name, status_code) in rows {
        csv.push_str(&csv_field(&decrypt(state.registry.cipher(), &key_value)));
        csv.push(',');
        csv.push_str(&csv_field(&group_name));
        csv.push(',');
        csv.push_str(&status_code.to_string());
        csv.push('\n');
    }
    let filename = format!("log_keys_export_{}.csv", Utc::now().format("%Y%m%d%H%M%S"));
    attachment("text/csv; charset=utf-8", &filename, csv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_validated() {
        let cipher = KeyCipher::disabled();
        let bad_time = LogQuery {
            start_time: Some("yesterday".to_owned()),
            ..LogQuery::default()
        };
        assert!(matches!(
            bad_time.filter(&cipher),
            Err(AdminError::Validation { field, .. }) if field == "start_time"
        ));
        let bad_type = LogQuery {
            request_type: Some("other".to_owned()),
            ..LogQuery::default()
        };
        assert!(bad_type.filter(&cipher).is_err());
        let good = LogQuery {
            key_value: Some("sk-1".to_owned()),
            is_success: Some("false".to_owned()),
            status_code: Some("500".to_owned()),
            end_time: Some("2026-11-22T10:00:00+02:00".to_owned()),
            group_name: Some(String::new()),
            ..LogQuery::default()
        };
        let filter = good.filter(&cipher).unwrap();
        assert_eq!(filter.key_hash, Some(cipher.hash("sk-1")));
        assert_eq!((filter.is_success, filter.status_code), (Some(false), Some(500)));
        assert_eq!(filter.end.unwrap().to_string(), "2026-11-22 08:00:00");
        assert_eq!(filter.group_name, None, "an empty value is no filter");
    }
}
