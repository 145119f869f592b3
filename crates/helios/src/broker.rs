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

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A position in a room's stream: the offset of the last publication seen,
/// within an epoch (a new epoch means the history was lost and restarted).
///
/// ```
/// let p = helios::StreamPosition { offset: 7, epoch: "e1".into() };
/// assert_eq!(serde_json::to_value(&p).unwrap(), serde_json::json!({"offset": 7, "epoch": "e1"}));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// `since + 1`, is a gap (`complete: false`). A `since` of offset 0
    /// with no epoch (taken before the room's first publication) is read
    /// from the start of the current epoch.
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
            // A position taken before the room's first publication has no
            // epoch: nothing seen yet, in whichever epoch came next.
            Some(s) if s.epoch != position.epoch && !(s.offset == 0 && s.epoch.is_empty()) => {
                (Vec::new(), false)
            }
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
