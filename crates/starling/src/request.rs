//! Outgoing requests: per-call options and the in-flight future.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use helios_protocol::{Encoding, PeerRef, RequestId};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Sleep;
use tokio_websockets::Message as WsMessage;

use crate::connection::Command;
use crate::error::ClientError;
use crate::frame;
use crate::shared::{Outcome, Shared};

/// Options for one request: timeout and relay target.
///
/// ```no_run
/// # async fn demo() -> Result<(), starling::ClientError> {
/// use std::time::Duration;
/// use starling::{PeerRef, RequestOptions};
/// let client = starling::Client::connect("ws://127.0.0.1:7700/ws").await?;
/// let opts = RequestOptions::new()
///     .timeout(Duration::from_secs(2))
///     .peer(PeerRef::Name("billing".into()));
/// let invoice = client.request_with("billing:invoice", serde_json::json!({"id": 7}), opts).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct RequestOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) peer: Option<PeerRef>,
    pub(crate) retry_safe: bool,
}

/// Built-ins the client sends again after a reconnect by itself: running
/// them twice does no harm.
pub(crate) const RETRY_SAFE_BUILTINS: &[&str] = &[
    "system:ping",
    "system:echo",
    "starling:getToken",
    "helios:subscribe",
    "helios:unsubscribe",
    "helios:presence",
    "helios:identify",
];

impl RequestOptions {
    /// Defaults: the client's request timeout, no relay.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long to wait for the response. Also sent to the server as the
    /// request's `timeout` hint.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Marks the request safe to run twice (idempotent): when the socket is
    /// lost while it is in flight and the client reconnects
    /// ([`ClientBuilder::reconnect`](crate::ClientBuilder::reconnect)), it is
    /// sent again, under the same `requestId`, on the new socket, instead of
    /// failing with [`ClientError::ConnectionLost`]. Its timeout still counts
    /// from the first send.
    ///
    /// The built-ins `system:ping`, `system:echo`, `helios:subscribe`,
    /// `helios:unsubscribe`, `helios:presence` and `helios:identify` are
    /// retry-safe already (unless relayed to a peer); `helios:publish` is not.
    pub fn retry_safe(mut self) -> Self {
        self.retry_safe = true;
        self
    }

    /// Same as [`retry_safe`](Self::retry_safe).
    pub fn idempotent(self) -> Self {
        self.retry_safe()
    }

    /// Ask the server to relay the request to another connection.
    pub fn peer(mut self, peer: PeerRef) -> Self {
        self.peer = Some(peer);
        self
    }
}

/// A request that has been sent and awaits its response; `.await` it.
///
/// Returned by [`Client::send_request`](crate::Client::send_request).
/// Dropping it before the response arrives cancels the request: the client
/// sends `helios:cancel` so the server can stop the handler. The same
/// happens when the timeout elapses.
///
/// ```no_run
/// # async fn demo() -> Result<(), starling::ClientError> {
/// use starling::RequestOptions;
/// let client = starling::Client::connect("ws://127.0.0.1:7700/ws").await?;
/// let call = client
///     .send_request("report:build", serde_json::json!({}), RequestOptions::new())
///     .await?;
/// println!("sent {}", call.id());
/// call.cancel().await; // changed our mind
/// # Ok(()) }
/// ```
#[must_use = "dropping a PendingRequest cancels the request"]
#[derive(Debug)]
pub struct PendingRequest {
    id: RequestId,
    rx: oneshot::Receiver<Outcome>,
    sleep: Pin<Box<Sleep>>,
    link: Link,
    done: bool,
}

/// What is needed to send frames from synchronous code (drop, poll).
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) shared: Arc<Shared>,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) encoding: Encoding,
}

impl Link {
    /// Queues a frame without waiting. When the queue is full the frame is
    /// handed to a short task that waits for room; when the connection is
    /// gone it is dropped (there is nobody to tell).
    pub(crate) fn send_now(&self, frame: WsMessage) {
        match self.commands.try_send(Command::Send(frame)) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(cmd)) => {
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let commands = self.commands.clone();
                    rt.spawn(async move {
                        let _ = commands.send(cmd).await;
                    });
                }
            }
        }
    }

    pub(crate) fn send_cancel_now(&self, id: &RequestId) {
        match frame::cancel(self.encoding, id) {
            Ok(frame) => self.send_now(frame),
            Err(e) => tracing::error!(error = %e, "cannot encode helios:cancel"),
        }
    }
}

impl PendingRequest {
    pub(crate) fn new(
        id: RequestId,
        rx: oneshot::Receiver<Outcome>,
        timeout: Duration,
        link: Link,
    ) -> Self {
        Self {
            id,
            rx,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            link,
            done: false,
        }
    }

    /// The request's id (what `helios:cancel` names).
    pub fn id(&self) -> &RequestId {
        &self.id
    }

    /// Cancels the request: sends `helios:cancel` unless the response has
    /// already arrived. Waits only for room in the send queue.
    pub async fn cancel(mut self) {
        self.done = true;
        if self.link.shared.take_pending(&self.id).is_none() {
            return;
        }
        if let Ok(frame) = frame::cancel(self.link.encoding, &self.id) {
            let _ = self.link.commands.send(Command::Send(frame)).await;
        }
    }
}

impl Future for PendingRequest {
    type Output = Result<Value, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(Err(ClientError::Cancelled));
        }
        if let Poll::Ready(outcome) = Pin::new(&mut this.rx).poll(cx) {
            this.done = true;
            // A dropped sender means the connection went away.
            return Poll::Ready(outcome.unwrap_or(Err(ClientError::Closed)));
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.done = true;
            if this.link.shared.take_pending(&this.id).is_some() {
                this.link.send_cancel_now(&this.id);
                return Poll::Ready(Err(ClientError::Timeout));
            }
            // The answer landed between the two polls: take it.
            return Poll::Ready(match this.rx.try_recv() {
                Ok(outcome) => outcome,
                Err(_) => Err(ClientError::Closed),
            });
        }
        Poll::Pending
    }
}

impl Drop for PendingRequest {
    fn drop(&mut self) {
        if !self.done && self.link.shared.take_pending(&self.id).is_some() {
            self.link.send_cancel_now(&self.id);
        }
    }
}
