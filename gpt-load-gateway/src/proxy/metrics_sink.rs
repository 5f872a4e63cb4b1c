//! Request metrics taken from the request records on their way to the log writer, so they cost
//! the proxy nothing beyond the record it already builds:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `gpt_load_requests_total` | counter | `group`, `status` (final attempts only) |
//! | `gpt_load_request_duration_seconds` | histogram | `group` (arrival to last byte, final attempts) |
//! | `gpt_load_upstream_ttfb_seconds` | histogram | `group` (attempt sent to response head, every attempt) |
//!
//! It also counts the tokens of requests made with an access key against that key's limits
//! (docs/LIMITS.md, "Access keys").

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock, PoisonError},
};

use gpt_load_tower::{
    context::GroupName,
    log::{ChannelSink, LogSink, RequestRecord, RequestType},
};
use metrics::{Counter, Histogram};

use super::RecentFailures;
use crate::registry::access_keys::AccessKeys;

/// `gpt_load_requests_total`
pub(crate) const REQUESTS: &str = "gpt_load_requests_total";
/// `gpt_load_request_duration_seconds`
pub(crate) const DURATION: &str = "gpt_load_request_duration_seconds";
/// `gpt_load_upstream_ttfb_seconds`
pub(crate) const TTFB: &str = "gpt_load_upstream_ttfb_seconds";

/// Groups whose handles are kept; past it the cache starts again (groups deleted and renamed
/// over a long uptime leave entries behind).
const MAX_CACHED_GROUPS: usize = 10_000;

/// Records metrics for each record, notes failed attempts, then hands the record to the
/// writer's channel.
#[derive(Clone, Debug)]
pub(crate) struct MetricsSink {
    inner: ChannelSink,
    failures: RecentFailures,
    access: AccessKeys,
    handles: Arc<Mutex<HashMap<GroupName, Arc<GroupMetrics>, foldhash::fast::RandomState>>>,
}

/// One group's metric handles. Asking the recorder for a handle builds and hashes its labels
/// and looks it up in a shared map, each time; a kept handle only adds to its atomics.
#[derive(Debug)]
struct GroupMetrics {
    group: Arc<str>,
    ttfb: Histogram,
    duration: Histogram,
    /// `gpt_load_requests_total` by status, in [`STATUS_LABELS`]' order, made on first use.
    requests: [OnceLock<Counter>; STATUS_LABELS.len()],
}

impl GroupMetrics {
    fn new(group: &GroupName) -> Self {
        Self {
            group: group.shared(),
            ttfb: metrics::histogram!(TTFB, "group" => group.shared()),
            duration: metrics::histogram!(DURATION, "group" => group.shared()),
            requests: Default::default(),
        }
    }

    fn requests(&self, status: u16) -> &Counter {
        let index = status_index(status);
        self.requests[index].get_or_init(
            || metrics::counter!(REQUESTS, "group" => Arc::clone(&self.group), "status" => STATUS_LABELS[index]),
        )
    }
}

impl MetricsSink {
    pub(crate) fn new(inner: ChannelSink, failures: RecentFailures, access: AccessKeys) -> Self {
        Self {
            inner,
            failures,
            access,
            handles: Arc::default(),
        }
    }

    fn group_metrics(&self, group: &GroupName) -> Arc<GroupMetrics> {
        // Held for a map lookup only, never across an await.
        let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(metrics) = handles.get(group) {
            return Arc::clone(metrics);
        }
        if handles.len() >= MAX_CACHED_GROUPS {
            handles.clear();
        }
        let metrics = Arc::new(GroupMetrics::new(group));
        handles.insert(group.clone(), Arc::clone(&metrics));
        metrics
    }
}

impl LogSink for MetricsSink {
    fn send(&self, record: RequestRecord) {
        let is_final = record.request_type == RequestType::Final;
        if record.time_to_first_byte.is_some() || is_final {
            let metrics = self.group_metrics(&record.group);
            if let Some(ttfb) = record.time_to_first_byte {
                metrics.ttfb.record(ttfb.as_secs_f64());
            }
            if is_final {
                metrics.requests(record.status).increment(1);
                metrics.duration.record(record.duration.as_secs_f64());
            }
        }
        self.failures.note(&record);
        if let (Some(id), Some(usage)) = (record.access_key, record.usage.as_ref()) {
            self.access.settle(id, usage.total);
        }
        self.inner.send(record);
    }
}

/// The `status` labels: common statuses as themselves, the rest by class (a bounded set).
const STATUS_LABELS: [&str; 16] = [
    "200", "400", "401", "403", "404", "413", "429", "500", "502", "503", "504", "1xx", "2xx", "3xx", "4xx",
    "5xx",
];

/// `status`'s label in [`STATUS_LABELS`].
fn status_index(status: u16) -> usize {
    match status {
        200 => 0,
        400 => 1,
        401 => 2,
        403 => 3,
        404 => 4,
        413 => 5,
        429 => 6,
        500 => 7,
        502 => 8,
        503 => 9,
        504 => 10,
        100..=199 => 11,
        201..=299 => 12,
        300..=399 => 13,
        402..=499 => 14,
        _ => 15,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels() {
        let label = |status| STATUS_LABELS[status_index(status)];
        assert_eq!(label(204), "2xx");
        assert_eq!(label(422), "4xx");
        assert_eq!(label(599), "5xx");
        for status in [200, 400, 401, 403, 404, 413, 429, 500, 502, 503, 504] {
            assert_eq!(
                label(status),
                status.to_string(),
                "a common status is its own label"
            );
        }
    }
}
