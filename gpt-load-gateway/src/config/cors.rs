//! Cross-origin requests (CORS).
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `ENABLE_CORS` | `false` | Answer CORS preflights and add CORS headers. |
//! | `ALLOWED_ORIGINS` | empty | Comma list of origins (`https://app.example.com`); `*` = any. Required when CORS is on. |
//! | `ALLOWED_METHODS` | `GET,POST,PUT,DELETE,OPTIONS` | Sent in `Access-Control-Allow-Methods`. |
//! | `ALLOWED_HEADERS` | `*` | Sent in `Access-Control-Allow-Headers`. |
//! | `ALLOW_CREDENTIALS` | `false` | Send `Access-Control-Allow-Credentials: true`. |
//!
//! CORS on with no origins is an error (as in gpt-load). `*` gives a warning, and a stronger
//! one together with credentials: the origin is echoed back, so any site could then make
//! credentialed calls. An origin ending in `/` never matches a browser's `Origin` header and
//! gives a warning too.

use super::env::Vars;

pub(crate) const ENABLE_CORS: &str = "ENABLE_CORS";
pub(crate) const ALLOWED_ORIGINS: &str = "ALLOWED_ORIGINS";
pub(crate) const ALLOWED_METHODS: &str = "ALLOWED_METHODS";
pub(crate) const ALLOWED_HEADERS: &str = "ALLOWED_HEADERS";
pub(crate) const ALLOW_CREDENTIALS: &str = "ALLOW_CREDENTIALS";

const DEFAULT_METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "OPTIONS"];

/// CORS settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CorsConfig {
    /// `ENABLE_CORS`.
    pub(crate) enabled: bool,
    /// `ALLOWED_ORIGINS`; `*` = any.
    pub(crate) allowed_origins: Vec<String>,
    /// `ALLOWED_METHODS`.
    pub(crate) allowed_methods: Vec<String>,
    /// `ALLOWED_HEADERS`.
    pub(crate) allowed_headers: Vec<String>,
    /// `ALLOW_CREDENTIALS`.
    pub(crate) allow_credentials: bool,
}

impl CorsConfig {
    pub(crate) fn from_vars(vars: &mut Vars<'_>) -> Self {
        let config = Self {
            enabled: vars.flag(ENABLE_CORS, false),
            allowed_origins: vars.list(ALLOWED_ORIGINS, &[]),
            allowed_methods: vars.list(ALLOWED_METHODS, DEFAULT_METHODS),
            allowed_headers: vars.list(ALLOWED_HEADERS, &["*"]),
            allow_credentials: vars.flag(ALLOW_CREDENTIALS, false),
        };
        if config.enabled {
            config.check(vars);
        }
        config
    }

    /// Whether every origin is allowed.
    pub(crate) fn allows_any_origin(&self) -> bool {
        self.allowed_origins.iter().any(|origin| origin == "*")
    }

    fn check(&self, vars: &mut Vars<'_>) {
        if self.allowed_origins.is_empty() {
            vars.invalid(
                ALLOWED_ORIGINS,
                "must not be empty when ENABLE_CORS is on; list the allowed origins, or set ENABLE_CORS=false",
            );
            return;
        }
        if self.allows_any_origin() {
            if self.allow_credentials {
                vars.warn(
                    "ALLOWED_ORIGINS=* with ALLOW_CREDENTIALS=true lets any website make credentialed \
                     requests; list the allowed origins instead",
                );
            } else {
                vars.warn(
                    "ALLOWED_ORIGINS=* allows requests from any website; list the allowed origins instead",
                );
            }
        }
        for origin in self
            .allowed_origins
            .iter()
            .filter(|origin| origin.len() > 1 && origin.ends_with('/'))
        {
            vars.warn(format!(
                "ALLOWED_ORIGINS: {origin:?} ends with '/' and will never match a browser's Origin header"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::env::read_with;

    fn load(pairs: &[(&str, &str)]) -> (Result<Vec<String>, String>, CorsConfig) {
        read_with(pairs, CorsConfig::from_vars)
    }

    #[test]
    fn defaults() {
        let (result, config) = load(&[]);
        assert!(result.unwrap().is_empty());
        assert_eq!(
            config,
            CorsConfig {
                enabled: false,
                allowed_origins: vec![],
                allowed_methods: ["GET", "POST", "PUT", "DELETE", "OPTIONS"]
                    .map(str::to_owned)
                    .to_vec(),
                allowed_headers: vec!["*".to_owned()],
                allow_credentials: false,
            }
        );
    }

    #[test]
    fn every_variable() {
        let (result, config) = load(&[
            (ENABLE_CORS, "yes"),
            (ALLOWED_ORIGINS, "https://a.example, http://localhost:5173"),
            (ALLOWED_METHODS, "GET, POST"),
            (ALLOWED_HEADERS, "Authorization,Content-Type"),
            (ALLOW_CREDENTIALS, "ON"),
        ]);
        assert!(result.unwrap().is_empty());
        assert!(config.enabled && config.allow_credentials && !config.allows_any_origin());
        assert_eq!(
            config.allowed_origins,
            ["https://a.example", "http://localhost:5173"]
        );
        assert_eq!(config.allowed_methods, ["GET", "POST"]);
        assert_eq!(config.allowed_headers, ["Authorization", "Content-Type"]);
    }

    #[test]
    fn enabled_without_origins_is_an_error() {
        let (result, _) = load(&[(ENABLE_CORS, "true"), (ALLOWED_ORIGINS, " , ")]);
        assert_eq!(
            result.unwrap_err(),
            "ALLOWED_ORIGINS: must not be empty when ENABLE_CORS is on; list the allowed origins, or set \
             ENABLE_CORS=false"
        );
        assert!(load(&[(ENABLE_CORS, "false")]).0.is_ok());
    }

    #[test]
    fn wildcard_warnings() {
        let (result, config) = load(&[(ENABLE_CORS, "1"), (ALLOWED_ORIGINS, "*")]);
        assert!(config.allows_any_origin());
        assert_eq!(
            result.unwrap(),
            ["ALLOWED_ORIGINS=* allows requests from any website; list the allowed origins instead"]
        );
        let (result, _) = load(&[
            (ENABLE_CORS, "1"),
            (ALLOWED_ORIGINS, "*"),
            (ALLOW_CREDENTIALS, "true"),
        ]);
        let warnings = result.unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("ALLOW_CREDENTIALS=true"), "{warnings:?}");
        let (result, _) = load(&[(ALLOWED_ORIGINS, "*")]);
        assert!(result.unwrap().is_empty(), "no warning while CORS is off");
    }

    #[test]
    fn trailing_slash_warning() {
        let (result, _) = load(&[(ENABLE_CORS, "on"), (ALLOWED_ORIGINS, "https://a.example/")]);
        assert_eq!(
            result.unwrap(),
            [
                "ALLOWED_ORIGINS: \"https://a.example/\" ends with '/' and will never match a browser's Origin header"
            ]
        );
    }
}
