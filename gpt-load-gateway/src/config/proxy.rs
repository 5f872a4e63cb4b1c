//! The outbound proxy used to reach upstream APIs (not the gateway's own proxy routes).
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `HTTP_PROXY` / `http_proxy` | unset | Proxy for `http://` upstreams. |
//! | `HTTPS_PROXY` / `https_proxy` | unset | Proxy for `https://` upstreams. |
//! | `NO_PROXY` / `no_proxy` | empty | Comma list of hosts, domains (`.example.com`), IPs or CIDRs reached directly; `*` = all. |
//!
//! Used when a group's `proxy_url` setting is empty, as gpt-load does through Go's
//! `ProxyFromEnvironment`: the upper-case name wins over the lower-case one. A proxy is a URL
//! with an `http`, `https`, `socks5` or `socks5h` scheme; a value without a scheme
//! (`proxy.internal:3128`) means `http://`. Anything else is an error. Credentials in the URL
//! are masked in logs and messages.

use super::{
    env::{Vars, split_list},
    url::{SecretUrl, authority_host, not_a, scheme_among},
};

pub(crate) const HTTP_PROXY: &str = "HTTP_PROXY";
pub(crate) const HTTPS_PROXY: &str = "HTTPS_PROXY";
pub(crate) const NO_PROXY: &str = "NO_PROXY";

const PROXY_SCHEMES: &[&str] = &["http", "https", "socks5", "socks5h"];

/// Outbound proxy settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProxyConfig {
    /// `HTTP_PROXY` (or `http_proxy`).
    pub(crate) http_proxy: Option<SecretUrl>,
    /// `HTTPS_PROXY` (or `https_proxy`).
    pub(crate) https_proxy: Option<SecretUrl>,
    /// `NO_PROXY` (or `no_proxy`) entries.
    pub(crate) no_proxy: Vec<String>,
}

impl ProxyConfig {
    pub(crate) fn from_vars(vars: &mut Vars<'_>) -> Self {
        Self {
            http_proxy: proxy_url(vars, HTTP_PROXY, "http_proxy"),
            https_proxy: proxy_url(vars, HTTPS_PROXY, "https_proxy"),
            no_proxy: vars
                .get(NO_PROXY)
                .or_else(|| vars.get("no_proxy"))
                .map(|value| split_list(&value))
                .unwrap_or_default(),
        }
    }
}

/// The upper-case variable, else the lower-case one; an invalid value is reported under the
/// name it was read from.
fn proxy_url(vars: &mut Vars<'_>, upper: &'static str, lower: &'static str) -> Option<SecretUrl> {
    let (name, raw) = match vars.get(upper) {
        Some(raw) => (upper, raw),
        None => (lower, vars.get(lower)?),
    };
    match parse_proxy_url(&raw) {
        Ok(url) => Some(url),
        Err(message) => {
            vars.invalid(name, message);
            None
        }
    }
}

fn parse_proxy_url(raw: &str) -> Result<SecretUrl, String> {
    let url = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    };
    let host = authority_host(&url);
    if scheme_among(&url, PROXY_SCHEMES).is_some() && !host.is_empty() && !host.starts_with(':') {
        Ok(SecretUrl::new(url))
    } else {
        Err(not_a(
            raw,
            "a proxy URL (http://, https://, socks5:// or socks5h:// with a host)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::env::read_with;

    fn load(pairs: &[(&str, &str)]) -> (Result<Vec<String>, String>, ProxyConfig) {
        read_with(pairs, ProxyConfig::from_vars)
    }

    #[test]
    fn unset_by_default() {
        let (result, config) = load(&[]);
        assert!(result.unwrap().is_empty());
        assert_eq!(config, ProxyConfig::default());
    }

    #[test]
    fn every_variable() {
        let (result, config) = load(&[
            (HTTP_PROXY, "http://proxy.internal:3128"),
            (HTTPS_PROXY, "socks5h://user:hunter2hunter2@10.0.0.2:1080"),
            (NO_PROXY, "localhost, .internal,10.0.0.0/8"),
        ]);
        assert!(result.unwrap().is_empty());
        assert_eq!(config.http_proxy.unwrap().expose(), "http://proxy.internal:3128");
        let https = config.https_proxy.unwrap();
        assert_eq!(https.scheme(), "socks5h");
        assert_eq!(https.to_string(), "socks5h://user:****@10.0.0.2:1080");
        assert_eq!(config.no_proxy, ["localhost", ".internal", "10.0.0.0/8"]);
    }

    #[test]
    fn lower_case_names_are_read_and_upper_case_wins() {
        let (result, config) = load(&[
            ("http_proxy", "http://lower:1"),
            (HTTPS_PROXY, "http://upper:2"),
            ("https_proxy", "http://lower:2"),
            ("no_proxy", "a,b"),
        ]);
        assert!(result.unwrap().is_empty());
        assert_eq!(config.http_proxy.unwrap().expose(), "http://lower:1");
        assert_eq!(config.https_proxy.unwrap().expose(), "http://upper:2");
        assert_eq!(config.no_proxy, ["a", "b"]);
    }

    #[test]
    fn missing_scheme_means_http() {
        let (_, config) = load(&[(HTTP_PROXY, "proxy.internal:3128")]);
        assert_eq!(config.http_proxy.unwrap().expose(), "http://proxy.internal:3128");
    }

    #[test]
    fn invalid_proxies_are_errors_naming_the_variable_read() {
        let (result, _) = load(&[
            (HTTPS_PROXY, "ftp://u:hunter2hunter2@h"),
            ("http_proxy", "socks4://h:1"),
        ]);
        let text = result.unwrap_err();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "http_proxy: \"socks4://h:1\" is not a proxy URL (http://, https://, socks5:// or socks5h:// \
                 with a host)",
                "HTTPS_PROXY: \"ftp://u:****@h\" is not a proxy URL (http://, https://, socks5:// or socks5h:// \
                 with a host)",
            ]
        );
        assert!(load(&[(HTTP_PROXY, "http://")]).0.is_err());
        assert!(load(&[(HTTP_PROXY, "http://:8080")]).0.is_err());
    }
}
