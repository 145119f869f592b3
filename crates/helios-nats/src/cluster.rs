//! Presence, peer directory, node bus and sessions on NATS
//! ([`NatsCluster`]): JetStream KV buckets and core request/reply. See
//! `docs/cluster.md` for the buckets and subjects.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use helios::{
    BrokerError, BusError, NodeBus, NodeHandler, PeerDirectory, PeerLocation, PresenceStore,
    SessionSnapshot, SessionStore,
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use crate::{backend, unavailable};

/// How long a saved session may wait at most (the bucket's `max_age`);
/// each snapshot's own TTL is checked when it is taken.
const SESSIONS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// A key or token NATS accepts for any string: lowercase hex.
fn hex(s: &str) -> String {
    use std::fmt::Write;
    s.bytes()
        .fold(String::with_capacity(s.len() * 2), |mut o, b| {
            let _ = write!(o, "{b:02x}");
            o
        })
}

struct Buckets {
    client: async_nats::Client,
    nodes: kv::Store,
    presence: kv::Store,
    conns: kv::Store,
    names: kv::Store,
    sessions: kv::Store,
}

/// What this node wrote, for the resync after its heartbeat key vanished.
#[derive(Default)]
struct Mirror {
    /// topic → conn → member
    presence: HashMap<String, HashMap<String, Value>>,
    conns: HashSet<String>,
    names: HashMap<String, String>,
}

/// Cluster capabilities on NATS (JetStream KV + core request/reply):
/// [`PresenceStore`], [`PeerDirectory`], [`NodeBus`] and [`SessionStore`].
/// Pass it to `helios::Builder::cluster`; it connects in `Helios::start`.
pub struct NatsCluster {
    url: String,
    prefix: String,
    node_id: String,
    node_ttl: Duration,
    state: OnceCell<Arc<Buckets>>,
    mirror: Arc<tokio::sync::Mutex<Mirror>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stopped: Arc<AtomicBool>,
}

impl std::fmt::Debug for NatsCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCluster")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

async fn bucket(
    js: &jetstream::Context,
    name: String,
    max_age: Duration,
) -> Result<kv::Store, BrokerError> {
    if let Ok(Ok(store)) = tokio::time::timeout(OP_TIMEOUT, js.get_key_value(name.clone())).await {
        return Ok(store);
    }
    // The KV stream by hand, as `create_key_value` would make it: that
    // call first reads the account info, which older servers (2.9) answer
    // in a shape the client does not parse.
    let dup = if max_age.is_zero() {
        Duration::from_secs(120)
    } else {
        max_age.min(Duration::from_secs(120))
    };
    let config = jetstream::stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: jetstream::stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        duplicate_window: dup,
        num_replicas: 1,
        ..Default::default()
    };
    tokio::time::timeout(OP_TIMEOUT * 2, js.get_or_create_stream(config))
        .await
        .map_err(|_| unavailable("kv bucket create timed out"))?
        .map_err(|e| backend(format!("kv bucket {name}: {e}")))?;
    tokio::time::timeout(OP_TIMEOUT, js.get_key_value(name.clone()))
        .await
        .map_err(|_| unavailable("kv bucket open timed out"))?
        .map_err(|e| backend(format!("kv bucket {name}: {e}")))
}

/// Runs one KV operation with the bounded wait every call has.
async fn op<T, E: std::fmt::Display>(
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, BrokerError> {
    tokio::time::timeout(OP_TIMEOUT, f)
        .await
        .map_err(|_| unavailable("kv operation timed out"))?
        .map_err(unavailable)
}

impl NatsCluster {
    /// Cluster capabilities for a `nats://` URL (connects in `start`).
    ///
    /// # Errors
    /// [`BrokerError::Backend`] for a URL of another scheme.
    pub fn new(url: &str) -> Result<Self, BrokerError> {
        let scheme = url.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("nats" | "tls")) {
            return Err(BrokerError::Backend(format!(
                "invalid nats url {url:?}: expected nats://host:port"
            )));
        }
        Ok(Self {
            url: url.to_owned(),
            prefix: "helios".to_owned(),
            node_id: uuid::Uuid::new_v4().simple().to_string(),
            node_ttl: helios::DEFAULT_NODE_TTL,
            state: OnceCell::new(),
            mirror: Arc::default(),
            tasks: Mutex::new(Vec::new()),
            stopped: Arc::default(),
        })
    }

    /// The prefix of every bucket and subject (default `helios`).
    #[must_use]
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// How long this node's heartbeat key lives (default 10 s, refreshed
    /// every third of it). The first node to create the `{prefix}_nodes`
    /// bucket sets it for the cluster.
    #[must_use]
    pub fn with_node_ttl(mut self, ttl: Duration) -> Self {
        self.node_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    fn buckets(&self) -> Result<&Arc<Buckets>, BrokerError> {
        self.state
            .get()
            .ok_or_else(|| BrokerError::Unavailable("nats cluster not started".to_owned()))
    }

    fn subject(&self, node: &str) -> String {
        format!("{}.node.{node}", self.prefix)
    }

    async fn alive(b: &Buckets, node: &str) -> Result<bool, BrokerError> {
        Ok(op(b.nodes.get(node)).await?.is_some())
    }

    /// Writes this node's member list of a room (one key per room and node:
    /// only this node writes it).
    async fn write_room(&self, b: &Buckets, topic: &str, m: &Mirror) -> Result<(), BrokerError> {
        let key = format!("{}.{}", hex(topic), self.node_id);
        match m.presence.get(topic) {
            Some(members) if !members.is_empty() => {
                let list: Vec<&Value> = members.values().collect();
                let bytes = Bytes::from(serde_json::to_vec(&list).unwrap_or_default());
                op(b.presence.put(key, bytes)).await?;
            }
            _ => {
                op(b.presence.delete(key)).await?;
            }
        }
        Ok(())
    }
}

fn parse_holder(v: &[u8]) -> Option<(String, String)> {
    let s = std::str::from_utf8(v).ok()?;
    let (node, conn) = s.split_once(' ')?;
    Some((node.to_owned(), conn.to_owned()))
}

impl PresenceStore for NatsCluster {
    fn add<'a>(
        &'a self,
        topic: &'a str,
        conn_id: &'a str,
        member: Value,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let mut m = self.mirror.lock().await;
            m.presence
                .entry(topic.to_owned())
                .or_default()
                .insert(conn_id.to_owned(), member);
            let b = self.buckets()?;
            self.write_room(b, topic, &m).await
        })
    }

    fn remove<'a>(
        &'a self,
        topic: &'a str,
        conn_id: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let mut m = self.mirror.lock().await;
            if let Some(room) = m.presence.get_mut(topic) {
                room.remove(conn_id);
                if room.is_empty() {
                    m.presence.remove(topic);
                }
            }
            let b = self.buckets()?;
            self.write_room(b, topic, &m).await
        })
    }

    fn members<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<Vec<Value>, BrokerError>> {
        Box::pin(async move {
            let b = self.buckets()?;
            let mut keys = op(b.nodes.keys()).await?;
            let mut nodes = Vec::new();
            let deadline = tokio::time::Instant::now() + OP_TIMEOUT;
            while let Some(k) = tokio::time::timeout_at(deadline, keys.next())
                .await
                .map_err(|_| unavailable("node list timed out"))?
            {
                nodes.push(k.map_err(unavailable)?);
            }
            nodes.sort();
            let room = hex(topic);
            let reads = nodes
                .iter()
                .map(|n| op(b.presence.get(format!("{room}.{n}"))));
            let mut out = Vec::new();
            for got in futures_util::future::join_all(reads).await {
                if let Some(bytes) = got?
                    && let Ok(list) = serde_json::from_slice::<Vec<Value>>(&bytes)
                {
                    out.extend(list);
                }
            }
            Ok(out)
        })
    }
}

impl PeerDirectory for NatsCluster {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn register<'a>(&'a self, conn_id: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            self.mirror.lock().await.conns.insert(conn_id.to_owned());
            let b = self.buckets()?;
            op(b.conns.put(hex(conn_id), Bytes::from(self.node_id.clone()))).await?;
            Ok(())
        })
    }

    fn unregister<'a>(&'a self, conn_id: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            self.mirror.lock().await.conns.remove(conn_id);
            let b = self.buckets()?;
            let key = hex(conn_id);
            if let Some(e) = op(b.conns.entry(key.clone())).await?
                && e.operation == kv::Operation::Put
                && e.value == self.node_id.as_bytes()
            {
                let _ = op(b.conns.delete_expect_revision(key, Some(e.revision))).await;
            }
            Ok(())
        })
    }

    fn locate<'a>(
        &'a self,
        conn_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, BrokerError>> {
        Box::pin(async move {
            let b = self.buckets()?;
            let Some(v) = op(b.conns.get(hex(conn_id))).await? else {
                return Ok(None);
            };
            let node = String::from_utf8_lossy(&v).into_owned();
            Ok(Self::alive(b, &node).await?.then_some(node))
        })
    }

    fn claim_name<'a>(
        &'a self,
        name: &'a str,
        conn_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, BrokerError>> {
        Box::pin(async move {
            let b = self.buckets()?;
            let key = hex(name);
            let value = Bytes::from(format!("{} {conn_id}", self.node_id));
            for _ in 0..5 {
                let entry = op(b.names.entry(key.clone()))
                    .await?
                    .filter(|e| e.operation == kv::Operation::Put);
                let won = match entry {
                    None => tokio::time::timeout(OP_TIMEOUT, b.names.create(&key, value.clone()))
                        .await
                        .map_err(|_| unavailable("kv create timed out"))?
                        .is_ok(),
                    Some(e) => {
                        let (node, holder) = parse_holder(&e.value).unwrap_or_default();
                        if holder != conn_id && Self::alive(b, &node).await? {
                            return Ok(false);
                        }
                        tokio::time::timeout(
                            OP_TIMEOUT,
                            b.names.update(&key, value.clone(), e.revision),
                        )
                        .await
                        .map_err(|_| unavailable("kv update timed out"))?
                        .is_ok()
                    }
                };
                if won {
                    self.mirror
                        .lock()
                        .await
                        .names
                        .insert(name.to_owned(), conn_id.to_owned());
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    fn release_name<'a>(
        &'a self,
        name: &'a str,
        conn_id: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            {
                let mut m = self.mirror.lock().await;
                if m.names.get(name).is_some_and(|c| c == conn_id) {
                    m.names.remove(name);
                }
            }
            let b = self.buckets()?;
            let key = hex(name);
            if let Some(e) = op(b.names.entry(key.clone())).await?
                && e.operation == kv::Operation::Put
                && parse_holder(&e.value).is_some_and(|(_, c)| c == conn_id)
            {
                let _ = op(b.names.delete_expect_revision(key, Some(e.revision))).await;
            }
            Ok(())
        })
    }

    fn resolve_name<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PeerLocation>, BrokerError>> {
        Box::pin(async move {
            let b = self.buckets()?;
            let Some(v) = op(b.names.get(hex(name))).await? else {
                return Ok(None);
            };
            let Some((node, conn)) = parse_holder(&v) else {
                return Ok(None);
            };
            Ok(Self::alive(b, &node).await?.then_some(PeerLocation {
                conn_id: conn,
                node_id: node,
            }))
        })
    }
}

impl SessionStore for NatsCluster {
    fn save(
        &self,
        snapshot: SessionSnapshot,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let b = self.buckets()?;
            let expires = helios::protocol::now_ms()
                .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
            let key = hex(&snapshot.starling_id);
            let body = serde_json::to_vec(&json!({ "expires": expires, "snapshot": snapshot }))
                .map_err(|e| BrokerError::Backend(format!("snapshot: {e}")))?;
            op(b.sessions.put(key, Bytes::from(body))).await?;
            Ok(())
        })
    }

    fn take<'a>(
        &'a self,
        starling_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SessionSnapshot>, BrokerError>> {
        Box::pin(async move {
            let b = self.buckets()?;
            let key = hex(starling_id);
            let Some(e) = op(b.sessions.entry(key.clone()))
                .await?
                .filter(|e| e.operation == kv::Operation::Put)
            else {
                return Ok(None);
            };
            // Deleting at the revision read: at most one taker wins.
            let won = tokio::time::timeout(
                OP_TIMEOUT,
                b.sessions.delete_expect_revision(&key, Some(e.revision)),
            )
            .await
            .map_err(|_| unavailable("kv delete timed out"))?
            .is_ok();
            if !won {
                return Ok(None);
            }
            let Ok(v) = serde_json::from_slice::<Value>(&e.value) else {
                return Ok(None);
            };
            let expires = v.get("expires").and_then(Value::as_u64).unwrap_or(0);
            if expires < helios::protocol::now_ms() {
                return Ok(None);
            }
            Ok(v.get("snapshot")
                .and_then(|s| serde_json::from_value(s.clone()).ok()))
        })
    }
}

impl NodeBus for NatsCluster {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn start(&self, handler: Arc<dyn NodeHandler>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let options = async_nats::ConnectOptions::new()
                .name(format!("helios-cluster-{}", &self.node_id[..8]))
                .connection_timeout(Duration::from_secs(1))
                .request_timeout(None)
                .max_reconnects(None)
                .reconnect_delay_callback(|attempts| {
                    let ms = 50u64.saturating_mul(1 << attempts.min(6));
                    Duration::from_millis(ms.min(2000))
                });
            let client = tokio::time::timeout(
                Duration::from_secs(3),
                async_nats::connect_with_options(self.url.as_str(), options),
            )
            .await
            .map_err(|_| unavailable("connect timed out"))?
            .map_err(unavailable)?;
            let mut js = jetstream::new(client.clone());
            js.set_timeout(OP_TIMEOUT);
            let p = &self.prefix;
            let buckets = Arc::new(Buckets {
                nodes: bucket(&js, format!("{p}_nodes"), self.node_ttl).await?,
                presence: bucket(&js, format!("{p}_presence"), Duration::ZERO).await?,
                conns: bucket(&js, format!("{p}_conns"), Duration::ZERO).await?,
                names: bucket(&js, format!("{p}_names"), Duration::ZERO).await?,
                sessions: bucket(&js, format!("{p}_sessions"), SESSIONS_MAX_AGE).await?,
                client: client.clone(),
            });
            op(buckets
                .nodes
                .put(self.node_id.clone(), Bytes::from_static(b"1")))
            .await?;
            let mut sub = client
                .subscribe(self.subject(&self.node_id))
                .await
                .map_err(unavailable)?;
            // The server has the subscription before `start` returns
            // (PING/PONG): requests may come at once.
            op(client.flush()).await?;
            let _ = self.state.set(buckets.clone());
            let reply_client = client.clone();
            let listener = tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    let Ok(body) = serde_json::from_slice::<Value>(&msg.payload) else {
                        continue;
                    };
                    let fut = handler.handle(body);
                    let client = reply_client.clone();
                    tokio::spawn(async move {
                        let answer = fut.await;
                        if let Some(reply) = msg.reply {
                            let bytes = Bytes::from(answer.to_string());
                            if let Err(e) = client.publish(reply, bytes).await {
                                tracing::warn!(error = %e, "node answer not sent");
                            }
                        }
                    });
                }
            });
            let hb = tokio::spawn(heartbeat(
                buckets,
                self.node_id.clone(),
                self.node_ttl,
                self.mirror.clone(),
                self.stopped.clone(),
            ));
            self.tasks.lock().extend([listener, hb]);
            Ok(())
        })
    }

    fn request<'a>(
        &'a self,
        node: &'a str,
        body: Value,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Value, BusError>> {
        Box::pin(async move {
            let b = self.buckets()?;
            let bytes = Bytes::from(body.to_string());
            let deadline = tokio::time::Instant::now() + timeout;
            let mut retries = 0;
            loop {
                let answer = tokio::time::timeout_at(
                    deadline,
                    b.client.request(self.subject(node), bytes.clone()),
                )
                .await
                .map_err(|_| BusError::Timeout)?;
                return match answer {
                    Ok(msg) => serde_json::from_slice(&msg.payload)
                        .map_err(|e| BusError::Broker(backend(format!("node answer: {e}")))),
                    Err(e) => match e.kind() {
                        async_nats::RequestErrorKind::NoResponders => {
                            // A node that just started may not be
                            // subscribed yet: retry briefly while its
                            // heartbeat says it is alive.
                            if retries < 10 && Self::alive(b, node).await.unwrap_or(false) {
                                retries += 1;
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                            Err(BusError::NoSuchNode)
                        }
                        async_nats::RequestErrorKind::TimedOut => Err(BusError::Timeout),
                        _ => Err(BusError::Broker(unavailable(e))),
                    },
                };
            }
        })
    }

    fn send<'a>(&'a self, node: &'a str, body: Value) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let b = self.buckets()?;
            b.client
                .publish(self.subject(node), Bytes::from(body.to_string()))
                .await
                .map_err(unavailable)
        })
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

/// Refreshes the node key every third of the TTL; when it had vanished
/// (NATS lost it, or this node was cut off too long), writes this node's
/// entries again.
async fn heartbeat(
    b: Arc<Buckets>,
    node: String,
    ttl: Duration,
    mirror: Arc<tokio::sync::Mutex<Mirror>>,
    stopped: Arc<AtomicBool>,
) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        if stopped.load(Ordering::SeqCst) {
            return;
        }
        let was_there = match op(b.nodes.get(node.clone())).await {
            Ok(v) => v.is_some(),
            Err(e) => {
                tracing::debug!(error = %e, "heartbeat failed");
                continue;
            }
        };
        if let Err(e) = op(b.nodes.put(node.clone(), Bytes::from_static(b"1"))).await {
            tracing::debug!(error = %e, "heartbeat failed");
            continue;
        }
        if !was_there {
            tracing::warn!("node heartbeat key was gone; writing this node's entries again");
            let m = mirror.lock().await;
            for (topic, members) in &m.presence {
                let list: Vec<&Value> = members.values().collect();
                let bytes = Bytes::from(serde_json::to_vec(&list).unwrap_or_default());
                let _ = op(b.presence.put(format!("{}.{node}", hex(topic)), bytes)).await;
            }
            for id in &m.conns {
                let _ = op(b.conns.put(hex(id), Bytes::from(node.clone()))).await;
            }
            for (name, id) in &m.names {
                let _ = tokio::time::timeout(
                    OP_TIMEOUT,
                    b.names
                        .create(hex(name), Bytes::from(format!("{node} {id}"))),
                )
                .await;
            }
        }
    }
}
