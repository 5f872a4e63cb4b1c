//! `gpt-load-gateway`: the AI API key-pool gateway binary, a drop-in replacement for gpt-load.
//!
//! `gpt-load-gateway` (or `serve`) starts the gateway, adopting a gpt-load database it finds
//! (`--adopt` on PostgreSQL and MySQL); `migrate-keys --from OLD --to NEW` turns encryption of
//! stored keys on, off or rotates it; `import --from DSN` copies a gpt-load database in and
//! `export-gpt-load --to DSN` writes one back out (docs/MIGRATING.md); `healthcheck` asks a
//! running gateway's `/health` (the container image's `HEALTHCHECK`, which has no curl).
//! Configuration comes from the environment and `.env` (docs/CONFIG.md).

// A build with some database backends left out still compiles cleanly: the code only the
// others use is not reported. The full build (`--all-features`, what `make lint` checks) keeps
// every lint.
#![cfg_attr(
    not(all(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(unused_imports, unused_variables, unused_macros, dead_code)
)]

mod admin;
#[cfg(not(target_env = "msvc"))]
mod allocator;
mod app;
mod bootstrap;
mod cluster;
mod commands;
mod config;
mod console;
mod cors;
mod crypto;
mod db;
#[cfg(test)]
mod e2e;
mod gpt_load;
mod jobs;
mod models;
mod proxy;
mod registry;
mod repo;
mod server;
mod settings;
mod telemetry;
mod upstream;

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
    /// Convert a gpt-load database on PostgreSQL or MySQL in place at start (back it up first;
    /// SQLite files are always adopted, after a backup copy). Same as `ADOPT_GPT_LOAD=true`.
    #[arg(long, global = true)]
    adopt: bool,
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
    /// Copy a gpt-load database (left as it is) into this gateway's database (DATABASE_DSN).
    ///
    /// Re-running copies only what is new. Keys are read with --old-encryption-key (default:
    /// ENCRYPTION_KEY) and stored with ENCRYPTION_KEY. Stop the gateway, or restart it after.
    Import {
        /// The gpt-load database: a SQLite path, postgres://…, mysql://… or gpt-load's
        /// user:pass@tcp(host:port)/db form.
        #[arg(long, value_name = "DSN")]
        from: String,
        /// The ENCRYPTION_KEY gpt-load used, when it differs from this gateway's.
        #[arg(long, value_name = "KEY")]
        old_encryption_key: Option<String>,
    },
    /// Write this gateway's database as a gpt-load 1.4 database, to roll back (docs/MIGRATING.md).
    ///
    /// The target must be empty; keys are encrypted with gpt-load's cipher under ENCRYPTION_KEY
    /// (plain text when it is unset), which gpt-load must then be started with.
    ExportGptLoad {
        /// The database to write: a SQLite path, postgres://… or mysql://…
        #[arg(long, value_name = "DSN")]
        to: String,
    },
    /// Exit 0 when the gateway configured here (HOST, PORT) answers 200 on /health, 1 otherwise.
    Healthcheck {
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `.env` is exported into the process environment: read it before any thread starts.
    let (mut config, warnings) = match config::Config::from_env() {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("configuration error:\n{err}");
            return ExitCode::from(2);
        }
    };
    config.database.adopt_gpt_load |= cli.adopt;
    if let Some(Command::Healthcheck { timeout }) = cli.command {
        return healthcheck(config.server.addr, std::time::Duration::from_secs(timeout.max(1)));
    }
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
    #[cfg(not(target_env = "msvc"))]
    if let Some(warning) = allocator::missing_options() {
        tracing::warn!("{warning}");
    }
    let runtime = match runtime() {
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
            Command::Import {
                from,
                old_encryption_key,
            } => commands::gpt_load::import(config, &from, old_encryption_key).await,
            Command::ExportGptLoad { to } => commands::gpt_load::export(config, &to).await,
            Command::Healthcheck { .. } => unreachable!("answered before the runtime starts"),
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
    app::ensure_adopted(&config.database.dsn).await?;
    let db = app::connect(&config.database.dsn).await?;
    db.migrate().await?;
    let summary = commands::migrate_keys::run(&db, from.as_deref(), to.as_deref()).await?;
    tracing::info!(
        api_keys = summary.api_keys,
        request_logs = summary.request_logs,
        proxy_key_lists = summary.proxy_key_lists,
        "keys migrated"
    );
    Ok(())
}

/// The async runtime. Where the process may run on one CPU only (`taskset`, a container's CPU
/// quota: what `available_parallelism` reports), one thread runs every task: a work-stealing
/// scheduler with one worker has no one to steal from and still pays for its synchronisation on
/// every wake-up (bench/results/2026-12-07-ab-runtime.md). Elsewhere a worker per CPU, or
/// `TOKIO_WORKER_THREADS` when set. Blocking work (SQLite) has its own threads either way.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    // `TOKIO_WORKER_THREADS` asks for the multi-threaded scheduler, which reads it.
    let one_thread = std::env::var_os("TOKIO_WORKER_THREADS").is_none()
        && std::thread::available_parallelism().is_ok_and(|cpus| cpus.get() == 1);
    let mut builder = if one_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = builder.enable_all().build()?;
    if one_thread {
        tracing::info!("async runtime: one thread (one CPU available)");
    } else {
        tracing::info!("async runtime: a worker per CPU");
    }
    Ok(runtime)
}

/// `GET /health` on the gateway listening at `addr` (loopback when it listens on every address),
/// over plain HTTP/1.1 without a runtime: exit 0 on a 200, 1 otherwise.
fn healthcheck(addr: SocketAddr, timeout: std::time::Duration) -> ExitCode {
    use std::io::{Read as _, Write as _};
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let status = (|| -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect_timeout(&target, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        write!(
            stream,
            "GET /health HTTP/1.1\r\nHost: {target}\r\nUser-Agent: gpt-load-gateway-healthcheck\r\nConnection: close\r\n\r\n"
        )?;
        let mut head = Vec::new();
        let mut buf = [0u8; 256];
        while !head.contains(&b'\n') {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        Ok(line.lines().next().unwrap_or("").trim().to_owned())
    })();
    match status {
        Ok(line) if line.split_whitespace().nth(1) == Some("200") => ExitCode::SUCCESS,
        Ok(line) => {
            eprintln!("unhealthy: http://{target}/health answered {line:?}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("unhealthy: http://{target}/health: {err}");
            ExitCode::FAILURE
        }
    }
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
        let parsed = Cli::try_parse_from(["gpt-load-gateway", "--adopt"]).unwrap();
        assert!(parsed.adopt && parsed.command.is_none());
        let parsed = Cli::try_parse_from(["gpt-load-gateway", "serve", "--adopt"]).unwrap();
        assert!(parsed.adopt);
        let parsed = Cli::try_parse_from([
            "gpt-load-gateway",
            "import",
            "--from",
            "./old.db",
            "--old-encryption-key",
            "k",
        ])
        .unwrap();
        assert!(matches!(
            parsed.command,
            Some(Command::Import { ref from, old_encryption_key: Some(_) }) if from == "./old.db"
        ));
        let parsed = Cli::try_parse_from(["gpt-load-gateway", "export-gpt-load", "--to", "x.db"]).unwrap();
        assert!(matches!(parsed.command, Some(Command::ExportGptLoad { ref to }) if to == "x.db"));
        let parsed = Cli::try_parse_from(["gpt-load-gateway", "healthcheck"]).unwrap();
        assert!(matches!(
            parsed.command,
            Some(Command::Healthcheck { timeout: 5 })
        ));
    }

    #[tokio::test]
    async fn healthcheck_wants_a_200_from_health() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut requests = Vec::new();
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut socket, _) = listener.accept().await.unwrap();
                // The whole request head: closing with unread bytes would reset the connection.
                let mut head = Vec::new();
                let mut buf = [0u8; 256];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the request ends early");
                    head.extend_from_slice(&buf[..n]);
                }
                requests.push(String::from_utf8_lossy(&head).into_owned());
                let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\n{{}}");
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
            requests
        });
        // Listening on every address: the check goes to loopback.
        let addr: SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();
        let check = move || healthcheck(addr, std::time::Duration::from_secs(5));
        let first = tokio::task::spawn_blocking(check).await.unwrap();
        let second = tokio::task::spawn_blocking(check).await.unwrap();
        assert_eq!(first, ExitCode::SUCCESS);
        assert_eq!(second, ExitCode::FAILURE);
        let requests = server.await.unwrap();
        assert!(
            requests[0].starts_with("GET /health HTTP/1.1\r\n"),
            "{requests:?}"
        );
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let refused =
            tokio::task::spawn_blocking(move || healthcheck(addr, std::time::Duration::from_secs(1)))
                .await
                .unwrap();
        assert_eq!(refused, ExitCode::FAILURE);
    }
}
