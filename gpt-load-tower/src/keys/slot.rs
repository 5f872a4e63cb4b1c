use std::{
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwapOption;
use once_cell::race::OnceBox;

use super::limits::{KeyLimiter, KeyLimits, LimitRefusal};
use crate::{clock, context::KeyId, secret::ApiKey};

/// How long a cooling key whose rest is over stays with the one request probing it before
/// another request may probe it: longer than most answers take to start, short enough that a
/// probe whose client went away does not keep the key idle for long.
pub(crate) const PROBE_WINDOW: Duration = Duration::from_secs(30);

/// The highest backoff level a slot counts to: far past any cap on a cool-down's length.
const MAX_BACKOFF_LEVEL: u16 = 1000;

/// The state of a key in the pool.
///
/// The lifecycle: `pending` (added, not yet validated) → `active` on a validation or a success;
/// `active` ⇄ `degraded` (counted failures below the blacklist threshold) → `invalid` at the
/// threshold; `active`/`degraded` → `cooling` on a rate limit, back to `active` when the probe
/// after the rest succeeds; `disabled` by an operator only.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Selectable.
    Active,
    /// Selectable, but it failed recently (counted failures below the blacklist threshold), so
    /// it is selected less often, per the group's degraded weight. Read from
    /// [`KeySlot::state`]; a slot is stored as active.
    Degraded,
    /// Paused until a deadline (rate limited or out of quota); not counted as a failure. When the
    /// deadline passes one request probes the key; its answer ends the rest or starts a longer
    /// one.
    Cooling,
    /// Blacklisted: too many consecutive failures, or marked dead. Re-validated in the background.
    Invalid,
    /// Switched off by an operator.
    Disabled,
    /// Added but not yet validated: selected only when the group has no other usable key (and
    /// the group allows it, [`MemoryKeyPool::set_pending_fallback`](super::MemoryKeyPool::set_pending_fallback)).
    /// A success or a passed validation makes it active.
    Pending,
}

impl KeyState {
    /// The name used in events, logs and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Degraded => "degraded",
            Self::Cooling => "cooling",
            Self::Invalid => "invalid",
            Self::Disabled => "disabled",
            Self::Pending => "pending",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Active,
            1 => Self::Cooling,
            2 => Self::Invalid,
            3 => Self::Disabled,
            _ => Self::Pending,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            // Degraded is derived from the failure count, never stored.
            Self::Active | Self::Degraded => 0,
            Self::Cooling => 1,
            Self::Invalid => 2,
            Self::Disabled => 3,
            Self::Pending => 4,
        }
    }

    /// Whether keys in this state stay in the selection view (cooling keys come back by time;
    /// pending keys wait in their own list).
    pub(crate) fn in_view(self) -> bool {
        matches!(self, Self::Active | Self::Cooling)
    }
}

/// One key and its live health, shared by the pool and the requests using it.
///
/// Every field is an atomic, so reading and updating a slot never takes a lock. What few keys
/// ever have (a last error, per-model rests, rate limits) lives in one allocation made on first
/// use, so a pool of a million keys pays a pointer for it per key.
pub struct KeySlot {
    id: KeyId,
    secret: ApiKey,
    cool_until: AtomicU64,
    extras: OnceBox<Extras>,
    /// Requests since the last [`take_requests`](Self::take_requests) (a flush of key state).
    requests: AtomicU32,
    /// Wall-clock seconds since the epoch of the last success and the last failure (0 = never):
    /// stored and shown, so not the process's monotonic clock, and to the second, as the
    /// database keeps them.
    last_success: AtomicU32,
    last_failure: AtomicU32,
    consecutive_failures: AtomicU32,
    transient_failures: AtomicU32,
    in_flight: AtomicU32,
    /// Cool-downs since the last success.
    backoff_level: AtomicU16,
    /// Times a degraded slot came up for selection (it is taken on every n-th; wraps).
    degraded_turns: AtomicU16,
    state: AtomicU8,
    pub(super) dirty: AtomicBool,
}

/// The part of a slot that most keys never use.
#[derive(Default)]
struct Extras {
    /// The upstream's message (redacted) of the last failure.
    last_error: Mutex<Option<Arc<str>>>,
    /// Models this key may not serve before a deadline (per-model quotas ran out), and whether
    /// there are any: selection looks at the list only when the flag is set.
    model_rests: Mutex<Vec<(Arc<str>, u64)>>,
    has_model_rests: AtomicBool,
    /// The key's rate limits and their counters.
    limiter: ArcSwapOption<KeyLimiter>,
}

impl KeySlot {
    /// An active key with no history.
    pub fn new(id: KeyId, secret: ApiKey) -> Self {
        Self {
            id,
            secret,
            cool_until: AtomicU64::new(0),
            extras: OnceBox::new(),
            requests: AtomicU32::new(0),
            last_success: AtomicU32::new(0),
            last_failure: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            transient_failures: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            backoff_level: AtomicU16::new(0),
            degraded_turns: AtomicU16::new(0),
            state: AtomicU8::new(KeyState::Active.to_u8()),
            dirty: AtomicBool::new(false),
        }
    }

    /// The rarely used part, made on first use.
    fn extras(&self) -> &Extras {
        self.extras.get_or_init(Box::default)
    }

    /// `f` of the key's limiter; `None` for a key without limits.
    fn with_limiter<R>(&self, f: impl FnOnce(&KeyLimiter) -> R) -> Option<R> {
        self.extras.get()?.limiter.load().as_deref().map(f)
    }

    /// A key restored with a known state and failure count (for example from a database).
    pub fn with_state(id: KeyId, secret: ApiKey, state: KeyState, consecutive_failures: u32) -> Self {
        let slot = Self::new(id, secret);
        slot.state.store(state.to_u8(), Ordering::Relaxed);
        slot.consecutive_failures
            .store(consecutive_failures, Ordering::Relaxed);
        slot
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key itself.
    pub fn secret(&self) -> &ApiKey {
        &self.secret
    }

    /// The current state: an active key with counted failures reads as degraded, a cooling key
    /// whose rest is over (waiting for its probe) as active.
    pub fn state(&self) -> KeyState {
        match KeyState::from_u8(self.state.load(Ordering::Acquire)) {
            KeyState::Cooling if self.cool_until.load(Ordering::Relaxed) <= clock::now_ms() => {
                KeyState::Active
            }
            KeyState::Active if self.consecutive_failures() > 0 => KeyState::Degraded,
            state => state,
        }
    }

    /// Whether a request may use this key now (a pending key as a last resort). Reads the clock
    /// only for cooling keys.
    #[inline]
    pub fn is_usable(&self) -> bool {
        match KeyState::from_u8(self.state.load(Ordering::Acquire)) {
            KeyState::Active | KeyState::Degraded | KeyState::Pending => true,
            KeyState::Cooling => self.cool_until.load(Ordering::Relaxed) <= clock::now_ms(),
            KeyState::Invalid | KeyState::Disabled => false,
        }
    }

    /// Takes the key for one request for `model` if it may be used now: `Some(false)` for a
    /// usable key, `Some(true)` when this request is the probe of a cooling key whose rest is
    /// over (it holds the probe for [`PROBE_WINDOW`]), `None` otherwise. A degraded key is taken
    /// on one turn in `degraded_every` unless `lenient` (no better key was found). A pending key
    /// is taken whenever it is offered: the pool offers it only as a last resort.
    #[inline]
    pub(super) fn try_take(&self, degraded_every: u32, lenient: bool, model: Option<&str>) -> Option<bool> {
        if model.is_some_and(|m| self.is_resting_for(m)) {
            return None;
        }
        match KeyState::from_u8(self.state.load(Ordering::Acquire)) {
            KeyState::Active | KeyState::Degraded => {
                if lenient || degraded_every <= 1 || self.consecutive_failures.load(Ordering::Relaxed) == 0 {
                    return Some(false);
                }
                let turn = self.degraded_turns.fetch_add(1, Ordering::Relaxed);
                u32::from(turn).is_multiple_of(degraded_every).then_some(false)
            }
            KeyState::Cooling => {
                let until = self.cool_until.load(Ordering::Relaxed);
                let now = clock::now_ms();
                if until > now {
                    return None;
                }
                let window = now.saturating_add(PROBE_WINDOW.as_millis() as u64);
                self.cool_until
                    .compare_exchange(until, window, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                    .then_some(true)
            }
            KeyState::Pending => Some(false),
            KeyState::Invalid | KeyState::Disabled => None,
        }
    }

    /// Whether the key may serve `model` (no per-model rest for it, and usable).
    pub fn is_usable_for(&self, model: Option<&str>) -> bool {
        self.is_usable() && !model.is_some_and(|m| self.is_resting_for(m))
    }

    /// Whether `model` rests on this key (its per-model quota ran out); forgets rests that are
    /// over.
    #[inline]
    fn is_resting_for(&self, model: &str) -> bool {
        let Some(extras) = self.extras.get() else {
            return false;
        };
        if !extras.has_model_rests.load(Ordering::Acquire) {
            return false;
        }
        let now = clock::now_ms();
        let mut rests = lock(&extras.model_rests);
        rests.retain(|(_, until)| *until > now);
        if rests.is_empty() {
            extras.has_model_rests.store(false, Ordering::Release);
        }
        rests.iter().any(|(m, _)| &**m == model)
    }

    /// Rests `model` on this key until the clock reads `deadline`.
    pub(super) fn rest_model(&self, model: &str, deadline: u64) {
        let extras = self.extras();
        let mut rests = lock(&extras.model_rests);
        match rests.iter_mut().find(|(m, _)| &**m == model) {
            Some(rest) => rest.1 = deadline,
            None => rests.push((model.into(), deadline)),
        }
        extras.has_model_rests.store(true, Ordering::Release);
    }

    /// The models resting on this key and how long each still rests.
    pub fn model_rests(&self) -> Vec<(Arc<str>, Duration)> {
        let Some(extras) = self.extras.get() else {
            return Vec::new();
        };
        if !extras.has_model_rests.load(Ordering::Acquire) {
            return Vec::new();
        }
        lock(&extras.model_rests)
            .iter()
            .map(|(m, until)| (Arc::clone(m), clock::remaining(*until)))
            .filter(|(_, rest)| !rest.is_zero())
            .collect()
    }

    /// Forgets every per-model rest (the key was restored).
    pub(super) fn clear_model_rests(&self) {
        if let Some(extras) = self.extras.get()
            && extras.has_model_rests.swap(false, Ordering::AcqRel)
        {
            lock(&extras.model_rests).clear();
        }
    }

    /// How long a cooling key still rests.
    pub fn cooling_for(&self) -> Option<Duration> {
        (KeyState::from_u8(self.state.load(Ordering::Acquire)) == KeyState::Cooling)
            .then(|| clock::remaining(self.cool_until.load(Ordering::Relaxed)))
            .filter(|d| !d.is_zero())
    }

    /// The key's rate limits (none by default).
    pub fn limits(&self) -> KeyLimits {
        self.with_limiter(KeyLimiter::limits).unwrap_or_default()
    }

    /// The key's tokens-per-minute window, when it has a `tpm` limit.
    pub(crate) fn token_window(&self) -> Option<Arc<crate::limit::MinuteWindow>> {
        self.with_limiter(|limiter| limiter.token_window().cloned())?
    }

    /// Sets the key's rate limits (the pool does, from
    /// [`MemoryKeyPool::set_key_limits`](super::MemoryKeyPool::set_key_limits)). What was counted
    /// so far keeps counting under the new ones; removing every limit drops the counters.
    pub(super) fn set_limits(&self, limits: KeyLimits) {
        if limits.is_none() {
            // A store settles every reader's debt on the swap, which a group of a million keys
            // without limits would pay a million times per change of its membership; and a key
            // that never had limits keeps its extras unmade.
            if let Some(extras) = self.extras.get()
                && extras.limiter.load().is_some()
            {
                extras.limiter.store(None);
            }
            return;
        }
        let extras = self.extras();
        if let Some(limiter) = extras.limiter.load().as_ref() {
            limiter.set(limits);
        } else {
            extras.limiter.store(Some(Arc::new(KeyLimiter::new(limits))));
        }
    }

    /// The limit that would refuse a request on this key now, if any.
    pub fn limit_refusal(&self) -> Option<LimitRefusal> {
        self.with_limiter(|limiter| limiter.refusal(self.in_flight()))?
    }

    /// The share of the key's tightest limit still free, in thousandths: 1000 for a key without
    /// limits or with none used.
    pub fn headroom_per_mille(&self) -> u32 {
        self.with_limiter(|limiter| limiter.headroom_per_mille(self.in_flight()))
            .unwrap_or(1000)
    }

    /// Requests counted against the key's limits in the last minute and today (zero without
    /// limits).
    pub fn limit_usage(&self) -> (u64, u64) {
        self.with_limiter(KeyLimiter::used).unwrap_or((0, 0))
    }

    /// Takes one request from each of the key's limits, or none of them. `Ok(true)` when the
    /// request's in-flight count was raised here (a concurrency limit), so the request must not
    /// raise it again (see [`adopt_request`](Self::adopt_request)).
    pub(super) fn admit(&self) -> Result<bool, LimitRefusal> {
        self.with_limiter(|limiter| limiter.admit(&self.in_flight))
            .unwrap_or(Ok(false))
    }

    /// Undoes an [`admit`](Self::admit) whose request was not sent (a shared check refused it),
    /// and keeps the key out of selection as `refusal` says.
    pub(super) fn give_back(&self, held_in_flight: bool, refusal: LimitRefusal) {
        if held_in_flight {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        self.with_limiter(|limiter| limiter.give_back(refusal));
    }

    /// Gives a probe whose request was refused by a limit back, so the next request may probe.
    pub(super) fn reopen_probe(&self) {
        self.cool_until.fetch_min(clock::now_ms(), Ordering::AcqRel);
    }

    /// Counted failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// Transient provider failures (`5xx`, timeouts, broken connections) since the last success:
    /// evidence of trouble that never blacklists the key.
    pub fn transient_failures(&self) -> u32 {
        self.transient_failures.load(Ordering::Relaxed)
    }

    /// Requests using this key right now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The same slot resting `rest` more at backoff `level`: a cool-down restored from storage.
    /// An active (or pending) slot starts cooling; a zero rest only sets the level.
    #[must_use]
    pub fn with_rest(self, rest: Duration, backoff_level: u32) -> Self {
        self.backoff_level.store(
            backoff_level.min(MAX_BACKOFF_LEVEL.into()) as u16,
            Ordering::Relaxed,
        );
        if !rest.is_zero() && matches!(self.raw_state(), KeyState::Active | KeyState::Pending) {
            self.cool_until.store(clock::deadline_ms(rest), Ordering::Relaxed);
            self.state.store(KeyState::Cooling.to_u8(), Ordering::Relaxed);
        }
        self
    }

    /// The same slot with its history restored from storage: its last success, last failure and
    /// the message of that failure.
    #[must_use]
    pub fn with_history(
        self,
        last_success: Option<SystemTime>,
        last_failure: Option<SystemTime>,
        last_error: Option<Arc<str>>,
    ) -> Self {
        self.last_success
            .store(epoch_secs(last_success), Ordering::Relaxed);
        self.last_failure
            .store(epoch_secs(last_failure), Ordering::Relaxed);
        if let Some(message) = last_error {
            self.set_last_error(message);
        }
        self
    }

    /// Cool-downs since the last success; the next rest grows with it.
    pub fn backoff_level(&self) -> u32 {
        self.backoff_level.load(Ordering::Relaxed).into()
    }

    /// When the key last succeeded, if it ever did.
    pub fn last_success_at(&self) -> Option<SystemTime> {
        wall_time(self.last_success.load(Ordering::Relaxed))
    }

    /// When the key last failed (a counted failure, a cool-down or an invalidation), if it ever
    /// did.
    pub fn last_failure_at(&self) -> Option<SystemTime> {
        wall_time(self.last_failure.load(Ordering::Relaxed))
    }

    /// The upstream's message (redacted) of the key's last failure.
    pub fn last_error(&self) -> Option<Arc<str>> {
        lock(&self.extras.get()?.last_error).clone()
    }

    /// Records the upstream's message of a failure on this key (already redacted).
    pub fn set_last_error(&self, message: Arc<str>) {
        *lock(&self.extras().last_error) = Some(message);
    }

    pub(super) fn raw_state(&self) -> KeyState {
        KeyState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Sets the state; returns the previous raw state.
    pub(super) fn set_state(&self, state: KeyState) -> KeyState {
        KeyState::from_u8(self.state.swap(state.to_u8(), Ordering::AcqRel))
    }

    /// Moves from `from` to `to` if the slot is still in `from`.
    pub(super) fn transition(&self, from: KeyState, to: KeyState) -> bool {
        self.state
            .compare_exchange(from.to_u8(), to.to_u8(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub(super) fn set_cool_until(&self, deadline: u64) {
        self.cool_until.store(deadline, Ordering::Relaxed);
    }

    /// Raises the backoff level (up to [`MAX_BACKOFF_LEVEL`]); returns the level before.
    pub(super) fn add_backoff_level(&self) -> u32 {
        let before = self
            .backoff_level
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |level| {
                Some(level.saturating_add(1).min(MAX_BACKOFF_LEVEL))
            });
        before.unwrap_or_else(|level| level).into()
    }

    pub(super) fn mark_success(&self) {
        self.last_success
            .store(epoch_secs(Some(SystemTime::now())), Ordering::Relaxed);
        if self.backoff_level.load(Ordering::Relaxed) != 0 {
            self.backoff_level.store(0, Ordering::Relaxed);
        }
    }

    pub(super) fn mark_failure(&self) {
        self.last_failure
            .store(epoch_secs(Some(SystemTime::now())), Ordering::Relaxed);
    }

    pub(super) fn add_failure(&self) -> u32 {
        self.consecutive_failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1)
    }

    pub(super) fn add_transient_failure(&self) {
        self.transient_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Resets the failure counts; returns whether the counted one was non-zero.
    pub(super) fn reset_failures(&self) -> bool {
        if self.transient_failures.load(Ordering::Relaxed) != 0 {
            self.transient_failures.store(0, Ordering::Relaxed);
        }
        self.consecutive_failures.load(Ordering::Relaxed) != 0
            && self.consecutive_failures.swap(0, Ordering::AcqRel) != 0
    }

    pub(super) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn take_requests(&self) -> u64 {
        self.requests.swap(0, Ordering::AcqRel).into()
    }

    /// The guard of a request whose in-flight count [`admit`](Self::admit) already raised.
    pub(super) fn adopt_request(self: &std::sync::Arc<Self>) -> InFlight {
        InFlight(self.clone())
    }

    /// Marks one more request in flight on this key until the returned guard drops.
    pub fn begin_request(self: &std::sync::Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

impl crate::context::HoldsKey for KeySlot {
    fn secret(&self) -> &ApiKey {
        &self.secret
    }
}

impl fmt::Debug for KeySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySlot")
            .field("id", &self.id)
            .field("secret", &self.secret)
            .field("state", &self.state())
            .field("consecutive_failures", &self.consecutive_failures())
            .field("transient_failures", &self.transient_failures())
            .field("backoff_level", &self.backoff_level())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every value guarded here is whole after any single write: a poisoned lock is still sound.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whole seconds since the epoch (until 2106); 0 for none.
fn epoch_secs(time: Option<SystemTime>) -> u32 {
    time.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// The time `secs` seconds after the epoch; `None` for 0.
fn wall_time(secs: u32) -> Option<SystemTime> {
    (secs != 0).then(|| UNIX_EPOCH + Duration::from_secs(secs.into()))
}

/// Holds one in-flight request on a key; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight(std::sync::Arc<KeySlot>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl crate::body::OnBodyEnd for InFlight {
    fn on_body_end(self, _end: crate::body::BodyEnd) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_slot_stays_small() {
        // A pool of a million keys holds a million slots: every byte here is a megabyte there.
        assert_eq!(std::mem::size_of::<KeySlot>(), 72);
    }

    #[test]
    fn extras_are_made_only_for_keys_that_use_them() {
        let slot = KeySlot::new(KeyId(1), "sk-1".into())
            .with_history(Some(SystemTime::now()), None, None)
            .with_rest(Duration::ZERO, 2);
        slot.set_limits(KeyLimits::new());
        slot.clear_model_rests();
        assert!(!slot.is_resting_for("gpt-4o"));
        assert_eq!(
            (slot.limits(), slot.limit_usage(), slot.headroom_per_mille()),
            (KeyLimits::new(), (0, 0), 1000)
        );
        assert_eq!((slot.last_error(), slot.model_rests()), (None, Vec::new()));
        assert!(slot.extras.get().is_none());

        slot.set_last_error("quota exceeded".into());
        assert!(slot.extras.get().is_some());
        assert_eq!(slot.last_error().as_deref(), Some("quota exceeded"));
        slot.rest_model("gpt-4o", clock::deadline_ms(Duration::from_secs(60)));
        assert!(slot.is_resting_for("gpt-4o") && !slot.is_resting_for("gpt-4o-mini"));
        slot.clear_model_rests();
        assert!(!slot.is_resting_for("gpt-4o"));
    }

    #[test]
    fn times_are_kept_to_the_second_and_levels_saturate() {
        let at = UNIX_EPOCH + Duration::from_millis(1_764_000_000_750);
        let slot = KeySlot::new(KeyId(1), "sk-1".into())
            .with_history(Some(at), Some(at), None)
            .with_rest(Duration::ZERO, u32::MAX);
        let second = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        assert_eq!(
            (slot.last_success_at(), slot.last_failure_at()),
            (Some(second), Some(second))
        );
        assert_eq!(slot.backoff_level(), u32::from(MAX_BACKOFF_LEVEL));
        assert_eq!(slot.add_backoff_level(), u32::from(MAX_BACKOFF_LEVEL));
        assert_eq!(slot.backoff_level(), u32::from(MAX_BACKOFF_LEVEL));
    }
}
