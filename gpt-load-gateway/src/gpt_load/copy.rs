//! Copying gpt-load's rows into our tables: read a page ([`source`](super::source)), convert it
//! ([`convert`](super::convert), [`keys`](super::keys)), write it. Adoption runs it on one
//! connection inside one transaction; `import` runs it from one database into another.
//!
//! Re-running it is harmless: a group that exists (by name) is reused, a key already in its
//! group (by hash), a link, a log row (by id) or an hourly row (by hour and group) that exists
//! is skipped, and settings take the source's value. Ids are kept where they are free, so an
//! adopted or freshly imported database has gpt-load's ids.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;

use super::conn::{SyncConn, on_conn};
use super::convert::{self, NaiveZone};
use super::keys::{KeyError, KeyTranslator};
use super::source::{
    After, GroupIn, HourlyIn, KeyIn, Location, LogIn, Reader, SettingIn, SourceRow, SubGroupIn,
};
use crate::crypto::gpt_load::GptLoadCipher;
use crate::crypto::{KeyCipher, proxy_keys};
use crate::db::Backend;
use crate::db::batch::{ApproxSize, approx_size, insert_chunks};
use crate::db::schema::{
    api_keys, group_hourly_stats, group_sub_groups, groups, request_logs, system_settings,
};
use crate::models::{ApiKeyRow, GroupRow, SettingRow, TEXT_LIMIT};
use crate::repo::{request_logs::RequestLogRow, stats::HourlyStatRow};

/// Rows per page read from the source.
pub(crate) const PAGE: i64 = 1_000;

/// Why a copy stopped. Nothing was committed when it is returned inside a transaction.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CopyError {
    /// A query failed.
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    /// Upstream keys cannot be read with the configured gpt-load `ENCRYPTION_KEY`.
    #[error("{error}: {unreadable} of {total} keys in api_keys cannot be read")]
    Keys {
        /// Why.
        error: KeyError,
        /// Keys that could not be read.
        unreadable: u64,
        /// Keys in all.
        total: u64,
    },
}

/// What a copy did, table by table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    /// Rows copied per table.
    pub(crate) copied: BTreeMap<&'static str, u64>,
    /// Rows not copied, by reason.
    pub(crate) skipped: BTreeMap<String, u64>,
    /// Values that were repaired on the way (a default for an unreadable JSON column, say).
    pub(crate) repaired: BTreeMap<String, u64>,
    /// What the operator should look at.
    pub(crate) warnings: Vec<String>,
}

impl Summary {
    fn copied(&mut self, table: &'static str, n: usize) {
        *self.copied.entry(table).or_default() += n as u64;
    }

    fn skip(&mut self, reason: impl Into<String>) {
        *self.skipped.entry(reason.into()).or_default() += 1;
    }

    fn repair(&mut self, what: impl Into<String>) {
        *self.repaired.entry(what.into()).or_default() += 1;
    }

    /// Rows copied from `table`.
    #[cfg(test)]
    pub(crate) fn count(&self, table: &str) -> u64 {
        self.copied.get(table).copied().unwrap_or(0)
    }
}

/// Told how far the copy is.
pub(crate) trait Progress {
    /// A table starts; `total` rows to read.
    fn start(&mut self, table: &'static str, total: u64);
    /// `n` more rows of the current table were read.
    fn advance(&mut self, n: u64);
    /// The current table is done.
    fn finish(&mut self);
}

/// The source and target of a copy: one connection (adoption) or two (`import`).
pub(crate) enum Link<'a> {
    /// Both sides on one connection.
    Same(&'a mut SyncConn),
    /// Separate databases.
    Pair {
        /// gpt-load's database.
        source: &'a mut SyncConn,
        /// Ours.
        target: &'a mut SyncConn,
    },
}

impl Link<'_> {
    fn source(&mut self) -> &mut SyncConn {
        match self {
            Self::Same(conn) => conn,
            Self::Pair { source, .. } => source,
        }
    }

    fn target(&mut self) -> &mut SyncConn {
        match self {
            Self::Same(conn) => conn,
            Self::Pair { target, .. } => target,
        }
    }
}

/// How the source is read.
pub(crate) struct SourceOptions {
    /// Where gpt-load's tables are.
    pub(crate) reader: Reader,
    /// How zone-less timestamps are read (`Local` for MySQL, written with `loc=Local`).
    pub(crate) naive_zone: NaiveZone,
    /// Keys from gpt-load's cipher to ours.
    pub(crate) keys: KeyTranslator,
    /// `AUTH_KEY`: gpt-load seeded it as a global proxy key, which deserves a warning.
    pub(crate) auth_key: Option<String>,
}

impl SourceOptions {
    /// gpt-load's tables where gpt-load keeps them on `backend`, its keys read with
    /// `gpt_load_key` and stored with `our_key`.
    pub(crate) fn in_place(
        backend: Backend,
        gpt_load_key: Option<&str>,
        our_key: Option<&str>,
        auth_key: Option<String>,
    ) -> Self {
        Self {
            reader: Reader::new(Location::InPlace, PAGE),
            // gpt-load's MySQL driver wrote zone-less local times (`loc=Local` in its documented
            // DSN); SQLite and PostgreSQL values carry their offset.
            naive_zone: match backend {
                Backend::Mysql => NaiveZone::Local,
                Backend::Sqlite | Backend::Postgres => NaiveZone::Utc,
            },
            keys: KeyTranslator::new(
                GptLoadCipher::from_password(gpt_load_key),
                KeyCipher::from_password(our_key),
            ),
            auth_key,
        }
    }
}

/// Reads every key of the source and fails if any cannot be read: run before anything is
/// changed, so a wrong `ENCRYPTION_KEY` leaves everything as it was.
pub(crate) fn check_keys(conn: &mut SyncConn, source: &SourceOptions) -> Result<u64, CopyError> {
    let mut after = After::Start;
    let (mut total, mut unreadable, mut first_error) = (0_u64, 0_u64, None);
    while let Some(page) = source.reader.next_page::<KeyIn>(conn, &mut after)? {
        for key in &page {
            total += 1;
            let stored = key.key_value.as_deref().unwrap_or("");
            let hash = key.key_hash.as_deref().unwrap_or("");
            if let Err(err) = source.keys.plaintext(stored, hash) {
                unreadable += 1;
                first_error.get_or_insert(err);
            }
        }
    }
    match first_error {
        Some(error) => Err(CopyError::Keys {
            error,
            unreadable,
            total,
        }),
        None => Ok(total),
    }
}

/// Copies every gpt-load table the source holds into our tables.
pub(crate) fn copy_all(
    link: &mut Link<'_>,
    source: &SourceOptions,
    progress: &mut dyn Progress,
) -> Result<Summary, CopyError> {
    let now = Utc::now().naive_utc();
    let mut summary = Summary::default();
    let mut copy = Copier {
        source,
        now,
        summary: &mut summary,
        group_ids: HashMap::new(),
        key_ids: HashMap::new(),
    };
    copy.settings(link, progress)?;
    copy.groups(link, progress)?;
    copy.sub_groups(link, progress)?;
    copy.keys(link, progress)?;
    copy.logs(link, progress)?;
    copy.hourly(link, progress)?;
    reset_sequences(link.target())?;
    Ok(summary)
}

/// One run of [`copy_all`]: the source's options, what was done, and the ids it assigned.
struct Copier<'s> {
    source: &'s SourceOptions,
    now: NaiveDateTime,
    summary: &'s mut Summary,
    /// Source group id → target group id.
    group_ids: HashMap<i64, i64>,
    /// Target key hash → target key id (for `request_logs.key_id`).
    key_ids: HashMap<String, i64>,
}

/// Hands out ids: the wanted one while it is free, otherwise the next above everything seen.
struct Ids {
    taken: HashSet<i64>,
    next: i64,
}

impl Ids {
    fn new(taken: impl IntoIterator<Item = i64>) -> Self {
        let taken: HashSet<i64> = taken.into_iter().collect();
        let next = taken.iter().max().map_or(1, |max| max + 1);
        Self { taken, next }
    }

    fn claim(&mut self, wanted: Option<i64>) -> i64 {
        let id = match wanted {
            Some(id) if id > 0 && !self.taken.contains(&id) => id,
            _ => {
                while self.taken.contains(&self.next) {
                    self.next += 1;
                }
                self.next
            }
        };
        self.taken.insert(id);
        self.next = self.next.max(id + 1);
        id
    }
}

/// Inserts `$rows` into `$table` with [`insert_chunked`] and counts them copied.
macro_rules! insert_rows {
    ($copier:ident, $conn:expr, $table:ident, $rows:expr) => {{
        let n = insert_chunked($conn, $rows, |c, chunk| {
            on_conn!(c, |c| diesel::insert_into($table::table).values(chunk).execute(c))
        })?;
        $copier.summary.copied(stringify!($table), n);
    }};
}

impl Copier<'_> {
    fn time(&mut self, text: Option<&str>, column: &str) -> NaiveDateTime {
        match text.and_then(|t| convert::timestamp(t, self.source.naive_zone)) {
            Some(at) => at,
            None => {
                if text.is_some_and(|t| !t.trim().is_empty()) {
                    self.summary
                        .repair(format!("{column}: unreadable time, set to now"));
                }
                self.now
            }
        }
    }

    fn optional_time(&mut self, text: Option<&str>, column: &str) -> Option<NaiveDateTime> {
        let text = text.filter(|t| !t.trim().is_empty())?;
        let at = convert::timestamp(text, self.source.naive_zone);
        if at.is_none() {
            self.summary.repair(format!("{column}: unreadable time, cleared"));
        }
        at
    }

    fn json(&mut self, text: Option<&str>, default: &str, column: &str) -> String {
        let (value, readable) = convert::json(text, default);
        if !readable {
            self.summary
                .repair(format!("{column}: not JSON, set to {default}"));
        }
        value
    }

    fn settings(&mut self, link: &mut Link<'_>, progress: &mut dyn Progress) -> Result<(), CopyError> {
        let rows: Vec<SettingIn> = self.read_all(link, progress)?;
        let target = link.target();
        let existing: Vec<(i64, String)> = on_conn!(target, |c| system_settings::table
            .select((system_settings::id, system_settings::setting_key))
            .load(c))?;
        let existing: HashMap<String, i64> = existing.into_iter().map(|(id, key)| (key, id)).collect();
        let mut ids = Ids::new(existing.values().copied());
        let mut inserts = Vec::new();
        for row in rows {
            let Some(key) = row.setting_key.filter(|k| !k.is_empty()) else {
                self.summary.skip("system_settings: row without a key");
                continue;
            };
            let mut value = row.setting_value.unwrap_or_default();
            if let Some(meta) = crate::settings::meta::find(&key) {
                match crate::settings::value::from_storage(meta, &value) {
                    Ok(parsed) => value = parsed.to_storage(),
                    Err(_) => self.summary.repair(format!(
                        "system_settings.{key}: value kept as written, not valid here"
                    )),
                }
            }
            if key == "proxy_keys" {
                let auth_key = self.source.auth_key.as_deref().filter(|k| !k.is_empty());
                if auth_key.is_some_and(|auth| value.split(',').any(|k| k.trim() == auth)) {
                    self.summary.warnings.push(
                        "the global proxy_keys setting contains AUTH_KEY (gpt-load put it there on its \
                         first start): the admin key also works as a proxy key until it is removed there"
                            .to_owned(),
                    );
                }
                value = proxy_keys::seal(self.source.keys.target(), &value);
            }
            let description = convert::clip(row.description, 512);
            if let Some(&id) = existing.get(&key) {
                on_conn!(target, |c| diesel::update(system_settings::table.find(id))
                    .set((
                        system_settings::setting_value.eq(&value),
                        system_settings::updated_at.eq(self.now),
                    ))
                    .execute(c))?;
                self.summary.copied("system_settings", 1);
                continue;
            }
            let created_at = self.time(row.created_at.as_deref(), "system_settings.created_at");
            let updated_at = self.time(row.updated_at.as_deref(), "system_settings.updated_at");
            inserts.push(SettingRow {
                id: ids.claim(convert::integer(row.id.as_deref())),
                setting_key: convert::clip(Some(key), 255),
                setting_value: value,
                description,
                created_at,
                updated_at,
            });
        }
        insert_rows!(self, target, system_settings, &inserts);
        progress.finish();
        Ok(())
    }

    fn groups(&mut self, link: &mut Link<'_>, progress: &mut dyn Progress) -> Result<(), CopyError> {
        let rows: Vec<GroupIn> = self.read_all(link, progress)?;
        let target = link.target();
        let existing: Vec<(i64, String)> = on_conn!(target, |c| groups::table
            .select((groups::id, groups::name))
            .load(c))?;
        let by_name: HashMap<String, i64> = existing.iter().map(|(id, name)| (name.clone(), *id)).collect();
        let mut ids = Ids::new(existing.iter().map(|(id, _)| *id));
        let mut inserts = Vec::new();
        for row in rows {
            let Some(source_id) = convert::integer(row.id.as_deref()) else {
                self.summary.skip("groups: row without an id");
                continue;
            };
            let Some(name) = row.name.filter(|n| !n.is_empty()) else {
                self.summary.skip("groups: row without a name");
                continue;
            };
            if let Some(&id) = by_name.get(&name) {
                self.group_ids.insert(source_id, id);
                self.summary.skip("groups: a group of that name exists (reused)");
                continue;
            }
            let id = ids.claim(Some(source_id));
            self.group_ids.insert(source_id, id);
            let group_type = match row.group_type.as_deref().map(str::trim) {
                Some("aggregate") => "aggregate",
                _ => "standard",
            };
            let plain_proxy_keys = row.proxy_keys.unwrap_or_default();
            let created_at = self.time(row.created_at.as_deref(), "groups.created_at");
            let updated_at = self.time(row.updated_at.as_deref(), "groups.updated_at");
            let last_validated_at =
                self.optional_time(row.last_validated_at.as_deref(), "groups.last_validated_at");
            inserts.push(GroupRow {
                id,
                name: convert::clip(Some(name), 255),
                display_name: convert::clip(row.display_name, 255),
                proxy_keys: proxy_keys::seal(self.source.keys.target(), &plain_proxy_keys),
                description: convert::clip(row.description, 512),
                group_type: group_type.to_owned(),
                upstreams: self.json(row.upstreams.as_deref(), "[]", "groups.upstreams"),
                validation_endpoint: convert::clip(row.validation_endpoint, 255),
                channel_type: convert::clip(row.channel_type, 50),
                sort: convert::integer(row.sort.as_deref())
                    .and_then(|s| i32::try_from(s).ok())
                    .unwrap_or(0),
                test_model: convert::clip(row.test_model, 255),
                param_overrides: self.json(row.param_overrides.as_deref(), "{}", "groups.param_overrides"),
                config: self.json(row.config.as_deref(), "{}", "groups.config"),
                header_rules: self.json(row.header_rules.as_deref(), "[]", "groups.header_rules"),
                model_redirect_rules: self.json(
                    row.model_redirect_rules.as_deref(),
                    "{}",
                    "groups.model_redirect_rules",
                ),
                model_redirect_strict: convert::boolean(row.model_redirect_strict.as_deref()),
                last_validated_at,
                created_at,
                updated_at,
            });
        }
        insert_rows!(self, target, groups, &inserts);
        progress.finish();
        Ok(())
    }

    fn sub_groups(&mut self, link: &mut Link<'_>, progress: &mut dyn Progress) -> Result<(), CopyError> {
        let rows: Vec<SubGroupIn> = self.read_all(link, progress)?;
        let target = link.target();
        let existing: Vec<(i64, i64, i64)> = on_conn!(target, |c| group_sub_groups::table
            .select((
                group_sub_groups::id,
                group_sub_groups::group_id,
                group_sub_groups::sub_group_id,
            ))
            .load(c))?;
        let mut pairs: HashSet<(i64, i64)> = existing.iter().map(|(_, g, s)| (*g, *s)).collect();
        let mut ids = Ids::new(existing.iter().map(|(id, _, _)| *id));
        let mut inserts = Vec::new();
        for row in rows {
            let group =
                convert::integer(row.group_id.as_deref()).and_then(|id| self.group_ids.get(&id).copied());
            let sub =
                convert::integer(row.sub_group_id.as_deref()).and_then(|id| self.group_ids.get(&id).copied());
            let (Some(group_id), Some(sub_group_id)) = (group, sub) else {
                self.summary
                    .skip("group_sub_groups: links a group that does not exist");
                continue;
            };
            if !pairs.insert((group_id, sub_group_id)) {
                self.summary.skip("group_sub_groups: the link exists");
                continue;
            }
            let created_at = self.time(row.created_at.as_deref(), "group_sub_groups.created_at");
            let updated_at = self.time(row.updated_at.as_deref(), "group_sub_groups.updated_at");
            inserts.push(SubGroupRow {
                id: ids.claim(convert::integer(row.id.as_deref())),
                group_id,
                sub_group_id,
                weight: convert::integer(row.weight.as_deref())
                    .and_then(|w| i32::try_from(w).ok())
                    .unwrap_or(0),
                created_at,
                updated_at,
            });
        }
        insert_rows!(self, target, group_sub_groups, &inserts);
        progress.finish();
        Ok(())
    }

    fn keys(&mut self, link: &mut Link<'_>, progress: &mut dyn Progress) -> Result<(), CopyError> {
        let total = self.start::<KeyIn>(link, progress)?;
        let existing: Vec<(i64, i64, String)> = on_conn!(link.target(), |c| api_keys::table
            .select((api_keys::id, api_keys::group_id, api_keys::key_hash))
            .load(c))?;
        let mut present: HashSet<(i64, String)> = HashSet::with_capacity(existing.len());
        for (id, group_id, hash) in &existing {
            present.insert((*group_id, hash.clone()));
            self.key_ids.insert(hash.clone(), *id);
        }
        let mut ids = Ids::new(existing.iter().map(|(id, _, _)| *id));
        let mut after = After::Start;
        while let Some(page) = self.source.reader.next_page::<KeyIn>(link.source(), &mut after)? {
            progress.advance(page.len() as u64);
            let mut inserts = Vec::with_capacity(page.len());
            for row in page {
                let Some(group_id) =
                    convert::integer(row.group_id.as_deref()).and_then(|id| self.group_ids.get(&id).copied())
                else {
                    self.summary.skip("api_keys: the key's group does not exist");
                    continue;
                };
                let stored = row.key_value.as_deref().unwrap_or("");
                let plain = self
                    .source
                    .keys
                    .plaintext(stored, row.key_hash.as_deref().unwrap_or(""))
                    .map_err(|error| CopyError::Keys {
                        error,
                        unreadable: 1,
                        total,
                    })?;
                if plain.trim().is_empty() {
                    self.summary.skip("api_keys: empty key");
                    continue;
                }
                let (key_value, key_hash) = self.source.keys.store(&plain);
                if !present.insert((group_id, key_hash.clone())) {
                    self.summary.skip("api_keys: the key is already in its group");
                    continue;
                }
                let id = ids.claim(convert::integer(row.id.as_deref()));
                self.key_ids.insert(key_hash.clone(), id);
                let status = match row.status.as_deref().map(str::trim) {
                    Some("invalid") => "invalid",
                    _ => "active",
                };
                let last_used_at = self.optional_time(row.last_used_at.as_deref(), "api_keys.last_used_at");
                let created_at = self.time(row.created_at.as_deref(), "api_keys.created_at");
                let updated_at = self.time(row.updated_at.as_deref(), "api_keys.updated_at");
                inserts.push(ApiKeyRow {
                    id,
                    key_value,
                    key_hash,
                    group_id,
                    status: status.to_owned(),
                    notes: convert::clip(row.notes, 255),
                    request_count: convert::integer(row.request_count.as_deref()).unwrap_or(0).max(0),
                    failure_count: convert::integer(row.failure_count.as_deref()).unwrap_or(0).max(0),
                    last_used_at,
                    created_at,
                    updated_at,
                });
            }
            insert_rows!(self, link.target(), api_keys, &inserts);
        }
        progress.finish();
        Ok(())
    }

    fn logs(&mut self, link: &mut Link<'_>, progress: &mut dyn Progress) -> Result<(), CopyError> {
        self.start::<LogIn>(link, progress)?;
        let mut after = After::Start;
        while let Some(page) = self.source.reader.next_page::<LogIn>(link.source(), &mut after)? {
            progress.advance(page.len() as u64);
            let ids: Vec<String> = page.iter().filter_map(|r| r.id.clone()).collect();
            let existing: Vec<String> = on_conn!(link.target(), |c| request_logs::table
                .filter(request_logs::id.eq_any(&ids))
                .select(request_logs::id)
                .load(c))?;
            let existing: HashSet<String> = existing.into_iter().collect();
            let mut inserts = Vec::with_capacity(page.len());
            for row in page {
                let Some(id) = row.id.filter(|id| !id.is_empty() && id.len() <= 36) else {
                    self.summary.skip("request_logs: row without a usable id");
                    continue;
                };
                if existing.contains(&id) {
                    self.summary.skip("request_logs: the row exists");
                    continue;
                }
                let Some(timestamp) = row
                    .timestamp
                    .as_deref()
                    .and_then(|t| convert::timestamp(t, self.source.naive_zone))
                else {
                    self.summary.skip("request_logs: unreadable timestamp");
                    continue;
                };
                let stored = row.key_value.as_deref().unwrap_or("");
                let (key_value, key_hash) = match self
                    .source
                    .keys
                    .plaintext(stored, row.key_hash.as_deref().unwrap_or(""))
                {
                    Ok(plain) => self.source.keys.store(&plain),
                    Err(_) => {
                        self.summary.repair("request_logs.key_value: unreadable, cleared");
                        (String::new(), String::new())
                    }
                };
                let key_id = self.key_ids.get(&key_hash).copied();
                let group_id = self.mapped_group(row.group_id.as_deref());
                let parent_group_id = self.mapped_group(row.parent_group_id.as_deref());
                let request_type = match row.request_type.as_deref().map(str::trim) {
                    Some("retry") => "retry".into(),
                    _ => "final".into(),
                };
                inserts.push(RequestLogRow {
                    id,
                    timestamp,
                    group_id,
                    group_name: convert::clip(row.group_name, 255),
                    parent_group_id,
                    parent_group_name: convert::clip(row.parent_group_name, 255),
                    key_value,
                    key_hash,
                    model: convert::clip(row.model, 255),
                    is_success: convert::boolean(row.is_success.as_deref()),
                    source_ip: convert::clip(row.source_ip, 64),
                    status_code: convert::integer(row.status_code.as_deref())
                        .and_then(|s| i32::try_from(s).ok())
                        .unwrap_or(0),
                    request_path: convert::clip(row.request_path, 500),
                    duration: convert::integer(row.duration.as_deref()).unwrap_or(0),
                    error_message: convert::clip(row.error_message, TEXT_LIMIT),
                    user_agent: convert::clip(row.user_agent, 512),
                    request_type,
                    upstream_addr: convert::clip(row.upstream_addr, 500),
                    is_stream: convert::boolean(row.is_stream.as_deref()),
                    request_body: convert::clip(row.request_body, TEXT_LIMIT),
                    key_id,
                    attempt: 1,
                    ttfb_ms: None,
                    request_id: String::new(),
                    prompt_tokens: None,
                    completion_tokens: None,
                    cached_tokens: None,
                    reasoning_tokens: None,
                    total_tokens: None,
                    access_key_id: None,
                });
            }
            insert_rows!(self, link.target(), request_logs, &inserts);
        }
        progress.finish();
        Ok(())
    }

    fn hourly(&mut self, link: &mut Link<'_>, progress: &mut dyn Progress) -> Result<(), CopyError> {
        self.start::<HourlyIn>(link, progress)?;
        let existing: Vec<(i64, NaiveDateTime, i64)> =
            on_conn!(link.target(), |c| group_hourly_stats::table
                .select((
                    group_hourly_stats::id,
                    group_hourly_stats::time,
                    group_hourly_stats::group_id,
                ))
                .load(c))?;
        let mut present: HashSet<(NaiveDateTime, i64)> = existing.iter().map(|(_, t, g)| (*t, *g)).collect();
        let mut ids = Ids::new(existing.iter().map(|(id, _, _)| *id));
        let mut after = After::Start;
        while let Some(page) = self
            .source
            .reader
            .next_page::<HourlyIn>(link.source(), &mut after)?
        {
            progress.advance(page.len() as u64);
            let mut inserts = Vec::with_capacity(page.len());
            for row in page {
                let Some(time) = row
                    .time
                    .as_deref()
                    .and_then(|t| convert::timestamp(t, self.source.naive_zone))
                else {
                    self.summary.skip("group_hourly_stats: unreadable time");
                    continue;
                };
                let group_id = self.mapped_group(row.group_id.as_deref());
                if !present.insert((time, group_id)) {
                    self.summary.skip("group_hourly_stats: the hour exists");
                    continue;
                }
                let created_at = self.time(row.created_at.as_deref(), "group_hourly_stats.created_at");
                let updated_at = self.time(row.updated_at.as_deref(), "group_hourly_stats.updated_at");
                inserts.push(HourlyStatRow {
                    id: ids.claim(convert::integer(row.id.as_deref())),
                    time,
                    group_id,
                    success_count: convert::integer(row.success_count.as_deref()).unwrap_or(0),
                    failure_count: convert::integer(row.failure_count.as_deref()).unwrap_or(0),
                    created_at,
                    updated_at,
                });
            }
            insert_rows!(self, link.target(), group_hourly_stats, &inserts);
        }
        progress.finish();
        Ok(())
    }

    /// Starts `R`'s table on `progress`; returns how many rows the source holds.
    fn start<R: SourceRow>(
        &self,
        link: &mut Link<'_>,
        progress: &mut dyn Progress,
    ) -> Result<u64, CopyError> {
        let total = self.source.reader.count(link.source(), R::TABLE)?;
        progress.start(R::TABLE, total);
        Ok(total)
    }

    /// Every row of a small table (settings, groups, links), reported as read.
    fn read_all<R: SourceRow + Cursor>(
        &self,
        link: &mut Link<'_>,
        progress: &mut dyn Progress,
    ) -> Result<Vec<R>, CopyError> {
        self.start::<R>(link, progress)?;
        let mut rows = Vec::new();
        let mut after = After::Start;
        while let Some(page) = self.source.reader.next_page(link.source(), &mut after)? {
            rows.extend(page);
        }
        progress.advance(rows.len() as u64);
        Ok(rows)
    }

    /// A source group id as the target knows it; a group that no longer exists keeps its id
    /// (log rows and stats outlive their groups in gpt-load too).
    fn mapped_group(&self, text: Option<&str>) -> i64 {
        let id = convert::integer(text).unwrap_or(0);
        self.group_ids.get(&id).copied().unwrap_or(id)
    }
}

impl Reader {
    /// The page of `R` after `after`, moving `after` past it; `None` once the table is done.
    fn next_page<R: SourceRow + Cursor>(
        &self,
        conn: &mut SyncConn,
        after: &mut After,
    ) -> diesel::QueryResult<Option<Vec<R>>> {
        let page: Vec<R> = self.page(conn, after)?;
        let Some(last) = page.last() else {
            return Ok(None);
        };
        *after = last.after();
        Ok(Some(page))
    }
}

/// A source row that pages are read past.
trait Cursor {
    /// Where the page after this row starts.
    fn after(&self) -> After;
}

macro_rules! numeric_id {
    ($($row:ty),+) => {
        $(impl Cursor for $row {
            fn after(&self) -> After {
                After::Id(convert::integer(self.id.as_deref()).unwrap_or(i64::MAX))
            }
        })+
    };
}
numeric_id!(SettingIn, GroupIn, SubGroupIn, KeyIn, HourlyIn);

impl Cursor for LogIn {
    fn after(&self) -> After {
        After::Text(self.id.clone().unwrap_or_default())
    }
}

/// Inserts `rows` a chunk at a time ([`insert_chunks`]); returns how many.
fn insert_chunked<T: ApproxSize>(
    conn: &mut SyncConn,
    rows: &[T],
    mut insert: impl FnMut(&mut SyncConn, &[T]) -> diesel::QueryResult<usize>,
) -> diesel::QueryResult<usize> {
    insert_chunks(rows).try_fold(0, |inserted, chunk| Ok(inserted + insert(conn, chunk)?))
}

/// After rows were inserted with explicit ids, PostgreSQL's sequences must move past them
/// (MySQL and SQLite follow the largest id by themselves).
pub(super) fn reset_sequences(conn: &mut SyncConn) -> diesel::QueryResult<()> {
    if conn.backend() != Backend::Postgres {
        return Ok(());
    }
    for table in [
        "system_settings",
        "groups",
        "group_sub_groups",
        "api_keys",
        "group_hourly_stats",
    ] {
        conn.execute(&format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST((SELECT MAX(id) FROM \"{table}\"), 1), \
             (SELECT COUNT(*) > 0 FROM \"{table}\"))"
        ))?;
    }
    Ok(())
}

/// A `group_sub_groups` row: written here, read by the export.
#[derive(Insertable, Queryable, Selectable)]
#[diesel(table_name = group_sub_groups)]
pub(super) struct SubGroupRow {
    pub(super) id: i64,
    pub(super) group_id: i64,
    pub(super) sub_group_id: i64,
    pub(super) weight: i32,
    pub(super) created_at: NaiveDateTime,
    pub(super) updated_at: NaiveDateTime,
}

approx_size! {
    SettingRow: 100 + setting_key + setting_value + description;
    GroupRow: 300 + proxy_keys + upstreams + param_overrides + config + header_rules
        + model_redirect_rules + description;
    SubGroupRow: 100;
    ApiKeyRow: 150 + key_value + key_hash + notes;
    HourlyStatRow: 100;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_kept_while_free() {
        let mut ids = Ids::new([1, 2, 5]);
        assert_eq!(ids.claim(Some(3)), 3);
        assert_eq!(ids.claim(Some(2)), 6);
        assert_eq!(ids.claim(None), 7);
        assert_eq!(ids.claim(Some(10)), 10);
        assert_eq!(ids.claim(Some(10)), 11);
        assert_eq!(ids.claim(Some(0)), 12);
        let mut empty = Ids::new([]);
        assert_eq!(empty.claim(None), 1);
        assert_eq!(empty.claim(Some(1)), 2);
    }
}
