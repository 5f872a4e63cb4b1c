//! Background key validation: blacklisted keys are re-tested and restored when they work again.
//!
//! Every `tick` the job looks at each standard group; a group is due when its
//! `key_validation_interval_minutes` has passed since its last run. Its invalid keys are tested
//! with the channel's validation request (the group's test model and validation endpoint, sent to
//! one of its upstreams through the same client and proxy settings as traffic), at most
//! `key_validation_concurrency` at a time, each within `key_validation_timeout_seconds`. A key
//! that answers 2xx is made active again (its failures reset); the pool's events persist that.
//! Groups whose keys are all down are validated like any other, so they recover on their own.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use gpt_load_tower::{
    body::ReplayBody,
    keys::{KeyState, MemoryKeyPool},
};
use http::Request;
use tokio::{
    sync::{Semaphore, watch},
    task::JoinSet,
};
use tower::ServiceExt;

use crate::{
    catalog::{Catalog, GroupPolicy},
    proxy::UpstreamClient,
};

/// Validates the group's invalid keys once; returns how many were restored.
pub(crate) async fn validate_group(
    policy: &GroupPolicy,
    catalog: &Catalog,
    pool: &MemoryKeyPool,
    client: &UpstreamClient,
) -> usize {
    let invalid: Vec<_> = pool
        .keys(policy.name.as_str())
        .into_iter()
        .filter(|k| k.state() == KeyState::Invalid)
        .collect();
    if invalid.is_empty() {
        return 0;
    }
    let permits = Arc::new(Semaphore::new(
        policy.effective.key_validation_concurrency().max(1) as usize,
    ));
    let timeout = policy.effective.key_validation_timeout();
    let mut tasks = JoinSet::new();
    for slot in invalid {
        let Some(upstream) = catalog.upstreams.pick(policy.name.as_str()) else {
            break;
        };
        let Ok(request) = policy.channel.validation_request(
            upstream.url(),
            &policy.test_model,
            policy.validation_endpoint.as_deref(),
            slot.secret(),
        ) else {
            continue;
        };
        let (parts, body) = request.into_parts();
        let mut request = Request::from_parts(parts, ReplayBody::new(body));
        request.extensions_mut().insert(policy.client.clone());
        let (client, permits) = (client.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let valid = match tokio::time::timeout(timeout, client.oneshot(request)).await {
                Ok(Ok(res)) => res.status().is_success(),
                _ => false,
            };
            (slot.id(), valid)
        });
    }
    let mut restored = Vec::new();
    while let Some(result) = tasks.join_next().await {
        if let Ok((id, true)) = result {
            restored.push((id, KeyState::Active));
        }
    }
    let count = pool.set_states(policy.name.as_str(), restored);
    if count > 0 {
        tracing::info!(group = %policy.name, restored = count, "validation restored blacklisted keys");
    }
    count
}

/// Runs until `shutdown` turns true, checking every `tick` which groups are due.
pub(crate) async fn run(
    catalog: Catalog,
    pool: MemoryKeyPool,
    client: UpstreamClient,
    tick: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_run: HashMap<String, Instant> = HashMap::new();
    loop {
        for policy in catalog.standard_groups() {
            let due = last_run
                .get(policy.name.as_str())
                .is_none_or(|at| at.elapsed() >= policy.effective.key_validation_interval());
            if due {
                last_run.insert(policy.name.as_str().to_owned(), Instant::now());
                validate_group(&policy, &catalog, &pool, &client).await;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
