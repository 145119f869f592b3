//! A demo service: accounts with balances, reached through the hub as
//! `billing`.
//!
//! `cargo run -p example-service-hub --bin billing-service`

use std::collections::HashMap;
use std::sync::Arc;

use clap::Parser;
use example_service_hub::ServiceBuilder;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;
use starling::{ErrorCode, MethodError};

/// Helios service-hub example service.
#[derive(Parser)]
struct Args {
    /// The hub's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:7703/ws")]
    url: String,
    /// The name to register under.
    #[arg(long, default_value = "billing")]
    name: String,
}

#[derive(Deserialize)]
struct Charge {
    account: String,
    amount: u64,
}

#[derive(Deserialize)]
struct Account {
    account: String,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let balances: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let (charges, reads) = (balances.clone(), balances);
    let service = ServiceBuilder::new(args.url, args.name.as_str())
        .method("billing:charge", move |c: Charge| {
            let balances = charges.clone();
            async move {
                if c.amount == 0 {
                    return Err(MethodError::new(
                        ErrorCode::INVALID_PAYLOAD,
                        "amount must be > 0",
                    ));
                }
                let mut balances = balances.lock();
                let total = balances.entry(c.account.clone()).or_default();
                *total += c.amount;
                Ok(json!({ "account": c.account, "charged": c.amount, "balance": *total }))
            }
        })
        .method("billing:balance", move |a: Account| {
            let balances = reads.clone();
            async move {
                let balance = balances.lock().get(&a.account).copied().unwrap_or(0);
                Ok::<_, MethodError>(json!({ "account": a.account, "balance": balance }))
            }
        })
        .connect()
        .await;
    let client = match service {
        Ok(c) => c,
        Err(e) => {
            eprintln!("billing-service: {e}");
            std::process::exit(1);
        }
    };
    println!("registered as {:?}; Ctrl-C to stop", args.name);
    tokio::select! {
        info = client.closed() => println!("hub closed the connection: {}", info.reason),
        _ = tokio::signal::ctrl_c() => client.close().await,
    }
}
