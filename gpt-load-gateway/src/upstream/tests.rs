//! The client against real sockets on 127.0.0.1: the shared mock upstream, and small
//! hand-written proxies and listeners.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use gpt_load_e2e::{Behaviour, MockConfig, MockUpstream};
use gpt_load_tower::{Error, ErrorKind, body::ReplayBody, channel::RequestFacts};
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    task::JoinHandle,
};
use tower::ServiceExt;

use super::{
    ClientSettings, UpstreamClient,
    body::UpstreamBody,
    settings::{PoolSettings, ProxySetting},
};

/// Generous limits, direct connections: each test tightens the one it is about.
fn settings() -> ClientSettings {
    let mut settings = ClientSettings {
        response_header_timeout: Duration::from_secs(30),
        request_timeout: Duration::from_secs(30),
        stream_idle_timeout: Duration::from_secs(30),
        ..ClientSettings::default()
    };
    settings.pool.connect_timeout = Duration::from_secs(10);
    settings.pool.proxy = ProxySetting::None;
    settings
}

fn client(settings: ClientSettings) -> UpstreamClient {
    UpstreamClient::new(settings).unwrap()
}

/// `POST {base}/v1/chat/completions` with `key`; `stream` sets both the JSON field and the
/// request facts the layers above would have recorded.
fn chat(base: &str, key: &str, stream: bool) -> Request<ReplayBody> {
    let mut req = Request::post(format!("{base}/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(ReplayBody::new(format!(r#"{{"model":"m","stream":{stream}}}"#)))
        .unwrap();
    if stream {
        req.extensions_mut().insert(RequestFacts {
            model: Some("m".to_owned()),
            stream: true,
            ..RequestFacts::default()
        });
    }
    req
}

/// Sets the mock's stream shape for one request.
fn paced(mut req: Request<ReplayBody>, frames: usize, pace: Duration) -> Request<ReplayBody> {
    let headers = req.headers_mut();
    headers.insert("x-mock-frames", frames.into());
    headers.insert("x-mock-pace-ms", u64::try_from(pace.as_millis()).unwrap().into());
    req
}

async fn send(client: &UpstreamClient, req: Request<ReplayBody>) -> Result<Response<UpstreamBody>, Error> {
    client.clone().oneshot(req).await
}

/// Every data frame of `body`, or the error that ended it (with the frames before it).
async fn frames(mut body: UpstreamBody) -> (Vec<Bytes>, Option<Error>) {
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => frames.extend(frame.into_data().ok()),
            Err(err) => return (frames, Some(err)),
        }
    }
    (frames, None)
}

fn text(frames: &[Bytes]) -> String {
    frames.iter().map(|f| String::from_utf8_lossy(f)).collect()
}

fn assert_timeout(err: &Error, phase: &str) {
    assert_eq!(err.kind(), ErrorKind::UpstreamTimeout, "{err:?}");
    assert!(err.message().contains(phase), "{}", err.message());
    assert!(err.is_retryable());
}

#[tokio::test]
async fn plain_round_trip() {
    let mock = MockUpstream::start().await.unwrap();
    let client = client(settings());
    let res = send(&client, chat(&mock.url(), "sk-plain", false)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (frames, err) = frames(res.into_body()).await;
    assert!(err.is_none(), "{err:?}");
    let json: serde_json::Value = serde_json::from_str(&text(&frames)).unwrap();
    assert_eq!(json["choices"][0]["message"]["content"], "hello from m");
    let received = mock.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].credential.as_deref(), Some("sk-plain"));
    assert_eq!(received[0].path, "/v1/chat/completions");
    assert_eq!(&received[0].body[..], br#"{"model":"m","stream":false}"#);

    // A client that spoke HTTP/2 to the gateway is still sent over HTTP/1.1 to this upstream.
    let mut req = chat(&mock.url(), "sk-plain", false);
    *req.version_mut() = http::Version::HTTP_2;
    assert_eq!(send(&client, req).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn sse_frames_arrive_one_by_one() {
    let mock = MockUpstream::start_with(MockConfig::default().with_sse_frames(6))
        .await
        .unwrap();
    let client = client(settings());
    let req = paced(chat(&mock.url(), "sk-stream", true), 6, Duration::from_millis(30));
    let res = send(&client, req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    // The first text frame is here long before the paced rest could be.
    let first_text = loop {
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        if String::from_utf8_lossy(&frame).contains("hello from m") {
            break frame;
        }
    };
    assert!(!body.is_end_stream());
    let (rest, err) = frames(body).await;
    assert!(err.is_none(), "{err:?}");
    let mut all = vec![first_text];
    all.extend(rest);
    // One SSE event per body frame: nothing was buffered or merged.
    for frame in &all {
        let frame = String::from_utf8_lossy(frame);
        assert_eq!(frame.matches("data: ").count(), 1, "{frame:?}");
        assert!(frame.ends_with("\n\n"), "{frame:?}");
    }
    let text = text(&all);
    for i in 1..6 {
        assert!(text.contains(&format!(" #{i}")), "{text}");
    }
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}

#[tokio::test]
async fn a_stream_the_upstream_cuts_ends_with_an_upstream_error() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("sk-cut", Behaviour::DisconnectMidStream { after_frames: 2 });
    let res = send(&client(settings()), chat(&mock.url(), "sk-cut", true))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (received, err) = frames(res.into_body()).await;
    assert!(text(&received).contains(" #1"), "{}", text(&received));
    let err = err.expect("the stream is cut");
    assert_eq!(err.kind(), ErrorKind::Upstream, "{err:?}");
}

#[tokio::test]
async fn a_refused_connection_is_an_upstream_error() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = send(&client(settings()), chat(&format!("http://{addr}"), "k", false))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Upstream, "{err:?}");
    assert!(err.is_retryable());
    assert!(
        err.message().to_lowercase().contains("refused"),
        "{}",
        err.message()
    );
}

/// A listener whose accept queue is full: the kernel drops further SYNs, so connects hang.
/// `None` when this system does not behave that way.
async fn full_listener() -> Option<(TcpListener, Vec<TcpStream>)> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind((Ipv4Addr::LOCALHOST, 0).into()).ok()?;
    let listener = socket.listen(1).ok()?;
    let addr = listener.local_addr().ok()?;
    let mut queued = Vec::new();
    for _ in 0..64 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => queued.push(stream),
            Ok(Err(_)) => return None,
            Err(_) => return Some((listener, queued)),
        }
    }
    None
}

#[tokio::test]
async fn a_connect_that_hangs_is_a_connect_timeout() {
    let Some((listener, _queued)) = full_listener().await else {
        eprintln!(
            "SKIP a_connect_that_hangs_is_a_connect_timeout: connects to a full listener do not hang here"
        );
        return;
    };
    let addr = listener.local_addr().unwrap();
    let client = client(ClientSettings {
        pool: PoolSettings {
            connect_timeout: Duration::from_millis(200),
            ..settings().pool
        },
        ..settings()
    });
    let err = send(&client, chat(&format!("http://{addr}"), "k", false))
        .await
        .unwrap_err();
    assert_timeout(&err, "connect");
}

#[tokio::test]
async fn a_slow_response_head_is_a_response_header_timeout() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("sk-slow", Behaviour::SlowFirstByte(Duration::from_secs(5)));
    let client = client(ClientSettings {
        response_header_timeout: Duration::from_millis(150),
        ..settings()
    });
    let err = send(&client, chat(&mock.url(), "sk-slow", false))
        .await
        .unwrap_err();
    assert_timeout(&err, "response header");

    // The same client waits for a head that comes within the limit.
    mock.script("sk-slowish", Behaviour::SlowFirstByte(Duration::from_millis(10)));
    let res = send(&client, chat(&mock.url(), "sk-slowish", false))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_request_timeout_covers_head_and_body_of_non_streamed_requests() {
    let mock = MockUpstream::start().await.unwrap();
    let client = client(ClientSettings {
        request_timeout: Duration::from_millis(300),
        ..settings()
    });

    // A body that would take 40 × 50 ms: the head arrives, the body is cut.
    let req = chat(&mock.url(), "sk-long", true);
    let mut req = paced(req, 40, Duration::from_millis(50));
    req.extensions_mut().remove::<RequestFacts>();
    let res = send(&client, req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (received, err) = frames(res.into_body()).await;
    assert!(!received.is_empty());
    assert_timeout(&err.expect("the body is cut"), "request");

    // A head slower than the whole request may take.
    mock.script("sk-slow", Behaviour::SlowFirstByte(Duration::from_secs(5)));
    let err = send(&client, chat(&mock.url(), "sk-slow", false))
        .await
        .unwrap_err();
    assert_timeout(&err, "request");
}

#[tokio::test]
async fn streamed_requests_have_no_total_limit() {
    let mock = MockUpstream::start().await.unwrap();
    let client = client(ClientSettings {
        request_timeout: Duration::from_millis(100),
        ..settings()
    });
    let req = paced(
        chat(&mock.url(), "sk-stream", true),
        6,
        Duration::from_millis(100),
    );
    let res = send(&client, req).await.unwrap();
    let (received, err) = frames(res.into_body()).await;
    assert!(err.is_none(), "{err:?}");
    assert!(text(&received).ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn the_stream_idle_timeout_fires_between_slow_frames_only() {
    let mock = MockUpstream::start().await.unwrap();
    let client = client(ClientSettings {
        stream_idle_timeout: Duration::from_millis(150),
        ..settings()
    });

    let req = paced(chat(&mock.url(), "sk-stalls", true), 3, Duration::from_secs(3));
    let res = send(&client, req).await.unwrap();
    let (received, err) = frames(res.into_body()).await;
    assert!(
        text(&received).contains("hello from m"),
        "frames before the silence pass"
    );
    assert!(!text(&received).contains(" #1"));
    assert_timeout(&err.expect("the stream is cut"), "stream idle");

    let client = client_with_idle(Duration::from_secs(3));
    let req = paced(chat(&mock.url(), "sk-flows", true), 5, Duration::from_millis(20));
    let res = send(&client, req).await.unwrap();
    let (received, err) = frames(res.into_body()).await;
    assert!(err.is_none(), "{err:?}");
    assert!(text(&received).contains(" #4"));
}

fn client_with_idle(idle: Duration) -> UpstreamClient {
    client(ClientSettings {
        stream_idle_timeout: idle,
        ..settings()
    })
}

#[tokio::test]
async fn per_request_settings_replace_the_defaults() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("sk-slow", Behaviour::SlowFirstByte(Duration::from_millis(300)));
    let client = client(settings());

    // The defaults wait for the slow head.
    let res = send(&client, chat(&mock.url(), "sk-slow", false)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // A group with a tight limit does not; timeouts alone need no pool of their own.
    let tight = Arc::new(ClientSettings {
        response_header_timeout: Duration::from_millis(50),
        ..settings()
    });
    let mut req = chat(&mock.url(), "sk-slow", false);
    req.extensions_mut().insert(Arc::clone(&tight));
    assert_timeout(&send(&client, req).await.unwrap_err(), "response header");
    // Settings by value work too.
    let mut req = chat(&mock.url(), "sk-slow", false);
    req.extensions_mut().insert((*tight).clone());
    assert_timeout(&send(&client, req).await.unwrap_err(), "response header");
    assert_eq!(client.pool_count(), 0);

    // A group behind a proxy gets its own pool, shared by every request with those settings.
    let proxy = ConnectProxy::start().await;
    let proxied = ClientSettings {
        pool: PoolSettings {
            proxy: ProxySetting::Url(format!("http://{}", proxy.addr)),
            ..settings().pool
        },
        ..settings()
    };
    for key in ["sk-a", "sk-b"] {
        let mut req = chat(&mock.url(), key, false);
        req.extensions_mut().insert(Arc::new(proxied.clone()));
        assert_eq!(send(&client, req).await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(client.pool_count(), 1);
    assert_eq!(
        proxy.targets(),
        vec![mock.addr().to_string()],
        "one pooled tunnel"
    );
    let other = ClientSettings {
        pool: PoolSettings {
            max_idle_per_host: 1,
            ..proxied.pool
        },
        ..proxied
    };
    let mut req = chat(&mock.url(), "sk-c", false);
    req.extensions_mut().insert(other);
    assert_eq!(send(&client, req).await.unwrap().status(), StatusCode::OK);
    assert_eq!(client.pool_count(), 2);
    assert_eq!(mock.total_requests(), 6);
}

#[tokio::test]
async fn through_an_http_connect_proxy_with_credentials() {
    let mock = MockUpstream::start().await.unwrap();
    let proxy = ConnectProxy::start().await;
    let client = client(ClientSettings {
        pool: PoolSettings {
            proxy: ProxySetting::Url(format!("http://gw:pa%40ss@{}", proxy.addr)),
            ..settings().pool
        },
        ..settings()
    });
    let req = paced(chat(&mock.url(), "sk-proxied", true), 3, Duration::ZERO);
    let res = send(&client, req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (received, err) = frames(res.into_body()).await;
    assert!(err.is_none(), "{err:?}");
    assert!(text(&received).contains("hello from m"));
    assert_eq!(proxy.targets(), vec![mock.addr().to_string()]);
    // base64("gw:pa@ss")
    assert_eq!(proxy.auth(), vec![Some("Basic Z3c6cGFAc3M=".to_owned())]);
    assert_eq!(mock.received()[0].credential.as_deref(), Some("sk-proxied"));
}

#[tokio::test]
async fn a_proxy_that_is_down_is_an_upstream_error_naming_it() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = client(ClientSettings {
        pool: PoolSettings {
            proxy: ProxySetting::Url(format!("socks5://user:secret@{addr}")),
            ..settings().pool
        },
        ..settings()
    });
    let err = send(&client, chat("http://127.0.0.1:9", "k", false))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Upstream, "{err:?}");
    assert!(
        err.message().contains(&format!("socks5://{addr}")),
        "{}",
        err.message()
    );
    assert!(
        err.message().to_lowercase().contains("refused"),
        "{}",
        err.message()
    );
    assert!(!err.message().contains("secret"));
}

#[tokio::test]
async fn through_a_socks5_proxy() {
    let mock = MockUpstream::start().await.unwrap();
    let socks = Socks5Proxy::start(Some(("gw", "secret"))).await;

    // socks5://: the address goes to the proxy.
    let client = client(ClientSettings {
        pool: PoolSettings {
            proxy: ProxySetting::Url(format!("socks5://gw:secret@{}", socks.addr)),
            ..settings().pool
        },
        ..settings()
    });
    let res = send(&client, chat(&mock.url(), "sk-socks", false)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (received, err) = frames(res.into_body()).await;
    assert!(err.is_none(), "{err:?}");
    assert!(text(&received).contains("hello from m"));

    // socks5h://: the name goes to the proxy, which resolves it.
    let client = client_via(&format!("socks5h://gw:secret@{}", socks.addr));
    let base = format!("http://localhost:{}", mock.addr().port());
    let res = send(&client, chat(&base, "sk-socks-h", false)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let port = mock.addr().port();
    assert_eq!(
        socks.targets(),
        vec![format!("127.0.0.1:{port}"), format!("localhost:{port}")]
    );
    assert_eq!(mock.total_requests(), 2);

    // Wrong credentials fail the handshake.
    let client = client_via(&format!("socks5h://gw:wrong@{}", socks.addr));
    let err = send(&client, chat(&mock.url(), "k", false)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Upstream, "{err:?}");
    assert!(!err.message().contains("wrong"));
    assert_eq!(mock.total_requests(), 2);
}

fn client_via(proxy: &str) -> UpstreamClient {
    client(ClientSettings {
        pool: PoolSettings {
            proxy: ProxySetting::Url(proxy.to_owned()),
            ..settings().pool
        },
        ..settings()
    })
}

#[tokio::test]
async fn tls_runs_on_ring_and_fails_cleanly_against_a_plain_server() {
    // The TLS handshake meets an HTTP/1.1 server: a transport error, not a hang or a timeout.
    let mock = MockUpstream::start().await.unwrap();
    let client = client(ClientSettings {
        pool: PoolSettings {
            connect_timeout: Duration::from_secs(5),
            ..settings().pool
        },
        ..settings()
    });
    let err = send(&client, chat(&format!("https://{}", mock.addr()), "k", false))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Upstream, "{err:?}");
}

#[tokio::test]
async fn serves_as_the_client_of_the_proxy_stack() {
    use gpt_load_tower::{
        ProxyStack,
        auth::{ProxyKeyTable, StaticProxyKeys},
        channel::ChannelKind,
        keys::{KeyId, KeySlot, MemoryKeyPool},
        upstream::Upstreams,
    };
    use http_body_util::Full;

    let mock = MockUpstream::start().await.unwrap();
    mock.script("sk-slow", Behaviour::SlowFirstByte(Duration::from_secs(5)));
    let keys = StaticProxyKeys::new(ProxyKeyTable::new().group("openai", ChannelKind::OpenAi, ["pk"]));
    let pool = MemoryKeyPool::new();
    pool.set_group(
        "openai".into(),
        [
            KeySlot::new(KeyId(1), "sk-slow".into()),
            KeySlot::new(KeyId(2), "sk-good".into()),
        ],
    );
    let upstreams = Upstreams::new();
    upstreams
        .set_group("openai".into(), [(mock.url().as_str(), 1)])
        .unwrap();
    let client = client(ClientSettings {
        response_header_timeout: Duration::from_millis(200),
        ..settings()
    });
    let proxy = ProxyStack::new(keys, pool, upstreams, |_record| {}).service(client);

    // Whichever key comes first, the slow one times out and the request is retried on the other.
    for _ in 0..2 {
        let req = Request::post("/proxy/openai/v1/chat/completions")
            .header("authorization", "Bearer pk")
            .header("x-mock-pace-ms", "10")
            .body(Full::from(r#"{"model":"m","stream":true}"#))
            .unwrap();
        let res = proxy.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("hello from m") && body.ends_with("data: [DONE]\n\n"),
            "{body}"
        );
    }
    assert_eq!(mock.requests_by_key().get("sk-good"), Some(&2));
}

#[tokio::test]
async fn max_idle_conns_limits_the_connections_the_pool_keeps() {
    let upstream = CountingUpstream::start(Duration::from_millis(200)).await;
    let url = format!("http://{}", upstream.addr);
    // Three requests at once need three connections; afterwards the pool keeps as many idle as
    // the group's settings allow and closes the others.
    for (config, kept) in [
        (serde_json::json!({}), 3),
        (serde_json::json!({"max_idle_conns": 1}), 1),
        (
            serde_json::json!({"max_idle_conns": 2, "max_idle_conns_per_host": 50}),
            2,
        ),
    ] {
        let serde_json::Value::Object(map) = config.clone() else {
            unreachable!()
        };
        let group = crate::settings::validate_group_config(&map).unwrap();
        let effective = crate::settings::SystemSettings::default().effective(&group);
        let client = client(ClientSettings {
            pool: PoolSettings {
                proxy: ProxySetting::None,
                ..ClientSettings::from_effective(&effective).pool
            },
            ..ClientSettings::from_effective(&effective)
        });
        let opened = upstream.opened();
        let results = futures_util::future::join_all(
            (0..3).map(|i| send(&client, chat(&url, &format!("sk-{i}"), false))),
        )
        .await;
        for result in results {
            let (body, err) = frames(result.unwrap().into_body()).await;
            assert!(err.is_none() && text(&body) == "ok", "{config}");
        }
        assert_eq!(
            upstream.opened() - opened,
            3,
            "{config}: one connection per request"
        );
        let open = upstream.open_after_settling().await;
        assert_eq!(open, kept, "{config}: idle connections kept");
        drop(client);
        upstream.wait_until_open(0).await;
    }
}

// --- Small servers ----------------------------------------------------------------------------

/// Reads from a shared stream without tokio's `io-util`.
async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            result => return result,
        }
    }
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Buffered reads of exact lengths, for handshakes.
struct Reader<'a> {
    stream: &'a TcpStream,
    buf: Vec<u8>,
}

impl<'a> Reader<'a> {
    fn new(stream: &'a TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0; 4096];
        let n = read_some(self.stream, &mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn byte(&mut self) -> io::Result<u8> {
        Ok(self.take(1).await?[0])
    }

    /// Up to and including the blank line that ends an HTTP head.
    async fn head(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = self.buf.drain(..end + 4).collect::<Vec<_>>();
                return Ok(String::from_utf8_lossy(&head).into_owned());
            }
            self.fill().await?;
        }
    }
}

/// Copies bytes both ways until either side closes; `early` is what the handshake read past.
async fn relay(client: TcpStream, upstream: TcpStream, early: &[u8]) -> io::Result<()> {
    write_all(&upstream, early).await?;
    async fn pump(from: &TcpStream, to: &TcpStream) -> io::Result<()> {
        let mut buf = vec![0; 16 * 1024];
        loop {
            let n = read_some(from, &mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            write_all(to, &buf[..n]).await?;
        }
    }
    tokio::select! {
        result = pump(&client, &upstream) => result,
        result = pump(&upstream, &client) => result,
    }
}

type Log<T> = Arc<Mutex<Vec<T>>>;

fn serve<F, Fut>(listener: TcpListener, handle: F) -> JoinHandle<()>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream));
        }
    })
}

/// A keep-alive HTTP/1.1 upstream that answers every request `ok` after a delay and counts the
/// connections opened so far and open now.
struct CountingUpstream {
    addr: SocketAddr,
    opened: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl CountingUpstream {
    async fn start(delay: Duration) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let opened = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let counts = (Arc::clone(&opened), Arc::clone(&open));
        let task = serve(listener, move |stream| {
            let (opened, open) = (Arc::clone(&counts.0), Arc::clone(&counts.1));
            async move {
                opened.fetch_add(1, Ordering::SeqCst);
                open.fetch_add(1, Ordering::SeqCst);
                let result = Self::answer(&stream, delay).await;
                open.fetch_sub(1, Ordering::SeqCst);
                result
            }
        });
        Self {
            addr,
            opened,
            open,
            task,
        }
    }

    /// Answers requests until the client closes the connection.
    async fn answer(stream: &TcpStream, delay: Duration) -> io::Result<()> {
        let mut reader = Reader::new(stream);
        loop {
            let head = match reader.head().await {
                Ok(head) => head,
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(err) => return Err(err),
            };
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            reader.take(length).await?;
            tokio::time::sleep(delay).await;
            write_all(stream, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await?;
        }
    }

    fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }

    /// The connections still open once the client has had time to close the ones it drops.
    async fn open_after_settling(&self) -> usize {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.open.load(Ordering::SeqCst)
    }

    async fn wait_until_open(&self, n: usize) {
        for _ in 0..100 {
            if self.open.load(Ordering::SeqCst) == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{} connections still open", self.open.load(Ordering::SeqCst));
    }
}

impl Drop for CountingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP `CONNECT` proxy recording each tunnel's target and `Proxy-Authorization`.
struct ConnectProxy {
    addr: SocketAddr,
    seen: Log<(String, Option<String>)>,
    task: JoinHandle<()>,
}

impl ConnectProxy {
    async fn start() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Log::default();
        let log = Arc::clone(&seen);
        let task = serve(listener, move |stream| Self::tunnel(stream, Arc::clone(&log)));
        Self { addr, seen, task }
    }

    async fn tunnel(client: TcpStream, seen: Log<(String, Option<String>)>) -> io::Result<()> {
        let mut reader = Reader::new(&client);
        let head = reader.head().await?;
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let (method, target) = (
            request_line.next(),
            request_line.next().unwrap_or_default().to_owned(),
        );
        let auth = lines.find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("proxy-authorization")
                .then(|| value.trim().to_owned())
        });
        if method != Some("CONNECT") {
            return write_all(&client, b"HTTP/1.1 405 Method Not Allowed\r\n\r\n").await;
        }
        seen.lock().unwrap().push((target.clone(), auth));
        let early = std::mem::take(&mut reader.buf);
        let upstream = TcpStream::connect(&target).await?;
        write_all(&client, b"HTTP/1.1 200 Connection Established\r\n\r\n").await?;
        relay(client, upstream, &early).await
    }

    fn targets(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(target, _)| target.clone())
            .collect()
    }

    fn auth(&self) -> Vec<Option<String>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, auth)| auth.clone())
            .collect()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A SOCKS5 proxy (`CONNECT` only) recording each target as `host:port`, as the client sent it.
struct Socks5Proxy {
    addr: SocketAddr,
    seen: Log<String>,
    task: JoinHandle<()>,
}

impl Socks5Proxy {
    async fn start(credentials: Option<(&'static str, &'static str)>) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Log::default();
        let log = Arc::clone(&seen);
        let task = serve(listener, move |stream| {
            Self::tunnel(stream, credentials, Arc::clone(&log))
        });
        Self { addr, seen, task }
    }

    async fn tunnel(
        client: TcpStream,
        credentials: Option<(&'static str, &'static str)>,
        seen: Log<String>,
    ) -> io::Result<()> {
        let mut reader = Reader::new(&client);
        let [version, count] = reader.take(2).await?[..] else {
            unreachable!()
        };
        assert_eq!(version, 5);
        let methods = reader.take(count.into()).await?;
        if let Some((user, password)) = credentials {
            if !methods.contains(&2) {
                return write_all(&client, &[5, 0xff]).await;
            }
            write_all(&client, &[5, 2]).await?;
            let _auth_version = reader.byte().await?;
            let len = reader.byte().await?;
            let given_user = reader.take(len.into()).await?;
            let len = reader.byte().await?;
            let given_password = reader.take(len.into()).await?;
            if given_user != user.as_bytes() || given_password != password.as_bytes() {
                return write_all(&client, &[1, 1]).await;
            }
            write_all(&client, &[1, 0]).await?;
        } else {
            write_all(&client, &[5, 0]).await?;
        }
        let [_version, command, _reserved, kind] = reader.take(4).await?[..] else {
            unreachable!()
        };
        assert_eq!(command, 1, "CONNECT");
        let host = match kind {
            1 => {
                let ip: [u8; 4] = reader.take(4).await?.try_into().unwrap();
                Ipv4Addr::from(ip).to_string()
            }
            3 => {
                let len = reader.byte().await?;
                String::from_utf8(reader.take(len.into()).await?).unwrap()
            }
            4 => {
                let ip: [u8; 16] = reader.take(16).await?.try_into().unwrap();
                format!("[{}]", std::net::Ipv6Addr::from(ip))
            }
            other => panic!("address type {other}"),
        };
        let port = u16::from_be_bytes(reader.take(2).await?.try_into().unwrap());
        let target = format!("{host}:{port}");
        seen.lock().unwrap().push(target.clone());
        let mut upstream = None;
        for addr in tokio::net::lookup_host(&target).await? {
            if let Ok(stream) = TcpStream::connect(addr).await {
                upstream = Some(stream);
                break;
            }
        }
        let Some(upstream) = upstream else {
            return write_all(&client, &[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await;
        };
        write_all(&client, &[5, 0, 0, 1, 127, 0, 0, 1, 0, 0]).await?;
        let early = std::mem::take(&mut reader.buf);
        relay(client, upstream, &early).await
    }

    fn targets(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Socks5Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
