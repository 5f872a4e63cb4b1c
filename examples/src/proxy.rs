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

/// The proxy's shared state for one [`ExampleConfig`]: proxy keys, key pool, upstreams and the
/// request-log sink.
#[derive(Clone, Debug)]
pub struct Proxy {
    proxy_keys: StaticProxyKeys,
    /// The key pool (the axum example shows its keys, masked).
    pub pool: MemoryKeyPool,
    upstreams: Upstreams,
    sink: ChannelSink,
    max_retries: u32,
}

impl Proxy {
    /// Builds the state for `config`, and the stream of request records its stacks produce.
    pub fn new(config: &ExampleConfig) -> Result<(Self, mpsc::Receiver<RequestRecord>), InvalidUpstream> {
        let group = config.group.as_str();
        let proxy_keys = StaticProxyKeys::new(ProxyKeyTable::new().group(
            group,
            config.channel,
            [config.proxy_key.as_str()],
        ));
        let pool = MemoryKeyPool::new();
        let keys = config.upstream_keys.iter().enumerate();
        pool.set_group(
            group.into(),
            keys.map(|(i, key)| KeySlot::new(KeyId(i as u64 + 1), key.as_str().into())),
        );
        let upstreams = Upstreams::new();
        upstreams.set_group(group.into(), [(config.upstream.as_str(), 1)])?;
        let (sink, records) = ChannelSink::new(4096);
        Ok((
            Self {
                proxy_keys,
                pool,
                upstreams,
                sink,
                max_retries: config.max_retries,
            },
            records,
        ))
    }

    /// The whole layer stack in front of a plain-HTTP hyper client; the group is the path segment
    /// after `route_prefix`.
    pub fn service<B>(
        self,
        route_prefix: &'static str,
    ) -> impl Service<
        Request<B>,
        Response = Response<impl Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + Sync
    + 'static
    where
        B: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static,
    {
        let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody>();
        ProxyStack::new(self.proxy_keys, self.pool, self.upstreams, self.sink)
            .route_prefix(route_prefix)
            .max_retries(self.max_retries)
            .service(client)
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
