//! A monotonic millisecond clock for deadlines stored in atomics.
//!
//! Tests move it forward with [`advance`] (per thread), so deadlines, backoff and probes are
//! tested without sleeping.

use std::{
    sync::OnceLock,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

fn epoch() -> Instant {
    epoch_and_wall().0
}

/// The monotonic epoch and the wall-clock milliseconds since 1970 at that instant, read together.
fn epoch_and_wall() -> (Instant, u64) {
    static EPOCH: OnceLock<(Instant, u64)> = OnceLock::new();
    *EPOCH.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        (Instant::now(), wall)
    })
}

#[cfg(test)]
thread_local! {
    static SKEW: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Moves this thread's clock forward by `by` (tests only).
#[cfg(test)]
pub(crate) fn advance(by: Duration) {
    SKEW.with(|skew| skew.set(skew.get() + by.as_millis() as u64));
}

#[inline]
fn skew() -> u64 {
    #[cfg(test)]
    return SKEW.with(std::cell::Cell::get);
    #[cfg(not(test))]
    0
}

/// Milliseconds since the first call in this process; never 0 so that 0 can mean "unset".
pub(crate) fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1 + skew()
}

/// The clock reading `after` from now.
pub(crate) fn deadline_ms(after: Duration) -> u64 {
    now_ms().saturating_add(after.as_millis().min(u128::from(u64::MAX / 2)) as u64)
}

/// How long until the clock reads `deadline` (zero when it has passed).
pub(crate) fn remaining(deadline: u64) -> Duration {
    Duration::from_millis(deadline.saturating_sub(now_ms()))
}

/// Wall-clock milliseconds since 1970, moving with the monotonic clock (so with [`advance`] in
/// tests): for windows that follow the calendar, such as a UTC day.
pub(crate) fn wall_ms() -> u64 {
    epoch_and_wall().1 + now_ms()
}
