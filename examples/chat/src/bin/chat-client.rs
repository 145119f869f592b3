//! A terminal chat client: each stdin line is a message, `/who` lists the
//! room, end of input (Ctrl-D) leaves.
//!
//! `cargo run -p example-chat --bin chat-client -- --room lobby --nick ada`

use clap::Parser;
use example_chat::{ChatClient, ChatEvent};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Helios chat example client.
#[derive(Parser)]
struct Args {
    /// The server's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:7701/ws")]
    url: String,
    /// The room to join.
    #[arg(long, default_value = "lobby")]
    room: String,
    /// Your nickname.
    #[arg(long)]
    nick: String,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("chat-client: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), starling::ClientError> {
    let chat = ChatClient::connect(&args.url, &args.nick).await?;
    let mut room = chat.join(&args.room).await?;
    println!("* joined {} as {}", room.topic(), chat.nick());

    let printer = tokio::spawn(async move {
        loop {
            match room.next().await {
                Ok(ChatEvent::Message { from, text, .. }) => println!("<{from}> {text}"),
                Ok(ChatEvent::Join { nick, .. }) => println!("* {nick} joined"),
                Ok(ChatEvent::Leave { nick, .. }) => println!("* {nick} left"),
                Err(starling::RecvError::Lagged(n)) => println!("* ({n} messages skipped)"),
                Err(_) => break,
            }
        }
    });

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "/who" {
            println!(
                "* in {}: {}",
                args.room,
                chat.who(&args.room).await?.join(", ")
            );
            continue;
        }
        if let Err(e) = chat.send(&args.room, line).await {
            println!("* not sent: {e}");
        }
    }
    chat.close().await;
    let _ = printer.await;
    Ok(())
}
