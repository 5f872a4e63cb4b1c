use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use super::{InFlight, KeyId, KeySlot, LimitRefusal};
use crate::{
    context::{AttemptKey, GroupName},
    secret::ApiKey,
};

/// A source of upstream keys per group.
///
/// [`MemoryKeyPool`](super::MemoryKeyPool) is the ready implementation; another pool (for
/// example one shared through Redis) implements the same three calls. Implementations must not
/// block: `select` runs on every attempt.
pub trait KeyPool: Send + Sync + 'static {
    /// Picks a usable key of `group` that is not in `excluded`.
    fn select(&self, group: &str, excluded: &ExcludedKeys) -> Option<SelectedKey>;

    /// Whether [`select`](Self::select) would currently find a key, without taking it.
    fn has_candidate(&self, group: &str, excluded: &ExcludedKeys) -> bool;

    /// Records how an attempt on `key` went.
    fn report(&self, key: &SelectedKey, report: Report);

    /// [`select`](Self::select) for a request for `model`: skips keys on which that model rests
    /// (see [`rest_model`](Self::rest_model)). The default ignores the model.
    fn select_for(&self, group: &str, excluded: &ExcludedKeys, model: Option<&str>) -> Option<SelectedKey> {
        let _ = model;
        self.select(group, excluded)
    }

    /// [`has_candidate`](Self::has_candidate) for a request for `model`. The default ignores the
    /// model.
    fn has_candidate_for(&self, group: &str, excluded: &ExcludedKeys, model: Option<&str>) -> bool {
        let _ = model;
        self.has_candidate(group, excluded)
    }

    /// `key` ran out of a per-model quota (Gemini's are per model): rest it for `model` only,
    /// for `duration`, while it keeps serving other models. The default rests the whole key.
    fn rest_model(&self, key: &SelectedKey, model: &str, duration: Duration) {
        let _ = model;
        self.report(key, Report::CoolDown { duration });
    }

    /// After [`select_for`](Self::select_for) found nothing: the key limit that keeps the
    /// soonest-free key from serving, when every usable key is at a limit (so the client gets
    /// `429` and when to come back, not `503`). The default knows no limits.
    fn limit_refusal(
        &self,
        group: &str,
        excluded: &ExcludedKeys,
        model: Option<&str>,
    ) -> Option<LimitRefusal> {
        let _ = (group, excluded, model);
        None
    }

    /// A check this node cannot make alone, such as a key limit counted across a cluster's
    /// nodes, made after [`select_for`](Self::select_for) took `key` and before the attempt is
    /// sent. `None` (the default, and the answer for a key without such limits) costs nothing.
    fn admit_shared(&self, key: &SelectedKey) -> Option<SharedAdmission> {
        let _ = key;
        None
    }

    /// The [shared check](Self::admit_shared) refused `key`: give back what its selection took,
    /// and keep the key from being selected here until `refusal.retry_after` has passed (so the
    /// next requests do not ask again). The default does nothing.
    fn refused_shared(&self, key: &SelectedKey, refusal: LimitRefusal) {
        let _ = (key, refusal);
    }
}

/// A [shared admission check](KeyPool::admit_shared) in progress.
pub type SharedAdmission = Pin<Box<dyn Future<Output = Result<(), LimitRefusal>> + Send + 'static>>;

impl<P: KeyPool + ?Sized> KeyPool for Arc<P> {
    fn select(&self, group: &str, excluded: &ExcludedKeys) -> Option<SelectedKey> {
        (**self).select(group, excluded)
    }

    fn has_candidate(&self, group: &str, excluded: &ExcludedKeys) -> bool {
        (**self).has_candidate(group, excluded)
    }

    fn report(&self, key: &SelectedKey, report: Report) {
        (**self).report(key, report)
    }

    fn select_for(&self, group: &str, excluded: &ExcludedKeys, model: Option<&str>) -> Option<SelectedKey> {
        (**self).select_for(group, excluded, model)
    }

    fn has_candidate_for(&self, group: &str, excluded: &ExcludedKeys, model: Option<&str>) -> bool {
        (**self).has_candidate_for(group, excluded, model)
    }

    fn rest_model(&self, key: &SelectedKey, model: &str, duration: Duration) {
        (**self).rest_model(key, model, duration)
    }

    fn limit_refusal(
        &self,
        group: &str,
        excluded: &ExcludedKeys,
        model: Option<&str>,
    ) -> Option<LimitRefusal> {
        (**self).limit_refusal(group, excluded, model)
    }

    fn admit_shared(&self, key: &SelectedKey) -> Option<SharedAdmission> {
        (**self).admit_shared(key)
    }

    fn refused_shared(&self, key: &SelectedKey, refusal: LimitRefusal) {
        (**self).refused_shared(key, refusal)
    }
}

/// What happened to a key during one attempt, as reported to the pool.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// The key worked: its consecutive-failure count resets.
    Success,
    /// A counted failure; the key is blacklisted when its consecutive failures reach
    /// `blacklist_threshold` (0 = never).
    Failure {
        /// Consecutive failures that blacklist the key; 0 disables blacklisting.
        blacklist_threshold: u32,
    },
    /// The key is rate limited or out of quota: pause it without counting a failure, and raise
    /// its backoff level (see [`Backoff`](super::Backoff), which computes `duration`).
    CoolDown {
        /// How long the key rests.
        duration: Duration,
    },
    /// The key is known to be dead: blacklist it now.
    Invalidate,
    /// Take the key out of rotation until an operator enables it.
    Disable,
    /// The provider failed (a `5xx`, a timeout, a broken connection), not the key: noted as
    /// evidence of trouble, never counted toward the blacklist.
    Transient,
    /// The upstream answered, but the answer says nothing about the key's health (a request
    /// error, a status outside the failover set). Ends a probe: the key was not rate limited.
    Answered,
}

/// The key chosen for an attempt. Inserted into the request and the response extensions by
/// [`KeySelect`](super::KeySelect). Cheap to clone.
///
/// An [`Error`](crate::Error) carries the plain [`AttemptKey`] made from it (`From`), not the
/// live slot.
#[derive(Clone, Debug)]
pub struct SelectedKey {
    group: GroupName,
    slot: Arc<KeySlot>,
    probe: bool,
    /// The key's concurrency limit already counted this request in flight.
    holds_in_flight: bool,
}

impl SelectedKey {
    /// A selection of `slot` from `group`.
    pub fn new(group: GroupName, slot: Arc<KeySlot>) -> Self {
        Self {
            group,
            slot,
            probe: false,
            holds_in_flight: false,
        }
    }

    /// The selection of a cooling key whose rest is over: this request finds out whether it
    /// recovered.
    pub fn probe(group: GroupName, slot: Arc<KeySlot>) -> Self {
        Self {
            group,
            slot,
            probe: true,
            holds_in_flight: false,
        }
    }

    /// `slot` again for another attempt of the same request (a rule asked to retry on the same
    /// key), if its limits take one more request.
    pub(crate) fn again(group: GroupName, slot: Arc<KeySlot>) -> Option<Self> {
        let held = slot.admit().ok()?;
        let key = Self::new(group, slot);
        Some(if held { key.holding_in_flight() } else { key })
    }

    /// The same selection, whose request the key's concurrency limit already counts in flight.
    pub(crate) fn holding_in_flight(mut self) -> Self {
        self.holds_in_flight = true;
        self
    }

    /// Whether the key's concurrency limit already counts this selection's request in flight.
    pub(crate) fn holds_in_flight(&self) -> bool {
        self.holds_in_flight
    }

    /// Marks the request in flight on the key until the guard drops (once per selection).
    pub(crate) fn begin_request(&self) -> InFlight {
        if self.holds_in_flight {
            self.slot.adopt_request()
        } else {
            self.slot.begin_request()
        }
    }

    /// Whether this request probes a cooling key (see [`probe`](Self::probe)).
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.slot.id()
    }

    /// The key.
    pub fn secret(&self) -> &ApiKey {
        self.slot.secret()
    }

    /// The group the key belongs to.
    pub fn group(&self) -> &GroupName {
        &self.group
    }

    /// The key's live slot.
    pub fn slot(&self) -> &Arc<KeySlot> {
        &self.slot
    }
}

impl From<&SelectedKey> for AttemptKey {
    fn from(key: &SelectedKey) -> Self {
        AttemptKey::held(key.id(), key.group.clone(), key.slot.clone())
    }
}

impl From<SelectedKey> for AttemptKey {
    fn from(key: SelectedKey) -> Self {
        AttemptKey::held(key.id(), key.group, key.slot)
    }
}

/// Keys already tried by this request; [`KeySelect`](super::KeySelect) skips them. Written by
/// [`RetryOnOtherKey`](crate::retry::RetryOnOtherKey) before each retry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExcludedKeys(Vec<KeyId>);

impl ExcludedKeys {
    /// An empty set (does not allocate).
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// Adds a key.
    pub fn insert(&mut self, id: KeyId) {
        if !self.0.contains(&id) {
            self.0.push(id);
        }
    }

    /// Removes a key, so it may be selected again.
    pub fn remove(&mut self, id: KeyId) {
        self.0.retain(|k| *k != id);
    }

    /// Whether `id` was already tried.
    #[inline]
    pub fn contains(&self, id: KeyId) -> bool {
        self.0.contains(&id)
    }

    /// How many keys were tried.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no key was tried yet.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The tried keys, in order.
    pub fn iter(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.0.iter().copied()
    }
}

/// The empty set, for callers without one.
/// The key the next attempt must use: set by the retry policy when a rule asked to retry on the
/// same key. Key selection takes it out of the request and uses it while it is usable.
#[derive(Clone, Debug)]
pub struct SameKey(pub SelectedKey);

pub(crate) static NO_EXCLUSIONS: ExcludedKeys = ExcludedKeys::new();
