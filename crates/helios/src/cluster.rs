//! What several nodes share beyond rooms: **presence** (who is in a room on
//! every node), the **peer directory** (which node holds a `starlingId`,
//! which connection holds a peer name) and the **node bus** (request/reply
//! between nodes, used by peer relay). Each is an optional capability beside
//! the [`Broker`](crate::Broker); a server without them behaves as one node.
//!
//! Sessions are the fourth capability: [`SessionStore`](crate::SessionStore).
//!
//! # Liveness
//! Every node keeps a heartbeat key alive under a TTL (the *node TTL*).
//! Presence entries, directory entries and names are written on join,
//! connect and identify, deleted on leave and close, and carry the node id:
//! an entry whose node's heartbeat expired is ignored (and cleaned up) by
//! readers. So a killed node's members and names vanish within one node TTL.
//!
//! [`MemoryCluster`] is all of it in one process (several [`Helios`]
//! instances on one `MemoryCluster` behave as several nodes).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use helios_protocol::{ErrorBody, ErrorCode, Payload, PeerRef, Request};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::broker::BrokerError;
use crate::helios::{Helios, WeakHelios};
use crate::session::SessionStore;

/// Default node TTL: a node's heartbeat key lives this long, refreshed every
/// third of it.
pub const DEFAULT_NODE_TTL: Duration = Duration::from_secs(10);

/// Cross-node presence: the members of a room on every live node.
pub trait PresenceStore: Send + Sync + 'static {
    /// A local connection joined a room; `member` is what presence lists.
    fn add<'a>(
        &'a self,
        topic: &'a str,
        conn_id: &'a str,
        member: Value,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// A local connection left a room.
    fn remove<'a>(
        &'a self,
        topic: &'a str,
        conn_id: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Every member of a room on every live node (this one included).
    fn members<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<Vec<Value>, BrokerError>>;
}

/// Where a peer lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerLocation {
    /// The connection's `starlingId`.
    pub conn_id: String,
    /// The node that holds it.
    pub node_id: String,
}

/// The cluster-wide directory: `starlingId` → node, peer name → connection.
pub trait PeerDirectory: Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> &str;
    /// A connection is live on this node.
    fn register<'a>(&'a self, conn_id: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// A connection of this node ended.
    fn unregister<'a>(&'a self, conn_id: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// The live node holding a connection.
    fn locate<'a>(&'a self, conn_id: &'a str)
    -> BoxFuture<'a, Result<Option<String>, BrokerError>>;
    /// Claims a name for a connection of this node: `true` when it now
    /// holds it (free, already its own, or held by a dead node), `false`
    /// when another live connection holds it.
    fn claim_name<'a>(
        &'a self,
        name: &'a str,
        conn_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, BrokerError>>;
    /// Releases a name if `conn_id` holds it.
    fn release_name<'a>(
        &'a self,
        name: &'a str,
        conn_id: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// The live holder of a name.
    fn resolve_name<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PeerLocation>, BrokerError>>;
}

/// Why a node-to-node request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// No live node with that id listens.
    #[error("no such node")]
    NoSuchNode,
    /// The node did not answer in time.
    #[error("node request timed out")]
    Timeout,
    /// The backend failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Handles what other nodes send to this one.
pub trait NodeHandler: Send + Sync + 'static {
    /// Answers one request (or handles one one-way message; the answer is
    /// then dropped).
    fn handle(&self, body: Value) -> BoxFuture<'static, Value>;
}

/// Node-to-node messages, and the node's heartbeat.
pub trait NodeBus: Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> &str;
    /// Starts listening on this node's channel and the heartbeat.
    fn start(&self, handler: Arc<dyn NodeHandler>) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// Sends `body` to a node and waits for its answer.
    fn request<'a>(
        &'a self,
        node: &'a str,
        body: Value,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Value, BusError>>;
    /// Sends `body` to a node without waiting.
    fn send<'a>(&'a self, node: &'a str, body: Value) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Stops the heartbeat and the node's channel without cleaning up, as a
    /// crash would: the node's entries expire within the node TTL.
    fn stop(&self);
}

/// Everything a cluster backend provides.
pub trait Cluster: PresenceStore + PeerDirectory + NodeBus + SessionStore {}
impl<T: PresenceStore + PeerDirectory + NodeBus + SessionStore> Cluster for T {}

/// The cluster capabilities a [`Helios`] was built with.
#[derive(Clone)]
pub(crate) struct ClusterParts {
    pub(crate) presence: Arc<dyn PresenceStore>,
    pub(crate) directory: Arc<dyn PeerDirectory>,
    pub(crate) bus: Arc<dyn NodeBus>,
    /// Relayed requests this node is running for other nodes, by relay id.
    pub(crate) inflight: Arc<Mutex<HashMap<String, CancellationToken>>>,
}

impl ClusterParts {
    pub(crate) fn new<C: Cluster>(c: Arc<C>) -> Self {
        Self {
            presence: c.clone(),
            directory: c.clone(),
            bus: c,
            inflight: Arc::default(),
        }
    }
}

/// The member entry presence lists for a connection.
pub(crate) fn member_of(c: &crate::connection::Connection) -> Value {
    let mut m = json!({ "starlingId": c.id() });
    if let Some(name) = c.name() {
        m["name"] = Value::String(name);
    }
    if let Some(user) = c.user_id() {
        m["user"] = Value::String(user);
    }
    m
}

/// Answers other nodes: relayed requests and notifications, cancels.
pub(crate) struct HeliosNodeHandler(pub(crate) WeakHelios);

fn error_value(e: &ErrorBody) -> Value {
    json!({ "error": e })
}

impl NodeHandler for HeliosNodeHandler {
    fn handle(&self, body: Value) -> BoxFuture<'static, Value> {
        let helios = self.0.upgrade();
        Box::pin(async move {
            let Some(helios) = helios else {
                return error_value(&ErrorBody::new(
                    ErrorCode::PEER_NOT_FOUND,
                    "the node is shutting down",
                ));
            };
            helios.handle_node_message(body).await
        })
    }
}

fn str_field<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

impl Helios {
    pub(crate) async fn handle_node_message(&self, body: Value) -> Value {
        let Some(cluster) = self.cluster() else {
            return Value::Null;
        };
        let kind = str_field(&body, "kind");
        if kind == "cancel" {
            if let Some(t) = cluster.inflight.lock().remove(str_field(&body, "relay")) {
                t.cancel();
            }
            return Value::Null;
        }
        let to = str_field(&body, "to");
        let from = str_field(&body, "from").to_owned();
        let not_found = || {
            error_value(&ErrorBody::new(
                ErrorCode::PEER_NOT_FOUND,
                format!("no connection with id {to:?}"),
            ))
        };
        let Some(peer) = self.connection(to) else {
            return not_found();
        };
        match kind {
            "notify" => {
                let topic = body.get("topic").and_then(Value::as_str).map(str::to_owned);
                let data = body.get("data").cloned().unwrap_or(Value::Null);
                match peer.notify_from(topic, data, PeerRef::Id(from)).await {
                    Ok(()) => json!({ "ok": null }),
                    Err(_) => not_found(),
                }
            }
            "request" => {
                let relay = str_field(&body, "relay").to_owned();
                let timeout = Duration::from_millis(
                    body.get("timeoutMs")
                        .and_then(Value::as_u64)
                        .unwrap_or(5000)
                        .min(3_600_000),
                );
                let mut fwd = Request::new(str_field(&body, "method"), Value::Null);
                fwd.payload = body.get("payload").cloned().map(Payload::Value);
                fwd.peer = Some(PeerRef::Id(from));
                fwd.timeout_ms = Some(timeout.as_millis() as u64);
                let token = CancellationToken::new();
                cluster.inflight.lock().insert(relay.clone(), token.clone());
                let answer = tokio::select! {
                    resp = peer.send_request(fwd, timeout) => match resp.result {
                        Ok(v) => json!({ "ok": v }),
                        Err(e) if e.code.as_str() == "CONNECTION_CLOSED" => error_value(&ErrorBody::new(
                            ErrorCode::PEER_NOT_FOUND,
                            "the peer disconnected before answering",
                        )),
                        Err(e) => error_value(&e),
                    },
                    // Dropping `send_request` tells the peer to cancel.
                    () = token.cancelled() => error_value(&ErrorBody::new(
                        ErrorCode::REQUEST_CANCELLED,
                        "request cancelled by the caller",
                    )),
                };
                cluster.inflight.lock().remove(&relay);
                answer
            }
            _ => error_value(&ErrorBody::new(
                ErrorCode::INVALID_MESSAGE_FORMAT,
                format!("unknown node message kind {kind:?}"),
            )),
        }
    }

    /// The members of a room on every node (the local ones first, as
    /// [`presence`](Self::presence) lists them). Without a presence store,
    /// or when it is unreachable, only this node's.
    pub async fn cluster_presence(&self, topic: &str) -> Vec<Value> {
        let mut local = self.presence(topic);
        let Some(cluster) = self.cluster() else {
            return local;
        };
        match cluster.presence.members(topic).await {
            Ok(all) => {
                let seen: std::collections::HashSet<String> = local
                    .iter()
                    .map(|m| str_field(m, "starlingId").to_owned())
                    .collect();
                local.extend(
                    all.into_iter()
                        .filter(|m| !seen.contains(str_field(m, "starlingId"))),
                );
                local
            }
            Err(e) => {
                tracing::warn!(%topic, error = %e, "presence store unavailable: local members only");
                local
            }
        }
    }

    /// Writes a connection's presence entries again (its name changed).
    pub(crate) async fn refresh_presence(&self, conn: &crate::connection::Connection) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let member = member_of(conn);
        for topic in conn.rooms() {
            if let Err(e) = cluster
                .presence
                .add(&topic, conn.id(), member.clone())
                .await
            {
                tracing::warn!(%topic, error = %e, "presence entry not refreshed");
            }
        }
    }

    /// A connection is live here: tell the directory.
    pub(crate) async fn cluster_register(&self, conn: &crate::connection::Connection) {
        if let Some(cluster) = self.cluster()
            && let Err(e) = cluster.directory.register(conn.id()).await
        {
            tracing::warn!(conn = %conn.id(), error = %e, "not registered in the peer directory");
        }
    }

    /// A connection ended here: tell the directory.
    pub(crate) async fn cluster_unregister(&self, conn: &crate::connection::Connection) {
        if let Some(cluster) = self.cluster()
            && let Err(e) = cluster.directory.unregister(conn.id()).await
        {
            tracing::warn!(conn = %conn.id(), error = %e, "not removed from the peer directory");
        }
    }
}

/// Sends the cancel of a relayed request to the peer's node when the
/// caller's side gives up before the answer.
pub(crate) struct RemoteCancel {
    pub(crate) bus: Arc<dyn NodeBus>,
    pub(crate) node: String,
    pub(crate) relay: Option<String>,
}

impl Drop for RemoteCancel {
    fn drop(&mut self) {
        let Some(relay) = self.relay.take() else {
            return;
        };
        let bus = self.bus.clone();
        let node = std::mem::take(&mut self.node);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = bus
                    .send(&node, json!({ "kind": "cancel", "relay": relay }))
                    .await;
            });
        }
    }
}

// ---------------------------------------------------------------------------
// In-process implementation
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Backplane {
    /// node → alive
    nodes: HashMap<String, bool>,
    handlers: HashMap<String, Arc<dyn NodeHandler>>,
    /// topic → (node, conn) → member
    presence: HashMap<String, HashMap<(String, String), Value>>,
    conns: HashMap<String, String>,
    /// name → (node, conn)
    names: HashMap<String, (String, String)>,
}

impl Backplane {
    fn alive(&self, node: &str) -> bool {
        self.nodes.get(node).copied().unwrap_or(false)
    }
}

/// Cluster capabilities in one process: every node made by
/// [`MemoryCluster::node`] of one `MemoryCluster` shares presence, the
/// directory and the bus. Sessions are shared too.
///
/// ```
/// let cluster = helios::MemoryCluster::new();
/// let a = helios::Helios::builder().cluster(cluster.node()).build();
/// let b = helios::Helios::builder().cluster(cluster.node()).build();
/// # drop((a, b));
/// ```
#[derive(Clone, Default)]
pub struct MemoryCluster {
    plane: Arc<Mutex<Backplane>>,
    sessions: Arc<crate::session::MemorySessionStore>,
}

impl MemoryCluster {
    /// A new, empty in-process cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new node of this cluster.
    pub fn node(&self) -> Arc<MemoryNode> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.plane.lock().nodes.insert(id.clone(), true);
        Arc::new(MemoryNode {
            id,
            plane: self.plane.clone(),
            sessions: self.sessions.clone(),
        })
    }
}

/// One node of a [`MemoryCluster`].
pub struct MemoryNode {
    id: String,
    plane: Arc<Mutex<Backplane>>,
    sessions: Arc<crate::session::MemorySessionStore>,
}

impl PresenceStore for MemoryNode {
    fn add<'a>(
        &'a self,
        topic: &'a str,
        conn_id: &'a str,
        member: Value,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.plane
            .lock()
            .presence
            .entry(topic.to_owned())
            .or_default()
            .insert((self.id.clone(), conn_id.to_owned()), member);
        Box::pin(async { Ok(()) })
    }

    fn remove<'a>(
        &'a self,
        topic: &'a str,
        conn_id: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let mut p = self.plane.lock();
        if let Some(room) = p.presence.get_mut(topic) {
            room.remove(&(self.id.clone(), conn_id.to_owned()));
            if room.is_empty() {
                p.presence.remove(topic);
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn members<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<Vec<Value>, BrokerError>> {
        let p = self.plane.lock();
        let mut out: Vec<(&(String, String), &Value)> = p
            .presence
            .get(topic)
            .map(|room| room.iter().filter(|((n, _), _)| p.alive(n)).collect())
            .unwrap_or_default();
        out.sort_by(|a, b| a.0.cmp(b.0));
        let out = out.into_iter().map(|(_, v)| v.clone()).collect();
        Box::pin(async move { Ok(out) })
    }
}

impl PeerDirectory for MemoryNode {
    fn node_id(&self) -> &str {
        &self.id
    }

    fn register<'a>(&'a self, conn_id: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.plane
            .lock()
            .conns
            .insert(conn_id.to_owned(), self.id.clone());
        Box::pin(async { Ok(()) })
    }

    fn unregister<'a>(&'a self, conn_id: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        let mut p = self.plane.lock();
        if p.conns.get(conn_id) == Some(&self.id) {
            p.conns.remove(conn_id);
        }
        Box::pin(async { Ok(()) })
    }

    fn locate<'a>(
        &'a self,
        conn_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, BrokerError>> {
        let p = self.plane.lock();
        let node = p.conns.get(conn_id).filter(|n| p.alive(n)).cloned();
        Box::pin(async move { Ok(node) })
    }

    fn claim_name<'a>(
        &'a self,
        name: &'a str,
        conn_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, BrokerError>> {
        let mut p = self.plane.lock();
        let free = match p.names.get(name) {
            Some((node, conn)) => conn == conn_id || !p.alive(node),
            None => true,
        };
        if free {
            p.names
                .insert(name.to_owned(), (self.id.clone(), conn_id.to_owned()));
        }
        Box::pin(async move { Ok(free) })
    }

    fn release_name<'a>(
        &'a self,
        name: &'a str,
        conn_id: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let mut p = self.plane.lock();
        if p.names.get(name).is_some_and(|(_, c)| c == conn_id) {
            p.names.remove(name);
        }
        Box::pin(async { Ok(()) })
    }

    fn resolve_name<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PeerLocation>, BrokerError>> {
        let p = self.plane.lock();
        let loc = p
            .names
            .get(name)
            .filter(|(n, _)| p.alive(n))
            .map(|(n, c)| PeerLocation {
                conn_id: c.clone(),
                node_id: n.clone(),
            });
        Box::pin(async move { Ok(loc) })
    }
}

impl NodeBus for MemoryNode {
    fn node_id(&self) -> &str {
        &self.id
    }

    fn start(&self, handler: Arc<dyn NodeHandler>) -> BoxFuture<'_, Result<(), BrokerError>> {
        let mut p = self.plane.lock();
        p.handlers.insert(self.id.clone(), handler);
        p.nodes.insert(self.id.clone(), true);
        Box::pin(async { Ok(()) })
    }

    fn request<'a>(
        &'a self,
        node: &'a str,
        body: Value,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Value, BusError>> {
        let handler = {
            let p = self.plane.lock();
            p.handlers.get(node).filter(|_| p.alive(node)).cloned()
        };
        Box::pin(async move {
            let handler = handler.ok_or(BusError::NoSuchNode)?;
            tokio::time::timeout(timeout, handler.handle(body))
                .await
                .map_err(|_| BusError::Timeout)
        })
    }

    fn send<'a>(&'a self, node: &'a str, body: Value) -> BoxFuture<'a, Result<(), BrokerError>> {
        let handler = {
            let p = self.plane.lock();
            p.handlers.get(node).filter(|_| p.alive(node)).cloned()
        };
        if let Some(h) = handler {
            tokio::spawn(h.handle(body));
        }
        Box::pin(async { Ok(()) })
    }

    fn stop(&self) {
        let mut p = self.plane.lock();
        p.nodes.insert(self.id.clone(), false);
        p.handlers.remove(&self.id);
    }
}

impl SessionStore for MemoryNode {
    fn save(
        &self,
        snapshot: crate::session::SessionSnapshot,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.sessions.save(snapshot, ttl)
    }

    fn take<'a>(
        &'a self,
        starling_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<crate::session::SessionSnapshot>, BrokerError>> {
        self.sessions.take(starling_id)
    }
}
