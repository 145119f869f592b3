//! A Helios [`Broker`] on NATS: several `helios` nodes sharing one NATS
//! (with JetStream) behave as one server for rooms.
//!
//! ```no_run
//! # async fn demo() -> Result<(), helios::BrokerError> {
//! use std::sync::Arc;
//! let broker = helios_nats::NatsBroker::new("nats://127.0.0.1:4222")?.with_prefix("helios");
//! let helios = helios::Helios::builder().broker(Arc::new(broker)).build();
//! helios.start().await?; // connects; `serve` does it too
//! # Ok(()) }
//! ```
//!
//! # How
//! - **History and offsets**: one JetStream stream per prefix
//!   (`{prefix}_rooms`, subjects `{prefix}.room.>`, at most
//!   `max_history` messages per subject). JetStream's sequence is per
//!   stream, not per room, so each publication carries its own room offset,
//!   and a publish is a compare-and-set: it is sent with
//!   `Nats-Expected-Last-Subject-Sequence` = the stream sequence of the
//!   room's last message, with offset = that message's offset + 1. If
//!   another node published first, JetStream refuses it and the node reads
//!   the room's new head and retries. So offsets are contiguous per room and
//!   assigned exactly once across nodes, without a second store (a KV
//!   bucket would need a second round trip for every publish). A node
//!   caches each room's head, so an uncontended publish is one round trip.
//! - **Fan-out**: the stream *republishes* every stored message to
//!   `{prefix}.live.{room}` (core NATS), in stream order, which is offset
//!   order per room. Only stored messages are republished, so a publish
//!   refused by the compare-and-set is never seen by anyone. A node holds a
//!   core subscription only for rooms with local members.
//! - **Epoch**: random, chosen by the publisher that finds the room with no
//!   message (first publish, or everything aged out of the stream).
//! - **Reconnects**: the client reconnects by itself and resubscribes; a
//!   node remembers the last offset it delivered per room and reads a gap
//!   back from history before the next live publication.
//! - **Unavailable**: while NATS cannot be reached, `publish`, `subscribe`
//!   and `history` fail with [`BrokerError::Unavailable`], never silently.
//!
//! See `docs/cluster.md`.

mod cluster;
mod room;
mod wire;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use helios::{
    Broker, BrokerError, BrokerHandler, History, Publication, PublishOptions, PublishResult,
    StreamPosition,
};
use parking_lot::Mutex;
use serde_json::Value;

pub use crate::cluster::NatsCluster;
use crate::room::RoomSubscription;

/// Header JetStream checks for the compare-and-set publish.
const EXPECTED_LAST_SUBJECT_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";
/// Longest one request to NATS may take before it counts as unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Compare-and-set attempts before a publish gives up (heavy contention).
const CAS_ATTEMPTS: usize = 64;
/// Cached room heads kept before the cache is cleared (it is only a cache).
const MAX_CACHED_HEADS: usize = 10_000;

/// The last stored message of a room.
#[derive(Debug, Clone)]
struct Head {
    /// Its JetStream stream sequence (0 when the room has none).
    seq: u64,
    offset: u64,
    epoch: String,
}

/// A [`Broker`] on NATS + JetStream. See the crate docs.
pub struct NatsBroker {
    url: String,
    prefix: String,
    max_history: i64,
    max_age: Duration,
    node_id: String,
    state: OnceLock<Connected>,
    heads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Head>>>>>,
    subs: tokio::sync::Mutex<HashMap<String, RoomSubscription>>,
}

struct Connected {
    client: async_nats::Client,
    js: jetstream::Context,
    reader: Arc<Reader>,
    handler: Arc<dyn BrokerHandler>,
}

/// Reads room heads and history; shared with the room subscriptions, which
/// read gaps back.
pub(crate) struct Reader {
    js: jetstream::Context,
    prefix: String,
    max_history: i64,
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("nats: {e}"))
}

fn backend(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Backend(format!("nats: {e}"))
}

impl NatsBroker {
    /// A broker for a `nats://` URL; it connects in [`Broker::start`].
    ///
    /// # Errors
    /// [`BrokerError::Backend`] when the URL is not a NATS URL.
    pub fn new(url: &str) -> Result<Self, BrokerError> {
        let scheme_ok = ["nats://", "tls://", "ws://", "wss://"]
            .iter()
            .any(|s| url.starts_with(s));
        if !scheme_ok {
            return Err(BrokerError::Backend(format!(
                "invalid nats url {url:?}: expected nats://host:port"
            )));
        }
        url.parse::<async_nats::ServerAddr>()
            .map_err(|e| BrokerError::Backend(format!("invalid nats url {url:?}: {e}")))?;
        Ok(Self {
            url: url.to_owned(),
            prefix: "helios".to_owned(),
            max_history: 1000,
            max_age: Duration::from_secs(24 * 3600),
            node_id: uuid::Uuid::new_v4().simple().to_string(),
            state: OnceLock::new(),
            heads: Mutex::new(HashMap::new()),
            subs: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The prefix of every subject and of the stream name (default
    /// `helios`); characters other than letters, digits, `-` and `_` become
    /// `_`.
    #[must_use]
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self
    }

    /// Most publications the stream keeps per room (default 1000): the
    /// largest history size any room rule may use. Rooms with a smaller
    /// rule are trimmed to theirs when read.
    #[must_use]
    pub fn with_max_history(mut self, max: usize) -> Self {
        self.max_history = i64::try_from(max.max(1)).unwrap_or(i64::MAX);
        self
    }

    /// How long the stream keeps a publication at most (default 24 h); a
    /// room idle that long starts a new epoch.
    #[must_use]
    pub fn with_max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// This node's random id (a new one per process). Reserved for
    /// node-to-node traffic on `{prefix}.node.{node_id}` (see
    /// `docs/cluster.md`).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Whether the client is connected to NATS right now (false before
    /// `start` and while reconnecting). While it is false, `publish`,
    /// `subscribe` and `history` fail at once with `Unavailable` and send
    /// nothing.
    ///
    /// ```no_run
    /// # fn demo(broker: &helios_nats::NatsBroker) {
    /// if !broker.is_connected() {
    ///     eprintln!("NATS is down; publishes answer BROKER_UNAVAILABLE");
    /// }
    /// # }
    /// ```
    pub fn is_connected(&self) -> bool {
        self.connected().is_ok()
    }

    /// The JetStream stream a prefix uses.
    pub fn stream_name_for(prefix: &str) -> String {
        format!("{prefix}_rooms")
    }

    fn stream_name(&self) -> String {
        Self::stream_name_for(&self.prefix)
    }

    fn room_subject(&self, topic: &str) -> String {
        format!("{}.room.{}", self.prefix, wire::token(topic))
    }

    fn live_subject(&self, topic: &str) -> String {
        format!("{}.live.{}", self.prefix, wire::token(topic))
    }

    fn connected(&self) -> Result<&Connected, BrokerError> {
        let c = self
            .state
            .get()
            .ok_or_else(|| BrokerError::Unavailable("nats broker not started".to_owned()))?;
        if c.client.connection_state() != async_nats::connection::State::Connected {
            return Err(BrokerError::Unavailable(
                "nats: disconnected, reconnecting".to_owned(),
            ));
        }
        Ok(c)
    }

    async fn ensure_stream(&self, js: &jetstream::Context) -> Result<stream::Stream, BrokerError> {
        let config = stream::Config {
            name: self.stream_name(),
            subjects: vec![format!("{}.room.>", self.prefix)],
            max_messages_per_subject: self.max_history,
            max_age: self.max_age,
            storage: stream::StorageType::File,
            allow_direct: true,
            republish: Some(stream::Republish {
                source: format!("{}.room.>", self.prefix),
                destination: format!("{}.live.>", self.prefix),
                headers_only: false,
            }),
            ..Default::default()
        };
        tokio::time::timeout(REQUEST_TIMEOUT * 2, js.get_or_create_stream(config))
            .await
            .map_err(|_| unavailable("stream setup timed out"))?
            .map_err(unavailable)
    }

    fn head_slot(&self, topic: &str) -> Arc<tokio::sync::Mutex<Option<Head>>> {
        let mut heads = self.heads.lock();
        if heads.len() >= MAX_CACHED_HEADS && !heads.contains_key(topic) {
            heads.retain(|_, slot| Arc::strong_count(slot) > 1);
        }
        heads.entry(topic.to_owned()).or_default().clone()
    }
}

impl Reader {
    /// The room's last stored message, or a fresh head with a new epoch.
    async fn read_head(&self, topic: &str) -> Result<Head, BrokerError> {
        let stream = self
            .js
            .get_stream_no_info(self.stream_name())
            .await
            .map_err(unavailable)?;
        let last = tokio::time::timeout(
            REQUEST_TIMEOUT,
            stream.direct_get_last_for_subject(self.room_subject(topic)),
        )
        .await
        .map_err(|_| unavailable("direct get timed out"))?;
        match last {
            Ok(msg) => {
                let stored = wire::decode(&msg.payload)
                    .ok_or_else(|| backend("undecodable message in the room stream"))?;
                Ok(Head {
                    seq: msg.sequence,
                    offset: stored.publication.offset,
                    epoch: stored.publication.epoch,
                })
            }
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(Head {
                seq: 0,
                offset: 0,
                epoch: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            }),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Reads every kept publication of a room through a short-lived
    /// consumer, trimmed to the room's own history rule.
    async fn read_kept(
        &self,
        topic: &str,
    ) -> Result<(StreamPosition, Vec<Publication>), BrokerError> {
        let head = self.read_head(topic).await?;
        if head.seq == 0 {
            return Ok((
                StreamPosition {
                    offset: 0,
                    epoch: String::new(),
                },
                Vec::new(),
            ));
        }
        let position = StreamPosition {
            offset: head.offset,
            epoch: head.epoch.clone(),
        };
        let stream = self
            .js
            .get_stream_no_info(self.stream_name())
            .await
            .map_err(unavailable)?;
        let consumer = tokio::time::timeout(
            REQUEST_TIMEOUT,
            stream.create_consumer(jetstream::consumer::pull::Config {
                filter_subject: self.room_subject(topic),
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ack_policy: jetstream::consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                ..Default::default()
            }),
        )
        .await
        .map_err(|_| unavailable("consumer create timed out"))?
        .map_err(unavailable)?;
        let mut kept: Vec<wire::Stored> = Vec::new();
        let limit = usize::try_from(self.max_history).unwrap_or(usize::MAX);
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT * 2;
        'fetch: loop {
            let mut batch = consumer
                .fetch()
                .max_messages(256)
                .messages()
                .await
                .map_err(unavailable)?;
            let mut got = 0;
            loop {
                let next = tokio::time::timeout_at(deadline, batch.next())
                    .await
                    .map_err(|_| unavailable("history read timed out"))?;
                let Some(msg) = next else { break };
                let msg = msg.map_err(unavailable)?;
                got += 1;
                let pending = msg.info().map(|i| i.pending).unwrap_or(0);
                if let Some(s) = wire::decode(&msg.payload)
                    && s.publication.offset <= head.offset
                {
                    kept.push(s);
                }
                if pending == 0 || kept.len() >= limit {
                    break 'fetch;
                }
            }
            if got == 0 {
                break;
            }
        }
        let name = consumer.cached_info().name.clone();
        let _ = stream.delete_consumer(&name).await;
        // Trim to the rule of the latest publication: its size and TTL.
        let size = kept.last().map_or(0, |s| s.history_size);
        let now = helios::protocol::now_ms();
        let pubs = kept
            .into_iter()
            .filter(|s| s.publication.epoch == head.epoch)
            .filter(|s| s.publication.offset + size > head.offset)
            .filter(|s| s.publication.timestamp.saturating_add(s.history_ttl_ms) >= now)
            .map(|s| s.publication)
            .collect();
        Ok((position, pubs))
    }

    fn stream_name(&self) -> String {
        NatsBroker::stream_name_for(&self.prefix)
    }

    fn room_subject(&self, topic: &str) -> String {
        format!("{}.room.{}", self.prefix, wire::token(topic))
    }

    /// Publications of `topic` after `since`, at most `limit`.
    pub(crate) async fn read(
        &self,
        topic: &str,
        since: StreamPosition,
        limit: usize,
    ) -> Result<History, BrokerError> {
        let (position, kept) = self.read_kept(topic).await?;
        Ok(helios::History::select(position, kept, Some(since), limit))
    }
}

impl Broker for NatsBroker {
    fn start(&self, handler: Arc<dyn BrokerHandler>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let options = async_nats::ConnectOptions::new()
                .name(format!("helios-{}", &self.node_id[..8]))
                .connection_timeout(Duration::from_secs(1))
                .request_timeout(Some(REQUEST_TIMEOUT))
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
            js.set_timeout(REQUEST_TIMEOUT);
            self.ensure_stream(&js).await?;
            let reader = Arc::new(Reader {
                js: js.clone(),
                prefix: self.prefix.clone(),
                max_history: self.max_history,
            });
            let _ = self.state.set(Connected {
                client,
                js,
                reader,
                handler,
            });
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
            let c = self.connected()?;
            let subject = self.room_subject(topic);
            let size = u64::try_from(opts.history_size).unwrap_or(u64::MAX);
            let ttl = u64::try_from(opts.history_ttl.as_millis()).unwrap_or(u64::MAX);
            let slot = self.head_slot(topic);
            // One publish at a time per room on this node: no self-contention.
            let mut head = slot.lock().await;
            let mut recreated = false;
            for attempt in 0..CAS_ATTEMPTS {
                let cur = match head.clone() {
                    Some(h) => h,
                    None => c.reader.read_head(topic).await?,
                };
                let publication = Publication {
                    offset: cur.offset + 1,
                    epoch: cur.epoch.clone(),
                    data: data.clone(),
                    timestamp: helios::protocol::now_ms(),
                };
                let payload = wire::encode(&publication, size, ttl).map_err(backend)?;
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(EXPECTED_LAST_SUBJECT_SEQ, cur.seq.to_string().as_str());
                let sent =
                    c.js.publish_with_headers(subject.clone(), headers, payload.into())
                        .await;
                let acked = match sent {
                    Ok(ack) => ack.await,
                    Err(e) => Err(e),
                };
                match acked {
                    Ok(ack) => {
                        *head = Some(Head {
                            seq: ack.sequence,
                            offset: publication.offset,
                            epoch: publication.epoch.clone(),
                        });
                        return Ok(PublishResult {
                            position: StreamPosition {
                                offset: publication.offset,
                                epoch: publication.epoch,
                            },
                            // Core NATS does not say who received it.
                            delivered: 0,
                        });
                    }
                    Err(e) => {
                        *head = None;
                        match e.kind() {
                            jetstream::context::PublishErrorKind::WrongLastSequence => {
                                if attempt > 2 {
                                    let jitter = fastrand_ms(attempt);
                                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                                }
                            }
                            jetstream::context::PublishErrorKind::StreamNotFound if !recreated => {
                                recreated = true;
                                self.ensure_stream(&c.js).await?;
                            }
                            _ => return Err(unavailable(e)),
                        }
                    }
                }
            }
            Err(BrokerError::Backend(format!(
                "nats: publish to {topic:?} lost the offset race {CAS_ATTEMPTS} times"
            )))
        })
    }

    fn subscribe<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let c = self.connected()?;
            let mut subs = self.subs.lock().await;
            if subs.contains_key(topic) {
                return Ok(());
            }
            let sub = tokio::time::timeout(
                REQUEST_TIMEOUT,
                c.client.subscribe(self.live_subject(topic)),
            )
            .await
            .map_err(|_| unavailable("subscribe timed out"))?
            .map_err(unavailable)?;
            // The server has the subscription once it answers a flush.
            tokio::time::timeout(REQUEST_TIMEOUT, c.client.flush())
                .await
                .map_err(|_| unavailable("flush timed out"))?
                .map_err(unavailable)?;
            subs.insert(
                topic.to_owned(),
                RoomSubscription::start(topic.to_owned(), sub, c.handler.clone(), c.reader.clone()),
            );
            Ok(())
        })
    }

    fn unsubscribe<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let sub = self.subs.lock().await.remove(topic);
            if let Some(sub) = sub {
                sub.stop().await;
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
            let c = self.connected()?;
            if since.is_none() {
                let head = c.reader.read_head(topic).await?;
                let position = if head.seq == 0 {
                    StreamPosition {
                        offset: 0,
                        epoch: String::new(),
                    }
                } else {
                    StreamPosition {
                        offset: head.offset,
                        epoch: head.epoch,
                    }
                };
                return Ok(helios::History::select(position, Vec::new(), None, limit));
            }
            let (position, kept) = c.reader.read_kept(topic).await?;
            Ok(helios::History::select(position, kept, since, limit))
        })
    }
}

/// A small pseudo-random backoff in milliseconds for CAS retries.
fn fastrand_ms(attempt: usize) -> u64 {
    let r = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 8;
    r + u64::try_from(attempt.min(20)).unwrap_or(20)
}
