//! Cluster mode: Redis and the node's role.
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `REDIS_DSN` | unset | `redis://[user][:password@]host[:port][/db]`, `rediss://…` (TLS), `redis+unix:///path` or `unix:///path`. Unset → in-process store, single node. |
//! | `REDIS_CA_CERT` | unset | A PEM file of the certificates a `rediss://` server's certificate must chain to, instead of the Mozilla roots (a private CA). |
//! | `IS_SLAVE` | `false` | `true` → this node never becomes the leader (never runs migrations, key validation or log retention). |
//! | `REDIS_KEY_PREFIX` | `gpt-load` | Prefix of every Redis key and channel of this cluster, so several clusters (or tests) can share one Redis. |
//! | `CLUSTER_NODE_ID` | host name and a random suffix | This node's name in `/api/cluster/status`; unique within the cluster. |
//! | `CLUSTER_LEASE_SECONDS` | `15` | The leader lease: another node takes over within this long after the leader dies. |
//! | `CLUSTER_RECONCILE_SECONDS` | `10` | How often a node compares its state versions with Redis, healing a missed message. |
//!
//! With Redis, nodes share invalidations and key events and elect a leader through a lease; in
//! gpt-load every node without `IS_SLAVE=true` is a master and exactly one must run.
//! `IS_SLAVE=true` without `REDIS_DSN` is a warning: a single node must lead.

use std::time::Duration;

use super::{
    env::Vars,
    url::{SecretUrl, not_a, scheme_among},
};

pub(crate) const REDIS_DSN: &str = "REDIS_DSN";
pub(crate) const IS_SLAVE: &str = "IS_SLAVE";
pub(crate) const REDIS_CA_CERT: &str = "REDIS_CA_CERT";
pub(crate) const REDIS_KEY_PREFIX: &str = "REDIS_KEY_PREFIX";
pub(crate) const CLUSTER_NODE_ID: &str = "CLUSTER_NODE_ID";
pub(crate) const CLUSTER_LEASE_SECONDS: &str = "CLUSTER_LEASE_SECONDS";
pub(crate) const CLUSTER_RECONCILE_SECONDS: &str = "CLUSTER_RECONCILE_SECONDS";

const REDIS_SCHEMES: &[&str] = &["redis", "rediss", "redis+unix", "unix"];

/// Cluster settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClusterConfig {
    /// `REDIS_DSN`; `None` → single node with the in-process store.
    pub(crate) redis_dsn: Option<SecretUrl>,
    /// `REDIS_CA_CERT`, read: the PEM certificates a `rediss://` server must chain to.
    pub(crate) redis_ca_cert: Option<Vec<u8>>,
    /// `IS_SLAVE`: never take the leader lease.
    pub(crate) is_slave: bool,
    /// `REDIS_KEY_PREFIX`.
    pub(crate) key_prefix: String,
    /// `CLUSTER_NODE_ID`; `None` → the host name and a random suffix.
    pub(crate) node_id: Option<String>,
    /// `CLUSTER_LEASE_SECONDS`: how long the leader lease lasts without renewal.
    pub(crate) lease: Duration,
    /// `CLUSTER_RECONCILE_SECONDS`.
    pub(crate) reconcile_interval: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_dsn: None,
            redis_ca_cert: None,
            is_slave: false,
            key_prefix: "gpt-load".to_owned(),
            node_id: None,
            lease: Duration::from_secs(15),
            reconcile_interval: Duration::from_secs(10),
        }
    }
}

impl ClusterConfig {
    pub(crate) fn from_vars(vars: &mut Vars<'_>) -> Self {
        let redis_dsn = vars.get(REDIS_DSN).and_then(|raw| match parse_redis_url(&raw) {
            Ok(url) => Some(url),
            Err(message) => {
                vars.invalid(REDIS_DSN, message);
                None
            }
        });
        let redis_ca_cert = vars
            .get(REDIS_CA_CERT)
            .and_then(|path| match read_certificates(&path) {
                Ok(pem) => Some(pem),
                Err(message) => {
                    vars.invalid(REDIS_CA_CERT, message);
                    None
                }
            });
        let tls = redis_dsn
            .as_ref()
            .is_some_and(|url| scheme_among(url.expose(), &["rediss"]).is_some());
        if redis_ca_cert.is_some() && !tls {
            vars.warn("REDIS_CA_CERT has no effect without a rediss:// REDIS_DSN");
        }
        let is_slave = vars.flag(IS_SLAVE, false);
        if is_slave && redis_dsn.is_none() && vars.get(REDIS_DSN).is_none() {
            vars.warn(
                "IS_SLAVE=true has no effect without REDIS_DSN: a single node always runs the \
                 background jobs",
            );
        }
        let defaults = Self::default();
        let key_prefix = vars.string_or(REDIS_KEY_PREFIX, &defaults.key_prefix);
        let node_id = vars.get(CLUSTER_NODE_ID).filter(|id| !id.trim().is_empty());
        let lease = vars.positive_seconds(CLUSTER_LEASE_SECONDS, defaults.lease.as_secs());
        let reconcile_interval =
            vars.positive_seconds(CLUSTER_RECONCILE_SECONDS, defaults.reconcile_interval.as_secs());
        Self {
            redis_dsn,
            redis_ca_cert,
            is_slave,
            key_prefix,
            node_id,
            lease,
            reconcile_interval,
        }
    }
}

/// The PEM file at `path`; the error names it.
fn read_certificates(path: &str) -> Result<Vec<u8>, String> {
    match std::fs::read(path) {
        Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => Ok(pem),
        Ok(_) => Err(format!("{path} holds no PEM certificate")),
        Err(err) => Err(format!("{path} cannot be read: {err}")),
    }
}

/// A Redis URL with a known scheme and something after it; the error is the message after
/// `REDIS_DSN: ` and masks the password.
fn parse_redis_url(raw: &str) -> Result<SecretUrl, String> {
    match scheme_among(raw, REDIS_SCHEMES) {
        Some(scheme) if raw.len() > scheme.len() + 3 => Ok(SecretUrl::new(raw)),
        _ => Err(not_a(
            raw,
            "a Redis URL (redis://[:password@]host[:port][/db], rediss://… or unix:///path)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::env::read_with;

    fn load(pairs: &[(&str, &str)]) -> (Result<Vec<String>, String>, ClusterConfig) {
        read_with(pairs, ClusterConfig::from_vars)
    }

    #[test]
    fn defaults() {
        let (result, config) = load(&[]);
        assert!(result.unwrap().is_empty());
        assert_eq!(
            config,
            ClusterConfig {
                redis_dsn: None,
                redis_ca_cert: None,
                is_slave: false,
                key_prefix: "gpt-load".to_owned(),
                node_id: None,
                lease: Duration::from_secs(15),
                reconcile_interval: Duration::from_secs(10),
            }
        );
    }

    #[test]
    fn every_variable() {
        let (result, config) = load(&[
            (REDIS_DSN, "redis://:hunter2hunter2@cache:6379/1"),
            (IS_SLAVE, "TRUE"),
            (REDIS_KEY_PREFIX, "prod-eu"),
            (CLUSTER_NODE_ID, "node-a"),
            (CLUSTER_LEASE_SECONDS, "5"),
            (CLUSTER_RECONCILE_SECONDS, "2"),
        ]);
        assert!(result.unwrap().is_empty());
        assert!(config.is_slave);
        assert_eq!(config.key_prefix, "prod-eu");
        assert_eq!(config.node_id.as_deref(), Some("node-a"));
        assert_eq!(config.lease, Duration::from_secs(5));
        assert_eq!(config.reconcile_interval, Duration::from_secs(2));
        let url = config.redis_dsn.unwrap();
        assert_eq!(url.expose(), "redis://:hunter2hunter2@cache:6379/1");
        assert_eq!(url.to_string(), "redis://:****@cache:6379/1");
        for ok in [
            "rediss://cache",
            "redis+unix:///run/redis.sock",
            "unix:///run/redis.sock",
            "REDIS://h",
        ] {
            assert!(parse_redis_url(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn invalid_urls_are_errors_with_the_password_masked() {
        for bad in [
            "cache:6379",
            "http://:hunter2hunter2@cache",
            "redis://",
            "hunter2hunter2@cache",
        ] {
            let (result, config) = load(&[(REDIS_DSN, bad)]);
            let text = result.unwrap_err();
            assert!(text.starts_with("REDIS_DSN: "), "{text}");
            assert!(text.contains("is not a Redis URL"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
            assert!(config.redis_dsn.is_none());
        }
    }

    #[test]
    fn a_lease_or_reconcile_interval_of_zero_is_an_error() {
        for name in [CLUSTER_LEASE_SECONDS, CLUSTER_RECONCILE_SECONDS] {
            let (result, _) = load(&[(name, "0")]);
            let text = result.unwrap_err();
            assert!(text.starts_with(&format!("{name}: ")), "{text}");
        }
    }

    #[test]
    fn slave_without_redis_warns() {
        let (result, config) = load(&[(IS_SLAVE, "yes")]);
        assert!(config.is_slave);
        assert_eq!(result.unwrap().len(), 1);
    }

    #[test]
    fn a_ca_file_is_read_and_a_bad_one_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let pem = pem.to_str().unwrap();
        let (result, config) = load(&[(REDIS_DSN, "rediss://cache:6380"), (REDIS_CA_CERT, pem)]);
        assert!(result.unwrap().is_empty());
        assert!(
            config
                .redis_ca_cert
                .unwrap()
                .starts_with(b"-----BEGIN CERTIFICATE-----")
        );

        let (result, _) = load(&[(REDIS_DSN, "redis://cache"), (REDIS_CA_CERT, pem)]);
        assert_eq!(result.unwrap().len(), 1, "a CA without TLS warns");

        let text = dir.path().join("not-a-cert.txt");
        std::fs::write(&text, "hello").unwrap();
        let missing = dir.path().join("missing.pem");
        for (path, says) in [(&text, "holds no PEM certificate"), (&missing, "cannot be read")] {
            let path = path.to_str().unwrap();
            let (result, _) = load(&[(REDIS_DSN, "rediss://cache"), (REDIS_CA_CERT, path)]);
            let error = result.unwrap_err();
            assert!(
                error.contains(REDIS_CA_CERT) && error.contains(path) && error.contains(says),
                "{error}"
            );
        }
    }
}
