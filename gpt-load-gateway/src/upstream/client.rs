//! [`UpstreamClient`]: the service at the bottom of the proxy stack.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use gpt_load_tower::{Error, ResponseFuture, body::ReplayBody, channel::RequestFacts};
use http::{Request, Response, Uri, Version};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::{
    client::legacy::{self, Client, connect::capture_connection},
    rt::{TokioExecutor, TokioTimer},
};
use rustls::ClientConfig;
use tokio::time::Instant;
use tower::{Service, ServiceExt, util::MapResponse};

use super::{
    body::UpstreamBody,
    connection::UpstreamIo,
    outbound::{Outbound, Transport},
    settings::{ClientSettings, PoolSettings},
    timeout::{ConnectTimeout, Deadline, is_connect_timeout},
};

/// Connection pools kept for per-group settings before the cache starts over.
const MAX_POOLS: usize = 256;

type Connector =
    ConnectTimeout<MapResponse<HttpsConnector<Outbound>, fn(MaybeHttpsStream<Transport>) -> UpstreamIo>>;
type HyperClient = Client<Connector, ReplayBody>;

/// Sends each request to the upstream its absolute URI names, over HTTP/1.1 or HTTP/2 (ALPN),
/// through rustls (ring, webpki roots) for `https`, pooling connections.
///
/// Every phase has its own limit (see [`ClientSettings`]), and a timeout fails with
/// [`Error::upstream_timeout`] naming the phase: `connect`, `response header`, `request`
/// (non-streamed requests: head and whole body) or `stream idle` (from the response body).
/// Transport failures are [`Error::upstream`]. A request carrying `ClientSettings` or
/// `Arc<ClientSettings>` is sent with those; settings that agree on the connection-shaping
/// fields share one pool. Whether a request is streamed comes from its
/// [`RequestFacts`] (absent: not streamed).
#[derive(Clone)]
pub(crate) struct UpstreamClient {
    shared: Arc<Shared>,
}

struct Shared {
    tls: ClientConfig,
    defaults: ClientSettings,
    default_client: HyperClient,
    pools: Mutex<HashMap<PoolSettings, HyperClient>>,
}

impl UpstreamClient {
    /// A client with `defaults` for requests that carry no settings of their own.
    pub(crate) fn new(defaults: ClientSettings) -> Result<Self, rustls::Error> {
        Ok(Self::with_tls(defaults, tls_config()?))
    }

    /// A client that trusts what `tls` trusts (for upstreams with a private certificate
    /// authority).
    pub(crate) fn with_tls(defaults: ClientSettings, tls: ClientConfig) -> Self {
        let default_client = build_client(&tls, &defaults.pool);
        Self {
            shared: Arc::new(Shared {
                tls,
                defaults,
                default_client,
                pools: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The pooled client for `settings`.
    fn client_for(&self, settings: &ClientSettings) -> HyperClient {
        let shared = &*self.shared;
        let pool = &settings.pool;
        if *pool == shared.defaults.pool {
            return shared.default_client.clone();
        }
        let mut pools = shared.pools.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = pools.get(pool) {
            return client.clone();
        }
        if pools.len() >= MAX_POOLS {
            // Settings changed many times over; pools still in use live on in their requests.
            pools.clear();
        }
        tracing::debug!(proxy = ?pool.proxy, "new upstream connection pool");
        let client = build_client(&shared.tls, pool);
        pools.insert(pool.clone(), client.clone());
        client
    }

    #[cfg(test)]
    pub(crate) fn pool_count(&self) -> usize {
        self.shared
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// rustls with ring and Mozilla's roots: the only TLS this gateway builds.
pub(crate) fn tls_config() -> Result<ClientConfig, rustls::Error> {
    use hyper_rustls::ConfigBuilderExt;

    Ok(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_webpki_roots()
            .with_no_client_auth(),
    )
}

fn build_client(tls: &ClientConfig, pool: &PoolSettings) -> HyperClient {
    let outbound = Outbound::new(&pool.proxy, pool.connect_timeout, tls);
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(outbound);
    let https = https.map_response(UpstreamIo::from as fn(_) -> _);
    let connector = ConnectTimeout::new(https, pool.connect_timeout);
    let idle = (!pool.idle_conn_timeout.is_zero()).then_some(pool.idle_conn_timeout);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(idle)
        .pool_max_idle_per_host(pool.max_idle_per_host)
        .build(connector)
}

/// The limits of one request.
#[derive(Clone, Copy, Debug)]
struct Phases {
    connect: Duration,
    response_header: Duration,
    request: Option<Duration>,
    stream_idle: Duration,
}

impl Phases {
    fn new(settings: &ClientSettings, stream: bool) -> Self {
        Self {
            connect: settings.pool.connect_timeout,
            response_header: settings.response_header_timeout,
            request: (!stream).then_some(settings.request_timeout),
            stream_idle: settings.stream_idle_timeout,
        }
    }
}

impl Service<Request<ReplayBody>> for UpstreamClient {
    type Response = Response<UpstreamBody>;
    type Error = Error;
    type Future = ResponseFuture<Response<UpstreamBody>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<ReplayBody>) -> Self::Future {
        let extensions = req.extensions();
        let settings = extensions
            .get::<Arc<ClientSettings>>()
            .map(|settings| &**settings)
            .or_else(|| extensions.get::<ClientSettings>())
            .unwrap_or(&self.shared.defaults);
        let stream = extensions.get::<RequestFacts>().is_some_and(|facts| facts.stream);
        let phases = Phases::new(settings, stream);
        let client = self.client_for(settings);
        // The version spoken upstream is the connection's, not the client's.
        *req.version_mut() = Version::HTTP_11;
        ResponseFuture::new(send(client, req, phases))
    }
}

async fn send(
    client: HyperClient,
    mut req: Request<ReplayBody>,
    phases: Phases,
) -> Result<Response<UpstreamBody>, Error> {
    let started = Instant::now();
    let target = req.uri().clone();
    let whole = phases
        .request
        .and_then(|limit| Deadline::after(started, limit, "request"));
    let mut connection = capture_connection(&mut req);
    let response = client.request(req);
    tokio::pin!(response);

    // Until a connection (new or pooled) takes the request. The connector enforces the same
    // limit; this one also covers waiting on a connection another request is opening.
    let connect = Deadline::earliest(Deadline::after(started, phases.connect, "connect"), whole);
    let finished_early = tokio::select! {
        biased;
        result = &mut response => Some(result),
        _ = connection.wait_for_connection_metadata() => None,
        phase = Deadline::expired(connect) => return Err(timed_out(&target, phase)),
    };
    let result = match finished_early {
        Some(result) => result,
        None => {
            let head = Deadline::earliest(
                Deadline::after(Instant::now(), phases.response_header, "response header"),
                whole,
            );
            tokio::select! {
                biased;
                result = &mut response => result,
                phase = Deadline::expired(head) => return Err(timed_out(&target, phase)),
            }
        }
    };
    match result {
        Ok(response) => Ok(response.map(|body| UpstreamBody::new(body, phases.stream_idle, whole))),
        Err(err) => Err(failed(&target, err)),
    }
}

fn timed_out(target: &Uri, phase: &'static str) -> Error {
    tracing::debug!(upstream = %Origin(target), phase, "upstream timeout");
    Error::upstream_timeout(phase)
}

fn failed(target: &Uri, err: legacy::Error) -> Error {
    if err.is_connect() && is_connect_timeout(&err) {
        return timed_out(target, "connect");
    }
    tracing::debug!(upstream = %Origin(target), error = %ErrorChain(&err), "upstream request failed");
    Error::upstream(err)
}

/// `scheme://host:port` of a URI: never its path or query, which may hold a key.
struct Origin<'a>(&'a Uri);

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let uri = self.0;
        write!(
            f,
            "{}://{}",
            uri.scheme_str().unwrap_or("?"),
            uri.host().unwrap_or("?")
        )?;
        match uri.port_u16() {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// An error and its causes, joined with `: `.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("defaults", &self.shared.defaults)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_hide_paths_and_queries() {
        let uri =
            Uri::from_static("https://user:pw@generativelanguage.test:8443/v1beta/models?key=AIza-secret");
        assert_eq!(Origin(&uri).to_string(), "https://generativelanguage.test:8443");
        let uri = Uri::from_static("http://api.test/v1?key=secret");
        assert_eq!(Origin(&uri).to_string(), "http://api.test");
    }

    #[test]
    fn the_https_connector_builds_with_ring() {
        let tls = tls_config().unwrap();
        let ring = rustls::crypto::ring::default_provider();
        assert_eq!(
            format!("{:?}", tls.crypto_provider().cipher_suites),
            format!("{:?}", ring.cipher_suites),
            "the provider is ring's"
        );
        let _https = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(ring)
            .unwrap()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let _client = UpstreamClient::new(ClientSettings::default()).unwrap();
    }

    #[test]
    fn is_cheap_to_share() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        shareable::<UpstreamClient>();
    }
}
