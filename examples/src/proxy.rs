use std::convert::Infallible;

use bytes::Bytes;
use gpt_load_tower::{
    BoxError, ProxyStack,
    auth::{ProxyKeyTable, StaticProxyKeys},
    body::ReplayBody,
    keys::{KeyId, KeySlot, MemoryKeyPool},
    log::{ChannelSink, RequestRecord},
    upstream::{InvalidUpstream, Upstreams},
};
use http::{Request, Response};
use hyper::body::Body;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::sync::mpsc;
use tower::Service;

use crate::ExampleConfig;

/// The proxy pieces an example shares between its stack and its own code.
#[derive(Clone, Debug)]
pub struct Proxy {
    /// The key pool (for example to show key states).
    pub pool: MemoryKeyPool,
}

impl Proxy {
    /// Builds the key pool, upstreams and proxy keys for `config` and returns the full stack,
    /// whose group is the path segment after `route_prefix`, plus the request-record stream.
    pub fn build<B>(
        config: ExampleConfig,
        route_prefix: &'static str,
    ) -> Result<
        (
            Self,
            impl Service<
                Request<B>,
                Response = Response<impl Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static>,
                Error = Infallible,
                Future = impl Send,
            > + Clone
            + Send
            + Sync
            + 'static,
            mpsc::Receiver<RequestRecord>,
        ),
        InvalidUpstream,
    >
    where
        B: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static,
    {
        let group = config.group.as_str();
        let proxy_keys = StaticProxyKeys::new(ProxyKeyTable::new().group(group, config.channel, [config.proxy_key.as_str()]));
        let pool = MemoryKeyPool::new();
        pool.set_group(
            group.into(),
            config.upstream_keys.iter().enumerate().map(|(i, key)| KeySlot::new(KeyId(i as u64 + 1), key.as_str().into())),
        );
        let upstreams = Upstreams::new();
        upstreams.set_group(group.into(), [(config.upstream.as_str(), 1)])?;
        let (sink, records) = ChannelSink::new(4096);
        let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody>();
        let service = ProxyStack::new(proxy_keys, pool.clone(), upstreams, sink)
            .route_prefix(route_prefix)
            .max_retries(config.max_retries)
            .service(client);
        Ok((Self { pool }, service, records))
    }
}

/// Writes every request record to the application log (never a key: only its mask).
pub async fn log_records(mut records: mpsc::Receiver<RequestRecord>) {
    while let Some(r) = records.recv().await {
        tracing::info!(
            r#type = r.request_type.as_str(),
            attempt = r.attempt,
            group = %r.group,
            key = r.masked_key.as_deref().unwrap_or("-"),
            status = r.status,
            model = r.model.as_deref().unwrap_or("-"),
            stream = r.stream,
            duration_ms = r.duration.as_millis() as u64,
            error = r.error.as_deref().unwrap_or(""),
            "{} {}",
            r.method,
            r.path,
        );
    }
}
