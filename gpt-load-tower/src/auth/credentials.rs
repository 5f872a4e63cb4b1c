use std::borrow::Cow;

use http::{HeaderMap, Request, header};

use crate::query;

/// Headers that carry a client credential; all are removed before forwarding.
pub(super) const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "x-goog-api-key"];

/// The key a client presented, from the first carrier that has one: `?key=`,
/// `Authorization: Bearer`, `x-api-key`, `x-goog-api-key` (the order gpt-load uses, for the proxy
/// and its admin API alike).
pub fn presented_key<B>(req: &Request<B>) -> Option<Cow<'_, str>> {
    if let Some(key) = req
        .uri()
        .query()
        .and_then(|q| query::get(q, "key"))
        .filter(|k| !k.is_empty())
    {
        return Some(Cow::Owned(key));
    }
    bearer(req.headers())
        .or_else(|| header_value(req.headers(), "x-api-key"))
        .or_else(|| header_value(req.headers(), "x-goog-api-key"))
        .map(Cow::Borrowed)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn header_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)?
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Removes every client credential: the three headers and the `key` query parameter.
pub(super) fn strip<B>(req: &mut Request<B>) {
    for name in CREDENTIAL_HEADERS {
        req.headers_mut().remove(name);
    }
    if let Some(q) = req.uri().query()
        && q.split('&').any(|pair| pair == "key" || pair.starts_with("key="))
    {
        let rest = query::remove(q, "key");
        let uri = query::with_query(req.uri(), rest.as_deref());
        *req.uri_mut() = uri;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presented(req: Request<()>) -> Option<String> {
        presented_key(&req).map(Cow::into_owned)
    }

    #[test]
    fn carriers_in_order() {
        let all = Request::get("/p?key=q")
            .header("authorization", "Bearer b")
            .header("x-api-key", "x")
            .header("x-goog-api-key", "g")
            .body(())
            .unwrap();
        assert_eq!(presented(all).as_deref(), Some("q"));
        let req = Request::get("/p")
            .header("authorization", "Bearer b")
            .header("x-api-key", "x")
            .body(())
            .unwrap();
        assert_eq!(presented(req).as_deref(), Some("b"));
        let req = Request::get("/p")
            .header("x-api-key", "x")
            .header("x-goog-api-key", "g")
            .body(())
            .unwrap();
        assert_eq!(presented(req).as_deref(), Some("x"));
        let req = Request::get("/p").header("x-goog-api-key", "g").body(()).unwrap();
        assert_eq!(presented(req).as_deref(), Some("g"));
        let req = Request::get("/p?key=a%2Bb").body(()).unwrap();
        assert_eq!(presented(req).as_deref(), Some("a+b"));
    }

    #[test]
    fn empty_or_malformed_carriers_are_skipped() {
        let req = Request::get("/p?key=")
            .header("authorization", "Basic abc")
            .header("x-api-key", "k")
            .body(())
            .unwrap();
        assert_eq!(presented(req).as_deref(), Some("k"));
        let req = Request::get("/p")
            .header("authorization", "Bearer ")
            .body(())
            .unwrap();
        assert_eq!(presented(req), None);
        assert_eq!(presented(Request::get("/p").body(()).unwrap()), None);
    }

    #[test]
    fn strips_every_credential() {
        let mut req = Request::get("/p?alt=sse&key=secret&x=1")
            .header("authorization", "Bearer b")
            .header("x-api-key", "x")
            .header("x-goog-api-key", "g")
            .header("x-other", "kept")
            .body(())
            .unwrap();
        strip(&mut req);
        assert_eq!(req.uri(), "/p?alt=sse&x=1");
        for name in CREDENTIAL_HEADERS {
            assert!(req.headers().get(name).is_none());
        }
        assert_eq!(req.headers()["x-other"], "kept");
        let mut only = Request::get("/p?key=secret").body(()).unwrap();
        strip(&mut only);
        assert_eq!(only.uri(), "/p");
    }
}
