//! Every rejection of the assembled stack, as a client sees it: status, headers and an error
//! body in the format its SDK parses.

use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use gpt_load_tower::{
    BoxError, Error, ProxyStack,
    auth::{ProxyKeyTable, StaticProxyKeys},
    body::ReplayBody,
    channel::ChannelKind,
    keys::{KeyId, KeySlot, MemoryKeyPool},
    limit::ConcurrencyLimitLayer,
    log::ChannelSink,
    rewrite::{GroupRules, RewriteTable},
    upstream::Upstreams,
};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower::{Service, ServiceExt, service_fn};

const PROXY_KEY: &str = "sk-proxy-test";

/// An upstream that fails the way the path asks it to.
fn upstream()
-> impl Service<Request<ReplayBody>, Response = Response<Full<Bytes>>, Error = BoxError, Future = impl Send>
+ Clone
+ Send
+ Sync
+ 'static {
    service_fn(|req: Request<ReplayBody>| async move {
        let path = req.uri().path().to_owned();
        if path.ends_with("/refused") {
            return Err::<_, BoxError>(Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "refused",
            )));
        }
        if path.ends_with("/slow") {
            return Err(Box::new(Error::upstream_timeout("response header")));
        }
        Ok(Response::new(Full::from("{}")))
    })
}

struct Setup {
    limit: ConcurrencyLimitLayer,
}

fn stack(
    setup: &Setup,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<impl http_body::Body<Data = Bytes, Error: std::fmt::Debug>>,
    Error = Infallible,
> + Clone {
    let keys = StaticProxyKeys::new(
        ProxyKeyTable::new()
            .global([PROXY_KEY])
            .group("oa", ChannelKind::OpenAi, Vec::<&str>::new())
            .group("claude", ChannelKind::Anthropic, Vec::<&str>::new())
            .group("gem", ChannelKind::Gemini, Vec::<&str>::new())
            .group("empty", ChannelKind::OpenAi, Vec::<&str>::new())
            .group("nowhere", ChannelKind::OpenAi, Vec::<&str>::new()),
    );
    let pool = MemoryKeyPool::new();
    let upstreams = Upstreams::new();
    for group in ["oa", "claude", "gem", "nowhere"] {
        pool.set_group(
            group.into(),
            [KeySlot::new(KeyId(1), format!("sk-{group}-upstream-0123").into())],
        );
    }
    for group in ["oa", "claude", "gem", "empty"] {
        upstreams
            .set_group(group.into(), [("http://upstream.test", 1)])
            .unwrap();
    }
    let rewrite = RewriteTable::new();
    rewrite.set_group(
        "oa".into(),
        GroupRules::new()
            .redirect_model("gpt-4", "gpt-4o")
            .strict_model(true),
    );
    let (sink, _records) = ChannelSink::new(16);
    ProxyStack::new(keys, pool, upstreams, sink)
        .rewrite(rewrite)
        .concurrency_limit(setup.limit.clone())
        .body_limit(64, false)
        .max_retries(0)
        .service(upstream())
}

async fn call(
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> (StatusCode, http::HeaderMap, Value) {
    let setup = Setup {
        limit: ConcurrencyLimitLayer::with_retry_after(10, Duration::from_secs(2)),
    };
    call_with(&setup, path, headers, body).await
}

async fn call_with(
    setup: &Setup,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> (StatusCode, http::HeaderMap, Value) {
    let mut req = Request::post(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = stack(setup)
        .oneshot(req.body(Full::from(body)).unwrap())
        .await
        .unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

const BEARER: (&str, &str) = ("authorization", "Bearer sk-proxy-test");

#[tokio::test]
async fn unauthorized_in_each_format() {
    let (status, headers, body) = call("/proxy/oa/v1/chat/completions", &[], "{}").await;
    assert_eq!(status, 401);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(body["error"]["code"], "unauthorized");

    let (status, _, body) = call("/proxy/claude/v1/messages", &[("x-api-key", "wrong")], "{}").await;
    assert_eq!(status, 401);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");

    let (status, _, body) = call(
        "/proxy/gem/v1beta/models/gemini-pro:generateContent?key=wrong",
        &[],
        "{}",
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], 401);
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
}

#[tokio::test]
async fn unknown_group_is_404() {
    let (status, _, body) = call("/proxy/missing/v1/chat/completions", &[BEARER], "{}").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "unknown_group");
}

#[tokio::test]
async fn overload_is_429_with_retry_after() {
    let setup = Setup {
        limit: ConcurrencyLimitLayer::with_retry_after(0, Duration::from_secs(2)),
    };
    let (status, headers, body) = call_with(&setup, "/proxy/claude/v1/messages", &[BEARER], "{}").await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn oversized_body_is_413() {
    let big = "{\"model\":\"gpt-4o\",\"pad\":\"........................................................\"}";
    let (status, _, body) = call("/proxy/oa/v1/chat/completions", &[BEARER], big).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "body_too_large");
}

#[tokio::test]
async fn strict_model_miss_is_400() {
    let (status, _, body) = call("/proxy/oa/v1/chat/completions", &[BEARER], r#"{"model":"o3"}"#).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("'o3'"));
}

#[tokio::test]
async fn no_key_is_503_and_no_upstream_is_502() {
    let (status, _, body) = call("/proxy/empty/v1/chat/completions", &[BEARER], "{}").await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "no_keys_available");
    let (status, _, body) = call("/proxy/nowhere/v1/chat/completions", &[BEARER], "{}").await;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["code"], "no_upstream");
}

#[tokio::test]
async fn transport_failures_are_502_and_timeouts_504() {
    let anthropic = [("x-api-key", PROXY_KEY), ("anthropic-version", "2023-06-01")];
    let (status, _, body) = call("/proxy/claude/v1/refused", &anthropic, "{}").await;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["type"], "api_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("refused"));
    let (status, _, body) = call("/proxy/gem/v1beta/slow", &[BEARER], "{}").await;
    assert_eq!(status, 504);
    assert_eq!(body["error"]["status"], "DEADLINE_EXCEEDED");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("response header timeout")
    );
}

#[tokio::test]
async fn success_passes_through() {
    let (status, _, body) = call("/proxy/oa/v1/chat/completions", &[BEARER], r#"{"model":"gpt-4"}"#).await;
    assert_eq!((status, body), (StatusCode::OK, serde_json::json!({})));
}
