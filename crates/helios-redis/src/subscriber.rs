//! The node's one PUB/SUB connection: subscribes to the rooms with local
//! members, reconnects by itself and resubscribes to every room still
//! wanted, and hands publications to the [`BrokerHandler`] in offset order,
//! filling gaps from history and dropping duplicates.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use helios::{BrokerError, BrokerHandler, Publication, StreamPosition};
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, PubSubSink, PubSubStream};
use tokio::task::JoinHandle;

use crate::{Keys, map_err, read_history, wire};

/// Longest a SUBSCRIBE may take.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Rooms this node wants, each with the last position it delivered.
type Wanted = HashMap<String, Option<StreamPosition>>;

struct Shared {
    keys: Keys,
    handler: Arc<dyn BrokerHandler>,
    wanted: Mutex<Wanted>,
    /// The live connection's command half; `None` while disconnected.
    /// Subscribe/unsubscribe and the resubscribe after a reconnect hold
    /// this lock, so `wanted` and the server's subscriptions agree.
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
}

pub(crate) struct Subscriber {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscriber {
    /// Connects the PUB/SUB connection (failing when Redis is unreachable)
    /// and starts the task that reads it.
    pub(crate) async fn start(
        client: redis::Client,
        keys: Keys,
        conn: ConnectionManager,
        handler: Arc<dyn BrokerHandler>,
    ) -> Result<Self, BrokerError> {
        let (sink, stream) = connect(&client).await?.split();
        let shared = Arc::new(Shared {
            keys,
            handler,
            wanted: Mutex::new(HashMap::new()),
            sink: tokio::sync::Mutex::new(Some(sink)),
        });
        let task = tokio::spawn(run(client, shared.clone(), conn, stream));
        Ok(Self { shared, task })
    }

    pub(crate) async fn subscribe(&self, topic: &str) -> Result<(), BrokerError> {
        let mut slot = self.shared.sink.lock().await;
        let Some(sink) = slot.as_mut() else {
            return Err(BrokerError::Unavailable(
                "redis: pub/sub connection is down, reconnecting".to_owned(),
            ));
        };
        // Wanted before SUBSCRIBE, so nothing that arrives right after the
        // confirmation is dropped as unwanted.
        if self
            .shared
            .wanted
            .lock()
            .insert(topic.to_owned(), None)
            .is_some()
        {
            return Ok(());
        }
        let channel = self.shared.keys.channel(topic);
        let result = match tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.subscribe(&channel)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(map_err(&e)),
            Err(_) => Err(BrokerError::Unavailable(
                "redis: subscribe timed out".to_owned(),
            )),
        };
        if result.is_err() {
            self.shared.wanted.lock().remove(topic);
        }
        result
    }

    pub(crate) async fn unsubscribe(&self, topic: &str) {
        let mut slot = self.shared.sink.lock().await;
        self.shared.wanted.lock().remove(topic);
        if let Some(sink) = slot.as_mut() {
            let channel = self.shared.keys.channel(topic);
            // A failure means the connection is gone; the reconnect will
            // not resubscribe since the room is no longer wanted.
            let _ = tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.unsubscribe(&channel)).await;
        }
    }
}

async fn connect(client: &redis::Client) -> Result<redis::aio::PubSub, BrokerError> {
    match tokio::time::timeout(SUBSCRIBE_TIMEOUT, client.get_async_pubsub()).await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(map_err(&e)),
        Err(_) => Err(BrokerError::Unavailable(
            "redis: pub/sub connect timed out".to_owned(),
        )),
    }
}

async fn run(
    client: redis::Client,
    shared: Arc<Shared>,
    mut conn: ConnectionManager,
    first: PubSubStream,
) {
    let mut next = Some(first);
    let mut backoff = BACKOFF_MIN;
    loop {
        if let Some(stream) = next.take() {
            read(&shared, &mut conn, stream).await;
            tokio::time::sleep(backoff).await;
            continue;
        }
        let (mut sink, stream) = match connect(&client).await {
            Ok(p) => p.split(),
            Err(e) => {
                tracing::debug!(error = %e, "redis pub/sub reconnect failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        {
            let mut slot = shared.sink.lock().await;
            let channels: Vec<String> = shared
                .wanted
                .lock()
                .keys()
                .map(|t| shared.keys.channel(t))
                .collect();
            if !channels.is_empty() {
                match tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.subscribe(&channels)).await {
                    Ok(Ok(())) => {
                        tracing::info!(rooms = channels.len(), "redis pub/sub resubscribed");
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "redis resubscribe failed");
                        drop(slot);
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                    Err(_) => {
                        tracing::warn!("redis resubscribe timed out");
                        drop(slot);
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                }
            }
            *slot = Some(sink);
        }
        backoff = BACKOFF_MIN;
        read(&shared, &mut conn, stream).await;
        tokio::time::sleep(backoff).await;
    }
}

/// Delivers from one connection until it drops, then marks it gone.
async fn read(shared: &Shared, conn: &mut ConnectionManager, mut stream: PubSubStream) {
    while let Some(msg) = stream.next().await {
        let Some(topic) = shared.keys.topic_of(msg.get_channel_name()) else {
            continue;
        };
        let Some(publication) = wire::decode(msg.get_payload_bytes()) else {
            tracing::warn!(%topic, "undecodable publication on redis channel");
            continue;
        };
        deliver(shared, conn, topic, publication).await;
    }
    tracing::warn!("redis pub/sub connection lost; reconnecting");
    *shared.sink.lock().await = None;
}

/// Hands a publication to the handler in order: drops duplicates, and
/// first reads a gap's publications back from history.
async fn deliver(
    shared: &Shared,
    conn: &mut ConnectionManager,
    topic: &str,
    publication: Publication,
) {
    let last = match shared.wanted.lock().get(topic) {
        // Not (or no longer) wanted: the unsubscribe raced this message.
        None => return,
        Some(last) => last.clone(),
    };
    if let Some(last) = last.filter(|l| l.epoch == publication.epoch) {
        if publication.offset <= last.offset {
            return;
        }
        if publication.offset > last.offset + 1 {
            let missing =
                usize::try_from(publication.offset - last.offset - 1).unwrap_or(usize::MAX);
            match read_history(conn, &shared.keys, topic, Some(last.clone()), missing).await {
                Ok(h) => {
                    for p in h
                        .publications
                        .iter()
                        .filter(|p| p.offset < publication.offset)
                    {
                        shared.handler.on_publication(topic, p);
                    }
                    if !h.complete {
                        tracing::warn!(%topic, from = last.offset, to = publication.offset,
                            "publications lost while disconnected (history too small)");
                    }
                }
                Err(e) => tracing::warn!(%topic, error = %e, "gap fill from history failed"),
            }
        }
    }
    let position = StreamPosition {
        offset: publication.offset,
        epoch: publication.epoch.clone(),
    };
    shared.handler.on_publication(topic, &publication);
    if let Some(slot) = shared.wanted.lock().get_mut(topic) {
        *slot = Some(position);
    }
}
