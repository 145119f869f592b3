//! Command line: every flag also reads a `HELIOS_*` environment variable
//! (a flag wins over the environment).

use std::net::SocketAddr;
use std::path::PathBuf;

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
    Serve(Box<ServeArgs>),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Validate a TOML configuration file and print the settings it gives.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ParseModeArg {
    Strict,
    Permissive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
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

    /// Backplane shared by the nodes of a cluster: `memory` (one node, the
    /// default), `redis://host:port` or `nats://host:port` (docs/cluster.md).
    #[arg(long, env = "HELIOS_BROKER")]
    pub(crate) broker: Option<String>,

    /// Prefix of the broker's keys and subjects (default `helios`); nodes
    /// of one cluster use the same one.
    #[arg(long, env = "HELIOS_BROKER_PREFIX")]
    pub(crate) broker_prefix: Option<String>,

    /// Secret (at least 32 bytes) of session-recovery tokens; recovery is
    /// on whenever it is set (`starling:getToken`, `?recover=`).
    #[arg(long, env = "HELIOS_RECOVERY_SECRET", hide_env_values = true)]
    pub(crate) recovery_secret: Option<String>,

    /// Key of the server HTTP API (`POST /api/publish`, ...; at least 16
    /// bytes): backends publish with `Authorization: apikey KEY`. Without
    /// it the API is off.
    #[arg(long, env = "HELIOS_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,

    /// How long a dropped session waits for its client, in seconds (300).
    #[arg(long, env = "HELIOS_RECOVERY_TTL_SECS")]
    pub(crate) recovery_ttl_secs: Option<u64>,

    /// Seconds between health-check pings (30); 0 turns them off.
    #[arg(long, env = "HELIOS_PING_INTERVAL_SECS")]
    pub(crate) ping_interval_secs: Option<u64>,

    /// Unanswered pings before a connection is closed with 4100 (2).
    #[arg(long, env = "HELIOS_MAX_MISSED_PONGS")]
    pub(crate) max_missed_pongs: Option<u32>,

    /// TOML configuration file; flags and `HELIOS_*` variables override it
    /// (see docs/configuration.md).
    #[arg(long, env = "HELIOS_CONFIG")]
    pub(crate) config: Option<PathBuf>,

    /// Do not serve the web console at /console.
    #[arg(long, env = "HELIOS_NO_CONSOLE", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    pub(crate) no_console: bool,

    /// TLS certificate chain (PEM); with --tls-key the server speaks wss://.
    #[arg(long, env = "HELIOS_TLS_CERT")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "HELIOS_TLS_KEY")]
    pub(crate) tls_key: Option<PathBuf>,

    /// Shared secret of HS256 connection tokens (JWT).
    #[arg(long, env = "HELIOS_AUTH_JWT_SECRET", hide_env_values = true)]
    pub(crate) auth_jwt_secret: Option<String>,

    /// PEM public key of RS256/ES256 connection tokens.
    #[arg(long, env = "HELIOS_AUTH_JWT_PUBLIC_KEY")]
    pub(crate) auth_jwt_public_key: Option<PathBuf>,

    /// Token algorithm (HS256 with a secret; RS256 or ES256 with a public key).
    #[arg(long, env = "HELIOS_AUTH_JWT_ALGORITHM")]
    pub(crate) auth_jwt_algorithm: Option<String>,

    /// Claim listing the room patterns a user may use (default `rooms`;
    /// `channels` is read too).
    #[arg(long, env = "HELIOS_AUTH_ROOMS_CLAIM")]
    pub(crate) auth_rooms_claim: Option<String>,

    /// Required `aud` claim of tokens.
    #[arg(long, env = "HELIOS_AUTH_AUDIENCE")]
    pub(crate) auth_audience: Option<String>,

    /// Required `iss` claim of tokens.
    #[arg(long, env = "HELIOS_AUTH_ISSUER")]
    pub(crate) auth_issuer: Option<String>,

    /// Let connections without a token in (as anonymous) when auth is on.
    #[arg(long, env = "HELIOS_AUTH_OPTIONAL", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    pub(crate) auth_optional: bool,

    /// HTTP backend that answers the methods this server does not know.
    #[arg(long, env = "HELIOS_BACKEND")]
    pub(crate) backend: Option<String>,

    /// Backend call timeout in milliseconds (default 3000).
    #[arg(long, env = "HELIOS_BACKEND_TIMEOUT_MS")]
    pub(crate) backend_timeout_ms: Option<u64>,

    /// URL (or path on --backend) asked to allow each new connection.
    #[arg(long, env = "HELIOS_BACKEND_CONNECT_HOOK")]
    pub(crate) backend_connect_hook: Option<String>,

    /// URL (or path on --backend) asked to allow each subscription.
    #[arg(long, env = "HELIOS_BACKEND_SUBSCRIBE_HOOK")]
    pub(crate) backend_subscribe_hook: Option<String>,

    /// Origins allowed to open a WebSocket (comma-separated; same-origin is
    /// always allowed); others get HTTP 403. Default: any.
    #[arg(long, env = "HELIOS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub(crate) allowed_origins: Option<Vec<String>>,

    /// Cap on TCP connections open at once.
    #[arg(long, env = "HELIOS_MAX_CONNECTIONS")]
    pub(crate) max_connections: Option<usize>,

    /// Cap on TCP connections open at once from one IP address.
    #[arg(long, env = "HELIOS_MAX_CONNECTIONS_PER_IP")]
    pub(crate) max_connections_per_ip: Option<usize>,

    /// Messages per second a connection may send (token bucket); over it a
    /// request is answered RATE_LIMITED.
    #[arg(long, env = "HELIOS_RATE_LIMIT")]
    pub(crate) rate_limit: Option<u32>,

    /// Burst size of the rate limit (default: the rate).
    #[arg(long, env = "HELIOS_RATE_BURST")]
    pub(crate) rate_burst: Option<u32>,

    /// Refused messages tolerated per minute before the connection is
    /// closed with 4029 (10).
    #[arg(long, env = "HELIOS_RATE_LIMIT_STRIKES")]
    pub(crate) rate_limit_strikes: Option<u32>,

    /// Milliseconds a client has for the TLS + HTTP handshake (default 10000).
    #[arg(long, env = "HELIOS_HANDSHAKE_TIMEOUT_MS")]
    pub(crate) handshake_timeout_ms: Option<u64>,
}
