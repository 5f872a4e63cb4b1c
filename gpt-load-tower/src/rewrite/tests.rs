use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

use super::*;
use crate::{
    body::ReplayBody,
    channel::ChannelKind,
    context::{ClientIp, RoutedGroup, target_group},
    error::{Error, ErrorKind},
    keys::{KeyId, KeyPool, KeySelectLayer, KeySlot, MemoryKeyPool, Report, SelectedKey},
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
