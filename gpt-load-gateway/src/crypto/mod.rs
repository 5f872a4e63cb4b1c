//! Secrets at rest: encryption and hashing of upstream API keys.
//!
//! Upstream keys are stored in `api_keys.key_value` and `request_logs.key_value`. A
//! [`KeyCipher`] built once at start from `ENCRYPTION_KEY` turns a plaintext key into its stored
//! form and back, and computes the `key_hash` column used for de-duplication and exact search.
//!
//! - **Disabled** (`ENCRYPTION_KEY` unset): values are stored as they are and `key_hash` is the
//!   lowercase hex SHA-256 of the key, exactly as gpt-load computes it without encryption, so an
//!   imported gpt-load database keeps matching. A stored value that carries our version prefix
//!   is refused: the database was encrypted and the key is missing.
//! - **Enabled**: 64 bytes are derived from the password with Argon2id and split into an
//!   XChaCha20-Poly1305 key and an independent HMAC-SHA256 key. Every value gets a fresh random
//!   24-byte nonce and is stored as `v1:` followed by the unpadded base64url encoding of
//!   `nonce ‖ ciphertext ‖ tag`; `key_hash` is the lowercase hex HMAC-SHA256 under the HMAC key.
//!
//! In both modes the empty string is stored as the empty string and hashes to the empty string
//! (gpt-load does the same): it is how a log row without a key is written, and it hides nothing.
//!
//! Stored format `v1` (all text, safe in any `TEXT` column):
//!
//! ```text
//! v1:<base64url, no padding>( nonce: 24 bytes ‖ ciphertext: len(plaintext) bytes ‖ tag: 16 bytes )
//! ```
//!
//! gpt-load's own encrypted format (PBKDF2 + AES-256-GCM, hex) is [`gpt_load`]'s: adoption and
//! `import` read it once and re-encrypt with this cipher; `export-gpt-load` writes it back.
//!
//! The same cipher stores the proxy key lists ([`proxy_keys`]). The re-encryption logic behind
//! `migrate-keys` lives in [`migrate`].

pub(crate) mod gpt_load;
pub(crate) mod migrate;
pub(crate) mod proxy_keys;

use std::fmt;

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, Generate, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Prefix of the stored format written by this build.
const V1_PREFIX: &str = "v1:";

/// Argon2 salt for deriving the keys from `ENCRYPTION_KEY`.
///
/// A fixed salt is acceptable here. A salt exists to stop one precomputation from attacking
/// many hashed passwords at once, as in a table of user passwords. This input is one operator
/// secret, which should be a long random string, and it never leaves the configuration. The
/// derivation must also give the same keys on every node and after every restart without
/// storing anything next to the data, so a random salt would need a place of its own. The
/// version tag lets a future format change the salt without ambiguity.
const KDF_SALT: &[u8] = b"gpt-load-rs/key-derivation/v1";

/// Argon2id memory cost in KiB (19 MiB), the OWASP-recommended minimum for Argon2id.
const KDF_MEMORY_KIB: u32 = 19 * 1024;
/// Argon2id passes over memory.
const KDF_ITERATIONS: u32 = 2;
/// Argon2id lanes.
const KDF_PARALLELISM: u32 = 1;

/// Bytes of each derived key: the first half keys the cipher, the second half keys the HMAC.
const SUBKEY_LEN: usize = 32;
/// XChaCha20-Poly1305 nonce length.
const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
const TAG_LEN: usize = 16;

/// Why a stored value could not be read, or why a migration must not start.
///
/// Messages never contain key material or plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CryptoError {
    /// A key is configured but the stored value is plaintext (no version prefix).
    #[error("stored value is not encrypted but an encryption key is configured")]
    NotEncrypted,
    /// The stored value is encrypted but no key is configured.
    #[error("stored value is encrypted but ENCRYPTION_KEY is not set")]
    KeyMissing,
    /// The stored value carries a version prefix this build does not know.
    #[error("stored value uses unsupported encryption format {version}; this build reads v1")]
    UnknownVersion {
        /// The prefix found, such as `v2`.
        version: String,
    },
    /// The text after the prefix is not unpadded base64url.
    #[error("stored value is not valid base64url after its version prefix")]
    BadEncoding,
    /// The decoded value is shorter than a nonce and a tag.
    #[error("stored value is too short: {len} bytes, at least 40 expected")]
    TooShort {
        /// Decoded length in bytes.
        len: usize,
    },
    /// The tag did not verify: the key is wrong or the value was altered.
    #[error("stored value does not decrypt: wrong encryption key or tampered value")]
    Authentication,
    /// The value decrypted but is not UTF-8; this build never writes such a value.
    #[error("decrypted value is not valid utf-8")]
    NotUtf8,
    /// Migration: the sampled values are encrypted but no source key was given.
    #[error("the stored keys are encrypted but no source key (--from) was given")]
    SourceKeyMissing,
    /// Migration: a source key was given but the sampled values are plaintext.
    #[error("a source key (--from) was given but the stored keys are not encrypted")]
    SourceNotEncrypted,
    /// Migration: the source key does not decrypt the sampled values.
    #[error("the source key (--from) does not decrypt the stored keys: wrong key")]
    WrongSourceKey,
    /// Migration: some sampled values are encrypted and some are not.
    #[error(
        "the stored keys are in an inconsistent state: {encrypted} of {sampled} sampled values \
         are encrypted"
    )]
    MixedSamples {
        /// Sampled values that carry a version prefix.
        encrypted: usize,
        /// Non-empty values sampled.
        sampled: usize,
    },
    /// Migration: stored hashes do not match the values read with the source key.
    #[error(
        "{mismatched} of {sampled} sampled key hashes do not match their values under the source \
         key: wrong key, or values encrypted in another format such as gpt-load's"
    )]
    HashMismatch {
        /// Samples whose stored hash differs.
        mismatched: usize,
        /// Non-empty values sampled.
        sampled: usize,
    },
}

/// Encrypts, decrypts and hashes upstream keys; see the [module docs](self).
///
/// Build it once at start with [`KeyCipher::from_password`] and share it: construction runs
/// Argon2id, every other call is cheap. `Debug` shows only whether encryption is on.
#[derive(Clone)]
pub(crate) struct KeyCipher {
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    Disabled,
    Enabled(Box<DerivedKeys>),
}

/// Keys derived from the password. Private: they never leave this module. The bytes are not
/// wiped on drop (no zeroize dependency); they live as long as the process anyway.
#[derive(Clone)]
struct DerivedKeys {
    aead: XChaCha20Poly1305,
    /// HMAC state already keyed; cloned for each hash so the key is not re-processed.
    mac: Hmac<Sha256>,
}

impl KeyCipher {
    /// A cipher that stores plaintext and hashes with SHA-256.
    pub(crate) fn disabled() -> Self {
        Self { mode: Mode::Disabled }
    }

    /// Builds the cipher for `ENCRYPTION_KEY`; `None` or an empty string disables encryption.
    ///
    /// With a password this runs Argon2id (19 MiB, 2 passes, 1 lane), which takes tens of
    /// milliseconds in a release build: call it once at start, never per request.
    pub(crate) fn from_password(password: Option<&str>) -> Self {
        match password {
            None | Some("") => Self::disabled(),
            Some(password) => Self {
                mode: Mode::Enabled(Box::new(DerivedKeys::derive(password))),
            },
        }
    }

    /// Whether values are encrypted.
    pub(crate) fn is_enabled(&self) -> bool {
        matches!(self.mode, Mode::Enabled(_))
    }

    /// Turns a plaintext key into its stored form (unchanged when disabled or empty).
    ///
    /// # Panics
    ///
    /// If the system random generator fails, or for a value of hundreds of gigabytes; neither
    /// happens with API keys on a working system.
    pub(crate) fn encrypt(&self, plain: &str) -> String {
        let Mode::Enabled(keys) = &self.mode else {
            return plain.to_owned();
        };
        if plain.is_empty() {
            return String::new();
        }
        let raw = seal_under_fresh_nonce(&keys.aead, plain);
        let mut out = String::with_capacity(V1_PREFIX.len() + raw.len().div_ceil(3) * 4);
        out.push_str(V1_PREFIX);
        URL_SAFE_NO_PAD.encode_string(&raw, &mut out);
        out
    }

    /// Reads a stored value back into the plaintext key.
    ///
    /// # Errors
    ///
    /// Disabled: [`CryptoError::KeyMissing`] when the value looks encrypted. Enabled:
    /// [`CryptoError::NotEncrypted`], [`CryptoError::UnknownVersion`],
    /// [`CryptoError::BadEncoding`], [`CryptoError::TooShort`] or
    /// [`CryptoError::Authentication`] (wrong key or tampered value).
    pub(crate) fn decrypt(&self, stored: &str) -> Result<String, CryptoError> {
        match &self.mode {
            Mode::Disabled if looks_encrypted(stored) => Err(CryptoError::KeyMissing),
            Mode::Disabled => Ok(stored.to_owned()),
            Mode::Enabled(_) if stored.is_empty() => Ok(String::new()),
            Mode::Enabled(keys) => keys.open(stored),
        }
    }

    /// The `key_hash` of a plaintext key: lowercase hex SHA-256 when disabled, lowercase hex
    /// HMAC-SHA256 under the derived HMAC key when enabled; empty for an empty key.
    pub(crate) fn hash(&self, plain: &str) -> String {
        if plain.is_empty() {
            return String::new();
        }
        match &self.mode {
            Mode::Disabled => format!("{:x}", Sha256::digest(plain.as_bytes())),
            Mode::Enabled(keys) => {
                let mut mac = keys.mac.clone();
                mac.update(plain.as_bytes());
                format!("{:x}", mac.finalize().into_bytes())
            }
        }
    }
}

impl fmt::Debug for KeyCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCipher")
            .field("enabled", &self.is_enabled())
            .finish_non_exhaustive()
    }
}

impl DerivedKeys {
    fn derive(password: &str) -> Self {
        let params = Params::new(
            KDF_MEMORY_KIB,
            KDF_ITERATIONS,
            KDF_PARALLELISM,
            Some(2 * SUBKEY_LEN),
        )
        .expect("constant Argon2 parameters are within the allowed ranges");
        let mut derived = [0_u8; 2 * SUBKEY_LEN];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(password.as_bytes(), KDF_SALT, &mut derived)
            .expect("Argon2 accepts any password shorter than 4 GiB with this salt and output");
        let (cipher_key, mac_key) = derived.split_at(SUBKEY_LEN);
        let mut cipher_key_bytes = [0_u8; SUBKEY_LEN];
        cipher_key_bytes.copy_from_slice(cipher_key);
        Self {
            aead: XChaCha20Poly1305::new(&Key::from(cipher_key_bytes)),
            mac: <Hmac<Sha256> as Mac>::new_from_slice(mac_key).expect("HMAC accepts keys of any length"),
        }
    }

    fn open(&self, stored: &str) -> Result<String, CryptoError> {
        let body = match stored.strip_prefix(V1_PREFIX) {
            Some(body) => body,
            None => {
                return Err(match version_tag(stored) {
                    Some(version) => CryptoError::UnknownVersion {
                        version: version.to_owned(),
                    },
                    None => CryptoError::NotEncrypted,
                });
            }
        };
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| CryptoError::BadEncoding)?;
        let too_short = CryptoError::TooShort { len: raw.len() };
        let Some((nonce, sealed)) = raw.split_first_chunk::<NONCE_LEN>() else {
            return Err(too_short);
        };
        if sealed.len() < TAG_LEN {
            return Err(too_short);
        }
        let plain = self
            .aead
            .decrypt(&XNonce::from(*nonce), sealed)
            .map_err(|_| CryptoError::Authentication)?;
        String::from_utf8(plain).map_err(|_| CryptoError::NotUtf8)
    }
}

/// Whether a stored value carries a version prefix (`v` + 1–3 digits + `:`), that is, was
/// written by an enabled [`KeyCipher`] of this or a later format.
///
/// A plaintext upstream key would have to start with something like `v1:` to be mistaken for an
/// encrypted value; the formats of the supported providers never do.
pub(crate) fn looks_encrypted(stored: &str) -> bool {
    version_tag(stored).is_some()
}

/// `nonce ‖ ciphertext` of `plain` under a fresh random nonce: the layout of both stored formats
/// (this gateway's and gpt-load's) before their text encoding.
///
/// # Panics
///
/// If the system random generator fails, or for a value of many gigabytes (both ciphers refuse
/// those); neither happens with API keys on a working system.
pub(crate) fn seal_under_fresh_nonce<A: Aead>(aead: &A, plain: &str) -> Vec<u8> {
    let nonce = chacha20poly1305::aead::Nonce::<A>::generate();
    let sealed = aead
        .encrypt(&nonce, plain.as_bytes())
        .expect("AEAD ciphers only refuse messages of many gigabytes");
    let mut raw = Vec::with_capacity(nonce.len() + sealed.len());
    raw.extend_from_slice(&nonce);
    raw.extend_from_slice(&sealed);
    raw
}

/// The version tag (`v1`, `v2`, …) before the first `:`, if the value has one.
fn version_tag(stored: &str) -> Option<&str> {
    let (tag, _) = stored.split_once(':')?;
    let digits = tag.strip_prefix('v')?;
    let valid = (1..=3).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    valid.then_some(tag)
}

/// Ciphers shared by the tests of this module and its children: Argon2 is slow in debug
/// builds, so each password is derived once per test binary.
#[cfg(test)]
mod test_ciphers {
    use std::sync::LazyLock;

    use super::KeyCipher;

    pub(super) const PASSWORD_A: &str = "correct horse battery staple A";
    pub(super) const PASSWORD_B: &str = "a different operator secret B";

    pub(super) static A: LazyLock<KeyCipher> = LazyLock::new(|| KeyCipher::from_password(Some(PASSWORD_A)));
    pub(super) static B: LazyLock<KeyCipher> = LazyLock::new(|| KeyCipher::from_password(Some(PASSWORD_B)));
}

#[cfg(test)]
mod tests;
