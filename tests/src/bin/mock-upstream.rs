//! Standalone mock upstream for out-of-process tests and benchmarks.
//!
//! Prints `mock-upstream listening on http://HOST:PORT` once bound, then
//! serves until SIGINT or SIGTERM. Drive it with prefixed keys (`mock-401`,
//! `mock-429`, ...) or the `/__mock/*` control endpoints.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Parser;
use gpt_load_e2e::{MockConfig, MockUpstream};

/// Deterministic OpenAI / Anthropic / Gemini mock upstream.
#[derive(Debug, Parser)]
#[command(name = "mock-upstream", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Text frames per streamed answer.
    #[arg(long, default_value_t = 5)]
    sse_frames: usize,
    /// Milliseconds between streamed text frames.
    #[arg(long, default_value_t = 0)]
    sse_pace_ms: u64,
    /// Requests kept for `GET /__mock/requests`; 0 disables recording.
    #[arg(long, default_value_t = 10_000)]
    record_capacity: usize,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let config = MockConfig::default()
        .with_sse_frames(args.sse_frames)
        .with_sse_pace(Duration::from_millis(args.sse_pace_ms))
        .with_record_capacity(args.record_capacity);
    let mock = MockUpstream::bind(SocketAddr::new(args.host, args.port), config).await?;
    announce(&mock.url())?;
    wait_for_signal().await?;
    mock.shutdown().await;
    Ok(())
}

#[expect(
    clippy::print_stdout,
    reason = "the listening line on stdout is how a harness learns the port"
)]
fn announce(url: &str) -> std::io::Result<()> {
    println!("mock-upstream listening on {url}");
    std::io::stdout().flush()
}

#[cfg(unix)]
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}
