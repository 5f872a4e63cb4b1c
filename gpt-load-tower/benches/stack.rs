//! One request through the whole [`ProxyStack`] to an in-process upstream that answers at once,
//! so the figures are the stack's own cost per request: authentication, the concurrency permit,
//! body buffering, logging, rewriting, key selection, health classification, upstream choice and
//! the response body guards. A bare `service_fn` gives the baseline.
//!
//! Run with `cargo bench -p gpt-load-tower --bench stack`.

use std::{
    convert::Infallible,
    fmt,
    hint::black_box,
    time::{Duration, Instant},
};

use bytes::Bytes;
use criterion::{Bencher, Criterion, criterion_group, criterion_main};
use gpt_load_tower::{
    ProxyStack,
    auth::{ProxyKeyTable, StaticProxyKeys},
    blacklist::HealthSettings,
    body::ReplayBody,
    channel::ChannelKind,
    context::GroupName,
    keys::{KeyId, KeySlot, KeyState, MemoryKeyPool},
    log::{ChannelSink, RequestRecord, RequestType},
    upstream::Upstreams,
};
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tokio::{runtime::Runtime, sync::mpsc};
use tower::{Service, ServiceExt, service_fn};

const GROUP: &str = "bench";
const PROXY_KEY: &str = "sk-proxy-bench";
const FAILING_KEY: &str = "sk-upstream-failing";
const PATH: &str = "/proxy/bench/v1/chat/completions";
const BODY: &[u8] = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

/// Requests built (outside the timing) and sent per timed chunk; the log receiver is drained
/// between chunks, also outside the timing, so the sink never drops records.
const CHUNK: u64 = 1024;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
}

fn request(path: &str) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("authorization", format!("Bearer {PROXY_KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY)))
        .expect("a valid request")
}

/// The upstream stand-in: `{}` with `200`, or `500` for [`FAILING_KEY`].
async fn upstream(req: Request<ReplayBody>) -> Result<Response<Full<Bytes>>, Infallible> {
    let failing = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        == Some(FAILING_KEY);
    if failing {
        let mut res = Response::new(Full::new(Bytes::from_static(
            br#"{"error":{"message":"internal error","type":"server_error"}}"#,
        )));
        *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return Ok(res);
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"{}"))))
}

/// A pool holding one group of `keys`.
fn pool_of(keys: impl IntoIterator<Item = KeySlot>) -> MemoryKeyPool {
    let pool = MemoryKeyPool::new();
    pool.set_group(GroupName::from(GROUP), keys);
    pool
}

/// The whole stack over `pool`, one upstream and `sink`, in front of [`upstream`].
fn proxy(
    pool: MemoryKeyPool,
    sink: ChannelSink,
    health: HealthSettings,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<impl Body<Data = Bytes, Error = Infallible> + Send + 'static>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    let proxy_keys =
        StaticProxyKeys::new(ProxyKeyTable::new().group(GROUP, ChannelKind::OpenAi, [PROXY_KEY]));
    let upstreams = Upstreams::new();
    upstreams
        .set_group(GroupName::from(GROUP), [("http://127.0.0.1:9", 1)])
        .expect("a valid upstream");
    ProxyStack::new(proxy_keys, pool, upstreams, sink)
        .health(health)
        .service(service_fn(upstream))
}

/// Sends one request and reads its response to the end; returns the status and body length.
async fn send<S, B>(svc: &S, req: Request<Full<Bytes>>) -> (StatusCode, usize)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible> + Clone,
    B: Body<Data = Bytes>,
    B::Error: fmt::Debug,
{
    let Ok(res) = svc.clone().oneshot(req).await;
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .expect("a complete body")
        .to_bytes();
    (status, body.len())
}

/// Times `iters` requests, built and drained outside the measured spans.
fn measure<S, B>(
    b: &mut Bencher<'_>,
    rt: &Runtime,
    svc: &S,
    mut records: Option<&mut mpsc::Receiver<RequestRecord>>,
) where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible> + Clone,
    B: Body<Data = Bytes>,
    B::Error: fmt::Debug,
{
    b.iter_custom(|iters| {
        rt.block_on(async {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                let reqs: Vec<_> = (0..n).map(|_| request(PATH)).collect();
                let start = Instant::now();
                for req in reqs {
                    black_box(send(svc, req).await);
                }
                total += start.elapsed();
                if let Some(rx) = records.as_deref_mut() {
                    while rx.try_recv().is_ok() {}
                }
                left -= n;
            }
            total
        })
    });
}

/// Drains the log, returning how many `retry` and `final` records it held.
fn count_records(rx: &mut mpsc::Receiver<RequestRecord>) -> (usize, usize) {
    let (mut retries, mut finals) = (0, 0);
    while let Ok(record) = rx.try_recv() {
        match record.request_type {
            RequestType::Retry => retries += 1,
            RequestType::Final => finals += 1,
        }
    }
    (retries, finals)
}

fn stack(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("stack");

    // 100 healthy keys: every request is one attempt.
    let pool = pool_of((0..100).map(|i| KeySlot::new(KeyId(i), format!("sk-upstream-{i:03}").into())));
    let (sink, mut records) = ChannelSink::new(65_536);
    let svc = proxy(pool, sink, HealthSettings::default());
    for _ in 0..10 {
        assert_eq!(rt.block_on(send(&svc, request(PATH))), (StatusCode::OK, 2));
    }
    assert_eq!(count_records(&mut records), (0, 10));
    group.bench_function("one_attempt", |b| measure(b, &rt, &svc, Some(&mut records)));

    // Two keys, the first answering 500: the round-robin cursor moves twice per request, so every
    // request starts on the failing key and is retried once on the other. Blacklisting is off so
    // the failing key stays in rotation.
    let never_blacklist = HealthSettings {
        blacklist_threshold: 0,
        ..HealthSettings::default()
    };
    let pool = pool_of([
        KeySlot::new(KeyId(1), FAILING_KEY.into()),
        KeySlot::new(KeyId(2), "sk-upstream-good".into()),
    ]);
    let (sink, mut records) = ChannelSink::new(65_536);
    let svc = proxy(pool.clone(), sink, never_blacklist);
    for _ in 0..10 {
        assert_eq!(rt.block_on(send(&svc, request(PATH))), (StatusCode::OK, 2));
    }
    assert_eq!(count_records(&mut records), (10, 10), "each request retried once");
    group.bench_function("retry_once", |b| measure(b, &rt, &svc, Some(&mut records)));
    for _ in 0..10 {
        rt.block_on(send(&svc, request(PATH)));
    }
    assert_eq!(
        count_records(&mut records),
        (10, 10),
        "still retried once after the run"
    );
    assert_eq!(
        pool.get(GROUP, KeyId(1)).map(|s| s.state()),
        Some(KeyState::Active)
    );

    // The floor: the same request and body handling with no layer at all.
    let bare = service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
    });
    assert_eq!(rt.block_on(send(&bare, request(PATH))), (StatusCode::OK, 2));
    group.bench_function("baseline_service_fn", |b| measure(b, &rt, &bare, None));

    group.finish();
}

criterion_group!(benches, stack);
criterion_main!(benches);
