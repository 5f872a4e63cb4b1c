use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;

/// A budget of request-body bytes held in memory across all requests, shared by every clone.
///
/// [`BodyBufferLayer::budget`](super::BodyBufferLayer::budget) reserves from it before it grows
/// a buffer; a reservation that does not fit sheds the request with `503` +
/// `Retry-After` ([`ErrorKind::BodyBudgetExhausted`](crate::error::ErrorKind)) instead of
/// allocating. The bytes return to the budget when the buffered body is dropped — after the last
/// retry, since retries share the same bytes. Reserving is one atomic update; nothing waits.
#[derive(Clone)]
pub struct BodyBudget {
    shared: Arc<Shared>,
}

struct Shared {
    limit: usize,
    retry_after: Duration,
    in_use: AtomicUsize,
}

impl BodyBudget {
    /// A budget of `limit` bytes; shed clients are told to retry after one second.
    pub fn new(limit: usize) -> Self {
        Self::with_retry_after(limit, Duration::from_secs(1))
    }

    /// A budget of `limit` bytes whose shed clients are told to retry after `retry_after`.
    pub fn with_retry_after(limit: usize, retry_after: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                limit,
                retry_after,
                in_use: AtomicUsize::new(0),
            }),
        }
    }

    /// The budget in bytes.
    pub fn limit(&self) -> usize {
        self.shared.limit
    }

    /// The bytes reserved by bodies now held in memory.
    pub fn in_use(&self) -> usize {
        self.shared.in_use.load(Ordering::Acquire)
    }

    /// The `Retry-After` shed clients receive.
    pub fn retry_after(&self) -> Duration {
        self.shared.retry_after
    }

    /// Reserves `bytes`, or `None` when they do not fit.
    pub fn try_reserve(&self, bytes: usize) -> Option<BudgetPermit> {
        let mut permit = BudgetPermit {
            budget: self.clone(),
            bytes: 0,
        };
        permit.grow_to(bytes).then_some(permit)
    }

    fn add(&self, bytes: usize) -> bool {
        let limit = self.shared.limit;
        self.shared
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.shared.in_use.fetch_sub(bytes, Ordering::AcqRel);
    }
}

impl fmt::Debug for BodyBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyBudget")
            .field("limit", &self.limit())
            .field("in_use", &self.in_use())
            .finish()
    }
}

/// Bytes reserved from a [`BodyBudget`], returned when dropped.
#[derive(Debug)]
pub struct BudgetPermit {
    budget: BodyBudget,
    bytes: usize,
}

impl BudgetPermit {
    /// The bytes this permit holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Holds at least `bytes` in total, reserving the difference; `false` (and nothing changed)
    /// when it does not fit.
    pub fn grow_to(&mut self, bytes: usize) -> bool {
        if bytes <= self.bytes {
            return true;
        }
        let more = bytes - self.bytes;
        if !self.budget.add(more) {
            return false;
        }
        self.bytes = bytes;
        true
    }

    /// Holds at most `bytes` in total, returning the rest to the budget.
    pub fn shrink_to(&mut self, bytes: usize) {
        if bytes < self.bytes {
            self.budget.release(self.bytes - bytes);
            self.bytes = bytes;
        }
    }

    /// `data` as [`Bytes`] that keep this permit until the last clone of them is dropped, so the
    /// reservation lasts exactly as long as the memory.
    pub fn attach<T>(self, data: T) -> Bytes
    where
        T: AsRef<[u8]> + Send + 'static,
    {
        Bytes::from_owner(Reserved { data, _permit: self })
    }
}

impl Drop for BudgetPermit {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.release(self.bytes);
        }
    }
}

/// Memory and the reservation that covers it.
struct Reserved<T> {
    data: T,
    _permit: BudgetPermit,
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Reserved<T> {
    fn as_ref(&self) -> &[u8] {
        self.data.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_up_to_the_limit_and_releases_on_drop() {
        let budget = BodyBudget::new(100);
        let a = budget.try_reserve(60).unwrap();
        assert!(budget.try_reserve(41).is_none());
        let mut b = budget.clone().try_reserve(40).unwrap();
        assert_eq!(budget.in_use(), 100);
        assert!(!b.grow_to(41), "nothing left");
        assert_eq!(b.bytes(), 40);
        b.shrink_to(10);
        assert_eq!(budget.in_use(), 70);
        assert!(b.grow_to(40));
        drop(a);
        assert_eq!(budget.in_use(), 40);
        drop(b);
        assert_eq!(budget.in_use(), 0);
        assert!(budget.try_reserve(usize::MAX).is_none());
        assert!(format!("{budget:?}").contains("limit: 100"));
    }

    #[test]
    fn attached_bytes_release_when_the_last_clone_drops() {
        let budget = BodyBudget::with_retry_after(10, Duration::from_secs(3));
        assert_eq!(budget.retry_after(), Duration::from_secs(3));
        let bytes = budget.try_reserve(8).unwrap().attach(vec![7u8; 8]);
        let retry = bytes.clone();
        drop(bytes);
        assert_eq!(budget.in_use(), 8, "a retry still holds the body");
        assert_eq!(&retry[..], &[7u8; 8]);
        drop(retry);
        assert_eq!(budget.in_use(), 0);
    }
}
