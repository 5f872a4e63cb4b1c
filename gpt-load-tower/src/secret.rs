//! Upstream and proxy keys that never show themselves.
//!
//! [`ApiKey`] wraps a key so that `Debug` and `Display` print only its mask; the raw value is
//! reachable through [`ApiKey::expose`], which makes every place that needs it easy to find.
//! [`mask`] and [`redact`] are the helpers used for logs and for upstream error text that echoes
//! the key back.
//!
//! # Example
//!
//! ```
//! use gpt_load_tower::secret::{mask, redact, ApiKey};
//!
//! let key = ApiKey::new("sk-abcdefghijklmnopqrstuvwxyz");
//! assert_eq!(format!("{key}"), "sk-a****wxyz");
//! assert_eq!(format!("{key:?}"), "ApiKey(sk-a****wxyz)");
//! assert_eq!(mask("short-key"), "****");
//! assert_eq!(
//!     redact("Incorrect API key provided: sk-abcdefghijklmnopqrstuvwxyz.", key.expose()),
//!     "Incorrect API key provided: sk-a****wxyz."
//! );
//! ```

use std::{borrow::Cow, fmt};

/// Keys shorter than this are masked completely: showing eight characters of them would give
/// away too large a share of the secret.
const PARTIAL_MASK_MIN_CHARS: usize = 16;

/// A secret key (upstream API key or proxy key).
///
/// The value is stored once, without a shared count: a pool of a million keys holds a million
/// of them, so cloning copies it. The request path never clones one: a selected key and an
/// attempt's [`AttemptKey`](crate::context::AttemptKey) reach it through the pool's slot.
/// Equality compares the values and is **not** constant-time; use it for maps, not for checking a
/// presented credential (the [`auth`](crate::auth) module does that in constant time).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ApiKey(Box<str>);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<Box<str>>) -> Self {
        Self(key.into())
    }

    /// The raw key. Call this only where the key must leave the process (an upstream request).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The masked form, safe for logs and the console.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }

    /// Replaces every occurrence of this key inside `text` with its mask.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        redact(text, &self.0)
    }

    /// Length of the key in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the key is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for ApiKey {
    fn from(key: &str) -> Self {
        Self::new(key)
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> Self {
        Self::new(key)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", mask(&self.0))
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask(&self.0))
    }
}

/// Masks a key: the first 4 and last 4 characters around `****` for keys of 16 characters or
/// more, `****` alone for shorter keys.
pub fn mask(key: &str) -> String {
    let chars = key.chars().count();
    if chars < PARTIAL_MASK_MIN_CHARS {
        return "****".to_owned();
    }
    let head_end = key.char_indices().nth(4).map_or(key.len(), |(i, _)| i);
    let tail_start = key.char_indices().nth(chars - 4).map_or(key.len(), |(i, _)| i);
    let mut masked = String::with_capacity(12);
    masked.push_str(&key[..head_end]);
    masked.push_str("****");
    masked.push_str(&key[tail_start..]);
    masked
}

/// Replaces every occurrence of `secret` inside `text` with [`mask`]`(secret)`.
///
/// Borrows `text` unchanged when the secret does not occur (or is empty).
pub fn redact<'a>(text: &'a str, secret: &str) -> Cow<'a, str> {
    if secret.is_empty() || !text.contains(secret) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.replace(secret, &mask(secret)))
}

/// [`redact`] for bytes that may not be UTF-8 (an upstream response body).
pub fn redact_bytes<'a>(data: &'a [u8], secret: &str) -> Cow<'a, [u8]> {
    let needle = secret.as_bytes();
    if needle.is_empty() || data.len() < needle.len() || !data.windows(needle.len()).any(|w| w == needle) {
        return Cow::Borrowed(data);
    }
    let masked = mask(secret);
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(needle) {
            out.extend_from_slice(masked.as_bytes());
            i += needle.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_bytes() {
        let key = "sk-0123456789abcdefXYZ";
        let data = [b"\xff bad ".as_slice(), key.as_bytes(), b" end"].concat();
        let out = redact_bytes(&data, key);
        assert!(!out.windows(key.len()).any(|w| w == key.as_bytes()));
        assert_eq!(&*out, b"\xff bad sk-0****fXYZ end".as_slice());
        assert!(matches!(redact_bytes(b"clean", key), Cow::Borrowed(_)));
    }

    #[test]
    fn masks_long_keys_partially() {
        assert_eq!(mask("sk-1234567890abcdef"), "sk-1****cdef");
        assert_eq!(mask("abcdefghijklmnop"), "abcd****mnop");
    }

    #[test]
    fn masks_short_keys_fully() {
        for key in ["", "a", "12345678", "abcdefghijklmno"] {
            assert_eq!(mask(key), "****", "{key}");
        }
    }

    #[test]
    fn masks_multibyte_keys_on_char_boundaries() {
        assert_eq!(mask("ключключключключключ"), "ключ****ключ");
    }

    #[test]
    fn debug_and_display_never_show_the_key() {
        let key = ApiKey::new("sk-live-0123456789abcdef");
        for shown in [format!("{key}"), format!("{key:?}"), format!("{:?}", Some(&key))] {
            assert!(!shown.contains("0123456789abcdef"), "{shown}");
        }
    }

    #[test]
    fn redacts_every_occurrence() {
        let key = "AIzaSyD-0123456789abcdefghij";
        let text = format!("bad key {key}; again {key}");
        let out = redact(&text, key);
        assert!(!out.contains(key));
        assert_eq!(out.matches("AIza****ghij").count(), 2);
        assert!(matches!(redact("nothing here", key), Cow::Borrowed(_)));
        assert!(matches!(redact("text", ""), Cow::Borrowed(_)));
    }
}
