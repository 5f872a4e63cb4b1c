//! The HTTP server: HTTP/1.1 and HTTP/2 (h2c) on each accepted connection, the connection
//! timeouts `SERVER_READ_TIMEOUT` (request heads), `SERVER_IDLE_TIMEOUT` (connections with no
//! request in flight) and `SERVER_WRITE_TIMEOUT` (writes the client does not take; see
//! [`timeouts`]), and graceful shutdown that lets every in-flight request and stream finish.

use std::{
    cell::RefCell,
    convert::Infallible,
    io,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::Duration,
};

use axum::{body::Body, extract::ConnectInfo};
use futures_util::future::Either;
use hyper::{
    Request, Response,
    body::Incoming,
    server::conn::{http1, http2},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{net::TcpListener, sync::watch};
use tower::{Service, ServiceBuilder, ServiceExt, util::Oneshot};

pub(crate) use self::timeouts::ConnectionTimeouts;
use self::{
    preface::{Preface, Protocol},
    timeouts::{Activity, TimedIo, Tracked},
};

mod preface;
mod timeouts;

/// Sends small writes at once: a stream's frames are each a small write, and with Nagle's
/// algorithm on they would wait for the client's delayed ACK (about 40 ms on Linux).
fn configure(stream: &tokio::net::TcpStream) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(error = %err, "setting TCP_NODELAY failed");
    }
}

/// Serves `app` on `listener` until `stop` turns true, then waits for open connections to
/// finish their in-flight requests. Every connection runs under `timeouts`.
pub(crate) async fn serve<S>(
    listener: TcpListener,
    app: S,
    timeouts: ConnectionTimeouts,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let http = Arc::new(Http::new());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %err, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        configure(&stream);
        let activity = Activity::new();
        let service = ServiceBuilder::new()
            .map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                req
            })
            .service(app.clone());
        let service = ConnectionService::new(Tracked::new(service, Arc::clone(&activity)));
        let io = TimedIo::new(stream, timeouts, activity);
        let (http, watcher, mut stop) = (Arc::clone(&http), graceful.watcher(), stop.clone());
        tokio::spawn(async move {
            // The version is read under the connection's read limit; a shutdown that begins
            // first closes the connection before any request.
            let (protocol, io) = tokio::select! {
                read = Preface::read(io) => match read {
                    Ok(read) => read,
                    Err(err) => {
                        tracing::debug!(%peer, error = %err, "connection closed before its first request");
                        return;
                    }
                },
                _ = stop.wait_for(|stop| *stop) => return,
            };
            let io = TokioIo::new(io);
            // HTTP/2's connection state is the larger and the rarer: boxed, so an HTTP/1.1
            // connection's task does not carry room for it.
            let served = match protocol {
                Protocol::Http1 => Either::Left(watcher.watch(http.http1.serve_connection(io, service))),
                Protocol::Http2 => {
                    Either::Right(Box::pin(watcher.watch(http.http2.serve_connection(io, service))))
                }
            };
            if let Err(err) = served.await {
                tracing::debug!(%peer, error = %err, "connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The HTTP/1.1 and HTTP/2 settings every connection is served with.
struct Http {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Http {
    fn new() -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            // The read limit is enforced by `TimedIo`, from a request's first byte: hyper's own
            // would start when the connection goes idle and so cut idle connections at it.
            .header_read_timeout(None)
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2.timer(TokioTimer::new());
        Self { http1, http2 }
    }
}

/// One connection's service, called by hyper without a copy per request.
///
/// hyper calls a service through `&self`; its adapter for tower services clones the service for
/// every request, and a clone of the gateway's service copies every layer of the proxy stack.
/// A connection's requests are called one after another from its own task, so one instance
/// serves them all: readied by a poll with no waker (the stack is ready at once; it sheds load
/// inside `call`), then called. A service that is not ready at once is cloned and waited for,
/// as hyper's adapter does.
struct ConnectionService<S> {
    service: RefCell<S>,
}

impl<S> ConnectionService<S> {
    fn new(service: S) -> Self {
        Self {
            service: RefCell::new(service),
        }
    }
}

impl<S, R> hyper::service::Service<R> for ConnectionService<S>
where
    S: Service<R> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Oneshot<S, R>>;

    fn call(&self, req: R) -> Self::Future {
        // Borrowed only within this call: hyper never calls again before it returns.
        let mut service = self.service.borrow_mut();
        match service.poll_ready(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(())) => Either::Left(service.call(req)),
            // Not ready (or failing): a clone reports it from its own `poll_ready`.
            _ => Either::Right(service.clone().oneshot(req)),
        }
    }
}

#[cfg(test)]
mod tests;
