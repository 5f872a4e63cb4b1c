//! A sliding one-minute window at one-second resolution, for requests or tokens per minute.

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use crate::clock;

/// Seconds in the window, one bucket each.
const SECONDS: u64 = 60;

/// Counts what was admitted in the last minute and admits more only within a limit.
///
/// The minute slides by whole seconds: an admission counts until the same second of the next
/// minute begins, so at most `limit` is admitted in any 60 consecutive seconds of the clock
/// (a request at 10:00:00.900 leaves the window at 10:01:00.000).
///
/// Lock-free and exact: one atomic word holds the current second and its total, and every
/// admission is one compare-and-swap on it, so two callers can never both take the last unit.
/// When a new second begins, the caller that moves the word on first records the finished
/// second in one of 60 buckets (by `fetch_max`, so a slower caller can never write an older
/// total over it); a bucket is read only once the word has left its second, when it can no longer
/// change. No allocation after [`new`](Self::new); 488 bytes per window.
///
/// # Example
///
/// ```
/// use gpt_load_tower::limit::MinuteWindow;
///
/// let rpm = MinuteWindow::new();
/// for _ in 0..3 {
///     assert!(rpm.try_acquire(1, 3).is_ok());
/// }
/// let wait = rpm.try_acquire(1, 3).unwrap_err();
/// assert!(wait.as_secs() <= 60, "the first request leaves the window within a minute");
/// assert_eq!(rpm.used(), 3);
/// ```
pub struct MinuteWindow {
    /// The current second (high 32 bits) and its total (low 32 bits).
    head: AtomicU64,
    /// Bucket `s % 60` holds finished second `s` and its total, packed like `head`.
    done: [AtomicU64; SECONDS as usize],
}

fn pack(second: u64, count: u64) -> u64 {
    (second << 32) | count.min(u64::from(u32::MAX))
}

fn unpack(word: u64) -> (u64, u64) {
    (word >> 32, word & u64::from(u32::MAX))
}

impl MinuteWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self {
            head: AtomicU64::new(0),
            done: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// The current second of the window's clock (never 0, so an empty word counts nothing).
    fn second() -> u64 {
        clock::now_ms() / 1000 + 1
    }

    /// Each second of the minute ending at `now` that counted something, and its total, oldest
    /// first, given the `head` word read last.
    fn seconds(&self, now: u64, head: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let (current, count) = unpack(head);
        let oldest = now.saturating_sub(SECONDS - 1);
        // Seconds before the head's are finished; the head's own total is in the word.
        let finished = (oldest..now.min(current)).filter_map(move |second| {
            let (stamp, count) = unpack(self.done[(second % SECONDS) as usize].load(Ordering::Acquire));
            (stamp == second && count > 0).then_some((second, count))
        });
        let head = (current >= oldest && count > 0).then_some((current, count));
        finished.chain(head)
    }

    /// What was admitted in the last minute.
    pub fn used(&self) -> u64 {
        let head = self.head.load(Ordering::Acquire);
        self.seconds(Self::second(), head).map(|(_, count)| count).sum()
    }

    /// How much more `limit` admits now.
    pub fn headroom(&self, limit: u64) -> u64 {
        limit.saturating_sub(self.used())
    }

    /// How long until `limit` has room for `amount` more, without taking it: `None` when it has
    /// room now.
    pub fn retry_after(&self, amount: u64, limit: u64) -> Option<Duration> {
        if amount > limit {
            return Some(Duration::from_secs(SECONDS));
        }
        let now = Self::second();
        let head = self.head.load(Ordering::Acquire);
        let used: u64 = self.seconds(now, head).map(|(_, count)| count).sum();
        (used + amount > limit).then(|| self.wait(now, head, used + amount - limit))
    }

    /// Admits `amount` if the last minute's total plus `amount` stays within `limit`; otherwise
    /// answers how long until enough of it has left the window (a full minute when `amount`
    /// alone is over `limit`).
    pub fn try_acquire(&self, amount: u64, limit: u64) -> Result<(), Duration> {
        if amount > limit {
            return Err(Duration::from_secs(SECONDS));
        }
        self.update(amount, |now, head| {
            let used: u64 = self.seconds(now, head).map(|(_, count)| count).sum();
            if used + amount > limit {
                Err(self.wait(now, head, used + amount - limit))
            } else {
                Ok(())
            }
        })
    }

    /// Adds `amount` whatever the limit (usage settled after the fact, for tokens per minute).
    pub fn add(&self, amount: u64) {
        let _ = self.update(amount, |_, _| Ok(()));
    }

    /// Gives back up to `amount` admitted moments ago (an admission that was not used after all),
    /// taken from the latest second that counted. Exact when that second is the one of the
    /// admission; otherwise the window may admit slightly more until that second leaves it.
    pub fn release(&self, amount: u64) {
        let _ = self
            .head
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |head| {
                let (second, count) = unpack(head);
                (count > 0).then(|| pack(second, count.saturating_sub(amount)))
            });
    }

    /// Adds `amount` to the current second once `admit` allows it, moving the word on to a new
    /// second (and recording the finished one) when one has begun.
    fn update(&self, amount: u64, admit: impl Fn(u64, u64) -> Result<(), Duration>) -> Result<(), Duration> {
        loop {
            let now = Self::second();
            let head = self.head.load(Ordering::Acquire);
            admit(now, head)?;
            let (current, count) = unpack(head);
            let next = if current >= now {
                pack(current, count + amount)
            } else {
                // Recorded before the word leaves the second, so readers never miss it.
                self.done[(current % SECONDS) as usize].fetch_max(head, Ordering::AcqRel);
                pack(now, amount)
            };
            if self
                .head
                .compare_exchange(head, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Ok(());
            }
        }
    }

    /// How long from now until the oldest seconds holding at least `excess` leave the window.
    fn wait(&self, now: u64, head: u64, excess: u64) -> Duration {
        let mut freed = 0;
        for (second, count) in self.seconds(now, head) {
            freed += count;
            if freed >= excess {
                // Second `s` (clock milliseconds `(s - 1) * 1000 ..`) leaves when `s + 60` begins.
                let leaves_ms = (second + SECONDS - 1) * 1000;
                return Duration::from_millis(leaves_ms.saturating_sub(clock::now_ms()).max(1));
            }
        }
        Duration::from_secs(SECONDS)
    }
}

impl Default for MinuteWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MinuteWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MinuteWindow")
            .field("used", &self.used())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, thread};

    use super::*;
    use crate::clock::advance;

    #[test]
    fn a_limit_is_never_passed_within_any_minute() {
        let window = MinuteWindow::new();
        for _ in 0..3 {
            window.try_acquire(1, 3).unwrap();
        }
        assert!(window.try_acquire(1, 3).is_err());
        // 59 seconds on, the three are still in the window.
        advance(Duration::from_secs(59));
        assert!(window.try_acquire(1, 3).is_err());
        assert_eq!(window.headroom(3), 0);
        // A minute after they were admitted, they have left it.
        advance(Duration::from_secs(1));
        assert_eq!(window.used(), 0);
        window.try_acquire(1, 3).unwrap();
        assert_eq!(window.headroom(3), 2);
    }

    #[test]
    fn the_wait_is_until_the_oldest_admissions_leave() {
        let window = MinuteWindow::new();
        window.try_acquire(2, 3).unwrap();
        advance(Duration::from_secs(20));
        window.try_acquire(1, 3).unwrap();
        let wait = window.try_acquire(1, 3).unwrap_err();
        assert_eq!(
            window.retry_after(1, 3),
            Some(wait),
            "the same answer without taking"
        );
        assert_eq!(window.retry_after(0, 3), None);
        // The first two leave 40 seconds from now (within the second they were admitted in).
        assert!(
            wait <= Duration::from_secs(40) && wait > Duration::from_secs(38),
            "{wait:?}"
        );
        // Room for 2 more needs the first two gone too; for 3, the third as well.
        advance(wait);
        window.try_acquire(2, 3).unwrap();
        let wait = window.try_acquire(1, 3).unwrap_err();
        assert!(
            wait <= Duration::from_secs(20) && wait > Duration::from_secs(18),
            "{wait:?}"
        );
        assert_eq!(
            window.try_acquire(4, 3),
            Err(Duration::from_secs(60)),
            "never fits"
        );
    }

    #[test]
    fn settled_amounts_count_against_the_limit() {
        let window = MinuteWindow::new();
        window.try_acquire(100, 1_000).unwrap();
        window.add(950);
        assert_eq!(window.used(), 1_050);
        assert!(window.try_acquire(1, 1_000).is_err());
        advance(Duration::from_secs(60));
        assert_eq!(window.headroom(1_000), 1_000);
    }

    #[test]
    fn a_released_admission_frees_its_room() {
        let window = MinuteWindow::new();
        window.try_acquire(3, 3).unwrap();
        window.release(1);
        assert_eq!(window.used(), 2);
        window.try_acquire(1, 3).unwrap();
        window.release(10);
        assert_eq!(window.used(), 0, "never below zero");
    }

    #[test]
    fn concurrent_callers_never_take_more_than_the_limit() {
        let window = Arc::new(MinuteWindow::new());
        let admitted: usize = (0..8)
            .map(|_| {
                let window = Arc::clone(&window);
                thread::spawn(move || (0..1_000).filter(|_| window.try_acquire(1, 500).is_ok()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        // The threads share one real second or span two; either way one minute holds them all.
        assert_eq!(admitted, 500);
        assert_eq!(window.used(), 500);
    }
}
