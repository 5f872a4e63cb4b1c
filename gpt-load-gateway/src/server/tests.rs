//! The server against raw sockets on 127.0.0.1: small writes, and the connection timeouts.

use std::{convert::Infallible, io, net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, body::Body, routing::get};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{Notify, watch},
    task::JoinHandle,
    time::{Instant, sleep, timeout},
};

use super::{ConnectionTimeouts, configure, serve};

#[tokio::test]
async fn accepted_connections_send_small_writes_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _client = TcpStream::connect(addr).await.unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    assert!(!stream.nodelay().unwrap(), "off by default");
    configure(&stream);
    assert!(stream.nodelay().unwrap());
}

// --- A server to time out ---------------------------------------------------------------------

const SHORT: Duration = Duration::from_millis(300);
const LONG: Duration = Duration::from_secs(30);

/// Notifies when dropped: a response body that the server gave up on, or finished.
struct Dropped(Arc<Notify>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// `/` answers `ok`, `/slow` answers `done` after twice [`SHORT`], `/paced` sends four chunks
/// with longer pauses than [`SHORT`] between them, `/endless` sends 64 KiB chunks for ever and
/// notifies `dropped` when the server lets its body go.
fn app(dropped: Arc<Notify>) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                sleep(SHORT * 2).await;
                "done"
            }),
        )
        .route(
            "/paced",
            get(|| async {
                Body::from_stream(futures_util::stream::unfold(0, |i| async move {
                    if i == 4 {
                        return None;
                    }
                    if i > 0 {
                        sleep(SHORT + Duration::from_millis(100)).await;
                    }
                    Some((Ok::<_, Infallible>(Bytes::from(format!("chunk {i}\n"))), i + 1))
                }))
            }),
        )
        .route(
            "/endless",
            get(move || {
                let guard = Dropped(Arc::clone(&dropped));
                async move {
                    Body::from_stream(futures_util::stream::unfold(guard, |guard| async move {
                        Some((Ok::<_, Infallible>(Bytes::from(vec![b'x'; 64 * 1024])), guard))
                    }))
                }
            }),
        )
}

struct Server {
    addr: SocketAddr,
    dropped: Arc<Notify>,
    _stop: watch::Sender<bool>,
    task: JoinHandle<io::Result<()>>,
}

impl Server {
    async fn start(read: Option<Duration>, write: Option<Duration>, idle: Option<Duration>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dropped = Arc::new(Notify::new());
        let (stop, stopping) = watch::channel(false);
        let timeouts = ConnectionTimeouts { read, write, idle };
        let task = tokio::spawn(serve(listener, app(Arc::clone(&dropped)), timeouts, stopping));
        Self {
            addr,
            dropped,
            _stop: stop,
            task,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            result => return result,
        }
    }
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) {
    while !data.is_empty() {
        stream.writable().await.unwrap();
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => panic!("writing the request: {err}"),
        }
    }
}

async fn send_get(stream: &TcpStream, path: &str) {
    write_all(
        stream,
        format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").as_bytes(),
    )
    .await;
}

/// Reads until the text read so far ends with `end`.
async fn read_until(stream: &TcpStream, end: &str) -> String {
    let mut text = Vec::new();
    let mut buf = [0; 4096];
    while !text.ends_with(end.as_bytes()) {
        let n = timeout(LONG, read_some(stream, &mut buf))
            .await
            .expect("the response arrives")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&text));
        text.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(text).unwrap()
}

/// How long until the server closes `stream` (discarding what it still sends).
async fn closed(stream: &TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0; 4096];
    timeout(LONG, async {
        loop {
            match read_some(stream, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server closes the connection");
    started.elapsed()
}

fn assert_about(elapsed: Duration, limit: Duration) {
    assert!(
        elapsed >= limit - Duration::from_millis(50) && elapsed < limit + Duration::from_secs(2),
        "closed after {elapsed:?}, limit {limit:?}"
    );
}

// --- The HTTP version, from the first bytes ------------------------------------------------------

#[tokio::test]
async fn a_request_that_trickles_in_a_byte_at_a_time_is_served() {
    let server = Server::start(Some(LONG), None, Some(LONG)).await;
    let stream = server.connect().await;
    // The version is told at the second byte; the rest of the head comes after it.
    for byte in b"GET / HTTP/1.1\r\nhost: test\r\n\r\n" {
        write_all(&stream, &[*byte]).await;
        sleep(Duration::from_millis(2)).await;
    }
    read_until(&stream, "\r\n\r\nok").await;
}

#[tokio::test]
async fn a_connection_that_has_sent_nothing_does_not_hold_a_shutdown() {
    let mut server = Server::start(Some(LONG), None, Some(LONG)).await;
    let silent = server.connect().await;
    let answered = server.connect().await;
    send_get(&answered, "/").await;
    read_until(&answered, "\r\n\r\nok").await;
    // Well before the read limit (LONG) would close the silent connection.
    let soon = LONG / 6;
    server._stop.send(true).unwrap();
    timeout(soon, &mut server.task)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
    timeout(soon, closed(&silent))
        .await
        .expect("the silent connection is closed by the shutdown");
}

// --- SERVER_IDLE_TIMEOUT ----------------------------------------------------------------------

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = Server::start(Some(LONG), None, Some(SHORT)).await;
    let stream = server.connect().await;
    send_get(&stream, "/").await;
    read_until(&stream, "\r\n\r\nok").await;
    // Within the limit the connection serves the next request, and the clock starts again.
    sleep(SHORT / 2).await;
    send_get(&stream, "/").await;
    read_until(&stream, "\r\n\r\nok").await;
    assert_about(closed(&stream).await, SHORT);
}

#[tokio::test]
async fn a_request_in_flight_is_not_idle() {
    let server = Server::start(Some(LONG), None, Some(SHORT)).await;
    let stream = server.connect().await;
    send_get(&stream, "/slow").await;
    read_until(&stream, "\r\n\r\ndone").await;
    let paced = server.connect().await;
    send_get(&paced, "/paced").await;
    read_until(&paced, "chunk 3\n\r\n0\r\n\r\n").await;
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let server = Server::start(Some(LONG), None, Some(SHORT)).await;
    let stream = server.connect().await;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    // Twice, the second time after half the limit.
    for pause in [Duration::ZERO, SHORT / 2] {
        sleep(pause).await;
        let req = http::Request::get(format!("http://{}/", server.addr))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
    }
    let started = Instant::now();
    let _ = timeout(LONG, connection)
        .await
        .expect("the server closes the connection");
    assert_about(started.elapsed(), SHORT);
}

// --- SERVER_READ_TIMEOUT ----------------------------------------------------------------------

#[tokio::test]
async fn a_request_head_must_arrive_within_the_read_timeout() {
    let server = Server::start(Some(SHORT), None, Some(LONG)).await;
    // A new connection that sends nothing.
    let silent = server.connect().await;
    assert_about(closed(&silent).await, SHORT);
    // A head that stops halfway.
    let stream = server.connect().await;
    write_all(&stream, b"GET / HTTP/1.1\r\nhost: te").await;
    assert_about(closed(&stream).await, SHORT);
}

#[tokio::test]
async fn an_idle_connection_waits_for_the_idle_timeout_not_the_read_timeout() {
    let server = Server::start(Some(SHORT), None, Some(SHORT * 4)).await;
    let stream = server.connect().await;
    send_get(&stream, "/").await;
    read_until(&stream, "\r\n\r\nok").await;
    sleep(SHORT * 2).await;
    send_get(&stream, "/").await;
    read_until(&stream, "\r\n\r\nok").await;
    // The next head, once begun, is under the read limit again.
    write_all(&stream, b"GET / HT").await;
    assert_about(closed(&stream).await, SHORT);
}

// --- SERVER_WRITE_TIMEOUT ---------------------------------------------------------------------

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_after_the_write_timeout() {
    let server = Server::start(Some(LONG), Some(SHORT), Some(LONG)).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let started = Instant::now();
    send_get(&stream, "/endless").await;
    // Never read: the buffers fill, the server's writes stall, and it gives up on the body.
    timeout(LONG, server.dropped.notified())
        .await
        .expect("the server gives up on a client that takes nothing");
    assert!(started.elapsed() >= SHORT, "{:?}", started.elapsed());
    assert!(closed(&stream).await < LONG);
}

#[tokio::test]
async fn responses_that_keep_flowing_are_never_cut_by_the_write_timeout() {
    let server = Server::start(Some(LONG), Some(SHORT), Some(LONG)).await;
    // Slower than the limit between chunks: waiting for the response is not writing.
    let paced = server.connect().await;
    send_get(&paced, "/paced").await;
    read_until(&paced, "chunk 3\n\r\n0\r\n\r\n").await;

    // A client that keeps reading an endless body for several times the limit.
    let stream = server.connect().await;
    send_get(&stream, "/endless").await;
    let mut buf = vec![0; 64 * 1024];
    let mut received = 0;
    let until = Instant::now() + SHORT * 4;
    while Instant::now() < until {
        let n = read_some(&stream, &mut buf).await.unwrap();
        assert!(n > 0, "cut after {received} bytes");
        received += n;
    }
    assert!(received > 1024 * 1024, "{received} bytes");
    drop(stream);
    timeout(LONG, server.dropped.notified())
        .await
        .expect("the body is dropped once the client leaves");
}
