//! Run with: `cargo run -p examples --bin hyper_server` (see the `examples` crate docs for the
//! environment variables).

use examples::{ExampleConfig, hyper_server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    examples::init_tracing();
    let config = ExampleConfig::from_env()?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(
        "hyper server on http://{}; proxy at /proxy/{}/…",
        listener.local_addr()?,
        config.group
    );
    hyper_server::serve(listener, config).await?;
    Ok(())
}
