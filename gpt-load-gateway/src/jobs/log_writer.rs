//! The request-log writer: the one task that moves [`RequestRecord`]s from the proxy's
//! [`ChannelSink`](gpt_load_tower::log::ChannelSink) into `request_logs` and
//! `group_hourly_stats` and `usage_hourly`, in batches, off the request path.
//!
//! # Batching
//!
//! A batch is written when [`WriterConfig::max_batch`] (500) records are waiting, or
//! [`WriterConfig::flush_interval`] (1 s) after the first of them arrived, whichever comes first.
//! The `request_log_write_interval_minutes` setting, followed live when the writer is given the
//! settings ([`LogWriter::write_interval_from`]), shortens that wait: `0` writes every record as
//! soon as it arrives (records that arrive during a write go together in the next one), and `N`
//! minutes is a longest wait, which the one-second interval already keeps (gpt-load holds logs
//! for those minutes; this writer never does).
//! Each write is one [`request_logs::insert_many`] transaction, one [`stats::add_hourly`]
//! transaction and one [`usage::add_hourly`] transaction. Writes run one at a time, and the channel is read while a write is in flight, so
//! a slow database never backs up into the proxy.
//!
//! # Priority
//!
//! On SQLite the rows, and the batch's hourly counts and usage after them, are written in this
//! process on one connection, and a batch takes milliseconds of CPU. While
//! the writer keeps up they are written at a low priority ([`AppendPriority::Low`]), so that
//! requests arriving meanwhile are not held up behind the batch. When a full batch is already
//! waiting behind the one being taken (the CPU is saturated and the low priority got too little
//! of it), or when stopping, the batch goes at the runtime's priority instead: the backlog, and
//! what a crash loses (below), stay as they were without the low priority.
//!
//! # Hourly stats
//!
//! As gpt-load does: only `final` records count (a request retried twice counts once), as a
//! success or a failure by `is_success`, in the UTC hour of the request's arrival, for the group
//! that served it **and again for its aggregate parent** when there is one (the dashboard leaves
//! aggregates out of its totals to avoid counting twice). Records whose group is unknown (id 0)
//! are not counted. Counts are tallied when a record arrives, so they stay
//! exact even when rows are shed under the memory bound below; each write carries every count
//! tallied since the previous write.
//!
//! # Hourly usage
//!
//! Every record whose group is known adds one request (and one failure when it failed) and its
//! tokens to `usage_hourly`, in the UTC hour of the request's arrival, for the group that served
//! it, its key (0 when none), the requested model and the access key (0 for proxy keys). Tallied
//! like the hourly stats, and written with a batch that is not full, so while the writer keeps up
//! they are as fresh as the rows. Under load (full batches, one after the other) they wait, and
//! merge in memory, for up to [`WriterConfig::usage_interval`] (10 s): one row per group, key
//! and model is written per interval, where every batch of 500 rows would otherwise write up to
//! one per key. The sums of a part that failed are written again, those of a committed part
//! never are.
//!
//! # When the database fails
//!
//! The batch is kept and written again after a capped exponential backoff
//! ([`WriterConfig::min_backoff`] 100 ms, doubling to [`WriterConfig::max_backoff`] 5 s); the
//! writer keeps reading the channel meanwhile, holding up to [`WriterConfig::max_pending`]
//! (50,000) records besides the batch being retried. Beyond that the oldest waiting records are
//! dropped, counted in `gpt_load_log_records_lost_total` and reported with a warning. No row is
//! written twice: row ids are fresh UUIDs, so a duplicate-key error when a batch is written again
//! means the earlier attempt committed and only its answer was lost. (Hourly counts whose commit
//! answer was lost are added again: they have no such id.)
//!
//! A batch the database keeps *refusing* (it answers with an error other than a lost connection,
//! [`WriterConfig::max_rejections`] (10) times in a row, some 20 seconds with the default
//! backoff) is dropped and counted as lost with an error log, so one bad row cannot stop
//! logging; its hourly counts go with the next batch. Text is clipped to its column's size and
//! NUL characters are removed beforehand, so this should not happen.
//!
//! # Shutdown, and what `kill -9` loses
//!
//! The writer stops when every sender is dropped, or when the signal given to
//! [`LogWriter::shutdown_on`] turns `true` (the channel is then closed: later records are
//! dropped by the sink). Either way it reads what is still queued, writes everything, and
//! returns a [`WriterSummary`]; it gives up after [`WriterConfig::drain_timeout`] (10 s) if the
//! database stays unavailable, counting the rest as lost.
//!
//! A process killed without that shutdown loses the records not yet written: those queued in
//! the channel and those pending in the writer, at most about one second's or 500 records'
//! worth while the database is healthy, plus whatever accumulated (up to the memory bound)
//! during a database outage; and the hourly counts tallied for them.
//!
//! # Metrics
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `gpt_load_log_records_written_total` | counter | – |
//! | `gpt_load_log_records_lost_total` | counter | – |
//! | `gpt_load_db_write_batch_seconds` | histogram | `table` (`request_logs`, `group_hourly_stats`, `usage_hourly`) |
//!
//! | `gpt_load_tokens_total` | counter | `group`, `model` (bounded, see [`token_metrics`]), `kind` (`prompt`, `completion`, `cached`, `reasoning`) |
//!
//! Records the sink drops because this writer fell behind are counted by the library as
//! `gpt_load_log_records_dropped_total`.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, NaiveDateTime, NaiveTime, SubsecRound, TimeDelta, Timelike, Utc};
use diesel::result::{DatabaseErrorKind, Error as QueryError};
use gpt_load_tower::{
    keys::KeyId,
    log::{RequestRecord, RequestType},
};
use metrics::{counter, histogram};
use tokio::{
    sync::{mpsc, watch},
    time::{Instant, sleep_until},
};

use self::{token_metrics::TokenMetrics, usage_tally::UsageTally};
use crate::models::{TEXT_LIMIT, clip_text as clip};
use crate::{
    db::{AppendPriority, Db, DbError},
    repo::{
        request_logs::{self, RequestLogRow},
        stats::{self, HourlyCount},
        usage::{self, UsageCounts, UsageSums},
    },
    settings::SystemSettings,
};

/// `gpt_load_log_records_written_total`
pub(crate) const RECORDS_WRITTEN: &str = "gpt_load_log_records_written_total";
/// `gpt_load_log_records_lost_total`
pub(crate) const RECORDS_LOST: &str = "gpt_load_log_records_lost_total";
/// `gpt_load_db_write_batch_seconds`
pub(crate) const WRITE_BATCH_SECONDS: &str = "gpt_load_db_write_batch_seconds";

/// Maps a group name to its id.
pub(crate) type GroupIds = Arc<dyn Fn(&str) -> Option<i64> + Send + Sync>;
/// Maps a key of a group to its stored `key_value` (encrypted when encryption is on) and
/// `key_hash`. The writer remembers the answers (see [`KEY_COLUMNS_CACHED`]).
pub(crate) type KeyColumns = Arc<dyn Fn(&str, KeyId) -> Option<(String, String)> + Send + Sync>;

/// Most keys whose log columns the writer remembers: a key's value and hash never change, and
/// computing them (a hash, and a seal when encryption is on) for every record cost more than
/// the rest of a record's conversion. Past this many the memory starts over.
const KEY_COLUMNS_CACHED: usize = 4_096;

/// Where the writer puts rows: the database, or a test double.
pub(crate) trait LogStore: Send + Sync + 'static {
    /// Inserts rows in one transaction, at `priority` where the store runs in this process.
    fn insert_logs(
        &self,
        rows: &Arc<[RequestLogRow]>,
        priority: AppendPriority,
    ) -> impl Future<Output = Result<usize, DbError>> + Send;
    /// Adds hourly counts in one transaction, at `priority` like the rows.
    fn add_hourly(
        &self,
        counts: &[HourlyCount],
        priority: AppendPriority,
    ) -> impl Future<Output = Result<(), DbError>> + Send;
    /// Adds hourly usage in one transaction, at `priority` like the rows.
    fn add_usage(
        &self,
        usage: &UsageCounts,
        priority: AppendPriority,
    ) -> impl Future<Output = Result<(), DbError>> + Send;
}

impl LogStore for Db {
    fn insert_logs(
        &self,
        rows: &Arc<[RequestLogRow]>,
        priority: AppendPriority,
    ) -> impl Future<Output = Result<usize, DbError>> + Send {
        request_logs::insert_many(self, Arc::clone(rows), priority)
    }

    fn add_hourly(
        &self,
        counts: &[HourlyCount],
        priority: AppendPriority,
    ) -> impl Future<Output = Result<(), DbError>> + Send {
        stats::add_hourly(self, counts, priority)
    }

    fn add_usage(
        &self,
        usage: &UsageCounts,
        priority: AppendPriority,
    ) -> impl Future<Output = Result<(), DbError>> + Send {
        usage::add_hourly(self, usage, priority)
    }
}

/// The writer's limits. See the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WriterConfig {
    /// Write as soon as this many records wait; also the most rows per write.
    pub(crate) max_batch: usize,
    /// Write this long after the first waiting record arrived (at most; see
    /// [`LogWriter::write_interval_from`]).
    pub(crate) flush_interval: Duration,
    /// Most records waiting besides the batch being written; the oldest go beyond it.
    pub(crate) max_pending: usize,
    /// First delay before writing a failed batch again.
    pub(crate) min_backoff: Duration,
    /// Longest delay between attempts.
    pub(crate) max_backoff: Duration,
    /// Drop a batch the database refused this many times in a row.
    pub(crate) max_rejections: u32,
    /// How long shutdown waits for an unavailable database.
    pub(crate) drain_timeout: Duration,
    /// Under load, the longest usage tallies wait for their write (see "Hourly usage").
    pub(crate) usage_interval: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_batch: 500,
            flush_interval: Duration::from_secs(1),
            max_pending: 50_000,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_rejections: 10,
            drain_timeout: Duration::from_secs(10),
            usage_interval: Duration::from_secs(10),
        }
    }
}

/// What the writer did, returned when it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct WriterSummary {
    /// Records written to `request_logs`.
    pub(crate) written: u64,
    /// Records dropped: shed beyond the memory bound, refused by the database, or still unwritten
    /// when shutdown gave up.
    pub(crate) lost: u64,
}

/// The batching writer. Build it, spawn [`run`](Self::run), and await the handle at shutdown.
pub(crate) struct LogWriter<S = Db> {
    store: Arc<S>,
    records: mpsc::Receiver<RequestRecord>,
    shutdown: Option<watch::Receiver<bool>>,
    settings: Option<watch::Receiver<Arc<SystemSettings>>>,
    group_ids: GroupIds,
    key_columns: KeyColumns,
    config: WriterConfig,
}

impl<S> fmt::Debug for LogWriter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogWriter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: LogStore> LogWriter<S> {
    /// A writer of the records from `records` into `store`, resolving group names and keys with
    /// `group_ids` and `key_columns`.
    pub(crate) fn new(
        store: S,
        records: mpsc::Receiver<RequestRecord>,
        group_ids: GroupIds,
        key_columns: KeyColumns,
    ) -> Self {
        Self {
            store: Arc::new(store),
            records,
            shutdown: None,
            settings: None,
            group_ids,
            key_columns,
            config: WriterConfig::default(),
        }
    }

    /// Replaces the default limits.
    #[must_use]
    #[cfg(test)]
    pub(crate) fn config(mut self, config: WriterConfig) -> Self {
        self.config = config;
        self
    }

    /// Stops (after writing everything queued) once `signal` is `true`, even while senders live.
    #[must_use]
    pub(crate) fn shutdown_on(mut self, signal: watch::Receiver<bool>) -> Self {
        self.shutdown = Some(signal);
        self
    }

    /// Follows `request_log_write_interval_minutes` in these settings and their changes: `0`
    /// writes every record as soon as it arrives, `N` minutes caps the wait for a write at `N`
    /// minutes (the configured [`WriterConfig::flush_interval`] applies when it is shorter).
    #[must_use]
    pub(crate) fn write_interval_from(mut self, settings: watch::Receiver<Arc<SystemSettings>>) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Writes records until the channel closes or shutdown is signalled, then drains and
    /// returns what was written and lost.
    pub(crate) async fn run(self) -> WriterSummary {
        let Self {
            store,
            mut records,
            mut shutdown,
            mut settings,
            group_ids,
            key_columns,
            config,
        } = self;
        let mut state = State::new(config, group_ids, key_columns);
        if let Some(settings) = &mut settings {
            state.config.flush_interval =
                flush_interval(config.flush_interval, &settings.borrow_and_update());
        }
        let mut in_flight: Option<(Write, usize)> = None;
        let mut received = Vec::with_capacity(config.max_batch.max(1));
        let mut receiving = true;
        // Set once stopping: the channel is drained, everything is written without waiting
        // for the interval, and this is when the writer gives up on the database.
        let mut give_up_at: Option<Instant> = None;

        loop {
            let now = Instant::now();
            if in_flight.is_none() {
                if let Some(batch) = state.next_batch(now, give_up_at.is_some()) {
                    let rows = batch.rows.len();
                    in_flight = Some((write(store.clone(), batch), rows));
                } else if !receiving && state.is_empty() {
                    break;
                }
            }
            if give_up_at.is_some_and(|at| now >= at) {
                state.give_up(in_flight.map_or(0, |(_, rows)| rows));
                break;
            }
            let wake = match in_flight {
                Some(_) => give_up_at,
                None => earliest(state.wake_at(), give_up_at),
            };

            tokio::select! {
                outcome = finished(&mut in_flight) => {
                    in_flight = None;
                    state.on_write(outcome);
                }
                count = records.recv_many(&mut received, config.max_batch.max(1)), if receiving => {
                    if count == 0 {
                        receiving = false;
                        give_up_at.get_or_insert(Instant::now() + config.drain_timeout);
                    }
                    for record in received.drain(..) {
                        state.accept(record);
                    }
                }
                () = signalled(&mut shutdown), if give_up_at.is_none() => {
                    // Later records are refused by the sink; the queued ones are still read.
                    records.close();
                    give_up_at = Some(Instant::now() + config.drain_timeout);
                }
                changed = settings_changed(&mut settings) => {
                    state.config.flush_interval = flush_interval(config.flush_interval, &changed);
                }
                () = sleep_until_some(wake) => {}
            }
        }
        tracing::debug!(
            written = state.written,
            lost = state.lost,
            "request log writer stopped"
        );
        WriterSummary {
            written: state.written,
            lost: state.lost,
        }
    }
}

/// A write in flight: its batch comes back with the number of rows it wrote and the outcome.
type Write = Pin<Box<dyn Future<Output = WriteOutcome> + Send>>;
type WriteOutcome = (Batch, usize, Result<(), DbError>);

/// Rows and counts taken together for one write, kept across failed attempts.
#[derive(Debug)]
struct Batch {
    /// Emptied once written. Shared with the store's write, never copied.
    rows: Arc<[RequestLogRow]>,
    /// Emptied once written.
    counts: Vec<HourlyCount>,
    /// Emptied once written.
    usage: UsageCounts,
    /// Failed attempts so far.
    failures: u32,
    /// Attempts in a row the database refused.
    rejections: u32,
    /// Low while the writer keeps up (see "Priority" in the module docs).
    priority: AppendPriority,
}

/// Writes what is left of `batch`: the rows, then the counts, then the usage. Each part is
/// emptied once committed, so a later part's failure never writes an earlier one twice.
fn write<S: LogStore>(store: Arc<S>, mut batch: Batch) -> Write {
    Box::pin(async move {
        let mut written = 0;
        if !batch.rows.is_empty() {
            let started = Instant::now();
            let result = store.insert_logs(&batch.rows, batch.priority).await;
            histogram!(WRITE_BATCH_SECONDS, "table" => "request_logs").record(started.elapsed());
            match result {
                Ok(_) => {}
                // Fresh UUIDs only collide with themselves: an earlier attempt committed.
                Err(err) if batch.failures > 0 && is_unique_violation(&err) => {}
                Err(err) => return (batch, 0, Err(err)),
            }
            written = batch.rows.len();
            batch.rows = Arc::new([]);
        }
        if !batch.counts.is_empty() {
            let started = Instant::now();
            let result = store.add_hourly(&batch.counts, batch.priority).await;
            histogram!(WRITE_BATCH_SECONDS, "table" => "group_hourly_stats").record(started.elapsed());
            if let Err(err) = result {
                return (batch, written, Err(err));
            }
            batch.counts = Vec::new();
        }
        if !batch.usage.is_empty() {
            let started = Instant::now();
            let result = store.add_usage(&batch.usage, batch.priority).await;
            histogram!(WRITE_BATCH_SECONDS, "table" => "usage_hourly").record(started.elapsed());
            if let Err(err) = result {
                return (batch, written, Err(err));
            }
            batch.usage = UsageCounts::new();
        }
        (batch, written, Ok(()))
    })
}

/// The writer's bookkeeping between writes.
struct State {
    config: WriterConfig,
    group_ids: GroupIds,
    key_columns: KeyColumns,
    /// The columns of the keys seen lately (see [`KEY_COLUMNS_CACHED`]).
    known_keys: HashMap<KeyId, (String, String)>,
    /// Converted records waiting for a write, oldest first.
    pending: VecDeque<RequestLogRow>,
    /// When the oldest record not yet taken into a batch arrived.
    pending_since: Option<Instant>,
    /// Hourly counts tallied since the last batch was taken: (hour, group) → (success, failure).
    counts: BTreeMap<(NaiveDateTime, i64), (i64, i64)>,
    /// Usage tallied since the last batch was taken.
    usage: UsageTally,
    /// When the oldest usage not yet taken into a batch was tallied.
    usage_since: Option<Instant>,
    tokens: TokenMetrics,
    /// A batch whose write failed, and when to try again.
    failed: Option<(Batch, Instant)>,
    written: u64,
    lost: u64,
    /// Records shed since the last warning about it was cleared by a successful write.
    shed_unreported: u64,
}

impl State {
    fn new(config: WriterConfig, group_ids: GroupIds, key_columns: KeyColumns) -> Self {
        Self {
            config,
            group_ids,
            key_columns,
            known_keys: HashMap::new(),
            pending: VecDeque::new(),
            pending_since: None,
            counts: BTreeMap::new(),
            usage: UsageTally::default(),
            usage_since: None,
            tokens: TokenMetrics::default(),
            failed: None,
            written: 0,
            lost: 0,
            shed_unreported: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.counts.is_empty() && self.usage.is_empty() && self.failed.is_none()
    }

    /// `key_value` and `key_hash` of a key, remembered.
    fn key_columns_of(&mut self, group: &str, id: KeyId) -> Option<(String, String)> {
        if let Some(known) = self.known_keys.get(&id) {
            return Some(known.clone());
        }
        let columns = (self.key_columns)(group, id)?;
        if self.known_keys.len() >= KEY_COLUMNS_CACHED {
            self.known_keys.clear();
        }
        self.known_keys.insert(id, columns.clone());
        Some(columns)
    }

    fn accept(&mut self, record: RequestRecord) {
        let is_final = record.request_type == RequestType::Final;
        let key = record
            .key_id
            .and_then(|id| self.key_columns_of(record.group.as_ref(), id))
            .unwrap_or_default();
        let row = to_row(record, &*self.group_ids, key);
        if row.group_id != 0 {
            self.usage.add(usage_row(&row), &row.model, &usage_of(&row));
            self.usage_since.get_or_insert_with(Instant::now);
        }
        self.tokens.count(&row);
        if is_final {
            let hour = hour_of(row.timestamp);
            for group_id in [row.group_id, row.parent_group_id] {
                if group_id != 0 {
                    let (success, failure) = self.counts.entry((hour, group_id)).or_default();
                    if row.is_success {
                        *success += 1;
                    } else {
                        *failure += 1;
                    }
                }
            }
        }
        self.pending_since.get_or_insert_with(Instant::now);
        self.pending.push_back(row);
        if self.pending.len() > self.config.max_pending {
            self.pending.pop_front();
            self.count_lost(1);
            if self.shed_unreported == 0 {
                tracing::warn!(
                    max_pending = self.config.max_pending,
                    "request logs are waiting for the database and the backlog is full: dropping the oldest"
                );
            }
            self.shed_unreported += 1;
        }
    }

    /// The next batch to write, if one is due.
    fn next_batch(&mut self, now: Instant, stopping: bool) -> Option<Batch> {
        if let Some(retry_at) = self.failed.as_ref().map(|&(_, at)| at) {
            return if now >= retry_at {
                self.failed.take().map(|(batch, _)| batch)
            } else {
                None
            };
        }
        let usage_overdue = !self.usage.is_empty()
            && self
                .usage_since
                .is_some_and(|since| now >= since + self.config.usage_interval);
        let rows_due = stopping
            || self.pending.len() >= self.config.max_batch
            || self
                .pending_since
                .is_some_and(|since| now >= since + self.config.flush_interval);
        if self.pending.is_empty() && self.counts.is_empty() && self.usage.is_empty() {
            self.pending_since = None;
            return None;
        }
        if !rows_due && !usage_overdue {
            return None;
        }
        let (rows, counts) = if rows_due {
            let take = self.pending.len().min(self.config.max_batch.max(1));
            let rows: Arc<[RequestLogRow]> = self.pending.drain(..take).collect();
            self.pending_since = (!self.pending.is_empty()).then_some(now);
            let counts = std::mem::take(&mut self.counts)
                .into_iter()
                .map(|((hour, group_id), (success, failure))| (hour, group_id, success, failure))
                .collect();
            (rows, counts)
        } else {
            // Only the usage is due: the rows keep their own schedule.
            (Arc::new([]) as Arc<[RequestLogRow]>, Vec::new())
        };
        // A full batch means the writer is behind: the usage waits and merges (module docs).
        let usage = if stopping || usage_overdue || rows.len() < self.config.max_batch {
            self.usage_since = None;
            self.usage.take()
        } else {
            UsageCounts::new()
        };
        // Behind by a full batch more: append at the runtime's priority until caught up.
        let priority = if stopping || self.pending.len() >= self.config.max_batch {
            AppendPriority::Normal
        } else {
            AppendPriority::Low
        };
        Some(Batch {
            rows,
            counts,
            usage,
            failures: 0,
            rejections: 0,
            priority,
        })
    }

    /// When the loop must wake up on its own (no write in flight).
    fn wake_at(&self) -> Option<Instant> {
        match &self.failed {
            Some((_, retry_at)) => Some(*retry_at),
            None => earliest(
                self.pending_since.map(|since| since + self.config.flush_interval),
                self.usage_since.map(|since| since + self.config.usage_interval),
            ),
        }
    }

    fn on_write(&mut self, (mut batch, written, result): WriteOutcome) {
        if written > 0 {
            self.written += written as u64;
            counter!(RECORDS_WRITTEN).increment(written as u64);
        }
        let err = match result {
            Ok(()) => {
                if batch.failures > 0 {
                    tracing::info!(
                        failed_attempts = batch.failures,
                        "request logs are being written again"
                    );
                }
                if self.shed_unreported > 0 {
                    tracing::warn!(
                        dropped = self.shed_unreported,
                        "request logs dropped while the database was unavailable"
                    );
                    self.shed_unreported = 0;
                }
                return;
            }
            Err(err) => err,
        };
        batch.failures += 1;
        batch.rejections = if is_rejection(&err) {
            batch.rejections + 1
        } else {
            0
        };
        if batch.rejections >= self.config.max_rejections {
            tracing::error!(
                error = %err,
                records = batch.rows.len(),
                attempts = batch.failures,
                "the database keeps refusing a batch of request logs: dropping it"
            );
            self.count_lost(batch.rows.len());
            if !batch.rows.is_empty() {
                // The rows were refused, not their counts: those go with the next batch.
                for (hour, group_id, success, failure) in batch.counts {
                    let (s, f) = self.counts.entry((hour, group_id)).or_default();
                    *s += success;
                    *f += failure;
                }
                if !batch.usage.is_empty() {
                    self.usage.give_back(batch.usage);
                    self.usage_since.get_or_insert_with(Instant::now);
                }
                self.pending_since.get_or_insert_with(Instant::now);
            }
            return;
        }
        let delay = backoff(&self.config, batch.failures);
        tracing::warn!(
            error = %err,
            records = batch.rows.len(),
            attempt = batch.failures,
            retry_in_ms = delay.as_millis(),
            waiting = self.pending.len(),
            "writing request logs failed; keeping the batch"
        );
        self.failed = Some((batch, Instant::now() + delay));
    }

    /// Shutdown ran out of time: everything unwritten is lost, including `in_flight` rows.
    fn give_up(&mut self, in_flight: usize) {
        let failed = self.failed.take().map_or(0, |(batch, _)| batch.rows.len());
        let unwritten = self.pending.len() + failed + in_flight;
        self.pending.clear();
        self.counts.clear();
        self.usage.clear();
        self.usage_since = None;
        tracing::error!(
            records = unwritten,
            "the database stayed unavailable during shutdown: request logs not written"
        );
        self.count_lost(unwritten);
    }

    fn count_lost(&mut self, records: usize) {
        if records > 0 {
            self.lost += records as u64;
            counter!(RECORDS_LOST).increment(records as u64);
        }
    }
}

/// The delay before attempt `failures + 1`: `min_backoff` doubled per failure, capped.
fn backoff(config: &WriterConfig, failures: u32) -> Duration {
    let factor = 1_u32 << failures.saturating_sub(1).min(16);
    config.min_backoff.saturating_mul(factor).min(config.max_backoff)
}

/// Whether the database answered and refused the statement, as opposed to being unreachable.
fn is_rejection(err: &DbError) -> bool {
    match err {
        DbError::Query(QueryError::DatabaseError(kind, _)) => !matches!(
            kind,
            DatabaseErrorKind::ClosedConnection
                | DatabaseErrorKind::UnableToSendCommand
                | DatabaseErrorKind::SerializationFailure
                | DatabaseErrorKind::ReadOnlyTransaction
        ),
        DbError::Query(QueryError::SerializationError(_) | QueryError::QueryBuilderError(_)) => true,
        _ => false,
    }
}

fn is_unique_violation(err: &DbError) -> bool {
    matches!(
        err,
        DbError::Query(QueryError::DatabaseError(DatabaseErrorKind::UniqueViolation, _))
    )
}

async fn finished(in_flight: &mut Option<(Write, usize)>) -> WriteOutcome {
    match in_flight {
        Some((write, _)) => write.await,
        None => std::future::pending().await,
    }
}

async fn signalled(shutdown: &mut Option<watch::Receiver<bool>>) {
    let stop = match shutdown {
        Some(shutdown) => shutdown.wait_for(|&stop| stop).await.is_ok(),
        None => false,
    };
    if !stop {
        // No signal, or its sender is gone without asking: only the channel's end stops us.
        std::future::pending::<()>().await;
    }
}

/// The settings after their next change; never, once their sender is gone.
async fn settings_changed(
    settings: &mut Option<watch::Receiver<Arc<SystemSettings>>>,
) -> Arc<SystemSettings> {
    if let Some(receiver) = settings {
        if receiver.changed().await.is_ok() {
            return Arc::clone(&receiver.borrow_and_update());
        }
        *settings = None;
    }
    std::future::pending().await
}

/// How long a record may wait for its write under `request_log_write_interval_minutes`, given
/// the writer's own `batching` interval: `0` minutes is no wait, `N` minutes is at most `N`
/// minutes.
fn flush_interval(batching: Duration, settings: &SystemSettings) -> Duration {
    settings
        .request_log_write_interval()
        .map_or(Duration::ZERO, |interval| interval.min(batching))
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

// ===== records to rows =====

/// The row for one record, with its key's stored value and hash (empty without a key). Text is
/// clipped to its column (in bytes, on a character boundary, which also keeps it within
/// `VARCHAR(n)` characters) and stripped of NUL characters, which PostgreSQL refuses.
fn to_row(
    record: RequestRecord,
    group_ids: &(dyn Fn(&str) -> Option<i64> + Send + Sync),
    (key_value, key_hash): (String, String),
) -> RequestLogRow {
    let text = |value: Option<String>, limit: usize| value.map_or_else(String::new, |v| clip(v, limit));
    let group: &str = record.group.as_ref();
    let parent = record.parent_group.as_ref().map(AsRef::<str>::as_ref);
    let usage = record.usage;
    RequestLogRow {
        // Time-ordered (v7): new rows append to the primary-key index instead of landing on a
        // random page of it, which is most of an insert's cost once the table is large.
        id: uuid::Uuid::now_v7().to_string(),
        timestamp: DateTime::<Utc>::from(record.timestamp)
            .naive_utc()
            .trunc_subsecs(6),
        group_id: group_ids(group).unwrap_or(0),
        group_name: clip(group, 255),
        parent_group_id: parent.and_then(group_ids).unwrap_or(0),
        parent_group_name: parent.map_or_else(String::new, |p| clip(p, 255)),
        key_value: clip(key_value, TEXT_LIMIT),
        key_hash: clip(key_hash, 128),
        model: text(record.model, 255),
        is_success: record.success,
        source_ip: record.client_ip.map(ip_text).unwrap_or_default(),
        status_code: i32::from(record.status),
        request_path: clip(record.path, 500),
        duration: millis(record.duration),
        error_message: text(record.error, TEXT_LIMIT),
        user_agent: text(record.user_agent, 512),
        request_type: record.request_type.as_str().into(),
        upstream_addr: record.upstream.map_or_else(String::new, |u| clip(&*u, 500)),
        is_stream: record.stream,
        request_body: text(record.request_body, TEXT_LIMIT),
        key_id: record.key_id.and_then(|id| i64::try_from(id.0).ok()),
        attempt: i32::try_from(record.attempt).unwrap_or(i32::MAX),
        ttfb_ms: record.time_to_first_byte.map(millis),
        request_id: text(record.request_id, 64),
        prompt_tokens: usage.map(|u| tokens(u.prompt)),
        completion_tokens: usage.map(|u| tokens(u.completion)),
        cached_tokens: usage.map(|u| tokens(u.cached)),
        reasoning_tokens: usage.map(|u| tokens(u.reasoning)),
        total_tokens: usage.map(|u| tokens(u.total)),
        access_key_id: record.access_key.and_then(|id| i64::try_from(id.0).ok()),
    }
}

fn tokens(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// The `usage_hourly` row a log row adds to, but for its model: hour, group, key (0 when
/// none), access key (0 for proxy keys).
fn usage_row(row: &RequestLogRow) -> usage_tally::RowIds {
    (
        hour_of(row.timestamp),
        row.group_id,
        row.key_id.unwrap_or(0),
        row.access_key_id.unwrap_or(0),
    )
}

/// What a log row adds to its `usage_hourly` row: one attempt, and its tokens.
fn usage_of(row: &RequestLogRow) -> UsageSums {
    UsageSums {
        requests: 1,
        failures: i64::from(!row.is_success),
        prompt_tokens: row.prompt_tokens.unwrap_or(0),
        completion_tokens: row.completion_tokens.unwrap_or(0),
        cached_tokens: row.cached_tokens.unwrap_or(0),
        reasoning_tokens: row.reasoning_tokens.unwrap_or(0),
        total_tokens: row.total_tokens.unwrap_or(0),
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The start of the hour `at` falls in.
fn hour_of(at: NaiveDateTime) -> NaiveDateTime {
    at.date().and_time(NaiveTime::MIN) + TimeDelta::hours(i64::from(at.hour()))
}

/// `ip` as text. IPv4 is written by hand: std's `Display` goes through the formatter and its
/// padding support, which cost as much as the rest of the row's conversion.
fn ip_text(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

mod token_metrics;
mod usage_tally;

#[cfg(test)]
mod tests;
