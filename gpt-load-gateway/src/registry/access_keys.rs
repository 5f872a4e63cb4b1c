//! Access keys: proxy keys kept as records of their own (docs/LIMITS.md, "Access keys").
//!
//! An access key is handed to one team or application. It may be limited to some groups and to
//! some models, to requests and tokens per minute and to tokens per UTC day and calendar month,
//! may expire, and may be switched off. Only its SHA-256 is stored; the key is shown once, when
//! it is made.
//!
//! [`AccessKeys`] is the table the proxy reads: one lookup by hash per request presented with a
//! key that is not a legacy proxy key, and the key's own counters, all in memory. The counters
//! outlive reloads of the table (an edit does not reset them). Token totals arrive after each
//! request ([`AccessKeys::settle`], from the request log's sink), and every node also reads the
//! day's and month's totals from `usage_hourly` on the log writer's pace
//! ([`AccessKeys::observe_totals`]), so quotas hold across a cluster within that lag.
//!
//! [`ProxyKeys`] is the proxy's key check: the legacy proxy keys first (unchanged, in constant
//! time), then the access keys.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use base64::Engine;
use chrono::{Datelike, NaiveDate};
use gpt_load_tower::{
    auth::{StaticProxyKeys, ValidateProxyKey},
    context::{AccessKeyId, GroupName, Principal},
    error::{Error, ErrorKind},
    limit::MinuteWindow,
    rewrite::ModelFilter,
};
use sha2::{Digest, Sha256};

use crate::models::AccessKeyRow;

/// How every access key begins, so one is recognisable in a config file or a leak scanner.
pub(crate) const KEY_PREFIX: &str = "sk-gla-";

/// A new access key: the prefix and 256 random bits.
pub(crate) fn generate() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The SHA-256 of a key: what is stored and looked up.
fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The stored form of a key's hash (hex).
pub(crate) fn hash_hex(key: &str) -> String {
    hex::encode(digest(key))
}

/// What is shown of a key after it was made: its first ten and last four characters.
pub(crate) fn hint(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 14 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..10].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// An access key's limits (0 = none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AccessLimits {
    pub(crate) rpm: u64,
    pub(crate) tpm: u64,
    pub(crate) daily_tokens: u64,
    pub(crate) monthly_tokens: u64,
}

/// One access key as the proxy checks it.
struct Entry {
    id: AccessKeyId,
    enabled: bool,
    /// Unix milliseconds after which the key is refused.
    expires_at_ms: Option<u64>,
    /// Group names; `None` = every group.
    groups: Option<HashSet<GroupName>>,
    models: Option<Arc<ModelFilter>>,
    limits: AccessLimits,
    counters: Arc<Counters>,
}

/// What an access key has used. Kept by id across reloads of the table.
#[derive(Default)]
struct Counters {
    requests: MinuteWindow,
    tokens: MinuteWindow,
    day: PeriodTotal,
    month: PeriodTotal,
}

/// Tokens within one period (a UTC day or month, numbered), reset when the period changes.
///
/// Two words, not one: a race at the turn of a period can drop or keep a few tokens of the
/// requests settled in that instant, which a quota of tokens does not notice.
#[derive(Default)]
struct PeriodTotal {
    period: AtomicU64,
    tokens: AtomicU64,
}

impl PeriodTotal {
    fn in_period(&self, period: u64) -> u64 {
        if self.period.load(Ordering::Acquire) == period {
            self.tokens.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    fn add(&self, period: u64, tokens: u64) {
        if self.period.swap(period, Ordering::AcqRel) == period {
            self.tokens.fetch_add(tokens, Ordering::Relaxed);
        } else {
            self.tokens.store(tokens, Ordering::Relaxed);
        }
    }

    /// Raises the total to `total` (what the database has, counting every node) if it is higher.
    fn observe(&self, period: u64, total: u64) {
        if self.period.swap(period, Ordering::AcqRel) == period {
            self.tokens.fetch_max(total, Ordering::Relaxed);
        } else {
            self.tokens.store(total, Ordering::Relaxed);
        }
    }
}

/// The UTC day (days since 1970) and month (months since year 0) of `at_ms`, and the time until
/// each ends.
struct Calendar {
    day: u64,
    month: u64,
    until_tomorrow: Duration,
    until_next_month: Duration,
}

const DAY_MS: u64 = 86_400_000;

impl Calendar {
    fn at(now_ms: u64) -> Self {
        let date = chrono::DateTime::UNIX_EPOCH.date_naive() + chrono::Days::new(now_ms / DAY_MS);
        let month_start = |year: i32, month: u32| {
            NaiveDate::from_ymd_opt(year, month, 1)
                .map(|d| {
                    d.and_hms_opt(0, 0, 0)
                        .unwrap_or_default()
                        .and_utc()
                        .timestamp_millis()
                })
                .map_or(u64::MAX, |ms| u64::try_from(ms).unwrap_or(0))
        };
        let (year, month) = (date.year(), date.month());
        let next_month = if month == 12 {
            month_start(year + 1, 1)
        } else {
            month_start(year, month + 1)
        };
        Self {
            day: now_ms / DAY_MS,
            month: u64::try_from(year).unwrap_or(0) * 12 + u64::from(month),
            until_tomorrow: Duration::from_millis((now_ms / DAY_MS + 1) * DAY_MS - now_ms),
            until_next_month: Duration::from_millis(next_month.saturating_sub(now_ms)),
        }
    }

    fn now() -> Self {
        Self::at(now_ms())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The limit names sent in `X-Gpt-Load-Limit` for an access key's limits.
pub(crate) mod limit_names {
    pub(crate) const RPM: &str = "access_key_rpm";
    pub(crate) const TPM: &str = "access_key_tpm";
    pub(crate) const DAILY_TOKENS: &str = "access_key_daily_tokens";
    pub(crate) const MONTHLY_TOKENS: &str = "access_key_monthly_tokens";
}

/// What an access key has used, as the admin API shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AccessUsage {
    pub(crate) requests_last_minute: u64,
    pub(crate) tokens_last_minute: u64,
    pub(crate) tokens_today: u64,
    pub(crate) tokens_this_month: u64,
}

#[derive(Default)]
struct Table {
    by_hash: HashMap<[u8; 32], Arc<Entry>>,
    by_id: HashMap<AccessKeyId, Arc<Entry>>,
}

/// The access keys the proxy accepts, swapped whole on a change. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AccessKeys {
    table: Arc<ArcSwap<Table>>,
    /// Nodes alive in the cluster (1 on a single node): each node admits its share of a key's
    /// requests and tokens per minute.
    nodes: Arc<AtomicU32>,
}

impl Default for AccessKeys {
    fn default() -> Self {
        Self {
            table: Arc::default(),
            nodes: Arc::new(AtomicU32::new(1)),
        }
    }
}

/// A stored row that cannot serve as written (an unreadable JSON column, a pattern that no
/// longer compiles); the key is left out, so it is refused, and the reason logged.
fn entry_of(
    row: &AccessKeyRow,
    group_names: &HashMap<i64, GroupName>,
    counters: Arc<Counters>,
) -> Result<Entry, String> {
    let group_ids: Vec<i64> =
        serde_json::from_str(&row.allowed_groups).map_err(|e| format!("allowed_groups: {e}"))?;
    let patterns: Vec<String> =
        serde_json::from_str(&row.allowed_models).map_err(|e| format!("allowed_models: {e}"))?;
    let groups = (!group_ids.is_empty()).then(|| {
        group_ids
            .iter()
            .filter_map(|id| group_names.get(id).cloned())
            .collect::<HashSet<_>>()
    });
    let models = if patterns.is_empty() {
        None
    } else {
        Some(Arc::new(
            ModelFilter::new(&patterns, [] as [&str; 0]).map_err(|e| e.to_string())?,
        ))
    };
    let count = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(Entry {
        id: AccessKeyId(count(row.id)),
        enabled: row.enabled,
        expires_at_ms: row
            .expires_at
            .map(|at| u64::try_from(at.and_utc().timestamp_millis()).unwrap_or(0)),
        groups,
        models,
        limits: AccessLimits {
            rpm: count(row.rpm),
            tpm: count(row.tpm),
            daily_tokens: count(row.daily_token_quota),
            monthly_tokens: count(row.monthly_token_quota),
        },
        counters,
    })
}

impl AccessKeys {
    /// Serves `rows`, whose allowed groups are named through `group_names` (a group that no
    /// longer exists is dropped from a key's list; a key whose list is left empty serves no
    /// group).
    pub(crate) fn store(&self, rows: &[AccessKeyRow], group_names: &HashMap<i64, GroupName>) {
        let old = self.table.load();
        let mut table = Table::default();
        for row in rows {
            let id = AccessKeyId(u64::try_from(row.id).unwrap_or(0));
            let counters = old
                .by_id
                .get(&id)
                .map_or_else(Arc::default, |e| Arc::clone(&e.counters));
            let Some(hash) = hex::decode(&row.key_hash)
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
            else {
                tracing::error!(
                    access_key = row.id,
                    "access key left out: key_hash is not a SHA-256"
                );
                continue;
            };
            match entry_of(row, group_names, counters) {
                Ok(entry) => {
                    let entry = Arc::new(entry);
                    table.by_hash.insert(hash, Arc::clone(&entry));
                    table.by_id.insert(id, entry);
                }
                Err(reason) => {
                    tracing::error!(access_key = row.id, %reason, "access key left out");
                }
            }
        }
        self.table.store(Arc::new(table));
    }

    /// Whether any access key exists (without one, a wrong key costs no hash).
    pub(crate) fn is_empty(&self) -> bool {
        self.table.load().by_hash.is_empty()
    }

    /// Records how many nodes are alive, for each node's share of the per-minute limits.
    pub(crate) fn set_nodes(&self, nodes: usize) {
        let nodes = u32::try_from(nodes).unwrap_or(u32::MAX).max(1);
        self.nodes.store(nodes, Ordering::Relaxed);
    }

    fn share(&self, limit: u64) -> u64 {
        (limit / u64::from(self.nodes.load(Ordering::Relaxed))).max(1)
    }

    /// Checks `presented` for `group` (known to the proxy as `known`, with its channel). `None`
    /// when it is no access key at all.
    fn admit(
        &self,
        group: &str,
        known: Option<(&GroupName, gpt_load_tower::channel::ChannelKind)>,
        presented: &str,
    ) -> Option<Result<Principal, Error>> {
        let table = self.table.load();
        let entry = table.by_hash.get(&digest(presented))?;
        Some(self.admit_entry(entry, group, known))
    }

    /// Whether `presented` is an access key that may use `group` now, without counting a
    /// request against it.
    fn permits(&self, group: &str, known: bool, presented: &str) -> bool {
        let table = self.table.load();
        table.by_hash.get(&digest(presented)).is_some_and(|entry| {
            entry.enabled
                && entry.expires_at_ms.is_none_or(|at| now_ms() < at)
                && known
                && entry.groups.as_ref().is_none_or(|groups| groups.contains(group))
        })
    }

    fn admit_entry(
        &self,
        entry: &Entry,
        group: &str,
        known: Option<(&GroupName, gpt_load_tower::channel::ChannelKind)>,
    ) -> Result<Principal, Error> {
        if !entry.enabled {
            return Err(unauthorized("access key is disabled"));
        }
        let now = now_ms();
        if entry.expires_at_ms.is_some_and(|at| now >= at) {
            return Err(unauthorized("access key has expired"));
        }
        let allowed = entry.groups.as_ref().is_none_or(|groups| groups.contains(group));
        let Some((name, channel)) = known.filter(|_| allowed) else {
            // A key limited to some groups learns nothing about the others, existing or not.
            return Err(if allowed {
                Error::unknown_group(group)
            } else {
                Error::forbidden(format!("this access key may not use group '{group}'"))
            });
        };
        let limits = entry.limits;
        let counters = &entry.counters;
        let calendar = Calendar::at(now);
        if limits.monthly_tokens > 0 && counters.month.in_period(calendar.month) >= limits.monthly_tokens {
            return Err(Error::rate_limited(
                limit_names::MONTHLY_TOKENS,
                calendar.until_next_month,
            ));
        }
        if limits.daily_tokens > 0 && counters.day.in_period(calendar.day) >= limits.daily_tokens {
            return Err(Error::rate_limited(
                limit_names::DAILY_TOKENS,
                calendar.until_tomorrow,
            ));
        }
        if limits.tpm > 0 {
            let share = self.share(limits.tpm);
            if let Some(wait) = counters.tokens.retry_after(1, share) {
                return Err(Error::rate_limited(limit_names::TPM, wait));
            }
        }
        if limits.rpm > 0
            && let Err(wait) = counters.requests.try_acquire(1, self.share(limits.rpm))
        {
            return Err(Error::rate_limited(limit_names::RPM, wait));
        }
        let mut principal = Principal::new(name.clone(), channel).with_access_key(entry.id);
        if let Some(models) = &entry.models {
            principal = principal.with_allowed_models(models.clone());
        }
        Ok(principal)
    }

    /// Counts `tokens` a request made with access key `id` used.
    pub(crate) fn settle(&self, id: AccessKeyId, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let table = self.table.load();
        let Some(entry) = table.by_id.get(&id) else {
            return;
        };
        let calendar = Calendar::now();
        let counters = &entry.counters;
        counters.tokens.add(tokens);
        counters.day.add(calendar.day, tokens);
        counters.month.add(calendar.month, tokens);
    }

    /// Whether any key has a token quota (only then are totals read from the database).
    pub(crate) fn has_quotas(&self) -> bool {
        self.table
            .load()
            .by_id
            .values()
            .any(|e| e.limits.daily_tokens > 0 || e.limits.monthly_tokens > 0)
    }

    /// Raises each key's totals of the day and the month to those in `usage_hourly` (which
    /// count every node's requests): `(id, tokens today, tokens this month)`, read at `at`.
    pub(crate) fn observe_totals(&self, at: SystemTime, totals: &[(i64, u64, u64)]) {
        let at_ms = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let calendar = Calendar::at(at_ms);
        let table = self.table.load();
        for &(id, today, month) in totals {
            if let Some(entry) = table.by_id.get(&AccessKeyId(u64::try_from(id).unwrap_or(0))) {
                entry.counters.day.observe(calendar.day, today);
                entry.counters.month.observe(calendar.month, month);
            }
        }
    }

    /// What key `id` has used, as this node counts it.
    pub(crate) fn usage(&self, id: i64) -> AccessUsage {
        let table = self.table.load();
        let Some(entry) = table.by_id.get(&AccessKeyId(u64::try_from(id).unwrap_or(0))) else {
            return AccessUsage::default();
        };
        let calendar = Calendar::now();
        let counters = &entry.counters;
        AccessUsage {
            requests_last_minute: counters.requests.used(),
            tokens_last_minute: counters.tokens.used(),
            tokens_today: counters.day.in_period(calendar.day),
            tokens_this_month: counters.month.in_period(calendar.month),
        }
    }
}

/// A `401` that tells the holder of a real key why it no longer works (they hold the key, so
/// this reveals nothing to them they could not see in the console).
fn unauthorized(message: &'static str) -> Error {
    Error::unauthorized_because(message)
}

impl fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKeys")
            .field("keys", &self.table.load().by_id.len())
            .finish_non_exhaustive()
    }
}

/// The proxy's key check: a legacy proxy key (global or the group's), else an access key.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProxyKeys {
    pub(crate) legacy: StaticProxyKeys,
    pub(crate) access: AccessKeys,
}

impl ProxyKeys {
    /// Whether `presented` may use `group`, as [`ValidateProxyKey::validate`] decides, but
    /// without counting a request against an access key's limits (for the integration info).
    pub(crate) fn permits(&self, group: &str, presented: &str) -> bool {
        self.legacy.validate(group, presented).is_ok()
            || self
                .access
                .permits(group, self.legacy.load().contains_group(group), presented)
    }
}

impl ValidateProxyKey for ProxyKeys {
    fn validate(&self, group: &str, presented: &str) -> Result<Principal, Error> {
        match self.legacy.validate(group, presented) {
            Err(err) if err.kind() == ErrorKind::Unauthorized && !self.access.is_empty() => {
                let table = self.legacy.load();
                self.access
                    .admit(group, table.lookup_group(group), presented)
                    .unwrap_or(Err(err))
            }
            verdict => verdict,
        }
    }
}

#[cfg(test)]
mod tests;
