//! Runs both examples against the mock upstream: rotation across keys, retry on another key
//! after a 500, and an SSE stream passing through frame by frame.

use std::{collections::BTreeMap, time::Instant};

use bytes::Bytes;
use examples::{ExampleConfig, axum_existing_app, hyper_server};
use gpt_load_e2e::{MockConfig, MockUpstream};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::net::TcpListener;

#[derive(Clone, Copy, Debug)]
enum Example {
    Axum,
    Hyper,
}

const BOTH: [Example; 2] = [Example::Axum, Example::Hyper];

/// Starts `example` on an ephemeral port; returns the URL prefix of the group.
async fn start(example: Example, config: ExampleConfig) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let group = config.group.clone();
    match example {
        Example::Axum => {
            tokio::spawn(axum_existing_app::serve(listener, config));
            format!("http://{addr}/llm/{group}")
        }
        Example::Hyper => {
            tokio::spawn(hyper_server::serve(listener, config));
            format!("http://{addr}/proxy/{group}")
        }
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn chat(url: &str, proxy_key: &str, stream: bool) -> Request<Full<Bytes>> {
    let body = format!(
        r#"{{"model":"gpt-4o-mini","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    Request::post(format!("{url}/v1/chat/completions"))
        .header("authorization", format!("Bearer {proxy_key}"))
        .header("content-type", "application/json")
        .body(Full::from(body))
        .unwrap()
}

async fn text(res: http::Response<hyper::body::Incoming>) -> String {
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn rotates_across_keys() {
    for example in BOTH {
        let mock = MockUpstream::start().await.unwrap();
        let config = ExampleConfig::new(mock.url(), &["key-a", "key-b"]);
        let url = start(example, config.clone()).await;
        for _ in 0..4 {
            let res = client()
                .request(chat(&url, &config.proxy_key, false))
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{example:?}");
            assert!(text(res).await.contains("hello from gpt-4o-mini"));
        }
        let expected: BTreeMap<String, u64> = [("key-a".to_owned(), 2), ("key-b".to_owned(), 2)].into();
        assert_eq!(mock.requests_by_key(), expected, "{example:?}");
        let credentials: Vec<_> = mock
            .received()
            .into_iter()
            .map(|r| r.credential.unwrap())
            .collect();
        assert!(
            !credentials.contains(&config.proxy_key),
            "the proxy key never reaches the upstream"
        );
    }
}

#[tokio::test]
async fn retries_on_another_key_after_a_401_and_blacklists_it() {
    for example in BOTH {
        let mock = MockUpstream::start().await.unwrap();
        let config = ExampleConfig::new(mock.url(), &["mock-401-broken", "key-good"]);
        let url = start(example, config.clone()).await;
        for _ in 0..4 {
            let res = client()
                .request(chat(&url, &config.proxy_key, false))
                .await
                .unwrap();
            assert_eq!(
                res.status(),
                StatusCode::OK,
                "{example:?}: the 401 was retried on the good key"
            );
        }
        let by_key = mock.requests_by_key();
        assert_eq!(by_key.get("key-good"), Some(&4), "{example:?}");
        let broken = by_key.get("mock-401-broken").copied().unwrap_or(0);
        assert!(
            (1..=3).contains(&broken),
            "{example:?}: the broken key failed {broken} times, then was blacklisted"
        );
    }
}

#[tokio::test]
async fn wrong_proxy_key_gets_an_openai_error() {
    for example in BOTH {
        let mock = MockUpstream::start().await.unwrap();
        let url = start(example, ExampleConfig::new(mock.url(), &["k"])).await;
        let res = client()
            .request(chat(&url, "not-the-proxy-key", false))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let body: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
        assert_eq!(body["error"]["type"], "authentication_error", "{example:?}");
        assert_eq!(mock.total_requests(), 0);
    }
}

#[tokio::test]
async fn sse_streams_frame_by_frame() {
    for example in BOTH {
        let pace = std::time::Duration::from_millis(40);
        let mock = MockUpstream::start_with(MockConfig::default().with_sse_frames(5).with_sse_pace(pace))
            .await
            .unwrap();
        let config = ExampleConfig::new(mock.url(), &["key-a"]);
        let url = start(example, config.clone()).await;
        let res = client()
            .request(chat(&url, &config.proxy_key, true))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let mut body = res.into_body();
        let mut arrivals = Vec::new();
        let mut all = String::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                arrivals.push((Instant::now(), String::from_utf8_lossy(&data).into_owned()));
                all.push_str(&String::from_utf8_lossy(&data));
            }
        }
        let text_frames = arrivals
            .iter()
            .filter(|(_, f)| f.contains("chat.completion.chunk"))
            .count();
        assert!(
            text_frames >= 5,
            "{example:?}: {} frames, the stream was buffered",
            arrivals.len()
        );
        assert!(
            arrivals.first().unwrap().0 < arrivals.last().unwrap().0,
            "frames arrive over time"
        );
        assert!(all.contains("data: [DONE]"), "{example:?}");
        assert!(all.contains("hello from gpt-4o-mini"));
    }
}

#[tokio::test]
async fn the_axum_app_keeps_its_own_routes() {
    let mock = MockUpstream::start().await.unwrap();
    let config = ExampleConfig::new(mock.url(), &["key-a"]);
    let url = start(Example::Axum, config).await;
    let root = url.trim_end_matches("/llm/demo");
    let res = client()
        .request(Request::get(format!("{root}/")).body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(text(res).await.contains("existing application"));
    let res = client()
        .request(
            Request::get(format!("{root}/keys"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let keys: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(keys[0]["state"], "active");
    assert_eq!(keys[0]["key"], "****", "keys are shown masked");
}
