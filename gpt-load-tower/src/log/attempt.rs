use std::{
    fmt,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::{Method, Response};

use super::{LogSink, RequestRecord, RequestType};
use crate::{
    blacklist::{AttemptOutcome, Outcome},
    body::{BodyEnd, OnBodyEnd},
    context::{AccessKeyId, AttemptKey, AttemptUpstream, GroupName},
    error::Error,
    keys::SelectedKey,
    limit::TokenCharge,
    telemetry,
    upstream::UpstreamTarget,
    usage::{TokenUsage, UsageScanner},
};

/// The request-level half of every record, captured once when the request arrives.
pub(super) struct RequestInfo {
    pub(super) started: Instant,
    pub(super) timestamp: SystemTime,
    pub(super) group: GroupName,
    pub(super) access_key: Option<AccessKeyId>,
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) model: Option<String>,
    pub(super) stream: bool,
    pub(super) client_ip: Option<IpAddr>,
    pub(super) request_body: Option<String>,
    pub(super) user_agent: Option<String>,
    pub(super) request_id: Option<String>,
}

/// The request's log: records attempts as they end. Inserted into the request extensions by
/// [`RequestLog`](super::RequestLog); [`RetryOnOtherKey`](crate::retry::RetryOnOtherKey) calls
/// [`record_retry`](Self::record_retry) for each attempt it abandons.
#[derive(Clone)]
pub struct AttemptLog {
    shared: Arc<Shared>,
}

struct Shared {
    sink: Arc<dyn LogSink>,
    info: RequestInfo,
    attempts: AtomicU32,
}

/// The attempt-level half of a record. The key and upstream come from the response's
/// extensions ([`SelectedKey`], [`UpstreamTarget`]) or from what an [`Error`] carries.
#[derive(Default)]
struct AttemptFacts {
    key: Option<AttemptKey>,
    upstream: Option<AttemptUpstream>,
    status: u16,
    error: Option<String>,
    outcome: Option<&'static str>,
    rule: Option<Arc<str>>,
    time_to_first_byte: Option<Duration>,
    /// A `2xx` that still failed (an empty reply).
    failed: bool,
}

impl AttemptFacts {
    fn of_response<B>(res: &Response<B>) -> Self {
        let ext = res.extensions();
        let outcome = ext.get::<AttemptOutcome>();
        let status = res.status().as_u16();
        let failed = outcome.is_some_and(|o| o.outcome == Outcome::EmptyReply);
        Self {
            key: ext.get::<SelectedKey>().map(AttemptKey::from),
            upstream: ext.get::<UpstreamTarget>().map(AttemptUpstream::from),
            status,
            error: outcome
                .and_then(|o| o.message.as_deref())
                .filter(|_| status >= 400 || failed)
                .map(str::to_owned),
            outcome: outcome.map(|o| o.outcome.as_str()),
            rule: outcome.and_then(|o| o.rule.clone()),
            time_to_first_byte: outcome.map(|o| o.time_to_first_byte),
            failed,
        }
    }

    fn of_error(err: &Error) -> Self {
        Self {
            key: err.key().cloned(),
            upstream: err.upstream_target().cloned(),
            status: err.status().as_u16(),
            error: Some(err.message().to_owned()),
            outcome: None,
            rule: None,
            time_to_first_byte: None,
            failed: false,
        }
    }
}

impl AttemptLog {
    pub(super) fn new(sink: Arc<dyn LogSink>, info: RequestInfo) -> Self {
        Self {
            shared: Arc::new(Shared {
                sink,
                info,
                attempts: AtomicU32::new(0),
            }),
        }
    }

    /// How many attempts were recorded so far.
    pub fn attempts(&self) -> u32 {
        self.shared.attempts.load(Ordering::Relaxed)
    }

    /// Records an attempt that is about to be retried.
    pub fn record_retry<B>(&self, result: &Result<Response<B>, Error>) {
        let facts = match result {
            Ok(res) => AttemptFacts::of_response(res),
            Err(err) => AttemptFacts::of_error(err),
        };
        self.emit(RequestType::Retry, facts, None, None);
    }

    pub(super) fn final_for_error(&self, err: &Error) {
        self.emit(RequestType::Final, AttemptFacts::of_error(err), None, None);
    }

    /// The record of the attempt whose answer the client receives, written when its body ends;
    /// it takes the attempt's [`TokenCharge`] from the response, to settle it then.
    pub(super) fn final_for_response<B>(&self, res: &mut Response<B>) -> FinalRecord {
        FinalRecord {
            log: self.clone(),
            // Only a successful reply reports usage.
            usage: res.status().is_success().then(UsageScanner::new),
            charge: res.extensions_mut().remove::<TokenCharge>(),
            facts: AttemptFacts::of_response(res),
        }
    }

    fn emit(
        &self,
        request_type: RequestType,
        facts: AttemptFacts,
        end: Option<BodyEnd>,
        usage: Option<TokenUsage>,
    ) {
        let info = &self.shared.info;
        let attempt = self.shared.attempts.fetch_add(1, Ordering::Relaxed) + 1;
        let group = facts
            .key
            .as_ref()
            .map_or_else(|| info.group.clone(), |k| k.group().clone());
        let parent_group = (group != info.group).then(|| info.group.clone());
        let (broken, error) = match end {
            Some(BodyEnd::Error(message)) => (true, Some(format!("response body failed: {message}"))),
            _ => (false, facts.error),
        };
        let record = RequestRecord {
            timestamp: info.timestamp,
            request_type,
            attempt,
            group,
            parent_group,
            access_key: info.access_key,
            key_id: facts.key.as_ref().map(AttemptKey::id),
            masked_key: facts.key.as_ref().map(|k| k.secret().masked()),
            upstream: facts.upstream.as_ref().map(AttemptUpstream::shared_url),
            model: info.model.clone(),
            method: info.method.clone(),
            path: info.path.clone(),
            status: facts.status,
            success: facts.status < 400 && !broken && !facts.failed,
            duration: info.started.elapsed(),
            time_to_first_byte: facts.time_to_first_byte,
            stream: info.stream,
            client_ip: info.client_ip,
            error,
            outcome: facts.outcome,
            rule: facts.rule,
            request_body: info.request_body.clone(),
            user_agent: info.user_agent.clone(),
            request_id: info.request_id.clone(),
            usage,
        };
        telemetry::log_record(request_type.as_str());
        self.shared.sink.send(record);
    }
}

impl fmt::Debug for AttemptLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttemptLog")
            .field("group", &self.shared.info.group)
            .field("attempts", &self.shared.attempts.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Emits the final record when the response body ends, with the usage the body reported.
pub struct FinalRecord {
    log: AttemptLog,
    facts: AttemptFacts,
    usage: Option<UsageScanner>,
    charge: Option<TokenCharge>,
}

impl OnBodyEnd for FinalRecord {
    fn on_body_end(self, end: BodyEnd) {
        let usage = self.usage.and_then(UsageScanner::finish);
        if let Some(charge) = &self.charge {
            match usage {
                Some(usage) => charge.settle(usage.total),
                // A successful reply without usage counts as estimated; a failed one counts
                // nothing (the charge, dropped unsettled, gives the estimate back).
                None if self.facts.status < 400 => charge.settle(charge.reserved()),
                None => {}
            }
        }
        self.log.emit(RequestType::Final, self.facts, Some(end), usage);
    }

    fn on_data(&mut self, data: &Bytes) {
        if let Some(scanner) = &mut self.usage {
            scanner.feed(data);
        }
    }
}

impl fmt::Debug for FinalRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FinalRecord(..)")
    }
}
