//! Throttling of repeated failed admin authentications, per client address (gpt-load has none).

use std::{
    net::IpAddr,
    num::NonZeroUsize,
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use lru::LruCache;

/// Failed attempts per client address allowed in one window.
const MAX_FAILURES: u32 = 10;
/// The window, and how long a throttled address waits.
const WINDOW: Duration = Duration::from_secs(300);
/// Addresses remembered at most.
const MAX_TRACKED: NonZeroUsize = NonZeroUsize::new(10_000).expect("not zero");

/// Counts failed authentications per client address, in a table of at most [`MAX_TRACKED`]
/// addresses with O(1) work per attempt.
///
/// When the table is full, the address that failed or tried least recently is forgotten. The
/// trade-off: an attacker failing from more than 10,000 fresh addresses can push out a throttled
/// address that has gone quiet, which then gets a fresh window; an address that keeps trying stays
/// recent (every check while throttled refreshes it) and so stays throttled. Expired windows need
/// no sweep: they are reset when their address fails again, or fall off the end.
#[derive(Debug)]
pub(crate) struct Throttle {
    failures: Mutex<LruCache<IpAddr, Failures>>,
}

/// An address's failures in its current window.
#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    since: Instant,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            failures: Mutex::new(LruCache::new(MAX_TRACKED)),
        }
    }
}

impl Throttle {
    fn table(&self) -> MutexGuard<'_, LruCache<IpAddr, Failures>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Seconds the address must still wait, when it is throttled.
    pub(super) fn blocked(&self, ip: IpAddr) -> Option<u64> {
        // `get` marks the address recent: a throttled client that keeps trying is not evicted.
        let Failures { count, since } = *self.table().get(&ip)?;
        let elapsed = since.elapsed();
        (count >= MAX_FAILURES && elapsed < WINDOW).then(|| (WINDOW - elapsed).as_secs().max(1))
    }

    pub(super) fn failed(&self, ip: IpAddr) {
        let mut table = self.table();
        let fresh = Failures {
            count: 1,
            since: Instant::now(),
        };
        match table.get_mut(&ip) {
            Some(entry) if entry.since.elapsed() < WINDOW => entry.count = entry.count.saturating_add(1),
            Some(entry) => *entry = fresh,
            // Evicts the least recent address when the table is full.
            None => {
                table.push(ip, fresh);
            }
        }
    }

    pub(super) fn succeeded(&self, ip: IpAddr) {
        self.table().pop(&ip);
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.table().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_after_repeated_failures_and_success_resets() {
        let t = Throttle::default();
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            t.failed(ip);
        }
        assert!(t.blocked(ip).is_none());
        t.succeeded(ip);
        for _ in 0..MAX_FAILURES {
            t.failed(ip);
        }
        let wait = t.blocked(ip).unwrap();
        assert!((1..=300).contains(&wait));
        assert!(t.blocked("203.0.113.2".parse().unwrap()).is_none(), "per address");
    }

    /// The `n`-th of many distinct addresses (IPv6, so there are enough).
    fn address(n: u32) -> IpAddr {
        IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, (n >> 16) as u16, n as u16])
    }

    #[test]
    fn failures_from_many_addresses_stay_at_the_cap() {
        let t = Throttle::default();
        let attacker: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            t.failed(attacker);
        }
        for n in 0..100_000 {
            t.failed(address(n));
            if n % 1_000 == 0 {
                // The throttled address keeps trying, as a brute force does.
                assert!(t.blocked(attacker).is_some(), "after {n} other addresses");
            }
            assert!(t.tracked() <= MAX_TRACKED.get());
        }
        assert_eq!(t.tracked(), MAX_TRACKED.get());
        assert!(
            t.blocked(attacker).is_some(),
            "a recent throttled address stays throttled"
        );
        // The attacker and the newest 9,999 addresses are counted; every older one was forgotten.
        let oldest_kept = 100_000 - (MAX_TRACKED.get() as u32 - 1);
        assert!(t.table().contains(&address(99_999)));
        assert!(t.table().contains(&address(oldest_kept)));
        assert!(!t.table().contains(&address(oldest_kept - 1)));
    }

    #[test]
    fn a_quiet_throttled_address_is_forgotten_only_after_the_table_turns_over() {
        let t = Throttle::default();
        let quiet: IpAddr = "198.51.100.8".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            t.failed(quiet);
        }
        let others = MAX_TRACKED.get() as u32 - 1;
        for n in 0..others {
            t.failed(address(n));
        }
        assert!(t.table().peek(&quiet).is_some(), "still one of the newest 10,000");
        t.failed(address(others));
        assert!(
            t.blocked(quiet).is_none(),
            "the trade-off: evicted once 10,000 newer addresses have failed"
        );
    }
}
