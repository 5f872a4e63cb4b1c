//! Command-line subcommands other than `serve`.

pub(crate) mod gpt_load;
pub(crate) mod migrate_keys;
