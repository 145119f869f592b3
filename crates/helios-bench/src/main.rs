//! `helios-bench`: a load generator for Helios and for any server that speaks
//! the Helios-Starling JSON protocol (or Socket.IO with acks, for the
//! comparison in `bench/`).
//!
//! ```text
//! helios-bench rpc    --url ws://127.0.0.1:7700/ws --connections 16 --depth 4 --duration-secs 5
//! helios-bench rpc    --url ws://127.0.0.1:7700/ws --connections 16 --rate 20000 --duration-secs 5
//! helios-bench fanout --url ws://127.0.0.1:7700/ws --subscribers 1000 --rate 100 --duration-secs 5 --topic bench:room
//! helios-bench idle   --url ws://127.0.0.1:7700/ws --connections 19000 --pid $(pidof helios)
//! ```
//!
//! The report goes to stdout as one JSON object (for scripts); a human
//! summary goes to stderr. See `docs/benchmarks.md`.

mod client;
mod fanout;
mod idle;
mod pacer;
mod proto;
mod rpc;
mod stats;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::proto::Proto;

/// Load generator for Helios-Starling servers.
#[derive(Debug, Parser)]
#[command(name = "helios-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Runtime worker threads (default: the CPUs this process may use).
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Request/response throughput and latency (`system:echo`).
    Rpc(rpc::RpcArgs),
    /// Room fan-out: one publisher, N subscribers.
    Fanout(fanout::FanoutArgs),
    /// Server memory per idle connection.
    Idle(idle::IdleArgs),
}

/// Options every subcommand takes.
#[derive(Debug, clap::Args)]
pub(crate) struct Common {
    /// WebSocket URL (loopback only), e.g. ws://127.0.0.1:7700/ws.
    #[arg(long)]
    pub(crate) url: String,
    /// Protocol the server speaks.
    #[arg(long, value_enum, default_value = "helios")]
    pub(crate) proto: Proto,
    /// Spread connections over source addresses 127.0.0.1..=127.0.0.K.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=250))]
    pub(crate) source_addrs: u8,
    /// The server's pid, to report its CPU use over the run.
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = cli.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("helios-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Rpc(a) => rpc::run(a).await.map(|r| report(&r, summary_rpc)),
            Command::Fanout(a) => fanout::run(a).await.map(|r| report(&r, summary_fanout)),
            Command::Idle(a) => idle::run(a).await.map(|r| report(&r, summary_idle)),
        }
    });
    // Connections still open in spawned tasks do not hold up the exit.
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("helios-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// JSON on stdout, a summary line on stderr.
fn report<R: Serialize>(r: &R, summary: fn(&serde_json::Value) -> String) {
    let value = serde_json::to_value(r).unwrap_or_default();
    println!("{value}");
    eprintln!("{}", summary(&value));
}

fn f(v: &serde_json::Value, path: &str) -> String {
    let mut cur = v;
    for k in path.split('.') {
        cur = &cur[k];
    }
    match cur {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn summary_rpc(v: &serde_json::Value) -> String {
    format!(
        "{} {}: {} req/s ({} ok, {} errors, {} unanswered) latency µs p50 {} p99 {} p99.9 {} max {} | cpu client {}% server {}%",
        f(v, "mode"),
        f(v, "url"),
        f(v, "throughput_rps"),
        f(v, "requests"),
        f(v, "errors"),
        f(v, "unanswered"),
        f(v, "latency_us.p50"),
        f(v, "latency_us.p99"),
        f(v, "latency_us.p999"),
        f(v, "latency_us.max"),
        f(v, "client_cpu_pct"),
        f(v, "server_cpu_pct"),
    )
}

fn summary_fanout(v: &serde_json::Value) -> String {
    format!(
        "fanout {}: {} deliveries/s ({} of {} expected; missing {}, dup {}, out-of-order {}) latency µs p50 {} p99 {} p99.9 {} | cpu client {}% server {}%",
        f(v, "url"),
        f(v, "deliveries_per_sec"),
        f(v, "deliveries"),
        f(v, "expected_deliveries"),
        f(v, "missing"),
        f(v, "duplicates"),
        f(v, "out_of_order"),
        f(v, "latency_us.p50"),
        f(v, "latency_us.p99"),
        f(v, "latency_us.p999"),
        f(v, "client_cpu_pct"),
        f(v, "server_cpu_pct"),
    )
}

fn summary_idle(v: &serde_json::Value) -> String {
    format!(
        "idle {}: {} connections open ({} failed), RSS {} → {} KiB, {} bytes/connection",
        f(v, "url"),
        f(v, "connections_open"),
        f(v, "failed"),
        f(v, "rss_before_kib"),
        f(v, "rss_after_kib"),
        f(v, "bytes_per_connection"),
    )
}
