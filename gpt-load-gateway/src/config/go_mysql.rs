//! gpt-load's MySQL DSN, `user:password@tcp(host:port)/dbname?params` (the Go driver's
//! format), converted to the `mysql://` URL the MySQL client here understands.
//!
//! - The user name and password are taken verbatim (the Go format does not escape them; the
//!   password may contain `@`, `:`, `/` or `?`) and percent-encoded in the URL.
//! - `tcp(…)` / `tcp6(…)` give the host and port (`127.0.0.1:3306` when empty); `unix(/path)`
//!   becomes `localhost` with a `socket=` parameter.
//! - Go-only parameters are dropped: `parseTime`, `charset`, `collation`, `loc`,
//!   `allowNativePasswords`, `interpolateParams`, `multiStatements` and `clientFoundRows` silently
//!   (they are defaults, or handled by the client here); `tls=true` / `tls=skip-verify` become
//!   `require_ssl=true` (plus `verify_ca=false&verify_identity=false`); any other parameter is
//!   dropped and reported by name so the caller can warn. Nothing is passed through that the
//!   client would reject as unknown.

use super::url::percent_encode;

/// Parameters that are dropped without a warning.
const SILENTLY_DROPPED: &[&str] = &[
    "parseTime",
    "charset",
    "collation",
    "loc",
    "allowNativePasswords",
    "interpolateParams",
    "multiStatements",
    "clientFoundRows",
];

/// The network markers that identify the Go format.
const NETWORKS: &[&str] = &["@tcp(", "@tcp6(", "@unix("];

/// A converted DSN.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Converted {
    /// The `mysql://` URL.
    pub(super) url: String,
    /// Names of parameters that were dropped and deserve a warning.
    pub(super) dropped: Vec<String>,
}

/// Whether `raw` is in the Go driver's format (`…@tcp(`, `…@tcp6(` or `…@unix(`).
pub(super) fn is_go_dsn(raw: &str) -> bool {
    find_network(raw).is_some()
}

/// Byte offset of the `@` that starts the network part, and the network name.
fn find_network(raw: &str) -> Option<(usize, &'static str)> {
    NETWORKS
        .iter()
        .filter_map(|marker| raw.rfind(marker).map(|at| (at, &marker[1..marker.len() - 1])))
        .max_by_key(|(at, _)| *at)
}

/// Converts a Go-format DSN; the error completes "… is not a MySQL DSN (<error>)".
pub(super) fn convert(raw: &str) -> Result<Converted, String> {
    let (at, network) = find_network(raw).ok_or_else(|| "no @tcp(host:port) part".to_owned())?;
    let (user, password) = match raw[..at].split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (&raw[..at], None),
    };
    let after_open = &raw[at + 1 + network.len() + 1..];
    let close = after_open
        .find(')')
        .ok_or_else(|| format!("missing ')' after {network}("))?;
    let address = &after_open[..close];
    let tail = after_open[close + 1..]
        .strip_prefix('/')
        .ok_or_else(|| "missing /dbname after the address".to_owned())?;
    let (database, params) = tail.split_once('?').unwrap_or((tail, ""));

    let mut url = String::from("mysql://");
    if !user.is_empty() || password.is_some() {
        url.push_str(&percent_encode(user));
        if let Some(password) = password {
            url.push(':');
            url.push_str(&percent_encode(password));
        }
        url.push('@');
    }
    let mut query: Vec<String> = Vec::new();
    if network == "unix" {
        if address.is_empty() {
            return Err("empty unix(socket path)".to_owned());
        }
        url.push_str("localhost");
        query.push(format!("socket={}", percent_encode(address)));
    } else if address.is_empty() {
        url.push_str("127.0.0.1:3306");
    } else if address.starts_with(':') || address.contains(['/', '@', ' ']) {
        return Err(format!("{network}(…) must hold host:port"));
    } else {
        url.push_str(address);
    }
    url.push('/');
    url.push_str(&percent_encode(database));

    let mut dropped = Vec::new();
    for param in params.split('&').filter(|param| !param.is_empty()) {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        if SILENTLY_DROPPED.contains(&name) {
            continue;
        }
        match (name, value) {
            ("tls", "true") => query.push("require_ssl=true".to_owned()),
            ("tls", "skip-verify") => {
                query.extend(
                    ["require_ssl=true", "verify_ca=false", "verify_identity=false"].map(str::to_owned),
                );
            }
            ("tls", "false") => {}
            _ => dropped.push(name.to_owned()),
        }
    }
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query.join("&"));
    }
    Ok(Converted { url, dropped })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(raw: &str) -> String {
        convert(raw).unwrap().url
    }

    #[test]
    fn gpt_load_example() {
        let converted =
            convert("root:123456@tcp(mysql:3306)/gpt-load?charset=utf8mb4&parseTime=True&loc=Local").unwrap();
        assert_eq!(converted.url, "mysql://root:123456@mysql:3306/gpt-load");
        assert!(converted.dropped.is_empty());
    }

    #[test]
    fn special_characters_in_the_password_are_encoded() {
        assert_eq!(
            url("app:p@ss:w/rd?#%&@tcp(db.internal:3307)/gpt"),
            "mysql://app:p%40ss%3Aw%2Frd%3F%23%25%26@db.internal:3307/gpt"
        );
        assert_eq!(url("us er:@tcp(h:1)/d"), "mysql://us%20er:@h:1/d");
    }

    #[test]
    fn missing_parts() {
        assert_eq!(url("root@tcp()/gpt"), "mysql://root@127.0.0.1:3306/gpt");
        assert_eq!(url("@tcp(h)/"), "mysql://h/");
        assert_eq!(
            url("root:pw@tcp6([::1]:3306)/gpt"),
            "mysql://root:pw@[::1]:3306/gpt"
        );
    }

    #[test]
    fn unix_sockets() {
        assert_eq!(
            url("root:pw@unix(/run/mysqld/mysqld.sock)/gpt"),
            "mysql://root:pw@localhost/gpt?socket=%2Frun%2Fmysqld%2Fmysqld.sock"
        );
        assert!(convert("root@unix()/gpt").is_err());
    }

    #[test]
    fn tls_is_mapped_and_unknown_params_reported() {
        let converted =
            convert("u:p@tcp(h:3306)/d?tls=skip-verify&timeout=5s&parseTime=true&readTimeout=1s").unwrap();
        assert_eq!(
            converted.url,
            "mysql://u:p@h:3306/d?require_ssl=true&verify_ca=false&verify_identity=false"
        );
        assert_eq!(converted.dropped, ["timeout", "readTimeout"]);
        assert_eq!(
            url("u:p@tcp(h:3306)/d?tls=true"),
            "mysql://u:p@h:3306/d?require_ssl=true"
        );
        assert_eq!(url("u:p@tcp(h:3306)/d?tls=false"), "mysql://u:p@h:3306/d");
        assert_eq!(convert("u:p@tcp(h)/d?tls=custom").unwrap().dropped, ["tls"]);
    }

    #[test]
    fn malformed() {
        assert!(is_go_dsn("u:p@tcp(h:3306)/d"));
        assert!(!is_go_dsn("u:p@h:3306/d"));
        for bad in [
            "u:p@tcp(h:3306/d",
            "u:p@tcp(h:3306)d",
            "u:p@tcp(h:3306)",
            "u:p@tcp(a/b)/d",
        ] {
            assert!(convert(bad).is_err(), "{bad}");
        }
    }
}
