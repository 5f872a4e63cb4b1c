//! A counter per UTC calendar day, for requests per day.

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use crate::clock;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Counts what was admitted since the last UTC midnight and admits more only within a limit.
///
/// A fixed window, unlike [`MinuteWindow`](super::MinuteWindow): providers count their daily
/// quotas per calendar day, and a sliding day at useful resolution would cost kilobytes per key.
/// One atomic word (the day and its count); every admission is one compare-and-swap.
///
/// ```
/// use gpt_load_tower::limit::DayWindow;
///
/// let rpd = DayWindow::new();
/// assert!(rpd.try_acquire(1, 1).is_ok());
/// let wait = rpd.try_acquire(1, 1).unwrap_err();
/// assert!(wait.as_secs() <= 24 * 60 * 60, "until the next UTC midnight");
/// ```
pub struct DayWindow {
    /// The day number since 1970 (high 32 bits) and its count (low 32 bits).
    word: AtomicU64,
}

fn today() -> u64 {
    clock::wall_ms() / DAY_MS
}

/// The time left until the next UTC midnight.
fn until_midnight() -> Duration {
    let now = clock::wall_ms();
    Duration::from_millis((now / DAY_MS + 1) * DAY_MS - now)
}

fn unpack(word: u64) -> (u64, u64) {
    (word >> 32, word & u64::from(u32::MAX))
}

fn pack(day: u64, count: u64) -> u64 {
    (day << 32) | count.min(u64::from(u32::MAX))
}

impl DayWindow {
    /// An empty counter.
    pub const fn new() -> Self {
        Self {
            word: AtomicU64::new(0),
        }
    }

    /// What was admitted today (UTC).
    pub fn used(&self) -> u64 {
        let (day, count) = unpack(self.word.load(Ordering::Acquire));
        if day == today() { count } else { 0 }
    }

    /// How much more `limit` admits today.
    pub fn headroom(&self, limit: u64) -> u64 {
        limit.saturating_sub(self.used())
    }

    /// How long until `limit` has room for `amount` more today or on a later day, without
    /// taking it: `None` when it has room now.
    pub fn retry_after(&self, amount: u64, limit: u64) -> Option<Duration> {
        (self.used() + amount > limit).then(until_midnight)
    }

    /// Admits `amount` if today's total plus `amount` stays within `limit`; otherwise answers
    /// how long until the next UTC midnight.
    pub fn try_acquire(&self, amount: u64, limit: u64) -> Result<(), Duration> {
        let now = today();
        self.word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let (day, count) = unpack(word);
                let used = if day == now { count } else { 0 };
                (used + amount <= limit).then(|| pack(now, used + amount))
            })
            .map(drop)
            .map_err(|_| until_midnight())
    }

    /// Gives back up to `amount` admitted today and not used after all.
    pub fn release(&self, amount: u64) {
        let now = today();
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let (day, count) = unpack(word);
                (day == now && count > 0).then(|| pack(day, count.saturating_sub(amount)))
            });
    }
}

impl Default for DayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for DayWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DayWindow").field("used", &self.used()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::advance;

    #[test]
    fn counts_until_the_next_utc_midnight() {
        let day = DayWindow::new();
        day.try_acquire(2, 2).unwrap();
        let wait = day.try_acquire(1, 2).unwrap_err();
        assert_eq!(day.retry_after(1, 2), Some(wait));
        assert!(wait <= Duration::from_millis(DAY_MS) && !wait.is_zero());
        advance(wait);
        assert_eq!(day.used(), 0, "a new day");
        day.try_acquire(2, 2).unwrap();
        day.release(1);
        assert_eq!(day.headroom(2), 1);
    }
}
