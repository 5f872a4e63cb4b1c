//! Command-line subcommands other than `serve`.

pub(crate) mod migrate_keys;
