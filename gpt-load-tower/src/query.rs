//! Small helpers for editing a URI's query string without disturbing the other parameters.

use http::{Uri, uri::PathAndQuery};

/// Iterates `(raw name, raw value)` pairs of a query string.
fn pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// The percent-decoded value of the first parameter called `name`.
pub(crate) fn get(query: &str, name: &str) -> Option<String> {
    pairs(query).find(|(n, _)| *n == name).map(|(_, value)| {
        form_urlencoded::parse(format!("v={value}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    })
}

/// The query without any parameter called `name`; `None` when nothing is left.
pub(crate) fn remove(query: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split_once('=').map_or(*pair, |(n, _)| n) != name)
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// Rebuilds `uri` with the same scheme, authority and path and a new query.
pub(crate) fn with_query(uri: &Uri, query: Option<&str>) -> Uri {
    let path = uri.path();
    let path_and_query = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    // The path came from a valid URI and the query from valid parts of one (or our own
    // encoding), so this parse cannot fail; fall back to the original URI regardless.
    match PathAndQuery::try_from(path_and_query) {
        Ok(pq) => parts.path_and_query = Some(pq),
        Err(_) => return uri.clone(),
    }
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// Appends `name=value` (value form-encoded) after removing any earlier `name` parameter.
pub(crate) fn set(uri: &Uri, name: &str, value: &str) -> Uri {
    let encoded: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
    let rest = uri.query().and_then(|q| remove(q, name));
    let query = match rest {
        Some(rest) => format!("{rest}&{name}={encoded}"),
        None => format!("{name}={encoded}"),
    };
    with_query(uri, Some(&query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gets_and_decodes() {
        assert_eq!(get("a=1&key=ab%2Bc&key=2", "key").as_deref(), Some("ab+c"));
        assert_eq!(get("a=1", "key"), None);
        assert_eq!(get("key", "key").as_deref(), Some(""));
    }

    #[test]
    fn removes_every_occurrence() {
        assert_eq!(remove("key=1&alt=sse&key=2", "key").as_deref(), Some("alt=sse"));
        assert_eq!(remove("key=1", "key"), None);
        assert_eq!(remove("monkey=1&akey", "key").as_deref(), Some("monkey=1&akey"));
    }

    #[test]
    fn sets_a_parameter() {
        let uri: Uri = "http://h/v1beta/models/m:streamGenerateContent?alt=sse&key=old"
            .parse()
            .unwrap();
        let out = set(&uri, "key", "a b/c");
        assert_eq!(
            out.to_string(),
            "http://h/v1beta/models/m:streamGenerateContent?alt=sse&key=a+b%2Fc"
        );
        let bare: Uri = "/p".parse().unwrap();
        assert_eq!(set(&bare, "key", "k").to_string(), "/p?key=k");
        assert_eq!(
            with_query(&uri, None).to_string(),
            "http://h/v1beta/models/m:streamGenerateContent"
        );
    }
}
