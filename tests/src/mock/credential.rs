//! Extraction of the presented upstream key.

use http::HeaderMap;

/// The presented key, looked up in order: `Authorization: Bearer k`,
/// `x-api-key: k`, `x-goog-api-key: k`, then the `key` query parameter.
/// Empty values count as absent.
pub(crate) fn extract(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(key) = header(headers, "authorization").and_then(bearer) {
        return Some(key.to_owned());
    }
    for name in ["x-api-key", "x-goog-api-key"] {
        if let Some(key) = header(headers, name) {
            return Some(key.to_owned());
        }
    }
    let query = query?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, value)| name == "key" && !value.is_empty())
        .map(|(_, value)| value.into_owned())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, http::HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn carriers_in_order() {
        let all = headers(&[
            ("authorization", "Bearer a"),
            ("x-api-key", "b"),
            ("x-goog-api-key", "c"),
        ]);
        assert_eq!(extract(&all, Some("key=d")).as_deref(), Some("a"));
        let no_bearer = headers(&[("x-api-key", "b"), ("x-goog-api-key", "c")]);
        assert_eq!(extract(&no_bearer, Some("key=d")).as_deref(), Some("b"));
        let goog = headers(&[("x-goog-api-key", "c")]);
        assert_eq!(extract(&goog, Some("key=d")).as_deref(), Some("c"));
        assert_eq!(
            extract(&HeaderMap::new(), Some("alt=sse&key=d%2Be")).as_deref(),
            Some("d+e")
        );
        assert_eq!(extract(&HeaderMap::new(), Some("alt=sse")), None);
        assert_eq!(extract(&headers(&[("authorization", "Basic x")]), None), None);
        assert_eq!(
            extract(&headers(&[("authorization", "bearer  z ")]), None).as_deref(),
            Some("z")
        );
    }
}
