//! Upstream keys entering the pool: stored keys are decrypted once, here, when they enter it;
//! keys just added enter with the plain value already known.

use gpt_load_tower::{
    keys::{KeyId, KeySlot, KeyState},
    secret::ApiKey,
};

use std::{sync::Arc, time::SystemTime};

use chrono::NaiveDateTime;

use crate::{
    crypto::KeyCipher,
    models::{KeyStatus, now},
    repo::keys::PoolKey,
};

impl KeyStatus {
    /// How a pool state is stored. Cooling is a short, in-memory pause: stored as `active`.
    pub(crate) fn of_state(state: KeyState) -> Self {
        match state {
            KeyState::Invalid => Self::Invalid,
            KeyState::Disabled => Self::Disabled,
            // Active, cooling, and any state a newer library adds: usable.
            _ => Self::Active,
        }
    }

    /// The pool state a key with this status starts in.
    pub(crate) fn state(self) -> KeyState {
        match self {
            Self::Active => KeyState::Active,
            Self::Invalid => KeyState::Invalid,
            Self::Disabled => KeyState::Disabled,
        }
    }
}

/// The pool slot of a stored key whose plain value is already known (just added).
pub(crate) fn slot(id: i64, plain: &str, state: KeyState, failures: i64) -> KeySlot {
    let failures = u32::try_from(failures.max(0)).unwrap_or(u32::MAX);
    KeySlot::with_state(KeyId(id as u64), ApiKey::new(plain), state, failures)
}

/// The pool state a stored key starts in: gpt-load's `status` decides whether it is usable; a
/// usable key our lifecycle still marks `pending` waits for its validation.
pub(crate) fn stored_state(status: &str, lifecycle_state: &str) -> KeyState {
    match KeyStatus::of_stored(status) {
        KeyStatus::Active if lifecycle_state == KeyState::Pending.as_str() => KeyState::Pending,
        status => status.state(),
    }
}

/// The pool slot of a stored key, decrypting its value; `None` when it does not decrypt (a
/// wrong `ENCRYPTION_KEY`). gpt-load's `status` decides whether it is usable; whether it is
/// still pending, a cool-down still running, the backoff level and the key's history come from
/// the lifecycle columns.
pub(crate) fn slot_of_row((row, lifecycle): &PoolKey, cipher: &KeyCipher) -> Option<KeySlot> {
    let plain = cipher.decrypt(&row.key_value).ok()?;
    let rest = lifecycle
        .cooling_until
        .and_then(|until| (until - now()).to_std().ok())
        .unwrap_or_default();
    let wall = |t: Option<NaiveDateTime>| t.map(|t| SystemTime::from(t.and_utc()));
    let last_error = Some(lifecycle.last_error_message.as_str())
        .filter(|m| !m.is_empty())
        .map(Arc::from);
    Some(
        slot(
            row.id,
            &plain,
            stored_state(&row.status, &lifecycle.state),
            row.failure_count,
        )
        .with_rest(rest, u32::try_from(lifecycle.backoff_level).unwrap_or(0))
        .with_history(
            wall(lifecycle.last_success_at),
            wall(lifecycle.last_failure_at),
            last_error,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::SealedKey;

    #[test]
    fn statuses_round_trip_and_unknown_reads_active() {
        for status in [KeyStatus::Active, KeyStatus::Invalid, KeyStatus::Disabled] {
            assert_eq!(KeyStatus::parse(status.as_str()), Some(status));
            assert_eq!(KeyStatus::of_state(status.state()), status);
        }
        assert_eq!(KeyStatus::of_stored("banned"), KeyStatus::Active);
        assert_eq!(KeyStatus::of_state(KeyState::Cooling), KeyStatus::Active);
        assert_eq!(KeyStatus::of_state(KeyState::Pending), KeyStatus::Active);
    }

    #[test]
    fn a_usable_key_marked_pending_loads_pending_and_the_status_wins_otherwise() {
        assert_eq!(stored_state("active", "pending"), KeyState::Pending);
        assert_eq!(stored_state("active", "cooling"), KeyState::Active);
        // gpt-load blacklisted or an operator disabled it since: the status decides.
        assert_eq!(stored_state("invalid", "pending"), KeyState::Invalid);
        assert_eq!(stored_state("disabled", "pending"), KeyState::Disabled);
    }

    #[test]
    fn sealed_keys_make_fresh_active_rows() {
        let cipher = KeyCipher::from_password(Some("registry-test-encryption-key"));
        let sealed = SealedKey::seal(&cipher, "sk-plain-0123456789");
        assert_ne!(sealed.value, "sk-plain-0123456789");
        assert_eq!(sealed.hash, cipher.hash("sk-plain-0123456789"));
        let row = sealed.row(7, crate::models::now());
        assert_eq!((row.group_id, row.status, row.request_count), (7, "active", 0));
    }
}
