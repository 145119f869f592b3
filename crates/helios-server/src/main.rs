//! `helios serve`: a Helios node that needs no Rust code.

mod cli;

use std::time::Duration;

use clap::Parser;
use helios::{Config, Helios};
use helios_protocol::ParseMode;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, LogFormat, ParseModeArg, ServeArgs};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => match serve(args).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("helios: {e}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

fn init_logging(args: &ServeArgs) -> Result<(), String> {
    let filter = EnvFilter::try_new(&args.log_level).map_err(|e| {
        format!(
            "invalid --log-level / HELIOS_LOG_LEVEL {:?}: {e}",
            args.log_level
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| e.to_string())
}

fn config_from(args: &ServeArgs) -> Config {
    let mut config = Config::default();
    config.request_timeout = Duration::from_millis(args.request_timeout_ms);
    config.max_message_bytes = args.max_message_bytes as usize;
    config.parse_mode = match args.parse_mode {
        ParseModeArg::Strict => ParseMode::Strict,
        ParseModeArg::Permissive => ParseMode::Permissive,
    };
    config.shutdown_grace = Duration::from_secs(args.shutdown_grace_secs);
    config
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    init_logging(&args)?;
    let helios = Helios::builder().config(config_from(&args)).build();
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| format!("cannot listen on {} (--bind / HELIOS_BIND): {e}", args.bind))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, "helios listening; WebSocket at ws://{addr}/ws");
    helios
        .serve(listener, shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"))?;
    tracing::info!("helios stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received, draining");
}
