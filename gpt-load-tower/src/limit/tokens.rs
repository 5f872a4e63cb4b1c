//! Tokens per minute: what a request reserves before it is sent, and how it settles (see
//! [`limit`](crate::limit), "Tokens per minute").

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use super::MinuteWindow;
use crate::channel::RequestFacts;

/// Completion tokens reserved for a request that names no output cap (`max_tokens` and its
/// spellings), when no [`TokenReserve`] says otherwise.
pub const DEFAULT_TOKEN_RESERVE: u64 = 1024;

/// Bytes of a request body counted as one prompt token (about four characters a token in
/// English text and JSON).
const BYTES_PER_TOKEN: u64 = 4;

/// The completion tokens to reserve for a request that names no output cap; a request extension
/// set per group by the application (default [`DEFAULT_TOKEN_RESERVE`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenReserve(pub u64);

/// The tokens a request is expected to use: its body's length in tokens (about four bytes each)
/// plus its output cap, or the reserve when it names none.
///
/// ```
/// use gpt_load_tower::{channel::RequestFacts, limit::TokenEstimate};
///
/// let facts = RequestFacts { body_bytes: 400, max_output_tokens: Some(50), ..RequestFacts::default() };
/// assert_eq!(TokenEstimate::of(Some(&facts), 1024), TokenEstimate(150));
/// let uncapped = RequestFacts { body_bytes: 400, ..RequestFacts::default() };
/// assert_eq!(TokenEstimate::of(Some(&uncapped), 1024), TokenEstimate(1124));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenEstimate(pub u64);

impl TokenEstimate {
    /// The estimate for a request with these facts (`None`: only the reserve).
    pub fn of(facts: Option<&RequestFacts>, reserve: u64) -> Self {
        let prompt = facts.map_or(0, |f| (f.body_bytes as u64).div_ceil(BYTES_PER_TOKEN));
        let output = facts.and_then(|f| f.max_output_tokens).unwrap_or(reserve);
        Self(prompt.saturating_add(output))
    }
}

/// A group's tokens-per-minute window, inserted into the request by
/// [`GroupLimit`](super::GroupLimit) for a group with a `tpm` limit, so that each attempt's
/// [`TokenCharge`] counts against it.
#[derive(Clone)]
pub struct GroupTokens(pub(crate) Arc<MinuteWindow>);

impl fmt::Debug for GroupTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("GroupTokens").field(&self.0.used()).finish()
    }
}

/// What one attempt reserved in its tokens-per-minute windows (see [`limit`](crate::limit),
/// "Tokens per minute").
/// Clones share the reservation; when the last one goes unsettled, the estimate is given back.
#[derive(Clone)]
pub struct TokenCharge {
    inner: Arc<Charge>,
}

struct Charge {
    windows: Vec<Arc<MinuteWindow>>,
    reserved: u64,
    settled: AtomicBool,
}

impl TokenCharge {
    /// Reserves `estimate` in each of `windows`.
    pub(crate) fn reserve(windows: Vec<Arc<MinuteWindow>>, estimate: TokenEstimate) -> Self {
        for window in &windows {
            window.add(estimate.0);
        }
        Self {
            inner: Arc::new(Charge {
                windows,
                reserved: estimate.0,
                settled: AtomicBool::new(false),
            }),
        }
    }

    /// The tokens reserved.
    pub fn reserved(&self) -> u64 {
        self.inner.reserved
    }

    /// Replaces the reservation with the tokens the attempt used (once; later calls do nothing).
    pub fn settle(&self, used: u64) {
        if self.inner.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        let reserved = self.inner.reserved;
        for window in &self.inner.windows {
            if used > reserved {
                window.add(used - reserved);
            } else {
                window.release(reserved - used);
            }
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if !*self.settled.get_mut() {
            for window in &self.windows {
                window.release(self.reserved);
            }
        }
    }
}

impl fmt::Debug for TokenCharge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCharge")
            .field("reserved", &self.inner.reserved)
            .field("windows", &self.inner.windows.len())
            .field("settled", &self.inner.settled.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_settles_with_the_usage_or_gives_the_estimate_back() {
        let key = Arc::new(MinuteWindow::new());
        let group = Arc::new(MinuteWindow::new());
        let windows = || vec![Arc::clone(&key), Arc::clone(&group)];

        let charge = TokenCharge::reserve(windows(), TokenEstimate(100));
        assert_eq!((key.used(), group.used()), (100, 100), "reserved in both");
        charge.clone().settle(30);
        assert_eq!((key.used(), group.used()), (30, 30), "settled down to the usage");
        charge.settle(500);
        assert_eq!(key.used(), 30, "settled once");
        drop(charge);
        assert_eq!(key.used(), 30, "a settled charge keeps its usage");

        let over = TokenCharge::reserve(windows(), TokenEstimate(10));
        over.settle(50);
        assert_eq!(group.used(), 80, "usage over the estimate counts in full");

        let abandoned = TokenCharge::reserve(windows(), TokenEstimate(40));
        assert_eq!(key.used(), 120);
        drop(abandoned);
        assert_eq!(key.used(), 80, "an unsettled charge gives its estimate back");
    }

    #[test]
    fn the_estimate_reads_the_output_cap_or_the_reserve() {
        assert_eq!(TokenEstimate::of(None, 7), TokenEstimate(7));
        let facts = RequestFacts {
            body_bytes: 9,
            max_output_tokens: Some(1),
            ..RequestFacts::default()
        };
        assert_eq!(TokenEstimate::of(Some(&facts), 7), TokenEstimate(4));
    }
}
