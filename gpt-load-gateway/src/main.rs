//! `gpt-load-gateway`: the AI API key-pool gateway binary.
//!
//! This release ships the layer library (`gpt-load-tower`) and its examples; the gateway server
//! (configuration, storage, admin API, console) is assembled on top of it next. Until then the
//! binary answers `--help` and `--version` and explains what to run instead.

#![allow(
    dead_code,
    reason = "modules are wired into `serve` as the gateway is assembled"
)]

mod bootstrap;
mod catalog;
mod client_ip;
mod commands;
mod config;
mod crypto;
mod db;
mod jobs;
mod keystore;
mod models;
mod proxy;
mod repo;
mod settings;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

/// AI API key-pool gateway: a drop-in replacement for gpt-load.
///
/// Applications point their SDK's base URL at `http://HOST:3001/proxy/{group}` and use a proxy
/// key; the gateway picks a healthy upstream key, retries on another key when one fails,
/// blacklists failing keys and streams responses through.
#[derive(Debug, Parser)]
#[command(name = "gpt-load-gateway", version, about, long_about)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!(
        "gpt-load-gateway {}: the gateway server is not part of this release yet.\n\
         Try the layer library through its examples instead:\n  \
         make run   (mock upstream + the hyper_server example on http://127.0.0.1:3001)",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
        let err = Cli::try_parse_from(["gpt-load-gateway", "--version"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayVersion);
        assert!(err.to_string().contains(env!("CARGO_PKG_VERSION")));
        let help = Cli::try_parse_from(["gpt-load-gateway", "--help"])
            .unwrap_err()
            .to_string();
        assert!(help.contains("key-pool gateway"));
    }
}
