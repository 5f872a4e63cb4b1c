use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use super::{ExcludedKeys, InFlight, KeyPool, SameKey, SelectedKey, SharedAdmission, pool::NO_EXCLUSIONS};
use crate::{
    body::TrackedBody,
    channel::{ChannelKind, RequestFacts, quota_model},
    context::{GroupName, Principal, target_group},
    error::{BoxError, Error},
    future::{ResponseFuture, take_ready},
    limit::{DEFAULT_TOKEN_RESERVE, GroupTokens, TokenCharge, TokenEstimate, TokenReserve},
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
    P: KeyPool + Clone,
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
            .and_then(|SameKey(key)| SelectedKey::again(key.group().clone(), Arc::clone(key.slot())));
        let Some(key) = same.or_else(|| self.pool.select_for(group.as_str(), excluded, model)) else {
            return ResponseFuture::ready(Err(
                match self.pool.limit_refusal(group.as_str(), excluded, model) {
                    Some(refusal) => {
                        telemetry::limit_refused(group, refusal.limit);
                        Error::rate_limited(refusal.limit, refusal.retry_after)
                    }
                    None => {
                        telemetry::no_key(group);
                        Error::no_key_available(group)
                    }
                },
            ));
        };
        if let Some(check) = self.pool.admit_shared(&key) {
            // Slow path (a key with limits shared across nodes): what reselection needs, owned.
            let retry = Reselect {
                pool: self.pool.clone(),
                group: group.clone(),
                excluded: excluded.clone(),
                model: model.map(Arc::from),
            };
            let ready = take_ready(&mut self.inner);
            return ResponseFuture::new(async move {
                let key = retry.until_admitted(key, check).await?;
                send(ready, req, channel, key).await
            });
        }
        // Fast path: `poll_ready` readied `self.inner`, so it is called here and no copy of the
        // services below is made.
        let (in_flight, charge) = prepare(&mut req, channel, &key);
        ResponseFuture::new(finish(self.inner.call(req), key, in_flight, charge))
    }
}

/// Sends one attempt with `key` on `inner`, which has not been readied (see [`prepare`]).
async fn send<S, ReqBody, ResBody>(
    inner: S,
    mut req: Request<ReqBody>,
    channel: ChannelKind,
    key: SelectedKey,
) -> Result<Response<TrackedBody<ResBody, InFlight>>, Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    let (in_flight, charge) = prepare(&mut req, channel, &key);
    finish(inner.oneshot(req), key, in_flight, charge).await
}

/// Readies one attempt with `key`: its credential injected, the key marked in flight (until the
/// response body ends), its tokens reserved, the key in the request's extensions.
fn prepare<B>(
    req: &mut Request<B>,
    channel: ChannelKind,
    key: &SelectedKey,
) -> (InFlight, Option<TokenCharge>) {
    channel.inject_credential(req, key.secret());
    let in_flight = key.begin_request();
    let charge = charge_tokens(req, key);
    req.extensions_mut().insert(key.clone());
    (in_flight, charge)
}

/// The attempt's answer, with the key (and its token charge) in the response's extensions.
async fn finish<ResBody, E: Into<BoxError>>(
    response: impl Future<Output = Result<Response<ResBody>, E>>,
    key: SelectedKey,
    in_flight: InFlight,
    charge: Option<TokenCharge>,
) -> Result<Response<TrackedBody<ResBody, InFlight>>, Error> {
    match response.await {
        Ok(mut res) => {
            res.extensions_mut().insert(key);
            if let Some(charge) = charge {
                res.extensions_mut().insert(charge);
            }
            Ok(res.map(|body| TrackedBody::new(body, in_flight)))
        }
        Err(err) => Err(Error::from_boxed(err.into()).with_key(key)),
    }
}

/// Reserves the attempt's estimated tokens against its key's and its group's tokens per minute
/// (nothing, and no allocation, when neither has a `tpm` limit). Settled by the request log when
/// the reply's usage is known; given back if the attempt fails (see [`TokenCharge`]).
fn charge_tokens<B>(req: &Request<B>, key: &SelectedKey) -> Option<TokenCharge> {
    let group = req.extensions().get::<GroupTokens>();
    let own = key.slot().token_window();
    if group.is_none() && own.is_none() {
        return None;
    }
    let reserve = req
        .extensions()
        .get::<TokenReserve>()
        .map_or(DEFAULT_TOKEN_RESERVE, |r| r.0);
    let estimate = TokenEstimate::of(req.extensions().get::<RequestFacts>(), reserve);
    let windows = own.into_iter().chain(group.map(|g| Arc::clone(&g.0))).collect();
    Some(TokenCharge::reserve(windows, estimate))
}

/// Another key when the shared check refuses the one selected.
struct Reselect<P> {
    pool: P,
    group: GroupName,
    excluded: ExcludedKeys,
    model: Option<Arc<str>>,
}

impl<P: KeyPool> Reselect<P> {
    /// Waits for `check` on `key`; on a refusal, selects another key (the refused one left out)
    /// until one is admitted, or answers the refusal when none is left.
    async fn until_admitted(
        mut self,
        mut key: SelectedKey,
        mut check: SharedAdmission,
    ) -> Result<SelectedKey, Error> {
        loop {
            let refusal = match check.await {
                Ok(()) => return Ok(key),
                Err(refusal) => refusal,
            };
            self.pool.refused_shared(&key, refusal);
            self.excluded.insert(key.id());
            let model = self.model.as_deref();
            let Some(next) = self.pool.select_for(self.group.as_str(), &self.excluded, model) else {
                let refusal = self
                    .pool
                    .limit_refusal(self.group.as_str(), &self.excluded, model)
                    .unwrap_or(refusal);
                telemetry::limit_refused(&self.group, refusal.limit);
                return Err(Error::rate_limited(refusal.limit, refusal.retry_after));
            };
            key = next;
            match self.pool.admit_shared(&key) {
                Some(next_check) => check = next_check,
                None => return Ok(key),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        channel::ChannelKind,
        error::ErrorKind,
        keys::{KeyId, KeySlot, MemoryKeyPool, SelectedKey},
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
    async fn every_key_at_its_limit_is_429_naming_the_limit() {
        let p = pool(&[(1, "k1")]);
        p.set_key_limits(&"g".into(), crate::keys::KeyLimits::new().rpm(1));
        let svc = KeySelectLayer::new(p).layer(seen_credential());
        let req = || principal(Request::new(()), "g", ChannelKind::OpenAi);
        assert!(svc.clone().oneshot(req()).await.is_ok());
        let err = svc.oneshot(req()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RateLimited);
        assert_eq!(err.limit(), Some("key_rpm"));
        assert!(err.retry_after().unwrap() <= std::time::Duration::from_secs(60));
    }

    /// A pool whose shared check (a cluster's count, in the gateway) refuses some keys.
    #[derive(Clone)]
    struct SharedPool {
        local: MemoryKeyPool,
        refused: Arc<[u64]>,
        asked: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl KeyPool for SharedPool {
        fn select(&self, group: &str, excluded: &ExcludedKeys) -> Option<SelectedKey> {
            self.local.select(group, excluded)
        }

        fn has_candidate(&self, group: &str, excluded: &ExcludedKeys) -> bool {
            self.local.has_candidate(group, excluded)
        }

        fn report(&self, key: &SelectedKey, report: crate::keys::Report) {
            self.local.report(key, report)
        }

        fn limit_refusal(
            &self,
            group: &str,
            excluded: &ExcludedKeys,
            model: Option<&str>,
        ) -> Option<crate::keys::LimitRefusal> {
            self.local.limit_refusal(group, excluded, model)
        }

        fn admit_shared(&self, key: &SelectedKey) -> Option<SharedAdmission> {
            self.asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let refused = self.refused.contains(&key.id().0);
            Some(Box::pin(async move {
                if refused {
                    Err(crate::keys::LimitRefusal {
                        limit: "key_rpm",
                        retry_after: std::time::Duration::from_secs(30),
                    })
                } else {
                    Ok(())
                }
            }))
        }

        fn refused_shared(&self, key: &SelectedKey, refusal: crate::keys::LimitRefusal) {
            self.local.refused_shared(key, refusal)
        }
    }

    fn shared_pool(refused: &[u64]) -> SharedPool {
        let local = pool(&[(1, "k1"), (2, "k2")]);
        local.set_key_limits(&"g".into(), crate::keys::KeyLimits::new().rpm(10));
        SharedPool {
            local,
            refused: refused.into(),
            asked: Arc::default(),
        }
    }

    #[tokio::test]
    async fn a_key_the_shared_check_refuses_is_given_back_and_another_serves() {
        let p = shared_pool(&[1]);
        let svc = KeySelectLayer::new(p.clone()).layer(seen_credential());
        let req = || principal(Request::new(()), "g", ChannelKind::OpenAi);
        let res = svc.clone().oneshot(req()).await.unwrap();
        assert_eq!(res.extensions().get::<SelectedKey>().unwrap().id(), KeyId(2));
        let refused = p.local.get("g", KeyId(1)).unwrap();
        assert_eq!(
            refused.limit_usage().0,
            0,
            "what key 1's selection took was given back"
        );
        assert_eq!(
            refused.limit_refusal().unwrap().limit,
            "key_rpm",
            "and it is held back here"
        );
        let asked = p.asked.load(std::sync::atomic::Ordering::Relaxed);
        // Held back, key 1 is not asked about again: the next requests go to key 2 at once.
        for _ in 0..3 {
            let res = svc.clone().oneshot(req()).await.unwrap();
            assert_eq!(res.extensions().get::<SelectedKey>().unwrap().id(), KeyId(2));
        }
        assert_eq!(p.asked.load(std::sync::atomic::Ordering::Relaxed), asked + 3);
    }

    #[tokio::test]
    async fn with_every_key_refused_by_the_shared_check_the_client_gets_its_429() {
        let p = shared_pool(&[1, 2]);
        let svc = KeySelectLayer::new(p).layer(seen_credential());
        let err = svc
            .oneshot(principal(Request::new(()), "g", ChannelKind::OpenAi))
            .await
            .unwrap_err();
        assert_eq!(
            (err.kind(), err.limit()),
            (ErrorKind::RateLimited, Some("key_rpm"))
        );
        assert!(err.retry_after().unwrap() <= std::time::Duration::from_secs(30));
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
