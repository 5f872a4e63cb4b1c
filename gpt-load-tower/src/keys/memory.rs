use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use super::{
    ExcludedKeys, KeyEvents, KeyId, KeyLimits, KeyPool, KeySlot, KeyState, LimitRefusal, Report, SelectedKey,
    events::EventSender,
};
use crate::{clock, context::GroupName, group_map::GroupMap, telemetry};

/// Slots looked at from the cursor before the slow path (a full scan) is taken.
const PROBES: usize = 8;
/// A degraded key is taken on one turn in this many unless the group says otherwise.
const DEGRADED_EVERY: u32 = 4;

/// The lock-free in-memory key pool.
///
/// Per group it keeps an [`ArcSwap`] snapshot of the selectable slots (the *view*) and an atomic
/// cursor. [`select`](KeyPool::select) advances the cursor and returns the first usable slot not
/// excluded by the request, looking at no more than a few slots in the common case; it takes no
/// lock and allocates nothing. Blacklisted and disabled keys leave the view lazily: the view is
/// rebuilt once enough of it went stale, so a burst of blacklistings costs O(1) amortised.
/// Pending keys (not yet validated) wait in a list of their own, looked at only when the view
/// has no usable key, so a thousand new keys cost the happy path nothing.
///
/// Cloning shares the pool. See the [module docs](crate::keys) for an example.
#[derive(Clone, Default)]
pub struct MemoryKeyPool {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    groups: GroupMap<GroupKeys>,
    events: Option<EventSender>,
}

struct GroupKeys {
    name: GroupName,
    /// Every slot of the group, sorted by id.
    all: ArcSwap<Snapshot>,
    /// The slots that were active or cooling at the last rebuild.
    view: ArcSwap<Vec<Arc<KeySlot>>>,
    /// The slots that were pending at the last rebuild: the last resort.
    pending: ArcSwap<Vec<Arc<KeySlot>>>,
    /// Whether pending keys may serve when no other key can.
    pending_fallback: AtomicBool,
    cursor: AtomicUsize,
    /// View members that became invalid or disabled since the last rebuild.
    stale: AtomicUsize,
    /// When every key of the view was found cooling: no key is usable before this clock value.
    exhausted_until: AtomicU64,
    /// A degraded key is taken on one turn in this many.
    degraded_every: AtomicU32,
    /// The limits of the group's keys, and whether any key has some: selection takes requests
    /// from key limits only in a group that has them.
    key_limits: Mutex<LimitTable>,
    limited: AtomicBool,
    /// Serialises changes to `all` and `view`.
    write: Mutex<()>,
    rebuild_requested: AtomicBool,
    events: Option<EventSender>,
}

/// Every slot of a group, sorted by id so that a lookup is a binary search: a hash index cost
/// about 36 bytes a key more, a fifth of a slot. Shared with the view while every slot is in it.
#[derive(Default)]
struct Snapshot {
    slots: Arc<Vec<Arc<KeySlot>>>,
}

impl Snapshot {
    /// `slots` sorted by id; of several slots with one id, the first is kept.
    fn new(mut slots: Vec<Arc<KeySlot>>) -> Self {
        // Stable, and linear on the usual input: slots already in order with a run of new ones.
        slots.sort_by_key(|slot| slot.id());
        slots.dedup_by_key(|slot| slot.id());
        // Collected in place from the caller's `Vec<KeySlot>`, the vector keeps that allocation,
        // nine times the size it needs (75 MB for a million keys); grown by pushes, up to twice.
        slots.shrink_to_fit();
        Self {
            slots: Arc::new(slots),
        }
    }

    fn get(&self, id: KeyId) -> Option<&Arc<KeySlot>> {
        let at = self.slots.binary_search_by_key(&id, |slot| slot.id()).ok()?;
        Some(&self.slots[at])
    }
}

/// Counts of a group's keys by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupStats {
    /// All keys.
    pub total: usize,
    /// Usable keys without recent failures.
    pub active: usize,
    /// Usable keys with recent counted failures, selected less often.
    pub degraded: usize,
    /// Keys resting until a deadline.
    pub cooling: usize,
    /// Blacklisted keys.
    pub invalid: usize,
    /// Keys switched off by an operator.
    pub disabled: usize,
    /// Keys added and not yet validated.
    pub pending: usize,
    /// Requests using the group's keys right now.
    pub in_flight: u64,
    /// Usable keys that one of their limits keeps from serving now.
    pub at_limit: usize,
    /// Requests the group's keys with a per-minute limit may still take in this minute, summed.
    pub rpm_headroom: u64,
}

impl MemoryKeyPool {
    /// An empty pool that emits no events.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty pool, and the stream of [`KeyEvent`](super::KeyEvent)s describing its changes.
    pub fn with_events() -> (Self, KeyEvents) {
        let (tx, rx) = mpsc::unbounded_channel();
        let pool = Self {
            inner: Arc::new(Inner {
                events: Some(EventSender(tx)),
                ..Inner::default()
            }),
        };
        (pool, KeyEvents::new(rx))
    }

    fn group(&self, group: &str) -> Option<Arc<GroupKeys>> {
        self.inner.groups.get(group)
    }

    fn group_or_create(&self, group: &GroupName) -> Arc<GroupKeys> {
        if let Some(existing) = self.group(group.as_str()) {
            return existing;
        }
        let events = &self.inner.events;
        self.inner.groups.update(|groups| {
            groups
                .entry(group.clone())
                .or_insert_with(|| Arc::new(GroupKeys::new(group.clone(), events.clone())))
                .clone()
        })
    }

    /// Replaces the keys of `group` (creating it if needed). Slots whose id is already in the
    /// group keep their live state; new ones start in the state they carry.
    pub fn set_group(&self, group: GroupName, keys: impl IntoIterator<Item = KeySlot>) {
        let g = self.group_or_create(&group);
        let _write = lock(&g.write);
        let current = g.all.load();
        let slots = keys
            .into_iter()
            .map(|slot| match current.get(slot.id()) {
                Some(live) => live.clone(),
                None => Arc::new(slot),
            })
            .collect();
        g.replace(Snapshot::new(slots));
    }

    /// Adds keys to `group` (creating it if needed); ids already present are ignored. Returns how
    /// many were added.
    pub fn add_keys(&self, group: GroupName, keys: impl IntoIterator<Item = KeySlot>) -> usize {
        let g = self.group_or_create(&group);
        let _write = lock(&g.write);
        let current = g.all.load();
        let mut fresh: Vec<Arc<KeySlot>> = keys
            .into_iter()
            .filter(|slot| current.get(slot.id()).is_none())
            .map(Arc::new)
            .collect();
        fresh.sort_by_key(|slot| slot.id());
        fresh.dedup_by_key(|slot| slot.id());
        if fresh.is_empty() {
            return 0;
        }
        let added = fresh.len();
        // The exact size: the copy of a million-key group is not grown twice, then shrunk.
        let mut slots = Vec::with_capacity(current.slots.len() + added);
        slots.extend(current.slots.iter().cloned());
        slots.extend(fresh);
        g.replace(Snapshot::new(slots));
        added
    }

    /// Removes keys from `group`; returns how many were removed.
    pub fn remove_keys(&self, group: &str, ids: impl IntoIterator<Item = KeyId>) -> usize {
        let Some(g) = self.group(group) else { return 0 };
        let _write = lock(&g.write);
        let current = g.all.load();
        let remove: std::collections::HashSet<KeyId> = ids.into_iter().collect();
        let slots: Vec<_> = current
            .slots
            .iter()
            .filter(|s| !remove.contains(&s.id()))
            .cloned()
            .collect();
        let removed = current.slots.len() - slots.len();
        if removed > 0 {
            g.replace(Snapshot::new(slots));
        }
        removed
    }

    /// Moves the keys of `from` to the group `to` (a renamed group), keeping every slot with its
    /// live state; `to`'s former keys, if any, are replaced. Returns whether `from` existed.
    pub fn rename_group(&self, from: &str, to: GroupName) -> bool {
        if from == to.as_str() {
            return self.group(from).is_some();
        }
        let Some(old) = self.group(from) else { return false };
        let slots = {
            let _write = lock(&old.write);
            old.all.load().slots.to_vec()
        };
        let renamed = Arc::new(GroupKeys::new(to.clone(), self.inner.events.clone()));
        {
            let _write = lock(&renamed.write);
            renamed.replace(Snapshot::new(slots));
        }
        self.inner.groups.update(|groups| {
            groups.remove(from);
            groups.insert(to, renamed);
        });
        true
    }

    /// How often a degraded key of `group` (one with counted failures below the blacklist
    /// threshold) is selected, relative to a healthy one: `1.0` as often, `0.25` (the default)
    /// one turn in four. A degraded key is still taken whenever no healthy key is usable.
    pub fn set_degraded_weight(&self, group: &GroupName, weight: f64) {
        let every = if weight > 0.0 {
            (1.0 / weight.min(1.0)).round().clamp(1.0, 1000.0) as u32
        } else {
            1000
        };
        self.group_or_create(group)
            .degraded_every
            .store(every, Ordering::Relaxed);
    }

    /// Whether `group`'s pending keys (added, not yet validated) may serve a request when no
    /// other key can (the default), or wait for their validation.
    pub fn set_pending_fallback(&self, group: &GroupName, allowed: bool) {
        self.group_or_create(group)
            .pending_fallback
            .store(allowed, Ordering::Relaxed);
    }

    /// Sets the rate limits of every key of `group`, present and future (see [`KeyLimits`]).
    /// Selection passes over a key at one of its limits and, of two usable keys, takes the one
    /// with more headroom; when every usable key is at a limit the request is refused with
    /// [`limit_refusal`](KeyPool::limit_refusal)'s answer.
    pub fn set_key_limits(&self, group: &GroupName, limits: KeyLimits) {
        self.change_limits(group, |table| table.default = limits);
    }

    /// Gives one key of `group` limits of its own in place of the group's
    /// ([`set_key_limits`](Self::set_key_limits)); `None` returns it to the group's.
    pub fn set_limits_of(&self, group: &GroupName, id: KeyId, limits: Option<KeyLimits>) {
        self.change_limits(group, |table| match limits {
            Some(limits) => {
                table.own.insert(id, limits);
            }
            None => {
                table.own.remove(&id);
            }
        });
    }

    fn change_limits(&self, group: &GroupName, change: impl FnOnce(&mut LimitTable)) {
        let g = self.group_or_create(group);
        let _write = lock(&g.write);
        let mut table = lock_value(&g.key_limits);
        change(&mut table);
        table.apply(&g.all.load().slots);
        g.limited.store(table.any(), Ordering::Relaxed);
    }

    /// Removes a group and all its keys; returns whether it existed.
    pub fn remove_group(&self, group: &str) -> bool {
        self.group(group).is_some() && self.inner.groups.update(|groups| groups.remove(group).is_some())
    }

    /// Sets a key's state by hand (restore, enable, disable, invalidate). Making a key active
    /// also clears its failures and cool-down. Returns `false` when the key is unknown.
    pub fn set_state(&self, group: &str, id: KeyId, state: KeyState) -> bool {
        self.set_states(group, [(id, state)]) == 1
    }

    /// [`set_state`](Self::set_state) for many keys of one group, rebuilding the view once.
    /// Returns how many keys were found.
    pub fn set_states(&self, group: &str, changes: impl IntoIterator<Item = (KeyId, KeyState)>) -> usize {
        let Some(g) = self.group(group) else { return 0 };
        let _write = lock(&g.write);
        let all = g.all.load();
        let mut found = 0;
        for (id, state) in changes {
            let Some(slot) = all.get(id) else { continue };
            found += 1;
            if state == KeyState::Active {
                slot.reset_failures();
                slot.set_cool_until(0);
                slot.clear_model_rests();
            }
            let previous = slot.set_state(state);
            if previous != state {
                telemetry::key_state_changed(&g.name, state.as_str());
            }
            g.touch(slot);
        }
        g.rebuild_view(&all);
        found
    }

    /// The slot of one key.
    pub fn get(&self, group: &str, id: KeyId) -> Option<Arc<KeySlot>> {
        let g = self.group(group)?;
        let all = g.all.load();
        all.get(id).cloned()
    }

    /// Every slot of a group (a snapshot), in the order of their ids.
    pub fn keys(&self, group: &str) -> Vec<Arc<KeySlot>> {
        self.group(group)
            .map(|g| g.all.load().slots.to_vec())
            .unwrap_or_default()
    }

    /// The groups in the pool.
    pub fn groups(&self) -> Vec<GroupName> {
        self.inner.groups.load().keys().cloned().collect()
    }

    /// Counts a group's keys by state (walks every key).
    pub fn stats(&self, group: &str) -> Option<GroupStats> {
        let g = self.group(group)?;
        let all = g.all.load();
        let mut stats = GroupStats {
            total: all.slots.len(),
            ..GroupStats::default()
        };
        let limited = g.limited.load(Ordering::Relaxed);
        for slot in all.slots.iter() {
            stats.in_flight += u64::from(slot.in_flight());
            if limited {
                let limits = slot.limits();
                if limits.rpm > 0 {
                    stats.rpm_headroom += u64::from(limits.rpm).saturating_sub(slot.limit_usage().0);
                }
                if slot.is_usable() && slot.limit_refusal().is_some() {
                    stats.at_limit += 1;
                }
            }
            match slot.state() {
                KeyState::Active => stats.active += 1,
                KeyState::Degraded => stats.degraded += 1,
                KeyState::Cooling => stats.cooling += 1,
                KeyState::Invalid => stats.invalid += 1,
                KeyState::Disabled => stats.disabled += 1,
                KeyState::Pending => stats.pending += 1,
            }
        }
        Some(stats)
    }
}

impl KeyPool for MemoryKeyPool {
    fn select(&self, group: &str, excluded: &ExcludedKeys) -> Option<SelectedKey> {
        self.select_for(group, excluded, None)
    }

    fn has_candidate(&self, group: &str, excluded: &ExcludedKeys) -> bool {
        self.has_candidate_for(group, excluded, None)
    }

    fn select_for(&self, group: &str, excluded: &ExcludedKeys, model: Option<&str>) -> Option<SelectedKey> {
        // Borrow through the ArcSwap guard: no reference-count traffic on the group per call.
        let groups = self.inner.groups.load();
        let g = groups.get(group)?;
        let Found {
            slot,
            probe,
            holds_in_flight,
        } = g.find(excluded, true, model)?;
        slot.count_request();
        g.touch(&slot);
        let key = if probe {
            telemetry::key_probe(&g.name);
            SelectedKey::probe(g.name.clone(), slot)
        } else {
            SelectedKey::new(g.name.clone(), slot)
        };
        Some(if holds_in_flight {
            key.holding_in_flight()
        } else {
            key
        })
    }

    fn has_candidate_for(&self, group: &str, excluded: &ExcludedKeys, model: Option<&str>) -> bool {
        self.inner
            .groups
            .load()
            .get(group)
            .is_some_and(|g| g.find(excluded, false, model).is_some())
    }

    fn report(&self, key: &SelectedKey, report: Report) {
        if let Some(g) = self.inner.groups.load().get(key.group().as_str()) {
            g.report(key, report);
        }
    }

    fn limit_refusal(
        &self,
        group: &str,
        excluded: &ExcludedKeys,
        model: Option<&str>,
    ) -> Option<LimitRefusal> {
        self.inner
            .groups
            .load()
            .get(group)?
            .limit_refusal(excluded, model)
    }

    fn refused_shared(&self, key: &SelectedKey, refusal: LimitRefusal) {
        key.slot().give_back(key.holds_in_flight(), refusal);
    }

    fn rest_model(&self, key: &SelectedKey, model: &str, duration: Duration) {
        if let Some(g) = self.inner.groups.load().get(key.group().as_str()) {
            let slot = key.slot();
            slot.mark_failure();
            slot.rest_model(model, clock::deadline_ms(duration));
            g.touch(slot);
        }
    }
}

impl GroupKeys {
    fn new(name: GroupName, events: Option<EventSender>) -> Self {
        Self {
            name,
            all: ArcSwap::from_pointee(Snapshot::default()),
            view: ArcSwap::from_pointee(Vec::new()),
            pending: ArcSwap::from_pointee(Vec::new()),
            pending_fallback: AtomicBool::new(true),
            cursor: AtomicUsize::new(0),
            stale: AtomicUsize::new(0),
            exhausted_until: AtomicU64::new(0),
            degraded_every: AtomicU32::new(DEGRADED_EVERY),
            key_limits: Mutex::new(LimitTable::default()),
            limited: AtomicBool::new(false),
            write: Mutex::new(()),
            rebuild_requested: AtomicBool::new(false),
            events,
        }
    }

    /// Installs a new membership and rebuilds the view. Caller holds `write`.
    fn replace(&self, snapshot: Snapshot) {
        lock_value(&self.key_limits).apply(&snapshot.slots);
        let snapshot = Arc::new(snapshot);
        self.all.store(snapshot.clone());
        self.rebuild_view(&snapshot);
    }

    /// Rebuilds the view from `all`. Caller holds `write`.
    fn rebuild_view(&self, all: &Snapshot) {
        // Reset first: a slot leaving the view during the scan is then counted again.
        self.stale.store(0, Ordering::Release);
        self.rebuild_requested.store(false, Ordering::Release);
        let (view, pending) = if all.slots.iter().all(|slot| slot.raw_state().in_view()) {
            // Every key in the view (the usual case): one vector serves as both.
            (Arc::clone(&all.slots), Arc::default())
        } else {
            let (mut view, mut pending) = (Vec::new(), Vec::new());
            for slot in all.slots.iter() {
                match slot.raw_state() {
                    KeyState::Pending => pending.push(slot.clone()),
                    state if state.in_view() => view.push(slot.clone()),
                    _ => {}
                }
            }
            // Grown by pushes: up to twice the slots, for as long as the view lives.
            view.shrink_to_fit();
            pending.shrink_to_fit();
            (Arc::new(view), Arc::new(pending))
        };
        self.view.store(view);
        self.pending.store(pending);
        self.exhausted_until.store(0, Ordering::Release);
    }

    /// Rebuilds the view if one was requested and nobody else is changing the group.
    fn rebuild_if_requested(&self) {
        if !self.rebuild_requested.load(Ordering::Acquire) {
            return;
        }
        if let Ok(_write) = self.write.try_lock() {
            let all = self.all.load();
            self.rebuild_view(&all);
        }
    }

    /// Finds a key for a request. Without `advance` (a look, not a selection) nothing is taken.
    fn find(&self, excluded: &ExcludedKeys, advance: bool, model: Option<&str>) -> Option<Found> {
        let limited = self.limited.load(Ordering::Relaxed);
        let exhausted = self.exhausted_until.load(Ordering::Acquire);
        if exhausted != 0 && excluded.is_empty() && clock::now_ms() < exhausted {
            return None;
        }
        self.rebuild_if_requested();
        let view = self.view.load();
        let len = view.len();
        if len == 0 {
            return self.find_pending(excluded, advance, model);
        }
        let start = self.start(advance, len);
        let degraded_every = self.degraded_every.load(Ordering::Relaxed);
        let take = |slot: &Arc<KeySlot>, lenient: bool| {
            if excluded.contains(slot.id()) {
                None
            } else if advance {
                let probe = slot.try_take(degraded_every, lenient, model)?;
                admit(slot, probe, limited)
            } else {
                (slot.is_usable_for(model) && !(limited && slot.limit_refusal().is_some())).then(|| Found {
                    slot: slot.clone(),
                    probe: false,
                    holds_in_flight: false,
                })
            }
        };
        if limited && advance {
            // Of the first two usable keys from the cursor, the one with more headroom left:
            // load spreads by what is left, not by turns alone.
            let mut best: Option<(&Arc<KeySlot>, u32)> = None;
            let mut looked = 0;
            for offset in 0..len.min(PROBES) {
                let slot = &view[(start + offset) % len];
                if excluded.contains(slot.id()) || !slot.is_usable_for(model) {
                    continue;
                }
                let headroom = slot.headroom_per_mille();
                if best.is_none_or(|(_, most)| headroom > most) {
                    best = Some((slot, headroom));
                }
                looked += 1;
                if looked == 2 {
                    break;
                }
            }
            if let Some((slot, _)) = best
                && let Some(found) = take(slot, false)
            {
                return Some(found);
            }
        }
        for offset in 0..len.min(PROBES) {
            if let Some(found) = take(&view[(start + offset) % len], false) {
                return Some(found);
            }
        }
        // Slow path: the probes met only unusable, excluded, limited or degraded keys.
        if self.stale.load(Ordering::Acquire) > 0 {
            self.rebuild_requested.store(true, Ordering::Release);
        }
        for offset in PROBES.min(len)..len {
            if let Some(found) = take(&view[(start + offset) % len], false) {
                return Some(found);
            }
        }
        // No healthy key: a degraded one is better than none.
        for offset in 0..len {
            if let Some(found) = take(&view[(start + offset) % len], true) {
                return Some(found);
            }
        }
        if let Some(found) = self.find_pending(excluded, advance, model) {
            return Some(found);
        }
        // Every key rests: no selection before the first rest ends. Not when limits may be what
        // refused the keys, which free up on their own schedule.
        if excluded.is_empty() && !limited && self.pending.load().is_empty() {
            let mut earliest_cool_end = u64::MAX;
            for slot in view.iter() {
                if let Some(rest) = slot.cooling_for() {
                    earliest_cool_end = earliest_cool_end.min(clock::deadline_ms(rest));
                }
            }
            if earliest_cool_end != u64::MAX {
                self.exhausted_until.store(earliest_cool_end, Ordering::Release);
            }
        }
        None
    }

    /// Where a scan of `len` slots starts: the cursor, moved on by a selection (`advance`).
    fn start(&self, advance: bool, len: usize) -> usize {
        let cursor = if advance {
            self.cursor.fetch_add(1, Ordering::Relaxed)
        } else {
            self.cursor.load(Ordering::Relaxed)
        };
        cursor % len
    }

    /// The last resort: a pending key, when the group lets them serve. Scans the list from the
    /// cursor; a group rarely has pending keys and no usable one for long.
    fn find_pending(&self, excluded: &ExcludedKeys, advance: bool, model: Option<&str>) -> Option<Found> {
        if !self.pending_fallback.load(Ordering::Relaxed) {
            return None;
        }
        let pending = self.pending.load();
        let len = pending.len();
        if len == 0 {
            return None;
        }
        let limited = self.limited.load(Ordering::Relaxed);
        let start = self.start(advance, len);
        (0..len)
            .map(|offset| &pending[(start + offset) % len])
            .filter(|slot| {
                !excluded.contains(slot.id())
                    && slot.raw_state() == KeyState::Pending
                    && slot.is_usable_for(model)
            })
            .find_map(|slot| {
                if advance {
                    admit(slot, false, limited)
                } else {
                    (!(limited && slot.limit_refusal().is_some())).then(|| Found {
                        slot: slot.clone(),
                        probe: false,
                        holds_in_flight: false,
                    })
                }
            })
    }

    /// After a failed selection: the limit that frees a usable key soonest, when every usable
    /// key that is not excluded is at one of its limits.
    fn limit_refusal(&self, excluded: &ExcludedKeys, model: Option<&str>) -> Option<LimitRefusal> {
        if !self.limited.load(Ordering::Relaxed) {
            return None;
        }
        let view = self.view.load();
        let pending = self.pending.load();
        let pending = if self.pending_fallback.load(Ordering::Relaxed) {
            &pending[..]
        } else {
            &[]
        };
        let mut soonest: Option<LimitRefusal> = None;
        for slot in view.iter().chain(pending) {
            if excluded.contains(slot.id()) || !slot.is_usable_for(model) {
                continue;
            }
            // A usable key under its limits: something else kept it from this request.
            let refusal = slot.limit_refusal()?;
            if soonest.is_none_or(|s| refusal.retry_after < s.retry_after) {
                soonest = Some(refusal);
            }
        }
        soonest
    }

    fn report(&self, key: &SelectedKey, report: Report) {
        let slot = key.slot();
        // A pending key that answered anything but a key error proved it works: it joins the
        // view (a rate limit then cools it, below). A plain load first: no compare-and-swap on
        // an active key's success.
        if slot.raw_state() == KeyState::Pending
            && !matches!(
                report,
                Report::Failure { .. } | Report::Invalidate | Report::Disable | Report::Transient
            )
            && slot.transition(KeyState::Pending, KeyState::Active)
        {
            telemetry::key_state_changed(&self.name, KeyState::Active.as_str());
            self.rebuild_requested.store(true, Ordering::Release);
            self.touch(slot);
        }
        // A probe that got any answer but a rate limit ends the rest; the report then applies
        // to an active key. Reports of requests that started before the rest leave it alone.
        if key.is_probe()
            && !matches!(report, Report::CoolDown { .. })
            && slot.transition(KeyState::Cooling, KeyState::Active)
        {
            telemetry::key_state_changed(&self.name, KeyState::Active.as_str());
            self.touch(slot);
        }
        match report {
            Report::Success => {
                if slot.raw_state() != KeyState::Cooling {
                    slot.mark_success();
                }
                if slot.reset_failures() {
                    self.touch(slot);
                }
            }
            Report::Failure { blacklist_threshold } => {
                slot.mark_failure();
                let failures = slot.add_failure();
                if blacklist_threshold > 0 && failures >= blacklist_threshold {
                    self.leave_view(slot, KeyState::Invalid);
                }
                self.touch(slot);
            }
            Report::CoolDown { duration } => {
                slot.mark_failure();
                slot.add_backoff_level();
                let deadline = clock::deadline_ms(duration);
                // "No key before T" must not outlast a key that now rests for less (0 = unset).
                self.exhausted_until.fetch_min(deadline, Ordering::AcqRel);
                // A key already cooling gets the new deadline; an active one starts cooling.
                slot.set_cool_until(deadline);
                if slot.transition(KeyState::Active, KeyState::Cooling) {
                    telemetry::key_state_changed(&self.name, KeyState::Cooling.as_str());
                }
                self.touch(slot);
            }
            Report::Invalidate => {
                slot.mark_failure();
                self.leave_view(slot, KeyState::Invalid);
                self.touch(slot);
            }
            Report::Disable => {
                slot.mark_failure();
                self.leave_view(slot, KeyState::Disabled);
                self.touch(slot);
            }
            Report::Transient => slot.add_transient_failure(),
            Report::Answered => {}
        }
    }

    /// Moves a selectable slot to `state`, counting it as stale in the view.
    fn leave_view(&self, slot: &KeySlot, state: KeyState) {
        if slot.transition(KeyState::Pending, state) {
            telemetry::key_state_changed(&self.name, state.as_str());
            self.rebuild_requested.store(true, Ordering::Release);
            return;
        }
        for from in [KeyState::Active, KeyState::Cooling] {
            if slot.transition(from, state) {
                telemetry::key_state_changed(&self.name, state.as_str());
                let stale = self.stale.fetch_add(1, Ordering::AcqRel) + 1;
                // Rebuild once a quarter of the view is dead: O(1) amortised per blacklisting.
                if stale * 4 >= self.view.load().len() {
                    self.rebuild_requested.store(true, Ordering::Release);
                }
                return;
            }
        }
    }

    /// Queues a change event for `slot` unless one is already queued.
    fn touch(&self, slot: &Arc<KeySlot>) {
        if let Some(events) = &self.events
            && !slot.dirty.load(Ordering::Relaxed)
            && !slot.dirty.swap(true, Ordering::AcqRel)
        {
            events.send(self.name.clone(), slot.clone());
        }
    }
}

/// The limits of a group's keys: the group's, and those of keys with their own.
#[derive(Default)]
struct LimitTable {
    default: KeyLimits,
    own: HashMap<KeyId, KeyLimits>,
}

impl LimitTable {
    fn apply(&self, slots: &[Arc<KeySlot>]) {
        for slot in slots {
            slot.set_limits(self.own.get(&slot.id()).copied().unwrap_or(self.default));
        }
    }

    fn any(&self) -> bool {
        !self.default.is_none() || self.own.values().any(|limits| !limits.is_none())
    }
}

/// A key found for a request.
struct Found {
    slot: Arc<KeySlot>,
    /// The request probes a cooling key whose rest is over.
    probe: bool,
    /// The key's concurrency limit counted the request in flight already.
    holds_in_flight: bool,
}

/// Takes the request from the limits of a key that may serve it (`probe`: as the probe of its
/// rest). A key at a limit is passed over; a probe it had granted goes to the next request.
fn admit(slot: &Arc<KeySlot>, probe: bool, limited: bool) -> Option<Found> {
    let holds_in_flight = if limited {
        match slot.admit() {
            Ok(held) => held,
            Err(_) => {
                if probe {
                    slot.reopen_probe();
                }
                return None;
            }
        }
    } else {
        false
    };
    Some(Found {
        slot: slot.clone(),
        probe,
        holds_in_flight,
    })
}

fn lock_value<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A plain value replaced whole: a panic elsewhere cannot leave it half-written.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock(mutex: &Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
    // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl fmt::Debug for MemoryKeyPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups = self.inner.groups.load();
        let mut map = f.debug_map();
        for (name, g) in groups.iter() {
            map.entry(name, &g.all.load().slots.len());
        }
        map.finish()
    }
}
