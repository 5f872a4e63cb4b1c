//! Runnable examples of `gpt-load-tower` inside applications that already exist.
//!
//! - [`axum_existing_app`]: an axum application with its own routes mounts the whole proxy stack
//!   under `/llm/{group}/…`.
//! - [`hyper_server`]: the same stack served by a bare hyper server.
//!
//! Both read an [`ExampleConfig`] from the environment and send traffic to one upstream (for
//! example the workspace's `mock-upstream` binary). Run them with
//! `cargo run -p examples --bin axum_existing_app` or `--bin hyper_server`.

pub mod axum_existing_app;
mod config;
pub mod hyper_server;
mod proxy;

pub use self::{
    config::{ConfigError, ExampleConfig},
    proxy::{Proxy, log_records},
};

/// Logs to stderr at `info` (or as `RUST_LOG` says).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}
