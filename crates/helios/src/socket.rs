//! Drives one WebSocket: a reader that decodes, routes and spawns handlers,
//! and a writer that drains the connection's bounded queue of encoded frames.
//!
//! One way through for a message: socket → decode → route → handler task →
//! (back in the reader) encode → outbound queue → writer → socket. Handlers
//! run as tasks in a per-connection `JoinSet`, so a slow handler never holds
//! up the next request; their results come back to the reader, which alone
//! decides what is answered. That is what makes cancellation race-free: a
//! cancelled request is removed before its handler's result could be sent.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use helios_protocol::{
    CloseCode, Codec, DecodeError, ErrorBody, ErrorCode, FrameType, Message, Notification, Request,
    RequestId, Response, now_ms,
};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::{AbortHandle, JoinSet};
use tokio_websockets::Message as WsMessage;

use crate::connection::{CANCEL_TOPIC, Connection, WELCOME_TOPIC};
use crate::context::{Context, Meta};
use crate::handler::Reply;
use crate::health::{HealthEvent, HealthEventKind, ping_payload, pong_latency};
use crate::helios::Helios;
use crate::hibernate::{HibernatingSocket, SocketReader, SocketWriter};
use crate::metrics::MessageKind;
use crate::ratelimit::{TokenBucket, Verdict};
use crate::reliable::{ACK_TOPIC, SeenIds, ack_for};
use crate::session::{NotRecovered, RecoverRequest, Recovered};

/// A session to restore: whether the token was accepted, and what the
/// client asked for.
pub(crate) type Recovery = (Result<Recovered, NotRecovered>, RecoverRequest);

/// What a finished handler task hands back to the reader.
enum Done {
    Reply(RequestId, Reply),
    Event,
}

/// The reader side of one connection.
struct Reader {
    helios: Helios,
    conn: Connection,
    inflight: JoinSet<Done>,
    aborts: HashMap<RequestId, AbortHandle>,
    invalid_window: (Instant, u32),
    rate: Option<TokenBucket>,
    /// `ackId`s of reliable notifications already handled.
    seen_acks: SeenIds,
}

/// Runs a connection to its end.
///
/// The reader and the writer are two futures of one task, sharing one
/// [`HibernatingSocket`]: no second task, no split halves, and while the
/// connection is idle the socket holds no WebSocket buffers. The opening
/// (welcome, recovery) and the teardown are boxed: they run once, and
/// keeping them out of this future keeps every idle connection's task small.
pub(crate) async fn drive<S>(
    helios: Helios,
    io: S,
    conn: Connection,
    recovery: Option<Box<Recovery>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let socket = HibernatingSocket::new(io, helios.config().max_message_bytes);
    let frame_type = conn.encoding().frame_type();
    let reading = async {
        Box::pin(open(&helios, &conn, recovery)).await;
        // Connect hooks run beside the reader, not before it: a hook may call
        // the client (`conn.request`), whose answer the reader must be free to read.
        let connect_hooks = helios.has_connect_hooks().then(|| {
            let (helios, conn) = (helios.clone(), conn.clone());
            tokio::spawn(async move { helios.run_connect_hooks(&conn).await })
        });
        let mut reader = Reader {
            helios: helios.clone(),
            conn: conn.clone(),
            inflight: JoinSet::new(),
            aborts: HashMap::new(),
            invalid_window: (Instant::now(), 0),
            rate: helios.config().rate_limit.map(TokenBucket::new),
            seen_acks: SeenIds::new(1024),
        };
        reader.run(socket.reader()).await;
        Box::pin(leave(&helios, &conn, &mut reader)).await;
        connect_hooks
    };
    let writing = write_loop(socket.writer(), conn.clone(), frame_type, helios.clone());
    let (connect_hooks, ()) = tokio::join!(reading, writing);
    Box::pin(finish(helios, conn, connect_hooks)).await;
}

/// Registers the connection, restores a recovered session, sends the
/// welcome and then the replay.
async fn open(helios: &Helios, conn: &Connection, recovery: Option<Box<Recovery>>) {
    helios.registry().insert(conn.clone());
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
    async fn run<S>(&mut self, mut stream: SocketReader<'_, S>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let cap = self.helios.config().max_inflight_per_connection;
        let shutdown = self.helios.shutdown_token().clone();
        let closed = self.conn.closed_token().clone();
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        loop {
            let draining = drain_deadline.is_some();
            if draining && self.inflight.is_empty() {
                self.conn.close(CloseCode::GoingAway);
                return;
            }
            tokio::select! {
                biased;
                Some(done) = self.inflight.join_next(), if !self.inflight.is_empty() => {
                    if let Ok(Done::Reply(id, reply)) = done {
                        Box::pin(self.answer(id, reply)).await;
                    }
                }
                _ = closed.cancelled() => return,
                _ = shutdown.cancelled(), if !draining => {
                    let grace = self.helios.config().shutdown_grace;
                    drain_deadline = Some(tokio::time::Instant::now() + grace);
                }
                _ = sleep_until(drain_deadline), if draining => {
                    Box::pin(self.give_up_in_flight()).await;
                    return;
                }
                frame = stream.next(), if !draining && self.inflight.len() < cap => {
                    match frame {
                        None => return,
                        Some(Ok(msg)) => Box::pin(self.on_frame(msg)).await,
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
        let ids: Vec<RequestId> = self.aborts.keys().cloned().collect();
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
        if !matches!(decoded, Ok(Message::Response(_))) && !self.within_rate(&decoded).await {
            return;
        }
        match decoded {
            Ok(Message::Request(req)) => self.on_request(req).await,
            Ok(Message::Response(resp)) => self.on_response(resp).await,
            Ok(Message::Notification(n)) => self.on_notification(n).await,
            Err(e) => self.on_decode_error(e).await,
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
        let (start, count) = &mut self.invalid_window;
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
        if self.aborts.contains_key(&req.id) {
            let body = ErrorBody::new(
                ErrorCode::INVALID_MESSAGE_FORMAT,
                "a request with this requestId is already in flight",
            );
            self.invalid(body, Some(req.id.to_string())).await;
            return;
        }
        if self.helios.is_shutting_down() {
            let resp = Response::error(req.id, ErrorCode::SHUTTING_DOWN, "server is shutting down");
            let _ = self.conn.send_message(&resp.into()).await;
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
            None => match router.fallback(&req.method) {
                Some(next) => (next, None, false),
                None => {
                    let resp = Response::error(
                        req.id,
                        ErrorCode::METHOD_NOT_FOUND,
                        format!("no method {:?}", req.method),
                    );
                    let _ = self.conn.send_message(&resp.into()).await;
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
            payload: req.payload.unwrap_or(Value::Null),
            meta: Meta {
                connection: self.conn.clone(),
                helios: self.helios.clone(),
                name: req.method,
                request_id: Some(req.id),
                peer: req.peer,
                timestamp: req.timestamp,
            },
        };
        if inline {
            // Ordered methods (publish, subscribe, ...) run here, one at a
            // time, so a connection's publications keep their order.
            let reply = run_bounded(Box::pin(next.run(ctx)), timeout, &self.helios).await;
            let resp = match reply {
                Ok(data) => Response::ok(id, data),
                Err(e) => Response::err(id, e.into_body()),
            };
            let _ = self.conn.send_message(&resp.into()).await;
            return;
        }
        self.spawn_call(id, timeout, Box::pin(next.run(ctx)));
    }

    /// Runs a call as a task of this connection, bounded by `timeout`; a
    /// panic becomes `METHOD_ERROR`.
    fn spawn_call(
        &mut self,
        id: RequestId,
        timeout: Duration,
        call: futures_util::future::BoxFuture<'static, Reply>,
    ) {
        let task_id = id.clone();
        let helios = self.helios.clone();
        let handle = self
            .inflight
            .spawn(async move { Done::Reply(task_id, run_bounded(call, timeout, &helios).await) });
        self.aborts.insert(id, handle);
    }

    /// Sends a finished handler's answer, unless the request was cancelled.
    async fn answer(&mut self, id: RequestId, reply: Reply) {
        if self.aborts.remove(&id).is_none() {
            return; // cancelled: already answered REQUEST_CANCELLED
        }
        let resp = match reply {
            Ok(data) => Response::ok(id, data),
            Err(e) => Response::err(id, e.into_body()),
        };
        let _ = self.conn.send_message(&resp.into()).await;
    }

    /// Drops a running handler and answers its request with `code`.
    async fn cancel(&mut self, id: &RequestId, code: ErrorCode, message: &str) -> bool {
        match self.aborts.remove(id) {
            Some(handle) => {
                handle.abort();
                let resp = Response::error(id.clone(), code, message);
                let _ = self.conn.send_message(&resp.into()).await;
                true
            }
            None => false,
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
            if !self.seen_acks.first_time(ack_id) {
                return;
            }
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
                    name: topic.clone(),
                    request_id: None,
                    peer: n.peer.clone(),
                    timestamp: n.timestamp,
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

/// Runs a handler chain within its timeout; a panic becomes `METHOD_ERROR`.
async fn run_bounded(
    call: futures_util::future::BoxFuture<'static, Reply>,
    timeout: Duration,
    helios: &Helios,
) -> Reply {
    let started = Instant::now();
    let mut run = AssertUnwindSafe(call).catch_unwind();
    // Most handlers finish at their first poll: only arm the timeout timer
    // (a timer-wheel entry, ~11% of an echo's instructions) for the others.
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(run.poll_unpin(cx))).await;
    let outcome = match first {
        std::task::Poll::Ready(done) => Ok(done),
        std::task::Poll::Pending => tokio::time::timeout(timeout, run).await,
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

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
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

/// How long a connection without health checks must be idle before its
/// socket sleeps.
const IDLE_PERIOD: Duration = Duration::from_secs(30);

/// Runs `f` once with the task's context.
async fn poll_once<R>(mut f: impl FnMut(&mut std::task::Context<'_>) -> R) -> R {
    std::future::poll_fn(|cx| std::task::Poll::Ready(f(cx))).await
}

/// The socket sleeps: the writer's buffers go too.
fn release(batch: &mut Vec<Bytes>, conn: &Connection) {
    if batch.capacity() > 0 {
        *batch = Vec::new();
    }
    conn.outbox().release();
}

fn to_ws(frame: Bytes, kind: FrameType) -> WsMessage {
    match kind {
        FrameType::Text => WsMessage::text(frame),
        FrameType::Binary => WsMessage::binary(frame),
    }
}

/// Drains the outbound queue into the socket, batching whatever is queued
/// into one flush, and lets the socket sleep when nothing is left. Ends
/// when the connection is closed: then it sends what is still queued
/// (unless the client is a slow consumer) and the close frame.
async fn write_loop<S>(
    mut sink: SocketWriter<'_, S>,
    conn: Connection,
    kind: FrameType,
    helios: Helios,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let closed = conn.closed_token().clone();
    let mut batch = Vec::with_capacity(0);
    let max_missed = helios.config().max_missed_pongs;
    let pings = helios.config().ping_interval.is_some();
    // The health-check period doubles as the socket's idle period.
    let every = helios.config().ping_interval.unwrap_or(IDLE_PERIOD);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    drop(helios);
    let mut settled = false;
    loop {
        tokio::select! {
            biased;
            _ = closed.cancelled() => break,
            _ = ticks.tick() => {
                if poll_once(|cx| sink.tick(cx)).await {
                    release(&mut batch, &conn);
                }
                if !pings {
                    continue;
                }
                let missed = conn.pings_outstanding();
                let Some(h) = conn.helios() else { break };
                if missed >= max_missed {
                    h.emit_health(HealthEvent { connection: conn.clone(), kind: HealthEventKind::PingTimeout });
                    tracing::info!(conn = %conn.id(), missed, "ping timeout, closing");
                    conn.close(CloseCode::PingTimeout);
                    break;
                }
                if missed > 0 {
                    h.emit_health(HealthEvent { connection: conn.clone(), kind: HealthEventKind::PingMissed { missed } });
                }
                conn.ping_sent();
                if sink.send(WsMessage::ping(ping_payload())).await.is_err() {
                    conn.close(CloseCode::Normal);
                    break;
                }
            }
            n = conn.outbox().recv_many(&mut batch, 64) => {
                if n == 0 {
                    break;
                }
                if write_batch(&mut sink, &conn, &mut batch, kind).await.is_err()
                    || sink.flush().await.is_err()
                {
                    conn.close(CloseCode::Normal);
                    break;
                }
            }
        }
        if conn.outbox().is_empty() {
            let asleep = if settled {
                poll_once(|cx| sink.sleep_if_idle(cx)).await
            } else {
                // The welcome (and any replay) is out.
                settled = true;
                poll_once(|cx| sink.settle(cx)).await
            };
            if asleep {
                release(&mut batch, &conn);
            }
        }
    }
    conn.outbox().close();
    // Bounded: a peer that stopped reading must not hold the task.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        if conn.close_code() != CloseCode::SlowConsumer {
            conn.outbox().take(&mut batch, usize::MAX);
            if write_batch(&mut sink, &conn, &mut batch, kind)
                .await
                .is_err()
            {
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

/// Hands a batch of queued frames to the socket (without flushing).
async fn write_batch<S>(
    sink: &mut SocketWriter<'_, S>,
    conn: &Connection,
    batch: &mut Vec<Bytes>,
    kind: FrameType,
) -> Result<(), tokio_websockets::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for frame in batch.drain(..) {
        conn.dequeued(frame.len());
        sink.feed(to_ws(frame, kind)).await?;
    }
    Ok(())
}

/// Shared with the upgrade path: a fresh `starlingId`.
pub(crate) fn new_connection_id() -> Arc<str> {
    Arc::from(uuid::Uuid::new_v4().hyphenated().to_string())
}
