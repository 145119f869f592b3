//! Drives one WebSocket: a reader that decodes, routes and spawns handlers,
//! and a writer that drains the connection's bounded queue of encoded frames.
//!
//! One way through for a message: socket → decode → route → handler task →
//! (back in the reader) encode → outbound queue → writer → socket. Handlers
//! run as tasks in a per-connection `JoinSet`, so a slow handler never holds
//! up the next request; their results come back to the reader, which alone
//! decides what is answered. That is what makes cancellation race-free: a
//! cancelled request is removed before its handler's result could be sent.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use helios_protocol::{
    CloseCode, Codec, DecodeError, ErrorBody, ErrorCode, FrameType, Message, Notification, Request,
    RequestId, Response, ShortStr, StreamFrame, now_ms,
};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::{AbortHandle, JoinSet};
use tokio_websockets::Message as WsMessage;

use crate::connection::{CANCEL_TOPIC, Connection, WELCOME_TOPIC};
use crate::context::{Context, Meta};
use crate::handler::Outcome;
use crate::health::{HealthEvent, HealthEventKind, ping_payload, pong_latency};
use crate::helios::Helios;
use crate::hibernate::{DirectSink, HibernatingSocket, SocketReader, SocketWriter};
use crate::metrics::MessageKind;
use crate::ratelimit::{TokenBucket, Verdict};
use crate::reliable::{ACK_TOPIC, SeenIds, ack_for};
use crate::session::{NotRecovered, RecoverRequest, Recovered};
use crate::woken::{Registered, Woken};

/// A session to restore: whether the token was accepted, and what the
/// client asked for.
pub(crate) type Recovery = (Result<Recovered, NotRecovered>, RecoverRequest);

/// What a finished handler task hands back to the reader.
enum Done {
    Reply(RequestId, Outcome),
    Event,
}

/// The reader side of one connection.
struct Reader {
    helios: Helios,
    conn: Connection,
    inflight: InFlight,
    rate: Option<Box<TokenBucket>>,
    history: Option<Box<PeerHistory>>,
}

/// What the reader remembers about the peer, allocated the first time it
/// has something to remember (most connections never do).
struct PeerHistory {
    /// Start of the current minute and the invalid messages in it.
    invalid_window: (Instant, u32),
    /// `ackId`s of reliable notifications already handled.
    seen_acks: SeenIds,
    /// Whether the client opened a stream: only then does a finished
    /// request have streams to let go of.
    opened_streams: bool,
}

impl Default for PeerHistory {
    fn default() -> Self {
        Self {
            invalid_window: (Instant::now(), 0),
            seen_acks: SeenIds::new(1024),
            opened_streams: false,
        }
    }
}

/// The handlers running as tasks of one connection, with each request's
/// abort handle. Allocated while any runs: a `JoinSet` allocates when it is
/// created, and an idle connection should not carry one.
#[derive(Default)]
struct InFlight(Option<Box<Tasks>>);

struct Tasks {
    set: JoinSet<Done>,
    aborts: HashMap<RequestId, AbortHandle>,
}

impl InFlight {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |t| t.set.len())
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn join_next(&mut self) -> Option<Result<Done, tokio::task::JoinError>> {
        match self.0.as_mut() {
            Some(t) => t.set.join_next().await,
            None => None,
        }
    }

    fn tasks(&mut self) -> &mut Tasks {
        self.0.get_or_insert_with(|| {
            Box::new(Tasks {
                set: JoinSet::new(),
                aborts: HashMap::new(),
            })
        })
    }

    fn spawn(&mut self, task: impl Future<Output = Done> + Send + 'static) {
        self.tasks().set.spawn(task);
    }

    /// Runs a request's handler; its abort handle is kept under its id.
    fn spawn_request(&mut self, id: RequestId, task: impl Future<Output = Done> + Send + 'static) {
        let tasks = self.tasks();
        let handle = tasks.set.spawn(task);
        tasks.aborts.insert(id, handle);
    }

    fn has_request(&self, id: &RequestId) -> bool {
        self.0.as_ref().is_some_and(|t| t.aborts.contains_key(id))
    }

    /// Forgets a request; its abort handle if it was still running.
    fn take_request(&mut self, id: &RequestId) -> Option<AbortHandle> {
        self.0.as_mut().and_then(|t| t.aborts.remove(id))
    }

    fn request_ids(&self) -> Vec<RequestId> {
        self.0
            .as_ref()
            .map(|t| t.aborts.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn abort_all(&mut self) {
        if let Some(t) = self.0.as_mut() {
            t.set.abort_all();
        }
    }

    /// Gives the memory back when nothing runs (the connection dozes).
    fn release(&mut self) {
        if self
            .0
            .as_ref()
            .is_some_and(|t| t.set.is_empty() && t.aborts.is_empty())
        {
            self.0 = None;
        }
    }
}

/// Runs a connection to its end.
///
/// A connection alternates between two phases. *Active*: the reader and the
/// writer run as two futures of this one task, sharing one
/// [`HibernatingSocket`] (no second task, no split halves); their futures
/// are boxed and exist only in this phase. *Dozing*: the socket sleeps (no
/// WebSocket buffers), nothing is queued and no handler runs, so their
/// futures are dropped and the task waits on a few small futures for the
/// peer, a queued frame, the health-check tick, a close or the shutdown. An
/// idle connection thus costs its task's small dozing state, not the reader's
/// and writer's working state. The opening (welcome, recovery) and the
/// teardown are boxed too: they run once.
pub(crate) async fn drive<S>(
    helios: Helios,
    io: S,
    conn: Connection,
    recovery: Option<Box<Recovery>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let socket = Arc::new(HibernatingSocket::new(
        io,
        helios.config().max_message_bytes,
    ));
    let direct: Weak<dyn DirectSink> = Arc::downgrade(&socket) as Weak<_>;
    conn.attach_socket(direct, helios.cork().shard());
    let mut reader = Reader {
        helios: helios.clone(),
        conn: conn.clone(),
        inflight: InFlight::default(),
        rate: helios
            .config()
            .rate_limit
            .map(|l| Box::new(TokenBucket::new(l))),
        history: None,
    };
    let mut writer = Writer::new(&helios, &conn);
    let mut opening: Option<Opening> = Some(Box::pin(open(helios.clone(), conn.clone(), recovery)));
    let mut connect_hooks = None;
    loop {
        let phase = Box::pin(active(
            &socket,
            &mut reader,
            &mut writer,
            &mut opening,
            &mut connect_hooks,
        ))
        .await;
        if phase == Phase::Ended {
            break;
        }
        reader.inflight.release();
        // After a dozing phase that did not end the connection, it is
        // active again.
        if doze(&socket, &conn).await == Phase::Ended {
            break;
        }
    }
    Box::pin(leave(&helios, &conn, &mut reader)).await;
    Box::pin(writer.finish(&mut socket.writer(), &conn)).await;
    Box::pin(finish(helios, conn, connect_hooks)).await;
}

/// The welcome and the recovery replay, sent once at the start.
type Opening = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Connect hooks run beside the reader, not before it: a hook may call the
/// client (`conn.request`), whose answer the reader must be free to read.
fn connect_hooks_task(helios: &Helios, conn: &Connection) -> Option<tokio::task::JoinHandle<()>> {
    helios.has_connect_hooks().then(|| {
        let (helios, conn) = (helios.clone(), conn.clone());
        tokio::spawn(async move { helios.run_connect_hooks(&conn).await })
    })
}

/// The dozing phase: the socket sleeps, nothing is queued, no handler
/// runs. Waits for the peer, or for the outbox's wake-up, which comes with a
/// queued frame, a close, a health-check tick or the shutdown (the active
/// phase then sees which). Two waiters, so the dozing state stays small.
async fn doze<S>(socket: &HibernatingSocket<S>, conn: &Connection) -> Phase
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        biased;
        () = conn.outbox().woken() => {}
        () = std::future::poll_fn(|cx| socket.poll_readable(cx)) => {}
    }
    if conn.is_open() {
        Phase::Idle
    } else {
        Phase::Ended
    }
}

/// How a phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing to do until the peer or the server has something.
    Idle,
    /// The connection is over.
    Ended,
}

/// The active phase: the opening (first time), then reading and writing,
/// until the connection ends or falls idle.
async fn active<S>(
    socket: &HibernatingSocket<S>,
    reader: &mut Reader,
    writer: &mut Writer,
    opening: &mut Option<Opening>,
    connect_hooks: &mut Option<tokio::task::JoinHandle<()>>,
) -> Phase
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (helios, conn) = (reader.helios.clone(), reader.conn.clone());
    let quiet = AtomicBool::new(false);
    let reading = async {
        if let Some(opening) = opening.as_mut() {
            opening.await;
            *connect_hooks = connect_hooks_task(&helios, &conn);
        }
        *opening = None;
        reader.run(socket.reader(), &quiet).await;
    };
    let writing = async {
        writer.run(&mut socket.writer(), &conn).await;
        // The reader ends too (it sees the close) and ends the phase.
        std::future::pending::<()>().await;
    };
    let idle = std::future::poll_fn(|_| {
        // Polled after the reader and the writer, in the same wake: their
        // state is current. Asleep means the reader waits for the peer and
        // the writer has nothing in hand.
        let idle = quiet.load(Ordering::Relaxed)
            && socket.is_asleep()
            && conn.outbox().is_empty()
            && conn.is_open()
            && !helios.is_shutting_down();
        if idle {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    });
    // The reader is polled when its own waker fired, or when it may be
    // waiting on something the writer registered (see
    // `HibernatingSocket::reader_hint`).
    let reading = std::pin::pin!(reading);
    let mut reading = Woken::new(reading);
    let reading = std::future::poll_fn(|cx| reading.poll_if_woken(cx, socket.reader_hint()));
    tokio::select! {
        biased;
        () = reading => Phase::Ended,
        () = writing => Phase::Ended,
        () = idle => Phase::Idle,
    }
}
/// Registers the connection, restores a recovered session, sends the
/// welcome and then the replay.
async fn open(helios: Helios, conn: Connection, recovery: Option<Box<Recovery>>) {
    let (helios, conn) = (&helios, &conn);
    helios.registry().insert(conn.clone());
    helios.health_clock().start(helios);
    helios.cluster_register(conn).await;
    let mut welcome =
        json!({ "starlingId": conn.id(), "recovered": false, "serverTime": now_ms() });
    let mut replay = None;
    match recovery.map(|r| *r) {
        Some((Ok(recovered), req)) => {
            let (missed, messages, last) = helios
                .restore_session(conn, recovered.snapshot, &req.since)
                .await;
            welcome["recovered"] = json!(true);
            welcome["missed"] = json!(!missed.is_empty());
            welcome["missedRooms"] = json!(missed);
            welcome["rooms"] = json!(conn.rooms());
            replay = Some((messages, last));
        }
        Some((Err(reason), _)) => welcome["reason"] = json!(reason.as_str()),
        None => {}
    }
    let welcome = Notification::new(Some(WELCOME_TOPIC.to_owned()), welcome);
    let _ = conn.send_message(&welcome.into()).await;
    if let Some((messages, last)) = replay {
        // Missed room messages first, in order, then what arrived meanwhile.
        for m in &messages {
            conn.wait_for_half_empty_queue().await;
            if conn.send_message(m).await.is_err() {
                break;
            }
        }
        conn.finish_recovery(&last);
    }
}

/// Keeps the session for recovery (while the connection still holds it, so
/// a reconnect in between is told it is held), leaves the registry and every
/// room, releases the name, stops handlers, fails waiting requests, and
/// closes the connection, which ends the writer.
async fn leave(helios: &Helios, conn: &Connection, reader: &mut Reader) {
    helios.save_session(conn).await;
    helios.registry().remove(conn.id());
    helios.cluster_unregister(conn).await;
    helios.leave_all_rooms(conn).await;
    if let Some(name) = conn.set_name(None) {
        helios.release_name(&name, conn.id()).await;
    }
    reader.inflight.abort_all();
    conn.fail_pending();
    if let Some(streams) = conn.existing_streams() {
        streams.close();
    }
    conn.close(CloseCode::Normal); // no-op when a code is already set
}

/// After the socket is done: runs the disconnect hooks, once the connect
/// hooks are (a hook still waiting on the client now sees
/// CONNECTION_CLOSED and ends).
async fn finish(
    helios: Helios,
    conn: Connection,
    connect_hooks: Option<tokio::task::JoinHandle<()>>,
) {
    if let Some(hooks) = connect_hooks {
        let _ = tokio::time::timeout(helios.config().request_timeout, hooks).await;
    }
    helios.run_disconnect_hooks(&conn).await;
}

impl Reader {
    /// Reads and answers until the connection ends. `quiet` tells the
    /// connection's phase logic whether the reader has nothing in hand: it
    /// waits for the peer only, no handler runs, it is not draining.
    async fn run<S>(&mut self, mut stream: SocketReader<'_, S>, quiet: &AtomicBool)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let cap = self.helios.config().max_inflight_per_connection;
        let shutdown = self.helios.shutdown_token().clone();
        let conn = self.conn.clone();
        let mut drain_deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        // Made once, not per frame: each registers a waiter (a lock and a
        // list insert, then a removal) when first polled, and is polled
        // again only if the waker changed; the flags are read at each poll.
        let closed = std::pin::pin!(conn.closed());
        let mut closed = Registered::new(closed);
        let shutting_down = std::pin::pin!(shutdown.cancelled());
        let mut shutting_down = Registered::new(shutting_down);
        let helios = self.helios.clone();
        loop {
            let draining = drain_deadline.is_some();
            if draining && self.inflight.is_empty() {
                self.conn.close(CloseCode::GoingAway);
                return;
            }
            quiet.store(!draining && self.inflight.is_empty(), Ordering::Relaxed);
            tokio::select! {
                biased;
                Some(done) = self.inflight.join_next(), if !self.inflight.is_empty() => {
                    quiet.store(false, Ordering::Relaxed);
                    if let Ok(Done::Reply(id, reply)) = done {
                        Box::pin(self.answer(id, reply)).await;
                    }
                }
                () = std::future::poll_fn(|cx| closed.poll_until(cx, !conn.is_open())) => return,
                () = std::future::poll_fn(|cx| shutting_down.poll_until(cx, helios.is_shutting_down())), if !draining => {
                    let grace = self.helios.config().shutdown_grace;
                    drain_deadline = Some(Box::pin(tokio::time::sleep(grace)));
                }
                _ = sleep_until(&mut drain_deadline), if draining => {
                    Box::pin(self.give_up_in_flight()).await;
                    return;
                }
                // Read while draining too: new requests are answered
                // SHUTTING_DOWN, but the running ones still get their
                // stream frames and the answers to their own calls.
                frame = stream.next(), if self.inflight.len() < cap => {
                    quiet.store(false, Ordering::Relaxed);
                    match frame {
                        None => return,
                        // In line, not boxed: a box per frame would cost an
                        // allocation and a copy of the frame's state (~1.6 KB)
                        // per request. That state lives in the active phase's
                        // box instead (`size_of_val` of the `active` future:
                        // 2.6 KB with it, 1.0 KB without), which a dozing
                        // connection drops: idle connections do not pay for
                        // it; a connection waiting on a handler does.
                        Some(Ok(msg)) => self.on_frame(msg).await,
                        Some(Err(e)) => {
                            tracing::debug!(conn = %self.conn.id(), error = %e, "websocket error");
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The grace period is over: answer what still runs `SHUTTING_DOWN`.
    async fn give_up_in_flight(&mut self) {
        let ids = self.inflight.request_ids();
        for id in ids {
            self.cancel(
                &id,
                ErrorCode::SHUTTING_DOWN,
                "server shut down before the request finished",
            )
            .await;
        }
        self.inflight.abort_all();
        self.conn.close(CloseCode::GoingAway);
    }

    async fn on_frame(&mut self, msg: WsMessage) {
        let kind = if msg.is_text() {
            FrameType::Text
        } else if msg.is_binary() {
            FrameType::Binary
        } else {
            if msg.is_pong() {
                self.conn.pong_received();
                if let Some(latency) = pong_latency(msg.as_payload()) {
                    self.helios.emit_health(HealthEvent {
                        connection: self.conn.clone(),
                        kind: HealthEventKind::PongReceived { latency },
                    });
                }
            }
            return; // pings and closes are answered by the WebSocket layer
        };
        let encoding = self.conn.encoding();
        if kind != encoding.frame_type() {
            let what = match kind {
                FrameType::Text => "text frames are not accepted with the MessagePack encoding",
                FrameType::Binary => {
                    "binary frames are not accepted with the JSON encoding; negotiate helios-starling.v1.msgpack to send MessagePack"
                }
            };
            self.invalid(
                ErrorBody::new(ErrorCode::INVALID_MESSAGE_FORMAT, what),
                None,
            )
            .await;
            return;
        }
        let mode = self.helios.config().parse_mode;
        let decoded = match msg.as_text() {
            // Text frames were UTF-8-checked by the WebSocket layer already.
            Some(text) => encoding.decode_text(text, mode),
            None => encoding.decode(msg.as_payload(), mode),
        };
        self.helios.metrics().message_in(match &decoded {
            Ok(Message::Request(_)) => MessageKind::Request,
            Ok(Message::Response(_)) => MessageKind::Response,
            Ok(Message::Notification(_)) => MessageKind::Notification,
            Err(_) => MessageKind::Invalid,
        });
        // Stream frames are bounded by their flow control instead: a chunk
        // refused here would be a hole in the middle of a file.
        if self.rate.is_some()
            && !matches!(decoded, Ok(Message::Response(_)))
            && !is_stream_frame(&decoded)
            && !Box::pin(self.within_rate(&decoded)).await
        {
            return;
        }
        // Only a request is handled in this future; the others, rarer and
        // with large futures of their own, are boxed, which keeps the
        // frame's part of the reader's state to the request path (~1.6 KB).
        match decoded {
            Ok(Message::Request(req)) => self.on_request(req).await,
            Ok(Message::Response(resp)) => Box::pin(self.on_response(resp)).await,
            Ok(Message::Notification(n)) => Box::pin(self.on_notification(n)).await,
            Err(e) => Box::pin(self.on_decode_error(e)).await,
        }
    }

    /// The rate limit: `false` when the message is refused (answered
    /// `RATE_LIMITED`) or the connection is being closed for abuse (4029).
    async fn within_rate(&mut self, decoded: &Result<Message, DecodeError>) -> bool {
        let Some(bucket) = self.rate.as_mut() else {
            return true;
        };
        match bucket.check() {
            Verdict::Allow => true,
            Verdict::Refuse => {
                self.helios.metrics().rate_limited();
                let body = ErrorBody::new(
                    ErrorCode::RATE_LIMITED,
                    "message rate limit exceeded; slow down",
                );
                match decoded {
                    Ok(Message::Request(req)) => {
                        let resp = Response::err(req.id.clone(), body);
                        let _ = self.conn.send_message(&resp.into()).await;
                    }
                    _ => self.conn.notify_error(&body, None).await,
                }
                false
            }
            Verdict::Close => {
                self.helios.metrics().rate_limited();
                tracing::info!(conn = %self.conn.id(), "rate limit exceeded repeatedly, closing");
                self.conn.close(CloseCode::RateLimited);
                false
            }
        }
    }

    async fn on_decode_error(&mut self, e: DecodeError) {
        let body = e.to_error_body();
        self.invalid(body, e.request_id).await;
    }

    /// Answers an invalid message: with an error response when its
    /// `requestId` is known, else with a `helios:error` notification. Too many
    /// in a minute close the connection (1008).
    async fn invalid(&mut self, body: ErrorBody, request_id: Option<String>) {
        match request_id {
            Some(id) => {
                let resp = Response::err(RequestId::from(id), body);
                let _ = self.conn.send_message(&resp.into()).await;
            }
            None => self.conn.notify_error(&body, None).await,
        }
        let (start, count) = &mut self.history.get_or_insert_with(Box::default).invalid_window;
        if start.elapsed() > Duration::from_secs(60) {
            *start = Instant::now();
            *count = 0;
        }
        *count += 1;
        if *count > self.helios.config().max_invalid_per_minute {
            tracing::info!(conn = %self.conn.id(), "too many invalid messages, closing");
            self.conn.close(CloseCode::PolicyViolation);
        }
    }

    async fn on_request(&mut self, req: Request) {
        if self.inflight.has_request(&req.id) {
            let body = ErrorBody::new(
                ErrorCode::INVALID_MESSAGE_FORMAT,
                "a request with this requestId is already in flight",
            );
            Box::pin(self.invalid(body, Some(req.id.to_string()))).await;
            return;
        }
        if self.helios.is_shutting_down() {
            let resp = Response::error(req.id, ErrorCode::SHUTTING_DOWN, "server is shutting down");
            let _ = Box::pin(self.conn.send_message(&resp.into())).await;
            return;
        }
        if let Some(target) = req.peer.clone() {
            let timeout = req
                .timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(self.helios.config().request_timeout)
                .min(self.helios.config().request_timeout);
            let id = req.id.clone();
            let fut = self
                .helios
                .relay_request(self.conn.clone(), req, target, timeout);
            self.spawn_call(id, timeout, Box::pin(fut));
            return;
        }
        let router = self.helios.routes();
        let (next, route_timeout, inline) = match router.method(&req.method) {
            Some(route) => (route.next(), route.timeout, route.inline),
            None => match router.resolve_unlisted(&req.method) {
                Some(found) => found,
                None => {
                    let resp = Response::error(
                        req.id,
                        ErrorCode::METHOD_NOT_FOUND,
                        format!("no method {:?}", req.method),
                    );
                    let _ = Box::pin(self.conn.send_message(&resp.into())).await;
                    return;
                }
            },
        };
        let mut timeout = route_timeout.unwrap_or(self.helios.config().request_timeout);
        if let Some(ms) = req.timeout_ms {
            timeout = timeout.min(Duration::from_millis(ms));
        }
        let id = req.id.clone();
        let ctx = Context {
            payload: req.payload.unwrap_or_default(),
            meta: Meta {
                connection: self.conn.clone(),
                helios: self.helios.clone(),
                name: req.method,
                request_id: Some(req.id),
                peer: req.peer,
                timestamp: req.timestamp,
                in_reader: inline,
            },
        };
        if inline {
            // Ordered methods (publish, subscribe, ...) run here, one at a
            // time, so a connection's publications keep their order.
            let reply = run_bounded(next.run_payload(ctx), timeout, &self.helios).await;
            let resp = match reply {
                Ok(data) => Response::ok(id, data),
                Err(e) => Response::err(id, e.into_body()),
            };
            let _ = self.conn.send_message(&resp.into()).await;
            return;
        }
        self.spawn_call(id, timeout, Box::pin(next.run_payload(ctx)));
    }

    /// Runs a call as a task of this connection, bounded by `timeout`; a
    /// panic becomes `METHOD_ERROR`.
    fn spawn_call(
        &mut self,
        id: RequestId,
        timeout: Duration,
        call: futures_util::future::BoxFuture<'static, Outcome>,
    ) {
        let task_id = id.clone();
        let helios = self.helios.clone();
        self.inflight.spawn_request(id, async move {
            Done::Reply(task_id, run_bounded(call, timeout, &helios).await)
        });
    }

    /// Sends a finished handler's answer, unless the request was cancelled.
    async fn answer(&mut self, id: RequestId, reply: Outcome) {
        if self.inflight.take_request(&id).is_none() {
            return; // cancelled: already answered REQUEST_CANCELLED
        }
        self.request_done(&id);
        let resp = match reply {
            Ok(data) => Response::ok(id, data),
            Err(e) => Response::err(id, e.into_body()),
        };
        let _ = self.conn.send_message(&resp.into()).await;
    }

    /// Drops a running handler and answers its request with `code`.
    async fn cancel(&mut self, id: &RequestId, code: ErrorCode, message: &str) -> bool {
        match self.inflight.take_request(id) {
            Some(handle) => {
                handle.abort();
                self.request_done(id);
                let resp = Response::error(id.clone(), code, message);
                let _ = self.conn.send_message(&resp.into()).await;
                true
            }
            None => false,
        }
    }

    /// Streams the client opened for a finished request and nobody took
    /// are stopped.
    fn request_done(&self, id: &RequestId) {
        if self.history.as_ref().is_some_and(|h| h.opened_streams)
            && let Some(streams) = self.conn.existing_streams()
        {
            streams.request_done(id);
        }
    }

    /// A `stream:*` frame: into the connection's stream table, which may
    /// answer (`stream:stop`).
    async fn on_stream_frame(&mut self, topic: &str, data: &Value) {
        let frame = match StreamFrame::parse(topic, data) {
            Ok(frame) => frame,
            Err(message) => {
                // A stream that lost a frame is broken: it ends here, for
                // both sides, rather than going on with a hole.
                if let Some(id) = data.get("streamId").and_then(Value::as_str)
                    && let Some(streams) = self.conn.existing_streams()
                    && let Some(stop) = streams.fail_incoming(id, &message)
                {
                    self.conn.stream_link().send(stop).await;
                }
                let body = ErrorBody::new(ErrorCode::INVALID_MESSAGE_FORMAT, message);
                self.invalid(body, None).await;
                return;
            }
        };
        if matches!(frame, StreamFrame::Open { .. }) {
            self.history.get_or_insert_with(Box::default).opened_streams = true;
        }
        let link = self.conn.stream_link();
        let inflight = &self.inflight;
        let reply = self.conn.streams().on_frame(frame, &link, |id| {
            inflight.has_request(&RequestId::from(id))
        });
        if let Some(reply) = reply {
            link.send(reply).await;
        }
    }

    async fn on_response(&mut self, resp: Response) {
        let id = resp.id.to_string();
        if !self.conn.resolve(resp) {
            let body = ErrorBody::new(
                ErrorCode::INVALID_MESSAGE_FORMAT,
                "response to an unknown requestId (no such request is pending)",
            );
            self.conn.notify_error(&body, Some(&id)).await;
        }
    }

    async fn on_notification(&mut self, n: Notification) {
        let topic = n.topic.clone().unwrap_or_default();
        if topic == ACK_TOPIC {
            if let Some(id) = n.data.get("ackId").and_then(Value::as_str) {
                self.conn.acked(id);
            }
            return;
        }
        if let Some(ack_id) = &n.ack_id {
            // Reliable: acknowledge every copy, handle only the first.
            let _ = self.conn.send_message(&ack_for(ack_id).into()).await;
            let history = self.history.get_or_insert_with(Box::default);
            if !history.seen_acks.first_time(ack_id) {
                return;
            }
        }
        if StreamFrame::is_stream_topic(&topic) {
            self.on_stream_frame(&topic, &n.data).await;
            return;
        }
        if topic == CANCEL_TOPIC {
            let Some(id) = n.data.get("requestId").and_then(Value::as_str) else {
                let body = ErrorBody::new(
                    ErrorCode::INVALID_MESSAGE_FORMAT,
                    "helios:cancel needs data.requestId",
                );
                self.invalid(body, None).await;
                return;
            };
            // Unknown ids are fine: the request may have just finished.
            self.cancel(
                &RequestId::from(id),
                ErrorCode::REQUEST_CANCELLED,
                "request cancelled by the caller",
            )
            .await;
            return;
        }
        if let Some(target) = n.peer.clone() {
            let n = Notification {
                topic: Some(topic),
                ..n
            };
            if let Err(e) = self.helios.relay_notification(&self.conn, n, target).await {
                self.conn.notify_error(&e, None).await;
            }
            return;
        }
        let handlers = self.helios.routes().events(&topic);
        if handlers.is_empty() {
            let body = ErrorBody::new(
                ErrorCode::METHOD_NOT_FOUND,
                format!("no handler for notification topic {topic:?}"),
            );
            self.conn.notify_error(&body, None).await;
            return;
        }
        for handler in handlers {
            let ctx = Context {
                payload: n.data.clone(),
                meta: Meta {
                    connection: self.conn.clone(),
                    helios: self.helios.clone(),
                    name: ShortStr::from(&topic),
                    request_id: None,
                    peer: n.peer.clone(),
                    timestamp: n.timestamp,
                    in_reader: false,
                },
            };
            let conn_id = self.conn.id_arc();
            let topic = topic.clone();
            self.inflight.spawn(async move {
                match AssertUnwindSafe(handler(ctx)).catch_unwind().await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(conn = %conn_id, %topic, error = %e, "notification handler failed"),
                    Err(p) => tracing::error!(conn = %conn_id, %topic, "notification handler panicked: {}", panic_message(&p)),
                }
                Done::Event
            });
        }
    }
}

fn is_stream_frame(decoded: &Result<Message, DecodeError>) -> bool {
    matches!(decoded, Ok(Message::Notification(n))
        if n.topic.as_deref().is_some_and(StreamFrame::is_stream_topic))
}

/// Runs a handler chain within its timeout; a panic becomes `METHOD_ERROR`.
async fn run_bounded(
    call: impl Future<Output = Outcome>,
    timeout: Duration,
    helios: &Helios,
) -> Outcome {
    let started = Instant::now();
    let mut run = std::pin::pin!(AssertUnwindSafe(call).catch_unwind());
    // Most handlers finish at their first poll: only arm the timeout timer
    // (a timer-wheel entry, ~11% of an echo's instructions) for the others.
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(run.as_mut().poll(cx))).await;
    let outcome = match first {
        std::task::Poll::Ready(done) => Ok(done),
        // Boxed: only a handler that did not finish at once needs a timer.
        std::task::Poll::Pending => Box::pin(tokio::time::timeout(timeout, run)).await,
    };
    let reply = match outcome {
        Ok(Ok(reply)) => reply,
        Ok(Err(panic)) => Err(crate::error::MethodError::internal(format!(
            "handler panicked: {}",
            panic_message(&panic)
        ))),
        Err(_) => Err(crate::error::MethodError::new(
            ErrorCode::REQUEST_TIMEOUT,
            format!("method did not finish within {} ms", timeout.as_millis()),
        )),
    };
    helios.metrics().observe_latency(started.elapsed());
    reply
}

/// Waits for the deadline, if there is one (boxed: most connections never
/// have one, and an idle task should not carry a timer).
async fn sleep_until(deadline: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>) {
    match deadline {
        Some(d) => d.as_mut().await,
        None => std::future::pending().await,
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

/// Runs `f` once with the task's context.
async fn poll_once<R>(mut f: impl FnMut(&mut std::task::Context<'_>) -> R) -> R {
    std::future::poll_fn(|cx| std::task::Poll::Ready(f(cx))).await
}

/// The writer side of one connection: drains the outbound queue into the
/// socket, batching whatever is queued into one flush, sends the health-check
/// pings, and lets the socket sleep when nothing is left. Its state outlives
/// the active phases; only `run`'s future is dropped when the connection
/// dozes.
struct Writer {
    kind: FrameType,
    /// Frames taken off the queue, not yet handed to the socket.
    batch: VecDeque<Bytes>,
    pings: bool,
    max_missed: u32,
    /// The welcome (and any replay) is out.
    settled: bool,
}

impl Writer {
    fn new(helios: &Helios, conn: &Connection) -> Self {
        let config = helios.config();
        Self {
            kind: conn.encoding().frame_type(),
            batch: VecDeque::new(),
            pings: config.ping_interval.is_some(),
            max_missed: config.max_missed_pongs,
            settled: false,
        }
    }

    /// Writes until the connection is closed or the socket fails.
    async fn run<S>(&mut self, sink: &mut SocketWriter<'_, S>, conn: &Connection)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            // Left from an active phase that ended mid-batch.
            if !self.batch.is_empty() && self.write_batch(sink, conn).await.is_err() {
                conn.close(CloseCode::Normal);
                return;
            }
            // Everything the writer reacts to wakes the outbox: a close, a
            // health-check tick, a queued frame.
            if !conn.is_open() {
                return;
            }
            if conn.take_tick() {
                if !self.on_tick(sink, conn).await {
                    return;
                }
            } else if conn.outbox().take(&mut self.batch, 64) > 0 {
                if self.write_batch(sink, conn).await.is_err() || sink.flush().await.is_err() {
                    conn.close(CloseCode::Normal);
                    return;
                }
            } else if conn.take_flush() {
                // What the cork's flusher left (`cork.rs`).
                if sink.flush().await.is_err() {
                    conn.close(CloseCode::Normal);
                    return;
                }
            } else {
                conn.outbox().woken().await;
                continue;
            }
            if conn.outbox().is_empty() {
                let asleep = if self.settled {
                    poll_once(|cx| sink.sleep_if_idle(cx)).await
                } else {
                    self.settled = true;
                    poll_once(|cx| sink.settle(cx)).await
                };
                if asleep {
                    self.release(conn);
                }
            }
        }
    }

    /// The health-check tick: lets an idle socket sleep, then pings (or
    /// closes the connection when too many pongs are missing). False when
    /// the connection ends.
    async fn on_tick<S>(&mut self, sink: &mut SocketWriter<'_, S>, conn: &Connection) -> bool
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if poll_once(|cx| sink.tick(cx)).await {
            self.release(conn);
        }
        if !self.pings {
            return true;
        }
        let missed = conn.pings_outstanding();
        let Some(h) = conn.helios() else {
            return false;
        };
        if missed >= self.max_missed {
            h.emit_health(HealthEvent {
                connection: conn.clone(),
                kind: HealthEventKind::PingTimeout,
            });
            tracing::info!(conn = %conn.id(), missed, "ping timeout, closing");
            conn.close(CloseCode::PingTimeout);
            return false;
        }
        if missed > 0 {
            h.emit_health(HealthEvent {
                connection: conn.clone(),
                kind: HealthEventKind::PingMissed { missed },
            });
        }
        conn.ping_sent();
        if sink.send(WsMessage::ping(ping_payload())).await.is_err() {
            conn.close(CloseCode::Normal);
            return false;
        }
        true
    }

    /// Hands the batch to the socket (without flushing). A frame leaves the
    /// batch only as the socket takes it, so dropping this future loses
    /// nothing.
    async fn write_batch<S>(
        &mut self,
        sink: &mut SocketWriter<'_, S>,
        conn: &Connection,
    ) -> Result<(), tokio_websockets::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let text = self.kind == FrameType::Text;
        let batch = &mut self.batch;
        std::future::poll_fn(|cx| {
            sink.poll_write_frames(cx, batch, text, |frame| {
                conn.dequeued(frame.len());
                conn.outbox().handed_over(1);
            })
        })
        .await
    }

    /// The socket sleeps: the writer's buffers go too.
    fn release(&mut self, conn: &Connection) {
        if self.batch.capacity() > 0 {
            self.batch = VecDeque::new();
        }
        conn.outbox().release();
    }

    /// The connection is closed: sends what is still queued (unless the
    /// client is a slow consumer) and the close frame, within 5 s (a peer
    /// that stopped reading must not hold the task).
    async fn finish<S>(&mut self, sink: &mut SocketWriter<'_, S>, conn: &Connection)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        conn.outbox().close();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            if conn.close_code() != CloseCode::SlowConsumer {
                conn.outbox().take(&mut self.batch, usize::MAX);
                if self.write_batch(sink, conn).await.is_err() {
                    return;
                }
            }
            let code = conn.close_code();
            if let Ok(c) = tokio_websockets::CloseCode::try_from(code.code()) {
                let _ = sink.send(WsMessage::close(Some(c), code.as_str())).await;
                let _ = sink.close().await;
            }
        })
        .await;
    }
}

/// Shared with the upgrade path: a fresh `starlingId`.
pub(crate) fn new_connection_id() -> Arc<str> {
    Arc::from(uuid::Uuid::new_v4().hyphenated().to_string())
}
