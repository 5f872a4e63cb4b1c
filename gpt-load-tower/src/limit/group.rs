//! Per-group limits: requests per minute and requests at once, each group's own, with an
//! optional queue ([`GroupLimitLayer`]).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use super::{GroupTokens, MinuteWindow};
use crate::{
    body::{BodyEnd, OnBodyEnd, TrackedBody},
    clock,
    context::{GroupName, Principal},
    error::{BoxError, Error},
    future::take_ready,
    group_map::GroupMap,
    keys::{LimitRefusal, SharedAdmission},
    telemetry,
};

/// One group's limits; `0` means none.
///
/// ```
/// use gpt_load_tower::limit::GroupLimits;
/// use std::time::Duration;
///
/// let limits = GroupLimits::new().rpm(600).max_concurrency(20).queue_timeout(Duration::from_millis(500));
/// assert_eq!((limits.rpm, limits.max_concurrency), (600, 20));
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GroupLimits {
    /// Requests per minute (a sliding minute, see [`MinuteWindow`]).
    pub rpm: u32,
    /// Requests in flight at once (a stream counts until it ends).
    pub max_concurrency: u32,
    /// Tokens per minute: settled usage plus the estimates of requests in flight (see
    /// [`TokenCharge`](super::TokenCharge)).
    pub tpm: u32,
    /// How long a request over a limit waits for room before it is refused; zero refuses at
    /// once.
    pub queue_timeout: Duration,
}

impl GroupLimits {
    /// No limits, no queue.
    pub const fn new() -> Self {
        Self {
            rpm: 0,
            max_concurrency: 0,
            tpm: 0,
            queue_timeout: Duration::ZERO,
        }
    }

    /// With `tpm` tokens per minute.
    #[must_use]
    pub const fn tpm(mut self, tpm: u32) -> Self {
        self.tpm = tpm;
        self
    }

    /// With `rpm` requests per minute.
    #[must_use]
    pub const fn rpm(mut self, rpm: u32) -> Self {
        self.rpm = rpm;
        self
    }

    /// With at most `max` requests at once.
    #[must_use]
    pub const fn max_concurrency(mut self, max: u32) -> Self {
        self.max_concurrency = max;
        self
    }

    /// Requests over a limit wait up to `timeout` for room.
    #[must_use]
    pub const fn queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = timeout;
        self
    }

    /// Whether no limit is set (the queue time alone limits nothing).
    pub const fn is_none(&self) -> bool {
        self.rpm == 0 && self.max_concurrency == 0 && self.tpm == 0
    }
}

/// A count of a group's requests beyond this node, such as a cluster's, asked after this node
/// admitted a request (see [`GroupLimitTable::share`]).
pub trait SharedGroupCount: Send + Sync + 'static {
    /// The check of one request to `group` under `limits`; `None` when there is nothing to ask.
    /// A refusal names `group_rpm`.
    fn admit(&self, group: &GroupName, limits: GroupLimits) -> Option<SharedAdmission>;
}

/// The limits of every group, shared by the layer and whoever configures it (cheap to clone).
#[derive(Clone, Default)]
pub struct GroupLimitTable {
    groups: Arc<GroupMap<GroupLimiter>>,
    shared: Arc<OnceLock<Box<dyn SharedGroupCount>>>,
}

impl GroupLimitTable {
    /// No group has limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `group`'s limits. What was counted keeps counting under the new limits; a group
    /// set to no limits is forgotten.
    pub fn set(&self, group: GroupName, limits: GroupLimits) {
        if limits.is_none() {
            self.remove(group.as_str());
            return;
        }
        match self.groups.get(group.as_str()) {
            Some(limiter) => limiter.set(limits),
            None => self.groups.update(|groups| {
                groups
                    .entry(group)
                    .or_insert_with(|| Arc::new(GroupLimiter::default()))
                    .set(limits);
            }),
        }
    }

    /// Asks `count` too about every request this node admits to a group with a per-minute limit
    /// (set once; a cluster's count). A refusal holds the group back on this node until the
    /// count has room again, so the next requests are refused without asking; it is not queued.
    pub fn share(&self, count: impl SharedGroupCount) {
        if self.shared.set(Box::new(count)).is_err() {
            tracing::warn!("the group limits already share their count");
        }
    }

    /// Forgets `group`'s limits (a deleted or renamed group).
    pub fn remove(&self, group: &str) {
        if self.groups.get(group).is_some() {
            self.groups.update(|groups| groups.remove(group));
        }
    }

    /// `group`'s limits (none when it has none).
    pub fn get(&self, group: &str) -> GroupLimits {
        self.groups
            .get(group)
            .map_or(GroupLimits::new(), |limiter| limiter.limits())
    }

    /// `group`'s requests in the last minute and in flight now (zero when it has no limits).
    pub fn usage(&self, group: &str) -> (u64, u32) {
        self.groups.get(group).map_or((0, 0), |limiter| {
            (limiter.minute.used(), limiter.in_flight.load(Ordering::Relaxed))
        })
    }

    /// `group`'s tokens of the last minute, settled and reserved (zero without limits).
    pub fn tokens_used(&self, group: &str) -> u64 {
        self.groups.get(group).map_or(0, |limiter| limiter.tokens.used())
    }
}

impl fmt::Debug for GroupLimitTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.groups
                    .load()
                    .iter()
                    .map(|(name, limiter)| (name, limiter.limits())),
            )
            .finish()
    }
}

/// One group's limits (changed in place, so its counters survive a change) and counters.
#[derive(Default)]
struct GroupLimiter {
    rpm: AtomicU32,
    max_concurrency: AtomicU32,
    tpm: AtomicU32,
    queue_timeout_ms: AtomicU64,
    minute: MinuteWindow,
    /// Tokens of the last minute, shared with the charges of the group's requests.
    tokens: Arc<MinuteWindow>,
    /// A shared count refused the group: no admission before this clock reading (0 = none).
    held_back_until: AtomicU64,
    in_flight: AtomicU32,
    /// Woken when a request in flight ends, for a request queued for the concurrency limit.
    freed: Notify,
}

/// A limit that refused a request and when it may have room.
struct Refusal {
    limit: &'static str,
    retry_after: Duration,
}

impl GroupLimiter {
    fn set(&self, limits: GroupLimits) {
        self.rpm.store(limits.rpm, Ordering::Relaxed);
        self.max_concurrency
            .store(limits.max_concurrency, Ordering::Relaxed);
        self.tpm.store(limits.tpm, Ordering::Relaxed);
        let queue_ms = u64::try_from(limits.queue_timeout.as_millis()).unwrap_or(u64::MAX);
        self.queue_timeout_ms.store(queue_ms, Ordering::Relaxed);
        // A higher cap lets queued requests in now.
        self.freed.notify_waiters();
    }

    fn limits(&self) -> GroupLimits {
        GroupLimits {
            rpm: self.rpm.load(Ordering::Relaxed),
            max_concurrency: self.max_concurrency.load(Ordering::Relaxed),
            tpm: self.tpm.load(Ordering::Relaxed),
            queue_timeout: Duration::from_millis(self.queue_timeout_ms.load(Ordering::Relaxed)),
        }
    }

    /// The group's tokens window, when it has a `tpm` limit (for the request's charges).
    fn token_window(&self) -> Option<GroupTokens> {
        (self.tpm.load(Ordering::Relaxed) > 0).then(|| GroupTokens(Arc::clone(&self.tokens)))
    }

    /// Takes one request from the request limits, or from none: tokens first (which takes
    /// nothing: the request's tokens are reserved when it is sent), then concurrency (given back
    /// by the permit), then the minute.
    fn try_admit(self: &Arc<Self>) -> Result<GroupPermit, Refusal> {
        let held_back_until = self.held_back_until.load(Ordering::Relaxed);
        if held_back_until != 0 && clock::now_ms() < held_back_until {
            return Err(Refusal {
                limit: "group_rpm",
                retry_after: clock::remaining(held_back_until),
            });
        }
        let tpm = self.tpm.load(Ordering::Relaxed);
        if tpm > 0
            && let Some(retry_after) = self.tokens.retry_after(1, u64::from(tpm))
        {
            return Err(Refusal {
                limit: "group_tpm",
                retry_after,
            });
        }
        let max = self.max_concurrency.load(Ordering::Relaxed);
        let held = max > 0;
        if held
            && self
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_err()
        {
            return Err(Refusal {
                limit: "group_concurrency",
                retry_after: Duration::from_secs(1),
            });
        }
        let permit = GroupPermit {
            limiter: held.then(|| Arc::clone(self)),
        };
        let rpm = self.rpm.load(Ordering::Relaxed);
        if rpm > 0
            && let Err(retry_after) = self.minute.try_acquire(1, u64::from(rpm))
        {
            drop(permit);
            return Err(Refusal {
                limit: "group_rpm",
                retry_after,
            });
        }
        Ok(permit)
    }

    /// Undoes this node's admission of a request the shared count refused, and holds the group
    /// back for as long as the refusal says.
    fn give_back(&self, refusal: &LimitRefusal) {
        if self.rpm.load(Ordering::Relaxed) > 0 {
            self.minute.release(1);
        }
        self.held_back_until
            .fetch_max(clock::deadline_ms(refusal.retry_after), Ordering::AcqRel);
    }

    /// Waits up to the queue time for room: for a request in flight to end, or for the minute
    /// to slide. A wait longer than what is left of the queue time is not begun.
    async fn admit_queued(self: Arc<Self>, first: Refusal) -> Result<GroupPermit, Refusal> {
        let queue = Duration::from_millis(self.queue_timeout_ms.load(Ordering::Relaxed));
        let deadline = tokio::time::Instant::now() + queue;
        let mut refusal = first;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if refusal.limit == "group_concurrency" {
                // Registered before the next attempt, so an end in between is not missed.
                let freed = self.freed.notified();
                tokio::pin!(freed);
                freed.as_mut().enable();
                match self.try_admit() {
                    Ok(permit) => return Ok(permit),
                    Err(again) if again.limit == "group_concurrency" => {
                        if tokio::time::timeout(left, freed).await.is_err() {
                            return Err(again);
                        }
                    }
                    Err(again) => {
                        // In, then over the minute: wait for that instead.
                        refusal = again;
                        continue;
                    }
                }
            } else {
                if refusal.retry_after > left {
                    return Err(refusal);
                }
                tokio::time::sleep(refusal.retry_after).await;
            }
            match self.try_admit() {
                Ok(permit) => return Ok(permit),
                Err(again) => refusal = again,
            }
        }
    }
}

/// A request admitted by its group's concurrency limit; dropping it (when the response body
/// ends) lets the next one in.
pub struct GroupPermit {
    limiter: Option<Arc<GroupLimiter>>,
}

impl GroupPermit {
    const NONE: Self = Self { limiter: None };
}

impl Drop for GroupPermit {
    fn drop(&mut self) {
        if let Some(limiter) = self.limiter.take() {
            limiter.in_flight.fetch_sub(1, Ordering::AcqRel);
            limiter.freed.notify_one();
        }
    }
}

impl OnBodyEnd for GroupPermit {
    fn on_body_end(self, _end: BodyEnd) {}
}

impl fmt::Debug for GroupPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GroupPermit")
    }
}

/// Per-group limits: requests per minute and requests at once, each group's own, with an
/// optional queue.
///
/// [`GroupLimitLayer`] reads the group from the [`Principal`] (the group in the URL) and admits
/// the request against that group's [`GroupLimits`] in a [`GroupLimitTable`]. A request over a
/// limit waits up to the group's queue time for room (for a request in flight to end, or for the
/// minute to slide) and is otherwise refused with `429`, `Retry-After` and
/// [`LIMIT_HEADER`](crate::error::LIMIT_HEADER) `group_rpm`, `group_tpm` or `group_concurrency`. A request
/// whose wait is longer than the queue time is refused at once. A group without limits costs one
/// map lookup, with no allocation. A [`SharedGroupCount`] (a cluster's) may be asked too, after
/// this node's own count admitted a request ([`GroupLimitTable::share`]).
///
/// - Reads: [`Principal`].
/// - Rejects: `429` ([`ErrorKind::RateLimited`](crate::error::ErrorKind)).
///
/// # Example
///
/// ```
/// use gpt_load_tower::{
///     channel::ChannelKind,
///     context::Principal,
///     error::{Error, ErrorKind},
///     limit::{GroupLimitLayer, GroupLimitTable, GroupLimits},
/// };
/// use http::{Request, Response};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let table = GroupLimitTable::new();
/// table.set("g".into(), GroupLimits::new().rpm(1));
/// let svc = ServiceBuilder::new()
///     .layer(GroupLimitLayer::new(table))
///     .service(service_fn(|_req: Request<()>| async {
///         Ok::<_, Error>(Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
///     }));
/// let req = || Request::builder().extension(Principal::new("g".into(), ChannelKind::OpenAi)).body(()).unwrap();
/// assert!(svc.clone().oneshot(req()).await.is_ok());
/// let err = svc.oneshot(req()).await.unwrap_err();
/// assert_eq!((err.kind(), err.limit()), (ErrorKind::RateLimited, Some("group_rpm")));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct GroupLimitLayer {
    table: GroupLimitTable,
}

impl GroupLimitLayer {
    /// Limits groups by `table`.
    pub fn new(table: GroupLimitTable) -> Self {
        Self { table }
    }
}

impl<S> Layer<S> for GroupLimitLayer {
    type Service = GroupLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GroupLimit {
            inner,
            table: self.table.clone(),
        }
    }
}

/// The service built by [`GroupLimitLayer`].
#[derive(Clone, Debug)]
pub struct GroupLimit<S> {
    inner: S,
    table: GroupLimitTable,
}

impl<S> GroupLimit<S> {
    define_inner_service_accessors!();
}

type Queued<R> = Pin<Box<dyn Future<Output = Result<R, Error>> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GroupLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<TrackedBody<ResBody, GroupPermit>>;
    type Error = Error;
    type Future = GroupLimitFuture<S::Future, Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|e| Error::from_boxed(e.into()))
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let limiter = req
            .extensions()
            .get::<Principal>()
            .and_then(|principal| self.table.groups.load().get(principal.group().as_str()).cloned());
        let Some(limiter) = limiter else {
            return GroupLimitFuture::admitted(self.inner.call(req), GroupPermit::NONE);
        };
        if let Some(tokens) = limiter.token_window() {
            req.extensions_mut().insert(tokens);
        }
        let group = || {
            req.extensions()
                .get::<Principal>()
                .map(|principal| principal.group().clone())
                .expect("the limiter was found by the principal's group")
        };
        let refusal = match limiter.try_admit() {
            Ok(permit) => {
                let shared = self
                    .table
                    .shared
                    .get()
                    .filter(|_| limiter.rpm.load(Ordering::Relaxed) > 0);
                let Some(check) = shared.and_then(|count| count.admit(&group(), limiter.limits())) else {
                    return GroupLimitFuture::admitted(self.inner.call(req), permit);
                };
                let group = group();
                let inner = take_ready(&mut self.inner);
                return GroupLimitFuture::queued(Box::pin(async move {
                    if let Err(refusal) = check.await {
                        limiter.give_back(&refusal);
                        drop(permit);
                        return Err(refused(
                            &group,
                            Refusal {
                                limit: refusal.limit,
                                retry_after: refusal.retry_after,
                            },
                        ));
                    }
                    let res = inner
                        .oneshot(req)
                        .await
                        .map_err(|e| Error::from_boxed(e.into()))?;
                    Ok(res.map(|body| TrackedBody::new(body, permit)))
                }));
            }
            Err(refusal) => refusal,
        };
        let group = group();
        if limiter.queue_timeout_ms.load(Ordering::Relaxed) == 0 {
            return GroupLimitFuture::refused(refused(&group, refusal));
        }
        let inner = take_ready(&mut self.inner);
        GroupLimitFuture::queued(Box::pin(async move {
            let permit = limiter
                .admit_queued(refusal)
                .await
                .map_err(|refusal| refused(&group, refusal))?;
            let res = inner
                .oneshot(req)
                .await
                .map_err(|e| Error::from_boxed(e.into()))?;
            Ok(res.map(|body| TrackedBody::new(body, permit)))
        }))
    }
}

fn refused(group: &GroupName, refusal: Refusal) -> Error {
    telemetry::limit_refused(group, refusal.limit);
    Error::rate_limited(refusal.limit, refusal.retry_after)
}

pin_project! {
    /// Response future of [`GroupLimit`].
    pub struct GroupLimitFuture<F, R> {
        #[pin]
        state: State<F, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, R> {
        Admitted { #[pin] inner: F, permit: Option<GroupPermit> },
        Queued { queued: Queued<R> },
        Refused { error: Option<Error> },
    }
}

impl<F, R> GroupLimitFuture<F, R> {
    fn admitted(inner: F, permit: GroupPermit) -> Self {
        Self {
            state: State::Admitted {
                inner,
                permit: Some(permit),
            },
        }
    }

    fn queued(queued: Queued<R>) -> Self {
        Self {
            state: State::Queued { queued },
        }
    }

    fn refused(error: Error) -> Self {
        Self {
            state: State::Refused { error: Some(error) },
        }
    }
}

impl<F, R> fmt::Debug for GroupLimitFuture<F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GroupLimitFuture(..)")
    }
}

impl<F, B, E> Future for GroupLimitFuture<F, Response<TrackedBody<B, GroupPermit>>>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<TrackedBody<B, GroupPermit>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Admitted { inner, permit } => {
                let res = ready!(inner.poll(cx)).map_err(|e| Error::from_boxed(e.into()))?;
                let permit = permit.take().expect("polled after completion");
                Poll::Ready(Ok(res.map(|body| TrackedBody::new(body, permit))))
            }
            StateProj::Queued { queued } => queued.as_mut().poll(cx),
            StateProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| Error::internal("polled after completion")))),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tower::service_fn;

    use super::*;
    use crate::{channel::ChannelKind, error::ErrorKind};

    type Svc = GroupLimit<
        tower::util::ServiceFn<fn(Request<()>) -> std::future::Ready<Result<Response<Full<Bytes>>, Error>>>,
    >;

    fn ok(_req: Request<()>) -> std::future::Ready<Result<Response<Full<Bytes>>, Error>> {
        std::future::ready(Ok(Response::new(Full::from("ok"))))
    }

    fn service(table: &GroupLimitTable) -> Svc {
        GroupLimitLayer::new(table.clone()).layer(service_fn(ok as fn(_) -> _))
    }

    fn req(group: &str) -> Request<()> {
        Request::builder()
            .extension(Principal::new(group.into(), ChannelKind::OpenAi))
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn a_group_at_its_tokens_is_refused_until_the_minute_slides() {
        use crate::limit::{TokenCharge, TokenEstimate};

        let table = GroupLimitTable::new();
        table.set("g".into(), GroupLimits::new().tpm(100));
        // The layer hands the group's window down; an attempt's charge counts against it.
        let charged = GroupLimitLayer::new(table.clone()).layer(service_fn(|req: Request<()>| {
            let tokens = req
                .extensions()
                .get::<GroupTokens>()
                .expect("the group's window")
                .clone();
            TokenCharge::reserve(vec![tokens.0], TokenEstimate(30)).settle(120);
            std::future::ready(Ok::<_, Error>(Response::new(Full::<Bytes>::from("ok"))))
        }));
        assert!(
            charged.clone().oneshot(req("g")).await.is_ok(),
            "under the limit when it came"
        );
        assert_eq!(table.tokens_used("g"), 120);
        let err = service(&table).oneshot(req("g")).await.unwrap_err();
        assert_eq!(
            (err.kind(), err.limit()),
            (ErrorKind::RateLimited, Some("group_tpm"))
        );
        assert!(err.retry_after().unwrap() <= Duration::from_secs(60));
        crate::clock::advance(Duration::from_secs(60));
        assert!(service(&table).oneshot(req("g")).await.is_ok());
        // A group without tokens limits gets no window.
        table.set("g".into(), GroupLimits::new().rpm(100));
        let unwindowed = GroupLimitLayer::new(table).layer(service_fn(|req: Request<()>| {
            assert!(req.extensions().get::<GroupTokens>().is_none());
            std::future::ready(Ok::<_, Error>(Response::new(Full::<Bytes>::from("ok"))))
        }));
        assert!(unwindowed.oneshot(req("g")).await.is_ok());
    }

    #[tokio::test]
    async fn a_group_over_its_minute_is_refused_and_others_are_not_limited() {
        let table = GroupLimitTable::new();
        table.set("g".into(), GroupLimits::new().rpm(2));
        let svc = service(&table);
        for _ in 0..2 {
            assert!(svc.clone().oneshot(req("g")).await.is_ok());
        }
        let err = svc.clone().oneshot(req("g")).await.unwrap_err();
        assert_eq!(
            (err.kind(), err.limit()),
            (ErrorKind::RateLimited, Some("group_rpm"))
        );
        assert!(err.retry_after().unwrap() <= Duration::from_secs(60));
        for _ in 0..5 {
            assert!(svc.clone().oneshot(req("other")).await.is_ok());
        }
        assert_eq!(table.usage("g").0, 2);
        // A minute later there is room again.
        crate::clock::advance(Duration::from_secs(60));
        assert!(svc.clone().oneshot(req("g")).await.is_ok());
        // Without limits the group is forgotten and never refused.
        table.set("g".into(), GroupLimits::new());
        assert_eq!(table.get("g"), GroupLimits::new());
        for _ in 0..5 {
            assert!(svc.clone().oneshot(req("g")).await.is_ok());
        }
    }

    #[tokio::test]
    async fn the_concurrency_permit_is_held_until_the_body_ends() {
        let table = GroupLimitTable::new();
        table.set("g".into(), GroupLimits::new().max_concurrency(1));
        let svc = service(&table);
        let first = svc.clone().oneshot(req("g")).await.unwrap();
        let err = svc.clone().oneshot(req("g")).await.unwrap_err();
        assert_eq!(err.limit(), Some("group_concurrency"));
        assert_eq!(first.into_body().collect().await.unwrap().to_bytes(), "ok");
        assert_eq!(table.usage("g").1, 0);
        assert!(svc.clone().oneshot(req("g")).await.is_ok());
    }

    #[tokio::test]
    async fn a_queued_request_gets_the_permit_a_finished_one_frees() {
        let table = GroupLimitTable::new();
        table.set(
            "g".into(),
            GroupLimits::new()
                .max_concurrency(1)
                .queue_timeout(Duration::from_secs(5)),
        );
        let svc = service(&table);
        let first = svc.clone().oneshot(req("g")).await.unwrap();
        let queued = tokio::spawn(svc.clone().oneshot(req("g")));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!queued.is_finished(), "waits for the permit");
        drop(first);
        let second = queued.await.unwrap().unwrap();
        assert_eq!(table.usage("g").1, 1, "the permit passed to the queued request");
        drop(second);
        assert_eq!(table.usage("g").1, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_request_is_refused_when_its_time_runs_out() {
        let table = GroupLimitTable::new();
        table.set(
            "g".into(),
            GroupLimits::new()
                .max_concurrency(1)
                .queue_timeout(Duration::from_millis(300)),
        );
        let svc = service(&table);
        let _first = svc.clone().oneshot(req("g")).await.unwrap();
        let started = tokio::time::Instant::now();
        let err = svc.clone().oneshot(req("g")).await.unwrap_err();
        assert_eq!(err.limit(), Some("group_concurrency"));
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_longer_than_the_queue_is_not_begun() {
        let table = GroupLimitTable::new();
        table.set(
            "g".into(),
            GroupLimits::new().rpm(1).queue_timeout(Duration::from_secs(1)),
        );
        let svc = service(&table);
        assert!(svc.clone().oneshot(req("g")).await.is_ok());
        let started = tokio::time::Instant::now();
        let err = svc.clone().oneshot(req("g")).await.unwrap_err();
        assert_eq!(err.limit(), Some("group_rpm"));
        assert!(
            started.elapsed().is_zero(),
            "the minute frees later than the queue allows"
        );
    }

    /// A shared count that refuses everything after `room` requests.
    struct Room(std::sync::atomic::AtomicU32);

    impl SharedGroupCount for Room {
        fn admit(&self, _group: &GroupName, _limits: GroupLimits) -> Option<SharedAdmission> {
            let admitted = self
                .0
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok();
            Some(Box::pin(async move {
                if admitted {
                    Ok(())
                } else {
                    Err(LimitRefusal {
                        limit: "group_rpm",
                        retry_after: Duration::from_secs(20),
                    })
                }
            }))
        }
    }

    #[tokio::test]
    async fn a_shared_refusal_holds_the_group_back_here() {
        let table = GroupLimitTable::new();
        table.share(Room(AtomicU32::new(1)));
        table.set("g".into(), GroupLimits::new().rpm(10));
        table.set("unshared".into(), GroupLimits::new().max_concurrency(5));
        let svc = service(&table);
        assert!(svc.clone().oneshot(req("g")).await.is_ok());
        let err = svc.clone().oneshot(req("g")).await.unwrap_err();
        assert_eq!(
            (err.limit(), err.retry_after()),
            (Some("group_rpm"), Some(Duration::from_secs(20)))
        );
        assert_eq!(table.usage("g").0, 1, "the refused request was given back here");
        // Held back: refused here without asking, until the shared count has room.
        let err = svc.clone().oneshot(req("g")).await.unwrap_err();
        assert_eq!(err.limit(), Some("group_rpm"));
        crate::clock::advance(Duration::from_secs(20));
        assert!(
            svc.clone().oneshot(req("g")).await.is_err(),
            "asked again, and refused again"
        );
        // A group without a per-minute limit is not asked about.
        assert!(svc.clone().oneshot(req("unshared")).await.is_ok());
    }

    #[tokio::test]
    async fn raising_the_cap_lets_queued_requests_in() {
        let table = GroupLimitTable::new();
        let limits = GroupLimits::new()
            .max_concurrency(1)
            .queue_timeout(Duration::from_secs(5));
        table.set("g".into(), limits);
        let svc = service(&table);
        let _first = svc.clone().oneshot(req("g")).await.unwrap();
        let queued = tokio::spawn(svc.clone().oneshot(req("g")));
        tokio::time::sleep(Duration::from_millis(20)).await;
        table.set("g".into(), limits.max_concurrency(2));
        assert!(queued.await.unwrap().is_ok());
    }
}
