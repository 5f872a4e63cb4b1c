//! Connection handling: accept loop, per-connection tasks, graceful stop.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::MockConfig;
use super::behaviour::Scripts;
use super::body::MockBody;
use super::error::{self, Failure, Family};
use super::record::Recorder;
use super::{control, credential, routes};

/// How long in-flight requests may run on after a stop is requested.
const GRACE: Duration = Duration::from_secs(1);

/// State shared by the handle and every connection.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    pub(crate) scripts: Scripts,
    pub(crate) recorder: Recorder,
    /// State of the SplitMix64 generator behind flaky keys.
    rng: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub(crate) fn new(config: MockConfig) -> Self {
        Self {
            recorder: Recorder::new(config.record_capacity),
            scripts: Scripts::default(),
            rng: std::sync::atomic::AtomicU64::new(config.seed),
            config,
        }
    }

    /// The next draw in `0..1000` (SplitMix64: reproducible from the seed).
    pub(crate) fn draw_per_mille(&self) -> u16 {
        let state = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, std::sync::atomic::Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z % 1000) as u16
    }
}

/// Serves `listener` until `stop` fires or its sender is dropped, then stops
/// accepting, lets in-flight requests finish for up to [`GRACE`] and aborts
/// whatever is left.
pub(crate) async fn run(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Typically out of file descriptors: back off briefly.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&shared);
                let service = service_fn(move |request| {
                    let shared = Arc::clone(&shared);
                    async move { Ok::<_, Infallible>(handle(&shared, request).await) }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                connections.spawn(async move {
                    // Client resets and aborted bodies end up here; nothing to do.
                    let _ = connection.await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(GRACE, graceful.shutdown()).await;
    connections.shutdown().await;
}

async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<MockBody> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let failure = Failure::BadRequest("failed to read the request body");
            return error::respond(Family::OpenAi, &failure);
        }
    };
    if control::is_control(parts.uri.path()) {
        return control::handle(shared, &parts, &body);
    }
    let credential = credential::extract(&parts.headers, parts.uri.query());
    let seq = shared.recorder.record(&parts, credential.as_deref(), &body);
    routes::dispatch(shared, &parts, credential.as_deref(), &body, seq).await
}
