//! A gzip model list is decompressed with a cap on its output, through the real stack: an
//! upstream answering a gzip bomb (a few KiB that expand past the cap) gets the client a `502`
//! in its own error format, while a small gzip list is merged with the group's redirect rules.

use std::io::Write;

use axum::{Router, http::header, routing::get};
use gpt_load_e2e::MockUpstream;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::harness::{Harness, PROXY_KEY, group};
use crate::{db::test_support::TestDb, proxy::LIST_LIMIT};

fn gzip(plain: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(plain).unwrap();
    encoder.finish().unwrap()
}

/// A valid model list padded with whitespace to eight times the cap: valid JSON if it were read
/// whole, so only its size can refuse it.
fn bomb() -> Vec<u8> {
    let mut plain = br#"{"object":"list","data":[{"id":"upstream-model","object":"model"}]"#.to_vec();
    plain.resize(plain.len() + 8 * LIST_LIMIT, b' ');
    plain.push(b'}');
    let compressed = gzip(&plain);
    assert!(compressed.len() < 64 * 1024, "a few KiB: {}", compressed.len());
    compressed
}

/// An upstream serving a gzip bomb under `/bomb` and a small gzip list under `/small`.
async fn gzip_upstream() -> String {
    let bomb = bomb();
    let small = gzip(
        json!({"object": "list", "data": [{"id": "upstream-model", "object": "model"}]})
            .to_string()
            .as_bytes(),
    );
    let answer = |body: Vec<u8>| {
        move || async move {
            (
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CONTENT_ENCODING, "gzip"),
                ],
                body,
            )
        }
    };
    let app = Router::new()
        .route("/bomb/v1/models", get(answer(bomb)))
        .route("/small/v1/models", get(answer(small)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn aliased(name: &str, upstream: &str) -> Value {
    let mut g = group(name, upstream, &["sk-model-list-0123456789"], json!({}));
    g["model_redirect_rules"] = json!({"alias-model": "gpt-4o-mini"});
    g
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_model_list_past_the_cap_is_refused() {
    let upstream = gzip_upstream().await;
    let mock = MockUpstream::start().await.unwrap();
    let groups = vec![
        aliased("bomb", &format!("{upstream}/bomb")),
        aliased("small", &format!("{upstream}/small")),
    ];
    let h = Harness::start(TestDb::sqlite().await, mock, groups, &[]).await;
    let list = |group: &str| {
        Request::get(format!("{}/proxy/{group}/v1/models", h.base))
            .header(header::AUTHORIZATION, format!("Bearer {PROXY_KEY}"))
            .body(Full::default())
            .unwrap()
    };

    let (status, headers, body) = h.send(list("small")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers.get(header::CONTENT_ENCODING).is_none(),
        "decoded and rewritten"
    );
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let ids: Vec<&str> = answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"upstream-model") && ids.contains(&"alias-model"),
        "{ids:?}"
    );

    let (status, headers, body) = h.send(list("bomb")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(headers.get(header::CONTENT_ENCODING).is_none());
    assert!(body.len() < 4096, "an error, not the list: {} bytes", body.len());
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("decompresses to more than {LIST_LIMIT} bytes")),
        "OpenAI's error format naming the cap: {answer}"
    );
}
