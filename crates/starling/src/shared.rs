//! State shared by the client handles and the connection task.
//!
//! It lives apart from the socket on purpose: a future reconnect supervisor
//! can hand the same `Shared` to a new connection task, keeping the room
//! list, the notification receivers and (if it chooses) the pending requests.
//! Every lock is a std `Mutex` held for a map operation and never across an
//! `.await`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use helios_protocol::{Notification, RequestId};
use serde_json::Value;
use tokio::sync::{broadcast, oneshot, watch};

use crate::error::ClientError;
use crate::session::Welcome;

/// What a pending request is completed with.
pub(crate) type Outcome = Result<Value, ClientError>;

/// Where the connection stands, as seen by the handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// Upgraded, messages flow.
    Open,
    /// `close()` was called; no new requests are accepted.
    Closing,
    /// The socket is gone.
    Closed(crate::CloseInfo),
}

/// One room this client is subscribed to.
struct Room {
    tx: broadcast::Sender<Notification>,
    /// Live [`Subscription`](crate::Subscription) values for the room.
    subscribers: usize,
}

pub(crate) struct Shared {
    pending: Mutex<HashMap<RequestId, oneshot::Sender<Outcome>>>,
    rooms: Mutex<HashMap<String, Room>>,
    /// `None` once the connection has ended, so receivers see the end.
    notifications: Mutex<Option<broadcast::Sender<Notification>>>,
    welcome: Mutex<Option<Welcome>>,
    state: watch::Sender<LinkState>,
    room_capacity: usize,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves a consistent map (each
    // critical section is a single insert/remove), so poisoning is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(notification_capacity: usize, room_capacity: usize) -> Arc<Self> {
        let (tx, _) = broadcast::channel(notification_capacity.max(1));
        Arc::new(Self {
            pending: Mutex::new(HashMap::new()),
            rooms: Mutex::new(HashMap::new()),
            notifications: Mutex::new(Some(tx)),
            welcome: Mutex::new(None),
            state: watch::Sender::new(LinkState::Open),
            room_capacity: room_capacity.max(1),
        })
    }

    // ------------------------------------------------------------ pending

    pub(crate) fn insert_pending(&self, id: RequestId, tx: oneshot::Sender<Outcome>) {
        lock(&self.pending).insert(id, tx);
    }

    /// Removes a pending request; `Some` means it had not been answered yet.
    pub(crate) fn take_pending(&self, id: &RequestId) -> Option<oneshot::Sender<Outcome>> {
        lock(&self.pending).remove(id)
    }

    /// Completes a pending request. Returns `false` when none had that id.
    pub(crate) fn complete(&self, id: &RequestId, outcome: Outcome) -> bool {
        match self.take_pending(id) {
            Some(tx) => {
                // The caller may have gone away in the meantime; that is fine.
                let _ = tx.send(outcome);
                true
            }
            None => false,
        }
    }

    /// Fails every pending request with `Closed`.
    pub(crate) fn fail_all_pending(&self) {
        let drained: Vec<_> = lock(&self.pending).drain().collect();
        for (_, tx) in drained {
            let _ = tx.send(Err(ClientError::Closed));
        }
    }

    // ------------------------------------------------------------ notifications

    pub(crate) fn subscribe_all(&self) -> broadcast::Receiver<Notification> {
        match lock(&self.notifications).as_ref() {
            Some(tx) => tx.subscribe(),
            None => {
                // Closed already: hand out a receiver that ends at once.
                let (tx, rx) = broadcast::channel(1);
                drop(tx);
                rx
            }
        }
    }

    /// Delivers a notification to `notifications()` receivers and to the
    /// room of its topic.
    pub(crate) fn deliver(&self, n: Notification) {
        if let Some(topic) = n.topic.as_deref() {
            if let Some(room) = lock(&self.rooms).get(topic) {
                // No live receiver is not an error.
                let _ = room.tx.send(n.clone());
            }
        }
        if let Some(tx) = lock(&self.notifications).as_ref() {
            let _ = tx.send(n);
        }
    }

    // ------------------------------------------------------------ rooms

    /// Adds a subscriber to a room and returns its receiver, plus whether
    /// the room is new (and so must be subscribed at the server).
    pub(crate) fn join_room(&self, topic: &str) -> (broadcast::Receiver<Notification>, bool) {
        let mut rooms = lock(&self.rooms);
        if let Some(room) = rooms.get_mut(topic) {
            room.subscribers += 1;
            return (room.tx.subscribe(), false);
        }
        let (tx, rx) = broadcast::channel(self.room_capacity);
        rooms.insert(topic.to_owned(), Room { tx, subscribers: 1 });
        (rx, true)
    }

    /// Removes a subscriber; `true` when it was the last one and the room
    /// was dropped (so it should be unsubscribed at the server).
    pub(crate) fn leave_room(&self, topic: &str) -> bool {
        let mut rooms = lock(&self.rooms);
        let Some(room) = rooms.get_mut(topic) else {
            return false;
        };
        room.subscribers = room.subscribers.saturating_sub(1);
        if room.subscribers == 0 {
            rooms.remove(topic);
            true
        } else {
            false
        }
    }

    /// The rooms this client is subscribed to (what a reconnect re-joins).
    pub(crate) fn room_names(&self) -> Vec<String> {
        lock(&self.rooms).keys().cloned().collect()
    }

    // ------------------------------------------------------------ welcome and state

    pub(crate) fn set_welcome(&self, w: Welcome) {
        *lock(&self.welcome) = Some(w);
    }

    pub(crate) fn welcome(&self) -> Option<Welcome> {
        lock(&self.welcome).clone()
    }

    pub(crate) fn state(&self) -> LinkState {
        self.state.borrow().clone()
    }

    pub(crate) fn watch_state(&self) -> watch::Receiver<LinkState> {
        self.state.subscribe()
    }

    /// Marks the link as closing unless it is closed already.
    pub(crate) fn set_closing(&self) {
        self.state.send_if_modified(|s| {
            if *s == LinkState::Open {
                *s = LinkState::Closing;
                true
            } else {
                false
            }
        });
    }

    /// Marks the link closed: fails pending requests and ends every
    /// notification and room receiver once it has drained.
    pub(crate) fn set_closed(&self, info: crate::CloseInfo) {
        self.state.send_replace(LinkState::Closed(info));
        self.fail_all_pending();
        lock(&self.notifications).take();
        lock(&self.rooms).clear();
    }
}
