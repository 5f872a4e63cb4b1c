//! A key's own limits (docs/LIMITS.md, "A key's own limits"): each of `rpm`, `rpd`, `tpm` and
//! `max_concurrency` the key sets replaces its group's value; the others follow the group, also
//! when the group's change. Stored as JSON in `api_keys.key_limits`.

use gpt_load_tower::keys::KeyLimits;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The limits one key sets for itself; `None` fields follow the group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyLimitOverride {
    /// Requests per minute (0 = no limit for this key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rpm: Option<u32>,
    /// Requests per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rpd: Option<u32>,
    /// Tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tpm: Option<u32>,
    /// Requests at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_concurrency: Option<u32>,
}

impl KeyLimitOverride {
    /// The stored column's override; `None` when it sets nothing or does not parse (logged).
    pub(crate) fn parse(stored: Option<&str>, key_id: i64) -> Option<Self> {
        let text = stored?;
        match serde_json::from_str::<Self>(text) {
            Ok(own) => (!own.is_empty()).then_some(own),
            Err(err) => {
                tracing::warn!(key_id, %err, "a key's own limits do not parse; it follows its group");
                None
            }
        }
    }

    /// Whether it sets nothing.
    pub(crate) fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The column's value: `None` when it sets nothing.
    pub(crate) fn stored(&self) -> Option<String> {
        (!self.is_empty()).then(|| serde_json::to_string(self).unwrap_or_default())
    }

    /// The group's limits with this key's own in their place.
    pub(crate) fn over(&self, group: KeyLimits) -> KeyLimits {
        KeyLimits::new()
            .rpm(self.rpm.unwrap_or(group.rpm))
            .rpd(self.rpd.unwrap_or(group.rpd))
            .tpm(self.tpm.unwrap_or(group.tpm))
            .max_concurrency(self.max_concurrency.unwrap_or(group.max_concurrency))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_own_limits_replace_the_groups_one_by_one() {
        let own = KeyLimitOverride::parse(Some(r#"{"rpm": 60, "tpm": 0}"#), 1).unwrap();
        let group = KeyLimits::new().rpm(3).rpd(100).tpm(5_000);
        assert_eq!(own.over(group), KeyLimits::new().rpm(60).rpd(100));
        assert_eq!(own.stored().as_deref(), Some(r#"{"rpm":60,"tpm":0}"#));
        assert_eq!(KeyLimitOverride::parse(Some("{}"), 1), None, "sets nothing");
        assert_eq!(KeyLimitOverride::parse(Some("not json"), 1), None);
        assert_eq!(KeyLimitOverride::parse(None, 1), None);
        assert_eq!(KeyLimitOverride::default().stored(), None);
    }
}
