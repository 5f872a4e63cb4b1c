use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tower::{
    Layer, Service, ServiceBuilder, ServiceExt, retry::RetryLayer, service_fn, util::BoxCloneSyncService,
};

use super::*;
use crate::{
    blacklist::KeyHealthLayer,
    body::ReplayBody,
    channel::ChannelKind,
    context::{AttemptNumber, ClientIp, RoutedGroup, target_group},
    error::{Error, ErrorKind},
    keys::{ExcludedKeys, KeyId, KeyPool, KeySelectLayer, KeySlot, MemoryKeyPool, Report, SelectedKey},
    log::{LogSink, RequestLogLayer, RequestRecord, RequestType},
    retry::{RetryOnOtherKey, RetrySettings},
    test_util::principal,
};

/// Echoes the routed group, the URI and the body.
fn echo()
-> impl Service<Request<ReplayBody>, Response = Response<Value>, Error = Error, Future = impl Send> + Clone {
    service_fn(|req: Request<ReplayBody>| async move {
        let group = target_group(req.extensions()).unwrap().to_string();
        let uri = req.uri().to_string();
        let length = req
            .headers()
            .get("content-length")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
        Ok::<_, Error>(Response::new(
            json!({"group": group, "uri": uri, "body": body, "length": length}),
        ))
    })
}

fn request(group: &str, channel: ChannelKind, path: &str, body: &'static str) -> Request<ReplayBody> {
    principal(
        Request::post(path).body(ReplayBody::new(body)).unwrap(),
        group,
        channel,
    )
}

#[tokio::test]
async fn param_overrides_merge_into_json_objects() {
    let table = RewriteTable::new();
    let overrides = json!({"temperature": 0.1, "max_tokens": 5})
        .as_object()
        .unwrap()
        .clone();
    table.set_group("g".into(), GroupRules::new().param_overrides(overrides));
    let svc = RewriteLayer::new(table).layer(echo());
    let res = svc
        .clone()
        .oneshot(request(
            "g",
            ChannelKind::OpenAi,
            "/v1/chat/completions",
            r#"{"model":"m","temperature":1}"#,
        ))
        .await
        .unwrap();
    let out = res.into_body();
    assert_eq!(
        out["body"],
        json!({"model": "m", "temperature": 0.1, "max_tokens": 5})
    );
    assert_eq!(
        out["length"].as_str().unwrap().parse::<usize>().unwrap(),
        serde_json::to_vec(&out["body"]).unwrap().len()
    );

    for raw in ["plain text", "[1,2]", "{broken"] {
        let req = request("g", ChannelKind::OpenAi, "/v1/x", raw);
        let req = Request::from_parts(req.into_parts().0, ReplayBody::new(Bytes::from(raw)));
        let out = svc.clone().oneshot(req).await.unwrap().into_body();
        assert!(out["length"].is_null(), "{raw} passes through untouched");
    }
}

#[tokio::test]
async fn openai_streams_are_asked_for_their_usage_when_the_group_says_so() {
    let table = RewriteTable::new();
    table.set_group("g".into(), GroupRules::new().include_stream_usage(true));
    table.set_group("off".into(), GroupRules::new());
    let svc = RewriteLayer::new(table).layer(echo());
    let send = async |group: &str, channel: ChannelKind, path: &str, body: &'static str| {
        let res = svc.clone().oneshot(request(group, channel, path, body)).await;
        res.unwrap().into_body()
    };

    let out = send(
        "g",
        ChannelKind::OpenAi,
        "/v1/chat/completions",
        r#"{"model":"m","stream":true}"#,
    )
    .await;
    assert_eq!(
        out["body"],
        json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}})
    );
    assert_eq!(
        out["length"].as_str().unwrap().parse::<usize>().unwrap(),
        serde_json::to_vec(&out["body"]).unwrap().len()
    );
    // The client's other stream options stay; its `false` is overruled.
    let out = send(
        "g",
        ChannelKind::Gemini,
        "/v1beta/openai/chat/completions",
        r#"{"stream":true,"stream_options":{"include_usage":false,"x":1}}"#,
    )
    .await;
    assert_eq!(
        out["body"]["stream_options"],
        json!({"include_usage": true, "x": 1})
    );

    // Unchanged: a request that already asks, one that is not streamed, another format, and a
    // group that does not ask.
    for (group, channel, path, body) in [
        (
            "g",
            ChannelKind::OpenAi,
            "/v1/chat/completions",
            r#"{"stream":true,"stream_options":{"include_usage":true}}"#,
        ),
        (
            "g",
            ChannelKind::OpenAi,
            "/v1/chat/completions",
            r#"{"stream":false}"#,
        ),
        (
            "g",
            ChannelKind::OpenAiResponse,
            "/v1/responses",
            r#"{"stream":true}"#,
        ),
        ("g", ChannelKind::Anthropic, "/v1/messages", r#"{"stream":true}"#),
        (
            "off",
            ChannelKind::OpenAi,
            "/v1/chat/completions",
            r#"{"stream":true}"#,
        ),
    ] {
        let out = send(group, channel, path, body).await;
        assert!(
            out["length"].is_null(),
            "{group} {path} {body} passes through untouched"
        );
    }
}

#[tokio::test]
async fn model_redirects_in_body_and_gemini_path() {
    let table = RewriteTable::new();
    table.set_group(
        "oa".into(),
        GroupRules::new().redirect_model("alias", "real-model"),
    );
    table.set_group(
        "gem".into(),
        GroupRules::new()
            .redirect_model("gemini-x", "gemini-2.0-flash")
            .strict_model(true),
    );
    let svc = RewriteLayer::new(table).layer(echo());

    let out = svc
        .clone()
        .oneshot(request(
            "oa",
            ChannelKind::OpenAi,
            "/v1/chat/completions",
            r#"{"model":"alias"}"#,
        ))
        .await
        .unwrap()
        .into_body();
    assert_eq!(out["body"]["model"], "real-model");
    let out = svc
        .clone()
        .oneshot(request(
            "oa",
            ChannelKind::OpenAi,
            "/v1/chat/completions",
            r#"{"model":"other"}"#,
        ))
        .await
        .unwrap()
        .into_body();
    assert_eq!(
        out["body"]["model"], "other",
        "loose mode leaves unknown models alone"
    );

    let path = "/proxy/gem/v1beta/models/gemini-x:streamGenerateContent?alt=sse";
    let out = svc
        .clone()
        .oneshot(request("gem", ChannelKind::Gemini, path, "{}"))
        .await
        .unwrap()
        .into_body();
    assert_eq!(
        out["uri"],
        "/proxy/gem/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    );

    let err = svc
        .clone()
        .oneshot(request(
            "gem",
            ChannelKind::Gemini,
            "/proxy/gem/v1beta/models/gemini-pro:generateContent",
            "{}",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert!(err.message().contains("gemini-pro"));

    let compat = "/proxy/gem/v1beta/openai/chat/completions";
    let out = svc
        .clone()
        .oneshot(request(
            "gem",
            ChannelKind::Gemini,
            compat,
            r#"{"model":"gemini-x"}"#,
        ))
        .await
        .unwrap()
        .into_body();
    assert_eq!(out["body"]["model"], "gemini-2.0-flash");
    let out = svc
        .oneshot(request("gem", ChannelKind::Gemini, compat, r#"{"messages":[]}"#))
        .await
        .unwrap()
        .into_body();
    assert_eq!(
        out["body"],
        json!({"messages": []}),
        "strict mode without a model passes, as gpt-load"
    );
}

#[tokio::test]
async fn aggregates_route_by_weight_to_available_sub_groups() {
    let pool = MemoryKeyPool::new();
    for g in ["a", "b", "c"] {
        pool.set_group(
            g.into(),
            [KeySlot::new(
                KeyId(u64::from(g.as_bytes()[0])),
                format!("key-{g}").into(),
            )],
        );
    }
    let table = RewriteTable::new();
    table.set_aggregate("agg".into(), [("a".into(), 2), ("b".into(), 1), ("c".into(), 0)]);
    let svc = RewriteLayer::new(table)
        .available_when(pool.clone())
        .layer(echo());
    let mut picks = Vec::new();
    for _ in 0..6 {
        let res = svc
            .clone()
            .oneshot(request("agg", ChannelKind::OpenAi, "/v1/chat/completions", "{}"))
            .await
            .unwrap();
        picks.push(res.into_body()["group"].as_str().unwrap().to_owned());
    }
    assert_eq!(picks, ["a", "b", "a", "a", "b", "a"]);

    // Sub-group a loses its only key: everything goes to b.
    let a = SelectedKey::new("a".into(), pool.get("a", KeyId(u64::from(b'a'))).unwrap());
    pool.report(&a, Report::Invalidate);
    for _ in 0..3 {
        let res = svc
            .clone()
            .oneshot(request("agg", ChannelKind::OpenAi, "/v1/x", "{}"))
            .await
            .unwrap();
        assert_eq!(res.into_body()["group"], "b");
    }
    let b = SelectedKey::new("b".into(), pool.get("b", KeyId(u64::from(b'b'))).unwrap());
    pool.report(&b, Report::Invalidate);
    let err = svc
        .oneshot(request("agg", ChannelKind::OpenAi, "/v1/x", "{}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoKeyAvailable);
    assert!(err.message().contains("sub-groups"));
}

#[tokio::test]
async fn sub_group_rules_apply_after_routing() {
    let table = RewriteTable::new();
    table.set_aggregate("agg".into(), [("sub".into(), 1)]);
    table.set_group("sub".into(), GroupRules::new().redirect_model("x", "y"));
    let svc = RewriteLayer::new(table).layer(echo());
    let res = svc
        .oneshot(request("agg", ChannelKind::OpenAi, "/v1/x", r#"{"model":"x"}"#))
        .await
        .unwrap();
    assert_eq!(res.extensions().get::<RoutedGroup>().map(|r| r.0.as_str()), None);
    let out = res.into_body();
    assert_eq!(
        (out["group"].as_str(), out["body"]["model"].as_str()),
        (Some("sub"), Some("y"))
    );
}

#[tokio::test]
async fn header_rules_run_after_key_injection() {
    let pool = MemoryKeyPool::new();
    pool.set_group("g".into(), [KeySlot::new(KeyId(1), "sk-upstream".into())]);
    let table = RewriteTable::new();
    table.set_group(
        "g".into(),
        GroupRules::new()
            .header_rule(HeaderRule::set("x-client", "${CLIENT_IP}|${GROUP_NAME}|${UNKNOWN}").unwrap())
            .header_rule(HeaderRule::set("api-key", "${API_KEY}").unwrap())
            .header_rule(HeaderRule::remove("authorization").unwrap())
            .header_rule(HeaderRule::remove("x-drop").unwrap()),
    );
    let svc = ServiceBuilder::new()
        .layer(KeySelectLayer::new(pool))
        .layer(HeaderRulesLayer::new(table))
        .service(service_fn(|req: Request<()>| async move {
            Ok::<_, Error>(Response::new(req.headers().clone()))
        }));
    let mut req = principal(
        Request::get("/").header("x-drop", "1").body(()).unwrap(),
        "g",
        ChannelKind::OpenAi,
    );
    req.extensions_mut()
        .insert(ClientIp(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let res = svc.oneshot(req).await.unwrap();
    let headers = res.body().get_ref();
    assert_eq!(headers["x-client"], "127.0.0.1|g|${UNKNOWN}");
    assert_eq!(headers["api-key"], "sk-upstream");
    assert!(headers.get("authorization").is_none());
    assert!(headers.get("x-drop").is_none());
}

#[tokio::test]
async fn groups_without_rules_pass_through_and_inner_errors_too() {
    let svc = RewriteLayer::new(RewriteTable::new()).layer(service_fn(|_req: Request<ReplayBody>| async {
        Err::<Response<()>, _>(Error::no_upstream(&"g".into()))
    }));
    let err = svc
        .oneshot(request("g", ChannelKind::OpenAi, "/", "{}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoUpstream);
    let svc = RewriteLayer::new(RewriteTable::new()).layer(echo());
    let err = svc.oneshot(Request::new(ReplayBody::empty())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal);
    let _ = <MemoryKeyPool as KeyPool>::has_candidate;
}

fn filter(include: &[&str], exclude: &[&str]) -> ModelFilter {
    ModelFilter::new(include, exclude).unwrap()
}

#[tokio::test]
async fn a_filtered_model_is_refused_before_a_key_is_spent() {
    let table = RewriteTable::new();
    table.set_group("g".into(), GroupRules::new());
    table.set_model_filter("g".into(), filter(&["gpt-4o*"], &["*-audio-*"]));
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let svc = RewriteLayer::new(table.clone()).layer(service_fn(move |_req: Request<ReplayBody>| {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async { Ok::<_, Error>(Response::new(())) }
    }));
    let ok = svc
        .clone()
        .oneshot(request(
            "g",
            ChannelKind::OpenAi,
            "/v1/chat/completions",
            r#"{"model":"gpt-4o-mini"}"#,
        ))
        .await;
    assert!(ok.is_ok());
    for (path, body, model) in [
        (
            "/v1/chat/completions",
            r#"{"model":"gpt-4o-audio-preview"}"#,
            "gpt-4o-audio-preview",
        ),
        ("/v1/chat/completions", r#"{"model":"o1"}"#, "o1"),
        (
            "/v1beta/models/gemini-2.0-flash:generateContent",
            "{}",
            "gemini-2.0-flash",
        ),
    ] {
        let channel = if path.starts_with("/v1beta") {
            ChannelKind::Gemini
        } else {
            ChannelKind::OpenAi
        };
        let err = svc
            .clone()
            .oneshot(request("g", channel, path, body))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{model}");
        assert!(err.message().contains(&format!("'{model}'")), "{}", err.message());
    }
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "refusals spend nothing"
    );
    // A request without a model (a model list) is not filtered here.
    assert!(
        svc.clone()
            .oneshot(request("g", ChannelKind::OpenAi, "/v1/models", ""))
            .await
            .is_ok()
    );
    // Removing the filter serves every model again.
    table.set_model_filter("g".into(), ModelFilter::default());
    assert!(
        svc.oneshot(request("g", ChannelKind::OpenAi, "/v1/x", r#"{"model":"o1"}"#))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_model_the_access_key_does_not_allow_is_forbidden_before_a_key_is_spent() {
    // No group rule looks at the model: only the caller's own filter does.
    let table = RewriteTable::new();
    table.set_group("g".into(), GroupRules::new());
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let svc = RewriteLayer::new(table).layer(service_fn(move |_req: Request<ReplayBody>| {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async { Ok::<_, Error>(Response::new(())) }
    }));
    let allowed = std::sync::Arc::new(filter(&["gpt-4o*"], &[]));
    let call = |body: &'static str| {
        let mut req = request("g", ChannelKind::OpenAi, "/v1/chat/completions", body);
        let principal = req
            .extensions()
            .get::<crate::context::Principal>()
            .unwrap()
            .clone();
        req.extensions_mut().insert(
            principal
                .with_access_key(crate::context::AccessKeyId(9))
                .with_allowed_models(allowed.clone()),
        );
        svc.clone().oneshot(req)
    };
    assert!(call(r#"{"model":"gpt-4o-mini"}"#).await.is_ok());
    let err = call(r#"{"model":"claude-3-5-haiku"}"#).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden);
    assert_eq!(err.kind().status(), http::StatusCode::FORBIDDEN);
    assert!(err.message().contains("'claude-3-5-haiku'"), "{}", err.message());
    // A request that names no model (a model list, say) is not the filter's to refuse.
    assert!(call("").await.is_ok());
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "the refusal spent nothing"
    );
}

#[tokio::test]
async fn aggregates_route_each_model_to_the_sub_groups_that_serve_it() {
    let pool = MemoryKeyPool::new();
    for (id, g) in [(1, "openai"), (2, "anthropic"), (3, "strict"), (4, "spare")] {
        pool.set_group(g.into(), [KeySlot::new(KeyId(id), format!("key-{g}").into())]);
    }
    let table = RewriteTable::new();
    table.set_aggregate(
        "agg".into(),
        [
            ("openai".into(), 1),
            ("anthropic".into(), 1),
            ("strict".into(), 1),
            ("spare".into(), 1),
        ],
    );
    table.set_group("openai".into(), GroupRules::new());
    table.set_model_filter("openai".into(), filter(&["gpt-*"], &[]));
    table.set_group("anthropic".into(), GroupRules::new());
    table.set_model_filter("anthropic".into(), filter(&["claude-*"], &[]));
    // Strict redirect rules serve only the models they list.
    table.set_group(
        "strict".into(),
        GroupRules::new()
            .redirect_model("house-model", "gpt-4o")
            .strict_model(true),
    );
    table.set_group("spare".into(), GroupRules::new());
    table.set_model_filter("spare".into(), filter(&["gpt-*"], &[]));
    let svc = RewriteLayer::new(table.clone())
        .available_when(pool.clone())
        .layer(echo());
    let routed = |model: &'static str| {
        let svc = svc.clone();
        async move {
            let req = Request::post("/v1/chat/completions")
                .body(ReplayBody::new(format!(r#"{{"model":"{model}"}}"#)))
                .unwrap();
            svc.oneshot(principal(req, "agg", ChannelKind::OpenAi))
                .await
                .map(|res| res.into_body()["group"].as_str().unwrap().to_owned())
        }
    };
    for _ in 0..4 {
        assert_eq!(routed("claude-3-haiku").await.unwrap(), "anthropic");
        assert_eq!(routed("house-model").await.unwrap(), "strict");
    }
    let mut gpt = std::collections::HashSet::new();
    for _ in 0..4 {
        gpt.insert(routed("gpt-4o").await.unwrap());
    }
    assert_eq!(gpt, ["openai".to_owned(), "spare".to_owned()].into());
    // The openai sub-group loses its key: gpt models go to the spare only.
    let key = SelectedKey::new("openai".into(), pool.get("openai", KeyId(1)).unwrap());
    pool.report(&key, Report::Invalidate);
    for _ in 0..3 {
        assert_eq!(routed("gpt-4o").await.unwrap(), "spare");
    }
    // No sub-group serves the model: a 400 naming it, not a 503.
    let err = routed("gemini-2.0-flash").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert!(err.message().contains("'gemini-2.0-flash'"));
    // The aggregate's own filter applies first.
    table.set_model_filter("agg".into(), filter(&[], &["claude-*"]));
    assert_eq!(
        routed("claude-3-haiku").await.unwrap_err().kind(),
        ErrorKind::InvalidRequest
    );
}

/// An aggregate `agg` over `a` (keys `a1`, `a2`, routed first) and `b` (key `b1`), behind the
/// retry and key-health layers, with an upstream that answers each key by `statuses` (200 when
/// not listed) and notes the key and attempt number of every call.
struct Failover {
    pool: MemoryKeyPool,
    calls: Arc<Mutex<Vec<(String, u32)>>>,
    records: Arc<Mutex<Vec<RequestRecord>>>,
    svc: BoxCloneSyncService<Request<ReplayBody>, Response<Bytes>, Error>,
}

impl Failover {
    fn new(statuses: &[(&'static str, u16)]) -> Self {
        let pool = MemoryKeyPool::new();
        pool.set_group(
            "a".into(),
            [
                KeySlot::new(KeyId(1), "a1".into()),
                KeySlot::new(KeyId(2), "a2".into()),
            ],
        );
        pool.set_group("b".into(), [KeySlot::new(KeyId(3), "b1".into())]);
        let table = RewriteTable::new();
        table.set_aggregate("agg".into(), [("a".into(), 100), ("b".into(), 1)]);
        let calls = Arc::new(Mutex::new(Vec::new()));
        let records = Arc::new(Mutex::new(Vec::new()));
        let statuses: HashMap<&'static str, u16> = statuses.iter().copied().collect();
        let upstream = {
            let calls = calls.clone();
            service_fn(move |req: Request<ReplayBody>| {
                let key = req.headers()["authorization"].to_str().unwrap()["Bearer ".len()..].to_owned();
                let attempt = req.extensions().get::<AttemptNumber>().map_or(1, |a| a.0);
                calls.lock().unwrap().push((key.clone(), attempt));
                let status = statuses.get(key.as_str()).copied().unwrap_or(200);
                // Upper case: an error body that echoed the key itself would be redacted.
                let from = key.to_uppercase();
                let mut res = Response::new(Full::from(format!(r#"{{"from":"{from}"}}"#)));
                *res.status_mut() = StatusCode::from_u16(status).unwrap();
                async move { Ok::<_, Error>(res) }
            })
        };
        let svc = ServiceBuilder::new()
            .layer(RequestLogLayer::new(Sink(records.clone())))
            .layer(RewriteLayer::new(table).available_when(pool.clone()))
            .layer(RetryLayer::new(RetryOnOtherKey::new(3).with_pool(pool.clone())))
            .layer(KeySelectLayer::new(pool.clone()))
            .layer(KeyHealthLayer::new(pool.clone()))
            .service(upstream)
            .and_then(collected);
        Self {
            pool,
            calls,
            records,
            svc: BoxCloneSyncService::new(svc),
        }
    }

    /// Sends one request; returns the status and the key that answered (upper case).
    async fn send(&self, settings: Option<RetrySettings>) -> (u16, String) {
        let mut req = request("agg", ChannelKind::OpenAi, "/v1/chat/completions", "{}");
        if let Some(settings) = settings {
            req.extensions_mut().insert(settings);
        }
        let res = self.svc.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let body: Value = serde_json::from_slice(res.body()).unwrap();
        (status, body["from"].as_str().unwrap().to_owned())
    }

    fn calls(&self) -> Vec<(String, u32)> {
        self.calls.lock().unwrap().clone()
    }

    /// `(type, attempt, group, parent group)` of every record, in order.
    fn records(&self) -> Vec<(RequestType, u32, String, Option<String>)> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.request_type,
                    r.attempt,
                    r.group.to_string(),
                    r.parent_group.as_ref().map(ToString::to_string),
                )
            })
            .collect()
    }
}

/// The response with its body read.
async fn collected<B>(res: Response<B>) -> Result<Response<Bytes>, Error>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<crate::error::BoxError>,
{
    let (parts, body) = res.into_parts();
    let body = body.collect().await.map_err(|e| Error::from_boxed(e.into()))?;
    Ok(Response::from_parts(parts, body.to_bytes()))
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<RequestRecord>>>);

impl LogSink for Sink {
    fn send(&self, record: RequestRecord) {
        self.0.lock().unwrap().push(record);
    }
}

#[tokio::test]
async fn an_aggregate_moves_to_the_next_sub_group_when_one_runs_out_of_keys() {
    let agg = Failover::new(&[("a1", 429), ("a2", 429)]);
    assert_eq!(agg.send(None).await, (200, "B1".to_owned()));
    let mut calls = agg.calls();
    calls[..2].sort();
    assert_eq!(
        calls,
        [("a1".to_owned(), 1), ("a2".to_owned(), 2), ("b1".to_owned(), 3)],
        "both keys of the first sub-group, then the other sub-group, numbered across both"
    );
    let a = (Some("agg".to_owned()), "a".to_owned());
    let records: Vec<_> = agg
        .records()
        .into_iter()
        .map(|(kind, attempt, group, parent)| (kind, attempt, (parent, group)))
        .collect();
    assert_eq!(
        records,
        [
            (RequestType::Retry, 1, a.clone()),
            (RequestType::Retry, 2, a),
            (RequestType::Final, 3, (Some("agg".to_owned()), "b".to_owned())),
        ]
    );
    // Both keys of `a` rest: the next request is routed to `b` straight away.
    assert!(!agg.pool.has_candidate("a", &ExcludedKeys::new()));
    assert_eq!(agg.send(None).await, (200, "B1".to_owned()));
    assert_eq!(agg.calls().len(), 4);
}

#[tokio::test]
async fn a_failing_provider_behind_a_sub_group_moves_the_request_too() {
    // A 5xx leaves the keys usable: the sub-group's retries re-use them, then the request moves.
    let agg = Failover::new(&[("a1", 502), ("a2", 502)]);
    assert_eq!(agg.send(None).await, (200, "B1".to_owned()));
    let calls = agg.calls();
    assert_eq!(
        calls.len(),
        5,
        "four attempts in `a` (max_retries 3), then `b`: {calls:?}"
    );
    assert_eq!(calls.last().unwrap(), &("b1".to_owned(), 5));
}

#[tokio::test]
async fn an_answer_for_the_client_stays_in_the_sub_group() {
    // 404 passes through: the request, not the sub-group, is wrong.
    let agg = Failover::new(&[("a1", 404), ("a2", 404)]);
    let (status, _) = agg.send(None).await;
    assert_eq!(status, 404);
    assert_eq!(agg.calls().len(), 1);
}

#[tokio::test]
async fn the_aggregates_retry_budget_bounds_the_moves() {
    let agg = Failover::new(&[("a1", 429), ("a2", 429)]);
    let (status, from) = agg.send(Some(RetrySettings { max_retries: 0 })).await;
    assert_eq!(status, 429, "no move with max_retries 0");
    assert!(from.starts_with('A'), "{from}");
    assert!(agg.calls().iter().all(|(key, _)| key.starts_with('a')));
}
