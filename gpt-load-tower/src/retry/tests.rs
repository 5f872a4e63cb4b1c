use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceBuilder, ServiceExt, retry::RetryLayer, service_fn};

use super::*;
use crate::{
    blacklist::KeyHealthLayer,
    body::{BodyBufferLayer, ReplayBody},
    channel::ChannelKind,
    error::{BoxError, Error, ErrorKind},
    keys::{KeyId, KeySelectLayer, KeySlot, KeyState, MemoryKeyPool},
    log::{LogSink, RequestLogLayer, RequestRecord, RequestType},
    test_util::{Chunks, principal},
};

/// What the scripted upstream does for a key.
#[derive(Clone, Copy)]
enum Script {
    Ok,
    Status(u16),
    Transport,
}

#[derive(Clone, Default)]
struct Upstream {
    scripts: Arc<HashMap<&'static str, Script>>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    fn new(scripts: &[(&'static str, Script)]) -> Self {
        Self {
            scripts: Arc::new(scripts.iter().copied().collect()),
            seen: Arc::default(),
        }
    }

    fn keys_seen(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.split(':').next().unwrap().to_owned())
            .collect()
    }
}

fn serve(
    this: Upstream,
) -> impl Service<Request<ReplayBody>, Response = Response<Full<Bytes>>, Error = BoxError, Future = impl Send>
+ Clone {
    service_fn(move |req: Request<ReplayBody>| {
        let this = this.clone();
        async move {
            let key = req.headers()["authorization"]
                .to_str()
                .unwrap()
                .trim_start_matches("Bearer ")
                .to_owned();
            let body = req.into_body().collect().await?.to_bytes();
            this.seen
                .lock()
                .unwrap()
                .push(format!("{key}:{}", String::from_utf8_lossy(&body)));
            match this.scripts.get(key.as_str()).copied().unwrap_or(Script::Ok) {
                Script::Ok => Ok(Response::new(Full::from(format!("ok from {key}")))),
                Script::Status(code) => {
                    let mut res =
                        Response::new(Full::from(format!(r#"{{"error":{{"message":"failed {key}"}}}}"#)));
                    *res.status_mut() = StatusCode::from_u16(code).unwrap();
                    Ok(res)
                }
                Script::Transport => Err::<_, BoxError>("connection refused".into()),
            }
        }
    })
}

#[derive(Clone, Default)]
struct Records(Arc<Mutex<Vec<RequestRecord>>>);

impl LogSink for Records {
    fn send(&self, record: RequestRecord) {
        self.0.lock().unwrap().push(record);
    }
}

fn pool(keys: &[&str]) -> MemoryKeyPool {
    let pool = MemoryKeyPool::new();
    pool.set_group(
        "g".into(),
        keys.iter()
            .enumerate()
            .map(|(i, k)| KeySlot::new(KeyId(i as u64), (*k).into())),
    );
    pool
}

async fn call(
    pool: &MemoryKeyPool,
    upstream: &Upstream,
    policy: RetryOnOtherKey,
    records: &Records,
    req: Request<ReplayBody>,
) -> Result<(StatusCode, Bytes), Error> {
    let svc = ServiceBuilder::new()
        .layer(RequestLogLayer::new(records.clone()))
        .layer(RetryLayer::new(policy))
        .layer(KeySelectLayer::new(pool.clone()))
        .layer(KeyHealthLayer::new(pool.clone()))
        .service(serve(upstream.clone()));
    let res = svc.oneshot(req).await?;
    let status = res.status();
    Ok((status, res.into_body().collect().await.unwrap().to_bytes()))
}

fn req(body: &'static str) -> Request<ReplayBody> {
    principal(
        Request::post("/v1/chat/completions")
            .body(ReplayBody::new(body))
            .unwrap(),
        "g",
        ChannelKind::OpenAi,
    )
}

#[tokio::test]
async fn retries_on_another_key_after_500_429_and_transport_errors() {
    for script in [
        Script::Status(500),
        Script::Status(429),
        Script::Status(401),
        Script::Transport,
    ] {
        let pool = pool(&["bad", "good"]);
        let upstream = Upstream::new(&[("bad", script)]);
        let records = Records::default();
        let policy = RetryOnOtherKey::new(3).with_pool(pool.clone());
        let (status, body) = call(&pool, &upstream, policy, &records, req(r#"{"n":1}"#))
            .await
            .unwrap();
        assert_eq!(
            (status, body),
            (StatusCode::OK, Bytes::from_static(b"ok from good"))
        );
        assert_eq!(upstream.keys_seen(), ["bad", "good"]);
        assert!(
            upstream
                .seen
                .lock()
                .unwrap()
                .iter()
                .all(|s| s.ends_with(r#"{"n":1}"#)),
            "the body is replayed"
        );
        let records = records.0.lock().unwrap().clone();
        let kinds: Vec<_> = records
            .iter()
            .map(|r| (r.request_type, r.attempt, r.key_id))
            .collect();
        assert_eq!(
            kinds,
            [
                (RequestType::Retry, 1, Some(KeyId(0))),
                (RequestType::Final, 2, Some(KeyId(1)))
            ]
        );
        assert!(!records[0].success);
        if let Script::Status(code) = script {
            assert_eq!(records[0].status, code);
            assert_eq!(
                records[0].error.as_deref(),
                Some("failed ****"),
                "the key is redacted"
            );
        } else {
            assert_eq!(records[0].status, 502);
        }
    }
}

#[tokio::test]
async fn not_found_is_not_retried() {
    let pool = pool(&["a", "b"]);
    let upstream = Upstream::new(&[("a", Script::Status(404))]);
    let (status, _) = call(
        &pool,
        &upstream,
        RetryOnOtherKey::new(3),
        &Records::default(),
        req("{}"),
    )
    .await
    .unwrap();
    assert_eq!(status, 404);
    assert_eq!(upstream.keys_seen(), ["a"]);
}

#[tokio::test]
async fn a_key_error_never_uses_the_same_key_twice_and_the_last_failure_is_returned() {
    let pool = pool(&["a", "b", "c"]);
    let upstream = Upstream::new(&[
        ("a", Script::Status(401)),
        ("b", Script::Status(403)),
        ("c", Script::Status(401)),
    ]);
    let records = Records::default();
    let policy = RetryOnOtherKey::new(10).with_pool(pool.clone());
    let (status, body) = call(&pool, &upstream, policy, &records, req("{}")).await.unwrap();
    assert_eq!(upstream.keys_seen(), ["a", "b", "c"]);
    assert_eq!(
        status, 401,
        "the last upstream failure, not a gateway 503 for running out of keys"
    );
    assert_eq!(
        body, r#"{"error":{"message":"failed ****"}}"#,
        "the key is redacted"
    );
    let types: Vec<_> = records.0.lock().unwrap().iter().map(|r| r.request_type).collect();
    assert_eq!(
        types,
        [RequestType::Retry, RequestType::Retry, RequestType::Final]
    );
}

#[tokio::test]
async fn transient_failures_reuse_the_key_that_failed_longest_ago() {
    let pool = pool(&["a", "b", "c"]);
    let upstream = Upstream::new(&[
        ("a", Script::Status(503)),
        ("b", Script::Transport),
        ("c", Script::Status(500)),
    ]);
    let records = Records::default();
    let policy = RetryOnOtherKey::new(5)
        .with_pool(pool.clone())
        .backoff(Duration::ZERO, Duration::ZERO);
    let (status, _) = call(&pool, &upstream, policy, &records, req("{}")).await.unwrap();
    assert_eq!(
        upstream.keys_seen(),
        ["a", "b", "c", "a", "b", "c"],
        "max_retries 5 is six attempts, however few keys there are"
    );
    assert_eq!(status, 500);
    assert_eq!(records.0.lock().unwrap().len(), 6);
    for id in 0..3 {
        let slot = pool.get("g", KeyId(id)).unwrap();
        assert_eq!(
            (slot.state(), slot.consecutive_failures()),
            (KeyState::Active, 0),
            "a provider failure never counts toward the blacklist"
        );
    }
}

#[tokio::test]
async fn a_provider_outage_recovers_with_the_provider() {
    let pool = pool(&["a", "b"]);
    let down = Upstream::new(&[("a", Script::Status(503)), ("b", Script::Status(503))]);
    for _ in 0..20 {
        let policy = RetryOnOtherKey::new(3)
            .with_pool(pool.clone())
            .backoff(Duration::ZERO, Duration::ZERO);
        let (status, _) = call(&pool, &down, policy, &Records::default(), req("{}"))
            .await
            .unwrap();
        assert_eq!(status, 503);
    }
    assert_eq!(down.keys_seen().len(), 80);
    let up = Upstream::new(&[]);
    let policy = RetryOnOtherKey::new(3).with_pool(pool.clone());
    let (status, _) = call(&pool, &up, policy, &Records::default(), req("{}"))
        .await
        .unwrap();
    assert_eq!(status, 200, "the first request after the outage succeeds");
    assert_eq!(up.keys_seen().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn reusing_a_key_waits_a_jittered_backoff_and_a_fresh_key_does_not() {
    let pool = pool(&["a", "b"]);
    let upstream = Upstream::new(&[("a", Script::Status(502)), ("b", Script::Status(502))]);
    let policy = RetryOnOtherKey::new(3)
        .with_pool(pool.clone())
        .backoff(Duration::from_millis(100), Duration::from_millis(150));
    let started = tokio::time::Instant::now();
    call(&pool, &upstream, policy, &Records::default(), req("{}"))
        .await
        .unwrap();
    assert_eq!(upstream.keys_seen(), ["a", "b", "a", "b"]);
    // Paused time advances only by the sleeps: a → b at once, then two waits before re-use,
    // each in the upper half of 100 ms and then of 150 ms (the cap).
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(50 + 75) && waited <= Duration::from_millis(100 + 150),
        "{waited:?}"
    );
}

#[tokio::test]
async fn request_errors_are_not_retried() {
    let pool = pool(&["a", "b"]);
    let upstream = Upstream::new(&[("a", Script::Status(422)), ("b", Script::Status(422))]);
    let policy = RetryOnOtherKey::new(3).with_pool(pool.clone());
    let (status, _) = call(&pool, &upstream, policy, &Records::default(), req("{}"))
        .await
        .unwrap();
    assert_eq!(status, 422);
    assert_eq!(upstream.keys_seen().len(), 1);
}

#[tokio::test]
async fn max_retries_bounds_attempts_and_can_be_set_per_request() {
    let pool = pool(&["a", "b", "c", "d"]);
    let upstream = Upstream::new(&[
        ("a", Script::Status(500)),
        ("b", Script::Status(500)),
        ("c", Script::Status(500)),
    ]);
    let (status, _) = call(
        &pool,
        &upstream,
        RetryOnOtherKey::new(1),
        &Records::default(),
        req("{}"),
    )
    .await
    .unwrap();
    assert_eq!(status, 500);
    assert_eq!(upstream.keys_seen().len(), 2);

    let upstream = Upstream::new(&[("c", Script::Status(500)), ("d", Script::Status(500))]);
    let mut single = req("{}");
    single.extensions_mut().insert(RetrySettings { max_retries: 0 });
    let (status, _) = call(
        &pool,
        &upstream,
        RetryOnOtherKey::new(5),
        &Records::default(),
        single,
    )
    .await
    .unwrap();
    assert_eq!(status, 500);
    assert_eq!(
        upstream.keys_seen().len(),
        1,
        "max_retries 0 means exactly one attempt"
    );
}

#[tokio::test]
async fn without_a_pool_exhaustion_surfaces_as_no_key() {
    let pool = pool(&["a"]);
    let upstream = Upstream::new(&[("a", Script::Status(500))]);
    let err = call(
        &pool,
        &upstream,
        RetryOnOtherKey::new(2),
        &Records::default(),
        req("{}"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoKeyAvailable);
}

#[tokio::test]
async fn blacklisted_keys_are_skipped_by_later_requests() {
    let pool = pool(&["bad", "good"]);
    let upstream = Upstream::new(&[("bad", Script::Status(401))]);
    // Degraded after its first failure, the bad key comes up one turn in four: 20 requests
    // give it the turns to reach the threshold.
    for _ in 0..20 {
        let policy = RetryOnOtherKey::new(3).with_pool(pool.clone());
        let (status, _) = call(&pool, &upstream, policy, &Records::default(), req("{}"))
            .await
            .unwrap();
        assert_eq!(status, 200);
    }
    assert_eq!(pool.get("g", KeyId(0)).unwrap().state(), KeyState::Invalid);
    assert_eq!(
        upstream.keys_seen().iter().filter(|k| *k == "bad").count(),
        3,
        "threshold 3, then skipped"
    );
}

#[tokio::test]
async fn oversized_streaming_bodies_are_sent_once() {
    let pool = pool(&["a", "b"]);
    let upstream = Upstream::new(&[("a", Script::Status(500))]);
    let svc = ServiceBuilder::new()
        .layer(BodyBufferLayer::new(4).stream_oversized(true))
        .layer(RetryLayer::new(RetryOnOtherKey::new(3)))
        .layer(KeySelectLayer::new(pool.clone()))
        .layer(KeyHealthLayer::new(pool.clone()))
        .service(serve(upstream.clone()));
    let request = principal(
        Request::new(Chunks::new(["0123", "456789"])),
        "g",
        ChannelKind::OpenAi,
    );
    let res = svc.oneshot(request).await.unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(upstream.seen.lock().unwrap().as_slice(), ["a:0123456789"]);
}

#[tokio::test]
async fn client_body_errors_are_not_retried() {
    let pool = pool(&["a", "b"]);
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryOnOtherKey::new(3)))
        .layer(KeySelectLayer::new(pool.clone()))
        .service(service_fn(|_req: Request<ReplayBody>| async {
            Err::<Response<Full<Bytes>>, _>(Error::client_body("client went away"))
        }));
    let err = svc.oneshot(req("{}")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ClientBody);
    assert_eq!(pool.get("g", KeyId(1)).unwrap().in_flight(), 0);
}

#[tokio::test]
async fn status_fallback_without_key_health() {
    let pool = pool(&["a", "b"]);
    let upstream = Upstream::new(&[("a", Script::Status(503))]);
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(
            RetryOnOtherKey::new(1).failover("500-599".parse().unwrap()),
        ))
        .layer(KeySelectLayer::new(pool.clone()))
        .service(serve(upstream.clone()));
    let res = svc.oneshot(req("{}")).await.unwrap();
    assert_eq!(res.status(), 200);
}

/// The request, with operator rules compiled from `rules` (one policy named `p`).
fn req_with_rules(rules: &str) -> Request<ReplayBody> {
    let specs = serde_json::from_str(rules).unwrap();
    let settings = crate::blacklist::HealthSettings {
        rules: crate::blacklist::RuleSet::compile([("p".to_owned(), specs)]).unwrap(),
        ..Default::default()
    };
    let mut req = req("{}");
    req.extensions_mut().insert(settings);
    req
}

#[tokio::test]
async fn a_rule_invalidates_the_key_and_the_request_moves_on() {
    let pool = pool(&["spent", "good"]);
    let upstream = Upstream::new(&[("spent", Script::Status(400))]);
    let rules = r#"[{"name":"quota","conditions":[
        {"type":"status_code","operator":"in","values":["400-403"]},
        {"type":"body","operator":"regex","value":"failed \\*+"}],"action":"invalidate"}]"#;
    let records = Records::default();
    let policy = RetryOnOtherKey::new(3).with_pool(pool.clone());
    let (status, body) = call(&pool, &upstream, policy, &records, req_with_rules(rules))
        .await
        .unwrap();
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok from good"[..]));
    assert_eq!(pool.get("g", KeyId(0)).unwrap().state(), KeyState::Invalid);
    assert_eq!(pool.get("g", KeyId(1)).unwrap().state(), KeyState::Active);
    let records = records.0.lock().unwrap().clone();
    assert_eq!(records[0].outcome, Some("dead"));
}

#[tokio::test]
async fn without_the_rule_the_same_answer_is_a_request_error() {
    let pool = pool(&["spent", "good"]);
    let upstream = Upstream::new(&[("spent", Script::Status(400))]);
    let policy = RetryOnOtherKey::new(3).with_pool(pool.clone());
    let (status, _) = call(&pool, &upstream, policy, &Records::default(), req("{}"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "not retried, returned as is");
    assert_eq!(pool.get("g", KeyId(0)).unwrap().state(), KeyState::Active);
}

#[tokio::test]
async fn retry_same_pins_the_key_within_the_rule_budget() {
    let pool = pool(&["flaky", "good"]);
    let upstream = Upstream::new(&[("flaky", Script::Status(503))]);
    let rules = r#"[{"conditions":[{"type":"status_code","operator":"equals","value":503}],
        "action":"retry_same","backoff_ms":0,"max_retries":2}]"#;
    let policy = RetryOnOtherKey::new(5).with_pool(pool.clone());
    let (status, _) = call(
        &pool,
        &upstream,
        policy,
        &Records::default(),
        req_with_rules(rules),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.keys_seen(), ["flaky", "flaky", "flaky"]);
}

#[tokio::test]
async fn fail_returns_at_once_and_disable_takes_the_key_out() {
    let pool = pool(&["a", "b"]);
    let upstream = Upstream::new(&[("a", Script::Status(401)), ("b", Script::Status(403))]);
    let rules = r#"[
        {"conditions":[{"type":"status_code","operator":"equals","value":401},
                       {"type":"attempt","operator":"gte","value":2}],"action":"fail"},
        {"conditions":[{"type":"status_code","operator":"equals","value":401}],"action":"disable"},
        {"conditions":[{"type":"error_message","operator":"contains","value":"FAILED"}],"action":"fail"}]"#;
    let policy = RetryOnOtherKey::new(3).with_pool(pool.clone());
    let (status, _) = call(
        &pool,
        &upstream,
        policy,
        &Records::default(),
        req_with_rules(rules),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "b's 403 matched `fail`");
    assert_eq!(upstream.keys_seen(), ["a", "b"]);
    assert_eq!(pool.get("g", KeyId(0)).unwrap().state(), KeyState::Disabled);
    assert_eq!(
        pool.get("g", KeyId(1)).unwrap().state(),
        KeyState::Active,
        "fail leaves the key"
    );
}

#[tokio::test]
async fn a_rule_limited_to_later_attempts_lets_the_first_follow_the_defaults() {
    let pool = pool(&["a", "b", "c"]);
    let upstream = Upstream::new(&[
        ("a", Script::Status(500)),
        ("b", Script::Status(500)),
        ("c", Script::Status(500)),
    ]);
    let rules = r#"[{"conditions":[{"type":"attempt","operator":"gte","value":2}],"action":"fail"}]"#;
    let policy = RetryOnOtherKey::new(5).with_pool(pool.clone());
    let (status, _) = call(
        &pool,
        &upstream,
        policy,
        &Records::default(),
        req_with_rules(rules),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        upstream.keys_seen(),
        ["a", "b"],
        "the second attempt's answer is final"
    );
}

#[tokio::test]
async fn an_empty_reply_is_retried_on_another_key() {
    let pool = pool(&["empty", "good"]);
    let svc = ServiceBuilder::new()
        .layer(RequestLogLayer::new(Records::default()))
        .layer(RetryLayer::new(RetryOnOtherKey::new(3).with_pool(pool.clone())))
        .layer(KeySelectLayer::new(pool.clone()))
        .layer(KeyHealthLayer::new(pool.clone()))
        .service(service_fn(|req: Request<ReplayBody>| async move {
            let key = req.headers()["authorization"].to_str().unwrap().to_owned();
            let body = if key.ends_with("empty") {
                r#"{"choices":[]}"#
            } else {
                r#"{"choices":[{"message":{"content":"hello"}}]}"#
            };
            let mut res = Response::new(Full::from(body));
            res.headers_mut()
                .insert("content-type", http::HeaderValue::from_static("application/json"));
            Ok::<_, BoxError>(res)
        }));
    let res = svc.oneshot(req(r#"{"model":"m"}"#)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"choices":[{"message":{"content":"hello"}}]}"#);
    assert_eq!(
        pool.get("g", KeyId(0)).unwrap().state(),
        KeyState::Active,
        "not the key's fault"
    );
}
