//! The key-pool proxy on a bare hyper server, without any web framework.
//!
//! Each connection is served by hyper-util's HTTP/1.1 + HTTP/2 builder; the tower stack is
//! adapted with `TowerToHyperService`. Requests go to `/proxy/{group}/…`.
//!
//! ```text
//! cargo run -p gpt-load-e2e --bin mock-upstream -- --port 8080
//! cargo run -p examples --bin hyper_server
//! curl -N http://127.0.0.1:3001/proxy/demo/v1/chat/completions \
//!   -H 'Authorization: Bearer sk-proxy-demo' -d '{"model":"gpt-4o-mini","stream":true,"messages":[]}'
//! ```

use std::io;

use gpt_load_tower::context::ClientIp;
use hyper::{Request, body::Incoming};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tower::ServiceBuilder;

use crate::{ExampleConfig, Proxy, log_records};

/// Accepts connections on `listener` and serves the proxy until the process ends.
pub async fn serve(listener: TcpListener, config: ExampleConfig) -> io::Result<()> {
    let (proxy, records) = Proxy::new(&config).map_err(io::Error::other)?;
    tokio::spawn(log_records(records));
    let service = proxy.service::<Incoming>("/proxy");
    loop {
        let (stream, peer) = listener.accept().await?;
        let service = ServiceBuilder::new()
            .map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ClientIp(peer.ip()));
                req
            })
            .service(service.clone());
        tokio::spawn(async move {
            let connection = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .await;
            if let Err(err) = connection {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
}
