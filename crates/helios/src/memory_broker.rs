//! The in-memory broker of a single node: history in a ring buffer per
//! room, delivery by direct call, and memory that follows what is in use.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::Value;

use crate::broker::{
    Broker, BrokerError, BrokerHandler, History, Publication, PublishOptions, PublishResult,
    StreamPosition,
};

/// How long a room's position (offset and epoch) outlives its last
/// publication by default, as the Redis broker keeps its room keys.
pub const DEFAULT_POSITION_TTL: Duration = Duration::from_secs(300);

/// Expired rooms looked at per broker call: bounds the work of one call.
const SWEEP_PER_CALL: usize = 16;

/// The in-memory broker of a single node.
///
/// A room is kept while this node has members in it, while it has history,
/// and for [`with_position_ttl`](Self::with_position_ttl) after its last
/// publication (so a client coming back soon finds the offsets it knew).
/// Then it is dropped; made again, it starts a new epoch, so a client
/// holding a position of the old stream is told of the gap. History older
/// than the room's `history_ttl` is never returned and is freed by later
/// broker calls, without a timer task.
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
    position_ttl: Duration,
    handler: OnceLock<Arc<dyn BrokerHandler>>,
    rooms: Mutex<Rooms>,
}

#[derive(Default)]
struct Rooms {
    streams: HashMap<String, RoomStream>,
    /// Rooms not subscribed here, by when to look at them again (their
    /// oldest publication's expiry, or the end of their position's life).
    /// Looked at a few per call, so expired history is freed by the
    /// traffic that made it.
    due: BinaryHeap<Reverse<(Instant, String)>>,
    /// Rooms made so far: each gets its own epoch, so a room dropped and
    /// made again never reuses an offset within one epoch.
    created: u64,
}

struct RoomStream {
    offset: u64,
    epoch: String,
    history: VecDeque<(Instant, Publication)>,
    /// How long this room's publications stay in history (the last
    /// publish's option).
    ttl: Duration,
    /// The end of the position's life when nothing else keeps the room.
    keep_until: Instant,
    /// Whether the room has an entry in `due`.
    queued: bool,
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
            position_ttl: DEFAULT_POSITION_TTL,
            handler: OnceLock::new(),
            rooms: Mutex::new(Rooms::default()),
        }
    }

    /// How long a room nobody uses keeps its position after its last
    /// publication (default [`DEFAULT_POSITION_TTL`]; at least the
    /// room's history TTL).
    ///
    /// ```
    /// let broker = helios::MemoryBroker::new().with_position_ttl(std::time::Duration::from_secs(600));
    /// # drop(broker);
    /// ```
    #[must_use]
    pub fn with_position_ttl(mut self, ttl: Duration) -> Self {
        self.position_ttl = ttl;
        self
    }

    /// Rooms held in memory (for tests and metrics).
    pub fn room_count(&self) -> usize {
        self.rooms.lock().streams.len()
    }
}

impl Rooms {
    fn stream(&mut self, topic: &str, epoch: &str, now: Instant) -> &mut RoomStream {
        if !self.streams.contains_key(topic) {
            self.created += 1;
            let room = RoomStream {
                offset: 0,
                epoch: format!("{epoch}-{:x}", self.created),
                history: VecDeque::new(),
                ttl: Duration::ZERO,
                keep_until: now,
                queued: false,
                subscribed: false,
            };
            self.streams.insert(topic.to_owned(), room);
        }
        self.streams
            .get_mut(topic)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// Drops the room if nothing keeps it, or puts it in line for when its
    /// history or position expires.
    fn settle(&mut self, topic: &str, now: Instant) {
        let Some(room) = self.streams.get_mut(topic) else {
            return;
        };
        room.drop_expired(now);
        if room.subscribed || room.queued {
            return;
        }
        let due = match room.history.front() {
            Some((at, _)) => later(*at, room.ttl),
            None if room.offset > 0 && now < room.keep_until => room.keep_until,
            None => {
                self.streams.remove(topic);
                return;
            }
        };
        room.queued = true;
        self.due.push(Reverse((due, topic.to_owned())));
    }

    /// Looks at the first few rooms that are due.
    fn sweep(&mut self, now: Instant) {
        for _ in 0..SWEEP_PER_CALL {
            match self.due.peek() {
                Some(Reverse((due, _))) if *due <= now => {}
                _ => return,
            }
            let Some(Reverse((_, topic))) = self.due.pop() else {
                return;
            };
            if let Some(room) = self.streams.get_mut(&topic) {
                room.queued = false;
            }
            self.settle(&topic, now);
        }
    }
}

/// `at + d`, or a century on for a TTL that means "forever".
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .unwrap_or_else(|| at + Duration::from_secs(100 * 365 * 86_400))
}

impl RoomStream {
    fn drop_expired(&mut self, now: Instant) {
        while self
            .history
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > self.ttl)
        {
            self.history.pop_front();
        }
    }

    /// The room's position; before its first publication it has no epoch
    /// yet (as with the cluster brokers), which reads as "nothing seen".
    fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.offset,
            epoch: if self.offset == 0 {
                String::new()
            } else {
                self.epoch.clone()
            },
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
        let now = Instant::now();
        let mut rooms = self.rooms.lock();
        rooms.sweep(now);
        let room = rooms.stream(topic, &self.epoch, now);
        room.offset += 1;
        room.keep_until = later(now, self.position_ttl.max(opts.history_ttl));
        let publication = Publication {
            offset: room.offset,
            epoch: room.epoch.clone(),
            data,
            timestamp: helios_protocol::now_ms(),
        };
        let delivered = match self.handler.get() {
            Some(h) if room.subscribed => h.on_publication(topic, &publication),
            _ => 0,
        };
        let position = room.position();
        if opts.history_size > 0 {
            room.ttl = opts.history_ttl;
            room.history.push_back((now, publication));
            let excess = room.history.len().saturating_sub(opts.history_size);
            room.history.drain(..excess);
        }
        rooms.settle(topic, now);
        drop(rooms);
        Box::pin(async move {
            Ok(PublishResult {
                position,
                delivered,
            })
        })
    }

    fn subscribe<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        let now = Instant::now();
        let mut rooms = self.rooms.lock();
        rooms.sweep(now);
        rooms.stream(topic, &self.epoch, now).subscribed = true;
        drop(rooms);
        Box::pin(async { Ok(()) })
    }

    fn unsubscribe<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        let now = Instant::now();
        let mut rooms = self.rooms.lock();
        rooms.sweep(now);
        if let Some(room) = rooms.streams.get_mut(topic) {
            room.subscribed = false;
            // Members that just left may come back (recovery) and must find
            // the offsets they knew, however long the room was quiet.
            room.keep_until = room.keep_until.max(later(now, self.position_ttl));
        }
        rooms.settle(topic, now);
        drop(rooms);
        Box::pin(async { Ok(()) })
    }

    fn history<'a>(
        &'a self,
        topic: &'a str,
        since: Option<StreamPosition>,
        limit: usize,
    ) -> BoxFuture<'a, Result<History, BrokerError>> {
        let now = Instant::now();
        let mut rooms = self.rooms.lock();
        rooms.sweep(now);
        let room = rooms.streams.get(topic);
        let position = room.map_or_else(StreamPosition::default, RoomStream::position);
        let after = since.as_ref().map_or(u64::MAX, |s| s.offset);
        // Expired publications may still wait for their sweep: never shown.
        let kept = room
            .into_iter()
            .flat_map(|r| {
                r.history
                    .iter()
                    .filter(|(at, _)| now.duration_since(*at) <= r.ttl)
            })
            .filter(|(_, p)| p.offset > after)
            .map(|(_, p)| p.clone());
        let history = History::select(position, kept, since, limit);
        drop(rooms);
        Box::pin(async move { Ok(history) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts(history_size: usize, ttl_ms: u64) -> PublishOptions {
        PublishOptions {
            history_size,
            history_ttl: Duration::from_millis(ttl_ms),
        }
    }

    #[tokio::test]
    async fn rooms_nobody_uses_are_dropped_once_their_history_and_position_expire() {
        let broker = MemoryBroker::new().with_position_ttl(Duration::from_millis(100));
        broker.subscribe("kept").await.expect("subscribe");
        for i in 0..1_000 {
            broker
                .publish(&format!("room:{i}"), json!({"i": i}), opts(10, 50))
                .await
                .expect("publish");
        }
        broker
            .publish("no-history", json!(1), opts(0, 50))
            .await
            .expect("publish");
        assert_eq!(broker.room_count(), 1_002);
        tokio::time::sleep(Duration::from_millis(150)).await;
        // Each call frees a few due rooms: the traffic that made them.
        for _ in 0..100 {
            broker.history("other", None, 0).await.expect("history");
        }
        assert_eq!(broker.room_count(), 1, "only the subscribed room stays");
        broker.unsubscribe("kept").await.expect("unsubscribe");
        assert_eq!(broker.room_count(), 0, "never published: nothing to keep");
    }

    #[tokio::test]
    async fn a_room_made_again_starts_a_new_epoch() {
        let broker = MemoryBroker::new().with_position_ttl(Duration::ZERO);
        let first = broker
            .publish("r", json!(1), opts(0, 0))
            .await
            .expect("publish")
            .position;
        tokio::time::sleep(Duration::from_millis(5)).await;
        broker.history("other", None, 0).await.expect("sweep");
        assert_eq!(broker.room_count(), 0);
        let second = broker
            .publish("r", json!(2), opts(0, 0))
            .await
            .expect("publish")
            .position;
        assert_eq!((first.offset, second.offset), (1, 1));
        assert_ne!(first.epoch, second.epoch);
        let h = broker.history("r", Some(first), 10).await.expect("history");
        assert!(!h.complete, "an old position is told of the gap");
    }

    #[tokio::test]
    async fn expired_history_is_never_returned() {
        let broker = MemoryBroker::new();
        broker.subscribe("r").await.expect("subscribe");
        let start = broker
            .history("r", None, 0)
            .await
            .expect("history")
            .position;
        broker
            .publish("r", json!(1), opts(10, 50))
            .await
            .expect("publish");
        let h = broker
            .history("r", Some(start.clone()), 10)
            .await
            .expect("h");
        assert_eq!((h.publications.len(), h.complete), (1, true));
        tokio::time::sleep(Duration::from_millis(80)).await;
        let h = broker.history("r", Some(start), 10).await.expect("h");
        assert!(h.publications.is_empty());
        assert!(!h.complete, "the expired publication is a gap");
    }
}
