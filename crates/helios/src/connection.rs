//! The handle to one live connection: identity, data, and sends.
//!
//! A [`Connection`] is a cheap clone (`Arc`) that any task may hold. Sends go
//! into the connection's bounded outbound queue of already-encoded frames,
//! which its writer task drains (see `socket.rs`); room deliveries are
//! queued without waking it, for the cork's flusher to write (`cork.rs`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use helios_protocol::{
    CloseCode, Codec, Encoding, ErrorBody, ErrorCode, FrameType, Message, Notification, PeerRef,
    Request, RequestId, Response,
};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};

use crate::cork::CorkShard;
use crate::hibernate::{DirectSink, DirectWrite};
use crate::outbox::{Outbox, PushError, QueueAccess};

/// Topic of the notification that cancels an in-flight request, both ways.
pub const CANCEL_TOPIC: &str = helios_protocol::topic::CANCEL;
/// Topic of the notification that reports an error not tied to a request.
pub const ERROR_TOPIC: &str = helios_protocol::topic::ERROR;
/// Topic of the first notification after the upgrade.
pub const WELCOME_TOPIC: &str = helios_protocol::topic::WELCOME;

/// Why a send to a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closed or closing.
    #[error("connection closed")]
    Closed,
    /// The outbound queue is full; the connection is being closed as a slow
    /// consumer.
    #[error("connection's outbound queue is full (slow consumer)")]
    Full,
}

/// A handle to one live connection.
///
/// ```no_run
/// # async fn demo(conn: helios::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// conn.set("user", "ada");
/// conn.notify("news:flash", serde_json::json!({"text": "hello"})).await?;
/// let answer = conn.request("client:info", serde_json::json!({})).await?;
/// println!("{} says {answer}", conn.id());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    id: Arc<str>,
    encoding: Encoding,
    outbox: Outbox,
    request_timeout: Duration,
    /// Set when the connection must end: why it ends.
    close_code: OnceLock<CloseCode>,
    /// Wakes whoever waits for the close ([`Connection::closed`]).
    closing: Notify,
    /// The health clock ticked for this connection; its writer has not
    /// handled the tick yet.
    tick_due: AtomicBool,
    /// The cork's flusher wrote part of the queue and left a rest the
    /// socket did not take; the writer has not flushed it yet.
    flush_due: AtomicBool,
    /// The socket and the cork shard that writes room deliveries to it
    /// (`cork.rs`); set when the connection's task starts.
    corked: OnceLock<Corked>,
    /// Bytes in the outbound queue (queued, or taken by the writer and not
    /// yet handed to the socket), and the cap for room deliveries.
    queued_bytes: AtomicUsize,
    max_queued_bytes: usize,
    helios: crate::helios::WeakHelios,
    /// Set while a recovered session's replay is being sent.
    recovering: AtomicBool,
    pings_outstanding: AtomicU32,
    recoverable: AtomicBool,
    /// State most connections never use, allocated on first use: an idle
    /// connection should cost a pointer for it, not ~350 bytes of empty
    /// maps and locks.
    extras: Mutex<Option<Box<Extras>>>,
}

/// The rarely used part of a connection's state (see `Inner::extras`).
#[derive(Default)]
struct Extras {
    /// The application's data map.
    data: HashMap<String, Value>,
    /// Server→client requests waiting for their response.
    pending: HashMap<RequestId, oneshot::Sender<Response>>,
    /// Rooms this connection is a member of (to leave them all at close).
    rooms: HashSet<Arc<str>>,
    /// The peer name claimed with `helios:identify`.
    name: Option<Arc<str>>,
    /// Opaque per-connection token (WSBroker's `setToken`).
    token: Option<String>,
    /// The authenticated user id, when authentication is on.
    user: Option<String>,
    /// The credential's claims, room patterns and expiry, when authenticated.
    auth: Option<Arc<crate::auth::Auth>>,
    /// Room deliveries held back while a recovery replay is sent.
    recovery_buffer: Option<Vec<HeldDelivery>>,
    /// Server→client requests given up recently, whose late answers are
    /// accepted quietly.
    abandoned: VecDeque<RequestId>,
    /// Reliable notifications waiting for their `helios:ack`.
    acks: HashMap<String, oneshot::Sender<()>>,
    /// Streams to and from the client, once one is opened.
    streams: Option<helios_protocol::Streams>,
    /// The connection took over a dropped session (recovery).
    recovered: bool,
}

const ABANDONED_KEPT: usize = 32;

/// A room delivery held back during a recovery replay: room, offset, frame.
type HeldDelivery = (Arc<str>, u64, Bytes);

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.inner.id)
            .finish()
    }
}

impl Connection {
    pub(crate) fn new(id: Arc<str>, encoding: Encoding, helios: &crate::helios::Helios) -> Self {
        let config = helios.config();
        Self {
            inner: Arc::new(Inner {
                id,
                encoding,
                outbox: Outbox::new(config.outbound_queue_frames),
                request_timeout: config.request_timeout,
                close_code: OnceLock::new(),
                closing: Notify::new(),
                tick_due: AtomicBool::new(false),
                flush_due: AtomicBool::new(false),
                corked: OnceLock::new(),
                queued_bytes: AtomicUsize::new(0),
                max_queued_bytes: config.outbound_queue_bytes,
                helios: helios.downgrade(),
                recovering: AtomicBool::new(false),
                pings_outstanding: AtomicU32::new(0),
                recoverable: AtomicBool::new(false),
                extras: Mutex::new(None),
            }),
        }
    }

    /// Runs `f` on the rarely used state, allocating it on first use.
    fn extras<R>(&self, f: impl FnOnce(&mut Extras) -> R) -> R {
        f(self.inner.extras.lock().get_or_insert_with(Box::default))
    }

    /// Runs `f` on the rarely used state if it was ever allocated.
    fn existing_extras<R>(&self, f: impl FnOnce(&mut Extras) -> R) -> Option<R> {
        self.inner.extras.lock().as_deref_mut().map(f)
    }

    /// The server this connection belongs to (`None` once the server is
    /// gone), e.g. to broadcast from a hook that only gets the connection.
    pub fn helios(&self) -> Option<crate::helios::Helios> {
        self.inner.helios.upgrade()
    }

    // ------------------------------------------------------------ identity

    /// The peer name claimed with `helios:identify`, if any.
    pub fn name(&self) -> Option<String> {
        self.existing_extras(|e| e.name.as_deref().map(str::to_owned))
            .flatten()
    }

    pub(crate) fn set_name(&self, name: Option<Arc<str>>) -> Option<Arc<str>> {
        match name {
            Some(_) => self.extras(|e| std::mem::replace(&mut e.name, name)),
            None => self.existing_extras(|e| e.name.take()).flatten(),
        }
    }

    /// Sets the connection's opaque token (e.g. a session or API token
    /// resolved at login), visible to every handler.
    pub fn set_token(&self, token: impl Into<String>) {
        let token = token.into();
        self.extras(|e| e.token = Some(token));
    }

    /// The connection's token, if set.
    pub fn token(&self) -> Option<String> {
        self.existing_extras(|e| e.token.clone()).flatten()
    }

    /// The authenticated user id, if any.
    pub fn user_id(&self) -> Option<String> {
        self.existing_extras(|e| e.user.clone()).flatten()
    }

    /// Marks the connection as authenticated as `user`.
    pub fn set_user_id(&self, user: impl Into<String>) {
        let user = user.into();
        self.extras(|e| e.user = Some(user));
    }

    /// What authentication decided about this connection (claims, room
    /// patterns, expiry), if anything.
    pub fn auth(&self) -> Option<Arc<crate::auth::Auth>> {
        self.existing_extras(|e| e.auth.clone()).flatten()
    }

    /// Sets the connection's credential (and its user id, when it has one);
    /// `helios:refresh` calls it with the new one.
    pub fn set_auth(&self, auth: crate::auth::Auth) {
        if let Some(user) = auth.user_id() {
            self.set_user_id(user);
        }
        let auth = Arc::new(auth);
        self.extras(|e| e.auth = Some(auth));
    }

    // ------------------------------------------------------------ rooms

    /// The rooms this connection is a member of.
    pub fn rooms(&self) -> Vec<String> {
        self.existing_extras(|e| e.rooms.iter().map(|r| r.to_string()).collect())
            .unwrap_or_default()
    }

    pub(crate) fn add_room(&self, topic: &str) -> bool {
        self.extras(|e| e.rooms.insert(Arc::from(topic)))
    }

    pub(crate) fn remove_room(&self, topic: &str) -> bool {
        self.existing_extras(|e| e.rooms.remove(topic))
            .unwrap_or(false)
    }

    pub(crate) fn take_rooms(&self) -> Vec<Arc<str>> {
        self.existing_extras(|e| e.rooms.drain().collect())
            .unwrap_or_default()
    }

    /// Joins a room from the server side (no access rules apply).
    ///
    /// # Errors
    /// `FORBIDDEN` when the room is full, or a broker error.
    pub async fn subscribe(&self, topic: &str) -> Result<(), ErrorBody> {
        match self.helios() {
            Some(h) => h.join_room(self, topic, None).await,
            None => Err(ErrorBody::new(ErrorCode::SHUTTING_DOWN, "server is gone")),
        }
    }

    /// Leaves a room from the server side.
    pub async fn unsubscribe(&self, topic: &str) {
        if let Some(h) = self.helios() {
            h.leave_room(self, topic).await;
        }
    }

    /// The connection's `starlingId`.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub(crate) fn id_arc(&self) -> Arc<str> {
        self.inner.id.clone()
    }

    /// The encoding negotiated at the handshake.
    pub fn encoding(&self) -> Encoding {
        self.inner.encoding
    }

    /// Whether the connection is still open.
    pub fn is_open(&self) -> bool {
        self.inner.close_code.get().is_none()
    }

    /// Waits until the connection is closed.
    ///
    /// ```no_run
    /// # async fn demo(conn: helios::Connection) {
    /// tokio::spawn(async move {
    ///     conn.closed().await;
    ///     println!("{} left", conn.id());
    /// });
    /// # }
    /// ```
    pub async fn closed(&self) {
        loop {
            let notified = self.inner.closing.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a close in between wakes it.
            notified.as_mut().enable();
            if !self.is_open() {
                return;
            }
            notified.await;
        }
    }

    /// The health clock's tick for this connection (see `health.rs`):
    /// handled by its writer, which it wakes.
    pub(crate) fn tick(&self) {
        self.inner.tick_due.store(true, Ordering::Release);
        self.inner.outbox.wake();
    }

    /// Takes a tick that came since the last call.
    pub(crate) fn take_tick(&self) -> bool {
        self.inner.tick_due.swap(false, Ordering::AcqRel)
    }

    /// Lets the cork write room deliveries to the connection's socket.
    /// Weak: a `Connection` kept after the end does not keep it open.
    pub(crate) fn attach_socket(&self, socket: Weak<dyn DirectSink>, shard: Arc<CorkShard>) {
        let _ = self.inner.corked.set(Corked { socket, shard });
    }

    /// Wakes the writer to write what is queued (the cork's flusher could
    /// not).
    pub(crate) fn wake_writer(&self) {
        self.inner.outbox.wake();
    }

    /// Takes a request to flush what the cork left (see `flush_queued`).
    pub(crate) fn take_flush(&self) -> bool {
        self.inner.flush_due.load(Ordering::Relaxed)
            && self.inner.flush_due.swap(false, Ordering::AcqRel)
    }

    /// Writes the queue to the socket from the cork's flusher. What cannot
    /// be written at once is left to the writer, which is woken for it.
    pub(crate) fn flush_queued(&self) {
        let Some(corked) = self.inner.corked.get() else {
            return;
        };
        // Gone: the connection's task ended, and the frames with it.
        let Some(socket) = corked.socket.upgrade() else {
            return;
        };
        let text = self.inner.encoding.frame_type() == FrameType::Text;
        // Checked with the socket held: the close frame is written only
        // after the close code is set.
        let open = || self.is_open();
        let written = self.inner.outbox.write_queue(|frames| {
            socket.write_frames_now(frames, text, &open, &mut |f| self.dequeued(f.len()))
        });
        match written {
            QueueAccess::Empty | QueueAccess::Written(DirectWrite::Written) => {}
            QueueAccess::Written(DirectWrite::Kept) => {
                self.inner.flush_due.store(true, Ordering::Release);
                self.wake_writer();
            }
            QueueAccess::Drainer | QueueAccess::Written(DirectWrite::Refused) => {
                self.wake_writer();
            }
        }
    }

    // ------------------------------------------------------------ data map

    /// Stores a value in the connection's data map (kept across session
    /// recovery).
    pub fn set(&self, key: impl Into<String>, value: impl Serialize) {
        if let Ok(v) = serde_json::to_value(value) {
            let key = key.into();
            self.extras(|e| e.data.insert(key, v));
        }
    }

    /// Reads a value from the data map.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.existing_extras(|e| e.data.get(key).cloned()).flatten()
    }

    /// Reads a value from the data map as `T`.
    pub fn get_as<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.get(key).and_then(|v| serde_json::from_value(v).ok())
    }

    /// Removes a value from the data map.
    pub fn remove(&self, key: &str) -> Option<Value> {
        self.existing_extras(|e| e.data.remove(key)).flatten()
    }

    /// A copy of the whole data map.
    pub fn data(&self) -> HashMap<String, Value> {
        self.existing_extras(|e| e.data.clone()).unwrap_or_default()
    }

    // ------------------------------------------------------------ sending

    /// Encodes a message with this connection's encoding.
    pub(crate) fn encode(&self, msg: &Message) -> Option<Bytes> {
        match self.inner.encoding.encode(msg) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!(conn = %self.id(), error = %e, "cannot encode message");
                None
            }
        }
    }

    /// Queues an encoded frame, waiting while the queue is full.
    pub(crate) async fn send_frame(&self, frame: Bytes) -> Result<(), SendError> {
        if !self.is_open() {
            return Err(SendError::Closed);
        }
        // Counted before the send so the writer never subtracts first.
        let mut counted = CountedBytes::new(self, frame.len());
        if self.inner.outbox.push(frame).await.is_err() {
            return Err(SendError::Closed);
        }
        // Queued: the writer uncounts it once the socket takes it.
        counted.keep();
        Ok(())
    }

    /// The queue of frames the connection's writer drains.
    pub(crate) fn outbox(&self) -> &Outbox {
        &self.inner.outbox
    }

    /// The writer took `len` bytes off the queue.
    pub(crate) fn dequeued(&self, len: usize) {
        self.inner.queued_bytes.fetch_sub(len, Ordering::SeqCst);
        self.inner.outbox.room_made();
    }

    /// Waits until at most half the outbound byte cap is queued (or the
    /// connection closed). A recovery replay paces itself with it: the
    /// frames it queues count against the cap, and a live delivery that
    /// found the cap full would close the connection as a slow consumer.
    pub(crate) async fn wait_for_half_empty_queue(&self) {
        let half = self.inner.max_queued_bytes / 2;
        self.inner
            .outbox
            .wait_until(|| {
                !self.is_open() || self.inner.queued_bytes.load(Ordering::SeqCst) <= half
            })
            .await;
    }

    /// Queues a room delivery without waiting: the slow-consumer policy
    /// applies (a full queue, by frames or by bytes, closes with 4008).
    pub(crate) fn deliver(&self, topic: &str, offset: u64, frame: Bytes) -> Result<(), SendError> {
        if self.inner.recovering.load(Ordering::Acquire) {
            let mut extras = self.inner.extras.lock();
            // Re-checked under the lock: recovery may have just finished.
            if let Some(buffer) = extras.as_mut().and_then(|e| e.recovery_buffer.as_mut()) {
                buffer.push((Arc::from(topic), offset, frame));
                return Ok(());
            }
        }
        let queued = self.inner.queued_bytes.load(Ordering::Relaxed);
        if queued + frame.len() > self.inner.max_queued_bytes {
            tracing::warn!(conn = %self.id(), queued, "slow consumer: outbound bytes over the cap, closing");
            self.close(CloseCode::SlowConsumer);
            return Err(SendError::Full);
        }
        match self.inner.corked.get() {
            Some(corked) => self.queue_frame(frame, Some(&corked.shard)),
            None => self.try_send_frame(frame),
        }
    }

    /// Holds room deliveries back while a recovered session's missed
    /// messages are replayed, so the replay comes first.
    pub(crate) fn begin_recovery(&self) {
        self.extras(|e| e.recovery_buffer = Some(Vec::new()));
        self.inner.recovering.store(true, Ordering::Release);
    }

    /// Ends the replay: queues the held-back deliveries that the replay did
    /// not already contain (offset above the last replayed one).
    pub(crate) fn finish_recovery(&self, replayed: &HashMap<String, u64>) {
        // Under the lock, so no delivery is queued before the held ones.
        let mut guard = self.inner.extras.lock();
        let held = guard
            .as_mut()
            .and_then(|e| e.recovery_buffer.take())
            .unwrap_or_default();
        for (topic, offset, frame) in held {
            if replayed.get(&*topic).is_some_and(|last| offset <= *last) {
                continue;
            }
            if self.try_send_frame(frame).is_err() {
                break;
            }
        }
        // Only now: a delivery that sees the flag down is queued behind the
        // held ones; one that saw it up waits for this lock, then finds no
        // buffer and is queued behind them too.
        self.inner.recovering.store(false, Ordering::Release);
        drop(guard);
    }

    /// A recovery token was issued for this connection (or it is a
    /// recovered session): its session is kept when it closes.
    pub(crate) fn mark_recoverable(&self) {
        self.inner.recoverable.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_recoverable(&self) -> bool {
        self.inner.recoverable.load(Ordering::Relaxed)
    }

    /// Health checks: pings sent since the last pong.
    pub(crate) fn ping_sent(&self) -> u32 {
        self.inner.pings_outstanding.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn pings_outstanding(&self) -> u32 {
        self.inner.pings_outstanding.load(Ordering::Relaxed)
    }

    pub(crate) fn pong_received(&self) {
        self.inner.pings_outstanding.store(0, Ordering::Relaxed);
    }

    /// Queues an encoded frame without waiting. A full queue means the
    /// client does not keep up: the connection is closed with 4008.
    pub(crate) fn try_send_frame(&self, frame: Bytes) -> Result<(), SendError> {
        self.queue_frame(frame, None)
    }

    /// Queues a frame when the queue has room; `false` (the connection
    /// untouched) when it has not.
    pub(crate) fn offer_frame(&self, frame: Bytes) -> bool {
        if !self.is_open() {
            return false;
        }
        let len = frame.len();
        self.inner.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if self.inner.outbox.try_push(frame).is_ok() {
            true
        } else {
            self.dequeued(len);
            false
        }
    }

    /// Queues a frame without waiting; with a cork shard, quietly (the
    /// writer is not woken) and the shard writes it.
    fn queue_frame(&self, frame: Bytes, cork: Option<&CorkShard>) -> Result<(), SendError> {
        if !self.is_open() {
            return Err(SendError::Closed);
        }
        let len = frame.len();
        self.inner.queued_bytes.fetch_add(len, Ordering::Relaxed);
        let pushed = match cork {
            None => self.inner.outbox.try_push(frame),
            Some(shard) => self.inner.outbox.try_push_quiet(frame).map(|first| {
                // Not the first: the shard or the writer already has the
                // queue to write, and takes this frame with it.
                if first && !shard.add(self.clone()) {
                    self.wake_writer();
                }
            }),
        };
        match pushed {
            Ok(()) => Ok(()),
            Err(PushError::Full) => {
                self.dequeued(len);
                tracing::warn!(conn = %self.id(), "slow consumer: outbound queue full, closing");
                self.close(CloseCode::SlowConsumer);
                Err(SendError::Full)
            }
            Err(PushError::Closed) => {
                self.dequeued(len);
                Err(SendError::Closed)
            }
        }
    }

    pub(crate) async fn send_message(&self, msg: &Message) -> Result<(), SendError> {
        self.count_out(msg);
        match self.encode(msg) {
            Some(frame) => self.send_frame(frame).await,
            None => Ok(()),
        }
    }

    /// Counts an outgoing message (and its error code) in the metrics.
    fn count_out(&self, msg: &Message) {
        let Some(helios) = self.helios() else { return };
        let metrics = helios.metrics();
        match msg {
            Message::Request(_) => metrics.messages_out(crate::metrics::MessageKind::Request, 1),
            Message::Response(r) => {
                metrics.messages_out(crate::metrics::MessageKind::Response, 1);
                if let Err(e) = &r.result {
                    metrics.error(&e.code);
                }
            }
            Message::Notification(_) => {
                metrics.messages_out(crate::metrics::MessageKind::Notification, 1);
            }
        }
    }

    /// Sends a notification.
    ///
    /// # Errors
    /// [`SendError::Closed`] when the connection is gone.
    pub async fn notify(&self, topic: &str, data: Value) -> Result<(), SendError> {
        self.send_message(&Notification::new(Some(topic.to_owned()), data).into())
            .await
    }

    /// Sends a notification that says which peer it is from (relay).
    pub(crate) async fn notify_from(
        &self,
        topic: Option<String>,
        data: Value,
        from: PeerRef,
    ) -> Result<(), SendError> {
        let mut n = Notification::new(topic, data);
        n.peer = Some(from);
        self.send_message(&n.into()).await
    }

    /// Sends an error notification (topic `helios:error`) for a fault not
    /// tied to a readable request.
    pub(crate) async fn notify_error(&self, error: &ErrorBody, request_id: Option<&str>) {
        let mut data = json!({ "code": error.code.as_str(), "message": error.message });
        if let Some(id) = request_id {
            data["requestId"] = Value::String(id.to_owned());
        }
        let _ = self.notify(ERROR_TOPIC, data).await;
    }

    /// Calls a method on the client and waits for its answer, up to the
    /// server's request timeout.
    ///
    /// # Errors
    /// The client's error response unchanged, or `REQUEST_TIMEOUT`, or
    /// `CONNECTION_CLOSED` when the connection ends first.
    pub async fn request(&self, method: &str, payload: Value) -> Result<Value, ErrorBody> {
        self.request_with(method, payload, self.inner.request_timeout)
            .await
    }

    /// [`request`](Self::request) with its own timeout.
    ///
    /// # Errors
    /// As [`request`](Self::request).
    pub async fn request_with(
        &self,
        method: &str,
        payload: Value,
        timeout: Duration,
    ) -> Result<Value, ErrorBody> {
        let mut req = Request::new(method, payload);
        req.timeout_ms = Some(timeout.as_millis() as u64);
        self.send_request(req, timeout).await.into_result()
    }

    /// Sends a request and waits for the whole response (relay needs the
    /// response as is).
    pub(crate) async fn send_request(&self, req: Request, timeout: Duration) -> Response {
        self.send_request_retrying(req, timeout, None).await
    }

    /// Sends a request, resending the same bytes per `retry` until the
    /// answer comes or `timeout` passes.
    pub(crate) async fn send_request_retrying(
        &self,
        req: Request,
        timeout: Duration,
        retry: Option<crate::reliable::Retry>,
    ) -> Response {
        let id = req.id.clone();
        let Some(frame) = self.encode(&Message::Request(req)) else {
            return Response::error(id, ErrorCode::METHOD_ERROR, "cannot encode the request");
        };
        let (tx, mut rx) = oneshot::channel();
        self.extras(|e| e.pending.insert(id.clone(), tx));
        let mut guard = PendingGuard {
            conn: self,
            id: Some(id.clone()),
        };
        if self.send_frame(frame.clone()).await.is_err() {
            return closed_response(id);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut attempt = 0;
        loop {
            let resend_at = match retry {
                Some(r) if attempt + 1 < r.max_attempts => {
                    (tokio::time::Instant::now() + r.delay(attempt)).min(deadline)
                }
                _ => deadline,
            };
            match tokio::time::timeout_at(resend_at, &mut rx).await {
                Ok(Ok(resp)) => {
                    guard.id = None;
                    if retry.is_some() {
                        // Copies we resent may still be answered: accept
                        // those late answers quietly.
                        self.remember_abandoned(id);
                    }
                    return resp;
                }
                Ok(Err(_)) => {
                    guard.id = None;
                    return closed_response(id);
                }
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    drop(guard); // sends the cancel
                    return Response::error(
                        id,
                        ErrorCode::REQUEST_TIMEOUT,
                        format!("no response within {} ms", timeout.as_millis()),
                    );
                }
                Err(_) => {
                    attempt += 1;
                    if self.send_frame(frame.clone()).await.is_err() {
                        guard.id = None;
                        return closed_response(id);
                    }
                }
            }
        }
    }

    /// Remembers a request whose late answers are accepted quietly.
    fn remember_abandoned(&self, id: RequestId) {
        self.extras(|e| {
            if e.abandoned.len() == ABANDONED_KEPT {
                e.abandoned.pop_front();
            }
            e.abandoned.push_back(id);
        });
    }

    pub(crate) fn expect_ack(&self, ack_id: String, tx: oneshot::Sender<()>) {
        self.extras(|e| e.acks.insert(ack_id, tx));
    }

    pub(crate) fn forget_ack(&self, ack_id: &str) {
        self.existing_extras(|e| e.acks.remove(ack_id));
    }

    /// The client acknowledged a reliable notification.
    pub(crate) fn acked(&self, ack_id: &str) {
        if let Some(tx) = self.existing_extras(|e| e.acks.remove(ack_id)).flatten() {
            let _ = tx.send(());
        }
    }

    /// Delivers a response from the client to the waiting request; `false`
    /// when no request with that id is pending (a stray response).
    pub(crate) fn resolve(&self, resp: Response) -> bool {
        // A late answer to a request we gave up on (it crossed our cancel
        // on the wire) is expected, not an error.
        let waiter = self
            .existing_extras(|e| {
                e.pending
                    .remove(&resp.id)
                    .ok_or(e.abandoned.contains(&resp.id))
            })
            .unwrap_or(Err(false));
        match waiter {
            Ok(tx) => {
                let _ = tx.send(resp);
                true
            }
            Err(abandoned) => abandoned,
        }
    }

    /// Closes the connection with a close code. Frames already queued are
    /// still sent unless the reason is a slow consumer.
    pub fn close(&self, code: CloseCode) {
        if self.inner.close_code.set(code).is_ok() {
            self.inner.closing.notify_waiters();
            // The writer (or the dozing task) sees the close.
            self.inner.outbox.wake();
            // So does a replay waiting for room.
            self.inner.outbox.room_made();
        }
    }

    /// The code the server closed the connection with, for an
    /// `on_disconnect` hook (e.g. `SlowConsumer`, `PingTimeout`,
    /// `RateLimited`); `Normal` while it is open, and when the client
    /// closed it or the network dropped.
    pub fn close_code(&self) -> CloseCode {
        self.inner
            .close_code
            .get()
            .copied()
            .unwrap_or(CloseCode::Normal)
    }

    /// Whether this connection took over a dropped session (session
    /// recovery): its id, data, rooms and name are the old ones. Known from
    /// the `on_connect` hooks on.
    pub fn is_recovered(&self) -> bool {
        self.existing_extras(|e| e.recovered).unwrap_or(false)
    }

    pub(crate) fn mark_recovered(&self) {
        self.extras(|e| e.recovered = true);
    }

    /// The connection's stream table (made at the first stream).
    pub(crate) fn streams(&self) -> helios_protocol::Streams {
        self.extras(|e| e.streams.get_or_insert_with(Default::default).clone())
    }

    /// The stream table, if a stream was ever opened.
    pub(crate) fn existing_streams(&self) -> Option<helios_protocol::Streams> {
        self.existing_extras(|e| e.streams.clone()).flatten()
    }

    /// Fails every server→client request still waiting (the connection ended).
    pub(crate) fn fail_pending(&self) {
        self.existing_extras(|e| {
            e.pending.clear();
            e.acks.clear();
        });
    }
}

fn closed_response(id: RequestId) -> Response {
    Response::error(
        id,
        ErrorCode::from("CONNECTION_CLOSED"),
        "the connection closed before the response arrived",
    )
}

/// A connection's socket, as the cork sees it.
struct Corked {
    socket: Weak<dyn DirectSink>,
    shard: Arc<CorkShard>,
}

/// Bytes counted in `queued_bytes` for a frame on its way into the outbox:
/// uncounted again unless the frame was queued, also when the send is
/// given up while it waits for room (a handler's timeout, an abort).
/// Counted bytes never uncounted would shrink the connection's byte cap
/// for good.
struct CountedBytes<'a> {
    conn: &'a Connection,
    len: usize,
}

impl<'a> CountedBytes<'a> {
    fn new(conn: &'a Connection, len: usize) -> Self {
        conn.inner.queued_bytes.fetch_add(len, Ordering::Relaxed);
        Self { conn, len }
    }

    /// The frame was queued: its bytes stay counted.
    fn keep(&mut self) {
        self.len = 0;
    }
}

impl Drop for CountedBytes<'_> {
    fn drop(&mut self) {
        if self.len > 0 {
            self.conn.dequeued(self.len);
        }
    }
}

/// Removes a pending server→client request when its waiter gives up
/// (timeout or dropped future) and tells the client to cancel it.
struct PendingGuard<'a> {
    conn: &'a Connection,
    id: Option<RequestId>,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let was_pending = self
            .conn
            .existing_extras(|e| e.pending.remove(&id).is_some())
            .unwrap_or(false);
        if was_pending {
            self.conn.remember_abandoned(id.clone());
            let cancel = Notification::new(
                Some(CANCEL_TOPIC.to_owned()),
                json!({ "requestId": id.as_str() }),
            );
            if let Some(frame) = self.conn.encode(&cancel.into()) {
                let _ = self.conn.try_send_frame(frame);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helios::Helios;

    fn connection(config: crate::Config) -> (Helios, Connection) {
        let helios = Helios::builder().config(config).build();
        let conn = Connection::new(Arc::from("c"), Encoding::Json, &helios);
        (helios, conn)
    }

    /// The offsets of the frames queued, in queue order.
    fn queued_offsets(conn: &Connection) -> Vec<u64> {
        let mut out = VecDeque::new();
        conn.outbox().take(&mut out, usize::MAX);
        out.iter()
            .map(|f| {
                std::str::from_utf8(f)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .expect("an offset")
            })
            .collect()
    }

    #[tokio::test]
    async fn a_send_given_up_while_waiting_for_room_is_not_counted() {
        let (_helios, conn) = connection(crate::Config {
            outbound_queue_frames: 1,
            ..Default::default()
        });
        conn.send_frame(Bytes::from_static(b"first"))
            .await
            .expect("queued");
        let waiting = tokio::time::timeout(
            Duration::from_millis(20),
            conn.send_frame(Bytes::from_static(b"second")),
        )
        .await;
        assert!(waiting.is_err(), "waits while the queue is full");
        assert_eq!(
            conn.inner.queued_bytes.load(Ordering::SeqCst),
            5,
            "only the queued frame counts"
        );
    }

    /// Live deliveries racing the end of a replay (another thread, as on
    /// the multi-thread runtime) are queued behind the held ones.
    #[test]
    fn deliveries_at_the_end_of_a_replay_follow_the_held_ones() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let _entered = runtime.enter();
        for _ in 0..200 {
            let (_helios, conn) = connection(crate::Config::default());
            conn.begin_recovery();
            for offset in 1..=300u64 {
                conn.deliver("r", offset, Bytes::from(offset.to_string()))
                    .expect("held");
            }
            let live = {
                let conn = conn.clone();
                std::thread::spawn(move || {
                    for offset in 301..=600u64 {
                        conn.deliver("r", offset, Bytes::from(offset.to_string()))
                            .expect("delivered");
                    }
                })
            };
            conn.finish_recovery(&HashMap::new());
            live.join().expect("live deliveries");
            let offsets = queued_offsets(&conn);
            assert_eq!(offsets.len(), 600);
            assert!(
                offsets.windows(2).all(|w| w[0] < w[1]),
                "in offset order: {:?}",
                offsets.windows(2).find(|w| w[0] >= w[1])
            );
        }
    }
}
