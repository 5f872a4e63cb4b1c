//! Model lists that include the group's redirect rules (gpt-load's model-list interception) and
//! follow its model filter.
//!
//! On `GET …/v1/models`, `…/v1beta/models` or `…/v1beta/openai/v1/models` of a group with model
//! redirect rules or a model filter, the upstream's successful list is read, the rules' source
//! models are added (strict mode: only they are listed), the models the group does not serve are
//! dropped, and the list is returned as JSON. Other requests, groups without rules or filter and
//! unsuccessful answers pass through untouched and unbuffered (gpt-load turns even an upstream 404
//! into a 200).

use std::{
    io::Read,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use gpt_load_tower::{
    BoxError, Error, ResponseFuture,
    body::ResponseBody,
    channel::ModelListShape,
    context::{Principal, target_group},
    rewrite::{ModelFilter, RewriteTable},
};
use http::{HeaderValue, Request, Response, header};
use http_body::Body;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::{Layer, Service};

/// Largest model list read, compressed or decompressed (a generous cap; real lists are tens of
/// KiB).
pub(crate) const LIST_LIMIT: usize = 8 * 1024 * 1024;

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub(crate) struct ModelListLayer {
    rewrite: RewriteTable,
}

impl ModelListLayer {
    pub(crate) fn new(rewrite: RewriteTable) -> Self {
        Self { rewrite }
    }
}

impl<S> Layer<S> for ModelListLayer {
    type Service = ModelList<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ModelList {
            inner,
            rewrite: self.rewrite.clone(),
        }
    }
}

/// The service built by [`ModelListLayer`].
#[derive(Clone, Debug)]
pub(crate) struct ModelList<S> {
    inner: S,
    rewrite: RewriteTable,
}

struct Interception {
    shape: ModelListShape,
    configured: Vec<String>,
    strict: bool,
    first_page: bool,
    /// The models the group the client named serves, and the routed sub-group's.
    filters: Vec<Arc<ModelFilter>>,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for ModelList<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = Error;
    type Future = ResponseFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let interception = self.interception(&req);
        let response = self.inner.call(req);
        ResponseFuture::new(async move {
            let res = response.await.map_err(|e| Error::from_boxed(e.into()))?;
            match interception {
                Some(i) if res.status().is_success() => rewrite_list(res, &i).await,
                _ => Ok(res.map(ResponseBody::stream)),
            }
        })
    }
}

impl<S> ModelList<S> {
    fn interception<B>(&self, req: &Request<B>) -> Option<Interception> {
        let channel = req.extensions().get::<Principal>()?.channel();
        let shape = channel.model_list_shape(req.method(), req.uri().path())?;
        let target = target_group(req.extensions())?;
        let rules = self.rewrite.rules(target.as_str())?;
        let named = req.extensions().get::<Principal>()?.group();
        let filters: Vec<Arc<ModelFilter>> = [named, target]
            .into_iter()
            .filter_map(|g| self.rewrite.model_filter(g.as_str()))
            .collect();
        if rules.model_redirects.is_empty() && !rules.strict_model && filters.is_empty() {
            return None;
        }
        let mut configured: Vec<String> = rules.model_redirects.keys().cloned().collect();
        configured.sort();
        let first_page = !req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("pageToken=")));
        Some(Interception {
            shape,
            configured,
            strict: rules.strict_model,
            first_page,
            filters,
        })
    }
}

async fn rewrite_list<B>(res: Response<B>, i: &Interception) -> Result<Response<ResponseBody<B>>, Error>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = res.into_parts();
    let raw = http_body_util::Limited::new(body, LIST_LIMIT)
        .collect()
        .await
        .map_err(|e| Error::upstream(format!("reading the model list failed: {e}")))?
        .to_bytes();
    let gzip = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let plain = if gzip { gunzip_capped(&raw)? } else { raw };
    let Ok(mut list) = serde_json::from_slice::<Value>(&plain) else {
        // Not JSON: nothing to merge into; pass the (decoded) list on unchanged.
        return Ok(Response::from_parts(parts, ResponseBody::full(plain)));
    };
    let configured: Vec<&str> = i.configured.iter().map(String::as_str).collect();
    i.shape.merge(&mut list, &configured, i.strict, i.first_page);
    if !i.filters.is_empty() {
        i.shape
            .retain(&mut list, |model| i.filters.iter().all(|f| f.allows(model)));
    }
    let body = Bytes::from(list.to_string());
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Ok(Response::from_parts(parts, ResponseBody::full(body)))
}

/// Decompresses a gzip model list, refusing one that decompresses past [`LIST_LIMIT`] after
/// reading at most one byte more: a few KiB of gzip can expand to gigabytes. The refusal is a
/// `502` in the client's own error format, as for a list too large before decompression; passing
/// the compressed answer on would hand the client the same bomb and drop the group's models.
fn gunzip_capped(raw: &[u8]) -> Result<Bytes, Error> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .take(LIST_LIMIT as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::upstream(format!("decoding the model list failed: {e}")))?;
    if out.len() > LIST_LIMIT {
        return Err(Error::upstream(format!(
            "the model list decompresses to more than {LIST_LIMIT} bytes"
        )));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(plain: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(plain).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn a_list_up_to_the_cap_is_decompressed() {
        let plain = format!(r#"{{"data":[]}}{}"#, " ".repeat(LIST_LIMIT - 11));
        assert_eq!(plain.len(), LIST_LIMIT);
        assert_eq!(gunzip_capped(&gzip(plain.as_bytes())).unwrap(), plain.as_bytes());
    }

    #[test]
    fn a_list_past_the_cap_is_refused() {
        let plain = format!(r#"{{"data":[]}}{}"#, " ".repeat(LIST_LIMIT - 10));
        let err = gunzip_capped(&gzip(plain.as_bytes())).unwrap_err();
        assert_eq!(err.kind(), gpt_load_tower::ErrorKind::Upstream);
        assert!(err.to_string().contains("decompresses to more than"), "{err}");
    }
}
