//! An existing axum application that mounts the key-pool proxy under `/llm/{group}/…`.
//!
//! The application keeps its own routes (`/`, and `/keys` showing the pool's keys, masked); the proxy is one nested service,
//! so its concurrency limit and retry state are shared by every request. The client's address
//! becomes the [`ClientIp`] the request log records.
//!
//! ```text
//! cargo run -p examples --bin mock-upstream -- --port 8080   # or: cargo run -p gpt-load-e2e --bin mock-upstream
//! cargo run -p examples --bin axum_existing_app
//! curl http://127.0.0.1:3001/llm/demo/v1/chat/completions \
//!   -H 'Authorization: Bearer sk-proxy-demo' -d '{"model":"gpt-4o-mini","messages":[]}'
//! ```

use std::{io, net::SocketAddr};

use axum::{Json, Router, extract::ConnectInfo, routing::get};
use gpt_load_tower::context::ClientIp;
use http::Request;
use serde_json::json;
use tokio::net::TcpListener;
use tower::ServiceBuilder;

use crate::{ExampleConfig, Proxy, log_records};

/// The application: its own routes plus the proxy under `/llm`.
pub fn app(config: &ExampleConfig) -> io::Result<Router> {
    // `nest_service` strips `/llm`, so the stack sees `/{group}/…`: no route prefix.
    let (proxy, records) = Proxy::new(config).map_err(io::Error::other)?;
    tokio::spawn(log_records(records));
    let service = proxy.clone().service("");
    let with_client_ip = ServiceBuilder::new().map_request(|mut req: Request<axum::body::Body>| {
        if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
            req.extensions_mut().insert(ClientIp(peer.ip()));
        }
        req
    });
    let group = config.group.clone();
    Ok(Router::new()
        .route(
            "/",
            get(|| async { "An existing application. The AI proxy lives under /llm/{group}/." }),
        )
        .route(
            "/keys",
            get(move || async move {
                let keys: Vec<_> = proxy
                    .pool
                    .keys(&group)
                    .iter()
                    .map(|k| {
                        json!({
                            "id": k.id().0,
                            "key": k.secret().masked(),
                            "state": k.state().as_str(),
                            "consecutive_failures": k.consecutive_failures(),
                            "in_flight": k.in_flight(),
                        })
                    })
                    .collect();
                Json(keys)
            }),
        )
        .nest_service("/llm", with_client_ip.service(service)))
}

/// Serves [`app`] on `listener` until the process ends.
pub async fn serve(listener: TcpListener, config: ExampleConfig) -> io::Result<()> {
    let app = app(&config)?;
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
}
