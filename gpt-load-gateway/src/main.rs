//! `gpt-load-gateway`: the AI API key-pool gateway binary, a drop-in replacement for gpt-load.
//!
//! `gpt-load-gateway` (or `serve`) starts the gateway; `migrate-keys --from OLD --to NEW` turns
//! encryption of stored keys on, off or rotates it. Configuration comes from the environment and
//! `.env` (docs/CONFIG.md).

// Repositories, settings metadata and configuration fields are written for the admin API, which
// is assembled on top of this binary next; until then some are used by tests only.
#![allow(
    dead_code,
    reason = "the admin API uses the rest of the storage and settings layer"
)]

mod admin;
mod app;
mod bootstrap;
mod catalog;
mod client_ip;
mod commands;
mod config;
mod cors;
mod crypto;
mod db;
#[cfg(test)]
mod e2e;
mod jobs;
mod keystore;
mod models;
mod proxy;
mod repo;
mod server;
mod settings;
mod stack;
mod telemetry;

use std::{net::SocketAddr, process::ExitCode};

use clap::{Parser, Subcommand};

/// AI API key-pool gateway: a drop-in replacement for gpt-load.
///
/// Applications point their SDK's base URL at `http://HOST:3001/proxy/{group}` and use a proxy
/// key; the gateway picks a healthy upstream key, retries on another key when one fails,
/// blacklists failing keys and streams responses through. Configuration: environment variables
/// and `.env` (see docs/CONFIG.md).
#[derive(Debug, Parser)]
#[command(name = "gpt-load-gateway", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the gateway (the default).
    Serve,
    /// Re-encrypt stored keys: `--to NEW` enables encryption, `--from OLD` disables it, both rotate.
    MigrateKeys {
        /// The ENCRYPTION_KEY the data is encrypted with now.
        #[arg(long)]
        from: Option<String>,
        /// The ENCRYPTION_KEY to encrypt with from now on.
        #[arg(long)]
        to: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `.env` is exported into the process environment: read it before any thread starts.
    let (config, warnings) = match config::Config::from_env() {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("configuration error:\n{err}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = telemetry::init_logging(&config.log) {
        eprintln!(
            "cannot open the log file {}: {err}",
            config.log.file_path.display()
        );
        return ExitCode::from(2);
    }
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(config).await,
            Command::MigrateKeys { from, to } => migrate_keys(config, from, to).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: config::Config) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let (auth_key, source) = config::auth::resolve_auth_key(&config.data_dir, config.auth.auth_key.clone())
        .context("resolving AUTH_KEY")?;
    if let config::auth::AuthKeySource::Generated(path) = &source {
        // Printed once, on the console only, so the operator can log in; stored 0600.
        #[expect(
            clippy::print_stdout,
            reason = "the generated admin key is shown once to the operator"
        )]
        {
            println!(
                "AUTH_KEY was not set: generated {} (saved to {})",
                auth_key.expose(),
                path.display()
            );
        }
    }
    let addr: SocketAddr = config.server.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let running = app::start(config, auth_key.expose(), listener, app::JobIntervals::default()).await?;
    app::termination().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

async fn migrate_keys(
    config: config::Config,
    from: Option<String>,
    to: Option<String>,
) -> anyhow::Result<()> {
    let db = app::connect(&config.database.dsn).await?;
    db.migrate().await?;
    let summary = commands::migrate_keys::run(&db, from.as_deref(), to.as_deref()).await?;
    tracing::info!(
        api_keys = summary.api_keys,
        request_logs = summary.request_logs,
        "keys migrated"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
        let parsed = Cli::try_parse_from(["gpt-load-gateway", "migrate-keys", "--to", "new"]).unwrap();
        assert!(matches!(
            parsed.command,
            Some(Command::MigrateKeys {
                from: None,
                to: Some(_)
            })
        ));
        let err = Cli::try_parse_from(["gpt-load-gateway", "--version"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayVersion);
        assert!(err.to_string().contains(env!("CARGO_PKG_VERSION")));
        let help = Cli::try_parse_from(["gpt-load-gateway", "--help"])
            .unwrap_err()
            .to_string();
        assert!(help.contains("key-pool gateway"));
    }
}
