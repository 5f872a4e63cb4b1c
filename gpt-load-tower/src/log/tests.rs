use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower::{Layer, ServiceExt, service_fn};

use super::*;
use crate::{
    body::ReplayBody,
    channel::ChannelKind,
    context::{ClientIp, GroupName},
    error::{Error, ErrorKind},
    keys::{KeyId, KeySelectLayer, KeySlot, MemoryKeyPool},
    telemetry,
    test_util::principal,
};

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<RequestRecord>>>);

impl LogSink for Collect {
    fn send(&self, record: RequestRecord) {
        self.0.lock().unwrap().push(record);
    }
}

impl Collect {
    fn take(&self) -> Vec<RequestRecord> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn request(body: &'static str) -> Request<ReplayBody> {
    let req = Request::post("/proxy/g/v1/chat/completions?x=1")
        .header("user-agent", "test-agent")
        .header("x-request-id", "rid-1")
        .body(ReplayBody::new(body))
        .unwrap();
    let mut req = principal(req, "g", ChannelKind::OpenAi);
    req.extensions_mut()
        .insert(ClientIp(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))));
    req
}

#[tokio::test]
async fn final_record_after_the_body_with_key_and_facts() {
    let sink = Collect::default();
    let pool = MemoryKeyPool::new();
    pool.set_group(
        "g".into(),
        [KeySlot::new(KeyId(9), "sk-log-0123456789abcdef".into())],
    );
    let svc = RequestLogLayer::new(sink.clone()).layer(KeySelectLayer::new(pool).layer(service_fn(
        |_req: Request<ReplayBody>| async { Ok::<_, Error>(Response::new(Full::from("answer"))) },
    )));
    let res = svc
        .oneshot(request(r#"{"model":"gpt-4o","stream":false}"#))
        .await
        .unwrap();
    assert!(sink.take().is_empty());
    res.into_body().collect().await.unwrap();
    let records = sink.take();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(
        (r.request_type, r.attempt, r.status, r.success),
        (RequestType::Final, 1, 200, true)
    );
    assert_eq!(r.group.as_str(), "g");
    assert_eq!(r.parent_group, None);
    assert_eq!(r.key_id, Some(KeyId(9)));
    assert_eq!(r.masked_key.as_deref(), Some("sk-l****cdef"));
    assert_eq!(r.model.as_deref(), Some("gpt-4o"));
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.path, "/proxy/g/v1/chat/completions?x=1");
    assert_eq!(r.client_ip, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))));
    assert_eq!(r.request_id.as_deref(), Some("rid-1"));
    assert!(
        r.request_body.is_none() && r.user_agent.is_none(),
        "body logging is off by default"
    );
    assert!(!format!("{r:?}").contains("sk-log-0123456789abcdef"));
}

#[tokio::test]
async fn errors_are_recorded_as_final_and_pass_through() {
    let sink = Collect::default();
    let svc = RequestLogLayer::new(sink.clone()).layer(service_fn(|_req: Request<ReplayBody>| async {
        Err::<Response<Full<Bytes>>, _>(Error::no_key_available(&GroupName::from("g")))
    }));
    let err = svc.oneshot(request("{}")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoKeyAvailable);
    let records = sink.take();
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].status, records[0].success), (503, false));
    assert!(
        records[0]
            .error
            .as_deref()
            .unwrap()
            .contains("no active API keys")
    );
    assert_eq!(records[0].key_id, None);
}

#[tokio::test]
async fn request_bodies_are_logged_when_enabled_and_capped() {
    let sink = Collect::default();
    let echo = service_fn(|_req: Request<ReplayBody>| async {
        Ok::<_, Error>(Response::new(Full::<Bytes>::from("ok")))
    });
    let svc = RequestLogLayer::new(sink.clone())
        .log_request_bodies(true)
        .body_limit(8)
        .layer(echo);
    svc.clone()
        .oneshot(request(r#"{"model":"m"}"#))
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    let r = sink.take().remove(0);
    assert_eq!(r.request_body.as_deref(), Some(r#"{"model""#));
    assert_eq!(r.user_agent.as_deref(), Some("test-agent"));

    let mut req = request("{}");
    req.extensions_mut().insert(LogSettings { request_body: false });
    svc.oneshot(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    assert!(sink.take()[0].request_body.is_none(), "per-request settings win");
}

#[tokio::test]
async fn a_dropped_body_still_produces_the_record() {
    let sink = Collect::default();
    let svc = RequestLogLayer::new(sink.clone()).layer(service_fn(|_req: Request<ReplayBody>| async {
        Ok::<_, Error>(Response::new(Full::<Bytes>::from("x")))
    }));
    drop(svc.oneshot(request("{}")).await.unwrap());
    assert_eq!(sink.take().len(), 1);
}

#[tokio::test]
async fn missing_principal_is_an_internal_error() {
    let svc = RequestLogLayer::new(Collect::default()).layer(service_fn(|_req: Request<ReplayBody>| async {
        Ok::<_, Error>(Response::new(()))
    }));
    let err = svc.oneshot(Request::new(ReplayBody::empty())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal);
}

fn record() -> RequestRecord {
    RequestRecord {
        timestamp: SystemTime::now(),
        request_type: RequestType::Final,
        attempt: 1,
        group: "g".into(),
        parent_group: None,
        access_key: None,
        key_id: None,
        masked_key: None,
        upstream: None,
        model: None,
        method: Method::GET,
        path: "/".to_owned(),
        status: 200,
        success: true,
        duration: Duration::ZERO,
        time_to_first_byte: None,
        stream: false,
        client_ip: None,
        error: None,
        outcome: None,
        rule: None,
        request_body: None,
        user_agent: None,
        request_id: None,
        usage: None,
    }
}

#[test]
fn channel_sink_drops_and_counts_when_full() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (sink, mut rx) = ChannelSink::new(1);
    metrics::with_local_recorder(&recorder, || {
        sink.send(record());
        sink.send(record());
        sink.send(record());
    });
    assert!(rx.try_recv().is_ok());
    assert!(rx.try_recv().is_err());
    let dropped = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(key, ..)| key.key().name() == telemetry::LOG_RECORDS_DROPPED)
        .map(|(.., value)| value);
    assert_eq!(dropped, Some(DebugValue::Counter(2)));
}

#[tokio::test]
async fn the_final_record_carries_the_usage_its_reply_reported() {
    let sink = Collect::default();
    let frames = [
        "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"comp",
        "letion_tokens\":4,\"total_tokens\":16}}\n\ndata: [DONE]\n\n",
    ];
    let svc =
        RequestLogLayer::new(sink.clone()).layer(service_fn(move |_req: Request<ReplayBody>| async move {
            Ok::<_, Error>(Response::new(crate::test_util::Chunks::new(frames)))
        }));
    let res = svc
        .oneshot(request(r#"{"model":"gpt-4o","stream":true}"#))
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, frames.concat(), "the reply passes unchanged");
    let records = sink.take();
    assert_eq!(records[0].usage, Some(crate::usage::TokenUsage::new(12, 4)));

    // An error reply's body is not read for usage.
    let svc = RequestLogLayer::new(sink.clone()).layer(service_fn(|_req: Request<ReplayBody>| async {
        let mut res = Response::new(Full::from(r#"{"usage":{"prompt_tokens":1}}"#));
        *res.status_mut() = http::StatusCode::BAD_REQUEST;
        Ok::<_, Error>(res)
    }));
    let res = svc.oneshot(request(r#"{"model":"gpt-4o"}"#)).await.unwrap();
    res.into_body().collect().await.unwrap();
    assert_eq!(sink.take()[0].usage, None);
}

/// Tokens per minute end to end: an attempt reserves its estimate on its key, the reply's usage
/// settles it, a failed attempt gives it back, and a key at its `tpm` is passed over until the
/// minute slides.
#[tokio::test]
async fn token_limits_reserve_before_and_settle_with_the_reported_usage() {
    use crate::keys::{ExcludedKeys, KeyLimits, KeyPool};

    let pool = MemoryKeyPool::new();
    pool.set_group(
        "g".into(),
        [
            KeySlot::new(KeyId(0), "sk-tpm-0-0123456789".into()),
            KeySlot::new(KeyId(1), "sk-tpm-1-0123456789".into()),
        ],
    );
    pool.set_limits_of(&"g".into(), KeyId(0), Some(KeyLimits::new().tpm(100)));
    let mut only_key_0 = ExcludedKeys::new();
    only_key_0.insert(KeyId(1));
    let svc = RequestLogLayer::new(Collect::default()).layer(KeySelectLayer::new(pool.clone()).layer(
        service_fn(|req: Request<ReplayBody>| async move {
            // The body says which answer to give: a usage of 60 tokens, or a failure.
            let failing = req.body().bytes().is_some_and(|b| b.starts_with(b"{\"fail"));
            let res = if failing {
                Response::builder().status(500).body(Full::from("{}")).unwrap()
            } else {
                Response::new(Full::from(
                    r#"{"usage":{"prompt_tokens":20,"completion_tokens":40,"total_tokens":60}}"#,
                ))
            };
            Ok::<_, Error>(res)
        }),
    ));
    let send = |body: &'static str| {
        let mut req = request(body);
        req.extensions_mut().insert(only_key_0.clone());
        svc.clone().oneshot(req)
    };
    let headroom = || pool.get("g", KeyId(0)).unwrap().headroom_per_mille();

    // 17 bytes of body (5 tokens) + max_tokens 50: 55 reserved until the body ends.
    let res = send(r#"{"max_tokens":50}"#).await.unwrap();
    assert_eq!(headroom(), 450, "55 of 100 reserved");
    res.into_body().collect().await.unwrap();
    assert_eq!(headroom(), 400, "settled at the 60 reported");

    // A failed attempt gives its estimate back.
    let res = send(r#"{"fail":1,"max_tokens":30}"#).await.unwrap();
    assert_eq!(headroom(), 30, "60 settled + 7 + 30 reserved");
    res.into_body().collect().await.unwrap();
    assert_eq!(headroom(), 400);

    // 60 + 60 = 120: past the limit after this one, so the key is passed over...
    send(r#"{"max_tokens":1}"#)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    assert!(pool.select("g", &only_key_0).is_none());
    let refusal = pool.limit_refusal("g", &only_key_0, None).unwrap();
    assert_eq!(refusal.limit, "key_tpm");
    // ...until the minute has slid past the tokens.
    crate::clock::advance(Duration::from_secs(60));
    assert!(pool.select("g", &only_key_0).is_some());
}
