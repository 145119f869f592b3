//! Calls a service through the hub, or lists the services.
//!
//! ```text
//! cargo run -p example-service-hub --bin hub-call -- --list
//! cargo run -p example-service-hub --bin hub-call -- billing billing:charge '{"account":"ada","amount":5}'
//! ```

use clap::Parser;
use serde_json::Value;
use starling::Client;

/// Helios service-hub example caller.
#[derive(Parser)]
struct Args {
    /// The hub's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:7703/ws")]
    url: String,
    /// List the registered services and exit.
    #[arg(long)]
    list: bool,
    /// The service to call.
    #[arg(required_unless_present = "list")]
    service: Option<String>,
    /// The method to call.
    #[arg(required_unless_present = "list")]
    method: Option<String>,
    /// The payload, as JSON.
    #[arg(default_value = "null")]
    payload: String,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match run(args).await {
        Ok(v) => println!("{v:#}"),
        Err(e) => {
            eprintln!("hub-call: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(args: Args) -> Result<Value, Box<dyn std::error::Error>> {
    let client = Client::connect(args.url.as_str()).await?;
    let out = if args.list {
        client.request("hub:services", Value::Null).await?
    } else {
        let payload: Value = serde_json::from_str(&args.payload)?;
        let (service, method) = (
            args.service.unwrap_or_default(),
            args.method.unwrap_or_default(),
        );
        example_service_hub::call_service(&client, &service, &method, payload).await?
    };
    client.close().await;
    Ok(out)
}
