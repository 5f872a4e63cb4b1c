//! The web console through real HTTP: SPA fallback, caching, ETags, gzip, and the paths that
//! must never fall back to it. A fixture directory stands in for `web-console/dist`, so these
//! tests do not depend on an npm build (or its absence).

use std::io::Read as _;

use bytes::Bytes;
use gpt_load_e2e::MockUpstream;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

use super::harness::{Harness, PROXY_KEY, group};
use crate::{
    console::{self, Console, IMMUTABLE, NO_CACHE},
    db::test_support::TestDb,
};

const INDEX: &str = "<!doctype html><html><head><script type=\"module\" src=\"/assets/index-3f2a9c.js\"></script>\
<link rel=\"stylesheet\" href=\"/assets/index-77b1e0.css\"></head><body><div id=\"app\"></div></body></html>\n";

fn script() -> String {
    "export function hello(name) { return `hello ${name}`; }\n".repeat(64)
}

fn stylesheet() -> String {
    "body { margin: 0; font-family: system-ui, sans-serif; }\n".repeat(32)
}

/// A built console as Vite lays it out.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("assets")).unwrap();
    std::fs::write(dir.path().join("index.html"), INDEX).unwrap();
    std::fs::write(dir.path().join("assets/index-3f2a9c.js"), script()).unwrap();
    std::fs::write(dir.path().join("assets/index-77b1e0.css"), stylesheet()).unwrap();
    std::fs::write(
        dir.path().join("favicon.svg"),
        "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
    )
    .unwrap();
    dir
}

/// A gateway serving `console` (and one group, `g`, for the proxy paths).
async fn start(console: Console) -> Harness {
    let mock = MockUpstream::start().await.unwrap();
    let groups = vec![group("g", &mock.url(), &["sk-console-test-0001"], json!({}))];
    console::OVERRIDE
        .scope(console, Harness::start(TestDb::sqlite().await, mock, groups, &[]))
        .await
}

async fn request(
    h: &Harness,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::builder().method(method).uri(format!("{}{path}", h.base));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    h.send(req.body(Full::default()).unwrap()).await
}

async fn get(h: &Harness, path: &str) -> (StatusCode, HeaderMap, Bytes) {
    request(h, "GET", path, &[]).await
}

fn header(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers.get(&name).map_or("", |v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spa_routes_fall_back_to_index_html_without_caching() {
    let dir = fixture();
    let h = start(Console::from_dir(dir.path()).unwrap()).await;
    for path in [
        "/",
        "/index.html",
        "/keys",
        "/logs/xyz",
        "/settings/",
        "/keys?group=1",
    ] {
        let (status, headers, body) = get(&h, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body, INDEX.as_bytes(), "{path} serves index.html");
        assert_eq!(header(&headers, header::CONTENT_TYPE), "text/html; charset=utf-8");
        assert_eq!(header(&headers, header::CACHE_CONTROL), NO_CACHE, "{path}");
        assert_eq!(header(&headers, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        assert_eq!(header(&headers, header::X_FRAME_OPTIONS), "DENY");
        assert!(header(&headers, header::ETAG).starts_with('"'), "{path}");
    }
    // index.html revalidates: its ETag answers 304 on every SPA path.
    let (_, headers, _) = get(&h, "/").await;
    let etag = header(&headers, header::ETAG).to_owned();
    let (status, headers, body) = request(&h, "GET", "/logs/xyz", &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(header(&headers, header::ETAG), etag);
    assert_eq!(header(&headers, header::CACHE_CONTROL), NO_CACHE);
    // Other root files are not hashed: no-cache too.
    let (status, headers, _) = get(&h, "/favicon.svg").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, header::CONTENT_TYPE), "image/svg+xml");
    assert_eq!(header(&headers, header::CACHE_CONTROL), NO_CACHE);
    // A missing file is a 404, not index.html served as a script; so is another method.
    for path in ["/assets/index-000000.js", "/missing.png", "/assets/"] {
        let (status, headers, _) = get(&h, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_ne!(header(&headers, header::CONTENT_TYPE), "text/html; charset=utf-8");
    }
    let (status, headers, _) = request(&h, "POST", "/keys", &[]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&headers, header::ALLOW), "GET, HEAD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_assets_are_cached_for_a_year_and_revalidate_with_etags() {
    let dir = fixture();
    let h = start(Console::from_dir(dir.path()).unwrap()).await;
    let (status, headers, body) = get(&h, "/assets/index-3f2a9c.js").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, script().as_bytes());
    assert_eq!(
        header(&headers, header::CONTENT_TYPE),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(header(&headers, header::CACHE_CONTROL), IMMUTABLE);
    assert_eq!(
        header(&headers, header::CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(header(&headers, header::CONTENT_LENGTH), body.len().to_string());
    assert_eq!(
        header(&headers, header::CONTENT_ENCODING),
        "",
        "not asked for gzip"
    );
    assert_eq!(header(&headers, header::VARY), "Accept-Encoding");
    let etag = header(&headers, header::ETAG).to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "a strong ETag: {etag}"
    );

    let (status, headers, _) = get(&h, "/assets/index-77b1e0.css").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, header::CONTENT_TYPE), "text/css; charset=utf-8");
    assert_eq!(header(&headers, header::CACHE_CONTROL), IMMUTABLE);
    assert_ne!(header(&headers, header::ETAG), etag, "one ETag per file");

    let weak = format!("W/{etag}");
    for presented in [
        etag.as_str(),
        weak.as_str(),
        "\"other\", *",
        &format!("\"x\", {etag}"),
    ] {
        let (status, headers, body) = request(
            &h,
            "GET",
            "/assets/index-3f2a9c.js",
            &[("if-none-match", presented)],
        )
        .await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{presented}");
        assert!(body.is_empty());
        assert_eq!(header(&headers, header::ETAG), etag);
        assert_eq!(header(&headers, header::CACHE_CONTROL), IMMUTABLE);
    }
    let (status, _, body) = request(
        &h,
        "GET",
        "/assets/index-3f2a9c.js",
        &[("if-none-match", "\"stale\"")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "a stale ETag gets the file");
    assert_eq!(body, script().as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_is_served_when_accepted_and_head_matches_get() {
    let dir = fixture();
    let h = start(Console::from_dir(dir.path()).unwrap()).await;
    let gzip = [("accept-encoding", "gzip, deflate, br")];
    let (status, headers, body) = request(&h, "GET", "/assets/index-3f2a9c.js", &gzip).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, header::CONTENT_ENCODING), "gzip");
    assert_eq!(header(&headers, header::VARY), "Accept-Encoding");
    assert_eq!(header(&headers, header::CONTENT_LENGTH), body.len().to_string());
    assert!(
        body.len() < script().len() / 4,
        "compressed: {} bytes",
        body.len()
    );
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut plain)
        .unwrap();
    assert_eq!(plain, script());
    let gzip_etag = header(&headers, header::ETAG).to_owned();
    let (_, identity, _) = get(&h, "/assets/index-3f2a9c.js").await;
    assert_ne!(
        gzip_etag,
        header(&identity, header::ETAG),
        "each representation has its own ETag"
    );
    let (status, headers, _) = request(
        &h,
        "GET",
        "/assets/index-3f2a9c.js",
        &[("accept-encoding", "gzip"), ("if-none-match", &gzip_etag)],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(header(&headers, header::ETAG), gzip_etag);

    for refused in ["gzip;q=0", "br", "identity"] {
        let (_, headers, body) = request(
            &h,
            "GET",
            "/assets/index-3f2a9c.js",
            &[("accept-encoding", refused)],
        )
        .await;
        assert_eq!(header(&headers, header::CONTENT_ENCODING), "", "{refused}");
        assert_eq!(body, script().as_bytes(), "{refused}");
    }
    // index.html is too small to compress in the fixture: served as it is, with no Vary.
    let (_, headers, body) = request(&h, "GET", "/", &gzip).await;
    assert_eq!(header(&headers, header::CONTENT_ENCODING), "");
    assert_eq!(body, INDEX.as_bytes());

    for (path, accept) in [
        ("/", ""),
        ("/keys", ""),
        ("/assets/index-3f2a9c.js", ""),
        ("/assets/index-3f2a9c.js", "gzip"),
    ] {
        let (get_status, get_headers, get_body) =
            request(&h, "GET", path, &[("accept-encoding", accept)]).await;
        let (status, headers, body) = request(&h, "HEAD", path, &[("accept-encoding", accept)]).await;
        assert_eq!(status, get_status, "HEAD {path}");
        assert!(body.is_empty(), "HEAD {path} has no body");
        for name in [
            header::CONTENT_TYPE,
            header::CONTENT_LENGTH,
            header::CACHE_CONTROL,
            header::ETAG,
            header::CONTENT_ENCODING,
        ] {
            assert_eq!(
                header(&headers, name.clone()),
                header(&get_headers, name.clone()),
                "HEAD {path}: {name}"
            );
        }
        assert_eq!(
            header(&headers, header::CONTENT_LENGTH),
            get_body.len().to_string()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_proxy_paths_never_fall_back_to_the_console() {
    let dir = fixture();
    let h = start(Console::from_dir(dir.path()).unwrap()).await;
    // Under `/api` the admin API's envelope; elsewhere gpt-load's `{"error":"Not Found"}`.
    let envelope = json!({"code": "NOT_FOUND", "message": "route not found"});
    let not_found = json!({"error": "Not Found"});
    for (path, expected) in [
        ("/api/nope", &envelope),
        ("/api/groups/nope/deeper", &envelope),
        ("/api", &envelope),
        ("/api/", &envelope),
        ("/apifoo", &not_found),
        ("/proxy", &not_found),
        ("/proxy/", &not_found),
        ("/proxyfoo", &not_found),
    ] {
        for method in ["GET", "POST"] {
            let (status, headers, body) = request(&h, method, path, &[("accept", "text/html")]).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
            assert_eq!(
                serde_json::from_slice::<Value>(&body).ok().as_ref(),
                Some(expected),
                "{method} {path}"
            );
            assert_eq!(header(&headers, header::CONTENT_TYPE), "application/json");
        }
    }
    // `/proxy/{group}/…` belongs to the proxy: its own JSON errors, never index.html.
    let bearer = format!("Bearer {PROXY_KEY}");
    let (status, headers, body) =
        request(&h, "GET", "/proxy/nope/v1/models", &[("authorization", &bearer)]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "unknown group");
    assert!(header(&headers, header::CONTENT_TYPE).starts_with("application/json"));
    assert!(serde_json::from_slice::<Value>(&body).is_ok());
    let (status, headers, _) = get(&h, "/proxy/g/nope").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no proxy key");
    assert!(header(&headers, header::CONTENT_TYPE).starts_with("application/json"));
    // A proxied answer is passed through as the upstream sent it, never compressed here.
    let (status, headers, body) = h
        .send(
            Request::post(format!("{}/proxy/g/v1/chat/completions", h.base))
                .header("authorization", &bearer)
                .header("accept-encoding", "gzip")
                .header("content-type", "application/json")
                .body(Full::from(
                    json!({"model": "gpt-4o-mini", "messages": []}).to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, header::CONTENT_ENCODING), "");
    assert!(serde_json::from_slice::<Value>(&body).is_ok());
    // The admin API, health and metrics are unchanged.
    let (status, body) = h.call_api("GET", "/groups/list", None).await;
    assert_eq!((status, body["code"].as_i64()), (StatusCode::OK, Some(0)));
    let (status, headers, body) = get(&h, "/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["status"], "ok");
    assert!(header(&headers, header::CONTENT_TYPE).starts_with("application/json"));
    let (status, headers, _) = get(&h, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(header(&headers, header::CONTENT_TYPE).starts_with("text/plain"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_console_every_page_says_how_to_build_it() {
    let h = start(Console::placeholder()).await;
    for path in ["/", "/keys", "/logs/xyz"] {
        let (status, headers, body) = get(&h, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(header(&headers, header::CONTENT_TYPE), "text/html; charset=utf-8");
        assert_eq!(header(&headers, header::CACHE_CONTROL), NO_CACHE);
        let page = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            page.contains("cd web-console &amp;&amp; npm ci &amp;&amp; npm run build"),
            "{page}"
        );
        assert!(page.contains("make run"), "{page}");
    }
    let (status, _, _) = get(&h, "/assets/index-3f2a9c.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, body) = get(&h, "/api/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"code": "NOT_FOUND", "message": "route not found"})
    );
    let (status, _, body) = get(&h, "/apifoo").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"error": "Not Found"})
    );
}

#[test]
fn a_directory_without_index_html_is_not_a_console() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.js"), "x").unwrap();
    assert!(Console::from_dir(dir.path()).is_err());
    assert!(!Console::placeholder().is_built());
    assert!(Console::from_dir(fixture().path()).unwrap().is_built());
}
