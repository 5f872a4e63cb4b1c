//! Per-key rate limits: requests per minute and per day, tokens per minute, and requests at once.
//!
//! Providers rest a key that goes over its quota only after answering `429`; a key limited here
//! is skipped by selection before that, while the other keys of the group take the traffic.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::{
    clock,
    limit::{DayWindow, MinuteWindow},
};

/// The limits of one key; `0` means none.
///
/// ```
/// use gpt_load_tower::keys::KeyLimits;
///
/// let limits = KeyLimits::new().rpm(3).max_concurrency(2).tpm(40_000);
/// assert_eq!((limits.rpm, limits.rpd, limits.max_concurrency, limits.tpm), (3, 0, 2, 40_000));
/// assert!(!limits.is_none());
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyLimits {
    /// Requests per minute (a sliding minute, see [`MinuteWindow`]).
    pub rpm: u32,
    /// Requests per UTC day (see [`DayWindow`]).
    pub rpd: u32,
    /// Requests in flight at once (a stream counts until it ends).
    pub max_concurrency: u32,
    /// Tokens per minute: settled usage plus the estimates of requests in flight (see
    /// [`limit::TokenCharge`](crate::limit::TokenCharge)).
    pub tpm: u32,
}

impl KeyLimits {
    /// No limits.
    pub const fn new() -> Self {
        Self {
            rpm: 0,
            rpd: 0,
            max_concurrency: 0,
            tpm: 0,
        }
    }

    /// With `rpm` requests per minute.
    #[must_use]
    pub const fn rpm(mut self, rpm: u32) -> Self {
        self.rpm = rpm;
        self
    }

    /// With `rpd` requests per UTC day.
    #[must_use]
    pub const fn rpd(mut self, rpd: u32) -> Self {
        self.rpd = rpd;
        self
    }

    /// With at most `max` requests at once.
    #[must_use]
    pub const fn max_concurrency(mut self, max: u32) -> Self {
        self.max_concurrency = max;
        self
    }

    /// With `tpm` tokens per minute.
    #[must_use]
    pub const fn tpm(mut self, tpm: u32) -> Self {
        self.tpm = tpm;
        self
    }

    /// Whether no limit is set.
    pub const fn is_none(&self) -> bool {
        self.rpm == 0 && self.rpd == 0 && self.max_concurrency == 0 && self.tpm == 0
    }
}

/// Which of a key's limits refused a request, and when it has room again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitRefusal {
    /// The limit's stable name: `key_rpm`, `key_rpd`, `key_tpm` or `key_concurrency`.
    pub limit: &'static str,
    /// How long until the limit admits one more request (a second for concurrency, which ends
    /// when a request does).
    pub retry_after: Duration,
}

impl LimitRefusal {
    const CONCURRENCY: Self = Self {
        limit: "key_concurrency",
        retry_after: Duration::from_secs(1),
    };
}

/// A key's limits and the counters that enforce them. Allocated only for keys with limits;
/// changing the limits changes them in place, so what was counted keeps counting.
#[derive(Debug, Default)]
pub(crate) struct KeyLimiter {
    rpm: AtomicU32,
    rpd: AtomicU32,
    max_concurrency: AtomicU32,
    tpm: AtomicU32,
    minute: MinuteWindow,
    day: DayWindow,
    /// Tokens of the last minute, shared with the [`TokenCharge`](crate::limit::TokenCharge)s of
    /// the requests sent with the key.
    tokens: Arc<MinuteWindow>,
    /// A shared check refused the key: no admission before this clock reading (0 = none), and
    /// by which limit (`true`: the day's).
    held_back_until: AtomicU64,
    held_back_by_day: AtomicBool,
}

impl KeyLimiter {
    pub(crate) fn new(limits: KeyLimits) -> Self {
        let limiter = Self::default();
        limiter.set(limits);
        limiter
    }

    pub(crate) fn set(&self, limits: KeyLimits) {
        self.rpm.store(limits.rpm, Ordering::Relaxed);
        self.rpd.store(limits.rpd, Ordering::Relaxed);
        self.max_concurrency
            .store(limits.max_concurrency, Ordering::Relaxed);
        self.tpm.store(limits.tpm, Ordering::Relaxed);
    }

    pub(crate) fn limits(&self) -> KeyLimits {
        KeyLimits {
            rpm: self.rpm.load(Ordering::Relaxed),
            rpd: self.rpd.load(Ordering::Relaxed),
            max_concurrency: self.max_concurrency.load(Ordering::Relaxed),
            tpm: self.tpm.load(Ordering::Relaxed),
        }
    }

    /// The key's tokens window, when it has a `tpm` limit.
    pub(crate) fn token_window(&self) -> Option<&Arc<MinuteWindow>> {
        (self.tpm.load(Ordering::Relaxed) > 0).then_some(&self.tokens)
    }

    /// The `tpm` refusal, when the minute's tokens are at the limit (taking nothing: the tokens
    /// are reserved once the request is sent).
    fn tokens_refusal(&self, tpm: u32) -> Option<LimitRefusal> {
        (tpm > 0)
            .then(|| self.tokens.retry_after(1, u64::from(tpm)))
            .flatten()
            .map(|retry_after| LimitRefusal {
                limit: "key_tpm",
                retry_after,
            })
    }

    /// Takes one request from every limit, or none: concurrency first (held in `in_flight`,
    /// which the request gives back when it ends), then the day, then the minute, undoing what was
    /// taken when a later limit refuses. `Ok(true)` when `in_flight` was raised here.
    pub(crate) fn admit(&self, in_flight: &AtomicU32) -> Result<bool, LimitRefusal> {
        let KeyLimits {
            rpm,
            rpd,
            max_concurrency,
            tpm,
        } = self.limits();
        if let Some(refusal) = self.held_back() {
            return Err(refusal);
        }
        if let Some(refusal) = self.tokens_refusal(tpm) {
            return Err(refusal);
        }
        let held = max_concurrency > 0;
        if held
            && in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max_concurrency).then_some(n + 1)
                })
                .is_err()
        {
            return Err(LimitRefusal::CONCURRENCY);
        }
        let undo_concurrency = || {
            if held {
                in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        };
        if rpd > 0
            && let Err(retry_after) = self.day.try_acquire(1, u64::from(rpd))
        {
            undo_concurrency();
            return Err(LimitRefusal {
                limit: "key_rpd",
                retry_after,
            });
        }
        if rpm > 0
            && let Err(retry_after) = self.minute.try_acquire(1, u64::from(rpm))
        {
            if rpd > 0 {
                self.day.release(1);
            }
            undo_concurrency();
            return Err(LimitRefusal {
                limit: "key_rpm",
                retry_after,
            });
        }
        Ok(held)
    }

    /// The limit that would refuse a request now, without taking anything.
    pub(crate) fn refusal(&self, in_flight: u32) -> Option<LimitRefusal> {
        let KeyLimits {
            rpm,
            rpd,
            max_concurrency,
            tpm,
        } = self.limits();
        if let Some(refusal) = self.held_back() {
            return Some(refusal);
        }
        if max_concurrency > 0 && in_flight >= max_concurrency {
            return Some(LimitRefusal::CONCURRENCY);
        }
        if let Some(refusal) = self.tokens_refusal(tpm) {
            return Some(refusal);
        }
        if rpd > 0
            && let Some(retry_after) = self.day.retry_after(1, u64::from(rpd))
        {
            return Some(LimitRefusal {
                limit: "key_rpd",
                retry_after,
            });
        }
        if rpm > 0
            && let Some(retry_after) = self.minute.retry_after(1, u64::from(rpm))
        {
            return Some(LimitRefusal {
                limit: "key_rpm",
                retry_after,
            });
        }
        None
    }

    /// While a shared check's refusal holds the key back: that refusal.
    fn held_back(&self) -> Option<LimitRefusal> {
        let until = self.held_back_until.load(Ordering::Relaxed);
        (until != 0 && clock::now_ms() < until).then(|| LimitRefusal {
            limit: if self.held_back_by_day.load(Ordering::Relaxed) {
                "key_rpd"
            } else {
                "key_rpm"
            },
            retry_after: clock::remaining(until),
        })
    }

    /// Undoes one admission whose request was not sent, and holds the key back as `refusal`
    /// says.
    pub(crate) fn give_back(&self, refusal: LimitRefusal) {
        let hold = refusal.retry_after;
        self.held_back_by_day
            .store(refusal.limit == "key_rpd", Ordering::Relaxed);
        let limits = self.limits();
        if limits.rpd > 0 {
            self.day.release(1);
        }
        if limits.rpm > 0 {
            self.minute.release(1);
        }
        self.held_back_until
            .fetch_max(clock::deadline_ms(hold), Ordering::AcqRel);
    }

    /// The share of the tightest limit still free, in thousandths (1000 = untouched).
    pub(crate) fn headroom_per_mille(&self, in_flight: u32) -> u32 {
        let share = |left: u64, limit: u32| (left * 1000 / u64::from(limit)) as u32;
        let KeyLimits {
            rpm,
            rpd,
            max_concurrency,
            tpm,
        } = self.limits();
        let mut tightest = 1000;
        if tpm > 0 {
            tightest = tightest.min(share(self.tokens.headroom(u64::from(tpm)), tpm));
        }
        if rpm > 0 {
            tightest = tightest.min(share(self.minute.headroom(u64::from(rpm)), rpm));
        }
        if rpd > 0 {
            tightest = tightest.min(share(self.day.headroom(u64::from(rpd)), rpd));
        }
        if max_concurrency > 0 {
            let left = u64::from(max_concurrency.saturating_sub(in_flight));
            tightest = tightest.min(share(left, max_concurrency));
        }
        tightest
    }

    /// Requests counted in the last minute and today.
    pub(crate) fn used(&self) -> (u64, u64) {
        (self.minute.used(), self.day.used())
    }
}
