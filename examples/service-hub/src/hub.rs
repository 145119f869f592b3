//! The hub: the service registry, `hub:register`, `hub:services`, and the
//! relay hook that enforces manifests.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use helios::protocol::{ErrorCode, ParseMode, PeerRef};
use helios::{Connection, Context, Helios, MethodError, RelayDecision, RelayRequest};
use parking_lot::Mutex;
use serde_json::json;

use crate::manifest::{MANIFEST_METHOD, Manifest, Registration, ServiceInfo};

/// How long a service has to answer `service:manifest`.
const MANIFEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Most methods one manifest may list.
const MAX_METHODS: usize = 256;
/// Namespaces a service may not claim (the built-ins' and the hub's own).
const RESERVED: [&str; 5] = ["system:", "internal:", "stream:", "helios:", "hub:"];

/// The hub server, ready to [`serve`](Helios::serve).
pub fn app() -> Helios {
    let hub = Arc::new(Hub::default());
    let (on_register, on_list, on_relay, on_leave) = (hub.clone(), hub.clone(), hub.clone(), hub);
    Helios::builder()
        // Not `ordered`: registering waits for the service to answer
        // `service:manifest`, which the connection must be free to read.
        .method("hub:register", move |ctx: Context<Registration>| {
            register(on_register.clone(), ctx)
        })
        .method("hub:services", move |_: Context| {
            let hub = on_list.clone();
            async move { Ok::<_, MethodError>(hub.list()) }
        })
        .relay_hook(move |req| {
            let hub = on_relay.clone();
            async move { hub.decide(&req) }
        })
        .on_disconnect(move |conn| {
            let hub = on_leave.clone();
            async move {
                for name in hub.remove_connection(conn.id()) {
                    tracing::info!(%name, "service gone");
                }
            }
        })
        .build()
}

/// Registered services by name. Every lock is a short section with no
/// `.await` inside.
#[derive(Default)]
struct Hub {
    services: Mutex<HashMap<String, Service>>,
}

struct Service {
    conn: Connection,
    methods: BTreeSet<String>,
}

impl Hub {
    fn list(&self) -> Vec<ServiceInfo> {
        let mut list: Vec<ServiceInfo> = self
            .services
            .lock()
            .iter()
            .filter(|(_, s)| s.conn.is_open())
            .map(|(name, s)| info(name, s))
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Records a service; a connection serves one name at a time.
    fn insert(&self, name: String, conn: Connection, methods: BTreeSet<String>) -> ServiceInfo {
        let mut services = self.services.lock();
        services.retain(|_, s| s.conn.id() != conn.id());
        let service = Service { conn, methods };
        let out = info(&name, &service);
        services.insert(name, service);
        out
    }

    fn remove_connection(&self, conn: &str) -> Vec<String> {
        let mut gone = Vec::new();
        self.services.lock().retain(|name, s| {
            let keep = s.conn.id() != conn;
            if !keep {
                gone.push(name.clone());
            }
            keep
        });
        gone
    }

    /// The relay hook: only registered, live services, only the methods
    /// their manifest lists.
    fn decide(&self, req: &RelayRequest) -> RelayDecision {
        let services = self.services.lock();
        let found = services.iter().find(|(name, s)| {
            s.conn.is_open()
                && match &req.target {
                    PeerRef::Name(n) => *name == n,
                    PeerRef::Id(id) => s.conn.id() == id,
                }
        });
        let Some((name, service)) = found else {
            let target = match &req.target {
                PeerRef::Name(n) => format!("named {n:?}"),
                PeerRef::Id(id) => format!("with id {id:?}"),
            };
            return RelayDecision::Deny(MethodError::new(
                ErrorCode::PEER_NOT_FOUND,
                format!("no service {target} is registered"),
            ));
        };
        let what = req.method.as_deref().or(req.topic.as_deref()).unwrap_or("");
        if service.methods.contains(what) {
            RelayDecision::Forward
        } else {
            RelayDecision::Deny(MethodError::new(
                ErrorCode::FORBIDDEN,
                format!("service {name:?} does not offer {what:?}"),
            ))
        }
    }
}

fn info(name: &str, s: &Service) -> ServiceInfo {
    ServiceInfo {
        name: name.to_owned(),
        methods: s.methods.iter().cloned().collect(),
        starling_id: s.conn.id().to_owned(),
    }
}

fn invalid(message: String) -> MethodError {
    MethodError::new(ErrorCode::INVALID_PAYLOAD, message)
}

/// `hub:register {name, methods?}`.
async fn register(hub: Arc<Hub>, ctx: Context<Registration>) -> Result<ServiceInfo, MethodError> {
    let conn = ctx.connection().clone();
    let Registration { name, methods } = ctx.payload;
    if conn.name().as_deref() != Some(name.as_str()) {
        return Err(MethodError::new(
            ErrorCode::FORBIDDEN,
            format!("claim the name first: helios:identify {{\"name\": {name:?}}}"),
        ));
    }
    let methods = match methods {
        Some(m) => m,
        None => fetch_manifest(&conn, &name).await?,
    };
    let methods = check_methods(methods)?;
    let registered = hub.insert(name, conn, methods);
    tracing::info!(name = %registered.name, methods = ?registered.methods, "service registered");
    Ok(registered)
}

/// Asks the service what it serves (a server → client request).
async fn fetch_manifest(conn: &Connection, name: &str) -> Result<Vec<String>, MethodError> {
    let answer = conn
        .request_with(MANIFEST_METHOD, json!({}), MANIFEST_TIMEOUT)
        .await
        .map_err(|e| {
            MethodError::new(e.code, format!("{MANIFEST_METHOD} failed: {}", e.message))
        })?;
    let manifest: Manifest = serde_json::from_value(answer)
        .map_err(|e| invalid(format!("the manifest does not fit {{name, methods}}: {e}")))?;
    if manifest.name != name {
        return Err(invalid(format!(
            "the manifest names {:?}, not {name:?}",
            manifest.name
        )));
    }
    Ok(manifest.methods)
}

fn check_methods(methods: Vec<String>) -> Result<BTreeSet<String>, MethodError> {
    if methods.len() > MAX_METHODS {
        return Err(invalid(format!("at most {MAX_METHODS} methods")));
    }
    for m in &methods {
        ParseMode::Strict
            .check_method(m)
            .map_err(|e| invalid(format!("bad method name {m:?}: {e}")))?;
        if RESERVED.iter().any(|ns| m.starts_with(ns)) {
            return Err(invalid(format!("{m:?} is in a reserved namespace")));
        }
    }
    Ok(methods.into_iter().collect())
}
