//! The HTTP server: where it listens, its timeouts and its request limits.
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `HOST` | `0.0.0.0` | Bind address: an IPv4 or IPv6 address (`[::]` brackets allowed), or `localhost`. |
//! | `PORT` | `3001` | Listen port, 1-65535. |
//! | `SERVER_READ_TIMEOUT` | `60` | Seconds for a request's head to arrive, from its first byte (from the accept, for a connection's first request); `0` = no limit. |
//! | `SERVER_WRITE_TIMEOUT` | `600` | Seconds a write to the client may make no progress (the client stopped reading) before the connection is closed; a response that keeps flowing is never cut; `0` = no limit. |
//! | `SERVER_IDLE_TIMEOUT` | `120` | Seconds a connection with no request in flight is kept open; `0` = no limit. |
//! | `SERVER_GRACEFUL_SHUTDOWN_TIMEOUT` | `10` | Seconds allowed for shutdown; values below 10 are raised to 10 with a warning. |
//! | `MAX_CONCURRENT_REQUESTS` | `100` | In-flight proxy requests before new ones are shed (429); at least 1. |
//! | `MAX_REQUEST_BODY_MB` | `32` | Largest request body buffered for retries, in MiB (413 above); at least 1. *New.* |
//! | `MAX_INFLIGHT_BODY_MB` | 4 × `MAX_REQUEST_BODY_MB` | Request-body memory across all proxy requests, in MiB; uploads that would pass it are shed with 503 + `Retry-After`. At least `MAX_REQUEST_BODY_MB`. *New.* |
//! | `STREAM_IDLE_TIMEOUT` | `300` | Seconds a streamed upstream response may stay silent before it is cut; `0` = no limit. *New.* |
//! | `TRUSTED_PROXIES` | empty | Comma list of IPs / CIDR ranges whose `X-Forwarded-For` / `X-Real-IP` are believed; empty = none. *New.* |

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    num::NonZeroUsize,
    time::Duration,
};

use super::{
    env::{Vars, expected_message, split_list},
    ip_net::{IpNet, TrustedProxies},
};

pub(crate) const HOST: &str = "HOST";
pub(crate) const PORT: &str = "PORT";
pub(crate) const SERVER_READ_TIMEOUT: &str = "SERVER_READ_TIMEOUT";
pub(crate) const SERVER_WRITE_TIMEOUT: &str = "SERVER_WRITE_TIMEOUT";
pub(crate) const SERVER_IDLE_TIMEOUT: &str = "SERVER_IDLE_TIMEOUT";
pub(crate) const SERVER_GRACEFUL_SHUTDOWN_TIMEOUT: &str = "SERVER_GRACEFUL_SHUTDOWN_TIMEOUT";
pub(crate) const MAX_CONCURRENT_REQUESTS: &str = "MAX_CONCURRENT_REQUESTS";
pub(crate) const MAX_REQUEST_BODY_MB: &str = "MAX_REQUEST_BODY_MB";
pub(crate) const MAX_INFLIGHT_BODY_MB: &str = "MAX_INFLIGHT_BODY_MB";
pub(crate) const STREAM_IDLE_TIMEOUT: &str = "STREAM_IDLE_TIMEOUT";
pub(crate) const TRUSTED_PROXIES: &str = "TRUSTED_PROXIES";

pub(crate) const DEFAULT_PORT: u16 = 3001;
/// The shortest graceful-shutdown budget accepted.
pub(crate) const MIN_GRACEFUL_SHUTDOWN: Duration = Duration::from_secs(10);

const MIB: usize = 1024 * 1024;
const DEFAULT_MAX_CONCURRENT_REQUESTS: NonZeroUsize = NonZeroUsize::new(100).unwrap();
const DEFAULT_MAX_REQUEST_BODY: NonZeroUsize = NonZeroUsize::new(32 * MIB).unwrap();
/// The default in-flight body budget holds this many bodies of the largest size at once.
const DEFAULT_INFLIGHT_BODIES: usize = 4;

/// HTTP server settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServerConfig {
    /// `HOST`:`PORT`.
    pub(crate) addr: SocketAddr,
    /// `SERVER_READ_TIMEOUT`: how long a request's head (request line and headers) may take to
    /// arrive, counted from its first byte, or from the accept for a connection's first request;
    /// past it the connection is closed. The body is not limited by it. `None` = no limit.
    pub(crate) read_timeout: Option<Duration>,
    /// `SERVER_WRITE_TIMEOUT`: how long one write to the client may make no progress. A write
    /// stalls only when the client stops taking data and the socket's buffers are full; past the
    /// limit the write fails and the connection is closed (its response cut). Every write that
    /// goes through starts the clock again, and time spent waiting for the response (the
    /// upstream, or the next chunk of a stream) does not count, so a response that keeps flowing
    /// is never cut however long it lasts. Unlike Go's `WriteTimeout` (gpt-load's), it is not a
    /// deadline for the whole response. `None` = no limit.
    pub(crate) write_timeout: Option<Duration>,
    /// `SERVER_IDLE_TIMEOUT`: how long a connection may stay with no request in flight (every
    /// response handed over in full and, on HTTP/1.1, no byte of the next request received)
    /// before it is closed: an HTTP/1.1 keep-alive connection, or an HTTP/2 connection with no
    /// open stream. A request in flight is never cut by it. `None` = no limit.
    pub(crate) idle_timeout: Option<Duration>,
    /// `SERVER_GRACEFUL_SHUTDOWN_TIMEOUT`, at least [`MIN_GRACEFUL_SHUTDOWN`].
    pub(crate) graceful_shutdown_timeout: Duration,
    /// `MAX_CONCURRENT_REQUESTS`.
    pub(crate) max_concurrent_requests: NonZeroUsize,
    /// `MAX_REQUEST_BODY_MB`, in bytes.
    pub(crate) max_request_body: NonZeroUsize,
    /// `MAX_INFLIGHT_BODY_MB`, in bytes; at least `max_request_body`.
    pub(crate) max_inflight_body: NonZeroUsize,
    /// `STREAM_IDLE_TIMEOUT`; `None` = no limit.
    pub(crate) stream_idle_timeout: Option<Duration>,
    /// `TRUSTED_PROXIES`.
    pub(crate) trusted_proxies: TrustedProxies,
}

impl ServerConfig {
    pub(crate) fn from_vars(vars: &mut Vars<'_>) -> Self {
        let host = vars.parse_with(HOST, IpAddr::V4(Ipv4Addr::UNSPECIFIED), parse_host);
        let port = vars.parse_with(PORT, DEFAULT_PORT, |value| {
            value
                .parse::<u16>()
                .ok()
                .filter(|port| *port != 0 && value.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| expected_message(value, "a port (1-65535)"))
        });
        let read_timeout = vars.seconds_or_unlimited(SERVER_READ_TIMEOUT, 60);
        let write_timeout = vars.seconds_or_unlimited(SERVER_WRITE_TIMEOUT, 600);
        let idle_timeout = vars.seconds_or_unlimited(SERVER_IDLE_TIMEOUT, 120);
        let mut graceful_shutdown_timeout = vars.seconds(SERVER_GRACEFUL_SHUTDOWN_TIMEOUT, 10);
        if graceful_shutdown_timeout < MIN_GRACEFUL_SHUTDOWN {
            vars.warn(format!(
                "{SERVER_GRACEFUL_SHUTDOWN_TIMEOUT}: {} s is below the minimum; using {} s",
                graceful_shutdown_timeout.as_secs(),
                MIN_GRACEFUL_SHUTDOWN.as_secs()
            ));
            graceful_shutdown_timeout = MIN_GRACEFUL_SHUTDOWN;
        }
        let max_concurrent_requests = vars.count(MAX_CONCURRENT_REQUESTS, DEFAULT_MAX_CONCURRENT_REQUESTS);
        let max_request_body = vars.parse_with(MAX_REQUEST_BODY_MB, DEFAULT_MAX_REQUEST_BODY, mebibytes);
        let max_inflight_body = max_inflight_body(vars, max_request_body);
        let stream_idle_timeout = vars.seconds_or_unlimited(STREAM_IDLE_TIMEOUT, 300);
        let trusted_proxies = trusted_proxies(vars);
        Self {
            addr: SocketAddr::new(host, port),
            read_timeout,
            write_timeout,
            idle_timeout,
            graceful_shutdown_timeout,
            max_concurrent_requests,
            max_request_body,
            max_inflight_body,
            stream_idle_timeout,
            trusted_proxies,
        }
    }
}

/// A whole number of MiB, at least 1, in bytes.
fn mebibytes(value: &str) -> Result<NonZeroUsize, String> {
    value
        .parse::<usize>()
        .ok()
        .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|mb| mb.checked_mul(MIB))
        .and_then(NonZeroUsize::new)
        .ok_or_else(|| expected_message(value, "a whole number of MiB, at least 1"))
}

/// `MAX_INFLIGHT_BODY_MB`: a budget below one body of the largest size would shed that body
/// forever, so it must be at least `MAX_REQUEST_BODY_MB`.
fn max_inflight_body(vars: &mut Vars<'_>, max_request_body: NonZeroUsize) -> NonZeroUsize {
    let default = max_request_body.saturating_mul(NonZeroUsize::new(DEFAULT_INFLIGHT_BODIES).unwrap());
    let budget = vars.parse_with(MAX_INFLIGHT_BODY_MB, default, mebibytes);
    if budget < max_request_body {
        vars.invalid(
            MAX_INFLIGHT_BODY_MB,
            format!(
                "{} MiB is below {MAX_REQUEST_BODY_MB} ({} MiB); one body of the largest size must fit",
                budget.get() / MIB,
                max_request_body.get() / MIB
            ),
        );
        return default;
    }
    budget
}

/// An IP address, `[v6]`, or `localhost` (127.0.0.1).
fn parse_host(value: &str) -> Result<IpAddr, String> {
    if value.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let bare = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    bare.parse()
        .map_err(|_| expected_message(value, "an IP address (e.g. 0.0.0.0, 127.0.0.1, ::) or localhost"))
}

/// Every entry of `TRUSTED_PROXIES`; each invalid one is its own problem.
fn trusted_proxies(vars: &mut Vars<'_>) -> TrustedProxies {
    let entries = vars
        .get(TRUSTED_PROXIES)
        .map(|value| split_list(&value))
        .unwrap_or_default();
    let mut nets = Vec::with_capacity(entries.len());
    for entry in entries {
        match entry.parse::<IpNet>() {
            Ok(net) => nets.push(net),
            Err(err) => vars.invalid(TRUSTED_PROXIES, expected_message(&entry, &err.to_string())),
        }
    }
    TrustedProxies::new(nets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::env::read_with;

    fn load(pairs: &[(&str, &str)]) -> (Result<Vec<String>, String>, ServerConfig) {
        read_with(pairs, ServerConfig::from_vars)
    }

    #[test]
    fn defaults() {
        let (result, config) = load(&[]);
        assert!(result.unwrap().is_empty());
        assert_eq!(
            config,
            ServerConfig {
                addr: "0.0.0.0:3001".parse().unwrap(),
                read_timeout: Some(Duration::from_secs(60)),
                write_timeout: Some(Duration::from_secs(600)),
                idle_timeout: Some(Duration::from_secs(120)),
                graceful_shutdown_timeout: Duration::from_secs(10),
                max_concurrent_requests: NonZeroUsize::new(100).unwrap(),
                max_request_body: NonZeroUsize::new(32 * MIB).unwrap(),
                max_inflight_body: NonZeroUsize::new(128 * MIB).unwrap(),
                stream_idle_timeout: Some(Duration::from_secs(300)),
                trusted_proxies: TrustedProxies::default(),
            }
        );
    }

    #[test]
    fn every_variable() {
        let (result, config) = load(&[
            (HOST, "127.0.0.1"),
            (PORT, "8080"),
            (SERVER_READ_TIMEOUT, "5"),
            (SERVER_WRITE_TIMEOUT, "0"),
            (SERVER_IDLE_TIMEOUT, "30"),
            (SERVER_GRACEFUL_SHUTDOWN_TIMEOUT, "45"),
            (MAX_CONCURRENT_REQUESTS, "7"),
            (MAX_REQUEST_BODY_MB, "2"),
            (MAX_INFLIGHT_BODY_MB, "3"),
            (STREAM_IDLE_TIMEOUT, "0"),
            (TRUSTED_PROXIES, "10.0.0.0/8, ::1"),
        ]);
        assert!(result.unwrap().is_empty());
        assert_eq!(config.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.read_timeout, Some(Duration::from_secs(5)));
        assert_eq!(config.write_timeout, None);
        assert_eq!(config.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(config.graceful_shutdown_timeout, Duration::from_secs(45));
        assert_eq!(config.max_concurrent_requests.get(), 7);
        assert_eq!(config.max_request_body.get(), 2 * MIB);
        assert_eq!(config.max_inflight_body.get(), 3 * MIB);
        assert_eq!(config.stream_idle_timeout, None);
        assert!(config.trusted_proxies.contains("10.1.2.3".parse().unwrap()));
        assert!(config.trusted_proxies.contains("::1".parse().unwrap()));
        assert!(!config.trusted_proxies.contains("192.168.0.1".parse().unwrap()));
    }

    #[test]
    fn hosts() {
        for (host, addr) in [
            ("::", "[::]:3001"),
            ("[::1]", "[::1]:3001"),
            ("LocalHost", "127.0.0.1:3001"),
        ] {
            let (result, config) = load(&[(HOST, host)]);
            assert!(result.is_ok());
            assert_eq!(config.addr, addr.parse().unwrap(), "{host}");
        }
        let (result, _) = load(&[(HOST, "gateway.internal")]);
        assert_eq!(
            result.unwrap_err(),
            "HOST: \"gateway.internal\" is not an IP address (e.g. 0.0.0.0, 127.0.0.1, ::) or localhost"
        );
    }

    #[test]
    fn ports() {
        for bad in ["0", "70000", "-1", "+80", "http", "80.0"] {
            let (result, config) = load(&[(PORT, bad)]);
            assert_eq!(
                result.unwrap_err(),
                format!("PORT: \"{bad}\" is not a port (1-65535)")
            );
            assert_eq!(config.addr.port(), DEFAULT_PORT);
        }
        assert_eq!(load(&[(PORT, "65535")]).1.addr.port(), 65535);
        assert_eq!(load(&[(PORT, "1")]).1.addr.port(), 1);
    }

    #[test]
    fn graceful_timeout_is_raised_to_ten_with_a_warning() {
        for short in ["0", "3", "9"] {
            let (result, config) = load(&[(SERVER_GRACEFUL_SHUTDOWN_TIMEOUT, short)]);
            assert_eq!(config.graceful_shutdown_timeout, Duration::from_secs(10));
            assert_eq!(
                result.unwrap(),
                [format!(
                    "SERVER_GRACEFUL_SHUTDOWN_TIMEOUT: {short} s is below the minimum; using 10 s"
                )]
            );
        }
    }

    #[test]
    fn limits_must_be_at_least_one() {
        let (result, _) = load(&[(MAX_CONCURRENT_REQUESTS, "0"), (MAX_REQUEST_BODY_MB, "0")]);
        assert_eq!(
            result.unwrap_err(),
            "MAX_CONCURRENT_REQUESTS: \"0\" is not a whole number of at least 1\n\
             MAX_REQUEST_BODY_MB: \"0\" is not a whole number of MiB, at least 1"
        );
        let (result, _) = load(&[(MAX_REQUEST_BODY_MB, "99999999999999999")]);
        assert!(result.unwrap_err().starts_with("MAX_REQUEST_BODY_MB: "));
    }

    #[test]
    fn the_inflight_body_budget_follows_the_body_limit_and_holds_one_body() {
        let (result, config) = load(&[(MAX_REQUEST_BODY_MB, "10")]);
        assert!(result.unwrap().is_empty());
        assert_eq!(config.max_inflight_body.get(), 40 * MIB);
        let (result, config) = load(&[(MAX_REQUEST_BODY_MB, "10"), (MAX_INFLIGHT_BODY_MB, "10")]);
        assert!(result.unwrap().is_empty());
        assert_eq!(config.max_inflight_body.get(), 10 * MIB);
        let (result, _) = load(&[(MAX_REQUEST_BODY_MB, "10"), (MAX_INFLIGHT_BODY_MB, "9")]);
        assert_eq!(
            result.unwrap_err(),
            "MAX_INFLIGHT_BODY_MB: 9 MiB is below MAX_REQUEST_BODY_MB (10 MiB); one body of the \
             largest size must fit"
        );
        let (result, _) = load(&[(MAX_INFLIGHT_BODY_MB, "0")]);
        assert_eq!(
            result.unwrap_err(),
            "MAX_INFLIGHT_BODY_MB: \"0\" is not a whole number of MiB, at least 1"
        );
    }

    #[test]
    fn every_invalid_trusted_proxy_is_reported() {
        let (result, config) = load(&[(TRUSTED_PROXIES, "10.0.0.0/8, 10.0.0.0/33, proxy.local,fd00::/200")]);
        assert_eq!(
            result.unwrap_err(),
            "TRUSTED_PROXIES: \"10.0.0.0/33\" is not a CIDR range: the prefix must be 0-32 for IPv4\n\
             TRUSTED_PROXIES: \"proxy.local\" is not an IP address or CIDR range (e.g. 10.0.0.0/8, \
             192.168.1.10, fd00::/8)\n\
             TRUSTED_PROXIES: \"fd00::/200\" is not a CIDR range: the prefix must be 0-128 for IPv6"
        );
        assert_eq!(config.trusted_proxies.nets().len(), 1);
    }
}
