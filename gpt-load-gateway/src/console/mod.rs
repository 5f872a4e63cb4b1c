//! The web console (`web-console/`, a Vue single-page application), embedded in the binary and
//! served at `/`.
//!
//! # How the files get into the binary
//!
//! `build.rs` reads the built console, `web-console/dist` (or the directory named by the
//! `GPT_LOAD_CONSOLE_DIST` build-time variable, relative to the repository root), and writes a
//! table to `$OUT_DIR`: for every file its path, its contents through `include_bytes!` (of a copy
//! in `$OUT_DIR`), a gzip variant compressed once at build time (best level; kept when it saves
//! at least 10 %) and an ETag (80 bits of the SHA-256 of the contents). [`Console::embedded`]
//! turns that table into a map of `Bytes::from_static` slices: nothing is copied, read from disk
//! or compressed at run time. The steps shared with [`Console::from_dir`] live in [`prepare`].
//!
//! A build script rather than `rust-embed` or `include_dir` because it controls two things those
//! do not: the gzip variants and ETags are computed at build time (rust-embed's `compression`
//! feature compresses for size in the binary and decompresses per request; `include_dir` has no
//! compression), and the build script chooses what cargo watches, so a fresh clone without
//! `dist` builds (and tests) normally, and building the console later re-runs it. It needs no
//! crate beyond `flate2` and `sha2`, which the gateway uses anyway.
//!
//! Debug and release builds behave the same: both embed `dist` when it is built, so what the
//! tests and `make run` serve is what a release serves. After rebuilding the console, rebuild
//! the gateway (`make run` does both). Without a built console (`dist/index.html` missing) the
//! table is empty and every console path answers a short page that says how to build it
//! (`cd web-console && npm ci && npm run build`, or `make run`); a release build prints a
//! cargo warning about it.
//!
//! # What is answered
//!
//! The console is the router's fallback: the routes (`/proxy/{group}/…`, `/api/…`, `/health`,
//! `/metrics`) are matched first, and every other request gets:
//!
//! | path | answer |
//! |---|---|
//! | `/api*` (`/apifoo`), `/proxy*` not matched by a route | 404 `{"error":"Not Found"}` (as gpt-load), never the console; `/api` and paths below it get the admin API's envelope instead |
//! | a file of `dist` (`/index.html`, `/assets/index-3f2a.js`, `/favicon.ico`) | the file |
//! | `/`, or a path without a file extension (`/keys`, `/logs/xyz`) | `index.html`: the SPA's router takes over in the browser |
//! | any other missing file (`/assets/gone.js`, `/x.png`) | 404, so a stale page does not get HTML for its script |
//! | a method other than `GET` or `HEAD` | 405 with `Allow: GET, HEAD` |
//!
//! Headers: `Content-Type` from the extension; `Cache-Control: public, max-age=31536000,
//! immutable` for `/assets/*` (Vite puts a content hash in those names), `no-cache` for
//! everything else (`index.html` above all, so a new release is picked up at once; the ETag makes
//! the revalidation a 304); a strong `ETag` per representation (the gzip one ends in `-gz`) and
//! `If-None-Match` → 304 (weak comparison, `*` included); `Content-Encoding: gzip` when the
//! client accepts it (`Accept-Encoding`, q-values honoured) and the file has a gzip variant, with
//! `Vary: Accept-Encoding` on every file that has one; `X-Content-Type-Options: nosniff`;
//! `X-Frame-Options: DENY` on HTML (the console holds the admin key). `HEAD` answers the same
//! headers without a body. Brotli is not offered: gzip is what every browser accepts, and a
//! brotli encoder in the build script would slow every build for a page loaded once a session.
//! Nothing here touches `/proxy` responses, which stream through as the upstream sent them.

// Shared with `build.rs`, which uses the listing and compression; the gateway uses the ETags.
#[cfg_attr(not(test), expect(dead_code, reason = "build.rs uses the rest of the module"))]
pub(crate) mod prepare;

use std::{collections::HashMap, sync::Arc};

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header},
};
use bytes::Bytes;

/// `Cache-Control` of files whose names carry a content hash (`/assets/*`).
pub(crate) const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of everything else, `index.html` included: revalidate (a 304) before reuse.
pub(crate) const NO_CACHE: &str = "no-cache";

/// The page served at `/` by a binary built without the console.
const PLACEHOLDER: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gpt-load-gateway</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 44rem; margin: 4rem auto; padding: 0 1rem; line-height: 1.5; color: #222; }
code, pre { background: #f3f3f3; border-radius: 4px; }
code { padding: 0 .25rem; } pre { padding: .75rem 1rem; overflow-x: auto; }
</style>
</head>
<body>
<h1>gpt-load-gateway is running</h1>
<p>This binary was built without the web console, so there is no page to show here. The proxy
(<code>/proxy/{group}/&hellip;</code>), the admin API (<code>/api/&hellip;</code>),
<code>/health</code> and <code>/metrics</code> work as usual.</p>
<p>To get the console, build it, then build the gateway again (it embeds
<code>web-console/dist</code>):</p>
<pre>cd web-console &amp;&amp; npm ci &amp;&amp; npm run build
cd .. &amp;&amp; cargo build --release -p gpt-load-gateway</pre>
<p>or run <code>make run</code>, which does both and starts the gateway, or
<code>scripts/build-release.sh</code> for a release binary.</p>
</body>
</html>
"#;

/// One file of the table `build.rs` generates.
#[derive(Debug)]
struct EmbeddedFile {
    path: &'static str,
    body: &'static [u8],
    gzip: Option<&'static [u8]>,
    etag: &'static str,
}

/// The files embedded at build time: empty when the console was not built.
static EMBEDDED: &[EmbeddedFile] = include!(concat!(env!("OUT_DIR"), "/console_files.rs"));

/// A file ready to be answered.
#[derive(Debug)]
struct Asset {
    body: Bytes,
    gzip: Option<Bytes>,
    /// The identity representation's ETag, quoted.
    etag: HeaderValue,
    /// The gzip representation's ETag, quoted.
    etag_gzip: HeaderValue,
    content_type: &'static str,
}

impl Asset {
    fn new(path: &str, body: Bytes, gzip: Option<Bytes>, etag: &str) -> Self {
        Self {
            body,
            gzip,
            etag: quoted(&format!("\"{etag}\"")),
            etag_gzip: quoted(&format!("\"{etag}-gz\"")),
            content_type: content_type(path),
        }
    }
}

fn quoted(tag: &str) -> HeaderValue {
    // Hex digits and a suffix: always a valid header value.
    HeaderValue::from_str(tag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// The console's files, by path relative to the site root (`index.html`, `assets/x.js`).
#[derive(Clone, Debug)]
pub(crate) struct Console {
    files: Arc<HashMap<Box<str>, Asset>>,
    built: bool,
}

#[cfg(test)]
tokio::task_local! {
    /// The console [`Console::for_app`] returns inside this scope, so end-to-end tests serve a
    /// fixture directory (or none) whatever this build embedded.
    pub(crate) static OVERRIDE: Console;
}

impl Console {
    /// The console the gateway serves: the embedded one (in tests, the [`OVERRIDE`] when set).
    pub(crate) fn for_app() -> Self {
        #[cfg(test)]
        if let Ok(console) = OVERRIDE.try_with(Self::clone) {
            return console;
        }
        Self::embedded()
    }

    /// The files embedded at build time, or the placeholder page when there are none.
    pub(crate) fn embedded() -> Self {
        if EMBEDDED.is_empty() {
            return Self::placeholder();
        }
        let files = EMBEDDED
            .iter()
            .map(|f| {
                let asset = Asset::new(
                    f.path,
                    Bytes::from_static(f.body),
                    f.gzip.map(Bytes::from_static),
                    f.etag,
                );
                (Box::from(f.path), asset)
            })
            .collect();
        Self {
            files: Arc::new(files),
            built: true,
        }
    }

    /// A built console read from a directory now, prepared as `build.rs` prepares `dist`.
    #[cfg(test)]
    pub(crate) fn from_dir(dir: &std::path::Path) -> std::io::Result<Self> {
        let listed = prepare::list_files(dir)?.files;
        let mut files = HashMap::with_capacity(listed.len());
        for (path, location) in listed {
            let body = std::fs::read(location)?;
            let gzip = prepare::gzip(&path, &body).map(Bytes::from);
            let etag = prepare::etag(&body);
            let asset = Asset::new(&path, Bytes::from(body), gzip, &etag);
            files.insert(path.into_boxed_str(), asset);
        }
        let built = files.contains_key("index.html");
        if !built {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{}: no index.html", dir.display()),
            ));
        }
        Ok(Self {
            files: Arc::new(files),
            built,
        })
    }

    /// No console: every page path answers the page that says how to build one.
    pub(crate) fn placeholder() -> Self {
        let body = Bytes::from_static(PLACEHOLDER.as_bytes());
        let etag = prepare::etag(&body);
        let files = HashMap::from([(
            Box::from("index.html"),
            Asset::new("index.html", body, None, &etag),
        )]);
        Self {
            files: Arc::new(files),
            built: false,
        }
    }

    /// Whether this is a built console rather than the placeholder.
    pub(crate) fn is_built(&self) -> bool {
        self.built
    }

    /// How many files it has.
    pub(crate) fn len(&self) -> usize {
        self.files.len()
    }

    /// Answers a request the router did not match (see the module documentation).
    pub(crate) fn respond(&self, method: &Method, path: &str, headers: &HeaderMap) -> Response<Body> {
        if path.starts_with("/api") || path.starts_with("/proxy") {
            return json_not_found();
        }
        if method != Method::GET && method != Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
                .with_header(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        let relative = path.trim_start_matches('/');
        let (name, asset) = match self.files.get(relative) {
            Some(asset) => (relative, asset),
            None if is_page(relative) => match self.files.get("index.html") {
                Some(index) => ("index.html", index),
                None => return plain(StatusCode::NOT_FOUND, "Not Found"),
            },
            None => return plain(StatusCode::NOT_FOUND, "Not Found"),
        };
        let cache = if name.starts_with("assets/") {
            IMMUTABLE
        } else {
            NO_CACHE
        };
        let gzip = asset.gzip.as_ref().filter(|_| accepts_gzip(headers));
        let etag = if gzip.is_some() {
            &asset.etag_gzip
        } else {
            &asset.etag
        };
        let mut response = Response::builder()
            .header(header::CACHE_CONTROL, cache)
            .header(header::ETAG, etag.clone());
        if asset.gzip.is_some() {
            response = response.header(header::VARY, "Accept-Encoding");
        }
        if none_match(headers, &[&asset.etag, &asset.etag_gzip]) {
            return response
                .status(StatusCode::NOT_MODIFIED)
                .body(Body::empty())
                .unwrap_or_default();
        }
        let body = gzip.unwrap_or(&asset.body).clone();
        response = response
            .header(header::CONTENT_TYPE, asset.content_type)
            .header(header::CONTENT_LENGTH, body.len())
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        if gzip.is_some() {
            response = response.header(header::CONTENT_ENCODING, "gzip");
        }
        if asset.content_type.starts_with("text/html") {
            response = response.header(header::X_FRAME_OPTIONS, "DENY");
        }
        let body = if method == Method::HEAD {
            Body::empty()
        } else {
            Body::from(body)
        };
        response.body(body).unwrap_or_default()
    }
}

/// A path the single-page application routes itself: the root, or one whose last segment has no
/// file extension (`keys`, `logs/xyz`, `settings/`). Missing files (`assets/x.js`) are not.
fn is_page(relative: &str) -> bool {
    !relative.starts_with("assets/") && !relative.rsplit('/').next().unwrap_or("").contains('.')
}

/// gpt-load's answer to an unmatched `/api*` or `/proxy*` path.
fn json_not_found() -> Response<Body> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"error":"Not Found"}"#))
        .unwrap_or_default()
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, NO_CACHE)
        .body(Body::from(text))
        .unwrap_or_default()
}

trait WithHeader {
    fn with_header(self, name: header::HeaderName, value: HeaderValue) -> Self;
}

impl WithHeader for Response<Body> {
    fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers_mut().insert(name, value);
        self
    }
}

/// Whether `Accept-Encoding` accepts gzip: `gzip`, `x-gzip` or `*` with a q-value above 0 (an
/// explicit `gzip;q=0` wins over `*`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut star = false;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .or_else(|| p.trim().strip_prefix("Q="))
                })
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                return q > 0.0;
            }
            if coding == "*" {
                star = q > 0.0;
            }
        }
    }
    star
}

/// Whether `If-None-Match` matches one of these ETags (weak comparison, as RFC 9110 asks for
/// `If-None-Match`; `*` matches any).
fn none_match(headers: &HeaderMap, etags: &[&HeaderValue]) -> bool {
    fn opaque(tag: &str) -> &str {
        tag.trim().trim_start_matches("W/")
    }
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|candidate| {
            let candidate = opaque(candidate);
            candidate == "*"
                || etags
                    .iter()
                    .filter_map(|e| e.to_str().ok())
                    .any(|e| opaque(e) == candidate)
        })
}

/// The `Content-Type` of a console file, from its extension.
fn content_type(path: &str) -> &'static str {
    let extension = path
        .rsplit_once('.')
        .map_or("", |(_, ext)| ext)
        .to_ascii_lowercase();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" | "cjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (header::HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn accept_encoding_honours_q_values_and_wildcards() {
        let accepts = |v: &'static str| accepts_gzip(&headers(&[("accept-encoding", v)]));
        assert!(accepts("gzip"));
        assert!(accepts("br, gzip;q=0.5"));
        assert!(accepts("GZIP"));
        assert!(accepts("x-gzip"));
        assert!(accepts("*"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("*, gzip;q=0"));
        assert!(!accepts("br, deflate"));
        assert!(!accepts("identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn if_none_match_compares_weakly() {
        let tag = HeaderValue::from_static("\"abc\"");
        let gz = HeaderValue::from_static("\"abc-gz\"");
        let matches = |v: &'static str| none_match(&headers(&[("if-none-match", v)]), &[&tag, &gz]);
        assert!(matches("\"abc\""));
        assert!(matches("W/\"abc\""));
        assert!(matches("\"x\", \"abc-gz\""));
        assert!(matches("*"));
        assert!(!matches("\"abcd\""));
        assert!(!none_match(&HeaderMap::new(), &[&tag]));
    }

    #[test]
    fn pages_and_files_are_told_apart() {
        for page in ["", "keys", "logs/xyz", "settings/", "keys/1"] {
            assert!(is_page(page), "{page}");
        }
        for file in ["assets/x.js", "assets/page", "favicon.ico", "logs/a.txt"] {
            assert!(!is_page(file), "{file}");
        }
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("assets/a-1.JS"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("assets/a-1.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("logo.svg"), "image/svg+xml");
        assert_eq!(content_type("assets/f.woff2"), "font/woff2");
        assert_eq!(content_type("LICENSE"), "application/octet-stream");
    }

    #[test]
    fn gzip_variants_are_kept_only_when_they_help() {
        let text = "const answer = 42; export default answer;\n".repeat(100);
        let gz = prepare::gzip("assets/a.js", text.as_bytes()).expect("compressible");
        assert!(gz.len() < text.len() / 5);
        assert_eq!(
            prepare::gzip("assets/a.js", text.as_bytes()),
            Some(gz),
            "deterministic"
        );
        assert_eq!(prepare::gzip("a.js", b"tiny"), None);
        assert_eq!(prepare::gzip("a.png", text.as_bytes()), None);
        let noise: Vec<u8> = (0..128u32)
            .flat_map(|i| {
                use sha2::Digest as _;
                sha2::Sha256::digest(i.to_le_bytes())
            })
            .collect();
        assert_eq!(prepare::gzip("a.bin", &noise), None, "incompressible");
        assert_eq!(prepare::etag(b"x"), prepare::etag(b"x"));
        assert_ne!(prepare::etag(b"x"), prepare::etag(b"y"));
        assert_eq!(prepare::etag(b"x").len(), 20);
    }

    #[test]
    fn the_embedded_table_is_consistent() {
        let console = Console::embedded();
        assert_eq!(console.is_built(), !EMBEDDED.is_empty());
        assert!(console.files.contains_key("index.html"));
        for file in EMBEDDED {
            assert_eq!(file.etag, prepare::etag(file.body), "{}", file.path);
        }
    }
}
