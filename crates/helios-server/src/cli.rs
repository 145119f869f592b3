//! Command line: every flag also reads a `HELIOS_*` environment variable
//! (a flag wins over the environment).

use std::net::SocketAddr;

use clap::{Parser, Subcommand, ValueEnum};

/// The Helios real-time messaging server.
#[derive(Debug, Parser)]
#[command(name = "helios", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a server node.
    Serve(ServeArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ParseModeArg {
    Strict,
    Permissive,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HELIOS_BIND", default_value = "127.0.0.1:7700")]
    pub(crate) bind: SocketAddr,

    /// Log filter (error, warn, info, debug, trace, or a tracing filter).
    #[arg(long, env = "HELIOS_LOG_LEVEL", default_value = "info")]
    pub(crate) log_level: String,

    /// Log output format.
    #[arg(long, env = "HELIOS_LOG_FORMAT", value_enum, default_value = "text")]
    pub(crate) log_format: LogFormat,

    /// Default method timeout in milliseconds.
    #[arg(long, env = "HELIOS_REQUEST_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub(crate) request_timeout_ms: u64,

    /// Largest accepted WebSocket message in bytes; a larger one closes the
    /// connection with 1009.
    #[arg(long, env = "HELIOS_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(256..=(1u64 << 30)))]
    pub(crate) max_message_bytes: u64,

    /// Method-name rules.
    #[arg(long, env = "HELIOS_PARSE_MODE", value_enum, default_value = "strict")]
    pub(crate) parse_mode: ParseModeArg,

    /// Seconds a shutdown waits for in-flight requests.
    #[arg(long, env = "HELIOS_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub(crate) shutdown_grace_secs: u64,
}
