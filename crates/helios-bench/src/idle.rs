//! `helios-bench idle`: memory per idle connection.
//!
//! Reads the server's RSS, opens N WebSocket connections spread over the
//! source addresses 127.0.0.1..=127.0.0.k (one address has only ~28k
//! ephemeral ports), waits for the server to settle, reads the RSS again.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use crate::Common;
use crate::client::{BoxError, Target, Ws, loopback_sources};
use crate::proto::Proto;
use crate::stats::rss_kib;

/// Options of `idle`.
#[derive(Debug, clap::Args)]
pub(crate) struct IdleArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    pub(crate) connections: usize,
    /// The server's process id (its RSS is read from /proc/PID/status).
    #[arg(long)]
    pub(crate) pid: u32,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 128)]
    pub(crate) concurrency: usize,
    /// Seconds to wait after the last connect before reading the RSS.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) settle_secs: f64,
    /// Seconds to hold the connections after measuring (for outside tools).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) hold_secs: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct IdleReport {
    mode: &'static str,
    proto: Proto,
    url: String,
    pid: u32,
    connections_requested: usize,
    connections_open: usize,
    failed: usize,
    first_error: Option<String>,
    source_addrs: u8,
    connect_secs: f64,
    rss_before_kib: u64,
    rss_after_kib: u64,
    bytes_per_connection: f64,
}

pub(crate) async fn run(args: IdleArgs) -> Result<IdleReport, BoxError> {
    let target = Target::new(&args.common.url, args.common.proto)?;
    let sources = loopback_sources(args.common.source_addrs);
    let rss = || rss_kib(args.pid).ok_or_else(|| format!("cannot read /proc/{}/status", args.pid));
    let before = rss()?;
    let started = Instant::now();
    let mut open: Vec<Ws> = Vec::with_capacity(args.connections);
    let mut failed = 0;
    let mut first_error = None;
    let mut set = JoinSet::new();
    let mut next = 0;
    while next < args.connections || !set.is_empty() {
        while next < args.connections && set.len() < args.concurrency.max(1) {
            let (target, src) = (target.clone(), sources[next % sources.len()]);
            set.spawn(async move { target.connect(Some(src)).await.map_err(|e| e.to_string()) });
            next += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok(ws))) => open.push(ws),
            Some(Ok(Err(e))) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Some(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
            None => break,
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
    let after = rss()?;
    if args.hold_secs > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(args.hold_secs)).await;
    }
    let per = if open.is_empty() {
        0.0
    } else {
        (after.saturating_sub(before) as f64 * 1024.0 / open.len() as f64).round()
    };
    let n = open.len();
    drop(open);
    Ok(IdleReport {
        mode: "idle",
        proto: target.proto(),
        url: args.common.url,
        pid: args.pid,
        connections_requested: args.connections,
        connections_open: n,
        failed,
        first_error,
        source_addrs: args.common.source_addrs,
        connect_secs: (connect_secs * 100.0).round() / 100.0,
        rss_before_kib: before,
        rss_after_kib: after,
        bytes_per_connection: per,
    })
}
