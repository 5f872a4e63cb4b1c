//! The pure logic of `migrate-keys`: re-encrypting stored values and refusing a wrong source key.
//!
//! The command samples stored values and calls [`check_from_key`] (and, with the stored hashes
//! at hand, [`check_sample_hashes`]) before it changes anything. Then it maps every stored value
//! through [`reencrypt`] and writes the results in one transaction. `from` and `to` may each be
//! disabled: enabling is disabled → enabled, disabling is enabled → disabled, rotating is
//! enabled → enabled.

use super::{CryptoError, KeyCipher, looks_encrypted, proxy_keys};

/// Re-encrypts one stored value: decrypts it with `from`, encrypts it with `to`.
///
/// Returns the new stored value and the new `key_hash` of the plaintext under `to`. Works for
/// `api_keys.key_value` and `request_logs.key_value` alike; an empty value stays empty.
///
/// # Errors
///
/// Whatever [`KeyCipher::decrypt`] returns for `value` under `from`.
pub(crate) fn reencrypt(
    value: &str,
    from: &KeyCipher,
    to: &KeyCipher,
) -> Result<(String, String), CryptoError> {
    let plain = from.decrypt(value)?;
    Ok((to.encrypt(&plain), to.hash(&plain)))
}

/// Refuses to start a migration whose source cipher cannot read the sampled stored values.
///
/// Empty values are ignored; no samples at all is accepted (nothing to migrate).
///
/// # Errors
///
/// - [`CryptoError::MixedSamples`]: some samples are encrypted and some are not;
/// - [`CryptoError::SourceKeyMissing`]: `from` is disabled but the samples are encrypted;
/// - [`CryptoError::SourceNotEncrypted`]: `from` is enabled but the samples are plaintext;
/// - [`CryptoError::WrongSourceKey`]: `from` does not decrypt a sample;
/// - any other decryption error for a malformed sample.
pub(crate) fn check_from_key(samples: &[&str], from: &KeyCipher) -> Result<(), CryptoError> {
    let values = || samples.iter().copied().filter(|value| !value.is_empty());
    let sampled = values().count();
    let encrypted = values().filter(|value| looks_encrypted(value)).count();
    if sampled == 0 {
        return Ok(());
    }
    if encrypted != 0 && encrypted != sampled {
        return Err(CryptoError::MixedSamples { encrypted, sampled });
    }
    match (from.is_enabled(), encrypted == sampled) {
        (false, false) => Ok(()),
        (false, true) => Err(CryptoError::SourceKeyMissing),
        (true, false) => Err(CryptoError::SourceNotEncrypted),
        (true, true) => values().try_for_each(|value| match from.decrypt(value) {
            Ok(_) => Ok(()),
            Err(CryptoError::Authentication) => Err(CryptoError::WrongSourceKey),
            Err(other) => Err(other),
        }),
    }
}

/// Checks sampled `(stored value, stored key_hash)` rows against `from`: every value must
/// decrypt and hash to its stored hash.
///
/// Run after [`check_from_key`]. It also catches what decryption alone cannot: values that only
/// look like plaintext, such as a gpt-load database encrypted with its own `ENCRYPTION_KEY`
/// (hex text whose stored hash is an HMAC). Rows with an empty value or an empty hash (never
/// hashed) are skipped.
///
/// # Errors
///
/// [`CryptoError::HashMismatch`] when any hash differs, [`CryptoError::WrongSourceKey`] when
/// `from` does not decrypt a value, any other decryption error for a malformed value.
pub(crate) fn check_sample_hashes(rows: &[(&str, &str)], from: &KeyCipher) -> Result<(), CryptoError> {
    let mut sampled = 0;
    let mut mismatched = 0;
    for &(stored, hash) in rows {
        if stored.is_empty() || hash.is_empty() {
            continue;
        }
        let plain = from.decrypt(stored).map_err(|error| match error {
            CryptoError::Authentication => CryptoError::WrongSourceKey,
            other => other,
        })?;
        sampled += 1;
        if from.hash(&plain) != hash {
            mismatched += 1;
        }
    }
    if mismatched == 0 {
        Ok(())
    } else {
        Err(CryptoError::HashMismatch { mismatched, sampled })
    }
}

/// Re-encrypts one stored proxy key list; `None` for an empty list (nothing to write).
///
/// A list stored in plain text while `from` is enabled (written before proxy keys were
/// encrypted) is read as it is.
///
/// # Errors
///
/// Whatever [`proxy_keys::open`] returns for `stored` under `from`.
pub(crate) fn reseal_list(
    stored: &str,
    from: &KeyCipher,
    to: &KeyCipher,
) -> Result<Option<String>, CryptoError> {
    if stored.is_empty() {
        return Ok(None);
    }
    let list = proxy_keys::open(from, stored)?;
    Ok(Some(proxy_keys::seal(to, &list)))
}

/// Refuses to start a migration whose source cipher cannot read every stored proxy key list.
///
/// Every encrypted list must decrypt under `from`; plain text lists are accepted in any case
/// (written before proxy keys were encrypted, or by a database that never was).
///
/// # Errors
///
/// [`CryptoError::SourceKeyMissing`] when `from` is disabled and a list is encrypted,
/// [`CryptoError::WrongSourceKey`] when `from` does not decrypt one, any other decryption error
/// for a malformed list.
pub(crate) fn check_proxy_key_lists(lists: &[&str], from: &KeyCipher) -> Result<(), CryptoError> {
    lists
        .iter()
        .filter(|list| looks_encrypted(list))
        .try_for_each(|list| match proxy_keys::open(from, list) {
            Ok(_) => Ok(()),
            Err(CryptoError::KeyMissing) => Err(CryptoError::SourceKeyMissing),
            Err(CryptoError::Authentication) => Err(CryptoError::WrongSourceKey),
            Err(other) => Err(other),
        })
}

#[cfg(test)]
mod tests {
    use super::super::test_ciphers::{A, B};
    use super::*;

    const KEY: &str = "sk-proj-0123456789abcdefghijklmnopqrstuvwxyz";

    #[test]
    fn reencrypt_enables_encryption() {
        let off = KeyCipher::disabled();
        let (stored, hash) = reencrypt(KEY, &off, &A).unwrap();
        assert!(looks_encrypted(&stored));
        assert_eq!(A.decrypt(&stored).unwrap(), KEY);
        assert_eq!(hash, A.hash(KEY));
    }

    #[test]
    fn reencrypt_disables_encryption() {
        let off = KeyCipher::disabled();
        let (stored, hash) = reencrypt(&A.encrypt(KEY), &A, &off).unwrap();
        assert_eq!(stored, KEY);
        assert_eq!(hash, off.hash(KEY));
    }

    #[test]
    fn reencrypt_rotates_the_key() {
        let old = A.encrypt(KEY);
        let (stored, hash) = reencrypt(&old, &A, &B).unwrap();
        assert_eq!(B.decrypt(&stored).unwrap(), KEY);
        assert_eq!(hash, B.hash(KEY));
        assert!(matches!(A.decrypt(&stored), Err(CryptoError::Authentication)));
    }

    #[test]
    fn reencrypt_keeps_empty_values_empty() {
        assert_eq!(
            reencrypt("", &KeyCipher::disabled(), &A).unwrap(),
            (String::new(), String::new())
        );
    }

    #[test]
    fn reencrypt_refuses_a_wrong_source() {
        let err = reencrypt(&A.encrypt(KEY), &B, &KeyCipher::disabled()).unwrap_err();
        assert!(matches!(err, CryptoError::Authentication));
    }

    #[test]
    fn check_from_key_accepts_the_right_source() {
        let off = KeyCipher::disabled();
        let encrypted = [A.encrypt(KEY), A.encrypt("sk-other"), String::new()];
        let encrypted: Vec<&str> = encrypted.iter().map(String::as_str).collect();
        check_from_key(&encrypted, &A).unwrap();
        check_from_key(&[KEY, "sk-other", ""], &off).unwrap();
        check_from_key(&[], &A).unwrap();
    }

    #[test]
    fn check_from_key_refuses_a_wrong_key() {
        let stored = A.encrypt(KEY);
        let err = check_from_key(&[&stored], &B).unwrap_err();
        assert!(matches!(err, CryptoError::WrongSourceKey));
        assert_eq!(
            err.to_string(),
            "the source key (--from) does not decrypt the stored keys: wrong key"
        );
    }

    #[test]
    fn check_from_key_refuses_encrypted_values_without_a_source_key() {
        let stored = A.encrypt(KEY);
        let err = check_from_key(&[&stored], &KeyCipher::disabled()).unwrap_err();
        assert!(matches!(err, CryptoError::SourceKeyMissing));
        assert_eq!(
            err.to_string(),
            "the stored keys are encrypted but no source key (--from) was given"
        );
    }

    #[test]
    fn check_from_key_refuses_a_source_key_for_plaintext_values() {
        let err = check_from_key(&[KEY], &A).unwrap_err();
        assert!(matches!(err, CryptoError::SourceNotEncrypted));
        assert_eq!(
            err.to_string(),
            "a source key (--from) was given but the stored keys are not encrypted"
        );
    }

    #[test]
    fn check_from_key_refuses_a_mixed_state() {
        let stored = A.encrypt(KEY);
        let err = check_from_key(&[&stored, KEY, "sk-third"], &A).unwrap_err();
        assert!(matches!(
            err,
            CryptoError::MixedSamples {
                encrypted: 1,
                sampled: 3
            }
        ));
        assert_eq!(
            err.to_string(),
            "the stored keys are in an inconsistent state: 1 of 3 sampled values are encrypted"
        );
    }

    #[test]
    fn check_sample_hashes_accepts_matching_rows() {
        let stored = A.encrypt(KEY);
        let hash = A.hash(KEY);
        check_sample_hashes(&[(&stored, &hash), ("", ""), (&stored, "")], &A).unwrap();
        let off = KeyCipher::disabled();
        check_sample_hashes(&[(KEY, &off.hash(KEY))], &off).unwrap();
    }

    #[test]
    fn check_sample_hashes_detects_values_encrypted_in_another_format() {
        // Looks like plaintext to a disabled cipher, but its hash is keyed: the rows were
        // written by something else that encrypts (gpt-load's hex AES-GCM, for instance).
        let foreign = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let keyed_hash = A.hash(KEY);
        let err = check_sample_hashes(&[(foreign, &keyed_hash)], &KeyCipher::disabled()).unwrap_err();
        assert!(matches!(
            err,
            CryptoError::HashMismatch {
                mismatched: 1,
                sampled: 1
            }
        ));
    }

    #[test]
    fn reseal_list_enables_rotates_and_disables() {
        let off = KeyCipher::disabled();
        let list = "sk-proxy-a,sk-proxy-b";
        let under_a = reseal_list(list, &off, &A).unwrap().unwrap();
        assert_eq!(A.decrypt(&under_a).unwrap(), list);
        let under_b = reseal_list(&under_a, &A, &B).unwrap().unwrap();
        assert_eq!(B.decrypt(&under_b).unwrap(), list);
        assert_eq!(reseal_list(&under_b, &B, &off).unwrap().unwrap(), list);
        assert_eq!(reseal_list("", &A, &B).unwrap(), None);
    }

    #[test]
    fn reseal_list_encrypts_a_legacy_plain_list_under_an_enabled_source() {
        let list = "sk-proxy-legacy";
        let sealed = reseal_list(list, &A, &B).unwrap().unwrap();
        assert_eq!(B.decrypt(&sealed).unwrap(), list);
    }

    #[test]
    fn check_proxy_key_lists_refuses_a_source_that_cannot_read_them() {
        let sealed = A.encrypt("sk-proxy-a");
        check_proxy_key_lists(&[&sealed, "sk-plain", ""], &A).unwrap();
        check_proxy_key_lists(&["sk-plain", ""], &KeyCipher::disabled()).unwrap();
        assert!(matches!(
            check_proxy_key_lists(&[&sealed], &B),
            Err(CryptoError::WrongSourceKey)
        ));
        assert!(matches!(
            check_proxy_key_lists(&["sk-plain", &sealed], &KeyCipher::disabled()),
            Err(CryptoError::SourceKeyMissing)
        ));
    }

    #[test]
    fn check_sample_hashes_refuses_a_wrong_key() {
        let stored = A.encrypt(KEY);
        let hash = A.hash(KEY);
        let err = check_sample_hashes(&[(&stored, &hash)], &B).unwrap_err();
        assert!(matches!(err, CryptoError::WrongSourceKey));
    }
}
