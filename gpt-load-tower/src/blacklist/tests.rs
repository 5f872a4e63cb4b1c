use std::{io::Write, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

use super::*;
use crate::{
    channel::ChannelKind,
    error::{BoxError, Error, ErrorKind},
    keys::{KeyId, KeyPool, KeySelectLayer, KeySlot, KeyState, MemoryKeyPool},
    test_util::principal,
};

const KEY: &str = "sk-live-abcdefghijklmnop";

fn pool() -> MemoryKeyPool {
    let pool = MemoryKeyPool::new();
    pool.set_group("g".into(), [KeySlot::new(KeyId(1), KEY.into())]);
    pool
}

fn upstream(
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    body: Bytes,
) -> impl Service<Request<()>, Response = Response<Full<Bytes>>, Error = Error, Future = impl Send> + Clone {
    service_fn(move |_req: Request<()>| {
        let body = body.clone();
        async move {
            let mut res = Response::new(Full::new(body));
            *res.status_mut() = StatusCode::from_u16(status).unwrap();
            for (k, v) in headers {
                res.headers_mut().insert(*k, HeaderValue::from_static(v));
            }
            Ok::<_, Error>(res)
        }
    })
}

async fn attempt<S>(pool: &MemoryKeyPool, inner: S) -> (AttemptOutcome, StatusCode, Bytes, http::HeaderMap)
where
    S: Service<Request<()>, Response = Response<Full<Bytes>>, Error = Error> + Clone + Send + 'static,
    S::Future: Send,
{
    let svc = ServiceBuilder::new()
        .layer(KeySelectLayer::new(pool.clone()))
        .layer(KeyHealthLayer::new(pool.clone()))
        .service(inner);
    let res = svc
        .oneshot(principal(Request::new(()), "g", ChannelKind::OpenAi))
        .await
        .unwrap();
    let outcome = res.extensions().get::<AttemptOutcome>().unwrap().clone();
    let (status, headers) = (res.status(), res.headers().clone());
    (
        outcome,
        status,
        res.into_body().collect().await.unwrap().to_bytes(),
        headers,
    )
}

#[tokio::test]
async fn success_streams_untouched_and_resets_failures() {
    let pool = pool();
    pool.report(
        &pool_key(&pool),
        crate::keys::Report::Failure {
            blacklist_threshold: 0,
        },
    );
    let (outcome, status, body, _) =
        attempt(&pool, upstream(200, &[], Bytes::from_static(b"data: hi\n\n"))).await;
    assert_eq!(
        (outcome.outcome, outcome.failover, status),
        (Outcome::Success, false, StatusCode::OK)
    );
    assert_eq!(body, "data: hi\n\n");
    assert_eq!(pool.get("g", KeyId(1)).unwrap().consecutive_failures(), 0);
}

fn pool_key(pool: &MemoryKeyPool) -> crate::keys::SelectedKey {
    crate::keys::SelectedKey::new("g".into(), pool.get("g", KeyId(1)).unwrap())
}

#[tokio::test]
async fn not_found_passes_through_without_touching_the_key() {
    let pool = pool();
    let (outcome, status, body, _) = attempt(&pool, upstream(404, &[], Bytes::from_static(b"nope"))).await;
    assert_eq!((outcome.outcome, outcome.failover), (Outcome::Passthrough, false));
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, Bytes::from_static(b"nope"))
    );
    assert!(outcome.message.is_none());
}

#[tokio::test]
async fn failures_are_redacted_counted_and_blacklist_at_threshold() {
    let pool = pool();
    let body = Bytes::from(format!(
        r#"{{"error":{{"message":"Incorrect API key provided: {KEY}"}}}}"#
    ));
    for n in 1..=3 {
        let (outcome, status, sent, headers) = attempt(&pool, upstream(401, &[], body.clone())).await;
        assert_eq!(status, 401);
        assert_eq!(outcome.outcome, Outcome::Failure { counted: true });
        assert!(outcome.failover);
        let message = outcome.message.unwrap();
        assert_eq!(&*message, "Incorrect API key provided: sk-l****mnop");
        assert!(!String::from_utf8_lossy(&sent).contains(KEY));
        assert_eq!(headers[header::CONTENT_LENGTH], sent.len().to_string());
        if n < 3 {
            assert_eq!(pool.get("g", KeyId(1)).unwrap().consecutive_failures(), n);
        }
    }
    assert_eq!(pool.get("g", KeyId(1)).unwrap().state(), KeyState::Invalid);
}

#[tokio::test]
async fn uncounted_messages_do_not_count() {
    let pool = pool();
    let body =
        Bytes::from_static(br#"{"error":{"message":"Resource has been exhausted (e.g. check quota)."}}"#);
    let (outcome, ..) = attempt(&pool, upstream(418, &[], body)).await;
    assert_eq!(outcome.outcome, Outcome::Failure { counted: false });
    assert_eq!(pool.get("g", KeyId(1)).unwrap().consecutive_failures(), 0);
}

#[tokio::test]
async fn request_errors_pass_through_and_never_touch_the_key() {
    let pool = pool();
    let bodies: [&[u8]; 3] = [
        br#"{"error":{"message":"We could not parse the JSON body of your request.","type":"invalid_request_error","param":null,"code":null}}"#,
        br#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
        br#"{"type":"error","error":{"type":"invalid_request_error","message":"messages: field required"}}"#,
    ];
    for body in bodies {
        for _ in 0..5 {
            let (outcome, status, sent, _) =
                attempt(&pool, upstream(400, &[], Bytes::from_static(body))).await;
            assert_eq!(
                (outcome.outcome, status),
                (Outcome::RequestError, StatusCode::BAD_REQUEST)
            );
            assert!(!outcome.outcome.is_retryable());
            assert_eq!(sent, body, "the upstream's own answer reaches the client");
        }
    }
    let slot = pool.get("g", KeyId(1)).unwrap();
    assert_eq!((slot.state(), slot.consecutive_failures()), (KeyState::Active, 0));
}

#[tokio::test]
async fn provider_failures_never_blacklist() {
    let pool = pool();
    for status in [500, 502, 503, 504] {
        let (outcome, ..) = attempt(&pool, upstream(status, &[], Bytes::from_static(b"down"))).await;
        assert_eq!(outcome.outcome, Outcome::Transient);
        assert!(outcome.outcome.is_retryable());
    }
    let slot = pool.get("g", KeyId(1)).unwrap();
    assert_eq!(
        (
            slot.state(),
            slot.consecutive_failures(),
            slot.transient_failures()
        ),
        (KeyState::Active, 0, 4)
    );
    attempt(&pool, upstream(200, &[], Bytes::new())).await;
    assert_eq!(slot.transient_failures(), 0, "a success clears the evidence");
}

#[tokio::test]
async fn rate_limits_cool_the_key_down() {
    let pool = pool();
    let (outcome, status, ..) = attempt(
        &pool,
        upstream(429, &[("retry-after", "20")], Bytes::from_static(b"slow down")),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(
        outcome.outcome,
        Outcome::CoolDown(QuotaSignal::after(Duration::from_secs(20)))
    );
    let slot = pool.get("g", KeyId(1)).unwrap();
    assert_eq!(slot.state(), KeyState::Cooling);
    assert_eq!(slot.consecutive_failures(), 0);
    assert_eq!(slot.backoff_level(), 1);
    let rest = slot.cooling_for().unwrap();
    assert!(
        rest > Duration::from_secs(19) && rest <= Duration::from_secs(20),
        "{rest:?}"
    );
    assert_eq!(slot.last_error().as_deref(), Some("slow down"));
}

/// A 429 from `upstream`, then time passes, then the next attempt: returns what the key did.
async fn cool_then_probe(
    pool: &MemoryKeyPool,
    first: &'static [(&'static str, &'static str)],
    wait: Duration,
    then: u16,
) -> (Duration, Option<Outcome>) {
    attempt(pool, upstream(429, first, Bytes::from_static(b"slow down"))).await;
    let slot = pool.get("g", KeyId(1)).unwrap();
    let rest = slot.cooling_for().unwrap_or_default();
    crate::clock::advance(wait);
    if !pool.has_candidate("g", &crate::keys::ExcludedKeys::new()) {
        return (rest, None);
    }
    let (outcome, ..) = attempt(pool, upstream(then, &[], Bytes::new())).await;
    (rest, Some(outcome.outcome))
}

#[tokio::test]
async fn cool_downs_back_off_until_a_probe_succeeds() {
    let pool = pool();
    let slot = pool.get("g", KeyId(1)).unwrap();
    // No signal: the default backoff's first rest, 30 s ± 20 % clamped to at least 30 s.
    let (rest, probe) = cool_then_probe(&pool, &[], Duration::from_secs(10), 200).await;
    assert!(
        rest >= Duration::from_secs(29) && rest <= Duration::from_secs(36),
        "{rest:?}"
    );
    assert_eq!(probe, None, "still resting");
    crate::clock::advance(Duration::from_secs(27));
    // The probe is rate limited again: the next rest doubles.
    let (outcome, ..) = attempt(&pool, upstream(429, &[], Bytes::new())).await;
    assert!(matches!(outcome.outcome, Outcome::CoolDown(_)));
    assert_eq!(slot.backoff_level(), 2);
    let rest = slot.cooling_for().unwrap();
    assert!(
        rest >= Duration::from_secs(47) && rest <= Duration::from_secs(72),
        "{rest:?}"
    );
    crate::clock::advance(Duration::from_secs(73));
    // The next probe succeeds: active again, and the backoff starts over.
    let (outcome, ..) = attempt(&pool, upstream(200, &[], Bytes::new())).await;
    assert_eq!(outcome.outcome, Outcome::Success);
    assert_eq!((slot.state(), slot.backoff_level()), (KeyState::Active, 0));
    assert!(slot.last_success_at().is_some());
}

#[tokio::test]
async fn signals_are_capped_by_the_groups_maximum() {
    let pool = pool();
    let svc = ServiceBuilder::new()
        .layer(KeySelectLayer::new(pool.clone()))
        .layer(KeyHealthLayer::new(pool.clone()).settings(HealthSettings {
            cool_down: crate::keys::Backoff::new(Duration::from_secs(1), Duration::from_secs(600)),
            ..HealthSettings::default()
        }))
        .service(upstream(429, &[("retry-after", "86400")], Bytes::new()));
    svc.oneshot(principal(Request::new(()), "g", ChannelKind::OpenAi))
        .await
        .unwrap();
    let rest = pool.get("g", KeyId(1)).unwrap().cooling_for().unwrap();
    assert!(
        rest > Duration::from_secs(599) && rest <= Duration::from_secs(600),
        "{rest:?}"
    );
}

#[tokio::test]
async fn a_probe_that_is_not_rate_limited_ends_the_rest() {
    // A request error, a passthrough status and a provider failure all show the key was let
    // through.
    for (status, expected) in [
        (400, Outcome::RequestError),
        (404, Outcome::Passthrough),
        (503, Outcome::Transient),
    ] {
        let pool = pool();
        let (_, probe) =
            cool_then_probe(&pool, &[("retry-after", "5")], Duration::from_secs(6), status).await;
        assert_eq!(probe, Some(expected), "{status}");
        let slot = pool.get("g", KeyId(1)).unwrap();
        assert_eq!(slot.state(), KeyState::Active, "{status}");
        assert_eq!(slot.cooling_for(), None, "{status}");
    }
}

#[tokio::test]
async fn gzip_error_bodies_are_decoded_and_redacted() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(format!(r#"{{"error":{{"message":"bad key {KEY}"}}}}"#).as_bytes())
        .unwrap();
    let compressed = Bytes::from(gz.finish().unwrap());
    let pool = pool();
    let (outcome, _, body, headers) =
        attempt(&pool, upstream(500, &[("content-encoding", "gzip")], compressed)).await;
    assert!(headers.get(header::CONTENT_ENCODING).is_none());
    assert_eq!(&*outcome.message.unwrap(), "bad key sk-l****mnop");
    assert!(!String::from_utf8_lossy(&body).contains(KEY));
}

#[tokio::test]
async fn unreadable_encodings_are_withheld() {
    let pool = pool();
    let (outcome, status, body, headers) = attempt(
        &pool,
        upstream(
            502,
            &[("content-encoding", "br")],
            Bytes::from_static(b"\x1b\x00"),
        ),
    )
    .await;
    assert_eq!(status, 502);
    assert!(outcome.message.is_none());
    assert!(headers.get(header::CONTENT_ENCODING).is_none());
    assert!(String::from_utf8_lossy(&body).contains("withheld"));
}

#[tokio::test]
async fn long_error_bodies_are_capped() {
    let pool = pool();
    let svc = ServiceBuilder::new()
        .layer(KeySelectLayer::new(pool.clone()))
        .layer(KeyHealthLayer::new(pool.clone()).error_body_limit(10))
        .service(upstream(500, &[], Bytes::from(vec![b'x'; 1000])));
    let res = svc
        .oneshot(principal(Request::new(()), "g", ChannelKind::OpenAi))
        .await
        .unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes().len(), 10);
}

#[tokio::test]
async fn per_request_settings_override_the_layer() {
    let pool = pool();
    let svc = ServiceBuilder::new()
        .layer(KeySelectLayer::new(pool.clone()))
        .layer(KeyHealthLayer::new(pool.clone()))
        .service(upstream(401, &[], Bytes::from_static(b"revoked")));
    let mut req = principal(Request::new(()), "g", ChannelKind::OpenAi);
    req.extensions_mut().insert(HealthSettings {
        failover: Arc::new("502".parse().unwrap()),
        blacklist_threshold: 1,
        ..HealthSettings::default()
    });
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(
        res.extensions().get::<AttemptOutcome>().unwrap().outcome,
        Outcome::Passthrough
    );

    let mut req = principal(Request::new(()), "g", ChannelKind::OpenAi);
    req.extensions_mut().insert(HealthSettings {
        failover: Arc::new(StatusMatcher::default()),
        blacklist_threshold: 1,
        ..HealthSettings::default()
    });
    svc.oneshot(req).await.unwrap();
    assert_eq!(
        pool.get("g", KeyId(1)).unwrap().state(),
        KeyState::Invalid,
        "threshold 1 blacklists at once"
    );
}

#[tokio::test]
async fn transport_errors_are_transient_and_pass_through() {
    let pool = pool();
    let svc = ServiceBuilder::new()
        .layer(KeySelectLayer::new(pool.clone()))
        .layer(KeyHealthLayer::new(pool.clone()))
        .service(service_fn(|_req: Request<()>| async {
            Err::<Response<Full<Bytes>>, BoxError>("connection refused".into())
        }));
    let err = svc
        .oneshot(principal(Request::new(()), "g", ChannelKind::OpenAi))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Upstream);
    let slot = pool.get("g", KeyId(1)).unwrap();
    assert_eq!((slot.consecutive_failures(), slot.transient_failures()), (0, 1));
}

struct AlwaysDead;

impl ClassifyOutcome for AlwaysDead {
    fn classify_response(&self, _: &UpstreamAnswer<'_>) -> Outcome {
        Outcome::Dead
    }
    fn classify_error(&self, _: &Error) -> Outcome {
        Outcome::Dead
    }
}

#[tokio::test]
async fn custom_classifier_can_invalidate_at_once() {
    let pool = pool();
    let svc = KeySelectLayer::new(pool.clone()).layer(
        KeyHealthLayer::new(pool.clone())
            .classifier(AlwaysDead)
            .layer(upstream(401, &[], Bytes::new())),
    );
    svc.oneshot(principal(Request::new(()), "g", ChannelKind::OpenAi))
        .await
        .unwrap();
    assert_eq!(pool.get("g", KeyId(1)).unwrap().state(), KeyState::Invalid);
}

#[tokio::test]
async fn without_a_selected_key_nothing_is_reported() {
    let svc = KeyHealthLayer::new(pool()).layer(upstream(500, &[], Bytes::from_static(b"e")));
    let res = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(res.status(), 500);
}

const FLASH_PER_DAY: &str = r#"{"error":{"code":429,"message":"You exceeded your current quota.","status":"RESOURCE_EXHAUSTED","details":[
  {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier","quotaDimensions":{"location":"global","model":"gemini-2.0-flash"},"quotaValue":"200"}]},
  {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"12s"}]}}"#;

#[tokio::test]
async fn a_per_model_quota_rests_the_key_for_that_model_only() {
    let pool = MemoryKeyPool::new();
    pool.set_group(
        "g".into(),
        [
            KeySlot::new(KeyId(1), "AIza-exhausted".into()),
            KeySlot::new(KeyId(2), "AIza-fresh".into()),
        ],
    );
    // Key 1 is out of its daily gemini-2.0-flash quota; everything else works.
    let upstream = service_fn(|req: Request<()>| async move {
        let exhausted = req.uri().query().is_some_and(|q| q.contains("AIza-exhausted"))
            && req.uri().path().contains("/models/gemini-2.0-flash:");
        let mut res = Response::new(Full::new(Bytes::from_static(if exhausted {
            FLASH_PER_DAY.as_bytes()
        } else {
            b"{}"
        })));
        if exhausted {
            *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        }
        Ok::<_, Error>(res)
    });
    let svc = ServiceBuilder::new()
        .layer(KeySelectLayer::new(pool.clone()))
        .layer(KeyHealthLayer::new(pool.clone()))
        .service(upstream);
    let call = |model: &str| {
        let req = Request::post(format!("/v1beta/models/{model}:generateContent"))
            .body(())
            .unwrap();
        let svc = svc.clone();
        async move {
            let res = svc
                .oneshot(principal(req, "g", ChannelKind::Gemini))
                .await
                .unwrap();
            let key = res.extensions().get::<crate::keys::SelectedKey>().unwrap().id();
            (key, res.status())
        }
    };
    assert_eq!(
        call("gemini-2.0-flash").await,
        (KeyId(1), StatusCode::TOO_MANY_REQUESTS)
    );
    let slot = pool.get("g", KeyId(1)).unwrap();
    assert_eq!(slot.state(), KeyState::Active, "the key itself keeps serving");
    let rests = slot.model_rests();
    assert_eq!(rests.len(), 1);
    assert_eq!(&*rests[0].0, "gemini-2.0-flash");
    assert!(
        rests[0].1 > Duration::from_secs(12),
        "until the daily reset, not the retry delay"
    );
    assert!(rests[0].1 <= Duration::from_secs(3600), "capped by the maximum");
    for _ in 0..4 {
        assert_eq!(call("gemini-2.0-flash").await, (KeyId(2), StatusCode::OK));
    }
    let mut other_model = std::collections::HashSet::new();
    for _ in 0..4 {
        let (key, status) = call("gemini-1.5-pro").await;
        assert_eq!(status, StatusCode::OK);
        other_model.insert(key);
    }
    assert!(other_model.contains(&KeyId(1)), "other models still use the key");
    // When the rest is over the model comes back to the key.
    crate::clock::advance(Duration::from_secs(3600));
    assert!(slot.model_rests().is_empty());
    let mut flash = std::collections::HashSet::new();
    for _ in 0..4 {
        flash.insert(call("gemini-2.0-flash").await.0);
    }
    assert!(flash.contains(&KeyId(1)));
}
