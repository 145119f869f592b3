//! State shared by the client handles, the connection task and the
//! reconnect supervisor.
//!
//! It lives apart from the socket on purpose: when the supervisor opens a new
//! socket it hands the same `Shared` to the new connection task, so the room
//! list and positions, the notification receivers, the pending requests, the
//! recovery token and the event stream survive a reconnect. Every lock is a
//! std `Mutex` held for a map operation and never across an `.await`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use helios_protocol::{Notification, RequestId};
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, oneshot, watch};
use tokio_websockets::Message as WsMessage;

use crate::error::ClientError;
use crate::events::ClientEvent;
use crate::reliable::SeenIds;
use crate::session::Welcome;

/// What a pending request is completed with.
pub(crate) type Outcome = Result<Value, ClientError>;

/// Where the connection stands, as seen by the handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// Upgraded, messages flow.
    Open,
    /// The socket was lost; the supervisor is opening a new one. Requests
    /// and notifications are queued meanwhile.
    Reconnecting,
    /// `close()` was called; no new requests are accepted.
    Closing,
    /// The client is done (closed, or gave up reconnecting).
    Closed(crate::CloseInfo),
}

/// One request waiting for its response.
struct Pending {
    tx: oneshot::Sender<Outcome>,
    /// The frame, kept when the request may be sent again on a new socket.
    resend: Option<WsMessage>,
    /// The connection generation it was written to, once written.
    sent_on: Option<u64>,
}

/// One room this client is subscribed to.
struct Room {
    tx: broadcast::Sender<Notification>,
    /// Live [`Subscription`](crate::Subscription) values for the room.
    subscribers: usize,
    /// The last delivery received: `(epoch, offset)`.
    position: Option<(String, u64)>,
}

/// The recovery token and when it stops being worth sending.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) token: String,
    pub(crate) expires: Instant,
}

/// Ids of reliable notifications seen recently (bounded).
const SEEN_ACK_IDS: usize = 4096;
/// Events buffered per [`Events`](crate::Events) receiver.
const EVENT_CAPACITY: usize = 256;

pub(crate) struct Shared {
    pending: Mutex<HashMap<RequestId, Pending>>,
    rooms: Mutex<HashMap<String, Room>>,
    /// `None` once the client has ended, so receivers see the end.
    notifications: Mutex<Option<broadcast::Sender<Notification>>>,
    events: Mutex<Option<broadcast::Sender<ClientEvent>>>,
    /// The receiver made at construction, handed to the first `events()`
    /// call so it sees every event from the first `Connected` on.
    first_events: Mutex<Option<broadcast::Receiver<ClientEvent>>>,
    welcome: Mutex<Option<Welcome>>,
    token: Mutex<Option<Token>>,
    /// `Some(false)` once the server answered `starling:getToken` with
    /// `METHOD_NOT_FOUND`.
    recovery_available: Mutex<Option<bool>>,
    /// The name claimed with `helios:identify`, re-claimed on a fresh session.
    name: Mutex<Option<String>>,
    /// The credential from the last `refresh_auth`, for reconnections.
    auth_token: Mutex<Option<String>>,
    /// Reliable notifications we sent, waiting for `helios:ack`.
    acks: Mutex<HashMap<String, oneshot::Sender<()>>>,
    /// Reliable notifications we received (to drop copies).
    seen_acks: Mutex<SeenIds>,
    state: watch::Sender<LinkState>,
    room_capacity: usize,
    /// Streams to and from the server.
    pub(crate) streams: helios_protocol::Streams,
    /// How stream frames are sent (set once the command queue exists).
    pub(crate) stream_link: std::sync::OnceLock<Arc<dyn helios_protocol::StreamLink>>,
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
        let (events, first_events) = broadcast::channel(EVENT_CAPACITY);
        Arc::new(Self {
            pending: Mutex::new(HashMap::new()),
            rooms: Mutex::new(HashMap::new()),
            notifications: Mutex::new(Some(tx)),
            events: Mutex::new(Some(events)),
            first_events: Mutex::new(Some(first_events)),
            welcome: Mutex::new(None),
            token: Mutex::new(None),
            recovery_available: Mutex::new(None),
            name: Mutex::new(None),
            auth_token: Mutex::new(None),
            acks: Mutex::new(HashMap::new()),
            seen_acks: Mutex::new(SeenIds::new(SEEN_ACK_IDS)),
            state: watch::Sender::new(LinkState::Open),
            room_capacity: room_capacity.max(1),
            streams: helios_protocol::Streams::new(),
            stream_link: std::sync::OnceLock::new(),
        })
    }

    // ------------------------------------------------------------ pending

    /// Registers a request. `resend` is its frame when it is safe to send
    /// again after a reconnect.
    pub(crate) fn insert_pending(
        &self,
        id: RequestId,
        tx: oneshot::Sender<Outcome>,
        resend: Option<WsMessage>,
    ) {
        lock(&self.pending).insert(
            id,
            Pending {
                tx,
                resend,
                sent_on: None,
            },
        );
    }

    /// Notes that a request was written to connection `generation`.
    pub(crate) fn mark_sent(&self, id: &RequestId, generation: u64) {
        if let Some(p) = lock(&self.pending).get_mut(id) {
            p.sent_on = Some(generation);
        }
    }

    /// Removes a pending request; `Some` means it had not been answered yet.
    pub(crate) fn take_pending(&self, id: &RequestId) -> Option<oneshot::Sender<Outcome>> {
        lock(&self.pending).remove(id).map(|p| p.tx)
    }

    /// Whether a request is still waiting for its answer.
    pub(crate) fn is_pending(&self, id: &RequestId) -> bool {
        lock(&self.pending).contains_key(id)
    }

    /// Completes a pending request. Returns `false` when none had that id.
    pub(crate) fn complete(&self, id: &RequestId, outcome: Outcome) -> bool {
        // Out of `pending` first: a taker checking it after `answered` then
        // sees the request done and does not wait.
        let pending = self.take_pending(id);
        self.streams.answered(id);
        match pending {
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
        for (_, p) in drained {
            let _ = p.tx.send(Err(ClientError::Closed));
        }
    }

    /// The socket of connection `generation` was lost: requests written to
    /// it that are not safe to retry fail with `ConnectionLost`; the others
    /// stay pending, to be sent again by the next connection. Requests not
    /// written yet are still queued and unaffected.
    pub(crate) fn connection_lost(&self, generation: u64) {
        self.streams.fail_all();
        let gone: Vec<Pending> = {
            let mut pending = lock(&self.pending);
            let ids: Vec<RequestId> = pending
                .iter()
                .filter(|(_, p)| {
                    p.resend.is_none() && matches!(p.sent_on, Some(g) if g <= generation)
                })
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| pending.remove(id)).collect()
        };
        // Completing happens outside the lock.
        for p in gone {
            let _ = p.tx.send(Err(ClientError::ConnectionLost));
        }
    }

    /// The frames of retry-safe requests written to an earlier connection,
    /// now marked as written to `generation` (the caller writes them).
    pub(crate) fn take_resends(&self, generation: u64) -> Vec<(RequestId, WsMessage)> {
        let mut out = Vec::new();
        for (id, p) in lock(&self.pending).iter_mut() {
            if matches!(p.sent_on, Some(g) if g < generation) {
                if let Some(frame) = &p.resend {
                    out.push((id.clone(), frame.clone()));
                    p.sent_on = Some(generation);
                }
            }
        }
        out
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
    /// room of its topic. A room delivery at or before the room's last
    /// position in the same epoch is a duplicate (a replay overlapping what
    /// arrived before the cut) and is dropped.
    pub(crate) fn deliver(&self, n: Notification) {
        if let Some(topic) = n.topic.as_deref() {
            let mut rooms = lock(&self.rooms);
            if let Some(room) = rooms.get_mut(topic) {
                if let (Some(offset), Some(epoch)) = (n.offset, n.epoch.as_deref()) {
                    if let Some((last_epoch, last)) = &room.position {
                        if last_epoch == epoch && offset <= *last {
                            tracing::trace!(topic, offset, "duplicate room delivery dropped");
                            return;
                        }
                    }
                    room.position = Some((epoch.to_owned(), offset));
                }
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
        rooms.insert(
            topic.to_owned(),
            Room {
                tx,
                subscribers: 1,
                position: None,
            },
        );
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

    /// The rooms this client is subscribed to (what a fresh session re-joins).
    pub(crate) fn room_names(&self) -> Vec<String> {
        lock(&self.rooms).keys().cloned().collect()
    }

    /// `{"room": {"offset": n, "epoch": "e"}}` for every room with a
    /// delivery: the `since` of a recovery.
    pub(crate) fn positions(&self) -> Value {
        let rooms = lock(&self.rooms);
        let mut map = Map::new();
        for (topic, room) in rooms.iter() {
            if let Some((epoch, offset)) = &room.position {
                map.insert(topic.clone(), json!({ "offset": offset, "epoch": epoch }));
            }
        }
        Value::Object(map)
    }

    // ------------------------------------------------------------ session

    pub(crate) fn set_welcome(&self, w: Welcome) {
        *lock(&self.welcome) = Some(w);
    }

    pub(crate) fn welcome(&self) -> Option<Welcome> {
        lock(&self.welcome).clone()
    }

    pub(crate) fn set_token(&self, token: Option<Token>) {
        *lock(&self.token) = token;
    }

    /// The recovery token, when it has not expired.
    pub(crate) fn valid_token(&self) -> Option<String> {
        lock(&self.token)
            .as_ref()
            .filter(|t| t.expires > Instant::now())
            .map(|t| t.token.clone())
    }

    pub(crate) fn set_recovery_available(&self, yes: bool) {
        *lock(&self.recovery_available) = Some(yes);
    }

    pub(crate) fn recovery_available(&self) -> Option<bool> {
        *lock(&self.recovery_available)
    }

    pub(crate) fn set_name(&self, name: Option<String>) {
        *lock(&self.name) = name;
    }

    pub(crate) fn set_auth_token(&self, token: String) {
        *lock(&self.auth_token) = Some(token);
    }

    pub(crate) fn auth_token(&self) -> Option<String> {
        lock(&self.auth_token).clone()
    }

    pub(crate) fn name(&self) -> Option<String> {
        lock(&self.name).clone()
    }

    // ------------------------------------------------------------ reliable delivery

    pub(crate) fn expect_ack(&self, ack_id: String) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        lock(&self.acks).insert(ack_id, tx);
        rx
    }

    pub(crate) fn forget_ack(&self, ack_id: &str) {
        lock(&self.acks).remove(ack_id);
    }

    /// The server acknowledged one of our reliable notifications.
    pub(crate) fn acked(&self, ack_id: &str) {
        if let Some(tx) = lock(&self.acks).remove(ack_id) {
            let _ = tx.send(());
        }
    }

    /// `true` the first time a reliable notification's `ackId` is seen.
    pub(crate) fn first_time(&self, ack_id: &str) -> bool {
        lock(&self.seen_acks).first_time(ack_id)
    }

    // ------------------------------------------------------------ events

    pub(crate) fn emit(&self, event: ClientEvent) {
        tracing::debug!(?event, "client event");
        if let Some(tx) = lock(&self.events).as_ref() {
            let _ = tx.send(event);
        }
    }

    pub(crate) fn subscribe_events(&self) -> broadcast::Receiver<ClientEvent> {
        if let Some(first) = lock(&self.first_events).take() {
            return first;
        }
        match lock(&self.events).as_ref() {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(1);
                drop(tx);
                rx
            }
        }
    }

    // ------------------------------------------------------------ state

    pub(crate) fn state(&self) -> LinkState {
        self.state.borrow().clone()
    }

    pub(crate) fn watch_state(&self) -> watch::Receiver<LinkState> {
        self.state.subscribe()
    }

    /// Marks the link as closing unless it is closed already.
    pub(crate) fn set_closing(&self) {
        self.state.send_if_modified(|s| {
            if matches!(s, LinkState::Open | LinkState::Reconnecting) {
                *s = LinkState::Closing;
                true
            } else {
                false
            }
        });
    }

    /// Moves between `Open` and `Reconnecting`; never out of `Closing` or
    /// `Closed`.
    pub(crate) fn set_connected(&self, connected: bool) {
        let next = if connected {
            LinkState::Open
        } else {
            LinkState::Reconnecting
        };
        self.state.send_if_modified(|s| {
            if matches!(s, LinkState::Open | LinkState::Reconnecting) && *s != next {
                *s = next;
                true
            } else {
                false
            }
        });
    }

    /// Marks the client closed: fails pending requests and ends every
    /// notification, room and event receiver once it has drained (after a
    /// last [`ClientEvent::Closed`]).
    pub(crate) fn set_closed(&self, info: crate::CloseInfo) {
        self.state.send_replace(LinkState::Closed(info.clone()));
        self.fail_all_pending();
        self.streams.close();
        lock(&self.acks).clear();
        lock(&self.notifications).take();
        lock(&self.rooms).clear();
        self.emit(ClientEvent::Closed(info));
        lock(&self.events).take();
        lock(&self.first_events).take();
    }
}
