//! The broker contract: how a node publishes to rooms, learns of
//! publications, and reads room history. One node uses [`MemoryBroker`];
//! a cluster shares Redis or NATS through the same trait.
//!
//! # Guarantees every implementation gives
//! - **Order per room.** Publications of one room reach every node's
//!   [`BrokerHandler`] in offset order; offsets grow by one per publication
//!   within an epoch.
//! - **At-most-once live delivery**, made whole by history: a node that
//!   missed publications (e.g. a reconnecting client) reads them back with
//!   [`Broker::history`] as long as they are within the history size and TTL.
//! - **Interest-based.** A node receives only rooms it [`subscribe`]d to.
//! - **Errors, not silent loss.** When the backend is unreachable,
//!   [`publish`] fails with [`BrokerError::Unavailable`].
//!
//! [`subscribe`]: Broker::subscribe
//! [`publish`]: Broker::publish

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A position in a room's stream: the offset of the last publication seen,
/// within an epoch (a new epoch means the history was lost and restarted).
///
/// ```
/// let p = helios::StreamPosition { offset: 7, epoch: "e1".into() };
/// assert_eq!(serde_json::to_value(&p).unwrap(), serde_json::json!({"offset": 7, "epoch": "e1"}));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamPosition {
    /// Offset of the last publication (0 before the first).
    pub offset: u64,
    /// The history generation.
    pub epoch: String,
}

/// One publication to a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publication {
    /// Its offset in the room.
    pub offset: u64,
    /// The room's epoch.
    pub epoch: String,
    /// The published data.
    pub data: Value,
    /// Milliseconds since the epoch when it was published.
    pub timestamp: u64,
}

/// Options of one publish.
#[derive(Debug, Clone, Copy)]
pub struct PublishOptions {
    /// Publications kept for recovery (0 = none).
    pub history_size: usize,
    /// How long they are kept.
    pub history_ttl: Duration,
}

/// What a publish returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishResult {
    /// Where the publication landed.
    pub position: StreamPosition,
    /// Subscribers it was handed to: on this node for the memory broker.
    pub delivered: usize,
}

/// A slice of a room's history.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// Publications after the requested position, in order.
    pub publications: Vec<Publication>,
    /// The room's current position.
    pub position: StreamPosition,
    /// `false` when publications after the requested position were already
    /// dropped (history too small or too old, or a new epoch): a gap.
    pub complete: bool,
}

impl History {
    /// Picks the publications after `since` out of what a backend kept (in
    /// offset order), with the rules every broker shares: no `since` means
    /// just the position; another epoch, or a first kept offset past
    /// `since + 1`, is a gap (`complete: false`).
    ///
    /// ```
    /// use helios::{History, Publication, StreamPosition};
    /// let pos = |offset| StreamPosition { offset, epoch: "e".into() };
    /// let p = |offset| Publication { offset, epoch: "e".into(), data: serde_json::json!(offset), timestamp: 0 };
    /// let h = History::select(pos(5), vec![p(3), p(4), p(5)], Some(pos(3)), 10);
    /// assert_eq!(h.publications.len(), 2);
    /// assert!(h.complete);
    /// let gap = History::select(pos(5), vec![p(4), p(5)], Some(pos(1)), 10);
    /// assert!(!gap.complete);
    /// ```
    pub fn select(
        position: StreamPosition,
        kept: impl IntoIterator<Item = Publication>,
        since: Option<StreamPosition>,
        limit: usize,
    ) -> Self {
        let (publications, complete) = match since {
            None => (Vec::new(), true),
            Some(s) if position.offset == 0 => (Vec::new(), s.offset == 0),
            Some(s) if s.epoch != position.epoch => (Vec::new(), false),
            Some(s) => {
                let pubs: Vec<Publication> = kept
                    .into_iter()
                    .filter(|p| p.offset > s.offset && p.epoch == position.epoch)
                    .take(limit)
                    .collect();
                let covered = s.offset >= position.offset
                    || pubs.first().is_some_and(|p| p.offset == s.offset + 1);
                (pubs, covered)
            }
        };
        Self {
            publications,
            position,
            complete,
        }
    }
}

/// A broker failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The backend cannot be reached right now.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with an error.
    #[error("broker error: {0}")]
    Backend(String),
}

/// Receives what the broker delivers to this node.
pub trait BrokerHandler: Send + Sync + 'static {
    /// A publication to a room this node subscribed to; returns how many
    /// local subscribers it was handed to.
    fn on_publication(&self, topic: &str, publication: &Publication) -> usize;
}

/// The PUB/SUB and history contract (see the module docs for guarantees).
pub trait Broker: Send + Sync + 'static {
    /// Called once at start with the handler that gets deliveries.
    fn start(&self, handler: Arc<dyn BrokerHandler>) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// Publishes to a room (every node subscribed to it receives it).
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        data: Value,
        opts: PublishOptions,
    ) -> BoxFuture<'a, Result<PublishResult, BrokerError>>;
    /// This node wants a room's publications.
    fn subscribe<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// This node no longer wants a room's publications.
    fn unsubscribe<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Publications after `since` (or just the current position when
    /// `since` is `None`), at most `limit`.
    fn history<'a>(
        &'a self,
        topic: &'a str,
        since: Option<StreamPosition>,
        limit: usize,
    ) -> BoxFuture<'a, Result<History, BrokerError>>;
}

/// The in-memory broker of a single node: history in a ring buffer per
/// room, delivery by direct call.
///
/// ```
/// # tokio_test_block(async {
/// use helios::{Broker, MemoryBroker, PublishOptions};
/// let broker = MemoryBroker::new();
/// let opts = PublishOptions { history_size: 10, history_ttl: std::time::Duration::from_secs(60) };
/// let r = broker.publish("chat:lobby", serde_json::json!("hi"), opts).await.unwrap();
/// assert_eq!(r.position.offset, 1);
/// let h = broker.history("chat:lobby", None, 10).await.unwrap();
/// assert_eq!(h.position.offset, 1);
/// # });
/// # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
pub struct MemoryBroker {
    epoch: String,
    handler: OnceLock<Arc<dyn BrokerHandler>>,
    rooms: Mutex<HashMap<String, RoomStream>>,
}

#[derive(Default)]
struct RoomStream {
    offset: u64,
    history: VecDeque<(Instant, Publication)>,
    /// The node subscribed to the room (interest, as a cluster broker has).
    subscribed: bool,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBroker {
    /// A broker with a fresh epoch.
    pub fn new() -> Self {
        Self {
            epoch: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            handler: OnceLock::new(),
            rooms: Mutex::new(HashMap::new()),
        }
    }
}

impl RoomStream {
    fn trim(&mut self, size: usize, ttl: Duration) {
        while self.history.len() > size {
            self.history.pop_front();
        }
        while self
            .history
            .front()
            .is_some_and(|(at, _)| at.elapsed() > ttl)
        {
            self.history.pop_front();
        }
    }
}

impl Broker for MemoryBroker {
    fn start(&self, handler: Arc<dyn BrokerHandler>) -> BoxFuture<'_, Result<(), BrokerError>> {
        let _ = self.handler.set(handler);
        Box::pin(async { Ok(()) })
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        data: Value,
        opts: PublishOptions,
    ) -> BoxFuture<'a, Result<PublishResult, BrokerError>> {
        // Offset assignment and delivery happen under one lock, so every
        // subscriber sees a room's publications in offset order.
        let mut rooms = self.rooms.lock();
        let room = rooms.entry(topic.to_owned()).or_default();
        room.offset += 1;
        let publication = Publication {
            offset: room.offset,
            epoch: self.epoch.clone(),
            data,
            timestamp: helios_protocol::now_ms(),
        };
        let delivered = match self.handler.get() {
            Some(h) if room.subscribed => h.on_publication(topic, &publication),
            _ => 0,
        };
        let position = StreamPosition {
            offset: room.offset,
            epoch: self.epoch.clone(),
        };
        if opts.history_size > 0 {
            room.history.push_back((Instant::now(), publication));
            room.trim(opts.history_size, opts.history_ttl);
        }
        drop(rooms);
        Box::pin(async move {
            Ok(PublishResult {
                position,
                delivered,
            })
        })
    }

    fn subscribe<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.rooms
            .lock()
            .entry(topic.to_owned())
            .or_default()
            .subscribed = true;
        Box::pin(async { Ok(()) })
    }

    fn unsubscribe<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        let mut rooms = self.rooms.lock();
        if let Some(room) = rooms.get_mut(topic) {
            room.subscribed = false;
            if room.offset == 0 {
                rooms.remove(topic);
            }
        }
        drop(rooms);
        Box::pin(async { Ok(()) })
    }

    fn history<'a>(
        &'a self,
        topic: &'a str,
        since: Option<StreamPosition>,
        limit: usize,
    ) -> BoxFuture<'a, Result<History, BrokerError>> {
        let rooms = self.rooms.lock();
        let room = rooms.get(topic);
        let position = StreamPosition {
            offset: room.map_or(0, |r| r.offset),
            epoch: self.epoch.clone(),
        };
        let after = since.as_ref().map_or(u64::MAX, |s| s.offset);
        let kept = room
            .into_iter()
            .flat_map(|r| r.history.iter())
            .filter(|(_, p)| p.offset > after)
            .map(|(_, p)| p.clone());
        let history = History::select(position, kept, since, limit);
        drop(rooms);
        Box::pin(async move { Ok(history) })
    }
}
