//! The file drop server: `cargo run -p example-file-drop -- --bind 127.0.0.1:7704`.

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Helios file drop example server.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7704")]
    bind: String,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.bind).await?;
    // The tests read this line to know the server is up.
    println!("file drop on ws://{}/ws", listener.local_addr()?);
    example_file_drop::app()
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
