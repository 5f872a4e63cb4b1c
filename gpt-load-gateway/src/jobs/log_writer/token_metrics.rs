//! `gpt_load_tokens_total{group, model, kind}`: the tokens upstreams reported, counted as the
//! writer receives each record (docs/USAGE.md, "Metrics").
//!
//! Clients choose the model names, so the series are bounded: the first [`MAX_SERIES`]
//! (group, model) pairs get a series of their own, and any later pair counts under the model
//! `other` of its group.

use std::collections::HashMap;

use foldhash::fast::RandomState as FastHash;

use metrics::{Counter, counter};

use crate::repo::request_logs::RequestLogRow;

/// The counter's name.
pub(crate) const TOKENS: &str = "gpt_load_tokens_total";
/// The most (group, model) pairs given a series of their own.
pub(crate) const MAX_SERIES: usize = 1_000;
/// The model label of every pair past [`MAX_SERIES`].
const OTHER: &str = "other";
/// The `kind` labels, in the order of [`Series`].
const KINDS: [&str; 4] = ["prompt", "completion", "cached", "reasoning"];

/// One (group, model) pair's counters, one per kind.
type Series = [Counter; 4];

/// The counters of the pairs seen so far, by group, then by model: a record's counters are found
/// by two lookups of its own strings, with no allocation and no label hashing by the recorder.
#[derive(Default)]
pub(super) struct TokenMetrics {
    series: HashMap<String, HashMap<String, Series, FastHash>, FastHash>,
    /// Pairs with a series of their own (the `other` series are not counted).
    pairs: usize,
}

impl std::fmt::Debug for TokenMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenMetrics")
            .field("pairs", &self.pairs)
            .finish()
    }
}

impl TokenMetrics {
    /// Counts the tokens of one log row, if its reply reported any.
    pub(super) fn count(&mut self, row: &RequestLogRow) {
        let Some(prompt) = row.prompt_tokens else {
            return;
        };
        let tokens = [
            prompt,
            row.completion_tokens.unwrap_or(0),
            row.cached_tokens.unwrap_or(0),
            row.reasoning_tokens.unwrap_or(0),
        ];
        let series = self.series_of(&row.group_name, &row.model);
        for (counter, tokens) in series.iter().zip(tokens) {
            if let Ok(tokens) = u64::try_from(tokens)
                && tokens > 0
            {
                counter.increment(tokens);
            }
        }
    }

    /// The counters of `model` in `group`: its own while the cap allows, else its group's
    /// `other`.
    fn series_of(&mut self, group: &str, model: &str) -> &Series {
        let known = self
            .series
            .get(group)
            .is_some_and(|models| models.contains_key(model));
        let label = if known || self.pairs < MAX_SERIES {
            model
        } else {
            OTHER
        };
        if !self.series.contains_key(group) {
            self.series.insert(group.to_owned(), HashMap::default());
        }
        let models = self.series.get_mut(group).expect("inserted above");
        if !models.contains_key(label) {
            if label != OTHER || model == OTHER {
                self.pairs += 1;
            }
            let series = KINDS.map(|kind| {
                counter!(TOKENS, "group" => group.to_owned(), "model" => label.to_owned(), "kind" => kind)
            });
            models.insert(label.to_owned(), series);
        }
        &models[label]
    }

    /// The model label `model` in `group` is counted under.
    #[cfg(test)]
    fn model_label<'a>(&mut self, group: &str, model: &'a str) -> &'a str {
        self.series_of(group, model);
        if self.series[group].contains_key(model) {
            model
        } else {
            OTHER
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_past_the_cap_count_as_other() {
        let mut metrics = TokenMetrics::default();
        for n in 0..MAX_SERIES {
            assert_eq!(metrics.model_label("g", &format!("m{n}")), format!("m{n}"));
        }
        assert_eq!(metrics.model_label("g", "one-more"), OTHER);
        assert_eq!(
            metrics.model_label("h", "m0"),
            OTHER,
            "pairs, not models, are capped"
        );
        assert_eq!(
            metrics.model_label("g", "m7"),
            "m7",
            "a labelled pair keeps its series"
        );
    }
}
