//! The configuration in force: defaults, then the TOML file (`--config`),
//! then `HELIOS_*` environment variables, then flags; each layer overrides
//! the one before. Every key is in `docs/configuration.md`.
//!
//! clap already merges flags over environment variables; a flag with a
//! default tells us, through `ArgMatches::value_source`, whether the user set
//! it, so the file only fills what neither did.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;

use crate::cli::{LogFormat, ParseModeArg, ServeArgs};

/// A `[[rooms]]` entry (or the rule of every other room, `[rooms_default]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoomSection {
    /// Glob pattern (`*` one segment, `**` any); absent in `rooms_default`.
    #[serde(default)]
    pub(crate) pattern: Option<String>,
    #[serde(default)]
    pub(crate) subscribe: Option<AccessSetting>,
    #[serde(default)]
    pub(crate) publish: Option<AccessSetting>,
    #[serde(default)]
    pub(crate) presence: Option<bool>,
    #[serde(default)]
    pub(crate) history: Option<usize>,
    #[serde(default)]
    pub(crate) history_ttl_secs: Option<u64>,
    #[serde(default)]
    pub(crate) max_subscribers: Option<usize>,
    /// Ask the backend's subscribe hook (when configured); default true.
    #[serde(default)]
    pub(crate) subscribe_hook: Option<bool>,
}

/// Who may subscribe or publish.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AccessSetting {
    /// Any connection.
    Anyone,
    /// Connections with a user id.
    Authenticated,
    /// Connections whose token's rooms claim covers the room.
    Claim,
    /// Members of the room (publish only).
    Members,
    /// No client.
    Nobody,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    jwt_secret: Option<String>,
    jwt_public_key: Option<PathBuf>,
    jwt_algorithm: Option<String>,
    rooms_claim: Option<String>,
    optional: Option<bool>,
    audience: Option<String>,
    issuer: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBackend {
    url: Option<String>,
    timeout_ms: Option<u64>,
    connect_hook: Option<String>,
    subscribe_hook: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_message_bytes: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    messages_per_second: Option<u32>,
    message_burst: Option<u32>,
    rate_limit_strikes: Option<u32>,
    handshake_timeout_ms: Option<u64>,
    allowed_origins: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRecovery {
    secret: Option<String>,
    ttl_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApi {
    key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHealth {
    ping_interval_secs: Option<u64>,
    max_missed_pongs: Option<u32>,
}

/// The TOML file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bind: Option<String>,
    broker: Option<String>,
    broker_prefix: Option<String>,
    log_level: Option<String>,
    log_format: Option<String>,
    request_timeout_ms: Option<u64>,
    parse_mode: Option<String>,
    shutdown_grace_secs: Option<u64>,
    console: Option<bool>,
    #[serde(default)]
    tls: FileTls,
    #[serde(default)]
    auth: FileAuth,
    #[serde(default)]
    backend: FileBackend,
    #[serde(default)]
    limits: FileLimits,
    #[serde(default)]
    recovery: FileRecovery,
    #[serde(default)]
    api: FileApi,
    #[serde(default)]
    health: FileHealth,
    #[serde(default)]
    rooms: Vec<RoomSection>,
    rooms_default: Option<RoomSection>,
}

/// JWT verification settings.
#[derive(Debug, Clone)]
pub(crate) struct AuthSettings {
    pub(crate) key: JwtKey,
    pub(crate) algorithm: String,
    pub(crate) rooms_claim: String,
    pub(crate) optional: bool,
    pub(crate) audience: Option<String>,
    pub(crate) issuer: Option<String>,
}

/// Where the verification key comes from.
#[derive(Debug, Clone)]
pub(crate) enum JwtKey {
    Secret(String),
    PublicKeyFile(PathBuf),
}

/// The HTTP backend.
#[derive(Debug, Clone)]
pub(crate) struct BackendSettings {
    pub(crate) url: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) connect_hook: Option<String>,
    pub(crate) subscribe_hook: Option<String>,
}

/// Everything `helios serve` runs with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) bind: SocketAddr,
    /// `broker` / `--broker` / `HELIOS_BROKER` (see `crate::broker`).
    pub(crate) broker: Option<String>,
    /// `broker_prefix` / `--broker-prefix` / `HELIOS_BROKER_PREFIX`.
    pub(crate) broker_prefix: String,
    pub(crate) log_level: String,
    pub(crate) log_format: LogFormat,
    pub(crate) request_timeout: Duration,
    pub(crate) max_message_bytes: usize,
    pub(crate) parse_mode: ParseModeArg,
    pub(crate) shutdown_grace: Duration,
    pub(crate) console: bool,
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    pub(crate) auth: Option<AuthSettings>,
    pub(crate) backend: BackendSettings,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_connections_per_ip: Option<usize>,
    pub(crate) messages_per_second: Option<u32>,
    pub(crate) message_burst: Option<u32>,
    pub(crate) rate_limit_strikes: u32,
    pub(crate) handshake_timeout: Duration,
    pub(crate) allowed_origins: Vec<String>,
    pub(crate) rooms: Vec<RoomSection>,
    pub(crate) rooms_default: Option<RoomSection>,
    /// Session recovery: the token secret and the session TTL.
    pub(crate) recovery: Option<(String, Duration)>,
    /// The key of the server HTTP API (`/api/*`); off without one.
    pub(crate) api_key: Option<String>,
    /// Health-check ping interval (`None`: off) and missed pongs allowed.
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) max_missed_pongs: u32,
}

/// A configuration error that names its key.
fn bad(key: &str, msg: impl std::fmt::Display) -> String {
    format!("invalid configuration: {key}: {msg}")
}

/// Reads and parses a TOML file.
fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("invalid configuration in {}: {e}", path.display()))
}

/// Checks a config file on its own (`helios config check FILE`): the file
/// over the defaults, every value validated.
pub(crate) fn check_file(path: &Path) -> Result<Settings, String> {
    let file = read_file(path)?;
    resolve(Overrides::default(), file, path.parent())
}

/// Builds the settings for `helios serve`.
pub(crate) fn load(args: &ServeArgs, matches: &ArgMatches) -> Result<Settings, String> {
    let (file, dir) = match &args.config {
        Some(path) => (read_file(path)?, path.parent().map(Path::to_path_buf)),
        None => (FileConfig::default(), None),
    };
    resolve(Overrides::from_args(args, matches), file, dir.as_deref())
}

/// The values given on the command line or in the environment (only those
/// the user set; clap defaults do not count).
#[derive(Debug, Default)]
struct Overrides {
    bind: Option<SocketAddr>,
    broker: Option<String>,
    broker_prefix: Option<String>,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
    request_timeout_ms: Option<u64>,
    max_message_bytes: Option<u64>,
    parse_mode: Option<ParseModeArg>,
    shutdown_grace_secs: Option<u64>,
    no_console: bool,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    jwt_secret: Option<String>,
    jwt_public_key: Option<PathBuf>,
    jwt_algorithm: Option<String>,
    rooms_claim: Option<String>,
    audience: Option<String>,
    issuer: Option<String>,
    rate_limit_strikes: Option<u32>,
    auth_optional: bool,
    backend: Option<String>,
    backend_timeout_ms: Option<u64>,
    connect_hook: Option<String>,
    subscribe_hook: Option<String>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    messages_per_second: Option<u32>,
    message_burst: Option<u32>,
    handshake_timeout_ms: Option<u64>,
    allowed_origins: Option<Vec<String>>,
    recovery_secret: Option<String>,
    recovery_ttl_secs: Option<u64>,
    api_key: Option<String>,
    ping_interval_secs: Option<u64>,
    max_missed_pongs: Option<u32>,
}

impl Overrides {
    fn from_args(a: &ServeArgs, m: &ArgMatches) -> Self {
        // Flags with a clap default: explicit only when the source says so.
        let set = |id: &str| {
            matches!(
                m.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        Self {
            bind: set("bind").then_some(a.bind),
            broker: a.broker.clone(),
            broker_prefix: a.broker_prefix.clone(),
            log_level: set("log_level").then(|| a.log_level.clone()),
            log_format: set("log_format").then_some(a.log_format),
            request_timeout_ms: set("request_timeout_ms").then_some(a.request_timeout_ms),
            max_message_bytes: set("max_message_bytes").then_some(a.max_message_bytes),
            parse_mode: set("parse_mode").then_some(a.parse_mode),
            shutdown_grace_secs: set("shutdown_grace_secs").then_some(a.shutdown_grace_secs),
            no_console: a.no_console,
            tls_cert: a.tls_cert.clone(),
            tls_key: a.tls_key.clone(),
            jwt_secret: a.auth_jwt_secret.clone(),
            jwt_public_key: a.auth_jwt_public_key.clone(),
            jwt_algorithm: a.auth_jwt_algorithm.clone(),
            rooms_claim: a.auth_rooms_claim.clone(),
            audience: a.auth_audience.clone(),
            issuer: a.auth_issuer.clone(),
            rate_limit_strikes: a.rate_limit_strikes,
            auth_optional: a.auth_optional,
            backend: a.backend.clone(),
            backend_timeout_ms: a.backend_timeout_ms,
            connect_hook: a.backend_connect_hook.clone(),
            subscribe_hook: a.backend_subscribe_hook.clone(),
            max_connections: a.max_connections,
            max_connections_per_ip: a.max_connections_per_ip,
            messages_per_second: a.rate_limit,
            message_burst: a.rate_burst,
            handshake_timeout_ms: a.handshake_timeout_ms,
            allowed_origins: a.allowed_origins.clone(),
            recovery_secret: a.recovery_secret.clone(),
            recovery_ttl_secs: a.recovery_ttl_secs,
            api_key: a.api_key.clone(),
            ping_interval_secs: a.ping_interval_secs,
            max_missed_pongs: a.max_missed_pongs,
        }
    }
}

fn parse_log_format(key: &str, s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(bad(key, format!("{other:?} is not one of text, json"))),
    }
}

fn parse_mode(key: &str, s: &str) -> Result<ParseModeArg, String> {
    match s {
        "strict" => Ok(ParseModeArg::Strict),
        "permissive" => Ok(ParseModeArg::Permissive),
        other => Err(bad(
            key,
            format!("{other:?} is not one of strict, permissive"),
        )),
    }
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<T, String> {
    if v < lo || v > hi {
        return Err(bad(key, format!("{v} is out of range {lo}..={hi}")));
    }
    Ok(v)
}

fn positive<T: PartialOrd + Default + std::fmt::Display + Copy>(
    key: &str,
    v: T,
) -> Result<T, String> {
    if v <= T::default() {
        return Err(bad(key, "must be greater than 0"));
    }
    Ok(v)
}

fn check_url(key: &str, url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| bad(key, format!("{url:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") if uri.host().is_some() => Ok(()),
        Some("https") => Err(bad(
            key,
            "https backends are not supported yet; use http:// (e.g. a local sidecar)",
        )),
        _ => Err(bad(key, format!("{url:?} must be an absolute http:// URL"))),
    }
}

/// A hook is an absolute URL, or a path on the backend (`/connect`).
fn check_hook(key: &str, hook: &str, backend: Option<&str>) -> Result<(), String> {
    if hook.starts_with('/') {
        if backend.is_none() {
            return Err(bad(key, "a path needs backend.url (--backend)"));
        }
        return Ok(());
    }
    check_url(key, hook)
}

fn relative(dir: Option<&Path>, p: PathBuf) -> PathBuf {
    match dir {
        Some(d) if p.is_relative() => d.join(p),
        _ => p,
    }
}

fn resolve(o: Overrides, f: FileConfig, dir: Option<&Path>) -> Result<Settings, String> {
    let bind = match (o.bind, f.bind) {
        (Some(b), _) => b,
        (None, Some(s)) => s
            .parse()
            .map_err(|e| bad("bind", format!("{s:?} is not an address:port ({e})")))?,
        (None, None) => SocketAddr::from(([127, 0, 0, 1], 7700)),
    };
    // RUST_LOG, the tracing ecosystem's usual variable, is honoured below
    // every Helios setting of the log level.
    let log_level = o
        .log_level
        .or(f.log_level)
        .or_else(|| {
            std::env::var("RUST_LOG")
                .ok()
                .filter(|v| !v.trim().is_empty())
        })
        .unwrap_or_else(|| "info".to_owned());
    let log_format = match (o.log_format, f.log_format) {
        (Some(v), _) => v,
        (None, Some(s)) => parse_log_format("log_format", &s)?,
        (None, None) => LogFormat::Text,
    };
    let request_timeout_ms = match o.request_timeout_ms {
        Some(v) => v,
        None => range(
            "request_timeout_ms",
            f.request_timeout_ms.unwrap_or(5000),
            1,
            3_600_000,
        )?,
    };
    let max_message_bytes = match o.max_message_bytes {
        Some(v) => v,
        None => range(
            "limits.max_message_bytes",
            f.limits.max_message_bytes.unwrap_or(1024 * 1024),
            256,
            1 << 30,
        )?,
    };
    let parse_mode_v = match (o.parse_mode, f.parse_mode) {
        (Some(v), _) => v,
        (None, Some(s)) => parse_mode("parse_mode", &s)?,
        (None, None) => ParseModeArg::Strict,
    };
    let shutdown_grace_secs = o
        .shutdown_grace_secs
        .or(f.shutdown_grace_secs)
        .unwrap_or(10);
    let shutdown_grace_secs = range("shutdown_grace_secs", shutdown_grace_secs, 0, 3600)?;

    let tls_cert = o.tls_cert.or(f.tls.cert.map(|p| relative(dir, p)));
    let tls_key = o.tls_key.or(f.tls.key.map(|p| relative(dir, p)));
    let tls = match (tls_cert, tls_key) {
        (Some(c), Some(k)) => {
            for (key, p) in [("tls.cert", &c), ("tls.key", &k)] {
                if !p.is_file() {
                    return Err(bad(key, format!("{} is not a readable file", p.display())));
                }
            }
            Some((c, k))
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(bad(
                "tls.key",
                "tls.cert is set but tls.key is not (--tls-key / HELIOS_TLS_KEY)",
            ));
        }
        (None, Some(_)) => {
            return Err(bad(
                "tls.cert",
                "tls.key is set but tls.cert is not (--tls-cert / HELIOS_TLS_CERT)",
            ));
        }
    };

    let secret = o.jwt_secret.or(f.auth.jwt_secret);
    let public_key = o
        .jwt_public_key
        .or(f.auth.jwt_public_key.map(|p| relative(dir, p)));
    let algorithm = o.jwt_algorithm.or(f.auth.jwt_algorithm);
    let auth = match (secret, public_key) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "auth.jwt_secret",
                "set either auth.jwt_secret or auth.jwt_public_key, not both",
            ));
        }
        (Some(s), None) => {
            if s.len() < 16 {
                return Err(bad("auth.jwt_secret", "must be at least 16 bytes"));
            }
            let alg = algorithm.unwrap_or_else(|| "HS256".to_owned());
            if !matches!(alg.as_str(), "HS256" | "HS384" | "HS512") {
                return Err(bad(
                    "auth.jwt_algorithm",
                    format!("{alg:?} does not go with a shared secret (HS256, HS384, HS512)"),
                ));
            }
            Some((JwtKey::Secret(s), alg))
        }
        (None, Some(p)) => {
            if !p.is_file() {
                return Err(bad(
                    "auth.jwt_public_key",
                    format!("{} is not a readable file", p.display()),
                ));
            }
            let alg = algorithm.unwrap_or_else(|| "RS256".to_owned());
            if !matches!(
                alg.as_str(),
                "RS256"
                    | "RS384"
                    | "RS512"
                    | "PS256"
                    | "PS384"
                    | "PS512"
                    | "ES256"
                    | "ES384"
                    | "EdDSA"
            ) {
                return Err(bad(
                    "auth.jwt_algorithm",
                    format!("{alg:?} does not go with a public key (RS256, ES256, ...)"),
                ));
            }
            Some((JwtKey::PublicKeyFile(p), alg))
        }
        (None, None) => {
            if algorithm.is_some() {
                return Err(bad(
                    "auth.jwt_algorithm",
                    "set without auth.jwt_secret or auth.jwt_public_key",
                ));
            }
            None
        }
    };
    let auth = auth.map(|(key, algorithm)| AuthSettings {
        key,
        algorithm,
        rooms_claim: o
            .rooms_claim
            .clone()
            .or(f.auth.rooms_claim.clone())
            .unwrap_or_else(|| "rooms".to_owned()),
        optional: o.auth_optional || f.auth.optional.unwrap_or(false),
        audience: o.audience.clone().or_else(|| f.auth.audience.clone()),
        issuer: o.issuer.clone().or_else(|| f.auth.issuer.clone()),
    });

    let backend_url = o.backend.or(f.backend.url);
    if let Some(u) = &backend_url {
        check_url("backend.url", u)?;
    }
    let backend_timeout_ms = o
        .backend_timeout_ms
        .or(f.backend.timeout_ms)
        .unwrap_or(3000);
    let backend_timeout_ms = range("backend.timeout_ms", backend_timeout_ms, 1, 600_000)?;
    let connect_hook = o.connect_hook.or(f.backend.connect_hook);
    let subscribe_hook = o.subscribe_hook.or(f.backend.subscribe_hook);
    if let Some(h) = &connect_hook {
        check_hook("backend.connect_hook", h, backend_url.as_deref())?;
    }
    if let Some(h) = &subscribe_hook {
        check_hook("backend.subscribe_hook", h, backend_url.as_deref())?;
    }

    let max_connections = match o.max_connections.or(f.limits.max_connections) {
        Some(n) => Some(positive("limits.max_connections", n)?),
        None => None,
    };
    let max_connections_per_ip = match o.max_connections_per_ip.or(f.limits.max_connections_per_ip)
    {
        Some(n) => Some(positive("limits.max_connections_per_ip", n)?),
        None => None,
    };
    let messages_per_second = match o.messages_per_second.or(f.limits.messages_per_second) {
        Some(n) => Some(positive("limits.messages_per_second", n)?),
        None => None,
    };
    let message_burst = match o.message_burst.or(f.limits.message_burst) {
        Some(n) => Some(positive("limits.message_burst", n)?),
        None => None,
    };
    let rate_limit_strikes = positive(
        "limits.rate_limit_strikes",
        o.rate_limit_strikes
            .or(f.limits.rate_limit_strikes)
            .unwrap_or(10),
    )?;
    let handshake_timeout_ms = o
        .handshake_timeout_ms
        .or(f.limits.handshake_timeout_ms)
        .unwrap_or(10_000);
    let handshake_timeout_ms = range(
        "limits.handshake_timeout_ms",
        handshake_timeout_ms,
        100,
        600_000,
    )?;
    let allowed_origins = o
        .allowed_origins
        .or(f.limits.allowed_origins)
        .unwrap_or_default();
    for (i, origin) in allowed_origins.iter().enumerate() {
        if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
            return Err(bad(
                &format!("limits.allowed_origins[{i}]"),
                format!("{origin:?} must be \"*\" or a scheme://host[:port] origin"),
            ));
        }
    }

    let mut seen = BTreeMap::new();
    for (i, r) in f.rooms.iter().enumerate() {
        let key = format!("rooms[{i}]");
        let Some(p) = &r.pattern else {
            return Err(bad(&format!("{key}.pattern"), "missing"));
        };
        helios::Pattern::new(p).map_err(|e| bad(&format!("{key}.pattern"), e))?;
        if let Some(c) = p.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(
                &format!("{key}.pattern"),
                format!("{c:?} cannot be in a room name"),
            ));
        }
        if let Some(j) = seen.insert(p.clone(), i) {
            return Err(bad(
                &format!("{key}.pattern"),
                format!("{p:?} is already declared by rooms[{j}]"),
            ));
        }
        check_room(&key, r, auth.is_some())?;
    }
    if let Some(r) = &f.rooms_default {
        if r.pattern.is_some() {
            return Err(bad(
                "rooms_default.pattern",
                "rooms_default applies to every undeclared room; it has no pattern",
            ));
        }
        check_room("rooms_default", r, auth.is_some())?;
    }

    let recovery_ttl_secs = range(
        "recovery.ttl_secs",
        o.recovery_ttl_secs.or(f.recovery.ttl_secs).unwrap_or(300),
        1,
        86_400,
    )?;
    let recovery = match o.recovery_secret.or(f.recovery.secret) {
        Some(secret) if secret.len() < helios::MIN_SECRET_LEN => {
            return Err(bad(
                "recovery.secret",
                format!(
                    "must be at least {} bytes (got {}); set it with --recovery-secret or HELIOS_RECOVERY_SECRET",
                    helios::MIN_SECRET_LEN,
                    secret.len()
                ),
            ));
        }
        Some(secret) => Some((secret, Duration::from_secs(recovery_ttl_secs))),
        None => None,
    };
    let api_key = match o.api_key.or(f.api.key) {
        Some(key) if key.len() < crate::api::MIN_KEY_LEN => {
            return Err(bad(
                "api.key",
                format!(
                    "must be at least {} bytes (got {}); set it with --api-key or HELIOS_API_KEY",
                    crate::api::MIN_KEY_LEN,
                    key.len()
                ),
            ));
        }
        key => key,
    };
    let ping_secs = range(
        "health.ping_interval_secs",
        o.ping_interval_secs
            .or(f.health.ping_interval_secs)
            .unwrap_or(30),
        0,
        3_600,
    )?;
    let max_missed_pongs = range(
        "health.max_missed_pongs",
        o.max_missed_pongs
            .or(f.health.max_missed_pongs)
            .unwrap_or(2),
        1,
        100,
    )?;
    let broker = o.broker.or(f.broker);
    let broker_prefix = o
        .broker_prefix
        .or(f.broker_prefix)
        .unwrap_or_else(|| "helios".to_owned());
    // Refused here, so `helios config check` names a bad broker too.
    crate::broker::from_url(broker.as_deref(), &broker_prefix)?;
    Ok(Settings {
        bind,
        broker,
        broker_prefix,
        log_level,
        log_format,
        request_timeout: Duration::from_millis(request_timeout_ms),
        max_message_bytes: max_message_bytes as usize,
        parse_mode: parse_mode_v,
        shutdown_grace: Duration::from_secs(shutdown_grace_secs),
        console: !o.no_console && f.console.unwrap_or(true),
        tls,
        auth,
        backend: BackendSettings {
            url: backend_url,
            timeout: Duration::from_millis(backend_timeout_ms),
            connect_hook,
            subscribe_hook,
        },
        max_connections,
        max_connections_per_ip,
        messages_per_second,
        message_burst,
        rate_limit_strikes,
        handshake_timeout: Duration::from_millis(handshake_timeout_ms),
        allowed_origins,
        rooms: f.rooms,
        rooms_default: f.rooms_default,
        recovery,
        api_key,
        ping_interval: (ping_secs > 0).then(|| Duration::from_secs(ping_secs)),
        max_missed_pongs,
    })
}

fn check_room(key: &str, r: &RoomSection, auth: bool) -> Result<(), String> {
    if r.subscribe == Some(AccessSetting::Members) {
        return Err(bad(
            &format!("{key}.subscribe"),
            "\"members\" only applies to publish",
        ));
    }
    for (what, access) in [("subscribe", r.subscribe), ("publish", r.publish)] {
        if matches!(
            access,
            Some(AccessSetting::Authenticated | AccessSetting::Claim)
        ) && !auth
        {
            return Err(bad(
                &format!("{key}.{what}"),
                "needs authentication: set auth.jwt_secret or auth.jwt_public_key",
            ));
        }
    }
    if r.max_subscribers == Some(0) {
        return Err(bad(
            &format!("{key}.max_subscribers"),
            "must be greater than 0",
        ));
    }
    if let Some(h) = r.history {
        range(&format!("{key}.history"), h, 0, 1_000_000)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, String> {
        let f: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        resolve(Overrides::default(), f, None)
    }

    #[test]
    fn defaults() {
        let s = parse("").expect("empty file is valid");
        assert_eq!(s.bind.to_string(), "127.0.0.1:7700");
        assert_eq!(s.request_timeout, Duration::from_secs(5));
        assert!(s.console && s.auth.is_none() && s.tls.is_none());
    }

    #[test]
    fn file_then_overrides() {
        let f: FileConfig =
            toml::from_str("bind = \"127.0.0.1:9000\"\nrequest_timeout_ms = 700").expect("toml");
        let o = Overrides {
            request_timeout_ms: Some(900),
            ..Overrides::default()
        };
        let s = resolve(o, f, None).expect("valid");
        assert_eq!(s.bind.port(), 9000);
        assert_eq!(s.request_timeout, Duration::from_millis(900));
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("bind = \"nope\"").expect_err("must be refused");
        assert!(e.contains("bind"), "{e}");
        let e = parse("[limits]\nmax_connections = 0").expect_err("must be refused");
        assert!(e.contains("limits.max_connections"), "{e}");
        let e = parse("[[rooms]]\npattern = \"a:*b\"").expect_err("must be refused");
        assert!(e.contains("rooms[0].pattern"), "{e}");
        let e = parse("[[rooms]]\npattern = \"a:*\"\nsubscribe = \"claim\"")
            .expect_err("must be refused");
        assert!(e.contains("rooms[0].subscribe"), "{e}");
        let e = parse("bnd = 1").expect_err("must be refused");
        assert!(e.contains("bnd"), "{e}");
        let e = parse("[backend]\nurl = \"ftp://x\"").expect_err("must be refused");
        assert!(e.contains("backend.url"), "{e}");
    }
}
