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

use gpt_load_tower::log::{ChannelSink, LogSink, RequestRecord, RequestType};

use super::RecentFailures;
use crate::registry::access_keys::AccessKeys;

/// `gpt_load_requests_total`
pub(crate) const REQUESTS: &str = "gpt_load_requests_total";
/// `gpt_load_request_duration_seconds`
pub(crate) const DURATION: &str = "gpt_load_request_duration_seconds";
/// `gpt_load_upstream_ttfb_seconds`
pub(crate) const TTFB: &str = "gpt_load_upstream_ttfb_seconds";

/// Records metrics for each record, notes failed attempts, then hands the record to the
/// writer's channel.
#[derive(Clone, Debug)]
pub(crate) struct MetricsSink {
    inner: ChannelSink,
    failures: RecentFailures,
    access: AccessKeys,
}

impl MetricsSink {
    pub(crate) fn new(inner: ChannelSink, failures: RecentFailures, access: AccessKeys) -> Self {
        Self {
            inner,
            failures,
            access,
        }
    }
}

impl LogSink for MetricsSink {
    fn send(&self, record: RequestRecord) {
        let group = record.group.shared();
        if let Some(ttfb) = record.time_to_first_byte {
            metrics::histogram!(TTFB, "group" => group.clone()).record(ttfb.as_secs_f64());
        }
        if record.request_type == RequestType::Final {
            let status = status_label(record.status);
            metrics::counter!(REQUESTS, "group" => group.clone(), "status" => status).increment(1);
            metrics::histogram!(DURATION, "group" => group).record(record.duration.as_secs_f64());
        }
        self.failures.note(&record);
        if let (Some(id), Some(usage)) = (record.access_key, record.usage.as_ref()) {
            self.access.settle(id, usage.total);
        }
        self.inner.send(record);
    }
}

/// Statuses as static labels (no allocation per request).
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        413 => "413",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        100..=199 => "1xx",
        201..=299 => "2xx",
        300..=399 => "3xx",
        402..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels() {
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(204), "2xx");
        assert_eq!(status_label(422), "4xx");
        assert_eq!(status_label(599), "5xx");
    }
}
