//! Key-state and key-limit gauges per group for `/metrics`, refreshed every few seconds
//! (counting walks every key, so it is kept off the request path).

use std::time::Duration;

use gpt_load_tower::keys::MemoryKeyPool;
use tokio::sync::watch;

/// `gpt_load_keys{group, state}`.
pub(crate) const KEYS: &str = "gpt_load_keys";
/// `gpt_load_keys_at_limit{group}`: usable keys one of their limits keeps out now.
pub(crate) const KEYS_AT_LIMIT: &str = "gpt_load_keys_at_limit";
/// `gpt_load_key_rpm_headroom{group}`: requests the group's keys with `key_rpm` may still take
/// in this minute, summed (one series per group, whatever the number of keys).
pub(crate) const KEY_RPM_HEADROOM: &str = "gpt_load_key_rpm_headroom";

/// Sets the gauges once.
pub(crate) fn refresh(pool: &MemoryKeyPool) {
    for group in pool.groups() {
        let Some(stats) = pool.stats(group.as_str()) else {
            continue;
        };
        for (state, count) in [
            ("active", stats.active),
            ("degraded", stats.degraded),
            ("cooling", stats.cooling),
            ("invalid", stats.invalid),
            ("disabled", stats.disabled),
        ] {
            metrics::gauge!(KEYS, "group" => group.shared(), "state" => state).set(count as f64);
        }
        metrics::gauge!(KEYS_AT_LIMIT, "group" => group.shared()).set(stats.at_limit as f64);
        metrics::gauge!(KEY_RPM_HEADROOM, "group" => group.shared()).set(stats.rpm_headroom as f64);
    }
}

/// Refreshes every `every` until `shutdown` turns true.
pub(crate) async fn run(pool: MemoryKeyPool, every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        refresh(&pool);
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
