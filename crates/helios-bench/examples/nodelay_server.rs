//! A Helios server identical to `helios serve` defaults except that every
//! accepted socket gets `TCP_NODELAY`, to measure what Nagle's algorithm
//! costs the stock server (see docs/benchmarks.md):
//!
//! ```text
//! cargo build --release -p helios-bench --example nodelay_server
//! target/release/examples/nodelay_server 127.0.0.1:7799
//! ```

use axum::serve::ListenerExt;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7799".into());
    let helios = helios::Helios::builder().build();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("helios (TCP_NODELAY) listening on ws://{}/ws", listener.local_addr()?);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, helios.router()).await
}
