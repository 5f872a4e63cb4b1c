//! The floor under the gateway: a reverse proxy made of hyper alone, the same server and client
//! crates the gateway is built on, with nothing else.
//!
//! Each request is forwarded to `--upstream` with one `Authorization` header set, and the answer
//! streams back frame by frame. No authentication, key selection, retry, logging or metrics: what
//! this proxy reaches on a core is what hyper's HTTP/1 server and pooled client cost there, so
//! `bench/run.sh` can show how much of the gap to nginx is the HTTP stack and how much is the
//! gateway's own work. The runtime is tokio's single-threaded one, as the gateway's.
//!
//! `--client conn` replaces hyper-util's pooled client with hyper's bare connections, one
//! upstream connection per client connection: what the pool's checkout and return cost.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;

use clap::{Parser, ValueEnum};
use http::{HeaderValue, Request, Response, Uri, header, uri::PathAndQuery};
use http_body_util::{BodyExt, Empty, combinators::UnsyncBoxBody};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// A reverse proxy of hyper alone (see the module docs).
#[derive(Debug, Parser)]
#[command(name = "bare-proxy", version, about)]
struct Args {
    /// Address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// `http://host:port` of the upstream.
    #[arg(long)]
    upstream: Uri,
    /// `Authorization` header value sent upstream.
    #[arg(long, default_value = "Bearer sk-bench")]
    authorization: String,
    /// How requests reach the upstream.
    #[arg(long, value_enum, default_value_t = ClientKind::Pool)]
    client: ClientKind,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ClientKind {
    /// hyper-util's pooled client, as the gateway uses.
    Pool,
    /// One upstream connection per client connection, no pool.
    Conn,
}

#[derive(Clone)]
struct Upstream {
    authority: http::uri::Authority,
    authorization: HeaderValue,
}

impl Upstream {
    fn rewrite<B>(&self, req: Request<B>) -> Request<B> {
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .expect("scheme, authority and path make a URI");
        parts
            .headers
            .insert(header::AUTHORIZATION, self.authorization.clone());
        parts.headers.remove(header::HOST);
        Request::from_parts(parts, body)
    }
}

fn failed(status: u16) -> Response<Body> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = http::StatusCode::from_u16(status).expect("a valid status");
    response
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let upstream = Upstream {
        authority: args
            .upstream
            .authority()
            .cloned()
            .expect("--upstream needs host:port"),
        authorization: HeaderValue::from_str(&args.authorization).expect("a header value"),
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(args.listen, args.client, upstream))
}

async fn serve(listen: SocketAddr, kind: ClientKind, upstream: Upstream) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    // The one line a launcher waits for.
    let mut out = std::io::stdout().lock();
    writeln!(out, "bare-proxy listening on http://{}", listener.local_addr()?)?;
    out.flush()?;
    drop(out);
    let pooled: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build_http();
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let upstream = upstream.clone();
        let pooled = pooled.clone();
        tokio::spawn(async move {
            let io = TokioIo::new(stream);
            let server = hyper::server::conn::http1::Builder::new();
            let _ = match kind {
                ClientKind::Pool => {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let request = pooled.request(upstream.rewrite(req));
                        async move {
                            Ok::<_, Infallible>(match request.await {
                                Ok(response) => response.map(|body| body.boxed_unsync()),
                                Err(_) => failed(502),
                            })
                        }
                    });
                    server.serve_connection(io, service).await
                }
                ClientKind::Conn => match connect(&upstream).await {
                    Some(sender) => {
                        let sender = std::sync::Arc::new(tokio::sync::Mutex::new(sender));
                        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let sender = std::sync::Arc::clone(&sender);
                            let req = upstream.rewrite(req);
                            async move {
                                let mut sender = sender.lock().await;
                                Ok::<_, Infallible>(match sender.send_request(req).await {
                                    Ok(response) => response.map(|body| body.boxed_unsync()),
                                    Err(_) => failed(502),
                                })
                            }
                        });
                        server.serve_connection(io, service).await
                    }
                    None => Ok(()),
                },
            };
        });
    }
}

/// An HTTP/1 connection to the upstream, its connection future polled by a task of its own.
async fn connect(upstream: &Upstream) -> Option<hyper::client::conn::http1::SendRequest<Incoming>> {
    let stream = TcpStream::connect(upstream.authority.as_str()).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    Some(sender)
}
