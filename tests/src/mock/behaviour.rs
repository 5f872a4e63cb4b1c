//! Per-key scripted behaviour and the key naming convention.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

/// How the mock answers requests presenting a given upstream key.
///
/// Set explicitly with [`MockUpstream::script`](super::MockUpstream::script),
/// or implied by the key's prefix (see [`Behaviour::from_key_prefix`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Behaviour {
    /// Answer normally.
    Valid,
    /// 401 in the provider's native format; the message contains the full
    /// presented key so that redaction by a gateway can be checked.
    Unauthorized,
    /// 429 with a `Retry-After` header (whole seconds, rounded up).
    RateLimited {
        /// Value advertised in `Retry-After`.
        retry_after: Duration,
    },
    /// 500 with a native error body.
    ServerError,
    /// The given status with a native error body.
    Status(u16),
    /// Sleep this long before sending the response head, then answer normally.
    SlowFirstByte(Duration),
    /// Streaming requests: send the stream preamble and `after_frames` text
    /// frames, then abort the body so the client sees a truncated stream.
    /// Non-streaming requests: send the response head, then abort the body.
    DisconnectMidStream {
        /// Number of text-carrying frames sent before the abort.
        after_frames: usize,
    },
    /// 429 with the message "Resource has been exhausted (e.g. check quota).".
    QuotaExhausted,
    /// 429 carrying the provider's own rate-limit signal and no `Retry-After`: OpenAI's
    /// `x-ratelimit-{remaining,reset}-requests` headers, Anthropic's
    /// `anthropic-ratelimit-requests-{remaining,reset}` headers, or Gemini's
    /// `RESOURCE_EXHAUSTED` details (a `QuotaFailure` for the request's model, per minute or per
    /// day, and a `RetryInfo`). With `model`, only requests for that model are limited.
    ProviderLimit {
        /// A per-day quota (Gemini's quota id says `PerDay`) rather than a per-minute one.
        per_day: bool,
        /// When the provider says the limit resets.
        reset: Duration,
        /// The only model limited; `None` limits every model.
        model: Option<String>,
    },
    /// 400 naming the key as invalid, the way Gemini rejects one (`INVALID_ARGUMENT` with the
    /// detail reason `API_KEY_INVALID`); OpenAI- and Anthropic-format routes answer their own
    /// 400 about the key.
    InvalidKeyBadRequest,
    /// 400 saying the account is out of credit (OpenAI's `insufficient_quota` type and code,
    /// "check your plan and billing details"): a key that will not work until someone pays.
    OutOfCredit,
    /// `200` without content: a reply with no choices (OpenAI), no content blocks (Anthropic)
    /// or no candidates (Gemini); a stream that opens (a role, `message_start`) and ends
    /// without a content frame.
    EmptyReply,
    /// Fails `per_mille` of the requests with `status` (a native error body), at random from the
    /// mock's seeded generator, and answers the rest normally. Deterministic for a given
    /// [`MockConfig::seed`](super::MockConfig::seed) when requests arrive one at a time.
    Flaky {
        /// Failed requests per thousand.
        per_mille: u16,
        /// The status of a failure.
        status: u16,
    },
}

impl Behaviour {
    /// The behaviour implied by a key's prefix when it has no explicit script:
    /// `mock-401` → [`Unauthorized`](Self::Unauthorized),
    /// `mock-429` → [`RateLimited`](Self::RateLimited) (1 s),
    /// `mock-500` → [`ServerError`](Self::ServerError),
    /// `mock-slow` → [`SlowFirstByte`](Self::SlowFirstByte) (200 ms),
    /// `mock-cut` → [`DisconnectMidStream`](Self::DisconnectMidStream) (2 frames),
    /// `mock-quota` → [`QuotaExhausted`](Self::QuotaExhausted);
    /// anything else → [`Valid`](Self::Valid).
    pub fn from_key_prefix(key: &str) -> Self {
        let Some(rest) = key.strip_prefix("mock-") else {
            return Self::Valid;
        };
        if rest.starts_with("401") {
            Self::Unauthorized
        } else if rest.starts_with("429") {
            Self::RateLimited {
                retry_after: Duration::from_secs(1),
            }
        } else if rest.starts_with("500") {
            Self::ServerError
        } else if rest.starts_with("slow") {
            Self::SlowFirstByte(Duration::from_millis(200))
        } else if rest.starts_with("cut") {
            Self::DisconnectMidStream { after_frames: 2 }
        } else if rest.starts_with("quota") {
            Self::QuotaExhausted
        } else {
            Self::Valid
        }
    }
}

/// Explicit per-key scripts, consulted before the naming convention.
#[derive(Debug, Default)]
pub(crate) struct Scripts {
    map: RwLock<HashMap<String, Behaviour>>,
}

impl Scripts {
    pub(crate) fn set(&self, key: &str, behaviour: Behaviour) {
        write(&self.map).insert(key.to_owned(), behaviour);
    }

    pub(crate) fn clear(&self) {
        write(&self.map).clear();
    }

    /// The scripted behaviour for `key`, falling back to its prefix.
    pub(crate) fn resolve(&self, key: &str) -> Behaviour {
        let scripted = {
            let map = self.map.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            map.get(key).cloned()
        };
        scripted.unwrap_or_else(|| Behaviour::from_key_prefix(key))
    }
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_map_to_behaviours() {
        assert_eq!(Behaviour::from_key_prefix("sk-abc"), Behaviour::Valid);
        assert_eq!(Behaviour::from_key_prefix("mock-401-a"), Behaviour::Unauthorized);
        assert_eq!(
            Behaviour::from_key_prefix("mock-429"),
            Behaviour::RateLimited {
                retry_after: Duration::from_secs(1)
            }
        );
        assert_eq!(Behaviour::from_key_prefix("mock-500x"), Behaviour::ServerError);
        assert_eq!(
            Behaviour::from_key_prefix("mock-slow-1"),
            Behaviour::SlowFirstByte(Duration::from_millis(200))
        );
        assert_eq!(
            Behaviour::from_key_prefix("mock-cut"),
            Behaviour::DisconnectMidStream { after_frames: 2 }
        );
        assert_eq!(
            Behaviour::from_key_prefix("mock-quota-7"),
            Behaviour::QuotaExhausted
        );
        assert_eq!(Behaviour::from_key_prefix("mock-ok"), Behaviour::Valid);
    }

    #[test]
    fn scripts_override_prefix_until_cleared() {
        let scripts = Scripts::default();
        scripts.set("mock-401", Behaviour::Valid);
        assert_eq!(scripts.resolve("mock-401"), Behaviour::Valid);
        scripts.clear();
        assert_eq!(scripts.resolve("mock-401"), Behaviour::Unauthorized);
    }
}
