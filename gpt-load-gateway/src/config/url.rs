//! URLs and DSNs that may carry credentials.
//!
//! [`SecretUrl`] holds such a URL (`REDIS_DSN`, `HTTP_PROXY`, …) and shows it only through
//! [`mask_credentials`], which hides the password of `scheme://user:password@host`, of Go's
//! `user:password@tcp(host)/db` and of `password=` parameters.

use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// The mask put in place of a password.
const MASK: &str = "****";

/// Parameter names whose values are masked.
const SECRET_PARAMS: &[&str] = &["password", "passwd", "pass", "pwd"];

/// A URL that may contain credentials: `Debug` and `Display` mask them; [`SecretUrl::expose`]
/// gives the real value to whatever connects with it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SecretUrl(String);

impl SecretUrl {
    pub(crate) fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its credentials. Use it only to connect.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its credentials masked, safe for logs.
    pub(crate) fn masked(&self) -> String {
        mask_credentials(&self.0)
    }

    /// The scheme (before `://`), lower-cased.
    #[cfg(test)]
    pub(crate) fn scheme(&self) -> String {
        self.0
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase())
            .unwrap_or_default()
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({:?})", self.masked())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// `raw` with every password replaced by `****`: the part after the first `:` of the user
/// information (everything before the last `@`; all of it when it has no `:`), and the values of
/// `password=`-like parameters. Masks too much rather than too little when `raw` is malformed.
pub(crate) fn mask_credentials(raw: &str) -> String {
    let (scheme, rest) = match raw.find("://") {
        Some(i) => raw.split_at(i + 3),
        None => ("", raw),
    };
    let mut out = String::with_capacity(raw.len());
    out.push_str(scheme);
    let after_userinfo = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            if let Some((user, _)) = userinfo.split_once(':') {
                out.push_str(user);
                out.push(':');
                out.push_str(MASK);
            } else if !userinfo.is_empty() {
                out.push_str(MASK);
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    out.push_str(&mask_params(after_userinfo));
    out
}

/// Masks the values of `password=`-like parameters, whether they are separated by `?`, `&`, `;`
/// or spaces (URL queries and PostgreSQL keyword/value strings).
fn mask_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for piece in text.split_inclusive(['?', '&', ';', ' ']) {
        let (body, separator) = match piece.char_indices().last() {
            Some((i, '?' | '&' | ';' | ' ')) => (&piece[..i], &piece[i..]),
            _ => (piece, ""),
        };
        match body.split_once('=') {
            Some((key, _))
                if SECRET_PARAMS
                    .iter()
                    .any(|secret| key.eq_ignore_ascii_case(secret)) =>
            {
                out.push_str(key);
                out.push('=');
                out.push_str(MASK);
            }
            _ => out.push_str(body),
        }
        out.push_str(separator);
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for user names, passwords
/// and database names placed in a URL.
pub(crate) fn percent_encode(text: &str) -> String {
    utf8_percent_encode(text, NOT_UNRESERVED).to_string()
}

/// Every byte but the RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `scheme://` prefix of `raw`, if it starts with a URL scheme (RFC 3986 characters).
pub(crate) fn scheme_of(raw: &str) -> Option<&str> {
    let (scheme, _) = raw.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic() && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .then_some(scheme)
}

/// The scheme of `raw` when it is one of `schemes` (compared without case).
pub(crate) fn scheme_among<'a>(raw: &'a str, schemes: &[&str]) -> Option<&'a str> {
    scheme_of(raw).filter(|scheme| schemes.iter().any(|known| scheme.eq_ignore_ascii_case(known)))
}

/// The message that `raw` is not `what`: `raw` quoted with its credentials masked (the text
/// after `NAME: ` in a configuration error).
pub(crate) fn not_a(raw: &str, what: impl fmt::Display) -> String {
    format!("{} is not {what}", super::error::quote(&mask_credentials(raw)))
}

/// The host (and port) of a `scheme://[userinfo@]host[:port][/…]` URL; empty when missing.
pub(crate) fn authority_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.rsplit_once('@').map_or(authority, |(_, host)| host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_url_passwords() {
        assert_eq!(
            mask_credentials("mysql://root:s3cret@db:3306/app"),
            "mysql://root:****@db:3306/app"
        );
        assert_eq!(
            mask_credentials("redis://:s3cret@cache:6379/0"),
            "redis://:****@cache:6379/0"
        );
        assert_eq!(mask_credentials("redis://token@cache"), "redis://****@cache");
        assert_eq!(
            mask_credentials("postgres://u:p@ss/w@rd@h/db"),
            "postgres://u:****@h/db"
        );
        assert_eq!(mask_credentials("postgres://h/db"), "postgres://h/db");
        assert_eq!(mask_credentials("http://proxy:3128"), "http://proxy:3128");
    }

    #[test]
    fn masks_go_dsn_passwords() {
        assert_eq!(
            mask_credentials("root:p@ss:word@tcp(127.0.0.1:3306)/gpt?parseTime=true"),
            "root:****@tcp(127.0.0.1:3306)/gpt?parseTime=true"
        );
    }

    #[test]
    fn masks_password_parameters() {
        assert_eq!(
            mask_credentials("postgres://h/db?user=u&password=s3cret&sslmode=require"),
            "postgres://h/db?user=u&password=****&sslmode=require"
        );
        assert_eq!(
            mask_credentials("host=h user=u PASSWORD=s3cret dbname=d"),
            "host=h user=u PASSWORD=**** dbname=d"
        );
        assert_eq!(mask_credentials("x?pwd=a;pass=b"), "x?pwd=****;pass=****");
    }

    #[test]
    fn secret_url_never_shows_the_password() {
        let url = SecretUrl::new("rediss://default:hunter2hunter2@cache.example:6380");
        for shown in [format!("{url}"), format!("{url:?}"), url.masked()] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("cache.example:6380"), "{shown}");
        }
        assert_eq!(url.scheme(), "rediss");
        assert!(url.expose().contains("hunter2"));
    }

    #[test]
    fn percent_encodes_reserved_characters() {
        assert_eq!(percent_encode("p@ss:w/rd?#%"), "p%40ss%3Aw%2Frd%3F%23%25");
        assert_eq!(percent_encode("A-z_0.9~"), "A-z_0.9~");
        assert_eq!(percent_encode("é"), "%C3%A9");
        assert_eq!(percent_encode("a b"), "a%20b");
    }

    #[test]
    fn schemes_and_hosts() {
        assert_eq!(scheme_of("redis+unix:///tmp/r.sock"), Some("redis+unix"));
        assert_eq!(scheme_of("./data/x.db"), None);
        assert_eq!(scheme_of("1abc://x"), None);
        assert_eq!(authority_host("http://u:p@proxy:3128/x"), "proxy:3128");
        assert_eq!(authority_host("socks5://"), "");
    }
}
