use std::{
    hash::{BuildHasher, RandomState},
    time::Duration,
};

/// How long a rate-limited key rests: the provider's word when it gave one, else an
/// exponential backoff with jitter; always between bounds.
///
/// A key's *backoff level* counts the cool-downs since its last success. Without a signal from
/// the provider the rest is `min × 2^level`, spread by ±`jitter` so that keys cooled together
/// come back apart, and clamped to `[min, max]`. With a signal (`Retry-After`, a reset header, a
/// quota's reset time) the rest is the signal, capped by `max`: a stale or hostile header never
/// locks a key away for days, and the probe that follows every rest finds out whether it
/// recovered.
///
/// ```
/// use std::time::Duration;
/// use gpt_load_tower::keys::Backoff;
///
/// let backoff = Backoff::new(Duration::from_secs(30), Duration::from_secs(3600));
/// let first = backoff.rest(0, None);
/// assert!(first >= Duration::from_secs(30) && first <= Duration::from_secs(36));
/// let fifth = backoff.rest(4, None); // 30 s × 16 = 8 min, ±20 %
/// assert!(fifth >= Duration::from_secs(384) && fifth <= Duration::from_secs(576));
/// let capped = backoff.rest(30, None); // at the maximum, the jitter only shortens
/// assert!(capped >= Duration::from_secs(2880) && capped <= Duration::from_secs(3600));
/// // The provider said when: believed, up to the maximum.
/// assert_eq!(backoff.rest(4, Some(Duration::from_secs(7))), Duration::from_secs(7));
/// assert_eq!(backoff.rest(0, Some(Duration::from_secs(86_400))), Duration::from_secs(3600));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// Spread in per mille of the rest.
    jitter_permille: u32,
}

impl Default for Backoff {
    /// 30 s doubling up to 1 h, ±20 %.
    fn default() -> Self {
        Self::new(Duration::from_secs(30), Duration::from_secs(3600))
    }
}

impl Backoff {
    /// A backoff from `min` doubling up to `max` (raised to `min` if smaller), ±20 %.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            jitter_permille: 200,
        }
    }

    /// The spread of a computed rest, as a fraction (0 to 1; default 0.2).
    #[must_use]
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter_permille = (fraction.clamp(0.0, 1.0) * 1000.0).round() as u32;
        self
    }

    /// The shortest computed rest.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The longest rest, computed or signalled.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// How long a key at backoff `level` rests, given the provider's `signal` (how long until it
    /// recovers), if any.
    pub fn rest(&self, level: u32, signal: Option<Duration>) -> Duration {
        if let Some(signal) = signal {
            return signal.min(self.max);
        }
        let base = self
            .min
            .checked_mul(1u32.checked_shl(level.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.max)
            .min(self.max);
        let spread = base.as_millis() as u64 * u64::from(self.jitter_permille) / 1000;
        let jittered = if spread == 0 {
            base
        } else {
            // Uniform in [base - spread, base + spread].
            let offset = random() % (2 * spread + 1);
            (base + Duration::from_millis(offset)).saturating_sub(Duration::from_millis(spread))
        };
        jittered.clamp(self.min, self.max)
    }
}

/// A random number: the standard library's per-process random hasher keys, advanced for each
/// call. Cool-downs are rare, so this needs no faster generator.
fn random() -> u64 {
    RandomState::new().hash_one(crate::clock::now_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(2);
    const MAX: Duration = Duration::from_secs(60);

    #[test]
    fn computed_rests_double_within_the_jitter_and_stay_in_bounds() {
        let backoff = Backoff::new(MIN, MAX);
        for level in 0..40 {
            let ideal = MIN
                .checked_mul(1u32.checked_shl(level.min(31)).unwrap_or(u32::MAX))
                .unwrap_or(MAX)
                .min(MAX);
            for _ in 0..200 {
                let rest = backoff.rest(level, None);
                assert!(rest >= MIN && rest <= MAX, "level {level}: {rest:?}");
                assert!(rest >= ideal.mul_f64(0.8).max(MIN), "level {level}: {rest:?}");
                assert!(rest <= ideal.mul_f64(1.2).min(MAX), "level {level}: {rest:?}");
            }
        }
    }

    #[test]
    fn jitter_spreads_keys_cooled_together() {
        let backoff = Backoff::new(MIN, MAX);
        let rests: std::collections::HashSet<_> = (0..50).map(|_| backoff.rest(3, None)).collect();
        assert!(rests.len() > 10, "{rests:?}");
        let exact = Backoff::new(MIN, MAX).jitter(0.0);
        assert_eq!(exact.rest(3, None), Duration::from_secs(16));
    }

    #[test]
    fn signals_are_believed_up_to_the_maximum() {
        let backoff = Backoff::new(MIN, MAX);
        assert_eq!(backoff.rest(9, Some(Duration::ZERO)), Duration::ZERO);
        assert_eq!(
            backoff.rest(0, Some(Duration::from_millis(1500))),
            Duration::from_millis(1500)
        );
        assert_eq!(backoff.rest(0, Some(Duration::from_secs(86_400 * 3))), MAX);
    }

    #[test]
    fn a_maximum_below_the_minimum_is_raised() {
        let backoff = Backoff::new(MAX, MIN);
        assert_eq!((backoff.min(), backoff.max()), (MAX, MAX));
        assert_eq!(backoff.rest(5, None), MAX);
    }
}
