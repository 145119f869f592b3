//! A bot player that walks in a circle and prints what it sees.
//!
//! `cargo run -p example-game --bin game-bot -- --name bot1`

use std::time::Duration;

use clap::Parser;
use example_game::GameClient;

/// Helios game example bot.
#[derive(Parser)]
struct Args {
    /// The server's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:7702/ws")]
    url: String,
    /// The bot's name.
    #[arg(long, default_value = "bot")]
    name: String,
    /// Print one state in this many.
    #[arg(long, default_value_t = 20)]
    every: u64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("game-bot: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), starling::ClientError> {
    let mut game = GameClient::join(&args.url, &args.name).await?;
    println!("joined as player {}", game.player_id());
    let mut step = tokio::time::interval(Duration::from_millis(100));
    // Each bot starts at its own place on the circle.
    let mut angle = game.player_id() as f64;
    loop {
        tokio::select! {
            _ = step.tick() => {
                angle += 0.1;
                game.move_to(500.0 + 200.0 * angle.cos(), 500.0 + 200.0 * angle.sin()).await?;
            }
            state = game.next_state() => {
                let Ok(state) = state else { break };
                if state.tick % args.every.max(1) == 0 {
                    let players: Vec<String> = state
                        .players
                        .iter()
                        .map(|p| format!("{}@({:.0},{:.0})", p.name, p.x, p.y))
                        .collect();
                    println!("tick {}: {}", state.tick, players.join(" "));
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    game.close().await;
    Ok(())
}
