use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use super::{ExcludedKeys, InFlight, KeyPool, SameKey, SelectedKey, pool::NO_EXCLUSIONS};
use crate::{
    body::TrackedBody,
    channel::quota_model,
    context::{Principal, target_group},
    error::{BoxError, Error},
    future::{ResponseFuture, take_ready},
    telemetry,
};

/// Picks a key for each attempt. See the [module docs](crate::keys).
#[derive(Clone, Debug)]
pub struct KeySelectLayer<P> {
    pool: P,
}

impl<P> KeySelectLayer<P> {
    /// Selects keys from `pool` (share it: pass an `Arc` or a cheaply cloned pool).
    pub fn new(pool: P) -> Self {
        Self { pool }
    }
}

impl<S, P: Clone> Layer<S> for KeySelectLayer<P> {
    type Service = KeySelect<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        KeySelect {
            inner,
            pool: self.pool.clone(),
        }
    }
}

/// The service built by [`KeySelectLayer`].
#[derive(Clone, Debug)]
pub struct KeySelect<S, P> {
    inner: S,
    pool: P,
}

impl<S, P> KeySelect<S, P> {
    /// Wraps `inner`, selecting keys from `pool`.
    pub fn new(inner: S, pool: P) -> Self {
        Self { inner, pool }
    }

    define_inner_service_accessors!();
}

impl<S, P, ReqBody, ResBody> Service<Request<ReqBody>> for KeySelect<S, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    P: KeyPool,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<TrackedBody<ResBody, InFlight>>;
    type Error = Error;
    type Future = ResponseFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let Some(channel) = req.extensions().get::<Principal>().map(Principal::channel) else {
            return ResponseFuture::ready(Err(Error::internal(
                "key selection needs a Principal (add ProxyKeyAuth)",
            )));
        };
        let same = req.extensions_mut().remove::<SameKey>();
        let group = target_group(req.extensions()).expect("a Principal is present");
        let excluded = req.extensions().get::<ExcludedKeys>().unwrap_or(&NO_EXCLUSIONS);
        let model = quota_model(&req, channel);
        let same = same
            .filter(|SameKey(key)| key.slot().is_usable_for(model))
            .map(|SameKey(key)| SelectedKey::new(key.group().clone(), Arc::clone(key.slot())));
        let Some(key) = same.or_else(|| self.pool.select_for(group.as_str(), excluded, model)) else {
            telemetry::no_key(group);
            return ResponseFuture::ready(Err(Error::no_key_available(group)));
        };
        channel.inject_credential(&mut req, key.secret());
        let in_flight = key.slot().begin_request();
        req.extensions_mut().insert(key.clone());

        let ready = take_ready(&mut self.inner);
        ResponseFuture::new(async move {
            match ready.oneshot(req).await {
                Ok(mut res) => {
                    res.extensions_mut().insert(key);
                    Ok(res.map(|body| TrackedBody::new(body, in_flight)))
                }
                Err(err) => Err(Error::from_boxed(err.into()).with_key(key)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        channel::ChannelKind,
        error::ErrorKind,
        keys::SelectedKey,
        keys::{KeyId, KeySlot, MemoryKeyPool},
        test_util::principal,
    };
    use bytes::Bytes;
    use http_body_util::Full;
    use tower::service_fn;

    fn pool(keys: &[(u64, &str)]) -> MemoryKeyPool {
        let pool = MemoryKeyPool::new();
        pool.set_group(
            "g".into(),
            keys.iter().map(|(id, k)| KeySlot::new(KeyId(*id), (*k).into())),
        );
        pool
    }

    fn seen_credential()
    -> impl Service<Request<()>, Response = Response<Full<Bytes>>, Error = Error, Future = impl Send> + Clone
    {
        service_fn(|req: Request<()>| async move {
            assert!(req.extensions().get::<SelectedKey>().is_some());
            let auth = req.headers()["authorization"].to_str().unwrap().to_owned();
            Ok::<_, Error>(Response::new(Full::new(Bytes::from(auth))))
        })
    }

    #[tokio::test]
    async fn rotates_and_injects_the_credential() {
        let svc = KeySelectLayer::new(pool(&[(1, "k1"), (2, "k2")])).layer(seen_credential());
        let mut seen = Vec::new();
        for _ in 0..4 {
            let req = principal(Request::new(()), "g", ChannelKind::OpenAi);
            let res = svc.clone().oneshot(req).await.unwrap();
            assert!(res.extensions().get::<SelectedKey>().is_some());
            seen.push(
                http_body_util::BodyExt::collect(res.into_body())
                    .await
                    .unwrap()
                    .to_bytes(),
            );
        }
        assert_eq!(seen, ["Bearer k1", "Bearer k2", "Bearer k1", "Bearer k2"]);
    }

    #[tokio::test]
    async fn skips_excluded_keys() {
        let svc = KeySelectLayer::new(pool(&[(1, "k1"), (2, "k2")])).layer(seen_credential());
        for _ in 0..3 {
            let mut req = principal(Request::new(()), "g", ChannelKind::OpenAi);
            let mut excluded = ExcludedKeys::new();
            excluded.insert(KeyId(1));
            req.extensions_mut().insert(excluded);
            let res = svc.clone().oneshot(req).await.unwrap();
            assert_eq!(res.extensions().get::<SelectedKey>().unwrap().id(), KeyId(2));
        }
    }

    #[tokio::test]
    async fn no_usable_key_is_503() {
        let svc = KeySelectLayer::new(pool(&[])).layer(seen_credential());
        let err = svc
            .oneshot(principal(Request::new(()), "g", ChannelKind::OpenAi))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoKeyAvailable);
        assert_eq!(err.status(), 503);
    }

    #[tokio::test]
    async fn missing_principal_is_an_internal_error() {
        let svc = KeySelectLayer::new(pool(&[(1, "k")])).layer(seen_credential());
        let err = svc.oneshot(Request::new(())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal);
    }

    #[tokio::test]
    async fn inner_errors_carry_the_key_and_in_flight_is_released() {
        let p = pool(&[(7, "secret-key-0123456789")]);
        let svc = KeySelectLayer::new(p.clone()).layer(service_fn(|_req: Request<()>| async {
            Err::<Response<Full<Bytes>>, BoxError>("reset by secret-key-0123456789".into())
        }));
        let err = svc
            .oneshot(principal(Request::new(()), "g", ChannelKind::OpenAi))
            .await
            .unwrap_err();
        assert_eq!(err.key().unwrap().id(), KeyId(7));
        assert_eq!(err.key().unwrap().group().as_str(), "g");
        assert!(!err.message().contains("secret-key-0123456789"));
        assert_eq!(p.get("g", KeyId(7)).unwrap().in_flight(), 0);
    }

    #[tokio::test]
    async fn in_flight_lasts_until_the_body_ends() {
        let p = pool(&[(1, "k1")]);
        let svc = KeySelectLayer::new(p.clone()).layer(seen_credential());
        let res = svc
            .oneshot(principal(Request::new(()), "g", ChannelKind::OpenAi))
            .await
            .unwrap();
        assert_eq!(p.get("g", KeyId(1)).unwrap().in_flight(), 1);
        drop(res);
        assert_eq!(p.get("g", KeyId(1)).unwrap().in_flight(), 0);
    }
}
