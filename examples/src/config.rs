use std::{env, fmt, net::SocketAddr};

use gpt_load_tower::channel::{ChannelKind, UnknownChannel};

/// What an example proxies: one group, its upstream and keys, and the proxy key clients use.
#[derive(Clone, Debug)]
pub struct ExampleConfig {
    /// Where the example listens (`LISTEN`, default `127.0.0.1:3001`).
    pub listen: SocketAddr,
    /// The group name in the URL (`GROUP`, default `demo`).
    pub group: String,
    /// The group's API format (`CHANNEL`, default `openai`).
    pub channel: ChannelKind,
    /// The upstream base URL (`UPSTREAM_URL`, default `http://127.0.0.1:8080`).
    pub upstream: String,
    /// The upstream keys (`UPSTREAM_KEYS`, comma-separated, default `sk-demo-1,sk-demo-2`).
    pub upstream_keys: Vec<String>,
    /// The key clients present (`PROXY_KEY`, default `sk-proxy-demo`).
    pub proxy_key: String,
    /// Extra attempts on other keys (`MAX_RETRIES`, default 3).
    pub max_retries: u32,
}

/// An environment variable with a value the example cannot use.
#[derive(Debug)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ExampleConfig {
    /// A configuration for `upstream` with the given keys, other fields at their defaults.
    pub fn new(upstream: impl Into<String>, upstream_keys: &[&str]) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3001)),
            group: "demo".to_owned(),
            channel: ChannelKind::OpenAi,
            upstream: upstream.into(),
            upstream_keys: upstream_keys.iter().map(|k| (*k).to_owned()).collect(),
            proxy_key: "sk-proxy-demo".to_owned(),
            max_retries: 3,
        }
    }

    /// Reads the configuration from the environment variables documented on each field.
    pub fn from_env() -> Result<Self, ConfigError> {
        let var = |name: &str| env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut config = Self::new(
            var("UPSTREAM_URL").unwrap_or_else(|| "http://127.0.0.1:8080".to_owned()),
            &["sk-demo-1", "sk-demo-2"],
        );
        if let Some(listen) = var("LISTEN") {
            config.listen = listen.parse().map_err(|_| {
                ConfigError(format!("LISTEN `{listen}` is not an address like 127.0.0.1:3001"))
            })?;
        }
        if let Some(group) = var("GROUP") {
            config.group = group;
        }
        if let Some(channel) = var("CHANNEL") {
            config.channel = channel
                .parse()
                .map_err(|e: UnknownChannel| ConfigError(format!("CHANNEL: {e}")))?;
        }
        if let Some(keys) = var("UPSTREAM_KEYS") {
            config.upstream_keys = keys
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(key) = var("PROXY_KEY") {
            config.proxy_key = key;
        }
        if let Some(retries) = var("MAX_RETRIES") {
            config.max_retries = retries
                .parse()
                .map_err(|_| ConfigError(format!("MAX_RETRIES `{retries}` is not a number")))?;
        }
        if config.upstream_keys.is_empty() {
            return Err(ConfigError("UPSTREAM_KEYS lists no key".to_owned()));
        }
        Ok(config)
    }
}
