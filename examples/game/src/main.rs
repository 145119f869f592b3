//! The game server: `cargo run -p example-game -- --bind 127.0.0.1:7702`.

use clap::Parser;
use example_game::GameConfig;
use tracing_subscriber::EnvFilter;

/// Helios game example server.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7702")]
    bind: String,
    /// State broadcasts per second.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    tick_hz: u32,
    /// The world is 0..=SIZE on both axes.
    #[arg(long, default_value_t = 1000.0)]
    world_size: f64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.bind).await?;
    tracing::info!(
        tick_hz = args.tick_hz,
        "game server on ws://{}/ws",
        listener.local_addr()?
    );
    let config = GameConfig {
        tick_hz: args.tick_hz,
        world_size: args.world_size,
    };
    example_game::app_with(config)
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
