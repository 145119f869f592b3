//! The connection task: the one owner of the socket.
//!
//! It selects over three sources: frames from the server, commands from the
//! client handles (a bounded queue), and answers from handler tasks. Data
//! flows one way: socket → decode → route (pending request, handler, room or
//! notification receivers), and handle → encode → queue → socket.
//!
//! The task knows nothing about URLs or handshakes: it is given an upgraded
//! stream and runs it to the end, then reports how it ended. A reconnect
//! supervisor can therefore wrap it later: connect, run, and on an
//! unexpected end connect again with the same [`Shared`] state.

use std::future::pending;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use helios_protocol::{Encoding, Message, Notification, RequestId, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Sleep;
use tokio_websockets::{CloseCode, Message as WsMessage, WebSocketStream};

use crate::error::ClientError;
use crate::frame;
use crate::methods::{Dispatcher, Methods, Reply};
use crate::session::{CANCEL_TOPIC, CloseInfo, WELCOME_TOPIC, Welcome};
use crate::shared::Shared;

/// What the client handles ask of the connection task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send this frame.
    Send(WsMessage),
    /// Send a normal close and wait for the server to end the socket.
    Close,
}

/// Most commands written before one flush.
const WRITE_BATCH: usize = 64;
/// Capacity of the queue from handler tasks to the connection task.
const REPLY_QUEUE: usize = 64;

/// Settings the task needs.
pub(crate) struct TaskConfig {
    pub(crate) encoding: Encoding,
    pub(crate) close_timeout: Duration,
    pub(crate) max_inflight_handlers: usize,
}

pub(crate) struct Connection<S> {
    ws: WebSocketStream<S>,
    shared: Arc<Shared>,
    commands: mpsc::Receiver<Command>,
    dispatcher: Dispatcher,
    replies: mpsc::Receiver<Reply>,
    welcome: Option<oneshot::Sender<Welcome>>,
    close_timeout: Duration,
    /// Set once a close frame was sent or received.
    close: Option<CloseInfo>,
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub(crate) fn new(
        ws: WebSocketStream<S>,
        shared: Arc<Shared>,
        commands: mpsc::Receiver<Command>,
        methods: Arc<Methods>,
        welcome: oneshot::Sender<Welcome>,
        config: &TaskConfig,
    ) -> Self {
        let (reply_tx, replies) = mpsc::channel(REPLY_QUEUE);
        Self {
            ws,
            shared,
            commands,
            dispatcher: Dispatcher::new(
                methods,
                config.encoding,
                config.max_inflight_handlers,
                reply_tx,
            ),
            replies,
            welcome: Some(welcome),
            close_timeout: config.close_timeout,
            close: None,
        }
    }

    /// Runs the connection to its end, then marks the shared state closed.
    pub(crate) async fn run(mut self) -> CloseInfo {
        let failure = self.run_loop().await;
        self.dispatcher.abort_all();
        let mut info = self.close.take().unwrap_or_default();
        if let Some(failure) = failure {
            if info.reason.is_empty() {
                info.reason = failure;
            }
        }
        tracing::debug!(code = ?info.code, reason = %info.reason, "connection ended");
        self.shared.set_closed(info.clone());
        info
    }

    /// Returns a description of the failure that ended the socket, if any.
    async fn run_loop(&mut self) -> Option<String> {
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
                cmd = self.commands.recv(), if !closing => {
                    match self.on_command(cmd).await {
                        Ok(true) => {
                            deadline = Some(Box::pin(tokio::time::sleep(self.close_timeout)));
                        }
                        Ok(false) => {}
                        Err(e) => return Some(e),
                    }
                }
                Some((id, frame)) = self.replies.recv() => {
                    if self.dispatcher.finish(&id) {
                        if let Err(e) = self.ws.send(frame).await {
                            return Some(e.to_string());
                        }
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
    async fn on_command(&mut self, first: Option<Command>) -> Result<bool, String> {
        let mut next = first;
        for written in 1..=WRITE_BATCH {
            match next {
                Some(Command::Send(frame)) => {
                    self.ws.feed(frame).await.map_err(|e| e.to_string())?;
                }
                // `None`: every handle is gone, so nobody can use the
                // connection any more; close it like `close()` would.
                Some(Command::Close) | None => {
                    self.start_close().await?;
                    return Ok(true);
                }
            }
            // Stop before taking a command off the queue that this batch
            // would not write (it would be lost).
            if written == WRITE_BATCH {
                break;
            }
            next = match self.commands.try_recv() {
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
        let outcome = res.result.map_err(ClientError::Server);
        if !self.shared.complete(&res.id, outcome) {
            tracing::debug!(request_id = %res.id, "response to no pending request (late or cancelled)");
        }
    }

    async fn on_notification(&mut self, note: Notification) -> Result<(), String> {
        match note.topic.as_deref() {
            Some(WELCOME_TOPIC) => {
                let welcome: Welcome = serde_json::from_value(note.data).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "unreadable helios:welcome data");
                    Welcome::default()
                });
                self.shared.set_welcome(welcome.clone());
                if let Some(tx) = self.welcome.take() {
                    let _ = tx.send(welcome);
                }
                Ok(())
            }
            Some(CANCEL_TOPIC) => {
                let id = note
                    .data
                    .get("requestId")
                    .and_then(serde_json::Value::as_str)
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
            _ => {
                self.shared.deliver(note);
                Ok(())
            }
        }
    }
}

/// Waits for the close deadline, or forever when no close is under way.
async fn until(deadline: &mut Option<Pin<Box<Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.as_mut().await,
        None => pending().await,
    }
}
