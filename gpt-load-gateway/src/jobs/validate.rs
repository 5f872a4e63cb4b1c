//! Background key validation: blacklisted keys are re-tested and restored when they work again.
//!
//! Every `tick` the job looks at each standard group; a group is due when its
//! `key_validation_interval_minutes` has passed since `groups.last_validated_at` (as in gpt-load,
//! so a restart, or a database adopted from gpt-load, does not validate every group at once);
//! each run writes that column. Its invalid keys are tested
//! with the channel's validation request (the group's test model and validation endpoint, sent to
//! one of its upstreams through the same client and proxy settings as traffic), at most
//! `key_validation_concurrency` at a time, each within `key_validation_timeout_seconds`. A key
//! that answers 2xx is made active again (its failures reset); the pool's events persist that.
//! Groups whose keys are all down are validated like any other, so they recover on their own.
//! Pending keys (added while the group's `validate_new_keys` is on) are validated on every tick,
//! and at once when this node added them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use chrono::NaiveDateTime;

use gpt_load_tower::{
    blacklist::{ClassifyOutcome, DefaultClassifier, Outcome, UpstreamAnswer, upstream_message},
    body::ReplayBody,
    keys::{KeySlot, KeyState},
};
use http::Request;
use http_body_util::{BodyExt, Limited};
use tokio::{
    sync::{Semaphore, watch},
    task::JoinSet,
};
use tower::ServiceExt;

use crate::{
    cluster::Leadership,
    models::now,
    registry::{Catalog, GroupPolicy, Registry},
    repo::groups,
    upstream::UpstreamClient,
};

/// The group's keys in `state` now.
fn keys_in_state(policy: &GroupPolicy, registry: &Registry, state: KeyState) -> Vec<Arc<KeySlot>> {
    registry
        .pool()
        .keys(policy.group.name.as_str())
        .into_iter()
        .filter(|k| k.state() == state)
        .collect()
}

/// Validates the group's invalid keys once; returns how many were restored.
pub(crate) async fn validate_group(policy: &GroupPolicy, registry: &Registry) -> usize {
    let invalid = keys_in_state(policy, registry, KeyState::Invalid);
    if invalid.is_empty() {
        return 0;
    }
    let checks = check_keys(
        policy,
        registry.catalog(),
        registry.client(),
        invalid,
        &AtomicUsize::new(0),
    )
    .await;
    let count = registry.restore_validated(policy, &checks);
    registry.record_validated(&checks).await;
    if count > 0 {
        tracing::info!(group = %policy.group.name, restored = count, "validation restored blacklisted keys");
    }
    count
}

/// Validates the group's pending keys (added while its `validate_new_keys` is on) and applies
/// the outcomes: a key that works becomes active, a key error makes it invalid, a rate limit
/// cools it (the provider knows it), a provider failure leaves it pending for the next tick.
/// Returns how many passed.
pub(crate) async fn validate_pending(policy: &GroupPolicy, registry: &Registry) -> usize {
    let pending = keys_in_state(policy, registry, KeyState::Pending);
    if pending.is_empty() {
        return 0;
    }
    let checks = check_keys(
        policy,
        registry.catalog(),
        registry.client(),
        pending,
        &AtomicUsize::new(0),
    )
    .await;
    let (valid, invalid) = registry.apply_validation(policy, &checks);
    registry.record_validated(&checks).await;
    tracing::info!(group = %policy.group.name, valid, invalid, "validated new keys");
    valid
}

/// How the validation request of one key went: `Err` carries a short reason in which the key
/// itself is masked.
#[derive(Debug)]
pub(crate) struct KeyCheck {
    pub(crate) slot: Arc<KeySlot>,
    pub(crate) outcome: Result<(), String>,
    /// What the answer means for the key, by the same rules as proxied traffic: only a failure
    /// blamed on the key counts toward its blacklisting; a provider failure or a validation
    /// request the upstream refuses as such (a wrong test model) does not.
    pub(crate) verdict: Outcome,
}

impl KeyCheck {
    fn failed(slot: Arc<KeySlot>, reason: String, verdict: Outcome) -> Self {
        Self {
            slot,
            outcome: Err(reason),
            verdict,
        }
    }
}

/// The longest upstream error body read for a reason.
const REASON_BODY_LIMIT: usize = 16 * 1024;

/// Sends the validation request of each key (at most `key_validation_concurrency` at a time,
/// each within `key_validation_timeout_seconds`) and reports every outcome; `done` counts
/// finished keys as they finish. Changes nothing: the caller applies the outcomes.
pub(crate) async fn check_keys(
    policy: &GroupPolicy,
    catalog: &Catalog,
    client: &UpstreamClient,
    slots: Vec<Arc<KeySlot>>,
    done: &AtomicUsize,
) -> Vec<KeyCheck> {
    let concurrency = policy.effective.key_validation_concurrency() as usize;
    check_keys_at(policy, catalog, client, slots, done, concurrency).await
}

/// [`check_keys`] with `concurrency` requests at a time instead of the group's setting.
pub(crate) async fn check_keys_at(
    policy: &GroupPolicy,
    catalog: &Catalog,
    client: &UpstreamClient,
    slots: Vec<Arc<KeySlot>>,
    done: &AtomicUsize,
    concurrency: usize,
) -> Vec<KeyCheck> {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let timeout = policy.effective.key_validation_timeout();
    let mut checks = Vec::with_capacity(slots.len());
    let mut tasks = JoinSet::new();
    for slot in slots {
        let Some(upstream) = catalog.upstreams.pick(policy.group.name.as_str()) else {
            done.fetch_add(1, Ordering::Relaxed);
            let reason = "the group has no usable upstream".to_owned();
            checks.push(KeyCheck::failed(slot, reason, Outcome::Passthrough));
            continue;
        };
        let request = match policy.group.channel.validation_request(
            upstream.url(),
            &policy.group.test_model,
            policy.group.validation_endpoint.as_deref(),
            slot.secret(),
        ) {
            Ok(request) => request,
            Err(e) => {
                done.fetch_add(1, Ordering::Relaxed);
                let reason = format!("invalid validation request: {e}");
                let reason = slot.secret().redact(&reason).into_owned();
                checks.push(KeyCheck::failed(slot, reason, Outcome::RequestError));
                continue;
            }
        };
        let (parts, body) = request.into_parts();
        let mut request = Request::from_parts(parts, ReplayBody::new(body));
        request.extensions_mut().insert(policy.client.clone());
        let (client, permits) = (client.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let (outcome, verdict) = match tokio::time::timeout(timeout, send(client, request)).await {
                Ok(Ok(())) => (Ok(()), Outcome::Success),
                Ok(Err((reason, verdict))) => (Err(reason), verdict),
                Err(_) => (
                    Err(format!("timed out after {} s", timeout.as_secs())),
                    Outcome::Transient,
                ),
            };
            let outcome = outcome.map_err(|reason| slot.secret().redact(&reason).into_owned());
            KeyCheck {
                slot,
                outcome,
                verdict,
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        done.fetch_add(1, Ordering::Relaxed);
        if let Ok(check) = result {
            checks.push(check);
        }
    }
    checks
}

/// One validation request: `Ok` on 2xx, else the status and the upstream's error message, with
/// what the answer means for the key.
async fn send(client: UpstreamClient, request: Request<ReplayBody>) -> Result<(), (String, Outcome)> {
    let res = match client.oneshot(request).await {
        Ok(res) => res,
        Err(e) => {
            let verdict = DefaultClassifier::new().classify_error(&e);
            return Err((e.to_string(), verdict));
        }
    };
    let status = res.status();
    if status.is_success() {
        return Ok(());
    }
    let (parts, body) = res.into_parts();
    let body = Limited::new(body, REASON_BODY_LIMIT)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let message = upstream_message(&text);
    // Every non-2xx answer fails the check; the classifier says whose fault it is.
    let answer = UpstreamAnswer::new(status, &parts.headers, true).with_body(&text, &message);
    let verdict = DefaultClassifier::new().classify_response(&answer);
    let message: String = message.trim().chars().take(200).collect();
    let reason = if message.is_empty() {
        format!("upstream answered {status}")
    } else {
        format!("upstream answered {status}: {message}")
    };
    Err((reason, verdict))
}

/// Whether a group last validated at `last` is due at `at`, every `interval`.
fn is_due(last: Option<NaiveDateTime>, interval: Duration, at: NaiveDateTime) -> bool {
    last.is_none_or(|last| (at - last).to_std().is_ok_and(|since| since >= interval))
}

/// Runs until `shutdown` turns true, checking every `tick` which groups are due, while this node
/// leads. A group due by what this node remembers is checked against the database first: in a
/// cluster another node may have validated it since (a former leader), and it runs once per
/// interval cluster-wide.
pub(crate) async fn run(
    registry: Registry,
    leadership: Leadership,
    tick: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let new_keys = registry.new_keys_notice();
    loop {
        for policy in registry.catalog().standard_groups() {
            if !leadership.is_leader() {
                break;
            }
            validate_pending(&policy, &registry).await;
            let id = policy.group.id;
            let remembered = registry.group(id).and_then(|g| g.last_validated_at);
            if !is_due(remembered, policy.effective.key_validation_interval(), now()) {
                continue;
            }
            let stored = match groups::find(registry.db(), id).await {
                Ok(Some(row)) => row.last_validated_at,
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(group = %policy.group.name, error = %err, "reading the last validation failed");
                    continue;
                }
            };
            if !is_due(stored, policy.effective.key_validation_interval(), now()) {
                continue;
            }
            validate_group(&policy, &registry).await;
            if let Err(err) = registry.mark_validated(id, now()).await {
                tracing::warn!(group = %policy.group.name, error = %err, "recording the validation run failed");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            // Keys were added pending on this node: validate them now rather than next tick.
            () = new_keys.notified() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_due_once_its_interval_has_passed() {
        let at = now();
        let hour = Duration::from_secs(3600);
        assert!(is_due(None, hour, at), "never validated");
        assert!(!is_due(Some(at - chrono::TimeDelta::minutes(59)), hour, at));
        assert!(is_due(Some(at - chrono::TimeDelta::minutes(60)), hour, at));
        assert!(
            !is_due(Some(at + chrono::TimeDelta::minutes(5)), hour, at),
            "a clock that went back waits"
        );
    }
}
