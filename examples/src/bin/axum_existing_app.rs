//! Run with: `cargo run -p examples --bin axum_existing_app` (see the `examples` crate docs for
//! the environment variables).

use examples::{ExampleConfig, axum_existing_app};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    examples::init_tracing();
    let config = ExampleConfig::from_env()?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(
        "axum app on http://{}; proxy at /llm/{}/…",
        listener.local_addr()?,
        config.group
    );
    axum_existing_app::serve(listener, config).await?;
    Ok(())
}
