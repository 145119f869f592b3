//! A Helios [`Broker`] on Redis: several `helios` nodes sharing one Redis
//! behave as one server for rooms.
//!
//! ```no_run
//! # async fn demo() -> Result<(), helios::BrokerError> {
//! use std::sync::Arc;
//! let broker = helios_redis::RedisBroker::new("redis://127.0.0.1:6379")?.with_prefix("helios");
//! let helios = helios::Helios::builder().broker(Arc::new(broker)).build();
//! helios.start().await?; // connects; `serve` does it too
//! # Ok(()) }
//! ```
//!
//! # How
//! - **Publish** runs one Lua script: `HINCRBY` the room's offset (creating
//!   its random epoch if the room's keys had expired), `RPUSH` + `LTRIM` the
//!   history list to the room's history size, `PEXPIRE` both keys, and
//!   `PUBLISH` on the room's channel. Redis runs scripts one at a time, so
//!   offsets are contiguous per room across all nodes and channel order is
//!   offset order.
//! - **Fan-out**: one dedicated PUB/SUB connection per node, subscribed only
//!   to rooms with local members. It reconnects by itself and resubscribes
//!   to every room still wanted.
//! - **Gaps**: a node remembers the last offset it delivered per room; when
//!   a later one arrives (e.g. after a reconnect) it reads the missing ones
//!   from history first, and it drops duplicates.
//! - **Unavailable**: while Redis cannot be reached, `publish`, `subscribe`
//!   and `history` fail with [`BrokerError::Unavailable`] (within about two
//!   seconds), never silently.
//!
//! Keys (prefix `helios` by default): `{prefix}:room:{topic}:meta` (hash:
//! `offset`, `epoch`), `{prefix}:room:{topic}:hist` (list), channel
//! `{prefix}:live:{topic}`. See `docs/cluster.md`.

mod cluster;
mod subscriber;
mod wire;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use helios::{
    Broker, BrokerError, BrokerHandler, History, PublishOptions, PublishResult, StreamPosition,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::Value;

pub use crate::cluster::RedisCluster;
use crate::subscriber::Subscriber;

/// Publishes atomically: offset, epoch, history, expiry and fan-out.
///
/// KEYS: meta hash, history list. ARGV: channel, data json, history size,
/// history ttl ms, meta ttl ms, a fresh epoch, timestamp ms.
const PUBLISH_LUA: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[6]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local payload = offset .. '\n' .. epoch .. '\n' .. ARGV[7] .. '\n' .. ARGV[2]
local size = tonumber(ARGV[3])
if size > 0 then
  redis.call('RPUSH', KEYS[2], payload)
  redis.call('LTRIM', KEYS[2], -size, -1)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
else
  redis.call('DEL', KEYS[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local n = redis.call('PUBLISH', ARGV[1], payload)
return {offset, epoch, n}
";

/// Longest a single Redis command may take before it counts as unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The room offset and epoch outlive the history by this much at least, so
/// a client whose history expired learns of the gap (`complete: false`)
/// instead of seeing offsets restart in the same epoch.
const META_TTL_MIN: Duration = Duration::from_secs(300);

/// A [`Broker`] on Redis. See the crate docs.
pub struct RedisBroker {
    client: redis::Client,
    prefix: Arc<str>,
    node_id: String,
    script: redis::Script,
    conn: OnceLock<ConnectionManager>,
    subscriber: OnceLock<Subscriber>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("prefix", &self.prefix)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Sorts a Redis error by whether the backend was reachable.
pub(crate) fn map_err(e: &redis::RedisError) -> BrokerError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        BrokerError::Unavailable(format!("redis: {e}"))
    } else {
        BrokerError::Backend(format!("redis: {e}"))
    }
}

/// Names of the keys and channels of one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: Arc<str>,
}

impl Keys {
    pub(crate) fn meta(&self, topic: &str) -> String {
        format!("{}:room:{topic}:meta", self.prefix)
    }
    pub(crate) fn hist(&self, topic: &str) -> String {
        format!("{}:room:{topic}:hist", self.prefix)
    }
    pub(crate) fn channel(&self, topic: &str) -> String {
        format!("{}:live:{topic}", self.prefix)
    }
    /// The topic of a live channel name, if it is one of ours.
    pub(crate) fn topic_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(&*self.prefix)?.strip_prefix(":live:")
    }
}

impl RedisBroker {
    /// A broker for a `redis://` (or `rediss://`, `redis+unix://`) URL; it
    /// connects in [`Broker::start`].
    ///
    /// # Errors
    /// [`BrokerError::Backend`] when the URL is not a Redis URL.
    pub fn new(url: &str) -> Result<Self, BrokerError> {
        let client = redis::Client::open(url)
            .map_err(|e| BrokerError::Backend(format!("invalid redis url {url:?}: {e}")))?;
        Ok(Self {
            client,
            prefix: Arc::from("helios"),
            node_id: uuid::Uuid::new_v4().simple().to_string(),
            script: redis::Script::new(PUBLISH_LUA),
            conn: OnceLock::new(),
            subscriber: OnceLock::new(),
        })
    }

    /// The prefix of every key and channel (default `helios`); nodes of one
    /// cluster use the same one, separate clusters on one Redis differ.
    #[must_use]
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self
    }

    /// This node's random id (a new one per process). Reserved for
    /// node-to-node traffic: `{prefix}:node:{node_id}` is this node's
    /// channel name (see `docs/cluster.md`).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn keys(&self) -> Keys {
        Keys {
            prefix: self.prefix.clone(),
        }
    }

    fn conn(&self) -> Result<ConnectionManager, BrokerError> {
        self.conn
            .get()
            .cloned()
            .ok_or_else(|| BrokerError::Unavailable("redis broker not started".to_owned()))
    }

    async fn connect(&self) -> Result<ConnectionManager, BrokerError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        tokio::time::timeout(
            CONNECT_TIMEOUT * 3,
            self.client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| BrokerError::Unavailable("redis: connect timed out".to_owned()))?
        .map_err(|e| map_err(&e))
    }
}

/// Reads a room's head and kept history in one atomic round trip.
pub(crate) async fn read_history(
    conn: &mut ConnectionManager,
    keys: &Keys,
    topic: &str,
    since: Option<StreamPosition>,
    limit: usize,
) -> Result<History, BrokerError> {
    let meta = keys.meta(topic);
    let (epoch, offset, items): (Option<String>, Option<u64>, Vec<Vec<u8>>) = redis::pipe()
        .atomic()
        .hget(&meta, "epoch")
        .hget(&meta, "offset")
        .lrange(keys.hist(topic), 0, -1)
        .query_async(conn)
        .await
        .map_err(|e| map_err(&e))?;
    let position = StreamPosition {
        offset: if epoch.is_some() {
            offset.unwrap_or(0)
        } else {
            0
        },
        epoch: epoch.unwrap_or_default(),
    };
    let kept = items.iter().filter_map(|b| wire::decode(b));
    Ok(helios::History::select(position, kept, since, limit))
}

impl Broker for RedisBroker {
    fn start(&self, handler: Arc<dyn BrokerHandler>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let conn = self.connect().await?;
            let _ = self.conn.set(conn.clone());
            let sub = Subscriber::start(self.client.clone(), self.keys(), conn, handler).await?;
            let _ = self.subscriber.set(sub);
            Ok(())
        })
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        data: Value,
        opts: PublishOptions,
    ) -> BoxFuture<'a, Result<PublishResult, BrokerError>> {
        Box::pin(async move {
            let mut conn = self.conn()?;
            let keys = self.keys();
            let data = serde_json::to_string(&data)
                .map_err(|e| BrokerError::Backend(format!("data not serializable: {e}")))?;
            let ttl_ms = u64::try_from(opts.history_ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            let meta_ttl_ms = ttl_ms.max(u64::try_from(META_TTL_MIN.as_millis()).unwrap_or(0));
            let epoch = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
            let (offset, epoch, receivers): (u64, String, usize) = self
                .script
                .key(keys.meta(topic))
                .key(keys.hist(topic))
                .arg(keys.channel(topic))
                .arg(data)
                .arg(opts.history_size)
                .arg(ttl_ms)
                .arg(meta_ttl_ms)
                .arg(epoch)
                .arg(helios::protocol::now_ms())
                .invoke_async(&mut conn)
                .await
                .map_err(|e| map_err(&e))?;
            Ok(PublishResult {
                position: StreamPosition { offset, epoch },
                // Nodes subscribed to the room (PUBLISH's count).
                delivered: receivers,
            })
        })
    }

    fn subscribe<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            match self.subscriber.get() {
                Some(s) => s.subscribe(topic).await,
                None => Err(BrokerError::Unavailable(
                    "redis broker not started".to_owned(),
                )),
            }
        })
    }

    fn unsubscribe<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            if let Some(s) = self.subscriber.get() {
                s.unsubscribe(topic).await;
            }
            Ok(())
        })
    }

    fn history<'a>(
        &'a self,
        topic: &'a str,
        since: Option<StreamPosition>,
        limit: usize,
    ) -> BoxFuture<'a, Result<History, BrokerError>> {
        Box::pin(async move {
            let mut conn = self.conn()?;
            read_history(&mut conn, &self.keys(), topic, since, limit).await
        })
    }
}
