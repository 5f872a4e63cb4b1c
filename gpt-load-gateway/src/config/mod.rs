//! Static configuration from environment variables, one typed struct per concern.
//!
//! [`Config::from_env`] loads `.env` from the working directory (the real environment wins), then
//! reads every variable. [`Config::from_source`] reads from any [`EnvSource`] (a map, a closure),
//! which is what tests use.
//!
//! The variables are gpt-load 1.4's, with the same names and defaults, plus `DATA_DIR`,
//! `TRUSTED_PROXIES`, `MAX_REQUEST_BODY_MB`, `MAX_INFLIGHT_BODY_MB` and `STREAM_IDLE_TIMEOUT`:
//!
//! | Concern | Variables | Module |
//! |---|---|---|
//! | data directory | `DATA_DIR` (default `./data`: the generated admin key, and the default SQLite and log file locations) | here |
//! | HTTP server | `HOST`, `PORT`, `SERVER_*_TIMEOUT`, `MAX_CONCURRENT_REQUESTS`, `MAX_REQUEST_BODY_MB`, `MAX_INFLIGHT_BODY_MB`, `STREAM_IDLE_TIMEOUT`, `TRUSTED_PROXIES` | [`server`] |
//! | secrets | `AUTH_KEY`, `ENCRYPTION_KEY` | [`auth`] |
//! | database | `DATABASE_DSN`, `ADOPT_GPT_LOAD` | [`database`] |
//! | cluster | `REDIS_DSN`, `IS_SLAVE` | [`cluster`] |
//! | outbound proxy | `HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY` (and lower-case forms) | [`proxy`] |
//! | CORS | `ENABLE_CORS`, `ALLOWED_ORIGINS`, `ALLOWED_METHODS`, `ALLOWED_HEADERS`, `ALLOW_CREDENTIALS` | [`cors`] |
//! | logging | `LOG_LEVEL`, `LOG_FORMAT`, `LOG_ENABLE_FILE`, `LOG_FILE_PATH` | [`log`] |
//!
//! Deviation from gpt-load: a value that cannot be used is an error, not a silent default. All
//! problems are collected and reported together in one [`ConfigError`], one line each, naming
//! the variable and never showing a secret. Weak keys and risky CORS settings are warnings,
//! returned next to the configuration for the caller to log. `docs/CONFIG.md` has the full
//! table.

pub(crate) mod auth;
pub(crate) mod cluster;
pub(crate) mod cors;
pub(crate) mod database;
pub(crate) mod dotenv;
pub(crate) mod env;
pub(crate) mod error;
mod go_mysql;
pub(crate) mod ip_net;
pub(crate) mod log;
pub(crate) mod proxy;
pub(crate) mod server;
pub(crate) mod url;

use std::path::{Path, PathBuf};

pub(crate) use self::{
    auth::AuthConfig,
    cluster::ClusterConfig,
    cors::CorsConfig,
    database::DatabaseConfig,
    env::{EnvSource, ProcessEnv, Vars},
    error::ConfigError,
    log::LogConfig,
    proxy::ProxyConfig,
    server::ServerConfig,
};

pub(crate) const DATA_DIR: &str = "DATA_DIR";
pub(crate) const DEFAULT_DATA_DIR: &str = "./data";

/// The file `Config::from_env` loads first, relative to the working directory.
pub(crate) const DOTENV_FILE: &str = ".env";

/// The whole static configuration.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// `DATA_DIR`: holds the generated admin key (`auth_key`) and, unless configured
    /// otherwise, the SQLite database and the log file.
    pub(crate) data_dir: PathBuf,
    pub(crate) server: ServerConfig,
    pub(crate) auth: AuthConfig,
    pub(crate) database: DatabaseConfig,
    pub(crate) cluster: ClusterConfig,
    /// Checked at start; the upstream client reads the same variables when it opens a pool.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "validated here, read by the client from the environment")
    )]
    pub(crate) proxy: ProxyConfig,
    pub(crate) cors: CorsConfig,
    pub(crate) log: LogConfig,
    /// `GPT_LOAD_BOOTSTRAP`: a JSON file of groups and keys created at start (docs/BOOTSTRAP.md).
    pub(crate) bootstrap: Option<PathBuf>,
}

impl Config {
    /// Loads `./.env` (without overriding variables already set), then reads the process
    /// environment. Returns the configuration and the warnings to log.
    ///
    /// Changes the process environment: call it at start-up, before other threads run.
    pub(crate) fn from_env() -> Result<(Self, Vec<String>), ConfigError> {
        dotenv::load_dotenv(Path::new(DOTENV_FILE))?;
        Self::from_source(&ProcessEnv)
    }

    /// Reads every variable from `source`. Returns the configuration and the warnings to log,
    /// or every problem found.
    pub(crate) fn from_source(source: &impl EnvSource) -> Result<(Self, Vec<String>), ConfigError> {
        let mut vars = Vars::new(source);
        let data_dir = PathBuf::from(vars.string_or(DATA_DIR, DEFAULT_DATA_DIR));
        let config = Self {
            server: ServerConfig::from_vars(&mut vars),
            auth: AuthConfig::from_vars(&mut vars),
            database: DatabaseConfig::from_vars(&mut vars, &data_dir),
            cluster: ClusterConfig::from_vars(&mut vars),
            proxy: ProxyConfig::from_vars(&mut vars),
            cors: CorsConfig::from_vars(&mut vars),
            log: LogConfig::from_vars(&mut vars, &data_dir),
            bootstrap: vars.get("GPT_LOAD_BOOTSTRAP").map(PathBuf::from),
            data_dir,
        };
        let warnings = vars.finish()?;
        Ok((config, warnings))
    }
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, num::NonZeroUsize, time::Duration};

    use super::{database::DatabaseDsn, env::map, log::LogLevel, *};

    fn load(pairs: &[(&str, &str)]) -> Result<(Config, Vec<String>), ConfigError> {
        Config::from_source(&map(pairs))
    }

    #[test]
    fn defaults_with_an_empty_environment() {
        let (config, warnings) = load(&[]).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.server.addr, "0.0.0.0:3001".parse::<SocketAddr>().unwrap());
        assert_eq!(config.server.read_timeout, Some(Duration::from_secs(60)));
        assert_eq!(config.server.write_timeout, Some(Duration::from_secs(600)));
        assert_eq!(config.server.idle_timeout, Some(Duration::from_secs(120)));
        assert_eq!(config.server.graceful_shutdown_timeout, Duration::from_secs(10));
        assert_eq!(
            config.server.max_concurrent_requests,
            NonZeroUsize::new(100).unwrap()
        );
        assert_eq!(config.server.max_request_body.get(), 32 * 1024 * 1024);
        assert_eq!(config.server.stream_idle_timeout, Some(Duration::from_secs(300)));
        assert!(config.server.trusted_proxies.is_empty());
        assert!(config.auth.auth_key.is_none() && config.auth.encryption_key.is_none());
        assert_eq!(
            config.database.dsn,
            DatabaseDsn::Sqlite {
                path: PathBuf::from("./data/gpt-load.db")
            }
        );
        assert_eq!(config.cluster, ClusterConfig::default());
        assert_eq!(config.proxy, ProxyConfig::default());
        assert!(!config.cors.enabled && !config.cors.allow_credentials);
        assert!(config.cors.allowed_origins.is_empty());
        assert_eq!(
            config.cors.allowed_methods,
            ["GET", "POST", "PUT", "DELETE", "OPTIONS"]
        );
        assert_eq!(config.cors.allowed_headers, ["*"]);
        assert_eq!(config.log.level, LogLevel::Info);
        assert_eq!(config.log.file_path, PathBuf::from("./data/logs/app.log"));
        assert!(!config.log.enable_file);
    }

    #[test]
    fn every_variable_is_read() {
        let (config, warnings) = load(&[
            ("DATA_DIR", "/var/lib/gpt-load"),
            ("HOST", "127.0.0.1"),
            ("PORT", "3100"),
            ("SERVER_READ_TIMEOUT", "1"),
            ("SERVER_WRITE_TIMEOUT", "2"),
            ("SERVER_IDLE_TIMEOUT", "3"),
            ("SERVER_GRACEFUL_SHUTDOWN_TIMEOUT", "30"),
            ("MAX_CONCURRENT_REQUESTS", "5"),
            ("MAX_REQUEST_BODY_MB", "64"),
            ("STREAM_IDLE_TIMEOUT", "90"),
            ("TRUSTED_PROXIES", "172.16.0.0/12"),
            ("IS_SLAVE", "on"),
            ("AUTH_KEY", "sk-Zq8vLr2mXt9pWc4nB7"),
            ("ENCRYPTION_KEY", "correct horse battery staple"),
            ("DATABASE_DSN", "postgres://gpt:pw@db/gpt"),
            ("REDIS_DSN", "redis://cache:6379/2"),
            ("ENABLE_CORS", "true"),
            ("ALLOWED_ORIGINS", "https://console.example"),
            ("ALLOWED_METHODS", "GET,POST"),
            ("ALLOWED_HEADERS", "Authorization"),
            ("ALLOW_CREDENTIALS", "true"),
            ("LOG_LEVEL", "warn"),
            ("LOG_FORMAT", "json"),
            ("LOG_ENABLE_FILE", "1"),
            ("HTTP_PROXY", "http://p:3128"),
            ("HTTPS_PROXY", "http://p:3129"),
            ("NO_PROXY", "localhost"),
        ])
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/gpt-load"));
        assert_eq!(
            config.server.addr,
            "127.0.0.1:3100".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(config.server.read_timeout, Some(Duration::from_secs(1)));
        assert_eq!(config.server.write_timeout, Some(Duration::from_secs(2)));
        assert_eq!(config.server.idle_timeout, Some(Duration::from_secs(3)));
        assert_eq!(config.server.graceful_shutdown_timeout, Duration::from_secs(30));
        assert_eq!(config.server.max_concurrent_requests.get(), 5);
        assert_eq!(config.server.max_request_body.get(), 64 * 1024 * 1024);
        assert_eq!(config.server.stream_idle_timeout, Some(Duration::from_secs(90)));
        assert!(
            config
                .server
                .trusted_proxies
                .contains("172.20.0.1".parse().unwrap())
        );
        assert!(config.cluster.is_slave);
        assert_eq!(config.cluster.redis_dsn.unwrap().expose(), "redis://cache:6379/2");
        assert_eq!(config.auth.auth_key.unwrap().expose(), "sk-Zq8vLr2mXt9pWc4nB7");
        assert_eq!(
            config.auth.encryption_key.unwrap().expose(),
            "correct horse battery staple"
        );
        assert_eq!(
            config.database.dsn,
            DatabaseDsn::Postgres {
                url: "postgres://gpt:pw@db/gpt".to_owned()
            }
        );
        assert!(config.cors.enabled && config.cors.allow_credentials);
        assert_eq!(config.cors.allowed_origins, ["https://console.example"]);
        assert_eq!(config.cors.allowed_methods, ["GET", "POST"]);
        assert_eq!(config.cors.allowed_headers, ["Authorization"]);
        assert_eq!(config.log.level, LogLevel::Warn);
        assert_eq!(config.log.format, log::LogFormat::Json);
        assert!(config.log.enable_file);
        assert_eq!(
            config.log.file_path,
            PathBuf::from("/var/lib/gpt-load/logs/app.log")
        );
        assert_eq!(config.proxy.http_proxy.unwrap().expose(), "http://p:3128");
        assert_eq!(config.proxy.https_proxy.unwrap().expose(), "http://p:3129");
        assert_eq!(config.proxy.no_proxy, ["localhost"]);
    }

    #[test]
    fn data_dir_moves_the_default_files_only() {
        let (config, _) = load(&[("DATA_DIR", "/srv/gw"), ("LOG_FILE_PATH", "/tmp/gw.log")]).unwrap();
        assert_eq!(
            config.database.dsn,
            DatabaseDsn::Sqlite {
                path: PathBuf::from("/srv/gw/gpt-load.db")
            }
        );
        assert_eq!(config.log.file_path, PathBuf::from("/tmp/gw.log"));
    }

    #[test]
    fn all_problems_are_reported_together_one_line_each() {
        let err = load(&[
            ("PORT", "70000"),
            ("IS_SLAVE", "sometimes"),
            ("SERVER_READ_TIMEOUT", "1m"),
            ("AUTH_KEY", "sk-Zq8vLr2m\tXt9pWc4nB7"),
            ("DATABASE_DSN", "root:Sup3rS3cret@db:3306/gpt"),
            ("REDIS_DSN", "cache:6379"),
            ("ENABLE_CORS", "true"),
            ("LOG_FORMAT", "yaml"),
            ("TRUSTED_PROXIES", "10.0.0.0/40"),
        ])
        .unwrap_err();
        let text = err.to_string();
        let lines: Vec<&str> = text.lines().collect();
        let vars: Vec<&str> = err.problems().iter().map(|problem| problem.var()).collect();
        assert_eq!(
            vars,
            [
                "PORT",
                "SERVER_READ_TIMEOUT",
                "TRUSTED_PROXIES",
                "AUTH_KEY",
                "DATABASE_DSN",
                "REDIS_DSN",
                "IS_SLAVE",
                "ALLOWED_ORIGINS",
                "LOG_FORMAT",
            ]
        );
        assert_eq!(lines.len(), vars.len());
        for (line, var) in lines.iter().zip(&vars) {
            assert!(line.starts_with(&format!("{var}: ")), "{line}");
        }
        assert_eq!(lines[0], "PORT: \"70000\" is not a port (1-65535)");
        assert!(!text.contains("Sup3rS3cret"), "{text}");
        assert!(!text.contains("Zq8vLr2m"), "{text}");
    }

    #[test]
    fn warnings_are_returned_with_the_config() {
        let (config, warnings) = load(&[
            ("AUTH_KEY", "admin123"),
            ("SERVER_GRACEFUL_SHUTDOWN_TIMEOUT", "5"),
            ("ENABLE_CORS", "true"),
            ("ALLOWED_ORIGINS", "*"),
        ])
        .unwrap();
        assert_eq!(config.server.graceful_shutdown_timeout, Duration::from_secs(10));
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings.iter().all(|warning| !warning.contains("admin123")));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let (config, _) = load(&[
            ("AUTH_KEY", "sk-Zq8vLr2mXt9pWc4nB7"),
            ("ENCRYPTION_KEY", "correct horse battery staple"),
            ("DATABASE_DSN", "app:Sup3rS3cret@tcp(db:3306)/gpt"),
            ("REDIS_DSN", "redis://:Sup3rS3cret@cache"),
            ("HTTPS_PROXY", "http://u:Sup3rS3cret@p:1"),
        ])
        .unwrap();
        let shown = format!("{config:?}");
        for secret in ["Zq8vLr2m", "horse", "Sup3rS3cret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
}
