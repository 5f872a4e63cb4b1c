use std::{
    fmt,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use tower::retry::Policy;

use crate::{
    blacklist::{AttemptOutcome, Outcome, StatusMatcher},
    body::{ReplayBody, replay_request},
    channel::quota_model,
    context::{AttemptKey, AttemptNumber, KeyId, Principal, target_group},
    error::Error,
    keys::{ExcludedKeys, KeyPool, SameKey, SelectedKey},
    log::AttemptLog,
    telemetry,
};

/// Per-request retry budget, overriding the policy's (for the per-group `max_retries` setting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetrySettings {
    /// Extra attempts after the first; 0 = a single attempt.
    pub max_retries: u32,
}

/// Retries failed attempts on keys not tried yet, then on the key whose transient failure is
/// oldest. See the [module docs](crate::retry).
///
/// tower clones the policy for every request, so the count of retries is per request.
#[derive(Clone)]
pub struct RetryOnOtherKey {
    max_retries: u32,
    retried: u32,
    pool: Option<Arc<dyn KeyPool>>,
    failover: Arc<StatusMatcher>,
    backoff: Backoff,
    /// Keys of this request whose last failure was transient, oldest failure first.
    transient: Vec<KeyId>,
    /// Retries that re-used a key.
    reused: u32,
    /// The lowest retry budget a fired rule left (counted from the request's first attempt).
    rule_budget: Option<u32>,
}

/// The wait before re-using a key: `base` doubling per re-use up to `max`, each drawn at random
/// from its upper half so that concurrent requests do not retry in step.
#[derive(Clone, Copy, Debug)]
struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    fn delay(self, reuse: u32) -> Duration {
        let full = self.base.saturating_mul(1 << reuse.min(16)).min(self.max);
        let half = full / 2;
        // RandomState is seeded per thread once; drawing from it makes no system call.
        let draw = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), reuse);
        half + half.mul_f64((draw >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// Whether and how a finished attempt may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// The answer is final.
    Final,
    /// Retry on another key; this one is not to be tried again by this request.
    OtherKey,
    /// The provider failed, not the key: retry on another key, or on this one once every usable
    /// key was tried.
    Transient,
    /// A rule asked for this key again after a wait.
    SameKey(Duration),
}

impl RetryOnOtherKey {
    /// Up to `max_retries` extra attempts per request.
    pub fn new(max_retries: u32) -> Self {
        Self {
            max_retries,
            retried: 0,
            pool: None,
            failover: Arc::new(StatusMatcher::default()),
            backoff: Backoff {
                base: Duration::from_millis(100),
                max: Duration::from_secs(1),
            },
            transient: Vec::new(),
            reused: 0,
            rule_budget: None,
        }
    }

    /// Consults `pool` before each retry: the policy stops when no key is left to try instead of
    /// letting key selection fail with `503`, and re-uses a key that failed transiently when
    /// every usable key was tried.
    #[must_use]
    pub fn with_pool(mut self, pool: impl KeyPool) -> Self {
        self.pool = Some(Arc::new(pool));
        self
    }

    /// The statuses retried when the response carries no
    /// [`AttemptOutcome`](crate::blacklist::AttemptOutcome) (no [`KeyHealth`](crate::blacklist::KeyHealth)
    /// below); default `400-403,405-999`.
    #[must_use]
    pub fn failover(mut self, matcher: StatusMatcher) -> Self {
        self.failover = Arc::new(matcher);
        self
    }

    /// The wait before re-using a key that failed transiently: `base` (default 100 ms), doubling
    /// with each re-use up to `max` (default 1 s), jittered over the upper half. A zero `base`
    /// re-uses at once. Retries on a key not tried yet never wait.
    ///
    /// A non-zero wait needs a tokio runtime with its time driver.
    #[must_use]
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff = Backoff { base, max };
        self
    }

    /// The verdict, and the id of the key the attempt used: from the response's
    /// [`SelectedKey`], or from the key the error carries.
    fn verdict<B>(&self, result: &Result<Response<B>, Error>) -> (Verdict, Option<KeyId>) {
        match result {
            Ok(res) => {
                let verdict = match res.extensions().get::<AttemptOutcome>() {
                    Some(attempt) if attempt.outcome == Outcome::Transient => Verdict::Transient,
                    Some(AttemptOutcome {
                        outcome: Outcome::RetrySame(after),
                        ..
                    }) => Verdict::SameKey(*after),
                    Some(attempt) if attempt.outcome.is_retryable() => Verdict::OtherKey,
                    Some(_) => Verdict::Final,
                    None if !self.failover.matches(res.status().as_u16()) => Verdict::Final,
                    None if res.status().is_server_error() => Verdict::Transient,
                    None => Verdict::OtherKey,
                };
                (
                    verdict,
                    res.extensions().get::<SelectedKey>().map(SelectedKey::id),
                )
            }
            Err(err) if err.is_retryable() => (Verdict::Transient, err.key().map(AttemptKey::id)),
            Err(err) => (Verdict::Final, err.key().map(AttemptKey::id)),
        }
    }

    /// When `excluded` leaves no key to try: takes out of it the key whose transient failure is
    /// oldest and still usable. Returns whether one was found.
    fn readmit_oldest_transient(
        &mut self,
        pool: &dyn KeyPool,
        group: &str,
        excluded: &mut ExcludedKeys,
    ) -> bool {
        for i in 0..self.transient.len() {
            let id = self.transient[i];
            excluded.remove(id);
            if pool.has_candidate(group, excluded) {
                self.transient.remove(i);
                return true;
            }
            excluded.insert(id);
        }
        false
    }
}

/// Numbers the next attempt: one past the request's current attempt, which an earlier layer
/// may have started past 1 (an aggregate's next sub-group).
fn next_attempt(req: &mut Request<ReplayBody>) {
    let current = req.extensions().get::<AttemptNumber>().map_or(1, |a| a.0);
    req.extensions_mut().insert(AttemptNumber(current + 1));
}

impl fmt::Debug for RetryOnOtherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryOnOtherKey")
            .field("max_retries", &self.max_retries)
            .field("retried", &self.retried)
            .field("pool", &self.pool.is_some())
            .field("failover", &self.failover)
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// The wait before a retry ([`RetryOnOtherKey`]'s policy future): none before a key not tried
/// yet, a short jittered backoff before re-using one.
pub struct RetryDelay {
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl RetryDelay {
    fn after(delay: Duration) -> Self {
        Self {
            sleep: (!delay.is_zero()).then(|| Box::pin(tokio::time::sleep(delay))),
        }
    }
}

impl fmt::Debug for RetryDelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryDelay")
            .field("sleeping", &self.sleep.is_some())
            .finish()
    }
}

impl Future for RetryDelay {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl<B> Policy<Request<ReplayBody>, Response<B>, Error> for RetryOnOtherKey {
    type Future = RetryDelay;

    fn retry(
        &mut self,
        req: &mut Request<ReplayBody>,
        result: &mut Result<Response<B>, Error>,
    ) -> Option<Self::Future> {
        if let Ok(res) = &*result
            && let Some(cap) = res
                .extensions()
                .get::<AttemptOutcome>()
                .and_then(|a| a.max_retries)
        {
            let budget = self.retried.saturating_add(cap);
            self.rule_budget = Some(self.rule_budget.map_or(budget, |b| b.min(budget)));
        }
        let max = req
            .extensions()
            .get::<RetrySettings>()
            .map_or(self.max_retries, |s| s.max_retries);
        if self.retried >= max.min(self.rule_budget.unwrap_or(u32::MAX)) {
            return None;
        }
        let (verdict, failed_key) = self.verdict(result);
        if verdict == Verdict::Final {
            return None;
        }
        if let Verdict::SameKey(after) = verdict {
            let Ok(res) = &*result else { return None };
            let key = res.extensions().get::<SelectedKey>()?.clone();
            if let Some(log) = req.extensions().get::<AttemptLog>() {
                log.record_retry(result);
            }
            telemetry::retry(key.group());
            req.extensions_mut().insert(SameKey(key));
            self.retried += 1;
            next_attempt(req);
            return Some(RetryDelay::after(after));
        }
        let mut excluded = req
            .extensions()
            .get::<ExcludedKeys>()
            .cloned()
            .unwrap_or_default();
        if let Some(id) = failed_key {
            excluded.insert(id);
            if verdict == Verdict::Transient {
                self.transient.push(id);
            }
        }
        let group = target_group(req.extensions()).cloned();
        let model = req
            .extensions()
            .get::<Principal>()
            .and_then(|p| quota_model(req, p.channel()));
        let mut delay = Duration::ZERO;
        if let (Some(pool), Some(group)) = (self.pool.clone(), &group)
            && !pool.has_candidate_for(group.as_str(), &excluded, model)
        {
            if !self.readmit_oldest_transient(&*pool, group.as_str(), &mut excluded) {
                return None;
            }
            delay = self.backoff.delay(self.reused);
            self.reused += 1;
        }
        if let Some(log) = req.extensions().get::<AttemptLog>() {
            log.record_retry(result);
        }
        if let Some(group) = &group {
            telemetry::retry(group);
        }
        req.extensions_mut().insert(excluded);
        self.retried += 1;
        next_attempt(req);
        Some(RetryDelay::after(delay))
    }

    fn clone_request(&mut self, req: &Request<ReplayBody>) -> Option<Request<ReplayBody>> {
        replay_request(req)
    }
}

#[cfg(test)]
fn _object_safe(_: Box<dyn Policy<Request<ReplayBody>, Response<()>, Error, Future = RetryDelay>>) {}
