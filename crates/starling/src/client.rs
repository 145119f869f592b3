//! The client handle: requests, notifications, rooms and the built-ins.

use std::sync::Arc;
use std::time::{Duration, Instant};

use helios_protocol::{
    Encoding, IncomingStream, Message, Notification, PeerRef, Request, RequestId, ShortStr,
    StreamError, StreamInfo, StreamWriter,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::builder::ClientBuilder;
use crate::connection::Command;
use crate::error::ClientError;
use crate::events::Events;
use crate::frame;
use crate::notifications::Notifications;
use crate::reliable::Retry;
use crate::request::{Link, PendingRequest, RETRY_SAFE_BUILTINS, RequestOptions};
use crate::session::{CloseInfo, Welcome};
use crate::shared::{LinkState, Shared};
use crate::subscription::{SUBSCRIBE, Subscription};

/// A connection to a Helios server. Cheap to clone; every clone drives the
/// same connection, which stays open until [`close`](Self::close) is called,
/// the server closes it, or the last clone (and the last
/// [`Subscription`]/[`PendingRequest`]) is dropped.
///
/// ```no_run
/// use serde_json::json;
/// use starling::{Client, Encoding, MethodError};
///
/// # async fn demo() -> Result<(), starling::ClientError> {
/// let client = Client::builder("ws://127.0.0.1:7700/ws")
///     .encoding(Encoding::Json)
///     .method("client:info", |_: serde_json::Value| async move {
///         Ok::<_, MethodError>(json!({"os": "linux"}))
///     })
///     .connect()
///     .await?;
/// println!("connected as {}", client.starling_id());
/// let echoed = client.request("system:echo", json!({"a": 1})).await?;
/// assert_eq!(echoed, json!({"a": 1}));
/// client.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    link: Link,
    request_timeout: Duration,
}

/// The result of [`Client::publish`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Published {
    /// The room published to.
    #[serde(default)]
    pub topic: String,
    /// How many subscribers the message was delivered to.
    #[serde(default)]
    pub delivered: u64,
}

/// A session recovery token from [`Client::recovery_token`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RecoveryToken {
    /// The token to pass as `?recover=TOKEN` when reconnecting.
    pub token: String,
    /// Seconds until the token expires.
    #[serde(default)]
    pub expires_in: u64,
}

impl Client {
    /// Starts configuring a client for a `ws://` or `wss://` URL.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), starling::ClientError> {
    /// let client = starling::Client::builder("ws://127.0.0.1:7700/ws").connect().await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url)
    }

    /// Connects with the default settings.
    ///
    /// # Errors
    /// [`ClientError::Connect`] when the handshake fails or no welcome
    /// arrives in time.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), starling::ClientError> {
    /// let client = starling::Client::connect("ws://127.0.0.1:7700/ws").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: impl Into<String>) -> Result<Self, ClientError> {
        ClientBuilder::new(url).connect().await
    }

    pub(crate) fn from_link(link: Link, request_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                link,
                request_timeout,
            }),
        }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.link.shared
    }

    pub(crate) fn link(&self) -> &Link {
        &self.inner.link
    }

    /// This connection's id, from the server's `helios:welcome`.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), starling::ClientError> {
    /// let client = starling::Client::connect("ws://127.0.0.1:7700/ws").await?;
    /// println!("others reach me with PeerRef::Id({:?})", client.starling_id());
    /// # Ok(()) }
    /// ```
    pub fn starling_id(&self) -> String {
        self.welcome().starling_id
    }

    /// The whole `helios:welcome` the server sent.
    pub fn welcome(&self) -> Welcome {
        self.shared().welcome().unwrap_or_default()
    }

    /// The encoding the server accepted at the handshake.
    pub fn encoding(&self) -> Encoding {
        self.inner.link.encoding
    }

    /// Calls a method on the server with the default timeout.
    ///
    /// # Errors
    /// [`ClientError::Server`] with the server's code when it answers with an
    /// error; [`ClientError::Timeout`], [`ClientError::Closed`].
    ///
    /// # Cancel safety
    /// Dropping the future before the response arrives cancels the request
    /// at the server (`helios:cancel`).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), starling::ClientError> {
    /// # let client = starling::Client::connect("ws://127.0.0.1:7700/ws").await?;
    /// let v = client.request("system:echo", serde_json::json!({"a": 1})).await?;
    /// # Ok(()) }
    /// ```
    pub async fn request(
        &self,
        method: impl Into<ShortStr>,
        payload: Value,
    ) -> Result<Value, ClientError> {
        self.request_with(method, payload, RequestOptions::new())
            .await
    }

    /// Calls a method with per-call options (timeout, relay to a peer).
    ///
    /// # Errors
    /// As [`request`](Self::request).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), starling::ClientError> {
    /// # let client = starling::Client::connect("ws://127.0.0.1:7700/ws").await?;
    /// use starling::{PeerRef, RequestOptions};
    /// let v = client
    ///     .request_with(
    ///         "svc:do",
    ///         serde_json::json!({}),
    ///         RequestOptions::new().peer(PeerRef::Name("svc".into())),
    ///     )
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn request_with(
        &self,
        method: impl Into<ShortStr>,
        payload: Value,
        options: RequestOptions,
    ) -> Result<Value, ClientError> {
        self.send_request(method, payload, options).await?.await
    }

    /// Sends a request and returns the in-flight call, which can be awaited
    /// or [cancelled](PendingRequest::cancel). Waits only for room in the
    /// send queue.
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the connection is closed or closing.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), starling::ClientError> {
    /// # let client = starling::Client::connect("ws://127.0.0.1:7700/ws").await?;
    /// let call = client
    ///     .send_request("report:build", serde_json::json!({}), Default::default())
    ///     .await?;
    /// let id = call.id().clone();
    /// let result = call.await;
    /// # Ok(()) }
    /// ```
    pub async fn send_request(
        &self,
        method: impl Into<ShortStr>,
        payload: Value,
        options: RequestOptions,
    ) -> Result<PendingRequest, ClientError> {
        self.ensure_open()?;
        let timeout = options.timeout.unwrap_or(self.inner.request_timeout);
        let mut req = Request::new(method, payload);
        let retry_safe = options.retry_safe
            || (options.peer.is_none() && RETRY_SAFE_BUILTINS.contains(&req.method.as_str()));
        req.peer = options.peer;
        req.timeout_ms = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        let id = req.id.clone();
        let frame = frame::encode(self.encoding(), &Message::Request(req))
            .map_err(ClientError::Protocol)?;
        // Reserve first, then register and send without awaiting: if this
        // future is dropped while waiting for room, nothing was registered.
        let permit = self
            .inner
            .link
            .commands
            .reserve()
            .await
            .map_err(|_| ClientError::Closed)?;
        let (tx, rx) = oneshot::channel();
        let resend = retry_safe.then(|| frame.clone());
        self.shared().insert_pending(id.clone(), tx, resend);
        permit.send(Command::Request(id.clone(), frame));
        Ok(PendingRequest::new(
            id,
            rx,
            timeout,
            self.inner.link.clone(),
        ))
    }

    /// Calls a method with a typed argument and a typed result.
    ///
    /// # Errors
    /// As [`request`](Self::request), plus [`ClientError::Encode`] /
    /// [`ClientError::Decode`] when the types do not fit.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), starling::ClientError> {
    /// # let client = starling::Client::connect("ws://127.0.0.1:7700/ws").await?;
    /// #[derive(serde::Serialize)]
    /// struct GetUser { id: u64 }
    /// #[derive(serde::Deserialize)]
    /// struct User { name: String }
    /// let user: User = client.call("user:get", &GetUser { id: 7 }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn call<A, R>(&self, method: impl Into<ShortStr>, args: &A) -> Result<R, ClientError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let payload = serde_json::to_value(args).map_err(ClientError::Encode)?;
        let data = self.request(method, payload).await?;
        serde_json::from_value(data).map_err(ClientError::Decode)
    }

    /// Cancels an in-flight request by id: its future resolves to
    /// [`ClientError::Cancelled`] and the server is sent `helios:cancel`.
    /// Returns `false` when no such request is in flight.
    pub async fn cancel(&self, id: &RequestId) -> bool {
        let Some(tx) = self.shared().take_pending(id) else {
            return false;
        };
        let _ = tx.send(Err(ClientError::Cancelled));
        if let Ok(frame) = frame::cancel(self.encoding(), id) {
            let _ = self.inner.link.commands.send(Command::Send(frame)).await;
        }
        true
    }

    /// Sends a one-way notification. Returns once it is queued for sending.
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), starling::ClientError> {
    /// # let client = starling::Client::connect("ws://127.0.0.1:7700/ws").await?;
    /// client.notify("chat:typing", serde_json::json!({"room": "lobby"})).await?;
    /// # Ok(()) }
    /// ```
    pub async fn notify(&self, topic: impl Into<String>, data: Value) -> Result<(), ClientError> {
        self.send_notification(Notification::new(Some(topic.into()), data))
            .await
    }

    /// Sends a one-way notification for the server to relay to a peer.
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), starling::ClientError> {
    /// # let client = starling::Client::connect("ws://127.0.0.1:7700/ws").await?;
    /// use starling::PeerRef;
    /// client
    ///     .notify_peer(PeerRef::Name("alice".into()), "chat:dm", serde_json::json!({"text": "hi"}))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn notify_peer(
        &self,
        peer: PeerRef,
        topic: impl Into<String>,
        data: Value,
    ) -> Result<(), ClientError> {
        let mut note = Notification::new(Some(topic.into()), data);
        note.peer = Some(peer);
        self.send_notification(note).await
    }

    async fn send_notification(&self, note: Notification) -> Result<(), ClientError> {
        self.ensure_open()?;
        let frame = frame::encode(self.encoding(), &Message::Notification(note))
            .map_err(ClientError::Protocol)?;
        self.inner
            .link
            .commands
            .send(Command::Send(frame))
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// A receiver of every notification from now on. See
    /// [`Notifications`] for the lag policy.
    pub fn notifications(&self) -> Notifications {
        Notifications::new(self.shared().subscribe_all())
    }

    /// Joins a room (`helios:subscribe`) and returns its deliveries.
    ///
    /// # Errors
    /// [`ClientError::Server`] when the server refuses (for example
    /// `FORBIDDEN`); the other request errors.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), starling::ClientError> {
    /// # let client = starling::Client::connect("ws://127.0.0.1:7700/ws").await?;
    /// let mut lobby = client.subscribe("chat:lobby").await?;
    /// let first = lobby.recv().await;
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(&self, topic: impl Into<String>) -> Result<Subscription, ClientError> {
        self.ensure_open()?;
        let topic = topic.into();
        // Register locally first so no delivery after the server's "yes" is
        // missed.
        let (rx, first) = self.shared().join_room(&topic);
        let sub = Subscription::new(topic.clone(), rx, self.clone());
        if first {
            match self.request(SUBSCRIBE, json!({ "topic": topic })).await {
                Ok(_) => {}
                Err(err @ ClientError::Server(_)) => {
                    sub.abandon();
                    return Err(err);
                }
                // Unknown outcome: dropping `sub` leaves the room at the
                // server, in case the subscribe went through.
                Err(err) => return Err(err),
            }
        }
        Ok(sub)
    }

    /// The rooms this client is subscribed to.
    pub fn rooms(&self) -> Vec<String> {
        self.shared().room_names()
    }

    /// Publishes to a room (`helios:publish`).
    ///
    /// # Errors
    /// As [`request`](Self::request).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), starling::ClientError> {
    /// # let client = starling::Client::connect("ws://127.0.0.1:7700/ws").await?;
    /// let out = client.publish("chat:lobby", serde_json::json!({"text": "hi"})).await?;
    /// println!("delivered to {}", out.delivered);
    /// # Ok(()) }
    /// ```
    pub async fn publish(
        &self,
        topic: impl Into<String>,
        data: Value,
    ) -> Result<Published, ClientError> {
        let topic = topic.into();
        self.call("helios:publish", &json!({ "topic": topic, "data": data }))
            .await
    }

    /// The connections in a room (`helios:presence`), as the server reports
    /// them.
    ///
    /// # Errors
    /// As [`request`](Self::request).
    pub async fn presence(&self, topic: impl Into<String>) -> Result<Value, ClientError> {
        self.request("helios:presence", json!({ "topic": topic.into() }))
            .await
    }

    /// Claims a peer name (`helios:identify`), so others can reach this
    /// client with `PeerRef::Name`.
    ///
    /// # Errors
    /// As [`request`](Self::request); the server may answer `NAME_TAKEN`.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), starling::ClientError> {
    /// # let client = starling::Client::connect("ws://127.0.0.1:7700/ws").await?;
    /// client.identify("billing").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// With reconnect on, the name is claimed again on a fresh session
    /// (a recovered session keeps it server-side).
    pub async fn identify(&self, name: impl Into<String>) -> Result<Value, ClientError> {
        let name = name.into();
        let out = self
            .request("helios:identify", json!({ "name": name }))
            .await?;
        self.shared().set_name(Some(name));
        Ok(out)
    }

    /// Round trip of `system:ping`.
    ///
    /// # Errors
    /// As [`request`](Self::request).
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let start = Instant::now();
        self.request("system:ping", json!({})).await?;
        Ok(start.elapsed())
    }

    /// A session recovery token (`starling:getToken`), when the server has
    /// recovery enabled.
    ///
    /// # Errors
    /// As [`request`](Self::request).
    pub async fn recovery_token(&self) -> Result<RecoveryToken, ClientError> {
        self.call("starling:getToken", &json!({})).await
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.shared().state(), LinkState::Closed(_))
    }

    /// Waits until the connection has ended, and says how.
    pub async fn closed(&self) -> CloseInfo {
        let mut rx = self.shared().watch_state();
        let state = rx
            .wait_for(|s| matches!(s, LinkState::Closed(_)))
            .await
            .map(|s| s.clone());
        match state {
            Ok(LinkState::Closed(info)) => info,
            // The sender lives in `Shared`, which we hold: unreachable in
            // practice, but "closed" is the honest answer.
            _ => CloseInfo::default(),
        }
    }

    /// Closes the connection: sends close code 1000 and waits until the
    /// socket has ended (bounded by the close timeout). Pending requests
    /// fail with [`ClientError::Closed`]. Calling it again is harmless.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), starling::ClientError> {
    /// # let client = starling::Client::connect("ws://127.0.0.1:7700/ws").await?;
    /// client.close().await;
    /// assert!(client.is_closed());
    /// # Ok(()) }
    /// ```
    pub async fn close(&self) {
        if matches!(
            self.shared().state(),
            LinkState::Open | LinkState::Reconnecting
        ) {
            self.shared().set_closing();
            // Err: the task is gone already, which is what we want.
            let _ = self.inner.link.commands.send(Command::Close).await;
        }
        self.closed().await;
    }

    /// Sends a notification that the server acknowledges (`ackId`, answered
    /// by `helios:ack`), resending the same copy with `retry`'s backoff until
    /// the acknowledgement comes; the server drops copies it has seen. Copies
    /// sent while the client is reconnecting wait in the send queue.
    ///
    /// # Errors
    /// [`ClientError::NotAcknowledged`] after `retry.max_attempts` sends
    /// without an answer; [`ClientError::Closed`] when the client ends first.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), starling::ClientError> {
    /// # let client = starling::Client::connect("ws://127.0.0.1:7700/ws").await?;
    /// use starling::Retry;
    /// client
    ///     .notify_reliable("metrics:report", serde_json::json!({"cpu": 3}), Retry::default())
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn notify_reliable(
        &self,
        topic: impl Into<String>,
        data: Value,
        retry: Retry,
    ) -> Result<(), ClientError> {
        let ack_id = RequestId::new().as_str().to_owned();
        let mut note = Notification::new(Some(topic.into()), data);
        note.ack_id = Some(ack_id.clone());
        let frame = frame::encode(self.encoding(), &Message::Notification(note))
            .map_err(ClientError::Protocol)?;
        let mut acked = self.shared().expect_ack(ack_id.clone());
        // Forget the ack whatever happens, dropping included.
        struct Forget<'a>(&'a Shared, String);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.forget_ack(&self.1);
            }
        }
        let _forget = Forget(self.shared(), ack_id);
        let attempts = retry.max_attempts.max(1);
        for attempt in 0..attempts {
            self.ensure_open()?;
            self.inner
                .link
                .commands
                .send(Command::Send(frame.clone()))
                .await
                .map_err(|_| ClientError::Closed)?;
            match tokio::time::timeout(retry.delay(attempt), &mut acked).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(_)) => return Err(ClientError::Closed),
                Err(_) => {}
            }
        }
        Err(ClientError::NotAcknowledged(attempts))
    }

    /// A receiver of connection events (connects, losses, reconnects,
    /// recoveries; see [`ClientEvent`](crate::ClientEvent)). The first call gets every event
    /// since `connect` (including the first
    /// [`ClientEvent::Connected`](crate::ClientEvent::Connected));
    /// later calls get the events from then on.
    pub fn events(&self) -> Events {
        Events::new(self.shared().subscribe_events())
    }

    /// Whether a socket is up right now (`false` while reconnecting and
    /// once closed).
    pub fn is_connected(&self) -> bool {
        self.shared().state() == LinkState::Open
    }

    /// Replaces the connection's credential before it expires: calls
    /// `helios:refresh {token}` (the server checks it and keeps the
    /// connection past the old token's `exp`; it answers `{user,
    /// expiresAt}`), then sends the new token (`Authorization: Bearer`) on
    /// every later reconnection.
    ///
    /// # Errors
    /// The server's refusal (`UNAUTHORIZED` for a bad token, `FORBIDDEN`
    /// for another user's), or a closed connection.
    ///
    /// ```no_run
    /// # async fn demo(new_token: String) -> Result<(), starling::ClientError> {
    /// # let client = starling::Client::connect("ws://127.0.0.1:7700/ws?token=first").await?;
    /// let answer = client.refresh_auth(new_token).await?;
    /// # Ok(()) }
    /// ```
    pub async fn refresh_auth(&self, token: impl Into<String>) -> Result<Value, ClientError> {
        let token = token.into();
        let answer = self
            .request("helios:refresh", json!({ "token": token }))
            .await?;
        self.shared().set_auth_token(token);
        Ok(answer)
    }

    /// Calls a method and streams data to its handler (an upload, a
    /// file): returns the call, to await once the stream has ended, and
    /// the stream to write. Writes wait for the server's credit.
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the connection is closed.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// # let client = starling::Client::connect("ws://127.0.0.1:7700/ws").await?;
    /// use starling::StreamInfo;
    /// let body = std::fs::read("/etc/hostname")?;
    /// let (call, mut upload) = client
    ///     .request_streaming("files:upload", serde_json::json!({}), StreamInfo::file("hostname", body.len() as u64))
    ///     .await?;
    /// upload.write(&body).await?;
    /// upload.end().await?;
    /// let answer = call.await?;
    /// # Ok(()) }
    /// ```
    pub async fn request_streaming(
        &self,
        method: impl Into<ShortStr>,
        payload: Value,
        info: StreamInfo,
    ) -> Result<(PendingRequest, StreamWriter), ClientError> {
        let call = self
            .send_request(method, payload, RequestOptions::new())
            .await?;
        let link = self
            .shared()
            .stream_link
            .get()
            .cloned()
            .ok_or(ClientError::Closed)?;
        let writer = self
            .shared()
            .streams
            .open(link, call.id(), info)
            .await
            .map_err(|_| ClientError::Closed)?;
        Ok((call, writer))
    }

    /// The stream the server opened for one of this client's requests (a
    /// download). Ask, and read it, before awaiting the call: its answer
    /// ends the wait, and a handler that streams more than the credit
    /// window answers only once the stream was read.
    ///
    /// # Errors
    /// [`StreamError::NoStream`] when the request was answered without
    /// one, [`StreamError::Closed`] when the connection closed.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// # let client = starling::Client::connect("ws://127.0.0.1:7700/ws").await?;
    /// let call = client
    ///     .send_request("files:download", serde_json::json!({"name": "users.csv"}), Default::default())
    ///     .await?;
    /// let file = client.incoming_stream(call.id()).await?;
    /// let bytes = file.read_to_end(10 << 20).await?;
    /// call.await?;
    /// # Ok(()) }
    /// ```
    pub async fn incoming_stream(
        &self,
        request: &RequestId,
    ) -> Result<IncomingStream, StreamError> {
        let shared = self.shared();
        shared
            .streams
            .take_incoming(request, || shared.is_pending(request))
            .await
    }

    fn ensure_open(&self) -> Result<(), ClientError> {
        match self.shared().state() {
            LinkState::Open | LinkState::Reconnecting => Ok(()),
            LinkState::Closing | LinkState::Closed(_) => Err(ClientError::Closed),
        }
    }
}
