//! The writer against every reachable backend, and against a store that fails on purpose.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use chrono::NaiveDate;
use gpt_load_tower::{
    body::ReplayBody,
    channel::ChannelKind,
    context::{GroupName, Principal},
    error::Error,
    log::{ChannelSink, LogSink, RequestLogLayer},
    usage::TokenUsage,
};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::task::JoinHandle;
use tower::{Layer, ServiceExt, service_fn};

use super::*;
use crate::db::test_support::TestDb;

/// A `final` record as the library emits it: the gateway cannot build one field by field, so
/// one request goes through the real layer and tests adjust copies of its record.
async fn sample() -> RequestRecord {
    let captured = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let captured = captured.clone();
        move |record: RequestRecord| captured.lock().unwrap().push(record)
    };
    let svc = RequestLogLayer::new(sink).layer(service_fn(|_req: Request<ReplayBody>| async {
        Ok::<_, Error>(Response::new(Full::<Bytes>::from("ok")))
    }));
    let req = Request::post("/proxy/sub/v1/chat/completions")
        .extension(Principal::new("sub".into(), ChannelKind::OpenAi))
        .body(ReplayBody::new(r#"{"model":"gpt-4o-mini"}"#))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    res.into_body().collect().await.unwrap();
    let record = captured.lock().unwrap().pop().expect("one record");
    assert_eq!(record.request_type, RequestType::Final);
    record
}

/// `n` copies of `base` told apart by their request id `r{i}`.
fn numbered(base: &RequestRecord, n: usize) -> Vec<RequestRecord> {
    (0..n)
        .map(|i| {
            let mut record = base.clone();
            record.request_id = Some(format!("r{i}"));
            record
        })
        .collect()
}

fn group_ids() -> GroupIds {
    Arc::new(|name: &str| match name {
        "sub" => Some(7),
        "agg" => Some(3),
        _ => None,
    })
}

fn key_columns() -> KeyColumns {
    Arc::new(|group: &str, id: KeyId| {
        (group == "sub" && id == KeyId(11)).then(|| ("v1:stored-key".to_owned(), "hash-11".to_owned()))
    })
}

/// Limits for tests: no flush by time unless a test asks, and quick retries.
fn config() -> WriterConfig {
    WriterConfig {
        flush_interval: Duration::from_secs(3_600),
        min_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
        ..WriterConfig::default()
    }
}

fn spawn<S: LogStore>(writer: LogWriter<S>) -> JoinHandle<WriterSummary> {
    tokio::spawn(writer.run())
}

async fn stopped(handle: JoinHandle<WriterSummary>) -> WriterSummary {
    tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("the writer stops")
        .expect("the writer does not panic")
}

/// Polls until `db` holds `n` log rows (failing after a generous timeout).
async fn rows_eventually(db: &Db, n: usize) -> Vec<RequestLogRow> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = request_logs::list_recent(db, 10_000).await.unwrap();
        if rows.len() >= n {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {} rows of {n} after 30 s",
            db.backend(),
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn request_ids(rows: &[RequestLogRow]) -> HashSet<String> {
    rows.iter().map(|r| r.request_id.clone()).collect()
}

fn expected_ids(range: impl IntoIterator<Item = usize>) -> HashSet<String> {
    range.into_iter().map(|i| format!("r{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_a_full_batch_without_waiting_for_the_interval() {
    let base = sample().await;
    for t in TestDb::all("writes_a_full_batch_without_waiting_for_the_interval").await {
        let (sink, rx) = ChannelSink::new(1_000);
        // The interval is an hour: only the batch size can trigger this write.
        let writer = spawn(LogWriter::new(t.db.clone(), rx, group_ids(), key_columns()).config(config()));
        for record in numbered(&base, 500) {
            sink.send(record);
        }
        let rows = rows_eventually(&t.db, 500).await;
        assert_eq!(request_ids(&rows), expected_ids(0..500), "{}", t.db.backend());

        drop(sink);
        assert_eq!(
            stopped(writer).await,
            WriterSummary {
                written: 500,
                lost: 0
            }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_a_small_batch_after_the_interval() {
    let base = sample().await;
    for t in TestDb::all("writes_a_small_batch_after_the_interval").await {
        let (sink, rx) = ChannelSink::new(100);
        let config = WriterConfig {
            flush_interval: Duration::from_millis(200),
            ..config()
        };
        let writer = spawn(LogWriter::new(t.db.clone(), rx, group_ids(), key_columns()).config(config));
        for record in numbered(&base, 3) {
            sink.send(record);
        }
        let rows = rows_eventually(&t.db, 3).await;
        assert_eq!(request_ids(&rows), expected_ids(0..3), "{}", t.db.backend());

        drop(sink);
        assert_eq!(stopped(writer).await.written, 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_everything_on_shutdown() {
    let base = sample().await;
    for t in TestDb::all("drains_everything_on_shutdown").await {
        let backend = t.db.backend();

        // Signalled while the proxy still holds the sink.
        let (sink, rx) = ChannelSink::new(100);
        let (stop, stop_rx) = watch::channel(false);
        let writer = LogWriter::new(t.db.clone(), rx, group_ids(), key_columns())
            .config(config())
            .shutdown_on(stop_rx);
        let writer = spawn(writer);
        for record in numbered(&base, 7) {
            sink.send(record);
        }
        stop.send(true).unwrap();
        assert_eq!(
            stopped(writer).await,
            WriterSummary { written: 7, lost: 0 },
            "{backend}"
        );
        sink.send(base.clone()); // refused by the closed channel
        let rows = request_logs::list_recent(&t.db, 100).await.unwrap();
        assert_eq!(request_ids(&rows), expected_ids(0..7), "{backend}");

        // Every sender dropped right after sending.
        let (sink, rx) = ChannelSink::new(100);
        let writer = spawn(LogWriter::new(t.db.clone(), rx, group_ids(), key_columns()).config(config()));
        for record in numbered(&base, 12).into_iter().skip(7) {
            sink.send(record);
        }
        drop(sink);
        assert_eq!(stopped(writer).await.written, 5, "{backend}");
        let rows = request_logs::list_recent(&t.db, 100).await.unwrap();
        assert_eq!(request_ids(&rows), expected_ids(0..12), "{backend}");

        // Both writers counted their final records in group 7's hour.
        let hours = stats::hourly(&t.db, Some(7), hour_of(rows[0].timestamp))
            .await
            .unwrap();
        assert_eq!(
            hours.iter().map(|h| h.success_count).sum::<i64>(),
            12,
            "{backend}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resolved_groups_stored_keys_and_every_column() {
    let base = sample().await;
    for t in TestDb::all("writes_resolved_groups_stored_keys_and_every_column").await {
        let backend = t.db.backend();
        let (sink, rx) = ChannelSink::new(100);
        let writer = spawn(LogWriter::new(t.db.clone(), rx, group_ids(), key_columns()).config(config()));

        // A retried request through the aggregate "agg": key 11 fails, key 12 (unknown to the
        // store) answers.
        let timestamp = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_795_000_000_123_456_789);
        let mut retry = base.clone();
        retry.timestamp = timestamp;
        retry.request_type = RequestType::Retry;
        retry.attempt = 1;
        retry.parent_group = Some(GroupName::new("agg"));
        retry.key_id = Some(KeyId(11));
        retry.upstream = Some("https://api.openai.example".into());
        retry.status = 429;
        retry.success = false;
        retry.duration = Duration::from_millis(1_250);
        retry.time_to_first_byte = Some(Duration::from_millis(80));
        retry.stream = true;
        retry.client_ip = Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)));
        retry.error = Some("quota\0exceeded".to_owned());
        retry.request_body = Some(r#"{"model":"gpt-4o-mini","stream":true}"#.to_owned());
        retry.user_agent = Some("openai-python/1.0".to_owned());
        retry.request_id = Some("req-1".to_owned());
        retry.path = format!("/proxy/agg/v1/chat/completions?q={}", "é".repeat(300));
        let mut last = retry.clone();
        last.request_type = RequestType::Final;
        last.attempt = 2;
        last.key_id = Some(KeyId(12));
        last.status = 200;
        last.success = true;
        last.error = None;
        last.usage = Some(TokenUsage::new(100, 20).cached(60).reasoning(5));
        // The gateway's own failure in a group the resolver does not know.
        let mut unknown = base.clone();
        unknown.timestamp = timestamp;
        unknown.group = GroupName::new("gone");
        unknown.status = 503;
        unknown.success = false;
        unknown.request_id = Some("req-2".to_owned());
        for record in [retry, last, unknown] {
            sink.send(record);
        }
        drop(sink);
        assert_eq!(stopped(writer).await.written, 3, "{backend}");

        let mut rows = request_logs::list_recent(&t.db, 10).await.unwrap();
        rows.sort_by_key(|r| (r.request_id.clone(), r.attempt));
        let [retry, last, unknown] = &rows[..] else {
            panic!("{backend}: three rows, got {rows:?}");
        };
        let at = NaiveDate::from_ymd_opt(2026, 11, 18)
            .and_then(|d| d.and_hms_micro_opt(11, 6, 40, 123_456))
            .unwrap();
        let path = retry.request_path.clone();
        assert!(path.len() <= 500 && path.len() >= 498 && path.starts_with("/proxy/agg/"));
        assert_eq!(
            *retry,
            RequestLogRow {
                id: retry.id.clone(),
                timestamp: at,
                group_id: 7,
                group_name: "sub".to_owned(),
                parent_group_id: 3,
                parent_group_name: "agg".to_owned(),
                key_value: "v1:stored-key".to_owned(),
                key_hash: "hash-11".to_owned(),
                model: "gpt-4o-mini".to_owned(),
                is_success: false,
                source_ip: "203.0.113.9".to_owned(),
                status_code: 429,
                request_path: path,
                duration: 1_250,
                error_message: "quotaexceeded".to_owned(),
                user_agent: "openai-python/1.0".to_owned(),
                request_type: "retry".into(),
                upstream_addr: "https://api.openai.example".to_owned(),
                is_stream: true,
                request_body: r#"{"model":"gpt-4o-mini","stream":true}"#.to_owned(),
                key_id: Some(11),
                attempt: 1,
                ttfb_ms: Some(80),
                request_id: "req-1".to_owned(),
                prompt_tokens: None,
                completion_tokens: None,
                cached_tokens: None,
                reasoning_tokens: None,
                total_tokens: None,
                access_key_id: None,
            },
            "{backend}"
        );
        assert_eq!(
            uuid::Uuid::parse_str(&retry.id).unwrap().get_version_num(),
            7,
            "time-ordered ids"
        );
        assert_eq!(
            (
                last.request_type.as_ref(),
                last.key_id,
                last.is_success,
                last.status_code
            ),
            ("final", Some(12), true, 200),
            "{backend}"
        );
        assert_eq!(
            (
                last.key_value.as_str(),
                last.key_hash.as_str(),
                last.error_message.as_str()
            ),
            ("", "", ""),
            "{backend}: an unknown key leaves its columns empty"
        );
        assert_ne!(retry.id, last.id);
        assert_eq!(
            (
                unknown.group_id,
                unknown.group_name.as_str(),
                unknown.parent_group_id
            ),
            (0, "gone", 0),
            "{backend}"
        );
        assert_eq!(
            (unknown.key_id, unknown.ttfb_ms, unknown.upstream_addr.as_str()),
            (None, None, ""),
            "{backend}"
        );

        // Only the final record counts, for the group and again for its aggregate; the
        // unknown group is not counted.
        let hours = stats::hourly(&t.db, None, hour_of(at)).await.unwrap();
        let counts: Vec<_> = hours
            .iter()
            .map(|h| (h.time, h.group_id, h.success_count, h.failure_count))
            .collect();
        let hour = at.date().and_hms_opt(11, 0, 0).unwrap();
        assert_eq!(counts, [(hour, 3, 1, 0), (hour, 7, 1, 0)], "{backend}");

        // The final attempt's tokens, in its row and in the usage of the group that served it,
        // per key; both attempts count as requests; the unknown group is not counted.
        assert_eq!(
            (
                last.prompt_tokens,
                last.completion_tokens,
                last.cached_tokens,
                last.reasoning_tokens,
                last.total_tokens
            ),
            (Some(100), Some(20), Some(60), Some(5), Some(120)),
            "{backend}"
        );
        let usage: Vec<_> = usage::rows_since(&t.db, hour)
            .await
            .unwrap()
            .into_iter()
            .map(|u| {
                (
                    (u.time, u.group_id, u.key_id, u.model, u.access_key_id),
                    (u.requests, u.failures),
                    (
                        u.prompt_tokens,
                        u.completion_tokens,
                        u.cached_tokens,
                        u.reasoning_tokens,
                        u.total_tokens,
                    ),
                )
            })
            .collect();
        let row = |key_id| (hour, 7, key_id, "gpt-4o-mini".to_owned(), 0);
        assert_eq!(
            usage,
            [
                (row(11), (1, 1), (0, 0, 0, 0, 0)),
                (row(12), (1, 0), (100, 20, 60, 5, 120)),
            ],
            "{backend}"
        );
    }
}

// ===== a store that fails on purpose =====

/// Fails the next `failures` calls (as an unreachable database would), or refuses any insert
/// containing a row whose request id is `poison`, or commits an insert but reports a failure.
#[derive(Default)]
struct FlakyStore {
    state: Mutex<Flaky>,
    down: AtomicBool,
}

#[derive(Default)]
struct Flaky {
    failures: u32,
    lose_next_reply: bool,
    rows: Vec<RequestLogRow>,
    counts: Vec<HourlyCount>,
    insert_calls: u32,
    hourly_calls: u32,
    usage: UsageCounts,
    /// Each insert that reached the store: its rows and its priority.
    priorities: Vec<(usize, AppendPriority)>,
}

fn unreachable() -> DbError {
    DbError::Pool("timed out waiting for a connection".to_owned())
}

fn refused(kind: DatabaseErrorKind, message: &str) -> DbError {
    DbError::Query(QueryError::DatabaseError(kind, Box::new(message.to_owned())))
}

impl FlakyStore {
    fn failing(failures: u32) -> Self {
        let store = Self::default();
        store.state.lock().unwrap().failures = failures;
        store
    }

    fn fail_now(&self) -> bool {
        let mut state = self.state.lock().unwrap();
        if self.down.load(Ordering::SeqCst) {
            return true;
        }
        let fail = state.failures > 0;
        state.failures = state.failures.saturating_sub(1);
        fail
    }

    fn request_ids(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .rows
            .iter()
            .map(|r| r.request_id.clone())
            .collect()
    }
}

impl LogStore for Arc<FlakyStore> {
    fn insert_logs(
        &self,
        rows: &Arc<[RequestLogRow]>,
        priority: AppendPriority,
    ) -> impl Future<Output = Result<usize, DbError>> + Send {
        let result = if self.fail_now() {
            Err(unreachable())
        } else {
            let mut state = self.state.lock().unwrap();
            state.insert_calls += 1;
            state.priorities.push((rows.len(), priority));
            if rows.iter().any(|r| r.request_id == "poison") {
                Err(refused(DatabaseErrorKind::Unknown, "value too long"))
            } else if rows.iter().any(|r| state.rows.iter().any(|s| s.id == r.id)) {
                Err(refused(DatabaseErrorKind::UniqueViolation, "duplicate key"))
            } else {
                state.rows.extend_from_slice(rows);
                if std::mem::take(&mut state.lose_next_reply) {
                    Err(refused(DatabaseErrorKind::ClosedConnection, "connection reset"))
                } else {
                    Ok(rows.len())
                }
            }
        };
        std::future::ready(result)
    }

    fn add_hourly(
        &self,
        counts: &[HourlyCount],
        _priority: AppendPriority,
    ) -> impl Future<Output = Result<(), DbError>> + Send {
        let result = if self.fail_now() {
            Err(unreachable())
        } else {
            let mut state = self.state.lock().unwrap();
            state.hourly_calls += 1;
            state.counts.extend_from_slice(counts);
            Ok(())
        };
        std::future::ready(result)
    }

    /// Fails only while the store is down, so the counts of failures above stay as they were.
    fn add_usage(
        &self,
        usage: &UsageCounts,
        _priority: AppendPriority,
    ) -> impl Future<Output = Result<(), DbError>> + Send {
        let result = if self.down.load(Ordering::SeqCst) {
            Err(unreachable())
        } else {
            let mut state = self.state.lock().unwrap();
            for (key, sums) in usage {
                state.usage.entry(key.clone()).or_default().add(sums);
            }
            Ok(())
        };
        std::future::ready(result)
    }
}

fn writer_for(store: &Arc<FlakyStore>, rx: mpsc::Receiver<RequestRecord>) -> LogWriter<Arc<FlakyStore>> {
    LogWriter::new(store.clone(), rx, group_ids(), key_columns()).config(config())
}

#[tokio::test]
async fn keeps_the_batch_across_database_failures() {
    let base = sample().await;
    let store = Arc::new(FlakyStore::failing(3));
    let (sink, rx) = ChannelSink::new(100);
    let writer = spawn(writer_for(&store, rx));
    for record in numbered(&base, 5) {
        sink.send(record);
    }
    drop(sink);
    assert_eq!(stopped(writer).await, WriterSummary { written: 5, lost: 0 });

    let state = store.state.lock().unwrap();
    let ids: Vec<_> = state.rows.iter().map(|r| r.request_id.clone()).collect();
    assert_eq!(ids, ["r0", "r1", "r2", "r3", "r4"], "each row once, in order");
    assert_eq!(
        state.insert_calls, 1,
        "three attempts failed before reaching the store"
    );
    assert_eq!(state.hourly_calls, 1);
    let successes: i64 = state.counts.iter().map(|&(.., success, _)| success).sum();
    assert_eq!(successes, 5, "five final records, for group 7 only (no parent)");
    let requests: i64 = state.usage.values().map(|sums| sums.requests).sum();
    assert_eq!(requests, 5, "usage counted once per record");
}

/// The usage requests `store` holds so far.
fn usage_requests(store: &FlakyStore) -> i64 {
    store
        .state
        .lock()
        .unwrap()
        .usage
        .values()
        .map(|sums| sums.requests)
        .sum()
}

#[tokio::test]
async fn under_load_usage_waits_and_merges_until_its_interval() {
    let base = sample().await;
    let store = Arc::new(FlakyStore::default());
    let (sink, rx) = ChannelSink::new(100);
    let config = WriterConfig {
        max_batch: 2,
        usage_interval: Duration::from_millis(300),
        ..config()
    };
    let writer = spawn(LogWriter::new(store.clone(), rx, group_ids(), key_columns()).config(config));
    // Full batches only: the writer is behind, so the rows go and the usage waits.
    for record in numbered(&base, 4) {
        sink.send(record);
    }
    until("the full batches are written", || store.request_ids().len() >= 4).await;
    assert_eq!(usage_requests(&store), 0, "usage waits while batches are full");
    // Its interval over, the merged usage is written on its own.
    until("the usage is written after its interval", || {
        usage_requests(&store) >= 4
    })
    .await;
    // At shutdown whatever is left is written.
    sink.send(numbered(&base, 5).pop().unwrap());
    drop(sink);
    assert_eq!(stopped(writer).await, WriterSummary { written: 5, lost: 0 });
    assert_eq!(usage_requests(&store), 5);
}

#[tokio::test]
async fn a_duplicate_after_a_lost_reply_counts_as_written() {
    let base = sample().await;
    let store = Arc::new(FlakyStore::default());
    store.state.lock().unwrap().lose_next_reply = true;
    let (sink, rx) = ChannelSink::new(100);
    let writer = spawn(writer_for(&store, rx));
    for record in numbered(&base, 4) {
        sink.send(record);
    }
    drop(sink);
    assert_eq!(stopped(writer).await, WriterSummary { written: 4, lost: 0 });
    assert_eq!(store.request_ids(), ["r0", "r1", "r2", "r3"]);
    assert_eq!(store.state.lock().unwrap().insert_calls, 2);
}

/// `n` numbered records queued for a writer, with `store` down.
async fn queued_while_down(
    store: &FlakyStore,
    n: usize,
) -> (mpsc::Sender<RequestRecord>, mpsc::Receiver<RequestRecord>) {
    store.down.store(true, Ordering::SeqCst);
    let (tx, rx) = mpsc::channel(100);
    for record in numbered(&sample().await, n) {
        tx.try_send(record).unwrap();
    }
    (tx, rx)
}

/// Waits until the writer has read every record queued on `tx` while `store` is down, then
/// brings the store back.
async fn read_while_down(store: &FlakyStore, tx: &mpsc::Sender<RequestRecord>) {
    until("the writer reads while the database is down", || {
        tx.capacity() == tx.max_capacity()
    })
    .await;
    store.down.store(false, Ordering::SeqCst);
}

/// Polls `done` every 5 ms until it holds (failing after a generous timeout).
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn appends_at_low_priority_while_keeping_up_and_at_normal_priority_when_behind() {
    use AppendPriority::{Low, Normal};

    let store = Arc::new(FlakyStore::default());
    let (tx, rx) = queued_while_down(&store, 7).await;
    let config = WriterConfig {
        max_batch: 2,
        ..config()
    };
    let writer = spawn(writer_for(&store, rx).config(config));
    // The first batch is taken with nothing behind it; its write fails and is retried while the
    // writer reads the other five.
    read_while_down(&store, &tx).await;
    until("three batches are written", || store.request_ids().len() >= 6).await;
    // The seventh waits for the (hour-long) interval, or for shutdown.
    drop(tx);
    assert_eq!(stopped(writer).await, WriterSummary { written: 7, lost: 0 });
    assert_eq!(
        store.state.lock().unwrap().priorities,
        [
            // Retried with the priority it was taken with.
            (2, Low),
            // A full batch (r4, r5) waits behind this one.
            (2, Normal),
            // One record (r6) waits: less than a batch.
            (2, Low),
            // Shutdown does not wait on the CPU.
            (1, Normal),
        ]
    );
}

#[tokio::test]
async fn sheds_the_oldest_waiting_records_beyond_the_memory_bound() {
    let store = Arc::new(FlakyStore::default());
    let (tx, rx) = queued_while_down(&store, 30).await;
    let config = WriterConfig {
        max_batch: 4,
        max_pending: 10,
        ..config()
    };
    let writer = spawn(writer_for(&store, rx).config(config));
    read_while_down(&store, &tx).await;
    drop(tx);

    // The first batch (r0..r3) is kept for retrying; of the rest only the newest ten wait.
    assert_eq!(
        stopped(writer).await,
        WriterSummary {
            written: 14,
            lost: 16
        }
    );
    let ids: HashSet<_> = store.request_ids().into_iter().collect();
    assert_eq!(ids, expected_ids((0..4).chain(20..30)));
    let successes: i64 = store
        .state
        .lock()
        .unwrap()
        .counts
        .iter()
        .map(|&(.., success, _)| success)
        .sum();
    assert_eq!(successes, 30, "hourly counts include the shed records");
}

#[tokio::test]
async fn drops_a_batch_the_database_keeps_refusing() {
    let base = sample().await;
    let store = Arc::new(FlakyStore::default());
    let (tx, rx) = mpsc::channel(100);
    let mut records = numbered(&base, 4);
    records[1].request_id = Some("poison".to_owned());
    for record in records {
        tx.try_send(record).unwrap();
    }
    drop(tx);
    let config = WriterConfig {
        max_batch: 2,
        max_rejections: 3,
        ..config()
    };
    let summary = stopped(spawn(writer_for(&store, rx).config(config))).await;
    assert_eq!(summary, WriterSummary { written: 2, lost: 2 });
    assert_eq!(store.request_ids(), ["r2", "r3"]);
    assert_eq!(
        store.state.lock().unwrap().insert_calls,
        4,
        "three refusals, then the next batch"
    );
}

#[tokio::test]
async fn shutdown_gives_up_on_a_database_that_stays_down() {
    let base = sample().await;
    let store = Arc::new(FlakyStore::default());
    store.down.store(true, Ordering::SeqCst);
    let (sink, rx) = ChannelSink::new(100);
    let config = WriterConfig {
        drain_timeout: Duration::from_millis(100),
        ..config()
    };
    let writer = spawn(writer_for(&store, rx).config(config));
    for record in numbered(&base, 3) {
        sink.send(record);
    }
    drop(sink);
    assert_eq!(stopped(writer).await, WriterSummary { written: 0, lost: 3 });
}

// ===== conversion =====

/// Records when (in tokio's clock, paused in these tests) each row reached it.
#[derive(Debug, Default)]
struct TimedStore {
    rows: Mutex<Vec<(Instant, String)>>,
    written: tokio::sync::Notify,
}

impl TimedStore {
    /// When the first row was written, waiting for it.
    async fn first_write(&self) -> Instant {
        loop {
            if let Some(&(at, _)) = self.rows.lock().unwrap().first() {
                return at;
            }
            self.written.notified().await;
        }
    }

    fn written(&self) -> usize {
        self.rows.lock().unwrap().len()
    }
}

impl LogStore for Arc<TimedStore> {
    fn insert_logs(
        &self,
        rows: &Arc<[RequestLogRow]>,
        _priority: AppendPriority,
    ) -> impl Future<Output = Result<usize, DbError>> + Send {
        let now = Instant::now();
        self.rows
            .lock()
            .unwrap()
            .extend(rows.iter().map(|row| (now, row.request_id.clone())));
        self.written.notify_one();
        std::future::ready(Ok(rows.len()))
    }

    fn add_hourly(
        &self,
        _counts: &[HourlyCount],
        _priority: AppendPriority,
    ) -> impl Future<Output = Result<(), DbError>> + Send {
        std::future::ready(Ok(()))
    }

    fn add_usage(
        &self,
        _usage: &UsageCounts,
        _priority: AppendPriority,
    ) -> impl Future<Output = Result<(), DbError>> + Send {
        std::future::ready(Ok(()))
    }
}

fn write_interval(minutes: u32) -> Arc<SystemSettings> {
    Arc::new(SystemSettings {
        request_log_write_interval_minutes: minutes,
        ..SystemSettings::default()
    })
}

#[tokio::test(start_paused = true)]
async fn the_write_interval_setting_caps_the_wait_and_zero_writes_at_once() {
    let base = sample().await;
    // The writer's own interval is an hour here (`config()`): only the setting cuts the wait.
    for (minutes, wait) in [
        (0, Duration::ZERO),
        (1, Duration::from_secs(60)),
        (5, Duration::from_secs(300)),
    ] {
        let store = Arc::new(TimedStore::default());
        let (_settings, settings) = watch::channel(write_interval(minutes));
        let (sink, rx) = ChannelSink::new(100);
        let writer = spawn(
            LogWriter::new(store.clone(), rx, group_ids(), key_columns())
                .config(config())
                .write_interval_from(settings),
        );
        let sent = Instant::now();
        sink.send(base.clone());
        let waited = store.first_write().await - sent;
        assert!(
            waited >= wait && waited < wait + Duration::from_millis(10),
            "{minutes} minutes: written after {waited:?}"
        );
        drop(sink);
        assert_eq!(stopped(writer).await.written, 1);
    }
}

#[tokio::test(start_paused = true)]
async fn the_one_second_batching_beats_a_longer_write_interval() {
    let base = sample().await;
    let store = Arc::new(TimedStore::default());
    // gpt-load's default of one minute: logs still reach the database within a second.
    let (_settings, settings) = watch::channel(write_interval(1));
    let (sink, rx) = ChannelSink::new(100);
    let writer = spawn(
        LogWriter::new(store.clone(), rx, group_ids(), key_columns())
            .config(WriterConfig::default())
            .write_interval_from(settings),
    );
    let sent = Instant::now();
    sink.send(base);
    assert_eq!(store.first_write().await - sent, Duration::from_secs(1));
    drop(sink);
    assert_eq!(stopped(writer).await.written, 1);
}

#[tokio::test(start_paused = true)]
async fn a_changed_write_interval_applies_to_the_waiting_records() {
    let base = sample().await;
    let store = Arc::new(TimedStore::default());
    let (update, settings) = watch::channel(write_interval(5));
    let (sink, rx) = ChannelSink::new(100);
    let writer = spawn(
        LogWriter::new(store.clone(), rx, group_ids(), key_columns())
            .config(config())
            .write_interval_from(settings),
    );
    let sent = Instant::now();
    sink.send(base.clone());
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(store.written(), 0, "five minutes have not passed");
    update.send_replace(write_interval(0));
    assert_eq!(store.first_write().await - sent, Duration::from_secs(120));

    // Without the settings' sender the last interval stays.
    drop(update);
    sink.send(base);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(store.written(), 2);
    drop(sink);
    assert_eq!(stopped(writer).await.written, 2);
}

#[tokio::test]
async fn a_keys_columns_are_computed_once_and_the_memory_of_them_is_bounded() {
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let columns: KeyColumns = {
        let asked = asked.clone();
        Arc::new(move |group: &str, id: KeyId| {
            asked.fetch_add(1, Ordering::Relaxed);
            (group == "sub").then(|| (format!("v1:key-{}", id.0), format!("hash-{}", id.0)))
        })
    };
    let mut state = State::new(config(), group_ids(), columns);
    let base = sample().await;
    let with_key = |id: u64| {
        let mut record = base.clone();
        record.key_id = Some(KeyId(id));
        record
    };
    for _ in 0..3 {
        state.accept(with_key(11));
    }
    assert_eq!(
        asked.load(Ordering::Relaxed),
        1,
        "asked once for three records of key 11"
    );
    let rows: Vec<_> = state
        .pending
        .iter()
        .map(|r| (r.key_value.as_str(), r.key_hash.as_str()))
        .collect();
    assert_eq!(rows, [("v1:key-11", "hash-11"); 3]);

    // A key the group does not have is asked for again (it may be added), and logged without.
    let mut elsewhere = with_key(12);
    elsewhere.group = GroupName::new("gone");
    state.accept(elsewhere.clone());
    state.accept(elsewhere);
    assert_eq!(asked.load(Ordering::Relaxed), 3);
    assert_eq!(state.pending.back().map(|r| r.key_value.as_str()), Some(""));

    for id in 0..(KEY_COLUMNS_CACHED as u64 + 10) {
        assert_eq!(
            state.key_columns_of("sub", KeyId(1_000 + id)).unwrap().1,
            format!("hash-{}", 1_000 + id)
        );
    }
    assert!(state.known_keys.len() <= KEY_COLUMNS_CACHED);
}

#[test]
fn the_flush_interval_follows_the_setting() {
    let second = Duration::from_secs(1);
    assert_eq!(flush_interval(second, &write_interval(0)), Duration::ZERO);
    assert_eq!(flush_interval(second, &write_interval(1)), second);
    assert_eq!(flush_interval(second, &write_interval(60)), second);
    let hour = Duration::from_secs(3_600);
    assert_eq!(flush_interval(hour, &write_interval(5)), Duration::from_secs(300));
    assert_eq!(
        flush_interval(hour, &SystemSettings::default()),
        Duration::from_secs(60)
    );
}

#[test]
fn clips_text_on_character_boundaries_and_removes_nul() {
    assert_eq!(clip("abc", 10), "abc");
    assert_eq!(clip("abcdef", 3), "abc");
    assert_eq!(clip("aé", 2), "a", "é is two bytes");
    assert_eq!(clip("a\0b", 10), "ab");
    assert_eq!(clip("", 0), "");
}

#[test]
fn buckets_by_the_start_of_the_hour() {
    let at = NaiveDate::from_ymd_opt(2026, 11, 22)
        .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 999_999))
        .unwrap();
    assert_eq!(hour_of(at), at.date().and_hms_opt(23, 0, 0).unwrap());
    assert_eq!(hour_of(hour_of(at)), hour_of(at));
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let config = WriterConfig::default();
    let delays: Vec<_> = (1..=8).map(|n| backoff(&config, n).as_millis()).collect();
    assert_eq!(delays, [100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000]);
    assert_eq!(backoff(&config, u32::MAX), config.max_backoff);
}

#[test]
fn client_addresses_are_written_as_std_writes_them() {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    let octets = [0, 1, 9, 10, 42, 99, 100, 101, 199, 200, 255];
    for a in octets {
        for b in octets {
            let ip = IpAddr::V4(Ipv4Addr::new(a, b, 255 - a, b / 2));
            assert_eq!(super::ip_text(ip), ip.to_string());
        }
    }
    for ip in [
        Ipv6Addr::LOCALHOST,
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
    ] {
        assert_eq!(super::ip_text(IpAddr::V6(ip)), ip.to_string());
    }
}
