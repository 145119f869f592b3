//! The chat server: `cargo run -p example-chat -- --bind 127.0.0.1:7701`.

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Helios chat example server.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7701")]
    bind: String,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.bind).await?;
    tracing::info!("chat server on ws://{}/ws", listener.local_addr()?);
    example_chat::app()
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
