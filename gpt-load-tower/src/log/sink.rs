use std::fmt;

use tokio::sync::mpsc;

use super::RequestRecord;
use crate::telemetry;

/// Where request records go. Must not block: it is called on the request path.
pub trait LogSink: Send + Sync + 'static {
    /// Takes one record.
    fn send(&self, record: RequestRecord);
}

impl<F> LogSink for F
where
    F: Fn(RequestRecord) + Send + Sync + 'static,
{
    fn send(&self, record: RequestRecord) {
        self(record)
    }
}

/// A bounded channel to a consumer (the gateway's batching writer). When the consumer falls
/// behind, records are dropped and counted in `gpt_load_log_records_dropped_total` rather than
/// slowing requests down.
#[derive(Clone)]
pub struct ChannelSink {
    tx: mpsc::Sender<RequestRecord>,
}

impl ChannelSink {
    /// A sink holding up to `capacity` records, and the receiver to drain it.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<RequestRecord>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Self { tx }, rx)
    }
}

impl LogSink for ChannelSink {
    fn send(&self, record: RequestRecord) {
        if self.tx.try_send(record).is_err() {
            telemetry::log_record_dropped();
        }
    }
}

impl fmt::Debug for ChannelSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelSink")
            .field("capacity", &self.tx.max_capacity())
            .finish()
    }
}
