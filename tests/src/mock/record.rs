//! Request recording: a bounded ring of full requests plus per-key counters.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, Method};

/// One request as the mock received it (control endpoints excluded).
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    /// Request method.
    pub method: Method,
    /// Request path, without the query.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// All request headers.
    pub headers: HeaderMap,
    /// The upstream key presented, if any (see the crate docs for carriers).
    pub credential: Option<String>,
    /// The full request body.
    pub body: Bytes,
}

/// Shared recorder. Locks are only held for short, non-async sections.
#[derive(Debug)]
pub(crate) struct Recorder {
    capacity: usize,
    ring: Mutex<VecDeque<ReceivedRequest>>,
    by_key: Mutex<HashMap<String, u64>>,
    total: AtomicU64,
}

impl Recorder {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            by_key: Mutex::new(HashMap::new()),
            total: AtomicU64::new(0),
        }
    }

    /// Counts the request and, when recording is enabled, stores a copy.
    /// Returns the 1-based sequence number of the request.
    pub(crate) fn record(&self, parts: &http::request::Parts, credential: Option<&str>, body: &Bytes) -> u64 {
        let seq = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(key) = credential {
            let mut by_key = lock(&self.by_key);
            match by_key.get_mut(key) {
                Some(count) => *count += 1,
                None => {
                    by_key.insert(key.to_owned(), 1);
                }
            }
        }
        if self.capacity > 0 {
            let entry = ReceivedRequest {
                method: parts.method.clone(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().map(str::to_owned),
                headers: parts.headers.clone(),
                credential: credential.map(str::to_owned),
                body: body.clone(),
            };
            let mut ring = lock(&self.ring);
            if ring.len() >= self.capacity {
                ring.pop_front();
            }
            ring.push_back(entry);
        }
        seq
    }

    pub(crate) fn received(&self) -> Vec<ReceivedRequest> {
        lock(&self.ring).iter().cloned().collect()
    }

    /// Forgets recorded requests and resets every counter.
    pub(crate) fn clear(&self) {
        lock(&self.ring).clear();
        lock(&self.by_key).clear();
        self.total.store(0, Ordering::Relaxed);
    }

    pub(crate) fn by_key(&self) -> BTreeMap<String, u64> {
        lock(&self.by_key)
            .iter()
            .map(|(key, count)| (key.clone(), *count))
            .collect()
    }

    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str) -> http::request::Parts {
        http::Request::post(uri).body(()).unwrap().into_parts().0
    }

    #[test]
    fn ring_is_bounded_and_counters_survive() {
        let recorder = Recorder::new(2);
        for i in 0..3 {
            recorder.record(&parts(&format!("/p{i}?a=1")), Some("k"), &Bytes::new());
        }
        recorder.record(&parts("/none"), None, &Bytes::new());
        let received = recorder.received();
        assert_eq!(received.len(), 2);
        assert_eq!(received[0].path, "/p2");
        assert_eq!(received[0].query.as_deref(), Some("a=1"));
        assert_eq!(received[1].credential, None);
        assert_eq!(recorder.total(), 4);
        assert_eq!(recorder.by_key().get("k"), Some(&3));
    }

    #[test]
    fn zero_capacity_only_counts() {
        let recorder = Recorder::new(0);
        recorder.record(&parts("/x"), Some("k"), &Bytes::from_static(b"{}"));
        assert!(recorder.received().is_empty());
        assert_eq!(recorder.total(), 1);
        recorder.clear();
        assert_eq!(recorder.total(), 0);
        assert!(recorder.by_key().is_empty());
    }
}
