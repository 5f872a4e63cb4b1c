use std::{fmt, future::Ready, sync::Arc};

use http::{Request, Response};
use tower::retry::Policy;

use crate::{
    blacklist::{AttemptOutcome, StatusMatcher},
    body::ReplayBody,
    context::target_group,
    error::Error,
    keys::{ExcludedKeys, KeyPool, SelectedKey},
    log::AttemptLog,
    telemetry,
};

/// Per-request retry budget, overriding the policy's (for the per-group `max_retries` setting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetrySettings {
    /// Extra attempts after the first; 0 = a single attempt.
    pub max_retries: u32,
}

/// Retries failed attempts on keys not tried yet. See the [module docs](crate::retry).
///
/// tower clones the policy for every request, so the count of retries is per request.
#[derive(Clone)]
pub struct RetryOnOtherKey {
    max_retries: u32,
    retried: u32,
    pool: Option<Arc<dyn KeyPool>>,
    failover: Arc<StatusMatcher>,
}

impl RetryOnOtherKey {
    /// Up to `max_retries` extra attempts per request.
    pub fn new(max_retries: u32) -> Self {
        Self {
            max_retries,
            retried: 0,
            pool: None,
            failover: Arc::new(StatusMatcher::default()),
        }
    }

    /// Checks `pool` before each retry, and stops when no untried key is left.
    #[must_use]
    pub fn with_pool(mut self, pool: impl KeyPool) -> Self {
        self.pool = Some(Arc::new(pool));
        self
    }

    /// The statuses to retry when the response does not carry an
    /// [`AttemptOutcome`] (that is, without [`KeyHealth`](crate::blacklist::KeyHealth) below).
    #[must_use]
    pub fn failover(mut self, matcher: StatusMatcher) -> Self {
        self.failover = Arc::new(matcher);
        self
    }

    fn should_retry<B>(&self, result: &Result<Response<B>, Error>) -> (bool, Option<SelectedKey>) {
        match result {
            Ok(res) => {
                let failover = res
                    .extensions()
                    .get::<AttemptOutcome>()
                    .map_or_else(|| self.failover.matches(res.status().as_u16()), |a| a.failover);
                (failover, res.extensions().get::<SelectedKey>().cloned())
            }
            Err(err) => (err.is_retryable(), err.key().cloned()),
        }
    }
}

impl fmt::Debug for RetryOnOtherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryOnOtherKey")
            .field("max_retries", &self.max_retries)
            .field("retried", &self.retried)
            .field("pool", &self.pool.is_some())
            .field("failover", &self.failover)
            .finish()
    }
}

impl<B> Policy<Request<ReplayBody>, Response<B>, Error> for RetryOnOtherKey {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        req: &mut Request<ReplayBody>,
        result: &mut Result<Response<B>, Error>,
    ) -> Option<Self::Future> {
        let max = req
            .extensions()
            .get::<RetrySettings>()
            .map_or(self.max_retries, |s| s.max_retries);
        if self.retried >= max {
            return None;
        }
        let (retryable, failed_key) = self.should_retry(result);
        if !retryable {
            return None;
        }
        let mut excluded = req
            .extensions()
            .get::<ExcludedKeys>()
            .cloned()
            .unwrap_or_default();
        if let Some(key) = &failed_key {
            excluded.insert(key.id());
        }
        let group = target_group(req.extensions()).cloned();
        if let (Some(pool), Some(group)) = (&self.pool, &group)
            && !pool.has_candidate(group.as_str(), &excluded)
        {
            return None;
        }
        if let Some(log) = req.extensions().get::<AttemptLog>() {
            log.record_retry(result);
        }
        if let Some(group) = &group {
            telemetry::retry(group);
        }
        req.extensions_mut().insert(excluded);
        self.retried += 1;
        Some(std::future::ready(()))
    }

    fn clone_request(&mut self, req: &Request<ReplayBody>) -> Option<Request<ReplayBody>> {
        let body = req.body().try_clone()?;
        let mut clone = Request::new(body);
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.version_mut() = req.version();
        *clone.headers_mut() = req.headers().clone();
        *clone.extensions_mut() = req.extensions().clone();
        Some(clone)
    }
}

#[cfg(test)]
fn _object_safe(_: Box<dyn Policy<Request<ReplayBody>, Response<()>, Error, Future = Ready<()>>>) {}
