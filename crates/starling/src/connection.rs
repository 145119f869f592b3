//! The connection task: the one owner of one socket.
//!
//! It selects over four sources: frames from the server, commands from the
//! client handles (a bounded queue that outlives the socket), answers from
//! handler tasks, and its timers (close deadline, token refresh). Data flows
//! one way: socket → decode → route (pending request, handler, room or
//! notification receivers), and handle → encode → queue → socket.
//!
//! The task knows nothing about URLs or handshakes: it is given an upgraded
//! stream whose welcome has been read, runs it to the end and reports how it
//! ended. The supervisor (`reconnect.rs`) decides what comes next.

use std::collections::HashMap;
use std::future::pending;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use helios_protocol::{
    Encoding, ErrorBody, ErrorCode, Message, Notification, Request, RequestId, Response,
    StreamFrame,
};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Sleep;
use tokio_websockets::{CloseCode, Message as WsMessage, WebSocketStream};

use crate::error::ClientError;
use crate::events::ClientEvent;
use crate::frame;
use crate::methods::{Dispatcher, Methods, Reply};
use crate::reliable::ACK_TOPIC;
use crate::session::{CANCEL_TOPIC, CloseInfo, GET_TOKEN, WELCOME_TOPIC};
use crate::shared::{Shared, Token};
use crate::subscription::SUBSCRIBE;

/// What the client handles ask of the connection task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send this frame.
    Send(WsMessage),
    /// Send this request frame, noting on which socket it went out.
    Request(RequestId, WsMessage),
    /// Send a normal close and wait for the server to end the socket.
    Close,
}

/// Most commands written before one flush.
const WRITE_BATCH: usize = 64;
/// Capacity of the queue from handler tasks to the connection task.
const REPLY_QUEUE: usize = 64;
/// How long a `starling:getToken` may go unanswered before it is sent again,
/// and the wait after a failed one.
const TOKEN_RETRY: Duration = Duration::from_secs(5);
/// Shortest wait before a token refresh.
const MIN_REFRESH: Duration = Duration::from_millis(100);

/// Settings the task needs.
#[derive(Debug, Clone)]
pub(crate) struct TaskConfig {
    pub(crate) encoding: Encoding,
    pub(crate) close_timeout: Duration,
    pub(crate) max_inflight_handlers: usize,
    pub(crate) request_timeout: Duration,
}

/// What a new connection does first, before the queued commands.
#[derive(Debug, Default)]
pub(crate) struct Startup {
    /// Frames that arrived before the welcome.
    pub(crate) early: Vec<WsMessage>,
    /// Rooms to join (a fresh session after a loss).
    pub(crate) resubscribe: Vec<String>,
    /// The name to claim again (a fresh session after a loss).
    pub(crate) identify: Option<String>,
    /// Whether to fetch (and keep refreshing) a recovery token.
    pub(crate) fetch_token: bool,
}

/// Why the connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// `close()` was called.
    ClientClose,
    /// Every handle is gone.
    HandlesGone,
    /// The server closed, or the socket failed.
    Remote,
}

/// How the connection ended.
#[derive(Debug)]
pub(crate) struct End {
    pub(crate) info: CloseInfo,
    pub(crate) cause: Cause,
}

/// Requests the task makes on its own behalf, answered to it.
#[derive(Debug)]
enum Internal {
    Token { sent: Instant },
    Subscribe(String),
    Identify(String),
}

pub(crate) struct Connection<S> {
    ws: WebSocketStream<S>,
    shared: Arc<Shared>,
    dispatcher: Dispatcher,
    replies: mpsc::Receiver<Reply>,
    config: TaskConfig,
    /// Which socket this is (1 for the first); requests remember it.
    generation: u64,
    internal: HashMap<RequestId, Internal>,
    token_timer: Option<Pin<Box<Sleep>>>,
    /// Set once a close frame was sent or received.
    close: Option<CloseInfo>,
    cause: Cause,
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub(crate) fn new(
        ws: WebSocketStream<S>,
        shared: Arc<Shared>,
        methods: Arc<Methods>,
        config: TaskConfig,
        generation: u64,
    ) -> Self {
        let (reply_tx, replies) = mpsc::channel(REPLY_QUEUE);
        Self {
            ws,
            shared,
            dispatcher: Dispatcher::new(
                methods,
                config.encoding,
                config.max_inflight_handlers,
                reply_tx,
            ),
            replies,
            config,
            generation,
            internal: HashMap::new(),
            token_timer: None,
            close: None,
            cause: Cause::Remote,
        }
    }

    /// Runs the connection to its end.
    pub(crate) async fn run(
        mut self,
        commands: &mut mpsc::Receiver<Command>,
        startup: Startup,
    ) -> End {
        let failure = match self.start(startup).await {
            Ok(()) => self.run_loop(commands).await,
            Err(e) => Some(e),
        };
        self.dispatcher.abort_all();
        let mut info = self.close.take().unwrap_or_default();
        if let Some(failure) = failure {
            if info.reason.is_empty() {
                info.reason = failure;
            }
        }
        tracing::debug!(code = ?info.code, reason = %info.reason, cause = ?self.cause, "connection ended");
        End {
            info,
            cause: self.cause,
        }
    }

    /// Handles what came before the welcome, re-joins rooms, re-sends
    /// retry-safe requests and asks for a recovery token.
    async fn start(&mut self, startup: Startup) -> Result<(), String> {
        for frame in startup.early {
            self.on_frame(frame).await?;
        }
        for topic in startup.resubscribe {
            let payload = json!({ "topic": topic });
            self.feed_internal(SUBSCRIBE, payload, Internal::Subscribe(topic))
                .await?;
        }
        if let Some(name) = startup.identify {
            let payload = json!({ "name": name });
            self.feed_internal("helios:identify", payload, Internal::Identify(name))
                .await?;
        }
        for (id, frame) in self.shared.take_resends(self.generation) {
            tracing::debug!(request_id = %id, "re-sending a retry-safe request");
            self.ws.feed(frame).await.map_err(|e| e.to_string())?;
        }
        if startup.fetch_token {
            self.request_token().await?;
        }
        self.ws.flush().await.map_err(|e| e.to_string())
    }

    /// Returns a description of the failure that ended the socket, if any.
    async fn run_loop(&mut self, commands: &mut mpsc::Receiver<Command>) -> Option<String> {
        let mut deadline: Option<Pin<Box<Sleep>>> = None;
        loop {
            let closing = deadline.is_some();
            tokio::select! {
                frame = self.ws.next() => match frame {
                    Some(Ok(frame)) => {
                        if let Err(e) = self.on_frame(frame).await {
                            return Some(e);
                        }
                    }
                    Some(Err(e)) => return Some(e.to_string()),
                    None => return None,
                },
                cmd = commands.recv(), if !closing => {
                    match self.on_command(cmd, commands).await {
                        Ok(true) => {
                            deadline = Some(Box::pin(tokio::time::sleep(self.config.close_timeout)));
                        }
                        Ok(false) => {}
                        Err(e) => return Some(e),
                    }
                }
                Some((id, frame)) = self.replies.recv() => {
                    if self.dispatcher.finish(&id, &frame) {
                        if let Err(e) = self.ws.send(frame).await {
                            return Some(e.to_string());
                        }
                    }
                }
                () = until(&mut self.token_timer), if !closing => {
                    self.token_timer = None;
                    let sent = match self.request_token().await {
                        Ok(()) => self.ws.flush().await.map_err(|e| e.to_string()),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = sent {
                        return Some(e);
                    }
                }
                () = until(&mut deadline) => {
                    return Some("server did not finish the close handshake".into());
                }
            }
        }
    }

    /// Writes a command and whatever else is queued, then flushes once.
    /// `Ok(true)` means a close was started.
    async fn on_command(
        &mut self,
        first: Option<Command>,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Result<bool, String> {
        let mut next = first;
        for written in 1..=WRITE_BATCH {
            match next {
                Some(Command::Send(frame)) => {
                    self.ws.feed(frame).await.map_err(|e| e.to_string())?;
                }
                Some(Command::Request(id, frame)) => {
                    self.shared.mark_sent(&id, self.generation);
                    self.ws.feed(frame).await.map_err(|e| e.to_string())?;
                }
                // `None`: every handle is gone, so nobody can use the
                // connection any more; close it like `close()` would.
                Some(Command::Close) | None => {
                    self.cause = if next.is_none() {
                        Cause::HandlesGone
                    } else {
                        Cause::ClientClose
                    };
                    self.start_close().await?;
                    return Ok(true);
                }
            }
            // Stop before taking a command off the queue that this batch
            // would not write (it would be lost).
            if written == WRITE_BATCH {
                break;
            }
            next = match commands.try_recv() {
                Ok(cmd) => Some(cmd),
                Err(_) => break,
            };
        }
        self.ws.flush().await.map_err(|e| e.to_string())?;
        Ok(false)
    }

    async fn start_close(&mut self) -> Result<(), String> {
        self.shared.set_closing();
        self.close = Some(CloseInfo {
            code: Some(1000),
            reason: String::new(),
            by_client: true,
        });
        self.ws
            .send(WsMessage::close(Some(CloseCode::NORMAL_CLOSURE), ""))
            .await
            .map_err(|e| e.to_string())
    }

    async fn send(&mut self, frame: Option<WsMessage>) -> Result<(), String> {
        match frame {
            Some(frame) => self.ws.send(frame).await.map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// Queues a request of the task's own on the socket (no flush).
    async fn feed_internal(
        &mut self,
        method: &str,
        payload: Value,
        kind: Internal,
    ) -> Result<(), String> {
        let mut req = Request::new(method, payload);
        req.timeout_ms = u64::try_from(self.config.request_timeout.as_millis()).ok();
        let id = req.id.clone();
        let frame = frame::encode(self.config.encoding, &Message::Request(req))?;
        self.internal.insert(id, kind);
        self.ws.feed(frame).await.map_err(|e| e.to_string())
    }

    /// Asks for a recovery token (no flush); a watchdog resends it when no
    /// answer comes.
    async fn request_token(&mut self) -> Result<(), String> {
        self.internal
            .retain(|_, kind| !matches!(kind, Internal::Token { .. }));
        let kind = Internal::Token {
            sent: Instant::now(),
        };
        self.feed_internal(GET_TOKEN, json!({}), kind).await?;
        self.token_timer = Some(Box::pin(tokio::time::sleep(TOKEN_RETRY)));
        Ok(())
    }

    async fn on_frame(&mut self, frame: WsMessage) -> Result<(), String> {
        if let Some((code, reason)) = frame.as_close() {
            if self.close.is_none() {
                self.close = Some(CloseInfo {
                    code: Some(code.into()),
                    reason: reason.to_owned(),
                    by_client: false,
                });
            }
            return Ok(());
        }
        let Some(decoded) = frame::decode(&frame) else {
            return Ok(()); // ping or pong: tokio-websockets answers pings
        };
        match decoded {
            Ok(Message::Response(res)) => {
                self.on_response(res);
                Ok(())
            }
            Ok(Message::Request(req)) => {
                let answer = self.dispatcher.dispatch(req);
                self.send(answer).await
            }
            Ok(Message::Notification(note)) => self.on_notification(note).await,
            Err(err) => {
                let id = err.request_id.clone().map(RequestId::from);
                tracing::warn!(error = %err, "undecodable frame from the server");
                let Some(id) = id else { return Ok(()) };
                // An answer to one of our requests that we cannot read:
                // fail that request now rather than let it time out.
                let failure = ClientError::Protocol(err.to_string());
                if self.shared.complete(&id, Err(failure)) {
                    return Ok(());
                }
                let answer = frame::encode(
                    self.dispatcher.encoding(),
                    &Message::Response(Response::err(id, err.to_error_body())),
                )
                .ok();
                self.send(answer).await
            }
        }
    }

    fn on_response(&mut self, res: Response) {
        let id = res.id.clone();
        let result = res.into_result();
        if let Some(kind) = self.internal.remove(&id) {
            self.on_internal(kind, result);
            return;
        }
        if !self
            .shared
            .complete(&id, result.map_err(ClientError::Server))
        {
            tracing::debug!(request_id = %id, "response to no pending request (late or cancelled)");
        }
    }

    fn on_internal(&mut self, kind: Internal, result: Result<Value, ErrorBody>) {
        match (kind, result) {
            (Internal::Token { sent }, Ok(data)) => {
                let token = data.get("token").and_then(Value::as_str);
                let expires_in = data.get("expiresIn").and_then(Value::as_u64);
                let (Some(token), Some(expires_in)) = (token, expires_in) else {
                    tracing::warn!(%data, "unreadable starling:getToken answer");
                    self.token_timer = Some(Box::pin(tokio::time::sleep(TOKEN_RETRY)));
                    return;
                };
                let ttl = Duration::from_secs(expires_in);
                self.shared.set_recovery_available(true);
                self.shared.set_token(Some(Token {
                    token: token.to_owned(),
                    // Counted from the send: never later than the server's.
                    expires: sent + ttl,
                }));
                // Refresh at two thirds of the lifetime.
                let refresh = (ttl * 2 / 3).max(MIN_REFRESH);
                self.token_timer = Some(Box::pin(tokio::time::sleep(refresh)));
                self.shared
                    .emit(ClientEvent::TokenRefreshed { expires_in: ttl });
            }
            (Internal::Token { .. }, Err(e)) if e.code == ErrorCode::METHOD_NOT_FOUND => {
                self.token_timer = None;
                self.shared.set_recovery_available(false);
                self.shared.emit(ClientEvent::RecoveryUnavailable);
            }
            (Internal::Token { .. }, Err(e)) => {
                tracing::warn!(error = %e.message, code = %e.code, "starling:getToken failed");
                self.token_timer = Some(Box::pin(tokio::time::sleep(TOKEN_RETRY)));
            }
            (Internal::Subscribe(topic), Err(error)) => {
                tracing::warn!(%topic, error = %error.message, "re-joining a room failed");
                self.shared
                    .emit(ClientEvent::ResubscribeFailed { topic, error });
            }
            (Internal::Identify(name), Err(error)) => {
                tracing::warn!(%name, error = %error.message, "re-claiming the name failed");
                self.shared
                    .emit(ClientEvent::IdentifyFailed { name, error });
            }
            (Internal::Subscribe(_) | Internal::Identify(_), Ok(_)) => {}
        }
    }

    async fn on_notification(&mut self, note: Notification) -> Result<(), String> {
        match note.topic.as_deref() {
            Some(WELCOME_TOPIC) => {
                tracing::debug!("second helios:welcome ignored");
                Ok(())
            }
            Some(CANCEL_TOPIC) => {
                let id = note
                    .data
                    .get("requestId")
                    .and_then(Value::as_str)
                    .map(RequestId::from);
                let Some(id) = id else {
                    tracing::warn!("helios:cancel without a requestId");
                    return Ok(());
                };
                let answer = self.dispatcher.cancel(&id);
                if answer.is_none() {
                    tracing::debug!(request_id = %id, "cancel for no running handler");
                }
                self.send(answer).await
            }
            Some(topic) if StreamFrame::is_stream_topic(topic) => {
                let frame = match StreamFrame::parse(topic, &note.data) {
                    Ok(frame) => frame,
                    Err(e) => {
                        tracing::warn!(error = %e, "malformed stream frame from the server");
                        return Ok(());
                    }
                };
                let Some(link) = self.shared.stream_link.get() else {
                    return Ok(());
                };
                let shared = &self.shared;
                let reply = shared
                    .streams
                    .on_frame(frame, link, |id| shared.is_pending(&RequestId::from(id)));
                match reply {
                    Some(reply) => {
                        self.send(crate::streams::encode(self.config.encoding, &reply))
                            .await
                    }
                    None => Ok(()),
                }
            }
            Some(ACK_TOPIC) => {
                match note.data.get("ackId").and_then(Value::as_str) {
                    Some(ack_id) => self.shared.acked(ack_id),
                    None => tracing::warn!("helios:ack without an ackId"),
                }
                Ok(())
            }
            _ => {
                if let Some(ack_id) = note.ack_id.as_deref() {
                    // Acknowledge every copy (an earlier ack may be lost),
                    // deliver the first.
                    let ack = frame::ack(self.config.encoding, ack_id).ok();
                    self.send(ack).await?;
                    if !self.shared.first_time(ack_id) {
                        tracing::debug!(ack_id, "duplicate reliable notification dropped");
                        return Ok(());
                    }
                }
                self.shared.deliver(note);
                Ok(())
            }
        }
    }
}

/// Waits for a timer, or forever when there is none.
async fn until(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(sleep) => sleep.as_mut().await,
        None => pending().await,
    }
}
