//! What the upstream client is configured with: per-phase timeouts, the connection pool and the
//! outbound proxy.

use std::{fmt, time::Duration};

use crate::settings::EffectiveConfig;

/// How requests reach upstreams.
///
/// The client has one set of defaults (the system settings); a request that carries its own
/// `ClientSettings` (or an `Arc` of them) as an extension — its group's effective settings — is
/// sent with those instead. A zero duration switches that timeout off.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ClientSettings {
    /// What shapes connections: requests whose settings agree on it share one pool, whatever
    /// their other timeouts.
    pub(crate) pool: PoolSettings,
    /// From the moment a connection is ready until the response head has arrived
    /// (`response_header_timeout`).
    pub(crate) response_header_timeout: Duration,
    /// Response head and the whole body, for requests that did not ask for a stream
    /// (`request_timeout`). Streamed requests have no total limit.
    pub(crate) request_timeout: Duration,
    /// Longest silence between two frames of a response body.
    pub(crate) stream_idle_timeout: Duration,
}

/// The settings of an upstream connection pool.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PoolSettings {
    /// TCP connect, proxy handshake and TLS handshake together (`connect_timeout`).
    pub(crate) connect_timeout: Duration,
    /// How long an idle pooled connection is kept (`idle_conn_timeout`).
    pub(crate) idle_conn_timeout: Duration,
    /// Idle connections kept per upstream host: the smaller of `max_idle_conns_per_host` and
    /// `max_idle_conns` (the pool caps idle connections per host only; see
    /// [`ClientSettings::from_effective`]).
    pub(crate) max_idle_per_host: usize,
    /// How connections reach the upstream (`proxy_url`).
    pub(crate) proxy: ProxySetting,
}

impl Default for ClientSettings {
    /// gpt-load's defaults: connect 15 s, response header 600 s, request 600 s, idle connections
    /// kept 120 s, 50 per host, the environment's proxy. The stream idle limit, which gpt-load does
    /// not have, is as generous as the response header limit.
    fn default() -> Self {
        Self {
            pool: PoolSettings {
                connect_timeout: Duration::from_secs(15),
                idle_conn_timeout: Duration::from_secs(120),
                max_idle_per_host: 50,
                proxy: ProxySetting::FromEnvironment,
            },
            response_header_timeout: Duration::from_secs(600),
            request_timeout: Duration::from_secs(600),
            stream_idle_timeout: Duration::from_secs(600),
        }
    }
}

impl ClientSettings {
    /// The client settings of a group's effective configuration.
    ///
    /// `max_idle_conns` is gpt-load's cap on idle connections in total, over every host. The
    /// pool (one per distinct connection settings, shared by the groups that have them) can only
    /// cap idle connections per host, so each host keeps at most the smaller of
    /// `max_idle_conns_per_host` and `max_idle_conns`: exactly gpt-load's total for a pool that
    /// reaches one upstream host, at most hosts × that cap for a pool that reaches several.
    pub(crate) fn from_effective(effective: &EffectiveConfig) -> Self {
        let max_idle = effective
            .max_idle_conns_per_host()
            .min(effective.max_idle_conns());
        Self {
            pool: PoolSettings {
                connect_timeout: effective.connect_timeout(),
                idle_conn_timeout: effective.idle_conn_timeout(),
                max_idle_per_host: usize::try_from(max_idle).unwrap_or(usize::MAX),
                proxy: ProxySetting::from_setting(effective.proxy_url().unwrap_or_default()),
            },
            response_header_timeout: effective.response_header_timeout(),
            request_timeout: effective.request_timeout(),
            stream_idle_timeout: effective.stream_idle_timeout(),
        }
    }
}

/// The outbound proxy.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub(crate) enum ProxySetting {
    /// Connect directly, whatever the environment says.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "tests connect directly whatever the environment says")
    )]
    None,
    /// Every request goes through this proxy: `http://`, `https://`, `socks5://` (names resolved
    /// here) or `socks5h://` (names resolved by the proxy), optionally with `user:password@`.
    /// An unusable URL falls back to the environment's proxy, as in gpt-load.
    Url(String),
    /// `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` (upper or lower case), read when
    /// the pool is created.
    #[default]
    FromEnvironment,
}

impl ProxySetting {
    /// gpt-load's `proxy_url` setting: empty means the environment's proxy.
    pub(crate) fn from_setting(value: &str) -> Self {
        let value = value.trim();
        if value.is_empty() {
            Self::FromEnvironment
        } else {
            Self::Url(value.to_owned())
        }
    }
}

impl fmt::Debug for ProxySetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Url(url) => f.debug_tuple("Url").field(&without_credentials(url)).finish(),
            Self::FromEnvironment => f.write_str("FromEnvironment"),
        }
    }
}

/// `url` with its user information (`user:password@`) replaced by `****@`, safe to log.
pub(crate) fn without_credentials(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    // Up to the query rather than the path: a password may hold an unescaped `/`.
    let end = url[start..].find(['?', '#']).map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}****{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show() {
        let proxy = ProxySetting::Url("socks5h://user:s3cret@proxy.local:1080/x?y".to_owned());
        let shown = format!("{proxy:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("user"), "{shown}");
        assert!(shown.contains("socks5h://****@proxy.local:1080"), "{shown}");
        assert_eq!(without_credentials("http://proxy:8080"), "http://proxy:8080");
        assert_eq!(without_credentials("u:p@proxy:8080"), "****@proxy:8080");
        assert_eq!(without_credentials("http://u:a/b@proxy"), "http://****@proxy");
        let mut settings = ClientSettings::default();
        settings.pool.proxy = proxy;
        assert!(!format!("{settings:?}").contains("s3cret"));
    }

    #[test]
    fn proxy_url_setting() {
        assert_eq!(ProxySetting::from_setting("  "), ProxySetting::FromEnvironment);
        assert_eq!(
            ProxySetting::from_setting(" http://p:1 "),
            ProxySetting::Url("http://p:1".to_owned())
        );
    }

    fn effective(config: serde_json::Value) -> EffectiveConfig {
        let serde_json::Value::Object(config) = config else {
            panic!("an object")
        };
        let group = crate::settings::validate_group_config(&config).unwrap();
        crate::settings::SystemSettings::default().effective(&group)
    }

    #[test]
    fn from_an_effective_config() {
        let settings = ClientSettings::from_effective(&effective(serde_json::json!({
            "connect_timeout": 3,
            "response_header_timeout": 4,
            "request_timeout": 5,
            "stream_idle_timeout": 6,
            "idle_conn_timeout": 7,
            "proxy_url": "socks5://proxy:1080",
        })));
        assert_eq!(
            settings,
            ClientSettings {
                pool: PoolSettings {
                    connect_timeout: Duration::from_secs(3),
                    idle_conn_timeout: Duration::from_secs(7),
                    max_idle_per_host: 50,
                    proxy: ProxySetting::Url("socks5://proxy:1080".to_owned()),
                },
                response_header_timeout: Duration::from_secs(4),
                request_timeout: Duration::from_secs(5),
                stream_idle_timeout: Duration::from_secs(6),
            }
        );
        let defaults = ClientSettings::from_effective(&effective(serde_json::json!({})));
        assert_eq!(defaults.pool.proxy, ProxySetting::FromEnvironment);
        assert_eq!(
            defaults.pool.max_idle_per_host, 50,
            "gpt-load's 100 in total, 50 per host"
        );
    }

    #[test]
    fn max_idle_conns_caps_each_host_of_the_pool() {
        let cases = [
            (serde_json::json!({"max_idle_conns": 1}), 1),
            (serde_json::json!({"max_idle_conns": 20}), 20),
            (
                serde_json::json!({"max_idle_conns": 20, "max_idle_conns_per_host": 5}),
                5,
            ),
            (serde_json::json!({"max_idle_conns_per_host": 100}), 100),
            (serde_json::json!({"max_idle_conns_per_host": 200}), 100),
        ];
        for (config, per_host) in cases {
            let settings = ClientSettings::from_effective(&effective(config.clone()));
            assert_eq!(settings.pool.max_idle_per_host, per_host, "{config}");
        }
        let one = ClientSettings::from_effective(&effective(serde_json::json!({"max_idle_conns": 1})));
        assert!(
            one.pool != ClientSettings::from_effective(&effective(serde_json::json!({}))).pool,
            "a different cap is a different pool"
        );
    }

    #[test]
    fn pools_depend_on_connection_settings_only() {
        let base = ClientSettings::default();
        let other_timeouts = ClientSettings {
            response_header_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
            stream_idle_timeout: Duration::from_secs(3),
            ..base.clone()
        };
        assert_eq!(base.pool, other_timeouts.pool);
        let mut proxied = base.clone();
        proxied.pool.proxy = ProxySetting::None;
        assert_ne!(base.pool, proxied.pool);
    }
}
