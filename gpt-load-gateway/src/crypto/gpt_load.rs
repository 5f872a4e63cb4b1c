//! gpt-load's own cipher, read when a gpt-load database is adopted or imported and written when
//! one is exported for a rollback.
//!
//! gpt-load 1.4 stores upstream keys (`api_keys.key_value`, `request_logs.key_value`) as follows:
//!
//! - **`ENCRYPTION_KEY` unset**: the plaintext; `key_hash` = lowercase hex SHA-256.
//! - **`ENCRYPTION_KEY` set**: a 32-byte key = PBKDF2-HMAC-SHA256(password, salt
//!   `gpt-load-encryption-v1`, 100,000 iterations); the value is lowercase hex of
//!   `nonce (12) ‖ ciphertext ‖ tag (16)` under AES-256-GCM, a fresh nonce per value, the empty
//!   string included; `key_hash` = lowercase hex HMAC-SHA256 under the same 32-byte key.
//!
//! The hash of the empty string is the empty string in both modes. Only the stored format is
//! shared with gpt-load; this module is used off the request path only.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// PBKDF2 salt gpt-load derives its key with.
const SALT: &[u8] = b"gpt-load-encryption-v1";
/// PBKDF2 iterations gpt-load uses.
const ITERATIONS: u32 = 100_000;
/// AES-GCM nonce length.
const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
const TAG_LEN: usize = 16;

/// Why a gpt-load value could not be read. Messages never contain key material or plaintext.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum GptLoadCryptoError {
    /// The value is not hex, so gpt-load's cipher did not write it.
    #[error("the value is not hex-encoded, so it was not encrypted by gpt-load")]
    NotHex,
    /// The decoded value is shorter than a nonce and a tag.
    #[error("the value is too short to be encrypted by gpt-load: {len} bytes, at least 28")]
    TooShort {
        /// Decoded length in bytes.
        len: usize,
    },
    /// The tag did not verify: wrong `ENCRYPTION_KEY`, or an altered value.
    #[error("the value does not decrypt with this ENCRYPTION_KEY")]
    Authentication,
    /// The plaintext is not UTF-8.
    #[error("the decrypted value is not valid utf-8")]
    NotUtf8,
}

/// Encrypts, decrypts and hashes values exactly as gpt-load 1.4 does; see the
/// [module docs](self). Build it once: construction runs PBKDF2.
#[derive(Clone)]
pub(crate) struct GptLoadCipher {
    key: Option<Box<EnabledKey>>,
}

#[derive(Clone)]
struct EnabledKey {
    aead: Aes256Gcm,
    mac: Hmac<Sha256>,
}

impl GptLoadCipher {
    /// The cipher gpt-load used with this `ENCRYPTION_KEY` (`None` or empty: no encryption).
    pub(crate) fn from_password(password: Option<&str>) -> Self {
        let key = password.filter(|p| !p.is_empty()).map(|password| {
            let mut derived = [0_u8; 32];
            pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), SALT, ITERATIONS, &mut derived);
            Box::new(EnabledKey {
                aead: Aes256Gcm::new(&Key::<Aes256Gcm>::from(derived)),
                mac: <Hmac<Sha256> as Mac>::new_from_slice(&derived)
                    .expect("HMAC accepts keys of any length"),
            })
        });
        Self { key }
    }

    /// Whether values are encrypted.
    pub(crate) fn is_enabled(&self) -> bool {
        self.key.is_some()
    }

    /// The plaintext of a value gpt-load stored (as it is when encryption is off).
    ///
    /// # Errors
    ///
    /// With encryption on: a value that is not hex, too short, or does not authenticate.
    pub(crate) fn decrypt(&self, stored: &str) -> Result<String, GptLoadCryptoError> {
        let Some(key) = &self.key else {
            return Ok(stored.to_owned());
        };
        let raw = hex::decode(stored).map_err(|_| GptLoadCryptoError::NotHex)?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(GptLoadCryptoError::TooShort { len: raw.len() });
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).expect("split at the nonce length");
        let plain = key
            .aead
            .decrypt(&nonce, sealed)
            .map_err(|_| GptLoadCryptoError::Authentication)?;
        String::from_utf8(plain).map_err(|_| GptLoadCryptoError::NotUtf8)
    }

    /// The value gpt-load would store for `plain` (a fresh random nonce per call).
    pub(crate) fn encrypt(&self, plain: &str) -> String {
        let Some(key) = &self.key else {
            return plain.to_owned();
        };
        hex::encode(super::seal_under_fresh_nonce(&key.aead, plain))
    }

    /// gpt-load's `key_hash` of `plain`: HMAC-SHA256 or SHA-256, lowercase hex; empty for empty.
    pub(crate) fn hash(&self, plain: &str) -> String {
        if plain.is_empty() {
            return String::new();
        }
        match &self.key {
            None => hex::encode(Sha256::digest(plain.as_bytes())),
            Some(key) => {
                let mut mac = key.mac.clone();
                mac.update(plain.as_bytes());
                hex::encode(mac.finalize().into_bytes())
            }
        }
    }
}

impl fmt::Debug for GptLoadCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GptLoadCipher")
            .field("enabled", &self.is_enabled())
            .finish_non_exhaustive()
    }
}

/// A cipher with an `ENCRYPTION_KEY`, shared by the tests here and in [`crate::gpt_load`]:
/// PBKDF2 is slow in debug builds, so it is derived once per test binary.
#[cfg(test)]
pub(crate) static TEST_CIPHER: std::sync::LazyLock<GptLoadCipher> =
    std::sync::LazyLock::new(|| GptLoadCipher::from_password(Some("fixture-gpt-load-encryption-key")));

#[cfg(test)]
mod tests {
    use super::TEST_CIPHER as CIPHER;
    use super::*;

    #[test]
    fn round_trips_and_uses_a_fresh_nonce() {
        let one = CIPHER.encrypt("sk-live-123");
        let two = CIPHER.encrypt("sk-live-123");
        assert_ne!(one, two);
        assert_eq!(one.len(), 2 * (NONCE_LEN + "sk-live-123".len() + TAG_LEN));
        assert!(
            one.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(CIPHER.decrypt(&one).unwrap(), "sk-live-123");
        assert_eq!(CIPHER.decrypt(&two).unwrap(), "sk-live-123");
        // gpt-load encrypts the empty string too.
        assert_eq!(CIPHER.decrypt(&CIPHER.encrypt("")).unwrap(), "");
    }

    #[test]
    fn refuses_what_it_did_not_write() {
        assert_eq!(CIPHER.decrypt("sk-plain"), Err(GptLoadCryptoError::NotHex));
        assert_eq!(
            CIPHER.decrypt("00ff"),
            Err(GptLoadCryptoError::TooShort { len: 2 })
        );
        let other = GptLoadCipher::from_password(Some("another key"));
        assert_eq!(
            other.decrypt(&CIPHER.encrypt("sk-live-123")),
            Err(GptLoadCryptoError::Authentication)
        );
        let mut tampered = CIPHER.encrypt("sk-live-123").into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            CIPHER.decrypt(std::str::from_utf8(&tampered).unwrap()),
            Err(GptLoadCryptoError::Authentication)
        );
    }

    #[test]
    fn hashes_as_gpt_load_does() {
        let plain = GptLoadCipher::from_password(None);
        assert!(!plain.is_enabled());
        assert_eq!(plain.decrypt("sk-plain").unwrap(), "sk-plain");
        assert_eq!(plain.encrypt("sk-plain"), "sk-plain");
        // SHA-256("abc"), the FIPS 180-2 test vector.
        assert_eq!(
            plain.hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(plain.hash(""), "");
        assert_eq!(CIPHER.hash(""), "");
        assert_eq!(CIPHER.hash("abc").len(), 64);
        assert_ne!(CIPHER.hash("abc"), plain.hash("abc"));
    }

    /// PBKDF2-HMAC-SHA256 with gpt-load's parameters, checked against an independent
    /// implementation (Python's `hashlib.pbkdf2_hmac`).
    #[test]
    fn derives_the_key_gpt_load_derives() {
        let mut derived = [0_u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(b"fixture-gpt-load-encryption-key", SALT, ITERATIONS, &mut derived);
        assert_eq!(hex::encode(derived), EXPECTED_FIXTURE_KEY);
    }

    const EXPECTED_FIXTURE_KEY: &str = "af763fc38a3c078f73852450d4e1f52ab0fa2c61c32024c10366fa061131ead6";
}
