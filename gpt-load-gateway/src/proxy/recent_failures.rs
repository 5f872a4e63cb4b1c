//! The last failed attempts of each group, kept in memory for
//! `GET /api/groups/{id}/key-health`: which key failed, with what status, what the failure meant
//! for the key and the upstream's reason. Fed from the request records on their way to the log
//! writer; a successful attempt costs nothing here, a failed one a short lock.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use gpt_load_tower::{context::GroupName, keys::KeyId, log::RequestRecord};

/// Failed attempts kept per group.
const PER_GROUP: usize = 20;

/// One failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FailedAttempt {
    pub(crate) at: SystemTime,
    pub(crate) key_id: Option<KeyId>,
    pub(crate) masked_key: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) status: u16,
    /// What the failure meant for the key (`failure`, `cool_down`, `transient`, …); `None` when
    /// no upstream answered.
    pub(crate) outcome: Option<&'static str>,
    /// The operator rule that decided the outcome, if one did.
    pub(crate) rule: Option<Arc<str>>,
    /// The upstream's message or the gateway's error, redacted.
    pub(crate) reason: Option<String>,
}

/// See the [module docs](self). Cloning shares it.
#[derive(Clone, Debug, Default)]
pub(crate) struct RecentFailures {
    groups: Arc<Mutex<HashMap<GroupName, VecDeque<FailedAttempt>>>>,
}

impl RecentFailures {
    /// Notes `record` if it is a failed attempt.
    pub(crate) fn note(&self, record: &RequestRecord) {
        if record.success {
            return;
        }
        let failed = FailedAttempt {
            at: record.timestamp,
            key_id: record.key_id,
            masked_key: record.masked_key.clone(),
            model: record.model.clone(),
            status: record.status,
            outcome: record.outcome,
            rule: record.rule.clone(),
            reason: record.error.clone(),
        };
        let mut groups = self
            .groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let recent = groups.entry(record.group.clone()).or_default();
        if recent.len() == PER_GROUP {
            recent.pop_front();
        }
        recent.push_back(failed);
    }

    /// The group's last failed attempts, newest first.
    pub(crate) fn of(&self, group: &str) -> Vec<FailedAttempt> {
        let groups = self
            .groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        groups
            .get(group)
            .map(|recent| recent.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets a group (deleted or renamed).
    pub(crate) fn forget(&self, group: &str) {
        self.groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(group);
    }
}
