//! The writer's running sums for `usage_hourly` between two writes.
//!
//! Every record adds to one row, named by its hour, group, key, model and access key. The map
//! is split so that a record finds its row by its own model name (`&str`): once a row is known,
//! counting a record allocates nothing, where a map keyed by [`UsageKey`] would need an owned
//! copy of the model for every lookup.

use std::collections::HashMap;

use foldhash::fast::RandomState as FastHash;

use chrono::NaiveDateTime;

use crate::repo::usage::{UsageCounts, UsageKey, UsageSums};

/// The columns of a [`UsageKey`] other than the model: hour, group, key, access key.
pub(super) type RowIds = (NaiveDateTime, i64, i64, i64);

/// Usage sums by `usage_hourly` row, taken as [`UsageCounts`] for a write.
#[derive(Debug, Default)]
pub(super) struct UsageTally {
    rows: HashMap<RowIds, HashMap<String, UsageSums, FastHash>, FastHash>,
}

impl UsageTally {
    pub(super) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub(super) fn clear(&mut self) {
        self.rows.clear();
    }

    /// Adds `sums` to the row of `model` among `ids`.
    pub(super) fn add(&mut self, ids: RowIds, model: &str, sums: &UsageSums) {
        let models = self.rows.entry(ids).or_default();
        match models.get_mut(model) {
            Some(row) => row.add(sums),
            None => {
                models.insert(model.to_owned(), *sums);
            }
        }
    }

    /// Adds counts taken earlier back in (a write that will not be tried again).
    pub(super) fn give_back(&mut self, counts: UsageCounts) {
        for (key, sums) in counts {
            let ids = (key.hour, key.group_id, key.key_id, key.access_key_id);
            self.rows
                .entry(ids)
                .or_default()
                .entry(key.model)
                .or_default()
                .add(&sums);
        }
    }

    /// Everything tallied, in the order rows are written; leaves the tally empty.
    pub(super) fn take(&mut self) -> UsageCounts {
        let mut counts = UsageCounts::new();
        for ((hour, group_id, key_id, access_key_id), models) in self.rows.drain() {
            for (model, sums) in models {
                let key = UsageKey {
                    hour,
                    group_id,
                    key_id,
                    model,
                    access_key_id,
                };
                counts.entry(key).or_default().add(&sums);
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn hour(h: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 12, 6)
            .and_then(|d| d.and_hms_opt(h, 0, 0))
            .expect("valid hour")
    }

    fn sums(requests: i64, prompt: i64) -> UsageSums {
        UsageSums {
            requests,
            prompt_tokens: prompt,
            ..UsageSums::default()
        }
    }

    fn key(h: u32, group_id: i64, key_id: i64, model: &str, access_key_id: i64) -> UsageKey {
        UsageKey {
            hour: hour(h),
            group_id,
            key_id,
            model: model.to_owned(),
            access_key_id,
        }
    }

    #[test]
    fn sums_each_row_apart_and_takes_them_all() {
        let mut tally = UsageTally::default();
        assert!(tally.is_empty());
        tally.add((hour(9), 1, 7, 0), "gpt-4o", &sums(1, 10));
        tally.add((hour(9), 1, 7, 0), "gpt-4o", &sums(1, 5));
        tally.add((hour(9), 1, 7, 0), "gpt-4o-mini", &sums(1, 2));
        tally.add((hour(9), 1, 7, 3), "gpt-4o", &sums(1, 1));
        tally.add((hour(10), 1, 7, 0), "gpt-4o", &sums(1, 4));
        let counts = tally.take();
        assert!(tally.is_empty(), "taking empties the tally");
        let expected: UsageCounts = [
            (key(9, 1, 7, "gpt-4o", 0), sums(2, 15)),
            (key(9, 1, 7, "gpt-4o-mini", 0), sums(1, 2)),
            (key(9, 1, 7, "gpt-4o", 3), sums(1, 1)),
            (key(10, 1, 7, "gpt-4o", 0), sums(1, 4)),
        ]
        .into_iter()
        .collect();
        assert_eq!(counts, expected);
    }

    #[test]
    fn counts_given_back_merge_with_new_ones() {
        let mut tally = UsageTally::default();
        tally.add((hour(9), 1, 7, 0), "gpt-4o", &sums(1, 10));
        let taken = tally.take();
        tally.add((hour(9), 1, 7, 0), "gpt-4o", &sums(2, 1));
        tally.give_back(taken);
        let expected: UsageCounts = [(key(9, 1, 7, "gpt-4o", 0), sums(3, 11))].into_iter().collect();
        assert_eq!(tally.take(), expected);
        tally.add((hour(9), 1, 7, 0), "gpt-4o", &sums(1, 1));
        tally.clear();
        assert!(tally.is_empty() && tally.take().is_empty());
    }
}
