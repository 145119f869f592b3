//! `helios serve`: a Helios node that needs no Rust code.

mod api;
mod backend;
mod broker;
mod cli;
mod console;
mod jwt;
mod settings;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clap::{CommandFactory, FromArgMatches};
use helios::{
    Access, Auth, AuthRejection, Builder, Config, HandshakeRequest, Helios, RoomAction, RoomRule,
    ServeOptions, TlsConfig,
};
use helios_protocol::ParseMode;
use http::{StatusCode, header};
use serde_json::json;
use tracing_subscriber::EnvFilter;

use crate::backend::Backend;
use crate::cli::{Cli, Command, ConfigCommand, LogFormat, ParseModeArg};
use crate::settings::{AccessSetting, RoomSection, Settings};

fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Serve(args) => {
            let sub = matches.subcommand_matches("serve").unwrap_or(&matches);
            settings::load(&args, sub).and_then(run)
        }
        Command::Config(ConfigCommand::Check { file }) => settings::check_file(&file).map(|s| {
            println!("{}: ok", file.display());
            println!("{}", summary(&s));
        }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("helios: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(settings: Settings) -> Result<(), String> {
    // On one CPU the work-stealing scheduler only adds cost: every wake-up
    // goes through its shared queues and atomics, and the accept loop runs
    // on a thread of its own. The current-thread scheduler runs everything
    // on this thread.
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let rt = builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(serve(settings))
}

/// One line per setting that differs from a bare `helios serve`.
fn summary(s: &Settings) -> String {
    let mut lines = vec![format!("bind = {}", s.bind)];
    if let Some((c, k)) = &s.tls {
        lines.push(format!("tls = {} + {}", c.display(), k.display()));
    }
    if let Some(a) = &s.auth {
        lines.push(format!(
            "auth = {} (rooms claim {:?}{})",
            a.algorithm,
            a.rooms_claim,
            if a.optional { ", optional" } else { "" }
        ));
    }
    if let Some(u) = &s.backend.url {
        lines.push(format!("backend = {u} (timeout {:?})", s.backend.timeout));
    }
    lines.push(format!("rooms = {} rule(s)", s.rooms.len()));
    lines.join("\n")
}

fn init_logging(s: &Settings) -> Result<(), String> {
    let filter = EnvFilter::try_new(&s.log_level)
        .map_err(|e| format!("invalid configuration: log_level: {:?}: {e}", s.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match s.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| e.to_string())
}

fn config_from(s: &Settings) -> Config {
    let mut config = Config::default();
    config.request_timeout = s.request_timeout;
    config.max_message_bytes = s.max_message_bytes;
    config.parse_mode = match s.parse_mode {
        ParseModeArg::Strict => ParseMode::Strict,
        ParseModeArg::Permissive => ParseMode::Permissive,
    };
    config.shutdown_grace = s.shutdown_grace;
    // The secret's length was checked when the settings were resolved.
    config.recovery = s
        .recovery
        .as_ref()
        .and_then(|(secret, ttl)| helios::RecoveryConfig::new(secret, *ttl).ok());
    config.ping_interval = s.ping_interval;
    config.max_missed_pongs = s.max_missed_pongs;
    if let Some(rate) = s.messages_per_second {
        config.rate_limit = Some(helios::RateLimit::new(
            rate,
            s.message_burst.unwrap_or(rate),
            s.rate_limit_strikes,
        ));
    }
    config
}

fn access(a: AccessSetting) -> Access {
    match a {
        AccessSetting::Anyone => Access::Anyone,
        AccessSetting::Authenticated => Access::Authenticated,
        AccessSetting::Claim => Access::Claimed,
        AccessSetting::Members => Access::Members,
        AccessSetting::Nobody => Access::Nobody,
    }
}

/// A `[[rooms]]` entry as a library rule, asking the subscribe hook when set.
fn room_rule(r: &RoomSection, backend: &Backend, hook: Option<&String>) -> RoomRule {
    let mut rule = RoomRule::new();
    if let Some(a) = r.subscribe {
        rule = rule.subscribe(access(a));
    }
    if let Some(a) = r.publish {
        rule = rule.publish(access(a));
    }
    if let Some(p) = r.presence {
        rule = rule.presence(p);
    }
    if let Some(h) = r.history {
        rule = rule.history(h);
    }
    if let Some(t) = r.history_ttl_secs {
        rule = rule.history_ttl(std::time::Duration::from_secs(t));
    }
    if let Some(m) = r.max_subscribers {
        rule = rule.max_subscribers(m);
    }
    match hook {
        Some(hook) if r.subscribe_hook != Some(false) => {
            with_subscribe_hook(rule, backend.clone(), hook.clone())
        }
        _ => rule,
    }
}

fn with_subscribe_hook(rule: RoomRule, backend: Backend, hook: String) -> RoomRule {
    rule.validator(move |req| {
        let backend = backend.clone();
        let hook = hook.clone();
        async move {
            if req.action != RoomAction::Subscribe {
                return true;
            }
            let body = json!({
                "topic": req.topic,
                "starlingId": req.connection.id(),
                "user": req.connection.user_id(),
                "data": req.data,
            });
            match backend::ask(&backend, &hook, body).await {
                Ok(_) => true,
                Err(reason) => {
                    tracing::info!(topic = %req.topic, %reason, "subscription denied by the backend");
                    false
                }
            }
        }
    })
}

/// The handshake check: the JWT (when auth is on), then the connect hook.
fn with_auth(builder: Builder, s: &Settings, backend: &Backend) -> Result<Builder, String> {
    let verifier = match &s.auth {
        Some(a) => Some(Arc::new(jwt::Verifier::new(a)?)),
        None => None,
    };
    let hook = s.backend.connect_hook.clone();
    if verifier.is_none() && hook.is_none() {
        return Ok(builder);
    }
    let optional = s.auth.as_ref().is_some_and(|a| a.optional);
    let backend = backend.clone();
    Ok(builder.authenticate(move |req: HandshakeRequest| {
        let verifier = verifier.clone();
        let hook = hook.clone();
        let backend = backend.clone();
        async move {
            let token = req.token();
            let auth: Option<Auth> = match (&verifier, token) {
                (Some(v), Some(t)) => Some(v.verify(&t)?),
                (Some(_), None) if optional && !req.is_refresh() => None,
                (Some(_), None) => {
                    return Err(AuthRejection::Unauthorized(
                        "missing token: send ?token= or Authorization: Bearer".to_owned(),
                    ));
                }
                (None, _) => None,
            };
            if let (Some(hook), false) = (&hook, req.is_refresh()) {
                let body = json!({
                    "user": auth.as_ref().and_then(|a| a.user_id().map(str::to_owned)),
                    "claims": auth.as_ref().map(|a| a.claims_value().clone()),
                    "remoteAddr": req.remote_addr().map(|a| a.to_string()),
                    "origin": req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()),
                    "query": req.uri().query(),
                });
                backend::ask(&backend, hook, body)
                    .await
                    .map_err(AuthRejection::Forbidden)?;
            }
            Ok(auth)
        }
    }))
}

fn build(s: &Settings) -> Result<Helios, String> {
    let backend = Backend::new(s.backend.url.clone(), s.backend.timeout);
    let hook = s.backend.subscribe_hook.as_ref();
    let mut builder = Helios::builder().config(config_from(s));
    if let Some(apply) = broker::from_url(s.broker.as_deref(), &s.broker_prefix)? {
        builder = apply(builder);
    }
    for r in &s.rooms {
        let pattern = r.pattern.as_deref().unwrap_or("**");
        builder = builder.room(pattern, room_rule(r, &backend, hook));
    }
    match (&s.rooms_default, hook) {
        (Some(r), _) => builder = builder.undeclared_rooms(room_rule(r, &backend, hook)),
        (None, Some(h)) => {
            builder = builder.undeclared_rooms(with_subscribe_hook(
                RoomRule::new(),
                backend.clone(),
                h.clone(),
            ));
        }
        (None, None) => {}
    }
    builder = with_auth(builder, s, &backend)?;
    if s.backend.url.is_some() {
        builder = builder.fallback(backend::proxy(backend));
    }
    Ok(builder.build())
}

/// Refuses WebSocket upgrades from origins not on the allow-list (403).
/// Requests without `Origin` (non-browser clients) and same-origin pages
/// pass.
async fn check_origin(
    State(allowed): State<Arc<Vec<String>>>,
    req: Request,
    next: Next,
) -> Response {
    let is_upgrade = req.headers().contains_key(header::UPGRADE);
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if let (true, Some(origin)) = (is_upgrade, origin) {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok());
        let same_origin = host.is_some_and(|h| {
            origin
                .split_once("://")
                .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(h))
        });
        let listed = allowed
            .iter()
            .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin));
        if !same_origin && !listed {
            tracing::info!(%origin, "WebSocket origin not allowed");
            return (
                StatusCode::FORBIDDEN,
                format!("origin {origin} is not allowed"),
            )
                .into_response();
        }
    }
    next.run(req).await
}

async fn serve(s: Settings) -> Result<(), String> {
    init_logging(&s)?;
    let helios = build(&s)?;
    let mut opts = ServeOptions::new().handshake_timeout(s.handshake_timeout);
    if let Some(n) = s.max_connections {
        opts = opts.max_connections(n);
    }
    if let Some(n) = s.max_connections_per_ip {
        opts = opts.max_connections_per_ip(n);
    }
    if let Some((cert, key)) = &s.tls {
        let tls = TlsConfig::from_pem_files(cert, key)
            .map_err(|e| format!("invalid configuration: tls: {e}"))?;
        opts = opts.tls(tls);
    }
    let mut router: Router =
        helios
            .router()
            .merge(console::routes(helios.clone(), s.console, s.tls.is_some()));
    if let Some(key) = &s.api_key {
        router = router.merge(api::routes(helios.clone(), key.clone()));
    }
    if !s.allowed_origins.is_empty() {
        router = router.layer(axum::middleware::from_fn_with_state(
            Arc::new(s.allowed_origins.clone()),
            check_origin,
        ));
    }
    // The backplane first: the node announces itself only once it can work.
    start_broker(&helios).await?;
    let listener = tokio::net::TcpListener::bind(s.bind).await.map_err(|e| {
        format!(
            "cannot listen on {} (bind / --bind / HELIOS_BIND): {e}",
            s.bind
        )
    })?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let scheme = if s.tls.is_some() { "wss" } else { "ws" };
    let web = if s.tls.is_some() { "https" } else { "http" };
    let scheduler = match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => "current-thread (1 CPU)",
        _ => "multi-thread",
    };
    tracing::info!(%addr, scheduler, "helios listening; WebSocket at {scheme}://{addr}/ws, console at {web}://{addr}/console");
    helios
        .serve_with(listener, router, opts, shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"))?;
    tracing::info!("helios stopped");
    Ok(())
}

/// Connects the broker (and the cluster's node bus), retrying a transient
/// failure with back-off for up to 30 s — a node started while its broker
/// is briefly slow or restarting waits instead of exiting.
async fn start_broker(helios: &Helios) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut delay = Duration::from_millis(200);
    loop {
        match helios.start().await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, "broker not ready, retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                return Err(format!(
                    "cannot start the broker (broker / --broker / HELIOS_BROKER): {e}"
                ));
            }
        }
    }
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
