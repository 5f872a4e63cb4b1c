use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::mpsc;

use super::{KeyId, KeySlot, KeyState};
use crate::context::GroupName;

#[derive(Clone)]
pub(super) struct EventSender(pub(super) mpsc::UnboundedSender<(GroupName, Arc<KeySlot>)>);

impl EventSender {
    pub(super) fn send(&self, group: GroupName, slot: Arc<KeySlot>) {
        // A closed receiver means nobody persists events any more; the pool keeps working.
        let _ = self.0.send((group, slot));
    }
}

/// A change to one key: its state, counters and usage as of the moment the event is received.
///
/// Events are coalesced per key: however often a key changes before its event is read, one
/// event carries its latest values, so the queue never holds more entries than there are keys
/// and nothing is lost when the consumer is slow.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyEvent {
    /// The key's group.
    pub group: GroupName,
    /// The key.
    pub key: KeyId,
    /// Its state now.
    pub state: KeyState,
    /// Counted failures since its last success.
    pub consecutive_failures: u32,
    /// How long it still cools down, when cooling.
    pub cooling_for: Option<Duration>,
    /// Cool-downs since its last success.
    pub backoff_level: u32,
    /// When it last succeeded.
    pub last_success_at: Option<SystemTime>,
    /// When it last failed.
    pub last_failure_at: Option<SystemTime>,
    /// The upstream's message (redacted) of its last failure.
    pub last_error: Option<Arc<str>>,
    /// Requests that selected it since the previous event.
    pub requests: u64,
}

/// The receiving end of a [`MemoryKeyPool`](super::MemoryKeyPool)'s events.
#[derive(Debug)]
pub struct KeyEvents {
    rx: mpsc::UnboundedReceiver<(GroupName, Arc<KeySlot>)>,
}

impl KeyEvents {
    pub(super) fn new(rx: mpsc::UnboundedReceiver<(GroupName, Arc<KeySlot>)>) -> Self {
        Self { rx }
    }

    /// Waits for the next change; `None` once the pool is dropped.
    pub async fn recv(&mut self) -> Option<KeyEvent> {
        self.rx.recv().await.map(|(group, slot)| snapshot(group, &slot))
    }

    /// The next change if one is queued.
    pub fn try_recv(&mut self) -> Option<KeyEvent> {
        self.rx
            .try_recv()
            .ok()
            .map(|(group, slot)| snapshot(group, &slot))
    }

    /// Waits for at least one change and returns up to `max` of them (for batched writes).
    /// Empty once the pool is dropped.
    pub async fn recv_batch(&mut self, max: usize) -> Vec<KeyEvent> {
        let mut raw = Vec::with_capacity(max.min(1024));
        self.rx.recv_many(&mut raw, max.max(1)).await;
        raw.into_iter()
            .map(|(group, slot)| snapshot(group, &slot))
            .collect()
    }
}

fn snapshot(group: GroupName, slot: &KeySlot) -> KeyEvent {
    // Clear first: a change made while reading marks the slot again and queues another event.
    slot.dirty.store(false, std::sync::atomic::Ordering::Release);
    KeyEvent {
        group,
        key: slot.id(),
        state: slot.state(),
        consecutive_failures: slot.consecutive_failures(),
        cooling_for: slot.cooling_for(),
        backoff_level: slot.backoff_level(),
        last_success_at: slot.last_success_at(),
        last_failure_at: slot.last_failure_at(),
        last_error: slot.last_error(),
        requests: slot.take_requests(),
    }
}
