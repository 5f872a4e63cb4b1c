//! Typed setting values: checking them as JSON (API input) or as stored text (database rows),
//! and writing them back in storage format.

use std::{fmt, sync::Arc};

use gpt_load_tower::blacklist::{StatusMatcher, StatusSpecError};
use serde_json::Value;

use super::meta::{SettingKind, SettingMeta, TextRule};

/// One problem with one field of an update.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct FieldError {
    /// The setting (or group config field) at fault.
    pub(crate) field: String,
    /// What is wrong with it.
    pub(crate) message: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Several errors in one line: `first: problem; second: problem`.
    pub(crate) fn join(errors: &[Self]) -> String {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The failover status spec: its text, as entered, and the matcher parsed from it.
#[derive(Clone)]
pub(crate) struct FailoverCodes {
    spec: Arc<str>,
    matcher: Arc<StatusMatcher>,
}

impl FailoverCodes {
    /// Parses a spec in gpt-load's grammar (`400-403,405-999`; empty matches nothing).
    pub(crate) fn parse(spec: &str) -> Result<Self, StatusSpecError> {
        let matcher = spec.parse::<StatusMatcher>()?;
        Ok(Self {
            spec: spec.into(),
            matcher: Arc::new(matcher),
        })
    }

    /// Keeps an unparsable spec's text with a matcher that matches nothing, as gpt-load does with
    /// an invalid group-level spec it finds stored.
    pub(crate) fn unparsable(spec: &str) -> Self {
        Self {
            spec: spec.into(),
            matcher: Arc::new(StatusMatcher::none()),
        }
    }

    /// The spec as entered.
    pub(crate) fn spec(&self) -> &str {
        &self.spec
    }

    /// The parsed matcher.
    pub(crate) fn matcher(&self) -> &Arc<StatusMatcher> {
        &self.matcher
    }
}

impl Default for FailoverCodes {
    /// gpt-load's `400-403,405-999`.
    fn default() -> Self {
        Self {
            spec: "400-403,405-999".into(),
            matcher: Arc::new(StatusMatcher::gpt_load_default()),
        }
    }
}

impl PartialEq for FailoverCodes {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec && self.matcher == other.matcher
    }
}

impl Eq for FailoverCodes {}

impl fmt::Debug for FailoverCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FailoverCodes({:?} => {:?})", self.spec, self.matcher)
    }
}

/// A checked value of one setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SettingValue {
    Int(u32),
    Bool(bool),
    Text(String),
    /// `failover_status_codes`.
    Codes(FailoverCodes),
}

impl SettingValue {
    /// The text stored in `system_settings.setting_value`: plain decimal integers (never
    /// `1e+06`), `true`/`false`, strings as they are.
    pub(crate) fn to_storage(&self) -> String {
        match self {
            Self::Int(n) => n.to_string(),
            Self::Bool(b) => b.to_string(),
            Self::Text(s) => s.clone(),
            Self::Codes(codes) => codes.spec().to_owned(),
        }
    }

    /// The value in the JSON APIs: a number, a boolean or a string.
    pub(crate) fn to_json(&self) -> Value {
        match self {
            Self::Int(n) => Value::from(*n),
            Self::Bool(b) => Value::Bool(*b),
            Self::Text(s) => Value::String(s.clone()),
            Self::Codes(codes) => Value::String(codes.spec().to_owned()),
        }
    }
}

/// A Rust type a setting may have in [the settings table](super::table): its kind, how its text
/// is checked by default, and its conversion to and from a checked [`SettingValue`].
pub(crate) trait SettingType: Clone + Default {
    /// The kind the settings API shows.
    const KIND: SettingKind;
    /// How a string of this type is checked, unless the table gives a rule.
    const RULE: TextRule = TextRule::Plain;

    /// The value, to show or store.
    fn to_value(&self) -> SettingValue;

    /// The typed value of a checked value; a value of another kind comes back as the error.
    fn from_value(value: SettingValue) -> Result<Self, SettingValue>;
}

/// A type held as one [`SettingValue`] variant as it is.
macro_rules! plain_setting_type {
    ($($ty:ty => $kind:ident, $variant:ident;)+) => {$(
        impl SettingType for $ty {
            const KIND: SettingKind = SettingKind::$kind;

            fn to_value(&self) -> SettingValue {
                SettingValue::$variant(self.clone())
            }

            fn from_value(value: SettingValue) -> Result<Self, SettingValue> {
                match value {
                    SettingValue::$variant(inner) => Ok(inner),
                    other => Err(other),
                }
            }
        }
    )+};
}

plain_setting_type! {
    u32 => Int, Int;
    bool => Bool, Bool;
    String => String, Text;
}

/// Proxy keys: shown and stored as one comma-separated text, held as the list of keys.
impl SettingType for Vec<String> {
    const KIND: SettingKind = SettingKind::String;
    const RULE: TextRule = TextRule::ProxyKeys;

    fn to_value(&self) -> SettingValue {
        SettingValue::Text(self.join(","))
    }

    fn from_value(value: SettingValue) -> Result<Self, SettingValue> {
        match value {
            SettingValue::Text(text) => Ok(text
                .split(',')
                .filter(|key| !key.is_empty())
                .map(str::to_owned)
                .collect()),
            other => Err(other),
        }
    }
}

impl SettingType for FailoverCodes {
    const KIND: SettingKind = SettingKind::String;
    const RULE: TextRule = TextRule::StatusCodes;

    fn to_value(&self) -> SettingValue {
        SettingValue::Codes(self.clone())
    }

    fn from_value(value: SettingValue) -> Result<Self, SettingValue> {
        match value {
            SettingValue::Codes(codes) => Ok(codes),
            other => Err(other),
        }
    }
}

/// Schemes accepted for `proxy_url`.
pub(super) const PROXY_URL_SCHEMES: &[&str] = &["http", "https", "socks5", "socks5h"];
/// Schemes accepted for `app_url`.
pub(super) const APP_URL_SCHEMES: &[&str] = &["http", "https"];

/// Checks a JSON value given for `meta` (settings update or group config).
pub(crate) fn from_json(meta: &SettingMeta, value: &Value) -> Result<SettingValue, String> {
    match meta.kind {
        SettingKind::Int => int_from_json(meta, value).map(SettingValue::Int),
        SettingKind::Bool => value
            .as_bool()
            .map(SettingValue::Bool)
            .ok_or_else(|| "must be a boolean (true or false)".to_owned()),
        SettingKind::String => match value {
            Value::String(text) => from_text(meta, text),
            _ => Err("must be a string".to_owned()),
        },
    }
}

/// Checks the stored text of `meta`'s row. Besides the storage format, accepts what gpt-load may
/// have written: Go's other boolean spellings and integers in exponent form (`1e+06`).
pub(crate) fn from_storage(meta: &SettingMeta, text: &str) -> Result<SettingValue, String> {
    match meta.kind {
        SettingKind::Int => int_from_text(meta, text.trim()).map(SettingValue::Int),
        SettingKind::Bool => match text.trim() {
            "true" | "TRUE" | "True" | "t" | "T" | "1" => Ok(SettingValue::Bool(true)),
            "false" | "FALSE" | "False" | "f" | "F" | "0" => Ok(SettingValue::Bool(false)),
            _ => Err(format!("`{text}` is not a boolean")),
        },
        SettingKind::String => from_text(meta, text),
    }
}

fn int_from_json(meta: &SettingMeta, value: &Value) -> Result<u32, String> {
    let Value::Number(number) = value else {
        return Err("must be a number".to_owned());
    };
    if let Some(n) = number.as_u64() {
        return in_range(meta, i128::from(n));
    }
    if let Some(n) = number.as_i64() {
        return in_range(meta, i128::from(n));
    }
    match number.as_f64() {
        Some(f) if f.is_finite() && f.fract() == 0.0 => in_range(meta, float_to_i128(f)),
        _ => Err("must be a whole number".to_owned()),
    }
}

fn int_from_text(meta: &SettingMeta, text: &str) -> Result<u32, String> {
    if let Ok(n) = text.parse::<i128>() {
        return in_range(meta, n);
    }
    // Go's `%v` of a float64: `1e+06`, `1.5e+06`.
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && f.fract() == 0.0 => in_range(meta, float_to_i128(f)),
        _ => Err(format!("`{text}` is not a whole number")),
    }
}

/// A finite, integral float as an integer; `as` saturates far outside the `u32` range, which
/// [`in_range`] rejects anyway.
fn float_to_i128(f: f64) -> i128 {
    f as i128
}

fn in_range(meta: &SettingMeta, n: i128) -> Result<u32, String> {
    let min = meta.min.unwrap_or(0);
    if n < i128::from(min) {
        return Err(format!("must be at least {min}"));
    }
    u32::try_from(n).map_err(|_| format!("must be at most {}", u32::MAX))
}

fn from_text(meta: &SettingMeta, text: &str) -> Result<SettingValue, String> {
    match meta.rule {
        TextRule::ProxyKeys => {
            let keys = sanitize_proxy_keys(text);
            if keys.is_empty() {
                Err("is required: give at least one key".to_owned())
            } else if let Err(err) = keys.split(',').try_for_each(crate::crypto::proxy_keys::check_key) {
                Err(err.to_string())
            } else {
                Ok(SettingValue::Text(keys))
            }
        }
        TextRule::StatusCodes => FailoverCodes::parse(text)
            .map(SettingValue::Codes)
            .map_err(|err| err.to_string()),
        TextRule::ModelPatterns => gpt_load_tower::rewrite::ModelFilter::parse(text, "")
            .map(|_| SettingValue::Text(text.trim().to_owned()))
            .map_err(|err| err.to_string()),
        TextRule::Url(schemes) => {
            let url = text.trim();
            if url.is_empty() {
                if meta.required {
                    return Err("is required".to_owned());
                }
            } else {
                check_url(url, schemes)?;
            }
            Ok(SettingValue::Text(url.to_owned()))
        }
        TextRule::Plain if meta.required && text.trim().is_empty() => Err("is required".to_owned()),
        TextRule::Plain => Ok(SettingValue::Text(text.to_owned())),
    }
}

/// `proxy_keys` as stored: split on commas, trimmed, empty parts dropped, joined with `,`.
pub(crate) fn sanitize_proxy_keys(text: &str) -> String {
    text.split(',')
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks that `url` is `scheme://[user[:password]@]host[:port][/…]` with a scheme from
/// `schemes`.
fn check_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    let expected = || format!("must be a URL such as {}://host:port", schemes[0]);
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{} without spaces", expected()));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(expected());
    };
    if !schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
        return Err(format!(
            "must use one of the schemes {}, not `{scheme}`",
            schemes.join(", ")
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        match bracketed.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, tail)) => match tail.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(expected()),
            },
            None => return Err(expected()),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{}: the host is missing", expected()));
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("has an invalid port `{port}`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::settings::meta::find;

    fn json_value(key: &str, value: Value) -> Result<SettingValue, String> {
        from_json(find(key).unwrap(), &value)
    }

    #[test]
    fn integers_must_be_whole_numbers_at_least_the_minimum() {
        assert_eq!(json_value("max_retries", json!(0)), Ok(SettingValue::Int(0)));
        assert_eq!(
            json_value("request_timeout", json!(30.0)),
            Ok(SettingValue::Int(30))
        );
        assert_eq!(
            json_value("request_timeout", json!(0)).unwrap_err(),
            "must be at least 1"
        );
        assert_eq!(
            json_value("max_retries", json!(-1)).unwrap_err(),
            "must be at least 0"
        );
        assert_eq!(
            json_value("max_retries", json!(-1.0)).unwrap_err(),
            "must be at least 0"
        );
        assert_eq!(
            json_value("max_retries", json!(1.5)).unwrap_err(),
            "must be a whole number"
        );
        assert_eq!(
            json_value("max_retries", json!("3")).unwrap_err(),
            "must be a number"
        );
        assert_eq!(
            json_value("max_retries", json!(true)).unwrap_err(),
            "must be a number"
        );
        assert_eq!(
            json_value("max_retries", Value::Null).unwrap_err(),
            "must be a number"
        );
        assert_eq!(
            json_value("max_retries", json!(4_294_967_296_u64)).unwrap_err(),
            "must be at most 4294967295"
        );
        assert_eq!(
            json_value("max_retries", json!(1e300)).unwrap_err(),
            "must be at most 4294967295"
        );
        assert_eq!(
            json_value("max_retries", json!(u64::MAX)).unwrap_err(),
            "must be at most 4294967295"
        );
        assert_eq!(
            json_value("max_retries", json!(4_294_967_295_u64)),
            Ok(SettingValue::Int(u32::MAX))
        );
    }

    #[test]
    fn booleans_must_be_json_booleans() {
        assert_eq!(
            json_value("enable_request_body_logging", json!(true)),
            Ok(SettingValue::Bool(true))
        );
        for bad in [json!("true"), json!(1), Value::Null] {
            assert!(json_value("enable_request_body_logging", bad).is_err());
        }
    }

    #[test]
    fn strings_must_be_json_strings() {
        assert_eq!(
            json_value("proxy_url", json!(8080)).unwrap_err(),
            "must be a string"
        );
        assert_eq!(
            json_value("app_url", json!(null)).unwrap_err(),
            "must be a string"
        );
    }

    #[test]
    fn required_strings_are_not_empty() {
        assert_eq!(json_value("app_url", json!("  ")).unwrap_err(), "is required");
        assert!(
            json_value("proxy_keys", json!(" , ,"))
                .unwrap_err()
                .starts_with("is required")
        );
    }

    #[test]
    fn proxy_keys_are_sanitised() {
        assert_eq!(
            json_value("proxy_keys", json!(" sk-a , ,sk-b,,\tsk-c ")),
            Ok(SettingValue::Text("sk-a,sk-b,sk-c".to_owned()))
        );
        assert_eq!(sanitize_proxy_keys(""), "");
    }

    #[test]
    fn proxy_keys_that_look_encrypted_are_refused() {
        assert_eq!(
            json_value("proxy_keys", json!("sk-a, v1:abc")).unwrap_err(),
            "a proxy key must not start with `v`, 1 to 3 digits and `:` (the prefix of encrypted values)"
        );
        assert!(json_value("proxy_keys", json!("sk-a,sk-v1:abc")).is_ok());
    }

    #[test]
    fn failover_codes_must_parse() {
        let Ok(SettingValue::Codes(codes)) = json_value("failover_status_codes", json!("429, 500-599"))
        else {
            panic!("parses");
        };
        assert_eq!(codes.spec(), "429, 500-599");
        assert!(codes.matcher().matches(503) && !codes.matcher().matches(404));
        let Ok(SettingValue::Codes(empty)) = json_value("failover_status_codes", json!("")) else {
            panic!("empty parses");
        };
        assert!(!empty.matcher().matches(500));
        let err = json_value("failover_status_codes", json!("500-400")).unwrap_err();
        let parser = "500-400".parse::<StatusMatcher>().unwrap_err().to_string();
        assert_eq!(err, parser);
        assert!(json_value("failover_status_codes", json!("abc")).is_err());
        assert!(json_value("failover_status_codes", json!("99")).is_err());
    }

    #[test]
    fn proxy_url_is_empty_or_a_proxy_url() {
        for ok in [
            "",
            "http://proxy:3128",
            "https://proxy.example",
            "socks5://user:pass@127.0.0.1:1080",
            "SOCKS5H://[::1]:1080",
            "http://[2001:db8::1]",
        ] {
            assert!(json_value("proxy_url", json!(ok)).is_ok(), "{ok}");
        }
        assert_eq!(
            json_value("proxy_url", json!(" http://p:1 ")),
            Ok(SettingValue::Text("http://p:1".to_owned()))
        );
        for bad in [
            "proxy:3128",
            "ftp://proxy",
            "socks4://proxy:1080",
            "http://",
            "http://:8080",
            "http://proxy:99999",
            "http://proxy:abc",
            "http://pro xy",
            "http://[::1",
        ] {
            assert!(json_value("proxy_url", json!(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            json_value("proxy_url", json!("ftp://p")).unwrap_err(),
            "must use one of the schemes http, https, socks5, socks5h, not `ftp`"
        );
    }

    #[test]
    fn app_url_is_an_http_url() {
        assert!(json_value("app_url", json!("https://gw.example.com/base")).is_ok());
        assert!(json_value("app_url", json!("http://10.0.0.1:3001")).is_ok());
        assert!(json_value("app_url", json!("socks5://gw:1080")).is_err());
        assert!(json_value("app_url", json!("gw.example.com")).is_err());
    }

    #[test]
    fn stored_text_accepts_what_gpt_load_wrote() {
        let stored = |key, text| from_storage(find(key).unwrap(), text);
        assert_eq!(
            stored("max_idle_conns", "1000000"),
            Ok(SettingValue::Int(1_000_000))
        );
        assert_eq!(
            stored("max_idle_conns", "1e+06"),
            Ok(SettingValue::Int(1_000_000))
        );
        assert_eq!(
            stored("max_idle_conns", "1.234567e+06"),
            Ok(SettingValue::Int(1_234_567))
        );
        assert_eq!(stored("max_idle_conns", " 7 "), Ok(SettingValue::Int(7)));
        for bad in ["", "many", "1.5", "NaN", "inf", "0", "-3", "1e+12"] {
            assert!(stored("max_idle_conns", bad).is_err(), "{bad}");
        }
        assert_eq!(
            stored("enable_request_body_logging", "T"),
            Ok(SettingValue::Bool(true))
        );
        assert_eq!(
            stored("enable_request_body_logging", "false"),
            Ok(SettingValue::Bool(false))
        );
        assert!(stored("enable_request_body_logging", "yes").is_err());
        assert!(stored("failover_status_codes", "1-2").is_err());
        assert_eq!(stored("proxy_url", ""), Ok(SettingValue::Text(String::new())));
    }

    #[test]
    fn storage_format_is_plain() {
        assert_eq!(SettingValue::Int(1_000_000).to_storage(), "1000000");
        assert_eq!(SettingValue::Bool(true).to_storage(), "true");
        assert_eq!(SettingValue::Bool(false).to_storage(), "false");
        let from_float = json_value("max_idle_conns", json!(1_000_000.0)).unwrap();
        assert_eq!(from_float.to_storage(), "1000000");
        assert_eq!(from_float.to_json(), json!(1_000_000));
        assert_eq!(
            SettingValue::Codes(FailoverCodes::default()).to_json(),
            json!("400-403,405-999")
        );
    }

    #[test]
    fn field_errors_name_the_field() {
        let err = FieldError::new("max_retries", "must be at least 0");
        assert_eq!(err.to_string(), "max_retries: must be at least 0");
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            json!({"field": "max_retries", "message": "must be at least 0"})
        );
    }
}
