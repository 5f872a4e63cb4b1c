//! The transport under the upstream's TLS: a direct TCP connection, an HTTP `CONNECT` tunnel
//! through an `http://` or `https://` proxy, or a SOCKS5 tunnel.
//!
//! Every destination, plain `http` included, is tunnelled when a proxy applies, so the request
//! itself always goes to the upstream in origin form.

use std::{
    future::Future,
    io,
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use gpt_load_tower::BoxError;
use http::{Uri, uri::Scheme};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::{
    client::{
        legacy::connect::{
            HttpConnector,
            proxy::{SocksV5, Tunnel},
        },
        proxy::matcher::{Intercept, Matcher},
    },
    rt::TokioIo,
};
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tower::{Service, ServiceExt};

use super::settings::{ProxySetting, without_credentials};

/// What [`Outbound`] hands to the upstream's TLS layer: plain TCP, or TCP under the TLS session
/// of an `https://` proxy.
pub(crate) type Transport = MaybeHttpsStream<TokioIo<TcpStream>>;

/// TCP keep-alive on upstream connections, as gpt-load's dialer.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// Connects to an upstream directly or through the proxy its [`ProxySetting`] names.
#[derive(Clone, Debug)]
pub(crate) struct Outbound {
    tcp: HttpConnector,
    /// TCP, with TLS when the proxy itself is `https://`. Offers HTTP/1.1 only: `CONNECT` is
    /// spoken in HTTP/1.1.
    to_proxy: HttpsConnector<HttpConnector>,
    /// `None`: always direct.
    proxies: Option<Arc<Matcher>>,
}

/// The ways of reaching a proxy this connector speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProxyKind {
    /// `http://` or `https://`: an HTTP `CONNECT` tunnel.
    Connect,
    /// `socks5://`: names resolved here, addresses sent to the proxy.
    Socks5,
    /// `socks5h://`: names sent to the proxy.
    Socks5h,
}

impl ProxyKind {
    fn of(proxy: &Uri) -> Option<Self> {
        match proxy.scheme_str()? {
            "http" | "https" => Some(Self::Connect),
            "socks5" => Some(Self::Socks5),
            "socks5h" => Some(Self::Socks5h),
            _ => None,
        }
    }

    fn default_port(proxy: &Uri) -> u16 {
        match proxy.scheme_str() {
            Some("https") => 443,
            Some("http") => 80,
            _ => 1080,
        }
    }
}

/// Connecting through the proxy failed.
#[derive(Debug, thiserror::Error)]
#[error("connecting through the proxy {proxy} failed")]
pub(crate) struct ProxyError {
    /// `scheme://host:port` of the proxy, without credentials.
    proxy: String,
    #[source]
    source: BoxError,
}

/// The proxy scheme is not one this connector speaks.
#[derive(Debug, thiserror::Error)]
#[error("unsupported proxy scheme in {0} (expected http, https, socks5 or socks5h)")]
pub(crate) struct UnsupportedProxy(String);

impl Outbound {
    /// A connector for `proxy`, with a per-attempt TCP connect limit of `connect_timeout` (zero:
    /// none) and `tls` for `https://` proxies.
    pub(crate) fn new(proxy: &ProxySetting, connect_timeout: Duration, tls: &ClientConfig) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(TCP_KEEPALIVE));
        tcp.set_connect_timeout((!connect_timeout.is_zero()).then_some(connect_timeout));
        let to_proxy = HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp.clone());
        Self {
            tcp,
            to_proxy,
            proxies: matcher(proxy).map(Arc::new),
        }
    }

    /// The proxy `dst` goes through, if any.
    fn intercept(&self, dst: &Uri) -> Option<Intercept> {
        self.proxies.as_ref()?.intercept(dst)
    }
}

/// Which destinations go through which proxy; `None` when none ever does.
fn matcher(proxy: &ProxySetting) -> Option<Matcher> {
    match proxy {
        ProxySetting::None => None,
        ProxySetting::FromEnvironment => from_environment(),
        ProxySetting::Url(url) => match explicit(url) {
            Ok(matcher) => Some(matcher),
            Err(reason) => {
                tracing::warn!(
                    proxy = %without_credentials(url),
                    reason,
                    "unusable proxy URL, using the environment's proxy instead"
                );
                from_environment()
            }
        },
    }
}

fn from_environment() -> Option<Matcher> {
    let matcher = Matcher::from_env();
    let probes = [
        Uri::from_static("http://upstream.test/"),
        Uri::from_static("https://upstream.test/"),
    ];
    probes
        .iter()
        .any(|probe| matcher.intercept(probe).is_some())
        .then_some(matcher)
}

/// A matcher sending every destination through `url`, or why `url` cannot be used.
fn explicit(url: &str) -> Result<Matcher, &'static str> {
    let matcher = Matcher::builder().all(url).build();
    let probe = Uri::from_static("https://upstream.test/");
    let intercept = matcher.intercept(&probe).ok_or("not a proxy URL")?;
    ProxyKind::of(intercept.uri()).ok_or("unsupported scheme (expected http, https, socks5 or socks5h)")?;
    Ok(matcher)
}

impl Service<Uri> for Outbound {
    type Response = Transport;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Transport, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Both connectors are always ready; each connect gets its own clone below.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let Some(proxy) = self.intercept(&dst) else {
            let tcp = self.tcp.clone();
            return Box::pin(async move {
                let stream = tcp.oneshot(dst).await?;
                Ok(MaybeHttpsStream::Http(stream))
            });
        };
        let this = self.clone();
        Box::pin(async move {
            let name = proxy_name(proxy.uri());
            this.through(&proxy, dst)
                .await
                .map_err(|source| Box::new(ProxyError { proxy: name, source }) as BoxError)
        })
    }
}

impl Outbound {
    async fn through(self, proxy: &Intercept, dst: Uri) -> Result<Transport, BoxError> {
        let kind = ProxyKind::of(proxy.uri()).ok_or_else(|| UnsupportedProxy(proxy_name(proxy.uri())))?;
        let proxy_uri = with_port(proxy.uri(), ProxyKind::default_port(proxy.uri()))?;
        let dst = with_port(&dst, default_port(&dst))?;
        match kind {
            ProxyKind::Connect => {
                let mut tunnel = Tunnel::new(proxy_uri, self.to_proxy);
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Ok(tunnel.oneshot(dst).await?)
            }
            ProxyKind::Socks5 | ProxyKind::Socks5h => {
                let dst = if kind == ProxyKind::Socks5 {
                    resolve_here(&dst).await?
                } else {
                    dst
                };
                // Connected here so that a TCP failure keeps its own message.
                let connection = self.tcp.oneshot(proxy_uri.clone()).await?;
                let mut socks = SocksV5::new(proxy_uri, Connected(Some(connection)));
                if let Some((user, password)) = proxy.raw_auth() {
                    socks = socks.with_auth(user.to_owned(), password.to_owned());
                }
                Ok(MaybeHttpsStream::Http(socks.oneshot(dst).await?))
            }
        }
    }
}

/// A connector that hands out one connection that is already open.
struct Connected(Option<TokioIo<TcpStream>>);

impl Service<Uri> for Connected {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<TokioIo<TcpStream>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _proxy: Uri) -> Self::Future {
        std::future::ready(
            self.0
                .take()
                .ok_or_else(|| io::Error::other("proxy connection already used")),
        )
    }
}

/// `dst` with its host replaced by the first address it resolves to.
async fn resolve_here(dst: &Uri) -> Result<Uri, BoxError> {
    let host = dst.host().ok_or("destination has no host")?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() {
        return Ok(dst.clone());
    }
    let port = dst.port_u16().unwrap_or_else(|| default_port(dst));
    let addr = tokio::net::lookup_host((bare, port))
        .await?
        .next()
        .ok_or("the destination's name resolved to no address")?;
    let authority = match addr.ip() {
        IpAddr::V4(ip) => format!("{ip}:{port}"),
        IpAddr::V6(ip) => format!("[{ip}]:{port}"),
    };
    rebuild(dst, &authority)
}

/// The port a scheme implies.
fn default_port(uri: &Uri) -> u16 {
    if uri.scheme() == Some(&Scheme::HTTPS) {
        443
    } else {
        80
    }
}

/// `uri` with an explicit port (the tunnel connectors assume 443 otherwise).
fn with_port(uri: &Uri, default: u16) -> Result<Uri, BoxError> {
    if uri.port().is_some() {
        return Ok(uri.clone());
    }
    let host = uri.host().ok_or("URI has no host")?;
    rebuild(uri, &format!("{host}:{default}"))
}

/// `scheme://authority/` (the connectors only look at scheme, host and port).
fn rebuild(uri: &Uri, authority: &str) -> Result<Uri, BoxError> {
    let scheme = uri.scheme_str().unwrap_or("http");
    Ok(Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query("/")
        .build()?)
}

/// `scheme://host:port` of a proxy, for messages.
fn proxy_name(proxy: &Uri) -> String {
    let scheme = proxy.scheme_str().unwrap_or("http");
    let host = proxy.host().unwrap_or("?");
    match proxy.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_urls() {
        for url in [
            "http://127.0.0.1:3128",
            "https://proxy.test",
            "socks5://u:p@127.0.0.1:1080",
            "socks5h://proxy.test",
        ] {
            assert!(explicit(url).is_ok(), "{url}");
        }
        assert!(explicit("ftp://proxy.test").is_err());
        assert!(explicit("socks4://proxy.test").is_err());
        assert!(explicit("http://").is_err());
        assert!(matcher(&ProxySetting::None).is_none());
        assert!(matcher(&ProxySetting::Url("socks5h://proxy.test".to_owned())).is_some());
    }

    #[test]
    fn credentials_become_proxy_authentication() {
        let probe = Uri::from_static("http://upstream.test/");
        let http = explicit("http://user:pa%3Ass@proxy.test:3128")
            .unwrap()
            .intercept(&probe)
            .unwrap();
        assert_eq!(http.basic_auth().unwrap(), "Basic dXNlcjpwYTpzcw==");
        let socks = explicit("socks5://user:pass@proxy.test")
            .unwrap()
            .intercept(&probe)
            .unwrap();
        assert_eq!(socks.raw_auth(), Some(("user", "pass")));
        assert_eq!(proxy_name(socks.uri()), "socks5://proxy.test");
    }

    #[test]
    fn ports_are_made_explicit() {
        let https = with_port(&Uri::from_static("https://api.test/v1?key=secret"), 443).unwrap();
        assert_eq!(https, "https://api.test:443/");
        let http = Uri::from_static("http://api.test/");
        assert_eq!(
            with_port(&http, default_port(&http)).unwrap(),
            "http://api.test:80/"
        );
        let socks = Uri::from_static("socks5://proxy.test");
        assert_eq!(
            with_port(&socks, ProxyKind::default_port(&socks)).unwrap(),
            "socks5://proxy.test:1080/"
        );
        let kept = Uri::from_static("http://[::1]:8080/x");
        assert_eq!(with_port(&kept, 80).unwrap(), kept);
    }

    #[tokio::test]
    async fn socks5_resolves_names_here() {
        let resolved = resolve_here(&Uri::from_static("http://localhost:8080/"))
            .await
            .unwrap();
        let host = resolved
            .host()
            .unwrap()
            .trim_start_matches('[')
            .trim_end_matches(']');
        assert!(host.parse::<IpAddr>().unwrap().is_loopback(), "{resolved}");
        assert_eq!(resolved.port_u16(), Some(8080));
        let literal = Uri::from_static("http://[::1]:1/");
        assert_eq!(resolve_here(&literal).await.unwrap(), literal);
    }
}
