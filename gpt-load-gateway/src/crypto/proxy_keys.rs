//! The stored form of proxy key lists: `system_settings.proxy_keys` and `groups.proxy_keys`.
//!
//! A list (`sk-a,sk-b`) is stored as one value through the [`KeyCipher`]: `v1:…` when
//! `ENCRYPTION_KEY` is set, as it is otherwise. Unlike upstream keys, a proxy key list has no
//! hash column: the proxy compares presented keys against the decrypted lists the catalog holds
//! in memory, so the database never needs to look a proxy key up.
//!
//! Lists written before proxy keys were encrypted are plain text in a database whose upstream
//! keys are encrypted. The cipher's versioned encoding tells them apart: with encryption on, a
//! value without a version prefix (`v` + digits + `:`) is such a legacy plain text list. It is
//! read as it is, and [`needs_sealing`] finds it so that start-up (or `migrate-keys`) encrypts
//! it in place. A value with a prefix must decrypt. A proxy key that itself starts with a
//! version prefix would be ambiguous, so [`check_key`] refuses it on every write.

use super::{CryptoError, KeyCipher, looks_encrypted};

/// The stored form of a sanitised proxy key list (`""` stays `""`).
pub(crate) fn seal(cipher: &KeyCipher, list: &str) -> String {
    cipher.encrypt(list)
}

/// The proxy key list stored as `stored`.
///
/// With encryption on, a value without a version prefix is a list written before proxy keys
/// were encrypted and is returned as it is.
///
/// # Errors
///
/// [`CryptoError::KeyMissing`] when the value is encrypted and encryption is off; any
/// decryption error (such as [`CryptoError::Authentication`] for a wrong `ENCRYPTION_KEY`).
pub(crate) fn open(cipher: &KeyCipher, stored: &str) -> Result<String, CryptoError> {
    match cipher.decrypt(stored) {
        Err(CryptoError::NotEncrypted) => Ok(stored.to_owned()),
        other => other,
    }
}

/// The proxy key list of `owner` (a group name, or `the global setting`) stored as `stored`;
/// a value that does not decrypt is logged without its content and read as no key at all, so
/// that a wrong `ENCRYPTION_KEY` accepts fewer keys, never other ones.
pub(crate) fn open_or_none(cipher: &KeyCipher, stored: &str, owner: &str) -> String {
    open(cipher, stored).unwrap_or_else(|err| {
        tracing::warn!(owner, "proxy keys: {err}; none of them is accepted");
        String::new()
    })
}

/// Whether `stored` is a plain text list that `cipher` should encrypt in place.
pub(crate) fn needs_sealing(cipher: &KeyCipher, stored: &str) -> bool {
    cipher.is_enabled() && !stored.is_empty() && !looks_encrypted(stored)
}

/// Why a proxy key cannot be stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a proxy key must not start with `v`, 1 to 3 digits and `:` (the prefix of encrypted values)")]
pub(crate) struct AmbiguousKey;

/// Refuses a proxy key that would read back as an encrypted value.
///
/// # Errors
///
/// [`AmbiguousKey`] for a key such as `v1:abc`.
pub(crate) fn check_key(key: &str) -> Result<(), AmbiguousKey> {
    if looks_encrypted(key) {
        Err(AmbiguousKey)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_ciphers::{A, B};
    use super::*;

    const LIST: &str = "sk-proxy-one,sk-proxy-two";

    #[test]
    fn a_sealed_list_opens_with_the_same_key_only() {
        let stored = seal(&A, LIST);
        assert!(looks_encrypted(&stored) && !stored.contains("sk-proxy"));
        assert_eq!(open(&A, &stored).unwrap(), LIST);
        assert!(matches!(open(&B, &stored), Err(CryptoError::Authentication)));
        assert!(matches!(
            open(&KeyCipher::disabled(), &stored),
            Err(CryptoError::KeyMissing)
        ));
        assert!(!needs_sealing(&A, &stored));
    }

    #[test]
    fn legacy_plain_text_opens_and_needs_sealing_only_when_encryption_is_on() {
        let off = KeyCipher::disabled();
        assert_eq!(open(&A, LIST).unwrap(), LIST);
        assert!(needs_sealing(&A, LIST));
        assert_eq!(open(&off, LIST).unwrap(), LIST);
        assert!(!needs_sealing(&off, LIST));
        assert_eq!(seal(&off, LIST), LIST);
    }

    #[test]
    fn the_empty_list_stays_empty() {
        assert_eq!(seal(&A, ""), "");
        assert_eq!(open(&A, "").unwrap(), "");
        assert!(!needs_sealing(&A, ""));
    }

    #[test]
    fn keys_that_look_encrypted_are_refused() {
        assert_eq!(check_key("v1:abc"), Err(AmbiguousKey));
        assert_eq!(check_key("v12:abc"), Err(AmbiguousKey));
        assert_eq!(check_key("sk-v1:abc"), Ok(()));
        assert_eq!(check_key("v1abc"), Ok(()));
    }
}
