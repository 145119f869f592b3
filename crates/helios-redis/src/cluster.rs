//! Presence, peer directory, node bus and sessions on Redis
//! ([`RedisCluster`]). See `docs/cluster.md` for the keys.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use helios::{
    BrokerError, BusError, NodeBus, NodeHandler, PeerDirectory, PeerLocation, PresenceStore,
    SessionSnapshot, SessionStore,
};
use parking_lot::Mutex;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde_json::{Value, json};
use tokio::sync::{OnceCell, oneshot};
use tokio::task::JoinHandle;

use crate::map_err;

/// Members of a room on live nodes; drops the entries of dead nodes.
/// KEYS: presence hash. ARGV: alive-key prefix.
const PRESENCE_LUA: &str = r"
local all = redis.call('HGETALL', KEYS[1])
local out = {}
local alive = {}
for i = 1, #all, 2 do
  local f = all[i]
  local node = string.match(f, '^([^:]+):') or ''
  local a = alive[node]
  if a == nil then
    a = redis.call('EXISTS', ARGV[1] .. node) == 1
    alive[node] = a
  end
  if a then
    table.insert(out, all[i + 1])
  else
    redis.call('HDEL', KEYS[1], f)
  end
end
return out
";

/// The value of a directory key if its node is alive (else deletes it).
/// KEYS: directory key. ARGV: alive-key prefix.
const LOOKUP_LUA: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return false end
local node = string.match(v, '^(%S+)') or ''
if redis.call('EXISTS', ARGV[1] .. node) == 1 then return v end
redis.call('DEL', KEYS[1])
return false
";

/// First wins: claims a name unless another connection of a live node
/// holds it. KEYS: name key. ARGV: node, conn, alive-key prefix.
const CLAIM_LUA: &str = r"
local v = redis.call('GET', KEYS[1])
if v then
  local node, conn = string.match(v, '^(%S+) (.*)$')
  if conn ~= ARGV[2] and node and redis.call('EXISTS', ARGV[3] .. node) == 1 then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2])
return 1
";

/// Deletes a directory key if its value ends with ` ARGV[1]` or equals it.
/// KEYS: key. ARGV: expected holder, mode (`name` or `conn`).
const RELEASE_LUA: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local holder = v
if ARGV[2] == 'name' then
  local _, conn = string.match(v, '^(%S+) (.*)$')
  holder = conn
end
if holder == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What this node wrote, written again when its heartbeat finds its
/// alive key missing (Redis restarted without persistence, or the node
/// was cut off longer than the node TTL).
#[derive(Default)]
struct Mirror {
    presence: HashMap<(String, String), Value>,
    conns: HashSet<String>,
    names: HashMap<String, String>,
}

/// Cluster capabilities on Redis: [`PresenceStore`], [`PeerDirectory`],
/// [`NodeBus`] and [`SessionStore`]. Pass it to
/// `helios::Builder::cluster`; it connects in `Helios::start`.
///
/// ```no_run
/// # fn demo() -> Result<(), helios::BrokerError> {
/// use std::sync::Arc;
/// let broker = helios_redis::RedisBroker::new("redis://127.0.0.1:6379")?;
/// let cluster = helios_redis::RedisCluster::new("redis://127.0.0.1:6379")?;
/// let helios = helios::Helios::builder()
///     .broker(Arc::new(broker))
///     .cluster(Arc::new(cluster))
///     .build();
/// # drop(helios); Ok(()) }
/// ```
pub struct RedisCluster {
    client: redis::Client,
    prefix: Arc<str>,
    node_id: String,
    node_ttl: Duration,
    conn: OnceCell<ConnectionManager>,
    mirror: Arc<Mutex<Mirror>>,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stopped: Arc<AtomicBool>,
    presence_script: redis::Script,
    lookup_script: redis::Script,
    claim_script: redis::Script,
    release_script: redis::Script,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("prefix", &self.prefix)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

#[derive(Clone)]
struct Names {
    prefix: Arc<str>,
}

impl Names {
    fn alive_prefix(&self) -> String {
        format!("{}:alive:", self.prefix)
    }
    fn alive(&self, node: &str) -> String {
        format!("{}:alive:{node}", self.prefix)
    }
    fn presence(&self, topic: &str) -> String {
        format!("{}:presence:{topic}", self.prefix)
    }
    fn conn(&self, id: &str) -> String {
        format!("{}:conn:{id}", self.prefix)
    }
    fn name(&self, name: &str) -> String {
        format!("{}:name:{name}", self.prefix)
    }
    fn session(&self, id: &str) -> String {
        format!("{}:session:{id}", self.prefix)
    }
    fn node_channel(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }
}

impl RedisCluster {
    /// Cluster capabilities for a `redis://` URL (connects in `start`).
    ///
    /// # Errors
    /// [`BrokerError::Backend`] for a URL that is not a Redis URL.
    pub fn new(url: &str) -> Result<Self, BrokerError> {
        let client = redis::Client::open(url)
            .map_err(|e| BrokerError::Backend(format!("invalid redis url {url:?}: {e}")))?;
        Ok(Self {
            client,
            prefix: Arc::from("helios"),
            node_id: uuid::Uuid::new_v4().simple().to_string(),
            node_ttl: helios::DEFAULT_NODE_TTL,
            conn: OnceCell::new(),
            mirror: Arc::default(),
            pending: Arc::default(),
            tasks: Mutex::new(Vec::new()),
            stopped: Arc::default(),
            presence_script: redis::Script::new(PRESENCE_LUA),
            lookup_script: redis::Script::new(LOOKUP_LUA),
            claim_script: redis::Script::new(CLAIM_LUA),
            release_script: redis::Script::new(RELEASE_LUA),
        })
    }

    /// The prefix of every key and channel (default `helios`; the same as
    /// the broker's).
    #[must_use]
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self
    }

    /// How long this node's heartbeat key lives (default 10 s, refreshed
    /// every third of it): a killed node's presence, names and directory
    /// entries are ignored after it.
    #[must_use]
    pub fn with_node_ttl(mut self, ttl: Duration) -> Self {
        self.node_ttl = ttl.max(Duration::from_millis(300));
        self
    }

    fn names(&self) -> Names {
        Names {
            prefix: self.prefix.clone(),
        }
    }

    fn conn(&self) -> Result<ConnectionManager, BrokerError> {
        self.conn
            .get()
            .cloned()
            .ok_or_else(|| BrokerError::Unavailable("redis cluster not started".to_owned()))
    }

    async fn lookup(&self, key: String) -> Result<Option<String>, BrokerError> {
        let mut conn = self.conn()?;
        self.lookup_script
            .key(key)
            .arg(self.names().alive_prefix())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| map_err(&e))
    }
}

fn ttl_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl PresenceStore for RedisCluster {
    fn add<'a>(
        &'a self,
        topic: &'a str,
        conn_id: &'a str,
        member: Value,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            self.mirror
                .lock()
                .presence
                .insert((topic.to_owned(), conn_id.to_owned()), member.clone());
            let mut conn = self.conn()?;
            let _: () = conn
                .hset(
                    self.names().presence(topic),
                    format!("{}:{conn_id}", self.node_id),
                    member.to_string(),
                )
                .await
                .map_err(|e| map_err(&e))?;
            Ok(())
        })
    }

    fn remove<'a>(
        &'a self,
        topic: &'a str,
        conn_id: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            self.mirror
                .lock()
                .presence
                .remove(&(topic.to_owned(), conn_id.to_owned()));
            let mut conn = self.conn()?;
            let _: () = conn
                .hdel(
                    self.names().presence(topic),
                    format!("{}:{conn_id}", self.node_id),
                )
                .await
                .map_err(|e| map_err(&e))?;
            Ok(())
        })
    }

    fn members<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<Vec<Value>, BrokerError>> {
        Box::pin(async move {
            let mut conn = self.conn()?;
            let raw: Vec<String> = self
                .presence_script
                .key(self.names().presence(topic))
                .arg(self.names().alive_prefix())
                .invoke_async(&mut conn)
                .await
                .map_err(|e| map_err(&e))?;
            Ok(raw
                .iter()
                .filter_map(|s| serde_json::from_str(s).ok())
                .collect())
        })
    }
}

impl PeerDirectory for RedisCluster {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn register<'a>(&'a self, conn_id: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            self.mirror.lock().conns.insert(conn_id.to_owned());
            let mut conn = self.conn()?;
            let _: () = conn
                .set(self.names().conn(conn_id), &self.node_id)
                .await
                .map_err(|e| map_err(&e))?;
            Ok(())
        })
    }

    fn unregister<'a>(&'a self, conn_id: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            self.mirror.lock().conns.remove(conn_id);
            let mut conn = self.conn()?;
            let _: i64 = self
                .release_script
                .key(self.names().conn(conn_id))
                .arg(&self.node_id)
                .arg("conn")
                .invoke_async(&mut conn)
                .await
                .map_err(|e| map_err(&e))?;
            Ok(())
        })
    }

    fn locate<'a>(
        &'a self,
        conn_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, BrokerError>> {
        Box::pin(async move { self.lookup(self.names().conn(conn_id)).await })
    }

    fn claim_name<'a>(
        &'a self,
        name: &'a str,
        conn_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, BrokerError>> {
        Box::pin(async move {
            let mut conn = self.conn()?;
            let claimed: i64 = self
                .claim_script
                .key(self.names().name(name))
                .arg(&self.node_id)
                .arg(conn_id)
                .arg(self.names().alive_prefix())
                .invoke_async(&mut conn)
                .await
                .map_err(|e| map_err(&e))?;
            if claimed == 1 {
                self.mirror
                    .lock()
                    .names
                    .insert(name.to_owned(), conn_id.to_owned());
            }
            Ok(claimed == 1)
        })
    }

    fn release_name<'a>(
        &'a self,
        name: &'a str,
        conn_id: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            {
                let mut m = self.mirror.lock();
                if m.names.get(name).is_some_and(|c| c == conn_id) {
                    m.names.remove(name);
                }
            }
            let mut conn = self.conn()?;
            let _: i64 = self
                .release_script
                .key(self.names().name(name))
                .arg(conn_id)
                .arg("name")
                .invoke_async(&mut conn)
                .await
                .map_err(|e| map_err(&e))?;
            Ok(())
        })
    }

    fn resolve_name<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PeerLocation>, BrokerError>> {
        Box::pin(async move {
            let v = self.lookup(self.names().name(name)).await?;
            Ok(v.and_then(|v| {
                let (node, conn) = v.split_once(' ')?;
                Some(PeerLocation {
                    conn_id: conn.to_owned(),
                    node_id: node.to_owned(),
                })
            }))
        })
    }
}

impl SessionStore for RedisCluster {
    fn save(
        &self,
        snapshot: SessionSnapshot,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let json = serde_json::to_string(&snapshot)
                .map_err(|e| BrokerError::Backend(format!("snapshot: {e}")))?;
            let mut conn = self.conn()?;
            let _: () = conn
                .pset_ex(
                    self.names().session(&snapshot.starling_id),
                    json,
                    ttl_ms(ttl),
                )
                .await
                .map_err(|e| map_err(&e))?;
            Ok(())
        })
    }

    fn take<'a>(
        &'a self,
        starling_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SessionSnapshot>, BrokerError>> {
        Box::pin(async move {
            let mut conn = self.conn()?;
            // GETDEL: at most one taker on any node.
            let raw: Option<String> = redis::cmd("GETDEL")
                .arg(self.names().session(starling_id))
                .query_async(&mut conn)
                .await
                .map_err(|e| map_err(&e))?;
            Ok(raw.and_then(|s| serde_json::from_str(&s).ok()))
        })
    }
}

impl NodeBus for RedisCluster {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn start(&self, handler: Arc<dyn NodeHandler>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let conn = self
                .conn
                .get_or_try_init(|| async {
                    let config = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(Duration::from_secs(1)))
                        .set_response_timeout(Some(Duration::from_secs(2)))
                        .set_number_of_retries(1)
                        .set_max_delay(Duration::from_millis(500));
                    tokio::time::timeout(
                        Duration::from_secs(3),
                        self.client.get_connection_manager_with_config(config),
                    )
                    .await
                    .map_err(|_| BrokerError::Unavailable("redis: connect timed out".to_owned()))?
                    .map_err(|e| map_err(&e))
                })
                .await?
                .clone();
            let names = self.names();
            // First heartbeat before anything is registered.
            let mut c = conn.clone();
            let _: () = c
                .pset_ex(names.alive(&self.node_id), 1, ttl_ms(self.node_ttl))
                .await
                .map_err(|e| map_err(&e))?;
            let mut pubsub = connect_pubsub(&self.client).await?;
            // Subscribed before `start` returns: requests may come at once.
            tokio::time::timeout(
                SUBSCRIBE_TIMEOUT,
                pubsub.subscribe(names.node_channel(&self.node_id)),
            )
            .await
            .map_err(|_| BrokerError::Unavailable("redis: subscribe timed out".to_owned()))?
            .map_err(|e| map_err(&e))?;
            let hb = tokio::spawn(heartbeat(
                conn.clone(),
                names.clone(),
                self.node_id.clone(),
                self.node_ttl,
                self.mirror.clone(),
                self.stopped.clone(),
            ));
            let listener = tokio::spawn(listen(
                self.client.clone(),
                conn,
                names,
                self.node_id.clone(),
                handler,
                self.pending.clone(),
                pubsub,
            ));
            self.tasks.lock().extend([hb, listener]);
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
            let mut conn = self.conn()?;
            let rid = uuid::Uuid::new_v4().simple().to_string();
            let (tx, rx) = oneshot::channel();
            self.pending.lock().insert(rid.clone(), tx);
            let pending = self.pending.clone();
            let _cleanup = PendingCleanup(pending, rid.clone());
            let msg = json!({ "rid": rid, "from": self.node_id, "body": body });
            let receivers: usize = conn
                .publish(self.names().node_channel(node), msg.to_string())
                .await
                .map_err(|e| BusError::Broker(map_err(&e)))?;
            if receivers == 0 {
                return Err(BusError::NoSuchNode);
            }
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(_)) | Err(_) => Err(BusError::Timeout),
            }
        })
    }

    fn send<'a>(&'a self, node: &'a str, body: Value) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let mut conn = self.conn()?;
            let msg = json!({ "from": self.node_id, "body": body });
            let _: usize = conn
                .publish(self.names().node_channel(node), msg.to_string())
                .await
                .map_err(|e| map_err(&e))?;
            Ok(())
        })
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

struct PendingCleanup(Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>, String);

impl Drop for PendingCleanup {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

async fn connect_pubsub(client: &redis::Client) -> Result<redis::aio::PubSub, BrokerError> {
    match tokio::time::timeout(SUBSCRIBE_TIMEOUT, client.get_async_pubsub()).await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(map_err(&e)),
        Err(_) => Err(BrokerError::Unavailable(
            "redis: pub/sub connect timed out".to_owned(),
        )),
    }
}

/// Refreshes the alive key every third of the TTL; when it had expired
/// (Redis lost it, or this node was cut off too long), writes every entry
/// of this node again.
async fn heartbeat(
    mut conn: ConnectionManager,
    names: Names,
    node: String,
    ttl: Duration,
    mirror: Arc<Mutex<Mirror>>,
    stopped: Arc<AtomicBool>,
) {
    let every = ttl / 3;
    loop {
        tokio::time::sleep(every).await;
        if stopped.load(Ordering::SeqCst) {
            return;
        }
        let previous: Result<Option<String>, _> = redis::cmd("SET")
            .arg(names.alive(&node))
            .arg(1)
            .arg("PX")
            .arg(ttl_ms(ttl))
            .arg("GET")
            .query_async(&mut conn)
            .await;
        match previous {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::warn!("node heartbeat key was gone; writing this node's entries again");
                if let Err(e) = resync(&mut conn, &names, &node, &mirror).await {
                    tracing::warn!(error = %e, "resync failed; retrying at the next heartbeat");
                    let _: Result<(), _> = conn.del(names.alive(&node)).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
        }
    }
}

async fn resync(
    conn: &mut ConnectionManager,
    names: &Names,
    node: &str,
    mirror: &Mutex<Mirror>,
) -> Result<(), redis::RedisError> {
    let (presence, conns, held) = {
        let m = mirror.lock();
        (
            m.presence.clone(),
            m.conns.iter().cloned().collect::<Vec<_>>(),
            m.names.clone(),
        )
    };
    let mut pipe = redis::pipe();
    for ((topic, id), member) in presence {
        pipe.hset(
            names.presence(&topic),
            format!("{node}:{id}"),
            member.to_string(),
        )
        .ignore();
    }
    for id in conns {
        pipe.set(names.conn(&id), node).ignore();
    }
    for (name, id) in held {
        // Only where nobody took it meanwhile.
        pipe.set_nx(names.name(&name), format!("{node} {id}"))
            .ignore();
    }
    pipe.query_async::<()>(conn).await
}

/// Reads this node's channel: requests from other nodes (answered on the
/// sender's channel) and answers to this node's requests. Reconnects by
/// itself.
async fn listen(
    client: redis::Client,
    conn: ConnectionManager,
    names: Names,
    node: String,
    handler: Arc<dyn NodeHandler>,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>,
    first: redis::aio::PubSub,
) {
    let channel = names.node_channel(&node);
    let mut next = Some(first);
    let mut backoff = BACKOFF_MIN;
    loop {
        let (mut pubsub, subscribed) = match next.take() {
            Some(p) => (p, true),
            None => match connect_pubsub(&client).await {
                Ok(p) => (p, false),
                Err(e) => {
                    tracing::debug!(error = %e, "node channel reconnect failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        if subscribed {
            backoff = BACKOFF_MIN;
        } else if let Ok(Ok(())) =
            tokio::time::timeout(SUBSCRIBE_TIMEOUT, pubsub.subscribe(&channel)).await
        {
            backoff = BACKOFF_MIN;
        } else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            continue;
        }
        let mut stream = pubsub.into_on_message();
        while let Some(msg) = stream.next().await {
            let Ok(v) = serde_json::from_slice::<Value>(msg.get_payload_bytes()) else {
                continue;
            };
            if let Some(re) = v.get("re").and_then(Value::as_str) {
                if let Some(tx) = pending.lock().remove(re) {
                    let _ = tx.send(v.get("body").cloned().unwrap_or(Value::Null));
                }
                continue;
            }
            let body = v.get("body").cloned().unwrap_or(Value::Null);
            let reply_to = v
                .get("rid")
                .and_then(Value::as_str)
                .zip(v.get("from").and_then(Value::as_str))
                .map(|(r, f)| (r.to_owned(), f.to_owned()));
            let fut = handler.handle(body);
            let mut conn = conn.clone();
            let names = names.clone();
            tokio::spawn(async move {
                let answer = fut.await;
                if let Some((rid, from)) = reply_to {
                    let msg = json!({ "re": rid, "body": answer });
                    let r: Result<usize, _> = conn
                        .publish(names.node_channel(&from), msg.to_string())
                        .await;
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "node answer not sent");
                    }
                }
            });
        }
        tracing::warn!("node channel connection lost; reconnecting");
        tokio::time::sleep(backoff).await;
    }
}
