//! Smooth weighted round robin, the algorithm nginx uses for upstream peers.
//!
//! Every pick adds each eligible peer's weight to its running score, takes the peer with the
//! highest score and subtracts the sum of the eligible weights from it. Over any window of
//! `sum(weights)` picks each peer is chosen exactly `weight` times, and heavy peers are spread
//! out instead of bunched (`a a b a c a a` for weights 5, 1, 1). Used by the upstream balancer
//! and by aggregate-group routing.

/// The mutable state of one smooth weighted round robin.
#[derive(Debug, Clone)]
pub(crate) struct SmoothWeighted {
    weights: Box<[i64]>,
    scores: Box<[i64]>,
}

impl SmoothWeighted {
    /// A selector over peers with these weights; weight 0 is never picked.
    pub(crate) fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let weights: Box<[i64]> = weights.into_iter().map(i64::from).collect();
        let scores = vec![0; weights.len()].into_boxed_slice();
        Self { weights, scores }
    }

    /// Picks the next peer among those for which `eligible(index)` holds.
    pub(crate) fn pick(&mut self, mut eligible: impl FnMut(usize) -> bool) -> Option<usize> {
        let mut total = 0;
        let mut best: Option<usize> = None;
        for (i, &weight) in self.weights.iter().enumerate() {
            if weight == 0 || !eligible(i) {
                continue;
            }
            self.scores[i] += weight;
            total += weight;
            if best.is_none_or(|b| self.scores[i] > self.scores[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        self.scores[best] -= total;
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(weights: &[u32], picks: usize) -> Vec<usize> {
        let mut wrr = SmoothWeighted::new(weights.iter().copied());
        (0..picks).map(|_| wrr.pick(|_| true).unwrap()).collect()
    }

    #[test]
    fn matches_nginx_sequence() {
        // nginx's documented example: weights a=5, b=1, c=1 give a a b a c a a.
        assert_eq!(sequence(&[5, 1, 1], 7), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(sequence(&[5, 1, 1], 14)[7..], [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn exact_distribution_per_period() {
        let weights = [3, 2, 1, 0, 4];
        let picks = sequence(&weights, 10 * 100);
        for (i, &w) in weights.iter().enumerate() {
            assert_eq!(
                picks.iter().filter(|&&p| p == i).count(),
                w as usize * 100,
                "peer {i}"
            );
        }
    }

    #[test]
    fn equal_weights_alternate() {
        assert_eq!(sequence(&[1, 1, 1], 6), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn skips_ineligible_and_zero_weight() {
        let mut wrr = SmoothWeighted::new([1, 0, 1]);
        let picks: Vec<_> = (0..4).map(|_| wrr.pick(|i| i != 2).unwrap()).collect();
        assert_eq!(picks, [0, 0, 0, 0]);
        assert_eq!(SmoothWeighted::new([0, 0]).pick(|_| true), None);
        assert_eq!(SmoothWeighted::new([]).pick(|_| true), None);
        assert_eq!(SmoothWeighted::new([2]).pick(|_| false), None);
    }
}
