//! Upstream keys entering and leaving the registry: the stored statuses, the one way a new key
//! is sealed for the `api_keys` table, and loading stored keys into the pool (decrypted once,
//! here, when they enter it).

use chrono::NaiveDateTime;
use gpt_load_tower::{
    keys::{KeyId, KeySlot, KeyState},
    secret::ApiKey,
};

use crate::{
    crypto::KeyCipher,
    models::{ApiKeyRow, NewApiKey},
};

/// A key's status as stored in `api_keys.status` (gpt-load's values plus `disabled`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum KeyStatus {
    Active,
    Invalid,
    Disabled,
}

impl KeyStatus {
    /// The stored text.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Invalid => "invalid",
            Self::Disabled => "disabled",
        }
    }

    /// A submitted status; `None` for anything else.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "invalid" => Some(Self::Invalid),
            "disabled" => Some(Self::Disabled),
            _ => None,
        }
    }

    /// How a stored status reads. Unknown values (from a newer or foreign database) are treated
    /// as active so keys are not silently lost; they are corrected on the next write.
    pub(crate) fn of_stored(text: &str) -> Self {
        Self::parse(text).unwrap_or(Self::Active)
    }

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

/// A new key in its stored form: encrypted value and lookup hash, computed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SealedKey {
    pub(crate) value: String,
    pub(crate) hash: String,
}

impl SealedKey {
    /// Seals a plain key with `cipher`.
    pub(crate) fn seal(cipher: &KeyCipher, plain: &str) -> Self {
        Self {
            value: cipher.encrypt(plain),
            hash: cipher.hash(plain),
        }
    }

    /// Its row in `group_id`: active, no notes, fresh counters.
    pub(crate) fn row(&self, group_id: i64, at: NaiveDateTime) -> NewApiKey<'_> {
        self.row_with_status(group_id, KeyStatus::Active, at)
    }

    /// Its row in `group_id` with `status`.
    pub(crate) fn row_with_status(
        &self,
        group_id: i64,
        status: KeyStatus,
        at: NaiveDateTime,
    ) -> NewApiKey<'_> {
        NewApiKey {
            key_value: &self.value,
            key_hash: &self.hash,
            group_id,
            status: status.as_str(),
            notes: "",
            request_count: 0,
            failure_count: 0,
            created_at: at,
            updated_at: at,
        }
    }
}

/// The pool slot of a stored key whose plain value is already known (just added).
pub(crate) fn slot(id: i64, plain: &str, status: KeyStatus, failures: i64) -> KeySlot {
    let failures = u32::try_from(failures.max(0)).unwrap_or(u32::MAX);
    KeySlot::with_state(KeyId(id as u64), ApiKey::new(plain), status.state(), failures)
}

/// The pool slot of a stored row, decrypting its value; `None` when it does not decrypt (a
/// wrong `ENCRYPTION_KEY`).
pub(crate) fn slot_of_row(row: &ApiKeyRow, cipher: &KeyCipher) -> Option<KeySlot> {
    let plain = cipher.decrypt(&row.key_value).ok()?;
    Some(slot(
        row.id,
        &plain,
        KeyStatus::of_stored(&row.status),
        row.failure_count,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_unknown_reads_active() {
        for status in [KeyStatus::Active, KeyStatus::Invalid, KeyStatus::Disabled] {
            assert_eq!(KeyStatus::parse(status.as_str()), Some(status));
            assert_eq!(KeyStatus::of_state(status.state()), status);
        }
        assert_eq!(KeyStatus::of_stored("banned"), KeyStatus::Active);
        assert_eq!(KeyStatus::of_state(KeyState::Cooling), KeyStatus::Active);
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
