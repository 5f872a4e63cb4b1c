//! Key-state gauges per group for `/metrics`, refreshed every few seconds (counting walks every
//! key, so it is kept off the request path).

use std::time::Duration;

use gpt_load_tower::keys::MemoryKeyPool;
use tokio::sync::watch;

/// `gpt_load_keys{group, state}`.
pub(crate) const KEYS: &str = "gpt_load_keys";

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
