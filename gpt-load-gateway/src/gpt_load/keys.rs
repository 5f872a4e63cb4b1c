//! Upstream keys between gpt-load's cipher and ours.

use sha2::{Digest, Sha256};

use crate::crypto::KeyCipher;
use crate::crypto::gpt_load::GptLoadCipher;

/// Why a gpt-load key value cannot be read. Never carries the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyError {
    /// The value is gpt-load ciphertext and no gpt-load `ENCRYPTION_KEY` was given.
    #[error("the keys are encrypted by gpt-load, and no ENCRYPTION_KEY was given to read them")]
    KeyMissing,
    /// The given `ENCRYPTION_KEY` does not decrypt the value.
    #[error(
        "the keys do not decrypt with the given ENCRYPTION_KEY (gpt-load encrypted them with another one)"
    )]
    WrongKey,
}

/// Reads a key as gpt-load stored it and stores it as we do.
#[derive(Clone, Debug)]
pub(crate) struct KeyTranslator {
    source: GptLoadCipher,
    target: KeyCipher,
}

impl KeyTranslator {
    /// Keys written by gpt-load with `source`, rewritten with `target`.
    pub(crate) fn new(source: GptLoadCipher, target: KeyCipher) -> Self {
        Self { source, target }
    }

    /// The cipher the values are rewritten with.
    pub(crate) fn target(&self) -> &KeyCipher {
        &self.target
    }

    /// The plaintext of a value gpt-load stored with `stored_hash` as its `key_hash`.
    ///
    /// A value whose hash is the plain SHA-256 of the value is plaintext whatever the mode: a
    /// gpt-load database that had encryption turned on without migrating its keys holds both.
    ///
    /// # Errors
    ///
    /// [`KeyError::KeyMissing`] for ciphertext without a gpt-load key; [`KeyError::WrongKey`]
    /// for ciphertext the key does not open.
    pub(crate) fn plaintext(&self, stored: &str, stored_hash: &str) -> Result<String, KeyError> {
        if stored.is_empty() {
            return Ok(String::new());
        }
        let is_plain =
            || !stored_hash.is_empty() && hex::encode(Sha256::digest(stored.as_bytes())) == stored_hash;
        if self.source.is_enabled() {
            return match self.source.decrypt(stored) {
                Ok(plain) => Ok(plain),
                Err(_) if is_plain() || !looks_like_ciphertext(stored) => Ok(stored.to_owned()),
                Err(_) => Err(KeyError::WrongKey),
            };
        }
        if !is_plain() && looks_like_ciphertext(stored) {
            return Err(KeyError::KeyMissing);
        }
        Ok(stored.to_owned())
    }

    /// The stored value and `key_hash` of `plain` in our format.
    pub(crate) fn store(&self, plain: &str) -> (String, String) {
        (self.target.encrypt(plain), self.target.hash(plain))
    }
}

/// Whether `stored` has the shape of gpt-load ciphertext: lowercase hex of at least a nonce
/// and a tag. No provider issues keys of that shape.
pub(crate) fn looks_like_ciphertext(stored: &str) -> bool {
    stored.len() >= 2 * (12 + 16)
        && stored.len().is_multiple_of(2)
        && stored.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::gpt_load::TEST_CIPHER as GPT_LOAD;

    #[test]
    fn reads_encrypted_plain_and_mixed_databases() {
        let plain_db = GptLoadCipher::from_password(None);
        let encrypted = GPT_LOAD.encrypt("sk-one");
        let hash = GPT_LOAD.hash("sk-one");

        let with_key = KeyTranslator::new(GPT_LOAD.clone(), KeyCipher::disabled());
        assert_eq!(with_key.plaintext(&encrypted, &hash).unwrap(), "sk-one");
        // A plain row in an encrypted database.
        assert_eq!(
            with_key.plaintext("sk-two", &plain_db.hash("sk-two")).unwrap(),
            "sk-two"
        );
        assert_eq!(with_key.plaintext("", "").unwrap(), "");

        let wrong = KeyTranslator::new(
            GptLoadCipher::from_password(Some("not it")),
            KeyCipher::disabled(),
        );
        assert_eq!(wrong.plaintext(&encrypted, &hash), Err(KeyError::WrongKey));

        let without_key = KeyTranslator::new(plain_db.clone(), KeyCipher::disabled());
        assert_eq!(
            without_key.plaintext(&encrypted, &hash),
            Err(KeyError::KeyMissing)
        );
        assert_eq!(
            without_key.plaintext("sk-two", &plain_db.hash("sk-two")).unwrap(),
            "sk-two"
        );
        // No usable hash, not ciphertext-shaped: plaintext.
        assert_eq!(without_key.plaintext("AIzaSy-three", "").unwrap(), "AIzaSy-three");
    }

    #[test]
    fn stores_in_our_format() {
        let translator = KeyTranslator::new(GptLoadCipher::from_password(None), KeyCipher::disabled());
        let (value, hash) = translator.store("sk-one");
        assert_eq!(value, "sk-one");
        assert_eq!(hash, KeyCipher::disabled().hash("sk-one"));
        assert!(looks_like_ciphertext(&GPT_LOAD.encrypt("")));
        assert!(!looks_like_ciphertext(
            "sk-proj-0123456789abcdef0123456789abcdef0123456789abcdef"
        ));
    }
}
