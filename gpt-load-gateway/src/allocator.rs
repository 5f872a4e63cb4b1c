//! The process's memory allocator: jemalloc, with options compiled in.
//!
//! Against glibc's allocator, jemalloc takes a tenth off the instructions of a proxied request,
//! serves 15-16 % more requests per second on one core, and gives the memory of closed
//! connections back to the system (bench/results/2026-12-08-allocator-jemalloc.md). Its options,
//! set by `JEMALLOC_SYS_WITH_MALLOC_CONF` in `.cargo/config.toml` and compiled into jemalloc by
//! its build script (`_RJEM_MALLOC_CONF` in the environment overrides them at start):
//!
//! - `background_thread:true`: freed pages are returned on jemalloc's own thread, never on the
//!   runtime's while it serves requests.
//! - `dirty_decay_ms:1000`, `muzzy_decay_ms:0`: pages freed go back to the system within about
//!   a second, unmapped outright (pages only marked as free with `MADV_FREE` still count as
//!   resident until the kernel needs them).
//! - `oversize_threshold:1048576`: allocations of 1 MiB and more — in practice request bodies
//!   being buffered — come from an arena that returns them to the system as they are freed.
//!   Without it, the buffers a burst of large uploads grows through and drops (the shed ones
//!   included) stay resident as dirty pages for the decay time, and the process outgrows
//!   `MAX_INFLIGHT_BODY_MB` by tens of MiB (`tests/tests/body_memory.rs`).

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The options the gateway's memory bounds rely on, as jemalloc spells them.
const REQUIRED: [&str; 4] = [
    "background_thread:true",
    "dirty_decay_ms:1000",
    "muzzy_decay_ms:0",
    "oversize_threshold:1048576",
];

/// A warning when jemalloc was built without [`REQUIRED`] (a build that did not read
/// `.cargo/config.toml`): the body budget then no longer bounds resident memory.
pub(crate) fn missing_options() -> Option<String> {
    // Read back with the C string's terminator.
    let compiled = tikv_jemalloc_ctl::config::malloc_conf::read()
        .unwrap_or_default()
        .trim_end_matches('\0');
    let missing: Vec<&str> = REQUIRED
        .into_iter()
        .filter(|option| !compiled.split(',').any(|set| set == *option))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the allocator was built without {} (JEMALLOC_SYS_WITH_MALLOC_CONF in \
             .cargo/config.toml): MAX_INFLIGHT_BODY_MB may be exceeded under large uploads",
            missing.join(",")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jemalloc_is_built_with_the_options_the_memory_bounds_rely_on() {
        assert_eq!(missing_options(), None);
        // In effect, not only compiled in: the background thread is on.
        assert!(tikv_jemalloc_ctl::opt::background_thread::read().unwrap());
    }
}
