//! `gpt_load_tokens_total{group, model, kind}`: the tokens upstreams reported, counted as the
//! writer receives each record (docs/USAGE.md, "Metrics").
//!
//! Clients choose the model names, so the series are bounded: the first [`MAX_SERIES`]
//! (group, model) pairs get a series of their own, and any later pair counts under the model
//! `other` of its group.

use std::collections::HashSet;

use metrics::counter;

use crate::repo::request_logs::RequestLogRow;

/// The counter's name.
pub(crate) const TOKENS: &str = "gpt_load_tokens_total";
/// The most (group, model) pairs given a series of their own.
pub(crate) const MAX_SERIES: usize = 1_000;
/// The model label of every pair past [`MAX_SERIES`].
const OTHER: &str = "other";

/// The pairs given a series so far.
#[derive(Debug, Default)]
pub(super) struct TokenMetrics {
    labelled: HashSet<(String, String)>,
}

impl TokenMetrics {
    /// Counts the tokens of one log row, if its reply reported any.
    pub(super) fn count(&mut self, row: &RequestLogRow) {
        let Some(prompt) = row.prompt_tokens else {
            return;
        };
        let model = self.model_label(&row.group_name, &row.model).to_owned();
        let kinds = [
            ("prompt", prompt),
            ("completion", row.completion_tokens.unwrap_or(0)),
            ("cached", row.cached_tokens.unwrap_or(0)),
            ("reasoning", row.reasoning_tokens.unwrap_or(0)),
        ];
        for (kind, tokens) in kinds {
            if let Ok(tokens) = u64::try_from(tokens)
                && tokens > 0
            {
                counter!(TOKENS, "group" => row.group_name.clone(), "model" => model.clone(), "kind" => kind)
                    .increment(tokens);
            }
        }
    }

    /// The model label of `model` in `group`: the model itself while the cap allows.
    fn model_label<'a>(&mut self, group: &str, model: &'a str) -> &'a str {
        let pair = (group.to_owned(), model.to_owned());
        if self.labelled.contains(&pair) {
            return model;
        }
        if self.labelled.len() < MAX_SERIES {
            self.labelled.insert(pair);
            return model;
        }
        OTHER
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
